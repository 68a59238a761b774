//! The member wing: what every Raft member does, leader or not.
//!
//! - `state`: the replicated state machine, a pure function of the log, split by domain
//!   (KV, nodes, services, VIPs, leases, releases, restore);
//! - `store`: openraft's log and state-machine storage over our engines (sled, memory);
//! - `format`: the versioned encodings of snapshots and log entries;
//! - `network`, `replicate`, `pipeline`, `lane`: openraft's network over tonic, the
//!   replication stream's byte budget, pipelined appends, and the stream kept per follower
//!   for heartbeats;
//! - `proposer`: batches concurrent commands into log entries and bounds a write's wait;
//! - `backup`: backups, restores through the log, `--force-new-cluster`;
//! - `identity`: the (node id, cluster id) a data directory belongs to.
//!
//! Nothing here decides placement or leases (that is `leader/`) or touches a server's
//! interfaces (that is `agent/`).

pub mod backup;
pub mod format;
pub(crate) mod identity;
mod lane;
pub mod network;
pub(crate) mod pipeline;
pub(crate) mod proposer;
pub(crate) mod replicate;
pub mod state;
pub mod store;
