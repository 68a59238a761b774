//! The replicated state machine: a pure, deterministic function of the log.
//!
//! `StateData::apply` is the only place the authoritative state changes. It reads no clock
//! (the leader's time is in the command) and no randomness, so every member that applies the
//! same log holds the same state, revision and watch history.
//!
//! This file holds the state itself, what every operation shares (revisions, the watch
//! history, client sessions for at-most-once writes, decisions stamped with a stale term) and
//! `execute`, which hands each operation to its domain beside it: `kv.rs`, `nodes.rs`,
//! `services.rs`, `vips.rs` (with `vip_table.rs`: the VIPs and the index of their addresses,
//! changed only together), `leases.rs`, `releases.rs` (the rollout rules on one service)
//! and `restore.rs` (backups). It decides nothing for the cluster: the leader's loops and the
//! API propose, the state machine only applies or refuses.

mod kv;
mod leases;
mod nodes;
pub(crate) mod releases;
mod restore;
mod services;
mod vip_table;
mod vips;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::types::EntryPayload;
use serde::{Deserialize, Serialize};

use crate::lease::LeaseSettings;
use crate::model;
use crate::model::{KvEntry, RetiredVip};
use crate::types::{
    BatchResult, ClientRequest, Command, CommandResult, Entry, LogId, NodeId, Op, Outcome,
    StoredMembership,
};

pub use vip_table::Vips;

/// Revisions of change events kept for watch resumption.
pub(crate) const HISTORY_REVISIONS: usize = 10_000;

/// How many revisions the state machines of this process keep: [`HISTORY_REVISIONS`] unless
/// a test set another bound.
static HISTORY_BOUND: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(HISTORY_REVISIONS);

/// Makes every state machine of this process keep `n` revisions of history instead of
/// [`HISTORY_REVISIONS`], so that tests can compact it without writing 10,000 revisions.
/// For tests only: members that keep less answer more watches with compaction.
#[doc(hidden)]
pub fn set_history_revisions_for_tests(n: usize) {
    HISTORY_BOUND.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}
/// A client session is forgotten after this long without a write.
pub(crate) const SESSION_TTL_MS: u64 = 60 * 60 * 1000;
/// At most this many client sessions are kept; the least recently used one is dropped first.
pub(crate) const MAX_SESSIONS: usize = 50_000;
/// At most this many unacknowledged results are kept per client session.
pub(crate) const MAX_RESULTS_PER_SESSION: usize = 1_024;

/// What the cluster remembers of one client, for at-most-once writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Results of writes not yet acknowledged by the client, by seq.
    pub results: BTreeMap<u64, CommandResult>,
    /// Every seq below this was acknowledged; a retry of one is answered `StaleRetry`.
    pub acked_below: u64,
    pub last_touch_ms: u64,
}

/// The whole replicated state. Snapshots store it in a versioned format (`format.rs`): a new
/// field here is a new format version there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub revision: u64,
    pub kv: BTreeMap<Vec<u8>, KvEntry>,
    pub nodes: BTreeMap<NodeId, model::Node>,
    pub services: BTreeMap<String, model::Service>,
    /// The VIPs by name, with the index of their addresses (derived, never stored): read as
    /// a map, changed only through `Vips`' methods, which keep the index right.
    pub vips: Vips,
    pub sessions: BTreeMap<u64, Session>,
    /// The events of the most recent revisions, oldest first. Shared, not owned: a snapshot
    /// copies the state under its lock, and copying thousands of revisions with their values
    /// (46 MB at 4 KiB values) held up applying for up to a second on a busy machine.
    pub history: VecDeque<Arc<model::Changes>>,
    /// The cluster's VIP lease settings; None until the first leader sets them (from its
    /// configuration) or an operator does (`ballastctl lease set`).
    pub lease: Option<LeaseSettings>,
    /// How long (lease + margin, ms) a grant made under any setting still in force may be
    /// held: a new leader counts every lease as held this long from its election. Never below
    /// the current setting's; lowered to it only once every grant of a longer one is over.
    pub lease_wait_ms: u64,
    /// Counts every change of `lease` or `lease_wait_ms`: a settling names the generation it
    /// waited out, and is refused if anything changed since (even a raise and a return).
    pub lease_generation: u64,
    /// Addresses a VIP no longer has (it was deleted, or its address or interface changed)
    /// while their last owner may still answer for them, by VIP name: no VIP is placed on such
    /// an address until that owner confirms it stopped or its lease runs out.
    pub retired: BTreeMap<String, RetiredVip>,
    /// The last epoch of each deleted VIP, so that a VIP made again under the same name
    /// continues its epochs (they are fencing tokens and never go backwards).
    pub vip_epochs: BTreeMap<String, u64>,
    /// The agent process each node's leases are bound to (its instance id): a second agent
    /// started with the same node id gets no grant while the first one's leases may live.
    pub agents: BTreeMap<NodeId, u64>,
}

/// What applying one operation gives: its outcome, and the events of its revision (none when
/// nothing changed).
pub(crate) type Applied = (Outcome, Vec<model::Event>);

pub(crate) fn rejected(field: &str, message: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        field: field.to_string(),
        message: message.into(),
    }
}

pub(crate) fn kv_event(kind: model::KvEventKind, kv: model::KeyValue) -> model::Event {
    model::Event {
        event: Some(model::EventKind::Kv(model::KvEvent { kind, kv: Some(kv) })),
    }
}

pub(crate) fn state_event(kind: &str, name: impl Into<String>, deleted: bool) -> model::Event {
    model::Event {
        event: Some(model::EventKind::State(model::StateEvent {
            kind: kind.to_string(),
            name: name.into(),
            deleted,
        })),
    }
}

impl StateData {
    /// The oldest revision a watch can still start from.
    pub(crate) fn oldest_watchable_revision(&self) -> u64 {
        match self.history.front() {
            Some(first) => first.revision,
            None => self.revision + 1,
        }
    }

    /// Applies one log entry. Returns the result of each of its commands and the events of
    /// each new revision (already appended to the history).
    pub fn apply(&mut self, entry: &Entry) -> (BatchResult, Vec<model::Changes>) {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => (BatchResult::default(), Vec::new()),
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                let events = self.sync_nodes_with_membership();
                (
                    BatchResult::default(),
                    self.commit_events(events).into_iter().collect(),
                )
            }
            EntryPayload::Normal(batch) => {
                let mut results = Vec::with_capacity(batch.commands.len());
                let mut watches = Vec::new();
                for cmd in &batch.commands {
                    let (r, w) = self.apply_command_in(cmd, entry.log_id.leader_id.term);
                    results.push(r);
                    watches.extend(w);
                }
                (BatchResult { results }, watches)
            }
        }
    }

    fn commit_events(&mut self, events: Vec<model::Event>) -> Option<model::Changes> {
        if events.is_empty() {
            return None;
        }
        self.revision += 1;
        let resp = model::Changes {
            revision: self.revision,
            events,
        };
        self.history.push_back(Arc::new(resp.clone()));
        let bound = HISTORY_BOUND.load(std::sync::atomic::Ordering::Relaxed);
        while self.history.len() > bound {
            self.history.pop_front();
        }
        Some(resp)
    }

    /// Applies one command outside a log entry (tests): as from an entry of term 0.
    pub fn apply_command(&mut self, cmd: &Command) -> (CommandResult, Option<model::Changes>) {
        self.apply_command_in(cmd, 0)
    }

    /// Applies one command of a log entry of `term`: the unit of revisions, deduplication
    /// and results.
    pub fn apply_command_in(
        &mut self,
        cmd: &Command,
        term: u64,
    ) -> (CommandResult, Option<model::Changes>) {
        if let Some(req) = cmd.request {
            if let Some(cached) = self.cached_result(&req, cmd.now_ms) {
                return (cached, None);
            }
        }
        let (outcome, events) = match &cmd.op {
            Op::Decided { term: decided, op } => {
                if *decided != term {
                    (
                        rejected(
                            "term",
                            format!(
                                "a decision of term {decided} in an entry of term {term}: stale, refused"
                            ),
                        ),
                        Vec::new(),
                    )
                } else if matches!(**op, Op::Decided { .. }) {
                    (rejected("op", "a decision inside a decision"), Vec::new())
                } else {
                    self.execute(op, cmd.now_ms)
                }
            }
            op => self.execute(op, cmd.now_ms),
        };
        let watch = self.commit_events(events);
        let result = CommandResult {
            revision: self.revision,
            outcome,
        };
        if let Some(req) = cmd.request {
            self.remember(&req, cmd.now_ms, &result);
        }
        if self.revision.is_multiple_of(1024) {
            self.expire_sessions(cmd.now_ms);
        }
        (result, watch)
    }

    /// The result of an earlier application of the same client write, if there was one.
    fn cached_result(&mut self, req: &ClientRequest, now_ms: u64) -> Option<CommandResult> {
        let session = self.sessions.get_mut(&req.client_id)?;
        session.last_touch_ms = session.last_touch_ms.max(now_ms);
        if req.seq < session.acked_below {
            return Some(CommandResult {
                revision: self.revision,
                outcome: Outcome::StaleRetry,
            });
        }
        session.results.get(&req.seq).cloned()
    }

    fn remember(&mut self, req: &ClientRequest, now_ms: u64, result: &CommandResult) {
        let session = self.sessions.entry(req.client_id).or_default();
        session.last_touch_ms = session.last_touch_ms.max(now_ms);
        session.acked_below = session.acked_below.max(req.acked_below);
        session.results.insert(req.seq, result.clone());
        let keep = session.results.split_off(&session.acked_below);
        session.results = keep;
        while session.results.len() > MAX_RESULTS_PER_SESSION {
            session.results.pop_first();
        }
        if self.sessions.len() > MAX_SESSIONS {
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_touch_ms)
                .map(|(id, _)| *id)
            {
                self.sessions.remove(&oldest);
            }
        }
    }

    fn expire_sessions(&mut self, now_ms: u64) {
        self.sessions
            .retain(|_, s| now_ms.saturating_sub(s.last_touch_ms) < SESSION_TTL_MS);
    }

    /// Applies one operation (at the leader's `now_ms`): each is its domain's to apply.
    fn execute(&mut self, op: &Op, now_ms: u64) -> Applied {
        let rev = self.revision + 1;
        match op {
            Op::Put { key, value } => self.put(key, value, rev),
            Op::CompareAndSet {
                key,
                expected,
                new_value,
            } => self.compare_and_set(key, expected, new_value, rev),
            Op::Delete { key, prefix } => self.delete(key, *prefix, rev),
            Op::ApplyService(svc) => self.apply_service(svc),
            Op::DeleteService(name) => self.delete_service(name),
            Op::ApplyVip(vip) => self.apply_vip(vip),
            Op::DeleteVip(name) => self.delete_vip(name),
            Op::SetNodeAdmin { node_id, admin } => {
                self.set_node(*node_id, |n| &mut n.admin, *admin)
            }
            Op::ReportHealth {
                node_id,
                service,
                health,
            } => self.report_health(*node_id, service, *health, now_ms),
            Op::MoveVip { vip, to } => self.move_vip(vip, *to),
            Op::AssignVip { vip, node, epoch } => self.assign_vip(vip, *node, *epoch),
            Op::ReleaseVip { vip, epoch } | Op::RevokeVip { vip, epoch } => {
                self.end_vip_lease(vip, *epoch, matches!(op, Op::ReleaseVip { .. }))
            }
            Op::SetNodeAlive { node_id, alive } => {
                self.set_node(*node_id, |n| &mut n.alive, *alive)
            }
            Op::RegisterAgent { node_id, addr } => self.register_agent(*node_id, addr),
            Op::RegisterRelease { service, release } => {
                self.change_service(service, |svc| releases::register(svc, release, now_ms))
            }
            Op::StartRollout {
                service,
                release,
                batch,
                min_healthy_ms,
                deadline_ms,
                canary,
            } => self.change_service(service, |svc| {
                releases::start(
                    svc,
                    release,
                    *batch,
                    *min_healthy_ms,
                    *deadline_ms,
                    *canary,
                    now_ms,
                )
            }),
            Op::ControlRollout { service, action } => {
                self.change_service(service, |svc| releases::control(svc, *action))
            }
            Op::Rollback { service, to } => {
                self.change_service(service, |svc| releases::rollback(svc, to, now_ms))
            }
            Op::ReportRelease {
                node_id,
                service,
                applied,
                failed_release,
                error,
            } => self.change_service(service, |svc| {
                releases::report(svc, *node_id, applied, failed_release, error, now_ms)
            }),
            Op::Restore { payload } => self.restore(payload, false),
            Op::RestoreHeld { payload } => self.restore(payload, true),
            Op::SetLease { settings, if_unset } => self.set_lease(settings, *if_unset),
            Op::SettleLease {
                settings,
                generation,
            } => self.settle_lease(settings, *generation),
            Op::BindAgent { node_id, instance } => self.bind_agent(*node_id, *instance),
            Op::ClearRetired { vip, epoch } => self.clear_retired(vip, *epoch),
            // Unwrapped by `apply_command_in`; one inside another is refused there.
            Op::Decided { .. } => (rejected("op", "a decision inside a decision"), Vec::new()),
            Op::StepRollout { service, step } => {
                self.change_service(service, |svc| releases::step(svc, step))
            }
            Op::ForgetAgent { node_id } => self.forget_agent(*node_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::types::{log_id, Membership};
    use openraft::BasicNode;

    use crate::types::Expected;

    use super::*;
    use crate::types::{Batch, Entry};

    pub(super) fn entry(index: u64, op: Op, request: Option<ClientRequest>) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Batch {
                commands: vec![Command {
                    request,
                    now_ms: 1_000 + index,
                    op,
                }],
            }),
        }
    }

    /// A small deterministic generator (xorshift from `seed`): each call gives a number
    /// below its argument.
    pub(super) fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// Applies a one-command entry and returns that command's result and events.
    pub(super) fn apply1(s: &mut StateData, e: &Entry) -> (CommandResult, Option<model::Changes>) {
        let (r, mut w) = s.apply(e);
        match &e.payload {
            EntryPayload::Normal(_) => (r.results[0].clone(), w.pop()),
            _ => (
                CommandResult {
                    revision: s.revision,
                    outcome: Outcome::None,
                },
                w.pop(),
            ),
        }
    }

    pub(super) fn put(k: &str, v: &str) -> Op {
        Op::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    pub(super) fn membership(index: u64, voters: &[u64], learners: &[u64]) -> Entry {
        let voters: BTreeSet<u64> = voters.iter().copied().collect();
        let mut nodes: BTreeMap<u64, BasicNode> = voters
            .iter()
            .map(|i| (*i, BasicNode::new(format!("n{i}:1"))))
            .collect();
        for l in learners {
            nodes.insert(*l, BasicNode::new(format!("n{l}:1")));
        }
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Membership(Membership::new(vec![voters], nodes).unwrap()),
        }
    }

    #[test]
    fn same_log_same_state() {
        let log: Vec<Entry> = (1..=50)
            .map(|i| entry(i, put(&format!("k{}", i % 7), &i.to_string()), None))
            .collect();
        let (mut a, mut b) = (StateData::default(), StateData::default());
        for e in &log {
            a.apply(e);
        }
        for e in &log {
            b.apply(e);
        }
        assert_eq!(a, b);
        assert_eq!(
            bincode::serialize(&a).unwrap(),
            bincode::serialize(&b).unwrap()
        );
    }

    #[test]
    fn revision_moves_only_on_change() {
        let mut s = StateData::default();
        let (r, w) = apply1(&mut s, &entry(1, put("a", "1"), None));
        assert_eq!((r.revision, w.map(|w| w.revision)), (1, Some(1)));
        // A failed compare-and-set and a delete of nothing change nothing.
        let cas = Op::CompareAndSet {
            key: "a".into(),
            expected: Expected::Value("nope".into()),
            new_value: "2".into(),
        };
        let (r, w) = apply1(&mut s, &entry(2, cas, None));
        assert_eq!(r.revision, 1);
        assert!(w.is_none());
        assert!(matches!(
            r.outcome,
            Outcome::CompareAndSet {
                succeeded: false,
                ..
            }
        ));
        let (r, _) = apply1(
            &mut s,
            &entry(
                3,
                Op::Delete {
                    key: "zzz".into(),
                    prefix: false,
                },
                None,
            ),
        );
        assert_eq!((r.revision, r.outcome), (1, Outcome::Delete { deleted: 0 }));
        // Create-only CAS (mod revision 0) fails on an existing key, succeeds on a new one.
        let create = |k: &str| Op::CompareAndSet {
            key: k.into(),
            expected: Expected::ModRevision(0),
            new_value: "x".into(),
        };
        assert!(matches!(
            apply1(&mut s, &entry(4, create("a"), None)).0.outcome,
            Outcome::CompareAndSet {
                succeeded: false,
                ..
            }
        ));
        let (r, _) = apply1(&mut s, &entry(5, create("b"), None));
        assert_eq!(r.revision, 2);
        assert_eq!(s.kv[&b"b".to_vec()].create_revision, 2);
    }

    #[test]
    fn a_duplicate_request_is_answered_from_the_session() {
        let mut s = StateData::default();
        let req = ClientRequest {
            client_id: 9,
            seq: 1,
            acked_below: 1,
        };
        let (first, _) = apply1(&mut s, &entry(1, put("a", "1"), Some(req)));
        apply1(&mut s, &entry(2, put("b", "1"), None));
        let (again, w) = apply1(&mut s, &entry(3, put("a", "1"), Some(req)));
        assert_eq!(first, again);
        assert!(w.is_none());
        assert_eq!(s.kv[&b"a".to_vec()].version, 1);
        // Once the client acknowledged seq 1, a late copy of it is refused, not applied.
        let next = ClientRequest {
            client_id: 9,
            seq: 2,
            acked_below: 2,
        };
        apply1(&mut s, &entry(4, put("c", "1"), Some(next)));
        let (late, _) = apply1(&mut s, &entry(5, put("a", "1"), Some(req)));
        assert_eq!(late.outcome, Outcome::StaleRetry);
        assert_eq!(s.kv[&b"a".to_vec()].version, 1);
        assert!(
            !s.sessions[&9].results.contains_key(&1),
            "acknowledged results are forgotten"
        );
    }

    #[test]
    fn history_is_bounded_and_prefix_delete_is_one_revision() {
        let mut s = StateData::default();
        for i in 1..=(HISTORY_REVISIONS as u64 + 10) {
            apply1(&mut s, &entry(i, put(&format!("p/{}", i % 3), "v"), None));
        }
        assert_eq!(s.history.len(), HISTORY_REVISIONS);
        assert_eq!(s.oldest_watchable_revision(), 11);
        let n = HISTORY_REVISIONS as u64 + 11;
        let (r, w) = apply1(
            &mut s,
            &entry(
                n,
                Op::Delete {
                    key: "p/".into(),
                    prefix: true,
                },
                None,
            ),
        );
        assert_eq!(r.outcome, Outcome::Delete { deleted: 3 });
        assert_eq!(w.unwrap().events.len(), 3);
        assert!(s.kv.is_empty());
    }
}
