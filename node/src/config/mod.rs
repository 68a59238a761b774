//! `ballastd` configuration: flags beat environment, which beats the TOML file, which beats
//! the defaults. [`Config::validate`] refuses combinations that cannot work.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::types::NodeId;

/// A configuration that cannot work, found before anything starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("node-id is required (a positive integer, unique in the cluster)")]
    MissingNodeId,
    #[error("election-timeout-min-ms ({election_min} ms) must be above heartbeat-ms ({heartbeat} ms); use at least 3x the heartbeat")]
    ElectionNotAboveHeartbeat { election_min: u64, heartbeat: u64 },
    #[error("election-timeout-max-ms ({max} ms) must be above election-timeout-min-ms ({min} ms)")]
    ElectionRangeEmpty { min: u64, max: u64 },
    #[error("heartbeat-ms must be at least 10")]
    HeartbeatTooShort,
    #[error("initial-cluster entry {entry:?} is not ID=HOST:PORT")]
    BadInitialCluster { entry: String },
    #[error("initial-cluster does not list this node ({node_id})")]
    SelfNotInInitialCluster { node_id: NodeId },
    #[error("initial-cluster gives this node address {listed}, but it advertises {advertised}")]
    InitialClusterAddrMismatch { listed: String, advertised: String },
    #[error("--initial-cluster, --bootstrap and --join are exclusive: form a new cluster or join a running one")]
    JoinAndInitialCluster,
    #[error(
        "advertise address {0:?} is not host:port that peers can dial (0.0.0.0 and port 0 are not)"
    )]
    BadAdvertise(String),
    #[error("log-format must be text or json, not {0:?}")]
    BadLogFormat(String),
    #[error("snapshot-logs must be at least 1")]
    BadSnapshotLogs,
    #[error("reading config file {path}: {message}")]
    File { path: String, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// The agent's options, shared by `ballastd --agent` and `ballastd agent`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentOpts {
    /// VIP lease length in milliseconds [default: 800]. An owner that cannot renew stops
    /// answering for its VIPs within this time; another node takes over a little later. On a
    /// member it must leave, after the drift allowance and one renew interval, twice the
    /// election timeout's upper bound plus 100 ms, so that a leader election does not drop the
    /// VIPs. The lease settings (this, --vip-renew-ms, --vip-drift-ms, --vip-margin-ms) are the
    /// cluster's: a new cluster takes its first leader's, `ballastctl lease set` changes them,
    /// and afterwards these options are ignored. An agent uses its own only until the leader
    /// sends the cluster's with a grant.
    #[arg(long, env = "BALLAST_VIP_LEASE_MS")]
    pub vip_lease_ms: Option<u64>,

    /// How often an owner renews its VIP leases, in milliseconds [default: 100].
    #[arg(long, env = "BALLAST_VIP_RENEW_MS")]
    pub vip_renew_ms: Option<u64>,

    /// Clock-drift allowance the agent subtracts from its deadline, ms [default: 20].
    #[arg(long, env = "BALLAST_VIP_DRIFT_MS")]
    pub vip_drift_ms: Option<u64>,

    /// Gratuitous ARPs sent when acquiring a VIP [default: 5].
    #[arg(long, env = "BALLAST_GARP_COUNT")]
    pub garp_count: Option<u32>,

    /// Milliseconds between those gratuitous ARPs [default: 100].
    #[arg(long, env = "BALLAST_GARP_INTERVAL_MS")]
    pub garp_interval_ms: Option<u64>,

    /// Append every interval during which this node's VIP fence allowed an address to FILE
    /// (JSON lines on CLOCK_MONOTONIC: allowing/allowed/revoked/cleared), for checking
    /// exactly that no two nodes were allowed one VIP at once (the lab's vip workload reads
    /// it). Grows by a line or two per renewal: for tests and investigations [default: none].
    #[arg(long, value_name = "FILE", env = "BALLAST_FENCE_JOURNAL")]
    pub fence_journal: Option<PathBuf>,

    /// Address health checks connect to (the backend runs on this server) [default: 127.0.0.1].
    #[arg(long, env = "BALLAST_CHECK_HOST")]
    pub check_host: Option<std::net::IpAddr>,

    /// A command exec health checks may run, NAME=COMMAND ARGS... (repeatable). Only local
    /// configuration defines commands; the API names them. It runs with no capabilities.
    #[arg(long = "exec-check")]
    pub exec_checks: Vec<String>,

    /// Where a service's releases live on this server, SERVICE=DIR (repeatable): the agent
    /// keeps DIR/releases/<id>/ and the DIR/current symlink.
    #[arg(long = "release-dir")]
    pub release_dirs: Vec<String>,

    /// Command run after a service's `current` switched, SERVICE=COMMAND ARGS... (repeatable),
    /// with BALLAST_RELEASE and BALLAST_RELEASE_DIR set, and no capabilities. Local
    /// configuration only.
    #[arg(long = "activate-hook")]
    pub activate_hooks: Vec<String>,

    /// Time an activation hook may take, ms [default: 30000].
    #[arg(long, env = "BALLAST_HOOK_TIMEOUT_MS")]
    pub hook_timeout_ms: Option<u64>,

    /// Releases kept on disk per service (never fewer than the current and previous) [default: 5].
    #[arg(long, env = "BALLAST_KEEP_RELEASES")]
    pub keep_releases: Option<usize>,

    /// API tokens: one `read <token>`, `admin <token>`, `member <token>` or `node <id>
    /// <token>` per line (tokens of 16+ characters, `#` comments). A member then refuses calls
    /// without a known token (UNAUTHENTICATED) and calls its role may not make
    /// (PERMISSION_DENIED): read tokens read, admin tokens also write, member tokens are what
    /// members call each other (Raft) and their agents the cluster with, a `node <id>` token
    /// lets the agent-only server `id` act as its own agent and read. Without a `member` line
    /// (legacy) the first admin token serves as the member token. Give every member the same
    /// file; an agent-only server needs only its `node <id>` line (`ballastd agent` uses it,
    /// else a member token, else the first admin token). Without it the API is open [default:
    /// none].
    #[arg(long, env = "BALLAST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Mutual TLS: the CA certificate (PEM) that signs every member's, agent's and client's
    /// certificate. With --tls-cert and --tls-key, the gRPC port (Raft and API) speaks only
    /// TLS and refuses connections without a certificate from this CA; calls to other members
    /// use the same pair. SIGHUP reads the three files again (new connections use them, open
    /// ones carry on). `ballastctl certs init|issue` makes them [default: none, plaintext].
    #[arg(long, value_name = "FILE", env = "BALLAST_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// This node's certificate (PEM), with the IP addresses and names it is reached by as
    /// subject alternative names. A member's certificate that names it (`ballastctl certs
    /// issue NAME --member ID`) makes it check the identity in every client certificate: Raft
    /// only from members, agent calls only for the node the certificate names. An agent-only
    /// server's names its node (`--node ID`). See --tls-ca [default: none].
    #[arg(long, value_name = "FILE", env = "BALLAST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM). See --tls-ca [default: none].
    #[arg(long, value_name = "FILE", env = "BALLAST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Drive the local HAProxy through this runtime API socket (`stats socket PATH level
    /// admin`): its servers named n<node id> follow the cluster (ready, drain when the node
    /// drains, maint when it is in maintenance, down or unhealthy), checked every second so a
    /// reload is corrected. Needs --haproxy-backend [default: none].
    #[arg(long, env = "BALLAST_HAPROXY_SOCKET")]
    pub haproxy_socket: Option<PathBuf>,

    /// SERVICE=BACKEND: the HAProxy backend whose servers are the service's backends
    /// (repeatable).
    #[arg(long = "haproxy-backend")]
    pub haproxy_backends: Vec<String>,
}

/// The whole command line: a member (no subcommand), `ballastd agent` or `ballastd restore`.
#[derive(Debug, Parser)]
#[command(
    name = "ballastd",
    version,
    about = "Ballast member: Raft voter or learner that holds the authoritative cluster state and serves the gRPC API",
    long_about = "Ballast member: Raft voter or learner that holds the authoritative cluster state \
(nodes, services, VIPs, a linearizable KV) and serves the gRPC API.\n\n\
Precedence: a flag beats the environment (BALLAST_*), which beats the TOML file given by \
--config, which beats the built-in default.\n\n\
Forming a new cluster: start every member with the same --initial-cluster.\n\
Joining a running cluster: start with --join and the endpoints of running members.\n\
Restarting: start with the same --data-dir; the member resumes from it (--initial-cluster is \
then ignored).\n\n\
A server outside the quorum runs the agent alone: see `ballastd agent --help`. A new \
cluster seeded from a backup: see `ballastd restore --help`.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub member: Args,
}

/// What else `ballastd` can run besides a member.
#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    // Its help is `AgentArgs`'s own.
    Agent(Box<AgentArgs>),
    /// A member of a new cluster, seeded from a backup: `ballastd restore --from FILE` and
    /// the member's usual flags (with --bootstrap or --initial-cluster, an empty data
    /// directory).
    Restore(Box<RestoreArgs>),
}

/// `ballastd restore`: the backup, and the member's flags.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup written by `ballastctl snapshot save` (checked before anything is written).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    #[command(flatten)]
    pub member: Args,
}

/// What `ballastd` was asked to run.
pub enum Run {
    /// A member (`ballastd`, or `ballastd restore` with its backup as `restore_from`).
    Member(Box<Args>),
    /// `ballastd agent`.
    Agent(Box<AgentArgs>),
}

impl Cli {
    /// What to run; refuses a backup given twice to `ballastd restore`.
    pub fn into_run(self) -> Result<Run, String> {
        match self.mode {
            None => Ok(Run::Member(Box::new(self.member))),
            Some(Mode::Agent(a)) => Ok(Run::Agent(a)),
            Some(Mode::Restore(mut r)) => {
                if r.member.restore_from.is_some() {
                    return Err("ballastd restore: give the backup once, with --from".into());
                }
                r.member.restore_from = Some(r.from);
                Ok(Run::Member(Box::new(r.member)))
            }
        }
    }
}

/// Command line of `ballastd`. Every option can also be set as BALLAST_<NAME> in the
/// environment or as <name> (with underscores) in the TOML file given by --config.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// TOML file with any of the options below (names with underscores).
    #[arg(long, env = "BALLAST_CONFIG")]
    pub config: Option<PathBuf>,

    /// This member's id: a positive integer, unique and never reused in the cluster.
    #[arg(long, env = "BALLAST_NODE_ID")]
    pub node_id: Option<NodeId>,

    /// Directory for the Raft log, snapshots and identity [default: /var/lib/ballast].
    #[arg(long, env = "BALLAST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the gRPC server (API and Raft) listens on; port 0 picks a free port
    /// [default: 127.0.0.1:7400].
    #[arg(long, env = "BALLAST_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Address peers and clients dial to reach this member [default: the listen address, or
    /// the bound address when listening on port 0].
    #[arg(long, env = "BALLAST_ADVERTISE")]
    pub advertise: Option<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz; "off" disables it
    /// [default: 127.0.0.1:7480].
    #[arg(long, env = "BALLAST_HTTP_LISTEN")]
    pub http_listen: Option<String>,

    /// Members of a new cluster, as ID=HOST:PORT,ID=HOST:PORT,... (like etcd's
    /// --initial-cluster). Used only when the data directory is empty.
    #[arg(long, env = "BALLAST_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Name of a new cluster; with the initial member list it derives the cluster id that the
    /// data directory remembers [default: ballast].
    #[arg(long, env = "BALLAST_CLUSTER_NAME")]
    pub cluster_name: Option<String>,

    /// Form a new cluster with this node as its only member, at its advertised address.
    /// Grow it with --join on the other nodes. Used only when the data directory is empty.
    #[arg(long, env = "BALLAST_BOOTSTRAP")]
    pub bootstrap: bool,

    /// Join a running cluster through these members' gRPC endpoints (comma separated): the
    /// node asks to be added as a learner. Promote it to voter with `ballastctl member promote`.
    #[arg(long, env = "BALLAST_JOIN")]
    pub join: Option<String>,

    /// Seed the new cluster this member forms (with --initial-cluster or --bootstrap) from a
    /// backup written by `ballastctl snapshot save`; the data directory must be empty. Give
    /// every initial member the same file: the cluster id then derives from it too, so the
    /// restored cluster never takes traffic meant for the old one. `ballastd restore --from
    /// FILE ...` says the same.
    #[arg(long)]
    pub restore_from: Option<PathBuf>,

    /// Disaster recovery when a majority of members is lost for good: turn this member's data
    /// into a new one-member cluster (new cluster id) that keeps its state, then grow it back
    /// with --join on fresh servers. Writes the other members acknowledged but this one never
    /// received are lost; writes this one received but never saw committed are kept. The old
    /// Raft data is moved aside, not deleted. Needs --confirm-data-loss.
    #[arg(long)]
    pub force_new_cluster: bool,

    /// Confirms --force-new-cluster.
    #[arg(long)]
    pub confirm_data_loss: bool,

    /// Leader heartbeat interval in milliseconds [default: 50].
    #[arg(long, env = "BALLAST_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,

    /// Lower bound of the randomized election timeout in milliseconds; must be above the
    /// heartbeat [default: 100]. A leader's death leaves the cluster leaderless for up to
    /// twice the upper bound; VIP leases must outlast that (see --vip-lease-ms).
    #[arg(long, env = "BALLAST_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,

    /// Upper bound of the randomized election timeout in milliseconds [default: 200].
    #[arg(long, env = "BALLAST_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,

    /// Take a snapshot after this many log entries since the last one; older entries are
    /// then purged [default: 10000].
    #[arg(long, env = "BALLAST_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,

    /// Log entries kept behind the last snapshot, so slow followers catch up without a
    /// snapshot [default: 1000].
    #[arg(long, env = "BALLAST_KEEP_LOGS")]
    pub keep_logs: Option<u64>,

    /// Log output: text or json [default: text].
    #[arg(long, env = "BALLAST_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Log filter in tracing's EnvFilter syntax, e.g. "info" or "ballast_node=debug"
    /// [default: info].
    #[arg(long, env = "BALLAST_LOG")]
    pub log: Option<String>,

    /// Run the agent in this process: hold the VIPs the cluster assigns to this node (nftables
    /// fence, netlink addresses, gratuitous ARP) and probe its backends. Needs CAP_NET_ADMIN
    /// and CAP_NET_RAW.
    #[arg(long, env = "BALLAST_AGENT")]
    pub agent: bool,

    #[command(flatten)]
    pub agent_opts: AgentOpts,

    /// Margin the leader adds before it considers a lease gone, ms [default: 50].
    #[arg(long, env = "BALLAST_VIP_MARGIN_MS")]
    pub vip_margin_ms: Option<u64>,

    /// An agent silent this long is marked down by the leader, ms [default: 2000].
    #[arg(long, env = "BALLAST_NODE_DOWN_AFTER_MS")]
    pub node_down_after_ms: Option<u64>,

    /// Write the bound gRPC and HTTP addresses to this file as JSON once serving (for scripts
    /// and tests that listen on port 0).
    #[arg(long, env = "BALLAST_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
}

/// The same options as read from the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<NodeId>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    http_listen: Option<String>,
    initial_cluster: Option<String>,
    cluster_name: Option<String>,
    join: Option<String>,
    bootstrap: Option<bool>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_logs: Option<u64>,
    keep_logs: Option<u64>,
    log_format: Option<String>,
    log: Option<String>,
    addr_file: Option<PathBuf>,
    agent: Option<bool>,
    vip_lease_ms: Option<u64>,
    vip_renew_ms: Option<u64>,
    vip_drift_ms: Option<u64>,
    vip_margin_ms: Option<u64>,
    garp_count: Option<u32>,
    garp_interval_ms: Option<u64>,
    fence_journal: Option<PathBuf>,
    node_down_after_ms: Option<u64>,
    check_host: Option<std::net::IpAddr>,
    exec_checks: Option<BTreeMap<String, Vec<String>>>,
    release_dirs: Option<BTreeMap<String, PathBuf>>,
    activate_hooks: Option<BTreeMap<String, Vec<String>>>,
    hook_timeout_ms: Option<u64>,
    keep_releases: Option<usize>,
    token_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    haproxy_socket: Option<PathBuf>,
    haproxy_backends: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration of a member.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// None: derive from the bound listener.
    pub advertise: Option<String>,
    pub http_listen: Option<SocketAddr>,
    pub initial_cluster: BTreeMap<NodeId, String>,
    pub cluster_name: String,
    pub join: Vec<String>,
    pub bootstrap: bool,
    /// API tokens (see `auth.rs`); None: the API is open.
    pub token_file: Option<PathBuf>,
    /// Mutual TLS on the gRPC port (see `tls.rs`); None: plaintext.
    pub tls: Option<crate::tls::NodeTlsFiles>,
    /// A backup to seed the new cluster with (see `backup.rs`).
    pub restore_from: Option<PathBuf>,
    /// See `--force-new-cluster` (validated: needs `confirm_data_loss`).
    pub force_new_cluster: bool,
    pub confirm_data_loss: bool,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs: u64,
    pub keep_logs: u64,
    pub log_format: LogFormat,
    pub log: String,
    pub addr_file: Option<PathBuf>,
    pub agent: bool,
    pub lease: crate::lease::LeaseConfig,
    pub garp_count: u32,
    pub garp_interval_ms: u64,
    /// See `--fence-journal`.
    pub fence_journal: Option<PathBuf>,
    pub node_down_after_ms: u64,
    pub check_host: std::net::IpAddr,
    pub exec_checks: BTreeMap<String, Vec<String>>,
    /// Per service: where its releases live and how they are activated.
    pub release_sites: BTreeMap<String, crate::agent::release::ReleaseSite>,
    /// The local HAProxy the agent drives, if any.
    pub haproxy: Option<crate::agent::haproxy::HaproxyConfig>,
}

/// The agent's keys of a configuration file (a member's or `ballastd agent`'s: both have
/// them, under the same names), moved out of it.
macro_rules! agent_keys {
    ($file:expr) => {
        AgentFileKeys {
            vip_lease_ms: $file.vip_lease_ms,
            vip_renew_ms: $file.vip_renew_ms,
            vip_drift_ms: $file.vip_drift_ms,
            garp_count: $file.garp_count,
            garp_interval_ms: $file.garp_interval_ms,
            fence_journal: $file.fence_journal,
            check_host: $file.check_host,
            exec_checks: $file.exec_checks,
            release_dirs: $file.release_dirs,
            activate_hooks: $file.activate_hooks,
            hook_timeout_ms: $file.hook_timeout_ms,
            keep_releases: $file.keep_releases,
            haproxy_socket: $file.haproxy_socket,
            haproxy_backends: $file.haproxy_backends,
        }
    };
}

impl Config {
    /// Defaults for a member `node_id` with data in `data_dir`, listening on loopback port 0:
    /// the starting point of tests.
    pub fn for_test(node_id: NodeId, data_dir: PathBuf) -> Self {
        Config {
            node_id,
            data_dir,
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            http_listen: None,
            initial_cluster: BTreeMap::new(),
            cluster_name: "ballast".into(),
            join: Vec::new(),
            bootstrap: false,
            restore_from: None,
            token_file: None,
            tls: None,
            force_new_cluster: false,
            confirm_data_loss: false,
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            log_format: LogFormat::Text,
            log: "info".into(),
            addr_file: None,
            agent: false,
            lease: crate::lease::LeaseConfig::default(),
            garp_count: 5,
            garp_interval_ms: 100,
            fence_journal: None,
            node_down_after_ms: 2000,
            check_host: "127.0.0.1".parse().unwrap(),
            exec_checks: BTreeMap::new(),
            release_sites: BTreeMap::new(),
            haproxy: None,
        }
    }

    /// Merges flags/environment (already merged by clap) over the file over the defaults.
    pub fn load(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_toml(path)?,
            None => FileConfig::default(),
        };
        let http_listen = match args.http_listen.or(file.http_listen).as_deref() {
            None => Some("127.0.0.1:7480".parse().unwrap()),
            Some("off") | Some("") => None,
            Some(s) => Some(s.parse().map_err(|_| ConfigError::Invalid {
                field: "http-listen".into(),
                message: format!("{s:?} is not an address like 127.0.0.1:7480 or \"off\""),
            })?),
        };
        let log_format = parse_log_format(args.log_format.or(file.log_format))?;
        let initial_cluster = parse_initial_cluster(
            args.initial_cluster
                .or(file.initial_cluster)
                .as_deref()
                .unwrap_or(""),
        )?;
        let join = args
            .join
            .or(file.join)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let agent = AgentSettings::resolve(
            &args.agent_opts,
            agent_keys!(file),
            args.vip_margin_ms.or(file.vip_margin_ms),
        )?;
        let cfg = Config {
            node_id: args
                .node_id
                .or(file.node_id)
                .ok_or(ConfigError::MissingNodeId)?,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "/var/lib/ballast".into()),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:7400".parse().unwrap()),
            advertise: args.advertise.or(file.advertise),
            http_listen,
            initial_cluster,
            cluster_name: args
                .cluster_name
                .or(file.cluster_name)
                .unwrap_or_else(|| "ballast".into()),
            join,
            bootstrap: args.bootstrap || file.bootstrap.unwrap_or(false),
            restore_from: args.restore_from.clone(),
            token_file: args
                .agent_opts
                .token_file
                .clone()
                .or(file.token_file.clone()),
            tls: tls_files(
                &args.agent_opts,
                file.tls_ca.clone(),
                file.tls_cert.clone(),
                file.tls_key.clone(),
            )?,
            force_new_cluster: args.force_new_cluster,
            confirm_data_loss: args.confirm_data_loss,
            heartbeat_ms: args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(50),
            election_timeout_min_ms: args
                .election_timeout_min_ms
                .or(file.election_timeout_min_ms)
                .unwrap_or(100),
            election_timeout_max_ms: args
                .election_timeout_max_ms
                .or(file.election_timeout_max_ms)
                .unwrap_or(200),
            snapshot_logs: args.snapshot_logs.or(file.snapshot_logs).unwrap_or(10_000),
            keep_logs: args.keep_logs.or(file.keep_logs).unwrap_or(1_000),
            log_format,
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            addr_file: args.addr_file.or(file.addr_file),
            agent: args.agent || file.agent.unwrap_or(false),
            lease: agent.lease,
            garp_count: agent.garp_count,
            garp_interval_ms: agent.garp_interval_ms,
            fence_journal: agent.fence_journal,
            node_down_after_ms: args
                .node_down_after_ms
                .or(file.node_down_after_ms)
                .unwrap_or(2000),
            check_host: agent.check_host,
            exec_checks: agent.exec_checks,
            release_sites: agent.release_sites,
            haproxy: agent.haproxy,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses impossible combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::MissingNodeId);
        }
        if self.heartbeat_ms < 10 {
            return Err(ConfigError::HeartbeatTooShort);
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms {
            return Err(ConfigError::ElectionNotAboveHeartbeat {
                election_min: self.election_timeout_min_ms,
                heartbeat: self.heartbeat_ms,
            });
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(ConfigError::ElectionRangeEmpty {
                min: self.election_timeout_min_ms,
                max: self.election_timeout_max_ms,
            });
        }
        self.lease
            .validate_with_election(Duration::from_millis(self.election_timeout_max_ms))
            .map_err(|e| ConfigError::Invalid {
                field: "vip-lease".into(),
                message: e.to_string(),
            })?;
        validate_agent(self.garp_count, &self.exec_checks)?;
        if self.node_down_after_ms <= self.lease.lease.as_millis() as u64 {
            return Err(ConfigError::Invalid {
                field: "node-down-after-ms".into(),
                message: format!(
                    "{} ms must exceed the VIP lease ({} ms)",
                    self.node_down_after_ms,
                    self.lease.lease.as_millis()
                ),
            });
        }
        if self.snapshot_logs == 0 {
            return Err(ConfigError::BadSnapshotLogs);
        }
        let modes = [
            !self.initial_cluster.is_empty(),
            !self.join.is_empty(),
            self.bootstrap,
        ];
        if modes.iter().filter(|m| **m).count() > 1 {
            return Err(ConfigError::JoinAndInitialCluster);
        }
        if self.force_new_cluster && !self.confirm_data_loss {
            return Err(ConfigError::Invalid {
                field: "force-new-cluster".into(),
                message: "this makes this member a one-member cluster of its own: writes that only the lost members hold are gone for good, and the old members must never be restarted into the new cluster. Add --confirm-data-loss to go ahead".into(),
            });
        }
        if self.force_new_cluster
            && (self.restore_from.is_some() || self.bootstrap || !self.join.is_empty())
        {
            return Err(ConfigError::Invalid {
                field: "force-new-cluster".into(),
                message:
                    "takes the member's own data: not with --restore-from, --bootstrap or --join"
                        .into(),
            });
        }
        if self.restore_from.is_some() && !self.bootstrap && self.initial_cluster.is_empty() {
            return Err(ConfigError::Invalid {
                field: "restore-from".into(),
                message: "a backup seeds a new cluster: give --initial-cluster (every initial member with the same file) or --bootstrap".into(),
            });
        }
        if let Some(a) = &self.advertise {
            if crate::validate::member_addr("advertise", a).is_err() {
                return Err(ConfigError::BadAdvertise(a.clone()));
            }
        }
        if !self.initial_cluster.is_empty() {
            let Some(listed) = self.initial_cluster.get(&self.node_id) else {
                return Err(ConfigError::SelfNotInInitialCluster {
                    node_id: self.node_id,
                });
            };
            let advertised = self
                .advertise
                .clone()
                .or_else(|| (self.listen.port() != 0).then(|| self.listen.to_string()));
            if let Some(advertised) = advertised {
                if &advertised != listed {
                    return Err(ConfigError::InitialClusterAddrMismatch {
                        listed: listed.clone(),
                        advertised,
                    });
                }
            }
        }
        Ok(())
    }

    /// The cluster id a new cluster formed from this configuration gets: the same on every
    /// initial member, different for another name or member list.
    pub fn initial_cluster_id(&self) -> String {
        if self.bootstrap {
            // A one-member cluster needs no agreement: a random id tells two apart.
            return format!("{}-{:016x}", self.cluster_name, rand::random::<u64>());
        }
        let mut text = self.cluster_name.clone();
        for (id, addr) in &self.initial_cluster {
            text.push_str(&format!(";{id}={addr}"));
        }
        // FNV-1a, 64 bit: stable across versions and platforms.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        format!("{}-{h:016x}", self.cluster_name)
    }

    pub fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: self.keep_logs,
            purge_batch_size: self.snapshot_logs.clamp(1, 256),
            install_snapshot_timeout: 2_000,
            snapshot_max_chunk_size: 1024 * 1024,
            max_payload_entries: 512,
            ..Default::default()
        }
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_min_ms.max(500))
    }
}

pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || ConfigError::BadInitialCluster {
            entry: entry.to_string(),
        };
        let (id, addr) = entry.split_once('=').ok_or_else(bad)?;
        let id: NodeId = id.trim().parse().map_err(|_| bad())?;
        if id == 0 || crate::validate::member_addr("initial-cluster", addr.trim()).is_err() {
            return Err(bad());
        }
        if out.insert(id, addr.trim().to_string()).is_some() {
            return Err(bad());
        }
    }
    Ok(out)
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str::<T>(&text).map_err(|e| err(e.to_string()))
}

fn parse_log_format(v: Option<String>) -> Result<LogFormat, ConfigError> {
    match v.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError::BadLogFormat(other.into())),
    }
}

/// Exec checks from the file, then from `--exec-check NAME=COMMAND` flags (a flag replaces a
/// file entry of the same name).
fn merge_exec_checks(
    file: Option<BTreeMap<String, Vec<String>>>,
    flags: &[String],
) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut m = file.unwrap_or_default();
    for e in flags {
        let (name, cmd) = e.split_once('=').ok_or_else(|| ConfigError::Invalid {
            field: "exec-check".into(),
            message: format!("{e:?} is not NAME=COMMAND"),
        })?;
        m.insert(
            name.to_string(),
            cmd.split_whitespace().map(String::from).collect(),
        );
    }
    Ok(m)
}

/// Release sites from the file, then from flags (a flag replaces a file entry).
fn release_sites(
    file_dirs: Option<BTreeMap<String, PathBuf>>,
    file_hooks: Option<BTreeMap<String, Vec<String>>>,
    file_timeout: Option<u64>,
    file_keep: Option<usize>,
    opts: &AgentOpts,
) -> Result<BTreeMap<String, crate::agent::release::ReleaseSite>, ConfigError> {
    let pair = |field: &str, e: &str| -> Result<(String, String), ConfigError> {
        let (k, v) = e.split_once('=').ok_or_else(|| ConfigError::Invalid {
            field: field.into(),
            message: format!("{e:?} is not SERVICE=VALUE"),
        })?;
        Ok((k.to_string(), v.to_string()))
    };
    let mut dirs = file_dirs.unwrap_or_default();
    for e in &opts.release_dirs {
        let (k, v) = pair("release-dir", e)?;
        dirs.insert(k, PathBuf::from(v));
    }
    let mut hooks = file_hooks.unwrap_or_default();
    for e in &opts.activate_hooks {
        let (k, v) = pair("activate-hook", e)?;
        hooks.insert(k, v.split_whitespace().map(String::from).collect());
    }
    let timeout = Duration::from_millis(opts.hook_timeout_ms.or(file_timeout).unwrap_or(30_000));
    let keep = opts.keep_releases.or(file_keep).unwrap_or(5);
    if keep < 2 {
        return Err(ConfigError::Invalid {
            field: "keep-releases".into(),
            message: "must be at least 2 (the current and the previous release)".into(),
        });
    }
    for (svc, argv) in &hooks {
        if !dirs.contains_key(svc) {
            return Err(ConfigError::Invalid {
                field: "activate-hook".into(),
                message: format!("service {svc:?} has a hook but no --release-dir"),
            });
        }
        if argv.is_empty() {
            return Err(ConfigError::Invalid {
                field: "activate-hook".into(),
                message: format!("{svc:?} has no command"),
            });
        }
    }
    let mut out = BTreeMap::new();
    for (svc, dir) in dirs {
        if !dir.is_absolute() {
            return Err(ConfigError::Invalid {
                field: "release-dir".into(),
                message: format!("{} (for {svc:?}) must be an absolute path", dir.display()),
            });
        }
        out.insert(
            svc.clone(),
            crate::agent::release::ReleaseSite {
                dir,
                hook: hooks.get(&svc).cloned(),
                hook_timeout: timeout,
                keep,
            },
        );
    }
    Ok(out)
}

/// Checks shared by the member's embedded agent and the standalone one.
/// The HAProxy settings from flags (which win) or the file; refuses a socket without
/// backends, backends without a socket, and malformed SERVICE=BACKEND pairs.
/// The three TLS files, flag over file; all or none.
fn tls_files(
    opts: &AgentOpts,
    file_ca: Option<PathBuf>,
    file_cert: Option<PathBuf>,
    file_key: Option<PathBuf>,
) -> Result<Option<crate::tls::NodeTlsFiles>, ConfigError> {
    let ca = opts.tls_ca.clone().or(file_ca);
    let cert = opts.tls_cert.clone().or(file_cert);
    let key = opts.tls_key.clone().or(file_key);
    match (ca, cert, key) {
        (None, None, None) => Ok(None),
        (Some(ca), Some(cert), Some(key)) => Ok(Some(crate::tls::NodeTlsFiles { ca, cert, key })),
        _ => Err(ConfigError::Invalid {
            field: "tls".into(),
            message: "--tls-ca, --tls-cert and --tls-key go together (mutual TLS needs all three)"
                .into(),
        }),
    }
}

fn haproxy_config(
    opts: &AgentOpts,
    file_socket: Option<PathBuf>,
    file_backends: Option<Vec<String>>,
) -> Result<Option<crate::agent::haproxy::HaproxyConfig>, ConfigError> {
    let socket = opts.haproxy_socket.clone().or(file_socket);
    let pairs = if opts.haproxy_backends.is_empty() {
        file_backends.unwrap_or_default()
    } else {
        opts.haproxy_backends.clone()
    };
    let bad = |m: &str| ConfigError::Invalid {
        field: "haproxy-backend".into(),
        message: m.into(),
    };
    let mut backends = BTreeMap::new();
    for p in &pairs {
        let (svc, be) = p
            .split_once('=')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(char::is_whitespace))
            .ok_or_else(|| bad(&format!("{p:?} is not SERVICE=BACKEND")))?;
        backends.insert(svc.to_string(), be.to_string());
    }
    match (socket, backends.is_empty()) {
        (None, true) => Ok(None),
        (Some(socket), false) => Ok(Some(crate::agent::haproxy::HaproxyConfig {
            socket,
            backends,
        })),
        (Some(_), true) => Err(bad(
            "--haproxy-socket needs at least one --haproxy-backend SERVICE=BACKEND",
        )),
        (None, false) => Err(bad("--haproxy-backend needs --haproxy-socket")),
    }
}

fn validate_agent(
    garp_count: u32,
    exec_checks: &BTreeMap<String, Vec<String>>,
) -> Result<(), ConfigError> {
    if garp_count == 0 || garp_count > 100 {
        return Err(ConfigError::Invalid {
            field: "garp-count".into(),
            message: "must be in 1..=100".into(),
        });
    }
    for (name, argv) in exec_checks {
        if argv.is_empty() {
            return Err(ConfigError::Invalid {
                field: "exec-check".into(),
                message: format!("{name:?} has no command"),
            });
        }
    }
    Ok(())
}

/// Command line of `ballastd agent`: the agent alone, for a server that runs backends and
/// holds VIPs but is not a Raft member. Every option can also be set as BALLAST_<NAME> in the
/// environment or in the TOML file given by --config.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "ballastd agent",
    version,
    about = "Ballast agent alone: holds the VIPs the cluster assigns to this server and probes its backends",
    long_about = "Ballast agent alone, for a server outside the Raft quorum: it registers the \
server as a node (role agent) with the cluster at --endpoints, then holds the VIPs the cluster \
assigns to it (nftables fence, netlink addresses, gratuitous ARP) and probes its backends. \
Needs CAP_NET_ADMIN and CAP_NET_RAW. On SIGTERM it releases its VIPs and stops.\n\n\
The node id must be unique in the cluster and not that of a Raft member. Make the node a \
backend of a service (ballastctl service apply --backends) for VIPs to be placed on it."
)]
pub struct AgentArgs {
    /// TOML file with any of the options below (names with underscores).
    #[arg(long, env = "BALLAST_CONFIG")]
    pub config: Option<PathBuf>,

    /// This server's node id: a positive integer, unique in the cluster, not a member's.
    #[arg(long, env = "BALLAST_NODE_ID")]
    pub node_id: Option<NodeId>,

    /// gRPC endpoints of cluster members, comma separated (host:port,...).
    #[arg(long, env = "BALLAST_ENDPOINTS")]
    pub endpoints: Option<String>,

    /// How operators reach this server, host:port, shown in node lists [default: none].
    #[arg(long, env = "BALLAST_ADVERTISE")]
    pub advertise: Option<String>,

    #[command(flatten)]
    pub agent_opts: AgentOpts,

    /// Log output: text or json [default: text].
    #[arg(long, env = "BALLAST_LOG_FORMAT")]
    pub log_format: Option<String>,

    /// Log filter in tracing's EnvFilter syntax [default: info].
    #[arg(long, env = "BALLAST_LOG")]
    pub log: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFileConfig {
    node_id: Option<NodeId>,
    endpoints: Option<Vec<String>>,
    advertise: Option<String>,
    vip_lease_ms: Option<u64>,
    vip_renew_ms: Option<u64>,
    vip_drift_ms: Option<u64>,
    garp_count: Option<u32>,
    garp_interval_ms: Option<u64>,
    fence_journal: Option<PathBuf>,
    check_host: Option<std::net::IpAddr>,
    exec_checks: Option<BTreeMap<String, Vec<String>>>,
    release_dirs: Option<BTreeMap<String, PathBuf>>,
    activate_hooks: Option<BTreeMap<String, Vec<String>>>,
    hook_timeout_ms: Option<u64>,
    keep_releases: Option<usize>,
    token_file: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    haproxy_socket: Option<PathBuf>,
    haproxy_backends: Option<Vec<String>>,
    log_format: Option<String>,
    log: Option<String>,
}

/// The resolved configuration of `ballastd agent`.
#[derive(Debug, Clone)]
pub struct AgentOnlyConfig {
    pub node_id: NodeId,
    pub endpoints: Vec<String>,
    pub advertise: String,
    pub lease: crate::lease::LeaseConfig,
    pub garp_count: u32,
    pub garp_interval_ms: u64,
    /// See `--fence-journal`.
    pub fence_journal: Option<PathBuf>,
    pub check_host: std::net::IpAddr,
    pub exec_checks: BTreeMap<String, Vec<String>>,
    /// Per service: where its releases live and how they are activated.
    pub release_sites: BTreeMap<String, crate::agent::release::ReleaseSite>,
    /// The local HAProxy the agent drives, if any.
    pub haproxy: Option<crate::agent::haproxy::HaproxyConfig>,
    pub log_format: LogFormat,
    pub log: String,
    /// The token file (see `ballastd --help`); the agent uses its `node <id>` line (see
    /// `main.rs`).
    pub token_file: Option<PathBuf>,
    /// Mutual TLS towards the cluster (see `ballastd --help`); None: plaintext.
    pub tls: Option<crate::tls::NodeTlsFiles>,
}

/// The agent's keys of a configuration file: the same in a member's file and in
/// `ballastd agent`'s.
struct AgentFileKeys {
    vip_lease_ms: Option<u64>,
    vip_renew_ms: Option<u64>,
    vip_drift_ms: Option<u64>,
    garp_count: Option<u32>,
    garp_interval_ms: Option<u64>,
    fence_journal: Option<PathBuf>,
    check_host: Option<std::net::IpAddr>,
    exec_checks: Option<BTreeMap<String, Vec<String>>>,
    release_dirs: Option<BTreeMap<String, PathBuf>>,
    activate_hooks: Option<BTreeMap<String, Vec<String>>>,
    hook_timeout_ms: Option<u64>,
    keep_releases: Option<usize>,
    haproxy_socket: Option<PathBuf>,
    haproxy_backends: Option<Vec<String>>,
}

/// The agent's settings, resolved once for both ways of running it (`ballastd --agent` and
/// `ballastd agent`): flags over the file over the defaults (`LeaseConfig::default` for the
/// lease).
struct AgentSettings {
    lease: crate::lease::LeaseConfig,
    garp_count: u32,
    garp_interval_ms: u64,
    fence_journal: Option<PathBuf>,
    check_host: std::net::IpAddr,
    exec_checks: BTreeMap<String, Vec<String>>,
    release_sites: BTreeMap<String, crate::agent::release::ReleaseSite>,
    haproxy: Option<crate::agent::haproxy::HaproxyConfig>,
}

impl AgentSettings {
    /// `leader_margin_ms`: a member's `--vip-margin-ms` (an agent alone has none: the
    /// leader's margin is the leader's).
    fn resolve(
        opts: &AgentOpts,
        file: AgentFileKeys,
        leader_margin_ms: Option<u64>,
    ) -> Result<Self, ConfigError> {
        let defaults = crate::lease::LeaseConfig::default();
        let ms = |flag: Option<u64>, key: Option<u64>, default: Duration| {
            flag.or(key).map_or(default, Duration::from_millis)
        };
        Ok(AgentSettings {
            lease: crate::lease::LeaseConfig {
                lease: ms(opts.vip_lease_ms, file.vip_lease_ms, defaults.lease),
                renew_interval: ms(
                    opts.vip_renew_ms,
                    file.vip_renew_ms,
                    defaults.renew_interval,
                ),
                drift_allowance: ms(
                    opts.vip_drift_ms,
                    file.vip_drift_ms,
                    defaults.drift_allowance,
                ),
                leader_margin: leader_margin_ms
                    .map_or(defaults.leader_margin, Duration::from_millis),
            },
            garp_count: opts.garp_count.or(file.garp_count).unwrap_or(5),
            garp_interval_ms: opts
                .garp_interval_ms
                .or(file.garp_interval_ms)
                .unwrap_or(100),
            fence_journal: opts.fence_journal.clone().or(file.fence_journal),
            check_host: opts
                .check_host
                .or(file.check_host)
                .unwrap_or_else(|| "127.0.0.1".parse().unwrap()),
            exec_checks: merge_exec_checks(file.exec_checks, &opts.exec_checks)?,
            release_sites: release_sites(
                file.release_dirs,
                file.activate_hooks,
                file.hook_timeout_ms,
                file.keep_releases,
                opts,
            )?,
            haproxy: haproxy_config(opts, file.haproxy_socket, file.haproxy_backends)?,
        })
    }
}

impl AgentOnlyConfig {
    pub fn load(args: AgentArgs) -> Result<Self, ConfigError> {
        let file: AgentFileConfig = match &args.config {
            Some(path) => read_toml(path)?,
            None => AgentFileConfig::default(),
        };
        let agent = AgentSettings::resolve(&args.agent_opts, agent_keys!(file), None)?;
        let endpoints: Vec<String> = match args.endpoints {
            Some(e) => e
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => file.endpoints.unwrap_or_default(),
        };
        let cfg = AgentOnlyConfig {
            node_id: args
                .node_id
                .or(file.node_id)
                .ok_or(ConfigError::MissingNodeId)?,
            endpoints,
            advertise: args.advertise.or(file.advertise).unwrap_or_default(),
            lease: agent.lease,
            garp_count: agent.garp_count,
            garp_interval_ms: agent.garp_interval_ms,
            fence_journal: agent.fence_journal,
            check_host: agent.check_host,
            exec_checks: agent.exec_checks,
            release_sites: agent.release_sites,
            haproxy: agent.haproxy,
            log_format: parse_log_format(args.log_format.or(file.log_format))?,
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            token_file: args.agent_opts.token_file.clone().or(file.token_file),
            tls: tls_files(&args.agent_opts, file.tls_ca, file.tls_cert, file.tls_key)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::MissingNodeId);
        }
        if self.endpoints.is_empty() {
            return Err(ConfigError::Invalid {
                field: "endpoints".into(),
                message: "at least one member's gRPC endpoint (host:port) is needed".into(),
            });
        }
        for e in &self.endpoints {
            crate::validate::member_addr("endpoints", e).map_err(|_| ConfigError::Invalid {
                field: "endpoints".into(),
                message: format!("{e:?} is not host:port"),
            })?;
        }
        if !self.advertise.is_empty()
            && crate::validate::member_addr("advertise", &self.advertise).is_err()
        {
            return Err(ConfigError::BadAdvertise(self.advertise.clone()));
        }
        self.lease.validate().map_err(|e| ConfigError::Invalid {
            field: "vip-lease".into(),
            message: e.to_string(),
        })?;
        validate_agent(self.garp_count, &self.exec_checks)
    }

    /// The agent's own settings, for agent process `instance`.
    pub fn agent(&self, instance: u64) -> crate::agent::AgentConfig {
        crate::agent::AgentConfig {
            node_id: self.node_id,
            lease: self.lease,
            garp_count: self.garp_count,
            garp_interval: Duration::from_millis(self.garp_interval_ms),
            check_host: self.check_host,
            exec_checks: self.exec_checks.clone(),
            release_sites: self.release_sites.clone(),
            haproxy: self.haproxy.clone(),
            instance,
            advertise: Some(self.advertise.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of `ballastd`, `ballastd agent` and `ballastd restore` says what it does in
    /// `--help`.
    #[test]
    fn every_flag_has_help_text() {
        use clap::CommandFactory;
        let missing = ballast_client::cli::flags_without_help(&Cli::command(), "ballastd");
        assert!(missing.is_empty(), "flags without help: {missing:#?}");
    }

    fn args(v: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("ballastd").chain(v.iter().copied()))
            .unwrap()
            .member
    }

    #[test]
    fn election_must_exceed_heartbeat() {
        let e = Config::load(args(&[
            "--node-id",
            "1",
            "--heartbeat-ms",
            "200",
            "--election-timeout-min-ms",
            "200",
        ]))
        .unwrap_err();
        assert_eq!(
            e,
            ConfigError::ElectionNotAboveHeartbeat {
                election_min: 200,
                heartbeat: 200
            }
        );
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "node_id = 3\nheartbeat_ms = 70\nelection_timeout_min_ms = 900\nelection_timeout_max_ms = 1800\nvip_lease_ms = 5000\nvip_renew_ms = 500\nnode_down_after_ms = 10000\n").unwrap();
        let c = Config::load(args(&[
            "--config",
            path.to_str().unwrap(),
            "--heartbeat-ms",
            "80",
        ]))
        .unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.heartbeat_ms, 80);
        assert_eq!(c.election_timeout_min_ms, 900);
        assert_eq!(c.snapshot_logs, 10_000);
    }

    #[test]
    fn slow_elections_need_longer_leases() {
        // etcd's timings with the default lease: a leader election would drop every VIP.
        let e = Config::load(args(&[
            "--node-id",
            "1",
            "--heartbeat-ms",
            "100",
            "--election-timeout-min-ms",
            "500",
            "--election-timeout-max-ms",
            "1000",
        ]))
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, message } if field == "vip-lease" && message.contains("leader election")),
            "{e}"
        );
        Config::load(args(&["--node-id", "1"])).expect("the defaults are consistent");
    }

    #[test]
    fn the_standalone_agent_needs_an_id_and_endpoints() {
        let parse = |v: &[&str]| {
            AgentOnlyConfig::load(
                AgentArgs::try_parse_from(std::iter::once("agent").chain(v.iter().copied()))
                    .unwrap(),
            )
        };
        assert_eq!(
            parse(&["--endpoints", "10.0.0.1:7400"]).unwrap_err(),
            ConfigError::MissingNodeId
        );
        assert!(matches!(
            parse(&["--node-id", "9"]).unwrap_err(),
            ConfigError::Invalid { field, .. } if field == "endpoints"
        ));
        assert!(matches!(
            parse(&["--node-id", "9", "--endpoints", "nope"]).unwrap_err(),
            ConfigError::Invalid { field, .. } if field == "endpoints"
        ));
        let c = parse(&[
            "--node-id",
            "9",
            "--endpoints",
            "10.0.0.1:7400, 10.0.0.2:7400",
            "--exec-check",
            "up=test -e /tmp/up",
        ])
        .unwrap();
        assert_eq!(c.endpoints, vec!["10.0.0.1:7400", "10.0.0.2:7400"]);
        assert_eq!(c.exec_checks["up"], vec!["test", "-e", "/tmp/up"]);
        assert_eq!(c.lease, crate::lease::LeaseConfig::default());
    }

    #[test]
    fn unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "node_id = 3\nheartbeat = 70\n").unwrap();
        let e = Config::load(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(matches!(e, ConfigError::File { .. }), "{e}");
    }

    #[test]
    fn initial_cluster_must_list_self_at_its_address() {
        let e = Config::load(args(&[
            "--node-id",
            "4",
            "--initial-cluster",
            "1=127.0.0.1:7401,2=127.0.0.1:7402",
        ]))
        .unwrap_err();
        assert_eq!(e, ConfigError::SelfNotInInitialCluster { node_id: 4 });
        let e = Config::load(args(&[
            "--node-id",
            "1",
            "--listen",
            "127.0.0.1:7409",
            "--initial-cluster",
            "1=127.0.0.1:7401",
        ]))
        .unwrap_err();
        assert!(matches!(e, ConfigError::InitialClusterAddrMismatch { .. }));
        assert!(matches!(
            parse_initial_cluster("1=a:1,1=b:2").unwrap_err(),
            ConfigError::BadInitialCluster { .. }
        ));
    }

    #[test]
    fn cluster_id_depends_on_name_and_members() {
        let mut a = Config::for_test(1, "/tmp/x".into());
        a.initial_cluster = parse_initial_cluster("1=h:1,2=h:2,3=h:3").unwrap();
        let mut b = a.clone();
        b.node_id = 2;
        assert_eq!(a.initial_cluster_id(), b.initial_cluster_id());
        b.cluster_name = "other".into();
        assert_ne!(a.initial_cluster_id(), b.initial_cluster_id());
    }
}
