//! Ballast's own stored types: what the replicated commands, the state, snapshots and backups
//! hold, apart from the wire types of `ballast_proto::v1`. The API converts at its edge
//! (`wire.rs`), so the proto may grow the way `proto/README.md` allows without touching
//! anything on disk; and a change here is a change of a stored format.
//!
//! These types are encoded with bincode, which writes fields in declaration order and no
//! names: their layout is the format. Today's layout is the one format 0 and 1 snapshots,
//! backups of payload format 1 and 2 and every log entry were written with (when these
//! types were still the generated v1 ones, whose field order they keep: a oneof comes last).
//! So: **never change a type here in place.** To store something new, add a version (see
//! `format.rs`, `backup.rs`): freeze the old layout under a new name beside its decoder, then
//! change the type, and add a fixture written by the new code (`tests/fixtures/`).
//!
//! Enumerations are stored as the i32 of their variant (as the wire types did); a number
//! this code does not know reads as the first variant (unknown / unspecified).
//!
//! Does not: validate (that is `validate.rs`, on the wire types, before a command is made);
//! know about Raft or IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod backup;
pub mod wire;

/// An enumeration stored as an i32, with every variant's number fixed here.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $first:ident = 0, $($variant:ident = $n:literal),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(from = "i32", into = "i32")]
        pub enum $name {
            #[default]
            $first = 0,
            $($variant = $n),*
        }

        impl From<i32> for $name {
            fn from(n: i32) -> Self {
                match n {
                    $($n => $name::$variant,)*
                    _ => $name::$first,
                }
            }
        }

        impl From<$name> for i32 {
            fn from(v: $name) -> i32 {
                v as i32
            }
        }
    };
}

stored_enum!(
    /// A node's place in the cluster.
    Role { Unspecified = 0, Voter = 1, Learner = 2, Agent = 3 }
);
stored_enum!(
    /// What an operator allows a node to do.
    AdminState { Unspecified = 0, Active = 1, Draining = 2, Maintenance = 3 }
);
stored_enum!(
    /// A backend's health as its agent last reported it.
    Health { Unknown = 0, Healthy = 1, Unhealthy = 2 }
);
stored_enum!(
    ReleaseStatus { Unspecified = 0, Registered = 1, RollingOut = 2, Active = 3, Retired = 4, Failed = 5 }
);
stored_enum!(
    RolloutState { Unspecified = 0, Running = 1, Paused = 2, Succeeded = 3, RollingBack = 4, RolledBack = 5, Aborted = 6 }
);
stored_enum!(
    /// What a KV event did to its key.
    KvEventKind { Put = 0, Delete = 1 }
);

/// A server the cluster knows: a Raft member or a standalone agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Node {
    pub id: u64,
    pub addr: String,
    pub role: Role,
    pub admin: AdminState,
    /// Whether the node's agent is alive, as judged by the leader.
    pub alive: bool,
    /// Leader's wall-clock time (ms since epoch) of the agent's last report.
    pub last_seen_ms: u64,
    /// What the agent reports it has applied.
    pub vips_held: Vec<String>,
    pub releases_active: BTreeMap<String, String>,
}

/// How agents probe a service's backends.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthCheck {
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub rise: u32,
    pub fall: u32,
    pub kind: Option<CheckKind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CheckKind {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Exec(ExecCheck),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HttpCheck {
    pub port: u32,
    pub path: String,
    pub expect_status_min: u32,
    pub expect_status_max: u32,
    pub body_contains: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TcpCheck {
    pub port: u32,
}

/// Names a command of the agent's local configuration; never a command line.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecCheck {
    pub name: String,
}

/// A node that runs a service, with what its agent reported.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Backend {
    pub node_id: u64,
    pub health: Health,
    /// Leader's wall clock (ms) of the last health transition.
    pub changed_ms: u64,
    /// The release the agent reports running (empty: none yet), and since when.
    pub applied_release: String,
    pub applied_ms: u64,
    /// The agent's last failure to activate a release (empty: none).
    pub apply_error: String,
    pub release_failed: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Release {
    pub id: String,
    pub artifact: String,
    pub sha256: String,
    pub registered_ms: u64,
    pub status: ReleaseStatus,
    pub failure: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Rollout {
    pub release: String,
    /// The last good release: the rollback target (empty: none before).
    pub from_release: String,
    pub batch: u32,
    pub min_healthy_ms: u32,
    /// Leader's wall clock (ms) by which the rollout must be done, else it rolls back.
    pub deadline_ms: u64,
    pub canary: bool,
    pub state: RolloutState,
    /// Node -> the release it must run now: what agents obey.
    pub desired: BTreeMap<u64, String>,
    pub message: String,
    pub started_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub check: Option<HealthCheck>,
    pub backends: BTreeMap<u64, Backend>,
    pub active_release: String,
    /// Registered releases, oldest first.
    pub releases: Vec<Release>,
    pub previous_release: String,
    /// The rollout in progress, or the last one.
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Placement {
    pub preempt: bool,
    pub preempt_delay_ms: u32,
    /// Node id -> priority (higher wins; absent means 0).
    pub priorities: BTreeMap<u64, i32>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Vip {
    pub name: String,
    /// IPv4 address with prefix length.
    pub address: String,
    pub interface: String,
    pub service: String,
    pub placement: Option<Placement>,
    /// The controller's: current owner (0 = none) and fencing epoch.
    pub owner: u64,
    pub epoch: u64,
    /// A planned move is under way: the owner must let go first.
    pub releasing: bool,
    /// An operator asked to move the VIP here (0: none pending).
    pub move_to: u64,
}

/// A key with its value and revisions, as a watch event carries it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

/// The events of one revision, as the watch history keeps them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Changes {
    pub revision: u64,
    pub events: Vec<Event>,
}

/// One change (stored wrapped, as the wire type was).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Event {
    pub event: Option<EventKind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    Kv(KvEvent),
    State(StateEvent),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KvEvent {
    pub kind: KvEventKind,
    /// For a delete: the key with `mod_revision` the deleting revision and no value.
    pub kv: Option<KeyValue>,
}

/// A node, service, VIP (or the cluster's lease settings, or a backup) changed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StateEvent {
    pub kind: String,
    pub name: String,
    pub deleted: bool,
}

/// A stored key and its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
}

impl KvEntry {
    /// As the API shows it.
    pub fn to_proto(&self, key: &[u8]) -> ballast_proto::v1::KeyValue {
        self.to_stored(key).into()
    }

    /// As a stored event carries it.
    pub fn to_stored(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// An address a VIP no longer has, while its last owner may still hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredVip {
    pub address: String,
    pub interface: String,
    pub owner: u64,
    pub epoch: u64,
    /// The VIP itself was deleted (rather than changed).
    pub deleted: bool,
}

impl RetiredVip {
    /// As the API shows it: the retired address of VIP `name`.
    pub fn to_proto(&self, name: &str) -> ballast_proto::v1::RetiredVip {
        ballast_proto::v1::RetiredVip {
            vip: name.to_string(),
            address: self.address.clone(),
            interface: self.interface.clone(),
            owner: self.owner,
            epoch: self.epoch,
            deleted: self.deleted,
        }
    }
}

/// Operator control of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    Pause,
    Resume,
    Abort,
}

/// How a controller step ends a rollout, if it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finish {
    /// Every backend runs the release: it becomes the active one.
    Succeeded,
    /// Every backend is back on `from_release`: the release is marked failed.
    RolledBack,
}

/// A controller decision for one service's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The rollout as the controller read it; the step applies only if it is unchanged.
    pub expected: Rollout,
    pub next: Rollout,
    pub finish: Option<Finish>,
}
