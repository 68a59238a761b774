//! A test run: a cluster of real `ballastd` in the lab, a workload's clients on the client
//! host, faults injected on a schedule, everything healed at the end, the history checked and
//! saved.
//!
//! Scheduling (which fault, which nodes, which operation, which key) comes from a seeded RNG,
//! so a run is reproducible from its seed as far as scheduling goes; timing is the machine's.
//!
//! This file is the orchestration only: [`run`] picks the workload's run, and runs the
//! register and set workloads itself (lab, members, clients, the fault schedule, healing, the
//! set's final read, storing). It holds no client logic, no fault mechanics and no checking:
//! - `options.rs`: what a run is asked to do ([`Options`], [`Workload`]);
//! - `members.rs`: how clients reach the members (endpoints, TLS material, short-lived clients);
//! - workloads: `register.rs` and `set.rs` (their clients), `vip.rs` and `release.rs` (their
//!   whole runs, each with its own schedule and observers);
//! - `faults.rs`: applying and undoing nemeses; `power.rs`: the power cuts;
//! - `verdict.rs`: a history into [`Results`]; `store.rs`: the run's directory and files, and
//!   [`recheck`].
//!
//! No file here imports this one: the dependencies run from here to the others.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::history::{write_history, Fault, Line, Op};
use crate::lab::{in_netns, Lab, LabError, LabProcess};
pub use crate::nemesis::{Nemesis, ALL, POWER_CUTS};

mod faults;
mod members;
mod options;
mod power;
mod register;
mod release;
mod set;
mod store;
mod verdict;
mod vip;
use faults::inject;
use members::{tls_material, Members, Shared};
pub use options::{Options, Workload, DEFAULT_CHECK_BUDGET};
use register::register_client;
use release::run_release;
pub use set::pseudo_random_bytes;
use set::set_client;
pub use store::recheck;
use store::{timestamp, write_reports, write_results};
use verdict::check_lines;
pub use verdict::Results;
use vip::run_vip;

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
    let flags: Vec<Vec<String>> = match &o.read_policy {
        Some(p) => flags
            .into_iter()
            .map(|f| [f, vec!["--read-policy".into(), p.clone()]].concat())
            .collect(),
        None => flags,
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
