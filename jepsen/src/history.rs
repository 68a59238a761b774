//! Histories: what clients did and saw, and when. The unit the checkers judge.
//!
//! An [`Op`] is one client operation from its invocation to its completion. Its outcome is
//! `Ok` (it took effect, with what it returned), `Fail` (it certainly did not take effect) or
//! `Unknown` (a timeout or a lost connection: it may have taken effect, at any time after its
//! invocation — Jepsen's `:info`). Times are nanoseconds on one monotonic clock.

use serde::{Deserialize, Serialize};

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
