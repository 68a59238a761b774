//! openraft's storage suite on every LogEngine of ours, and crash-restart durability of the
//! two on disk (each test that opens a directory runs on both: `_sled` and `_file`).

use std::sync::Arc;

use ballast_node::member::store::{
    EngineError, FileEngine, LogEngine, LogStore, MemEngine, SledEngine, StateMachineStore,
};
use ballast_node::types::{
    log_id, Batch, Command, Entry, EntryPayload, Op, StorageError, TypeConfig, Vote,
};
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::RaftLogReader;

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore<MemEngine>, StateMachineStore<MemEngine>, ()>
    for MemBuilder
{
    async fn build(
        &self,
    ) -> Result<((), LogStore<MemEngine>, StateMachineStore<MemEngine>), StorageError> {
        let engine = Arc::new(MemEngine::new());
        let sm = StateMachineStore::open(engine.clone()).unwrap();
        Ok(((), LogStore::new(engine), sm))
    }
}

/// An engine on a directory.
trait Disk: LogEngine + Sized {
    fn try_open(dir: &std::path::Path) -> Result<Self, EngineError>;
    fn open_dir(dir: &std::path::Path) -> Self {
        Self::try_open(dir).unwrap()
    }
}

impl Disk for SledEngine {
    fn try_open(dir: &std::path::Path) -> Result<Self, EngineError> {
        SledEngine::open(dir)
    }
}

impl Disk for FileEngine {
    fn try_open(dir: &std::path::Path) -> Result<Self, EngineError> {
        FileEngine::open(dir)
    }
}

struct DiskBuilder<E>(std::marker::PhantomData<E>);

impl<E: Disk> StoreBuilder<TypeConfig, LogStore<E>, StateMachineStore<E>, tempfile::TempDir>
    for DiskBuilder<E>
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<E>, StateMachineStore<E>), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(E::open_dir(dir.path()));
        let sm = StateMachineStore::open(engine.clone()).unwrap();
        Ok((dir, LogStore::new(engine), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_mem_engine() {
    Suite::test_all(MemBuilder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_sled_engine() {
    Suite::test_all(DiskBuilder::<SledEngine>(Default::default()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_file_engine() {
    Suite::test_all(DiskBuilder::<FileEngine>(Default::default()))
        .await
        .unwrap();
}

fn put_entry(term: u64, index: u64, key: &str) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Batch {
            commands: vec![Command {
                request: None,
                now_ms: 0,
                op: Op::Put {
                    key: key.as_bytes().to_vec(),
                    value: b"v".to_vec(),
                },
            }],
        }),
    }
}

/// Entries acknowledged by `append`'s callback, a vote and a purge survive reopening the
/// directory. The SIGKILL version of this, through real processes, is in `tests/binaries.rs`.
async fn keeps_every_acknowledged_entry_across_reopen<E: Disk>() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    {
        let engine = Arc::new(E::open_dir(dir.path()));
        let mut store = LogStore::new(engine.clone());
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        for i in 1..=200u64 {
            let e = put_entry(3, i, &format!("k{i}"));
            let (tx, rx) = TypeConfig::oneshot();
            store
                .append([e], IOFlushed::<TypeConfig>::signal(tx))
                .await
                .unwrap();
            rx.await.unwrap().unwrap();
            acked.push(i);
        }
        store.purge(log_id(3, 1, 50)).await.unwrap();
        // No explicit close: only what was synced is relied on.
        drop(store);
        drop(engine);
    }
    let engine = Arc::new(E::open_dir(dir.path()));
    let mut store = LogStore::new(engine.clone());
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(50));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(200));
    let entries = store.try_get_log_entries(51..=200).await.unwrap();
    assert_eq!(entries.len(), 150);
    for (e, i) in entries.iter().zip(51u64..) {
        assert_eq!(e.log_id.index, i);
    }
    // Removed from the engine too, in the background (and after the restart at the latest).
    removed_upto(&*engine, 50).await;
    assert_eq!(acked.len(), 200);
}

/// Waits until the engine holds no entry at or below `index`.
async fn removed_upto(engine: &impl LogEngine, index: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !engine.read_logs(0, index + 1).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "purged entries up to {index} are still stored after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn append_all(
    store: &mut LogStore<impl LogEngine>,
    term: u64,
    indexes: std::ops::RangeInclusive<u64>,
) {
    for i in indexes {
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(
                [put_entry(term, i, &format!("k{i}"))],
                IOFlushed::<TypeConfig>::signal(tx),
            )
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }
}

/// A purge returns without removing anything (openraft awaits it in its core loop), but
/// readers never see a purged entry again, and the engine loses them soon after.
async fn purged_entries_vanish_at_once_and_leave_the_engine_later<E: Disk>() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(E::open_dir(dir.path()));
    let mut store = LogStore::new(engine.clone());
    append_all(&mut store, 2, 1..=300).await;
    store.purge(log_id(2, 1, 200)).await.unwrap();
    let seen: Vec<u64> = store
        .try_get_log_entries(0..=300)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect();
    assert_eq!(seen, (201..=300).collect::<Vec<_>>());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 200)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 300)));
    removed_upto(&*engine, 200).await;
    assert_eq!(engine.read_logs(0, 301).unwrap().len(), 100);
}

/// A crash after the purge point was made durable but before the entries it covers were
/// removed: the restarted store hides them, counts a log of nothing but them as empty, and
/// removes them.
async fn entries_a_crash_left_behind_a_purge_are_hidden_and_removed<E: Disk>() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Arc::new(E::open_dir(dir.path()));
        let mut store = LogStore::new(engine.clone());
        append_all(&mut store, 1, 1..=100).await;
        // What `purge` writes, made durable, and nothing removed yet.
        let point = bincode::serialize(&log_id(1, 1, 100)).unwrap();
        engine.put_meta("last_purged", point).unwrap();
        engine.sync().unwrap();
    }
    let engine = Arc::new(E::open_dir(dir.path()));
    let mut store = LogStore::new(engine.clone());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 100)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 100)));
    assert!(store.try_get_log_entries(0..=100).await.unwrap().is_empty());
    append_all(&mut store, 3, 101..=101).await;
    let seen = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].log_id, log_id(3, 1, 101));
    removed_upto(&*engine, 100).await;
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(3, 1, 101))
    );
}

/// The state machine is restored from its last snapshot after reopening.
async fn state_machine_restores_from_snapshot<E: Disk>() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Arc::new(E::open_dir(dir.path()));
        let mut sm = StateMachineStore::open(engine).unwrap();
        let entries = (1..=10).map(|i| Ok((put_entry(1, i, &format!("k{i}")), None)));
        sm.apply(futures::stream::iter(entries)).await.unwrap();
        let mut b = sm.get_snapshot_builder().await;
        b.build_snapshot().await.unwrap();
    }
    let engine = Arc::new(E::open_dir(dir.path()));
    let mut sm = StateMachineStore::open(engine).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(10));
    assert_eq!(sm.read().kv.len(), 10);
    assert_eq!(sm.read().revision, 10);
}

/// The committed index is written to disk sparingly: the first one, then one every 64
/// entries. What is read back may be behind what was saved, never ahead.
#[tokio::test]
async fn committed_index_is_saved_sparingly_and_never_ahead() {
    let engine = Arc::new(MemEngine::new());
    let mut store = LogStore::new(engine.clone());
    // The entries it names are in the log (a committed id naming an entry the log does not
    // hold is not kept at start: see `LogStore::read_committed`).
    let entries = (1..=67)
        .map(|i| {
            let e = put_entry(1, i, &format!("k{i}"));
            (i, ballast_node::member::format::encode_entry(&e))
        })
        .collect();
    engine.insert_logs(entries).unwrap();
    let id = |i| Some(log_id(1, 1, i));
    store.save_committed(id(3)).await.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), id(3));
    store.save_committed(id(40)).await.unwrap();
    assert_eq!(
        store.read_committed().await.unwrap(),
        id(3),
        "not written yet"
    );
    store.save_committed(id(67)).await.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), id(67));
    // A fresh store on the same engine (a restart) reads what was written.
    let mut again = LogStore::new(engine);
    assert_eq!(again.read_committed().await.unwrap(), id(67));
}

fn pattern(tag: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(tag) as u8)
        .collect()
}

/// Entries and metadata of every size, from empty to 16 MiB, read back exactly, also after
/// overwriting with another size and removing ranges that cut through large entries.
fn values_of_every_size_round_trip(e: &impl LogEngine) {
    let sizes = [
        0,
        1,
        4095,
        4096,
        4097,
        8192,
        131_072,
        204_800,
        1 << 20,
        16 << 20,
    ];
    let entries: Vec<(u64, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u64 + 1, pattern(i as u64, *n)))
        .collect();
    e.insert_logs(entries[..5].to_vec()).unwrap();
    for (i, v) in &entries[5..] {
        e.insert_logs(vec![(*i, v.clone())]).unwrap();
    }
    assert_eq!(e.read_logs(0, 100).unwrap(), entries);
    assert_eq!(e.read_logs(6, 9).unwrap(), entries[5..8].to_vec());
    assert_eq!(e.last_log().unwrap().as_ref(), entries.last());
    // Overwrites with other sizes: large over small, small over large.
    let over = vec![(4, pattern(99, 300_000)), (9, pattern(98, 10))];
    e.insert_logs(over.clone()).unwrap();
    assert_eq!(e.read_logs(4, 5).unwrap(), over[..1].to_vec());
    assert_eq!(e.read_logs(9, 10).unwrap(), over[1..].to_vec());
    e.insert_logs(vec![(9, pattern(97, 500_000))]).unwrap();
    assert_eq!(e.read_logs(9, 10).unwrap()[0].1, pattern(97, 500_000));
    // Removing from a large entry on, and up to one.
    e.remove_logs_from(9).unwrap();
    assert_eq!(e.last_log().unwrap().unwrap().0, 8);
    e.remove_logs_upto(4).unwrap();
    let left = e.read_logs(0, 100).unwrap();
    assert_eq!(
        left.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![5, 6, 7, 8]
    );
    assert_eq!(left[3].1, entries[7].1);
    // Metadata: large, then small, then large again, next to a name that extends it.
    for (n, len) in [(1u64, 5_000_000usize), (2, 3), (3, 70_000), (4, 0)] {
        e.put_meta("snapshot", pattern(n, len)).unwrap();
        e.put_meta("snapshot2", pattern(n + 10, 9000)).unwrap();
        assert_eq!(e.get_meta("snapshot").unwrap(), Some(pattern(n, len)));
        assert_eq!(
            e.get_meta("snapshot2").unwrap(),
            Some(pattern(n + 10, 9000))
        );
    }
    assert_eq!(e.get_meta("absent").unwrap(), None);
}

#[test]
fn mem_engine_keeps_values_of_every_size() {
    values_of_every_size_round_trip(&MemEngine::new());
}

#[test]
fn file_engine_keeps_values_of_every_size() {
    let dir = tempfile::tempdir().unwrap();
    values_of_every_size_round_trip(&FileEngine::open(dir.path()).unwrap());
}

#[test]
fn sled_engine_keeps_values_of_every_size() {
    let dir = tempfile::tempdir().unwrap();
    values_of_every_size_round_trip(&SledEngine::open(dir.path()).unwrap());
}

/// sled puts a record above 131,020 bytes (a quarter of its segment less headers) in a blob
/// file that it never fsyncs; the engine keeps every record below that, leaf nodes full of
/// 4 KiB chunks included. A blob file here would be a value a power cut could take.
#[test]
fn sled_engine_writes_no_blob_files() {
    let dir = tempfile::tempdir().unwrap();
    let e = SledEngine::open(dir.path()).unwrap();
    // Full leaves of the largest unchunked values, then of chunked ones, in log order.
    for i in 1..=400u64 {
        e.insert_logs(vec![(i, pattern(i, 4096))]).unwrap();
    }
    for i in 401..=500u64 {
        e.insert_logs(vec![(i, pattern(i, 4096 * 7 + 1))]).unwrap();
    }
    e.insert_logs((501..=540u64).map(|i| (i, pattern(i, 200_000))).collect())
        .unwrap();
    e.insert_logs(vec![(541, pattern(541, 16 << 20))]).unwrap();
    // Removals that make sled merge leaves, and snapshots rewritten in place.
    e.remove_logs_upto(450).unwrap();
    e.remove_logs_from(520).unwrap();
    for n in 0..3 {
        e.put_meta("snapshot", pattern(n, 8 << 20)).unwrap();
        e.put_meta("vote", pattern(n, 40)).unwrap();
    }
    e.sync().unwrap();
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert!(blobs.is_empty(), "sled wrote blob files: {blobs:?}");
    assert_eq!(e.read_logs(0, u64::MAX).unwrap().len(), 69);
    drop(e);
    let e = SledEngine::open(dir.path()).unwrap();
    assert_eq!(e.get_meta("snapshot").unwrap(), Some(pattern(2, 8 << 20)));
    assert_eq!(e.last_log().unwrap().unwrap().0, 519);
}

/// A data directory whose sled is still open (a handle dropped a moment later, as sled's
/// threads do after a member stops in the same process) is waited for; one held for good
/// (another ballastd) is refused with a message that says so.
fn a_directory_still_held_is_waited_for_then_refused<E: Disk>() {
    let dir = tempfile::tempdir().unwrap();
    let first = E::open_dir(dir.path());
    let path = dir.path().to_path_buf();
    let reopened = std::thread::spawn(move || E::try_open(&path).map(|_| ()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(first);
    reopened
        .join()
        .unwrap()
        .expect("opened once the first handle let go");

    let held = E::open_dir(dir.path());
    let err = E::try_open(dir.path()).err().expect("refused while held");
    assert!(err.to_string().contains("another ballastd"), "{err}");
    drop(held);
}

/// Both engines keep a snapshot whole across a reopen, and remove metadata on request.
#[test]
fn engines_keep_snapshots_and_remove_metadata() {
    fn check(e: &impl LogEngine) {
        assert_eq!(e.get_snapshot().unwrap(), None);
        e.put_snapshot(&pattern(1, 3 << 20)).unwrap();
        e.put_snapshot(&pattern(2, 100)).unwrap();
        assert_eq!(e.get_snapshot().unwrap(), Some(pattern(2, 100)));
        e.put_meta("snapshot", pattern(3, 40_000)).unwrap();
        e.remove_meta("snapshot").unwrap();
        assert_eq!(e.get_meta("snapshot").unwrap(), None);
        e.remove_meta("never-written").unwrap();
    }
    check(&MemEngine::new());
    let dir = tempfile::tempdir().unwrap();
    {
        let e = FileEngine::open(dir.path()).unwrap();
        check(&e);
        std::fs::write(dir.path().join(".ballast-snapshot.x1Yz9q.tmp"), b"torn").unwrap();
    }
    let e = FileEngine::open(dir.path()).unwrap();
    assert_eq!(e.get_snapshot().unwrap(), Some(pattern(2, 100)));
    assert!(!dir.path().join(".ballast-snapshot.x1Yz9q.tmp").exists());
    drop(e);
    let dir = tempfile::tempdir().unwrap();
    {
        let e = SledEngine::open(dir.path()).unwrap();
        check(&e);
        // A snapshot a crash cut short while it was written.
        std::fs::write(dir.path().join(".ballast-snapshot.x1Yz9q.tmp"), b"torn").unwrap();
    }
    let e = SledEngine::open(dir.path()).unwrap();
    assert_eq!(e.get_snapshot().unwrap(), Some(pattern(2, 100)));
    assert!(!dir.path().join(".ballast-snapshot.x1Yz9q.tmp").exists());
    // No chunk of the removed 40 KB value is left behind.
    e.put_meta("snapshot", vec![7]).unwrap();
    assert_eq!(e.get_meta("snapshot").unwrap(), Some(vec![7]));
}

/// Applies puts `indexes` (term 1) and builds a snapshot of the result.
async fn apply_and_snapshot(
    sm: &mut StateMachineStore<impl LogEngine>,
    indexes: std::ops::RangeInclusive<u64>,
) -> ballast_node::types::Snapshot {
    use openraft::RaftSnapshotBuilder;
    let entries = indexes.map(|i| Ok((put_entry(1, i, &format!("k{i}")), None)));
    sm.apply(futures::stream::iter(entries)).await.unwrap();
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

/// The last log index of the stored snapshot.
fn stored_index(sm: &StateMachineStore<impl LogEngine>) -> u64 {
    let stored = sm.stored_snapshot().unwrap().unwrap();
    stored.meta.last_log_id.unwrap().index
}

/// A snapshot stored the old way (a metadata value) is read, and replaced by the file once
/// a newer snapshot is built; an older file never wins over a newer metadata snapshot.
async fn snapshots_stored_as_metadata_are_read_then_replaced<E: Disk>() {
    let dir = tempfile::tempdir().unwrap();
    let old = {
        let engine = Arc::new(E::open_dir(dir.path()));
        let mut sm = StateMachineStore::open(engine.clone()).unwrap();
        apply_and_snapshot(&mut sm, 1..=10).await;
        // Move it where ballastd before snapshot files kept it.
        let b = engine.get_snapshot().unwrap().unwrap();
        std::fs::remove_file(dir.path().join("ballast-snapshot")).unwrap();
        engine.put_meta("snapshot", b.clone()).unwrap();
        engine.sync().unwrap();
        b
    };
    let engine = Arc::new(E::open_dir(dir.path()));
    let mut sm = StateMachineStore::open(engine.clone()).unwrap();
    assert_eq!(sm.read().kv.len(), 10);
    assert_eq!(stored_index(&sm), 10);
    apply_and_snapshot(&mut sm, 11..=12).await;
    assert_eq!(stored_index(&sm), 12);
    // Removed at the next open, when nothing reads it.
    assert!(engine.get_meta("snapshot").unwrap().is_some());
    drop(sm);
    let sm = StateMachineStore::open(engine.clone()).unwrap();
    assert_eq!(engine.get_meta("snapshot").unwrap(), None);
    assert_eq!(sm.read().kv.len(), 12);
    // A downgrade that wrote a newer snapshot as metadata over an older file.
    drop(sm);
    let newer = {
        let mut sm = StateMachineStore::open(engine.clone()).unwrap();
        let snap = apply_and_snapshot(&mut sm, 13..=14).await;
        assert_eq!(snap.meta.last_log_id.unwrap().index, 14);
        engine.get_snapshot().unwrap().unwrap()
    };
    engine.put_meta("snapshot", newer).unwrap();
    engine.put_snapshot(&old).unwrap();
    let sm = StateMachineStore::open(engine.clone()).unwrap();
    assert_eq!(sm.read().kv.len(), 14);
    assert!(engine.get_meta("snapshot").unwrap().is_some());
}

/// A directory where a sync once failed is refused, naming the marker, until an operator
/// deals with it: the page cache may have shown writes the disk never took.
fn a_directory_where_a_sync_failed_is_refused<E: Disk>() {
    let dir = tempfile::tempdir().unwrap();
    drop(E::open_dir(dir.path()));
    std::fs::write(dir.path().join("SYNC-FAILED"), "fdatasync: EIO").unwrap();
    let err = E::try_open(dir.path()).err().expect("refused");
    assert!(
        err.0.contains("SYNC-FAILED") && err.0.contains("EIO"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("SYNC-FAILED")).unwrap();
    E::open_dir(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_every_acknowledged_entry_across_reopen_sled() {
    keeps_every_acknowledged_entry_across_reopen::<SledEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_every_acknowledged_entry_across_reopen_file() {
    keeps_every_acknowledged_entry_across_reopen::<FileEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_entries_vanish_at_once_and_leave_the_engine_later_sled() {
    purged_entries_vanish_at_once_and_leave_the_engine_later::<SledEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_entries_vanish_at_once_and_leave_the_engine_later_file() {
    purged_entries_vanish_at_once_and_leave_the_engine_later::<FileEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_crash_left_behind_a_purge_are_hidden_and_removed_sled() {
    entries_a_crash_left_behind_a_purge_are_hidden_and_removed::<SledEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_crash_left_behind_a_purge_are_hidden_and_removed_file() {
    entries_a_crash_left_behind_a_purge_are_hidden_and_removed::<FileEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_restores_from_snapshot_sled() {
    state_machine_restores_from_snapshot::<SledEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_restores_from_snapshot_file() {
    state_machine_restores_from_snapshot::<FileEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_stored_as_metadata_are_read_then_replaced_sled() {
    snapshots_stored_as_metadata_are_read_then_replaced::<SledEngine>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_stored_as_metadata_are_read_then_replaced_file() {
    snapshots_stored_as_metadata_are_read_then_replaced::<FileEngine>().await;
}

#[test]
fn a_directory_still_held_is_waited_for_then_refused_sled() {
    a_directory_still_held_is_waited_for_then_refused::<SledEngine>();
}

#[test]
fn a_directory_still_held_is_waited_for_then_refused_file() {
    a_directory_still_held_is_waited_for_then_refused::<FileEngine>();
}

#[test]
fn a_directory_where_a_sync_failed_is_refused_sled() {
    a_directory_where_a_sync_failed_is_refused::<SledEngine>();
}

#[test]
fn a_directory_where_a_sync_failed_is_refused_file() {
    a_directory_where_a_sync_failed_is_refused::<FileEngine>();
}
