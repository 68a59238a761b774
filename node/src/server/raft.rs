//! The internal Raft service: decodes openraft messages and hands them to the local Raft.

use std::sync::Arc;

use ballast_proto::v1::raft_service_server::RaftService;
use ballast_proto::v1::RaftMessage;
use ballast_proto::CLUSTER_ID_HEADER;
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status};

use crate::network::{decode, ForwardError, HandOver};
use crate::node::Node;
use crate::types::Command;

pub struct RaftSvc {
    node: Arc<Node>,
}

impl RaftSvc {
    pub fn new(node: Arc<Node>) -> Self {
        RaftSvc { node }
    }

    /// Refuses traffic of another cluster; a new member adopts the id of the first traffic.
    fn check_cluster<T>(&self, req: &Request<T>) -> Result<(), Status> {
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

    fn decode<T: DeserializeOwned>(&self, req: Request<RaftMessage>) -> Result<T, Status> {
        self.check_cluster(&req)?;
        decode(&req.into_inner().payload).map_err(Status::invalid_argument)
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = bincode::serialize(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { payload }))
}

#[tonic::async_trait]
impl RaftService for RaftSvc {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.decode(req)?;
        encode(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.decode(req)?;
        encode(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.decode(req)?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn propose(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let cmd: Command = self.decode(req)?;
        // What only a leader's own loops decide is proposed where it was decided, never
        // forwarded: another member has not made the checks behind it.
        if cmd.op.leader_only() {
            return Err(Status::permission_denied(
                "a leader's decision is never forwarded to another member",
            ));
        }
        let r: Result<_, ForwardError> = self.node.propose_local(cmd).await;
        encode(&r)
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let () = self.decode(req)?;
        encode(&self.node.read_index_local().await)
    }

    async fn timeout_now(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let h: HandOver = self.decode(req)?;
        let r: Result<(), String> = async {
            let (term, leader, last) = {
                let m = self.node.raft.metrics();
                let m = m.borrow();
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
            self.node
                .raft
                .trigger()
                .elect()
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        encode(&r)
    }
}
