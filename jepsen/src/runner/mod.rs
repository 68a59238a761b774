//! A test run: a cluster of real `ballastd` in the lab, register clients on the client host,
//! faults injected on a schedule, everything healed at the end, the history checked and saved.
//!
//! Scheduling (which fault, which nodes, which operation, which key) comes from a seeded RNG,
//! so a run is reproducible from its seed as far as scheduling goes; timing is the machine's.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_client::{v1, Client};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use crate::history::read_history;
use crate::history::{write_history, Fault, Line, Op, Outcome, RegisterOp};
use crate::lab::{in_netns, Lab, LabError, LabProcess};
pub use crate::nemesis::{Nemesis, ALL, POWER_CUTS};

mod faults;
mod members;
mod options;
mod power;
mod release;
mod set;
mod store;
mod verdict;
use faults::{end_fault, inject};
use members::{ask_cluster, tls_material, workload_client, Members, Shared};
pub use options::{Options, Workload, DEFAULT_CHECK_BUDGET};
use release::run_release;
pub use set::pseudo_random_bytes;
pub use store::recheck;
use store::{timestamp, write_reports, write_results};
pub use verdict::{check_lines, Results};

/// Runs a register test and returns where it was stored and its results.
pub fn run_register(o: &Options) -> Result<(PathBuf, Results), String> {
    run(o, Workload::Register)
}

/// Runs a test of `workload` and returns where it was stored and its results.
pub fn run(o: &Options, workload: Workload) -> Result<(PathBuf, Results), String> {
    match workload {
        Workload::Vip => return run_vip(o),
        Workload::Release => return run_release(o),
        _ => {}
    }
    let lab = Lab::new(o.nodes).map_err(|e| e.to_string())?;
    let data = std::env::temp_dir().join(format!("{}-data", lab.id()));
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let (flags, tls) = if o.tls {
        let (f, c) = tls_material(&lab, &data)?;
        (f, Some(c))
    } else {
        (vec![Vec::new(); o.nodes + 1], None)
    };
    let flags: Vec<Vec<String>> = match workload {
        Workload::Set => flags
            .into_iter()
            .map(|f| [f, set::timing()].concat())
            .collect(),
        _ => flags,
    };
    // Power cuts need every member's data directory on a power-loss file system.
    let disks = if o.nemeses.iter().any(|n| n.is_power_cut()) {
        Some(power::Disks::mount(&data, o.nodes)?)
    } else {
        None
    };
    let spawn = |id: usize| lab.spawn_ballastd(id, &data, &flags[id]);
    let mut procs: Vec<Option<LabProcess>> = (1..=o.nodes)
        .map(|id| spawn(id).map(Some))
        .collect::<Result<_, LabError>>()
        .map_err(|e| e.to_string())?;
    let members = Members {
        endpoints: lab.member_endpoints(o.nodes),
        tls,
    };
    let t0 = Instant::now();
    let ns = |t: Instant| t.duration_since(t0).as_nanos() as u64;

    // Clients on the client host, in their own runtime there.
    let history: Arc<Mutex<Vec<Op>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = {
        let shared = Shared {
            members: members.clone(),
            t0,
            history: history.clone(),
            stop: stop.clone(),
        };
        let (n, keys, seed) = (o.clients, o.keys, o.seed);
        in_netns(lab.client(), move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for p in 0..n {
                    let shared = shared.clone();
                    let seed = seed.wrapping_add(p as u64);
                    tasks.push(match workload {
                        Workload::Register => {
                            tokio::spawn(register_client(p as u64, n as u64, shared, keys, seed))
                        }
                        Workload::Set => tokio::spawn(set_client(p as u64, n as u64, shared)),
                        Workload::Vip | Workload::Release => {
                            unreachable!("vip and release have their own runners")
                        }
                    });
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
        .map_err(|e| e.to_string())?
    };

    // The nemesis, on this thread.
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut faults = Vec::new();
    let end = t0 + o.time_limit;
    let quiet = Duration::from_secs(3);
    let hold = Duration::from_secs(4);
    std::thread::sleep(quiet.min(o.time_limit));
    while !o.nemeses.is_empty() && Instant::now() + hold < end {
        let nemesis = o.nemeses[rng.gen_range(0..o.nemeses.len())];
        let start = Instant::now();
        let (detail, undo) = match &disks {
            Some(d) if nemesis.is_power_cut() => power::cut(d, &mut procs, nemesis, &mut rng)?,
            _ => inject(&lab, &mut procs, nemesis, &mut rng, &members)?,
        };
        std::thread::sleep(hold);
        undo(&lab, &mut procs, &spawn)?;
        faults.push(Fault {
            nemesis,
            detail,
            start: ns(start),
            end: ns(Instant::now()),
        });
        std::thread::sleep(quiet.min(end.saturating_duration_since(Instant::now())));
    }
    // Heal everything and give the cluster time to recover while clients keep going.
    lab.heal().map_err(|e| e.to_string())?;
    std::thread::sleep(end.saturating_duration_since(Instant::now()) + Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = clients.join();
    let final_read = match workload {
        Workload::Set => {
            // A cluster that cannot answer the final read has lost what it acknowledged
            // (as far as anyone can tell): a violation, not a failed run.
            let (values, damaged, failed) = match set::read_set(&lab, &members) {
                Ok((v, d)) => (v, d, None),
                Err(e) => (Vec::new(), Vec::new(), Some(e)),
            };
            let at = ns(Instant::now());
            let mut not_rejoined = set::not_rejoined(&lab, &members, &mut procs);
            not_rejoined.extend(failed);
            Some(Line::FinalRead {
                values,
                at,
                damaged,
                not_rejoined,
            })
        }
        _ => None,
    };
    drop(procs);
    drop(disks);
    let _ = std::fs::remove_dir_all(&data);

    let ops = history.lock().unwrap().clone();
    let dir = o.store.join(workload.name()).join(timestamp());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut lines: Vec<Line> = ops.iter().cloned().map(Line::Op).collect();
    lines.extend(faults.into_iter().map(Line::Fault));
    lines.extend(final_read);
    write_history(&dir.join("history.jsonl"), &lines)?;
    let results = check_lines(&lines, o.seed, o.check_budget);
    write_results(&dir, &results)?;
    write_reports(&dir, &lines, &results)?;
    Ok((dir, results))
}

/// The vip workload's second VIP (same service, so placed with the first).
const VIP2: &str = "10.213.0.101";

/// How soon after the last heal the VIP must answer again.
const VIP_LIVENESS: Duration = Duration::from_secs(5);

/// The vip workload (three members; `o.nodes` is ignored).
fn run_vip(o: &Options) -> Result<(PathBuf, Results), String> {
    use crate::viplab::{observer, VipLab, VIP};
    let (mut v, _, _) = VipLab::start();
    let t0 = Instant::now();
    let t0_mono = crate::lab::mono_ns();
    let ns = |t: Instant| t.saturating_duration_since(t0).as_nanos() as u64;
    let obs = observer(&v);
    // The client host talks to the VIP (so it has a neighbour entry for it), and every change
    // of that entry is recorded: which MAC the client would send to.
    let ping: Vec<String> = ["-q", "-i", "0.2", "-W", "1", VIP]
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
    let neigh = NeighMonitor::start(&v.lab, VIP, t0)?;
    // A second VIP of the same service, which the controller places on the same node: when
    // that node fails, one tick decides both (the decisions of a tick must not outlive their
    // term).
    let (ok, _, err) = v.ctl(&[
        "vip",
        "apply",
        "web-vip-2",
        "--address",
        &format!("{VIP2}/24"),
        "--interface",
        "eth0",
        "--service",
        "web",
    ]);
    if !ok {
        return Err(format!("second VIP: {err}"));
    }
    let obs2 = crate::arp::ArpObserver::start(
        v.lab.client(),
        VIP2.parse().expect("an address"),
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
                let out = v.lab.exec(
                    h,
                    "sh",
                    &[
                        "-c",
                        "ip -4 -o addr show dev eth0; nft list set arp ballast_fence allowed 2>/dev/null",
                    ],
                );
                let Ok(out) = out else { continue };
                let text = String::from_utf8_lossy(&out.stdout);
                epochs.push(Line::NodeView {
                    at,
                    node: i as u64 + 1,
                    address: text.contains(&format!("inet {VIP}/")),
                    allowed_ms: crate::checker::vip::allowance_in(&text, VIP)
                        .map(|d| d.as_millis() as u64),
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
    for (vip, observer) in [("", obs), (VIP2, obs2)] {
        let (probes, frames) = observer.stop_all()?;
        lines.extend(probes.iter().filter(|p| p.at >= t0).map(|p| Line::Probe {
            at: ns(p.at),
            macs: p.macs.iter().map(crate::mac_string).collect(),
            vip: vip.to_string(),
        }));
        let addr = if vip.is_empty() { VIP } else { vip };
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
            mac: crate::mac_string(&f.mac),
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

async fn register_client(p: u64, n: u64, shared: Shared, keys: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = p;
    let new_client = || workload_client(&shared.members);
    let mut client = new_client();
    let mut next_value = (p as i64) * 1_000_000;
    // The last value this process saw per key: what its CASes expect.
    let mut seen: std::collections::HashMap<String, i64> = Default::default();
    let ns = |t: Instant| t.duration_since(shared.t0).as_nanos() as u64;
    while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("r{}", rng.gen_range(0..keys));
        let op = match rng.gen_range(0..3) {
            0 => RegisterOp::Read,
            1 => {
                next_value += 1;
                RegisterOp::Write(next_value)
            }
            _ => {
                next_value += 1;
                RegisterOp::Cas(seen.get(&key).copied().unwrap_or(0), next_value)
            }
        };
        let call = Instant::now();
        let outcome = match &op {
            RegisterOp::Read => match client.get(key.clone(), false).await {
                Ok(r) => Outcome::Ok(r.kv.and_then(|kv| parse(&kv.value))),
                Err(_) => Outcome::Fail, // a read that did not answer constrains nothing
            },
            RegisterOp::Write(v) => match client.put(key.clone(), v.to_string()).await {
                Ok(_) => Outcome::Ok(None),
                Err(ballast_client::Error::InvalidArgument(_)) => Outcome::Fail,
                Err(_) => Outcome::Unknown,
            },
            RegisterOp::Cas(from, to) => match client
                .compare_and_set(
                    key.clone(),
                    v1::compare_and_set_request::Expected::ExpectedValue(
                        from.to_string().into_bytes(),
                    ),
                    to.to_string(),
                )
                .await
            {
                Ok(r) => Outcome::Ok(Some(r.succeeded as i64)),
                Err(ballast_client::Error::InvalidArgument(_)) => Outcome::Fail,
                Err(_) => Outcome::Unknown,
            },
        };
        let ret = Instant::now();
        if let (RegisterOp::Read, Outcome::Ok(Some(v))) = (&op, &outcome) {
            seen.insert(key.clone(), *v);
        }
        let unknown = outcome == Outcome::Unknown;
        shared.history.lock().unwrap().push(Op {
            process,
            key,
            op,
            outcome,
            call: ns(call),
            ret: ns(ret),
        });
        if unknown {
            // The operation may still be in flight: this process is done, a new one takes
            // its place (with a new client, so a new session).
            process += n;
            client = new_client();
        }
    }
}

/// Adds unique elements (each a key under "set/") until stopped.
async fn set_client(p: u64, n: u64, shared: Shared) {
    let new_client = || workload_client(&shared.members);
    let mut client = new_client();
    let mut process = p;
    let ns = |t: Instant| t.duration_since(shared.t0).as_nanos() as u64;
    let mut next = (p as i64) * 1_000_000;
    // Paced so that all clients together add at most set::SET_RATE per second.
    let every = Duration::from_secs_f64(n as f64 / set::SET_RATE);
    let mut due = Instant::now();
    while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep_until(due.into()).await;
        due = Instant::now().max(due + every);
        next += 1;
        let call = Instant::now();
        let outcome = match client
            .put(format!("set/{next:020}"), set::value(next))
            .await
        {
            Ok(_) => Outcome::Ok(None),
            Err(ballast_client::Error::InvalidArgument(_)) => Outcome::Fail,
            Err(_) => Outcome::Unknown,
        };
        let unknown = outcome == Outcome::Unknown;
        shared.history.lock().unwrap().push(Op {
            process,
            key: "set".into(),
            op: RegisterOp::Write(next),
            outcome,
            call: ns(call),
            ret: ns(Instant::now()),
        });
        if unknown {
            process += n;
            client = new_client();
        }
    }
}

fn parse(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}
