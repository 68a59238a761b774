use std::time::Duration;

use ballast_proto::v1::{self, watch_client::WatchClient};
use ballast_proto::MAX_MESSAGE_LEN;
use rand::Rng;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{retryable, Error};

/// Changes from a watch, resumed across reconnects: every revision after the start is delivered
/// exactly once, in order. Progress marks (no events) are delivered too, so a caller can record
/// how far it has seen. Ends with `Err` only on a non-retryable error such as compaction.
pub struct WatchStream {
    rx: mpsc::Receiver<Result<v1::WatchResponse, Error>>,
    _task: tokio::task::JoinHandle<()>,
}

impl WatchStream {
    pub async fn next(&mut self) -> Option<Result<v1::WatchResponse, Error>> {
        self.rx.recv().await
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self._task.abort();
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

    async fn run_watch(
        &self,
        mut req: v1::WatchRequest,
        tx: mpsc::Sender<Result<v1::WatchResponse, Error>>,
    ) {
        // Pin "from now" to a revision first, so that a reconnect before the first event
        // cannot skip anything.
        if req.start_revision == 0 {
            match self.status().await {
                Ok(s) => req.start_revision = s.header.map(|h| h.revision).unwrap_or(0) + 1,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        let mut next = req.start_revision;
        let mut backoff = self.config().initial_backoff;
        loop {
            let (idx, ch) = self.current_channel();
            let mut client = WatchClient::new(ch).max_decoding_message_size(MAX_MESSAGE_LEN);
            let mut r = req.clone();
            r.start_revision = next;
            let failure = match client.watch(r).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(resp)) => {
                                backoff = self.config().initial_backoff;
                                if resp.revision < next && !resp.events.is_empty() {
                                    continue; // already delivered
                                }
                                next = next.max(resp.revision + 1);
                                if tx.send(Ok(resp)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break None,
                            Err(s) => break Some(s),
                        }
                    }
                }
                Err(s) => Some(s),
            };
            if let Some(s) = &failure {
                if !retryable(s) {
                    let _ = tx.send(Err(Error::from_status(s))).await;
                    return;
                }
            }
            self.failover_from(idx, failure.as_ref());
            let jitter = rand::thread_rng().gen_range(0.5..1.5);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(self.config().max_backoff.max(Duration::from_millis(100)));
        }
    }
}
