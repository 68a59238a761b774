//! Failover benchmarks: Ballast's agents and keepalived (Debian's 2.2.7) with the same VIP on
//! the same lab hosts, watched by the same ARP observer on the client host (a probe every
//! 10 ms). Per trial: takeover (fault to the first answer from another host), client outage
//! (longest gap between answered probes) and split-brain time (time during which two hosts
//! answered). `failover-bench` runs both in one lab and prints the ratios.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_client::{Client, ClientConfig};

use crate::arp::{mac_string, ArpObserver};
use crate::lab::{Lab, LabProcess};
use crate::viplab::{analyze, observer, VipLab};

/// What one system showed in one scenario.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub system: String,
    pub scenario: String,
    pub takeover: Vec<Duration>,
    pub outage: Vec<Duration>,
    /// Per trial.
    pub split_brain: Vec<Duration>,
    /// A remark printed under the table (e.g. trials skipped).
    pub note: Option<String>,
    /// Where each takeover's time went (Ballast's crash, dead and partition trials).
    pub stages: Vec<Stages>,
    /// Frames speaking for the VIP that the exact check judged (Ballast only).
    pub frames: usize,
    /// What the exact check found wrong (fences of two nodes allowing the VIP at once, a
    /// frame sent outside its sender's lease): empty is the promise kept.
    pub violations: Vec<String>,
}

/// Where one takeover's time went: each stage in ms after the fault, read from the fence
/// journals (CLOCK_MONOTONIC), the leader's log (wall clock) and the client host's observer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    /// The old owner's last allowance ended (the deadline of its last renewal): what was left
    /// of its lease when the fault came.
    pub old_closed: f64,
    /// The leader logged the assignment to the new owner.
    pub decided: Option<f64>,
    /// The new owner's fence committed its allowance (nft returned).
    pub new_open: f64,
    /// The new owner's first gratuitous ARP reached the client host.
    pub first_garp: Option<f64>,
    /// The first probe the new owner answered.
    pub answered: f64,
}

/// Nearest-rank percentile (0 for no values).
pub fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    crate::apibench::percentile(&v, p)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line: system, scenario, trials, takeover p50/p99/max, outage p50/p99/max, split brain
/// per trial p50/max.
pub fn row(f: &Figures) -> String {
    let three = |v: &[Duration]| {
        if v.is_empty() {
            format!("{:>7} {:>7} {:>7}", "-", "-", "-")
        } else {
            format!(
                "{:>7.0} {:>7.0} {:>7.0}",
                ms(pct(v, 0.5)),
                ms(pct(v, 0.99)),
                ms(pct(v, 1.0))
            )
        }
    };
    format!(
        "{:<15} {:<10} {:>6}  {}   {}   {:>7.0} {:>7.0}",
        f.system,
        f.scenario,
        f.takeover.len().max(f.outage.len()),
        three(&f.takeover),
        three(&f.outage),
        ms(pct(&f.split_brain, 0.5)),
        ms(pct(&f.split_brain, 1.0)),
    )
}

pub const HEADER: &str = "system          scenario   trials  takeover p50/p99/max (ms)   outage p50/p99/max (ms)   split brain p50/max (ms)";

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 6] = [
    "crash",
    "dead",
    "partition",
    "drain",
    "leader",
    "leader-dead",
];

/// Takes `h`'s link down (its eth0, inside its namespace): the server is gone from the LAN.
fn link(lab: &Lab, h: &crate::lab::Host, up: bool) {
    let state = if up { "up" } else { "down" };
    let out = lab
        .exec(h, "ip", &["link", "set", "eth0", state])
        .expect("ip link");
    assert!(
        out.status.success(),
        "ip link set eth0 {state} on {}",
        h.name
    );
}

/// Ballast's scenarios on a running [`VipLab`]: `crash` (SIGKILL of the owner), `dead` (the
/// owner's server gone: its link down, then its processes killed), `partition` (owner
/// isolated; held `hold` from the fault, 0: healed once moved), `drain` (planned move),
/// `leader` (SIGKILL of the Raft leader while another node owns the VIP: nothing should
/// move) and `leader-dead` (the leader's server gone: link down, then killed; its peers get
/// no reset, only silence). Every trial is also judged by the exact check (fence journals and every frame the
/// client host saw).
pub fn ballast(v: &mut VipLab, scenario: &str, trials: usize, hold: u64) -> Figures {
    let mut f = Figures {
        system: "ballast".into(),
        scenario: scenario.into(),
        ..Default::default()
    };
    let mut co_located = 0;
    // Every trial's frames, judged once at the end with every node's journal.
    let mut all_frames = Vec::new();
    for _ in 0..trials {
        let (owner, _) = v.wait_settled();
        if scenario == "leader" || scenario == "leader-dead" {
            // An owning leader hands the leadership over within a few seconds.
            let leader = v
                .lab
                .wait_for(Duration::from_secs(10), || {
                    v.leader().filter(|l| *l != owner)
                })
                .or_else(|| v.leader())
                .expect("a leader");
            if leader == owner {
                co_located += 1;
                continue;
            }
            let obs = observer(v);
            let t = Instant::now();
            if std::env::var_os("BENCH_TRACE").is_some() {
                eprintln!(
                    "trial: SIGKILL of leader {leader} (owner {owner}) at {:?}",
                    std::time::SystemTime::now()
                );
            }
            if scenario == "leader-dead" {
                link(&v.lab, v.host(leader), false);
            }
            v.procs[leader as usize - 1].take().expect("running").kill();
            v.lab
                .wait_for(Duration::from_secs(30), || {
                    v.leader().filter(|l| *l != leader)?;
                    v.node_alive(leader).filter(|a| !a)
                })
                .expect("a new leader marked the old one down");
            let (probes, frames) = obs.stop_all().expect("observer ran");
            trace(&probes, t);
            all_frames.extend(frames);
            let a = analyze(&probes, t);
            assert_eq!(a.first_answer.len(), 1, "the VIP stayed put: {a:?}");
            f.outage.push(a.outage);
            f.takeover.push(Duration::ZERO);
            f.split_brain.push(a.split_brain);
            if scenario == "leader-dead" {
                link(&v.lab, v.host(leader), true);
            }
            v.procs[leader as usize - 1] = Some(v.spawn(leader));
            continue;
        }
        let obs = observer(v);
        let wall = std::time::SystemTime::now();
        let t = Instant::now();
        match scenario {
            "crash" => v.procs[owner as usize - 1].take().expect("running").kill(),
            "dead" => {
                link(&v.lab, v.host(owner), false);
                v.procs[owner as usize - 1].take().expect("running").kill();
            }
            "partition" => v.lab.isolate(v.host(owner)).unwrap(),
            "drain" => {
                let (ok, _, err) = v.ctl(&["node", "drain", &owner.to_string()]);
                assert!(ok, "{err}");
            }
            other => panic!("unknown scenario {other:?}"),
        }
        let (new_owner, _) = v.wait_moved(owner, &obs);
        if scenario == "partition" && hold > 0 {
            // Keep the owner cut off, still watching for two holders.
            let until = t + Duration::from_secs(hold);
            v.lab.wait_for(Duration::from_secs(hold + 5), || {
                (Instant::now() >= until).then_some(())
            });
        }
        let new_mac = v.mac(new_owner);
        let (probes, frames) = obs.stop_all().expect("observer ran");
        trace(&probes, t);
        let a = analyze(&probes, t);
        let first_new = a
            .first_answer
            .iter()
            .find(|(m, _)| *m == new_mac)
            .map(|x| x.1)
            .expect("the new owner answered");
        f.takeover.push(first_new);
        f.outage.push(a.outage);
        f.split_brain.push(a.split_brain);
        if scenario != "drain" {
            if let Some(st) = stages(v, (t, wall), owner, new_owner, &frames, first_new) {
                f.stages.push(st);
            }
        }
        all_frames.extend(frames);
        match scenario {
            "crash" => v.procs[owner as usize - 1] = Some(v.spawn(owner)),
            "dead" => {
                link(&v.lab, v.host(owner), true);
                v.procs[owner as usize - 1] = Some(v.spawn(owner));
            }
            "partition" => v.lab.heal().unwrap(),
            _ => {
                let (ok, _, err) = v.ctl(&["node", "resume", &owner.to_string()]);
                assert!(ok, "{err}");
            }
        }
    }
    exact(v, &all_frames, &mut f);
    if co_located > 0 {
        f.note = Some(format!(
            "{co_located} trials skipped: the leader owned the VIP"
        ));
    }
    f
}

/// The exact check of the run so far (every node's fence journal) against `frames`, the
/// frames the client host saw during a scenario's trials: what it found goes into `f`.
fn exact(v: &VipLab, frames: &[crate::arp::Frame], f: &mut Figures) {
    let (t0, base) = v.started();
    f.frames = frames.iter().filter(|x| x.at >= t0).count();
    f.violations = v
        .check_exact(frames, t0, base)
        .iter()
        .map(|violation| format!("{violation:?}"))
        .collect();
}

/// Where a takeover's time went (None when the journals do not show it, e.g. the old owner
/// never had an allowance in this run).
fn stages(
    v: &VipLab,
    (t, wall): (Instant, std::time::SystemTime),
    old: u64,
    new: u64,
    frames: &[crate::arp::Frame],
    answered: Duration,
) -> Option<Stages> {
    let (t0, base) = v.started();
    let fault = (t - t0).as_nanos() as u64;
    let after = |ns: u64| (ns as f64 - fault as f64) / 1e6;
    let allowed = v.allowed(base).ok()?;
    let old_closed = allowed
        .iter()
        .filter(|a| a.node == old && a.from <= fault)
        .map(|a| a.until)
        .max()?;
    let new_open = allowed
        .iter()
        .filter(|a| a.node == new && a.from >= fault)
        .map(|a| {
            if a.committed_by > 0 {
                a.committed_by
            } else {
                a.from
            }
        })
        .min()?;
    let new_mac = v.mac(new);
    let first_garp = frames
        .iter()
        .find(|x| x.at >= t && x.gratuitous && mac_string(&x.mac) == new_mac)
        .map(|x| ms(x.at - t));
    let decided = (1..=v.members as u64)
        .filter_map(|id| assign_logged(&v.log(id), new, wall))
        .min_by(|a, b| a.total_cmp(b));
    Some(Stages {
        old_closed: after(old_closed),
        decided,
        new_open: after(new_open),
        first_garp,
        answered: ms(answered),
    })
}

/// The first controller line of `log` assigning the VIP to `node` after `since`, in ms after
/// it (wall clock: the log's UTC time of day against `since`'s).
fn assign_logged(log: &str, node: u64, since: std::time::SystemTime) -> Option<f64> {
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64()
        % 86_400.0;
    let needle = format!("node: {node},");
    log.lines()
        .filter(|l| l.contains("controller") && l.contains("Assign") && l.contains(&needle))
        .filter_map(|l| {
            let mut d = (time_of_day(l)? - since) * 1000.0;
            if d < -43_200_000.0 {
                d += 86_400_000.0; // past midnight
            }
            (d >= 0.0).then_some(d)
        })
        .next()
}

/// Seconds since midnight UTC of a log line's RFC 3339 timestamp (`...THH:MM:SS.ffffffZ`),
/// wherever it starts (colour codes may come first).
fn time_of_day(line: &str) -> Option<f64> {
    let at = line.find('T')?;
    let s = line.get(at + 1..)?;
    let end = s.find('Z')?;
    let mut parts = s[..end].split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + sec)
}

/// Per stage of [`Stages`], the p50 and p99 over `s` of the time since the previous stage.
pub fn stage_rows(s: &[Stages]) -> Vec<String> {
    let mut prev: Vec<f64> = vec![0.0; s.len()];
    let mut out = Vec::new();
    type Stage = (&'static str, fn(&Stages) -> Option<f64>);
    let steps: [Stage; 5] = [
        ("fault -> old owner's fence closed (its lease left)", |x| {
            Some(x.old_closed)
        }),
        ("-> leader assigned elsewhere (margin, commit)", |x| {
            x.decided
        }),
        (
            "-> new owner's fence open (watch, grant, address, nft)",
            |x| Some(x.new_open),
        ),
        (
            "-> its first announcement (GARP or NA) at the client",
            |x| x.first_garp,
        ),
        ("-> first probe answered (10 ms probes)", |x| {
            Some(x.answered)
        }),
    ];
    for (name, get) in steps {
        let mut d = Vec::new();
        for (i, x) in s.iter().enumerate() {
            if let Some(at) = get(x) {
                d.push(Duration::from_secs_f64(((at - prev[i]) / 1000.0).max(0.0)));
                prev[i] = at;
            }
        }
        if d.is_empty() {
            continue;
        }
        out.push(format!(
            "  {name:<56} p50 {:>6.0} ms  p99 {:>6.0} ms  ({} trials)",
            ms(pct(&d, 0.5)),
            ms(pct(&d, 0.99)),
            d.len()
        ));
    }
    out
}

/// Writes kept going against the cluster from the client host while the scenarios run:
/// `workers` clients, each putting 64-byte values to its own 100 keys, one after another.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
    started: Instant,
}

impl Load {
    pub fn start(v: &VipLab, workers: usize) -> Load {
        let mut cfg = ClientConfig::new(v.lab.member_endpoints(v.members));
        cfg.token = v.token.clone();
        cfg.deadline = Duration::from_secs(2);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = crate::lab::in_netns(v.lab.client(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                // The client's channels need the runtime: made inside it.
                let client = Client::new(cfg);
                let tasks: Vec<_> = (0..workers)
                    .map(|w| {
                        let (c, stop) = (client.clone(), flag.clone());
                        tokio::spawn(async move {
                            let (mut ok, mut failed) = (0u64, 0u64);
                            let mut i = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                let key = format!("load/{w}/{}", i % 100);
                                match c.put(key, vec![b'x'; 64]).await {
                                    Ok(_) => ok += 1,
                                    Err(_) => failed += 1,
                                }
                                i += 1;
                            }
                            (ok, failed)
                        })
                    })
                    .collect();
                let mut sum = (0, 0);
                for t in tasks {
                    if let Ok((ok, failed)) = t.await {
                        sum = (sum.0 + ok, sum.1 + failed);
                    }
                }
                sum
            })
        })
        .expect("a thread on the client host");
        Load {
            stop,
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    /// Stops the writers; says how many puts they made.
    pub fn stop(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failed) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let secs = self.started.elapsed().as_secs_f64();
        format!(
            "{ok} puts acknowledged ({:.0}/s), {failed} failed, over {secs:.0} s",
            ok as f64 / secs
        )
    }
}

/// Leaves the node hosts as a stopped Ballast agent should, and makes sure of it: no VIP
/// address (`vip_cidr`), no fence tables (a fence left behind would drop another daemon's
/// ARP answers).
pub fn clear_ballast(lab: &Lab, vip_cidr: &str) {
    for h in lab.nodes() {
        // Every family: a netdev table left behind drops another daemon's ARP frames (and
        // neighbour advertisements) for the address at egress (keepalived saw ENOBUFS and
        // never answered).
        for family in ["arp", "ip", "ip6", "netdev"] {
            let _ = lab.exec(h, "nft", &["delete", "table", family, "ballast_fence"]);
        }
        let _ = lab.exec(h, "ip", &["addr", "del", vip_cidr, "dev", "eth0"]);
    }
}

/// keepalived on the three node hosts of a lab: VRRP instance for the VIP on eth0, priorities
/// 100/90/80, nopreempt, `advert_int` as given (VRRPv3 below one second, as v2 rounds to
/// whole seconds, and for an IPv6 VIP, which only v3 carries).
pub struct Keepalived<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    advert: String,
    /// The VIP with its prefix, as keepalived and `ip addr` take it.
    vip_cidr: String,
    vip: std::net::IpAddr,
    procs: Vec<Option<LabProcess>>,
    /// MAC -> node id.
    macs: Vec<(String, usize)>,
}

pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

impl<'a> Keepalived<'a> {
    /// keepalived for `vip_cidr` (the VipLab's VIP, IPv4 or IPv6).
    pub fn start(lab: &'a Lab, dir: &Path, advert: &str, vip_cidr: &str) -> Self {
        let dir = dir.join(format!("keepalived-{advert}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut k = Keepalived {
            lab,
            dir,
            advert: advert.into(),
            vip_cidr: vip_cidr.into(),
            vip: crate::viplab::ip_of(vip_cidr),
            procs: Vec::new(),
            macs: Vec::new(),
        };
        for id in 1..=3 {
            std::fs::write(k.dir.join(format!("n{id}.conf")), k.config(id)).unwrap();
            let p = k.spawn(id);
            k.procs.push(Some(p));
            let out = lab
                .exec(lab.node(id), "cat", &["/sys/class/net/eth0/address"])
                .unwrap();
            k.macs.push((
                String::from_utf8_lossy(&out.stdout).trim().to_lowercase(),
                id,
            ));
        }
        k
    }

    fn config(&self, id: usize) -> String {
        let version = if self.vip.is_ipv6() || self.advert.parse::<f64>().unwrap_or(1.0) < 1.0 {
            "3"
        } else {
            "2"
        };
        format!(
            "global_defs {{\n  router_id n{id}\n  vrrp_version {version}\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  \
             virtual_router_id 51\n  priority {}\n  advert_int {}\n  \
             virtual_ipaddress {{\n    {}\n  }}\n}}\n",
            110 - 10 * id,
            self.advert,
            self.vip_cidr
        )
    }

    fn spawn(&self, id: usize) -> LabProcess {
        let d = &self.dir;
        let args: Vec<String> = vec![
            "-n".into(),
            "-l".into(),
            "-P".into(),
            "-f".into(),
            d.join(format!("n{id}.conf")).display().to_string(),
            "-p".into(),
            d.join(format!("n{id}.pid")).display().to_string(),
            "-r".into(),
            d.join(format!("n{id}-vrrp.pid")).display().to_string(),
        ];
        self.lab
            .spawn(
                self.lab.node(id),
                Path::new(KEEPALIVED),
                &args,
                &d.join(format!("n{id}.log")),
            )
            .expect("keepalived starts")
    }

    /// Waits until exactly one host answers, 20 probes in a row; returns its node id.
    fn settled(&self, obs: &ArpObserver) -> usize {
        self.lab
            .wait_for(Duration::from_secs(60), || {
                let p = obs.probes();
                let last: Vec<_> = p.iter().rev().take(20).collect();
                if last.len() < 20 || last.iter().any(|p| p.macs.len() != 1) {
                    return None;
                }
                let m = mac_string(&last[0].macs[0]);
                if last.iter().any(|p| mac_string(&p.macs[0]) != m) {
                    return None;
                }
                self.macs.iter().find(|(x, _)| *x == m).map(|(_, id)| *id)
            })
            .unwrap_or_else(|| {
                let last = obs.probes().last().cloned();
                let logs: Vec<String> = (1..=3)
                    .map(|id| {
                        std::fs::read_to_string(self.dir.join(format!("n{id}.log")))
                            .unwrap_or_default()
                    })
                    .collect();
                panic!(
                    "keepalived did not settle on one master within 60 s; last probe {last:?}; logs:\n{}",
                    logs.join("\n----\n")
                )
            })
    }

    /// SIGKILL of every keepalived process of a host at once (the parent alone would let its
    /// VRRP child shut down gracefully).
    fn kill_host(&mut self, id: usize) {
        let out = self
            .lab
            .exec(self.lab.node(id), "pgrep", &["-x", "keepalived"])
            .unwrap();
        let ns_pids = std::process::Command::new("ip")
            .args(["netns", "pids", &self.lab.node(id).netns])
            .output()
            .unwrap();
        let in_ns: Vec<String> = String::from_utf8_lossy(&ns_pids.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if in_ns.iter().any(|p| p == pid) {
                // SAFETY: kill(2) of a keepalived process of this lab host.
                unsafe { libc::kill(pid.parse().unwrap_or(0), libc::SIGKILL) };
            }
        }
        if let Some(mut p) = self.procs[id - 1].take() {
            p.kill();
        }
    }

    /// `crash` (SIGKILL of the master's keepalived; watched for `hold` s: the address stays
    /// on the dead daemon's interface), `dead` (its link down, then its keepalived killed;
    /// watched for `hold` s), `partition` (master isolated for `hold` s) or `drain`
    /// (SIGTERM of the master's keepalived: a graceful handover).
    pub fn scenario(&mut self, scenario: &str, trials: usize, hold: u64) -> Figures {
        let mut f = Figures {
            system: format!(
                "keepalived {}{}",
                self.advert,
                if self.vip.is_ipv6() { " v6" } else { "" }
            ),
            scenario: scenario.into(),
            ..Default::default()
        };
        let obs = ArpObserver::start(self.lab.client(), self.vip, Duration::from_millis(10));
        for _ in 0..trials {
            let master = self.settled(&obs);
            let t = Instant::now();
            match scenario {
                "crash" => self.kill_host(master),
                "dead" => {
                    link(self.lab, self.lab.node(master), false);
                    self.kill_host(master);
                }
                "partition" => self.lab.isolate(self.lab.node(master)).unwrap(),
                "drain" => self.procs[master - 1]
                    .take()
                    .unwrap()
                    .terminate(Duration::from_secs(5)),
                other => panic!("unknown scenario {other:?}"),
            }
            let master_mac = self.macs[master - 1].0.clone();
            self.lab
                .wait_for(Duration::from_secs(30), || {
                    let last = obs.probes().last().cloned()?;
                    last.macs
                        .iter()
                        .any(|m| mac_string(m) != master_mac)
                        .then_some(())
                })
                .expect("another host took over");
            if ["partition", "crash", "dead"].contains(&scenario) {
                let until = t + Duration::from_secs(hold);
                self.lab.wait_for(Duration::from_secs(hold + 5), || {
                    (Instant::now() >= until).then_some(())
                });
            }
            let probes: Vec<_> = obs.probes().into_iter().filter(|p| p.at >= t).collect();
            trace(&probes, t);
            let a = analyze(&probes, t);
            if let Some((_, d)) = a.first_answer.iter().find(|(m, _)| *m != master_mac) {
                f.takeover.push(*d);
            }
            f.outage.push(a.outage);
            f.split_brain.push(a.split_brain);
            // Back to three running daemons, no cuts; a killed daemon left its address.
            match scenario {
                "partition" => self.lab.heal().unwrap(),
                "crash" => {
                    self.remove_vip(master);
                    self.procs[master - 1] = Some(self.spawn(master));
                }
                "dead" => {
                    self.remove_vip(master);
                    link(self.lab, self.lab.node(master), true);
                    self.procs[master - 1] = Some(self.spawn(master));
                }
                _ => self.procs[master - 1] = Some(self.spawn(master)),
            }
        }
        f
    }

    fn remove_vip(&self, id: usize) {
        let _ = self.lab.exec(
            self.lab.node(id),
            "ip",
            &["addr", "del", &self.vip_cidr, "dev", "eth0"],
        );
    }

    /// Stops every daemon and removes the VIP wherever it was left.
    pub fn stop(mut self) {
        for id in 1..=3 {
            if let Some(mut p) = self.procs[id - 1].take() {
                p.terminate(Duration::from_secs(5));
            }
            self.kill_host(id);
            self.remove_vip(id);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// With BENCH_TRACE set, prints who answered the probes from `t` on, at each change.
fn trace(probes: &[crate::arp::Probe], t: Instant) {
    if std::env::var_os("BENCH_TRACE").is_none() {
        return;
    }
    let mut last = String::from("?");
    for p in probes.iter().filter(|p| p.at >= t) {
        let m: Vec<String> = p.macs.iter().map(mac_string).collect();
        let m = m.join("+");
        if m != last {
            eprintln!(
                "  {:>6} ms: {}",
                (p.at - t).as_millis(),
                if m.is_empty() { "-" } else { &m }
            );
            last = m;
        }
    }
}

/// `ours / theirs` of the takeover p50 (below 1: Ballast faster), or "-".
pub fn takeover_ratio(ours: &Figures, theirs: &Figures) -> String {
    let (o, t) = (pct(&ours.takeover, 0.5), pct(&theirs.takeover, 0.5));
    if ours.takeover.is_empty() || theirs.takeover.is_empty() || t.is_zero() {
        return "-".into();
    }
    format!("{:.2}x", o.as_secs_f64() / t.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_ratios() {
        let d = Duration::from_millis;
        let a = Figures {
            system: "ballast".into(),
            scenario: "crash".into(),
            takeover: vec![d(800), d(900), d(700)],
            outage: vec![d(100)],
            split_brain: vec![d(0), d(0)],
            note: None,
            ..Default::default()
        };
        let b = Figures {
            takeover: vec![d(3200)],
            ..a.clone()
        };
        assert_eq!(takeover_ratio(&a, &b), "0.25x");
        assert_eq!(takeover_ratio(&a, &Figures::default()), "-");
        let r = row(&a);
        assert!(r.starts_with("ballast         crash"), "{r}");
        assert!(r.contains("    800     900     900"), "{r}");
    }
}
