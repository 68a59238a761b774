//! Raft traffic between members over tonic, and forwarding of client requests to the leader.
//!
//! openraft's messages travel as bincode inside `RaftMessage.payload`; every call carries the
//! cluster id so that a member never takes traffic from another cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_proto::v1::raft_service_client::RaftServiceClient;
use ballast_proto::v1::RaftMessage;
use ballast_proto::{CLUSTER_ID_HEADER, MAX_MESSAGE_LEN};
use openraft::errors::decompose::DecomposeResult;
use openraft::errors::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tonic::transport::Channel;

use crate::member::identity::IdentityStore;
use crate::member::replicate::Appender;
use crate::types::{Command, CommandResult, NodeId, RpcResult, SnapshotData, TypeConfig};

/// Why the leader could not take a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the leader (any more).
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    Unavailable(String),
}

/// Lazily connected channels to peers, by address. Channels reconnect by themselves.
#[derive(Clone)]
pub struct PeerPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    identity: Arc<IdentityStore>,
    connect_timeout: Duration,
    /// `Bearer <peer token>` when the cluster uses API tokens (see `auth.rs`).
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// The member's certificate towards its peers (see `tls.rs`); None: plaintext.
    tls: Option<Arc<ballast_client::tls::ClientTls>>,
}

impl PeerPool {
    pub fn new(
        identity: Arc<IdentityStore>,
        connect_timeout: Duration,
        peer_token: Option<&str>,
        tls: Option<Arc<ballast_client::tls::ClientTls>>,
    ) -> Self {
        PeerPool {
            channels: Default::default(),
            identity,
            connect_timeout,
            tls,
            authorization: peer_token.and_then(|t| format!("Bearer {t}").parse().ok()),
        }
    }

    /// Adds the peer token (if any) to a request to another member.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self.channels.lock().unwrap();
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = ballast_client::tls::lazy_channel(addr, self.connect_timeout, self.tls.as_ref())
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Drops the connection to `addr` after a call that got no answer in time: a connection
    /// that lost packets (a partition) can stay stalled in TCP's retransmission backoff for
    /// seconds after the network heals, while a new one works at once.
    pub fn forget_if_stalled(&self, addr: &str, status: &tonic::Status) {
        if matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ) {
            self.channels.lock().unwrap().remove(addr);
        }
    }

    fn client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, String> {
        Ok(RaftServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN))
    }

    fn request<T: Serialize>(
        &self,
        msg: &T,
        timeout: Duration,
    ) -> Result<tonic::Request<RaftMessage>, String> {
        let payload = bincode::serialize(msg).map_err(|e| e.to_string())?;
        let mut req = tonic::Request::new(RaftMessage { payload });
        req.set_timeout(timeout);
        self.authorize(&mut req);
        if let Some(id) = self.identity.cluster_id() {
            if let Ok(v) = id.parse() {
                req.metadata_mut().insert(CLUSTER_ID_HEADER, v);
            }
        }
        Ok(req)
    }

    /// Hands a client's command to the leader at `addr`.
    pub async fn propose(
        &self,
        addr: &str,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<Result<CommandResult, ForwardError>, tonic::Status> {
        let mut client = self.client(addr).map_err(tonic::Status::unavailable)?;
        let req = self
            .request(cmd, timeout)
            .map_err(tonic::Status::internal)?;
        let resp = client
            .propose(req)
            .await
            .inspect_err(|e| self.forget_if_stalled(addr, e))?;
        decode(&resp.into_inner().payload).map_err(tonic::Status::internal)
    }

    /// Asks the leader at `addr` for a quorum-confirmed read index.
    pub async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Result<u64, ForwardError>, tonic::Status> {
        let mut client = self.client(addr).map_err(tonic::Status::unavailable)?;
        let req = self
            .request(&(), timeout)
            .map_err(tonic::Status::internal)?;
        let resp = client
            .read_index(req)
            .await
            .inspect_err(|e| self.forget_if_stalled(addr, e))?;
        decode(&resp.into_inner().payload).map_err(tonic::Status::internal)
    }
}

/// An openraft 0.9 leader's request that a follower start an election now (`TimeoutNow`).
/// This version hands over with openraft's `transfer_leader` instead and only serves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandOver {
    pub term: u64,
    pub leader: NodeId,
    pub last_log_index: u64,
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    bincode::deserialize(b).map_err(|e| format!("undecodable message: {e}"))
}

/// openraft's network factory: one [`PeerConnection`] per target. openraft 0.10 speaks its
/// v2 network API; `openraft-legacy`'s [`Adapter`] puts our v1 connection behind it, which
/// keeps 0.9's chunked InstallSnapshot on the wire (members of both versions can run
/// together during an upgrade).
#[derive(Clone)]
pub struct Network {
    pub pool: PeerPool,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Adapter<TypeConfig, PeerConnection, SnapshotData>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerConnection {
            peer: Peer {
                target,
                addr: node.addr.clone(),
                pool: self.pool.clone(),
            },
            append: Appender::default(),
        }
        .into_v2()
    }
}

/// One replication stream's connection to a member; its AppendEntries go through an
/// [`Appender`] (sized to the message limit, not cancelled by openraft's timeout).
pub struct PeerConnection {
    peer: Peer,
    append: Appender,
}

/// Where a member is and how to reach it.
#[derive(Clone)]
struct Peer {
    target: NodeId,
    addr: String,
    pool: PeerPool,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .pool
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&StrError(e))))?;
        let request = self
            .pool
            .request(req, timeout)
            .map_err(|e| RPCError::Network(NetworkError::new(&StrError(e))))?;
        let resp = match kind {
            RpcKind::Append => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::Snapshot => client.install_snapshot(request).await,
            RpcKind::TransferLeader => client.transfer_leader(request).await,
        };
        if let Err(s) = &resp {
            self.pool.forget_if_stalled(&self.addr, s);
        }
        let resp = resp.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&s))
            }
            _ => RPCError::Network(NetworkError::new(&s)),
        })?;
        let result: Result<Resp, RaftError<TypeConfig, E>> = decode(&resp.into_inner().payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&StrError(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum RpcKind {
    Append,
    Vote,
    Snapshot,
    TransferLeader,
}

#[derive(Debug)]
struct StrError(String);

impl std::fmt::Display for StrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StrError {}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<TypeConfig>> {
        let peer = self.peer.clone();
        self.append
            .send(rpc, option.hard_ttl(), move |rpc, timeout| async move {
                peer.call(RpcKind::Append, &rpc, timeout).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<TypeConfig>, InstallSnapshotError> {
        self.peer
            .call(RpcKind::Snapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<TypeConfig>> {
        self.peer.call(RpcKind::Vote, &rpc, option.hard_ttl()).await
    }

    /// The leader's notice that it hands over to `req.to_node_id()`. The receiver answers
    /// with openraft's `Fatal` as a `RaftError` (its only error), which counts as unreachable.
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r: RpcResult<TransferLeaderResponse<TypeConfig>> = self
            .peer
            .call(RpcKind::TransferLeader, &req, option.hard_ttl())
            .await;
        r.decompose_infallible()
    }

    fn backoff(&self) -> Backoff {
        // Retry an unreachable peer soon enough that a restarted member catches up quickly.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
