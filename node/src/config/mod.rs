//! `ballastd` configuration: flags beat environment, which beats the TOML file, which beats
//! the defaults. `Config::validate` refuses combinations that cannot work.
//!
//! This file holds the resolved configuration of a member (`Config`), its merge (`load`) and
//! what the member derives from it (the initial cluster id, openraft's settings). Beside it:
//! `cli.rs`, the command lines; `file.rs`, the TOML file; `agent.rs`, the agent's settings and
//! `ballastd agent`'s configuration; `check.rs`, `ConfigError` and the checks. Nothing here
//! reads the data directory.

mod agent;
mod check;
mod cli;
mod file;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::types::NodeId;

pub use agent::AgentOnlyConfig;
use agent::{tls_files, AgentSettings};
pub use check::ConfigError;
pub use cli::{AgentArgs, Args, Cli, Run};
use file::{agent_keys, read_toml, FileConfig};

/// How the log is written: text or JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the leader confirms, for a linearizable read, that it still leads (`--read-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReadPolicy {
    /// A quorum acknowledges a heartbeat sent after the read arrived. Needs no assumption
    /// about clocks.
    ReadIndex,
    /// No round trip while a quorum acknowledged the leader within the last nine tenths of
    /// the election timeout's upper bound: followers refuse votes for that long after each
    /// heartbeat. Assumes that the members' monotonic clocks run at the same rate (within a
    /// tenth) and do not stop while a process goes on running (a frozen or suspended virtual
    /// machine); see the README's "Assumptions".
    Lease,
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
    /// How linearizable reads that do not ask for one are confirmed.
    pub read_policy: ReadPolicy,
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
    /// Where VIPs go on this server (`--vip-interface`, `--segment-interface`).
    pub interfaces: crate::agent::interfaces::InterfaceMap,
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
            read_policy: ReadPolicy::ReadIndex,
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
            interfaces: Default::default(),
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
        // Raft timing: each bound left to its default follows the ones given (election at
        // least twice the heartbeat, its range at least the lower bound wide), so pinning part
        // of the timing (a slower heartbeat, say) keeps a valid whole.
        let heartbeat_ms = args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(50);
        let election_timeout_min_ms = args
            .election_timeout_min_ms
            .or(file.election_timeout_min_ms)
            .unwrap_or((2 * heartbeat_ms).max(100));
        let election_timeout_max_ms = args
            .election_timeout_max_ms
            .or(file.election_timeout_max_ms)
            .unwrap_or((2 * election_timeout_min_ms).max(200));
        let agent = AgentSettings::resolve(
            &args.agent_opts,
            agent_keys!(file),
            args.vip_margin_ms.or(file.vip_margin_ms),
            Some(Duration::from_millis(election_timeout_max_ms)),
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
            heartbeat_ms,
            read_policy: parse_read_policy(args.read_policy.or(file.read_policy))?,
            election_timeout_min_ms,
            election_timeout_max_ms,
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
            // At least twice the lease (a lease lengthened for slow elections lengthens it).
            node_down_after_ms: args
                .node_down_after_ms
                .or(file.node_down_after_ms)
                .unwrap_or((2 * agent.lease.lease.as_millis() as u64).max(2000)),
            check_host: agent.check_host,
            exec_checks: agent.exec_checks,
            release_sites: agent.release_sites,
            haproxy: agent.haproxy,
            interfaces: agent.interfaces,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The cluster id a new cluster formed from this configuration gets: the same on every
    /// initial member, different for another name or member list.
    pub(crate) fn initial_cluster_id(&self) -> String {
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

    pub(crate) fn raft_config(&self) -> openraft::Config {
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
            // A restarted member whose stored vote says it led must win a new election
            // before it leads again: openraft 0.9 restored it as leader at once, with a read
            // index from a committed index that may be behind what it acknowledged before
            // the crash (tests/binaries.rs). The new term's blank entry covers all of it.
            enable_leader_restore: Some(false),
            // A member whose election timer fired first asks whether a quorum would vote for
            // it (the PreVote RPC) and raises its term only then: one cut off from the others
            // does not come back with a higher term that deposes a healthy leader.
            enable_pre_vote: Some(true),
            // No election of its own in a member's first election timeout: `start.rs` turns
            // elections on then (see `Node::votes_open`).
            enable_elect: false,
            ..Default::default()
        }
    }

    pub(crate) fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_min_ms.max(500))
    }
}

fn parse_initial_cluster(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
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

fn parse_read_policy(v: Option<String>) -> Result<ReadPolicy, ConfigError> {
    match v.as_deref() {
        None | Some("read-index") => Ok(ReadPolicy::ReadIndex),
        Some("lease") => Ok(ReadPolicy::Lease),
        Some(other) => Err(ConfigError::Invalid {
            field: "read-policy".into(),
            message: format!("read-index or lease, not {other:?}"),
        }),
    }
}

fn parse_log_format(v: Option<String>) -> Result<LogFormat, ConfigError> {
    match v.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError::BadLogFormat(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::tests::args;

    #[test]
    fn read_policy_is_read_index_unless_lease_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let c = Config::load(args(&["--node-id", "1", "--data-dir", d])).unwrap();
        assert_eq!(c.read_policy, ReadPolicy::ReadIndex);
        let c = Config::load(args(&[
            "--node-id",
            "1",
            "--data-dir",
            d,
            "--read-policy",
            "lease",
        ]))
        .unwrap();
        assert_eq!(c.read_policy, ReadPolicy::Lease);
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "node_id = 1\nread_policy = \"lease\"\n").unwrap();
        let c = Config::load(args(&["--config", path.to_str().unwrap(), "--data-dir", d])).unwrap();
        assert_eq!(c.read_policy, ReadPolicy::Lease);
        std::fs::write(&path, "node_id = 1\nread_policy = \"fast\"\n").unwrap();
        let e = Config::load(args(&["--config", path.to_str().unwrap(), "--data-dir", d]));
        assert!(e.unwrap_err().to_string().contains("read-index or lease"));
        let cli = <crate::config::cli::Cli as clap::Parser>::try_parse_from([
            "ballastd",
            "--read-policy",
            "fast",
        ]);
        assert!(cli.is_err());
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

    /// Pinning part of the timing (a slower heartbeat, a longer renew interval) leaves the
    /// defaults of the rest consistent with it, and the fast setting of issue 14 is valid.
    #[test]
    fn defaults_follow_the_timing_that_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let load = |extra: &[&str]| {
            let mut a = vec!["--node-id", "1", "--data-dir", d];
            a.extend_from_slice(extra);
            Config::load(args(&a))
        };
        let c = load(&[]).unwrap();
        assert_eq!(
            (
                c.heartbeat_ms,
                c.election_timeout_min_ms,
                c.election_timeout_max_ms
            ),
            (50, 100, 200)
        );
        assert_eq!(c.lease, crate::lease::LeaseConfig::default());
        let c = load(&["--heartbeat-ms", "100"]).unwrap();
        assert_eq!(
            (c.election_timeout_min_ms, c.election_timeout_max_ms),
            (200, 400)
        );
        assert!(c.lease.lease > Duration::from_millis(800), "{:?}", c.lease);
        let c = load(&["--election-timeout-min-ms", "200"]).unwrap();
        assert_eq!(c.election_timeout_max_ms, 400);
        let c = load(&["--election-timeout-max-ms", "400"]).unwrap();
        assert_eq!(c.election_timeout_min_ms, 100);
        let c = load(&["--vip-renew-ms", "300"]).unwrap();
        assert_eq!(c.lease.renew_interval, Duration::from_millis(300));
        // A lease that is given is checked, not lengthened.
        let e = load(&["--election-timeout-max-ms", "400", "--vip-lease-ms", "800"]);
        assert!(e.unwrap_err().to_string().contains("leader"));
        // The fast setting (README, "Failover in half a second").
        let c = load(&[
            "--heartbeat-ms=25",
            "--election-timeout-min-ms=50",
            "--election-timeout-max-ms=100",
            "--vip-lease-ms=450",
            "--vip-drift-ms=10",
            "--vip-margin-ms=40",
        ])
        .unwrap();
        assert_eq!(c.lease, crate::lease::LeaseConfig::fast());
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
