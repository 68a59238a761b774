//! The faults a chaos run injects (partitions, kills, pauses, packet loss, power cuts, ...),
//! by name, as the history records them. Injecting and healing them is the runner's
//! (`runner/faults.rs`, and `runner/power.rs` for the power cuts).

use serde::{Deserialize, Serialize};

/// The faults the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// Random halves cannot talk to each other.
    PartitionHalves,
    /// One random node is cut off from the others.
    IsolateOne,
    /// The leader is cut off from the others.
    IsolateLeader,
    /// SIGKILL of one random node, restarted when the fault ends.
    KillOne,
    /// SIGSTOP of the leader, SIGCONT when the fault ends.
    PauseLeader,
    /// One node stops hearing another (the other still hears it).
    OneWay,
    /// Nodes in a random ring, each hearing only its two neighbours (a majority each with 5).
    Ring,
    /// Two halves that cannot talk, and one node that talks to both.
    Bridge,
    /// 20% of the packets between nodes dropped, every direction.
    Loss,
    /// SIGKILL of a minority, restarted when the fault ends.
    KillMinority,
    /// SIGKILL of every node, all restarted when the fault ends.
    KillAll,
    /// The VIP's owner is cut off from the other nodes (a random node without a VIP).
    IsolateOwner,
    /// SIGSTOP of the VIP's owner, SIGCONT when the fault ends (a random node without a VIP).
    PauseOwner,
    /// The VIP's owner cut off again and again, each time for about a lease (lease ± 100 ms)
    /// with short gaps: its renewals and the leader's decision to move the VIP race.
    FlapOwner,
    /// SIGSTOP of the VIP's owner again and again, each for about a lease (lease ± 100 ms):
    /// it wakes up just around the moment the leader gives the VIP away.
    PauseOwnerLease,
    /// Power cut of one random node: SIGKILL, and its data directory (a power-loss file
    /// system) loses what was not fsynced; restarted when the fault ends.
    PowerCutOne,
    /// Power cut of a minority.
    PowerCutMinority,
    /// Power cut of every node at once.
    PowerCutAll,
}

/// The power cuts, for `--nemesis power-cut` (not in `mixed`: they need the members' data
/// directories on the power-loss file system, register and set workloads only).
pub const POWER_CUTS: [Nemesis; 3] = [
    Nemesis::PowerCutOne,
    Nemesis::PowerCutMinority,
    Nemesis::PowerCutAll,
];

/// Every nemesis, for `--nemesis mixed`.
pub const ALL: [Nemesis; 15] = [
    Nemesis::PartitionHalves,
    Nemesis::IsolateOne,
    Nemesis::IsolateLeader,
    Nemesis::KillOne,
    Nemesis::PauseLeader,
    Nemesis::OneWay,
    Nemesis::Ring,
    Nemesis::Bridge,
    Nemesis::Loss,
    Nemesis::KillMinority,
    Nemesis::KillAll,
    Nemesis::IsolateOwner,
    Nemesis::PauseOwner,
    Nemesis::FlapOwner,
    Nemesis::PauseOwnerLease,
];

impl Nemesis {
    /// Whether it is one of [`POWER_CUTS`] (they need the power-loss file system).
    pub fn is_power_cut(self) -> bool {
        matches!(
            self,
            Nemesis::PowerCutOne | Nemesis::PowerCutMinority | Nemesis::PowerCutAll
        )
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "partition" | "partition-halves" => Nemesis::PartitionHalves,
            "isolate" | "isolate-one" => Nemesis::IsolateOne,
            "isolate-leader" => Nemesis::IsolateLeader,
            "kill" | "kill-one" => Nemesis::KillOne,
            "pause-leader" => Nemesis::PauseLeader,
            "one-way" => Nemesis::OneWay,
            "ring" => Nemesis::Ring,
            "bridge" => Nemesis::Bridge,
            "loss" => Nemesis::Loss,
            "kill-minority" => Nemesis::KillMinority,
            "kill-all" => Nemesis::KillAll,
            "isolate-owner" => Nemesis::IsolateOwner,
            "pause-owner" => Nemesis::PauseOwner,
            "flap-owner" => Nemesis::FlapOwner,
            "pause-owner-lease" => Nemesis::PauseOwnerLease,
            "power-cut-one" => Nemesis::PowerCutOne,
            "power-cut-minority" => Nemesis::PowerCutMinority,
            "power-cut-all" => Nemesis::PowerCutAll,
            other => {
                return Err(format!(
                    "unknown nemesis {other:?} (partition, isolate, isolate-leader, kill, \
                     pause-leader, one-way, ring, bridge, loss, kill-minority, kill-all, isolate-owner, \
                     pause-owner, flap-owner, pause-owner-lease, mixed, power-cut-one, \
                     power-cut-minority, power-cut-all, power-cut)"
                ))
            }
        })
    }
}
