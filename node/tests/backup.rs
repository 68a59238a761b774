//! Backups and restore: a backup saved from a busy cluster seeds a new cluster with the same
//! state; truncated or altered files are refused before anything is created.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast_client::{backup, v1, Client, ClientConfig};
use common::{no_tune, wait_for, TestCluster};
use tokio::net::TcpListener;

/// What must survive a restore: every key with its value and revisions, services, VIPs
/// (ownership aside: a new cluster places them afresh).
async fn comparable(
    c: &Client,
) -> (
    Vec<v1::KeyValue>,
    Vec<v1::Service>,
    Vec<(String, String, u64)>,
) {
    let kvs = c.range("", 0, false).await.unwrap().kvs;
    let s = c.get_state(false).await.unwrap();
    let vips = s
        .vips
        .iter()
        .map(|v| (v.name.clone(), v.address.clone(), v.epoch))
        .collect();
    (kvs, s.services, vips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_a_busy_cluster_seeds_a_new_one_and_bad_files_are_refused() {
    let c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    common::define_web_and_vip(&client).await;
    // Writers keep going while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, stop, written) = (client.clone(), stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .put(format!("k/{w}/{}", i % 50), format!("{i}"))
                    .await
                    .unwrap();
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    wait_for("writes under way", Duration::from_secs(10), || async {
        (written.load(Ordering::Relaxed) > 200).then_some(())
    })
    .await;
    let file = client.snapshot().await.unwrap();
    wait_for(
        "writes after the backup",
        Duration::from_secs(10),
        || async { (written.load(Ordering::Relaxed) > 400).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let (header, _) = backup::decode(&file).unwrap();
    assert!(header.revision > 200, "{header:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.bak");
    std::fs::write(&path, &file).unwrap();

    // Refused before anything is created: a truncated file and an altered one.
    for (name, bad) in [
        ("truncated", file[..file.len() - 10].to_vec()),
        ("altered", {
            let mut f = file.clone();
            let n = f.len();
            f[n - 1] ^= 0x40;
            f
        }),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bad).unwrap();
        let mut cfg = ballast_node::Config::for_test(9, dir.path().join(format!("data-{name}")));
        cfg.bootstrap = true;
        cfg.restore_from = Some(p);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = ballast_node::start(cfg, l, None)
            .await
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(if name == "truncated" {
                "truncated"
            } else {
                "checksum mismatch"
            }),
            "{name}: {msg}"
        );
        assert!(!dir.path().join(format!("data-{name}")).join("log").exists());
    }

    // A new one-member cluster seeded from the file. The copy it keeps until the restore is
    // applied never goes through a symlink found at a temporary name.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::create_dir_all(dir.path().join("restored")).unwrap();
    for tmp in ["restore.tmp", ".restore.pending.tmp"] {
        std::os::unix::fs::symlink(&victim, dir.path().join("restored").join(tmp)).unwrap();
    }
    let mut cfg = ballast_node::Config::for_test(1, dir.path().join("restored"));
    cfg.bootstrap = true;
    cfg.restore_from = Some(path.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = ballast_node::start(cfg, l, None).await.unwrap();
    let restored = Client::new(ClientConfig::new(vec![h.grpc_addr.to_string()]));
    let after = wait_for("the restore applied", Duration::from_secs(20), || async {
        let s = restored.get_state(false).await.ok()?;
        (!s.services.is_empty()).then_some(())?;
        Some(comparable(&restored).await)
    })
    .await;

    // The restored cluster holds exactly the backup's state: compare with a backup of it.
    let again = restored.snapshot().await.unwrap();
    let (h2, _) = backup::decode(&again).unwrap();
    assert!(h2.revision > header.revision, "the revision continues");
    assert_ne!(h2.cluster_id, header.cluster_id, "a new cluster id");
    // Same keys, values and revisions; same services; same VIPs (unowned, epochs kept).
    let (_, p1) = backup::decode(&file).unwrap();
    let (_, p2) = backup::decode(&again).unwrap();
    let src = ballast_node::member::backup::BackupState::decode(p1).unwrap();
    let dst = ballast_node::member::backup::BackupState::decode(p2).unwrap();
    assert!(src.kv.len() > 10, "{} keys", src.kv.len());
    assert_eq!(src.kv, dst.kv);
    assert_eq!(src.services, dst.services);
    let vips = |b: &ballast_node::member::backup::BackupState| -> Vec<(String, String, u64)> {
        b.vips
            .values()
            .map(|v| (v.name.clone(), v.address.clone(), v.epoch))
            .collect()
    };
    assert_eq!(vips(&src), vips(&dst));
    assert_eq!(after.1.len(), 1);
    assert!(dst.vips.values().all(|v| v.owner == 0));
    assert_eq!(after.0.len(), src.kv.len());
    assert!(
        std::fs::read(&victim).unwrap() == b"untouched",
        "the restore wrote through a symlink"
    );
    assert!(!dir
        .path()
        .join("restored")
        .join(ballast_node::member::backup::PENDING)
        .exists());

    // A cluster that holds state refuses a second restore.
    let mut cfg2 = ballast_node::Config::for_test(1, dir.path().join("restored"));
    cfg2.bootstrap = true;
    cfg2.restore_from = Some(path);
    h.shutdown().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = ballast_node::start(cfg2, l, None)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("empty data directory"), "{err}");
    c.shutdown().await;
}

/// Two of three members lost for good: the survivor is forced into a new one-member cluster
/// that keeps its state, then grown back with two fresh members; nothing acknowledged before
/// the loss is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_survivor_is_forced_into_a_new_cluster_and_grown_back() {
    // SAFETY: umask only changes the mode of files created afterwards; the usual value.
    unsafe { libc::umask(0o022) };
    let mut c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    for i in 0..100 {
        client
            .put(format!("acked/{i}"), format!("{i}"))
            .await
            .unwrap();
    }
    let survivor = 1;
    // The survivor has applied everything acknowledged (an operator picks the member with
    // the highest log index).
    let leader = c.leader().await;
    let applied = c.last_log_index(leader);
    c.wait_applied(survivor, applied).await;
    let old_cluster = c.nodes[&1].node.identity.cluster_id().unwrap();
    for id in [2, 3, 1] {
        c.stop(id).await;
    }

    // Without the confirmation: refused by validation.
    let mut cfg = c.config(survivor);
    cfg.force_new_cluster = true;
    let mut probe = cfg.clone();
    // (Test clusters use slow elections that the lease check would refuse first.)
    probe.election_timeout_min_ms = 100;
    probe.election_timeout_max_ms = 200;
    let err = probe.validate().unwrap_err().to_string();
    assert!(err.contains("--confirm-data-loss"), "{err}");
    cfg.confirm_data_loss = true;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = ballast_node::start(cfg, l, None).await.unwrap();
    let addr = h.grpc_addr.to_string();
    let one = Client::new(ClientConfig::new(vec![addr.clone()]));
    wait_for(
        "the forced cluster holds the data",
        Duration::from_secs(20),
        || async {
            let r = one.get("acked/99", false).await.ok()?;
            r.kv.filter(|kv| kv.value == b"99").map(|_| ())
        },
    )
    .await;
    assert_ne!(h.node.identity.cluster_id().unwrap(), old_cluster);
    let data = c.data_dir(survivor);
    // The backup it wrote of itself holds every key and value: mode 0600 whatever the umask
    // (the test runs with the usual 022).
    let bak = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("force-new-cluster-") && n.ends_with(".bak")
        })
        .expect("the forced backup");
    {
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(&bak).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", bak.display());
    }
    assert!(std::fs::read_dir(&data).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("raft.replaced-")));

    // Grown back to three with fresh members.
    let mut fresh = Vec::new();
    for id in [4u64, 5] {
        let mut cfg = ballast_node::Config::for_test(id, c.dir.path().join(format!("node-{id}")));
        cfg.join = vec![addr.clone()];
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        fresh.push(ballast_node::start(cfg, l, None).await.unwrap());
        wait_for("the learner joined", Duration::from_secs(20), || async {
            let s = one.status().await.ok()?;
            s.members.iter().any(|m| m.id == id).then_some(())
        })
        .await;
        one.promote_voter(id).await.unwrap();
    }
    let s = one.status().await.unwrap();
    assert_eq!(
        s.members
            .iter()
            .filter(|m| m.role == v1::Role::Voter as i32)
            .count(),
        3
    );
    for f in &fresh {
        let on = Client::new(ClientConfig::new(vec![f.grpc_addr.to_string()]));
        for i in 0..100 {
            let kv = on
                .get(format!("acked/{i}"), false)
                .await
                .unwrap()
                .kv
                .expect("present");
            assert_eq!(kv.value, format!("{i}").into_bytes());
        }
    }
    for f in fresh {
        f.shutdown().await;
    }
    h.shutdown().await;
}

/// `--force-new-cluster` on a member whose state is above what a restore can carry is
/// refused before anything changes: the data directory stays as it was and the member
/// restarts as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forcing_a_state_above_the_restore_limit_changes_nothing() {
    let mut c = TestCluster::start(1, no_tune).await;
    let client = c.client();
    let value = vec![7u8; ballast_proto::MAX_VALUE_LEN];
    let keys = ballast_proto::MAX_MESSAGE_LEN / 2 / value.len() + 2;
    for i in 0..keys {
        client.put(format!("big/{i}"), value.clone()).await.unwrap();
    }
    c.stop(1).await;
    let data = c.data_dir(1);
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();

    let mut cfg = c.config(1);
    cfg.force_new_cluster = true;
    cfg.confirm_data_loss = true;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = ballast_node::start(cfg, l, None)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert_eq!(listing(), before, "the data directory is as it was ({err})");
    assert!(err.contains("nothing was changed"), "{err}");

    // Restarted as before, the member serves its data.
    c.restart(1).await;
    let kv = c
        .client()
        .get(format!("big/{}", keys - 1), false)
        .await
        .unwrap()
        .kv
        .expect("still there");
    assert_eq!(kv.value, value);
    c.shutdown().await;
}
