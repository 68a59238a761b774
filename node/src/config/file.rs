//! The TOML file layer: the keys a member's file (`FileConfig`) and `ballastd agent`'s
//! (`AgentFileConfig`) may hold, unknown keys refused, and the agent's keys both share, moved
//! out of either (`agent_keys!`). It reads the file and nothing else: what wins over it, and
//! the defaults, are `mod.rs` and `agent.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::types::NodeId;

/// A member's options (`Args`) as read from its TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) node_id: Option<NodeId>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) listen: Option<SocketAddr>,
    pub(super) advertise: Option<String>,
    pub(super) http_listen: Option<String>,
    pub(super) initial_cluster: Option<String>,
    pub(super) cluster_name: Option<String>,
    pub(super) join: Option<String>,
    pub(super) bootstrap: Option<bool>,
    pub(super) heartbeat_ms: Option<u64>,
    pub(super) read_policy: Option<String>,
    pub(super) election_timeout_min_ms: Option<u64>,
    pub(super) election_timeout_max_ms: Option<u64>,
    pub(super) snapshot_logs: Option<u64>,
    pub(super) keep_logs: Option<u64>,
    pub(super) log_format: Option<String>,
    pub(super) log: Option<String>,
    pub(super) addr_file: Option<PathBuf>,
    pub(super) agent: Option<bool>,
    pub(super) vip_lease_ms: Option<u64>,
    pub(super) vip_renew_ms: Option<u64>,
    pub(super) vip_drift_ms: Option<u64>,
    pub(super) vip_margin_ms: Option<u64>,
    pub(super) garp_count: Option<u32>,
    pub(super) garp_interval_ms: Option<u64>,
    pub(super) fence_journal: Option<PathBuf>,
    pub(super) node_down_after_ms: Option<u64>,
    pub(super) check_host: Option<std::net::IpAddr>,
    pub(super) exec_checks: Option<BTreeMap<String, Vec<String>>>,
    pub(super) release_dirs: Option<BTreeMap<String, PathBuf>>,
    pub(super) activate_hooks: Option<BTreeMap<String, Vec<String>>>,
    pub(super) hook_timeout_ms: Option<u64>,
    pub(super) keep_releases: Option<usize>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) tls_ca: Option<PathBuf>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) haproxy_socket: Option<PathBuf>,
    pub(super) haproxy_backends: Option<Vec<String>>,
    pub(super) vip_interfaces: Option<BTreeMap<String, String>>,
    pub(super) segment_interfaces: Option<BTreeMap<String, String>>,
}

/// The same options of `ballastd agent` as read from its TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentFileConfig {
    pub(super) node_id: Option<NodeId>,
    pub(super) endpoints: Option<Vec<String>>,
    pub(super) advertise: Option<String>,
    pub(super) vip_lease_ms: Option<u64>,
    pub(super) vip_renew_ms: Option<u64>,
    pub(super) vip_drift_ms: Option<u64>,
    pub(super) garp_count: Option<u32>,
    pub(super) garp_interval_ms: Option<u64>,
    pub(super) fence_journal: Option<PathBuf>,
    pub(super) check_host: Option<std::net::IpAddr>,
    pub(super) exec_checks: Option<BTreeMap<String, Vec<String>>>,
    pub(super) release_dirs: Option<BTreeMap<String, PathBuf>>,
    pub(super) activate_hooks: Option<BTreeMap<String, Vec<String>>>,
    pub(super) hook_timeout_ms: Option<u64>,
    pub(super) keep_releases: Option<usize>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) tls_ca: Option<PathBuf>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) haproxy_socket: Option<PathBuf>,
    pub(super) haproxy_backends: Option<Vec<String>>,
    pub(super) vip_interfaces: Option<BTreeMap<String, String>>,
    pub(super) segment_interfaces: Option<BTreeMap<String, String>>,
    pub(super) log_format: Option<String>,
    pub(super) log: Option<String>,
}

/// The agent's keys of a configuration file: the same in a member's file and in
/// `ballastd agent`'s.
pub(super) struct AgentFileKeys {
    pub(super) vip_lease_ms: Option<u64>,
    pub(super) vip_renew_ms: Option<u64>,
    pub(super) vip_drift_ms: Option<u64>,
    pub(super) garp_count: Option<u32>,
    pub(super) garp_interval_ms: Option<u64>,
    pub(super) fence_journal: Option<PathBuf>,
    pub(super) check_host: Option<std::net::IpAddr>,
    pub(super) exec_checks: Option<BTreeMap<String, Vec<String>>>,
    pub(super) release_dirs: Option<BTreeMap<String, PathBuf>>,
    pub(super) activate_hooks: Option<BTreeMap<String, Vec<String>>>,
    pub(super) hook_timeout_ms: Option<u64>,
    pub(super) keep_releases: Option<usize>,
    pub(super) haproxy_socket: Option<PathBuf>,
    pub(super) haproxy_backends: Option<Vec<String>>,
    pub(super) vip_interfaces: Option<BTreeMap<String, String>>,
    pub(super) segment_interfaces: Option<BTreeMap<String, String>>,
}

/// The agent's keys of a configuration file (a member's or `ballastd agent`'s: both have
/// them, under the same names), moved out of it.
macro_rules! agent_keys {
    ($file:expr) => {
        $crate::config::file::AgentFileKeys {
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
            vip_interfaces: $file.vip_interfaces,
            segment_interfaces: $file.segment_interfaces,
        }
    };
}
pub(super) use agent_keys;

/// Reads and parses the TOML file at `path`.
pub(super) fn read_toml<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<T, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str::<T>(&text).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::config::cli::tests::args;
    use crate::config::{Config, ConfigError};

    #[test]
    fn unknown_file_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "node_id = 3\nheartbeat = 70\n").unwrap();
        let e = Config::load(args(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(matches!(e, ConfigError::File { .. }), "{e}");
    }
}
