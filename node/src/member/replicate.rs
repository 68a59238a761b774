//! Sizing AppendEntries, and requests that outlive openraft's timeout.
//!
//! openraft bounds an AppendEntries by entry count only (`max_payload_entries`, 0.10:
//! `max_append_entries`) and, when it failed, sends the same range again. 0.9 also cancelled
//! it after one heartbeat interval; 0.10 sets no deadline of its own (it passes the heartbeat
//! interval as `RPCOption`'s ttl, which [`wire_timeout`] turns into the only deadline) and
//! drops the request's future only when the leadership or the stream changes. Entries of up
//! to [`MAX_COMMAND_BYTES`] each would make a request too large for one gRPC message
//! (`MAX_MESSAGE_LEN`) or too slow for one heartbeat, and then replication to that member
//! stops for good. So [`Appender`], which sends every AppendEntries of one replication stream:
//! - sends a prefix of the entries that fits a byte budget (at least one entry) and answers
//!   `PartialSuccess` up to its last entry, upon which openraft sends the rest at once;
//! - adapts the budget ([`AppendBudget`]) so that a request completes within half a heartbeat;
//! - runs each request as a task of its own, which openraft's timeout does not cancel: the
//!   next request from the same point waits for it and takes its answer, so an entry that
//!   needs longer than a heartbeat to reach the member still gets through, and no request is
//!   sent twice while its first copy is still on its way.
//!
//! Every message stays below [`MAX_APPEND_BYTES`], or is one entry of at most
//! [`MAX_COMMAND_BYTES`]: half of `MAX_MESSAGE_LEN` plus a little.
//!
//! [`MAX_COMMAND_BYTES`]: crate::member::proposer::MAX_COMMAND_BYTES

// The results are openraft's `RPCError`, whatever its size.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::time::Duration;

use ballast_proto::MAX_MESSAGE_LEN;
use openraft::errors::{NetworkError, RPCError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::types::{LogId, RpcResult, TypeConfig, Vote};

/// Most entry bytes in one AppendEntries (a single larger entry is sent alone).
pub const MAX_APPEND_BYTES: u64 = (MAX_MESSAGE_LEN / 2) as u64;
/// The budget never shrinks below this.
pub const MIN_APPEND_BYTES: u64 = 64 * 1024;
/// The budget a new replication stream starts with.
pub const START_APPEND_BYTES: u64 = 1 << 20;
/// The slowest transfer a request is given time for on the wire, beyond openraft's timeout:
/// a request of `b` bytes may take `b / MIN_BYTES_PER_SEC` seconds longer.
pub const MIN_BYTES_PER_SEC: u64 = 4 << 20;

pub type AppendResult = RpcResult<AppendEntriesResponse<TypeConfig>>;
type Request = AppendEntriesRequest<TypeConfig>;

/// The byte budget of one AppendEntries to one member: halved (from what was sent) when a
/// request of more than [`MIN_APPEND_BYTES`] failed or took longer than the target (a small
/// one being slow says nothing about size), doubled when a request that the budget cut took
/// less than half of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendBudget {
    bytes: u64,
}

impl Default for AppendBudget {
    fn default() -> Self {
        AppendBudget {
            bytes: START_APPEND_BYTES,
        }
    }
}

impl AppendBudget {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Learns from a request of `sent` bytes that took `took` (None: it failed); `cut`: the
    /// budget left entries out.
    pub fn observe(&mut self, sent: u64, cut: bool, took: Option<Duration>, target: Duration) {
        let Some(took) = took.filter(|t| *t <= target) else {
            if sent > MIN_APPEND_BYTES {
                self.bytes = (sent.min(self.bytes) / 2).max(MIN_APPEND_BYTES);
            }
            return;
        };
        if cut && took < target / 2 {
            self.bytes = (self.bytes * 2).min(MAX_APPEND_BYTES);
        }
    }
}

/// How many of the entries, whose encoded sizes `sizes` yields in order, to send within
/// `budget` bytes: at least one (when there is one).
pub fn fit(sizes: impl IntoIterator<Item = u64>, budget: u64) -> (usize, u64) {
    let (mut n, mut total) = (0, 0);
    for s in sizes {
        if n > 0 && total + s > budget {
            break;
        }
        n += 1;
        total += s;
    }
    (n, total)
}

/// How long a request of `bytes` may stay on the wire: twice openraft's timeout (it goes on
/// after openraft stopped waiting) and the time to move the bytes at [`MIN_BYTES_PER_SEC`].
/// A call that runs out of it replaces the connection (see `PeerPool::forget_if_stalled`).
pub fn wire_timeout(hard_ttl: Duration, bytes: u64) -> Duration {
    2 * hard_ttl + Duration::from_secs_f64(bytes as f64 / MIN_BYTES_PER_SEC as f64)
}

/// What a sent request covered: the member has the entries up to `last` once it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Covered {
    vote: Vote,
    prev: Option<LogId>,
    last: Option<LogId>,
}

struct Running {
    covered: Covered,
    bytes: u64,
    cut: bool,
    task: JoinHandle<(AppendResult, Duration)>,
}

/// Sends the AppendEntries of one replication stream (see the module's documentation).
#[derive(Default)]
pub struct Appender {
    budget: AppendBudget,
    running: Option<Running>,
    /// The answer of a request that finished after openraft stopped waiting for it.
    done: Option<(Covered, AppendResult)>,
}

impl Drop for Appender {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.task.abort();
        }
    }
}

impl Appender {
    #[cfg(test)]
    fn budget(&self) -> AppendBudget {
        self.budget
    }

    /// Sends `rpc` (or a prefix of it) through `call(request, wire timeout)`. Cancel safe:
    /// dropped while waiting, the request keeps running and a later `send` takes its answer.
    pub async fn send<F, Fut>(
        &mut self,
        mut rpc: Request,
        hard_ttl: Duration,
        call: F,
    ) -> AppendResult
    where
        F: FnOnce(Request, Duration) -> Fut,
        Fut: Future<Output = AppendResult> + Send + 'static,
    {
        let target = hard_ttl / 2;
        // 1. A request that openraft gave up on: its answer may be this one's. A heartbeat
        // (no entries) leaves it for the next request that carries entries.
        if let Some(done) = self.settle(target).await {
            self.done = Some(done);
        }
        if !rpc.entries.is_empty() {
            if let Some((covered, res)) = self.done.take() {
                if let Some(answer) = reuse(&covered, res, &rpc) {
                    return answer;
                }
            }
        }
        // 2. The prefix that fits the budget.
        let whole_last = last_of(&rpc);
        let (n, bytes) = fit(
            rpc.entries
                .iter()
                .map(|e| bincode::serialized_size(e).expect("entries always encode")),
            self.budget.bytes(),
        );
        let cut = n < rpc.entries.len();
        rpc.entries.truncate(n);
        let covered = Covered {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last: last_of(&rpc),
        };
        let fut = call(rpc, wire_timeout(hard_ttl, bytes));
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let res = fut.await;
            (res, start.elapsed())
        });
        self.running = Some(Running {
            covered,
            bytes,
            cut,
            task,
        });
        // 3. Its answer.
        let (covered, res) = self.settle(target).await.expect("a request is running");
        answer(&covered, res, whole_last)
    }

    /// Waits for the running request, if any, and learns from how long it took.
    async fn settle(&mut self, target: Duration) -> Option<(Covered, AppendResult)> {
        let r = self.running.as_mut()?;
        let out = (&mut r.task).await;
        let r = self.running.take().expect("still running");
        let (res, took) = out.unwrap_or_else(|e| {
            let err = NetworkError::new(&std::io::Error::other(e.to_string()));
            (Err(RPCError::Network(err)), Duration::ZERO)
        });
        self.budget
            .observe(r.bytes, r.cut, res.is_ok().then_some(took), target);
        tracing::debug!(
            bytes = r.bytes,
            cut = r.cut,
            took_ms = took.as_millis() as u64,
            budget = self.budget.bytes(),
            ok = res.is_ok(),
            "AppendEntries done"
        );
        Some((r.covered, res))
    }
}

fn last_of(rpc: &Request) -> Option<LogId> {
    rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id)
}

/// The answer to a request that wanted everything up to `whole_last` and sent `covered`.
fn answer(covered: &Covered, res: AppendResult, whole_last: Option<LogId>) -> AppendResult {
    match res {
        Ok(AppendEntriesResponse::Success) if covered.last != whole_last => {
            Ok(AppendEntriesResponse::PartialSuccess(covered.last))
        }
        r => r,
    }
}

/// The answer of an earlier request, when it answers `rpc`: same leader and starting point,
/// entries up to one that `rpc` carries too. Errors are never reused (the request is sent
/// again, sized anew).
fn reuse(covered: &Covered, res: AppendResult, rpc: &Request) -> Option<AppendResult> {
    let carried =
        covered.last != covered.prev && rpc.entries.iter().any(|e| Some(e.log_id) == covered.last);
    if covered.vote != rpc.vote || covered.prev != rpc.prev_log_id || !carried || res.is_err() {
        return None;
    }
    Some(answer(covered, res, last_of(rpc)))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::types::{log_id, Entry, EntryPayload};

    use super::*;
    use crate::types::{Batch, Command, Op};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn every_message_fits_the_limit_with_room_to_spare() {
        use crate::member::proposer::{command_bytes, MAX_COMMAND_BYTES};
        let room = (MAX_MESSAGE_LEN / 4) as u64;
        // The largest restore a member accepts is one command within the bound...
        let restore = Command {
            request: None,
            now_ms: u64::MAX,
            op: Op::RestoreHeld {
                payload: vec![0; MAX_MESSAGE_LEN / 2],
            },
        };
        assert!(command_bytes(&restore) <= MAX_COMMAND_BYTES);
        // ...and its AppendEntries, alone, fits with room to spare; so do requests that the
        // budget bounds.
        let mut rpc = request(0, &[]);
        rpc.entries.push(Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Normal(Batch {
                commands: vec![restore],
            }),
        });
        let size = bincode::serialized_size(&rpc).unwrap();
        assert!(size + room < MAX_MESSAGE_LEN as u64, "{size}");
        assert!(MAX_APPEND_BYTES + room < MAX_MESSAGE_LEN as u64);
        // Snapshot chunks too.
        let cfg = crate::config::Config::for_test(1, "/nonexistent".into()).raft_config();
        assert!(cfg.snapshot_max_chunk_size + room < MAX_MESSAGE_LEN as u64);
    }

    #[test]
    fn fit_takes_a_prefix_within_the_budget_and_at_least_one_entry() {
        assert_eq!(fit([10, 10, 10], 25), (2, 20));
        assert_eq!(fit([10, 10, 10], 30), (3, 30));
        assert_eq!(fit([100, 1], 25), (1, 100));
        assert_eq!(fit([], 25), (0, 0));
    }

    #[test]
    fn budget_shrinks_when_slow_and_grows_when_cut_and_fast() {
        let mut b = AppendBudget::default();
        let target = 25 * MS;
        b.observe(START_APPEND_BYTES, true, Some(60 * MS), target);
        assert_eq!(b.bytes(), START_APPEND_BYTES / 2);
        // Fast but not cut: the budget was not what limited it.
        b.observe(1000, false, Some(MS), target);
        assert_eq!(b.bytes(), START_APPEND_BYTES / 2);
        b.observe(START_APPEND_BYTES / 2, true, Some(MS), target);
        assert_eq!(b.bytes(), START_APPEND_BYTES);
        for _ in 0..20 {
            b.observe(b.bytes(), true, Some(MS), target);
        }
        assert_eq!(b.bytes(), MAX_APPEND_BYTES);
        // A failed request shrinks it too: it may have been refused for its size.
        b.observe(MAX_APPEND_BYTES, true, None, target);
        assert_eq!(b.bytes(), MAX_APPEND_BYTES / 2);
        // A small request that was slow or failed (a heartbeat, say) does not.
        b.observe(0, false, None, target);
        b.observe(1000, false, Some(target * 4), target);
        assert_eq!(b.bytes(), MAX_APPEND_BYTES / 2);
        for _ in 0..40 {
            b.observe(b.bytes(), true, Some(target * 4), target);
        }
        assert_eq!(b.bytes(), MIN_APPEND_BYTES);
    }

    pub(crate) fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Batch {
                commands: vec![Command {
                    request: None,
                    now_ms: 0,
                    op: Op::Put {
                        key: b"k".to_vec(),
                        value: vec![0; bytes],
                    },
                }],
            }),
        }
    }

    pub(crate) fn request(from: u64, sizes: &[usize]) -> Request {
        let prev = (from > 0).then(|| log_id(1, 1, from));
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: prev,
            leader_commit: None,
            entries: sizes
                .iter()
                .enumerate()
                .map(|(i, b)| entry(from + 1 + i as u64, *b))
                .collect(),
        }
    }

    fn index(r: &AppendResult) -> Option<u64> {
        match r {
            Ok(AppendEntriesResponse::PartialSuccess(l)) => l.map(|l| l.index),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_request_above_the_budget_is_sent_in_parts() {
        let mut a = Appender::default();
        let half = (START_APPEND_BYTES / 2) as usize;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = |seen: Arc<std::sync::Mutex<Vec<usize>>>| {
            move |r: Request, _| {
                seen.lock().unwrap().push(r.entries.len());
                async { Ok(AppendEntriesResponse::Success) }
            }
        };
        let r = a
            .send(
                request(0, &[half, half, half]),
                50 * MS,
                record(seen.clone()),
            )
            .await;
        assert_eq!(index(&r), Some(1), "{r:?}");
        let r = a
            .send(request(1, &[half, half]), 50 * MS, record(seen.clone()))
            .await;
        assert!(
            matches!(r, Ok(AppendEntriesResponse::Success)),
            "the budget grew: {r:?}"
        );
        // A single entry larger than any budget goes alone.
        let r = a
            .send(
                request(0, &[MAX_APPEND_BYTES as usize + 1, 1]),
                50 * MS,
                record(seen.clone()),
            )
            .await;
        assert_eq!(index(&r), Some(1), "{r:?}");
        assert_eq!(seen.lock().unwrap()[0], 1);
        assert_eq!(*seen.lock().unwrap().last().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_outlives_the_timeout_answers_the_next_one() {
        let mut a = Appender::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let slow = |calls: Arc<AtomicUsize>| {
            move |_r: Request, wire: Duration| {
                calls.fetch_add(1, Ordering::SeqCst);
                assert!(wire > 50 * MS, "a large request gets more time on the wire");
                async {
                    tokio::time::sleep(120 * MS).await;
                    Ok(AppendEntriesResponse::Success)
                }
            }
        };
        // openraft's timeout (50 ms) cancels the first two attempts; nothing is sent again.
        for _ in 0..2 {
            let r = tokio::time::timeout(
                50 * MS,
                a.send(request(0, &[300_000]), 50 * MS, slow(calls.clone())),
            )
            .await;
            assert!(r.is_err(), "timed out");
        }
        let r = a
            .send(request(0, &[300_000, 10]), 50 * MS, slow(calls.clone()))
            .await;
        assert_eq!(index(&r), Some(1), "the first request's answer: {r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // The slow request shrank the budget.
        assert!(a.budget().bytes() < START_APPEND_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_in_between_leaves_the_late_answer_for_the_entries() {
        let mut a = Appender::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let call = |calls: Arc<AtomicUsize>, pause: Duration| {
            move |_r: Request, _| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(pause).await;
                    Ok(AppendEntriesResponse::Success)
                }
            }
        };
        let r = tokio::time::timeout(
            50 * MS,
            a.send(request(0, &[10]), 50 * MS, call(calls.clone(), 80 * MS)),
        )
        .await;
        assert!(r.is_err());
        let r = a
            .send(request(0, &[]), 50 * MS, call(calls.clone(), MS))
            .await;
        assert!(matches!(r, Ok(AppendEntriesResponse::Success)), "{r:?}");
        let r = a
            .send(request(0, &[10, 10]), 50 * MS, call(calls.clone(), MS))
            .await;
        assert_eq!(index(&r), Some(1), "the late answer: {r:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the entry was not sent again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_from_another_starting_point_is_not_used() {
        let mut a = Appender::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let call = |calls: Arc<AtomicUsize>| {
            move |_r: Request, _| {
                calls.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(80 * MS).await;
                    Ok(AppendEntriesResponse::Success)
                }
            }
        };
        let r = tokio::time::timeout(
            50 * MS,
            a.send(request(0, &[10, 10]), 50 * MS, call(calls.clone())),
        )
        .await;
        assert!(r.is_err());
        // After a conflict openraft may start elsewhere: the old answer does not apply.
        let r = a
            .send(request(5, &[10]), 50 * MS, call(calls.clone()))
            .await;
        assert!(matches!(r, Ok(AppendEntriesResponse::Success)), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
