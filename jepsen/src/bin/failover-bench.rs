//! Failover benchmark in the lab: three `ballastd --agent`, a client host probing the VIP by
//! ARP every 10 ms. For each scenario and trial: the takeover time (fault to first answer from
//! the new owner), the client outage (longest gap between answers) and the split-brain time
//! (time during which two hosts answered probes, which must be 0). Needs root.
//!
//!   cargo build --workspace --bins --release
//!   target/release/failover-bench [--trials 20] [--scenarios crash,partition,drain,leader]
//!
//! `leader` kills the Raft leader while another node owns the VIP: nothing should move and
//! the client should see no outage (the owner renews with the next leader in time).

use std::time::{Duration, Instant};

use jepsen::viplab::{analyze, observer, spread, VipLab};

fn main() {
    let mut trials = 20usize;
    let mut scenarios = vec![
        "crash".to_string(),
        "partition".to_string(),
        "drain".to_string(),
        "leader".to_string(),
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut show_logs = false;
    // Seconds a partition is held (from the fault) before healing; 0: heal once moved.
    let mut hold = 0u64;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--trials" => {
                trials = args[i + 1].parse().expect("--trials N");
                i += 1;
            }
            "--scenarios" => {
                scenarios = args[i + 1].split(',').map(String::from).collect();
                i += 1;
            }
            "--show-logs" => show_logs = true,
            "--hold" => {
                hold = args[i + 1].parse().expect("--hold SECONDS");
                i += 1;
            }
            "-h" | "--help" => {
                println!("failover-bench [--trials N] [--scenarios crash,partition,drain,leader] [--hold SECS] [--show-logs]");
                return;
            }
            other => panic!("unknown argument {other:?}"),
        }
        i += 1;
    }
    let (mut v, _, _) = VipLab::start();
    println!("scenario   trials  takeover p50/p99/max (ms)   client outage p50/p99/max (ms)   split-brain (ms)");
    for scenario in &scenarios {
        let (mut takeover, mut outage, mut split) = (Vec::new(), Vec::new(), Duration::ZERO);
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
                let obs = observer(&v);
                let t = Instant::now();
                v.procs[leader as usize - 1].take().expect("running").kill();
                // Done when another leader leads and the old one is known to be down.
                v.lab
                    .wait_for(Duration::from_secs(30), || {
                        v.leader().filter(|l| *l != leader)?;
                        v.node_alive(leader).filter(|a| !a)
                    })
                    .expect("a new leader marked the old one down");
                let probes = obs.stop().expect("observer ran");
                let a = analyze(&probes, t);
                assert_eq!(a.first_answer.len(), 1, "the VIP stayed put: {a:?}");
                outage.push(a.outage);
                takeover.push(Duration::ZERO);
                split += a.split_brain;
                v.procs[leader as usize - 1] = Some(v.spawn(leader));
                continue;
            }
            let obs = observer(&v);
            let t = Instant::now();
            match scenario.as_str() {
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
            let a = analyze(&probes, t);
            if show_logs {
                // Where the longest gap was, on the wall clock, to line up with the logs.
                let wall = std::time::SystemTime::now();
                let now = Instant::now();
                let answered: Vec<&Instant> = probes
                    .iter()
                    .filter(|p| p.at >= t && !p.macs.is_empty())
                    .map(|p| &p.at)
                    .collect();
                if let Some(w) = answered.windows(2).max_by_key(|w| *w[1] - *w[0]) {
                    let to_wall = |i: Instant| humantime_like(wall - (now - i));
                    println!("gap {} .. {}", to_wall(*w[0]), to_wall(*w[1]));
                }
            }
            let first_new = a
                .first_answer
                .iter()
                .find(|(m, _)| *m == new_mac)
                .map(|x| x.1)
                .expect("the new owner answered");
            takeover.push(first_new);
            outage.push(a.outage);
            split += a.split_brain;
            match scenario.as_str() {
                "crash" => v.procs[owner as usize - 1] = Some(v.spawn(owner)),
                "partition" => v.lab.heal().unwrap(),
                _ => {
                    let (ok, _, err) = v.ctl(&["node", "resume", &owner.to_string()]);
                    assert!(ok, "{err}");
                }
            }
        }
        if co_located > 0 {
            println!("{scenario}: {co_located} trials skipped, the leader owned the VIP");
        }
        if takeover.is_empty() {
            continue;
        }
        println!(
            "{scenario:<10} {trials:>6}  {}          {}            {:>6.0}",
            spread(&mut takeover),
            spread(&mut outage),
            split.as_secs_f64() * 1000.0,
        );
    }
    if show_logs {
        println!("{}", v.logs());
    }
}

/// Seconds and microseconds of the minute, UTC, as the logs print them.
fn humantime_like(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{:02}.{:06}", d.as_secs() % 60, d.subsec_micros())
}
