//! The fence journal (`--fence-journal FILE`): every interval during which this node's fence
//! allowed a VIP address, on CLOCK_MONOTONIC (which all network namespaces of one machine
//! share), so that the lab can check exactly, not by sampling, that no two nodes were ever
//! allowed the same address at once.
//!
//! One JSON object per line, appended with one `write` each (no fsync: the lab kills
//! processes, not the machine):
//! - `{"op":"allowing","node":N,"addr":A,"seq":S,"from_ns":T,"timeout_ms":M,"budget_ms":B}`
//!   before the transaction is given to nft (the kernel cannot commit it earlier);
//! - `{"op":"allowed","node":N,"addr":A,"seq":S,"until_ns":T}` once nft returned: the kernel
//!   committed by then, so the allowance ends by `until_ns` (plus the kernel's tick, see
//!   `fence::KERNEL_TICK`);
//! - `{"op":"revoked","node":N,"addr":A,"at_ns":T}` once a revocation was committed;
//! - `{"op":"cleared","node":N,"at_ns":T}` once the tables were replaced or removed.
//!
//! Every allowance ends by `from_ns` + `budget_ms` + `timeout_ms` (the deadline it was computed
//! for): nft's watchdog kills it `budget_ms` after it started, so it commits by then whatever
//! happens to the agent (killed, or stopped before it wrote the `allowed` line). The `allowed`
//! line only tightens that bound when nft returned early.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::types::NodeId;

/// CLOCK_MONOTONIC in nanoseconds.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An append-only record of the fence's allowances.
pub struct Journal {
    node: NodeId,
    file: Mutex<File>,
    seq: AtomicU64,
}

impl Journal {
    pub fn open(path: &Path, node: NodeId) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Journal {
            node,
            file: Mutex::new(file),
            // Unique across restarts of the same node into the same file.
            seq: AtomicU64::new(mono_ns()),
        })
    }

    fn line(&self, v: serde_json::Value) {
        let mut text = v.to_string();
        text.push('\n');
        if let Err(e) = self.file.lock().unwrap().write_all(text.as_bytes()) {
            tracing::error!(error = %e, "writing the fence journal");
        }
    }

    /// Before an allowance of `timeout_ms` is handed to the kernel, which must commit it
    /// within `budget_ms`; returns its sequence.
    pub fn allowing(&self, addr: IpAddr, from_ns: u64, timeout_ms: u64, budget_ms: u64) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.line(serde_json::json!({
            "op": "allowing", "node": self.node, "addr": addr.to_string(), "seq": seq,
            "from_ns": from_ns, "timeout_ms": timeout_ms, "budget_ms": budget_ms,
        }));
        seq
    }

    /// The allowance `seq` was committed by `done_ns`.
    pub fn allowed(&self, addr: IpAddr, seq: u64, done_ns: u64, timeout_ms: u64) {
        self.line(serde_json::json!({
            "op": "allowed", "node": self.node, "addr": addr.to_string(), "seq": seq,
            "until_ns": done_ns + timeout_ms * 1_000_000,
        }));
    }

    pub fn revoked(&self, addr: IpAddr, at_ns: u64) {
        self.line(serde_json::json!({
            "op": "revoked", "node": self.node, "addr": addr.to_string(), "at_ns": at_ns,
        }));
    }

    pub fn cleared(&self, at_ns: u64) {
        self.line(serde_json::json!({ "op": "cleared", "node": self.node, "at_ns": at_ns }));
    }
}
