//! `jepsen test ...` runs a chaos test in the lab; `jepsen check DIR` re-checks a saved run.
//! Needs root (network namespaces) and the release or debug `ballastd` built.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jepsen::runner::{self, Nemesis, Options};

#[derive(Parser)]
#[command(
    name = "jepsen",
    about = "Ballast's chaos suite: real ballastd in the lab, faults on a schedule, checked histories",
    long_about = "Ballast's chaos suite. `test` builds a cluster of real ballastd in Linux \
network namespaces, runs a workload from clients on the client host, injects faults on a \
schedule, heals everything, checks the history and stores the run under \
STORE/<workload>/<timestamp>/ (history.jsonl, results.json). The exit code is 1 when a checker \
finds a violation, 3 when it cannot tell. Needs root."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a test.
    Test {
        /// The workload: register (read, write, compare-and-set on a few keys; checked for
        /// linearizability per key), set (unique adds, one final read after healing) or vip
        /// (three agents; ARP probes every 10 ms: never two holders, epochs monotonic, back
        /// within 5 s of healing; always 3 nodes) or release (a rollout starts with each
        /// fault, every third of a broken release; no node serves a release never
        /// activated, every node ends on the active one; always 3 nodes).
        #[arg(long, default_value = "register")]
        workload: String,
        /// Faults, comma separated: partition, isolate, isolate-leader, kill, pause-leader,
        /// one-way, ring, bridge, loss, kill-minority, kill-all, isolate-owner, pause-owner
        /// (the VIP's owner); or mixed (all of them). Register and set also take
        /// power-cut-one, power-cut-minority, power-cut-all (SIGKILL and the loss of what
        /// was not fsynced: members' data directories on a power-loss FUSE file system), or
        /// power-cut (the three).
        #[arg(long, default_value = "partition")]
        nemesis: String,
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Seconds of workload (faults come every ~7 s: 4 s on, 3 s off).
        #[arg(long, default_value_t = 30)]
        time_limit: u64,
        /// Seed of every scheduling choice [default: random, printed].
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 5)]
        clients: usize,
        #[arg(long, default_value_t = 3)]
        keys: usize,
        #[arg(long, default_value = "store")]
        store: PathBuf,
        /// Members speak mutual TLS, clients use a client certificate (register and set).
        #[arg(long)]
        tls: bool,
        /// Seconds the linearizability search may take over the whole history before the
        /// verdict is "unknown" (exit 3).
        #[arg(long, default_value_t = runner::DEFAULT_CHECK_BUDGET.as_secs())]
        budget: u64,
        /// The members' --read-policy, read-index or lease (register and set) [default:
        /// the members' default, read-index].
        #[arg(long, value_parser = ["read-index", "lease"])]
        read_policy: Option<String>,
        /// The vip workload's two VIPs are IPv6 (fd0a:d500::64 and ::65 on the lab's /64),
        /// announced by unsolicited neighbour advertisements and observed with neighbour
        /// solicitations.
        #[arg(long)]
        ipv6: bool,
    },
    /// Re-run the checkers on a saved run directory.
    Check {
        dir: PathBuf,
        /// Seconds the linearizability search may take over the whole history before the
        /// verdict is "unknown" (exit 3).
        #[arg(long, default_value_t = runner::DEFAULT_CHECK_BUDGET.as_secs())]
        budget: u64,
    },
}

fn exit_for(valid: Option<bool>) -> ExitCode {
    match valid {
        Some(true) => ExitCode::SUCCESS,
        Some(false) => ExitCode::from(1),
        None => ExitCode::from(3),
    }
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Check { dir, budget } => match runner::recheck(&dir, Duration::from_secs(budget)) {
            Ok(r) => {
                println!("{}", serde_json::to_string_pretty(&r).unwrap());
                exit_for(r.valid)
            }
            Err(e) => {
                eprintln!("jepsen check: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Test {
            workload,
            nemesis,
            nodes,
            time_limit,
            seed,
            clients,
            keys,
            store,
            tls,
            budget,
            read_policy,
            ipv6,
        } => {
            let workload = match workload.as_str() {
                "register" => runner::Workload::Register,
                "set" => runner::Workload::Set,
                "vip" => runner::Workload::Vip,
                "release" => runner::Workload::Release,
                other => {
                    eprintln!(
                        "jepsen test: unknown workload {other:?} (register, set, vip, release)"
                    );
                    return ExitCode::from(2);
                }
            };
            if ipv6 && !matches!(workload, runner::Workload::Vip) {
                eprintln!("jepsen test: --ipv6 is for the vip workload");
                return ExitCode::from(2);
            }
            if tls && matches!(workload, runner::Workload::Vip | runner::Workload::Release) {
                eprintln!("jepsen test: --tls is for the register and set workloads");
                return ExitCode::from(2);
            }
            if nodes != 3 && nodes != 5 {
                eprintln!("jepsen test: --nodes must be 3 or 5");
                return ExitCode::from(2);
            }
            let nemeses = match nemesis
                .split(',')
                .filter(|s| !s.is_empty() && *s != "none")
                .flat_map(|s| {
                    if s == "mixed" {
                        runner::ALL.iter().map(|n| Ok(*n)).collect::<Vec<_>>()
                    } else if s == "power-cut" {
                        runner::POWER_CUTS.iter().map(|n| Ok(*n)).collect()
                    } else {
                        vec![Nemesis::parse(s)]
                    }
                })
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("jepsen test: {e}");
                    return ExitCode::from(2);
                }
            };
            if nemeses.iter().any(|n| n.is_power_cut())
                && matches!(workload, runner::Workload::Vip | runner::Workload::Release)
            {
                eprintln!(
                    "jepsen test: the power-cut nemeses are for the register and set workloads"
                );
                return ExitCode::from(2);
            }
            let seed = seed.unwrap_or_else(rand::random);
            println!("seed {seed}");
            let o = Options {
                nodes,
                nemeses,
                time_limit: Duration::from_secs(time_limit),
                seed,
                clients: clients.max(1),
                keys: keys.max(1),
                store,
                tls,
                check_budget: Duration::from_secs(budget),
                read_policy,
                ipv6,
            };
            match runner::run(&o, workload) {
                Ok((dir, r)) => {
                    println!(
                        "{}: {} ops ({} ok, {} failed, {} unknown), {} faults; {}",
                        dir.display(),
                        r.ops,
                        r.ok,
                        r.failed,
                        r.unknown,
                        r.faults,
                        r.verdict
                    );
                    for op in &r.witness {
                        println!("  {op:?}");
                    }
                    exit_for(r.valid)
                }
                Err(e) => {
                    eprintln!("jepsen test: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
