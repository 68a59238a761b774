//! The Cluster service: status, membership changes (learners, voters, removal) and the
//! streamed backup. A membership change on a follower is forwarded to the leader; the
//! leader waits for an earlier change to commit before it starts another.

use std::future::Future;
use std::time::{Duration, Instant};

use ballast_proto::v1::{self, cluster_client::ClusterClient};
use ballast_proto::MAX_MESSAGE_LEN;
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::types::{NodeId, TypeConfig};
use crate::validate;

use super::api::Api;
use super::call::{forwarded_request, instrument, is_forwarded, status_to_api};
use openraft::async_runtime::WatchReceiver;

/// How long a membership change waits for an earlier one to commit.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(10);

/// Bytes per message of a streamed backup.
const SNAPSHOT_CHUNK: usize = 1 << 20;

impl Api {
    fn members(&self) -> Vec<v1::Member> {
        let m = self.node.raft.metrics().borrow_watched().clone();
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
        let m = self
            .node
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        if m.membership().get_node(&id).is_none() {
            return Err(ApiError::InvalidArgument {
                field: "node_id".into(),
                message: format!("unknown node {id}{hint}"),
            });
        }
        let voter = m.membership().voter_ids().any(|v| v == id);
        Ok(voter)
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
        Fut: Future<Output = Result<(), RaftError<TypeConfig, ClientWriteError<TypeConfig>>>>,
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

#[tonic::async_trait]
impl v1::cluster_server::Cluster for Api {
    async fn status(
        &self,
        _req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        instrument("Status", async {
            let m = self.node.raft.metrics().borrow_watched().clone();
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
            let m = self
                .node
                .raft
                .metrics()
                .borrow_watched()
                .membership_config
                .clone();
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
                .borrow_watched()
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
