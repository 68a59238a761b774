//! A leader that restarts must not serve a linearizable read older than a write it
//! acknowledged before the restart. openraft restores a member whose stored vote is a
//! committed vote for itself as leader at once (`enable_leader_restore`), in the same term and
//! without a new blank entry; its read index is then the larger of its term's first entry and
//! the committed index it read back, which our log store saves only every 64 entries
//! (`log_store.rs`). `enable_leader_restore: Some(false)` (`config/mod.rs`) makes it win a new
//! election first, whose blank entry covers everything it acknowledged.
//!
//! The window is made deterministic with a stand-in for one follower: it answers the
//! restarted leader's heartbeats (as the real member would: same vote, no log to compare)
//! and holds its appends unanswered, as a slow network may. Without the stand-in the
//! restarted leader's first append round, sent when it starts, advances the commit before a
//! client's read arrives, which is why the SIGKILL test of `tests/binaries.rs` does not see
//! the fault under openraft 0.10.

mod common;

use std::time::{Duration, Instant};

use ballast_client::{Client, ClientConfig};
use ballast_node::config::Config;
use ballast_node::member::network::decode;
use ballast_node::types::TypeConfig;
use ballast_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use ballast_proto::v1::RaftMessage;
use common::{wait_for, TestCluster};
use futures::stream::BoxStream;
use futures::StreamExt;
use openraft::errors::Fatal;
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

const ELECTION_MAX_MS: u64 = 3000;

/// Election timeouts long enough that nothing else moves while the leader restarts.
fn slow_elections(cfg: &mut Config) {
    cfg.election_timeout_min_ms = 1500;
    cfg.election_timeout_max_ms = ELECTION_MAX_MS;
}

/// A follower that answers heartbeats and nothing else: an append request (one that carries
/// entries or names a log id to match) waits unanswered until the stand-in stops, and it
/// grants no vote.
struct HeartbeatsOnly {
    stopped: watch::Receiver<bool>,
}

fn is_heartbeat(rpc: &AppendEntriesRequest<TypeConfig>) -> bool {
    rpc.entries.is_empty() && rpc.prev_log_id.is_none()
}

#[tonic::async_trait]
impl RaftService for HeartbeatsOnly {
    type StreamAppendStream = BoxStream<'static, Result<RaftMessage, Status>>;

    async fn append_entries(
        &self,
        _: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("appends are held"))
    }

    async fn stream_append(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let stopped = self.stopped.clone();
        let answers = futures::stream::unfold(
            (req.into_inner(), stopped),
            |(mut input, mut stopped)| async move {
                let m = input.message().await.ok()??;
                let rpc: AppendEntriesRequest<TypeConfig> = decode(&m.payload).ok()?;
                if !is_heartbeat(&rpc) {
                    // Held; at the stop the stream ends, so that the connection can close.
                    let _ = stopped.wait_for(|s| *s).await;
                    return None;
                }
                // What a member whose vote equals the leader's answers to an empty append with
                // nothing to match.
                let answer: Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>> =
                    Ok(Ok(None));
                let payload = bincode::serialize(&answer).unwrap();
                Some((Ok(RaftMessage { payload }), (input, stopped)))
            },
        );
        Ok(Response::new(answers.boxed()))
    }

    async fn vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("no votes from the stand-in"))
    }

    async fn pre_vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("no votes from the stand-in"))
    }

    async fn install_snapshot(
        &self,
        _: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("held"))
    }

    async fn propose(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("held"))
    }

    async fn read_index(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("held"))
    }

    async fn timeout_now(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("held"))
    }

    async fn transfer_leader(
        &self,
        _: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        Err(Status::unavailable("held"))
    }
}

/// Serves [`HeartbeatsOnly`] on `addr` until `true` is sent on the returned sender; the task
/// ends once every connection to it closed (the restarted member then connects afresh,
/// to whatever listens on the address next).
async fn stand_in(addr: &str) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let l = wait_for(
        "the follower's port to be free",
        Duration::from_secs(10),
        || {
            let addr = addr.to_string();
            async move { TcpListener::bind(&addr).await.ok() }
        },
    )
    .await;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut shutdown = stopped.clone();
        tonic::transport::Server::builder()
            .add_service(RaftServiceServer::new(HeartbeatsOnly { stopped }))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(l),
                async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                },
            )
            .await
            .unwrap();
    });
    (stop, task)
}

/// A client of one member only, that gives up on a call within a second.
fn pinned(addr: &str) -> Client {
    let mut cfg = ClientConfig::new(vec![addr.to_string()]);
    cfg.follow_leader_hints = false;
    cfg.attempt_timeout = Duration::from_secs(1);
    cfg.deadline = Duration::from_secs(1);
    Client::new(cfg)
}

/// The value of `key` from a linearizable read through `client`, or None if none was served.
async fn read(client: &Client, key: &str) -> Option<Option<Vec<u8>>> {
    let r = client.get(key, false).await.ok()?;
    Some(r.kv.map(|kv| kv.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_leader_serves_no_read_older_than_its_acknowledged_writes() {
    let mut c = TestCluster::start(3, slow_elections).await;
    c.settled().await;
    let leader = c.leader().await;
    let client = c.client();
    for i in 1..=5 {
        client.put("restore/key", format!("v{i}")).await.unwrap();
    }
    let last = b"v5".to_vec();
    // The leader saved its committed index at its first commit and saves it again only 64
    // entries later: what it reads back after the restart is behind the writes above.
    assert!(
        c.last_log_index(leader) < 64,
        "the test needs the writes within 64 entries of the saved committed index"
    );
    let others: Vec<u64> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    let (held, down) = (others[0], others[1]);

    // Stopping is no crash, but what the leader stored is the same: its committed vote, and
    // a committed index written only every 64 entries, not at a stop. The follower that
    // stays up longest stops right after the leader, long before its election timeout.
    c.stop(down).await;
    c.stop(leader).await;
    c.stop(held).await;

    // One follower's address answers heartbeats only; the other member stays down.
    let (stop_stand_in, stand_in_task) = stand_in(&c.addrs[&held]).await;
    c.restart(leader).await;
    let through_leader = pinned(&c.addrs[&leader]);

    // Reads through the restarted member while its appends go unanswered. With leader
    // restore it leads again at once and a heartbeat round confirms it: a read served then
    // must still see the last acknowledged write. Without it no read is served here (the
    // stand-in grants no vote), which is what the setting is for.
    let until = Instant::now() + Duration::from_millis(ELECTION_MAX_MS);
    while Instant::now() < until {
        if let Some(v) = read(&through_leader, "restore/key").await {
            assert_eq!(
                v.as_deref(),
                Some(&last[..]),
                "a linearizable read through the restarted leader missed an acknowledged write"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The real follower comes back: the restarted member serves reads again, all current.
    stop_stand_in.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), stand_in_task)
        .await
        .expect("the stand-in's connections closed")
        .unwrap();
    c.restart(held).await;
    let v = wait_for(
        "a read through the restarted member",
        Duration::from_secs(30),
        || read(&through_leader, "restore/key"),
    )
    .await;
    assert_eq!(v.as_deref(), Some(&last[..]));
    c.shutdown().await;
}
