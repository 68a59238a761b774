//! The internal Raft service: decodes openraft messages and hands them to the local Raft.
//! Only members call it (`auth.rs` refuses every other credential before it runs).

use std::sync::Arc;

use ballast_proto::v1::raft_service_server::RaftService;
use ballast_proto::v1::RaftMessage;
use ballast_proto::CLUSTER_ID_HEADER;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status, Streaming};

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft_legacy::network_v1::ChunkedSnapshotReceiver;
use serde::Deserialize;

use crate::config::ReadPolicy;
use crate::member::network::{decode, ForwardError, HandOver, ISOLATED};
use crate::member::pipeline::WireAnswer;
use crate::node::Node;
use crate::types::{Command, LogId, Op, TypeConfig, Vote};
use crate::validate;
use openraft::async_runtime::WatchReceiver;

pub struct RaftSvc {
    node: Arc<Node>,
}

impl RaftSvc {
    pub fn new(node: Arc<Node>) -> Self {
        RaftSvc { node }
    }

    /// Refuses traffic while a test cuts this member off (`PeerPool::isolate`), and traffic
    /// of another cluster; a new member adopts the id of the first traffic.
    fn admit<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.node.pool.isolated() {
            return Err(Status::unavailable(ISOLATED));
        }
        let theirs = req
            .metadata()
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::failed_precondition("Raft traffic without a cluster id"))?;
        self.node.identity.accept_cluster(theirs).map_err(|e| {
            crate::metrics::RAFT_REFUSED.inc();
            tracing::warn!(error = %e, "refused Raft traffic");
            Status::failed_precondition(e.to_string())
        })
    }

    /// Refuses a vote or a pre-vote in this member's first election timeout (`votes_open`).
    fn votes_open(&self) -> Result<(), Status> {
        if self.node.votes_open() {
            return Ok(());
        }
        Err(Status::unavailable(
            "this member started less than one election timeout ago: no votes yet",
        ))
    }

    fn decode<T: DeserializeOwned>(&self, req: Request<RaftMessage>) -> Result<T, Status> {
        self.admit(&req)?;
        decode(&req.into_inner().payload).map_err(Status::invalid_argument)
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = bincode::serialize(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { payload }))
}

#[tonic::async_trait]
impl RaftService for RaftSvc {
    type StreamAppendStream = futures::stream::BoxStream<'static, Result<RaftMessage, Status>>;

    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.decode(req)?;
        encode(&self.node.raft.append_entries(rpc).await)
    }

    /// Pipelined appends (`member/pipeline.rs`): openraft takes the requests in order as they
    /// arrive and answers each once it is stored, in order. A request that cannot be read
    /// ends the requests; the leader then sees its later ones unanswered and starts again.
    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        self.admit(&req)?;
        if *self.node.stopping.borrow() {
            return Err(Status::unavailable("this member is stopping"));
        }
        let pool = self.node.pool.clone();
        // The requests end when the member stops, and the answers once openraft has answered
        // those it took: the leader streams appends for as long as it leads, and a stream
        // still open kept its connection's task, and with it the stopped member and its data
        // directory's lock, alive (a test restarting a member in-process found the directory
        // still locked 10 s after the stop, 1 run in 4).
        let stopping = self.node.stopping.clone();
        let requests = futures::stream::unfold(req.into_inner(), move |mut input| {
            let pool = pool.clone();
            let mut stopping = stopping.clone();
            async move {
                // The stop first: with a request already buffered, an unbiased select took it
                // half the time, and the requests went on after the stop.
                let m = tokio::select! {
                    biased;
                    _ = stopping.wait_for(|s| *s) => return None,
                    m = input.message() => m.ok()??,
                };
                if pool.isolated() {
                    return None;
                }
                match decode::<AppendEntriesRequest<TypeConfig>>(&m.payload) {
                    Ok(rpc) => Some((rpc, input)),
                    Err(e) => {
                        tracing::warn!(error = %e, "an append in a stream could not be read");
                        None
                    }
                }
            }
        });
        let answers = self.node.raft.stream_append(requests).map(|a: WireAnswer| {
            let payload = bincode::serialize(&a).map_err(|e| Status::internal(e.to_string()))?;
            Ok(RaftMessage { payload })
        });
        Ok(Response::new(answers.boxed()))
    }

    /// A vote request; one from a member still on openraft 0.9 lacks the trailing
    /// `leadership_transfer` flag, which bincode cannot default, so it is decoded as 0.9's.
    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req)?;
        self.votes_open()?;
        let rpc = decode_vote(&req.into_inner().payload).map_err(Status::invalid_argument)?;
        encode(&self.node.raft.vote(rpc).await)
    }

    /// Would this member grant the vote? openraft answers by the same lease and log rules as
    /// a vote and stores nothing. Refused as votes are in this member's first election
    /// timeout: it forgot the leader lease it kept, and a grant could help a candidate past
    /// it. Only members of this version ask, so the request is 0.10's.
    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req)?;
        self.votes_open()?;
        let rpc: VoteRequest<TypeConfig> =
            decode(&req.into_inner().payload).map_err(Status::invalid_argument)?;
        encode(&self.node.raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.decode(req)?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    /// The leader hands the leadership over (openraft 0.10's transfer): every voter hears
    /// it; the named member elects itself once its log holds the leader's last log id.
    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = self.decode(req)?;
        let r: Result<_, openraft::errors::RaftError<TypeConfig>> = self
            .node
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(openraft::errors::RaftError::Fatal);
        encode(&r)
    }

    /// A write another member forwards to this leader. Checked like the public API checks
    /// it, since the credential that reaches here is a member's, not the client's; operations
    /// only this leader's own loops may propose are refused.
    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let mut cmd: Command = self.decode(req)?;
        if let Some(name) = cmd.op.leader_only() {
            tracing::warn!(
                op = name,
                "refused a forwarded operation only a leader proposes"
            );
            return Err(Status::permission_denied(format!(
                "{name} is proposed only by the leader's own loops; it is never forwarded"
            )));
        }
        validate::op(&mut cmd.op).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Op::SetLease { settings, .. } = &cmd.op {
            self.node.check_lease_settings(settings)?;
        }
        let r: Result<_, ForwardError> = self.node.propose_local(cmd).await;
        encode(&r)
    }

    /// A follower's read: the payload names the policy (empty from older members: a quorum
    /// round).
    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req)?;
        let payload = req.into_inner().payload;
        let policy = if payload.is_empty() {
            ReadPolicy::ReadIndex
        } else {
            decode(&payload).map_err(Status::invalid_argument)?
        };
        encode(&self.node.read_index_local(policy).await)
    }

    async fn timeout_now(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let h: HandOver = self.decode(req)?;
        let r: Result<(), String> = async {
            if !self.node.votes_open() {
                return Err("this member started less than one election timeout ago".into());
            }
            let (term, leader, last) = {
                let m = self.node.raft.metrics();
                let m = m.borrow_watched();
                (
                    m.current_term,
                    m.current_leader,
                    m.last_log_index.unwrap_or(0),
                )
            };
            if term != h.term || leader != Some(h.leader) {
                return Err(format!(
                    "not following {} in term {} (term {term}, leader {leader:?})",
                    h.leader, h.term
                ));
            }
            if last < h.last_log_index {
                return Err(format!(
                    "log behind the leader's ({last} < {})",
                    h.last_log_index
                ));
            }
            tracing::info!(from = h.leader, term, "taking over the leadership");
            // Sent by an openraft 0.9 leader only: 0.10 leaders use TransferLeader, since
            // 0.10 members with a valid leader lease refuse this election's votes.
            self.node
                .raft
                .trigger()
                .elect(false)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        encode(&r)
    }
}

/// A vote request of openraft 0.10, or of 0.9 (without `leadership_transfer`).
fn decode_vote(payload: &[u8]) -> Result<VoteRequest<TypeConfig>, String> {
    decode(payload).or_else(|e| {
        decode::<VoteRequestV09>(payload)
            .map(|old| VoteRequest::new(old.vote, old.last_log_id))
            .map_err(|_| e)
    })
}

/// openraft 0.9's vote request, as members not yet upgraded send it.
#[derive(Deserialize)]
struct VoteRequestV09 {
    vote: Vote,
    last_log_id: Option<LogId>,
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::types::log_id;

    #[derive(Serialize)]
    struct SentBy09 {
        vote: Vote,
        last_log_id: Option<LogId>,
    }

    /// A 0.9 member's vote request (one field fewer, which bincode cannot default) is
    /// decoded as 0.9's; a 0.10 one keeps its leadership-transfer flag.
    #[test]
    fn vote_requests_of_both_versions_decode() {
        let old = SentBy09 {
            vote: Vote::new(4, 2),
            last_log_id: Some(log_id(3, 1, 17)),
        };
        let bytes = bincode::serialize(&old).unwrap();
        assert!(decode::<VoteRequest<TypeConfig>>(&bytes).is_err());
        let got = decode_vote(&bytes).unwrap();
        assert_eq!(got, VoteRequest::new(old.vote, old.last_log_id));
        assert!(!got.leadership_transfer);

        let mut new = VoteRequest::<TypeConfig>::new(Vote::new(5, 3), None);
        new.leadership_transfer = true;
        let got = decode_vote(&bincode::serialize(&new).unwrap()).unwrap();
        assert_eq!(got, new);
        assert!(decode_vote(&[1, 2, 3]).is_err());
    }
}
