//! The command lines of `ballastd`: a member (`Args`), `ballastd agent` (`AgentArgs`) and
//! `ballastd restore` (`RestoreArgs`), the agent's options both share (`AgentOpts`), and
//! `Cli::into_run`, which says what to run. Flags and their environment variables only
//! (clap merges the two): the TOML file is `file.rs`, the merge over it and the defaults
//! `mod.rs` and `agent.rs`, the checks `check.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::types::NodeId;

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
    pub(crate) mode: Option<Mode>,
    #[command(flatten)]
    pub(crate) member: Args,
}

/// What else `ballastd` can run besides a member.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Mode {
    // Its help is `AgentArgs`'s own.
    Agent(Box<AgentArgs>),
    /// A member of a new cluster, seeded from a backup: `ballastd restore --from FILE` and
    /// the member's usual flags (with --bootstrap or --initial-cluster, an empty data
    /// directory).
    Restore(Box<RestoreArgs>),
}

/// `ballastd restore`: the backup, and the member's flags.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// A backup written by `ballastctl snapshot save` (checked before anything is written).
    #[arg(long, value_name = "FILE")]
    pub(crate) from: PathBuf,
    #[command(flatten)]
    pub(crate) member: Args,
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
    pub(crate) config: Option<PathBuf>,

    /// This member's id: a positive integer, unique and never reused in the cluster.
    #[arg(long, env = "BALLAST_NODE_ID")]
    pub(crate) node_id: Option<NodeId>,

    /// Directory for the Raft log, snapshots and identity [default: /var/lib/ballast].
    #[arg(long, env = "BALLAST_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Address the gRPC server (API and Raft) listens on; port 0 picks a free port
    /// [default: 127.0.0.1:7400].
    #[arg(long, env = "BALLAST_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,

    /// Address peers and clients dial to reach this member [default: the listen address, or
    /// the bound address when listening on port 0].
    #[arg(long, env = "BALLAST_ADVERTISE")]
    pub(crate) advertise: Option<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz; "off" disables it
    /// [default: 127.0.0.1:7480].
    #[arg(long, env = "BALLAST_HTTP_LISTEN")]
    pub(crate) http_listen: Option<String>,

    /// Members of a new cluster, as ID=HOST:PORT,ID=HOST:PORT,... (like etcd's
    /// --initial-cluster). Used only when the data directory is empty.
    #[arg(long, env = "BALLAST_INITIAL_CLUSTER")]
    pub(crate) initial_cluster: Option<String>,

    /// Name of a new cluster; with the initial member list it derives the cluster id that the
    /// data directory remembers [default: ballast].
    #[arg(long, env = "BALLAST_CLUSTER_NAME")]
    pub(crate) cluster_name: Option<String>,

    /// Form a new cluster with this node as its only member, at its advertised address.
    /// Grow it with --join on the other nodes. Used only when the data directory is empty.
    #[arg(long, env = "BALLAST_BOOTSTRAP")]
    pub(crate) bootstrap: bool,

    /// Join a running cluster through these members' gRPC endpoints (comma separated): the
    /// node asks to be added as a learner. Promote it to voter with `ballastctl member promote`.
    #[arg(long, env = "BALLAST_JOIN")]
    pub(crate) join: Option<String>,

    /// Seed the new cluster this member forms (with --initial-cluster or --bootstrap) from a
    /// backup written by `ballastctl snapshot save`; the data directory must be empty. Give
    /// every initial member the same file: the cluster id then derives from it too, so the
    /// restored cluster never takes traffic meant for the old one. `ballastd restore --from
    /// FILE ...` says the same.
    #[arg(long)]
    pub(crate) restore_from: Option<PathBuf>,

    /// Disaster recovery when a majority of members is lost for good: turn this member's data
    /// into a new one-member cluster (new cluster id) that keeps its state, then grow it back
    /// with --join on fresh servers. Writes the other members acknowledged but this one never
    /// received are lost; writes this one received but never saw committed are kept. The old
    /// Raft data is moved aside, not deleted. Needs --confirm-data-loss.
    #[arg(long)]
    pub(crate) force_new_cluster: bool,

    /// Confirms --force-new-cluster.
    #[arg(long)]
    pub(crate) confirm_data_loss: bool,

    /// Leader heartbeat interval in milliseconds [default: 50]. For failover in about half a
    /// second on a LAN (README): --heartbeat-ms 25 --election-timeout-min-ms 50
    /// --election-timeout-max-ms 100 --vip-lease-ms 450 --vip-drift-ms 10 --vip-margin-ms 40;
    /// not for clusters of many hundreds of agents (README, "Failover timing").
    #[arg(long, env = "BALLAST_HEARTBEAT_MS")]
    pub(crate) heartbeat_ms: Option<u64>,

    /// How the leader confirms a linearizable read: read-index (a quorum acknowledges a
    /// heartbeat sent after the read arrived; no clock assumption) or lease (no round trip
    /// while a quorum acknowledged the leader within 0.9 x --election-timeout-max-ms; assumes
    /// the members' monotonic clocks run at the same rate within a tenth and never stop while
    /// the process runs on, as in a frozen VM). A request may ask for either; VIP lease
    /// renewals always use read-index [default: read-index].
    #[arg(long, env = "BALLAST_READ_POLICY", value_parser = ["read-index", "lease"])]
    pub(crate) read_policy: Option<String>,

    /// Lower bound of the randomized election timeout in milliseconds; must be above the
    /// heartbeat [default: 100, or twice the heartbeat if that is more]. A leader's death leaves the cluster leaderless for up to
    /// twice the upper bound; VIP leases must outlast that (see --vip-lease-ms). A follower
    /// starts an election only after hearing nothing for the upper bound plus this range (300
    /// to 400 ms by default), and first asks the others whether they would vote (pre-vote), so
    /// a follower that merely missed heartbeats does not unseat a working leader. On a network
    /// slower than a LAN, raise both bounds and the lease together.
    #[arg(long, env = "BALLAST_ELECTION_TIMEOUT_MIN_MS")]
    pub(crate) election_timeout_min_ms: Option<u64>,

    /// Upper bound of the randomized election timeout in milliseconds [default: 200, or twice
    /// the lower bound if that is more].
    #[arg(long, env = "BALLAST_ELECTION_TIMEOUT_MAX_MS")]
    pub(crate) election_timeout_max_ms: Option<u64>,

    /// Take a snapshot after this many log entries since the last one; older entries are
    /// then purged [default: 10000].
    #[arg(long, env = "BALLAST_SNAPSHOT_LOGS")]
    pub(crate) snapshot_logs: Option<u64>,

    /// Log entries kept behind the last snapshot, so slow followers catch up without a
    /// snapshot [default: 1000].
    #[arg(long, env = "BALLAST_KEEP_LOGS")]
    pub(crate) keep_logs: Option<u64>,

    /// Log output: text or json [default: text].
    #[arg(long, env = "BALLAST_LOG_FORMAT")]
    pub(crate) log_format: Option<String>,

    /// Log filter in tracing's EnvFilter syntax, e.g. "info" or "ballast_node=debug"
    /// [default: info].
    #[arg(long, env = "BALLAST_LOG")]
    pub(crate) log: Option<String>,

    /// Run the agent in this process: hold the VIPs the cluster assigns to this node (nftables
    /// fence, netlink addresses, gratuitous ARP) and probe its backends. Needs CAP_NET_ADMIN
    /// and CAP_NET_RAW.
    #[arg(long, env = "BALLAST_AGENT")]
    pub(crate) agent: bool,

    #[command(flatten)]
    pub(crate) agent_opts: AgentOpts,

    /// Margin the leader adds before it considers a lease gone, ms [default: 50].
    #[arg(long, env = "BALLAST_VIP_MARGIN_MS")]
    pub(crate) vip_margin_ms: Option<u64>,

    /// An agent silent this long is marked down by the leader, ms [default: 2000, or twice the
    /// VIP lease if that is more].
    #[arg(long, env = "BALLAST_NODE_DOWN_AFTER_MS")]
    pub(crate) node_down_after_ms: Option<u64>,

    /// Write the bound gRPC and HTTP addresses to this file as JSON once serving (for scripts
    /// and tests that listen on port 0).
    #[arg(long, env = "BALLAST_ADDR_FILE")]
    pub(crate) addr_file: Option<PathBuf>,
}

/// The agent's options, shared by `ballastd --agent` and `ballastd agent`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct AgentOpts {
    /// VIP lease length in milliseconds [default: 800, or on a member the shortest lease that
    /// fits the election timeouts and renew interval given, if that is more]. An owner that cannot renew stops
    /// answering for its VIPs within this time; another node takes over a little later (about
    /// 0.85 s after a server dies, with the defaults; see --heartbeat-ms for a faster setting). On a member it must leave, after
    /// the drift allowance, one renew interval and the 40 ms by which the fence closes early,
    /// twice the election timeout's upper bound plus 100 ms, so that a leader election does not
    /// drop the VIPs. The lease settings (this, --vip-renew-ms, --vip-drift-ms, --vip-margin-ms) are the
    /// cluster's: a new cluster takes its first leader's, `ballastctl lease set` changes them,
    /// and afterwards these options are ignored. An agent uses its own only until the leader
    /// sends the cluster's with a grant.
    #[arg(long, env = "BALLAST_VIP_LEASE_MS")]
    pub(crate) vip_lease_ms: Option<u64>,

    /// How often an owner renews its VIP leases, in milliseconds [default: 100].
    #[arg(long, env = "BALLAST_VIP_RENEW_MS")]
    pub(crate) vip_renew_ms: Option<u64>,

    /// Clock-drift allowance the agent subtracts from its deadline, ms [default: 20].
    #[arg(long, env = "BALLAST_VIP_DRIFT_MS")]
    pub(crate) vip_drift_ms: Option<u64>,

    /// Gratuitous ARPs sent when acquiring a VIP [default: 5].
    #[arg(long, env = "BALLAST_GARP_COUNT")]
    pub(crate) garp_count: Option<u32>,

    /// Milliseconds between those gratuitous ARPs [default: 100].
    #[arg(long, env = "BALLAST_GARP_INTERVAL_MS")]
    pub(crate) garp_interval_ms: Option<u64>,

    /// Append every interval during which this node's VIP fence allowed an address to FILE
    /// (JSON lines on CLOCK_MONOTONIC: allowing/allowed/revoked/cleared), for checking
    /// exactly that no two nodes were allowed one VIP at once (the lab's vip workload reads
    /// it). Grows by a line or two per renewal: for tests and investigations [default: none].
    #[arg(long, value_name = "FILE", env = "BALLAST_FENCE_JOURNAL")]
    pub(crate) fence_journal: Option<PathBuf>,

    /// Address health checks connect to (the backend runs on this server) [default: 127.0.0.1].
    #[arg(long, env = "BALLAST_CHECK_HOST")]
    pub(crate) check_host: Option<std::net::IpAddr>,

    /// A command exec health checks may run, NAME=COMMAND ARGS... (repeatable). Only local
    /// configuration defines commands; the API names them. It runs with no capabilities.
    #[arg(long = "exec-check")]
    pub(crate) exec_checks: Vec<String>,

    /// Where a service's releases live on this server, SERVICE=DIR (repeatable): the agent
    /// keeps DIR/releases/<id>/ and the DIR/current symlink.
    #[arg(long = "release-dir")]
    pub(crate) release_dirs: Vec<String>,

    /// Command run after a service's `current` switched, SERVICE=COMMAND ARGS... (repeatable),
    /// with BALLAST_RELEASE and BALLAST_RELEASE_DIR set, and no capabilities. Local
    /// configuration only.
    #[arg(long = "activate-hook")]
    pub(crate) activate_hooks: Vec<String>,

    /// Time an activation hook may take, ms [default: 30000].
    #[arg(long, env = "BALLAST_HOOK_TIMEOUT_MS")]
    pub(crate) hook_timeout_ms: Option<u64>,

    /// Releases kept on disk per service (never fewer than the current and previous) [default: 5].
    #[arg(long, env = "BALLAST_KEEP_RELEASES")]
    pub(crate) keep_releases: Option<usize>,

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
    pub(crate) token_file: Option<PathBuf>,

    /// Mutual TLS: the CA certificate (PEM) that signs every member's, agent's and client's
    /// certificate. With --tls-cert and --tls-key, the gRPC port (Raft and API) speaks only
    /// TLS and refuses connections without a certificate from this CA; calls to other members
    /// use the same pair. SIGHUP reads the three files again (new connections use them, open
    /// ones carry on). `ballastctl certs init|issue` makes them [default: none, plaintext].
    #[arg(long, value_name = "FILE", env = "BALLAST_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// This node's certificate (PEM), with the IP addresses and names it is reached by as
    /// subject alternative names. A member's certificate that names it (`ballastctl certs
    /// issue NAME --member ID`) makes it check the identity in every client certificate: Raft
    /// only from members, agent calls only for the node the certificate names. An agent-only
    /// server's names its node (`--node ID`). See --tls-ca [default: none].
    #[arg(long, value_name = "FILE", env = "BALLAST_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM). See --tls-ca [default: none].
    #[arg(long, value_name = "FILE", env = "BALLAST_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Drive the local HAProxy through this runtime API socket (`stats socket PATH level
    /// admin`): its servers named n<node id> follow the cluster (ready, drain when the node
    /// drains, maint when it is in maintenance, down or unhealthy), checked every second so a
    /// reload is corrected. Needs --haproxy-backend [default: none].
    #[arg(long, env = "BALLAST_HAPROXY_SOCKET")]
    pub(crate) haproxy_socket: Option<PathBuf>,

    /// SERVICE=BACKEND: the HAProxy backend whose servers are the service's backends
    /// (repeatable).
    #[arg(long = "haproxy-backend")]
    pub(crate) haproxy_backends: Vec<String>,

    /// SEGMENT=IFACE: every VIP whose interface in the cluster (`ballastctl vip apply
    /// --interface`) is SEGMENT goes on this server's interface IFACE (repeatable). A VIP's
    /// interface names its segment, the same on every server; servers that call it `ens3` or
    /// `bond0` map it here, e.g. --segment-interface eth0=bond0. A VIP whose interface does
    /// not exist on this server is never placed on it: the agent reports it with each
    /// renewal and `ballastctl status` shows it. Local configuration only, read at start. In
    /// the TOML file: segment_interfaces = { eth0 = "bond0" } [default: none, the cluster's
    /// name].
    #[arg(long = "segment-interface", value_name = "SEGMENT=IFACE")]
    pub(crate) segment_interfaces: Vec<String>,

    /// VIP=IFACE: this VIP goes on this server's interface IFACE, whatever its segment
    /// (repeatable; wins over --segment-interface). See --segment-interface. In the TOML
    /// file: vip_interfaces = { web-vip = "ens3" } [default: none].
    #[arg(long = "vip-interface", value_name = "VIP=IFACE")]
    pub(crate) vip_interfaces: Vec<String>,
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
backend of a service (ballastctl service apply --backends) for VIPs to be placed on it.\n\n\
A VIP goes on the interface its definition names (its segment, e.g. eth0), unless this \
server calls that interface otherwise: --segment-interface eth0=bond0 (every VIP of segment \
eth0) or --vip-interface web-vip=ens3 (one VIP). A VIP whose interface this server lacks is \
never placed here; `ballastctl status` says so."
)]
pub struct AgentArgs {
    /// TOML file with any of the options below (names with underscores).
    #[arg(long, env = "BALLAST_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// This server's node id: a positive integer, unique in the cluster, not a member's.
    #[arg(long, env = "BALLAST_NODE_ID")]
    pub(crate) node_id: Option<NodeId>,

    /// gRPC endpoints of cluster members, comma separated (host:port,...).
    #[arg(long, env = "BALLAST_ENDPOINTS")]
    pub(crate) endpoints: Option<String>,

    /// How operators reach this server, host:port, shown in node lists [default: none].
    #[arg(long, env = "BALLAST_ADVERTISE")]
    pub(crate) advertise: Option<String>,

    #[command(flatten)]
    pub(crate) agent_opts: AgentOpts,

    /// Log output: text or json [default: text].
    #[arg(long, env = "BALLAST_LOG_FORMAT")]
    pub(crate) log_format: Option<String>,

    /// Log filter in tracing's EnvFilter syntax [default: info].
    #[arg(long, env = "BALLAST_LOG")]
    pub(crate) log: Option<String>,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Every flag of `ballastd`, `ballastd agent` and `ballastd restore` says what it does in
    /// `--help`.
    #[test]
    fn every_flag_has_help_text() {
        use clap::CommandFactory;
        let missing = ballast_client::cli::flags_without_help(&Cli::command(), "ballastd");
        assert!(missing.is_empty(), "flags without help: {missing:#?}");
    }

    /// A member's flags as `ballastd` parses them (for the tests of the other files).
    pub(in crate::config) fn args(v: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("ballastd").chain(v.iter().copied()))
            .unwrap()
            .member
    }
}
