//! The shared handle of a running member (`Node`): Raft, the state, the proposer, the peers, the leader's lease book, and the calls every service makes through them (propose, read barriers, headers). Started and wired by `start.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ballast_proto::v1;
use openraft::errors::{LinearizableReadError, RaftError};
use openraft::LinearizerOption;
use tokio::sync::watch;

use crate::config::ReadPolicy;
use crate::error::ApiError;
use crate::leader::book::{LeaseBook, LeaseTerms};
use crate::leader::controller::ControllerConfig;
use crate::lease::LeaseSettings;
use crate::member::identity::IdentityStore;
use crate::member::network::{ForwardError, PeerPool};
use crate::member::proposer::Proposer;
use crate::member::proposer::{now_ms, WRITE_TIMEOUT};
use crate::member::state::StateData;
use crate::member::store::{FileEngine, StateMachineStore};
use crate::types::{ClientRequest, Command, CommandResult, NodeId, Op, Raft};
use openraft::async_runtime::WatchReceiver;

/// Shared state of a member, used by every service.
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: StateMachineStore<FileEngine>,
    pub identity: Arc<IdentityStore>,
    pub pool: PeerPool,
    pub committed: Arc<AtomicU64>,
    pub advertise: String,
    pub rpc_timeout: Duration,
    /// Turns true when the member stops; long-lived streams end on it.
    pub stopping: watch::Receiver<bool>,
    pub proposer: Proposer,
    /// Base of this member's monotonic clock (`mono_now`).
    pub clock_start: Instant,
    pub controller_cfg: ControllerConfig,
    /// What the leader observed in its current term (grants, agent contacts, releases) and
    /// the leases it decided are over: see `leader/book.rs`.
    pub(crate) book: Mutex<LeaseBook>,
    /// Wakes the controller before its next tick (a release was confirmed).
    pub controller_wake: tokio::sync::Notify,
    /// How long a leader leads before it may hand over, and waits between attempts.
    pub handover_settle: Duration,
    /// API tokens, when the API is not open (see `auth.rs`).
    pub tokens: Option<Arc<crate::auth::Tokens>>,
    /// Mutual TLS on the gRPC port and towards the peers; reloaded on SIGHUP.
    pub tls: Option<Arc<crate::tls::NodeTls>>,
    /// Pause points for tests (see `failpoint.rs`).
    pub failpoints: crate::failpoint::Failpoints,
    /// How linearizable reads that do not name a policy are confirmed.
    pub read_policy: ReadPolicy,
    /// The election timeout's upper bound: how long a follower refuses votes after a
    /// heartbeat, and (see `votes_open`) after this member started.
    pub election_timeout_max: Duration,
    /// Lease reads are off until this point of `mono_now` (ms): set when this leader hands
    /// over (see `hold_lease_reads`).
    pub lease_reads_after_ms: AtomicU64,
}

impl From<ForwardError> for ApiError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NotLeader {
                leader_id,
                leader_addr,
            } => ApiError::NotLeader {
                leader_id,
                leader_addr,
            },
            ForwardError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

impl Node {
    /// The leader this member knows of, with its address.
    pub fn leader(&self) -> (Option<NodeId>, Option<String>) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let id = m.current_leader;
        let addr = id.and_then(|id| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        });
        (id, addr)
    }

    pub fn header(&self) -> v1::ResponseHeader {
        let revision = self.sm.read().revision;
        self.header_at(revision)
    }

    /// The header for an answer computed at `revision`. Takes no state-machine lock, so
    /// handlers that hold the read guard can call it (a second read lock while a writer
    /// waits would deadlock).
    pub fn header_at(&self, revision: u64) -> v1::ResponseHeader {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        v1::ResponseHeader {
            revision,
            member_id: self.id,
            leader_id: m.current_leader.unwrap_or(0),
            raft_term: m.current_term,
        }
    }

    /// Proposes `op` through the leader: locally if this member leads, else forwarded.
    pub async fn propose(
        &self,
        request: Option<ClientRequest>,
        op: Op,
    ) -> Result<CommandResult, ApiError> {
        let cmd = Command {
            request,
            now_ms: now_ms(),
            op,
        };
        // Every log entry must fit one Raft message (see `replicate.rs`).
        let size = crate::member::proposer::command_bytes(&cmd);
        if size > crate::member::proposer::MAX_COMMAND_BYTES {
            return Err(ApiError::InvalidArgument {
                field: "request".into(),
                message: format!(
                    "encodes to {size} bytes; a write may take at most {}",
                    crate::member::proposer::MAX_COMMAND_BYTES
                ),
            });
        }
        match self.propose_local(cmd.clone()).await {
            Ok(r) => Ok(r),
            Err(ForwardError::NotLeader {
                leader_id: Some(id),
                leader_addr: Some(addr),
            }) if id != self.id => match self.pool.propose(&addr, &cmd, WRITE_TIMEOUT).await {
                Ok(r) => r.map_err(ApiError::from),
                // The leader found the input itself bad (see `server/raft.rs`): asking it
                // again directly would not change that. Other refusals (this member's own
                // credentials, say, mid-rotation) leave the client the leader's address.
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    Err(ApiError::InvalidArgument {
                        field: "request".into(),
                        message: status.message().to_string(),
                    })
                }
                Err(status) => {
                    tracing::debug!(leader = id, %addr, %status, "forwarding a write to the leader failed");
                    Err(ApiError::NotLeader {
                        leader_id: Some(id),
                        leader_addr: Some(addr),
                    })
                }
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Proposes a command on this member only (batched with others); refuses with a leader
    /// hint when not leader.
    pub async fn propose_local(&self, cmd: Command) -> Result<CommandResult, ForwardError> {
        self.proposer.propose(cmd).await
    }

    /// Returns once a read of the local state is linearizable (or at once for serializable).
    /// A read that names no policy gets this member's `--read-policy`.
    pub async fn read_barrier(&self, consistency: i32) -> Result<(), ApiError> {
        let policy = match v1::ReadConsistency::try_from(consistency) {
            Ok(v1::ReadConsistency::Serializable) => return Ok(()),
            Ok(v1::ReadConsistency::ReadIndex) => ReadPolicy::ReadIndex,
            Ok(v1::ReadConsistency::Lease) => ReadPolicy::Lease,
            Ok(v1::ReadConsistency::Linearizable) | Err(_) => self.read_policy,
        };
        let (leader_id, leader_addr) = match self.read_index_local(policy).await {
            Ok(_) => return Ok(()),
            Err(ForwardError::NotLeader {
                leader_id: Some(id),
                leader_addr: Some(addr),
            }) if id != self.id => (id, addr),
            Err(e) => return Err(e.into()),
        };
        let index = match self
            .pool
            .read_index(&leader_addr, self.rpc_timeout, policy)
            .await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err(ApiError::NotLeader {
                    leader_id: Some(leader_id),
                    leader_addr: Some(leader_addr),
                })
            }
        };
        self.raft
            .wait(Some(self.rpc_timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "catching up to the leader's read index {index}: {e}"
                ))
            })?;
        Ok(())
    }

    /// On the leader: confirms leadership (with a quorum round, or by the leader lease when
    /// `policy` allows it), waits until the local state machine has applied the read index,
    /// and returns it.
    ///
    /// The Agent service's renewals (`server/agent.rs`, `confirmed_term`) and the
    /// controller always pass `ReadIndex`: a leadership transfer's vote ignores the
    /// followers' leader lease, so only a fresh quorum round proves that no newer leader has
    /// counted the renewing agent's lease as over. A lease read is safe against that only
    /// because this member stops lease reads before it hands over (`hold_lease_reads`), and
    /// against a restarted follower voting at once only because members grant no vote for
    /// one election timeout after they start (`votes_open`).
    pub async fn read_index_local(&self, policy: ReadPolicy) -> Result<u64, ForwardError> {
        let option = match policy {
            ReadPolicy::Lease if self.lease_reads_allowed() => {
                // A tenth off for clock rates; a stale lease sends a heartbeat and waits.
                LinearizerOption::new(Some(self.election_timeout_max * 9 / 10), true)
            }
            _ => openraft::ReadPolicy::ReadIndex.into(),
        };
        match tokio::time::timeout(self.rpc_timeout * 2, self.raft.ensure_linearizable(option))
            .await
        {
            Err(_) => Err(ForwardError::Unavailable(
                "timed out confirming leadership with a quorum".into(),
            )),
            Ok(Ok(read_log_id)) => Ok(read_log_id.index()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Ok(Err(e)) => Err(ForwardError::Unavailable(e.to_string())),
        }
    }

    /// This member's monotonic clock.
    pub fn mono_now(&self) -> Duration {
        self.clock_start.elapsed()
    }

    fn lease_reads_allowed(&self) -> bool {
        self.mono_now().as_millis() as u64 >= self.lease_reads_after_ms.load(Ordering::SeqCst)
    }

    /// Stops lease reads for two election timeouts: called before this leader hands over,
    /// since the voters then grant the named member's vote at once, whatever their lease.
    pub fn hold_lease_reads(&self) {
        let until = self.mono_now() + 2 * self.election_timeout_max;
        self.lease_reads_after_ms
            .fetch_max(until.as_millis() as u64, Ordering::SeqCst);
    }

    /// Whether this member may grant votes: not in its first election timeout. openraft
    /// keeps a follower's leader lease in memory only, so a member that restarted would
    /// otherwise vote at once, while the leader it acknowledged before the crash still
    /// counts on its lease (lease reads). Its own elections wait as long (`start.rs` turns
    /// openraft's `elect` on then): a candidate votes for itself.
    pub fn votes_open(&self) -> bool {
        self.mono_now() >= self.election_timeout_max
    }

    /// The leader's lease book for the current term: a new term starts a new book, which
    /// counts every lease from now. Take it after the state-machine lock, never before.
    pub fn book(&self) -> MutexGuard<'_, LeaseBook> {
        let term = self.raft.metrics().borrow_watched().current_term;
        let mut g = self.book.lock().unwrap();
        if g.term() != term {
            *g = LeaseBook::new(term, self.mono_now());
        }
        g
    }

    /// The lease settings in force: the cluster's, or this member's configured ones while the
    /// cluster has none (its first leader proposes them).
    pub fn lease_settings(&self, data: &StateData) -> LeaseSettings {
        data.lease
            .unwrap_or_else(|| LeaseSettings::from_config(&self.controller_cfg.lease))
    }

    /// The lease lengths this leader grants and assumes, from the applied state.
    pub fn lease_terms(&self, data: &StateData) -> LeaseTerms {
        LeaseTerms::of(self.lease_settings(data), data.lease_wait_ms)
    }

    /// Refuses lease settings this member cannot work with: they must keep the promise and
    /// outlast a leader election here, and an owner's lease must end before its node is
    /// counted down.
    pub fn check_lease_settings(&self, s: &LeaseSettings) -> Result<(), ApiError> {
        let invalid = |message: String| ApiError::InvalidArgument {
            field: "settings".into(),
            message,
        };
        s.config()
            .validate_with_election(self.controller_cfg.election_timeout_max)
            .map_err(|e| invalid(e.to_string()))?;
        if Duration::from_millis(s.lease_ms) >= self.controller_cfg.node_down_after {
            return Err(invalid(format!(
                "a lease of {} ms does not end before this member counts a silent node down ({} ms, --node-down-after-ms)",
                s.lease_ms,
                self.controller_cfg.node_down_after.as_millis()
            )));
        }
        Ok(())
    }

    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }
}
