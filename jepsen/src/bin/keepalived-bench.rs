//! keepalived 2.2.7 (Debian) in the same lab and with the same VIP as `failover-bench`, for
//! the ratios in docs/benchmarks.md. Three node hosts run keepalived (VRRP, priorities
//! 100/90/80, nopreempt), a client host probes the VIP by ARP every 10 ms. Scenarios, per
//! trial: `crash` (SIGKILL of every keepalived process of the master's host; observed for
//! --hold seconds: the address stays on the dead daemon's interface), `partition` (master
//! isolated from the other nodes for --hold seconds, client still reaching all) and `drain`
//! (SIGTERM of the master's keepalived: a graceful handover). Prints takeover, client outage and split-brain
//! time (time during which two hosts answered probes). Needs root and keepalived.
//!
//!   target/release/keepalived-bench [--advert-int 1|0.1] [--trials 5] [--hold 8]
//!       [--scenarios crash,partition,drain]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jepsen::viplab::{analyze, spread, VIP};
use jepsen::{mac_string, ArpObserver, Lab, LabProcess};

fn config(id: usize, advert: &str) -> String {
    // Sub-second adverts need VRRPv3 (v2 rounds advert_int to whole seconds).
    let version = if advert.parse::<f64>().unwrap_or(1.0) < 1.0 {
        "3"
    } else {
        "2"
    };
    format!(
        "global_defs {{\n  router_id n{id}\n  vrrp_version {version}\n}}\n\
         vrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface eth0\n  \
         virtual_router_id 51\n  priority {}\n  advert_int {advert}\n  \
         virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n",
        110 - 10 * id
    )
}

fn spawn(lab: &Lab, dir: &Path, id: usize) -> LabProcess {
    let conf = dir.join(format!("n{id}.conf"));
    let args: Vec<String> = vec![
        "-n".into(),
        "-l".into(),
        "-P".into(),
        "-f".into(),
        conf.display().to_string(),
        "-p".into(),
        dir.join(format!("n{id}.pid")).display().to_string(),
        "-r".into(),
        dir.join(format!("n{id}-vrrp.pid")).display().to_string(),
    ];
    lab.spawn(
        lab.node(id),
        Path::new("/usr/sbin/keepalived"),
        &args,
        &dir.join(format!("n{id}.log")),
    )
    .expect("keepalived starts")
}

/// MAC -> node id.
fn macs(lab: &Lab) -> Vec<(String, usize)> {
    (1..=3)
        .map(|id| {
            let out = lab
                .exec(lab.node(id), "cat", &["/sys/class/net/eth0/address"])
                .unwrap();
            (
                String::from_utf8_lossy(&out.stdout).trim().to_lowercase(),
                id,
            )
        })
        .collect()
}

/// Waits until exactly one host answers, for a few probes in a row; returns its node id.
fn settled(lab: &Lab, obs: &ArpObserver, who: &[(String, usize)]) -> usize {
    lab.wait_for(Duration::from_secs(60), || {
        let p = obs.probes();
        let last: Vec<_> = p.iter().rev().take(20).collect();
        if last.len() < 20 || last.iter().any(|p| p.macs.len() != 1) {
            return None;
        }
        let m = mac_string(&last[0].macs[0]);
        if last.iter().any(|p| mac_string(&p.macs[0]) != m) {
            return None;
        }
        who.iter().find(|(x, _)| *x == m).map(|(_, id)| *id)
    })
    .expect("keepalived settled on one master")
}

fn main() {
    let mut advert = "1".to_string();
    let mut trials = 5usize;
    let mut hold = 8u64;
    let mut scenarios = vec![
        "crash".to_string(),
        "partition".to_string(),
        "drain".to_string(),
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().expect("a value");
        match args[i].as_str() {
            "--advert-int" => advert = val(),
            "--trials" => trials = val().parse().expect("--trials N"),
            "--hold" => hold = val().parse().expect("--hold SECONDS"),
            "--scenarios" => scenarios = val().split(',').map(String::from).collect(),
            "-h" | "--help" => {
                println!("keepalived-bench [--advert-int 1|0.1] [--trials 5] [--hold 8] [--scenarios crash,partition,drain]");
                return;
            }
            other => panic!("unknown argument {other:?}"),
        }
        i += 2;
    }
    let lab = Lab::new(3).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    let dir: PathBuf = std::env::temp_dir().join(format!("{}-keepalived", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    for id in 1..=3 {
        std::fs::write(dir.join(format!("n{id}.conf")), config(id, &advert)).unwrap();
    }
    let mut procs: Vec<Option<LabProcess>> =
        (1..=3).map(|id| Some(spawn(&lab, &dir, id))).collect();
    let who = macs(&lab);
    let obs = ArpObserver::start(
        lab.client(),
        VIP.parse().unwrap(),
        Duration::from_millis(10),
    );
    println!("keepalived advert_int {advert}");
    println!("scenario   trials  takeover p50/p99/max (ms)   client outage p50/p99/max (ms)   split-brain per trial p50/max (ms)");
    for scenario in &scenarios {
        let (mut takeover, mut outage, mut split) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..trials {
            let master = settled(&lab, &obs, &who);
            let t = Instant::now();
            match scenario.as_str() {
                "crash" => {
                    // Every keepalived process of that host at once (the parent alone would
                    // let its VRRP child shut down gracefully).
                    let out = lab
                        .exec(lab.node(master), "pgrep", &["-x", "keepalived"])
                        .unwrap();
                    let ns_pids = std::process::Command::new("ip")
                        .args(["netns", "pids", &lab.node(master).netns])
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
                    if let Some(mut p) = procs[master - 1].take() {
                        p.kill();
                    }
                }
                "partition" => lab.isolate(lab.node(master)).unwrap(),
                "drain" => procs[master - 1]
                    .take()
                    .unwrap()
                    .terminate(Duration::from_secs(5)),
                other => panic!("unknown scenario {other:?}"),
            }
            let master_mac = who[master - 1].0.clone();
            // Done when another host answers (and, for a partition, after the hold).
            lab.wait_for(Duration::from_secs(30), || {
                let last = obs.probes().last().cloned()?;
                last.macs
                    .iter()
                    .any(|m| mac_string(m) != master_mac)
                    .then_some(())
            })
            .expect("another host took over");
            if scenario == "partition" || scenario == "crash" {
                let until = t + Duration::from_secs(hold);
                lab.wait_for(Duration::from_secs(hold + 5), || {
                    (Instant::now() >= until).then_some(())
                });
            }
            let probes: Vec<_> = obs.probes().into_iter().filter(|p| p.at >= t).collect();
            if std::env::var_os("BENCH_TRACE").is_some() {
                let mut last = String::from("?");
                for p in &probes {
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
            let a = analyze(&probes, t);
            if let Some((_, d)) = a.first_answer.iter().find(|(m, _)| *m != master_mac) {
                takeover.push(*d);
            }
            outage.push(a.outage);
            split.push(a.split_brain);
            // Back to three running daemons, no cuts; a killed daemon left its address.
            match scenario.as_str() {
                "partition" => lab.heal().unwrap(),
                "crash" => {
                    let _ = lab.exec(
                        lab.node(master),
                        "ip",
                        &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"],
                    );
                    procs[master - 1] = Some(spawn(&lab, &dir, master));
                }
                _ => procs[master - 1] = Some(spawn(&lab, &dir, master)),
            }
        }
        let mut split_sorted = split.clone();
        split_sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{scenario:<10} {trials:>6}  {}          {}            {:>6.0} {:>6.0}",
            spread(&mut takeover),
            spread(&mut outage),
            ms(split_sorted[split_sorted.len() / 2]),
            ms(*split_sorted.last().unwrap()),
        );
    }
    drop(obs);
    procs.clear();
    let _ = std::fs::remove_dir_all(&dir);
}
