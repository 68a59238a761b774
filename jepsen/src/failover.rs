//! Failover benchmarks: Ballast's agents and keepalived (Debian's 2.2.7) with the same VIP on
//! the same lab hosts, watched by the same ARP observer on the client host (a probe every
//! 10 ms). Per trial: takeover (fault to the first answer from another host), client outage
//! (longest gap between answered probes) and split-brain time (time during which two hosts
//! answered). `failover-bench` runs both in one lab and prints the ratios.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::arp::{mac_string, ArpObserver};
use crate::lab::{Lab, LabProcess};
use crate::viplab::{analyze, observer, VipLab, VIP};

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

/// Ballast's scenarios on a running [`VipLab`]: `crash` (SIGKILL of the owner), `partition`
/// (owner isolated; held `hold` from the fault, 0: healed once moved), `drain` (planned
/// move) and `leader` (SIGKILL of the Raft leader while another node owns the VIP: nothing
/// should move).
pub fn ballast(v: &mut VipLab, scenario: &str, trials: usize, hold: u64) -> Figures {
    let mut f = Figures {
        system: "ballast".into(),
        scenario: scenario.into(),
        ..Default::default()
    };
    let mut co_located = 0;
    for _ in 0..trials {
        let (owner, _) = v.wait_settled();
        if scenario == "leader" {
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
            v.procs[leader as usize - 1].take().expect("running").kill();
            v.lab
                .wait_for(Duration::from_secs(30), || {
                    v.leader().filter(|l| *l != leader)?;
                    v.node_alive(leader).filter(|a| !a)
                })
                .expect("a new leader marked the old one down");
            let a = analyze(&obs.stop().expect("observer ran"), t);
            assert_eq!(a.first_answer.len(), 1, "the VIP stayed put: {a:?}");
            f.outage.push(a.outage);
            f.takeover.push(Duration::ZERO);
            f.split_brain.push(a.split_brain);
            v.procs[leader as usize - 1] = Some(v.spawn(leader));
            continue;
        }
        let obs = observer(v);
        let t = Instant::now();
        match scenario {
            "crash" => v.procs[owner as usize - 1].take().expect("running").kill(),
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
        let probes = obs.stop().expect("observer ran");
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
        match scenario {
            "crash" => v.procs[owner as usize - 1] = Some(v.spawn(owner)),
            "partition" => v.lab.heal().unwrap(),
            _ => {
                let (ok, _, err) = v.ctl(&["node", "resume", &owner.to_string()]);
                assert!(ok, "{err}");
            }
        }
    }
    if co_located > 0 {
        f.note = Some(format!(
            "{co_located} trials skipped: the leader owned the VIP"
        ));
    }
    f
}

/// Leaves the node hosts as a stopped Ballast agent should, and makes sure of it: no VIP
/// address, no fence tables (a fence left behind would drop another daemon's ARP answers).
pub fn clear_ballast(lab: &Lab) {
    for h in lab.nodes() {
        for family in ["arp", "ip"] {
            let _ = lab.exec(h, "nft", &["delete", "table", family, "ballast_fence"]);
        }
        let _ = lab.exec(
            h,
            "ip",
            &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"],
        );
    }
}

/// keepalived on the three node hosts of a lab: VRRP instance for [`VIP`] on eth0, priorities
/// 100/90/80, nopreempt, `advert_int` as given (VRRPv3 below one second, as v2 rounds to
/// whole seconds).
pub struct Keepalived<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    advert: String,
    procs: Vec<Option<LabProcess>>,
    /// MAC -> node id.
    macs: Vec<(String, usize)>,
}

pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

impl<'a> Keepalived<'a> {
    pub fn start(lab: &'a Lab, dir: &Path, advert: &str) -> Self {
        let dir = dir.join(format!("keepalived-{advert}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut k = Keepalived {
            lab,
            dir,
            advert: advert.into(),
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
        let version = if self.advert.parse::<f64>().unwrap_or(1.0) < 1.0 {
            "3"
        } else {
            "2"
        };
        format!(
            "global_defs {{\n  router_id n{id}\n  vrrp_version {version}\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  \
             virtual_router_id 51\n  priority {}\n  advert_int {}\n  \
             virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n",
            110 - 10 * id,
            self.advert
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
            .expect("keepalived settled on one master")
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
    /// on the dead daemon's interface), `partition` (master isolated for `hold` s) or `drain`
    /// (SIGTERM of the master's keepalived: a graceful handover).
    pub fn scenario(&mut self, scenario: &str, trials: usize, hold: u64) -> Figures {
        let mut f = Figures {
            system: format!("keepalived {}", self.advert),
            scenario: scenario.into(),
            ..Default::default()
        };
        let obs = ArpObserver::start(
            self.lab.client(),
            VIP.parse().unwrap(),
            Duration::from_millis(10),
        );
        for _ in 0..trials {
            let master = self.settled(&obs);
            let t = Instant::now();
            match scenario {
                "crash" => self.kill_host(master),
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
            if scenario == "partition" || scenario == "crash" {
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
                _ => self.procs[master - 1] = Some(self.spawn(master)),
            }
        }
        f
    }

    fn remove_vip(&self, id: usize) {
        let _ = self.lab.exec(
            self.lab.node(id),
            "ip",
            &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"],
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
