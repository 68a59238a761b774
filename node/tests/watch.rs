//! Watches resume by themselves for as long as they live: after compaction (with a resync
//! the caller is told about), at the first call or in mid-stream, and after a first call
//! that failed.
//!
//! Every member of this test binary keeps 20 revisions of history (instead of 10,000), so
//! that compaction takes few writes.

mod common;

use std::time::Duration;

use ballast_client::{v1, Client, ClientConfig, WatchItem, WatchStream};
use common::{no_tune, wait_for, TestCluster};

const HISTORY: usize = 20;

async fn cluster() -> TestCluster {
    ballast_node::member::state::set_history_revisions_for_tests(HISTORY);
    TestCluster::start(3, no_tune).await
}

/// A client of member `id` alone (it does not move to the leader) that gives up on a call
/// within a second.
fn impatient_client_of(c: &TestCluster, id: u64) -> Client {
    let mut cfg = ClientConfig::new(vec![c.addrs[&id].clone()]);
    cfg.follow_leader_hints = false;
    cfg.deadline = Duration::from_secs(1);
    cfg.attempt_timeout = Duration::from_millis(300);
    cfg.max_backoff = Duration::from_millis(200);
    Client::new(cfg)
}

fn watch_prefix(client: &Client, prefix: &str, start_revision: u64) -> WatchStream {
    client.watch(v1::WatchRequest {
        key_prefixes: vec![prefix.as_bytes().to_vec()],
        cluster_state: false,
        start_revision,
        ..Default::default()
    })
}

/// The next item, within 10 s.
async fn next_item(w: &mut WatchStream) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("an item within 10 s")
        .unwrap()
}

/// The next item that carries events (progress marks skipped), within 10 s.
async fn next_changes(w: &mut WatchStream) -> v1::WatchResponse {
    loop {
        match next_item(w).await {
            WatchItem::Changes(r) if r.events.is_empty() => {}
            WatchItem::Changes(r) => return r,
            other => panic!("expected changes, got {other:?}"),
        }
    }
}

/// Writes `k/after`, then checks that the watch delivers changes in order from `resume_at`
/// up to that write.
async fn changes_up_to_a_write(writer: &Client, w: &mut WatchStream, resume_at: u64) {
    let put = writer.put("k/after", "v").await.unwrap();
    let rev = put.header.unwrap().revision;
    let mut last = resume_at - 1;
    loop {
        let r = next_changes(w).await;
        assert!(r.revision > last, "revision {} after {last}", r.revision);
        last = r.revision;
        if r.revision == rev {
            assert_eq!(keys(&r), ["k/after"]);
            return;
        }
    }
}

/// The keys of the KV events in `r`.
fn keys(r: &v1::WatchResponse) -> Vec<String> {
    r.events
        .iter()
        .filter_map(|e| match &e.event {
            Some(v1::event::Event::Kv(k)) => {
                Some(String::from_utf8_lossy(&k.kv.as_ref()?.key).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_whose_history_was_compacted_resyncs_and_goes_on() {
    let c = cluster().await;
    let writer = c.client();
    for i in 0..(2 * HISTORY) {
        writer.put(format!("k/{i}"), "v").await.unwrap();
    }
    // Revision 1 is long gone: the watch must say so, then go on.
    let mut w = watch_prefix(&writer, "k/", 1);
    let resume_at = match next_item(&mut w).await {
        WatchItem::Resync { resume_at } => resume_at,
        other => panic!("expected a resync, got {other:?}"),
    };
    assert!(
        resume_at > HISTORY as u64,
        "resumes past the compacted revisions"
    );
    changes_up_to_a_write(&writer, &mut w, resume_at).await;
    c.shutdown().await;
}

/// Writes that land in one batch (one log entry) move every member's history past a live
/// watch at once: the server ends that watch with OUT_OF_RANGE in mid-stream, and the client
/// resyncs and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_overtaken_by_compaction_in_mid_stream_resyncs() {
    let c = cluster().await;
    let writer = c.client();
    let mut w = watch_prefix(&c.client(), "k/", 0);
    writer.put("k/0", "v").await.unwrap();
    assert_eq!(keys(&next_changes(&mut w).await), ["k/0"]);
    // Concurrent puts are batched: while one batch commits, the next gathers more revisions
    // than the history keeps, and every member applies them at once. How many land in one
    // batch depends on the machine, so bursts grow until one overtakes the watch.
    let (mut last, mut resyncs, mut n, mut written) = (0, 0, 10 * HISTORY, 1);
    for _round in 0..5 {
        let puts = (written..written + n).map(|i| {
            let writer = writer.clone();
            async move { writer.put(format!("k/{i}"), "v").await }
        });
        for r in futures::future::join_all(puts).await {
            r.unwrap();
        }
        written += n;
        let rev = writer
            .put(format!("k/after-{written}"), "v")
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
        written += 1;
        // Up to that write: changes in order, and each loss told by a resync (batches apply
        // one by one, so there may be more than one), after which a read covers what was lost.
        loop {
            match next_item(&mut w).await {
                WatchItem::Resync { resume_at } => {
                    assert!(resume_at > last, "resync at {resume_at} after {last}");
                    let read = writer.range("k/", 0, false).await.unwrap();
                    assert!(read.header.unwrap().revision + 1 >= resume_at);
                    assert_eq!(read.kvs.len(), written, "a read covers what was lost");
                    resyncs += 1;
                    last = resume_at - 1;
                    if resume_at > rev {
                        break; // the lost range held the last write too: the read covered it
                    }
                }
                WatchItem::Changes(r) if r.events.is_empty() => {}
                WatchItem::Changes(r) => {
                    assert!(r.revision > last, "{} after {last}", r.revision);
                    last = r.revision;
                    if r.revision == rev {
                        assert_eq!(keys(&r), [format!("k/after-{}", written - 1)]);
                        break;
                    }
                }
            }
        }
        if resyncs > 0 {
            break;
        }
        n *= 2;
    }
    assert!(resyncs > 0, "no burst overtook the watch");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_whose_first_call_failed_starts_once_its_member_is_back() {
    let mut c = cluster().await;
    let writer = c.client();
    let f = c.follower().await;
    c.stop(f).await;
    let mut w = watch_prefix(&impatient_client_of(&c, f), "k/", 0);
    // The first call (pinning "from now" to a revision) fails, and says so.
    let first = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("the failure is reported");
    assert!(
        matches!(first, Err(ballast_client::Error::Unavailable(_))),
        "{first:?}"
    );
    c.restart(f).await;
    // The watch starts once its member answers: it sees a write made after that.
    wait_for("the member to answer", Duration::from_secs(20), || async {
        c.client_of(&[f]).status().await.ok()
    })
    .await;
    // The watch starts "from now" when its retried first call succeeds, which may come
    // after any one write: writes go on until one is delivered, and it must be one of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut written = Vec::new();
    'outer: loop {
        let rev = writer
            .put("k/late", "v")
            .await
            .unwrap()
            .header
            .unwrap()
            .revision;
        written.push(rev);
        let round = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            if tokio::time::Instant::now() > deadline {
                panic!("the watch did not start once its member was back (wrote {written:?})");
            }
            match tokio::time::timeout_at(round, w.next()).await {
                Err(_) => break,
                Ok(Ok(WatchItem::Changes(r))) if keys(&r) == ["k/late"] => {
                    assert!(
                        written.contains(&r.revision),
                        "{} not in {written:?}",
                        r.revision
                    );
                    break 'outer;
                }
                Ok(other) => println!("before the change: {other:?}"),
            }
        }
    }
    c.shutdown().await;
}

/// A cluster-state watch gets its progress marks while the cluster applies KV writes it does
/// not ask for: the mark is due after silence towards the watcher, not after the member's
/// last change (which, under a steady write load, would never come).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_watch_gets_progress_marks_while_the_cluster_is_busy() {
    let c = cluster().await;
    let writer = c.client();
    let mut w = c.client().watch(v1::WatchRequest {
        cluster_state: true,
        progress_ms: 100,
        ..Default::default()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (writer, stop) = (writer.clone(), stop.clone());
        tokio::spawn(async move {
            let mut puts = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer
                    .put(format!("busy/{}", puts % 10), "v")
                    .await
                    .unwrap();
                puts += 1;
            }
            puts
        })
    };
    let mut marks = 0;
    while marks < 3 {
        match next_item(&mut w).await {
            WatchItem::Changes(r) if r.events.is_empty() => marks += 1,
            other => panic!("expected a progress mark, got {other:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let puts = load.await.unwrap();
    assert!(puts > 0);
    c.shutdown().await;
}

/// A TCP relay to `to` that can be frozen: it then moves no more bytes either way (old and
/// new connections alike) while keeping every socket open, as a partition does to a
/// connection whose packets are dropped.
async fn freezable_relay(to: String) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (frozen_tx, frozen) = tokio::sync::watch::channel(false);
    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut frozen: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                _ = async { let _ = frozen.wait_for(|f| *f).await; } => {
                    std::future::pending::<()>().await;
                    return;
                }
            };
            if *frozen.borrow() {
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&to).await else {
                continue;
            };
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::spawn(pipe(ir, ow, frozen.clone()));
            tokio::spawn(pipe(or, iw, frozen.clone()));
        }
    });
    (addr, frozen_tx)
}

/// A watch whose connection goes silent (a partition drops its packets; TCP says nothing
/// for seconds, HTTP/2 keepalive for 15) takes the silence past three missed progress marks
/// as a cut and resumes on another member: it delivers the next write long before the
/// connection itself would have been given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_on_a_stalled_connection_resumes_on_another_member() {
    let c = cluster().await;
    let writer = c.client();
    let ids: Vec<u64> = c.addrs.keys().copied().collect();
    let (relay, freeze) = freezable_relay(c.addrs[&ids[0]].clone()).await;
    let mut cfg = ClientConfig::new(vec![relay, c.addrs[&ids[1]].clone()]);
    cfg.follow_leader_hints = false;
    cfg.watch_progress = Duration::from_millis(200);
    let mut w = watch_prefix(&Client::new(cfg), "s/", 0);
    // The watch runs through the relay: it sees a write.
    let rev = writer
        .put("s/1", "v")
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    while next_changes(&mut w).await.revision < rev {}
    freeze.send(true).unwrap();
    let rev = writer
        .put("s/2", "v")
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let delivered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.next().await {
                Ok(WatchItem::Changes(r)) if r.revision == rev => return r,
                Ok(_) => {}
                Err(e) => panic!("the watch failed: {e}"),
            }
        }
    })
    .await
    .expect("the write made after the stall delivered within 5 s");
    assert_eq!(keys(&delivered), ["s/2"]);
    c.shutdown().await;
}

/// An agent watches the cluster state from right after the read it started with: a change
/// committed between the two (while it installs its fence and registers) is delivered, not
/// skipped. "From now" skipped it, and a rollout that switched a restarted agent's node in
/// that gap waited for it until its deadline (CI, the release lab test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agents_watch_delivers_what_changed_after_its_first_read() {
    let c = cluster().await;
    let client = c.client();
    let first = client.get_state(false).await.unwrap();
    let svc = v1::Service {
        name: "web".into(),
        check: Some(v1::HealthCheck {
            kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 80 })),
            ..Default::default()
        }),
        backends: [(1, v1::Backend::default())].into(),
        ..Default::default()
    };
    let applied = client
        .apply_service(svc)
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let lease = ballast_node::lease::LeaseConfig::default();
    let mut w = client.watch(ballast_node::agent::state_watch(&first, &lease));
    // Progress marks keep coming either way: the whole wait has a deadline, not each item.
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = next_changes(&mut w).await;
            assert!(r.revision <= applied, "revision {applied} was skipped");
            if r.revision == applied {
                break;
            }
        }
    })
    .await;
    assert!(delivered.is_ok(), "revision {applied} was never delivered");
    c.shutdown().await;
}
