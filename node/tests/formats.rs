//! What goes to disk stays readable: snapshots written by every earlier version of the code
//! are kept as golden files (`tests/fixtures/formats/`) and must decode, with everything in
//! them, by the current code. `write_fixtures` (ignored; run it by hand when a format
//! changes) writes the current version's files from the same sample state; files of older
//! versions are never regenerated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ballast_node::member::state::StateData;
use ballast_node::model;
use ballast_node::types::{
    log_id, Batch, ClientRequest, Command, Entry, EntryPayload, Membership, Op,
};
use openraft::BasicNode;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

fn entry(index: u64, payload: EntryPayload) -> Entry {
    Entry {
        log_id: log_id(3, 1, index),
        payload,
    }
}

fn cmd(index: u64, op: Op, request: Option<ClientRequest>) -> Entry {
    entry(
        index,
        EntryPayload::Normal(Batch {
            commands: vec![Command {
                request,
                now_ms: 1_700_000_000_000 + index,
                op,
            }],
        }),
    )
}

/// A state that uses every part of the stored model: members and a standalone agent, a
/// service with a check, backends, health and releases, an owned VIP with placement being
/// released, KV with a client session, and watch history.
/// The sample state as format `version` could hold it: version 1 added the cluster's lease
/// settings (and the wait after a shorter one), agent process bindings, retired addresses and
/// the epochs of deleted VIPs.
fn sample_state(version: u16) -> StateData {
    let mut s = StateData::default();
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|i| (i, BasicNode::new(format!("10.213.0.{i}:7400"))))
        .collect();
    let voters = [members.keys().copied().collect()];
    s.apply(&entry(
        1,
        EntryPayload::Membership(Membership::new(voters.to_vec(), members).unwrap()),
    ));
    let mut i = 1;
    let mut next = |op: Op, request: Option<ClientRequest>| {
        i += 1;
        let (r, _) = s.apply(&cmd(i, op, request));
        assert!(
            !matches!(
                r.results[0].outcome,
                ballast_node::types::Outcome::Rejected { .. }
            ),
            "{:?}",
            r.results[0]
        );
    };
    next(
        Op::RegisterAgent {
            node_id: 4,
            addr: "10.213.0.4:7400".into(),
        },
        None,
    );
    next(
        Op::ApplyService(model::Service {
            name: "web".into(),
            check: Some(model::HealthCheck {
                kind: Some(model::CheckKind::Http(model::HttpCheck {
                    port: 8080,
                    path: "/healthz".into(),
                    ..Default::default()
                })),
                interval_ms: 500,
                timeout_ms: 200,
                rise: 2,
                fall: 3,
            }),
            backends: (1..=4).map(|i| (i, model::Backend::default())).collect(),
            ..Default::default()
        }),
        None,
    );
    for id in 1..=4 {
        next(
            Op::ReportHealth {
                node_id: id,
                service: "web".into(),
                health: model::Health::Healthy,
            },
            None,
        );
    }
    next(
        Op::RegisterRelease {
            service: "web".into(),
            release: model::Release {
                id: "v1".into(),
                artifact: "/srv/artifacts/web-v1.tar.gz".into(),
                sha256: "a".repeat(64),
                ..Default::default()
            },
        },
        None,
    );
    next(
        Op::ApplyVip(model::Vip {
            name: "web-vip".into(),
            address: "10.213.0.100/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            placement: Some(model::Placement {
                priorities: [(2, 10)].into(),
                preempt: true,
                preempt_delay_ms: 3_000,
            }),
            ..Default::default()
        }),
        None,
    );
    next(
        Op::AssignVip {
            vip: "web-vip".into(),
            node: 2,
            epoch: 1,
        },
        None,
    );
    next(
        Op::ReleaseVip {
            vip: "web-vip".into(),
            epoch: 1,
        },
        None,
    );
    next(
        Op::SetNodeAdmin {
            node_id: 3,
            admin: model::AdminState::Draining,
        },
        None,
    );
    let session = |seq| {
        Some(ClientRequest {
            client_id: 77,
            seq,
            acked_below: 1,
        })
    };
    next(
        Op::Put {
            key: b"config/a".to_vec(),
            value: b"1".to_vec(),
        },
        session(1),
    );
    next(
        Op::Put {
            key: b"config/b".to_vec(),
            value: vec![0xff; 300],
        },
        session(2),
    );
    next(
        Op::Delete {
            key: b"config/a".to_vec(),
            prefix: false,
        },
        session(3),
    );
    if version >= 1 {
        let lease = |lease_ms| ballast_node::lease::LeaseSettings {
            lease_ms,
            renew_ms: 1_000,
            drift_ms: 200,
            margin_ms: 300,
        };
        // A longer lease, then a shorter one: the wait stays at the longer until settled.
        for ms in [6_000, 4_000] {
            next(
                Op::SetLease {
                    settings: lease(ms),
                    if_unset: false,
                },
                None,
            );
        }
        next(
            Op::BindAgent {
                node_id: 4,
                instance: 0xfeed,
            },
            None,
        );
        next(
            Op::ApplyVip(model::Vip {
                name: "db-vip".into(),
                address: "10.213.0.101/24".into(),
                interface: "eth0".into(),
                service: "web".into(),
                ..Default::default()
            }),
            None,
        );
        next(
            Op::Decided {
                term: 3,
                op: Box::new(Op::AssignVip {
                    vip: "db-vip".into(),
                    node: 1,
                    epoch: 1,
                }),
            },
            None,
        );
        // Deleted while its owner may hold it: retired, and its epoch kept.
        next(Op::DeleteVip("db-vip".into()), None);
    }
    s
}

/// Facts about the sample state that every version's file must still give.
fn check_sample(s: &StateData, format: u16, version: &str) {
    let want = sample_state(format);
    assert_eq!(s.revision, want.revision, "{version}: revision");
    assert_eq!(s.last_applied, want.last_applied, "{version}: last applied");
    assert_eq!(s.membership, want.membership, "{version}: membership");
    assert_eq!(s.kv, want.kv, "{version}: kv");
    assert_eq!(s.nodes, want.nodes, "{version}: nodes");
    assert_eq!(s.services, want.services, "{version}: services");
    assert_eq!(s.vips, want.vips, "{version}: vips");
    assert_eq!(s.sessions, want.sessions, "{version}: sessions");
    assert_eq!(s.history, want.history, "{version}: history");
    let v = &s.vips["web-vip"];
    assert_eq!((v.owner, v.epoch, v.releasing), (2, 1, true), "{version}");
    assert_eq!(s.lease, want.lease, "{version}: lease");
    assert_eq!(s.lease_wait_ms, want.lease_wait_ms, "{version}: lease wait");
    assert_eq!(
        s.lease_generation, want.lease_generation,
        "{version}: lease generation"
    );
    assert_eq!(s.agents, want.agents, "{version}: agents");
    assert_eq!(s.retired, want.retired, "{version}: retired");
    assert_eq!(s.vip_epochs, want.vip_epochs, "{version}: vip epochs");
    if format >= 1 {
        assert_eq!(s.lease.map(|l| l.lease_ms), Some(4_000), "{version}");
        assert_eq!(
            s.lease_wait_ms,
            6_000 + 300,
            "{version}: wait (lease + margin)"
        );
        assert_eq!(s.agents.get(&4), Some(&0xfeed), "{version}");
        let r = &s.retired["db-vip"];
        assert_eq!((r.owner, r.epoch, r.deleted), (1, 1, true), "{version}");
        assert_eq!(s.vip_epochs.get("db-vip"), Some(&1), "{version}");
    }
}

#[test]
fn every_snapshot_version_decodes_with_everything_in_it() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("state-v") && name.ends_with(".bin")) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let format: u16 = name["state-v".len()..name.len() - ".bin".len()]
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let s = ballast_node::member::format::decode_state(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_sample(&s, format, &name);
        seen += 1;
    }
    assert!(seen >= 1, "no fixture in {}", fixtures().display());
}

/// Writes the current version's snapshot of the sample state. Run by hand when the format
/// changes (`cargo test -p ballast-node --test formats -- --ignored`), and commit the file.
#[test]
#[ignore]
fn write_fixtures() {
    let s = sample_state(ballast_node::member::format::STATE_VERSION);
    let bytes = ballast_node::member::format::encode_state(&s);
    let path = fixtures().join(format!(
        "state-v{}.bin",
        ballast_node::member::format::STATE_VERSION
    ));
    std::fs::write(&path, bytes).unwrap();
    println!("wrote {}", path.display());
}
