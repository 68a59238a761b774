//! The state machine's rules for what the VIP promise keeps in the log: the cluster's lease
//! settings, the addresses of deleted or changed VIPs until their last owner let go of them,
//! and which agent process holds each node's leases. Deterministic like the rest of
//! `StateData::apply`: no clock, no IO.

use crate::model;

use crate::lease::LeaseSettings;
use crate::member::state::{rejected, state_event, Applied, StateData};
use crate::model::RetiredVip;
use crate::types::{vip_ip, NodeId, Outcome};

impl StateData {
    /// New lease settings. The wait a new leader observes never falls here: a grant of the
    /// old, maybe longer, lease may still be held (see `settle_lease`).
    pub(crate) fn set_lease(&mut self, s: &LeaseSettings, if_unset: bool) -> Applied {
        if if_unset && self.lease.is_some() {
            return (Outcome::StateWritten, Vec::new());
        }
        // The rules as they were when this operation was defined (see `validate_applied`).
        if let Err(e) = s.config().validate_applied() {
            return (rejected("lease", e.to_string()), Vec::new());
        }
        let wait = self.lease_wait_ms.max(s.span_ms());
        if self.lease == Some(*s) && self.lease_wait_ms == wait {
            return (Outcome::StateWritten, Vec::new());
        }
        self.lease = Some(*s);
        self.lease_wait_ms = wait;
        self.lease_generation += 1;
        (
            Outcome::StateWritten,
            vec![state_event("lease", "cluster", false)],
        )
    }

    /// Every grant of a longer lease is over (the leader waited it out): a new leader need
    /// wait only the current setting's span. Refused when the settings changed meanwhile.
    pub(crate) fn settle_lease(&mut self, s: &LeaseSettings, generation: u64) -> Applied {
        if self.lease != Some(*s) || self.lease_generation != generation {
            return (
                rejected("lease", "the lease settings changed since; not settled"),
                Vec::new(),
            );
        }
        if self.lease_wait_ms == s.span_ms() {
            return (Outcome::StateWritten, Vec::new());
        }
        self.lease_wait_ms = s.span_ms();
        self.lease_generation += 1;
        (
            Outcome::StateWritten,
            vec![state_event("lease", "cluster", false)],
        )
    }

    /// The node's leases go to agent process `instance` (0: to none, the last one stopped).
    pub(crate) fn bind_agent(&mut self, node: NodeId, instance: u64) -> Applied {
        if !self.nodes.contains_key(&node) {
            return (
                rejected("node_id", format!("unknown node {node}")),
                Vec::new(),
            );
        }
        let before = self.agents.get(&node).copied().unwrap_or(0);
        if before == instance {
            return (Outcome::StateWritten, Vec::new());
        }
        if instance == 0 {
            self.agents.remove(&node);
        } else {
            self.agents.insert(node, instance);
        }
        (
            Outcome::StateWritten,
            vec![state_event("node", node.to_string(), false)],
        )
    }

    /// Keeps the address of `old` (owned) retired until its owner let go: the VIP was deleted,
    /// or its address or interface is changing. An earlier retired address of the same VIP
    /// stays: that one is what its owner holds (it got no grant since).
    pub(crate) fn retire(&mut self, old: &model::Vip, deleted: bool) {
        if old.owner == 0 {
            return;
        }
        let r = self
            .retired
            .entry(old.name.clone())
            .or_insert_with(|| RetiredVip {
                address: old.address.clone(),
                interface: old.interface.clone(),
                owner: old.owner,
                epoch: old.epoch,
                deleted,
            });
        r.deleted |= deleted;
    }

    /// Why the address of `old` (owned) cannot be retired now: its name still keeps the
    /// retired address of an earlier epoch (a deleted VIP, made again and assigned before its
    /// last owner let go), which may be held too. Retiring one address per name at a time
    /// keeps both from being forgotten; the operator retries once the earlier one is free.
    pub(crate) fn retire_blocked(&self, old: &model::Vip) -> Option<String> {
        if old.owner == 0 {
            return None;
        }
        let r = self
            .retired
            .get(&old.name)
            .filter(|r| r.epoch != old.epoch)?;
        Some(format!(
            "VIP {:?} still has its earlier address {} retired (epoch {}, node {} may still answer for it); retry once it is free (`ballastctl state` lists retired addresses)",
            old.name, r.address, r.epoch, r.owner
        ))
    }

    /// Why `vip` (at `address`) cannot be assigned: a retired address with its name (a
    /// deleted VIP made again) or its IP may still be answered for by its last owner. The
    /// controller waits for these to clear before it decides (`controller.rs`); this check
    /// makes that hold at apply, whatever changed between its decision and the commit. Its
    /// own old address, from a change of address, is not in the way: the planned move ends
    /// that lease first.
    pub(crate) fn assign_blocked(&self, vip: &str, address: &str) -> Option<String> {
        let (name, r) = self.retired.iter().find(|(name, r)| {
            let own_move = !r.deleted && name.as_str() == vip;
            !own_move && (name.as_str() == vip || vip_ip(&r.address) == vip_ip(address))
        })?;
        Some(format!(
            "{address} of {vip:?} is still retired as {name:?}'s (epoch {}, node {} may still answer for it)",
            r.epoch, r.owner
        ))
    }

    /// The retired address of `vip` is free, if it is still the one held at `epoch`.
    pub(crate) fn clear_retired(&mut self, vip: &str, epoch: u64) -> Applied {
        match self.retired.get(vip) {
            Some(r) if r.epoch == epoch => {
                self.retired.remove(vip);
                (
                    Outcome::StateWritten,
                    vec![state_event(
                        "vip",
                        vip.to_string(),
                        !self.vips.contains_key(vip),
                    )],
                )
            }
            _ => (
                rejected(
                    "vip",
                    format!("no retired address of {vip:?} at epoch {epoch}"),
                ),
                Vec::new(),
            ),
        }
    }

    /// The lease of (`vip`, `epoch`) ended (reassigned or revoked): a changed VIP's old
    /// address went with it.
    pub(crate) fn lease_ended(&mut self, vip: &str, epoch: u64) {
        if self
            .retired
            .get(vip)
            .is_some_and(|r| !r.deleted && r.epoch == epoch)
        {
            self.retired.remove(vip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lease_ms: u64) -> LeaseSettings {
        LeaseSettings {
            lease_ms,
            renew_ms: lease_ms / 8,
            drift_ms: 20,
            margin_ms: 50,
        }
    }

    /// A SetLease committed by an earlier build applies the same way on every member,
    /// whichever rules new settings must pass now: renew 220 ms with an 800 ms lease was
    /// accepted under the three-interval rule, and the stricter one for new settings refuses
    /// it.
    #[test]
    fn a_committed_setting_applies_under_the_rules_it_was_written_under() {
        let s220 = LeaseSettings {
            renew_ms: 220,
            ..settings(800)
        };
        assert!(s220.config().validate().is_err());
        let mut s = StateData::default();
        let (outcome, _) = s.set_lease(&s220, false);
        assert_eq!(outcome, Outcome::StateWritten);
        assert_eq!(s.lease, Some(s220));
    }

    #[test]
    fn the_wait_rises_at_once_and_falls_only_when_settled() {
        let mut s = StateData::default();
        s.set_lease(&settings(800), true);
        assert_eq!(s.lease_wait_ms, 850);
        // if_unset does not overwrite.
        s.set_lease(&settings(2_000), true);
        assert_eq!(s.lease, Some(settings(800)));
        s.set_lease(&settings(2_000), false);
        assert_eq!(s.lease_wait_ms, 2_050);
        s.set_lease(&settings(800), false);
        assert_eq!((s.lease, s.lease_wait_ms), (Some(settings(800)), 2_050));
        // Settling for settings that are no longer current is refused.
        let g = s.lease_generation;
        assert!(matches!(
            s.settle_lease(&settings(2_000), g).0,
            Outcome::Rejected { .. }
        ));
        assert!(matches!(
            s.settle_lease(&settings(800), g - 1).0,
            Outcome::Rejected { .. }
        ));
        assert_eq!(s.lease_wait_ms, 2_050);
        s.settle_lease(&settings(800), g);
        assert_eq!(s.lease_wait_ms, 850);
        // Settings that cannot keep the promise are refused.
        let bad = LeaseSettings {
            margin_ms: 0,
            drift_ms: 0,
            ..settings(800)
        };
        assert!(matches!(
            s.set_lease(&bad, false).0,
            Outcome::Rejected { .. }
        ));
    }

    fn run(s: &mut StateData, op: crate::types::Op) -> Outcome {
        s.apply_command(&crate::types::Command {
            request: None,
            now_ms: 1,
            op,
        })
        .0
        .outcome
    }

    /// Node 1 owns VIP "v" (service "web") at epoch 1.
    fn owned() -> StateData {
        use crate::types::Op;
        let mut s = StateData::default();
        s.nodes.insert(
            1,
            model::Node {
                id: 1,
                ..Default::default()
            },
        );
        s.services.insert(
            "web".into(),
            model::Service {
                name: "web".into(),
                ..Default::default()
            },
        );
        let vip = model::Vip {
            name: "v".into(),
            address: "10.213.0.100/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        };
        assert_eq!(run(&mut s, Op::ApplyVip(vip)), Outcome::StateWritten);
        let assign = Op::AssignVip {
            vip: "v".into(),
            node: 1,
            epoch: 1,
        };
        assert_eq!(run(&mut s, assign), Outcome::StateWritten);
        s
    }

    #[test]
    fn a_deleted_vip_keeps_its_address_retired_and_its_epochs() {
        use crate::types::Op;
        let mut s = owned();
        run(&mut s, Op::DeleteVip("v".into()));
        assert!(!s.vips.contains_key("v"));
        let r = &s.retired["v"];
        assert_eq!((r.owner, r.epoch, r.deleted), (1, 1, true));
        assert_eq!(r.address, "10.213.0.100/24");
        // Made again: it continues from epoch 1, unowned.
        let again = model::Vip {
            name: "v".into(),
            address: "10.213.0.100/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        };
        run(&mut s, Op::ApplyVip(again));
        assert_eq!((s.vips["v"].owner, s.vips["v"].epoch), (0, 1));
        // The next assignment ends nothing of the deleted VIP: its address stays retired
        // until cleared.
        let stale = Op::ClearRetired {
            vip: "v".into(),
            epoch: 7,
        };
        assert!(matches!(run(&mut s, stale), Outcome::Rejected { .. }));
        let clear = Op::ClearRetired {
            vip: "v".into(),
            epoch: 1,
        };
        assert_eq!(run(&mut s, clear), Outcome::StateWritten);
        assert!(s.retired.is_empty());
    }

    #[test]
    fn a_changed_address_is_released_first_and_assigned_again_higher() {
        use crate::types::Op;
        let mut s = owned();
        let mut changed = s.vips["v"].clone();
        changed.address = "10.213.0.101/24".into();
        run(&mut s, Op::ApplyVip(changed.clone()));
        let v = &s.vips["v"];
        assert_eq!(
            (v.owner, v.epoch, v.releasing, v.address.as_str()),
            (1, 1, true, "10.213.0.101/24")
        );
        assert_eq!(s.retired["v"].address, "10.213.0.100/24");
        // Changed once more before the owner let go: the held (first) address stays retired.
        changed.address = "10.213.0.102/24".into();
        run(&mut s, Op::ApplyVip(changed));
        assert_eq!(s.retired["v"].address, "10.213.0.100/24");
        // The next owner's assignment ends the old lease and frees the old address.
        let assign = Op::AssignVip {
            vip: "v".into(),
            node: 1,
            epoch: 2,
        };
        run(&mut s, assign);
        assert!(s.retired.is_empty());
        assert!(!s.vips["v"].releasing);
        // An unowned VIP changes at once.
        let revoke = Op::RevokeVip {
            vip: "v".into(),
            epoch: 2,
        };
        run(&mut s, revoke);
        let mut v = s.vips["v"].clone();
        v.interface = "eth1".into();
        run(&mut s, Op::ApplyVip(v));
        assert!(s.retired.is_empty() && !s.vips["v"].releasing);
    }

    /// The controller decided to assign VIP "w" before an operator gave it the retired
    /// address of a deleted VIP: the assignment is refused at apply, as is one of a VIP made
    /// again under a deleted one's name, until the retired address is cleared.
    #[test]
    fn no_assignment_applies_onto_a_retired_address() {
        use crate::types::Op;
        let mut s = owned();
        s.nodes.insert(
            2,
            model::Node {
                id: 2,
                ..Default::default()
            },
        );
        let w = model::Vip {
            name: "w".into(),
            address: "10.213.0.109/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        };
        run(&mut s, Op::ApplyVip(w.clone()));
        // Decided now (w at .109 is free) ...
        let assign_w = Op::AssignVip {
            vip: "w".into(),
            node: 2,
            epoch: 1,
        };
        // ... then v is deleted (node 1 may still answer .100) and w moved onto .100.
        run(&mut s, Op::DeleteVip("v".into()));
        let moved = model::Vip {
            address: "10.213.0.100/24".into(),
            ..w
        };
        assert_eq!(run(&mut s, Op::ApplyVip(moved)), Outcome::StateWritten);
        assert!(matches!(
            run(&mut s, assign_w.clone()),
            Outcome::Rejected { .. }
        ));
        assert_eq!(s.vips["w"].owner, 0);
        // v made again elsewhere: still not assignable while its old address is retired.
        let again = model::Vip {
            name: "v".into(),
            address: "10.213.0.110/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        };
        run(&mut s, Op::ApplyVip(again));
        let assign_v = Op::AssignVip {
            vip: "v".into(),
            node: 2,
            epoch: 2,
        };
        assert!(matches!(
            run(&mut s, assign_v.clone()),
            Outcome::Rejected { .. }
        ));
        // Cleared: both go ahead.
        let clear = Op::ClearRetired {
            vip: "v".into(),
            epoch: 1,
        };
        assert_eq!(run(&mut s, clear), Outcome::StateWritten);
        assert_eq!(run(&mut s, assign_w), Outcome::StateWritten);
        assert_eq!(run(&mut s, assign_v), Outcome::StateWritten);
    }

    /// A name keeps one retired address at a time: an owned VIP whose name still keeps an
    /// earlier epoch's retired address is neither changed nor deleted (which would drop the
    /// address it holds now from the retired ones).
    #[test]
    fn a_second_retired_address_under_one_name_is_refused_not_dropped() {
        use crate::types::Op;
        let mut s = owned();
        // A log from before assignments were checked: v deleted, made again at .101 and
        // assigned while .100 was still retired.
        run(&mut s, Op::DeleteVip("v".into()));
        let again = model::Vip {
            name: "v".into(),
            address: "10.213.0.101/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        };
        run(&mut s, Op::ApplyVip(again.clone()));
        s.vips.update("v", |v| (v.owner, v.epoch) = (1, 2)).unwrap();
        let mut changed = again.clone();
        changed.address = "10.213.0.102/24".into();
        assert!(matches!(
            run(&mut s, Op::ApplyVip(changed)),
            Outcome::Rejected { .. }
        ));
        assert!(matches!(
            run(&mut s, Op::DeleteVip("v".into())),
            Outcome::Rejected { .. }
        ));
        assert_eq!(s.vips["v"].address, "10.213.0.101/24");
        assert_eq!(s.retired["v"].address, "10.213.0.100/24");
    }

    #[test]
    fn an_agent_binding_needs_a_known_node_and_zero_unbinds() {
        let mut s = owned();
        assert!(matches!(s.bind_agent(9, 5).0, Outcome::Rejected { .. }));
        s.bind_agent(1, 5);
        assert_eq!(s.agents.get(&1), Some(&5));
        s.bind_agent(1, 0);
        assert!(s.agents.is_empty());
    }

    /// Review finding: the duplicate-address check compares "address/prefix" strings, so one
    /// IP under two prefix lengths is two VIPs, which the controller may place on two nodes:
    /// both answer ARP for 10.213.0.100.
    #[test]
    fn review_one_ip_under_two_prefix_lengths_is_refused() {
        use crate::types::Op;
        let mut s = owned();
        let other = model::Vip {
            name: "w".into(),
            address: "10.213.0.100/25".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        };
        let out = run(&mut s, Op::ApplyVip(other));
        assert!(
            matches!(out, Outcome::Rejected { .. }),
            "a second VIP for 10.213.0.100 (as /25 next to /24) was accepted: {out:?}"
        );
    }
}
