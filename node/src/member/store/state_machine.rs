//! openraft's state machine (`RaftStateMachine`): applies committed entries to the
//! `StateData` every reader shares, wakes watchers, and builds, stores (in the engine, as
//! versioned snapshots, `format.rs`) and installs snapshots. It decides nothing: what an entry
//! does is `StateData::apply`'s.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Instant;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::engine::{EngineError, LogEngine};
use crate::member::state::StateData;
use crate::metrics;
use crate::types::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};

/// Where snapshots were stored up to November 2026: a metadata value. Still read until the
/// engine holds a snapshot at least as new (the newer of the two wins), and removed at the
/// next open after that, when nothing reads it concurrently: removing it is one long sled
/// batch, and a reader assembling its chunks meanwhile would find it damaged.
pub(super) const META_SNAPSHOT: &str = "snapshot";

/// A snapshot as stored: its meta and a [`StateData`] in its versioned format (`format.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    /// Written as bytes, not as a sequence of `u8`: the same bincode, copied at once instead
    /// of byte by byte (a snapshot holds every value and the watch history's).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

struct Shared<E> {
    data: RwLock<StateData>,
    engine: Arc<E>,
    /// Latest applied revision, for watchers to wake on.
    revision_tx: watch::Sender<u64>,
    /// The last log id of the stored snapshot, held while a snapshot is compared with it and
    /// written (see `persist_snapshot`).
    stored: Mutex<Option<LogId>>,
    /// Whether a snapshot stored as metadata (the old way) may still be the newest.
    legacy: std::sync::atomic::AtomicBool,
}

/// openraft's state machine: [`StateData`] in memory, made durable as snapshots in the engine.
///
/// On restart the last snapshot is loaded and openraft re-applies the committed log after it.
pub struct StateMachineStore<E: LogEngine> {
    shared: Arc<Shared<E>>,
}

impl<E: LogEngine> Clone for StateMachineStore<E> {
    fn clone(&self) -> Self {
        StateMachineStore {
            shared: self.shared.clone(),
        }
    }
}

impl<E: LogEngine> StateMachineStore<E> {
    /// Opens the state machine, restoring it from the engine's last snapshot.
    pub fn open(engine: Arc<E>) -> Result<Self, EngineError> {
        let (snapshot, legacy) = newest_snapshot(&*engine, true)?;
        if legacy == Legacy::Older {
            engine.remove_meta(META_SNAPSHOT)?;
            engine.sync()?;
        }
        let (data, stored) = match snapshot {
            Some(snap) => {
                let data =
                    crate::member::format::decode_state(&snap.data).map_err(EngineError::new)?;
                (data, snap.meta.last_log_id)
            }
            None => (StateData::default(), None),
        };
        let (revision_tx, _) = watch::channel(data.revision);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                engine,
                revision_tx,
                stored: Mutex::new(stored),
                legacy: (legacy == Legacy::Newest).into(),
            }),
        })
    }

    /// Read access to the applied state.
    pub fn read(&self) -> RwLockReadGuard<'_, StateData> {
        self.shared.data.read().unwrap()
    }

    /// A receiver that changes whenever a new revision is applied (or a snapshot installed).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.revision_tx.subscribe()
    }

    /// The stored snapshot, if any.
    pub fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, EngineError> {
        let legacy = self.shared.legacy.load(std::sync::atomic::Ordering::SeqCst);
        Ok(newest_snapshot(&*self.shared.engine, legacy)?.0)
    }

    /// Stores `snap` durably (and gives it back) unless the stored snapshot is at least as
    /// new. openraft builds a snapshot in a task of its own, so a build that read the state at
    /// index a can finish after a snapshot up to b > a was installed (and the log purged up to
    /// b); overwriting b with a would leave a state machine that cannot catch up from the log
    /// after a restart. Encoding and writing run off the async workers: a snapshot can be
    /// tens of MB.
    async fn persist_snapshot(&self, snap: StoredSnapshot) -> Result<StoredSnapshot, EngineError> {
        let last = snap.meta.last_log_id;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = bincode::serialize(&snap).map_err(EngineError::new)?;
            let mut stored = shared.stored.lock().unwrap();
            if stored.is_some() && *stored >= last {
                return Ok(snap);
            }
            // The log first: every entry the snapshot covers was appended before it was
            // applied, but a follower applies what the quorum has on disk before its own
            // copy is synced. A snapshot that survived a crash the log before it did not
            // would stand ahead of a log with a gap after it (as one sled write, before
            // snapshots were files, the snapshot came after those entries and this held).
            shared.engine.sync()?;
            shared.engine.put_snapshot(&bytes)?;
            *stored = last;
            // Newer than anything stored the old way (see `META_SNAPSHOT`).
            shared
                .legacy
                .store(false, std::sync::atomic::Ordering::SeqCst);
            Ok(snap)
        })
        .await
        .map_err(EngineError::new)?
    }
}

/// A snapshot stored the old way (see [`META_SNAPSHOT`]), as [`newest_snapshot`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legacy {
    /// None (or not looked for).
    Absent,
    /// One, older than the engine's snapshot (or as old).
    Older,
    /// One, and it is the newest snapshot.
    Newest,
}

/// The newer of the engine's snapshot and, if `legacy`, one stored the old way (as metadata),
/// and what was found the old way.
fn newest_snapshot<E: LogEngine>(
    engine: &E,
    legacy: bool,
) -> Result<(Option<StoredSnapshot>, Legacy), EngineError> {
    let decode = |b: Vec<u8>| bincode::deserialize::<StoredSnapshot>(&b).map_err(EngineError::new);
    let file = engine.get_snapshot()?.map(decode).transpose()?;
    if !legacy {
        return Ok((file, Legacy::Absent));
    }
    let meta = engine.get_meta(META_SNAPSHOT)?.map(decode).transpose()?;
    Ok(match (file, meta) {
        (Some(f), Some(m)) if m.meta.last_log_id > f.meta.last_log_id => (Some(m), Legacy::Newest),
        (Some(f), Some(_)) => (Some(f), Legacy::Older),
        (None, Some(m)) => (Some(m), Legacy::Newest),
        (f, None) => (f, Legacy::Absent),
    })
}

impl<E: LogEngine> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<E> {
    type SnapshotData = SnapshotData;

    /// openraft 0.10's snapshot meta has no id any more; stored snapshots carry an empty one
    /// in the place 0.9 wrote it (openraft's own encoding), which nothing reads.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = Instant::now();
        // A copy under the lock (the history is shared, not copied), encoded after and off
        // the async workers: applying waits for the lock, and encoding a large state takes
        // seconds on a busy machine (46 MB at 4 KiB values), which on a worker held up every
        // task queued behind it.
        let data = self.read().clone();
        let copied = started.elapsed();
        let (bytes, meta) = tokio::task::spawn_blocking(move || {
            let bytes = crate::member::format::encode_state(&data);
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
            };
            (bytes, meta)
        })
        .await
        .map_err(io::Error::other)?;
        let encoded = started.elapsed();
        let stored = self
            .persist_snapshot(StoredSnapshot {
                meta: meta.clone(),
                data: bytes,
            })
            .await?;
        tracing::info!(
            bytes = stored.data.len(),
            copy_ms = copied.as_millis() as u64,
            encode_ms = encoded.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot built and stored"
        );
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(stored.data),
        })
    }
}

impl<E: LogEngine> RaftStateMachine<TypeConfig> for StateMachineStore<E> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let data = self.read();
        Ok((data.last_applied, data.membership.clone()))
    }

    /// Applies the entries openraft streams in, then answers each one's client. The stream
    /// reads the log lazily, so it is read to the end first: the state's lock is never held
    /// across an await. The clients are answered after the new revision is published, so a
    /// client that saw its write applied finds it in the state and in watches.
    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let started = Instant::now();
        let mut answers = Vec::with_capacity(entries.len());
        let revision = {
            let mut data = self.shared.data.write().unwrap();
            for (entry, _) in &entries {
                let (result, _) = data.apply(entry);
                answers.push(result);
            }
            data.revision
        };
        metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        self.shared.revision_tx.send_replace(revision);
        for ((_, responder), result) in entries.into_iter().zip(answers) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let (new, bytes) = tokio::task::spawn_blocking(move || {
            crate::member::format::decode_state(&bytes).map(|new| (new, bytes))
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
        self.persist_snapshot(StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        })
        .await?;
        let revision = new.revision;
        // The snapshot replaces the whole state.
        *self.shared.data.write().unwrap() = new;
        self.shared.revision_tx.send_replace(revision);
        Ok(())
    }

    /// Read off the async workers, like every other whole-snapshot step.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let this = self.clone();
        let stored = tokio::task::spawn_blocking(move || this.stored_snapshot())
            .await
            .map_err(io::Error::other)??;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Cursor::new(s.data),
        }))
    }
}

/// Where a snapshot sent in chunks (openraft 0.9's InstallSnapshot, kept on the wire by
/// `openraft-legacy`) is assembled before `install_snapshot`.
impl<E: LogEngine> SnapshotReceiverFactory<TypeConfig> for StateMachineStore<E> {
    type SnapshotReceiver = SnapshotData;

    async fn begin_receiving_snapshot(&mut self) -> Result<SnapshotData, io::Error> {
        Ok(Cursor::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::store::MemEngine;
    use crate::types::log_id;

    fn snapshot_at(index: u64) -> StoredSnapshot {
        StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(log_id(1, 1, index)),
                last_membership: StoredMembership::default(),
            },
            data: crate::member::format::encode_state(&StateData::default()),
        }
    }

    /// A build that read the state at 5 and finishes after a snapshot up to 9 was installed
    /// must not replace it: the log before 9 may be purged already.
    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_stored_one() {
        let sm = StateMachineStore::open(Arc::new(MemEngine::new())).unwrap();
        sm.persist_snapshot(snapshot_at(9)).await.unwrap();
        sm.persist_snapshot(snapshot_at(5)).await.unwrap();
        let stored = sm.stored_snapshot().unwrap().unwrap();
        assert_eq!(stored.meta.last_log_id, Some(log_id(1, 1, 9)));
        sm.persist_snapshot(snapshot_at(12)).await.unwrap();
        let stored = sm.stored_snapshot().unwrap().unwrap();
        assert_eq!(stored.meta.last_log_id, Some(log_id(1, 1, 12)));
    }
}

#[cfg(test)]
mod encoding_tests {
    use super::*;
    use crate::types::log_id;

    /// Snapshots stored before `data` was marked `serde_bytes` still decode, and new ones are
    /// byte for byte what the old code wrote.
    #[test]
    fn stored_snapshots_encode_as_they_always_did() {
        #[derive(Serialize)]
        struct Plain {
            meta: SnapshotMeta,
            data: Vec<u8>,
        }
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(4, 2, 77)),
            last_membership: StoredMembership::default(),
        };
        let data: Vec<u8> = (0..=255).chain(0..100).collect();
        let old = bincode::serialize(&Plain {
            meta: meta.clone(),
            data: data.clone(),
        })
        .unwrap();
        let new = bincode::serialize(&StoredSnapshot {
            meta,
            data: data.clone(),
        })
        .unwrap();
        assert_eq!(old, new);
        let back: StoredSnapshot = bincode::deserialize(&old).unwrap();
        assert_eq!(back.data, data);
    }
}
