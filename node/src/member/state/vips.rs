//! The state machine's VIP operations: an operator's definition, delete and move, and the
//! controller's assignments, release requests and revocations, each checked against epochs
//! and retired addresses (`leases.rs`); and `eligible`, whether a node may hold a VIP as the
//! state says. Deterministic like the rest of `StateData::apply`: no clock, no IO. Which node
//! gets a VIP, and when, is the leader's controller's to decide.

use ballast_proto::v1;

use crate::member::state::{rejected, state_event, Applied, StateData};
use crate::model;
use crate::types::{NodeId, Outcome};

impl StateData {
    /// An operator defines a VIP, or changes it: owner and epoch stay the controller's, and a
    /// new address or interface of an owned VIP is a planned move (released, then assigned
    /// again at a higher epoch).
    pub(crate) fn apply_vip(&mut self, vip: &model::Vip) -> Applied {
        if !self.services.contains_key(&vip.service) {
            return (
                rejected("vip.service", format!("unknown service {:?}", vip.service)),
                Vec::new(),
            );
        }
        if let Some(p) = &vip.placement {
            for id in p.priorities.keys() {
                if !self.nodes.contains_key(id) {
                    return (
                        rejected("vip.placement.priorities", format!("unknown node {id}")),
                        Vec::new(),
                    );
                }
            }
        }
        if let Some(other) = self.vips.other_at(&vip.name, &vip.address) {
            return (
                rejected(
                    "vip.address",
                    format!("{} is already VIP {:?}", vip.address, other.name),
                ),
                Vec::new(),
            );
        }
        let mut new = vip.clone();
        // Owner and epoch belong to the controller, never to the caller.
        match self.vips.get(&vip.name).cloned() {
            Some(old) => {
                new.owner = old.owner;
                new.epoch = old.epoch;
                new.releasing = old.releasing;
                new.move_to = old.move_to;
                if new == old {
                    return (Outcome::StateWritten, Vec::new());
                }
                // A new address or interface is a planned move: the owner releases the old
                // one (kept retired until it confirms or its lease runs out), and only then
                // is the VIP assigned again, at a higher epoch, with the new one.
                if old.owner != 0 && (old.address != new.address || old.interface != new.interface)
                {
                    if let Some(why) = self.retire_blocked(&old) {
                        return (rejected("vip.address", why), Vec::new());
                    }
                    self.retire(&old, false);
                    new.releasing = true;
                }
            }
            None => {
                new.owner = 0;
                // A VIP made again under a deleted one's name continues its epochs.
                new.epoch = self.vip_epochs.remove(&vip.name).unwrap_or(0);
                new.releasing = false;
                new.move_to = 0;
            }
        }
        self.vips.insert(vip.name.clone(), new);
        (
            Outcome::StateWritten,
            vec![state_event("vip", vip.name.clone(), false)],
        )
    }

    /// Deletes a VIP; its address stays retired until its owner let go.
    pub(crate) fn delete_vip(&mut self, name: &str) -> Applied {
        let Some(old) = self.vips.get(name) else {
            return (
                rejected("name", format!("unknown VIP {name:?}")),
                Vec::new(),
            );
        };
        if let Some(why) = self.retire_blocked(old) {
            return (rejected("name", why), Vec::new());
        }
        let old = self.vips.remove(name).expect("looked up above");
        // Its owner may still answer: the address stays retired until it let go.
        self.retire(&old, true);
        self.vip_epochs.insert(name.to_string(), old.epoch);
        (
            Outcome::StateWritten,
            vec![state_event("vip", name.to_string(), true)],
        )
    }

    /// An operator asks to move `vip` to node `to` (planned: the owner lets go first).
    pub(crate) fn move_vip(&mut self, vip: &str, to: NodeId) -> Applied {
        let Some(v) = self.vips.get(vip) else {
            return (rejected("name", format!("unknown VIP {vip:?}")), Vec::new());
        };
        if let Err(why) = self.eligible(&v.service, to) {
            return (
                rejected("to_node", format!("node {to} cannot hold {vip:?}: {why}")),
                Vec::new(),
            );
        }
        if v.owner == to || v.move_to == to {
            return (Outcome::StateWritten, Vec::new());
        }
        self.vips
            .update(vip, |v| v.move_to = to)
            .expect("looked up above");
        (
            Outcome::StateWritten,
            vec![state_event("vip", vip.to_string(), false)],
        )
    }

    /// The controller gives `vip` to `node` at `epoch` (the next one), unless its name or address is still retired.
    pub(crate) fn assign_vip(&mut self, vip: &str, node: NodeId, epoch: u64) -> Applied {
        if !self.nodes.contains_key(&node) {
            return (rejected("node", format!("unknown node {node}")), Vec::new());
        }
        let Some(v) = self.vips.get(vip) else {
            return (rejected("vip", format!("unknown VIP {vip:?}")), Vec::new());
        };
        if epoch != v.epoch + 1 {
            return (
                rejected(
                    "epoch",
                    format!("{epoch} is not the next epoch of {vip:?} (now {})", v.epoch),
                ),
                Vec::new(),
            );
        }
        if let Some(why) = self.assign_blocked(vip, &v.address) {
            return (rejected("vip", why), Vec::new());
        }
        let ended = v.epoch;
        self.vips
            .update(vip, |v| {
                v.owner = node;
                v.epoch = epoch;
                v.releasing = false;
                v.move_to = 0;
            })
            .expect("looked up above");
        self.lease_ended(vip, ended);
        (
            Outcome::StateWritten,
            vec![state_event("vip", vip.to_string(), false)],
        )
    }

    /// The controller ends the owner's lease at `epoch`: asks it to let go (`release`), or revokes it.
    pub(crate) fn end_vip_lease(&mut self, vip: &str, epoch: u64, release: bool) -> Applied {
        let Some(v) = self.vips.get(vip) else {
            return (rejected("vip", format!("unknown VIP {vip:?}")), Vec::new());
        };
        if epoch != v.epoch || v.owner == 0 {
            return (
                rejected(
                    "epoch",
                    format!(
                        "{vip:?} is not owned at epoch {epoch} (epoch {}, owner {})",
                        v.epoch, v.owner
                    ),
                ),
                Vec::new(),
            );
        }
        if release {
            if v.releasing {
                return (Outcome::StateWritten, Vec::new());
            }
            self.vips.update(vip, |v| v.releasing = true);
        } else {
            self.vips.update(vip, |v| {
                v.owner = 0;
                v.releasing = false;
            });
            self.lease_ended(vip, epoch);
        }
        (
            Outcome::StateWritten,
            vec![state_event("vip", vip.to_string(), false)],
        )
    }

    /// Whether `node` may hold a VIP gated by `service`, as the replicated state says.
    pub(crate) fn eligible(&self, service: &str, node: NodeId) -> Result<(), String> {
        let n = self
            .nodes
            .get(&node)
            .ok_or_else(|| "unknown node".to_string())?;
        if n.admin != model::AdminState::Active {
            return Err(format!("it is {}", v1::AdminState::from(n.admin).label()));
        }
        if !n.alive {
            return Err("its agent is not alive".into());
        }
        let b = self
            .services
            .get(service)
            .and_then(|s| s.backends.get(&node))
            .ok_or_else(|| format!("it is not a backend of {service:?}"))?;
        if b.health != model::Health::Healthy {
            return Err("its backend is not healthy".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::member::state::tests::{apply1, entry, membership, xorshift};
    use std::collections::BTreeMap;

    use crate::member::state::{StateData, Vips};
    use crate::model;
    use crate::types::{Op, Outcome};

    /// VIP "v", 10.213.0.9/24 on eth0, gated by service "web".
    fn web_vip() -> model::Vip {
        model::Vip {
            name: "v".into(),
            address: "10.213.0.9/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn epochs_only_grow_and_stale_controller_commands_are_refused() {
        let mut s = StateData::default();
        apply1(&mut s, &membership(1, &[1, 2], &[]));
        let svc = model::Service {
            name: "web".into(),
            backends: [(1, model::Backend::default())].into(),
            ..Default::default()
        };
        apply1(&mut s, &entry(2, Op::ApplyService(svc), None));
        apply1(&mut s, &entry(3, Op::ApplyVip(web_vip()), None));
        let assign = |node, epoch| Op::AssignVip {
            vip: "v".into(),
            node,
            epoch,
        };
        assert_eq!(
            apply1(&mut s, &entry(4, assign(1, 1), None)).0.outcome,
            Outcome::StateWritten
        );
        // A duplicate or stale assignment is refused deterministically.
        assert!(matches!(
            apply1(&mut s, &entry(5, assign(2, 1), None)).0.outcome,
            Outcome::Rejected { .. }
        ));
        assert_eq!((s.vips["v"].owner, s.vips["v"].epoch), (1, 1));
        let rel = Op::ReleaseVip {
            vip: "v".into(),
            epoch: 1,
        };
        apply1(&mut s, &entry(6, rel, None));
        assert!(s.vips["v"].releasing);
        apply1(&mut s, &entry(7, assign(2, 2), None));
        assert_eq!(
            (s.vips["v"].owner, s.vips["v"].epoch, s.vips["v"].releasing),
            (2, 2, false)
        );
        assert!(matches!(
            apply1(
                &mut s,
                &entry(
                    8,
                    Op::RevokeVip {
                        vip: "v".into(),
                        epoch: 1
                    },
                    None
                )
            )
            .0
            .outcome,
            Outcome::Rejected { .. }
        ));
        apply1(
            &mut s,
            &entry(
                9,
                Op::RevokeVip {
                    vip: "v".into(),
                    epoch: 2,
                },
                None,
            ),
        );
        assert_eq!((s.vips["v"].owner, s.vips["v"].epoch), (0, 2));
        // Health reports are stamped with the leader's time from the command.
        let rep = Op::ReportHealth {
            node_id: 1,
            service: "web".into(),
            health: model::Health::Healthy,
        };
        apply1(&mut s, &entry(10, rep, None));
        let b = &s.services["web"].backends[&1];
        assert_eq!((b.health, b.changed_ms), (model::Health::Healthy, 1_010));
        let bad = Op::ReportHealth {
            node_id: 2,
            service: "web".into(),
            health: model::Health::Healthy,
        };
        assert!(matches!(
            apply1(&mut s, &entry(11, bad, None)).0.outcome,
            Outcome::Rejected { .. }
        ));
    }

    /// Member 1, and service "web" with no backend (two entries applied).
    fn with_web() -> StateData {
        let mut s = StateData::default();
        apply1(&mut s, &membership(1, &[1], &[]));
        let svc = model::Service {
            name: "web".into(),
            ..Default::default()
        };
        apply1(&mut s, &entry(2, Op::ApplyService(svc), None));
        s
    }

    #[test]
    fn vip_owner_and_epoch_are_not_the_callers() {
        let mut s = with_web();
        let vip = model::Vip {
            owner: 1,
            epoch: 99,
            ..web_vip()
        };
        apply1(&mut s, &entry(3, Op::ApplyVip(vip.clone()), None));
        assert_eq!((s.vips["v"].owner, s.vips["v"].epoch), (0, 0));
        let mut other = vip;
        other.name = "w".into();
        let (r, _) = apply1(&mut s, &entry(4, Op::ApplyVip(other), None));
        assert!(matches!(r.outcome, Outcome::Rejected { field, .. } if field == "vip.address"));
    }

    /// The index of addresses answers as the search of every VIP it replaced (checked at each
    /// apply in debug builds), through definitions, address changes, deletes, snapshots and a
    /// restore; and it is not stored: a snapshot's bytes are the same with or without it.
    #[test]
    fn the_address_index_follows_every_change_and_is_not_stored() {
        let mut s = with_web();
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut refused = 0;
        for i in 3..600u64 {
            let op = match next(10) {
                0..=5 => Op::ApplyVip(model::Vip {
                    name: format!("v{}", next(12)),
                    address: format!("10.213.0.{}/{}", next(16), 20 + next(8)),
                    ..web_vip()
                }),
                6..=7 => Op::DeleteVip(format!("v{}", next(12))),
                8 => {
                    // A snapshot taken and installed: the index starts unbuilt.
                    let bytes = crate::member::format::encode_state(&s);
                    s = crate::member::format::decode_state(&bytes).unwrap();
                    continue;
                }
                _ => {
                    let mut unbuilt = s.clone();
                    unbuilt.vips = Vips::from(BTreeMap::clone(&s.vips));
                    assert_eq!(
                        crate::member::format::encode_state(&s),
                        crate::member::format::encode_state(&unbuilt)
                    );
                    continue;
                }
            };
            let (r, _) = apply1(&mut s, &entry(i, op, None));
            refused += usize::from(
                matches!(r.outcome, Outcome::Rejected { field, .. } if field == "vip.address"),
            );
        }
        assert!(refused > 10, "addresses collided {refused} times");
        // A restore replaces every VIP: the index is built again from them.
        let backup = s.backup().encode();
        let mut fresh = StateData::default();
        apply1(&mut fresh, &membership(1, &[1], &[]));
        let (r, _) = apply1(
            &mut fresh,
            &entry(2, Op::RestoreHeld { payload: backup }, None),
        );
        assert_eq!(r.outcome, Outcome::StateWritten);
        let taken = fresh.vips.values().next().cloned().unwrap();
        let other = model::Vip {
            name: "new".into(),
            ..taken.clone()
        };
        let (r, _) = apply1(&mut fresh, &entry(3, Op::ApplyVip(other), None));
        assert!(
            matches!(&r.outcome, Outcome::Rejected { message, .. } if message.contains(&taken.name)),
            "{r:?}"
        );
    }
}
