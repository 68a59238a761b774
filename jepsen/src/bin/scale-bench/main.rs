//! Scale benchmark (issue 14): how the leader's cost grows with agents and VIPs.
//!
//! For each step (agents x VIPs) a fresh three-member cluster of release `ballastd` processes
//! runs on loopback (data in a temporary directory, free ports; no root, no namespaces). The
//! agents are simulated: tokio tasks in this process, each with its own client and connections,
//! speaking the real Agent protocol with the real agent's rhythm (`Register` once, `Renew`
//! every renew interval the leader sends and at once when a change of the cluster state gives
//! it a VIP it neither holds nor claimed last time, `ReportHealth` when the cluster's view of
//! its backend differs, `ConfirmRelease` for releases asked of it), its deadline math
//! (`agent::plan::deadline`) and its claim and drop rules; only the fence, addresses and ARP
//! are left out. The cluster state every agent plans from is read once per burst of changes by
//! one shared watcher, not by each agent (the real agent reads it itself: `--help` says what
//! that leaves out). Like the real agent, which takes every watch event already queued before
//! its one state read, an agent reconciles once per state it has not seen, however many
//! revisions that state covers.
//!
//! Per step it measures, over a window in which nothing changes: renewals per second the
//! leader answered (its own request counter), renewal latency as the agents see it, the
//! leader's CPU (utime + stime from /proc) as a fraction of one core, its resident memory, and
//! how fast the Raft log grows. Then two faults: the agent of a node holding many VIPs stops
//! (time until the state shows them all on other nodes, until their new owners hold grants,
//! and whether any new owner was granted before the dead one's deadline), and the leader
//! member is SIGKILLed (time until the new leader has granted every VIP again).
//!
//!   cargo build --release -p ballast-node -p jepsen --bins
//!   target/release/scale-bench --agents 10,100,1000 --vips 10,1000,10000 --seconds 20

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_client::{v1, Client, ClientConfig, WatchItem};
use ballast_node::agent::plan;
use ballast_node::lease::{self, LeaseConfig};
use clap::Parser;
use tokio::sync::{watch, Notify};

mod agent;
mod cluster;
mod report;

use agent::*;
use cluster::*;
use report::*;

#[derive(Parser, Clone)]
#[command(
    name = "scale-bench",
    about = "How the leader's cost grows with agents and VIPs (issue 14)",
    long_about = "How the leader's cost grows with agents and VIPs (issue 14).

For every pair of --agents and --vips (or only the matching pairs with --pairs diagonal), a \
fresh cluster of three release ballastd members runs on 127.0.0.1 (free ports, data in a \
temporary directory; no root needed), and this process runs the agents: simulated ones, tokio \
tasks that speak the real Agent protocol (Register, Renew, ReportHealth, ConfirmRelease) with \
the real agent's rhythm and deadline rules, one client and connection each, but no fence, \
addresses or ARP.

Placement: agents are nodes 1001.., in groups of 10 (one service per group, every agent of the \
group a backend). The first agent (the 'victim') gets min(--victim-vips, VIPs/2) VIPs, priority \
100 on it and 50 on another agent of its group (spread over the group); every other VIP goes \
round-robin to the other agents with a backup in their group. VIPs are made through the public \
API (ballast_client), placed by the leader's controller.

Measured per step, in a window of --seconds after --warmup seconds with nothing changing:
  renew/s     Renew calls the leader answered OK per second (its ballast_requests_total)
  p50/p99     renewal latency as the simulated agents see it (send to answer, retries included)
  CPU         leader utime+stime over the window (/proc/PID/stat), in cores (1.00 = one core)
  RSS         leader VmRSS at the end of the window
  log/min     growth of the leader's last log index, per minute
Then the faults (--scenarios):
  reassign    the victim's agent stops renewing (a crash); time from its last renewal until the \
state shows all its VIPs on other nodes, and until their new owners hold grants; 'early' counts \
new owners granted before the victim's own deadline (must be 0)
  leader      SIGKILL of the leader member; time until a new leader has granted every owned VIP \
again, and how many agent-side leases ran out meanwhile

The state the agents plan from is read by one shared watcher once per burst of changes and \
handed to all of them; an agent reconciles once per state it has not seen, however many \
revisions it covers, and renews before its tick only if that state gives it a VIP it neither \
holds nor claimed last time, as the real agent does (it takes every queued watch event before \
its one state read). Real agents each read the state themselves (one GetState per agent per burst), \
a cost this benchmark leaves out. The load generator shares the machine with the members: its own CPU is \
printed too.",
    after_help = "Example: scale-bench --agents 10,100,1000 --vips 10,1000,10000 --seconds 20"
)]
struct Args {
    /// Numbers of simulated agents (nodes), comma separated.
    #[arg(long, default_value = "10,100,1000", value_delimiter = ',')]
    agents: Vec<usize>,
    /// Numbers of VIPs, comma separated.
    #[arg(long, default_value = "10,1000,10000", value_delimiter = ',')]
    vips: Vec<usize>,
    /// `grid`: every (agents, VIPs) pair; `diagonal`: the i-th of each list together.
    #[arg(long, default_value = "grid")]
    pairs: String,
    /// Measured seconds per step (nothing changes meanwhile).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds of steady renewals before the window.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// VIPs the victim holds (at most half the VIPs).
    #[arg(long, default_value_t = 1000)]
    victim_vips: usize,
    /// Faults after the window: reassign, leader (comma separated; empty for none).
    #[arg(long, default_value = "reassign,leader", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// What an agent does when the cluster state changes: `renew` reconciles at once and
    /// renews if the change gives it a VIP it neither holds nor claimed, as the real agent
    /// does; `tick` waits for its next renew tick (for comparison: what the state changes
    /// cost).
    #[arg(long, default_value = "renew")]
    on_change: String,
    /// The ballastd binary [default: next to this program].
    #[arg(long)]
    ballastd: Option<PathBuf>,
    /// Keep each step's data directory and member logs (printed).
    #[arg(long)]
    keep: bool,
    /// Extra arguments for every ballastd (space separated), e.g. "--log-format json".
    #[arg(long, default_value = "")]
    ballastd_args: String,
}

const GROUP: usize = 10;
const FIRST_AGENT_ID: u64 = 1001;

fn main() -> ExitCode {
    let a = Args::parse();
    let steps: Vec<(usize, usize)> = match a.pairs.as_str() {
        "grid" => a
            .agents
            .iter()
            .flat_map(|ag| a.vips.iter().map(move |v| (*ag, *v)))
            .collect(),
        "diagonal" => a
            .agents
            .iter()
            .copied()
            .zip(a.vips.iter().copied())
            .collect(),
        p => {
            eprintln!("scale-bench: --pairs {p:?}: grid or diagonal");
            return ExitCode::from(2);
        }
    };
    if a.on_change != "renew" && a.on_change != "tick" {
        eprintln!("scale-bench: --on-change {:?}: renew or tick", a.on_change);
        return ExitCode::from(2);
    }
    for s in &a.scenarios {
        if !s.is_empty() && s != "reassign" && s != "leader" {
            eprintln!("scale-bench: unknown scenario {s:?} (reassign, leader)");
            return ExitCode::from(2);
        }
    }
    let bin = a.ballastd.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("ballastd")
    });
    if !bin.exists() {
        eprintln!(
            "scale-bench: {} not found (cargo build --release -p ballast-node)",
            bin.display()
        );
        return ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "scale-bench: {} step(s), {} s window each, ballastd {}",
        steps.len(),
        a.seconds,
        bin.display()
    );
    println!("{}", Row::header());
    let mut rows = Vec::new();
    for (agents, vips) in steps {
        let r = rt.block_on(step(&a, &bin, agents, vips));
        match r {
            Ok(r) => {
                println!("{}", r.line());
                rows.push(r);
            }
            Err(e) => println!("{agents:>6} {vips:>6}  failed: {e}"),
        }
    }
    println!();
    println!("Details:");
    for r in &rows {
        println!("{}", r.details());
    }
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------------------------------
// The members

fn admin_client(endpoints: Vec<String>) -> Client {
    let mut cfg = ClientConfig::new(endpoints);
    cfg.deadline = Duration::from_secs(30);
    cfg.attempt_timeout = Duration::from_secs(10);
    Client::new(cfg)
}

/// Runs `f` on every item with at most `conc` at once; the first error, if any.
async fn all_of<T, F, Fut>(items: Vec<T>, conc: usize, f: F) -> Result<(), String>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut err = None;
    for it in items {
        while set.len() >= conc {
            if let Some(Ok(Err(e))) = set.join_next().await {
                err.get_or_insert(e);
            }
        }
        let f = f.clone();
        set.spawn(async move { f(it).await });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(Err(e)) = r {
            err.get_or_insert(e);
        }
    }
    err.map_or(Ok(()), Err)
}

async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn agent_id(idx: usize) -> u64 {
    FIRST_AGENT_ID + idx as u64
}

/// The VIP `j`'s address: 10.x.y.z/8, z in 1..=250.
fn vip_address(j: usize) -> String {
    let z = j % 250 + 1;
    let y = (j / 250) % 250;
    let x = j / (250 * 250) + 1;
    format!("10.{x}.{y}.{z}/8")
}

/// (primary agent, backup agent) of VIP `j`.
fn placement(j: usize, agents: usize, victim_n: usize) -> (usize, Option<usize>) {
    let group_of = |a: usize| {
        let start = a / GROUP * GROUP;
        (start, (start + GROUP).min(agents) - start)
    };
    if j < victim_n {
        let (start, size) = group_of(0);
        let b = (size > 1).then(|| start + 1 + j % (size - 1));
        return (0, b);
    }
    let i = j - victim_n;
    let p = if agents > 1 { 1 + i % (agents - 1) } else { 0 };
    let (start, size) = group_of(p);
    let b = (size > 1).then(|| start + (p - start + 1) % size);
    (p, b)
}

async fn step(a: &Args, bin: &Path, agents: usize, vips: usize) -> Result<Row, String> {
    let started = Instant::now();
    let mut cluster = Cluster::start(bin, a.keep, &a.ballastd_args, &format!("{agents}x{vips}"))?;
    let endpoints = cluster.endpoints();
    let admin = admin_client(endpoints.clone());
    // A leader, and the cluster's lease settings in place (its first leader's).
    let mut lead = None;
    let end = Instant::now() + Duration::from_secs(30);
    while lead.is_none() && Instant::now() < end {
        lead = leader(&admin, &cluster).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lead.ok_or("no leader after 30 s")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
    let viewer_task = tokio::spawn(viewer(
        admin_client(endpoints.clone()),
        view_tx,
        stop.clone(),
    ));
    let stats = Arc::new(Stats::new(agents));
    let lease_cfg = LeaseConfig::default();

    // The agents: registered first (their node records), then services and VIPs.
    let mut kills = Vec::new();
    let mut tasks = Vec::new();
    for idx in 0..agents {
        let mut ep = endpoints.clone();
        let n = ep.len();
        ep.rotate_left(idx % n); // each agent's "own" member first
        let client = ballast_node::agent::cluster_client(
            ep,
            &lease_cfg,
            None,
            None,
            ballast_node::agent::new_instance(),
        );
        let agent = SimAgent {
            idx,
            node: agent_id(idx),
            client,
            stats: stats.clone(),
            view: view_rx.clone(),
            held: HashMap::new(),
            max_epoch: HashMap::new(),
            renew_every: lease_cfg.renew_interval,
            lease_cfg,
            last_register: None,
            last_grant: None,
            reported: HashMap::new(),
            on_change: a.on_change == "renew",
            claimed_last: Default::default(),
            unanswered: false,
        };
        let kill = Arc::new(AtomicBool::new(false));
        kills.push(kill.clone());
        tasks.push(Some(tokio::spawn(agent.run(kill, stop.clone()))));
    }
    wait_for("every agent registered", Duration::from_secs(120), || {
        (stats.registered.load(Ordering::Relaxed) == agents).then_some(())
    })
    .await?;

    let groups = agents.div_ceil(GROUP);
    let services: Vec<v1::Service> = (0..groups)
        .map(|g| v1::Service {
            name: format!("svc-{g}"),
            check: Some(v1::HealthCheck {
                kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 9 })),
                interval_ms: 1000,
                ..Default::default()
            }),
            backends: (g * GROUP..((g + 1) * GROUP).min(agents))
                .map(|i| {
                    (
                        agent_id(i),
                        v1::Backend {
                            node_id: agent_id(i),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let c = admin.clone();
    all_of(services, 16, move |s| {
        let c = c.clone();
        async move {
            c.apply_service(s)
                .await
                .map(|_| ())
                .map_err(|e| format!("apply service: {e}"))
        }
    })
    .await?;
    // Every agent alive and healthy before the VIPs come, so that each lands where its
    // priorities say (placement is sticky).
    wait_for(
        "every agent alive and healthy",
        Duration::from_secs(120),
        || {
            let v = view_rx.borrow();
            (v.alive == agents && v.healthy == agents).then_some(())
        },
    )
    .await?;
    let victim_n = if agents >= 2 {
        a.victim_vips.min(vips / 2)
    } else {
        0
    };
    let defs: Vec<v1::Vip> = (0..vips)
        .map(|j| {
            let (p, b) = placement(j, agents, victim_n);
            let mut priorities = std::collections::BTreeMap::from([(agent_id(p), 100)]);
            if let Some(b) = b {
                priorities.insert(agent_id(b), 50);
            }
            v1::Vip {
                name: format!("vip-{j}"),
                address: vip_address(j),
                interface: "sim0".into(),
                service: format!("svc-{}", p / GROUP),
                placement: Some(v1::Placement {
                    priorities,
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let first_vip = Instant::now();
    let c = admin.clone();
    all_of(defs, 64, move |v| {
        let c = c.clone();
        async move {
            c.apply_vip(v)
                .await
                .map(|_| ())
                .map_err(|e| format!("apply VIP: {e}"))
        }
    })
    .await?;
    // Every VIP owned and held by its owner's agent.
    let placement_timeout = Duration::from_secs(120 + vips as u64 / 20);
    wait_for("every VIP placed and held", placement_timeout, || {
        let v = view_rx.borrow();
        (v.owned_total == vips && stats.held_total() == vips).then_some(())
    })
    .await
    .map_err(|e| {
        // Where it stood: an overloaded cluster (leases lapsing, VIPs moving) tells itself
        // apart from one that is merely slow.
        format!(
            "{e}: {} VIPs owned, {} held; renewals {} answered, {} failed; {} leases lapsed",
            view_rx.borrow().owned_total,
            stats.held_total(),
            stats.renew_ok.load(Ordering::Relaxed),
            stats.renew_err.load(Ordering::Relaxed),
            stats.lapsed.load(Ordering::Relaxed),
        )
    })?;
    let placed = first_vip.elapsed();
    let setup = started.elapsed();

    // The window: nothing changes.
    tokio::time::sleep(Duration::from_secs(a.warmup)).await;
    let (leader_id, s0) = leader(&admin, &cluster).await.ok_or("no leader")?;
    let pid = cluster.pid(leader_id).ok_or("leader has no process")?;
    let pids: Vec<u32> = cluster
        .members
        .iter()
        .filter_map(|m| m.child.as_ref().map(|c| c.id()))
        .collect();
    let http = cluster.member(leader_id).http.clone();
    let renew0 = renewals_answered(&http);
    let cpu0 = cpu_seconds(pid);
    let all0: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
    let me0 = cpu_seconds(std::process::id());
    let ok0 = stats.renew_ok.load(Ordering::Relaxed);
    let err0 = stats.renew_err.load(Ordering::Relaxed);
    let lapsed0 = stats.lapsed.load(Ordering::Relaxed);
    stats.latency_us.lock().unwrap().clear();
    stats.recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stats.recording.store(false, Ordering::Relaxed);
    let window = t0.elapsed();
    let secs = window.as_secs_f64();
    let cpu = (cpu_seconds(pid) - cpu0) / secs;
    let members_cpu = (pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - all0) / secs;
    let bench_cpu = (cpu_seconds(std::process::id()) - me0) / secs;
    let rss = rss_mib(pid);
    let s1 = admin
        .member_status(&cluster.member(leader_id).grpc)
        .await
        .map_err(|e| e.to_string())?;
    let renew1 = renewals_answered(&http);
    let mut lat = std::mem::take(&mut *stats.latency_us.lock().unwrap());
    lat.sort_unstable();
    let pick = |p: f64| {
        if lat.is_empty() {
            Duration::ZERO
        } else {
            let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
            Duration::from_micros(lat[i] as u64)
        }
    };
    let mut row = Row {
        agents,
        vips,
        setup,
        placed,
        window,
        renew_leader: match (renew0, renew1) {
            (Some(a), Some(b)) => (b - a) as f64 / secs,
            _ => f64::NAN,
        },
        renew_agents: (stats.renew_ok.load(Ordering::Relaxed) - ok0) as f64 / secs,
        renew_errors: stats.renew_err.load(Ordering::Relaxed) - err0,
        p50: pick(0.5),
        p99: pick(0.99),
        max: pick(1.0),
        cpu,
        members_cpu,
        bench_cpu,
        rss,
        log_per_min: (s1.last_log_index.saturating_sub(s0.last_log_index)) as f64 * 60.0 / secs,
        revisions: s1
            .header
            .map_or(0, |h| h.revision)
            .saturating_sub(s0.header.map_or(0, |h| h.revision)),
        lapsed_window: stats.lapsed.load(Ordering::Relaxed) - lapsed0,
        ..Default::default()
    };

    // Fault 1: the victim's agent stops renewing.
    if a.scenarios.iter().any(|s| s == "reassign") && victim_n > 0 {
        row.reassign = Some(reassign(&stats, &view_rx, &kills[0], &mut tasks, &lease_cfg).await?);
        // Back to steady: every owned VIP held again.
        wait_for("the VIPs held again", Duration::from_secs(60), || {
            let v = view_rx.borrow();
            (v.owned_total == vips && stats.held_total() == vips).then_some(())
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Fault 2: the leader member is killed.
    if a.scenarios.iter().any(|s| s == "leader") {
        let t = takeover(&admin, &mut cluster, &stats, &view_rx).await?;
        if !t.complete {
            // Seen once in about thirty runs (2026-12-01), with nothing kept to read: a step
            // whose takeover did not complete keeps its members' logs and data, and says what
            // each member that still runs thinks it is.
            cluster.keep = true;
            for m in cluster.members.iter().filter(|m| m.child.is_some()) {
                match admin.member_status(&m.grpc).await {
                    Ok(s) => eprintln!(
                        "  member {} after the takeover timed out: {} in term {}, leader {}",
                        m.id, s.raft_state, s.term, s.leader_id
                    ),
                    Err(e) => eprintln!("  member {}: no status: {e}", m.id),
                }
            }
        }
        row.takeover = Some(t);
    }

    stop.store(true, Ordering::Relaxed);
    for t in tasks.into_iter().flatten() {
        let _ = t.await;
    }
    viewer_task.abort();
    drop(cluster);
    Ok(row)
}

async fn reassign(
    stats: &Arc<Stats>,
    view_rx: &watch::Receiver<Arc<View>>,
    kill: &Arc<AtomicBool>,
    tasks: &mut [Option<tokio::task::JoinHandle<AgentEnd>>],
    lease_cfg: &LeaseConfig,
) -> Result<Reassign, String> {
    let victim = agent_id(0);
    let names: Vec<String> = view_rx
        .borrow()
        .owned
        .get(&victim)
        .map(|o| o.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    if names.is_empty() {
        // The cluster had moved them all away already (an overloaded step): nothing to time.
        return Err("the victim owned no VIP when it was stopped".into());
    }
    {
        *stats.watched.lock().unwrap() = names.iter().cloned().collect();
        stats.acquired.lock().unwrap().clear();
    }
    kill.store(true, Ordering::Relaxed);
    let end = tasks[0]
        .take()
        .ok_or("victim gone")?
        .await
        .map_err(|e| e.to_string())?;
    let (last_sent, deadline) = end.last_grant.ok_or("the victim was never granted")?;
    let lease = view_rx.borrow().lease.unwrap_or_default();
    let (lease_ms, margin_ms) = if lease.lease_ms > 0 {
        (lease.lease_ms, lease.margin_ms)
    } else {
        (
            lease_cfg.lease.as_millis() as u64,
            lease_cfg.leader_margin.as_millis() as u64,
        )
    };
    let mut rx = view_rx.clone();
    let mut first = None;
    let status_all;
    let limit = Instant::now() + Duration::from_secs(60);
    loop {
        let moved = {
            let v = rx.borrow_and_update();
            names
                .iter()
                .filter(|n| {
                    v.vips
                        .get(*n)
                        .is_some_and(|(o, _, _)| *o != 0 && *o != victim)
                })
                .count()
        };
        let now = Instant::now();
        if moved > 0 && first.is_none() {
            first = Some(now);
        }
        if moved == names.len() {
            status_all = now;
            break;
        }
        if now > limit {
            return Err(format!(
                "only {moved} of {} VIPs moved off the dead node in 60 s",
                names.len()
            ));
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
    let acquired = wait_for("the new owners' grants", Duration::from_secs(30), || {
        let a = stats.acquired.lock().unwrap();
        (a.len() == names.len()).then(|| a.clone())
    })
    .await?;
    let earliest = acquired.values().map(|(t, _)| *t).min().unwrap();
    let latest = acquired.values().map(|(t, _)| *t).max().unwrap();
    let early = acquired.values().filter(|(t, _)| *t < deadline).count();
    let margin = if earliest >= deadline {
        ms(earliest - deadline)
    } else {
        -ms(deadline - earliest)
    };
    Ok(Reassign {
        vips: names.len(),
        status_all: status_all - last_sent,
        status_first: first.unwrap_or(status_all) - last_sent,
        granted_all: latest - last_sent,
        margin,
        early,
        floor: Duration::from_millis(lease_ms + margin_ms),
    })
}

async fn takeover(
    admin: &Client,
    cluster: &mut Cluster,
    stats: &Arc<Stats>,
    view_rx: &watch::Receiver<Arc<View>>,
) -> Result<Takeover, String> {
    let (old, s) = leader(admin, cluster).await.ok_or("no leader")?;
    let term = s.term;
    let lapsed0 = stats.lapsed.load(Ordering::Relaxed);
    let killed = Instant::now();
    cluster.kill(old);
    let mut elected = None;
    let limit = killed + Duration::from_secs(30);
    loop {
        if elected.is_none() {
            if let Some((_, s)) = leader(admin, cluster).await {
                if s.term > term {
                    elected = Some(killed.elapsed());
                }
            }
        }
        // Every agent that holds claims has had all of them granted in a later term, and those
        // grants cover every owned VIP.
        let v = view_rx.borrow().clone();
        let mut all = Duration::ZERO;
        let mut first: Option<Duration> = None;
        let mut covered = 0;
        let mut done = true;
        for (idx, fg) in stats.full_grant.iter().enumerate() {
            let owns = v.owned.get(&agent_id(idx)).map_or(0, |o| o.len());
            if owns == 0 {
                continue;
            }
            let (t, at, n) = *fg.lock().unwrap();
            match at {
                Some(at) if t > term && at >= killed => {
                    covered += n;
                    all = all.max(at - killed);
                    first = Some(first.map_or(at - killed, |f: Duration| f.min(at - killed)));
                }
                _ => done = false,
            }
        }
        if done && covered >= v.owned_total {
            return Ok(Takeover {
                vips: covered,
                elected,
                first: first.unwrap_or_default(),
                all,
                lapsed: stats.lapsed.load(Ordering::Relaxed) - lapsed0,
                complete: true,
            });
        }
        if Instant::now() > limit {
            return Ok(Takeover {
                vips: v.owned_total,
                elected,
                first: first.unwrap_or_default(),
                all: killed.elapsed(),
                lapsed: stats.lapsed.load(Ordering::Relaxed) - lapsed0,
                complete: false,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
