//! Multi-member behaviour in one process: real members on loopback port 0, real gRPC.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use ballast_client::{v1, Error};
use common::{no_tune, wait_for, TestCluster};
use openraft::async_runtime::WatchReceiver;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elects_a_leader_and_serves_linearizable_reads_everywhere() {
    let c = TestCluster::start(3, no_tune).await;
    let leader = c.leader().await;
    let client = c.client();
    let put = client.put("greeting", "hello").await.unwrap();
    let rev = put.header.unwrap().revision;
    assert!(rev >= 1);
    // A linearizable read through each member (followers use the leader's read index).
    for id in c.nodes.keys() {
        let r = c.client_of(&[*id]).get("greeting", false).await.unwrap();
        let kv = r.kv.expect("key visible on every member");
        assert_eq!(kv.value, b"hello");
        assert_eq!(kv.mod_revision, rev);
        assert!(r.header.unwrap().revision >= rev);
    }
    let s = c.client_of(&[leader]).status().await.unwrap();
    assert_eq!(s.leader_id, leader);
    assert_eq!(s.raft_state, "leader");
    assert_eq!(s.members.len(), 3);
    assert!(s.commit_index >= s.applied_index.min(s.commit_index));
    assert!(s.cluster_id.starts_with("ballast-"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_loss_elects_a_new_leader_and_keeps_data() {
    let mut c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    for i in 0..10 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    let old = c.leader().await;
    c.stop(old).await;
    let new = c.leader().await;
    assert_ne!(new, old);
    client.put("after", "failover").await.unwrap();
    let r = client.range("k", 0, false).await.unwrap();
    assert_eq!(r.kvs.len(), 10);
    assert_eq!(
        client.get("after", false).await.unwrap().kv.unwrap().value,
        b"failover"
    );
    c.shutdown().await;
}

/// The leadership hand-over (`leader/handover.rs`) goes through openraft's transfer: the
/// leader names a follower, every voter hears it through the TransferLeader RPC, and the
/// named member leads next, with every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leadership_transfer_makes_the_named_member_leader() {
    let c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    for i in 0..10 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    let old = c.leader().await;
    let to = c.follower().await;
    let term = c.nodes[&old]
        .node
        .raft
        .metrics()
        .borrow_watched()
        .current_term;
    c.nodes[&old]
        .node
        .raft
        .trigger()
        .transfer_leader(to)
        .await
        .unwrap();
    wait_for(
        "the named member to lead",
        Duration::from_secs(10),
        || async {
            let m = c.nodes[&to].node.raft.metrics().borrow_watched().clone();
            (m.current_leader == Some(to) && m.current_term > term).then_some(())
        },
    )
    .await;
    assert_eq!(c.leader().await, to);
    client.put("after", "transfer").await.unwrap();
    let r = client.range("k", 0, false).await.unwrap();
    assert_eq!(r.kvs.len(), 10);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_member_resumes_from_its_data_and_catches_up() {
    let mut c = TestCluster::start(3, no_tune).await;
    let client = c.client();
    client.put("before", "1").await.unwrap();
    let f = c.follower().await;
    c.stop(f).await;
    for i in 0..50 {
        client.put(format!("during/{i}"), "x").await.unwrap();
    }
    let leader = c.leader().await;
    let target = c.applied(leader);
    c.restart(f).await;
    c.wait_applied(f, target).await;
    let r = c.client_of(&[f]).range("during/", 0, true).await.unwrap();
    assert_eq!(r.kvs.len(), 50, "serializable read on the restarted member");
    assert!(c
        .client_of(&[f])
        .get("before", true)
        .await
        .unwrap()
        .kv
        .is_some());
    c.shutdown().await;
}

fn small_snapshots(cfg: &mut ballast_node::Config) {
    cfg.snapshot_logs = 20;
    cfg.keep_logs = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_member_receives_a_snapshot_then_joins_and_leaves() {
    let mut c = TestCluster::start(3, small_snapshots).await;
    let client = c.client();
    for i in 0..100 {
        client
            .put(format!("k/{i:03}"), format!("v{i}"))
            .await
            .unwrap();
    }
    let leader = c.leader().await;
    // The leader has compacted its log: a new member can only start from a snapshot.
    wait_for(
        "leader to purge its log",
        Duration::from_secs(10),
        || async {
            let m = c.nodes[&leader]
                .node
                .raft
                .metrics()
                .borrow_watched()
                .clone();
            m.purged.filter(|p| p.index > 20).map(|_| ())
        },
    )
    .await;

    let addr = c.start_fresh(4).await;
    // Added through a follower: the request is forwarded to the leader.
    let f = c.follower().await;
    let r = c.client_of(&[f]).add_learner(4, &addr, true).await.unwrap();
    assert!(r
        .members
        .iter()
        .any(|m| m.id == 4 && m.role == v1::Role::Learner as i32));
    let target = c.applied(leader);
    c.wait_applied(4, target).await;
    let m4 = c.nodes[&4].node.raft.metrics().borrow_watched().clone();
    assert!(m4.snapshot.is_some(), "node 4 was brought up by a snapshot");
    let r = c.client_of(&[4]).range("k/", 0, true).await.unwrap();
    assert_eq!(r.kvs.len(), 100);
    assert_eq!(r.kvs[42].value, b"v42");
    // The cluster-state node records follow membership.
    let st = client.get_state(false).await.unwrap();
    assert!(st
        .nodes
        .iter()
        .any(|n| n.id == 4 && n.role == v1::Role::Learner as i32));

    client.promote_voter(4).await.unwrap();
    // Status is the answering member's view: wait until it has applied the change.
    wait_for("4 voters in status", Duration::from_secs(10), || async {
        let s = client.status().await.ok()?;
        let voters: BTreeSet<u64> = s
            .members
            .iter()
            .filter(|m| m.role == v1::Role::Voter as i32)
            .map(|m| m.id)
            .collect();
        (voters == BTreeSet::from([1, 2, 3, 4])).then_some(())
    })
    .await;

    client.remove_node(4).await.unwrap();
    wait_for(
        "node 4 gone from status",
        Duration::from_secs(10),
        || async {
            let s = client.status().await.ok()?;
            s.members.iter().all(|m| m.id != 4).then_some(())
        },
    )
    .await;
    // The node records follow (a linearizable read of the state).
    let st = client.get_state(false).await.unwrap();
    assert!(st.nodes.iter().all(|n| n.id != 4));
    // Removing an unknown node is refused with the field named.
    match client.remove_node(9).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("node_id"), "{m}"),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_a_follower_are_forwarded_to_the_leader() {
    let c = TestCluster::start(3, no_tune).await;
    let f = c.follower().await;
    let client = c.client_of(&[f]);
    client.put("via-follower", "ok").await.unwrap();
    // The follower's answer named the leader: the client goes there from now on.
    let leader = c.leader().await;
    assert_eq!(client.preferred_endpoint(), c.addrs[&leader]);
    // A fresh client's compare-and-set is forwarded too.
    let cas = c
        .client_of(&[f])
        .compare_and_set(
            "via-follower",
            v1::compare_and_set_request::Expected::ExpectedValue(b"ok".to_vec()),
            "ok2",
        )
        .await
        .unwrap();
    assert!(cas.succeeded);
    let r = c
        .client_of(&[leader])
        .get("via-follower", false)
        .await
        .unwrap();
    assert_eq!(r.kv.unwrap().value, b"ok2");
    // The follower's answer names the leader in its header.
    let g = c.client_of(&[f]).get("via-follower", false).await.unwrap();
    let h = g.header.unwrap();
    assert_eq!((h.member_id, h.leader_id), (f, leader));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_fails_over_across_endpoints() {
    let mut c = TestCluster::start(3, no_tune).await;
    // The first endpoint never answers; the client must move on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut endpoints = vec![dead];
    endpoints.extend(c.addrs.values().cloned());
    let client = ballast_client::Client::new(ballast_client::ClientConfig::new(endpoints));
    client.put("a", "1").await.unwrap();
    // Now stop the member the client uses (the leader it found) and keep going.
    let leader = c.leader().await;
    let _ = client.find_leader().await;
    assert_eq!(client.preferred_endpoint(), c.addrs[&leader]);
    c.stop(leader).await;
    client.put("b", "2").await.unwrap();
    assert_eq!(
        client.get("a", false).await.unwrap().kv.unwrap().value,
        b"1"
    );
    assert_ne!(client.preferred_endpoint(), c.addrs[&leader]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_resumes_after_losing_its_member_without_gap_or_duplicate() {
    let mut c = TestCluster::start(3, no_tune).await;
    let writer = c.client();
    writer.put("other/x", "not watched").await.unwrap();
    let start = writer
        .put("w/0", "0")
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;

    // The watcher talks to a follower first, which we then stop.
    let f = c.follower().await;
    let mut endpoints = vec![c.addrs[&f].clone()];
    endpoints.extend(
        c.addrs
            .iter()
            .filter(|(id, _)| **id != f)
            .map(|(_, a)| a.clone()),
    );
    let watcher = ballast_client::Client::new(ballast_client::ClientConfig::new(endpoints));
    let mut w = watcher.watch(v1::WatchRequest {
        key_prefixes: vec![b"w/".to_vec()],
        cluster_state: false,
        start_revision: start,
        ..Default::default()
    });

    let mut expected = vec![start];
    for i in 1..=20 {
        expected.push(
            writer
                .put(format!("w/{i}"), i.to_string())
                .await
                .unwrap()
                .header
                .unwrap()
                .revision,
        );
        writer.put("other/x", "noise").await.unwrap();
    }
    // Read some, then cut the watcher's member.
    let mut got = Vec::new();
    while got.len() < 5 {
        let ballast_client::WatchItem::Changes(r) = w.next().await.unwrap() else {
            panic!("no resync expected")
        };
        got.extend(r.events.iter().map(|_| r.revision));
    }
    c.stop(f).await;
    for i in 21..=40 {
        expected.push(
            writer
                .put(format!("w/{i}"), i.to_string())
                .await
                .unwrap()
                .header
                .unwrap()
                .revision,
        );
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < expected.len() {
            let ballast_client::WatchItem::Changes(r) = w.next().await.unwrap() else {
                panic!("no resync expected")
            };
            got.extend(r.events.iter().map(|_| r.revision));
        }
    })
    .await
    .expect("every change arrives after the watcher fails over");
    assert_eq!(got, expected, "each revision exactly once, in order");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_write_is_applied_once() {
    let c = TestCluster::start(3, no_tune).await;
    let leader = c.leader().await;
    let f = c.follower().await;
    let id = v1::RequestId {
        client_id: 77,
        seq: 1,
        acked_below: 1,
    };
    let req = v1::PutRequest {
        key: b"once".to_vec(),
        value: b"v".to_vec(),
        request_id: Some(id),
    };
    let first = c
        .client_of(&[leader])
        .put_with_request(req.clone())
        .await
        .unwrap();
    // A second, unrelated write moves the revision on.
    c.client().put("unrelated", "x").await.unwrap();
    // The retry (through another member) gets the first answer and changes nothing.
    let again = c
        .client_of(&[f])
        .put_with_request(req.clone())
        .await
        .unwrap();
    assert_eq!(
        again.header.unwrap().revision,
        first.header.unwrap().revision
    );
    let kv = c.client().get("once", false).await.unwrap().kv.unwrap();
    assert_eq!(kv.version, 1, "applied exactly once");
    // Once acknowledged (acked_below moved past it), the retry is refused, not re-applied.
    let next = v1::PutRequest {
        key: b"once2".to_vec(),
        value: b"v".to_vec(),
        request_id: Some(v1::RequestId {
            client_id: 77,
            seq: 2,
            acked_below: 2,
        }),
    };
    c.client().put_with_request(next).await.unwrap();
    match c.client().put_with_request(req).await {
        Err(Error::FailedPrecondition(_)) => {}
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    assert_eq!(
        c.client()
            .get("once", false)
            .await
            .unwrap()
            .kv
            .unwrap()
            .version,
        1
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_and_nothing_is_applied() {
    let c = TestCluster::start(3, no_tune).await;
    c.settled().await;
    let client = c.client();
    client.put("seed", "1").await.unwrap();
    // Revisions from linearizable reads, so no member's lag can hide a change.
    let rev_before = client
        .get("seed", false)
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;

    let expect_invalid = |r: Result<_, Error>, field: &str| match r {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains(field), "message {m:?} should name {field}")
        }
        Ok(_) => panic!("accepted; expected INVALID_ARGUMENT naming {field}"),
        Err(e) => panic!("expected INVALID_ARGUMENT naming {field}, got {e}"),
    };
    expect_invalid(client.put("", "v").await.map(|_| ()), "key");
    expect_invalid(
        client.put("k", vec![0u8; 256 * 1024 + 1]).await.map(|_| ()),
        "value",
    );
    expect_invalid(client.put(vec![b'k'; 1025], "v").await.map(|_| ()), "key");
    expect_invalid(client.get("", false).await.map(|_| ()), "key");

    let svc = v1::Service {
        name: "web".into(),
        check: Some(v1::HealthCheck {
            kind: Some(v1::health_check::Kind::Tcp(v1::TcpCheck { port: 80 })),
            ..Default::default()
        }),
        backends: [(1, v1::Backend::default()), (2, v1::Backend::default())].into(),
        ..Default::default()
    };
    let mut bad = svc.clone();
    bad.backends.insert(9, v1::Backend::default());
    expect_invalid(
        client.apply_service(bad).await.map(|_| ()),
        "service.backends",
    );
    let mut bad = svc.clone();
    bad.check = None;
    expect_invalid(client.apply_service(bad).await.map(|_| ()), "service.check");

    let vip = v1::Vip {
        name: "web-vip".into(),
        address: "10.213.0.100/24".into(),
        interface: "eth0".into(),
        service: "web".into(),
        ..Default::default()
    };
    // Unknown service (it does not exist yet).
    expect_invalid(
        client.apply_vip(vip.clone()).await.map(|_| ()),
        "vip.service",
    );
    let mut bad = vip.clone();
    bad.address = "10.213.0.300/24".into();
    expect_invalid(client.apply_vip(bad).await.map(|_| ()), "vip.address");
    let mut bad = vip.clone();
    bad.address = "10.213.0.100/40".into();
    expect_invalid(client.apply_vip(bad).await.map(|_| ()), "vip.address");
    expect_invalid(
        client
            .set_node_admin(9, v1::AdminState::Draining)
            .await
            .map(|_| ()),
        "node_id",
    );

    let after = client.status().await.unwrap();
    assert_eq!(
        after.header.unwrap().revision,
        rev_before,
        "no bad input changed the state"
    );
    let st = client.get_state(false).await.unwrap();
    assert!(st.services.is_empty() && st.vips.is_empty());

    // The same inputs, corrected, are accepted.
    client.apply_service(svc).await.unwrap();
    client.apply_vip(vip).await.unwrap();
    client
        .set_node_admin(2, v1::AdminState::Draining)
        .await
        .unwrap();
    let st = client.get_state(false).await.unwrap();
    assert_eq!(
        st.services[0].check.as_ref().unwrap().rise,
        2,
        "defaults filled in"
    );
    assert_eq!(st.vips[0].owner, 0);
    assert_eq!(
        st.nodes.iter().find(|n| n.id == 2).unwrap().admin,
        v1::AdminState::Draining as i32
    );
    // A service gating a VIP cannot be deleted.
    match client.delete_service("web").await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("web-vip"), "{m}"),
        other => panic!("expected refusal, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_refuses_raft_traffic_of_another_cluster() {
    let a = TestCluster::start(3, no_tune).await;
    a.leader().await;
    a.client().put("a", "1").await.unwrap();
    // Cluster B: a single member that tries to make one of A's members its learner.
    let mut b = TestCluster {
        dir: tempfile::tempdir().unwrap(),
        nodes: Default::default(),
        addrs: Default::default(),
        tune: no_tune,
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut cfg = b.config(100);
    cfg.bootstrap = true;
    b.nodes
        .insert(100, ballast_node::start(cfg, l, None).await.unwrap());
    b.addrs.insert(100, addr);
    b.leader().await;
    let victim = a.follower().await;
    let victim_cluster = a.nodes[&victim].node.identity.cluster_id();
    b.client()
        .add_learner(victim, &a.addrs[&victim], false)
        .await
        .unwrap();
    // B keeps trying; A's member must refuse and stay in A.
    let refused_before = ballast_node::metrics::RAFT_REFUSED.get();
    wait_for(
        "A's member to refuse B's traffic",
        Duration::from_secs(10),
        || async { (ballast_node::metrics::RAFT_REFUSED.get() > refused_before + 2).then_some(()) },
    )
    .await;
    assert_eq!(a.nodes[&victim].node.identity.cluster_id(), victim_cluster);
    let m = b.nodes[&100].node.raft.metrics().borrow_watched().clone();
    let matched = m
        .replication
        .and_then(|r| r.get(&victim).copied().flatten());
    assert!(matched.is_none(), "B replicated to A's member: {matched:?}");
    assert!(a
        .client_of(&[victim])
        .get("a", true)
        .await
        .unwrap()
        .kv
        .is_some());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_service_and_reflection_list_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let c = TestCluster::start(1, no_tune).await;
    c.leader().await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addrs[&1]))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for svc in [
        "ballast.v1.KV",
        "ballast.v1.Cluster",
        "ballast.v1.Watch",
        "ballast.v1.State",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{svc}"
        );
    }

    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in [
        "ballast.v1.KV",
        "ballast.v1.Cluster",
        "ballast.v1.Watch",
        "ballast.v1.State",
        "ballast.v1.RaftService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(svc), "reflection lacks {svc}: {names:?}");
    }
    c.shutdown().await;
}

/// A member grants no vote in its first election timeout after it starts: openraft keeps a
/// follower's leader lease in memory only, and a leader's lease reads count on every voter
/// that acknowledged it refusing other candidates for that long, restarts included. Nor does
/// it answer a pre-vote, which would help a candidate past that lease just the same.
#[tokio::test]
async fn a_restarted_member_grants_no_vote_in_its_first_election_timeout() {
    use ballast_node::types::{TypeConfig, Vote};
    use ballast_proto::v1::raft_service_client::RaftServiceClient;
    use ballast_proto::v1::RaftMessage;
    use openraft::raft::VoteRequest;

    fn slow(c: &mut ballast_node::config::Config) {
        c.election_timeout_min_ms = 1000;
        c.election_timeout_max_ms = 2000;
    }
    let mut a = TestCluster::start(3, slow).await;
    let leader = a.leader().await;
    let f = a.follower().await;
    let cluster_id = a.nodes[&f].node.identity.cluster_id().unwrap();
    a.stop(f).await;
    a.restart(f).await;
    let restarted = std::time::Instant::now();
    let term = a.nodes[&leader]
        .node
        .raft
        .metrics()
        .borrow_watched()
        .current_term;
    let addr = a.addrs[&f].clone();
    // A candidate of a later term with no log: a member whose vote is open answers it (with
    // a refusal for the short log, or a grant); one in its first election timeout does not
    // answer at all. `pre`: as a pre-vote.
    let ask = |pre: bool| {
        let (addr, cluster_id) = (addr.clone(), cluster_id.clone());
        async move {
            let mut c = RaftServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            let rpc = VoteRequest::<TypeConfig>::new(Vote::new(term + 5, leader), None);
            let mut req = tonic::Request::new(RaftMessage {
                payload: bincode::serialize(&rpc).unwrap(),
            });
            req.metadata_mut()
                .insert("ballast-cluster-id", cluster_id.parse().unwrap());
            if pre {
                c.pre_vote(req).await
            } else {
                c.vote(req).await
            }
        }
    };
    let first = [ask(false).await, ask(true).await];
    assert!(
        restarted.elapsed() < Duration::from_millis(2000),
        "the test was too slow to ask within the window"
    );
    for answer in first {
        let e = answer.expect_err("a member that just started answered a vote or a pre-vote");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("no votes yet"), "{e:?}");
    }
    wait_for("the vote to open", Duration::from_secs(10), || async {
        ask(false).await.ok()?;
        ask(true).await.ok()
    })
    .await;
    assert!(restarted.elapsed() >= Duration::from_millis(1900));
}
