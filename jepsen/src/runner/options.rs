//! What a run is asked to do: its workload, nemeses, cluster size, length, seed, where it is
//! stored and how long its check may take. Only the description: running it is `mod.rs`'s.

use std::path::PathBuf;
use std::time::Duration;

use crate::nemesis::Nemesis;

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The VIP of three `ballastd --agent`, probed by ARP every 10 ms from the client host,
    /// its decisions sampled; no two hosts may ever answer, epochs never go backwards, and it
    /// answers again within 5 s of healing.
    Vip,
    /// Reads, writes and compare-and-sets on a few keys; linearizability per key.
    Register,
    /// Unique adds (each a key under "set/"), one read of everything after healing; every
    /// acknowledged add present, nothing never attempted present.
    Set,
    /// Rollouts started under faults (some of a broken release that must roll back) while
    /// every node's service and the VIP are requested; no node ever serves a release never
    /// activated, and after healing every node serves the cluster's active release.
    Release,
}

impl Workload {
    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Vip => "vip",
            Workload::Release => "release",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub nemeses: Vec<Nemesis>,
    pub time_limit: Duration,
    pub seed: u64,
    pub clients: usize,
    pub keys: usize,
    /// Where runs are stored (`store/register/<timestamp>/`).
    pub store: PathBuf,
    /// Members speak mutual TLS (register and set workloads): a CA and certificates are made
    /// for the run, clients use a client certificate.
    pub tls: bool,
    /// Time the linearizability search may take over a whole register history before the
    /// verdict is "unknown".
    pub check_budget: Duration,
    /// The members' `--read-policy` (register and set workloads); None: their default.
    pub read_policy: Option<String>,
    /// The vip workload's VIPs are IPv6 (on the lab's fd0a:d500::/64), observed with
    /// neighbour solicitations.
    pub ipv6: bool,
}

/// The default of [`Options::check_budget`]: enough for a release build on minutes of
/// history; a debug build on a long run may need more (`jepsen check --budget`).
pub const DEFAULT_CHECK_BUDGET: Duration = Duration::from_secs(60);
