//! The state machine's node records: Raft members follow the membership configuration, a
//! standalone agent registers its server as a node of role agent (never a member's id) and is
//! forgotten only once it owns no VIP and backs no service, and a node's admin state (the
//! operator's) and liveness (the leader's verdict on its agent) are set on its record.
//! Deterministic like the rest of `StateData::apply`: no clock, no IO. Which agent process
//! holds a node's leases is `leases.rs`; whether a node may hold a VIP, `vips.rs`.

use crate::member::state::{rejected, state_event, Applied, StateData};
use crate::model;
use crate::types::{NodeId, Outcome};

impl StateData {
    /// Sets the field of node `node_id` that `field` picks to `value` (an operator's admin
    /// state, the leader's verdict on its agent); no change, no revision.
    pub(crate) fn set_node<T: PartialEq>(
        &mut self,
        node_id: NodeId,
        field: impl FnOnce(&mut model::Node) -> &mut T,
        value: T,
    ) -> Applied {
        let Some(node) = self.nodes.get_mut(&node_id) else {
            return (
                rejected("node_id", format!("unknown node {node_id}")),
                Vec::new(),
            );
        };
        let field = field(node);
        if *field == value {
            return (Outcome::StateWritten, Vec::new());
        }
        *field = value;
        (
            Outcome::StateWritten,
            vec![state_event("node", node_id.to_string(), false)],
        )
    }

    /// A standalone agent registers its server, at `addr`, as a node of role agent.
    pub(crate) fn register_agent(&mut self, node_id: NodeId, addr: &str) -> Applied {
        let agent = model::Role::Agent;
        if self.nodes.get(&node_id).is_some_and(|n| n.role != agent) {
            return (
                rejected(
                    "node_id",
                    format!(
                        "node {node_id} is a Raft member; a standalone agent needs an id of its own"
                    ),
                ),
                Vec::new(),
            );
        }
        let n = self.nodes.entry(node_id).or_insert_with(|| model::Node {
            id: node_id,
            role: agent,
            admin: model::AdminState::Active,
            ..Default::default()
        });
        if n.addr == *addr && n.role == agent {
            // Known and unchanged: a restart, nothing to write.
            return (Outcome::StateWritten, Vec::new());
        }
        n.addr = addr.to_string();
        (
            Outcome::StateWritten,
            vec![state_event("node", node_id.to_string(), false)],
        )
    }

    /// Forgets a standalone agent's node, once it owns no VIP and backs no service.
    pub(crate) fn forget_agent(&mut self, node_id: NodeId) -> Applied {
        let Some(n) = self.nodes.get(&node_id) else {
            return (
                rejected("node_id", format!("unknown node {node_id}")),
                Vec::new(),
            );
        };
        if n.role != model::Role::Agent {
            return (
                rejected(
                    "node_id",
                    format!("node {node_id} is a Raft member: remove it with member remove"),
                ),
                Vec::new(),
            );
        }
        if let Some(v) = self.vips.values().find(|v| v.owner == node_id) {
            return (
                rejected(
                    "node_id",
                    format!("node {node_id} owns VIP {:?}: drain it first", v.name),
                ),
                Vec::new(),
            );
        }
        if let Some(s) = self
            .services
            .values()
            .find(|s| s.backends.contains_key(&node_id))
        {
            return (
                rejected(
                    "node_id",
                    format!(
                        "node {node_id} backs service {:?}: remove it from the backends first",
                        s.name
                    ),
                ),
                Vec::new(),
            );
        }
        self.nodes.remove(&node_id);
        (
            Outcome::StateWritten,
            vec![state_event("node", node_id.to_string(), true)],
        )
    }

    /// Keeps the node records of Raft members in step with the membership config.
    pub(crate) fn sync_nodes_with_membership(&mut self) -> Vec<model::Event> {
        let m = self.membership.membership();
        let voters: std::collections::BTreeSet<NodeId> = m.voter_ids().collect();
        let mut events = Vec::new();
        let mut members = std::collections::BTreeSet::new();
        for (id, node) in m.nodes() {
            members.insert(*id);
            let role = if voters.contains(id) {
                model::Role::Voter
            } else {
                model::Role::Learner
            };
            let rec = self.nodes.entry(*id).or_insert_with(|| model::Node {
                id: *id,
                admin: model::AdminState::Active,
                ..Default::default()
            });
            if rec.role != role || rec.addr != node.addr {
                rec.role = role;
                rec.addr = node.addr.clone();
                events.push(state_event("node", id.to_string(), false));
            }
        }
        let gone: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, n)| n.role != model::Role::Agent && !members.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.nodes.remove(&id);
            events.push(state_event("node", id.to_string(), true));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use crate::member::state::tests::{apply1, entry, membership};
    use crate::member::state::StateData;
    use crate::model;
    use crate::types::{Op, Outcome};

    #[test]
    fn node_records_follow_membership_and_keep_admin_state() {
        let mut s = StateData::default();
        apply1(&mut s, &membership(1, &[1, 2, 3], &[]));
        assert_eq!(s.nodes.len(), 3);
        let (r, _) = apply1(
            &mut s,
            &entry(
                2,
                Op::SetNodeAdmin {
                    node_id: 2,
                    admin: model::AdminState::Maintenance,
                },
                None,
            ),
        );
        assert_eq!(r.outcome, Outcome::StateWritten);
        apply1(&mut s, &membership(3, &[1, 2, 3], &[4]));
        assert_eq!(s.nodes[&4].role, model::Role::Learner);
        assert_eq!(s.nodes[&2].admin, model::AdminState::Maintenance);
        apply1(&mut s, &membership(4, &[1, 2], &[]));
        assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        let (r, _) = apply1(
            &mut s,
            &entry(
                5,
                Op::SetNodeAdmin {
                    node_id: 3,
                    admin: model::AdminState::Active,
                },
                None,
            ),
        );
        assert!(matches!(r.outcome, Outcome::Rejected { field, .. } if field == "node_id"));
    }

    #[test]
    fn standalone_agents_register_and_are_forgotten_but_never_as_members() {
        let mut s = StateData::default();
        apply1(&mut s, &membership(1, &[1, 2, 3], &[]));
        let op = |i: u64, op: Op| entry(i, op, None);
        // The id of a member is refused.
        let (r, _) = apply1(
            &mut s,
            &op(
                2,
                Op::RegisterAgent {
                    node_id: 2,
                    addr: "10.0.0.2".into(),
                },
            ),
        );
        assert!(matches!(r.outcome, Outcome::Rejected { .. }));
        assert_eq!(s.nodes[&2].role, model::Role::Voter);
        // A new id becomes an active agent node, and survives membership changes.
        let register = |i| {
            op(
                i,
                Op::RegisterAgent {
                    node_id: 7,
                    addr: "10.0.0.7".into(),
                },
            )
        };
        let (r, _) = apply1(&mut s, &register(3));
        assert_eq!(r.outcome, Outcome::StateWritten);
        assert_eq!(s.nodes[&7].role, model::Role::Agent);
        assert_eq!(s.nodes[&7].admin, model::AdminState::Active);
        let rev = s.revision;
        apply1(&mut s, &register(4));
        assert_eq!(s.revision, rev, "registering again changes nothing");
        apply1(&mut s, &membership(5, &[1, 2], &[]));
        assert!(s.nodes.contains_key(&7));
        // Forgetting: not a member, not while it backs a service.
        let forget = |i, id| op(i, Op::ForgetAgent { node_id: id });
        let (r, _) = apply1(&mut s, &forget(6, 1));
        assert!(matches!(r.outcome, Outcome::Rejected { .. }));
        let svc = model::Service {
            name: "web".into(),
            backends: [(7, model::Backend::default())].into_iter().collect(),
            ..Default::default()
        };
        let (r, _) = apply1(&mut s, &op(7, Op::ApplyService(svc)));
        assert_eq!(r.outcome, Outcome::StateWritten);
        let (r, _) = apply1(&mut s, &forget(8, 7));
        assert!(matches!(r.outcome, Outcome::Rejected { .. }));
        apply1(&mut s, &op(9, Op::DeleteService("web".into())));
        let (r, _) = apply1(&mut s, &forget(10, 7));
        assert_eq!(r.outcome, Outcome::StateWritten);
        assert!(!s.nodes.contains_key(&7));
    }
}
