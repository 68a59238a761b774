//! API tokens, method by method: a cluster started with a token file forms (its members call
//! each other with the peer token), refuses every API method without a token or with an
//! unknown one (UNAUTHENTICATED), lets a read token read and refuses it every write
//! (PERMISSION_DENIED), and lets an admin token do everything. Health stays open.

mod common;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use ballast_client::{v1, Client, ClientConfig, Error};
use common::{wait_for, TestCluster};

const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";

fn token_file() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ballast-auth-test.tokens")
}

fn with_tokens(cfg: &mut ballast_node::Config) {
    cfg.token_file = Some(token_file());
}

type Call = Box<dyn Fn(Client) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>>;

macro_rules! call {
    ($c:ident => $e:expr) => {
        Box::new(|$c: Client| Box::pin(async move { $e.await.map(|_| ()) }))
    };
}

/// Every API method: (name, changes the cluster, a call of it).
fn methods() -> Vec<(&'static str, bool, Call)> {
    vec![
        ("Cluster.Status", false, call!(c => c.status())),
        (
            "Cluster.AddLearner",
            true,
            call!(c => c.add_learner(9, "127.0.0.1:1", false)),
        ),
        ("Cluster.PromoteVoter", true, call!(c => c.promote_voter(9))),
        ("Cluster.RemoveNode", true, call!(c => c.remove_node(9))),
        ("Cluster.Snapshot", true, call!(c => c.snapshot())),
        ("KV.Get", false, call!(c => c.get("k", false))),
        ("KV.Range", false, call!(c => c.range("", 10, false))),
        ("KV.Put", true, call!(c => c.put("k", "v"))),
        (
            "KV.CompareAndSet",
            true,
            call!(c => c.compare_and_set(
                "k",
                v1::compare_and_set_request::Expected::ExpectedValue(b"v".to_vec()),
                "w",
            )),
        ),
        ("KV.Delete", true, call!(c => c.delete("nothing", false))),
        (
            "Watch.Watch",
            false,
            Box::new(|c: Client| {
                Box::pin(async move {
                    let mut w = c.watch(v1::WatchRequest {
                        key_prefixes: vec![b"k".to_vec()],
                        cluster_state: false,
                        start_revision: 1,
                    });
                    match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
                        Ok(Err(e)) => Err(e),
                        _ => Ok(()),
                    }
                })
            }),
        ),
        ("State.GetState", false, call!(c => c.get_state(false))),
        (
            "State.ApplyService",
            true,
            call!(c => c.apply_service(v1::Service {
                name: "web".into(),
                check: Some(v1::HealthCheck {
                    kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 80 })),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        ),
        (
            "State.DeleteService",
            true,
            call!(c => c.delete_service("none")),
        ),
        (
            "State.ApplyVip",
            true,
            call!(c => c.apply_vip(v1::Vip {
                name: "v".into(),
                address: "10.213.0.100/24".into(),
                interface: "eth0".into(),
                service: "none".into(),
                ..Default::default()
            })),
        ),
        ("State.DeleteVip", true, call!(c => c.delete_vip("none"))),
        (
            "State.SetNodeAdmin",
            true,
            call!(c => c.set_node_admin(1, v1::AdminState::Active)),
        ),
        ("State.MoveVip", true, call!(c => c.move_vip("none", 1))),
        (
            "State.RegisterRelease",
            true,
            call!(c => c.register_release("none", "r1", "/nothing", &"0".repeat(64))),
        ),
        (
            "State.StartRollout",
            true,
            call!(c => c.start_rollout(v1::StartRolloutRequest {
                service: "none".into(),
                release: "r1".into(),
                ..Default::default()
            })),
        ),
        (
            "State.ControlRollout",
            true,
            call!(c => c.control_rollout("none", v1::RolloutControl::Pause)),
        ),
        ("State.Rollback", true, call!(c => c.rollback("none", ""))),
        ("State.ForgetNode", true, call!(c => c.forget_node(9))),
        (
            "State.SetLease",
            true,
            call!(c => c.set_lease(v1::LeaseSettings::default())),
        ),
        ("Agent.Renew", true, call!(c => c.renew(1, vec![], vec![]))),
        (
            "Agent.ReportHealth",
            true,
            call!(c => c.report_health(1, "none", v1::Health::Healthy)),
        ),
        (
            "Agent.ConfirmRelease",
            true,
            call!(c => c.confirm_release(1, "none", 1)),
        ),
        (
            "Agent.ReportRelease",
            true,
            call!(c => c.report_release(v1::ReportReleaseRequest::default())),
        ),
        (
            "Agent.Register",
            true,
            call!(c => c.register_agent(9, "127.0.0.1:1", false)),
        ),
        ("Agent.Leases", false, call!(c => c.leases())),
    ]
}

fn client(c: &TestCluster, token: Option<&str>) -> Client {
    let mut cfg = ClientConfig::new(c.addrs.values().cloned().collect());
    cfg.token = token.map(String::from);
    cfg.deadline = Duration::from_secs(5);
    Client::new(cfg)
}

fn is_auth(e: &Error) -> bool {
    matches!(e, Error::Unauthenticated(_) | Error::PermissionDenied(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_method_checks_the_token_and_its_role() {
    std::fs::write(
        token_file(),
        format!("# test tokens\nadmin {ADMIN}\nread {READ}\n"),
    )
    .unwrap();
    let c = TestCluster::start(3, with_tokens).await;
    let admin = client(&c, Some(ADMIN));
    // The members formed a cluster with each other's peer token.
    wait_for("a leader", Duration::from_secs(20), || async {
        admin.status().await.ok().filter(|s| s.leader_id != 0)
    })
    .await;
    let (none, unknown, read) = (
        client(&c, None),
        client(&c, Some("not-a-token-0123456789")),
        client(&c, Some(READ)),
    );
    let table = methods();
    // One row per public method of the contract: a method added without a row fails here.
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(v1::FILE_DESCRIPTOR_SET)
        .unwrap();
    let mut contract: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "ballast.v1")
        .flat_map(|f| &f.service)
        .filter(|s| s.name() != "RaftService")
        .flat_map(|s| {
            s.method
                .iter()
                .map(move |m| format!("{}.{}", s.name(), m.name()))
        })
        .collect();
    contract.sort();
    let mut rows: Vec<String> = table.iter().map(|r| r.0.to_string()).collect();
    rows.sort();
    assert_eq!(rows, contract, "one row per API method");
    let mut failures = Vec::new();
    for (name, write, call) in &table {
        match call(none.clone()).await {
            Err(Error::Unauthenticated(_)) => {}
            other => failures.push(format!("{name} without a token: {other:?}")),
        }
        match call(unknown.clone()).await {
            Err(Error::Unauthenticated(_)) => {}
            other => failures.push(format!("{name} with an unknown token: {other:?}")),
        }
        match (call(read.clone()).await, write) {
            (Err(Error::PermissionDenied(_)), true) => {}
            (Err(e), false) if is_auth(&e) => {
                failures.push(format!("{name} refused to a read token: {e}"))
            }
            (Err(_) | Ok(()), false) => {}
            (other, true) => failures.push(format!("{name} with a read token: {other:?}")),
        }
        if let Err(e) = call(admin.clone()).await {
            if is_auth(&e) {
                failures.push(format!("{name} refused to an admin token: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Health stays open (load balancers probe it without a token).
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", c.addrs[&1]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest {
        service: "ballast.v1.KV".into(),
    })
    .await
    .unwrap();
    c.shutdown().await;
}
