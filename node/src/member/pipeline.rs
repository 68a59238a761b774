//! Pipelined AppendEntries: one gRPC stream per replication session, many requests in flight.
//!
//! openraft 0.10 replicates through `stream_append`: it hands the network a stream of
//! AppendEntries requests, made as the leader submits entries (before its own flush) and as
//! the commit index moves, and reads the answers in order. Its default transport sends one
//! request and waits for the answer before it takes the next, so a put's entry waits behind
//! the empty request that carries the previous commit index. [`open`] sends each request as
//! soon as openraft makes it, on one bidirectional gRPC stream (`RaftService/StreamAppend`;
//! HTTP/2 keeps a stream's messages in order), and the follower's `Raft::stream_append` works
//! on them in order and answers in order.
//!
//! The rules of the one-at-a-time [`Appender`](super::replicate::Appender) still hold:
//! - every message fits the message limit: a request's entries are cut to the connection's
//!   byte budget (at least one entry), and a cut request is the last of its session: its
//!   answer is a partial success, after which openraft opens a new session from there;
//! - the budget learns from every answer, as the Appender's does;
//! - the answer to the oldest request in flight is due [`wire_timeout`] after it was sent or
//!   after the previous answer, whichever is later, counting every byte in flight; a stream
//!   that misses it ends as Unreachable and its connection is replaced.
//!
//! At most [`MAX_IN_FLIGHT`] requests and [`MAX_IN_FLIGHT_BYTES`] of entries (or one request,
//! whatever its size) are in flight at once.

// The results are openraft's `RPCError`, whatever its size.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_proto::v1::RaftMessage;
use futures::{Stream, StreamExt};
use openraft::base::BoxStream;
use openraft::errors::{Fatal, NetworkError, RPCError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::replicate::{fit, wire_timeout, AppendBudget, MAX_APPEND_BYTES};
use crate::types::TypeConfig;

/// Most requests in flight on one stream.
pub const MAX_IN_FLIGHT: usize = 32;
/// Most entry bytes in flight on one stream (one request alone may be larger).
pub const MAX_IN_FLIGHT_BYTES: u64 = MAX_APPEND_BYTES;

pub type Answer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;
/// What a member sends back for each request, in order.
pub type WireAnswer = Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>;
type Request = AppendEntriesRequest<TypeConfig>;

/// One request on its way: its entry bytes, whether the budget cut it, when it left.
#[derive(Debug, Clone, Copy)]
struct Sent {
    bytes: u64,
    cut: bool,
    at: Instant,
}

/// The requests in flight on one stream, oldest first.
#[derive(Default)]
struct Window {
    sent: Mutex<VecDeque<Sent>>,
    /// Wakes the reader when a request left, the sender when an answer came.
    changed: Notify,
    room: Notify,
}

impl Window {
    /// Whether a request of `bytes` may leave now.
    fn has_room(&self, bytes: u64) -> bool {
        let q = self.sent.lock().unwrap();
        let in_flight: u64 = q.iter().map(|s| s.bytes).sum();
        q.is_empty() || (q.len() < MAX_IN_FLIGHT && in_flight + bytes <= MAX_IN_FLIGHT_BYTES)
    }

    async fn wait_for_room(&self, bytes: u64) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.has_room(bytes) {
                return;
            }
            room.await;
        }
    }

    fn push(&self, s: Sent) {
        self.sent.lock().unwrap().push_back(s);
        self.changed.notify_one();
    }

    fn pop(&self) -> Option<Sent> {
        let s = self.sent.lock().unwrap().pop_front();
        self.room.notify_one();
        s
    }

    /// When the oldest request's answer is due, if one is in flight.
    fn due(&self, last_answer: Instant, ttl: Duration) -> Option<Instant> {
        let q = self.sent.lock().unwrap();
        let oldest = q.front()?;
        let bytes: u64 = q.iter().map(|s| s.bytes).sum();
        Some(oldest.at.max(last_answer) + wire_timeout(ttl, bytes))
    }
}

/// Where the stream goes, and what the connection learnt about it.
pub struct Link {
    pub budget: Arc<Mutex<AppendBudget>>,
    /// Drops the connection after a stream stalled (`PeerPool::forget_if_stalled`).
    pub forget: Box<dyn Fn(&tonic::Status) + Send + Sync>,
}

/// Why no stream could be opened.
pub enum OpenError {
    /// The member does not know `StreamAppend` (an older build): send one at a time instead.
    Unsupported,
    Failed(RPCError<TypeConfig>),
}

/// Aborts the sending task when the stream of answers is dropped.
struct Abort(JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Opens a stream through `call` (which sends the requests it is given and returns the
/// answers, or a gRPC status), then feeds it `input`. `input` is untouched when the call
/// fails, so that the caller can send it another way.
pub async fn open<S, C, F, A>(
    link: Arc<Link>,
    input: S,
    option: RPCOption,
    call: C,
) -> Result<BoxStream<'static, Answer>, (OpenError, S)>
where
    S: Stream<Item = Request> + Send + Unpin + 'static,
    C: FnOnce(mpsc::Receiver<RaftMessage>) -> F,
    F: std::future::Future<Output = Result<A, tonic::Status>>,
    A: Stream<Item = Result<RaftMessage, tonic::Status>> + Send + Unpin + 'static,
{
    let ttl = option.hard_ttl();
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let answers = match tokio::time::timeout(ttl.max(Duration::from_millis(500)), call(rx)).await {
        Ok(Ok(a)) => a,
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
            return Err((OpenError::Unsupported, input))
        }
        Ok(Err(s)) => {
            (link.forget)(&s);
            return Err((OpenError::Failed(status_error(s)), input));
        }
        Err(_) => {
            let s = tonic::Status::deadline_exceeded("no answer to opening the append stream");
            (link.forget)(&s);
            return Err((OpenError::Failed(status_error(s)), input));
        }
    };
    let window = Arc::new(Window::default());
    let sender = tokio::spawn(send(input, tx, window.clone(), link.budget.clone()));
    let reader = Reader {
        answers,
        window,
        link,
        ttl,
        last_answer: Instant::now(),
        _sender: Abort(sender),
    };
    Ok(Box::pin(futures::stream::unfold(Some(reader), next)))
}

/// Takes openraft's requests as it makes them and sends them, cut to the budget; stops after
/// a cut one or when the stream is gone. Dropping `tx` ends the stream's sending half.
async fn send<S>(
    mut input: S,
    tx: mpsc::Sender<RaftMessage>,
    window: Arc<Window>,
    budget: Arc<Mutex<AppendBudget>>,
) where
    S: Stream<Item = Request> + Unpin,
{
    while let Some(mut rpc) = input.next().await {
        let limit = budget.lock().unwrap().bytes();
        let (n, bytes) = fit(
            rpc.entries
                .iter()
                .map(|e| bincode::serialized_size(e).expect("entries always encode")),
            limit,
        );
        let cut = n < rpc.entries.len();
        rpc.entries.truncate(n);
        window.wait_for_room(bytes).await;
        let payload = bincode::serialize(&rpc).expect("requests always encode");
        window.push(Sent {
            bytes,
            cut,
            at: Instant::now(),
        });
        if tx.send(RaftMessage { payload }).await.is_err() || cut {
            return;
        }
    }
}

struct Reader<A> {
    answers: A,
    window: Arc<Window>,
    link: Arc<Link>,
    ttl: Duration,
    last_answer: Instant,
    _sender: Abort,
}

/// The next answer, in order; the stream ends after an error or a refusal.
async fn next<A>(state: Option<Reader<A>>) -> Option<(Answer, Option<Reader<A>>)>
where
    A: Stream<Item = Result<RaftMessage, tonic::Status>> + Unpin,
{
    let mut r = state?;
    let msg = loop {
        let changed = r.window.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let due = r.window.due(r.last_answer, r.ttl);
        tokio::select! {
            m = r.answers.next() => break m,
            _ = &mut changed => continue,
            _ = sleep_until(due) => {
                let stalled = r.window.pop().expect("a request is in flight");
                r.link.budget.lock().unwrap().observe(stalled.bytes, stalled.cut, None, r.ttl / 2);
                let s = tonic::Status::deadline_exceeded("no answer to an append in time");
                (r.link.forget)(&s);
                return Some((Err(status_error(s)), None));
            }
        }
    };
    let m = match msg? {
        Ok(m) => m,
        Err(s) => {
            (r.link.forget)(&s);
            return Some((Err(status_error(s)), None));
        }
    };
    let Some(sent) = r.window.pop() else {
        return Some((Err(network("an answer to no request")), None));
    };
    let now = Instant::now();
    let took = now - sent.at.max(r.last_answer);
    r.last_answer = now;
    match decode_answer(&m.payload) {
        Ok(res) => {
            r.link
                .budget
                .lock()
                .unwrap()
                .observe(sent.bytes, sent.cut, Some(took), r.ttl / 2);
            let more = res.is_ok();
            Some((Ok(res), more.then_some(r)))
        }
        Err(e) => Some((Err(e), None)),
    }
}

/// A member's answer to one request of a stream, as openraft takes it: a member that stopped
/// is unreachable, an answer that cannot be read a network error.
pub(super) fn decode_answer(payload: &[u8]) -> Answer {
    match bincode::deserialize::<WireAnswer>(payload) {
        Ok(Ok(res)) => Ok(res),
        Ok(Err(fatal)) => {
            let e = std::io::Error::other(format!("the member stopped: {fatal}"));
            Err(RPCError::Unreachable(Unreachable::new(&e)))
        }
        Err(e) => Err(network(&format!("bad append answer: {e}"))),
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub(super) fn network(msg: &str) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg.to_string())))
}

/// A gRPC status as openraft's error: a member that cannot be reached, or a broken exchange.
pub fn status_error(s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::raft::StreamAppendError;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::member::replicate::tests::request;
    use crate::types::LogId;

    type Answers = ReceiverStream<Result<RaftMessage, tonic::Status>>;

    fn last(rpc: &Request) -> Option<LogId> {
        rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id)
    }

    /// A member that hands each request it reads to `answer`, and sends what it returns.
    fn member(
        mut answer: impl FnMut(Request) -> Vec<WireAnswer> + Send + 'static,
    ) -> impl FnOnce(mpsc::Receiver<RaftMessage>) -> futures::future::Ready<Result<Answers, tonic::Status>>
    {
        move |mut rx| {
            let (tx, out) = mpsc::channel(64);
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    let rpc: Request = bincode::deserialize(&m.payload).unwrap();
                    for a in answer(rpc) {
                        let payload = bincode::serialize(&a).unwrap();
                        if tx.send(Ok(RaftMessage { payload })).await.is_err() {
                            return;
                        }
                    }
                }
            });
            futures::future::ready(Ok(ReceiverStream::new(out)))
        }
    }

    fn link() -> (Arc<Link>, Arc<AtomicUsize>) {
        let forgotten = Arc::new(AtomicUsize::new(0));
        let f = forgotten.clone();
        let link = Link {
            budget: Arc::default(),
            forget: Box::new(move |s| {
                if s.code() == tonic::Code::DeadlineExceeded {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }),
        };
        (Arc::new(link), forgotten)
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_millis(50))
    }

    async fn open_ok<S: Stream<Item = Request> + Send + Unpin + 'static>(
        link: Arc<Link>,
        input: S,
        m: impl FnOnce(
            mpsc::Receiver<RaftMessage>,
        ) -> futures::future::Ready<Result<Answers, tonic::Status>>,
    ) -> BoxStream<'static, Answer> {
        match open(link, input, option(), m).await {
            Ok(a) => a,
            Err(_) => panic!("the stream did not open"),
        }
    }

    /// The point of the pipeline: the member answers nothing until it holds three requests,
    /// which a transport that waits for each answer would never send.
    #[tokio::test]
    async fn requests_leave_without_waiting_for_answers() {
        let (link, _) = link();
        let input = futures::stream::iter([request(0, &[10]), request(1, &[10]), request(2, &[])]);
        let mut held = Vec::new();
        let m = member(move |rpc| {
            held.push(last(&rpc));
            if held.len() < 3 {
                return vec![];
            }
            held.drain(..).map(|l| Ok(Ok(l))).collect()
        });
        let answers = open_ok(link, input, m).await;
        let got: Vec<_> =
            tokio::time::timeout(Duration::from_secs(10), answers.collect::<Vec<_>>())
                .await
                .expect("the member got all three requests before answering any");
        let got: Vec<_> = got
            .into_iter()
            .map(|a| a.unwrap().unwrap().map(|l| l.index))
            .collect();
        assert_eq!(got, vec![Some(1), Some(2), Some(2)]);
    }

    /// A request above the budget goes out cut, as the session's last: its answer names the
    /// last entry sent, and the next request is never taken from openraft.
    #[tokio::test]
    async fn a_request_over_the_budget_is_cut_and_ends_the_session() {
        let (link, _) = link();
        let taken = Arc::new(AtomicUsize::new(0));
        let t = taken.clone();
        let big = 600 * 1024;
        let input = futures::stream::iter([request(0, &[big, big]), request(2, &[10])]).inspect(
            move |_| {
                t.fetch_add(1, Ordering::SeqCst);
            },
        );
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        let m = member(move |rpc| {
            r.lock().unwrap().push(rpc.entries.len());
            vec![Ok(Ok(last(&rpc)))]
        });
        let got: Vec<_> = open_ok(link, input, m).await.collect().await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().unwrap().index, 1);
        assert_eq!(*received.lock().unwrap(), vec![1]);
        assert_eq!(taken.load(Ordering::SeqCst), 1);
    }

    /// A refusal is the stream's last answer.
    #[tokio::test]
    async fn a_refusal_ends_the_stream() {
        let (link, _) = link();
        let input = futures::stream::iter([request(3, &[10]), request(4, &[10])]);
        let m = member(|rpc| {
            vec![Ok(Err(StreamAppendError::Conflict(
                rpc.prev_log_id.expect("has a previous entry"),
            )))]
        });
        let got: Vec<_> = open_ok(link, input, m).await.collect().await;
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Ok(Err(StreamAppendError::Conflict(_)))));
    }

    /// A member that stops answering: the stream ends as unreachable once the answer is
    /// overdue, and the connection is dropped.
    #[tokio::test(start_paused = true)]
    async fn an_overdue_answer_ends_the_stream_and_drops_the_connection() {
        let (link, forgotten) = link();
        let input = futures::stream::iter([request(0, &[10])]).chain(futures::stream::pending());
        let m = member(|_| vec![]);
        let mut answers = open_ok(link, Box::pin(input), m).await;
        let first = answers.next().await.expect("an answer");
        assert!(matches!(first, Err(RPCError::Unreachable(_))), "{first:?}");
        assert!(answers.next().await.is_none());
        assert_eq!(forgotten.load(Ordering::SeqCst), 1);
    }

    /// An idle stream is not overdue: no request is in flight.
    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_waits_without_a_deadline() {
        let (link, forgotten) = link();
        let m = member(|rpc| vec![Ok(Ok(last(&rpc)))]);
        let (tx, rx) = mpsc::channel(4);
        let mut answers = open_ok(link, ReceiverStream::new(rx), m).await;
        tx.send(request(0, &[10])).await.unwrap();
        assert!(answers.next().await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_secs(60)).await;
        tx.send(request(1, &[10])).await.unwrap();
        let a = answers.next().await.unwrap();
        assert_eq!(a.unwrap().unwrap().unwrap().index, 2);
        assert_eq!(forgotten.load(Ordering::SeqCst), 0);
    }

    /// A member of an older build does not know the method: the input comes back as it was,
    /// for the one-at-a-time path.
    #[tokio::test]
    async fn an_older_member_gets_the_input_back_untouched() {
        let (link, _) = link();
        let input = futures::stream::iter([request(0, &[10])]);
        let m = |_rx| {
            futures::future::ready(Err::<Answers, _>(tonic::Status::unimplemented(
                "no StreamAppend",
            )))
        };
        match open(link, input, option(), m).await {
            Err((OpenError::Unsupported, mut input)) => {
                assert!(input.next().await.is_some());
            }
            _ => panic!("expected Unsupported"),
        }
    }
}
