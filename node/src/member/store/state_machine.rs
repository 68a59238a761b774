//! openraft's state machine (`RaftStateMachine`): applies committed entries to the
//! `StateData` every reader shares, wakes watchers, and builds, stores (in the engine, as
//! versioned snapshots, `format.rs`) and installs snapshots. It decides nothing: what an entry
//! does is `StateData::apply`'s.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::engine::{EngineError, LogEngine};
use crate::member::state::StateData;
use crate::metrics;
use crate::types::{
    BatchResult, Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const META_SNAPSHOT: &str = "snapshot";

/// A snapshot as stored: its meta and a [`StateData`] in its versioned format (`format.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

struct Shared<E> {
    data: RwLock<StateData>,
    engine: Arc<E>,
    /// Latest applied revision, for watchers to wake on.
    revision_tx: watch::Sender<u64>,
    snapshot_seq: AtomicU64,
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
        let data = match engine.get_meta(META_SNAPSHOT)? {
            Some(b) => {
                let snap: StoredSnapshot = bincode::deserialize(&b).map_err(EngineError::new)?;
                crate::member::format::decode_state(&snap.data).map_err(EngineError::new)?
            }
            None => StateData::default(),
        };
        let (revision_tx, _) = watch::channel(data.revision);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                engine,
                revision_tx,
                snapshot_seq: AtomicU64::new(0),
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
        match self.shared.engine.get_meta(META_SNAPSHOT)? {
            Some(b) => Ok(Some(bincode::deserialize(&b).map_err(EngineError::new)?)),
            None => Ok(None),
        }
    }

    async fn persist_snapshot(&self, snap: &StoredSnapshot) -> Result<(), EngineError> {
        let bytes = bincode::serialize(snap).map_err(EngineError::new)?;
        let engine = self.shared.engine.clone();
        tokio::task::spawn_blocking(move || {
            engine.put_meta(META_SNAPSHOT, bytes)?;
            engine.sync()
        })
        .await
        .map_err(EngineError::new)?
    }
}

impl<E: LogEngine> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<E> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (bytes, last_applied, membership) = {
            let data = self.read();
            let bytes = crate::member::format::encode_state(&data);
            (bytes, data.last_applied, data.membership.clone())
        };
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
            None => format!("0-0-{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        self.persist_snapshot(&stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl<E: LogEngine> RaftStateMachine<TypeConfig> for StateMachineStore<E> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let data = self.read();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut results = Vec::new();
        let revision = {
            let mut data = self.shared.data.write().unwrap();
            for entry in entries {
                let (result, _) = data.apply(&entry);
                results.push(result);
            }
            data.revision
        };
        metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        self.shared.revision_tx.send_replace(revision);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let new = crate::member::format::decode_state(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        self.persist_snapshot(&stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let revision = new.revision;
        // The snapshot replaces the whole state.
        *self.shared.data.write().unwrap() = new;
        self.shared.revision_tx.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self
            .stored_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
