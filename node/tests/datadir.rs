//! Data directories and backups written by earlier code open under the current code, with
//! everything in them. `tests/fixtures/datadir/cluster-<tag>.tar.gz` holds the three members'
//! data directories and a backup file of a small cluster, made by `make.sh` beside them on the
//! commit named in that folder's README; they are never regenerated. Each test unpacks them
//! into a temporary directory and reads them through the same code a member uses at start
//! (the sled store, the snapshot decoder, the log entry decoder, replay through `apply`).

use std::path::{Path, PathBuf};

use ballast_node::member::backup::{self, BackupState};
use ballast_node::member::state::StateData;
use ballast_node::model;

fn unpack(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let archive = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/datadir/cluster-{tag}.tar.gz"));
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(status.success(), "unpacking {}", archive.display());
    dir
}

fn member(dir: &Path, id: u64) -> (StateData, u64) {
    backup::state_of_data_dir(&dir.join(format!("node-{id}")))
        .unwrap_or_else(|e| panic!("member {id}: {e}"))
}

/// What `make.sh` wrote, checked field by field.
fn check_content(
    kv: &std::collections::BTreeMap<Vec<u8>, ballast_node::model::KvEntry>,
    services: &std::collections::BTreeMap<String, model::Service>,
    vips: &std::collections::BTreeMap<String, model::Vip>,
    nodes: &std::collections::BTreeMap<u64, model::Node>,
) {
    let value = |k: &str| {
        kv.get(k.as_bytes())
            .map(|e| String::from_utf8(e.value.clone()).unwrap())
    };
    for n in 1..=40 {
        let want = match n {
            7 => Some("value-7-again".to_string()),
            9 => None,
            _ => Some(format!("value-{n}")),
        };
        assert_eq!(value(&format!("app/key-{n}")), want, "app/key-{n}");
    }
    assert_eq!(value("config/limits").as_deref(), Some(r#"{"max":10}"#));
    assert_eq!(kv.len(), 40, "39 app keys and config/limits");
    let k7 = &kv[b"app/key-7".as_slice()];
    assert_eq!(k7.version, 2, "app/key-7 was written twice");
    assert!(k7.mod_revision > k7.create_revision);

    let web = &services["web"];
    let check = web.check.as_ref().expect("web has a check");
    match &check.kind {
        Some(model::CheckKind::Http(h)) => {
            assert_eq!((h.port, h.path.as_str()), (8080, "/healthz"))
        }
        other => panic!("web's check: {other:?}"),
    }
    assert_eq!((check.interval_ms, check.rise, check.fall), (500, 2, 3));
    assert_eq!(web.backends.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    let releases: Vec<_> = web.releases.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(releases, ["r1", "r2"]);
    assert_eq!(web.releases[1].artifact, "/srv/releases/web-r2.tar.gz");
    assert_eq!(web.releases[1].sha256, "2".repeat(64));
    let rollout = web.rollout.as_ref().expect("web has a rollout");
    assert_eq!((rollout.release.as_str(), rollout.batch), ("r1", 2));
    let db = &services["db"];
    assert!(matches!(
        db.check.as_ref().and_then(|c| c.kind.as_ref()),
        Some(model::CheckKind::Tcp(model::TcpCheck { port: 5432 }))
    ));
    assert_eq!(db.backends.keys().copied().collect::<Vec<_>>(), [2, 3]);

    let web_vip = &vips["web-vip"];
    assert_eq!(
        (
            web_vip.address.as_str(),
            web_vip.interface.as_str(),
            web_vip.service.as_str()
        ),
        ("10.213.0.100/24", "eth0", "web")
    );
    let placement = web_vip.placement.as_ref().expect("web-vip has priorities");
    assert_eq!(placement.priorities.get(&1), Some(&100));
    assert_eq!(vips["db-vip"].address, "10.213.0.101/24");

    assert_eq!(nodes.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(nodes[&3].admin, model::AdminState::Draining);
    assert_eq!(nodes[&1].admin, model::AdminState::Active);
}

fn every_tag() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir");
    let mut tags: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            Some(
                name.strip_prefix("cluster-")?
                    .strip_suffix(".tar.gz")?
                    .to_string(),
            )
        })
        .collect();
    tags.sort();
    assert!(!tags.is_empty(), "no fixture in {}", dir.display());
    tags
}

#[test]
fn every_members_data_directory_opens_with_everything_in_it() {
    for tag in every_tag() {
        let dir = unpack(&tag);
        let states: Vec<(StateData, u64)> = (1..=3).map(|id| member(dir.path(), id)).collect();
        for (s, _) in &states {
            check_content(&s.kv, &s.services, &s.vips, &s.nodes);
            // The membership survived too: three voters at the addresses they had.
            let m = s.membership.membership();
            assert_eq!(m.voter_ids().collect::<Vec<_>>(), [1, 2, 3], "{tag}");
            // Every member took a snapshot (every 20 entries) and kept a log after it.
            assert!(s.last_applied.unwrap().index > 20, "{tag}");
        }
        // The three members applied the same log: the same state.
        let last: Vec<u64> = states.iter().map(|(_, l)| *l).collect();
        assert!(last.windows(2).all(|w| w[0] == w[1]), "{tag}: {last:?}");
        assert_eq!(states[0].0.kv, states[1].0.kv);
        assert_eq!(states[0].0.services, states[2].0.services);
        assert_eq!(states[0].0.vips, states[2].0.vips);
    }
}

#[test]
fn every_backup_file_reads_back_what_the_cluster_held() {
    for tag in every_tag() {
        let dir = unpack(&tag);
        let (header, payload) = backup::read_file(&dir.path().join("backup.bin")).unwrap();
        assert!(header.cluster_id.starts_with("fixture-"), "{tag}");
        let b = BackupState::decode(&payload).unwrap();
        check_content(&b.kv, &b.services, &b.vips, &b.nodes);
        // From format 2 on, the lease wait of the cluster it came from travels along.
        assert_eq!(
            b.lease_wait_ms > 0,
            b.format >= 2,
            "{tag}: format {}",
            b.format
        );
        assert_eq!(header.revision, b.revision);
        // The backup was taken after the last write: the members hold the same data.
        let (s, _) = member(dir.path(), 1);
        assert_eq!((b.revision, &b.kv), (s.revision, &s.kv), "{tag}");
    }
}

/// openraft's own stored values, written by openraft 0.9 in every fixture: the vote, the
/// committed and purged log ids and the snapshot's meta read under today's openraft, and
/// encode back to the bytes stored, but for the snapshot id, which openraft 0.10 no longer
/// keeps and writes empty. Proves the layouts unchanged (see DESIGN.md, "Stored formats").
#[tokio::test]
async fn openraft_values_written_by_0_9_read_back_byte_for_byte() {
    use std::sync::Arc;

    use ballast_node::member::store::{LogEngine, LogStore, SledEngine, StoredSnapshot};
    use ballast_node::types::{LogId, StoredMembership};
    use openraft::storage::RaftLogStorage;
    use openraft::RaftLogReader;
    use serde::{Deserialize, Serialize};

    /// `StoredSnapshot` as openraft 0.9's snapshot meta laid it out.
    #[derive(Serialize, Deserialize)]
    struct SnapshotV09 {
        last_log_id: Option<LogId>,
        last_membership: StoredMembership,
        snapshot_id: String,
        data: Vec<u8>,
    }

    for tag in every_tag() {
        let dir = unpack(&tag);
        for id in 1..=3u64 {
            let raft = dir.path().join(format!("node-{id}/raft"));
            let engine = Arc::new(SledEngine::open(&raft).unwrap());
            let raw = |key: &str| engine.get_meta(key).unwrap();
            let mut store = LogStore::new(engine.clone());

            let vote = store.read_vote().await.unwrap().expect("a vote");
            assert!(vote.is_committed(), "{tag}/{id}: {vote:?}");
            assert_eq!(
                Some(bincode::serialize(&vote).unwrap()),
                raw("vote"),
                "{tag}/{id}"
            );

            let committed = store.read_committed().await.unwrap();
            assert!(committed.is_some(), "{tag}/{id}");
            assert_eq!(
                Some(bincode::serialize(&committed).unwrap()),
                raw("committed"),
                "{tag}/{id}"
            );

            let log = store.get_log_state().await.unwrap();
            match raw("last_purged") {
                Some(b) => {
                    let purged = log.last_purged_log_id.expect("read back");
                    assert_eq!(bincode::serialize(&purged).unwrap(), b, "{tag}/{id}");
                }
                None => assert_eq!(log.last_purged_log_id, None, "{tag}/{id}"),
            }
            assert!(log.last_log_id >= committed, "{tag}/{id}");

            let stored = raw("snapshot").expect("a snapshot");
            let old: SnapshotV09 = bincode::deserialize(&stored).unwrap();
            assert!(!old.snapshot_id.is_empty(), "{tag}/{id}: written by 0.9");
            let snap: StoredSnapshot = bincode::deserialize(&stored).unwrap();
            assert_eq!(snap.meta.last_log_id, old.last_log_id, "{tag}/{id}");
            assert_eq!(snap.meta.last_membership, old.last_membership, "{tag}/{id}");
            assert_eq!(snap.data, old.data, "{tag}/{id}");
            let again = SnapshotV09 {
                snapshot_id: String::new(),
                ..old
            };
            assert_eq!(
                bincode::serialize(&snap).unwrap(),
                bincode::serialize(&again).unwrap(),
                "{tag}/{id}"
            );
        }
    }
}

/// What an engine holds: the log store's metadata values, every entry, and the snapshot (the
/// file, or where there is none the one stored as metadata, as every fixture has).
type Held = (Vec<Option<Vec<u8>>>, Vec<(u64, Vec<u8>)>, Option<Vec<u8>>);

fn held(e: &impl ballast_node::member::store::LogEngine) -> Held {
    let meta = ["vote", "committed", "last_purged"]
        .iter()
        .map(|k| e.get_meta(k).unwrap())
        .collect();
    let snapshot = e.get_snapshot().unwrap();
    let snapshot = snapshot.or_else(|| e.get_meta("snapshot").unwrap());
    (meta, e.read_logs(0, u64::MAX).unwrap(), snapshot)
}

/// Every member's sled log of every fixture moves into the file engine byte for byte, the
/// sled directory gives way to a file that keeps an older ballastd out, a copy a crash left
/// half done is started again, and opening again changes nothing.
#[test]
fn sled_logs_move_into_the_file_engine_whole() {
    use ballast_node::member::store::{open_member_engine, LogEngine, SledEngine};
    for tag in every_tag() {
        let dir = unpack(&tag);
        for id in 1..=3u64 {
            let node = dir.path().join(format!("node-{id}"));
            let before = held(&SledEngine::open(&node.join("raft")).unwrap());
            assert!(!before.1.is_empty(), "{tag}/{id}: the fixture has entries");
            // A copy a crash interrupted.
            std::fs::create_dir_all(node.join("log.moving")).unwrap();
            std::fs::write(node.join("log.moving/log-00000000000000000001"), b"torn").unwrap();
            let moved = open_member_engine(&node).unwrap();
            let after = held(&moved);
            assert!(before == after, "{tag}/{id}: the moved log differs");
            assert!(before.2.is_some(), "{tag}/{id}: the fixture has a snapshot");
            // The old metadata snapshot became the snapshot file, not a metadata value.
            assert_eq!(moved.get_meta("snapshot").unwrap(), None, "{tag}/{id}");
            drop(moved);
            assert!(node.join("raft").is_file(), "{tag}/{id}");
            assert!(!node.join("raft.moved").exists() && !node.join("log.moving").exists());
            let again = held(&open_member_engine(&node).unwrap());
            assert!(before == again, "{tag}/{id}: reopened");
            // What an older ballastd (sled) makes of the directory now: refusal.
            assert!(SledEngine::open(&node.join("raft")).is_err(), "{tag}/{id}");
        }
    }
}
