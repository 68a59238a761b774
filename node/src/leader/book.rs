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
    /// reported holding. For the model check (`tests/lease_model.rs`), which tells states
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
        format!(
            "{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}",
            self.term,
            self.over,
            self.settling
                .map(|(generation, since)| (generation, moment(since))),
            self.rebinding,
            moment(self.obs.leader_since),
            self.obs.inherited_span,
            granted,
            self.obs.released
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
    /// a new epoch, a contact from a node the state shows down drop the skip), and now before
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
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn terms() -> LeaseTerms {
        LeaseTerms {
            span: 850 * MS,
            inherited_span: 850 * MS,
            lease: 800 * MS,
            settings: LeaseSettings::from_config(&Default::default()),
        }
    }

    struct Fixture {
        nodes: BTreeMap<NodeId, model::Node>,
        services: BTreeMap<String, model::Service>,
        vips: BTreeMap<String, model::Vip>,
        cfg: ControllerConfig,
    }

    /// Nodes 1 and 2, both healthy backends of "web"; VIP "v" owned by 1 at epoch 1.
    fn fixture() -> Fixture {
        fixture_of(2)
    }

    /// Nodes 1 to `n`, all healthy backends of "web"; VIP "v" owned by 1 at epoch 1.
    fn fixture_of(n: NodeId) -> Fixture {
        let nodes = (1..=n)
            .map(|id| {
                (
                    id,
                    model::Node {
                        id,
                        alive: true,
                        admin: model::AdminState::Active,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let backends = (1..=n)
            .map(|id| {
                (
                    id,
                    model::Backend {
                        node_id: id,
                        health: model::Health::Healthy,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let services = [(
            "web".to_string(),
            model::Service {
                name: "web".into(),
                backends,
                ..Default::default()
            },
        )]
        .into();
        let vips = [(
            "v".to_string(),
            model::Vip {
                name: "v".into(),
                service: "web".into(),
                owner: 1,
                epoch: 1,
                ..Default::default()
            },
        )]
        .into();
        Fixture {
            nodes,
            services,
            vips,
            cfg: ControllerConfig::default(),
        }
    }

    fn views(f: &Fixture) -> Vec<VipView> {
        f.vips.values().map(VipView::of).collect()
    }

    fn renew(node: NodeId, vip: &str, epoch: u64) -> v1::RenewRequest {
        v1::RenewRequest {
            node_id: node,
            claims: vec![v1::VipClaim {
                vip: vip.into(),
                epoch,
            }],
            ..Default::default()
        }
    }

    fn decide(book: &mut LeaseBook, f: &Fixture, now: Duration) -> Vec<Action> {
        decide_with(book, f, now, terms())
    }

    #[test]
    fn only_the_owner_at_its_epoch_is_granted() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let g = |b: &mut LeaseBook, node, epoch| {
            b.renew(&f.vips, &renew(node, "v", epoch), None, 10 * MS, terms())
                .0[0]
                .granted
        };
        assert!(g(&mut book, 1, 1));
        assert!(!g(&mut book, 2, 1), "not the owner");
        assert!(!g(&mut book, 1, 2), "not the epoch");
        let mut releasing = f.vips.clone();
        releasing.get_mut("v").unwrap().releasing = true;
        assert!(
            !book
                .renew(&releasing, &renew(1, "v", 1), None, 10 * MS, terms())
                .0[0]
                .granted
        );
    }

    /// The race of issue 13: decision, then the renewal, then the commit. The renewal comes
    /// after the decision, so it is refused although the state still names the old owner.
    #[test]
    fn a_lease_decided_over_is_never_granted_again() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        assert!(
            book.renew(&f.vips, &renew(1, "v", 1), None, 100 * MS, terms())
                .0[0]
                .granted
        );
        // Node 2 keeps being heard; node 1 is silent past its lease (100 + 850 ms).
        book.renew(&f.vips, &renew(2, "v", 0), None, 900 * MS, terms());
        assert!(decide(&mut book, &f, 900 * MS).is_empty(), "still held");
        let actions = decide(&mut book, &f, 951 * MS);
        assert_eq!(
            actions,
            vec![Action::Assign {
                vip: "v".into(),
                node: 2,
                epoch: 2
            }]
        );
        // Not committed yet: the state still says node 1 at epoch 1.
        let late = book
            .renew(&f.vips, &renew(1, "v", 1), None, 952 * MS, terms())
            .0;
        assert!(!late[0].granted, "granted after the decision");
        // And the refused renewal did not move the expiry the controller decided on.
        assert!(book.remaining("v", 1, 952 * MS, terms()).is_zero());
    }

    /// The other order: a renewal granted just before the controller looks keeps the lease.
    #[test]
    fn a_renewal_before_the_decision_keeps_the_lease() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        book.renew(&f.vips, &renew(1, "v", 1), None, 100 * MS, terms());
        book.renew(&f.vips, &renew(2, "v", 0), None, 900 * MS, terms());
        assert!(
            book.renew(&f.vips, &renew(1, "v", 1), None, 950 * MS, terms())
                .0[0]
                .granted
        );
        assert!(decide(&mut book, &f, 951 * MS).is_empty());
        assert_eq!(book.remaining("v", 1, 951 * MS, terms()), 849 * MS);
    }

    #[test]
    fn a_new_term_counts_leases_from_its_start_and_forgets_decisions() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        book.renew(&f.vips, &renew(2, "v", 0), None, 900 * MS, terms());
        assert!(!decide(&mut book, &f, 900 * MS).is_empty());
        // A new leader (the decision never committed): node 1 renews and is granted, and its
        // lease counts from the election at the earliest.
        let mut book = LeaseBook::new(2, 2_000 * MS);
        assert_eq!(book.remaining("v", 1, 2_000 * MS, terms()), 850 * MS);
        assert!(
            book.renew(&f.vips, &renew(1, "v", 1), None, 2_001 * MS, terms())
                .0[0]
                .granted
        );
    }

    #[test]
    fn a_confirmation_counts_only_from_the_owner_at_its_epoch() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let none = BTreeMap::new();
        assert!(!book.confirm_release(&f.vips, &none, 2, "v", 1));
        assert!(!book.confirm_release(&f.vips, &none, 1, "v", 2));
        assert!(book.confirm_release(&f.vips, &none, 1, "v", 1));
        assert_eq!(book.obs().released.get("v"), Some(&1));
        // A deleted VIP's last owner confirms for its retired address.
        let retired = [(
            "gone".to_string(),
            RetiredVip {
                address: "10.213.0.101/24".into(),
                interface: "eth0".into(),
                owner: 2,
                epoch: 4,
                deleted: true,
            },
        )]
        .into();
        assert!(!book.confirm_release(&f.vips, &retired, 1, "gone", 4));
        assert!(book.confirm_release(&f.vips, &retired, 2, "gone", 4));
    }

    #[test]
    fn a_shorter_lease_is_settled_only_a_full_old_wait_after_it_was_seen() {
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let own = LeaseSettings::from_config(&Default::default());
        assert_eq!(
            book.lease_step(None, 0, 0, own, Duration::ZERO),
            Some(Op::SetLease {
                settings: own,
                if_unset: true
            })
        );
        assert_eq!(book.lease_step(Some(own), 850, 1, own, 10 * MS), None);
        // Lowered from a 2 s lease: the wait stays 2,050 ms until settled.
        let short = LeaseSettings {
            lease_ms: 500,
            renew_ms: 50,
            ..own
        };
        assert_eq!(book.lease_step(Some(short), 2_050, 3, own, 100 * MS), None);
        assert_eq!(
            book.lease_step(Some(short), 2_050, 3, own, 2_149 * MS),
            None
        );
        assert_eq!(
            book.lease_step(Some(short), 2_050, 3, own, 2_150 * MS),
            Some(Op::SettleLease {
                settings: short,
                generation: 3
            })
        );
        // Changed again meanwhile: counted afresh.
        let other = LeaseSettings {
            lease_ms: 600,
            ..short
        };
        assert_eq!(
            book.lease_step(Some(other), 2_050, 4, own, 2_200 * MS),
            None
        );
        assert_eq!(
            book.lease_step(Some(other), 2_050, 4, own, 4_249 * MS),
            None
        );
        assert!(book
            .lease_step(Some(other), 2_050, 4, own, 4_250 * MS)
            .is_some());
    }

    /// Two agent processes with one node id: only the bound one is granted; the other is
    /// bound only once every lease the first may hold is over, and nothing is granted while
    /// the move is being proposed.
    #[test]
    fn only_one_agent_process_per_node_is_granted() {
        let f = fixture();
        let none = BTreeMap::new();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let from = |instance| v1::RenewRequest {
            instance,
            ..renew(1, "v", 1)
        };
        let (g, why) = book.renew(&f.vips, &from(0xa), Some(0xa), 100 * MS, terms());
        assert!(g[0].granted && why.is_none());
        let (g, why) = book.renew(&f.vips, &from(0xb), Some(0xa), 110 * MS, terms());
        assert!(!g[0].granted);
        assert!(why.unwrap().contains("another agent process"));
        // Unbound: a registered process (not 0) is refused until bound; a legacy one is not.
        assert!(!book.renew(&f.vips, &from(0xb), None, 120 * MS, terms()).0[0].granted);
        assert!(book.renew(&f.vips, &from(0), None, 130 * MS, terms()).0[0].granted);
        // The lease granted at 130 ms is held until 980 ms: no move before.
        let e = book
            .begin_rebind(1, 0xb, None, &f.vips, &none, 979 * MS, terms())
            .unwrap_err();
        assert!(e.contains("may hold VIP"), "{e}");
        let ticket = book
            .begin_rebind(1, 0xb, None, &f.vips, &none, 980 * MS, terms())
            .unwrap();
        // While the move is proposed (the state binds no process yet), nobody is granted.
        for who in [0, 0xb] {
            assert!(!book.renew(&f.vips, &from(who), None, 981 * MS, terms()).0[0].granted);
        }
        book.rebound(1, ticket);
        assert!(
            book.renew(&f.vips, &from(0xb), Some(0xb), 982 * MS, terms())
                .0[0]
                .granted
        );
    }

    /// A binding whose proposal timed out may still commit: until the state shows it, the
    /// process bound before stays refused (the mark is not dropped on failure); once it shows
    /// it, the new process is granted and the next move may begin.
    #[test]
    fn a_binding_of_unknown_outcome_keeps_the_old_process_refused() {
        let f = fixture();
        let none = BTreeMap::new();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let from = |instance| v1::RenewRequest {
            instance,
            ..renew(1, "v", 1)
        };
        assert!(
            book.renew(&f.vips, &from(0xa), Some(0xa), 100 * MS, terms())
                .0[0]
                .granted
        );
        book.begin_rebind(1, 0xb, Some(0xa), &f.vips, &none, 980 * MS, terms())
            .unwrap();
        // The proposal failed with an unknown outcome: no `rebound`. The old process, still
        // bound in the state, is refused however long that takes.
        for at in [990, 5_000, 60_000] {
            let (g, why) = book.renew(&f.vips, &from(0xa), Some(0xa), at * MS, terms());
            assert!(!g[0].granted, "{why:?}");
        }
        // Retried meanwhile: refused while the first is pending.
        assert!(book
            .begin_rebind(1, 0xb, Some(0xa), &f.vips, &none, 61_000 * MS, terms())
            .is_err());
        // The binding committed after all.
        assert!(
            book.renew(&f.vips, &from(0xb), Some(0xb), 62_000 * MS, terms())
                .0[0]
                .granted
        );
        assert!(
            !book
                .renew(&f.vips, &from(0xa), Some(0xb), 62_001 * MS, terms())
                .0[0]
                .granted
        );
    }

    /// A timed-out binding that committed, then the bound process stopping cleanly (unbound):
    /// the mark must be gone, or it would refuse every later process of the node for the rest
    /// of the term. Seen failing before `settle_mark` (found by a cold review): refused at 3 s,
    /// 60 s and 1 h.
    #[test]
    fn a_committed_binding_leaves_no_mark_behind_when_its_process_stops() {
        let vips = BTreeMap::new();
        let none = BTreeMap::new();
        let from = |instance| v1::RenewRequest {
            node_id: 1,
            instance,
            ..Default::default()
        };
        // Seen bound by a renewal, or only by the stopping process's leave: both settle it.
        for renewed in [true, false] {
            let mut book = LeaseBook::new(1, Duration::ZERO);
            book.begin_rebind(1, 0xb, Some(0xa), &vips, &none, 1_000 * MS, terms())
                .unwrap();
            // No `rebound` (the proposal timed out); it committed: 0xb is bound.
            if renewed {
                let (_, why) = book.renew(&vips, &from(0xb), Some(0xb), 2_000 * MS, terms());
                assert_eq!(why, None);
            } else {
                book.settle_mark(1, Some(0xb));
            }
            // 0xb left (unbound); 0xc starts and registers.
            for at in [3_000u32, 60_000, 3_600_000] {
                let ticket = book
                    .begin_rebind(1, 0xc, None, &vips, &none, at * MS, terms())
                    .unwrap_or_else(|e| panic!("renewed {renewed}, at {at} ms: {e}"));
                book.rebound(1, ticket);
                let (_, why) = book.renew(&vips, &from(0xc), Some(0xc), at * MS, terms());
                assert_eq!(why, None, "renewed {renewed}, at {at} ms");
            }
        }
    }

    /// Found by a second cold review: the handler of process 0xa's bind called `rebound`
    /// late, after 0xb's move had begun (woken by the same apply), and dropped 0xb's mark:
    /// 0xa, still bound, was granted `v` at 1,002 ms and 0xb too once its bind committed.
    /// `rebound` now drops only the mark of its own binding.
    #[test]
    fn a_late_rebound_leaves_a_newer_mark_alone() {
        let f = fixture();
        let none = BTreeMap::new();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let from = |instance| v1::RenewRequest {
            instance,
            ..renew(1, "v", 1)
        };
        let a = book
            .begin_rebind(1, 0xa, None, &f.vips, &none, 1_000 * MS, terms())
            .unwrap();
        // BindAgent(0xa) committed; before its handler resumes, 0xb's move begins.
        let b = book
            .begin_rebind(1, 0xb, Some(0xa), &f.vips, &none, 1_001 * MS, terms())
            .unwrap();
        book.rebound(1, a);
        let (g, why) = book.renew(&f.vips, &from(0xa), Some(0xa), 1_002 * MS, terms());
        assert!(!g[0].granted, "0xa granted while its leases move: {why:?}");
        // A third cold review: the same process may come back. 0xb's bind commits, 0xa
        // (refused) registers again, and only then does 0xa's first handler resume.
        book.rebound(1, b);
        let a_again = book
            .begin_rebind(1, 0xa, Some(0xb), &f.vips, &none, 1_003 * MS, terms())
            .unwrap();
        book.rebound(1, a);
        let (g, why) = book.renew(&f.vips, &from(0xb), Some(0xb), 1_004 * MS, terms());
        assert!(
            !g[0].granted,
            "0xb granted while its leases move back: {why:?}"
        );
        book.rebound(1, a_again);
        let (g, _) = book.renew(&f.vips, &from(0xa), Some(0xa), 1_005 * MS, terms());
        assert!(g[0].granted, "0xa, bound again, is served");
    }

    fn decide_with(
        book: &mut LeaseBook,
        f: &Fixture,
        now: Duration,
        terms: LeaseTerms,
    ) -> Vec<Action> {
        with_world(f, now, 0, |w| book.decide(w, terms))
    }

    /// Runs `run` on the fixture's world at `now`, with no retired address.
    fn with_world<T>(
        f: &Fixture,
        now: Duration,
        now_wall_ms: u64,
        run: impl FnOnce(&World<'_>) -> T,
    ) -> T {
        with_retired(f, &BTreeMap::new(), now, now_wall_ms, run)
    }

    /// Runs `run` on the fixture's world at `now`, with these retired addresses.
    fn with_retired<T>(
        f: &Fixture,
        retired: &BTreeMap<String, RetiredVip>,
        now: Duration,
        now_wall_ms: u64,
        run: impl FnOnce(&World<'_>) -> T,
    ) -> T {
        let vips = views(f);
        run(&World {
            nodes: &f.nodes,
            services: &f.services,
            vips: &vips,
            retired,
            leader: 0,
            now,
            now_wall_ms,
            cfg: &f.cfg,
        })
    }

    /// Review finding: a grant replaces the leader's record of the last one, span included.
    /// When the cluster's lease is shortened (`ballastctl lease set`), a renewal granted under
    /// the short lease right after one under the long lease brings the leader's expiry
    /// forward, although the agent's fence may still hold the long allowance: the answer to
    /// the short renewal was lost or came late (renew timeout), the agent was stopped
    /// (SIGSTOP) between the answer and `allow_until`, or nft failed. The leader then moves
    /// the VIP while the old owner's kernel still answers for it.
    #[test]
    fn review_a_shorter_grant_does_not_cut_a_longer_one_short() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let long_settings = LeaseSettings {
            lease_ms: 2_000,
            renew_ms: 250,
            drift_ms: 20,
            margin_ms: 50,
        };
        let long = LeaseTerms {
            span: 2_050 * MS,
            inherited_span: 2_050 * MS,
            lease: 2_000 * MS,
            settings: long_settings,
        };
        // The 800 ms lease is applied; the wait a new leader observes is still 2,050 ms.
        let short = LeaseTerms {
            inherited_span: 2_050 * MS,
            ..terms()
        };
        // 10 s: node 1 renews (sent at 10 s) under the 2 s lease: its fence may allow the VIP
        // until 10 s + 1,980 ms.
        assert!(
            book.renew(&f.vips, &renew(1, "v", 1), None, 10_000 * MS, long)
                .0[0]
                .granted
        );
        // 10.1 s: its next renewal is granted under the 800 ms lease; the answer never tightens
        // its fence. Node 1 then falls silent; node 2 is heard.
        assert!(
            book.renew(&f.vips, &renew(1, "v", 1), None, 10_100 * MS, short)
                .0[0]
                .granted
        );
        book.renew(&f.vips, &renew(2, "v", 0), None, 10_900 * MS, short);
        let actions = decide_with(&mut book, &f, 10_951 * MS, short);
        assert!(
            actions.is_empty(),
            "the VIP moved at 10,951 ms although the grant of 10,000 ms (2 s lease) may be \
             answered for until 11,980 ms: {actions:?}"
        );
    }

    /// Review finding: settling compares only the settings. If the lease is raised and set
    /// back between two controller ticks (two `ballastctl lease set` in a row, or a tick
    /// delayed by a slow proposal), the book keeps counting from when it first saw the short
    /// setting and lowers the wait too early: grants of the long lease, made after that, are
    /// still held when a new leader elected after the settle counts only the short span.
    #[test]
    fn review_a_wait_raised_meanwhile_restarts_the_settling() {
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let own = LeaseSettings::from_config(&Default::default());
        // 100 ms: the 800 ms lease is in force, a 2 s one was lowered: settling starts.
        assert_eq!(book.lease_step(Some(own), 2_050, 5, own, 100 * MS), None);
        // About 3 s: an operator sets 5 s and, before the next tick, 800 ms again. The wait rose
        // to 5,050 ms; grants of the 5 s lease were made around 3,000 ms (held by their agents
        // until about 7,980 ms).
        assert_eq!(book.lease_step(Some(own), 5_050, 7, own, 3_050 * MS), None);
        let settled = book.lease_step(Some(own), 5_050, 7, own, 5_150 * MS);
        assert_eq!(
            settled, None,
            "settled at 5,150 ms: a leader elected just after counts 850 ms (to about 6,000 ms) \
             while a 5 s grant of about 3,000 ms is held until about 7,980 ms"
        );
    }

    /// The skip of `decide_at` after a tick that decided nothing: a later tick on the same state
    /// still decides at the expiry, and a confirmation, a new state or a contact from a node
    /// the state shows down end the skip at once.
    #[test]
    fn a_skipped_tick_still_notices_an_expiry_and_every_change() {
        let mut f = fixture();
        let applied = Some(crate::types::log_id(1, 1, 7));
        let mut book = LeaseBook::new(1, Duration::ZERO);
        book.renew(&f.vips, &renew(1, "v", 1), None, 100 * MS, terms());
        book.renew(&f.vips, &renew(2, "v", 0), None, 500 * MS, terms());
        let tick = |book: &mut LeaseBook, f: &Fixture, at: Duration, applied| {
            decide_at_with(book, f, at, applied)
        };
        let (a, next) = tick(&mut book, &f, 600 * MS, applied);
        assert!(a.is_empty());
        assert_eq!(next, Some(950 * MS), "node 1's lease, granted at 100 ms");
        assert!(book.quiet.is_some());
        // Skipped up to the expiry, then decided: node 1 is silent, node 2 takes the VIP.
        assert_eq!(
            tick(&mut book, &f, 949 * MS, applied),
            (vec![], Some(950 * MS))
        );
        assert!(book.quiet.is_some(), "still skipping");
        let (a, _) = tick(&mut book, &f, 950 * MS, applied);
        assert_eq!(
            a,
            vec![Action::Assign {
                vip: "v".into(),
                node: 2,
                epoch: 2
            }]
        );
        // A renewal at the epoch on record only moves the expiry later: still skipping.
        let mut book = LeaseBook::new(1, Duration::ZERO);
        book.renew(&f.vips, &renew(1, "v", 1), None, 100 * MS, terms());
        assert!(tick(&mut book, &f, 200 * MS, applied).0.is_empty());
        book.renew(&f.vips, &renew(1, "v", 1), None, 300 * MS, terms());
        assert!(book.quiet.is_some());
        // A confirmed release ends it.
        book.confirm_release(&f.vips, &BTreeMap::new(), 1, "v", 1);
        assert!(book.quiet.is_none());
        // The release applied (another state): decided at once.
        let mut f2 = fixture();
        f2.vips.get_mut("v").unwrap().releasing = true;
        let (a, _) = tick(
            &mut book,
            &f2,
            320 * MS,
            Some(crate::types::log_id(1, 1, 8)),
        );
        assert_eq!(
            a,
            vec![Action::Assign {
                vip: "v".into(),
                node: 2,
                epoch: 2
            }],
            "released and confirmed: moved at once"
        );
        // A node the state shows down is brought back by its first contact, skip or not.
        f.nodes.get_mut(&2).unwrap().alive = false;
        let mut book = LeaseBook::new(1, Duration::ZERO);
        book.renew(&f.vips, &renew(1, "v", 1), None, 100 * MS, terms());
        assert!(tick(&mut book, &f, 500 * MS, applied).0.is_empty());
        book.renew(&f.vips, &renew(1, "v", 1), None, 600 * MS, terms());
        assert!(book.quiet.is_some(), "node 1 is shown alive");
        book.renew(&f.vips, &renew(2, "v", 0), None, 700 * MS, terms());
        assert!(book.quiet.is_none(), "a contact from a node shown down");
        assert_eq!(
            tick(&mut book, &f, 701 * MS, applied).0,
            vec![Action::SetNodeAlive {
                node: 2,
                alive: true
            }]
        );
    }

    fn decide_at_with(
        book: &mut LeaseBook,
        f: &Fixture,
        now: Duration,
        applied: Option<LogId>,
    ) -> (Vec<Action>, Option<Duration>) {
        with_world(f, now, now.as_millis() as u64, |w| {
            book.decide_at(w, applied, terms())
        })
    }

    /// The bookkeeping after a decision finds VIPs by binary search in sorted views and by
    /// reading them all in any other slice, with the same result.
    #[test]
    fn decisions_are_booked_alike_whatever_the_order_of_the_views() {
        let mut f = fixture();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            f.vips.insert(
                name.into(),
                model::Vip {
                    name: name.into(),
                    service: "web".into(),
                    owner: 1,
                    epoch: 3 + i as u64,
                    ..Default::default()
                },
            );
        }
        let sorted = views(&f);
        let mut shuffled = sorted.clone();
        shuffled.reverse();
        let mut keys = Vec::new();
        for vips in [&sorted, &shuffled] {
            let mut book = LeaseBook::new(1, Duration::ZERO);
            book.renew(&f.vips, &renew(2, "v", 0), None, 900 * MS, terms());
            let retired = BTreeMap::new();
            let w = World {
                nodes: &f.nodes,
                services: &f.services,
                vips,
                retired: &retired,
                leader: 0,
                now: 951 * MS,
                now_wall_ms: 0,
                cfg: &f.cfg,
            };
            assert_eq!(book.decide(&w, terms()).len(), 4, "all four move to node 2");
            keys.push(book.decisions_key());
        }
        assert_eq!(keys[0], keys[1]);
        assert!(keys[0].contains(r#""b": {4}"#), "{}", keys[0]);
        let index = ViewIndex::of(&shuffled);
        assert!(!index.sorted);
        assert_eq!(index.first("c").map(|v| v.epoch), Some(5));
        assert!(ViewIndex::of(&sorted).owned("zz").is_none());
    }

    /// A small pseudo-random generator (xorshift), so that a failing seed runs again.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Differential check of the skip: two books see the same renewals, confirmations,
    /// commits and clocks; one decides in full every tick, the other through `decide_at`.
    /// They must decide the same at every tick, and end up with the same book.
    #[test]
    fn a_quiet_tick_decides_what_a_full_decision_would() {
        let mut skipped = 0;
        let mut ticks = 0;
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut f = fixture_of(4);
            for name in ["a", "b", "c"] {
                let owner = rng.below(5);
                let placement = (rng.below(2) == 0).then(|| model::Placement {
                    preempt: rng.below(2) == 0,
                    preempt_delay_ms: [0, 300, 2_000][rng.below(3) as usize],
                    priorities: [(1 + rng.below(4), 10), (1 + rng.below(4), 5)].into(),
                });
                f.vips.insert(
                    name.into(),
                    model::Vip {
                        name: name.into(),
                        address: format!("10.0.0.{}/24", 1 + rng.below(4)),
                        service: "web".into(),
                        owner,
                        epoch: 1 + rng.below(3),
                        releasing: owner != 0 && rng.below(4) == 0,
                        placement,
                        ..Default::default()
                    },
                );
            }
            let mut retired = BTreeMap::new();
            if rng.below(2) == 0 {
                retired.insert(
                    "gone".to_string(),
                    RetiredVip {
                        address: "10.0.0.9/24".into(),
                        interface: "eth0".into(),
                        owner: 1 + rng.below(4),
                        epoch: 2,
                        deleted: true,
                    },
                );
            }
            if rng.below(2) == 0 {
                // "a" changed its address: the old one is retired under its name, at its epoch.
                retired.insert(
                    "a".to_string(),
                    RetiredVip {
                        address: "10.0.0.8/24".into(),
                        interface: "eth0".into(),
                        owner: 1 + rng.below(4),
                        epoch: f.vips["a"].epoch,
                        deleted: false,
                    },
                );
            }
            let mut index = 1;
            let mut now = 10 * MS;
            let mut wall = 1_000_000u64;
            let mut full = LeaseBook::new(1, Duration::ZERO);
            let mut quick = LeaseBook::new(1, Duration::ZERO);
            let mut pending: Vec<Action> = Vec::new();
            for _ in 0..300 {
                match rng.below(10) {
                    // Time passes (wall clock too; now and then it jumps).
                    0..=2 => {
                        let d = rng.below(300);
                        now += MS * d as u32;
                        wall = match rng.below(20) {
                            0 => wall.saturating_sub(5_000),
                            1 => wall + 5_000,
                            _ => wall + d,
                        };
                    }
                    // An agent renews what it owns (or claims a wrong epoch).
                    3..=5 => {
                        let node = 1 + rng.below(4);
                        let mut claims = Vec::new();
                        for v in f.vips.values() {
                            if v.owner == node || rng.below(6) == 0 {
                                claims.push(v1::VipClaim {
                                    vip: v.name.clone(),
                                    epoch: v.epoch + rng.below(4) / 3,
                                });
                            }
                        }
                        let r = v1::RenewRequest {
                            node_id: node,
                            claims,
                            ..Default::default()
                        };
                        let a = full.renew(&f.vips, &r, None, now, terms());
                        let b = quick.renew(&f.vips, &r, None, now, terms());
                        assert_eq!(a, b);
                    }
                    // An owner confirms a release (or someone confirms something else).
                    6 => {
                        let node = 1 + rng.below(4);
                        let vip = ["a", "b", "c", "gone"][rng.below(4) as usize];
                        let epoch = 1 + rng.below(4);
                        let a = full.confirm_release(&f.vips, &retired, node, vip, epoch);
                        let b = quick.confirm_release(&f.vips, &retired, node, vip, epoch);
                        assert_eq!(a, b);
                    }
                    // The state moves: the last decisions commit, or an operator or a health
                    // report changes something.
                    7 => {
                        index += 1;
                        for a in std::mem::take(&mut pending) {
                            match a {
                                Action::Assign { vip, node, epoch } => {
                                    let v = f.vips.get_mut(&vip).unwrap();
                                    if epoch == v.epoch + 1 {
                                        (v.owner, v.epoch, v.releasing, v.move_to) =
                                            (node, epoch, false, 0);
                                        // Not always booked (a new leader's book, or the
                                        // tick before the loop books it): the first grant
                                        // at the new epoch replaces the old one's record.
                                        if rng.below(2) == 0 {
                                            full.assigned(&vip, epoch, now, terms());
                                            quick.assigned(&vip, epoch, now, terms());
                                        }
                                    }
                                }
                                Action::Release { vip, epoch, .. } => {
                                    let v = f.vips.get_mut(&vip).unwrap();
                                    if v.epoch == epoch {
                                        v.releasing = true;
                                    }
                                }
                                Action::Revoke { vip, epoch } => {
                                    let v = f.vips.get_mut(&vip).unwrap();
                                    if v.epoch == epoch {
                                        (v.owner, v.releasing) = (0, false);
                                    }
                                }
                                Action::SetNodeAlive { node, alive } => {
                                    f.nodes.get_mut(&node).unwrap().alive = alive;
                                }
                                Action::ClearRetired { vip, .. } => {
                                    retired.remove(&vip);
                                }
                            }
                        }
                        let id = 1 + rng.below(4);
                        match rng.below(4) {
                            0 => {
                                let web = f.services.get_mut("web");
                                let b = web.and_then(|s| s.backends.get_mut(&id)).unwrap();
                                b.health = if b.health == model::Health::Healthy {
                                    model::Health::Unhealthy
                                } else {
                                    model::Health::Healthy
                                };
                                b.changed_ms = wall;
                            }
                            1 => {
                                let name = ["a", "b", "c"][rng.below(3) as usize];
                                f.vips.get_mut(name).unwrap().move_to = id;
                            }
                            _ => {}
                        }
                    }
                    // The controller ticks.
                    _ => {
                        let applied = Some(crate::types::log_id(1, 1, index));
                        let skips = quick.quiet.as_ref().is_some_and(|q| {
                            q.applied == applied
                                && now < q.calm.until
                                && wall < q.calm.until_wall_ms
                        });
                        let a = with_retired(&f, &retired, now, wall, |w| {
                            let a = full.decide(w, terms());
                            let (b, next) = quick.decide_at(w, applied, terms());
                            assert_eq!(a, b, "seed {seed}: the skip changed a decision");
                            if let Some(at) = next {
                                assert!(at > now, "seed {seed}: a wake-up in the past");
                                let expiry = full.next_expiry(w, terms());
                                assert!(
                                    expiry.is_none_or(|e| at <= e),
                                    "seed {seed}: woken at {at:?}, after the expiry {expiry:?}"
                                );
                            }
                            a
                        });
                        assert_eq!(full.decisions_key(), quick.decisions_key(), "seed {seed}");
                        ticks += 1;
                        skipped += usize::from(skips);
                        pending = a;
                    }
                }
            }
        }
        assert!(
            skipped > ticks / 20,
            "the skip is exercised: {skipped} of {ticks} ticks"
        );
    }
}
