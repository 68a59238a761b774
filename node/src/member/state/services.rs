//! The state machine's services: an operator defines one (its backends must be known nodes)
//! or deletes one (not while it gates a VIP), agents report their backends' health, and
//! `change_service` is how the release operations (`releases.rs`) change one service, all or
//! nothing. Deterministic like the rest of `StateData::apply`: no clock, no IO (the time of a
//! report is the leader's, from the command). The rollout rules themselves are
//! `releases.rs`; the VIPs a service gates, `vips.rs`.

use crate::member::state::releases::Refusal;
use crate::member::state::{rejected, state_event, Applied, StateData};
use crate::model;
use crate::types::{NodeId, Outcome};

impl StateData {
    /// An operator defines a service, or redefines it: what agents reported (health, the
    /// release each backend runs) and what rollouts set are kept, never taken from the caller.
    pub(crate) fn apply_service(&mut self, svc: &model::Service) -> Applied {
        for id in svc.backends.keys() {
            if !self.nodes.contains_key(id) {
                return (
                    rejected("service.backends", format!("unknown node {id}")),
                    Vec::new(),
                );
            }
        }
        let mut new = svc.clone();
        // What agents report is never taken from the operator's definition.
        for b in new.backends.values_mut() {
            b.applied_release.clear();
            b.applied_ms = 0;
            b.apply_error.clear();
            b.release_failed.clear();
        }
        if let Some(old) = self.services.get(&svc.name) {
            // Health is reported by agents and the active release is set by rollouts:
            // redefining a service keeps both.
            for (id, b) in new.backends.iter_mut() {
                if let Some(ob) = old.backends.get(id) {
                    b.health = ob.health;
                    b.changed_ms = ob.changed_ms;
                }
            }
            new.active_release = old.active_release.clone();
            new.releases = old.releases.clone();
            new.previous_release = old.previous_release.clone();
            new.rollout = old.rollout.clone();
            for (id, b) in new.backends.iter_mut() {
                if let Some(ob) = old.backends.get(id) {
                    b.applied_release = ob.applied_release.clone();
                    b.applied_ms = ob.applied_ms;
                    b.apply_error = ob.apply_error.clone();
                    b.release_failed = ob.release_failed.clone();
                }
            }
            if &new == old {
                return (Outcome::StateWritten, Vec::new());
            }
        } else {
            for b in new.backends.values_mut() {
                b.health = model::Health::Unknown;
                b.changed_ms = 0;
            }
            new.active_release.clear();
            new.releases.clear();
            new.previous_release.clear();
            new.rollout = None;
        }
        self.services.insert(svc.name.clone(), new);
        (
            Outcome::StateWritten,
            vec![state_event("service", svc.name.clone(), false)],
        )
    }

    /// An operator deletes a service that gates no VIP.
    pub(crate) fn delete_service(&mut self, name: &str) -> Applied {
        if !self.services.contains_key(name) {
            return (
                rejected("name", format!("unknown service {name:?}")),
                Vec::new(),
            );
        }
        if let Some(vip) = self.vips.values().find(|v| v.service == name) {
            return (
                rejected(
                    "name",
                    format!(
                        "service {name:?} gates VIP {:?}; delete or change the VIP first",
                        vip.name
                    ),
                ),
                Vec::new(),
            );
        }
        self.services.remove(name);
        (
            Outcome::StateWritten,
            vec![state_event("service", name, true)],
        )
    }

    /// An agent reports the health of its backend of `service`, at the leader's `now_ms`.
    pub(crate) fn report_health(
        &mut self,
        node_id: NodeId,
        service: &str,
        health: model::Health,
        now_ms: u64,
    ) -> Applied {
        let Some(svc) = self.services.get_mut(service) else {
            return (
                rejected("service", format!("unknown service {service:?}")),
                Vec::new(),
            );
        };
        let Some(b) = svc.backends.get_mut(&node_id) else {
            return (
                rejected(
                    "node_id",
                    format!("node {node_id} is not a backend of {service:?}"),
                ),
                Vec::new(),
            );
        };
        if b.health == health {
            return (Outcome::StateWritten, Vec::new());
        }
        b.health = health;
        b.changed_ms = now_ms;
        (
            Outcome::StateWritten,
            vec![state_event("service", service, false)],
        )
    }

    /// Changes one service through `f`, which refuses or says whether it changed anything.
    pub(crate) fn change_service(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut model::Service) -> Result<bool, Refusal>,
    ) -> Applied {
        let Some(svc) = self.services.get_mut(name) else {
            return (
                rejected("service", format!("unknown service {name:?}")),
                Vec::new(),
            );
        };
        // Work on a copy: a refusal leaves the service exactly as it was.
        let mut copy = svc.clone();
        match f(&mut copy) {
            Err((field, message)) => (rejected(field, message), Vec::new()),
            Ok(false) => (Outcome::StateWritten, Vec::new()),
            Ok(true) => {
                *svc = copy;
                (
                    Outcome::StateWritten,
                    vec![state_event("service", name.to_string(), false)],
                )
            }
        }
    }
}
