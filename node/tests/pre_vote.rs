//! Pre-vote (openraft's, on the `PreVote` RPC): a member whose election timer fires asks
//! whether a quorum would vote for it, and raises its term only if so. What a member answers,
//! and what it is for: a member cut off from the others comes back without deposing the
//! leader. (That a restarted member answers no pre-vote in its first election timeout is in
//! `tests/cluster.rs`, beside the same rule for votes.)

mod common;

use std::time::Duration;

use ballast_node::types::{LogId, TypeConfig, Vote};
use common::calls::{raft_client, raft_request};
use common::{no_tune, wait_for, TestCluster};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};

/// Member `id`'s Raft metrics.
fn metrics(c: &TestCluster, id: u64) -> openraft::RaftMetrics<TypeConfig> {
    c.nodes[&id].node.raft.metrics().borrow_watched().clone()
}

fn last_log(c: &TestCluster, id: u64) -> Option<LogId> {
    c.nodes[&id]
        .node
        .raft
        .data_metrics()
        .borrow_watched()
        .last_log
}

/// Asks member `to` whether it would vote for `candidate` in `term`, whose last log id is
/// `last`.
async fn pre_vote(
    c: &TestCluster,
    to: u64,
    candidate: u64,
    term: u64,
    last: Option<LogId>,
) -> VoteResponse<TypeConfig> {
    let cluster_id = c.nodes[&to].node.identity.cluster_id().unwrap();
    let rpc = VoteRequest::<TypeConfig>::new(Vote::new(term, candidate), last);
    let req = raft_request(bincode::serialize(&rpc).unwrap(), None, &cluster_id);
    let resp = raft_client(&c.addrs[&to])
        .await
        .pre_vote(req)
        .await
        .expect("a pre-vote answered");
    let r: Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>> =
        bincode::deserialize(&resp.into_inner().payload).unwrap();
    r.unwrap()
}

/// A pre-vote is answered by a vote's rules (leader lease, then log), and nothing is stored:
/// refused while the member hears a leader, refused to a candidate whose log is behind,
/// granted to an up-to-date candidate once the leader is gone, the member's own vote
/// unchanged throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pre_vote_is_answered_as_a_vote_would_be_and_changes_nothing() {
    let mut c = TestCluster::start(3, no_tune).await;
    c.settled().await;
    let leader = c.leader().await;
    let f = c.follower().await;
    let other = *c.nodes.keys().find(|id| ![leader, f].contains(id)).unwrap();
    let term = metrics(&c, f).current_term;

    for to in [f, leader] {
        let r = pre_vote(&c, to, other, term + 1, last_log(&c, to)).await;
        assert!(
            !r.vote_granted,
            "member {to} would vote while the leader leads: {r:?}"
        );
    }

    // The follower alone: its leader lease runs out, and its own pre-votes reach no one.
    c.stop(other).await;
    c.stop(leader).await;
    let vote = metrics(&c, f).vote;
    let last = last_log(&c, f);
    let granted = wait_for(
        "the follower's leader lease to run out",
        Duration::from_secs(10),
        || {
            let c = &c;
            async move {
                let r = pre_vote(c, f, other, term + 1, last).await;
                r.vote_granted.then_some(r)
            }
        },
    )
    .await;
    assert_eq!(
        granted.vote, vote,
        "the answer carries the member's own vote"
    );
    let behind = pre_vote(&c, f, other, term + 1, None).await;
    assert!(
        !behind.vote_granted,
        "granted a candidate with an empty log: {behind:?}"
    );
    let now = metrics(&c, f);
    assert_eq!(now.vote, vote, "a pre-vote changed the member's vote");
    assert_eq!(now.current_term, term);
    c.shutdown().await;
}

/// The partition of the failover bench: a follower cut off for several election timeouts
/// campaigns (here: asks for pre-votes no one receives), and when the network heals the
/// leader is still the leader, in the same term. Without pre-vote the cut-off member raises
/// its term at each timeout, and its first answer after the heal deposes the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_and_back_leaves_the_leader_in_place() {
    let c = TestCluster::start(3, no_tune).await;
    c.settled().await;
    let leader = c.leader().await;
    let f = c.follower().await;
    let term = metrics(&c, leader).current_term;
    let pool = &c.nodes[&f].node.pool;
    let asked = pool.vote_requests();

    pool.isolate(true);
    // Three rounds of its campaign (each asks both peers): several election timeouts.
    wait_for(
        "three campaigns by the cut-off member",
        Duration::from_secs(20),
        || async { (pool.vote_requests() >= asked + 6).then_some(()) },
    )
    .await;
    let cut_off_term = metrics(&c, f).current_term;
    pool.isolate(false);

    // After the heal: a write through the cluster, and the member that was cut off has it,
    // so the leader of the day and that member have spoken since.
    c.client().put("after-heal", "yes").await.unwrap();
    let written = c
        .nodes
        .keys()
        .filter(|id| **id != f)
        .map(|id| c.last_log_index(*id))
        .max()
        .unwrap();
    c.wait_applied(f, written).await;

    let now = c.leader().await;
    assert_eq!(
        (now, metrics(&c, now).current_term),
        (leader, term),
        "the leader changed, or its term rose, when the cut-off member came back"
    );
    assert_eq!(
        cut_off_term, term,
        "the cut-off member raised its term while alone"
    );
    c.shutdown().await;
}
