//! The vip workload's run: three `ballastd --agent` members of a [`VipLab`] serving two VIPs,
//! ARP observers probing both from the client host, the cluster's decision and each node's
//! own view sampled every 200 ms, the client's neighbour entry watched, faults injected on the
//! schedule, and at the end the fences' journals and the frames seen, all as history lines.
//! Judging them is `verdict.rs`'s; the faults themselves are `faults.rs`'s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::faults::{end_fault, inject};
use super::members::Members;
use super::options::Options;
use super::store::{timestamp, write_reports, write_results};
use super::verdict::{check_lines, Results};
use crate::arp::{mac_string, ArpObserver};
use crate::checker::vip::allowance_in;
use crate::history::{write_history, Line};
use crate::lab::{mono_ns, Lab};
use crate::viplab::{observer, VipLab, VipLabOptions};

/// The vip workload's second VIP (same service, so placed with the first), by family.
const VIP2: &str = "10.213.0.101";
const VIP2_V6: &str = "fd0a:d500::65";

/// How soon after the last heal the VIP must answer again.
const VIP_LIVENESS: Duration = Duration::from_secs(5);

/// The vip workload (three members; `o.nodes` is ignored).
pub(super) fn run_vip(o: &Options) -> Result<(PathBuf, Results), String> {
    let (mut v, _, _) = VipLab::start_opts(VipLabOptions {
        ipv6: o.ipv6,
        ..Default::default()
    });
    let vip1 = v.vip.to_string();
    let vip1 = vip1.as_str();
    let (vip2, vip2_prefix, family) = if o.ipv6 {
        (VIP2_V6, 64, "-6")
    } else {
        (VIP2, 24, "-4")
    };
    let t0 = Instant::now();
    let t0_mono = mono_ns();
    let ns = |t: Instant| t.saturating_duration_since(t0).as_nanos() as u64;
    let obs = observer(&v);
    // The client host talks to the VIP (so it has a neighbour entry for it), and every change
    // of that entry is recorded: which MAC the client would send to.
    let ping: Vec<String> = ["-q", "-i", "0.2", "-W", "1", vip1]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _pinger = v
        .lab
        .spawn(
            v.lab.client(),
            std::path::Path::new("ping"),
            &ping,
            &v.dir.join("client-ping.log"),
        )
        .map_err(|e| e.to_string())?;
    let neigh = NeighMonitor::start(&v.lab, vip1, t0)?;
    // A second VIP of the same service, which the controller places on the same node: when
    // that node fails, one tick decides both (the decisions of a tick must not outlive their
    // term).
    let (ok, _, err) = v.ctl(&[
        "vip",
        "apply",
        "web-vip-2",
        "--address",
        &format!("{vip2}/{vip2_prefix}"),
        "--interface",
        "eth0",
        "--service",
        "web",
    ]);
    if !ok {
        return Err(format!("second VIP: {err}"));
    }
    let obs2 = ArpObserver::start(
        v.lab.client(),
        vip2.parse::<std::net::IpAddr>().expect("an address"),
        Duration::from_millis(10),
    );
    let members = Members::plain(v.lab.member_endpoints(v.members));
    let mut epochs: Vec<Line> = Vec::new();
    // Waiting, but sampling the decision every 200 ms.
    let sample_until = |v: &VipLab, until: Instant, epochs: &mut Vec<Line>| {
        while Instant::now() < until {
            if let Some((owner, epoch)) = v.owner() {
                epochs.push(Line::Epoch {
                    at: ns(Instant::now()),
                    owner,
                    epoch,
                });
            }
            for (i, h) in v.lab.nodes().iter().enumerate() {
                let at = ns(Instant::now());
                let table = if family == "-6" { "ip6" } else { "arp" };
                let script = format!(
                    "ip {family} -o addr show dev eth0; nft list set {table} ballast_fence allowed 2>/dev/null"
                );
                let out = v.lab.exec(h, "sh", &["-c", &script]);
                let Ok(out) = out else { continue };
                let text = String::from_utf8_lossy(&out.stdout);
                let inet = if family == "-6" { "inet6" } else { "inet" };
                epochs.push(Line::NodeView {
                    at,
                    node: i as u64 + 1,
                    address: text.contains(&format!("{inet} {vip1}/")),
                    allowed_ms: allowance_in(&text, vip1).map(|d| d.as_millis() as u64),
                });
            }
            std::thread::sleep(
                Duration::from_millis(200).min(until.saturating_duration_since(Instant::now())),
            );
        }
    };
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut faults = Vec::new();
    let end = t0 + o.time_limit;
    let (quiet, hold) = (Duration::from_secs(3), Duration::from_secs(4));
    sample_until(&v, Instant::now() + quiet.min(o.time_limit), &mut epochs);
    while !o.nemeses.is_empty() && Instant::now() + hold < end {
        let nemesis = o.nemeses[rng.gen_range(0..o.nemeses.len())];
        let start = Instant::now();
        let (detail, undo) = inject(&v.lab, &mut v.procs, nemesis, &mut rng, &members)?;
        sample_until(&v, Instant::now() + hold, &mut epochs);
        faults.push(end_fault(&mut v, nemesis, detail, undo, ns(start), ns)?);
        sample_until(&v, Instant::now() + quiet, &mut epochs);
    }
    v.lab.heal().map_err(|e| e.to_string())?;
    let healed = Instant::now();
    sample_until(
        &v,
        healed + VIP_LIVENESS + Duration::from_secs(1),
        &mut epochs,
    );
    let dir = o.store.join("vip").join(timestamp());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut lines: Vec<Line> = (1..=v.lab.nodes().len() as u64)
        .map(|node| Line::NodeMac {
            node,
            mac: v.mac(node),
        })
        .collect();
    for (vip, observer) in [("", obs), (vip2, obs2)] {
        let (probes, frames) = observer.stop_all()?;
        lines.extend(probes.iter().filter(|p| p.at >= t0).map(|p| Line::Probe {
            at: ns(p.at),
            macs: p.macs.iter().map(mac_string).collect(),
            vip: vip.to_string(),
        }));
        let addr = if vip.is_empty() { vip1 } else { vip };
        lines.extend(
            v.allowed_for(addr, t0_mono)?
                .into_iter()
                .map(|allowed| Line::Allowed {
                    vip: vip.to_string(),
                    allowed,
                }),
        );
        lines.extend(frames.iter().filter(|f| f.at >= t0).map(|f| Line::Frame {
            at: ns(f.at),
            mac: mac_string(&f.mac),
            gratuitous: f.gratuitous,
            vip: vip.to_string(),
        }));
    }
    lines.extend(neigh.stop());
    lines.extend(epochs);
    lines.extend(faults.into_iter().map(Line::Fault));
    lines.push(Line::Healed {
        at: ns(healed),
        bound_ms: VIP_LIVENESS.as_millis() as u64,
    });
    write_history(&dir.join("history.jsonl"), &lines)?;
    let results = check_lines(&lines, o.seed, o.check_budget);
    write_results(&dir, &results)?;
    write_reports(&dir, &lines, &results)?;
    Ok((dir, results))
}

/// Records every change of the client host's neighbour entry for the VIP (`ip monitor
/// neigh` in its namespace), stamped when read.
struct NeighMonitor {
    child: std::process::Child,
    reader: std::thread::JoinHandle<Vec<Line>>,
}

impl NeighMonitor {
    fn start(lab: &Lab, vip: &str, t0: Instant) -> Result<Self, String> {
        use std::io::BufRead;
        let mut child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.client().netns,
                "ip",
                "monitor",
                "neigh",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("ip monitor neigh: {e}"))?;
        let out = child.stdout.take().expect("piped");
        let prefix = format!("{vip} ");
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now().saturating_duration_since(t0).as_nanos() as u64;
                let line = line.trim_start_matches("Deleted ").to_string();
                if !line.starts_with(&prefix) {
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                let mac = words
                    .iter()
                    .position(|w| *w == "lladdr")
                    .and_then(|i| words.get(i + 1))
                    .map_or(String::new(), |m| m.to_lowercase());
                let state = words.last().copied().unwrap_or_default().to_string();
                lines.push(Line::Neigh { at, mac, state });
            }
            lines
        });
        Ok(NeighMonitor { child, reader })
    }

    fn stop(mut self) -> Vec<Line> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.join().unwrap_or_default()
    }
}
