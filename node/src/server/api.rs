//! The public API: Cluster, KV, Watch and State services.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_proto::v1::{self, cluster_client::ClusterClient};
use ballast_proto::{FORWARDED_HEADER, MAX_MESSAGE_LEN};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::member::state::StateData;
use crate::metrics;
use crate::node::Node;
use crate::types::{ClientRequest, CommandResult, Expected, NodeId, Op, Outcome};
use crate::validate::{self, invalid};

/// How long a membership change waits for an earlier one to commit.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(10);

/// How often an idle watch gets a progress mark.
const WATCH_PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Api {
    node: Arc<Node>,
}

impl Api {
    pub fn new(node: Arc<Node>) -> Self {
        Api { node }
    }
}

/// Bytes per message of a streamed backup.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Times a request and counts it by status code.
pub(crate) async fn instrument<T>(
    method: &'static str,
    fut: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let r = fut.await.map(Response::new).map_err(Status::from);
    metrics::REQUEST_SECONDS
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
    let code = match &r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    metrics::REQUESTS
        .with_label_values(&[method, &format!("{code:?}")])
        .inc();
    r
}

pub(crate) fn write_outcome(r: CommandResult) -> Result<(u64, Outcome), ApiError> {
    match r.outcome {
        Outcome::Rejected { field, message } => Err(ApiError::InvalidArgument { field, message }),
        Outcome::StaleRetry => Err(ApiError::FailedPrecondition(
            "this request id was already acknowledged to the client; a retry cannot be answered"
                .into(),
        )),
        o => Ok((r.revision, o)),
    }
}

fn unexpected(o: Outcome) -> ApiError {
    ApiError::Internal(format!("unexpected outcome {o:?}"))
}

fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().get(FORWARDED_HEADER).is_some()
}

impl Api {
    fn members(&self) -> Vec<v1::Member> {
        let m = self.node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        // Only a leader knows how far each member is; it counts a member it has not heard
        // from in its term as holding nothing (a lag of its whole log, never 0).
        let leading = m.state == ServerState::Leader;
        membership
            .nodes()
            .map(|(id, n)| {
                let matched = match &m.replication {
                    _ if !leading => None,
                    _ if *id == self.node.id => Some(last),
                    Some(r) => Some(r.get(id).copied().flatten().map_or(0, |l| l.index)),
                    None => Some(0),
                };
                v1::Member {
                    id: *id,
                    addr: n.addr.clone(),
                    role: if voters.contains(id) {
                        v1::Role::Voter
                    } else {
                        v1::Role::Learner
                    } as i32,
                    matched_index: matched.unwrap_or(0),
                    lag: matched.map(|x| last.saturating_sub(x)).unwrap_or(0),
                }
            })
            .collect()
    }

    fn leader_client(
        &self,
        addr: &str,
    ) -> Result<ClusterClient<tonic::transport::Channel>, ApiError> {
        let ch = self
            .node
            .pool
            .channel(addr)
            .map_err(ApiError::Unavailable)?;
        Ok(ClusterClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN))
    }

    /// Whether `id` is a voter, or INVALID_ARGUMENT naming node_id if it is no member.
    fn member_role(&self, id: NodeId, hint: &str) -> Result<bool, ApiError> {
        validate::node_id("node_id", id)?;
        let m = self.node.raft.metrics().borrow().membership_config.clone();
        if m.membership().get_node(&id).is_none() {
            return Err(ApiError::InvalidArgument {
                field: "node_id".into(),
                message: format!("unknown node {id}{hint}"),
            });
        }
        Ok(m.membership().voter_ids().any(|v| v == id))
    }

    /// A voter-set change, here if leader, else on the leader.
    async fn change_voters<G, GFut>(
        &self,
        forwarded: bool,
        change: ChangeMembers<NodeId, BasicNode>,
        remote: G,
    ) -> Result<v1::MembershipResponse, ApiError>
    where
        G: FnOnce(ClusterClient<tonic::transport::Channel>) -> GFut,
        GFut: Future<Output = Result<Response<v1::MembershipResponse>, Status>>,
    {
        let raft = self.node.raft.clone();
        self.change_membership(
            forwarded,
            || {
                let (raft, change) = (raft.clone(), change.clone());
                async move { raft.change_membership(change, false).await.map(|_| ()) }
            },
            remote,
        )
        .await
    }

    fn membership_response(&self) -> v1::MembershipResponse {
        v1::MembershipResponse {
            header: Some(self.node.header()),
            members: self.members(),
        }
    }

    /// Runs a membership change here if leader, else on the leader (once).
    async fn change_membership<F, Fut, G, GFut>(
        &self,
        forwarded: bool,
        local: F,
        remote: G,
    ) -> Result<v1::MembershipResponse, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>>,
        G: FnOnce(ClusterClient<tonic::transport::Channel>) -> GFut,
        GFut: Future<Output = Result<Response<v1::MembershipResponse>, Status>>,
    {
        // One change at a time: wait (bounded) for a change in progress to commit.
        let deadline = Instant::now() + MEMBERSHIP_WAIT;
        let result = loop {
            match local().await {
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r => break r,
            }
        };
        match result {
            Ok(()) => Ok(self.membership_response()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let addr = f.leader_node.as_ref().map(|n| n.addr.clone());
                match (forwarded, f.leader_id, addr) {
                    (false, Some(id), Some(addr)) if id != self.node.id => {
                        let client = self.leader_client(&addr)?;
                        match remote(client).await {
                            Ok(r) => Ok(r.into_inner()),
                            Err(s)
                                if s.code() == tonic::Code::Unavailable
                                    && s.message().contains("connect") =>
                            {
                                Err(ApiError::NotLeader {
                                    leader_id: Some(id),
                                    leader_addr: Some(addr),
                                })
                            }
                            Err(s) => Err(status_to_api(s)),
                        }
                    }
                    (_, id, addr) => Err(ApiError::NotLeader {
                        leader_id: id,
                        leader_addr: addr,
                    }),
                }
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ApiError::FailedPrecondition(e.to_string()))
            }
            Err(e) => Err(ApiError::Unavailable(e.to_string())),
        }
    }
}

/// Passes a forwarded call's status back to the caller unchanged in kind.
fn status_to_api(s: Status) -> ApiError {
    let m = s.message().to_string();
    match s.code() {
        tonic::Code::InvalidArgument => ApiError::InvalidArgument {
            field: "request".into(),
            message: m,
        },
        tonic::Code::NotFound => ApiError::NotFound(m),
        tonic::Code::FailedPrecondition => ApiError::FailedPrecondition(m),
        tonic::Code::Unavailable => ApiError::Unavailable(m),
        _ => ApiError::Internal(m),
    }
}

fn forwarded_request<T>(msg: T, pool: &crate::member::network::PeerPool) -> Request<T> {
    let mut r = Request::new(msg);
    pool.authorize(&mut r);
    r.metadata_mut()
        .insert(FORWARDED_HEADER, "1".parse().expect("ascii"));
    r.set_timeout(Duration::from_secs(60));
    r
}

#[tonic::async_trait]
impl v1::cluster_server::Cluster for Api {
    async fn status(
        &self,
        _req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        instrument("Status", async {
            let m = self.node.raft.metrics().borrow().clone();
            let (leader_id, leader_addr) = self.node.leader();
            let raft_state = match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            };
            Ok(v1::StatusResponse {
                header: Some(self.node.header()),
                cluster_id: self.node.identity.cluster_id().unwrap_or_default(),
                node_id: self.node.id,
                raft_state: raft_state.into(),
                leader_id: leader_id.unwrap_or(0),
                leader_addr: leader_addr.unwrap_or_default(),
                term: m.current_term,
                last_log_index: m.last_log_index.unwrap_or(0),
                commit_index: self.node.committed_index(),
                applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
                members: self.members(),
                version: env!("CARGO_PKG_VERSION").into(),
            })
        })
        .await
    }

    async fn add_learner(
        &self,
        req: Request<v1::AddLearnerRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&req);
        let r = req.into_inner();
        instrument("AddLearner", async {
            validate::node_id("node_id", r.node_id)?;
            validate::member_addr("addr", &r.addr)?;
            let m = self.node.raft.metrics().borrow().membership_config.clone();
            if m.membership().voter_ids().any(|v| v == r.node_id) {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {} is already a voter",
                    r.node_id
                )));
            }
            let raft = self.node.raft.clone();
            let (id, addr, wait) = (r.node_id, r.addr.clone(), r.wait_caught_up);
            self.change_membership(
                forwarded,
                || {
                    let (raft, addr) = (raft.clone(), addr.clone());
                    async move {
                        raft.add_learner(id, BasicNode::new(addr), wait)
                            .await
                            .map(|_| ())
                    }
                },
                {
                    let pool = self.node.pool.clone();
                    move |mut c| async move { c.add_learner(forwarded_request(r, &pool)).await }
                },
            )
            .await
        })
        .await
    }

    async fn promote_voter(
        &self,
        req: Request<v1::PromoteVoterRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&req);
        let r = req.into_inner();
        instrument("PromoteVoter", async {
            self.member_role(r.node_id, "; add it as a learner first")?;
            let change = ChangeMembers::AddVoterIds([r.node_id].into());
            self.change_voters(forwarded, change, {
                let pool = self.node.pool.clone();
                move |mut c| async move { c.promote_voter(forwarded_request(r, &pool)).await }
            })
            .await
        })
        .await
    }

    type SnapshotStream = ReceiverStream<Result<v1::SnapshotChunk, Status>>;

    async fn snapshot(
        &self,
        _req: Request<v1::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let file = instrument("Snapshot", async {
            self.node
                .read_barrier(v1::ReadConsistency::Linearizable as i32)
                .await?;
            let cluster_id = self.node.identity.cluster_id().unwrap_or_default();
            let data = self.node.sm.read();
            Ok(crate::member::backup::file_of(
                &data,
                &cluster_id,
                crate::member::proposer::now_ms(),
            ))
        })
        .await?
        .into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for chunk in file.chunks(SNAPSHOT_CHUNK) {
                let c = v1::SnapshotChunk {
                    data: chunk.to_vec(),
                };
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn remove_node(
        &self,
        req: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        let forwarded = is_forwarded(&req);
        let r = req.into_inner();
        instrument("RemoveNode", async {
            let is_voter = self.member_role(r.node_id, "")?;
            let voters = self
                .node
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .count();
            if is_voter && voters == 1 {
                return Err(ApiError::FailedPrecondition(
                    "cannot remove the last voter".into(),
                ));
            }
            let change = if is_voter {
                ChangeMembers::RemoveVoters([r.node_id].into())
            } else {
                ChangeMembers::RemoveNodes([r.node_id].into())
            };
            self.change_voters(forwarded, change, {
                let pool = self.node.pool.clone();
                move |mut c| async move { c.remove_node(forwarded_request(r, &pool)).await }
            })
            .await
        })
        .await
    }
}

#[tonic::async_trait]
impl v1::kv_server::Kv for Api {
    async fn get(&self, req: Request<v1::GetRequest>) -> Result<Response<v1::GetResponse>, Status> {
        let r = req.into_inner();
        instrument("Get", async {
            validate::key("key", &r.key)?;
            self.node.read_barrier(r.consistency).await?;
            let data = self.node.sm.read();
            Ok(v1::GetResponse {
                header: Some(self.node.header_at(data.revision)),
                kv: data.kv.get(&r.key).map(|e| e.to_proto(&r.key)),
            })
        })
        .await
    }

    async fn range(
        &self,
        req: Request<v1::RangeRequest>,
    ) -> Result<Response<v1::RangeResponse>, Status> {
        let r = req.into_inner();
        instrument("Range", async {
            validate::prefix("prefix", &r.prefix)?;
            self.node.read_barrier(r.consistency).await?;
            let data = self.node.sm.read();
            let limit = if r.limit == 0 {
                usize::MAX
            } else {
                r.limit as usize
            };
            let mut kvs = Vec::new();
            let mut more = false;
            for (k, e) in data.kv.range(r.prefix.clone()..) {
                if !k.starts_with(&r.prefix) {
                    break;
                }
                if kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(e.to_proto(k));
            }
            Ok(v1::RangeResponse {
                header: Some(self.node.header_at(data.revision)),
                kvs,
                more,
            })
        })
        .await
    }

    async fn put(&self, req: Request<v1::PutRequest>) -> Result<Response<v1::PutResponse>, Status> {
        let r = req.into_inner();
        instrument("Put", async {
            validate::key("key", &r.key)?;
            validate::value("value", &r.value)?;
            let cr = self
                .node
                .propose(
                    ClientRequest::from_proto(r.request_id.as_ref()),
                    Op::Put {
                        key: r.key,
                        value: r.value,
                    },
                )
                .await?;
            match write_outcome(cr)? {
                (rev, Outcome::Put { prev }) => Ok(v1::PutResponse {
                    header: Some(self.node.header_at(rev)),
                    prev_kv: prev.map(Into::into),
                }),
                (_, o) => Err(unexpected(o)),
            }
        })
        .await
    }

    async fn compare_and_set(
        &self,
        req: Request<v1::CompareAndSetRequest>,
    ) -> Result<Response<v1::CompareAndSetResponse>, Status> {
        let r = req.into_inner();
        instrument("CompareAndSet", async {
            validate::key("key", &r.key)?;
            validate::value("new_value", &r.new_value)?;
            let expected = match r.expected {
                Some(v1::compare_and_set_request::Expected::ExpectedValue(v)) => Expected::Value(v),
                Some(v1::compare_and_set_request::Expected::ExpectedModRevision(m)) => {
                    Expected::ModRevision(m)
                }
                None => {
                    return Err(invalid(
                        "expected",
                        "one of expected_value or expected_mod_revision is required",
                    )
                    .into())
                }
            };
            let cr = self
                .node
                .propose(
                    ClientRequest::from_proto(r.request_id.as_ref()),
                    Op::CompareAndSet {
                        key: r.key,
                        expected,
                        new_value: r.new_value,
                    },
                )
                .await?;
            match write_outcome(cr)? {
                (rev, Outcome::CompareAndSet { succeeded, kv }) => Ok(v1::CompareAndSetResponse {
                    header: Some(self.node.header_at(rev)),
                    succeeded,
                    kv: kv.map(Into::into),
                }),
                (_, o) => Err(unexpected(o)),
            }
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<v1::DeleteRequest>,
    ) -> Result<Response<v1::DeleteResponse>, Status> {
        let r = req.into_inner();
        instrument("Delete", async {
            if r.prefix {
                validate::prefix("key", &r.key)?;
            } else {
                validate::key("key", &r.key)?;
            }
            let cr = self
                .node
                .propose(
                    ClientRequest::from_proto(r.request_id.as_ref()),
                    Op::Delete {
                        key: r.key,
                        prefix: r.prefix,
                    },
                )
                .await?;
            match write_outcome(cr)? {
                (rev, Outcome::Delete { deleted }) => Ok(v1::DeleteResponse {
                    header: Some(self.node.header_at(rev)),
                    deleted,
                }),
                (_, o) => Err(unexpected(o)),
            }
        })
        .await
    }
}

/// The events of `resp` that `req` asked for.
fn filter_events(req: &v1::WatchRequest, resp: &crate::model::Changes) -> Vec<v1::Event> {
    use crate::model::EventKind;
    resp.events
        .iter()
        .filter(|e| match &e.event {
            Some(EventKind::Kv(kv)) => {
                let key = kv.kv.as_ref().map(|k| k.key.as_slice()).unwrap_or_default();
                req.key_prefixes.iter().any(|p| key.starts_with(p))
            }
            Some(EventKind::State(_)) => req.cluster_state,
            None => false,
        })
        .cloned()
        .map(Into::into)
        .collect()
}

/// Collects what a watcher at `next` should receive now, or the compaction error.
fn collect_since(
    data: &StateData,
    req: &v1::WatchRequest,
    next: u64,
) -> Result<(Vec<v1::WatchResponse>, u64), ApiError> {
    if next <= data.revision && next < data.oldest_watchable_revision() {
        return Err(ApiError::Compacted {
            requested: next,
            oldest: data.oldest_watchable_revision(),
        });
    }
    let start = data.history.partition_point(|r| r.revision < next);
    let mut out = Vec::new();
    for resp in data.history.range(start..) {
        let events = filter_events(req, resp);
        if !events.is_empty() {
            out.push(v1::WatchResponse {
                revision: resp.revision,
                events,
            });
        }
    }
    Ok((out, next.max(data.revision + 1)))
}

#[tonic::async_trait]
impl v1::watch_server::Watch for Api {
    type WatchStream = ReceiverStream<Result<v1::WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        for (i, p) in r.key_prefixes.iter().enumerate() {
            validate::prefix(&format!("key_prefixes[{i}]"), p)
                .map_err(|e| Status::from(ApiError::from(e)))?;
        }
        if r.key_prefixes.is_empty() && !r.cluster_state {
            return Err(ApiError::from(invalid(
                "key_prefixes",
                "watch at least one prefix or the cluster state",
            ))
            .into());
        }
        metrics::REQUESTS.with_label_values(&["Watch", "Ok"]).inc();
        let mut changes = self.node.sm.subscribe();
        let mut next = if r.start_revision == 0 {
            self.node.sm.read().revision + 1
        } else {
            r.start_revision
        };
        let (tx, rx) = mpsc::channel(64);
        let sm = self.node.sm.clone();
        let mut stopping = self.node.stopping.clone();
        tokio::spawn(async move {
            loop {
                changes.borrow_and_update();
                let batch = collect_since(&sm.read(), &r, next);
                match batch {
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    Ok((batch, new_next)) => {
                        for resp in batch {
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                        }
                        next = new_next;
                    }
                }
                let stop_now = tokio::select! {
                    r = changes.changed() => {
                        if r.is_err() {
                            return;
                        }
                        false
                    }
                    _ = tx.closed() => return,
                    _ = async { let _ = stopping.wait_for(|s| *s).await; } => true,
                    // An idle watcher learns how far it has seen, so its resume point moves.
                    _ = tokio::time::sleep(WATCH_PROGRESS_EVERY) => {
                        let mark = v1::WatchResponse { revision: next - 1, events: vec![] };
                        if tx.send(Ok(mark)).await.is_err() {
                            return;
                        }
                        false
                    }
                };
                if stop_now {
                    let _ = tx
                        .send(Err(Status::unavailable("member is stopping")))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl v1::state_server::State for Api {
    async fn get_state(
        &self,
        req: Request<v1::GetStateRequest>,
    ) -> Result<Response<v1::GetStateResponse>, Status> {
        let r = req.into_inner();
        instrument("GetState", async {
            self.node.read_barrier(r.consistency).await?;
            let data = self.node.sm.read();
            Ok(v1::GetStateResponse {
                header: Some(self.node.header_at(data.revision)),
                nodes: data.nodes.values().cloned().map(Into::into).collect(),
                services: data.services.values().cloned().map(Into::into).collect(),
                vips: data.vips.values().cloned().map(Into::into).collect(),
                lease: data.lease.map(|l| v1::LeaseSettings {
                    lease_ms: l.lease_ms,
                    renew_ms: l.renew_ms,
                    drift_ms: l.drift_ms,
                    margin_ms: l.margin_ms,
                    wait_ms: data.lease_wait_ms,
                }),
                retired: data
                    .retired
                    .iter()
                    .map(|(name, r)| r.to_proto(name))
                    .collect(),
            })
        })
        .await
    }

    async fn set_lease(
        &self,
        req: Request<v1::SetLeaseRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("SetLease", async {
            let given = r
                .settings
                .ok_or_else(|| invalid("settings", "is required"))?;
            // Fields left 0 keep the cluster's current values.
            self.node
                .read_barrier(v1::ReadConsistency::Linearizable as i32)
                .await?;
            let current = {
                let data = self.node.sm.read();
                self.node.lease_settings(&data)
            };
            let or = |v: u64, cur: u64| if v == 0 { cur } else { v };
            let settings = crate::lease::LeaseSettings {
                lease_ms: or(given.lease_ms, current.lease_ms),
                renew_ms: or(given.renew_ms, current.renew_ms),
                drift_ms: or(given.drift_ms, current.drift_ms),
                margin_ms: or(given.margin_ms, current.margin_ms),
            };
            self.node.check_lease_settings(&settings)?;
            self.state_write(
                r.request_id,
                Op::SetLease {
                    settings,
                    if_unset: false,
                },
            )
            .await
        })
        .await
    }

    async fn apply_service(
        &self,
        req: Request<v1::ApplyServiceRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("ApplyService", async {
            let mut svc = r.service.ok_or_else(|| invalid("service", "is required"))?;
            validate::service(&mut svc)?;
            self.state_write(r.request_id, Op::ApplyService(svc.into()))
                .await
        })
        .await
    }

    async fn delete_service(
        &self,
        req: Request<v1::DeleteServiceRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("DeleteService", async {
            validate::name("name", &r.name)?;
            self.state_write(r.request_id, Op::DeleteService(r.name))
                .await
        })
        .await
    }

    async fn apply_vip(
        &self,
        req: Request<v1::ApplyVipRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("ApplyVip", async {
            let mut vip = r.vip.ok_or_else(|| invalid("vip", "is required"))?;
            validate::vip(&mut vip)?;
            self.state_write(r.request_id, Op::ApplyVip(vip.into()))
                .await
        })
        .await
    }

    async fn delete_vip(
        &self,
        req: Request<v1::DeleteVipRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("DeleteVip", async {
            validate::name("name", &r.name)?;
            self.state_write(r.request_id, Op::DeleteVip(r.name)).await
        })
        .await
    }

    async fn move_vip(
        &self,
        req: Request<v1::MoveVipRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("MoveVip", self.move_vip_inner(r)).await
    }

    async fn register_release(
        &self,
        req: Request<v1::RegisterReleaseRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("RegisterRelease", async {
            validate::name("service", &r.service)?;
            let rel = r
                .release
                .ok_or_else(|| validate::invalid("release", "is required"))?;
            validate::release(&rel)?;
            self.state_write(
                r.request_id,
                Op::RegisterRelease {
                    service: r.service,
                    release: rel.into(),
                },
            )
            .await
        })
        .await
    }

    async fn start_rollout(
        &self,
        req: Request<v1::StartRolloutRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("StartRollout", async {
            validate::name("service", &r.service)?;
            validate::name("release", &r.release)?;
            validate::rollout_deadline("deadline_ms", r.deadline_ms)?;
            self.state_write(
                r.request_id,
                Op::StartRollout {
                    service: r.service,
                    release: r.release,
                    batch: r.batch.max(1),
                    min_healthy_ms: if r.min_healthy_ms == 0 {
                        10_000
                    } else {
                        r.min_healthy_ms
                    },
                    deadline_ms: if r.deadline_ms == 0 {
                        300_000
                    } else {
                        r.deadline_ms
                    },
                    canary: r.canary,
                },
            )
            .await
        })
        .await
    }

    async fn control_rollout(
        &self,
        req: Request<v1::ControlRolloutRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("ControlRollout", async {
            validate::name("service", &r.service)?;
            let action = match v1::RolloutControl::try_from(r.action) {
                Ok(v1::RolloutControl::Pause) => crate::model::Control::Pause,
                Ok(v1::RolloutControl::Resume) => crate::model::Control::Resume,
                Ok(v1::RolloutControl::Abort) => crate::model::Control::Abort,
                _ => {
                    return Err(
                        validate::invalid("action", "must be pause, resume or abort").into(),
                    )
                }
            };
            self.state_write(
                r.request_id,
                Op::ControlRollout {
                    service: r.service,
                    action,
                },
            )
            .await
        })
        .await
    }

    async fn rollback(
        &self,
        req: Request<v1::RollbackRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("Rollback", async {
            validate::name("service", &r.service)?;
            if !r.to.is_empty() {
                validate::name("to", &r.to)?;
            }
            self.state_write(
                r.request_id,
                Op::Rollback {
                    service: r.service,
                    to: r.to,
                },
            )
            .await
        })
        .await
    }

    async fn forget_node(
        &self,
        req: Request<v1::ForgetNodeRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        instrument("ForgetNode", self.forget_node_inner(req.into_inner())).await
    }

    async fn set_node_admin(
        &self,
        req: Request<v1::SetNodeAdminRequest>,
    ) -> Result<Response<v1::StateWriteResponse>, Status> {
        let r = req.into_inner();
        instrument("SetNodeAdmin", async {
            validate::node_id("node_id", r.node_id)?;
            let admin = validate::admin_state("admin", r.admin)?;
            self.state_write(
                r.request_id,
                Op::SetNodeAdmin {
                    node_id: r.node_id,
                    admin: admin.into(),
                },
            )
            .await
        })
        .await
    }
}

impl Api {
    async fn forget_node_inner(
        &self,
        r: v1::ForgetNodeRequest,
    ) -> Result<v1::StateWriteResponse, ApiError> {
        validate::node_id("node_id", r.node_id)?;
        self.state_write(r.request_id, Op::ForgetAgent { node_id: r.node_id })
            .await
    }

    async fn move_vip_inner(
        &self,
        r: v1::MoveVipRequest,
    ) -> Result<v1::StateWriteResponse, ApiError> {
        validate::name("name", &r.name)?;
        validate::node_id("to_node", r.to_node)?;
        self.state_write(
            r.request_id,
            Op::MoveVip {
                vip: r.name,
                to: r.to_node,
            },
        )
        .await
    }

    async fn state_write(
        &self,
        request_id: Option<v1::RequestId>,
        op: Op,
    ) -> Result<v1::StateWriteResponse, ApiError> {
        let cr = self
            .node
            .propose(ClientRequest::from_proto(request_id.as_ref()), op)
            .await?;
        match write_outcome(cr)? {
            (rev, Outcome::StateWritten) => Ok(v1::StateWriteResponse {
                header: Some(self.node.header_at(rev)),
            }),
            (_, o) => Err(unexpected(o)),
        }
    }
}
