//! The leader's controller: a pure function of (state, leader-local observations, now) that
//! yields the commands to propose. No IO, no clock: tested by asserting the actions it returns.
//!
//! Placement rules:
//! - a node is eligible for a VIP when it is a backend of the VIP's service, its admin state is
//!   active, it is alive, its backend is healthy, and its agent did not report in its last
//!   renewal to this leader that it cannot place the VIP (the VIP's interface, as the
//!   server's configuration maps it, does not exist there: `agent/interfaces.rs`; an agent
//!   that reports nothing, older ones included, is eligible as before);
//! - an owned VIP stays where it is while its owner is eligible (sticky), unless preemption is
//!   on and a node with a higher priority has been eligible for at least the preemption delay
//!   (and has reported the VIP placeable for that long, if it ever reported it unplaceable in
//!   this term: an interface that comes and goes moves the VIP back at most once a delay);
//! - the best candidate has the highest priority, then is not the Raft leader (so that the
//!   crash of one server never costs both an election and a lease), then has the lowest node
//!   id (deterministic);
//! - a planned move (owner no longer eligible, or preempted, while its lease is alive) is
//!   break-before-make: the controller asks the owner to release; once the owner confirms (or
//!   its lease has expired at the leader), the new owner is assigned at a higher epoch;
//! - an owner whose lease expired at the leader loses the VIP at once (its kernel fence
//!   expired earlier, see `lease.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::lease::LeaseConfig;
use crate::model;
use crate::model::RetiredVip;
use crate::types::{vip_ip, NodeId};

/// A VIP as the controller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VipView {
    pub name: String,
    pub service: String,
    /// Address/prefix, to keep it off addresses a retired VIP may still hold.
    pub address: String,
    pub owner: NodeId,
    pub epoch: u64,
    /// A planned move is under way: the owner was asked to release at this epoch.
    pub releasing: bool,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub priorities: BTreeMap<NodeId, i32>,
    /// An operator's move in progress (0: none).
    pub move_to: NodeId,
}

impl VipView {
    /// The controller's view of a VIP of the state.
    pub fn of(v: &model::Vip) -> Self {
        let p = v.placement.clone().unwrap_or_default();
        VipView {
            name: v.name.clone(),
            service: v.service.clone(),
            address: v.address.clone(),
            owner: v.owner,
            epoch: v.epoch,
            releasing: v.releasing,
            preempt: p.preempt,
            preempt_delay: Duration::from_millis(p.preempt_delay_ms as u64),
            priorities: p.priorities,
            move_to: v.move_to,
        }
    }

    /// Whether this view equals `VipView::of(v)`, found without building that (no clones):
    /// the controller loop keeps the views of VIPs that did not change (`loops::Views`).
    pub fn is_view_of(&self, v: &model::Vip) -> bool {
        // Every field named: a field added to the view does not compile until it is compared.
        let VipView {
            name,
            service,
            address,
            owner,
            epoch,
            releasing,
            preempt,
            preempt_delay,
            priorities,
            move_to,
        } = self;
        let none = model::Placement::default();
        let p = v.placement.as_ref().unwrap_or(&none);
        *name == v.name
            && *service == v.service
            && *address == v.address
            && *owner == v.owner
            && *epoch == v.epoch
            && *releasing == v.releasing
            && *preempt == p.preempt
            && *preempt_delay == Duration::from_millis(p.preempt_delay_ms as u64)
            && *priorities == p.priorities
            && *move_to == v.move_to
    }
}

/// The leases the leader granted for one VIP (an assignment counts as one): for the owner at
/// `epoch`, held until `until` on the leader's monotonic clock (a grant's time + lease +
/// margin), the latest of all its grants at that epoch: a later but shorter grant (the
/// lease was shortened) does not bring it forward, since the agent may never have applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub epoch: u64,
    pub until: Duration,
}

impl Grant {
    /// Records a grant at `epoch` held until `until` on top of `prev`.
    pub fn record(prev: Option<Grant>, epoch: u64, until: Duration) -> Grant {
        match prev {
            Some(p) if p.epoch == epoch => Grant {
                epoch,
                until: p.until.max(until),
            },
            _ => Grant { epoch, until },
        }
    }
}

/// What the leader knows without the log: grants and agent contacts on its own monotonic
/// clock, and releases agents confirmed. The leader records an assignment as a grant, so a new
/// owner has a full lease to claim the VIP before the controller gives up on it.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// When this member became leader.
    pub leader_since: Duration,
    /// How long after `leader_since` a lease granted by an earlier leader may still be held
    /// (the longest lease + margin any leader may have granted).
    pub inherited_span: Duration,
    /// Last lease grant per VIP, for its current owner and epoch.
    pub granted: BTreeMap<String, Grant>,
    /// Last contact of each node's agent.
    pub agent_seen: BTreeMap<NodeId, Duration>,
    /// VIPs whose owner confirmed it removed the address, at the epoch it held.
    pub released: BTreeMap<String, u64>,
    /// What each agent reported holding (VIP, epoch) in its last renewal. For operators only:
    /// decisions never depend on it.
    pub holding: BTreeMap<NodeId, Vec<(String, u64)>>,
    /// What each agent reported about its HAProxy in its last renewal (differences, error).
    /// For operators only.
    pub haproxy: BTreeMap<NodeId, (Vec<ballast_proto::v1::HaproxyDiff>, String)>,
    /// The VIPs each agent reported, in its last renewal, that its server cannot place (by
    /// VIP, with the local interface and why). Decisions read it: such a node is not
    /// eligible for the VIP. A node absent here reported none.
    pub unplaceable: BTreeMap<NodeId, BTreeMap<String, ballast_proto::v1::Unplaceable>>,
    /// When each node last reported a VIP placeable again after reporting it unplaceable in
    /// this term: a preemption by that node waits its delay from then.
    pub placeable_since: BTreeMap<NodeId, BTreeMap<String, Duration>>,
}

impl Observations {
    /// When the leader may consider the lease of (`vip`, `epoch`) gone: after the last grant
    /// this leader made for it, and never before a lease granted by an earlier leader (counted
    /// from this leader's election) could have run out.
    pub fn lease_expiry(&self, vip: &str, epoch: u64) -> Duration {
        let inherited = self.leader_since + self.inherited_span;
        match self.granted.get(vip) {
            Some(g) if g.epoch == epoch => inherited.max(g.until),
            _ => inherited,
        }
    }

    /// Whether the leader must still treat the lease of (`vip`, `epoch`) as held at `now`.
    pub fn lease_held(&self, vip: &str, epoch: u64, now: Duration) -> bool {
        now < self.lease_expiry(vip, epoch)
    }

    /// Whether `node`'s agent did not report that its server cannot place `vip`.
    pub fn can_place(&self, node: NodeId, vip: &str) -> bool {
        !self
            .unplaceable
            .get(&node)
            .is_some_and(|u| u.contains_key(vip))
    }

    /// Since when `node` reports `vip` placeable, if it reported it unplaceable earlier in
    /// this term.
    fn placeable_again(&self, node: NodeId, vip: &str) -> Option<Duration> {
        self.placeable_since.get(&node)?.get(vip).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerConfig {
    /// This member's configured lease settings: the cluster's until it has its own.
    pub lease: LeaseConfig,
    /// An agent silent this long is marked down.
    pub node_down_after: Duration,
    /// The upper bound of this member's election timeout (lease settings must outlast a
    /// leaderless period).
    pub election_timeout_max: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            lease: LeaseConfig::default(),
            node_down_after: Duration::from_secs(2),
            election_timeout_max: Duration::from_millis(200),
        }
    }
}

/// A command for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Give the VIP to `node` at `epoch` (always above every earlier epoch of the VIP).
    Assign {
        vip: String,
        node: NodeId,
        epoch: u64,
    },
    /// Ask the owner to release (planned move); no other node gets it until it confirms or
    /// its lease expires.
    Release {
        vip: String,
        owner: NodeId,
        epoch: u64,
    },
    /// The owner's lease expired and no node is eligible: nobody holds it.
    Revoke {
        vip: String,
        epoch: u64,
    },
    SetNodeAlive {
        node: NodeId,
        alive: bool,
    },
    /// The retired address of a deleted or changed VIP is free: its owner at `epoch`
    /// confirmed it stopped answering, or its lease expired at the leader.
    ClearRetired {
        vip: String,
        epoch: u64,
    },
}

impl Action {
    /// The log operation that carries the action out.
    pub fn op(self) -> crate::types::Op {
        use crate::types::Op;
        match self {
            Action::Assign { vip, node, epoch } => Op::AssignVip { vip, node, epoch },
            Action::Release { vip, epoch, .. } => Op::ReleaseVip { vip, epoch },
            Action::Revoke { vip, epoch } => Op::RevokeVip { vip, epoch },
            Action::SetNodeAlive { node, alive } => Op::SetNodeAlive {
                node_id: node,
                alive,
            },
            Action::ClearRetired { vip, epoch } => Op::ClearRetired { vip, epoch },
        }
    }
}

/// Everything the controller reads.
pub struct Input<'a> {
    pub nodes: &'a BTreeMap<NodeId, model::Node>,
    pub services: &'a BTreeMap<String, model::Service>,
    pub vips: &'a [VipView],
    /// Addresses of deleted or changed VIPs that their last owner may still hold.
    pub retired: &'a BTreeMap<String, RetiredVip>,
    pub obs: &'a Observations,
    /// The member deciding (the Raft leader); 0 in tests that do not care.
    pub leader: NodeId,
    /// Leader's monotonic clock.
    pub now: Duration,
    /// Leader's wall clock (ms), to compare with the leader-stamped `changed_ms` of backends.
    pub now_wall_ms: u64,
    pub cfg: &'a ControllerConfig,
}

/// Decides the commands for this tick.
pub fn decide(input: &Input<'_>) -> Vec<Action> {
    let mut actions = liveness(input);
    // Liveness decided this tick counts for placement this tick.
    let alive = |id: NodeId| -> bool {
        for a in &actions {
            if let Action::SetNodeAlive { node, alive } = a {
                if *node == id {
                    return *alive;
                }
            }
        }
        input.nodes.get(&id).is_some_and(|n| n.alive)
    };
    let mut placed = Vec::new();
    for vip in input.vips {
        if let Some(a) = place(input, vip, &alive) {
            placed.push(a);
        }
    }
    // Freed addresses first: an assignment they held back is refused at apply until then.
    for (name, r) in input.retired {
        if retired_let_go(input, name, r) {
            actions.push(Action::ClearRetired {
                vip: name.clone(),
                epoch: r.epoch,
            });
        }
    }
    actions.extend(placed);
    actions
}

/// Whether the last owner of a retired address no longer answers for it: it confirmed, or
/// its lease expired at the leader.
fn retired_let_go(input: &Input<'_>, name: &str, r: &RetiredVip) -> bool {
    // An entry with no owner (restored from a backup) is never confirmed away: a confirmation
    // of the same name and epoch can only be of something else (this cluster's own VIP).
    (r.owner != 0 && input.obs.released.get(name) == Some(&r.epoch))
        || !input.obs.lease_held(name, r.epoch, input.now)
}

/// Whether `vip` must not be given to anyone yet: a retired address with its address or its
/// name (a deleted VIP made again) may still be answered for by its last owner. A changed
/// VIP's own old address is not in the way: its planned move handles it.
fn held_back_by_retired(input: &Input<'_>, vip: &VipView) -> bool {
    input.retired.iter().any(|(name, r)| {
        let own_move = !r.deleted && name == &vip.name;
        !own_move
            && (name == &vip.name || vip_ip(&r.address) == vip_ip(&vip.address))
            && !retired_let_go(input, name, r)
    })
}

/// The earliest moment after `now` at which an owned VIP's lease runs out at the leader: the
/// controller decides again then rather than at its next tick, so a failover does not wait
/// for the tick.
pub fn next_expiry(input: &Input<'_>) -> Option<Duration> {
    let owned = input
        .vips
        .iter()
        .filter(|v| v.owner != 0)
        .map(|v| input.obs.lease_expiry(&v.name, v.epoch));
    let retired = input
        .retired
        .iter()
        .map(|(name, r)| input.obs.lease_expiry(name, r.epoch));
    owned.chain(retired).filter(|t| *t > input.now).min()
}

/// How long a tick may skip deciding after one that decided nothing: nothing is decided
/// before `until` (leader's monotonic clock) nor before `until_wall_ms` (leader's wall clock)
/// as long as the state, the lease settings and what the book observed stay as they were,
/// but for contacts of the agents of `listen`, which count as a change (see
/// `LeaseBook::decide_at`). Conservative: a moment it names too early costs one full
/// decision, never a late one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calm {
    pub until: Duration,
    pub until_wall_ms: u64,
    pub listen: BTreeSet<NodeId>,
}

/// A quiet tick is trusted at most this long: a full decision runs at least this often.
pub const CALM_AT_MOST: Duration = Duration::from_secs(1);

/// When `decide` may first decide something again, for an `input` on which it decided
/// nothing, if only time passes and the agents that are alive keep renewing: the first lease
/// that runs out at the leader (of an owned VIP or a retired address: a grant only moves that
/// later), the first alive node whose silence reaches `node_down_after` (a contact only moves
/// that later), the first higher-priority node whose preemption delay ends (wall clock, and
/// the monotonic clock for one that reported the VIP placeable again), and the nodes not
/// alive, whose first contact may bring them back. Every other input of a decision is the
/// state's or a change of the book's (a confirmation, a new epoch granted, a change of what
/// an agent cannot place).
pub fn calm(input: &Input<'_>) -> Calm {
    let mut until = input.now + CALM_AT_MOST;
    for v in input.vips.iter().filter(|v| v.owner != 0) {
        until = until.min(input.obs.lease_expiry(&v.name, v.epoch));
    }
    for (name, r) in input.retired {
        until = until.min(input.obs.lease_expiry(name, r.epoch));
    }
    let mut listen = BTreeSet::new();
    for (id, node) in input.nodes {
        if node.alive {
            let seen = input.obs.agent_seen.get(id).copied();
            let since = seen.map_or(input.obs.leader_since, |s| s.max(input.obs.leader_since));
            until = until.min(since + input.cfg.node_down_after);
        } else {
            listen.insert(*id);
        }
    }
    let alive = |id: NodeId| input.nodes.get(&id).is_some_and(|n| n.alive);
    let mut until_wall_ms = u64::MAX;
    for v in input.vips.iter().filter(|v| v.owner != 0 && v.preempt) {
        let Some(svc) = input.services.get(&v.service) else {
            continue;
        };
        let owner_prio = priority(v, v.owner);
        for id in svc.backends.keys().copied() {
            if priority(v, id) <= owner_prio {
                continue;
            }
            if let Some(since) = eligible_since(input, v, id, &alive) {
                let delay = v.preempt_delay.as_millis() as u64;
                until_wall_ms = until_wall_ms.min(since.saturating_add(delay));
                if let Some(at) = placeable_wait_ends(input, v, id).filter(|at| *at > input.now) {
                    until = until.min(at);
                }
            }
        }
    }
    Calm {
        until,
        until_wall_ms,
        listen,
    }
}

fn liveness(input: &Input<'_>) -> Vec<Action> {
    let mut out = Vec::new();
    for (id, node) in input.nodes {
        // Silence counts from the later of the last contact and this leader's election.
        let seen = input.obs.agent_seen.get(id).copied();
        let since = seen.map_or(input.obs.leader_since, |s| s.max(input.obs.leader_since));
        let silent = input.now.saturating_sub(since) >= input.cfg.node_down_after;
        let heard_lately =
            seen.is_some_and(|s| input.now.saturating_sub(s) < input.cfg.node_down_after);
        if node.alive && silent {
            out.push(Action::SetNodeAlive {
                node: *id,
                alive: false,
            });
        } else if !node.alive && heard_lately {
            out.push(Action::SetNodeAlive {
                node: *id,
                alive: true,
            });
        }
    }
    out
}

/// Whether `id` may hold `vip`, and since when (leader wall-clock ms) its backend is healthy.
fn eligible_since(
    input: &Input<'_>,
    vip: &VipView,
    id: NodeId,
    alive: &dyn Fn(NodeId) -> bool,
) -> Option<u64> {
    let node = input.nodes.get(&id)?;
    if node.admin != model::AdminState::Active || !alive(id) || !input.obs.can_place(id, &vip.name)
    {
        return None;
    }
    let svc = input.services.get(&vip.service)?;
    let backend = svc.backends.get(&id)?;
    if !runs_a_placeable_release(svc, backend) {
        return None;
    }
    (backend.health == model::Health::Healthy).then_some(backend.changed_ms)
}

/// When `id`'s wait to preempt `vip` ends for having reported it unplaceable earlier in this
/// term (leader's monotonic clock): the preemption delay from when it reported it placeable
/// again. None: it did not (only its health counts, `eligible_since`).
fn placeable_wait_ends(input: &Input<'_>, vip: &VipView, id: NodeId) -> Option<Duration> {
    let since = input.obs.placeable_again(id, &vip.name)?;
    Some(since.saturating_add(vip.preempt_delay))
}

/// A VIP goes only to a node that runs the active release (during a rollout: the release
/// rolled out or the one it started from) and is not switching between releases. Services
/// without releases are not constrained.
fn runs_a_placeable_release(svc: &model::Service, b: &model::Backend) -> bool {
    match &svc.rollout {
        Some(r) if crate::member::state::releases::in_progress(svc) => {
            let want = r.desired.get(&b.node_id).map_or("", String::as_str);
            let switching = !want.is_empty() && want != b.applied_release;
            !switching && (b.applied_release == r.release || b.applied_release == r.from_release)
        }
        _ => svc.active_release.is_empty() || b.applied_release == svc.active_release,
    }
}

fn priority(vip: &VipView, id: NodeId) -> i32 {
    vip.priorities.get(&id).copied().unwrap_or(0)
}

/// The best eligible node: highest priority, then not the leader, then lowest id.
fn best(input: &Input<'_>, vip: &VipView, alive: &dyn Fn(NodeId) -> bool) -> Option<NodeId> {
    let svc = input.services.get(&vip.service)?;
    svc.backends
        .keys()
        .copied()
        .filter(|id| eligible_since(input, vip, *id, alive).is_some())
        .max_by_key(|id| {
            (
                priority(vip, *id),
                *id != input.leader,
                std::cmp::Reverse(*id),
            )
        })
}

/// The operator's target if it can take the VIP, else the best node.
fn target(input: &Input<'_>, vip: &VipView, alive: &dyn Fn(NodeId) -> bool) -> Option<NodeId> {
    if vip.move_to != 0 && eligible_since(input, vip, vip.move_to, alive).is_some() {
        return Some(vip.move_to);
    }
    best(input, vip, alive)
}

fn place(input: &Input<'_>, vip: &VipView, alive: &dyn Fn(NodeId) -> bool) -> Option<Action> {
    match decide_vip(input, vip, alive) {
        Some(Action::Assign { .. }) if held_back_by_retired(input, vip) => None,
        a => a,
    }
}

fn decide_vip(input: &Input<'_>, vip: &VipView, alive: &dyn Fn(NodeId) -> bool) -> Option<Action> {
    let next_epoch = vip.epoch + 1;
    let assign_best = |input: &Input<'_>| {
        target(input, vip, alive).map(|node| Action::Assign {
            vip: vip.name.clone(),
            node,
            epoch: next_epoch,
        })
    };
    if vip.owner == 0 {
        return assign_best(input);
    }
    let lease_held = input.obs.lease_held(&vip.name, vip.epoch, input.now);
    let confirmed_release = input.obs.released.get(&vip.name) == Some(&vip.epoch);
    if !lease_held || (vip.releasing && confirmed_release) {
        // The old owner no longer answers: hand over at once, or leave it unowned.
        return match target(input, vip, &|id| id != vip.owner && alive(id)) {
            Some(node) => Some(Action::Assign {
                vip: vip.name.clone(),
                node,
                epoch: next_epoch,
            }),
            None if !lease_held => Some(Action::Revoke {
                vip: vip.name.clone(),
                epoch: vip.epoch,
            }),
            // Released but nobody else can take it: give it back to the owner if eligible.
            None => assign_best(input),
        };
    }
    if vip.releasing {
        return None; // waiting for the owner's confirmation or its lease to run out
    }
    let release = || Action::Release {
        vip: vip.name.clone(),
        owner: vip.owner,
        epoch: vip.epoch,
    };
    if vip.move_to != 0
        && vip.move_to != vip.owner
        && eligible_since(input, vip, vip.move_to, alive).is_some()
    {
        return Some(release()); // an operator's planned move
    }
    if eligible_since(input, vip, vip.owner, alive).is_none() {
        // Planned move, only if someone can take it; otherwise keep serving.
        return best(input, vip, alive).map(|_| release());
    }
    if vip.preempt {
        let owner_prio = priority(vip, vip.owner);
        let svc = input.services.get(&vip.service)?;
        let preemptor = svc.backends.keys().copied().find(|id| {
            priority(vip, *id) > owner_prio
                && eligible_since(input, vip, *id, alive).is_some_and(|since| {
                    input.now_wall_ms.saturating_sub(since) >= vip.preempt_delay.as_millis() as u64
                })
                && placeable_wait_ends(input, vip, *id).is_none_or(|at| input.now >= at)
        });
        if preemptor.is_some() {
            return Some(release());
        }
    }
    None
}

#[cfg(test)]
mod tests;
