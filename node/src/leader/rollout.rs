//! The leader's rollout controller: a pure function of a service, the VIPs it gates and the
//! leader's time, returning the next [`Step`] of its rollout (and the VIP moves to ask for).
//!
//! Rules, for a running rollout:
//! - the deadline passing, a node reporting it failed to activate the release, or a node
//!   running it and unhealthy for [`UNHEALTHY_GRACE_MS`] rolls every node back to
//!   `from_release`;
//! - a node switched to the release is done once it reports the release applied and has been
//!   healthy for `min_healthy_ms` (counted from the later of the switch and its last health
//!   transition);
//! - when every switched node is done, the next batch switches: nodes that own no VIP first, by
//!   id; a VIP owner switches last, and only after its VIPs were moved (planned move) to a node
//!   that is done and may hold them (active, alive, healthy); with `canary`, the first batch
//!   is one node and the rollout then pauses;
//! - when every node is done the rollout succeeded.
//!
//! Rolling back: done when every node that is alive reports `from_release`.

use std::collections::BTreeMap;

use crate::model;
use crate::model::{Finish, Step};
use crate::types::NodeId;

/// How long a node may run the new release unhealthy before the rollout rolls back.
pub const UNHEALTHY_GRACE_MS: u64 = 5_000;

/// What the controller decided for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub step: Option<Step>,
    /// Planned moves to ask for, (VIP, to node), so that an owner can switch.
    pub moves: Vec<(String, NodeId)>,
}

fn rstate(r: &model::Rollout) -> model::RolloutState {
    r.state
}

fn healthy(b: &model::Backend) -> bool {
    b.health == model::Health::Healthy
}

/// Decides the next step of `svc`'s rollout. `vips` are the VIPs gated by the service;
/// `alive` tells whether a node's agent is alive, `can_hold` whether a node may be given a
/// VIP of the service now (the state's own rule for a move: active, alive, healthy).
pub fn decide(
    svc: &model::Service,
    vips: &[&model::Vip],
    alive: &dyn Fn(NodeId) -> bool,
    can_hold: &dyn Fn(NodeId) -> bool,
    now_ms: u64,
) -> Decision {
    let none = Decision {
        step: None,
        moves: Vec::new(),
    };
    let Some(r) = &svc.rollout else { return none };
    match rstate(r) {
        model::RolloutState::Running => running(svc, r, vips, can_hold, now_ms),
        model::RolloutState::RollingBack => {
            let back = svc.backends.iter().all(|(id, b)| {
                b.applied_release == r.from_release || r.from_release.is_empty() || !alive(*id)
            });
            if !back {
                return none;
            }
            let mut next = r.clone();
            next.state = model::RolloutState::RolledBack;
            Decision {
                step: Some(Step {
                    expected: r.clone(),
                    next,
                    finish: Some(Finish::RolledBack),
                }),
                moves: Vec::new(),
            }
        }
        _ => none,
    }
}

fn roll_back(r: &model::Rollout, why: String) -> Decision {
    let mut next = r.clone();
    next.state = model::RolloutState::RollingBack;
    next.message = why;
    for d in next.desired.values_mut() {
        *d = r.from_release.clone();
    }
    Decision {
        step: Some(Step {
            expected: r.clone(),
            next,
            finish: None,
        }),
        moves: Vec::new(),
    }
}

fn running(
    svc: &model::Service,
    r: &model::Rollout,
    vips: &[&model::Vip],
    can_hold: &dyn Fn(NodeId) -> bool,
    now_ms: u64,
) -> Decision {
    if r.deadline_ms != 0 && now_ms > r.deadline_ms {
        return roll_back(r, "deadline passed before every node was done".to_string());
    }
    let switched: Vec<NodeId> = r
        .desired
        .iter()
        .filter(|(_, d)| **d == r.release)
        .map(|(id, _)| *id)
        .collect();
    let mut done = Vec::new();
    for id in &switched {
        let Some(b) = svc.backends.get(id) else {
            continue;
        };
        if b.release_failed == r.release {
            return roll_back(
                r,
                format!(
                    "node {id} could not activate {}: {}",
                    r.release, b.apply_error
                ),
            );
        }
        if b.applied_release != r.release {
            continue;
        }
        if b.health == model::Health::Unhealthy
            && now_ms.saturating_sub(b.applied_ms.max(b.changed_ms)) >= UNHEALTHY_GRACE_MS
        {
            return roll_back(r, format!("node {id} is unhealthy on {}", r.release));
        }
        let since = b.applied_ms.max(b.changed_ms);
        if healthy(b) && now_ms.saturating_sub(since) >= r.min_healthy_ms as u64 {
            done.push(*id);
        }
    }
    if done.len() < switched.len() {
        return Decision {
            step: None,
            moves: Vec::new(),
        };
    }
    let pending: Vec<NodeId> = svc
        .backends
        .keys()
        .copied()
        .filter(|id| r.desired.get(id) != Some(&r.release))
        .collect();
    if pending.is_empty() {
        let mut next = r.clone();
        next.state = model::RolloutState::Succeeded;
        next.message.clear();
        return Decision {
            step: Some(Step {
                expected: r.clone(),
                next,
                finish: Some(Finish::Succeeded),
            }),
            moves: Vec::new(),
        };
    }
    if r.canary && switched.len() == 1 {
        // The canary is done: pause for an operator, once.
        let mut next = r.clone();
        next.state = model::RolloutState::Paused;
        next.canary = false;
        next.message = format!(
            "canary node {} is healthy on {}: resume to continue",
            switched[0], r.release
        );
        return Decision {
            step: Some(Step {
                expected: r.clone(),
                next,
                finish: None,
            }),
            moves: Vec::new(),
        };
    }
    let owned: BTreeMap<NodeId, Vec<&str>> =
        vips.iter()
            .filter(|v| v.owner != 0)
            .fold(BTreeMap::new(), |mut m, v| {
                m.entry(v.owner).or_default().push(v.name.as_str());
                m
            });
    let (free, owners): (Vec<NodeId>, Vec<NodeId>) =
        pending.iter().partition(|id| !owned.contains_key(id));
    let size = if r.canary && switched.is_empty() {
        1
    } else {
        r.batch.max(1) as usize
    };
    let mut admit: Vec<NodeId> = free.into_iter().take(size).collect();
    let mut moves = Vec::new();
    if admit.is_empty() {
        // Only VIP owners are left: move their VIPs to a node that is done, then switch them.
        // The node must be one the state lets hold them: a move to another is refused, and
        // asking again for the same one every tick would hold the rollout until its deadline
        // while another done node could take the VIPs (a done node killed and restarted is
        // not alive again until its agent is bound to the new process; one may be draining).
        let owner = owners[0];
        if done.is_empty() {
            // Nobody runs the release yet (every pending node owns a VIP): switch the owner
            // as is; the controller moves its VIPs away while it switches.
            admit.push(owner);
        } else if let Some(to) = done.iter().find(|id| can_hold(**id)) {
            for v in &owned[&owner] {
                moves.push((v.to_string(), *to));
            }
        }
        // Otherwise no done node can take them now: wait for one.
    }
    if admit.is_empty() {
        return Decision { step: None, moves };
    }
    let mut next = r.clone();
    for id in admit {
        next.desired.insert(id, r.release.clone());
    }
    Decision {
        step: Some(Step {
            expected: r.clone(),
            next,
            finish: None,
        }),
        moves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u32 = 1_000;

    /// [`super::decide`] where every node alive may hold a VIP.
    fn decide(
        svc: &model::Service,
        vips: &[&model::Vip],
        alive: &dyn Fn(NodeId) -> bool,
        now_ms: u64,
    ) -> Decision {
        super::decide(svc, vips, alive, alive, now_ms)
    }

    /// Service "web" on nodes 1..=n, all healthy on v1, rollout of v2 started at t=0.
    fn world(n: u64, batch: u32, canary: bool) -> model::Service {
        let mut svc = model::Service {
            name: "web".into(),
            active_release: "v1".into(),
            backends: (1..=n)
                .map(|i| {
                    (
                        i,
                        model::Backend {
                            node_id: i,
                            health: model::Health::Healthy,
                            applied_release: "v1".into(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        for id in ["v1", "v2"] {
            crate::member::state::releases::register(
                &mut svc,
                &model::Release {
                    id: id.into(),
                    ..Default::default()
                },
                0,
            )
            .unwrap();
        }
        crate::member::state::releases::start(&mut svc, "v2", batch, MIN, 600_000, canary, 0)
            .unwrap();
        svc
    }

    fn vip(owner: NodeId) -> model::Vip {
        model::Vip {
            name: "vip".into(),
            service: "web".into(),
            owner,
            epoch: 1,
            ..Default::default()
        }
    }

    /// Decides and applies the step.
    fn run(
        svc: &mut model::Service,
        vips: &[&model::Vip],
        alive: &dyn Fn(NodeId) -> bool,
        t: u64,
    ) -> Decision {
        let d = decide(svc, vips, alive, t);
        apply(svc, &d);
        d
    }

    fn apply(svc: &mut model::Service, d: &Decision) {
        if let Some(s) = &d.step {
            crate::member::state::releases::step(svc, s).unwrap();
        }
    }

    /// Agents of the switched nodes run the desired release, healthy, at `t`.
    fn agents_switch(svc: &mut model::Service, t: u64) {
        let desired = svc.rollout.as_ref().unwrap().desired.clone();
        for (id, d) in desired {
            let b = svc.backends.get_mut(&id).unwrap();
            if b.applied_release != d && !d.is_empty() {
                b.applied_release = d;
                b.applied_ms = t;
            }
        }
    }

    fn switched(svc: &model::Service) -> Vec<NodeId> {
        let r = svc.rollout.as_ref().unwrap();
        r.desired
            .iter()
            .filter(|(_, d)| **d == r.release)
            .map(|(id, _)| *id)
            .collect()
    }

    fn state(svc: &model::Service) -> model::RolloutState {
        rstate(svc.rollout.as_ref().unwrap())
    }

    #[test]
    fn batches_advance_on_healthy_nodes_and_the_vip_owner_goes_last_after_a_move() {
        let mut svc = world(3, 1, false);
        let v = vip(1);
        let alive = |_| true;
        // First batch: the lowest id that owns no VIP.
        let d = decide(&svc, &[&v], &alive, 0);
        apply(&mut svc, &d);
        assert_eq!(switched(&svc), vec![2]);
        // Not applied yet, then applied but not healthy for long enough: nothing moves.
        assert_eq!(decide(&svc, &[&v], &alive, 100).step, None);
        agents_switch(&mut svc, 200);
        assert_eq!(decide(&svc, &[&v], &alive, 200 + 999).step, None);
        let d = decide(&svc, &[&v], &alive, 200 + 1_000);
        apply(&mut svc, &d);
        assert_eq!(switched(&svc), vec![2, 3]);
        agents_switch(&mut svc, 1_300);
        // Only the owner is left: its VIP moves to a done node first, one that is alive (a
        // move to a dead one is refused), and to none while every done node is down.
        let d = decide(&svc, &[&v], &alive, 2_400);
        assert_eq!(d.step, None);
        assert_eq!(d.moves, vec![("vip".to_string(), 2)]);
        let d = decide(&svc, &[&v], &|id| id != 2, 2_400);
        assert_eq!((d.step, d.moves), (None, vec![("vip".to_string(), 3)]));
        let d = decide(&svc, &[&v], &|id| id == 1, 2_400);
        assert_eq!((d.step, d.moves), (None, vec![]));
        // Alive but not allowed a VIP (draining): the same.
        let d = super::decide(&svc, &[&v], &alive, &|id| id != 2, 2_400);
        assert_eq!((d.step, d.moves), (None, vec![("vip".to_string(), 3)]));
        let v = vip(2);
        let d = decide(&svc, &[&v], &alive, 2_500);
        apply(&mut svc, &d);
        assert_eq!(switched(&svc), vec![1, 2, 3]);
        agents_switch(&mut svc, 2_600);
        let d = decide(&svc, &[&v], &alive, 3_600);
        assert_eq!(d.step.as_ref().unwrap().finish, Some(Finish::Succeeded));
        apply(&mut svc, &d);
        assert_eq!(svc.active_release, "v2");
        assert_eq!(svc.previous_release, "v1");
        assert_eq!(state(&svc), model::RolloutState::Succeeded);
    }

    #[test]
    fn an_unhealthy_or_failed_node_rolls_everything_back() {
        let alive = |_| true;
        for failure in ["unhealthy", "activation failed"] {
            let mut svc = world(3, 2, false);
            run(&mut svc, &[], &alive, 0);
            assert_eq!(switched(&svc), vec![1, 2]);
            agents_switch(&mut svc, 100);
            let b = svc.backends.get_mut(&2).unwrap();
            if failure == "unhealthy" {
                b.health = model::Health::Unhealthy;
                b.changed_ms = 300;
                // Within the grace, nothing happens.
                assert_eq!(decide(&svc, &[], &alive, 300 + 4_999).step, None);
            } else {
                b.applied_release = "v1".into();
                b.release_failed = "v2".into();
                b.apply_error = "sha256 mismatch".into();
            }
            let d = decide(&svc, &[], &alive, 300 + UNHEALTHY_GRACE_MS);
            apply(&mut svc, &d);
            assert_eq!(state(&svc), model::RolloutState::RollingBack, "{failure}");
            let r = svc.rollout.clone().unwrap();
            assert!(r.desired.values().all(|d| d == "v1"));
            assert!(r.message.contains("node 2"), "{}", r.message);
            // Done when every node reports v1 again; v2 is marked failed.
            assert_eq!(decide(&svc, &[], &alive, 6_000).step, None);
            agents_switch(&mut svc, 6_100);
            let d = decide(&svc, &[], &alive, 6_200);
            apply(&mut svc, &d);
            assert_eq!(state(&svc), model::RolloutState::RolledBack);
            assert_eq!(svc.active_release, "v1");
            let v2 = svc.releases.iter().find(|r| r.id == "v2").unwrap();
            assert_eq!(v2.status, model::ReleaseStatus::Failed);
        }
    }

    #[test]
    fn the_deadline_rolls_back_and_a_dead_node_does_not_block_the_rollback() {
        let mut svc = world(2, 1, false);
        let deadline = svc.rollout.as_ref().unwrap().deadline_ms;
        run(&mut svc, &[], &|_| true, 0);
        run(&mut svc, &[], &|_| true, deadline + 1);
        assert_eq!(state(&svc), model::RolloutState::RollingBack);
        // Node 1 switched to v2 and died there; node 2 never left v1.
        svc.backends.get_mut(&1).unwrap().applied_release = "v2".into();
        assert_eq!(decide(&svc, &[], &|_| true, deadline + 2).step, None);
        let d = decide(&svc, &[], &|id| id != 1, deadline + 3);
        apply(&mut svc, &d);
        assert_eq!(state(&svc), model::RolloutState::RolledBack);
    }

    #[test]
    fn a_canary_switches_one_node_then_pauses_once() {
        let mut svc = world(3, 2, true);
        let alive = |_| true;
        run(&mut svc, &[], &alive, 0);
        assert_eq!(switched(&svc), vec![1]);
        agents_switch(&mut svc, 10);
        run(&mut svc, &[], &alive, 2_000);
        assert_eq!(state(&svc), model::RolloutState::Paused);
        assert!(svc
            .rollout
            .as_ref()
            .unwrap()
            .message
            .contains("canary node 1"));
        assert_eq!(decide(&svc, &[], &alive, 2_100).step, None, "paused");
        crate::member::state::releases::control(&mut svc, crate::model::Control::Resume).unwrap();
        run(&mut svc, &[], &alive, 2_200);
        assert_eq!(switched(&svc), vec![1, 2, 3], "then batches of two");
    }
}
