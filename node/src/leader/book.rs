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

use crate::controller::{self, Action, ControllerConfig, Grant, Observations, VipView};
use crate::types::NodeId;

/// The lease lengths the leader works with at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// What a grant made now is worth at the leader: lease + margin.
    pub span: Duration,
    /// How long after its election a lease granted by an earlier leader may still be held.
    pub inherited_span: Duration,
    /// The lease a grant made now gives the agent (counted from its send).
    pub lease: Duration,
}

/// The leader's observations for one term.
#[derive(Debug, Clone, Default)]
pub struct LeaseBook {
    term: u64,
    obs: Observations,
    /// Leases this leader decided are over (it proposed a reassignment or a revocation):
    /// never granted again.
    over: BTreeSet<(String, u64)>,
}

/// The rest of what the controller reads (the book supplies the observations).
pub struct World<'a> {
    pub nodes: &'a BTreeMap<NodeId, v1::Node>,
    pub services: &'a BTreeMap<String, v1::Service>,
    pub vips: &'a [VipView],
    pub leader: NodeId,
    /// Read while holding the book.
    pub now: Duration,
    pub now_wall_ms: u64,
    pub cfg: &'a ControllerConfig,
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
            over: BTreeSet::new(),
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn obs(&self) -> &Observations {
        &self.obs
    }

    fn set_terms(&mut self, terms: LeaseTerms) {
        self.obs.inherited_span = terms.inherited_span;
    }

    /// An agent's renewal, against the applied state `vips` (read after a quorum confirmed this
    /// leadership, once the request had arrived). A claim is granted when the node owns the
    /// VIP at that epoch, no release is asked, and the lease is not decided over.
    pub fn renew(
        &mut self,
        vips: &BTreeMap<String, v1::Vip>,
        req: &v1::RenewRequest,
        now: Duration,
        terms: LeaseTerms,
    ) -> Vec<v1::LeaseGrant> {
        self.set_terms(terms);
        let node = req.node_id;
        self.obs.agent_seen.insert(node, now);
        self.obs.holding.insert(
            node,
            req.holding
                .iter()
                .map(|c| (c.vip.clone(), c.epoch))
                .collect(),
        );
        self.obs
            .haproxy
            .insert(node, (req.haproxy.clone(), req.haproxy_error.clone()));
        req.claims
            .iter()
            .map(|c| {
                let granted = vips
                    .get(&c.vip)
                    .is_some_and(|v| v.owner == node && v.epoch == c.epoch && !v.releasing)
                    && !self.over.contains(&(c.vip.clone(), c.epoch));
                if granted {
                    self.obs.granted.insert(
                        c.vip.clone(),
                        Grant {
                            epoch: c.epoch,
                            at: now,
                            span: terms.span,
                        },
                    );
                }
                v1::LeaseGrant {
                    vip: c.vip.clone(),
                    epoch: c.epoch,
                    granted,
                }
            })
            .collect()
    }

    /// The controller's decisions for this tick. Every lease a decision ends is recorded as
    /// over before the book is let go, so no renewal of it can be granted afterwards.
    pub fn decide(&mut self, w: &World<'_>, terms: LeaseTerms) -> Vec<Action> {
        self.set_terms(terms);
        let actions = controller::decide(&controller::Input {
            nodes: w.nodes,
            services: w.services,
            vips: w.vips,
            obs: &self.obs,
            leader: w.leader,
            now: w.now,
            now_wall_ms: w.now_wall_ms,
            cfg: w.cfg,
        });
        for a in &actions {
            let (Action::Assign { vip, .. } | Action::Revoke { vip, .. }) = a else {
                continue;
            };
            if let Some(v) = w.vips.iter().find(|v| &v.name == vip && v.owner != 0) {
                self.over.insert((v.name.clone(), v.epoch));
            }
        }
        // A lease of an older epoch is refused by the state anyway: forget it.
        self.over.retain(|(name, epoch)| {
            w.vips
                .iter()
                .find(|v| &v.name == name)
                .is_some_and(|v| v.epoch <= *epoch)
        });
        actions
    }

    /// When the controller should decide again at the latest: the earliest lease expiry.
    pub fn next_expiry(&mut self, w: &World<'_>, terms: LeaseTerms) -> Option<Duration> {
        self.set_terms(terms);
        controller::next_expiry(&controller::Input {
            nodes: w.nodes,
            services: w.services,
            vips: w.vips,
            obs: &self.obs,
            leader: w.leader,
            now: w.now,
            now_wall_ms: w.now_wall_ms,
            cfg: w.cfg,
        })
    }

    /// An assignment committed: the new owner has a full lease from now to claim the VIP.
    pub fn assigned(&mut self, vip: &str, epoch: u64, now: Duration, terms: LeaseTerms) {
        self.obs.granted.insert(
            vip.to_string(),
            Grant {
                epoch,
                at: now,
                span: terms.span,
            },
        );
    }

    /// The owner of (`vip`, `epoch`) confirmed it stopped answering (a planned move). True if
    /// that is who owns it, so the next owner may be assigned at once.
    pub fn confirm_release(
        &mut self,
        vips: &BTreeMap<String, v1::Vip>,
        node: NodeId,
        vip: &str,
        epoch: u64,
    ) -> bool {
        let owned = vips
            .get(vip)
            .is_some_and(|v| v.owner == node && v.epoch == epoch);
        if owned {
            self.obs.released.insert(vip.to_string(), epoch);
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
        }
    }

    struct Fixture {
        nodes: BTreeMap<NodeId, v1::Node>,
        services: BTreeMap<String, v1::Service>,
        vips: BTreeMap<String, v1::Vip>,
        cfg: ControllerConfig,
    }

    /// Nodes 1 and 2, both healthy backends of "web"; VIP "v" owned by 1 at epoch 1.
    fn fixture() -> Fixture {
        let nodes = (1..=2)
            .map(|id| {
                (
                    id,
                    v1::Node {
                        id,
                        alive: true,
                        admin: v1::AdminState::Active as i32,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let backends = (1..=2)
            .map(|id| {
                (
                    id,
                    v1::Backend {
                        node_id: id,
                        health: v1::Health::Healthy as i32,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let services = [(
            "web".to_string(),
            v1::Service {
                name: "web".into(),
                backends,
                ..Default::default()
            },
        )]
        .into();
        let vips = [(
            "v".to_string(),
            v1::Vip {
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
        f.vips
            .values()
            .map(|v| VipView {
                name: v.name.clone(),
                service: v.service.clone(),
                owner: v.owner,
                epoch: v.epoch,
                releasing: v.releasing,
                preempt: false,
                preempt_delay: Duration::ZERO,
                priorities: BTreeMap::new(),
                move_to: 0,
            })
            .collect()
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
        let vips = views(f);
        let w = World {
            nodes: &f.nodes,
            services: &f.services,
            vips: &vips,
            leader: 0,
            now,
            now_wall_ms: 0,
            cfg: &f.cfg,
        };
        book.decide(&w, terms())
    }

    #[test]
    fn only_the_owner_at_its_epoch_is_granted() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        let g = |b: &mut LeaseBook, node, epoch| {
            b.renew(&f.vips, &renew(node, "v", epoch), 10 * MS, terms())[0].granted
        };
        assert!(g(&mut book, 1, 1));
        assert!(!g(&mut book, 2, 1), "not the owner");
        assert!(!g(&mut book, 1, 2), "not the epoch");
        let mut releasing = f.vips.clone();
        releasing.get_mut("v").unwrap().releasing = true;
        assert!(!book.renew(&releasing, &renew(1, "v", 1), 10 * MS, terms())[0].granted);
    }

    /// The race of issue 13: decision, then the renewal, then the commit. The renewal comes
    /// after the decision, so it is refused although the state still names the old owner.
    #[test]
    fn a_lease_decided_over_is_never_granted_again() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        assert!(book.renew(&f.vips, &renew(1, "v", 1), 100 * MS, terms())[0].granted);
        // Node 2 keeps being heard; node 1 is silent past its lease (100 + 850 ms).
        book.renew(&f.vips, &renew(2, "v", 0), 900 * MS, terms());
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
        let late = book.renew(&f.vips, &renew(1, "v", 1), 952 * MS, terms());
        assert!(!late[0].granted, "granted after the decision");
        // And the refused renewal did not move the expiry the controller decided on.
        assert!(book.remaining("v", 1, 952 * MS, terms()).is_zero());
    }

    /// The other order: a renewal granted just before the controller looks keeps the lease.
    #[test]
    fn a_renewal_before_the_decision_keeps_the_lease() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        book.renew(&f.vips, &renew(1, "v", 1), 100 * MS, terms());
        book.renew(&f.vips, &renew(2, "v", 0), 900 * MS, terms());
        assert!(book.renew(&f.vips, &renew(1, "v", 1), 950 * MS, terms())[0].granted);
        assert!(decide(&mut book, &f, 951 * MS).is_empty());
        assert_eq!(book.remaining("v", 1, 951 * MS, terms()), 849 * MS);
    }

    #[test]
    fn a_new_term_counts_leases_from_its_start_and_forgets_decisions() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        book.renew(&f.vips, &renew(2, "v", 0), 900 * MS, terms());
        assert!(!decide(&mut book, &f, 900 * MS).is_empty());
        // A new leader (the decision never committed): node 1 renews and is granted, and its
        // lease counts from the election at the earliest.
        let mut book = LeaseBook::new(2, 2_000 * MS);
        assert_eq!(book.remaining("v", 1, 2_000 * MS, terms()), 850 * MS);
        assert!(book.renew(&f.vips, &renew(1, "v", 1), 2_001 * MS, terms())[0].granted);
    }

    #[test]
    fn a_confirmation_counts_only_from_the_owner_at_its_epoch() {
        let f = fixture();
        let mut book = LeaseBook::new(1, Duration::ZERO);
        assert!(!book.confirm_release(&f.vips, 2, "v", 1));
        assert!(!book.confirm_release(&f.vips, 1, "v", 2));
        assert!(book.confirm_release(&f.vips, 1, "v", 1));
        assert_eq!(book.obs().released.get("v"), Some(&1));
    }
}
