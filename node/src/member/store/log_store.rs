//! openraft's log storage (`RaftLogStorage`) over any `LogEngine`: entries in their versioned
//! encoding (`format.rs`), the vote, the committed and purged log ids as metadata, and every
//! change synced (on one sync thread, group commit) before openraft hears it is done. A purge
//! hides the purged entries at once and removes them from the engine on a thread of its own,
//! in small pieces (see [`spawn_pruner`]). Does not decide what to keep: openraft asks for
//! appends, truncations and purges.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::oneshot;

use super::engine::{EngineError, LogEngine};
use crate::types::{Entry, LogId, TypeConfig, Vote};

const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
/// The committed index is written to disk when it moved this far since the last write.
const SAVE_COMMITTED_EVERY: u64 = 64;
const META_LAST_PURGED: &str = "last_purged";
/// Every metadata value this store keeps (moved as they are from an older engine).
pub(super) const META_KEYS: [&str; 3] = [META_VOTE, META_COMMITTED, META_LAST_PURGED];
/// Most entries one engine call removes when purging: the sled engine holds its write lock
/// for a whole batch, and appends wait for it (the file engine writes one small record per
/// call, and deletes a segment once all of its entries are gone).
const PRUNE_PIECE: u64 = 64;

/// openraft's log storage over a [`LogEngine`].
///
/// Durability: `append`, `truncate_after` and `save_vote` sync the engine before they report
/// completion, so nothing is acknowledged to a peer or a client before it is on disk. `purge`
/// does not wait: the purge point is synced before any entry it covers is removed, so a crash
/// leaves either the old purge point with every entry or the new one with some of the purged
/// entries still stored (hidden, and removed after the restart; a clean stop may leave some
/// too).
pub struct LogStore<E: LogEngine> {
    engine: Arc<E>,
    syncer: mpsc::Sender<SyncRequest>,
    /// Takes purge points to remove entries up to (see [`spawn_pruner`]).
    pruner: mpsc::Sender<u64>,
    /// The first index not purged (0: nothing purged). Entries below it may still be stored
    /// until the pruner gets to them; readers never see them.
    visible_from: Arc<AtomicU64>,
    /// Last committed index openraft reported, shared with the member's status and metrics.
    committed: Arc<AtomicU64>,
    /// The committed index last written to disk (see `save_committed`).
    committed_saved: Arc<AtomicU64>,
}

impl<E: LogEngine> Clone for LogStore<E> {
    fn clone(&self) -> Self {
        LogStore {
            engine: self.engine.clone(),
            syncer: self.syncer.clone(),
            pruner: self.pruner.clone(),
            visible_from: self.visible_from.clone(),
            committed: self.committed.clone(),
            committed_saved: self.committed_saved.clone(),
        }
    }
}

impl<E: LogEngine> LogStore<E> {
    pub fn new(engine: Arc<E>) -> Self {
        let syncer = spawn_syncer(engine.clone());
        let store = LogStore {
            syncer: syncer.clone(),
            pruner: spawn_pruner(engine.clone(), syncer),
            visible_from: Arc::new(AtomicU64::new(0)),
            engine,
            committed: Arc::new(AtomicU64::new(0)),
            committed_saved: Arc::new(AtomicU64::new(0)),
        };
        // A crash may have come between a purge and the removal of what it covers: finish
        // that removal. An unreadable purge point is reported by `get_log_state`, which
        // openraft calls first.
        if let Ok(Some(purged)) = store.read_meta::<LogId>(META_LAST_PURGED) {
            store.hide_upto(purged.index);
            let _ = store.pruner.send(purged.index);
        }
        store
    }

    /// Makes every entry up to `index` invisible to readers.
    fn hide_upto(&self, index: u64) {
        self.visible_from
            .fetch_max(index.saturating_add(1), Ordering::SeqCst);
    }

    /// The committed index as last saved by openraft.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// Waits until every write made so far is durable (group commit, see [`spawn_syncer`]).
    async fn sync(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.syncer
            .send(SyncRequest::Notify(tx))
            .map_err(|_| EngineError("the log syncer has stopped".into()))?;
        rx.await
            .map_err(|_| EngineError("the log syncer has stopped".into()))?
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, EngineError> {
        match self.engine.get_meta(key)? {
            Some(b) => Ok(Some(bincode::deserialize(&b).map_err(EngineError::new)?)),
            None => Ok(None),
        }
    }

    /// The saved committed id `c` if this log holds that very entry (or a purge covered it),
    /// else the last purged id. openraft 0.10 may commit entries this member submitted but has
    /// not flushed, and the committed id is saved without a sync of its own, so after a crash
    /// that took unsynced log writes it may name an entry the log no longer holds. Starting
    /// from a lower committed index only delays applying until the leader says more (openraft
    /// raises it to what the state machine applied); starting from one the log lacks would
    /// re-apply entries that are not there.
    fn held_committed(&self, c: Option<LogId>) -> Result<Option<LogId>, EngineError> {
        let Some(c) = c else {
            return Ok(None);
        };
        let purged: Option<LogId> = self.read_meta(META_LAST_PURGED)?;
        if purged.as_ref().is_some_and(|p| p.index >= c.index) {
            return Ok(Some(c));
        }
        let here = self.engine.read_logs(c.index, c.index + 1)?;
        if let Some((_, b)) = here.first() {
            if decode(b)?.log_id == c {
                return Ok(Some(c));
            }
        }
        Ok(purged)
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<(), EngineError> {
        self.engine
            .put_meta(key, bincode::serialize(v).map_err(EngineError::new)?)
    }
}

enum SyncRequest {
    /// Completes openraft's append callback once durable.
    Flushed(IOFlushed<TypeConfig>),
    /// Answers once durable.
    Notify(oneshot::Sender<Result<(), EngineError>>),
}

/// Removes purged entries from the engine, on a thread of its own. openraft awaits `purge` in
/// its core loop, where removing a whole snapshot interval at once (10,000 entries by default,
/// each a batch of commands) held the leader's core, and sled's write lock that appends wait
/// for, for seconds (lab: 4 KiB puts at concurrency 64 fell from ~7,000/s to ~2,000/s in the
/// window with the purge; followers missed heartbeats and started elections).
///
/// For each purge point taken (the highest of those queued), the thread first syncs the
/// engine (through the sync thread), so that the purge point `purge` wrote is durable before any entry it covers goes:
/// removing entries first and losing the purge point in a crash would leave a hole at the
/// start of the log. Then it removes entries from the first one held up to the purge point,
/// [`PRUNE_PIECE`] at a time, from the front, so that what is left is always one unbroken
/// run. Nothing it removes is ever read again (readers stop below `visible_from`), truncated
/// or appended (both stay above the purge point), so it needs no ordering with other writes.
/// It holds the engine only while working, and ends when the last `LogStore` clone is
/// dropped. An error is logged and left: the entries stay hidden, and the next purge (or
/// restart) tries again.
fn spawn_pruner<E: LogEngine>(
    engine: Arc<E>,
    syncer: mpsc::Sender<SyncRequest>,
) -> mpsc::Sender<u64> {
    let engine = Arc::downgrade(&engine);
    let (tx, rx) = mpsc::channel::<u64>();
    std::thread::Builder::new()
        .name("ballast-log-prune".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let upto = rx.try_iter().fold(first, u64::max);
                if let Err(e) = prune(&engine, &syncer, upto) {
                    tracing::error!(upto, error = %e, "removing purged log entries failed; they stay hidden, and on disk");
                }
            }
        })
        .expect("spawning the log prune thread");
    tx
}

/// Removes every entry up to `upto` (see [`spawn_pruner`]). Returns early, without error,
/// when the engine was closed.
fn prune<E: LogEngine>(
    engine: &std::sync::Weak<E>,
    syncer: &mpsc::Sender<SyncRequest>,
    upto: u64,
) -> Result<(), EngineError> {
    // Through the sync thread, like every other sync of the log: an error reaches openraft's
    // callbacks in the same batch (and the engine keeps failing after one).
    if engine.upgrade().is_none() {
        return Ok(());
    }
    let (tx, rx) = oneshot::channel();
    if syncer.send(SyncRequest::Notify(tx)).is_err() {
        return Ok(());
    }
    match rx.blocking_recv() {
        Ok(Err(_)) if engine.upgrade().is_none() => return Ok(()),
        Ok(r) => r?,
        Err(_) => return Ok(()),
    }
    loop {
        let Some(e) = engine.upgrade() else {
            return Ok(());
        };
        match e.first_log_index()? {
            Some(first) if first <= upto => {
                e.remove_logs_upto(first.saturating_add(PRUNE_PIECE - 1).min(upto))?;
            }
            _ => return Ok(()),
        }
    }
}

/// Group commit: one thread takes every request queued so far, syncs the engine once, and
/// completes them in the order they were queued, so no runtime worker blocks on the disk.
/// openraft 0.10's core does not wait for an append's callback before it submits the next
/// one, so several appends (and votes, truncations, purges) may share one sync; every
/// callback still fires only after the sync that covers its writes, and in submission order
/// (openraft drops a completion older than one it already saw, but never needs to). The thread ends when the last `LogStore` clone is dropped, and
/// holds the engine only while syncing, so dropping the stores releases the data directory.
fn spawn_syncer<E: LogEngine>(engine: Arc<E>) -> mpsc::Sender<SyncRequest> {
    let engine = Arc::downgrade(&engine);
    let (tx, rx) = mpsc::channel::<SyncRequest>();
    std::thread::Builder::new()
        .name("ballast-log-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                let res = match engine.upgrade() {
                    Some(e) => e.sync(),
                    None => Err(EngineError("the storage engine was closed".into())),
                };
                for r in batch {
                    match r {
                        SyncRequest::Flushed(cb) => cb.io_completed(
                            res.as_ref()
                                .map(|_| ())
                                .map_err(|e| std::io::Error::other(e.to_string())),
                        ),
                        SyncRequest::Notify(tx) => {
                            let _ = tx.send(
                                res.as_ref()
                                    .map(|_| ())
                                    .map_err(|e| EngineError(e.0.clone())),
                            );
                        }
                    }
                }
            }
        })
        .expect("spawning the log sync thread");
    tx
}

fn decode(b: &[u8]) -> Result<Entry, EngineError> {
    crate::member::format::decode_entry(b).map_err(EngineError::new)
}

impl<E: LogEngine> RaftLogReader<TypeConfig> for LogStore<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(self.visible_from.load(Ordering::SeqCst));
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self.engine.read_logs(start, end)?;
        let mut out = Vec::with_capacity(raw.len());
        for (_, b) in &raw {
            out.push(decode(b)?);
        }
        Ok(out)
    }

    /// The vote as last saved, unchanged. openraft 0.9 restored a member whose committed vote
    /// was for itself as leader at once, with a read index from the committed index it read
    /// back, which could be behind what it acknowledged before a crash (tests/binaries.rs:
    /// SIGKILL of all members lost the last acknowledged write from a read); this method
    /// then handed the vote back uncommitted. openraft 0.10 reads the vote here for other
    /// purposes too (`leader_bounded_stream`), so the demotion moved to the configuration:
    /// `enable_leader_restore: Some(false)` (`config.rs`) makes a restarted leader win a new
    /// election first, whose blank entry covers everything it acknowledged.
    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.read_meta(META_VOTE)?)
    }
}

impl<E: LogEngine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        // Hidden by `new` already, unless its read of the purge point failed.
        let last_purged: Option<LogId> = self.read_meta(META_LAST_PURGED)?;
        if let Some(p) = last_purged {
            self.hide_upto(p.index);
        }
        // Only purged entries still waiting for the pruner: the log holds nothing else.
        let last = match self.engine.last_log()? {
            Some((i, b)) if last_purged.is_none_or(|p| i > p.index) => Some(decode(&b)?.log_id),
            _ => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_meta(META_VOTE, vote)?;
        self.sync().await?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(c) = committed {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
            // Written every SAVE_COMMITTED_EVERY entries only: each write was one more sled
            // IO buffer on the put path (lab, puts at c=16: 4.3k -> 5.0k/s). A committed
            // index older than the truth only means re-applying a few more entries after a
            // restart, or waiting for the leader's next commit; safety does not rest on it
            // (a restarted leader first wins a new election: `enable_leader_restore`). Not
            // synced either: the next sync makes it durable, and `read_committed` keeps it
            // only if the log holds the entry it names.
            let saved = self.committed_saved.load(Ordering::Relaxed);
            if saved != 0 && c.index < saved.saturating_add(SAVE_COMMITTED_EVERY) {
                return Ok(());
            }
            self.committed_saved
                .store(c.index.max(1), Ordering::Relaxed);
        }
        self.write_meta(META_COMMITTED, &committed)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let c: Option<Option<LogId>> = self.read_meta(META_COMMITTED)?;
        let c = self.held_committed(c.flatten())?;
        if let Some(c) = c {
            self.committed.fetch_max(c.index, Ordering::Relaxed);
        }
        Ok(c)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        for e in entries {
            let b = crate::member::format::encode_entry(&e);
            batch.push((e.log_id.index, b));
        }
        self.engine.insert_logs(batch)?;
        // Acknowledged by the syncer once durable, never before: openraft 0.10 replicates
        // from the submitted log without waiting for this callback, but counts the leader's
        // own copy towards the commit quorum only once it fires (and a follower answers
        // AppendEntries only after it), so firing it early would count an entry a power loss
        // could still take.
        if let Err(mpsc::SendError(SyncRequest::Flushed(cb))) =
            self.syncer.send(SyncRequest::Flushed(callback))
        {
            cb.io_completed(Err(io::Error::other("the log syncer has stopped")));
        }
        Ok(())
    }

    /// Keeps `last_log_id` and removes every entry after it (openraft 0.9's `truncate` took the
    /// first entry to remove instead).
    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.engine.remove_logs_from(from)?;
        self.sync().await?;
        Ok(())
    }

    /// Records the purge point and hides the entries it covers; the pruner syncs the point
    /// and removes them later (see [`spawn_pruner`]). No sync here: openraft calls this in its
    /// core loop, and a purge point lost in a crash only means those entries stay a while
    /// longer (nothing had been removed yet).
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.write_meta(META_LAST_PURGED, &log_id)?;
        self.hide_upto(log_id.index);
        if self.pruner.send(log_id.index).is_err() {
            return Err(io::Error::other("the log prune thread has stopped"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::store::MemEngine;
    use crate::types::{log_id, EntryPayload};

    fn entry(term: u64, index: u64) -> (u64, Vec<u8>) {
        let e = Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Blank,
        };
        (index, crate::member::format::encode_entry(&e))
    }

    /// openraft 0.10 may commit entries a member has submitted but not yet flushed, and the
    /// committed id is saved without a sync of its own. After a crash that took unsynced log
    /// writes (or a truncation replaced them), the saved id may name an entry this log does
    /// not hold; starting from it would re-apply entries that are not there.
    #[tokio::test]
    async fn a_saved_committed_id_names_only_an_entry_the_log_holds() {
        let engine = Arc::new(MemEngine::new());
        let mut store = LogStore::new(engine.clone());
        engine
            .insert_logs(vec![entry(1, 1), entry(1, 2), entry(1, 3)])
            .unwrap();
        store
            .write_meta(META_COMMITTED, &Some(log_id(1, 1, 3)))
            .unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 3)));

        // Entries 2 and 3 lost with the unsynced writes: nothing beyond 1 is known here.
        engine.remove_logs_from(2).unwrap();
        let c = store.read_committed().await.unwrap();
        assert!(c.is_none_or(|c| c.index <= 1), "{c:?}");

        // Index 3 held again, but from another term: not the committed entry.
        engine.insert_logs(vec![entry(2, 2), entry(2, 3)]).unwrap();
        let c = store.read_committed().await.unwrap();
        assert!(c.is_none_or(|c| c.index <= 1), "{c:?}");

        // A purge covered it: the snapshot holds it.
        engine.remove_logs_from(2).unwrap();
        store
            .write_meta(META_LAST_PURGED, &log_id(1, 1, 3))
            .unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 1, 3)));
    }
}
