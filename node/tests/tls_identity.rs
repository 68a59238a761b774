//! Certificate identities, method by method. Members whose certificates name them
//! (`ballast://member/ID`) take Raft only from member certificates, agent calls for node N only
//! from a certificate naming `member/N` or `node/N`, writes from anyone but an agent-only
//! server's certificate, reads from all. A reload that turns the checks on leaves open
//! connections as they were (the members' Raft connections) and checks new ones.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ballast_client::certs::{self, Kind as CertKind};
use ballast_client::identity::CertIdentity;
use ballast_client::tls::ClientTls;
use ballast_client::{Client, ClientConfig, Error};
use ballast_node::tls::NodeTlsFiles;
use common::calls::{check_public, check_raft, formed, Kind};
use common::{wait_for, TestCluster};
use tonic::transport::Channel;

/// A fresh directory for one test's CA and certificates.
fn fresh_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const CHECKED: &str = "ballast-tls-identity-checked";
const ROTATED: &str = "ballast-tls-identity-rotated";

fn dir_of(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn issue(dir: &Path, name: &str, kind: CertKind, identity: Option<CertIdentity>) {
    let sans = match kind {
        CertKind::Node => vec!["127.0.0.1".to_string()],
        CertKind::Client => vec![],
    };
    certs::issue(dir, dir, name, &sans, kind, identity, 1).unwrap();
}

/// Member `id` serves with `<dir>/m<id>.pem`.
fn member_files(dir: &Path, id: u64) -> NodeTlsFiles {
    NodeTlsFiles {
        ca: dir.join(certs::CA_CERT),
        cert: dir.join(format!("m{id}.pem")),
        key: dir.join(format!("m{id}-key.pem")),
    }
}

fn with_checked_certs(cfg: &mut ballast_node::Config) {
    cfg.tls = Some(member_files(&dir_of(CHECKED), cfg.node_id));
}

fn with_rotated_certs(cfg: &mut ballast_node::Config) {
    cfg.tls = Some(member_files(&dir_of(ROTATED), cfg.node_id));
}

fn client_tls(dir: &Path, name: &str) -> Arc<ClientTls> {
    ClientTls::load(ballast_client::tls::TlsFiles {
        ca: dir.join(certs::CA_CERT),
        cert: Some(dir.join(format!("{name}.pem"))),
        key: Some(dir.join(format!("{name}-key.pem"))),
    })
    .unwrap()
}

fn client(c: &TestCluster, tls: &Arc<ClientTls>) -> Client {
    let mut cfg = ClientConfig::new(c.addrs.values().cloned().collect());
    cfg.tls = Some(tls.clone());
    cfg.deadline = Duration::from_secs(5);
    Client::new(cfg)
}

/// A new TLS connection to `addr` with `tls`'s certificate.
fn channel(addr: &str, tls: &Arc<ClientTls>) -> Channel {
    ballast_client::tls::lazy_channel(addr, Duration::from_secs(5), Some(tls)).unwrap()
}

async fn cluster_id(c: &TestCluster, tls: &Arc<ClientTls>) -> String {
    formed(&client(c, tls)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_name_who_may_speak_raft_and_act_as_an_agent() {
    let d = fresh_dir(CHECKED);
    certs::init_ca(&d, "test CA", 1).unwrap();
    for id in 1..=3 {
        let m = format!("m{id}");
        issue(&d, &m, CertKind::Node, Some(CertIdentity::Member(id)));
    }
    issue(&d, "n2", CertKind::Client, Some(CertIdentity::Node(2)));
    issue(&d, "ops", CertKind::Client, None);
    let c = TestCluster::start(3, with_checked_certs).await;
    let (ops, node2, member1) = (
        client_tls(&d, "ops"),
        client_tls(&d, "n2"),
        client_tls(&d, "m1"),
    );
    // The members formed a cluster with their member certificates.
    let cluster_id = cluster_id(&c, &ops).await;
    let mut failures = Vec::new();
    use tonic::Code::PermissionDenied as Denied;
    // (who, its certificate, about node, rule)
    let cases: [(&str, &Arc<ClientTls>, u64, common::calls::Rule); 5] = [
        ("an operator's certificate", &ops, 3, |k| match k {
            Kind::Agent => Err(Denied),
            _ => Ok(()),
        }),
        ("node 2's certificate", &node2, 3, |k| match k {
            Kind::Read => Ok(()),
            _ => Err(Denied),
        }),
        ("node 2's certificate", &node2, 2, |k| match k {
            Kind::Write | Kind::Membership => Err(Denied),
            _ => Ok(()),
        }),
        ("member 1's certificate", &member1, 3, |k| match k {
            Kind::Agent => Err(Denied),
            _ => Ok(()),
        }),
        ("member 1's certificate", &member1, 1, |_| Ok(())),
    ];
    for (who, tls, n, rule) in cases {
        check_public(who, &client(&c, tls), n, rule, &mut failures).await;
    }
    let addr = &c.addrs[&1];
    for (who, tls, want) in [
        ("an operator's certificate", &ops, Some(Denied)),
        ("node 2's certificate", &node2, Some(Denied)),
        ("member 1's certificate", &member1, None),
    ] {
        let ch = channel(addr, tls);
        check_raft(who, &ch, &cluster_id, None, want, &mut failures).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Node 2's certificate renews for node 2, and is told so for node 3.
    let n2 = client(&c, &node2);
    match n2.renew(3, vec![], vec![]).await {
        Err(Error::PermissionDenied(m)) => assert!(m.contains("node 2"), "{m}"),
        other => panic!("node 2's certificate renewing for node 3: {other:?}"),
    }
    wait_for("a renewal for node 2", Duration::from_secs(10), || async {
        n2.renew(2, vec![], vec![]).await.ok()
    })
    .await;
    c.shutdown().await;
}

/// The rotation the README describes: members without identities, then identity
/// certificates moved in and every member reloaded. Connections accepted before the reload
/// carry on (the members' own Raft connections among them: the cluster keeps committing),
/// new ones are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_turns_checks_on_for_new_connections() {
    let d = fresh_dir(ROTATED);
    certs::init_ca(&d, "test CA", 1).unwrap();
    for id in 1..=3 {
        issue(&d, &format!("m{id}"), CertKind::Node, None);
    }
    issue(&d, "ops", CertKind::Client, None);
    let c = TestCluster::start(3, with_rotated_certs).await;
    let ops = client_tls(&d, "ops");
    let cluster_id = cluster_id(&c, &ops).await;
    let addr = &c.addrs[&1];
    let old = channel(addr, &ops);
    let mut failures = Vec::new();
    check_raft("ops before", &old, &cluster_id, None, None, &mut failures).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Identity certificates replace the plain ones; every member reloads.
    let new = d.join("new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::copy(d.join(certs::CA_CERT), new.join(certs::CA_CERT)).unwrap();
    std::fs::copy(d.join(certs::CA_KEY), new.join(certs::CA_KEY)).unwrap();
    for id in 1..=3 {
        issue(
            &new,
            &format!("m{id}"),
            CertKind::Node,
            Some(CertIdentity::Member(id)),
        );
        for f in [format!("m{id}.pem"), format!("m{id}-key.pem")] {
            std::fs::rename(new.join(&f), d.join(&f)).unwrap();
        }
    }
    for h in c.nodes.values() {
        let tls = h.node.tls.as_ref().unwrap();
        assert!(!tls.checks_identities());
        tls.reload().unwrap();
        assert!(tls.checks_identities());
    }
    // The connection opened before carries on; a new one is checked.
    check_raft(
        "ops, open before",
        &old,
        &cluster_id,
        None,
        None,
        &mut failures,
    )
    .await;
    let fresh = channel(addr, &ops);
    let denied = Some(tonic::Code::PermissionDenied);
    check_raft("ops, new", &fresh, &cluster_id, None, denied, &mut failures).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Raft goes on: a write commits on every member.
    let cl = client(&c, &ops);
    let r = cl.put("after-reload", "v").await.unwrap();
    let index = r.header.unwrap().revision;
    assert!(index > 0);
    for id in 1..=3 {
        let h = &c.nodes[&id];
        wait_for(
            "every member to apply the write",
            Duration::from_secs(10),
            || async {
                let data = h.node.sm.read();
                data.kv
                    .contains_key(b"after-reload".as_slice())
                    .then_some(())
            },
        )
        .await;
    }
    c.shutdown().await;
}
