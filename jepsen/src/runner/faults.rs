//! Fault injection: applying a nemesis to a running lab cluster (cuts, loss, kills, pauses,
//! flapping of the VIP's owner) and the undo that heals it, resumes or restarts what it
//! stopped. Which fault and when is the run's schedule (`mod.rs`, `vip.rs`, `release.rs`);
//! power cuts, which need the members' disks, are `power.rs`; the faults by name are
//! `crate::nemesis`.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use super::members::{ask_cluster, Members};
use crate::history::Fault;
use crate::lab::{Lab, LabError, LabProcess};
use crate::nemesis::Nemesis;
use crate::viplab::{VipLab, VIP_LEASE};

/// Ends a fault: heals, resumes or restarts (with `spawn` for a killed node).
pub(super) type Undo =
    Box<dyn FnOnce(&Lab, &mut [Option<LabProcess>], &Spawn) -> Result<(), String>>;
pub(super) type Spawn<'a> = dyn Fn(usize) -> Result<LabProcess, LabError> + 'a;

/// Injects `nemesis`: returns what it did, for the history, and how to end it.
pub(super) fn inject(
    lab: &Lab,
    procs: &mut [Option<LabProcess>],
    nemesis: Nemesis,
    rng: &mut StdRng,
    members: &Members,
) -> Result<(String, Undo), String> {
    let n = lab.nodes().len();
    let heal: Undo = Box::new(|lab, _, _| lab.heal().map_err(|e| e.to_string()));
    Ok(match nemesis {
        Nemesis::PartitionHalves => {
            let ids = shuffled(n, rng);
            let (a, b) = ids.split_at(n / 2);
            let ha: Vec<_> = a.iter().map(|i| lab.node(*i)).collect();
            let hb: Vec<_> = b.iter().map(|i| lab.node(*i)).collect();
            lab.partition(&ha, &hb).map_err(|e| e.to_string())?;
            (format!("{a:?} | {b:?}"), heal)
        }
        Nemesis::IsolateOne | Nemesis::IsolateLeader | Nemesis::IsolateOwner => {
            let id = match nemesis {
                Nemesis::IsolateLeader => leader(members, lab).unwrap_or(1),
                Nemesis::IsolateOwner => {
                    vip_owner(members, lab).unwrap_or_else(|| rng.gen_range(1..=n))
                }
                _ => rng.gen_range(1..=n),
            };
            lab.isolate(lab.node(id)).map_err(|e| e.to_string())?;
            (format!("isolated n{id}"), heal)
        }
        Nemesis::KillOne | Nemesis::KillMinority | Nemesis::KillAll => {
            let victims = kill_some(procs, nemesis, rng);
            (format!("killed {victims:?}"), restart(victims))
        }
        Nemesis::OneWay => {
            let ids = shuffled(n, rng);
            let (from, to) = (ids[0], ids[1]);
            lab.cut(lab.node(from), lab.node(to))
                .map_err(|e| e.to_string())?;
            (format!("n{to} does not hear n{from}"), heal)
        }
        Nemesis::Ring => {
            let ids = shuffled(n, rng);
            for i in 0..n {
                for j in 0..n {
                    let d = (i + n - j) % n;
                    if i != j && d != 1 && d != n - 1 {
                        lab.cut(lab.node(ids[i]), lab.node(ids[j]))
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            (format!("ring {ids:?}"), heal)
        }
        Nemesis::Bridge => {
            let ids = shuffled(n, rng);
            let bridge = ids[n / 2];
            let a: Vec<usize> = ids[..n / 2].to_vec();
            let b: Vec<usize> = ids[n / 2 + 1..].to_vec();
            let ha: Vec<_> = a.iter().map(|i| lab.node(*i)).collect();
            let hb: Vec<_> = b.iter().map(|i| lab.node(*i)).collect();
            lab.partition(&ha, &hb).map_err(|e| e.to_string())?;
            (format!("{a:?} | {b:?} bridged by n{bridge}"), heal)
        }
        Nemesis::Loss => {
            for i in 1..=n {
                for j in 1..=n {
                    if i != j {
                        lab.lossy(lab.node(i), lab.node(j), 20)
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            ("20% loss between all nodes".to_string(), heal)
        }
        Nemesis::FlapOwner | Nemesis::PauseOwnerLease => {
            let flaps = flap(lab, procs, nemesis, rng, members)?;
            (
                flaps,
                Box::new(|lab, _, _| lab.heal().map_err(|e| e.to_string())),
            )
        }
        Nemesis::PowerCutOne | Nemesis::PowerCutMinority | Nemesis::PowerCutAll => {
            return Err(
                "the power-cut nemeses need the members' data directories on the power-loss \
                 file system: register and set workloads only"
                    .into(),
            )
        }
        Nemesis::PauseLeader | Nemesis::PauseOwner => {
            let id = match nemesis {
                Nemesis::PauseOwner => {
                    vip_owner(members, lab).unwrap_or_else(|| rng.gen_range(1..=n))
                }
                _ => leader(members, lab).unwrap_or(1),
            };
            if let Some(p) = &procs[id - 1] {
                p.pause();
            }
            (
                format!("paused n{id}"),
                Box::new(move |_, procs, _| {
                    if let Some(p) = &procs[id - 1] {
                        p.resume();
                    }
                    Ok(())
                }),
            )
        }
    })
}

/// How long a repeating nemesis repeats, and its faults' lengths: about a VIP lease, from
/// 100 ms shorter to 100 ms longer, so that an owner's renewals, its deadline and the leader's
/// decision to move the VIP fall close together.
const FLAP_FOR: Duration = Duration::from_secs(4);
const FLAP_MIN: Duration = Duration::from_millis(VIP_LEASE.as_millis() as u64 - 100);
const FLAP_MAX: Duration = Duration::from_millis(VIP_LEASE.as_millis() as u64 + 100);

/// Cuts off (`FlapOwner`) or pauses (`PauseOwnerLease`) the VIP's owner again and again for
/// [`FLAP_FOR`], each time for FLAP_MIN..=FLAP_MAX, 50-400 ms apart; the owner is asked anew
/// each time (a random node when there is none). Returns what it did.
fn flap(
    lab: &Lab,
    procs: &mut [Option<LabProcess>],
    nemesis: Nemesis,
    rng: &mut StdRng,
    members: &Members,
) -> Result<String, String> {
    let n = lab.nodes().len();
    let until = Instant::now() + FLAP_FOR;
    let mut done = Vec::new();
    while Instant::now() < until {
        let id = vip_owner(members, lab).unwrap_or_else(|| rng.gen_range(1..=n));
        let ms = rng.gen_range(FLAP_MIN.as_millis()..=FLAP_MAX.as_millis()) as u64;
        let gap = Duration::from_millis(rng.gen_range(50..=400));
        match nemesis {
            Nemesis::FlapOwner => {
                lab.isolate(lab.node(id)).map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_millis(ms));
                lab.heal().map_err(|e| e.to_string())?;
            }
            _ => {
                if let Some(p) = &procs[id - 1] {
                    p.pause();
                    std::thread::sleep(Duration::from_millis(ms));
                    p.resume();
                }
            }
        }
        done.push(format!("n{id} {ms}ms"));
        std::thread::sleep(gap);
    }
    let what = match nemesis {
        Nemesis::FlapOwner => "cut off",
        _ => "paused",
    };
    Ok(format!("{what} {}", done.join(", ")))
}

/// The owner of the first VIP.
fn vip_owner(members: &Members, lab: &Lab) -> Option<usize> {
    ask_cluster(members, lab, Duration::from_secs(2), |c| async move {
        let owner = c.get_state(false).await.ok()?.vips.first()?.owner;
        (owner != 0).then_some(owner as usize)
    })
    .flatten()
}

/// The Raft leader, as the members know it.
fn leader(members: &Members, lab: &Lab) -> Option<usize> {
    ask_cluster(members, lab, Duration::from_secs(2), |c| async move {
        let s = c.status().await.ok()?;
        (s.leader_id != 0).then_some(s.leader_id as usize)
    })
    .flatten()
}

/// SIGKILLs (and reaps) one random node, a minority or all of them, as `nemesis` says;
/// returns their ids.
pub(super) fn kill_some(
    procs: &mut [Option<LabProcess>],
    nemesis: Nemesis,
    rng: &mut StdRng,
) -> Vec<usize> {
    let n = procs.len();
    let count = match nemesis {
        Nemesis::KillOne | Nemesis::PowerCutOne => 1,
        Nemesis::KillMinority | Nemesis::PowerCutMinority => (n - 1) / 2,
        _ => n,
    };
    let victims: Vec<usize> = shuffled(n, rng).into_iter().take(count).collect();
    for id in &victims {
        if let Some(mut p) = procs[id - 1].take() {
            p.kill();
        }
    }
    victims
}

/// The undo that restarts `victims`.
pub(super) fn restart(victims: Vec<usize>) -> Undo {
    Box::new(move |_, procs, spawn| {
        for id in victims {
            procs[id - 1] = Some(spawn(id).map_err(|e| e.to_string())?);
        }
        Ok(())
    })
}

/// 1..=n in a random order.
fn shuffled(n: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut ids: Vec<usize> = (1..=n).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.gen_range(0..=i));
    }
    ids
}

/// Ends a fault injected into a [`VipLab`] (restarting killed members as the lab does) and
/// records it, from `start` to now.
pub(super) fn end_fault(
    v: &mut VipLab,
    nemesis: Nemesis,
    detail: String,
    undo: Undo,
    start: u64,
    ns: impl Fn(Instant) -> u64,
) -> Result<Fault, String> {
    let mut procs = std::mem::take(&mut v.procs);
    let undone = {
        let spawn = |id: usize| -> Result<LabProcess, LabError> { Ok(v.spawn(id as u64)) };
        undo(&v.lab, &mut procs, &spawn)
    };
    v.procs = procs;
    undone?;
    Ok(Fault {
        nemesis,
        detail,
        start,
        end: ns(Instant::now()),
    })
}
