//! The Raft type configuration and the commands that travel through the log.

use std::io::Cursor;

use ballast_proto::v1;
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::model;

/// Member ids are small integers chosen by the operator (like etcd's member names).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Ballast's Raft types: commands in, results out, nodes addressed by their gRPC address.
    /// `Term` and `LeaderId` are stated rather than left to their defaults because both
    /// shape the stored bytes: with the "advanced" leader id (the one openraft 0.9 used), a
    /// log id is `{term, node_id, index}`, the layout every data directory already holds.
    pub TypeConfig:
        D = Batch,
        R = BatchResult,
        NodeId = NodeId,
        Node = BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>,
);

use openraft::type_config::alias as a;

pub type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, NodeId>;
pub type Raft = openraft::Raft<
    TypeConfig,
    crate::member::store::StateMachineStore<crate::member::store::FileEngine>,
>;
pub type LogId = a::LogIdOf<TypeConfig>;
pub type Vote = a::VoteOf<TypeConfig>;
pub type Entry = a::EntryOf<TypeConfig>;
pub type EntryPayload = a::EntryPayloadOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, BasicNode>;
pub type StoredMembership = a::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = a::SnapshotMetaOf<TypeConfig>;
/// A snapshot as openraft moves it: the encoded state in memory.
pub type SnapshotData = Cursor<Vec<u8>>;
pub type Snapshot = a::SnapshotOf<TypeConfig, SnapshotData>;
pub type StorageError = openraft::StorageError<TypeConfig>;
/// What a Raft RPC to a peer returns (`network.rs` sends them, `replicate.rs` streams appends).
pub type RpcResult<T, E = openraft::errors::Infallible> =
    Result<T, openraft::errors::RPCError<TypeConfig, openraft::errors::RaftError<TypeConfig, E>>>;

/// The log id of entry `index` written by `node_id`'s leadership in `term`.
pub fn log_id(term: u64, node_id: NodeId, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id }, index)
}

/// Deduplication key of a client write (see `RequestId` in the proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClientRequest {
    pub client_id: u64,
    pub seq: u64,
    pub acked_below: u64,
}

impl ClientRequest {
    pub fn from_proto(r: Option<&v1::RequestId>) -> Option<Self> {
        match r {
            Some(r) if r.client_id != 0 && r.seq != 0 => Some(ClientRequest {
                client_id: r.client_id,
                seq: r.seq,
                acked_below: r.acked_below,
            }),
            _ => None,
        }
    }
}

/// One entry of application data in the Raft log.
///
/// Everything that applying it needs is inside: the leader stamps its wall-clock time in
/// `now_ms`, so apply never reads a clock and every member computes the same state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub request: Option<ClientRequest>,
    pub now_ms: u64,
    pub op: Op,
}

/// One log entry of application data: the commands the leader batched together. Batching
/// many concurrent client writes into one entry is what makes one append, one replication
/// message and one fsync serve all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub commands: Vec<Command>,
}

/// openraft 0.10 logs application data with `Display`.
impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {} commands", self.commands.len())
    }
}

/// The results of a batch, one per command, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BatchResult {
    pub results: Vec<CommandResult>,
}

/// What a compare-and-set compares with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expected {
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// 0 means the key must not exist.
    ModRevision(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    CompareAndSet {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        expected: Expected,
        #[serde(with = "serde_bytes")]
        new_value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        prefix: bool,
    },
    ApplyService(model::Service),
    DeleteService(String),
    ApplyVip(model::Vip),
    DeleteVip(String),
    SetNodeAdmin {
        node_id: NodeId,
        admin: model::AdminState,
    },
    /// An agent's health transition for one backend; stamped with the leader's time.
    ReportHealth {
        node_id: NodeId,
        service: String,
        health: model::Health,
    },
    /// Operator: move `vip` to `to` (must be eligible now).
    MoveVip {
        vip: String,
        to: NodeId,
    },
    /// Controller: give `vip` to `node` at `epoch`, which must be the current epoch + 1.
    AssignVip {
        vip: String,
        node: NodeId,
        epoch: u64,
    },
    /// Controller: ask the owner at `epoch` to release (planned move).
    ReleaseVip {
        vip: String,
        epoch: u64,
    },
    /// Controller: the owner at `epoch` lost its lease and nobody takes over.
    RevokeVip {
        vip: String,
        epoch: u64,
    },
    /// Controller: the node's agent is (not) heard.
    SetNodeAlive {
        node_id: NodeId,
        alive: bool,
    },
    /// A standalone agent (a server outside the quorum) announces itself: creates or updates
    /// its node record (role agent). Refused for the id of a Raft member.
    RegisterAgent {
        node_id: NodeId,
        addr: String,
    },
    /// Operator: removes a standalone agent's node record. Refused while it owns a VIP or
    /// backs a service.
    ForgetAgent {
        node_id: NodeId,
    },
    /// Operator: registers a release of a service (see `releases.rs` for every release op).
    RegisterRelease {
        service: String,
        release: model::Release,
    },
    /// Operator: starts a rollout; `deadline_ms` counts from the command's time.
    StartRollout {
        service: String,
        release: String,
        batch: u32,
        min_healthy_ms: u32,
        deadline_ms: u64,
        canary: bool,
    },
    ControlRollout {
        service: String,
        action: model::Control,
    },
    /// Operator: every backend back to `to` (empty: the previous release).
    Rollback {
        service: String,
        to: String,
    },
    /// Agent: the release the node runs for the service, or its failure to activate one.
    ReportRelease {
        node_id: NodeId,
        service: String,
        applied: String,
        failed_release: String,
        error: String,
    },
    /// Controller: the next step of a service's rollout.
    StepRollout {
        service: String,
        step: model::Step,
    },
    /// A new cluster takes the state of a backup (`backup::BackupState`, encoded), VIPs free
    /// at once: as logs written until November 2026 hold it, applied as then. Never proposed
    /// now (see `RestoreHeld`).
    Restore {
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Operator, or a leader that finds none (`if_unset`): the cluster's VIP lease settings.
    SetLease {
        settings: crate::lease::LeaseSettings,
        if_unset: bool,
    },
    /// Leader: every grant made under a longer setting is over, so a new leader need wait
    /// only `settings`' span. Refused unless the lease settings are still at `generation`.
    SettleLease {
        settings: crate::lease::LeaseSettings,
        generation: u64,
    },
    /// Leader: the node's leases go to this agent process from now on.
    BindAgent {
        node_id: NodeId,
        instance: u64,
    },
    /// Leader: the retired address of `vip` (held at `epoch`) is free: its owner confirmed it
    /// stopped answering, or its lease ran out.
    ClearRetired {
        vip: String,
        epoch: u64,
    },
    /// A decision the leader of `term` took from what it observed in that term (its lease
    /// book): applied only from an entry of that same term, refused from any other. A
    /// decision proposed after its member lost and won back the leadership would otherwise
    /// take effect in a term whose leader never knew of it (and may have granted the very
    /// lease it ends). Every decision of the leader's loops is proposed this way; never
    /// forwarded.
    Decided {
        term: u64,
        op: Box<Op>,
    },
    /// A new cluster takes the state of a backup, its VIPs held back until the old cluster's
    /// leases are over (`StateData::restore`). Refused by a cluster that holds KV data,
    /// services or VIPs, or still waits out a deleted VIP's lease.
    RestoreHeld {
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
}

impl Op {
    /// The operations only the leader's own loops propose, on the leader, from its lease book
    /// and controller (never forwarded, never from a client): their name, for the refusal
    /// of one that arrives through the Raft service's `Propose`.
    /// (Their bare forms still apply from logs written before `Decided` existed.)
    pub fn leader_only(&self) -> Option<&'static str> {
        Some(match self {
            Op::AssignVip { .. } => "AssignVip",
            Op::ReleaseVip { .. } => "ReleaseVip",
            Op::RevokeVip { .. } => "RevokeVip",
            Op::SetNodeAlive { .. } => "SetNodeAlive",
            Op::StepRollout { .. } => "StepRollout",
            Op::SettleLease { .. } => "SettleLease",
            Op::ClearRetired { .. } => "ClearRetired",
            Op::BindAgent { .. } => "BindAgent",
            Op::SetLease { if_unset: true, .. } => "SetLease with if_unset",
            Op::Decided { .. } => "a leader's decision",
            _ => return None,
        })
    }
}

/// The IP of a VIP's "address/prefix": one IP under two prefix lengths is one address on the
/// network, so VIPs are told apart by it.
pub fn vip_ip(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The cluster revision after this entry was applied.
    pub revision: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Blank and membership entries.
    None,
    Put {
        prev: Option<model::KeyValue>,
    },
    CompareAndSet {
        succeeded: bool,
        kv: Option<model::KeyValue>,
    },
    Delete {
        deleted: u64,
    },
    /// A cluster-state write took effect.
    StateWritten,
    /// Refused by the state it met; nothing changed. `field` names the offending input.
    Rejected {
        field: String,
        message: String,
    },
    /// A retry of a write whose result the cluster no longer remembers (older than the
    /// client's acknowledged watermark): it was applied once already, or never will be.
    StaleRetry,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encodings written before byte strings were marked `serde_bytes`: plain `Vec<u8>`.
    #[derive(Serialize)]
    enum PlainOp {
        Put {
            key: Vec<u8>,
            value: Vec<u8>,
        },
        CompareAndSet {
            key: Vec<u8>,
            expected: PlainExpected,
            new_value: Vec<u8>,
        },
        Delete {
            key: Vec<u8>,
            prefix: bool,
        },
    }
    #[derive(Serialize)]
    enum PlainExpected {
        Value(Vec<u8>),
    }

    #[test]
    fn byte_strings_encode_as_they_always_did() {
        let (k, v) = (b"key".to_vec(), vec![7u8; 1000]);
        fn enc<T: Serialize>(v: &T) -> Vec<u8> {
            bincode::serialize(v).unwrap()
        }
        let same = |new: Vec<u8>, old: Vec<u8>| assert_eq!(new, old);
        same(
            enc(&Op::Put {
                key: k.clone(),
                value: v.clone(),
            }),
            enc(&PlainOp::Put {
                key: k.clone(),
                value: v.clone(),
            }),
        );
        same(
            enc(&Op::CompareAndSet {
                key: k.clone(),
                expected: Expected::Value(v.clone()),
                new_value: v.clone(),
            }),
            enc(&PlainOp::CompareAndSet {
                key: k.clone(),
                expected: PlainExpected::Value(v.clone()),
                new_value: v.clone(),
            }),
        );
        same(
            enc(&Op::Delete {
                key: k.clone(),
                prefix: true,
            }),
            enc(&PlainOp::Delete {
                key: k.clone(),
                prefix: true,
            }),
        );
        // Restore is variant 22: its tag, then the payload.
        same(
            enc(&Op::Restore { payload: v.clone() }),
            enc(&(22u32, v.clone())),
        );
        let e = crate::model::KvEntry {
            value: v.clone(),
            create_revision: 1,
            mod_revision: 2,
            version: 3,
        };
        same(enc(&e), enc(&(v.clone(), 1u64, 2u64, 3u64)));
        let kv = e.to_proto(&k);
        same(enc(&kv), enc(&(k.clone(), v.clone(), 1u64, 2u64, 3u64)));
    }
}
