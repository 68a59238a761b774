//! The leader's loops: the controller (every tick, and at each lease expiry) and the
//! leadership hand-over. Both do nothing on a member that does not lead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ReadPolicy;
use crate::leader::controller::{Action, VipView};
use crate::leader::handover;
use crate::lease::LeaseSettings;
use crate::member::proposer::now_ms;
use crate::model;
use crate::node::Node;
use crate::types::{Command, CommandResult, LogId, NodeId, Op, Outcome};

use super::book::World;
use openraft::async_runtime::WatchReceiver;

/// How often the leader's controller decides.
const CONTROLLER_TICK: Duration = Duration::from_millis(50);

/// On the leader, every tick: decide from the applied state and the lease book, and propose
/// what was decided. Stale decisions are refused by the state machine (epochs).
///
/// Before its first decision in a term, the leader confirms its leadership with a quorum and
/// applies everything committed before (its term's first entry): until then its state may lag
/// what earlier leaders committed, and a decision on it could end a lease too early.
pub async fn controller_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut wake_at = tokio::time::Instant::now();
    let mut ready_term = 0;
    let mut views = Views::default();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = node.controller_wake.notified() => {}
        }
        wake_at = tokio::time::Instant::now() + CONTROLLER_TICK;
        let (leader, term) = {
            let m = node.raft.metrics();
            let m = m.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if leader != Some(node.id) {
            continue;
        }
        if ready_term != term {
            match node.read_index_local(ReadPolicy::ReadIndex).await {
                Ok(_) => ready_term = term,
                Err(e) => {
                    tracing::debug!(error = ?e, "controller waits for its term's first entry");
                    continue;
                }
            }
        }
        let (actions, lease_op, terms) = {
            let data = node.sm.read();
            let terms = node.lease_terms(&data);
            let vips = views.of(&data);
            let mut book = node.book();
            if book.term() != term {
                continue; // the term changed since the barrier
            }
            let now = node.mono_now();
            let own = LeaseSettings::from_config(&node.controller_cfg.lease);
            let lease_op = book.lease_step(
                data.lease,
                data.lease_wait_ms,
                data.lease_generation,
                own,
                now,
            );
            let w = World {
                nodes: &data.nodes,
                services: &data.services,
                vips,
                retired: &data.retired,
                leader: node.id,
                now,
                now_wall_ms: now_ms(),
                cfg: &node.controller_cfg,
            };
            let (actions, next) = book.decide_at(&w, data.last_applied, terms);
            // Decide again the moment a lease runs out, not at the next tick.
            if let Some(at) = next {
                wake_at = wake_at.min(tokio::time::Instant::now() + at.saturating_sub(now));
            }
            (actions, lease_op, terms)
        };
        if let Some(op) = lease_op {
            tracing::info!(?op, "lease settings");
            if propose_decision(&node, term, op).await.is_none() {
                continue;
            }
        }
        // The tick's decisions are proposed together, in their order: the proposer submits
        // them in that order and packs what arrives while a batch commits into the next one,
        // so the thousand reassignments of a dead node's VIPs take a few log entries, not a
        // thousand commits one after the other (scale bench, issue 14: 500 VIPs took 1.2 s
        // of sequential commits after their lease). Every lease a decision ends was recorded
        // as over by `decide` above, before any of them is proposed.
        let mut proposals = Vec::with_capacity(actions.len());
        for a in actions {
            tracing::info!(action = ?a, "controller");
            let assigned = match &a {
                Action::Assign { vip, epoch, .. } => Some((vip.clone(), *epoch)),
                _ => None,
            };
            if matches!(a, Action::Assign { .. } | Action::Revoke { .. }) {
                node.failpoints.hit("controller.before_vip_decision").await;
            }
            let node = &node;
            proposals.push(async move {
                if propose_decision(node, term, a.op()).await != Some(true) {
                    return;
                }
                // The new owner gets a full lease from its assignment to claim the VIP: the
                // leader counts the assignment as a grant.
                if let Some((vip, epoch)) = assigned {
                    let mut book = node.book();
                    let now = node.mono_now();
                    book.assigned(&vip, epoch, now, terms);
                }
            });
        }
        // `join_all` polls them in order, so each reaches the proposer's queue in order.
        futures::future::join_all(proposals).await;
        rollouts(&node, term).await;
    }
}

/// The controller's views of the state's VIPs, made again only when the applied state moved
/// (the same last log id is the same state): at rest the leader's ticks copy no VIP (issue
/// 14: every tick cloned every VIP under the state's read lock).
#[derive(Default)]
struct Views {
    applied: Option<Option<LogId>>,
    vips: Vec<VipView>,
}

impl Views {
    fn of(&mut self, data: &crate::member::state::StateData) -> &[VipView] {
        if self.applied != Some(data.last_applied) {
            // The views of VIPs that did not change are kept, not built again: with 10,000
            // VIPs and the state changing at every tick, building them all took an eighth of
            // the leader (scale bench, issue 14). Both lists are in name order; a view is
            // kept only if it equals what `VipView::of` would build.
            let mut old = std::mem::take(&mut self.vips).into_iter().peekable();
            self.vips = data
                .vips
                .values()
                .map(|v| {
                    while old.next_if(|o| o.name < v.name).is_some() {}
                    old.next_if(|o| o.is_view_of(v))
                        .unwrap_or_else(|| VipView::of(v))
                })
                .collect();
            self.applied = Some(data.last_applied);
        }
        &self.vips
    }
}

/// On the leader: the next step of every service's rollout, and the planned VIP moves that
/// let a VIP owner switch last (see `rollout.rs`).
async fn rollouts(node: &Arc<Node>, term: u64) {
    let decisions: Vec<(String, crate::leader::rollout::Decision)> = {
        let data = node.sm.read();
        let alive = |id: NodeId| data.nodes.get(&id).is_some_and(|n| n.alive);
        data.services
            .values()
            .filter(|s| crate::member::state::releases::in_progress(s))
            .map(|svc| {
                let vips: Vec<&model::Vip> = data
                    .vips
                    .values()
                    .filter(|v| v.service == svc.name)
                    .collect();
                (
                    svc.name.clone(),
                    crate::leader::rollout::decide(
                        svc,
                        &vips,
                        &alive,
                        &|id| data.eligible(&svc.name, id).is_ok(),
                        now_ms(),
                    ),
                )
            })
            .collect()
    };
    for (service, d) in decisions {
        let mut ops: Vec<Op> = d
            .moves
            .into_iter()
            .map(|(vip, to)| Op::MoveVip { vip, to })
            .collect();
        if let Some(step) = d.step {
            tracing::info!(%service, state = ?step.next.state, message = %step.next.message, "rollout step");
            ops.push(Op::StepRollout { service, step });
        }
        for op in ops {
            if propose_decision(node, term, op).await.is_none() {
                return;
            }
        }
    }
}

/// Proposes `op`, decided by this member as the leader of `term`, on this member only: it
/// applies only from an entry of that term (`Op::Decided`), so a decision that outlives its
/// term (the member lost the leadership and won it back) is refused, not applied in a term
/// that never made it.
pub async fn propose_decided(
    node: &Node,
    term: u64,
    op: Op,
) -> Result<CommandResult, crate::member::network::ForwardError> {
    let cmd = Command {
        request: None,
        now_ms: 0,
        op: Op::Decided {
            term,
            op: Box::new(op),
        },
    };
    node.propose_local(cmd).await
}

/// Proposes a decision of this leader's controllers, taken in `term`. Some(true): applied;
/// Some(false): refused by the state machine (a stale decision, logged); None: not proposed
/// (no longer leader, or the log is unavailable): the others of the tick fail or are refused
/// on their own.
async fn propose_decision(node: &Node, term: u64, op: Op) -> Option<bool> {
    match propose_decided(node, term, op).await {
        Ok(CommandResult {
            outcome: Outcome::Rejected { field, message },
            ..
        }) => {
            tracing::debug!(%field, %message, "controller decision refused");
            Some(false)
        }
        Ok(_) => Some(true),
        Err(e) => {
            tracing::debug!(error = ?e, "controller stops this tick");
            None
        }
    }
}

/// On the leader: hands the leadership to a follower when this member owns VIPs and a
/// caught-up follower owns none (see `handover.rs`).
pub async fn handover_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut last_attempt: Option<(u64, Duration)> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let (term, last_log_index, followers) = {
            let m = node.raft.metrics();
            let m = m.borrow_watched();
            if m.current_leader != Some(node.id) {
                continue;
            }
            let membership = m.membership_config.membership();
            let matched = m.replication.clone().unwrap_or_default();
            let followers: Vec<(NodeId, Option<u64>)> = membership
                .voter_ids()
                .filter(|id| *id != node.id)
                .map(|id| (id, matched.get(&id).cloned().flatten().map(|l| l.index)))
                .collect();
            (m.current_term, m.last_log_index.unwrap_or(0), followers)
        };
        let now = node.mono_now();
        let led_for = now.saturating_sub(node.book().obs().leader_since);
        let mut owned: BTreeMap<NodeId, usize> = BTreeMap::new();
        let mut moving = false;
        for v in node.sm.read().vips.values().filter(|v| v.owner != 0) {
            *owned.entry(v.owner).or_default() += 1;
            moving |= v.releasing;
        }
        let Some(to) = handover::successor(&handover::Input {
            me: node.id,
            led_for,
            since_last_attempt: last_attempt
                .filter(|(t, _)| *t == term)
                .map(|(_, at)| now.saturating_sub(at)),
            last_log_index,
            followers: &followers,
            owned: &owned,
            moving,
            settle: node.handover_settle,
        }) else {
            continue;
        };
        last_attempt = Some((term, now));
        // openraft 0.10's transfer: this leader stops serving and tells the voters; `to`
        // elects itself once its log holds this leader's last entry. (Asking `to` to elect
        // itself, as with 0.9, no longer works: members with a valid leader lease refuse
        // an ordinary vote.) The call returns once the core took the command; whether `to`
        // won shows in the metrics.
        node.hold_lease_reads();
        match node.raft.trigger().transfer_leader(to).await {
            Ok(()) => tracing::info!(
                to,
                term,
                "leadership hand-over started: this member owns VIPs"
            ),
            Err(e) => tracing::info!(to, error = %e, "hand-over failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(name: &str, owner: NodeId, epoch: u64) -> model::Vip {
        model::Vip {
            name: name.into(),
            address: format!("10.213.1.{}/24", name.len()),
            interface: "eth0".into(),
            service: "web".into(),
            owner,
            epoch,
            ..Default::default()
        }
    }

    /// After any change (VIPs added, removed, changed), the kept views are those a fresh
    /// build gives.
    #[test]
    fn kept_views_are_the_ones_a_fresh_build_gives() {
        let mut data = crate::member::state::StateData::default();
        let mut views = Views {
            applied: None,
            vips: Vec::new(),
        };
        let fresh = |d: &crate::member::state::StateData| -> Vec<VipView> {
            d.vips.values().map(VipView::of).collect()
        };
        type Step = Box<dyn Fn(&mut crate::member::state::StateData)>;
        let steps: Vec<Step> = vec![
            Box::new(|d| {
                for n in ["b", "d", "f"] {
                    d.vips.insert(n.into(), vip(n, 1, 1));
                }
            }),
            Box::new(|d| {
                d.vips.insert("a".into(), vip("a", 2, 1));
                d.vips.insert("e".into(), vip("e", 2, 1));
            }),
            Box::new(|d| {
                d.vips.insert("d".into(), vip("d", 2, 2));
            }),
            Box::new(|d| {
                d.vips.remove("b");
                d.vips.remove("f");
                d.vips.insert("g".into(), vip("g", 3, 1));
            }),
            Box::new(|d| {
                d.vips.insert("e".into(), vip("e", 2, 2));
            }),
            Box::new(|_| {}),
            Box::new(|d| {
                for n in ["a", "d", "e", "g"] {
                    d.vips.remove(n);
                }
            }),
            Box::new(|d| {
                d.vips.insert("c".into(), vip("c", 1, 1));
            }),
        ];
        for (i, step) in steps.iter().enumerate() {
            // Where each view's name lives: a kept view keeps its allocation.
            let before: BTreeMap<String, *const u8> = views
                .vips
                .iter()
                .map(|v| (v.name.clone(), v.name.as_ptr()))
                .collect();
            let old = data.vips.clone();
            step(&mut data);
            data.last_applied = Some(crate::types::log_id(1, 1, i as u64 + 1));
            assert_eq!(views.of(&data), fresh(&data), "after step {i}");
            for v in &views.vips {
                let unchanged = old.get(&v.name) == data.vips.get(&v.name);
                let kept = before.get(&v.name) == Some(&v.name.as_ptr());
                assert_eq!(kept, unchanged, "step {i}, VIP {}", v.name);
            }
        }
    }
}
