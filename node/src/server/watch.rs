//! The Watch service: the changes after a revision from the member's watch history, then
//! live ones, with a progress mark when idle; a revision older than the history is refused
//! as compacted. Reads what the member applied; writes nothing.

use std::time::Duration;

use ballast_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::member::state::StateData;
use crate::metrics;
use crate::validate::{self, invalid};

use super::api::Api;

/// How long a watch goes without a message before it gets a progress mark, unless the
/// request asks otherwise (`progress_ms`, within these bounds).
const WATCH_PROGRESS_EVERY: Duration = Duration::from_secs(5);
const WATCH_PROGRESS_MIN: Duration = Duration::from_millis(100);
const WATCH_PROGRESS_MAX: Duration = Duration::from_secs(60);

/// The silence after which a watch asked with `progress_ms` gets a progress mark.
fn progress_every(progress_ms: u32) -> Duration {
    match progress_ms {
        0 => WATCH_PROGRESS_EVERY,
        ms => Duration::from_millis(ms as u64).clamp(WATCH_PROGRESS_MIN, WATCH_PROGRESS_MAX),
    }
}

/// The events of `resp` that `req` asked for.
fn filter_events(req: &v1::WatchRequest, resp: &crate::model::Changes) -> Vec<v1::Event> {
    use crate::model::EventKind;
    resp.events
        .iter()
        .filter(|e| match &e.event {
            Some(EventKind::Kv(kv)) => {
                let key = kv.kv.as_ref().map(|k| k.key.as_slice()).unwrap_or_default();
                req.key_prefixes.iter().any(|p| key.starts_with(p))
            }
            Some(EventKind::State(_)) => req.cluster_state,
            None => false,
        })
        .cloned()
        .map(Into::into)
        .collect()
}

/// Collects what a watcher at `next` should receive now, or the compaction error.
fn collect_since(
    data: &StateData,
    req: &v1::WatchRequest,
    next: u64,
) -> Result<(Vec<v1::WatchResponse>, u64), ApiError> {
    if next <= data.revision && next < data.oldest_watchable_revision() {
        return Err(ApiError::Compacted {
            requested: next,
            oldest: data.oldest_watchable_revision(),
        });
    }
    let start = data.history.partition_point(|r| r.revision < next);
    let mut out = Vec::new();
    for resp in data.history.range(start..) {
        let events = filter_events(req, resp);
        if !events.is_empty() {
            out.push(v1::WatchResponse {
                revision: resp.revision,
                events,
            });
        }
    }
    Ok((out, next.max(data.revision + 1)))
}

#[tonic::async_trait]
impl v1::watch_server::Watch for Api {
    type WatchStream = ReceiverStream<Result<v1::WatchResponse, Status>>;

    async fn watch(
        &self,
        req: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        for (i, p) in r.key_prefixes.iter().enumerate() {
            validate::prefix(&format!("key_prefixes[{i}]"), p)
                .map_err(|e| Status::from(ApiError::from(e)))?;
        }
        if r.key_prefixes.is_empty() && !r.cluster_state {
            return Err(ApiError::from(invalid(
                "key_prefixes",
                "watch at least one prefix or the cluster state",
            ))
            .into());
        }
        metrics::REQUESTS.with_label_values(&["Watch", "Ok"]).inc();
        let mut changes = self.node.sm.subscribe();
        let mut next = if r.start_revision == 0 {
            self.node.sm.read().revision + 1
        } else {
            r.start_revision
        };
        let (tx, rx) = mpsc::channel(64);
        let sm = self.node.sm.clone();
        let mut stopping = self.node.stopping.clone();
        let every = progress_every(r.progress_ms);
        tokio::spawn(async move {
            // The mark is due after this long without a message: counted from the last one
            // sent, not from the last wake-up (changes the watch does not ask for wake it too,
            // and under a steady write load a cluster-state watch would otherwise never get
            // a mark).
            let mut mark_due = tokio::time::Instant::now() + every;
            loop {
                changes.borrow_and_update();
                let batch = collect_since(&sm.read(), &r, next);
                match batch {
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    Ok((batch, new_next)) => {
                        if !batch.is_empty() {
                            mark_due = tokio::time::Instant::now() + every;
                        }
                        for resp in batch {
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                        }
                        next = new_next;
                    }
                }
                let stop_now = tokio::select! {
                    r = changes.changed() => {
                        if r.is_err() {
                            return;
                        }
                        false
                    }
                    _ = tx.closed() => return,
                    _ = async { let _ = stopping.wait_for(|s| *s).await; } => true,
                    // An idle watcher learns how far it has seen, so its resume point moves,
                    // and that the stream is alive.
                    _ = tokio::time::sleep_until(mark_due) => {
                        let mark = v1::WatchResponse { revision: next - 1, events: vec![] };
                        if tx.send(Ok(mark)).await.is_err() {
                            return;
                        }
                        mark_due = tokio::time::Instant::now() + every;
                        false
                    }
                };
                if stop_now {
                    let _ = tx
                        .send(Err(Status::unavailable("member is stopping")))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
