//! Lease reads (`--read-policy lease`): the voters a leader's lease counts on must not
//! vote, for anyone, while that lease may run; found by the cold review of the lease reads.

mod common;

use std::time::{Duration, Instant};

use ballast_node::config::{Config, ReadPolicy};
use common::TestCluster;
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;

/// Found by review (it failed twice: a vote for itself 1.2-1.3 s after restart): `votes_open` refuses the votes a restarted member is *asked* for
/// in its first election timeout, but not the vote it gives *itself*. openraft starts the
/// restarted member's election timer at `Raft::new` with no lease (the lease lived in memory
/// only), so it becomes a candidate after its sampled timeout, in [min, max) of the election
/// timeout: always before `votes_open`, and mostly while the old leader still counts this
/// member's pre-crash acknowledgement in its lease (0.9 x max). With a third member that does
/// not hear the old leader (a one-way partition), that member's vote plus its own elect it
/// while the old leader, cut off, still serves lease reads: they miss the new leader's writes.
///
/// Here the member restarts on another port, so that the leader (which keeps sending to the
/// old address) cannot reach it while it reaches the others, as behind a one-way partition.
/// It must not vote, for anyone, itself included, before `election_timeout_max` has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_votes_for_nobody_itself_included_in_its_first_election_timeout() {
    fn slow(c: &mut Config) {
        c.election_timeout_min_ms = 1000;
        c.election_timeout_max_ms = 2000;
        c.read_policy = ReadPolicy::Lease;
    }
    let mut c = TestCluster::start(3, slow).await;
    let leader = c.leader().await;
    let f = c.follower().await;
    let term = c.nodes[&leader]
        .node
        .raft
        .metrics()
        .borrow_watched()
        .current_term;
    c.stop(f).await;
    let stopped = Instant::now();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = c.config(f);
    cfg.initial_cluster = c.addrs.clone();
    let h = ballast_node::start(cfg, l, None).await.unwrap();
    c.nodes.insert(f, h);
    let started = Instant::now();
    // The window in which `votes_open` says this member grants no vote.
    let window = Duration::from_millis(1900);
    while started.elapsed() < window {
        let m = c.nodes[&f].node.raft.metrics().borrow_watched().clone();
        if m.vote.leader_id.term > term {
            panic!(
                "member {f} voted in term {} for member {} {:?} after it started and {:?} after \
                 its last acknowledgement of leader {leader} (votes open only after 2000 ms; the \
                 leader's lease reads count on that acknowledgement for 1800 ms)",
                m.vote.leader_id.term,
                m.vote.leader_id.node_id,
                started.elapsed(),
                stopped.elapsed(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.shutdown().await;
}
