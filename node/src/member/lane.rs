//! A `StreamAppend` stream kept open for requests without entries: heartbeats, and the
//! commit-index requests that open replication sessions. Each went as a call of its own,
//! and on this machine a call's round trip between members took ~330 us at p50 (opening an
//! HTTP/2 stream and passing through the channel's buffer task both ways), most of a
//! linearizable read's read-index round; on a lane it is one message each way.
//!
//! One request is in flight at a time, so an answer is the answer to the request just sent.
//! That holds only if every exchange runs to its end: openraft drops a heartbeat that took
//! longer than its interval, and an answer left on the lane would then be taken as the next
//! request's (a follower's ack of an old heartbeat counted as confirming the leader now). So
//! the lane is out of its slot (`PeerNetwork::lane`) while a request is on it and goes back
//! only once the request was answered and accepted; a lane dropped half way is closed, and a
//! failed, timed-out or refused exchange (after a refusal the follower ends the stream)
//! leaves none. The next request opens a new one.
//!
//! `network.rs` decides when a request goes on the lane (`PeerNetwork::on_lane`: not to a
//! member without `StreamAppend`, nor while a test cuts this member off) and bounds the
//! whole exchange; this file only runs it.

use std::future::Future;

use ballast_proto::v1::RaftMessage;

use crate::member::pipeline::{self, Answer, Link};
use crate::types::LogId;

/// An open lane.
pub(super) struct Lane {
    tx: tokio::sync::mpsc::Sender<RaftMessage>,
    answers: tonic::Streaming<RaftMessage>,
    /// The pool's generation (`PeerPool::generation`) when the lane opened: a lane from
    /// before the pool dropped a connection is not used again, as it may be on that
    /// connection, and its timeout would then drop the new one.
    generation: u64,
}

/// What became of a request sent on a lane.
pub(super) enum Outcome {
    Answer(Answer),
    /// The member does not know `StreamAppend` (an older build).
    Unsupported,
    /// A lane kept from an earlier request had ended before this one was answered.
    Ended,
}

/// One request and its answer on the lane in `slot`, or on a new one opened through `open`
/// when there is none or it is from before the pool's `generation`. The lane goes back into
/// `slot` only after an accepted answer. `prev` is the request's previous log id, which an
/// accepted answer to a request without entries names.
pub(super) async fn exchange<O, F>(
    slot: &mut Option<Lane>,
    generation: u64,
    link: &Link,
    open: O,
    payload: Vec<u8>,
    prev: Option<LogId>,
) -> Outcome
where
    O: FnOnce(tokio::sync::mpsc::Receiver<RaftMessage>) -> F,
    F: Future<Output = Result<tonic::Streaming<RaftMessage>, tonic::Status>>,
{
    let message = RaftMessage { payload };
    let kept = slot.take().filter(|l| l.generation == generation);
    let mut lane = match kept {
        Some(lane) => {
            if lane.tx.send(message).await.is_err() {
                return Outcome::Ended;
            }
            lane
        }
        None => {
            // The request waits in the stream before it opens: tonic returns from opening
            // only once the member's headers came back, and sending after that would cost a
            // new lane a second round trip.
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.try_send(message).expect("an empty channel has room");
            match open(rx).await {
                Ok(answers) => Lane {
                    tx,
                    answers,
                    generation,
                },
                Err(s) if s.code() == tonic::Code::Unimplemented => return Outcome::Unsupported,
                Err(s) => {
                    (link.forget)(&s);
                    return Outcome::Answer(Err(pipeline::status_error(s)));
                }
            }
        }
    };
    let m = match lane.answers.message().await {
        Ok(Some(m)) => m,
        Ok(None) => return Outcome::Ended,
        Err(s) => {
            (link.forget)(&s);
            return Outcome::Ended;
        }
    };
    let answer = match pipeline::decode_answer(&m.payload) {
        // One request in flight: its answer names its previous log id. Anything else means
        // the lane is out of step, and nothing on it can be trusted.
        Ok(Ok(named)) if named != prev => Err(pipeline::network(&format!(
            "an append stream answered {named:?} to a request after {prev:?}"
        ))),
        other => other,
    };
    if matches!(answer, Ok(Ok(_))) {
        *slot = Some(lane);
    }
    Outcome::Answer(answer)
}

/// The lane as openraft uses it: through a leader's [`PeerNetwork`](super::network::PeerNetwork).
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::BasicNode;

    use crate::member::identity::IdentityStore;
    use crate::member::network::{decode, Network, PeerNetwork, PeerPool};
    use crate::member::pipeline;
    use crate::types::TypeConfig;
    use openraft::errors::RaftError;

    use super::*;
    use crate::member::replicate::tests::request;
    use ballast_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
    use openraft::raft::StreamAppendError;

    /// A member's Raft service that answers appends by script: a request without entries is
    /// answered with its own previous log id, so that an answer names its request; index 7 is
    /// answered only after [`SLOW`], index 99 with a conflict (after which the stream ends, as
    /// openraft's does). `one_answer_per_stream` ends every stream after one answer (a member
    /// that restarted between heartbeats); `no_streams` answers StreamAppend UNIMPLEMENTED (an
    /// older build). Counts the streams opened and the single calls.
    #[derive(Clone, Default)]
    struct Scripted {
        streams: Arc<AtomicU64>,
        calls: Arc<AtomicU64>,
        one_answer_per_stream: bool,
        no_streams: bool,
    }

    const SLOW: Duration = Duration::from_millis(400);

    async fn scripted(rpc: AppendEntriesRequest<TypeConfig>) -> pipeline::WireAnswer {
        let prev = rpc.prev_log_id.expect("the tests send a previous log id");
        match prev.index {
            7 => tokio::time::sleep(SLOW).await,
            99 => return Ok(Err(StreamAppendError::Conflict(prev))),
            _ => {}
        }
        Ok(Ok(Some(prev)))
    }

    type Answers = futures::stream::BoxStream<'static, Result<RaftMessage, tonic::Status>>;

    #[tonic::async_trait]
    impl RaftService for Scripted {
        type StreamAppendStream = Answers;

        async fn append_entries(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let r: Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>> =
                Ok(AppendEntriesResponse::Success);
            let payload = bincode::serialize(&r).unwrap();
            Ok(tonic::Response::new(RaftMessage { payload }))
        }

        async fn stream_append(
            &self,
            req: tonic::Request<tonic::Streaming<RaftMessage>>,
        ) -> Result<tonic::Response<Answers>, tonic::Status> {
            if self.no_streams {
                return Err(tonic::Status::unimplemented("an older build"));
            }
            self.streams.fetch_add(1, Ordering::SeqCst);
            let one = self.one_answer_per_stream;
            let answers =
                futures::stream::unfold(Some(req.into_inner()), move |input| async move {
                    let mut input = input?;
                    let m = input.message().await.ok()??;
                    let a = scripted(decode(&m.payload).unwrap()).await;
                    let go_on = !one && matches!(a, Ok(Ok(_)));
                    let payload = bincode::serialize(&a).unwrap();
                    Some((Ok(RaftMessage { payload }), go_on.then_some(input)))
                });
            Ok(tonic::Response::new(answers.boxed()))
        }

        async fn vote(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }

        async fn pre_vote(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }

        async fn install_snapshot(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }

        async fn propose(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }

        async fn read_index(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }

        async fn timeout_now(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }

        async fn transfer_leader(
            &self,
            _: tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("not scripted"))
        }
    }

    /// A leader's connection to a scripted member on a fresh port, and that member's pool.
    async fn to_scripted(member: Scripted) -> (PeerNetwork, PeerPool) {
        to_scripted_over(member, Duration::ZERO).await
    }

    /// The same, through a link that delays everything by `delay` each way.
    async fn to_scripted_over(member: Scripted, delay: Duration) -> (PeerNetwork, PeerPool) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut addr = l.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServiceServer::new(member))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
        );
        if !delay.is_zero() {
            addr = slow_link(addr, delay).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = IdentityStore::open(dir.path(), 1).unwrap();
        let pool = PeerPool::new(Arc::new(identity), Duration::from_secs(1), None, None);
        let net = Network { pool: pool.clone() }
            .new_client(2, &BasicNode::new(addr))
            .await;
        (net, pool)
    }

    /// A TCP relay to `to` that hands on every byte `delay` after it arrived, both ways, in
    /// order: a link with a round trip of twice `delay`. Returns its address.
    async fn slow_link(to: String, delay: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn relay(
            mut from: tokio::net::tcp::OwnedReadHalf,
            mut to: tokio::net::tcp::OwnedWriteHalf,
            delay: Duration,
        ) {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
            tokio::spawn(async move {
                while let Some((at, bytes)) = rx.recv().await {
                    tokio::time::sleep_until((at + delay).into()).await;
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf).await {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((near, _)) = l.accept().await {
                let Ok(far) = tokio::net::TcpStream::connect(&to).await else {
                    continue;
                };
                let (near_r, near_w) = near.into_split();
                let (far_r, far_w) = far.into_split();
                tokio::spawn(relay(near_r, far_w, delay));
                tokio::spawn(relay(far_r, near_w, delay));
            }
        });
        addr
    }

    /// A heartbeat as openraft's heartbeat worker sends it: a session of one request without
    /// entries after `prev`, given up (dropped half way) after `patience`. The previous log
    /// id its answer names, or the error.
    async fn heartbeat(net: &mut PeerNetwork, prev: u64, patience: Duration) -> Option<String> {
        let option = RPCOption::new(Duration::from_secs(2));
        let exchange = async {
            let mut out = net
                .stream_append(futures::stream::iter([request(prev, &[])]), option)
                .await?;
            let first = out.next().await.expect("one answer");
            assert!(out.next().await.is_none(), "a heartbeat has one answer");
            first
        };
        match tokio::time::timeout(patience, exchange).await {
            Err(_) => None,
            Ok(Ok(Ok(l))) => Some(format!("ok {}", l.expect("a log id").index)),
            Ok(Ok(Err(e))) => Some(format!("refused {e}")),
            Ok(Err(e)) => Some(format!("failed {e}")),
        }
    }

    const PATIENT: Duration = Duration::from_secs(5);

    fn ok(index: u64) -> Option<String> {
        Some(format!("ok {index}"))
    }

    /// Heartbeats share one stream, each answered by its own answer.
    #[tokio::test]
    async fn heartbeats_share_one_stream() {
        let member = Scripted::default();
        let (mut net, _) = to_scripted(member.clone()).await;
        for prev in 1..=3 {
            assert_eq!(heartbeat(&mut net, prev, PATIENT).await, ok(prev));
        }
        assert_eq!(member.streams.load(Ordering::SeqCst), 1);
        assert_eq!(member.calls.load(Ordering::SeqCst), 0);
    }

    /// openraft gives up on a heartbeat after its interval. The answer that comes later must
    /// not be taken as the next heartbeat's: that would count a follower's old ack as a
    /// confirmation of the leader now, which a read index and a leader lease rest on.
    #[tokio::test]
    async fn a_heartbeat_given_up_half_way_leaves_no_answer_for_the_next() {
        let member = Scripted::default();
        let (mut net, _) = to_scripted(member.clone()).await;
        assert_eq!(heartbeat(&mut net, 1, PATIENT).await, ok(1));
        assert_eq!(heartbeat(&mut net, 7, SLOW / 4).await, None);
        assert_eq!(heartbeat(&mut net, 8, PATIENT).await, ok(8));
        assert_eq!(heartbeat(&mut net, 9, PATIENT).await, ok(9));
        assert_eq!(member.streams.load(Ordering::SeqCst), 2);
    }

    /// On a link whose round trip is most of the heartbeat interval, a heartbeat on a new
    /// stream still fits: it costs one round trip, not one to open and one to ask, or every
    /// heartbeat after one that was given up would be given up too, for ever.
    #[tokio::test]
    async fn a_new_stream_costs_one_round_trip() {
        let member = Scripted::default();
        let one_way = Duration::from_millis(200);
        let (mut net, _) = to_scripted_over(member.clone(), one_way).await;
        // Room for one round trip (400 ms) and 200 ms to spare, not for two.
        let interval = 3 * one_way;
        // The connection itself (TCP and HTTP/2 handshakes) costs round trips of its own.
        assert_eq!(heartbeat(&mut net, 1, PATIENT).await, ok(1));
        assert_eq!(heartbeat(&mut net, 2, interval).await, ok(2));
        // Given up: the slow member answers after 400 ms plus the round trip.
        assert_eq!(heartbeat(&mut net, 7, interval).await, None);
        assert_eq!(heartbeat(&mut net, 8, interval).await, ok(8));
        assert_eq!(heartbeat(&mut net, 9, interval).await, ok(9));
        assert_eq!(member.streams.load(Ordering::SeqCst), 2);
    }

    /// A refusal ends the member's stream: the next heartbeat goes on a new one.
    #[tokio::test]
    async fn a_refusal_closes_the_stream() {
        let member = Scripted::default();
        let (mut net, _) = to_scripted(member.clone()).await;
        let refused = heartbeat(&mut net, 99, PATIENT).await.unwrap();
        assert!(refused.starts_with("refused"), "{refused}");
        assert_eq!(heartbeat(&mut net, 2, PATIENT).await, ok(2));
        assert_eq!(member.streams.load(Ordering::SeqCst), 2);
    }

    /// A stream the member ended between heartbeats (it restarted) is found ended when the
    /// next heartbeat is sent, and that heartbeat goes again on a new stream.
    #[tokio::test]
    async fn a_stream_ended_unseen_is_replaced_for_the_same_heartbeat() {
        let member = Scripted {
            one_answer_per_stream: true,
            ..Default::default()
        };
        let (mut net, _) = to_scripted(member.clone()).await;
        for prev in 1..=3 {
            assert_eq!(heartbeat(&mut net, prev, PATIENT).await, ok(prev));
        }
        assert_eq!(member.streams.load(Ordering::SeqCst), 3);
    }

    /// A member of an older build gets heartbeats as calls, and is not asked for a stream
    /// again; a member cut off by a test's partition gets nothing.
    #[tokio::test]
    async fn older_members_get_calls_and_cut_off_ones_nothing() {
        let member = Scripted {
            no_streams: true,
            ..Default::default()
        };
        let (mut net, _) = to_scripted(member.clone()).await;
        assert_eq!(heartbeat(&mut net, 1, PATIENT).await, ok(1));
        assert_eq!(heartbeat(&mut net, 2, PATIENT).await, ok(2));
        assert_eq!(member.calls.load(Ordering::SeqCst), 2);

        let member = Scripted::default();
        let (mut net, pool) = to_scripted(member.clone()).await;
        assert_eq!(heartbeat(&mut net, 1, PATIENT).await, ok(1));
        pool.isolate(true);
        let cut = heartbeat(&mut net, 2, PATIENT).await.unwrap();
        assert!(cut.starts_with("failed"), "{cut}");
        pool.isolate(false);
        assert_eq!(heartbeat(&mut net, 3, PATIENT).await, ok(3));
        assert_eq!(member.streams.load(Ordering::SeqCst), 2);
        assert_eq!(member.calls.load(Ordering::SeqCst), 0);
    }
}
