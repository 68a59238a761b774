//! Review: interleavings of the lease protocol that the existing tests do not drive.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_client::{v1, Client, ClientConfig};
use common::{no_tune, wait_for, TestCluster};
use openraft::async_runtime::WatchReceiver;

/// Test agents for standalone nodes 4 and 5: every 50 ms each claims what the state gives it.
/// Node 4 can be silenced; the last time node 4 was granted its VIP is kept.
struct Agents {
    four_renews: Arc<AtomicBool>,
    four_granted_at: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Agents {
    fn start(endpoints: Vec<String>) -> Self {
        let mut cfg = ClientConfig::new(endpoints);
        cfg.attempt_timeout = Duration::from_millis(300);
        cfg.max_backoff = Duration::from_millis(50);
        cfg.deadline = Duration::from_secs(2);
        let client = Client::new(cfg);
        let four_renews = Arc::new(AtomicBool::new(true));
        let four_granted_at = Arc::new(Mutex::new(None));
        let (r, g) = (four_renews.clone(), four_granted_at.clone());
        let task = tokio::spawn(async move {
            loop {
                let state = client.get_state(false).await.ok();
                for id in [4u64, 5] {
                    if id == 4 && !r.load(Ordering::SeqCst) {
                        continue;
                    }
                    let claims = common::claims_of(state.as_ref(), id);
                    let sent = Instant::now();
                    if let Ok(resp) = client.renew(id, claims, vec![]).await {
                        if id == 4 && resp.grants.iter().any(|g| g.granted) {
                            *g.lock().unwrap() = Some(sent);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Agents {
            four_renews,
            four_granted_at,
            task,
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn leader_and_term(c: &TestCluster, id: u64) -> (Option<u64>, u64) {
    let m = c.nodes[&id].node.raft.metrics().borrow_watched().clone();
    (m.current_leader, m.current_term)
}

/// Review finding: the controller proposes the decisions of one tick one after the other
/// without checking that it still leads the term it decided in. A decision taken in term T
/// ("the lease of (v, 1) is over": node 4 was silent) is proposed after the member lost and
/// regained the leadership (term T' > T). In T' its lease book is new: it counts every lease
/// from its election and has forgotten the decision, so node 4, back, is granted (v, 1) for a
/// full lease; then the decision of T commits and node 5 takes the VIP while node 4 still
/// holds that grant. In production the first proposal of the tick (another VIP's assignment,
/// a node's liveness) is what spans the re-election: openraft keeps a deposed leader's
/// proposal pending until the next leader commits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_decision_of_an_earlier_term_is_not_proposed_in_a_later_one() {
    let c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    common::standalone_healthy_backends(&client, &[4, 5]).await;
    let agents = Agents::start(c.addrs.values().cloned().collect());
    wait_for("v placed on node 4", Duration::from_secs(20), || async {
        let s = client.get_state(false).await.ok()?;
        s.vips.first().filter(|v| v.owner == 4).map(|_| ())
    })
    .await;
    wait_for("a grant to node 4", Duration::from_secs(10), || async {
        agents.four_granted_at.lock().unwrap().map(|_| ())
    })
    .await;

    // Node 4 falls silent; the leader decides its lease is over and stops before proposing.
    let l = c.leader().await;
    let point = c.nodes[&l]
        .node
        .failpoints
        .arm("controller.before_vip_decision");
    agents.four_renews.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), point.reached())
        .await
        .expect("the controller decided the lease of (v, 1) is over");
    let (_, decided_in) = leader_and_term(&c, l);
    // Node 4 is back.
    agents.four_renews.store(true, Ordering::SeqCst);

    // The member loses the leadership and wins it again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (leader, term) = leader_and_term(&c, l);
        if leader == Some(l) && term > decided_in {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member {l} did not lead again after term {decided_in} (now {leader:?} in {term})"
        );
        // openraft 0.10 members with a valid leader lease refuse an ordinary election, so
        // the leader hands over: from `l` to another member, then back to `l`.
        match leader {
            Some(now) => {
                let to = if now == l {
                    *c.nodes.keys().find(|id| **id != l).unwrap()
                } else {
                    l
                };
                let _ = c.nodes[&now].node.raft.trigger().transfer_leader(to).await;
            }
            None => {
                let _ = c.nodes[&l].node.raft.trigger().elect(false).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // Node 4 renews with the member in its new term (today it is granted; a member that
    // refused it would be safe too, so its absence is no failure).
    let now_leading = Instant::now();
    while now_leading.elapsed() < Duration::from_secs(3) {
        if agents
            .four_granted_at
            .lock()
            .unwrap()
            .is_some_and(|t| t > now_leading)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The decision of the earlier term goes on.
    point.release();
    let watch_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < watch_until {
        let Ok(s) = client.get_state(false).await else {
            continue;
        };
        let v = s.vips[0].clone();
        if v.owner != 4 {
            let granted = agents.four_granted_at.lock().unwrap().expect("granted");
            let since = granted.elapsed();
            assert!(
                since >= Duration::from_millis(780),
                "VIP v moved to node {} (epoch {}) {since:?} after node 4 was granted (v, 1) \
                 by member {l} in its new term: a decision of term {decided_in} was proposed \
                 in a later term",
                v.owner,
                v.epoch
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(agents);
    c.shutdown().await;
}

/// Review finding: `Register` checks on the leader that the node's bound agent process holds
/// no lease any more (`LeaseBook::begin_rebind`), then writes `BindAgent` through
/// `Node::propose`, which forwards the write to the next leader when this member lost the
/// leadership in between (`node.rs`, `propose`). The next leader applies the binding without
/// that check, although it may have granted the old process a lease since its election (the
/// old process was cut off at the first leader, and came back right after the change). Then
/// both processes (two agents started with one node id, on two servers) hold the VIP. The test
/// takes the forward path directly: a follower proposes the binding a deposed leader would
/// forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn review_a_forwarded_binding_skips_the_lease_check() {
    let c = TestCluster::start(3, no_tune).await;
    let endpoints: Vec<String> = c.addrs.values().cloned().collect();
    let agent = |instance: u64| {
        let mut cfg = ClientConfig::new(endpoints.clone());
        cfg.agent_instance = instance;
        Client::new(cfg)
    };
    let (a, b) = (agent(0xa), agent(0xb));
    // Process A is node 4's agent.
    a.register_agent(4, "10.213.0.4:7400", false).await.unwrap();
    let admin = c.client();
    common::define_web_and_vip_on(&admin, &[4]).await;
    a.report_health(4, "web", v1::Health::Healthy)
        .await
        .unwrap();
    // A renews (with nothing to claim yet): node 4 is heard, so alive, and gets the VIP.
    wait_for("v placed on node 4", Duration::from_secs(20), || async {
        let _ = a.renew(4, vec![], vec![]).await;
        let s = admin.get_state(false).await.ok()?;
        s.vips.first().filter(|v| v.owner == 4).map(|_| ())
    })
    .await;
    let claim = || {
        vec![v1::VipClaim {
            vip: "v".into(),
            epoch: 1,
        }]
    };
    let a_sent = Instant::now();
    let a_resp = a.renew(4, claim(), vec![]).await.unwrap();
    assert!(a_resp.grants[0].granted, "process A holds (v, 1)");

    // Process B's binding reaches the leader forwarded, as from a deposed leader.
    let f = c.follower().await;
    let op = ballast_node::types::Op::BindAgent {
        node_id: 4,
        instance: 0xb,
    };
    // Refused (a leader's decision is never forwarded), or applied without effect on what
    // process A holds: either way B must not be granted while A may hold (v, 1).
    let forwarded = c.nodes[&f].node.propose(None, op).await;
    assert!(
        forwarded.is_err(),
        "a forwarded binding was accepted: {forwarded:?}"
    );
    let b_resp = b.renew(4, claim(), vec![]).await.unwrap();
    let since_a = a_sent.elapsed();
    assert!(
        !(b_resp.grants[0].granted && since_a < Duration::from_millis(780)),
        "process B was granted (v, 1) {since_a:?} after process A was: two processes of node \
         4 hold the VIP at once"
    );
    c.shutdown().await;
}
