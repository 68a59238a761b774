//! API benchmark: Ballast beside etcd 3.4 in the same lab, same run. Three Ballast members on
//! lab hosts n1..n3 are measured from the client host (put, linearizable get by read index
//! and by the leader lease, which etcd lacks and is compared with its get; concurrency 1,
//! 16 and 64), stopped, then three etcd members (Debian etcd-server, default fsync) on the
//! same hosts are measured the same way; a table with both and the ratios is printed. Needs
//! root, `etcd` and the release `ballastd`:
//!
//!   cargo build --workspace --bins --release && target/release/api-bench

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ballast_client::{v1, Client, ClientConfig};
use clap::Parser;
use jepsen::apibench::{key_for, measure, ratio, Etcd, Figures};

/// One second of the same load, not counted, then the measured run: the first requests of a
/// row pay for connection windows and allocator growth, not for the system under test.
async fn warm_then_measure<F, Fut>(concurrency: usize, length: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    measure(concurrency, Duration::from_secs(1), op.clone()).await;
    measure(concurrency, length, op).await
}
use jepsen::{Lab, LabProcess};

#[derive(Parser, Clone)]
#[command(
    name = "api-bench",
    about = "Put and linearizable-get throughput and latency of Ballast beside etcd 3.4, \
in the same lab (three members each on the same hosts, client on the client host)"
)]
struct Args {
    /// Seconds of load per row.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrency levels (closed-loop workers), comma separated.
    #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Operations: put, get (linearizable: Ballast's read index, etcd's default), lget
    /// (Ballast only: linearizable by the leader's lease, compared with etcd's get), comma
    /// separated.
    #[arg(long, default_value = "put,get,lget", value_delimiter = ',')]
    ops: Vec<String>,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Distinct keys (written before the gets).
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Systems to measure, in this order: ballast, etcd.
    #[arg(long, default_value = "ballast,etcd", value_delimiter = ',')]
    systems: Vec<String>,
    /// Where etcd requests go: `leader` (like Ballast's client) or `spread` (round-robin over
    /// the members, like etcd's clientv3).
    #[arg(long, default_value = "leader")]
    etcd_target: String,
    /// The etcd binary.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Keep the members' data directories and logs (printed at the start) instead of
    /// removing them at the end.
    #[arg(long)]
    keep: bool,
    /// An extra argument for every ballastd, repeatable; e.g.
    /// `--ballastd-arg=--snapshot-logs=2000` to see snapshots and purges sooner.
    #[arg(long = "ballastd-arg", allow_hyphen_values = true)]
    ballastd_args: Vec<String>,
}

/// (system, op, concurrency, figures)
type Row = (String, String, usize, Figures);

fn main() -> ExitCode {
    let a = Args::parse();
    for op in &a.ops {
        if !matches!(op.as_str(), "put" | "get" | "lget") {
            eprintln!("api-bench: unknown op {op:?} (put, get, lget)");
            return ExitCode::from(2);
        }
    }
    for s in &a.systems {
        if s != "ballast" && s != "etcd" {
            eprintln!("api-bench: unknown system {s:?} (ballast, etcd)");
            return ExitCode::from(2);
        }
    }
    if a.etcd_target != "leader" && a.etcd_target != "spread" {
        eprintln!("api-bench: --etcd-target is leader or spread");
        return ExitCode::from(2);
    }
    if a.systems.iter().any(|s| s == "etcd") && !a.etcd.exists() {
        eprintln!(
            "api-bench: {} missing (apt-get install etcd-server)",
            a.etcd.display()
        );
        return ExitCode::from(2);
    }
    let lab = Lab::new(3).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
    let dir = std::env::temp_dir().join(format!("{}-api", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "api-bench: {} s per row, {} B values, {} keys, client on the client host, data in {}",
        a.seconds,
        a.value_size,
        a.keys,
        dir.display()
    );
    let mut rows: Vec<Row> = Vec::new();
    for system in a.systems.clone() {
        let r = match system.as_str() {
            "ballast" => run_ballast(&lab, &dir, &a),
            _ => run_etcd(&lab, &dir, &a),
        };
        match r {
            Ok(mut r) => rows.append(&mut r),
            Err(e) => {
                eprintln!("api-bench: {system}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    print_comparison(&rows, &a);
    if a.keep {
        println!("kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    ExitCode::SUCCESS
}

fn print_row(system: &str, op: &str, conc: usize, f: &Figures) {
    println!(
        "{system:<8} {op:<4} c={conc:<3} {:>9.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ok, {} errors)",
        f.ops_per_sec(),
        ms(f.p50),
        ms(f.p99),
        f.ok,
        f.errors
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_comparison(rows: &[Row], a: &Args) {
    let find = |sys: &str, op: &str, c: usize| {
        rows.iter()
            .find(|r| r.0 == sys && r.1 == op && r.2 == c)
            .map(|r| &r.3)
    };
    println!();
    println!(
        "op   conc | ballast ops/s  p50 ms  p99 ms | etcd ops/s  p50 ms  p99 ms | throughput  p99"
    );
    for op in &a.ops {
        for &c in &a.concurrency {
            // etcd has no lease reads: a lease get is compared with its linearizable get.
            let etcd_op = if op == "lget" { "get" } else { op.as_str() };
            let (Some(b), Some(e)) = (find("ballast", op, c), find("etcd", etcd_op, c)) else {
                continue;
            };
            println!(
                "{op:<4} {c:>4} | {:>13.0} {:>7.2} {:>7.2} | {:>10.0} {:>7.2} {:>7.2} | {:>10} {:>5}",
                b.ops_per_sec(),
                ms(b.p50),
                ms(b.p99),
                e.ops_per_sec(),
                ms(e.p50),
                ms(e.p99),
                ratio(b.ops_per_sec(), e.ops_per_sec()),
                // p99 as a multiple of etcd's: below 1 is better.
                ratio(ms(b.p99), ms(e.p99)),
            );
        }
    }
    println!("throughput: ballast / etcd (above 1: Ballast faster); p99: ballast / etcd (below 1: Ballast faster)");
}

/// Runs `f` inside the client host on a two-worker runtime (as many as the machine's cores).
fn on_client<T: Send + 'static>(
    lab: &Lab,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    lab.run_in(lab.client(), move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .expect("the client host's thread")
}

fn run_ballast(lab: &Lab, dir: &Path, a: &Args) -> Result<Vec<Row>, String> {
    let bin = jepsen::ballast_bin("ballastd");
    if !bin.exists() {
        return Err(format!(
            "{} missing: cargo build --workspace --bins --release",
            bin.display()
        ));
    }
    let mut procs: Vec<LabProcess> = Vec::new();
    for id in 1..=3 {
        procs.push(
            lab.spawn_ballastd(id, dir, &a.ballastd_args)
                .map_err(|e| e.to_string())?,
        );
    }
    let endpoints = lab.member_endpoints(3);
    let a2 = a.clone();
    let rows = on_client(lab, move || {
        Box::pin(async move {
            let client = Client::new(ClientConfig::new(endpoints));
            wait_until(Duration::from_secs(30), || {
                let c = client.clone();
                async move { c.status().await.ok().filter(|s| s.leader_id != 0) }
            })
            .await
            .ok_or("no Ballast leader within 30 s")?;
            let value = vec![b'x'; a2.value_size];
            for k in 0..a2.keys {
                client
                    .put(format!("bench/{k}"), value.clone())
                    .await
                    .map_err(|e| format!("preload: {e}"))?;
            }
            let rows = measure_rows("ballast", &a2, move |op, _worker, key| {
                let (client, value) = (client.clone(), value.clone());
                async move {
                    match op {
                        Op::Put => client.put(key, value).await.map(|_| ()),
                        Op::Get => client
                            .get_with(key, v1::ReadConsistency::ReadIndex)
                            .await
                            .map(|_| ()),
                        Op::LeaseGet => client
                            .get_with(key, v1::ReadConsistency::Lease)
                            .await
                            .map(|_| ()),
                    }
                    .map_err(|e| e.to_string())
                }
            })
            .await;
            Ok::<_, String>(rows)
        })
    });
    for p in &mut procs {
        p.terminate(Duration::from_secs(5));
    }
    rows
}

fn run_etcd(lab: &Lab, dir: &Path, a: &Args) -> Result<Vec<Row>, String> {
    let cluster: Vec<String> = lab
        .nodes()
        .iter()
        .map(|h| format!("{}=http://{}:2380", h.name, h.addr))
        .collect();
    let mut procs: Vec<LabProcess> = Vec::new();
    for h in lab.nodes() {
        let args: Vec<String> = [
            "--name",
            &h.name,
            "--data-dir",
            &dir.join(format!("etcd-{}", h.name)).display().to_string(),
            "--listen-client-urls",
            &format!("http://{}:2379", h.addr),
            "--advertise-client-urls",
            &format!("http://{}:2379", h.addr),
            "--listen-peer-urls",
            &format!("http://{}:2380", h.addr),
            "--initial-advertise-peer-urls",
            &format!("http://{}:2380", h.addr),
            "--initial-cluster",
            &cluster.join(","),
            "--initial-cluster-token",
            "api-bench",
            "--initial-cluster-state",
            "new",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        procs.push(
            lab.spawn(h, &a.etcd, &args, &dir.join(format!("etcd-{}.log", h.name)))
                .map_err(|e| e.to_string())?,
        );
    }
    let endpoints: Vec<String> = lab
        .nodes()
        .iter()
        .map(|h| format!("{}:2379", h.addr))
        .collect();
    let a2 = a.clone();
    let rows = on_client(lab, move || {
        Box::pin(async move {
            let etcd = wait_until(Duration::from_secs(30), || {
                let eps = endpoints.clone();
                async move { Etcd::connect(&eps).await.ok() }
            })
            .await
            .ok_or("etcd did not elect a leader within 30 s")?;
            let value = vec![b'x'; a2.value_size];
            let leader = etcd.members[etcd.leader].clone();
            for k in 0..a2.keys {
                Etcd::put(leader.clone(), format!("bench/{k}"), value.clone())
                    .await
                    .map_err(|e| format!("preload: {e}"))?;
            }
            let spread = a2.etcd_target == "spread";
            let rows = measure_rows("etcd", &a2, move |op, worker, key| {
                let ch = if spread {
                    etcd.members[worker % etcd.members.len()].clone()
                } else {
                    etcd.members[etcd.leader].clone()
                };
                let value = value.clone();
                async move {
                    if op == Op::Put {
                        Etcd::put(ch, key, value).await
                    } else {
                        Etcd::get(ch, key).await
                    }
                }
            })
            .await;
            Ok::<_, String>(rows)
        })
    });
    for p in &mut procs {
        p.terminate(Duration::from_secs(5));
    }
    rows
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    LeaseGet,
}

/// Every (op, concurrency) row of `system`, printed as it is measured; `call(op, worker,
/// key)` makes one request. etcd skips lease gets.
async fn measure_rows<F, Fut>(system: &str, a: &Args, call: F) -> Vec<Row>
where
    F: Fn(Op, usize, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let mut rows = Vec::new();
    for op in &a.ops {
        let kind = match op.as_str() {
            "put" => Op::Put,
            "get" => Op::Get,
            _ if system == "etcd" => continue,
            _ => Op::LeaseGet,
        };
        for &c in &a.concurrency {
            let (call, keys) = (call.clone(), a.keys);
            let f = warm_then_measure(c, Duration::from_secs(a.seconds), move |w, n| {
                call(kind, w, key_for(w, n, c, keys))
            })
            .await;
            print_row(system, op, c, &f);
            rows.push((system.to_string(), op.clone(), c, f));
        }
    }
    rows
}

/// Polls `f` every 100 ms until it gives a value or `timeout` passes.
async fn wait_until<T, Fut>(timeout: Duration, f: impl Fn() -> Fut) -> Option<T>
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
