//! What cannot work, found before anything starts: `ConfigError`, and the checks of a
//! member's resolved configuration (timing that fits together, one way of forming or joining
//! a cluster, `--force-new-cluster` and `--restore-from` only where they make sense, this
//! member in `--initial-cluster` at its advertised address) and of `ballastd agent`'s. It
//! checks resolved values only: merging them is `mod.rs` and `agent.rs`, and nothing here
//! reads the data directory.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{AgentOnlyConfig, Config};
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

impl Config {
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
}

impl AgentOnlyConfig {
    /// Refuses what `ballastd agent` cannot run with.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
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
}

/// Checks shared by the member's embedded agent and the standalone one.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cli::tests::args;
    use crate::config::parse_initial_cluster;

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
    fn slow_elections_need_longer_leases() {
        let etcd_like = [
            "--node-id",
            "1",
            "--heartbeat-ms",
            "100",
            "--election-timeout-min-ms",
            "500",
            "--election-timeout-max-ms",
            "1000",
        ];
        // etcd's timings and no lease given: the default lease outlasts their elections
        // (2 x 1,000 + 100 + drift 20 + renew 100 + 40), and a node is counted down later.
        let c = Config::load(args(&etcd_like)).unwrap();
        assert_eq!(c.lease.lease, std::time::Duration::from_millis(2_260));
        assert_eq!(c.node_down_after_ms, 4_520);
        // With the lease of before: a leader election would drop every VIP.
        let mut short = etcd_like.to_vec();
        short.extend(["--vip-lease-ms", "800"]);
        let e = Config::load(args(&short)).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, message } if field == "vip-lease" && message.contains("leader election")),
            "{e}"
        );
        Config::load(args(&["--node-id", "1"])).expect("the defaults are consistent");
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
}
