//! The state machine's VIP operations besides defining one (`apply_vip`): delete, an
//! operator's move, and the controller's assignments, release requests and revocations, each
//! checked against epochs and retired addresses (`leases.rs`). Deterministic like the
//! rest of `StateData::apply`: no clock, no IO.

use crate::member::state::{rejected, state_event, Applied, StateData};
use crate::types::{NodeId, Outcome};

impl StateData {
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
        let v = self.vips.get_mut(vip).expect("checked above");
        if v.owner == to || v.move_to == to {
            return (Outcome::StateWritten, Vec::new());
        }
        v.move_to = to;
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
        let v = self.vips.get_mut(vip).expect("looked up above");
        let ended = v.epoch;
        v.owner = node;
        v.epoch = epoch;
        v.releasing = false;
        v.move_to = 0;
        self.lease_ended(vip, ended);
        (
            Outcome::StateWritten,
            vec![state_event("vip", vip.to_string(), false)],
        )
    }

    /// The controller ends the owner's lease at `epoch`: asks it to let go (`release`), or revokes it.
    pub(crate) fn end_vip_lease(&mut self, vip: &str, epoch: u64, release: bool) -> Applied {
        let Some(v) = self.vips.get_mut(vip) else {
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
            v.releasing = true;
        } else {
            v.owner = 0;
            v.releasing = false;
            self.lease_ended(vip, epoch);
        }
        (
            Outcome::StateWritten,
            vec![state_event("vip", vip.to_string(), false)],
        )
    }
}
