//! Agents own the VIP on real lab hosts (three `ballastd --agent`, a client host): it answers
//! from its owner, and moves — without two hosts ever answering — when the owner is killed,
//! paused, isolated, drained or fails its health check; a stale address is removed at start.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jepsen::{ballast_bin, mac_string, ArpObserver, Host, Lab, LabProcess, Probe};
use serde_json::Value;

const VIP: &str = "10.213.0.100";

struct VipLab {
    lab: Lab,
    procs: Vec<Option<LabProcess>>,
    dir: PathBuf,
}

impl VipLab {
    /// Three members with agents; service "web" gated by an exec check `up` that passes while
    /// the file `dir/up-nN` exists; VIP "web-vip" on eth0. Returns once the VIP answers.
    fn start() -> (Self, u64, u64) {
        for bin in ["ballastd", "ballastctl"] {
            assert!(
                ballast_bin(bin).exists(),
                "{} missing: cargo build --workspace --bins",
                ballast_bin(bin).display()
            );
        }
        let lab = Lab::new(3).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
        let dir = std::env::temp_dir().join(format!("{}-data", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = VipLab {
            procs: Vec::new(),
            lab,
            dir,
        };
        for id in 1..=3u64 {
            std::fs::write(v.up_file(id), "").unwrap();
            let p = v.spawn(id);
            v.procs.push(Some(p));
        }
        v.lab
            .wait_for(Duration::from_secs(30), || {
                let (ok, out, _) = v.ctl(&["status", "-o", "json"]);
                let s: Value = serde_json::from_str(&out).ok()?;
                (ok && s["leader_id"].as_u64()? > 0).then_some(())
            })
            .expect("cluster formed");
        let (ok, _, err) = v.ctl(&[
            "service",
            "apply",
            "web",
            "--check",
            "exec:up",
            "--backends",
            "1,2,3",
            "--interval-ms",
            "100",
            "--timeout-ms",
            "100",
        ]);
        assert!(ok, "{err}");
        let (ok, _, err) = v.ctl(&[
            "vip",
            "apply",
            "web-vip",
            "--address",
            "10.213.0.100/24",
            "--interface",
            "eth0",
            "--service",
            "web",
        ]);
        assert!(ok, "{err}");
        let vip: Ipv4Addr = VIP.parse().unwrap();
        let (owner, epoch) = v
            .lab
            .wait_for(Duration::from_secs(30), || {
                v.owner()
                    .filter(|_| v.lab.can_ping_addr(v.lab.client(), vip))
            })
            .unwrap_or_else(|| panic!("the VIP never answered; logs:\n{}", v.logs()));
        (v, owner, epoch)
    }

    fn up_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("up-n{id}"))
    }

    fn spawn(&self, id: u64) -> LabProcess {
        let h = self.lab.node(id as usize);
        let members: Vec<String> = self
            .lab
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{}={}:7400", i + 1, h.addr))
            .collect();
        let args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--data-dir".into(),
            self.dir.join(format!("n{id}")).display().to_string(),
            "--listen".into(),
            format!("{}:7400", h.addr),
            "--http-listen".into(),
            format!("{}:7480", h.addr),
            "--initial-cluster".into(),
            members.join(","),
            "--heartbeat-ms".into(),
            "50".into(),
            "--election-timeout-min-ms".into(),
            "300".into(),
            "--election-timeout-max-ms".into(),
            "600".into(),
            "--agent".into(),
            "--exec-check".into(),
            format!("up=test -e {}", self.up_file(id).display()),
        ];
        self.lab
            .spawn(
                h,
                &ballast_bin("ballastd"),
                &args,
                &self.dir.join(format!("n{id}.log")),
            )
            .unwrap()
    }

    fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let endpoints: Vec<String> = self
            .lab
            .nodes()
            .iter()
            .map(|h| format!("{}:7400", h.addr))
            .collect();
        let ep = endpoints.join(",");
        let mut a = vec!["--endpoints", ep.as_str(), "--timeout", "3"];
        a.extend_from_slice(args);
        let out = self
            .lab
            .exec(
                self.lab.client(),
                ballast_bin("ballastctl").to_str().unwrap(),
                &a,
            )
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// (owner, epoch) as the cluster decided, if owned.
    fn owner(&self) -> Option<(u64, u64)> {
        let (ok, out, _) = self.ctl(&["vip", "ls", "-o", "json"]);
        if !ok {
            return None;
        }
        let v: Value = serde_json::from_str(&out).ok()?;
        let vip = v.as_array()?.first()?;
        let owner = vip["owner"].as_u64()?;
        (owner != 0 && vip["releasing"] == false)
            .then(|| (owner, vip["epoch"].as_u64().unwrap_or(0)))
    }

    fn mac(&self, id: u64) -> String {
        let out = self
            .lab
            .exec(
                self.lab.node(id as usize),
                "cat",
                &["/sys/class/net/eth0/address"],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
    }

    fn host(&self, id: u64) -> &Host {
        self.lab.node(id as usize)
    }

    /// Waits until another node than `old` owns the VIP and answers ARP for it.
    fn wait_moved(&self, old: u64, obs: &ArpObserver) -> (u64, u64) {
        let old_mac = self.mac(old);
        self.lab
            .wait_for(Duration::from_secs(30), || {
                let (o, e) = self.owner().filter(|(o, _)| *o != old)?;
                let new_mac = self.mac(o);
                let last = obs.probes().last().cloned()?;
                let macs: Vec<String> = last.macs.iter().map(mac_string).collect();
                (macs == vec![new_mac] && !macs.contains(&old_mac)).then_some((o, e))
            })
            .unwrap_or_else(|| {
                panic!(
                    "the VIP did not move away from node {old}; logs:\n{}",
                    self.logs()
                )
            })
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("n{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for VipLab {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails on any probe answered by two hosts; returns the longest run without any answer
/// after `from` (the client-visible outage).
fn check_history(probes: &[Probe], from: Instant) -> Duration {
    let mut outage = Duration::ZERO;
    let mut last_answer: Option<Instant> = None;
    for p in probes.iter().filter(|p| p.at >= from) {
        assert!(
            p.macs.len() <= 1,
            "split brain: {} hosts answered the probe at {:?}: {:?}",
            p.macs.len(),
            p.at - from,
            p.macs.iter().map(mac_string).collect::<Vec<_>>()
        );
        if !p.macs.is_empty() {
            if let Some(l) = last_answer {
                outage = outage.max(p.at - l);
            }
            last_answer = Some(p.at);
        }
    }
    outage
}

fn observer(v: &VipLab) -> ArpObserver {
    let o = ArpObserver::start(
        v.lab.client(),
        VIP.parse().unwrap(),
        Duration::from_millis(10),
    );
    v.lab
        .wait_for(Duration::from_secs(5), || {
            o.probes().iter().any(|p| !p.macs.is_empty()).then_some(())
        })
        .expect("the observer sees the VIP");
    o
}

#[test]
fn answers_from_its_owner_and_moves_when_the_owner_is_killed() {
    let (mut v, owner, epoch) = VipLab::start();
    let obs = observer(&v);
    let last = obs
        .probes()
        .into_iter()
        .rev()
        .find(|p| !p.macs.is_empty())
        .unwrap();
    assert_eq!(
        mac_string(&last.macs[0]),
        v.mac(owner),
        "ARP answered by the owner"
    );
    let t = Instant::now();
    v.procs[owner as usize - 1].take().unwrap().kill();
    let (new_owner, new_epoch) = v.wait_moved(owner, &obs);
    assert!(new_epoch > epoch);
    let outage = check_history(&obs.stop().unwrap(), t);
    // The dead owner's fence expired: its kernel no longer allows the VIP.
    let set = v
        .lab
        .exec(
            v.host(owner),
            "nft",
            &["list", "set", "arp", "ballast_fence", "allowed"],
        )
        .unwrap();
    assert!(!String::from_utf8_lossy(&set.stdout).contains(VIP));
    eprintln!("SIGKILL of node {owner}: node {new_owner} answers; client outage {outage:?}");
}

#[test]
fn a_paused_owner_stops_answering_by_its_deadline_and_stays_silent_after_resuming() {
    let (v, owner, _) = VipLab::start();
    let obs = observer(&v);
    let t = Instant::now();
    v.procs[owner as usize - 1].as_ref().unwrap().pause();
    let (new_owner, _) = v.wait_moved(owner, &obs);
    // Lease 600 ms - drift 20 ms from the last renewal, sent before the pause.
    let old_mac = v.mac(owner);
    let probes = obs.probes();
    let late: Vec<Duration> = probes
        .iter()
        .filter(|p| {
            p.at > t + Duration::from_millis(580) && p.macs.iter().any(|m| mac_string(m) == old_mac)
        })
        .map(|p| p.at - t)
        .collect();
    assert!(
        late.is_empty(),
        "the paused owner answered after its deadline: {late:?}"
    );
    v.procs[owner as usize - 1].as_ref().unwrap().resume();
    // Once resumed it reconciles: it is no longer the owner, so it removes the address.
    v.lab
        .wait_for(Duration::from_secs(10), || {
            let out = v
                .lab
                .exec(v.host(owner), "ip", &["-4", "addr", "show", "dev", "eth0"])
                .ok()?;
            (!String::from_utf8_lossy(&out.stdout).contains(VIP)).then_some(())
        })
        .expect("the resumed old owner removes the address");
    let outage = check_history(&obs.stop().unwrap(), t);
    eprintln!("SIGSTOP of node {owner}: node {new_owner} answers; client outage {outage:?}");
}

#[test]
fn isolating_the_owner_never_shows_two_hosts_answering() {
    let (v, owner, _) = VipLab::start();
    let obs = observer(&v);
    let t = Instant::now();
    v.lab.isolate(v.host(owner)).unwrap(); // the client still reaches every host
    let (new_owner, _) = v.wait_moved(owner, &obs);
    // Hold the partition a while longer, still watching.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    v.lab.heal().unwrap();
    let outage = check_history(&obs.stop().unwrap(), t);
    eprintln!("isolation of node {owner}: node {new_owner} answers; client outage {outage:?}");
}

#[test]
fn drain_and_a_failing_health_check_are_planned_moves() {
    let (v, owner, _) = VipLab::start();
    let obs = observer(&v);
    let t = Instant::now();
    let (ok, _, err) = v.ctl(&["node", "drain", &owner.to_string()]);
    assert!(ok, "{err}");
    let (second, _) = v.wait_moved(owner, &obs);
    let drain_outage = check_history(&obs.probes(), t);

    // The new owner's health check starts failing: the VIP moves again.
    let t = Instant::now();
    std::fs::remove_file(v.up_file(second)).unwrap();
    let (third, _) = v.wait_moved(second, &obs);
    assert_ne!(third, owner, "the drained node is not eligible");
    let health_outage = check_history(&obs.stop().unwrap(), t);
    eprintln!("drain of {owner}: outage {drain_outage:?}; failed check on {second}: outage {health_outage:?}");
}

#[test]
fn a_restarted_agent_removes_a_stale_vip_address() {
    let (mut v, owner, _) = VipLab::start();
    let follower = (1..=3).find(|i| *i != owner).unwrap();
    v.procs[follower as usize - 1].take().unwrap().kill();
    // A stale address, as a crash mid-release could leave.
    let out = v
        .lab
        .exec(
            v.host(follower),
            "ip",
            &["addr", "add", "10.213.0.100/24", "dev", "eth0"],
        )
        .unwrap();
    assert!(out.status.success());
    v.procs[follower as usize - 1] = Some(v.spawn(follower));
    v.lab
        .wait_for(Duration::from_secs(15), || {
            let out = v
                .lab
                .exec(
                    v.host(follower),
                    "ip",
                    &["-4", "addr", "show", "dev", "eth0"],
                )
                .ok()?;
            (!String::from_utf8_lossy(&out.stdout).contains(VIP)).then_some(())
        })
        .unwrap_or_else(|| panic!("the stale address stayed; logs:\n{}", v.logs()));
    assert_eq!(
        v.owner().map(|o| o.0),
        Some(owner),
        "the owner kept the VIP"
    );
}
