//! Raft traffic between members over tonic, and forwarding of client requests to the leader.
//!
//! openraft's messages travel as bincode inside `RaftMessage.payload`; every call carries the
//! cluster id so that a member never takes traffic from another cluster.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_proto::v1::raft_service_client::RaftServiceClient;
use ballast_proto::v1::RaftMessage;
use ballast_proto::{CLUSTER_ID_HEADER, MAX_MESSAGE_LEN};
use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::decompose::DecomposeResult;
use openraft::errors::{
    NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{
    stream_append_sequential, Backoff, RPCOption, RaftNetworkFactory, RaftNetworkV2,
};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use openraft_legacy::network_v1::{
    Adapter, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse, RaftNetwork,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tonic::transport::Channel;

use crate::config::ReadPolicy;
use crate::member::identity::IdentityStore;
use crate::member::lane::{self, Lane, Outcome};
use crate::member::pipeline::{self, Link, OpenError};
use crate::member::replicate::{wire_timeout, Appender};
use crate::types::{Command, CommandResult, NodeId, RpcResult, SnapshotData, TypeConfig, Vote};

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
    /// A test's partition: while set, this member neither reaches its peers nor takes their
    /// Raft traffic (`server/raft.rs`).
    isolated: Arc<AtomicBool>,
    /// Vote and pre-vote requests this member sent, one per peer asked.
    vote_requests: Arc<AtomicU64>,
    /// Counts the connections dropped (`forget_if_stalled`, `isolate`): a stream kept open
    /// across calls (a lane, `lane.rs`) that started under an older count may sit on a
    /// connection the pool gave up on.
    generation: Arc<AtomicU64>,
}

/// Why an isolated member's Raft calls fail, both ways.
pub(crate) const ISOLATED: &str = "this member is cut off from the others (a test's partition)";

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
            isolated: Arc::default(),
            vote_requests: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// For tests: cuts this member off from the others (`true`) or heals (`false`). Its
    /// calls to peers fail as unreachable and it refuses their Raft traffic, streams already
    /// open included, as a network partition would; clients still reach it.
    pub fn isolate(&self, cut: bool) {
        self.isolated.store(cut, Ordering::SeqCst);
        if cut {
            self.channels.lock().unwrap().clear();
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    /// How many vote and pre-vote requests this member has sent (attempted, answered or
    /// not): its campaigns, seen from outside.
    pub fn vote_requests(&self) -> u64 {
        self.vote_requests.load(Ordering::SeqCst)
    }

    /// Adds the peer token (if any) to a request to another member.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(v) = &self.authorization {
            req.metadata_mut().insert("authorization", v.clone());
        }
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, String> {
        if self.isolated() {
            return Err(ISOLATED.into());
        }
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
        ) && self.channels.lock().unwrap().remove(addr).is_some()
        {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many connections were dropped so far (see `generation`).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
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
        self.credentials(&mut req);
        Ok(req)
    }

    fn counted_vote_request(&self) {
        self.vote_requests.fetch_add(1, Ordering::SeqCst);
    }

    /// Puts this member's credentials and the cluster id on a request.
    fn credentials<T>(&self, req: &mut tonic::Request<T>) {
        self.authorize(req);
        if let Some(id) = self.identity.cluster_id() {
            if let Ok(v) = id.parse() {
                req.metadata_mut().insert(CLUSTER_ID_HEADER, v);
            }
        }
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

    /// Asks the leader at `addr` for a read index, confirmed as `policy` says.
    pub async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
        policy: ReadPolicy,
    ) -> Result<Result<u64, ForwardError>, tonic::Status> {
        let mut client = self.client(addr).map_err(tonic::Status::unavailable)?;
        let req = self
            .request(&policy, timeout)
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
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let peer = Peer {
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
        };
        let (pool, addr) = (self.pool.clone(), node.addr.clone());
        PeerNetwork {
            link: Arc::new(Link {
                budget: Arc::default(),
                forget: Box::new(move |s| pool.forget_if_stalled(&addr, s)),
            }),
            no_streams_since: None,
            lane: None,
            legacy: PeerConnection {
                peer,
                append: Appender::default(),
            }
            .into_v2(),
        }
    }
}

/// The connection openraft replicates through: AppendEntries pipelined on one gRPC stream
/// per session (`pipeline.rs`); everything else, and appends to a member that does not know
/// the stream, through [`PeerConnection`] one call at a time.
pub struct PeerNetwork {
    legacy: Adapter<TypeConfig, PeerConnection, SnapshotData>,
    link: Arc<Link>,
    /// When the member last answered that it does not know `StreamAppend` (an older build);
    /// asked again [`STREAMS_RETRY`] later, since a rolling upgrade replaces it in place.
    no_streams_since: Option<Instant>,
    /// The stream that carries sessions' first requests without entries (`lane.rs`).
    lane: Option<Lane>,
}

/// How long a member that does not know `StreamAppend` gets single calls before it is asked
/// again.
const STREAMS_RETRY: Duration = Duration::from_secs(60);

impl PeerNetwork {
    /// Whether the member may take `StreamAppend` (see [`PeerNetwork::no_streams_since`]).
    fn streams(&mut self) -> bool {
        match self.no_streams_since {
            Some(at) if at.elapsed() < STREAMS_RETRY => false,
            _ => {
                self.no_streams_since = None;
                true
            }
        }
    }

    fn no_streams(&mut self) {
        if self.no_streams_since.is_none() {
            tracing::info!(
                target = self.legacy.inner().peer.target,
                "member does not know StreamAppend (an older build): appends go one at a time"
            );
        }
        self.no_streams_since = Some(Instant::now());
    }

    /// Sends a request without entries on the lane (`lane.rs`), opening one if needed.
    /// None when the member cannot take streams or this member is cut off: the request then
    /// goes as a call of its own, which fails or succeeds as it always did.
    async fn on_lane(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Option<pipeline::Answer> {
        if !self.streams() || self.legacy.inner().peer.pool.isolated() {
            self.lane = None;
            return None;
        }
        let payload = bincode::serialize(rpc).expect("requests always encode");
        // The time a single call had (the Appender's), for the whole exchange.
        let deadline = Instant::now() + wire_timeout(option.hard_ttl(), 0);
        // A lane kept from before may have ended unseen (the member restarted): the request
        // then goes once more, on a new lane. A request without entries reaching a follower
        // twice is safe: the copy carries the same vote and the same previous log id (the
        // leader's match, which only a higher vote could have removed), and what it moves
        // on the follower (vote, accepted log, commit index, its leader lease) only moves
        // forward; an ack that arrives later than the first copy's confirms later, not sooner.
        loop {
            let reused = self.lane.is_some();
            let peer = self.legacy.inner().peer.clone();
            let generation = peer.pool.generation();
            let exchange = lane::exchange(
                &mut self.lane,
                generation,
                &self.link,
                move |rx| peer.open_stream(rx),
                payload.clone(),
                rpc.prev_log_id,
            );
            match tokio::time::timeout_at(deadline.into(), exchange).await {
                Ok(Outcome::Answer(a)) => return Some(a),
                Ok(Outcome::Unsupported) => {
                    self.no_streams();
                    return None;
                }
                Ok(Outcome::Ended) if reused => continue,
                Ok(Outcome::Ended) => {
                    let s = tonic::Status::unavailable("the append stream ended unanswered");
                    return Some(Err(pipeline::status_error(s)));
                }
                Err(_) => {
                    let s = tonic::Status::deadline_exceeded("no answer to an append in time");
                    (self.link.forget)(&s);
                    return Some(Err(pipeline::status_error(s)));
                }
            }
        }
    }

    /// The requests after a session's first: pipelined once there is a second one, one at a
    /// time to a member that does not know the stream.
    async fn rest<S>(&mut self, mut input: S, option: RPCOption) -> BoxStream<'_, pipeline::Answer>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let Some(second) = input.next().await else {
            return futures::stream::empty().boxed();
        };
        let mut input = futures::stream::once(futures::future::ready(second)).chain(input);
        if self.streams() {
            let peer = self.legacy.inner().peer.clone();
            let opened = pipeline::open(self.link.clone(), input, option.clone(), |rx| {
                peer.open_stream(rx)
            })
            .await;
            input = match opened {
                Ok(answers) => return answers,
                Err((OpenError::Failed(e), _)) => {
                    return futures::stream::once(futures::future::ready(Err(e))).boxed()
                }
                Err((OpenError::Unsupported, input)) => {
                    self.no_streams();
                    input
                }
            };
        }
        match stream_append_sequential(&mut self.legacy, input, option).await {
            Ok(answers) => answers,
            Err(e) => futures::stream::once(futures::future::ready(Err(e))).boxed(),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.legacy.append_entries(rpc, option).await
    }

    /// The first request of a session goes alone: a heartbeat is a session of one request,
    /// and a stream costs more to open than a call. Without entries it goes on the lane,
    /// with entries as a call of its own. The rest, if any, go pipelined (`pipeline.rs`); a
    /// first request that was cut or refused ends the session.
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, pipeline::Answer>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let Some(first) = input.next().await else {
                return Ok(futures::stream::empty().boxed());
            };
            let prev = first.prev_log_id;
            let last = first.entries.last().map(|e| e.log_id).or(prev);
            let laned = if first.entries.is_empty() {
                self.on_lane(&first, &option).await
            } else {
                None
            };
            let answer = match laned {
                Some(a) => a,
                None => self
                    .legacy
                    .append_entries(first, option.clone())
                    .await
                    .map(|r| r.into_stream_result(prev, last)),
            };
            let whole = matches!(&answer, Ok(Ok(m)) if *m == last);
            let head = futures::stream::once(futures::future::ready(answer));
            if !whole {
                return Ok(head.boxed());
            }
            let rest = futures::stream::once(self.rest(input, option)).flatten();
            Ok(head.chain(rest).boxed())
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.legacy.inner().peer.pool.counted_vote_request();
        self.legacy.vote(rpc, option).await
    }

    /// openraft's pre-vote, on its own RPC. A member that does not know it (an older build
    /// answers UNIMPLEMENTED) counts as granting, as openraft counts a network without
    /// pre-vote, so a cluster in the middle of an upgrade still elects; any other failure is
    /// no grant (an unreachable member must not help an isolated one to a quorum).
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let peer = &self.legacy.inner().peer;
        peer.pool.counted_vote_request();
        match peer.send(RpcKind::PreVote, &rpc, option.hard_ttl()).await {
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    target = peer.target,
                    "member does not know PreVote (an older build): counted as granting"
                );
                Ok(VoteResponse::new(rpc.vote, None, true))
            }
            sent => {
                let r: RpcResult<VoteResponse<TypeConfig>> = peer.answer(sent);
                r.decompose_infallible()
            }
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.legacy
            .full_snapshot(vote, snapshot, cancel, option)
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.legacy.transfer_leader(req, option).await
    }

    fn backoff(&self) -> Option<Backoff> {
        self.legacy.backoff()
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
pub(super) struct Peer {
    target: NodeId,
    addr: String,
    pool: PeerPool,
}

impl Peer {
    /// Opens a `StreamAppend` stream that sends what arrives on `rx`.
    pub(super) async fn open_stream(
        self,
        rx: tokio::sync::mpsc::Receiver<RaftMessage>,
    ) -> Result<tonic::Streaming<RaftMessage>, tonic::Status> {
        let mut client = self
            .pool
            .client(&self.addr)
            .map_err(tonic::Status::unavailable)?;
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        self.pool.credentials(&mut req);
        Ok(client.stream_append(req).await?.into_inner())
    }

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
        self.answer(self.send(kind, req, timeout).await)
    }

    /// Sends one call: the answer's payload, or the status it failed with (UNAVAILABLE when
    /// the member cannot be reached, INTERNAL when the request cannot be made).
    async fn send<Req: Serialize>(
        &self,
        kind: RpcKind,
        req: &Req,
        timeout: Duration,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut client = self
            .pool
            .client(&self.addr)
            .map_err(tonic::Status::unavailable)?;
        let request = self
            .pool
            .request(req, timeout)
            .map_err(tonic::Status::internal)?;
        let resp = match kind {
            RpcKind::Append => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::PreVote => client.pre_vote(request).await,
            RpcKind::Snapshot => client.install_snapshot(request).await,
            RpcKind::TransferLeader => client.transfer_leader(request).await,
        };
        if let Err(s) = &resp {
            self.pool.forget_if_stalled(&self.addr, s);
        }
        Ok(resp?.into_inner().payload)
    }

    /// What openraft makes of a call's outcome: a status that says the member is out of
    /// reach is `Unreachable` (openraft backs off), any other a network error; the payload
    /// is the receiver's `Result`.
    fn answer<Resp, E>(&self, sent: Result<Vec<u8>, tonic::Status>) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = sent.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&s))
            }
            _ => RPCError::Network(NetworkError::new(&s)),
        })?;
        let result: Result<Resp, RaftError<TypeConfig, E>> =
            decode(&payload).map_err(|e| RPCError::Network(NetworkError::new(&StrError(e))))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum RpcKind {
    Append,
    Vote,
    PreVote,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A member of an older build answers PreVote UNIMPLEMENTED: counted as granting, so a
    /// cluster in the middle of an upgrade still elects. A vote it cannot answer, or a
    /// pre-vote to a member out of reach, is an error, which openraft counts as no grant.
    #[tokio::test]
    async fn a_member_without_pre_vote_grants_and_one_out_of_reach_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = IdentityStore::open(dir.path(), 1).unwrap();
        let pool = PeerPool::new(Arc::new(identity), Duration::from_secs(1), None, None);
        // A gRPC server without the Raft service: tonic answers its calls UNIMPLEMENTED.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (_, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
        );
        let mut net = Network { pool: pool.clone() }
            .new_client(2, &BasicNode::new(addr))
            .await;
        let rpc = VoteRequest::<TypeConfig>::new(Vote::new(3, 1), None);
        let option = || RPCOption::new(Duration::from_secs(1));

        let r = net.pre_vote(rpc.clone(), option()).await.unwrap();
        assert!(r.vote_granted);
        assert_eq!(r.vote, rpc.vote);
        let e = net.vote(rpc.clone(), option()).await.unwrap_err();
        assert!(matches!(e, RPCError::Network(_)), "{e:?}");

        pool.isolate(true);
        let e = net.pre_vote(rpc, option()).await.unwrap_err();
        assert!(matches!(e, RPCError::Unreachable(_)), "{e:?}");
        assert_eq!(pool.vote_requests(), 3);
    }
}
