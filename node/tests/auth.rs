//! API tokens, method by method. A cluster started with a token file forms (its members call
//! each other with the member token), refuses every method without a token or with an
//! unknown one (UNAUTHENTICATED), and gives each role exactly its calls (PERMISSION_DENIED
//! otherwise): read tokens read; admin tokens read and write but make no agent or Raft call
//! (strict file); `node <id>` tokens read and act as their own node's agent only; member
//! tokens do everything. A file without a member line keeps the old rules (admin does
//! everything). The Raft service's `Propose` refuses what only a leader proposes and input
//! the public API refuses. Health stays open.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use ballast_client::{Client, ClientConfig};
use ballast_node::types::{Command, CommandResult, Op};
use common::calls::{
    check_public, check_raft, contract, formed, methods, plain_channel, raft_client, raft_methods,
    raft_request, Kind, Rule,
};
use common::TestCluster;

const MEMBER: &str = "member-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";
const NODE2: &str = "node-2-token-0123456789";

fn tokens_at(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn with_strict_tokens(cfg: &mut ballast_node::Config) {
    cfg.token_file = Some(tokens_at("ballast-auth-strict.tokens"));
}

fn with_legacy_tokens(cfg: &mut ballast_node::Config) {
    cfg.token_file = Some(tokens_at("ballast-auth-legacy.tokens"));
}

fn with_propose_tokens(cfg: &mut ballast_node::Config) {
    cfg.token_file = Some(tokens_at("ballast-auth-propose.tokens"));
}

fn client(c: &TestCluster, token: Option<&str>) -> Client {
    let mut cfg = ClientConfig::new(c.addrs.values().cloned().collect());
    cfg.token = token.map(String::from);
    cfg.deadline = Duration::from_secs(5);
    Client::new(cfg)
}

/// Three members started with the token file `name` holding `text`, a client with `token`,
/// and the cluster's id once it has a leader.
async fn cluster(
    name: &str,
    text: String,
    tune: fn(&mut ballast_node::Config),
    token: &str,
) -> (TestCluster, Client, String) {
    std::fs::write(tokens_at(name), text).unwrap();
    let c = TestCluster::start(3, tune).await;
    let client = client(&c, Some(token));
    let id = formed(&client).await;
    (c, client, id)
}

/// Every method has a row (a method added without one fails here).
#[test]
fn every_contract_method_has_a_row() {
    let mut rows: Vec<String> = methods(1).iter().map(|r| r.0.to_string()).collect();
    rows.sort();
    assert_eq!(rows, contract(false), "one row per API method");
    let mut rows: Vec<String> = raft_methods().iter().map(|r| r.0.to_string()).collect();
    rows.sort();
    assert_eq!(rows, contract(true), "one row per Raft method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_tokens_give_each_role_exactly_its_calls() {
    let text =
        format!("# test tokens\nmember {MEMBER}\nadmin {ADMIN}\nread {READ}\nnode 2 {NODE2}\n");
    // The members form a cluster with the member token.
    let (c, _, cluster_id) = cluster(
        "ballast-auth-strict.tokens",
        text,
        with_strict_tokens,
        MEMBER,
    )
    .await;
    use tonic::Code::{PermissionDenied as Denied, Unauthenticated};
    let mut failures = Vec::new();
    let roles: [(&str, Option<&str>, Rule); 6] = [
        ("no token", None, |_| Err(Unauthenticated)),
        ("an unknown token", Some("not-a-token-0123456789"), |_| {
            Err(Unauthenticated)
        }),
        ("a read token", Some(READ), |k| match k {
            Kind::Read => Ok(()),
            _ => Err(Denied),
        }),
        // Not membership changes: a new member is sent the member token.
        ("an admin token", Some(ADMIN), |k| match k {
            Kind::Agent | Kind::Membership => Err(Denied),
            _ => Ok(()),
        }),
        // Node 2's token, for node 3: reads only.
        ("node 2's token", Some(NODE2), |k| match k {
            Kind::Read => Ok(()),
            _ => Err(Denied),
        }),
        ("a member token", Some(MEMBER), |_| Ok(())),
    ];
    for (who, token, rule) in roles {
        check_public(who, &client(&c, token), 3, rule, &mut failures).await;
    }
    // Node 2's token acts for node 2.
    check_public(
        "node 2's token",
        &client(&c, Some(NODE2)),
        2,
        |k| match k {
            Kind::Write | Kind::Membership => Err(Denied),
            _ => Ok(()),
        },
        &mut failures,
    )
    .await;
    // Raft: members only.
    let channel = plain_channel(&c.addrs[&1]).await;
    let addr = &channel;
    for (who, token, want) in [
        ("no token", None, Some(Unauthenticated)),
        ("a read token", Some(READ), Some(Denied)),
        ("an admin token", Some(ADMIN), Some(Denied)),
        ("node 2's token", Some(NODE2), Some(Denied)),
        ("a member token", Some(MEMBER), None),
    ] {
        check_raft(who, addr, &cluster_id, token, want, &mut failures).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A forwarded assignment, even with the member token, is refused (see the Propose test).
    let leader = c.leader().await;
    let assign = Op::AssignVip {
        vip: "v".into(),
        node: 2,
        epoch: 1,
    };
    let r = propose(&c.addrs[&leader], &cluster_id, MEMBER, assign).await;
    assert_eq!(r.unwrap_err().code(), Denied);

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

/// A file without a member line: admin tokens do what member tokens do (the rules before
/// member tokens), node tokens are still held to their node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legacy_tokens_let_admin_do_everything() {
    let text = format!("admin {ADMIN}\nread {READ}\nnode 2 {NODE2}\n");
    let (c, admin, cluster_id) = cluster(
        "ballast-auth-legacy.tokens",
        text,
        with_legacy_tokens,
        ADMIN,
    )
    .await;
    use tonic::Code::PermissionDenied as Denied;
    let mut failures = Vec::new();
    check_public("an admin token", &admin, 3, |_| Ok(()), &mut failures).await;
    check_public(
        "a read token",
        &client(&c, Some(READ)),
        3,
        |k| match k {
            Kind::Read => Ok(()),
            _ => Err(Denied),
        },
        &mut failures,
    )
    .await;
    check_public(
        "node 2's token",
        &client(&c, Some(NODE2)),
        3,
        |k| match k {
            Kind::Read => Ok(()),
            _ => Err(Denied),
        },
        &mut failures,
    )
    .await;
    let channel = plain_channel(&c.addrs[&1]).await;
    let addr = &channel;
    check_raft(
        "an admin token",
        addr,
        &cluster_id,
        Some(ADMIN),
        None,
        &mut failures,
    )
    .await;
    check_raft(
        "a read token",
        addr,
        &cluster_id,
        Some(READ),
        Some(Denied),
        &mut failures,
    )
    .await;
    check_raft(
        "node 2's token",
        addr,
        &cluster_id,
        Some(NODE2),
        Some(Denied),
        &mut failures,
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    c.shutdown().await;
}

/// Sends `op` to the Raft service's Propose at `addr` as a member would forward it.
async fn propose(
    addr: &str,
    cluster_id: &str,
    token: &str,
    op: Op,
) -> Result<Result<CommandResult, String>, tonic::Status> {
    let cmd = Command {
        request: None,
        now_ms: 0,
        op,
    };
    let req = raft_request(bincode::serialize(&cmd).unwrap(), Some(token), cluster_id);
    let resp = raft_client(addr).await.propose(req).await?.into_inner();
    let r: Result<CommandResult, ballast_node::member::network::ForwardError> =
        bincode::deserialize(&resp.payload).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(r.map_err(|e| format!("{e:?}")))
}

/// `Propose` carries other members' writes to the leader. With the member credential (here
/// a legacy file's admin token, which is what members call each other with), it must not
/// take what only the leader's own loops propose (an assignment that skips the lease wait),
/// nor input the public API refuses; an ordinary forwarded write still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn propose_refuses_what_only_a_leader_proposes_and_bad_input() {
    let text = format!("admin {ADMIN}\n");
    let (c, admin, cluster_id) = cluster(
        "ballast-auth-propose.tokens",
        text,
        with_propose_tokens,
        ADMIN,
    )
    .await;
    common::define_web_and_vip(&admin).await;
    let vip = || async {
        let s = admin.get_state(false).await.unwrap();
        let v = s.vips.iter().find(|v| v.name == "v").unwrap().clone();
        (v.owner, v.epoch)
    };
    let (owner, epoch) = vip().await;
    assert_eq!(owner, 0, "no agent runs: nobody may hold it");
    let leader = c.leader().await;
    let addr = &c.addrs[&leader];
    let lease = ballast_node::lease::LeaseSettings::from_config(&Default::default());
    let mut failures = Vec::new();
    for (what, op) in [
        (
            "AssignVip",
            Op::AssignVip {
                vip: "v".into(),
                node: 2,
                epoch: epoch + 1,
            },
        ),
        (
            "RevokeVip",
            Op::RevokeVip {
                vip: "v".into(),
                epoch,
            },
        ),
        (
            "SetNodeAlive",
            Op::SetNodeAlive {
                node_id: 2,
                alive: true,
            },
        ),
        (
            "BindAgent",
            Op::BindAgent {
                node_id: 2,
                instance: 7,
            },
        ),
        (
            "SetLease if_unset",
            Op::SetLease {
                settings: lease,
                if_unset: true,
            },
        ),
    ] {
        match propose(addr, &cluster_id, ADMIN, op).await {
            Err(s) if s.code() == tonic::Code::PermissionDenied => {}
            other => failures.push(format!("{what}: {other:?}")),
        }
    }
    for (what, op) in [
        (
            "a Put with an empty key",
            Op::Put {
                key: vec![],
                value: b"v".to_vec(),
            },
        ),
        (
            "a VIP with a bad address",
            Op::ApplyVip(ballast_node::model::Vip {
                name: "w".into(),
                address: "300.1.1.1/24".into(),
                interface: "eth0".into(),
                service: "web".into(),
                ..Default::default()
            }),
        ),
        (
            "a health report for node 0",
            Op::ReportHealth {
                node_id: 0,
                service: "web".into(),
                health: ballast_node::model::Health::Healthy,
            },
        ),
    ] {
        match propose(addr, &cluster_id, ADMIN, op).await {
            Err(s) if s.code() == tonic::Code::InvalidArgument => {}
            other => failures.push(format!("{what}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(vip().await, (0, epoch), "the VIP is still unowned");
    assert!(
        !admin
            .get_state(false)
            .await
            .unwrap()
            .vips
            .iter()
            .any(|v| v.name == "w"),
        "the bad VIP was not stored"
    );
    // An ordinary write forwarded the same way still goes through.
    let put = Op::Put {
        key: b"forwarded".to_vec(),
        value: b"yes".to_vec(),
    };
    propose(addr, &cluster_id, ADMIN, put)
        .await
        .expect("Propose answers")
        .expect("the leader applied it");
    let kv = admin.get("forwarded", false).await.unwrap().kv.unwrap();
    assert_eq!(kv.value, b"yes");
    c.shutdown().await;
}
