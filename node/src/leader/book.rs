//! The leader's lease book: the one owner of what the leader observed in its term (lease
//! grants, agent contacts, confirmed releases) and of the decisions that end leases.
//!
//! Grants and the controller's decisions go through this book under one lock, and that is
//! what makes them exclusive: a renewal is granted only if the lease it renews has not been
//! decided over, and a lease is decided over only by looking at the grants made so far. So once
//! the controller has decided that the lease of (vip, epoch) is over (it proposes the next
//! owner or a revocation), no renewal of (vip, epoch) is ever granted again in this term, even
//! one that arrives before the decision commits. Pure: the caller passes the applied state and
//! the time, and must read the time while it holds the book.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ballast_proto::v1;

use crate::leader::controller::{
    self, Action, Calm, ControllerConfig, Grant, Observations, VipView,
};
use crate::lease::LeaseSettings;
use crate::model;
use crate::model::RetiredVip;
use crate::types::{LogId, NodeId, Op};

/// The lease lengths the leader works with at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// What a grant made now is worth at the leader: lease + margin.
    pub span: Duration,
    /// How long after its election a lease granted by an earlier leader may still be held.
    pub inherited_span: Duration,
    /// The lease a grant made now gives the agent (counted from its send).
    pub lease: Duration,
    /// The settings these come from (sent to agents with their grants).
    pub settings: LeaseSettings,
}

/// The leader's observations for one term.
#[derive(Debug, Clone, Default)]
pub struct LeaseBook {
    term: u64,
    obs: Observations,
    /// Leases this leader decided are over (it proposed a reassignment or a revocation):
    /// never granted again. By VIP name, so a renewal looks its claims up without making a key.
    over: BTreeMap<String, BTreeSet<u64>>,
    /// Since when this leader has seen the lease settings at this generation with a longer
    /// wait than their own span (a shorter lease was set): once that wait has passed, every
    /// grant of the longer lease is over.
    settling: Option<(u64, Duration)>,
    /// Nodes whose leases this leader is moving to another agent process (proposed, not yet
    /// applied): no grant to the node until the new binding is in the state. Each mark is the
    /// process it is for and a ticket of its own (an instance id may come back).
    rebinding: BTreeMap<NodeId, (u64, u64)>,
    /// The last ticket handed out by `begin_rebind`.
    tickets: u64,
    /// Set by a decision that found nothing to do (`decide_at`): until when the next ticks
    /// may skip deciding, and on what. Dropped by every change of the book a decision reads
    /// that is not only a later expiry (see `unsettle`).
    quiet: Option<Quiet>,
}

/// What a skipped tick relies on: the applied state (its last log id), the lease terms and
/// the moments before which nothing is decided (`controller::calm`).
#[derive(Debug, Clone)]
struct Quiet {
    applied: Option<LogId>,
    terms: LeaseTerms,
    calm: Calm,
}

/// Finds VIPs of a `World` by name: by binary search when the views are sorted by name with no
/// name twice (as the loop and the tests make them, from the state's map), else by reading
/// them all (as before, for any other slice). So the book's bookkeeping after a decision is
/// O(V + decisions x log V), not O(decisions x V) (issue 14).
struct ViewIndex<'a> {
    vips: &'a [VipView],
    sorted: bool,
}

impl<'a> ViewIndex<'a> {
    fn of(vips: &'a [VipView]) -> Self {
        ViewIndex {
            vips,
            sorted: vips.windows(2).all(|w| w[0].name < w[1].name),
        }
    }

    /// The first view named `name`.
    fn first(&self, name: &str) -> Option<&'a VipView> {
        if self.sorted {
            let i = self
                .vips
                .binary_search_by(|v| v.name.as_str().cmp(name))
                .ok()?;
            return Some(&self.vips[i]);
        }
        self.vips.iter().find(|v| v.name == name)
    }

    /// The first view named `name` that has an owner.
    fn owned(&self, name: &str) -> Option<&'a VipView> {
        if self.sorted {
            return self.first(name).filter(|v| v.owner != 0);
        }
        self.vips.iter().find(|v| v.name == name && v.owner != 0)
    }
}

/// The rest of what the controller reads (the book supplies the observations).
pub struct World<'a> {
    pub nodes: &'a BTreeMap<NodeId, model::Node>,
    pub services: &'a BTreeMap<String, model::Service>,
    pub vips: &'a [VipView],
    pub retired: &'a BTreeMap<String, RetiredVip>,
    pub leader: NodeId,
    /// Read while holding the book.
    pub now: Duration,
    pub now_wall_ms: u64,
    pub cfg: &'a ControllerConfig,
}

impl LeaseTerms {
    /// The terms of `settings`, with `wait_ms` the state's wait for grants of a longer lease
    /// set before (`StateData::lease_wait_ms`).
    pub fn of(settings: LeaseSettings, wait_ms: u64) -> Self {
        let span = Duration::from_millis(settings.span_ms());
        LeaseTerms {
            span,
            inherited_span: Duration::from_millis(wait_ms).max(span),
            lease: Duration::from_millis(settings.lease_ms),
            settings,
        }
    }
}

impl LeaseBook {
    /// A new term's book: every lease is counted from `now` (the election, or later).
    pub fn new(term: u64, now: Duration) -> Self {
        LeaseBook {
            term,
            obs: Observations {
                leader_since: now,
                ..Default::default()
            },
            over: BTreeMap::new(),
            settling: None,
            rebinding: BTreeMap::new(),
            tickets: 0,
            quiet: None,
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// Everything in the book a later grant or decision can depend on, as text: not the
    /// agents' last contacts (liveness reads them, after `node_down_after`) nor what they
    /// reported holding; what they cannot place, yes (by VIP). For the model check (`tests/lease_model.rs`), which tells states
    /// apart by it.
    #[doc(hidden)]
    pub fn decisions_key(&self) -> String {
        self.decisions_key_seen(&|d| d.as_nanos())
    }

    /// [`LeaseBook::decisions_key`] with each moment in it (the election, the expiries of
    /// grants, the start of a settling) as `moment` tells it: the model check reads its
    /// clock only at some moments, and two moments between the same two of those are one.
    #[doc(hidden)]
    pub fn decisions_key_seen(&self, moment: &dyn Fn(Duration) -> u128) -> String {
        let granted: Vec<(&String, u64, u128)> = self
            .obs
            .granted
            .iter()
            .map(|(vip, g)| (vip, g.epoch, moment(g.until)))
            .collect();
        let unplaceable: Vec<(NodeId, Vec<&String>)> = self
            .obs
            .unplaceable
            .iter()
            .map(|(node, u)| (*node, u.keys().collect()))
            .collect();
        let placeable_since: Vec<(NodeId, Vec<(&String, u128)>)> = self
            .obs
            .placeable_since
            .iter()
            .map(|(node, p)| (*node, p.iter().map(|(vip, t)| (vip, moment(*t))).collect()))
            .collect();
        format!(
            "{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.term,
            self.over,
            self.settling
                .map(|(generation, since)| (generation, moment(since))),
            self.rebinding,
            moment(self.obs.leader_since),
            self.obs.inherited_span,
            granted,
            self.obs.released,
            unplaceable,
            placeable_since
        )
    }

    pub fn obs(&self) -> &Observations {
        &self.obs
    }

    /// Something a decision reads changed other than by moving an expiry later: the next
    /// tick decides in full.
    fn unsettle(&mut self) {
        self.quiet = None;
    }

    /// Whether this leader decided that the lease of (`vip`, `epoch`) is over.
    fn is_over(&self, vip: &str, epoch: u64) -> bool {
        self.over.get(vip).is_some_and(|e| e.contains(&epoch))
    }

    fn set_terms(&mut self, terms: LeaseTerms) {
        self.obs.inherited_span = terms.inherited_span;
    }

    /// An agent's renewal, against the applied state `vips` (read after a quorum confirmed this
    /// leadership, once the request had arrived). A claim is granted when the node owns the
    /// VIP at that epoch, no release is asked, and the lease is not decided over.
    ///
    /// `bound`: the agent process the state binds the node's leases to. Only that process
    /// is granted anything (an agent that predates processes, instance 0, only while none is
    /// bound); another one is refused, with the reason.
    pub fn renew(
        &mut self,
        vips: &BTreeMap<String, model::Vip>,
        req: &v1::RenewRequest,
        bound: Option<u64>,
        now: Duration,
        terms: LeaseTerms,
    ) -> (Vec<v1::LeaseGrant>, Option<String>) {
        self.set_terms(terms);
        let node = req.node_id;
        self.settle_mark(node, bound);
        if let Some(refused) = self.refuse_process(node, req.instance, bound) {
            let grants = req
                .claims
                .iter()
                .map(|c| v1::LeaseGrant {
                    vip: c.vip.clone(),
                    epoch: c.epoch,
                    granted: false,
                })
                .collect();
            return (grants, Some(refused));
        }
        // A node the state shows down may be brought back by this contact.
        if self
            .quiet
            .as_ref()
            .is_some_and(|q| q.calm.listen.contains(&node))
        {
            self.unsettle();
        }
        self.obs.agent_seen.insert(node, now);
        // What it reports is copied only when it differs from its last report (it rarely does).
        let same_holding = self.obs.holding.get(&node).is_some_and(|h| {
            h.len() == req.holding.len()
                && h.iter()
                    .zip(&req.holding)
                    .all(|((vip, epoch), c)| *vip == c.vip && *epoch == c.epoch)
        });
        if !same_holding {
            self.obs.holding.insert(
                node,
                req.holding
                    .iter()
                    .map(|c| (c.vip.clone(), c.epoch))
                    .collect(),
            );
        }
        let same_haproxy = self
            .obs
            .haproxy
            .get(&node)
            .is_some_and(|(diffs, error)| *diffs == req.haproxy && *error == req.haproxy_error);
        if !same_haproxy {
            self.obs
                .haproxy
                .insert(node, (req.haproxy.clone(), req.haproxy_error.clone()));
        }
        self.note_unplaceable(node, &req.unplaceable, now);
        let grants = req
            .claims
            .iter()
            .map(|c| {
                let granted = vips
                    .get(&c.vip)
                    .is_some_and(|v| v.owner == node && v.epoch == c.epoch && !v.releasing)
                    && !self.is_over(&c.vip, c.epoch);
                if granted {
                    let until = now + terms.span;
                    // A grant at the epoch already recorded only moves its expiry later;
                    // one at another epoch ends what the record said of the old one.
                    match self.obs.granted.get_mut(c.vip.as_str()) {
                        Some(g) if g.epoch == c.epoch => {
                            *g = Grant::record(Some(*g), c.epoch, until)
                        }
                        Some(g) => {
                            *g = Grant::record(Some(*g), c.epoch, until);
                            self.quiet = None;
                        }
                        None => {
                            let g = Grant::record(None, c.epoch, until);
                            self.obs.granted.insert(c.vip.clone(), g);
                            self.quiet = None;
                        }
                    }
                }
                v1::LeaseGrant {
                    vip: c.vip.clone(),
                    epoch: c.epoch,
                    granted,
                }
            })
            .collect();
        (grants, None)
    }

    /// What `node`'s agent reports it cannot place (`report`, its whole list), copied only
    /// when it differs from its last report. A change is one the controller's eligibility
    /// reads, so it ends a skip (`decide_at`): the next tick decides in full. A VIP that
    /// leaves the list is placeable again from `now` (a preemption waits its delay from
    /// then). An agent that sends nothing (one from before the report) changes nothing.
    fn note_unplaceable(&mut self, node: NodeId, report: &[v1::Unplaceable], now: Duration) {
        let same = match self.obs.unplaceable.get(&node) {
            None => report.is_empty(),
            Some(had) => {
                had.len() == report.len() && report.iter().all(|u| had.get(&u.vip) == Some(u))
            }
        };
        if same {
            return;
        }
        let had = self.obs.unplaceable.remove(&node).unwrap_or_default();
        let new: BTreeMap<String, v1::Unplaceable> =
            report.iter().map(|u| (u.vip.clone(), u.clone())).collect();
        let back = self.obs.placeable_since.entry(node).or_default();
        for vip in had.keys().filter(|vip| !new.contains_key(*vip)) {
            back.insert(vip.clone(), now);
        }
        back.retain(|vip, _| !new.contains_key(vip));
        if back.is_empty() {
            self.obs.placeable_since.remove(&node);
        }
        if !new.is_empty() {
            self.obs.unplaceable.insert(node, new);
        }
        self.unsettle();
    }

    /// Why agent process `instance` may not act for `node` now (None: it may).
    pub fn refuse_process(
        &self,
        node: NodeId,
        instance: u64,
        bound: Option<u64>,
    ) -> Option<String> {
        // Moot once the state shows the move (its proposal may have timed out and committed).
        if let Some((to, _)) = self
            .rebinding
            .get(&node)
            .filter(|(to, _)| bound != Some(*to))
        {
            return Some(format!(
                "node {node}'s leases are moving to agent process {to:x}"
            ));
        }
        match bound {
            Some(b) if b == instance => None,
            None if instance == 0 => None,
            None => Some(format!(
                "agent process {instance:x} is not registered for node {node}: register first"
            )),
            Some(b) => Some(format!(
                "node {node}'s leases are bound to another agent process ({b:x}, not {instance:x}): two agents with one node id?"
            )),
        }
    }

    /// Whether `node`'s leases may move to another agent process now: every lease it may
    /// hold (of a VIP it owns, or of a retired address) is over at this leader. If so, no
    /// grant goes to the node until the state binds the new process or
    /// [`LeaseBook::rebound`] says the proposal settled (`bound`: the state's binding now).
    /// Returns the mark's ticket, for `rebound`.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_rebind(
        &mut self,
        node: NodeId,
        instance: u64,
        bound: Option<u64>,
        vips: &BTreeMap<String, model::Vip>,
        retired: &BTreeMap<String, RetiredVip>,
        now: Duration,
        terms: LeaseTerms,
    ) -> Result<u64, String> {
        self.set_terms(terms);
        self.settle_mark(node, bound);
        if let Some((to, _)) = self.rebinding.get(&node) {
            return Err(format!(
                "node {node}'s leases are already moving to agent process {to:x}"
            ));
        }
        let held = vips
            .values()
            .filter(|v| v.owner == node)
            .map(|v| (v.name.as_str(), v.epoch))
            .chain(
                retired
                    .iter()
                    .filter(|(_, r)| r.owner == node)
                    .map(|(name, r)| (name.as_str(), r.epoch)),
            )
            .find(|(name, epoch)| {
                let ended =
                    self.is_over(name, *epoch) || self.obs.released.get(*name) == Some(epoch);
                !ended && self.obs.lease_held(name, *epoch, now)
            });
        if let Some((name, epoch)) = held {
            let left = self.obs.lease_expiry(name, epoch).saturating_sub(now);
            return Err(format!(
                "node {node}'s leases are bound to another agent process, which may hold VIP {name:?} (epoch {epoch}) for {left:?} more: two agents with one node id? Retried once that lease is over"
            ));
        }
        self.tickets += 1;
        self.rebinding.insert(node, (instance, self.tickets));
        Ok(self.tickets)
    }

    /// Drops `node`'s rebinding mark once the state binds the process it was for (`bound`):
    /// that proposal committed, and the mark must not outlive it (a later unbinding would
    /// otherwise bring it back and refuse every process of the node for the rest of the term).
    /// Called with every look at the state's binding: renewals, binds, a bound process leaving.
    pub fn settle_mark(&mut self, node: NodeId, bound: Option<u64>) {
        if self
            .rebinding
            .get(&node)
            .is_some_and(|(to, _)| bound == Some(*to))
        {
            self.rebinding.remove(&node);
        }
    }

    /// The binding proposed by [`LeaseBook::begin_rebind`] was committed (applied, or refused
    /// by the state machine): nothing of it is pending. Not after a failure whose outcome is
    /// unknown (a timeout): the proposal may still commit, so the mark stays until the state
    /// shows the binding, or with this leader's term. Only the mark of that binding (its
    /// `ticket`) goes: a later move's mark, set meanwhile (even for the same process), stays.
    pub fn rebound(&mut self, node: NodeId, ticket: u64) {
        if self.rebinding.get(&node).is_some_and(|(_, t)| *t == ticket) {
            self.rebinding.remove(&node);
        }
    }

    /// The controller's decisions for this tick. Every lease a decision ends is recorded as
    /// over before the book is let go, so no renewal of it can be granted afterwards.
    pub fn decide(&mut self, w: &World<'_>, terms: LeaseTerms) -> Vec<Action> {
        self.unsettle();
        self.set_terms(terms);
        let actions = controller::decide(&self.input(w));
        let ends = actions.iter().filter_map(|a| match a {
            Action::Assign { vip, .. } | Action::Revoke { vip, .. } => Some(vip.as_str()),
            _ => None,
        });
        if ends.clone().next().is_none() && self.over.is_empty() {
            return actions;
        }
        let find = ViewIndex::of(w.vips);
        for vip in ends {
            if let Some(v) = find.owned(vip) {
                self.over.entry(v.name.clone()).or_default().insert(v.epoch);
            }
        }
        // A lease of an older epoch is refused by the state anyway: forget it.
        self.over.retain(|name, epochs| match find.first(name) {
            Some(v) => {
                epochs.retain(|epoch| v.epoch <= *epoch);
                !epochs.is_empty()
            }
            None => false,
        });
        actions
    }

    /// The controller's decisions for this tick, as [`LeaseBook::decide`] gives them, and
    /// when to decide again at the latest (the earliest lease expiry, as
    /// [`LeaseBook::next_expiry`]). `applied`: the last log id of the state `w` was read from.
    ///
    /// A tick that decided nothing lets the next ones skip deciding (no VIP is walked) while none of what a decision reads changed: the same applied state and lease
    /// terms, no change in the book but expiries moved later (a confirmed release, a grant at
    /// a new epoch, a contact from a node the state shows down, a change of what an agent
    /// reports it cannot place drop the skip), and now before
    /// the first moment time alone could make it decide something (`controller::calm`). A
    /// skipped tick decides nothing, which ends no lease: the rule that no renewal is granted
    /// once a lease is decided over is the full decision's, unchanged (issue 14: the book's
    /// lock was held through an O(V) decision every 50 ms).
    pub fn decide_at(
        &mut self,
        w: &World<'_>,
        applied: Option<LogId>,
        terms: LeaseTerms,
    ) -> (Vec<Action>, Option<Duration>) {
        if let Some(calm) = self.skips(applied, terms, w.now, w.now_wall_ms) {
            // Not after the first expiry: the expiries only moved later since.
            return (Vec::new(), Some(calm.until));
        }
        let actions = self.decide(w, terms);
        let input = self.input(w);
        let next = controller::next_expiry(&input);
        if actions.is_empty() {
            let calm = controller::calm(&input);
            self.quiet = Some(Quiet {
                applied,
                terms,
                calm,
            });
        }
        (actions, next)
    }

    /// Whether a tick at `now` (`now_wall_ms`) on the state applied up to `applied`, under
    /// `terms`, skips deciding ([`LeaseBook::decide_at`]), and on what calm. Public for the
    /// model check (`tests/lease_model.rs`), which tells states apart by it: a skip that no
    /// longer holds never holds again (the log id and the clocks only move on), so it is
    /// the same as none.
    #[doc(hidden)]
    pub fn skips(
        &self,
        applied: Option<LogId>,
        terms: LeaseTerms,
        now: Duration,
        now_wall_ms: u64,
    ) -> Option<&Calm> {
        self.quiet
            .as_ref()
            .filter(|q| {
                q.applied == applied
                    && q.terms == terms
                    && now < q.calm.until
                    && now_wall_ms < q.calm.until_wall_ms
            })
            .map(|q| &q.calm)
    }

    /// When the controller should decide again at the latest: the earliest lease expiry.
    pub fn next_expiry(&mut self, w: &World<'_>, terms: LeaseTerms) -> Option<Duration> {
        self.set_terms(terms);
        controller::next_expiry(&self.input(w))
    }

    fn input<'a>(&'a self, w: &World<'a>) -> controller::Input<'a> {
        controller::Input {
            nodes: w.nodes,
            services: w.services,
            vips: w.vips,
            retired: w.retired,
            obs: &self.obs,
            leader: w.leader,
            now: w.now,
            now_wall_ms: w.now_wall_ms,
            cfg: w.cfg,
        }
    }

    /// What the cluster's lease settings need from this leader, if anything: this member's
    /// configured ones when the cluster has none, and, after a shorter lease was set, the
    /// wait brought down to it once every grant of the longer one is over. Every grant under
    /// the old settings was made before this leader first saw the new ones applied (a grant
    /// reads the settings under the state's read lock, which the apply waits out), so it is
    /// over `wait` after that.
    pub fn lease_step(
        &mut self,
        lease: Option<LeaseSettings>,
        wait_ms: u64,
        generation: u64,
        own: LeaseSettings,
        now: Duration,
    ) -> Option<Op> {
        let Some(current) = lease else {
            return Some(Op::SetLease {
                settings: own,
                if_unset: true,
            });
        };
        if wait_ms <= current.span_ms() {
            self.settling = None;
            return None;
        }
        match self.settling {
            Some((g, since)) if g == generation => (now >= since + Duration::from_millis(wait_ms))
                .then_some(Op::SettleLease {
                    settings: current,
                    generation,
                }),
            // First seen, or anything changed since (even a raise and a return): from now.
            _ => {
                self.settling = Some((generation, now));
                None
            }
        }
    }

    /// An assignment committed: the new owner has a full lease from now to claim the VIP.
    pub fn assigned(&mut self, vip: &str, epoch: u64, now: Duration, terms: LeaseTerms) {
        let prev = self.obs.granted.get(vip).copied();
        let g = Grant::record(prev, epoch, now + terms.span);
        self.obs.granted.insert(vip.to_string(), g);
        self.unsettle();
    }

    /// The owner of (`vip`, `epoch`) confirmed it stopped answering (a planned move). True if
    /// that is who owns it, so the next owner may be assigned at once.
    pub fn confirm_release(
        &mut self,
        vips: &BTreeMap<String, model::Vip>,
        retired: &BTreeMap<String, RetiredVip>,
        node: NodeId,
        vip: &str,
        epoch: u64,
    ) -> bool {
        let owned = vips
            .get(vip)
            .is_some_and(|v| v.owner == node && v.epoch == epoch)
            || retired
                .get(vip)
                .is_some_and(|r| r.owner == node && r.epoch == epoch);
        if owned {
            self.obs.released.insert(vip.to_string(), epoch);
            self.unsettle();
        }
        owned
    }

    /// How long the leader still counts the lease of (`vip`, `epoch`) as held.
    pub fn remaining(
        &mut self,
        vip: &str,
        epoch: u64,
        now: Duration,
        terms: LeaseTerms,
    ) -> Duration {
        self.set_terms(terms);
        self.obs.lease_expiry(vip, epoch).saturating_sub(now)
    }
}

#[cfg(test)]
mod tests;
