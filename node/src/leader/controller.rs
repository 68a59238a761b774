//! The leader's controller: a pure function of (state, leader-local observations, now) that
//! yields the commands to propose. No IO, no clock: tested by asserting the actions it returns.
//!
//! Placement rules:
//! - a node is eligible for a VIP when it is a backend of the VIP's service, its admin state is
//!   active, it is alive, and its backend is healthy;
//! - an owned VIP stays where it is while its owner is eligible (sticky), unless preemption is
//!   on and a node with a higher priority has been eligible for at least the preemption delay;
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
/// that later), the first higher-priority node whose preemption delay ends (wall clock), and
/// the nodes not alive, whose first contact may bring them back. Every other input of a
/// decision is the state's or a change of the book's (a confirmation, a new epoch granted).
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
    if node.admin != model::AdminState::Active || !alive(id) {
        return None;
    }
    let svc = input.services.get(&vip.service)?;
    let backend = svc.backends.get(&id)?;
    if !runs_a_placeable_release(svc, backend) {
        return None;
    }
    (backend.health == model::Health::Healthy).then_some(backend.changed_ms)
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
        });
        if preemptor.is_some() {
            return Some(release());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    struct World {
        nodes: BTreeMap<NodeId, model::Node>,
        services: BTreeMap<String, model::Service>,
        vips: Vec<VipView>,
        retired: BTreeMap<String, RetiredVip>,
        obs: Observations,
        leader: NodeId,
        now: Duration,
        now_wall_ms: u64,
        cfg: ControllerConfig,
    }

    impl World {
        /// Three alive, active, healthy nodes (healthy since wall time 0), one VIP "v" of
        /// service "web", unowned; the leader was elected at t=100 s and hears every agent now.
        fn new() -> Self {
            let now = 100 * SEC;
            let mut nodes = BTreeMap::new();
            let mut backends = BTreeMap::new();
            let cfg = ControllerConfig::default();
            let mut obs = Observations {
                leader_since: now,
                inherited_span: cfg.lease.lease + cfg.lease.leader_margin,
                ..Default::default()
            };
            for id in 1..=3 {
                nodes.insert(
                    id,
                    model::Node {
                        id,
                        admin: model::AdminState::Active,
                        alive: true,
                        ..Default::default()
                    },
                );
                backends.insert(
                    id,
                    model::Backend {
                        node_id: id,
                        health: model::Health::Healthy,
                        changed_ms: 0,
                        ..Default::default()
                    },
                );
                obs.agent_seen.insert(id, now);
            }
            let services = BTreeMap::from([(
                "web".to_string(),
                model::Service {
                    name: "web".into(),
                    backends,
                    ..Default::default()
                },
            )]);
            World {
                nodes,
                services,
                vips: vec![VipView {
                    name: "v".into(),
                    service: "web".into(),
                    address: "10.213.0.100/24".into(),
                    owner: 0,
                    epoch: 0,
                    releasing: false,
                    preempt: false,
                    preempt_delay: Duration::ZERO,
                    priorities: BTreeMap::new(),
                    move_to: 0,
                }],
                retired: BTreeMap::new(),
                obs,
                leader: 0,
                now,
                now_wall_ms: 1_000_000,
                cfg,
            }
        }

        fn decide(&self) -> Vec<Action> {
            decide(&self.input())
        }

        fn input(&self) -> Input<'_> {
            Input {
                nodes: &self.nodes,
                services: &self.services,
                vips: &self.vips,
                retired: &self.retired,
                obs: &self.obs,
                leader: self.leader,
                now: self.now,
                now_wall_ms: self.now_wall_ms,
                cfg: &self.cfg,
            }
        }

        /// Applies the actions as the state machine would.
        fn apply(&mut self, actions: &[Action]) {
            for a in actions {
                match a {
                    Action::Assign { vip, node, epoch } => {
                        let v = self.vips.iter_mut().find(|v| &v.name == vip).unwrap();
                        assert!(*epoch > v.epoch, "epochs only grow");
                        if self.retired.get(vip).is_some_and(|r| !r.deleted) {
                            self.retired.remove(vip);
                        }
                        v.owner = *node;
                        v.epoch = *epoch;
                        v.releasing = false;
                        v.move_to = 0;
                        let g = self.grant(*epoch);
                        self.obs.granted.insert(vip.clone(), g);
                    }
                    Action::Release { .. } => self.vips[0].releasing = true,
                    Action::Revoke { .. } => {
                        self.vips[0].owner = 0;
                        self.vips[0].releasing = false;
                    }
                    Action::SetNodeAlive { node, alive } => {
                        self.nodes.get_mut(node).unwrap().alive = *alive
                    }
                    Action::ClearRetired { vip, .. } => {
                        self.retired.remove(vip);
                    }
                }
            }
        }

        /// A grant now, at `epoch`, of the configured lease.
        fn grant(&self, epoch: u64) -> Grant {
            Grant {
                epoch,
                until: self.now + self.cfg.lease.lease + self.cfg.lease.leader_margin,
            }
        }

        fn set_health(&mut self, id: NodeId, h: model::Health) {
            let b = self
                .services
                .get_mut("web")
                .unwrap()
                .backends
                .get_mut(&id)
                .unwrap();
            b.health = h;
            b.changed_ms = self.now_wall_ms;
        }

        fn tick(&mut self, d: Duration) {
            self.now += d;
            self.now_wall_ms += d.as_millis() as u64;
        }

        /// Agents of these nodes renew now (the owner's grant too).
        fn heard(&mut self, ids: &[NodeId]) {
            for id in ids {
                self.obs.agent_seen.insert(*id, self.now);
                if self.vips[0].owner == *id && !self.vips[0].releasing {
                    let g = self.grant(self.vips[0].epoch);
                    self.obs.granted.insert("v".into(), g);
                }
            }
        }
    }

    fn release(owner: NodeId, epoch: u64) -> Action {
        Action::Release {
            vip: "v".into(),
            owner,
            epoch,
        }
    }

    fn assign(node: NodeId, epoch: u64) -> Action {
        Action::Assign {
            vip: "v".into(),
            node,
            epoch,
        }
    }

    #[test]
    fn places_an_unowned_vip_on_the_best_node_and_keeps_it_there() {
        let mut w = World::new();
        assert_eq!(
            w.decide(),
            vec![assign(1, 1)],
            "lowest id among equal priorities"
        );
        w.apply(&w.decide());
        // Sticky: a node with higher priority appears, without preemption nothing moves.
        w.vips[0].priorities.insert(3, 10);
        assert_eq!(w.decide(), vec![]);
    }

    #[test]
    fn the_leader_takes_a_vip_only_when_no_equal_node_can() {
        let mut w = World::new();
        w.leader = 1;
        assert_eq!(
            w.decide(),
            vec![assign(2, 1)],
            "node 1 leads: next lowest id"
        );
        // Priority still wins over leader avoidance.
        w.vips[0].priorities.insert(1, 5);
        assert_eq!(w.decide(), vec![assign(1, 1)]);
        w.vips[0].priorities.clear();
        // Sticky: a VIP already on the leader is not moved for it.
        w.apply(&[assign(1, 1)]);
        assert_eq!(w.decide(), vec![]);
        // Alone eligible, the leader takes it.
        let mut w = World::new();
        w.leader = 1;
        for id in [2, 3] {
            w.nodes.get_mut(&id).unwrap().admin = model::AdminState::Draining;
        }
        assert_eq!(w.decide(), vec![assign(1, 1)]);
    }

    #[test]
    fn vips_go_only_to_nodes_running_a_placeable_release_and_not_switching() {
        let mut w = World::new();
        let svc = w.services.get_mut("web").unwrap();
        svc.active_release = "v1".into();
        for (id, b) in svc.backends.iter_mut() {
            b.applied_release = if *id == 1 { "v0".into() } else { "v1".into() };
        }
        assert_eq!(w.decide(), vec![assign(2, 1)], "node 1 runs an old release");
        // During a rollout of v2 from v1: node 2 switching is out, node 3 on v1 is in.
        let svc = w.services.get_mut("web").unwrap();
        svc.rollout = Some(model::Rollout {
            release: "v2".into(),
            from_release: "v1".into(),
            state: model::RolloutState::Running,
            desired: [(1, "v1".into()), (2, "v2".into()), (3, "v1".into())]
                .into_iter()
                .collect(),
            ..Default::default()
        });
        assert_eq!(w.decide(), vec![assign(3, 1)]);
        // Once node 2 runs v2 it is placeable again (and preferred by id).
        w.services
            .get_mut("web")
            .unwrap()
            .backends
            .get_mut(&2)
            .unwrap()
            .applied_release = "v2".into();
        assert_eq!(w.decide(), vec![assign(2, 1)]);
    }

    #[test]
    fn priority_wins_on_placement_and_preemption_waits_for_its_delay() {
        let mut w = World::new();
        w.vips[0].priorities.insert(2, 5);
        assert_eq!(w.decide(), vec![assign(2, 1)]);
        w.apply(&w.decide());
        // Node 3 gets a higher priority; preemption with a 5 s delay.
        w.vips[0].priorities.insert(3, 9);
        w.vips[0].preempt = true;
        w.vips[0].preempt_delay = 5 * SEC;
        w.set_health(3, model::Health::Healthy); // healthy "since now"
        w.tick(4 * SEC);
        w.heard(&[1, 2, 3]);
        assert_eq!(w.decide(), vec![], "not eligible long enough");
        w.tick(SEC);
        w.heard(&[1, 2, 3]);
        let a = w.decide();
        assert_eq!(a, vec![release(2, 1)]);
        w.apply(&a);
        // Break before make: nothing until the owner confirms...
        assert_eq!(w.decide(), vec![]);
        w.obs.released.insert("v".into(), 1);
        assert_eq!(w.decide(), vec![assign(3, 2)]);
    }

    #[test]
    fn drain_and_unhealthy_owner_are_planned_moves() {
        for how in ["drain", "maintenance", "unhealthy"] {
            let mut w = World::new();
            w.apply(&w.decide());
            assert_eq!(w.vips[0].owner, 1);
            match how {
                "drain" => w.nodes.get_mut(&1).unwrap().admin = model::AdminState::Draining,
                "maintenance" => {
                    w.nodes.get_mut(&1).unwrap().admin = model::AdminState::Maintenance
                }
                _ => w.set_health(1, model::Health::Unhealthy),
            }
            let a = w.decide();
            assert_eq!(a, vec![release(1, 1)], "{how}");
            w.apply(&a);
            w.obs.released.insert("v".into(), 1);
            assert_eq!(w.decide(), vec![assign(2, 2)], "{how}");
        }
    }

    #[test]
    fn a_silent_owner_loses_the_vip_only_after_its_lease_expires_at_the_leader() {
        let mut w = World::new();
        w.apply(&w.decide());
        // Node 1's agent goes silent (killed, paused or cut off); the others keep renewing.
        let l = w.cfg.lease;
        let expiry = l.lease + l.leader_margin;
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        loop {
            w.tick(step);
            waited += step;
            w.heard(&[2, 3]);
            let a = w.decide();
            if waited < expiry {
                assert!(
                    a.iter().all(|x| !matches!(x, Action::Assign { .. })),
                    "reassigned after {waited:?}, before the lease ({expiry:?}) expired: {a:?}"
                );
            } else {
                assert!(a.contains(&assign(2, 2)), "after {waited:?}: {a:?}");
                break;
            }
        }
        // Later the silent node is marked down, too.
        w.apply(&[assign(2, 2)]);
        w.tick(2 * SEC);
        w.heard(&[2, 3]);
        assert!(w.decide().contains(&Action::SetNodeAlive {
            node: 1,
            alive: false
        }));
    }

    #[test]
    fn a_new_leader_waits_a_full_lease_from_its_election() {
        let mut w = World::new();
        w.vips[0].owner = 1;
        w.vips[0].epoch = 7;
        // New leader: no grants known, node 1 never heard since the election.
        w.obs.granted.clear();
        w.obs.agent_seen.remove(&1);
        w.tick(Duration::from_millis(800));
        w.heard(&[2, 3]);
        assert_eq!(
            w.decide(),
            vec![],
            "lease counted from the election is still alive"
        );
        w.tick(Duration::from_millis(100));
        w.heard(&[2, 3]);
        assert_eq!(w.decide(), vec![assign(2, 8)]);
    }

    #[test]
    fn the_next_expiry_is_that_of_the_earliest_owned_lease() {
        let mut w = World::new();
        assert_eq!(next_expiry(&w.input()), None, "nothing owned");
        w.apply(&w.decide());
        // Owned, never granted by this leader: counted from the election (t = 100 s).
        let at_election = w.now + Duration::from_millis(850);
        assert_eq!(next_expiry(&w.input()), Some(at_election));
        w.obs.granted.insert(
            "v".into(),
            Grant {
                until: w.grant(1).until + SEC,
                ..w.grant(1)
            },
        );
        assert_eq!(next_expiry(&w.input()), Some(at_election + SEC));
        // Past expiries are not waited for.
        w.tick(10 * SEC);
        assert_eq!(next_expiry(&w.input()), None);
    }

    #[test]
    fn nothing_eligible_means_revoked_not_misplaced() {
        let mut w = World::new();
        w.apply(&w.decide());
        for id in 2..=3 {
            w.set_health(id, model::Health::Unhealthy);
        }
        // Owner still fine: no planned move without a taker.
        w.nodes.get_mut(&1).unwrap().admin = model::AdminState::Draining;
        assert_eq!(w.decide(), vec![]);
        // Its lease runs out (agent gone): revoked, not handed to an unhealthy node.
        w.tick(SEC);
        assert!(w.decide().contains(&Action::Revoke {
            vip: "v".into(),
            epoch: 1
        }));
    }

    #[test]
    fn an_operator_move_is_break_before_make_to_the_chosen_node() {
        let mut w = World::new();
        w.apply(&w.decide());
        w.vips[0].move_to = 3;
        let a = w.decide();
        assert_eq!(a, vec![release(1, 1)]);
        w.apply(&a);
        assert_eq!(w.decide(), vec![]);
        w.obs.released.insert("v".into(), 1);
        assert_eq!(
            w.decide(),
            vec![assign(3, 2)],
            "the target, not the best node (2)"
        );
        w.apply(&[assign(3, 2)]);
        assert_eq!(w.vips[0].move_to, 0);
        assert_eq!(w.decide(), vec![], "then sticky");
    }

    #[test]
    fn a_recovered_agent_is_marked_alive_again() {
        let mut w = World::new();
        w.nodes.get_mut(&3).unwrap().alive = false;
        assert!(w.decide().contains(&Action::SetNodeAlive {
            node: 3,
            alive: true
        }));
        w.obs.agent_seen.remove(&3);
        w.tick(3 * SEC);
        w.heard(&[1, 2]);
        assert!(!w
            .decide()
            .iter()
            .any(|a| matches!(a, Action::SetNodeAlive { node: 3, .. })));
    }

    /// VIP "v" was deleted while node 1 held it at epoch 1, and "w" is made with its address.
    fn deleted_and_made_again(w: &mut World) {
        w.apply(&w.decide());
        assert_eq!(w.vips[0].owner, 1);
        let old = w.vips.remove(0);
        w.retired.insert(
            "v".into(),
            RetiredVip {
                address: old.address.clone(),
                interface: "eth0".into(),
                owner: 1,
                epoch: 1,
                deleted: true,
            },
        );
        w.vips.push(VipView {
            name: "w".into(),
            owner: 0,
            epoch: 0,
            ..old
        });
    }

    #[test]
    fn a_deleted_vips_address_goes_to_no_vip_until_its_owner_let_go() {
        // Its lease runs out.
        let mut w = World::new();
        deleted_and_made_again(&mut w);
        w.tick(Duration::from_millis(800));
        w.heard(&[2, 3]);
        assert_eq!(w.decide(), vec![], "the old owner may still answer");
        w.tick(Duration::from_millis(50));
        w.heard(&[2, 3]);
        let a = w.decide();
        assert!(
            a.contains(&Action::ClearRetired {
                vip: "v".into(),
                epoch: 1
            }) && a
                .iter()
                .any(|x| matches!(x, Action::Assign { vip, .. } if vip == "w")),
            "{a:?}"
        );
        // Or its owner confirms.
        let mut w = World::new();
        deleted_and_made_again(&mut w);
        w.obs.released.insert("v".into(), 1);
        let a = w.decide();
        assert!(a.contains(&Action::ClearRetired {
            vip: "v".into(),
            epoch: 1
        }));
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Assign { vip, .. } if vip == "w")));
    }

    #[test]
    fn a_changed_address_is_a_planned_move_at_a_higher_epoch() {
        let mut w = World::new();
        w.apply(&w.decide());
        // The state machine keeps the old address retired and asks the owner to release.
        w.retired.insert(
            "v".into(),
            RetiredVip {
                address: w.vips[0].address.clone(),
                interface: "eth0".into(),
                owner: 1,
                epoch: 1,
                deleted: false,
            },
        );
        w.vips[0].address = "10.213.0.101/24".into();
        w.vips[0].releasing = true;
        assert_eq!(w.decide(), vec![], "nothing until the owner let go");
        w.obs.released.insert("v".into(), 1);
        let a = w.decide();
        assert!(a.contains(&assign(2, 2)), "{a:?}");
        w.apply(&a);
        assert!(w.retired.is_empty());
    }

    /// Review finding: `held_back_by_retired` compares address strings, so a deleted VIP's
    /// address written with another prefix length ("10.213.0.100/25" after
    /// "10.213.0.100/24") is not held back, although it is the same IP the old owner may still
    /// answer for (an operator who deletes a VIP and makes it again with a corrected prefix).
    #[test]
    fn review_a_retired_ip_holds_back_a_vip_under_another_prefix() {
        let mut w = World::new();
        deleted_and_made_again(&mut w);
        w.vips[0].address = "10.213.0.100/25".into();
        // The new VIP prefers node 2: another server than the old holder.
        w.vips[0].priorities.insert(2, 10);
        w.heard(&[2, 3]);
        let a = w.decide();
        assert!(
            !a.iter()
                .any(|x| matches!(x, Action::Assign { vip, .. } if vip == "w")),
            "VIP w (10.213.0.100/25) was placed while node 1 may still answer for the retired \
             10.213.0.100/24 of deleted VIP v: {a:?}"
        );
    }
}
