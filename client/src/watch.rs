//! Watches that resume by themselves for as long as they live.

use std::time::Duration;

use ballast_proto::v1::{self, watch_client::WatchClient};
use ballast_proto::MAX_MESSAGE_LEN;
use rand::Rng;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{retryable, Error};

/// What a watch delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// The events of one revision, or a progress mark (no events): every revision up to
    /// `revision` has been delivered.
    Changes(v1::WatchResponse),
    /// Events were lost: the cluster no longer kept revisions this watch had not delivered
    /// yet (it keeps the last 10,000). Read again whatever you derive from the events. The
    /// stream goes on with the events of revision `resume_at` and later; a read made after
    /// this item sees every revision before `resume_at`, so nothing falls between the two.
    Resync { resume_at: u64 },
}

/// Changes from a watch, resumed across reconnects: every revision after the start is
/// delivered exactly once, in order, unless a [`WatchItem::Resync`] says that some were lost
/// to compaction. The stream does not end while it is alive: it tries again with backoff
/// after every failure, and says so with an `Err` item when the failure is more than a lost
/// connection (the cluster refused the watch, or no member answered within the client's
/// deadline). Drop it to stop.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchItem, Error>>,
    _task: tokio::task::JoinHandle<()>,
}

impl WatchStream {
    /// The next item; waits for as long as there is none.
    pub async fn next(&mut self) -> Result<WatchItem, Error> {
        match self.rx.recv().await {
            Some(item) => item,
            // Only if the watch's task panicked. Waiting for ever keeps a caller that loops on
            // `next` from spinning.
            None => std::future::pending().await,
        }
    }

    /// The next item if one is already waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Result<WatchItem, Error>> {
        self.rx.try_recv().ok()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self._task.abort();
    }
}

type Items = mpsc::Sender<Result<WatchItem, Error>>;

/// How long a watch that asked for progress marks every `progress_ms` may stay silent before
/// it is taken as cut: three marks missed (the member clamps what it is asked to at least
/// 100 ms and sends its default, 5 s, for 0).
fn silence_limit(progress_ms: u32) -> Duration {
    let every = match progress_ms {
        0 => Duration::from_secs(5),
        ms => Duration::from_millis(ms.max(100) as u64),
    };
    every * 3
}

fn stalled(limit: Duration) -> tonic::Status {
    tonic::Status::deadline_exceeded(format!(
        "the watch heard nothing, not even a progress mark, for {limit:?}"
    ))
}

/// Exponential backoff with jitter, between the client's initial and maximum backoff.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(client: &Client) -> Self {
        let initial = client.config().initial_backoff;
        Backoff {
            initial,
            max: client.config().max_backoff.max(Duration::from_millis(100)),
            next: initial,
        }
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    async fn wait(&mut self) {
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(self.max);
    }
}

impl Client {
    /// Watches KV prefixes and/or the cluster state from `req.start_revision` (0: from now).
    pub fn watch(&self, req: v1::WatchRequest) -> WatchStream {
        let (tx, rx) = mpsc::channel(256);
        let client = self.clone();
        let task = tokio::spawn(async move { client.run_watch(req, tx).await });
        WatchStream { rx, _task: task }
    }

    /// The revision the cluster is at, asked until some member answers; every failure is
    /// reported. None: the stream was dropped.
    async fn revision_now(&self, tx: &Items, backoff: &mut Backoff) -> Option<u64> {
        loop {
            match self.status().await {
                Ok(s) => return Some(s.header.map(|h| h.revision).unwrap_or(0)),
                Err(e) => tx.send(Err(e)).await.ok()?,
            }
            backoff.wait().await;
        }
    }

    async fn run_watch(&self, mut req: v1::WatchRequest, tx: Items) {
        let mut backoff = Backoff::new(self);
        // Pin "from now" to a revision first, so that a reconnect before the first event
        // cannot skip anything.
        if req.start_revision == 0 {
            let Some(now) = self.revision_now(&tx, &mut backoff).await else {
                return;
            };
            req.start_revision = now + 1;
        }
        let mut next = req.start_revision;
        if req.progress_ms == 0 {
            req.progress_ms = self
                .config()
                .watch_progress
                .as_millis()
                .min(u32::MAX as u128) as u32;
        }
        let silent_limit = silence_limit(req.progress_ms);
        loop {
            let (idx, ch) = self.current_channel();
            let mut client =
                WatchClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE_LEN);
            let mut r = req.clone();
            r.start_revision = next;
            let opened = tokio::time::timeout(silent_limit, client.watch(r)).await;
            // Silence past the limit: the connection, not the member, may be what stalled.
            let mut silent = false;
            let failure = match opened {
                Err(_) => {
                    silent = true;
                    Some(stalled(silent_limit))
                }
                Ok(Err(s)) => Some(s),
                Ok(Ok(stream)) => {
                    let mut stream = stream.into_inner();
                    loop {
                        let message = tokio::time::timeout(silent_limit, stream.message()).await;
                        let Ok(message) = message else {
                            silent = true;
                            break Some(stalled(silent_limit));
                        };
                        match message {
                            Ok(Some(resp)) => {
                                backoff.reset();
                                if resp.revision < next && !resp.events.is_empty() {
                                    continue; // already delivered
                                }
                                next = next.max(resp.revision + 1);
                                if tx.send(Ok(WatchItem::Changes(resp))).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break None,
                            Err(s) => break Some(s),
                        }
                    }
                }
            };
            if let Some(s) = &failure {
                let sent = match Error::from_status(s) {
                    // Events were lost: the caller reads again, the watch goes on from now.
                    Error::Compacted(_) => {
                        // The member that compacted is past the loss: resume from its
                        // revision (another member's may be older, and compacted again).
                        let mut ask = tonic::Request::new(v1::StatusRequest {});
                        ask.set_timeout(self.config().attempt_timeout);
                        let here = Self::cluster(ch).status(ask).await.ok();
                        let now = match here.and_then(|s| s.into_inner().header) {
                            Some(h) => h.revision,
                            None => match self.revision_now(&tx, &mut backoff).await {
                                Some(now) => now,
                                None => return,
                            },
                        };
                        next = next.max(now + 1);
                        tx.send(Ok(WatchItem::Resync { resume_at: next })).await
                    }
                    e if !retryable(s) => tx.send(Err(e)).await,
                    _ => Ok(()),
                };
                if sent.is_err() {
                    return;
                }
            }
            if silent {
                // A new connection, whichever member the watch resumes on.
                self.reconnect(idx);
            }
            self.failover_from(idx, failure.as_ref());
            backoff.wait().await;
        }
    }
}
