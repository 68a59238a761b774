//! An in-process cluster of real members on loopback port 0, for integration tests.
#![allow(dead_code)]

pub mod calls;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ballast_client::{Client, ClientConfig};
use ballast_node::config::Config;
use ballast_node::NodeHandle;
use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, NodeHandle>,
    pub addrs: BTreeMap<u64, String>,
    pub tune: fn(&mut Config),
}

pub fn no_tune(_: &mut Config) {}

/// Polls `f` until it returns Some, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestCluster {
    /// Starts `n` voters that form a new cluster.
    pub async fn start(n: u64, tune: fn(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, l);
        }
        let addrs: BTreeMap<u64, String> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap().to_string()))
            .collect();
        let mut c = TestCluster {
            dir,
            nodes: BTreeMap::new(),
            addrs: addrs.clone(),
            tune,
        };
        for (id, l) in listeners {
            let mut cfg = c.config(id);
            cfg.initial_cluster = addrs.clone();
            let h = ballast_node::start(cfg, l, None).await.unwrap();
            c.nodes.insert(id, h);
        }
        c
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn config(&self, id: u64) -> Config {
        let mut cfg = Config::for_test(id, self.data_dir(id));
        (self.tune)(&mut cfg);
        cfg
    }

    /// Starts a fresh node that belongs to no cluster yet (to be added as a learner).
    pub async fn start_fresh(&mut self, id: u64) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = ballast_node::start(self.config(id), l, None).await.unwrap();
        self.nodes.insert(id, h);
        self.addrs.insert(id, addr.clone());
        addr
    }

    /// Stops a member (its data stays).
    pub async fn stop(&mut self, id: u64) {
        let h = self.nodes.remove(&id).expect("running node");
        h.shutdown().await;
    }

    /// Restarts a stopped member on its old address and data directory.
    pub async fn restart(&mut self, id: u64) {
        let addr = self.addrs[&id].clone();
        let l = wait_for("the old port to be free", Duration::from_secs(10), || {
            let addr = addr.clone();
            async move { TcpListener::bind(&addr).await.ok() }
        })
        .await;
        let mut cfg = self.config(id);
        cfg.initial_cluster = self.addrs.clone();
        let h = ballast_node::start(cfg, l, None).await.unwrap();
        self.nodes.insert(id, h);
    }

    /// Waits until every running member agrees on one leader, and returns it.
    pub async fn leader(&self) -> u64 {
        wait_for("an agreed leader", Duration::from_secs(20), || async {
            let mut seen = None;
            for (id, h) in &self.nodes {
                let m = h.node.raft.metrics().borrow_watched().clone();
                if m.membership_config.membership().get_node(id).is_none() {
                    continue; // not a member yet
                }
                match (m.current_leader, seen) {
                    (None, _) => return None,
                    (Some(l), None) => seen = Some(l),
                    (Some(l), Some(s)) if l != s => return None,
                    _ => {}
                }
            }
            seen.filter(|l| self.nodes.contains_key(l))
        })
        .await
    }

    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        *self.nodes.keys().find(|id| **id != leader).unwrap()
    }

    /// A client given every member's address.
    pub fn client(&self) -> Client {
        Client::new(ClientConfig::new(self.addrs.values().cloned().collect()))
    }

    /// Waits until the first leader has written the cluster's lease settings: the only write
    /// a new cluster makes by itself, so tests that compare revisions start after it.
    pub async fn settled(&self) {
        let client = self.client();
        wait_for(
            "the cluster's lease settings",
            Duration::from_secs(20),
            || {
                let client = client.clone();
                async move {
                    let st = client.get_state(false).await.ok()?;
                    st.lease.map(|_| ())
                }
            },
        )
        .await
    }

    /// A client given only the listed members.
    pub fn client_of(&self, ids: &[u64]) -> Client {
        Client::new(ClientConfig::new(
            ids.iter().map(|i| self.addrs[i].clone()).collect(),
        ))
    }

    /// A client of member `id` that stays there: it does not move to the leader its answers
    /// name, so a serializable read shows that member's own state.
    pub fn client_pinned(&self, id: u64) -> Client {
        let mut cfg = ClientConfig::new(vec![self.addrs[&id].clone()]);
        cfg.follow_leader_hints = false;
        Client::new(cfg)
    }

    /// Waits until member `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) {
        let h = &self.nodes[&id];
        h.node
            .raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(index), "test")
            .await
            .unwrap();
    }

    pub fn applied(&self, id: u64) -> u64 {
        self.nodes[&id]
            .node
            .raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0)
    }

    /// Member `id`'s last log index.
    pub fn last_log_index(&self, id: u64) -> u64 {
        self.nodes[&id]
            .node
            .raft
            .metrics()
            .borrow_watched()
            .last_log_index
            .unwrap_or(0)
    }

    pub async fn shutdown(self) {
        for (_, h) in self.nodes {
            h.shutdown().await;
        }
    }
}

/// Defines service "web" (tcp check on port 80, backends 1..=3) and VIP "v" at
/// 10.213.0.100/24 on eth0 for it.
pub async fn define_web_and_vip(client: &Client) {
    define_web_and_vip_on(client, &[1, 2, 3]).await
}

/// Like [`define_web_and_vip`], with the given backends.
pub async fn define_web_and_vip_on(client: &Client, backends: &[u64]) {
    use ballast_client::v1;
    let svc = v1::Service {
        name: "web".into(),
        check: Some(v1::HealthCheck {
            kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 80 })),
            ..Default::default()
        }),
        backends: backends
            .iter()
            .map(|i| (*i, v1::Backend::default()))
            .collect(),
        ..Default::default()
    };
    client.apply_service(svc).await.unwrap();
    client
        .apply_vip(v1::Vip {
            name: "v".into(),
            address: "10.213.0.100/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Registers standalone agents `ids` (no agent process: instance 0), makes them the backends
/// of service "web" with VIP "v" (see [`define_web_and_vip`]) and reports them healthy.
pub async fn standalone_healthy_backends(client: &Client, ids: &[u64]) {
    use ballast_client::v1;
    for id in ids {
        client
            .register_agent(*id, &format!("10.213.0.{id}:7400"), false)
            .await
            .unwrap();
    }
    define_web_and_vip_on(client, ids).await;
    for id in ids {
        client
            .report_health(*id, "web", v1::Health::Healthy)
            .await
            .unwrap();
    }
}

/// What node `id` claims from `state`: every VIP it owns, at its epoch.
pub fn claims_of(
    state: Option<&ballast_client::v1::GetStateResponse>,
    id: u64,
) -> Vec<ballast_client::v1::VipClaim> {
    state
        .iter()
        .flat_map(|s| s.vips.iter())
        .filter(|v| v.owner == id)
        .map(|v| ballast_client::v1::VipClaim {
            vip: v.name.clone(),
            epoch: v.epoch,
        })
        .collect()
}
