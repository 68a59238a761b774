//! The power-cut nemeses: each member's data directory is a power-loss file system
//! ([`crate::powerfs`]); a cut SIGKILLs the chosen members, reaps them, and then drops what
//! their file systems had not made durable, so the cut falls on the instant of their death
//! (a dead process writes nothing more). They restart on the same directories when the
//! fault ends, as after power comes back.
//!
//! Here: mounting the members' file systems and cutting them. Not here: when to cut (the run's
//! schedule in `mod.rs`), the other nemeses (`faults.rs`), the file system itself
//! (`crate::powerfs`).

use std::path::Path;

use rand::rngs::StdRng;

use super::faults::{kill_some, restart, Undo};
use crate::lab::LabProcess;
use crate::nemesis::Nemesis;
use crate::powerfs::PowerFs;

/// The members' file systems, in node order.
pub(super) struct Disks(Vec<PowerFs>);

impl Disks {
    /// Mounts a power-loss file system on each member's data directory (`DATA/n<id>`, as
    /// [`Lab::spawn_member`](crate::lab::Lab::spawn_member) names them) before the members start.
    pub(super) fn mount(data: &Path, nodes: usize) -> Result<Self, String> {
        (1..=nodes)
            .map(|id| PowerFs::mount(&data.join(format!("n{id}"))).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map(Disks)
    }
}

/// Cuts the power of one member, a minority or all of them (by `nemesis`); the undo
/// restarts them.
pub(super) fn cut(
    disks: &Disks,
    procs: &mut [Option<LabProcess>],
    nemesis: Nemesis,
    rng: &mut StdRng,
) -> Result<(String, Undo), String> {
    // Every victim dies first (SIGKILL and reaped: none of its requests to the file system
    // is still under way), then each file system falls back to what was durable.
    let victims = kill_some(procs, nemesis, rng);
    let (mut pages, mut names) = (0, 0);
    for id in &victims {
        let r = disks.0[id - 1].cut();
        pages += r.dirty_pages;
        names += r.inodes_dropped;
    }
    Ok((
        format!("power cut {victims:?}: {pages} unsynced pages and {names} unsynced files lost"),
        restart(victims),
    ))
}
