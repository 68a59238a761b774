//! Scale benchmark (issue 14): how the leader's cost grows with agents and VIPs.
//!
//! For each step (agents x VIPs) a fresh three-member cluster of release `ballastd` processes
//! runs on loopback (data in a temporary directory, free ports; no root, no namespaces). The
//! agents are simulated: tokio tasks in this process, each with its own client and
//! connections, speaking the real Agent protocol with the real agent's rhythm (`Register`
//! once, `Renew` every renew interval the leader sends and at once when the cluster state
//! changes, `ReportHealth` when the cluster's view of its backend differs, `ConfirmRelease`
//! for releases asked of it), its deadline math (`agent::plan::deadline`) and its claim and
//! drop rules; only the fence, addresses and ARP are left out. The cluster state every agent
//! plans from is read once per change by one shared watcher, not by each agent (the real agent
//! reads it itself: `--help` says what that leaves out).
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
use ballast_node::lease::LeaseConfig;
use clap::Parser;
use tokio::sync::{watch, Notify};

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

The state the agents plan from is read by one shared watcher on every change and handed to all \
of them; real agents each read it themselves (one GetState per agent per change), a cost this \
benchmark leaves out. The load generator shares the machine with the members: its own CPU is \
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
    /// What an agent does when the cluster state changes: `renew` reconciles and renews at
    /// once, as the real agent does on every watch event; `tick` waits for its next renew
    /// tick (for comparison: what the state changes cost).
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

struct Member {
    id: u64,
    grpc: String,
    http: String,
    child: Option<Child>,
}

struct Cluster {
    dir: PathBuf,
    keep: bool,
    members: Vec<Member>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(bin: &Path, keep: bool, extra: &str, tag: &str) -> Result<Cluster, String> {
        let dir = std::env::temp_dir().join(format!(
            "scale-bench-{}-{tag}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (g, _))| format!("{}=127.0.0.1:{g}", i + 1))
            .collect();
        let mut members = Vec::new();
        for (i, (g, h)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let log = std::fs::File::create(dir.join(format!("member-{id}.log")))
                .map_err(|e| e.to_string())?;
            let mut cmd = Command::new(bin);
            cmd.arg("--node-id")
                .arg(id.to_string())
                .arg("--data-dir")
                .arg(dir.join(format!("member-{id}")))
                .arg("--listen")
                .arg(format!("127.0.0.1:{g}"))
                .arg("--http-listen")
                .arg(format!("127.0.0.1:{h}"))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--cluster-name")
                .arg("scale-bench")
                .args(extra.split_whitespace())
                .stdout(Stdio::null())
                .stderr(log);
            // The members die with this process, however it ends.
            // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            members.push(Member {
                id,
                grpc: format!("127.0.0.1:{g}"),
                http: format!("127.0.0.1:{h}"),
                child: Some(child),
            });
        }
        Ok(Cluster { dir, keep, members })
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.grpc.clone()).collect()
    }

    fn member(&self, id: u64) -> &Member {
        self.members.iter().find(|m| m.id == id).unwrap()
    }

    fn pid(&self, id: u64) -> Option<u32> {
        self.member(id).child.as_ref().map(|c| c.id())
    }

    fn kill(&mut self, id: u64) {
        if let Some(m) = self.members.iter_mut().find(|m| m.id == id) {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if self.keep {
            println!("  (kept {})", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The member that says it leads, with its status.
async fn leader(admin: &Client, c: &Cluster) -> Option<(u64, v1::StatusResponse)> {
    for m in &c.members {
        if m.child.is_none() {
            continue;
        }
        if let Ok(s) = admin.member_status(&m.grpc).await {
            if s.raft_state == "leader" {
                return Some((m.id, s));
            }
        }
    }
    None
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command may hold spaces: fields count from after its closing parenthesis.
    let rest = &s[s.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// VmRSS in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The leader's count of Renew calls answered OK (`ballast_requests_total`).
fn renewals_answered(http: &str) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(http).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {http}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.lines()
        .find(|l| {
            l.starts_with("ballast_requests_total{")
                && l.contains("method=\"Renew\"")
                && l.contains("code=\"Ok\"")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

// ---------------------------------------------------------------------------------------
// The shared view of the cluster state

/// The cluster state as the agents plan from it, indexed per node.
#[derive(Default)]
struct View {
    /// Name -> (owner, epoch, releasing).
    vips: HashMap<String, (u64, u64, bool)>,
    /// Owner -> (name, epoch) of the VIPs it owns and is not asked to release.
    owned: HashMap<u64, Vec<(String, u64)>>,
    /// Owner -> releases it is asked for: VIPs releasing, retired addresses.
    releases: HashMap<u64, Vec<(String, u64)>>,
    /// Node -> services it backs whose health in the state is not healthy.
    unhealthy: HashMap<u64, Vec<String>>,
    owned_total: usize,
    lease: Option<v1::LeaseSettings>,
    /// Backends shown healthy, and agent nodes shown alive.
    healthy: usize,
    alive: usize,
}

impl View {
    fn of(s: &v1::GetStateResponse) -> View {
        let mut v = View {
            lease: s.lease,
            ..Default::default()
        };
        for x in &s.vips {
            v.vips
                .insert(x.name.clone(), (x.owner, x.epoch, x.releasing));
            if x.owner == 0 {
                continue;
            }
            if x.releasing {
                v.releases
                    .entry(x.owner)
                    .or_default()
                    .push((x.name.clone(), x.epoch));
            } else {
                v.owned_total += 1;
                v.owned
                    .entry(x.owner)
                    .or_default()
                    .push((x.name.clone(), x.epoch));
            }
        }
        v.alive = s
            .nodes
            .iter()
            .filter(|n| n.alive && n.id >= FIRST_AGENT_ID)
            .count();
        for r in &s.retired {
            if r.owner != 0 {
                v.releases
                    .entry(r.owner)
                    .or_default()
                    .push((r.vip.clone(), r.epoch));
            }
        }
        for svc in &s.services {
            for (id, b) in &svc.backends {
                if b.health != v1::Health::Healthy as i32 {
                    v.unhealthy.entry(*id).or_default().push(svc.name.clone());
                } else {
                    v.healthy += 1;
                }
            }
        }
        v
    }

    /// Whether `me`'s release of (`vip`, `epoch`) is awaited (`plan::release_awaited`).
    fn release_awaited(&self, me: u64, vip: &str, epoch: u64) -> bool {
        self.releases
            .get(&me)
            .is_some_and(|r| r.iter().any(|(n, e)| n == vip && *e == epoch))
    }
}

/// Reads the state on every change (coalesced) and at least every second; publishes it.
async fn viewer(client: Client, tx: watch::Sender<Arc<View>>, stop: Arc<AtomicBool>) {
    let changed = Arc::new(Notify::new());
    let c2 = changed.clone();
    let w = client.clone();
    let events = tokio::spawn(async move {
        let mut s = w.watch(v1::WatchRequest {
            key_prefixes: vec![],
            cluster_state: true,
            start_revision: 0,
        });
        loop {
            if let Ok(WatchItem::Changes(r)) = s.next().await {
                if r.events.is_empty() {
                    continue;
                }
            }
            c2.notify_one();
        }
    });
    while !stop.load(Ordering::Relaxed) {
        if let Ok(s) = client.get_state(true).await {
            tx.send_replace(Arc::new(View::of(&s)));
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    events.abort();
}

// ---------------------------------------------------------------------------------------
// The simulated agents

/// What the agents measure, shared.
struct Stats {
    recording: AtomicBool,
    latency_us: Mutex<Vec<u32>>,
    renew_ok: AtomicU64,
    renew_err: AtomicU64,
    /// Held VIPs whose agent-side deadline passed before a renewal extended it.
    lapsed: AtomicU64,
    /// Held VIPs the leader refused to renew.
    refused_held: AtomicU64,
    confirms: AtomicU64,
    health_reports: AtomicU64,
    registered: AtomicUsize,
    /// Per agent: how many VIPs it holds.
    held: Vec<AtomicUsize>,
    /// Per agent: (term, when, claims) of the first renewal of each term that granted every
    /// claim (the latest such term).
    full_grant: Vec<Mutex<(u64, Option<Instant>, usize)>>,
    /// VIPs whose acquisition by a new owner is watched, and when that owner got its grant.
    watched: Mutex<HashSet<String>>,
    acquired: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Stats {
    fn new(agents: usize) -> Stats {
        Stats {
            recording: AtomicBool::new(false),
            latency_us: Mutex::new(Vec::new()),
            renew_ok: AtomicU64::new(0),
            renew_err: AtomicU64::new(0),
            lapsed: AtomicU64::new(0),
            refused_held: AtomicU64::new(0),
            confirms: AtomicU64::new(0),
            health_reports: AtomicU64::new(0),
            registered: AtomicUsize::new(0),
            held: (0..agents).map(|_| AtomicUsize::new(0)).collect(),
            full_grant: (0..agents).map(|_| Mutex::new((0, None, 0))).collect(),
            watched: Mutex::new(HashSet::new()),
            acquired: Mutex::new(HashMap::new()),
        }
    }

    fn held_total(&self) -> usize {
        self.held.iter().map(|h| h.load(Ordering::Relaxed)).sum()
    }
}

/// How an agent ended: its last granted renewal (sent at, deadline).
struct AgentEnd {
    last_grant: Option<(Instant, Instant)>,
}

struct SimAgent {
    idx: usize,
    node: u64,
    client: Client,
    stats: Arc<Stats>,
    view: watch::Receiver<Arc<View>>,
    /// Name -> (epoch, deadline).
    held: HashMap<String, (u64, Instant)>,
    max_epoch: HashMap<String, u64>,
    renew_every: Duration,
    lease_cfg: LeaseConfig,
    last_register: Option<Instant>,
    last_grant: Option<(Instant, Instant)>,
    /// Service -> when its health was last reported.
    reported: HashMap<String, Instant>,
    /// Reconcile at once when the state changes (the real agent), or at the next tick.
    on_change: bool,
}

impl SimAgent {
    async fn register(&mut self) -> bool {
        if self
            .last_register
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return false;
        }
        self.last_register = Some(Instant::now());
        let req = v1::RegisterRequest {
            node_id: self.node,
            addr: format!("127.0.0.1:{}", 10_000 + self.idx),
            ..Default::default()
        };
        self.client.register(req).await.is_ok()
    }

    /// The real agent's life, without fence or addresses: register, then one reconcile every
    /// renew interval and at once when the state changes. Stops without a word (a crash) when
    /// `kill` turns true.
    async fn run(mut self, kill: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> AgentEnd {
        // Servers start at different moments: spread the first renewals over an interval.
        let jitter = rand::random::<u64>() % self.renew_every.as_millis().max(1) as u64;
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        while !self.register().await {
            if kill.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                return self.end();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stats.registered.fetch_add(1, Ordering::Relaxed);
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                r = self.view.changed(), if self.on_change => { if r.is_err() { break; } }
            }
            if kill.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                break;
            }
            self.reconcile().await;
            next = tokio::time::Instant::now() + self.renew_every;
        }
        self.end()
    }

    fn end(&self) -> AgentEnd {
        self.stats.held[self.idx].store(0, Ordering::Relaxed);
        AgentEnd {
            last_grant: self.last_grant,
        }
    }

    async fn reconcile(&mut self) {
        let view = self.view.borrow_and_update().clone();
        let me = self.node;
        self.report_health(&view);
        // Drop what the cluster no longer gives this node, or asks it to release; expire what
        // ran out (`plan::drops`).
        let now = Instant::now();
        let mut confirm = Vec::new();
        let stats = &self.stats;
        self.held.retain(|name, (epoch, deadline)| {
            let ours = view
                .vips
                .get(name)
                .is_some_and(|(o, e, releasing)| *o == me && e == epoch && !releasing);
            let alive = *deadline > now;
            if ours && !alive {
                stats.lapsed.fetch_add(1, Ordering::Relaxed);
            }
            if !(ours && alive) && view.release_awaited(me, name, *epoch) {
                confirm.push((name.clone(), *epoch));
            }
            ours && alive
        });
        // Releases of VIPs not held here (`plan::confirms_not_held`).
        if let Some(r) = view.releases.get(&me) {
            for (name, epoch) in r {
                if !self.held.contains_key(name) && !confirm.iter().any(|(n, _)| n == name) {
                    confirm.push((name.clone(), *epoch));
                }
            }
        }
        for (vip, epoch) in confirm {
            if self.client.confirm_release(me, &vip, epoch).await.is_ok() {
                self.stats.confirms.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Claim what is ours (`plan::claims`) and renew.
        let claims: Vec<v1::VipClaim> = view
            .owned
            .get(&me)
            .into_iter()
            .flatten()
            .filter(|(name, epoch)| {
                let seen = self.max_epoch.entry(name.clone()).or_insert(0);
                let ok = *epoch >= *seen;
                *seen = (*seen).max(*epoch);
                ok
            })
            .map(|(name, epoch)| v1::VipClaim {
                vip: name.clone(),
                epoch: *epoch,
            })
            .collect();
        let holding: Vec<v1::VipClaim> = self
            .held
            .iter()
            .map(|(name, (epoch, _))| v1::VipClaim {
                vip: name.clone(),
                epoch: *epoch,
            })
            .collect();
        let n_claims = claims.len();
        let req = v1::RenewRequest {
            node_id: me,
            claims,
            holding,
            ..Default::default()
        };
        let sent = Instant::now();
        let resp =
            match tokio::time::timeout(self.renew_every * 2, self.client.renew_report(req)).await {
                Ok(Ok(r)) => r,
                _ => {
                    self.stats.renew_err.fetch_add(1, Ordering::Relaxed);
                    self.stats.held[self.idx].store(self.held.len(), Ordering::Relaxed);
                    return;
                }
            };
        let received = Instant::now();
        self.stats.renew_ok.fetch_add(1, Ordering::Relaxed);
        if self.stats.recording.load(Ordering::Relaxed) {
            let us = (received - sent).as_micros().min(u32::MAX as u128) as u32;
            self.stats.latency_us.lock().unwrap().push(us);
        }
        if resp.renew_ms > 0 {
            self.renew_every = Duration::from_millis(resp.renew_ms as u64);
        }
        if !resp.refused.is_empty() {
            self.register().await;
        }
        // The real agent's deadline and its reading of the answer (`plan::after_renewal`).
        let deadline = plan::deadline(sent, &resp, &self.lease_cfg);
        let mut granted = 0;
        let mut new = Vec::new();
        for g in &resp.grants {
            let holding = self.held.get(&g.vip).is_some_and(|(e, _)| *e == g.epoch);
            if !g.granted {
                if holding {
                    self.held.remove(&g.vip);
                    self.stats.refused_held.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            granted += 1;
            if deadline <= received {
                continue; // `plan::may_answer`: expired already
            }
            if !holding {
                new.push(g.vip.clone());
            }
            self.held.insert(g.vip.clone(), (g.epoch, deadline));
        }
        if granted > 0 {
            self.last_grant = Some((sent, deadline));
        }
        if !new.is_empty() {
            let watched = self.stats.watched.lock().unwrap();
            let mut acquired = self.stats.acquired.lock().unwrap();
            for v in new {
                if watched.contains(&v) {
                    acquired.entry(v).or_insert((received, me));
                }
            }
        }
        if n_claims > 0 && granted == n_claims {
            let term = resp.header.map_or(0, |h| h.raft_term);
            let mut fg = self.stats.full_grant[self.idx].lock().unwrap();
            if term > fg.0 {
                *fg = (term, Some(received), granted);
            }
        }
        self.stats.held[self.idx].store(self.held.len(), Ordering::Relaxed);
    }

    /// The health loop's part: a backend the state does not show healthy is reported healthy
    /// (the simulated checks always pass), again after a check interval if still not shown.
    fn report_health(&mut self, view: &View) {
        let Some(services) = view.unhealthy.get(&self.node) else {
            return;
        };
        for svc in services {
            if self
                .reported
                .get(svc)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            {
                continue;
            }
            self.reported.insert(svc.clone(), Instant::now());
            let (client, node, svc, stats) = (
                self.client.clone(),
                self.node,
                svc.clone(),
                self.stats.clone(),
            );
            tokio::spawn(async move {
                if client
                    .report_health(node, &svc, v1::Health::Healthy)
                    .await
                    .is_ok()
                {
                    stats.health_reports.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------
// One step

#[derive(Default, Clone)]
struct Row {
    agents: usize,
    vips: usize,
    setup: Duration,
    placed: Duration,
    window: Duration,
    renew_leader: f64,
    renew_agents: f64,
    renew_errors: u64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    cpu: f64,
    members_cpu: f64,
    bench_cpu: f64,
    rss: f64,
    log_per_min: f64,
    revisions: u64,
    lapsed_window: u64,
    reassign: Option<Reassign>,
    takeover: Option<Takeover>,
}

#[derive(Clone)]
struct Reassign {
    vips: usize,
    /// From the victim's last granted renewal (sent) to the state showing all moved.
    status_all: Duration,
    /// ... to the first VIP shown moved.
    status_first: Duration,
    /// ... to the last new owner's grant.
    granted_all: Duration,
    /// Earliest new-owner grant minus the victim's deadline (negative: two holders).
    margin: f64,
    early: usize,
    /// The soonest the leader may reassign: lease + margin after the last grant's send.
    floor: Duration,
}

#[derive(Clone)]
struct Takeover {
    vips: usize,
    elected: Option<Duration>,
    first: Duration,
    all: Duration,
    lapsed: u64,
    complete: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Row {
    fn header() -> String {
        format!(
            "{:>6} {:>6} {:>8} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>10} {:>18} {:>10}",
            "agents",
            "VIPs",
            "renew/s",
            "p50 ms",
            "p99 ms",
            "CPU",
            "RSS MB",
            "log/min",
            "placed s",
            "reassign",
            "reassign ms (stat)",
            "leader ms"
        )
    }

    fn line(&self) -> String {
        let (rn, rs) = match &self.reassign {
            Some(r) => (
                r.vips.to_string(),
                format!("{:.0} / {:.0}", ms(r.status_all), ms(r.granted_all)),
            ),
            None => ("-".into(), "-".into()),
        };
        let lt = match &self.takeover {
            Some(t) if t.complete => format!("{:.0}", ms(t.all)),
            Some(_) => "incomplete".into(),
            None => "-".into(),
        };
        format!(
            "{:>6} {:>6} {:>8.0} {:>7.2} {:>7.2} {:>6.2} {:>6.0} {:>8.0} {:>8.1} {:>10} {:>18} {:>10}",
            self.agents,
            self.vips,
            self.renew_leader,
            ms(self.p50),
            ms(self.p99),
            self.cpu,
            self.rss,
            self.log_per_min,
            self.placed.as_secs_f64(),
            rn,
            rs,
            lt
        )
    }

    fn details(&self) -> String {
        let mut s = format!(
            "{} agents, {} VIPs: setup {:.1} s (VIPs placed and held {:.1} s after the first was made); \
window {:.1} s: renewals answered by the leader {:.0}/s, seen OK by agents {:.0}/s, failed {}; \
latency p50 {:.2} p99 {:.2} max {:.2} ms; leader CPU {:.2} cores, all members {:.2}, this process {:.2}; \
leader RSS {:.0} MiB; log +{:.0}/min, revisions +{}; leases lapsed at agents {}",
            self.agents,
            self.vips,
            self.setup.as_secs_f64(),
            self.placed.as_secs_f64(),
            self.window.as_secs_f64(),
            self.renew_leader,
            self.renew_agents,
            self.renew_errors,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.cpu,
            self.members_cpu,
            self.bench_cpu,
            self.rss,
            self.log_per_min,
            self.revisions,
            self.lapsed_window,
        );
        if let Some(r) = &self.reassign {
            s += &format!(
                "\n  reassign {} VIPs of a dead node: from its last renewal, first shown moved {:.0} ms, \
all shown moved {:.0} ms, all granted to new owners {:.0} ms (the lease allows no move before \
{:.0} ms); earliest new grant {:+.0} ms after the dead node's deadline, {} before it",
                r.vips,
                ms(r.status_first),
                ms(r.status_all),
                ms(r.granted_all),
                ms(r.floor),
                r.margin,
                r.early
            );
        }
        if let Some(t) = &self.takeover {
            s += &format!(
                "\n  leader killed: new leader seen {}, first agent granted by it {:.0} ms, all {} VIPs {} {:.0} ms; \
leases lapsed at agents meanwhile {}",
                t.elected
                    .map_or("-".into(), |d| format!("after {:.0} ms", ms(d))),
                ms(t.first),
                t.vips,
                if t.complete { "granted by" } else { "NOT all granted by" },
                ms(t.all),
                t.lapsed
            );
        }
        s
    }
}

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
    .await?;
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
        row.takeover = Some(takeover(&admin, &mut cluster, &stats, &view_rx).await?);
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
