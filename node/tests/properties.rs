//! Property tests over the paths that take outside input: decoding (log entries, backups, API
//! messages) never panics whatever the bytes, validation follows its stated rules, and the
//! state machine is deterministic: replicas applying the same commands end in the same state.
//! Run briefly in CI (the default case count); `PROPTEST_CASES=100000 cargo test -p
//! ballast-node --test properties` for a longer search.

use ballast_node::member::state::StateData;
use ballast_node::model;
use ballast_node::types::{log_id, Batch, Command, Entry, EntryPayload, Expected, Op};
use ballast_node::validate;
use ballast_proto::v1;
use ballast_proto::{MAX_KEY_LEN, MAX_VALUE_LEN};
use proptest::prelude::*;
use prost::Message;

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = bincode::deserialize::<Entry>(&bytes);
        let _ = ballast_node::member::backup::BackupState::decode(&bytes);
        let _ = ballast_client::backup::decode(&bytes);
        let _ = v1::PutRequest::decode(&bytes[..]);
        let _ = v1::CompareAndSetRequest::decode(&bytes[..]);
        let _ = v1::StartRolloutRequest::decode(&bytes[..]);
        if let Ok(r) = v1::ApplyServiceRequest::decode(&bytes[..]) {
            if let Some(mut s) = r.service {
                let _ = validate::service(&mut s);
            }
        }
        if let Ok(r) = v1::ApplyVipRequest::decode(&bytes[..]) {
            if let Some(mut v) = r.vip {
                let _ = validate::vip(&mut v);
            }
        }
        if let Ok(r) = v1::RegisterReleaseRequest::decode(&bytes[..]) {
            if let Some(rel) = r.release {
                let _ = validate::release(&rel);
            }
        }
    }

    #[test]
    fn keys_and_values_follow_their_limits(len in 0usize..MAX_KEY_LEN + 64, vlen in 0usize..2048) {
        let key = vec![b'k'; len];
        prop_assert_eq!(validate::key("key", &key).is_ok(), (1..=MAX_KEY_LEN).contains(&len));
        let value = vec![0u8; vlen];
        prop_assert_eq!(validate::value("value", &value).is_ok(), vlen <= MAX_VALUE_LEN);
    }

    #[test]
    fn accepted_names_are_lowercase_and_short(name in "[a-zA-Z0-9_.\\- ]{0,70}") {
        if validate::name("name", &name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= 63);
            prop_assert!(name.chars().next().unwrap().is_ascii_alphanumeric());
            prop_assert!(!name.chars().any(|c| c.is_ascii_uppercase() || c == ' '));
        }
    }

    #[test]
    fn accepted_http_check_paths_are_one_request_target(path in http_path_like(), port in 0u32..70_000) {
        let mut c = v1::HealthCheck {
            kind: Some(v1::health_check::Kind::Http(v1::HttpCheck {
                port,
                path: path.clone(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let raw = v1::HttpCheck { port, path: path.clone(), ..Default::default() };
        let host = std::net::IpAddr::from([127, 0, 0, 1]);
        let sent = ballast_node::agent::health::http_request(host, &raw);
        match validate::health_check("check", &mut c) {
            Ok(()) => {
                let Some(v1::health_check::Kind::Http(h)) = &c.kind else { unreachable!() };
                // Printable ASCII only: nothing that ends the request line or starts a header.
                prop_assert!(h.path.starts_with('/'));
                prop_assert!(h.path.bytes().all(|b| b.is_ascii_graphic()), "{:?}", h.path);
                prop_assert!((1..=65535).contains(&h.port));
                // What the agent sends for it: a request line, two headers, the blank line.
                let (_, req) = ballast_node::agent::health::http_request(host, h).unwrap();
                prop_assert_eq!(req.matches("\r\n").count(), 4);
                prop_assert_eq!(req.matches('\n').count(), 4);
            }
            Err(e) => {
                prop_assert!(e.field.starts_with("check.http."), "{e}");
                // The agent refuses to send what the API refuses (an empty path aside: the
                // API fills it in).
                prop_assert!(path.is_empty() || sent.is_err(), "{:?}", sent);
            }
        }
    }

    #[test]
    fn accepted_vip_addresses_are_canonical_with_a_prefix(s in cidr_like()) {
        if let Ok((ip, prefix)) = validate::vip_cidr("address", &s) {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            prop_assert!(prefix <= max);
            prop_assert_eq!(format!("{ip}/{prefix}"), s);
        }
    }

    #[test]
    fn replicas_applying_the_same_commands_agree(ops in proptest::collection::vec(op(), 1..60)) {
        let mut a = StateData::default();
        let mut b = StateData::default();
        let mut last_revision = 0;
        for (i, chunk) in ops.chunks(4).enumerate() {
            let entry = Entry {
                log_id: log_id(1, 1, i as u64 + 1),
                payload: EntryPayload::Normal(Batch {
                    commands: chunk
                        .iter()
                        .map(|op| Command { request: None, now_ms: 1_000 + i as u64, op: op.clone() })
                        .collect(),
                }),
            };
            let (ra, _) = a.apply(&entry);
            let (rb, _) = b.apply(&entry);
            prop_assert_eq!(ra, rb);
            prop_assert!(a.revision >= last_revision, "the revision never goes back");
            last_revision = a.revision;
        }
        prop_assert_eq!(a, b);
    }
}

/// Paths as operators write them, and with what must not reach a request line: CR, LF and
/// other control characters, spaces, non-ASCII.
fn http_path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z0-9/?=&%._-]{0,20}",
        "/[a-z]{0,5}[\\r\\n\\t\\x00\\x7f \\u{85}\\u{e9}][a-zA-Z: ]{0,10}",
        ".{0,20}",
    ]
}

/// Strings shaped like "a.b.c.d/p" in canonical and odd spellings, and some garbage.
fn cidr_like() -> impl Strategy<Value = String> {
    let octet = prop_oneof![
        (0u8..=255).prop_map(|o| o.to_string()),
        (0u8..=99).prop_map(|o| format!("0{o}")),
    ];
    let prefix = prop_oneof![
        (0u8..=40).prop_map(|p| p.to_string()),
        (0u8..=40).prop_map(|p| format!("0{p}")),
        (0u8..=40).prop_map(|p| format!("+{p}")),
    ];
    // IPv6: groups in any case and with leading zeros, "::" anywhere, prefixes past 128.
    let group = prop_oneof![
        (0u16..=0xffff).prop_map(|g| format!("{g:x}")),
        (0u16..=0xfff).prop_map(|g| format!("0{g:x}")),
        (0u16..=0xffff).prop_map(|g| format!("{g:X}")),
        Just(String::new()),
    ];
    let prefix6 = prop_oneof![
        (0u8..=140).prop_map(|p| p.to_string()),
        (0u8..=140).prop_map(|p| format!("0{p}")),
    ];
    prop_oneof![
        (octet.clone(), octet.clone(), octet.clone(), octet, prefix)
            .prop_map(|(a, b, c, d, p)| format!("{a}.{b}.{c}.{d}/{p}")),
        (proptest::collection::vec(group, 2..=8), prefix6)
            .prop_map(|(g, p)| format!("{}/{p}", g.join(":"))),
        "[0-9./a-z+]{0,24}",
        "[0-9a-fA-F:/.]{0,40}",
    ]
}

/// Commands over a few keys, services and VIPs, valid or not: the state machine must refuse
/// the bad ones without changing anything and never panic.
fn op() -> impl Strategy<Value = Op> {
    let key = prop_oneof![
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"c/d".to_vec())
    ];
    let value = proptest::collection::vec(any::<u8>(), 0..8);
    let name = prop_oneof![
        Just("web".to_string()),
        Just("db".to_string()),
        Just("Bad Name".to_string())
    ];
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(key, value)| Op::Put { key, value }),
        (key.clone(), value.clone(), value.clone(), any::<bool>()).prop_map(
            |(key, expected, new_value, by_value)| {
                Op::CompareAndSet {
                    key,
                    expected: if by_value {
                        Expected::Value(expected)
                    } else {
                        Expected::ModRevision(expected.len() as u64)
                    },
                    new_value,
                }
            }
        ),
        (key, any::<bool>()).prop_map(|(key, prefix)| Op::Delete { key, prefix }),
        (name.clone(), 0u64..4).prop_map(|(name, backend)| Op::ApplyService(model::Service {
            name,
            backends: [(backend, model::Backend::default())].into_iter().collect(),
            ..Default::default()
        })),
        name.clone().prop_map(Op::DeleteService),
        (name.clone(), 1u8..4).prop_map(|(service, last)| Op::ApplyVip(model::Vip {
            name: format!("{service}-vip"),
            address: format!("10.213.0.{last}/24"),
            interface: "eth0".into(),
            service,
            ..Default::default()
        })),
        (0u64..4, 0i32..5).prop_map(|(node_id, admin)| Op::SetNodeAdmin {
            node_id,
            admin: admin.into()
        }),
        (name, 0u64..4, 0u64..4).prop_map(|(vip, to, epoch)| Op::AssignVip {
            vip: format!("{vip}-vip"),
            node: to,
            epoch
        }),
    ]
}
