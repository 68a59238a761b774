//! openraft's storage suite on every LogEngine of ours, and crash-restart durability of sled.

use std::sync::Arc;

use ballast_node::store::{LogEngine, LogStore, MemEngine, SledEngine, StateMachineStore};
use ballast_node::types::{Batch, Command, NodeId, Op, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, StorageError, Vote};

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore<MemEngine>, StateMachineStore<MemEngine>, ()>
    for MemBuilder
{
    async fn build(
        &self,
    ) -> Result<((), LogStore<MemEngine>, StateMachineStore<MemEngine>), StorageError<NodeId>> {
        let engine = Arc::new(MemEngine::new());
        let sm = StateMachineStore::open(engine.clone()).unwrap();
        Ok(((), LogStore::new(engine), sm))
    }
}

struct SledBuilder;

impl
    StoreBuilder<TypeConfig, LogStore<SledEngine>, StateMachineStore<SledEngine>, tempfile::TempDir>
    for SledBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            LogStore<SledEngine>,
            StateMachineStore<SledEngine>,
        ),
        StorageError<NodeId>,
    > {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(SledEngine::open(dir.path()).unwrap());
        let sm = StateMachineStore::open(engine.clone()).unwrap();
        Ok((dir, LogStore::new(engine), sm))
    }
}

#[test]
fn openraft_suite_on_mem_engine() {
    Suite::test_all(MemBuilder).unwrap();
}

#[test]
fn openraft_suite_on_sled_engine() {
    Suite::test_all(SledBuilder).unwrap();
}

fn put_entry(term: u64, index: u64, key: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
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

/// Entries written and synced the way `append` does it (openraft's callback cannot be built
/// outside openraft), a vote and a purge survive reopening the directory. The SIGKILL version
/// of this, through real processes, is in `tests/binaries.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_every_acknowledged_entry_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    {
        let engine = Arc::new(SledEngine::open(dir.path()).unwrap());
        let mut store = LogStore::new(engine.clone());
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        for i in 1..=200u64 {
            let e = put_entry(3, i, &format!("k{i}"));
            engine
                .insert_logs(vec![(i, bincode::serialize(&e).unwrap())])
                .unwrap();
            engine.sync().unwrap();
            acked.push(i);
        }
        store
            .purge(LogId::new(CommittedLeaderId::new(3, 1), 50))
            .await
            .unwrap();
        // No explicit close: only what was synced is relied on.
        drop(store);
        drop(engine);
    }
    let engine = Arc::new(SledEngine::open(dir.path()).unwrap());
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
    assert!(engine.read_logs(0, 51).unwrap().is_empty());
    assert_eq!(acked.len(), 200);
}

/// The state machine is restored from its last snapshot after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_state_machine_restores_from_snapshot() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Arc::new(SledEngine::open(dir.path()).unwrap());
        let mut sm = StateMachineStore::open(engine).unwrap();
        sm.apply((1..=10).map(|i| put_entry(1, i, &format!("k{i}"))))
            .await
            .unwrap();
        let mut b = sm.get_snapshot_builder().await;
        b.build_snapshot().await.unwrap();
    }
    let engine = Arc::new(SledEngine::open(dir.path()).unwrap());
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
    let id = |i| Some(LogId::new(CommittedLeaderId::new(1, 1), i));
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
