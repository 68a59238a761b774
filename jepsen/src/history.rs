//! Histories: what clients did and saw, and when. The unit the checkers judge.
//!
//! An [`Op`] is one client operation from its invocation to its completion. Its outcome is
//! `Ok` (it took effect, with what it returned), `Fail` (it certainly did not take effect) or
//! `Unknown` (a timeout or a lost connection: it may have taken effect, at any time after its
//! invocation — Jepsen's `:info`). Times are nanoseconds on one monotonic clock.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::nemesis::Nemesis;

/// What a register operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterOp {
    Read,
    Write(i64),
    /// Compare-and-set: from the first value to the second.
    Cas(i64, i64),
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It took effect. For a read: the value read (None: the key did not exist). For a CAS:
    /// `Some(1)` when it swapped, `Some(0)` when the comparison failed. For a write: None.
    Ok(Option<i64>),
    /// It certainly did not take effect.
    Fail,
    /// It may or may not have taken effect.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client process (one operation at a time per process).
    pub process: u64,
    pub key: String,
    pub op: RegisterOp,
    pub outcome: Outcome,
    /// Invocation and completion (completion is ignored for an unknown outcome).
    pub call: u64,
    pub ret: u64,
}

/// A fault as it happened, for the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub nemesis: Nemesis,
    pub detail: String,
    pub start: u64,
    pub end: u64,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Line {
    /// A register operation, or (set workload) an add: a write of the element to key "set".
    Op(Op),
    Fault(Fault),
    /// The set workload's read of the whole set after healing.
    FinalRead {
        values: Vec<i64>,
        at: u64,
        /// Elements whose value read back is not the one added.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        damaged: Vec<i64>,
        /// Members not running, or not caught up within a minute of the read.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        not_rejoined: Vec<String>,
    },
    /// The vip workload: one ARP probe of a VIP from the client host and the MACs that
    /// answered it (`vip`: its address, empty for the main VIP).
    Probe {
        at: u64,
        macs: Vec<String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        vip: String,
    },
    /// The vip workload: the cluster's decision (owner, epoch) as sampled.
    Epoch {
        at: u64,
        owner: u64,
        epoch: u64,
    },
    /// The vip workload: one node's own view, sampled on its host: the VIP address on its
    /// interface, and how much longer its fence allows the VIP (None: not allowed).
    NodeView {
        at: u64,
        node: u64,
        address: bool,
        allowed_ms: Option<u64>,
    },
    /// The vip workload: when the last fault healed, and how soon the VIP must answer again.
    Healed {
        at: u64,
        bound_ms: u64,
    },
    /// The vip workload: the MAC of a node's interface (to tell who sent a frame).
    NodeMac {
        node: u64,
        mac: String,
    },
    /// The vip workload: an interval during which a node's fence allowed a VIP (`vip`: its
    /// address, empty for the main VIP), from its fence journal (exact, not sampled).
    Allowed {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        vip: String,
        #[serde(flatten)]
        allowed: crate::checker::vip::Allowed,
    },
    /// The vip workload: an ARP frame that spoke for a VIP, seen by the observer (a
    /// gratuitous ARP, or a reply).
    Frame {
        at: u64,
        mac: String,
        gratuitous: bool,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        vip: String,
    },
    /// The vip workload: the client host's neighbour entry for the VIP changed (which MAC the
    /// client sends to), as `ip monitor neigh` printed it.
    Neigh {
        at: u64,
        mac: String,
        state: String,
    },
    /// The release workload: a rollout started (`at`: when the request was sent).
    Activate {
        at: u64,
        release: String,
        outcome: crate::checker::release::Outcome,
        detail: String,
    },
    /// The release workload: `who` ("n1".. or "vip") answered with `release` (recorded when
    /// it changes, and every first answer after a failed one).
    Served {
        at: u64,
        who: String,
        release: String,
    },
    /// The release workload, after healing and settling: the cluster's active release and
    /// what each node serves.
    ReleaseFinal {
        at: u64,
        initial: String,
        active: Option<String>,
        nodes: std::collections::BTreeMap<String, Option<String>>,
    },
}

/// Writes a history as `history.jsonl` (one JSON object per line).
pub fn write_history(path: &Path, lines: &[Line]) -> Result<(), String> {
    let mut s = String::new();
    for l in lines {
        s.push_str(&serde_json::to_string(l).map_err(|e| e.to_string())?);
        s.push('\n');
    }
    std::fs::write(path, s).map_err(|e| e.to_string())
}

/// Reads a saved `history.jsonl`.
pub fn read_history(dir: &Path) -> Result<Vec<Line>, String> {
    let text = std::fs::read_to_string(dir.join("history.jsonl"))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}
