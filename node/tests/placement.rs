//! The controller on a real in-process cluster, with test agents that renew leases over gRPC:
//! placement, break-before-make drain, failover after lease expiry, and a leader change that
//! does not move a VIP whose owner keeps renewing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_client::{v1, Client, ClientConfig};
use common::{no_tune, wait_for, TestCluster};

/// Agents that do nothing but claim what the state assigns them, every 100 ms.
struct FakeAgents {
    running: Arc<Mutex<BTreeSet<u64>>>,
    granted: Arc<Mutex<BTreeMap<u64, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAgents {
    /// Like real agents, they retry quickly rather than back off for long: a new leader
    /// counts every lease from its election, and the owner must renew within that lease.
    fn start(endpoints: Vec<String>, nodes: &[u64]) -> Self {
        let mut cfg = ClientConfig::new(endpoints);
        cfg.attempt_timeout = Duration::from_millis(300);
        cfg.max_backoff = Duration::from_millis(50);
        cfg.deadline = Duration::from_secs(2);
        let client = Client::new(cfg);
        let running = Arc::new(Mutex::new(nodes.iter().copied().collect::<BTreeSet<u64>>()));
        let granted = Arc::new(Mutex::new(BTreeMap::new()));
        let (r, g) = (running.clone(), granted.clone());
        let task = tokio::spawn(async move {
            loop {
                let state = client.get_state(false).await.ok();
                let ids: Vec<u64> = r.lock().unwrap().iter().copied().collect();
                for id in ids {
                    let claims = common::claims_of(state.as_ref(), id);
                    if let Ok(resp) = client.renew(id, claims, vec![]).await {
                        let n = resp.grants.iter().filter(|g| g.granted).count() as u64;
                        *g.lock().unwrap().entry(id).or_default() += n;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        FakeAgents {
            running,
            granted,
            task,
        }
    }

    fn stop_agent(&self, id: u64) {
        self.running.lock().unwrap().remove(&id);
    }

    fn granted(&self, id: u64) -> u64 {
        self.granted.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

impl Drop for FakeAgents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn vip(client: &Client) -> v1::Vip {
    client.get_state(false).await.unwrap().vips[0].clone()
}

async fn wait_vip(client: &Client, what: &str, f: impl Fn(&v1::Vip) -> bool) -> v1::Vip {
    wait_for(what, Duration::from_secs(20), || async {
        let s = client.get_state(false).await.ok()?;
        s.vips.first().filter(|v| f(v)).cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_places_moves_and_fails_over_vips_by_lease() {
    let mut c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    common::define_web_and_vip(&client).await;
    // Nothing is healthy or alive yet: nothing is placed.
    assert_eq!(vip(&client).await.owner, 0);
    for id in 1..=3 {
        client
            .report_health(id, "web", v1::Health::Healthy)
            .await
            .unwrap();
    }
    let agents = FakeAgents::start(c.addrs.values().cloned().collect(), &[1, 2, 3]);

    // Placement at epoch 1 (on the lowest id that is not the leader: see the controller's
    // unit tests); only the owner gets grants.
    let v = wait_vip(&client, "placement", |v| v.owner != 0).await;
    assert_eq!(v.epoch, 1);
    let first = v.owner;
    let others: Vec<u64> = (1..=3).filter(|id| *id != first).collect();
    let claim = vec![v1::VipClaim {
        vip: "v".into(),
        epoch: 1,
    }];
    assert!(
        client
            .renew(first, claim.clone(), vec![])
            .await
            .unwrap()
            .grants[0]
            .granted
    );
    assert!(!client.renew(others[0], claim, vec![]).await.unwrap().grants[0].granted);

    // Drain: break before make. The owner is asked to release and keeps the VIP until it
    // confirms; then another node gets it at epoch 2.
    client
        .set_node_admin(first, v1::AdminState::Draining)
        .await
        .unwrap();
    let v = wait_vip(&client, "release requested", |v| v.releasing).await;
    assert_eq!(
        (v.owner, v.epoch),
        (first, 1),
        "nobody else is assigned before the release"
    );
    client.confirm_release(first, "v", 1).await.unwrap();
    let v = wait_vip(&client, "moved away", |v| v.owner != first).await;
    assert_eq!((v.epoch, v.releasing), (2, false));
    let second = v.owner;
    let third = 6 - first - second;

    // The second owner's agent dies: after its lease expires at the leader, the only other
    // active node takes over.
    agents.stop_agent(second);
    let v = wait_vip(&client, "failover to the third node", |v| v.owner == third).await;
    assert_eq!(v.epoch, 3);
    wait_for(
        "the dead agent's node marked down",
        Duration::from_secs(20),
        || async {
            let s = client.get_state(false).await.ok()?;
            s.nodes
                .iter()
                .find(|n| n.id == second)
                .filter(|n| !n.alive)
                .map(|_| ())
        },
    )
    .await;

    // The drained node is back in placement: the VIP stays where it is (sticky).
    client
        .set_node_admin(first, v1::AdminState::Active)
        .await
        .unwrap();

    // A leader change while node 3 keeps renewing does not move the VIP.
    let leader = c.leader().await;
    c.stop(leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    let before = agents.granted(third);
    wait_for(
        "the owner renewed with the new leader",
        Duration::from_secs(20),
        || async { (agents.granted(third) >= before + 10).then_some(()) },
    )
    .await;
    let v = vip(&client).await;
    assert_eq!(
        (v.owner, v.epoch),
        (third, 3),
        "no move, no new epoch across the leader change"
    );
    drop(agents);
    c.shutdown().await;
}

/// The interleaving that let an expired owner keep its VIP: the leader decides the lease of
/// (v, 1) is over and is about to propose the next owner; a renewal of (v, 1) arrives before
/// that commits. It must not be granted (the old owner would answer for a whole lease while
/// the new one takes over), and the new owner is assigned once the decision commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_grant_after_the_leader_decided_a_lease_is_over() {
    let c = TestCluster::start(1, no_tune).await;
    let client = c.client();
    // Nodes 2 and 3 are standalone agents (the member, node 1, backs nothing).
    common::standalone_healthy_backends(&client, &[2, 3]).await;
    let agents = FakeAgents::start(c.addrs.values().cloned().collect(), &[2, 3]);
    let v = wait_vip(&client, "placement on node 2", |v| v.owner == 2).await;
    assert_eq!(v.epoch, 1);
    wait_for("a grant to node 2", Duration::from_secs(10), || async {
        (agents.granted(2) > 0).then_some(())
    })
    .await;

    // Node 2's agent goes silent; the leader will decide its lease is over.
    let node = c.nodes[&1].node.clone();
    let point = node.failpoints.arm("controller.before_vip_decision");
    agents.stop_agent(2);
    tokio::time::timeout(Duration::from_secs(10), point.reached())
        .await
        .expect("the controller decided the lease of (v, 1) is over");
    // Decided, not yet proposed: node 2 renews (v, 1) now.
    let claim = vec![v1::VipClaim {
        vip: "v".into(),
        epoch: 1,
    }];
    let late = client.renew(2, claim.clone(), vec![]).await.unwrap();
    point.release();
    assert!(
        !late.grants[0].granted,
        "a renewal was granted after the leader decided the lease was over"
    );
    let v = wait_vip(&client, "the VIP moved to node 3", |v| v.owner == 3).await;
    assert_eq!(v.epoch, 2);
    let after = client.renew(2, claim, vec![]).await.unwrap();
    assert!(!after.grants[0].granted);
    drop(agents);
    c.shutdown().await;
}
