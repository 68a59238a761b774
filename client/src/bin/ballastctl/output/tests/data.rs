//! The data verbs' renderers: keys and their watch, releases and rollouts, backups, the
//! bench's figures.

use super::*;

fn kv(key: &str, value: &[u8], mod_revision: u64) -> v1::KeyValue {
    v1::KeyValue {
        key: key.into(),
        value: value.to_vec(),
        create_revision: 3,
        mod_revision,
        version: 2,
    }
}

#[test]
fn kv_answers_as_json() {
    assert_eq!(
        kv_json(&kv("cfg/a", b"1", 9)),
        json!({"key": "cfg/a", "value": "1", "create_revision": 3, "mod_revision": 9, "version": 2})
    );
    // Values that are not UTF-8 are shown, not refused.
    assert_eq!(
        kv_json(&kv("k", &[0xff, b'x'], 9))["value"],
        json!("\u{fffd}x")
    );
    let found = v1::GetResponse {
        header: header(12),
        kv: Some(kv("cfg/a", b"1", 9)),
    };
    assert_eq!(get_json(&found)["revision"], json!(12));
    assert_eq!(get_json(&found)["kv"]["value"], json!("1"));
    let absent = v1::GetResponse {
        header: header(12),
        kv: None,
    };
    assert_eq!(get_json(&absent), json!({"revision": 12, "kv": null}));
    let failed = v1::CompareAndSetResponse {
        header: header(13),
        succeeded: false,
        kv: Some(kv("cfg/a", b"2", 11)),
    };
    assert_eq!(
        cas_json(&failed),
        json!({"succeeded": false, "revision": 13, "kv": {"key": "cfg/a", "value": "2",
               "create_revision": 3, "mod_revision": 11, "version": 2}})
    );
}

#[test]
fn kv_ls_says_when_the_limit_cut_the_list() {
    let r = v1::RangeResponse {
        header: header(20),
        kvs: vec![kv("cfg/a", b"1", 9), kv("cfg/longer", b"value two", 17)],
        more: true,
    };
    assert_eq!(
        range_out(&r, Output::Table),
        lines(&[
            "KEY         VALUE      REVISION",
            "cfg/a       1          9",
            "cfg/longer  value two  17",
            "(more keys; raise --limit)",
        ])
    );
    let j: serde_json::Value = serde_json::from_str(&range_out(&r, Output::Json)).unwrap();
    assert_eq!(j["revision"], json!(20));
    assert_eq!(j["more"], json!(true));
    assert_eq!(j["kvs"][1]["key"], json!("cfg/longer"));
    let all = v1::RangeResponse {
        more: false,
        kvs: vec![],
        ..r
    };
    assert_eq!(range_out(&all, Output::Table), "KEY  VALUE  REVISION\n");
}

fn kv_event(kind: v1::kv_event::Kind, kv: v1::KeyValue) -> v1::Event {
    v1::Event {
        event: Some(v1::event::Event::Kv(v1::KvEvent {
            kind: kind as i32,
            kv: Some(kv),
        })),
    }
}

#[test]
fn watch_prints_a_line_per_event() {
    let r = v1::WatchResponse {
        revision: 31,
        events: vec![
            kv_event(v1::kv_event::Kind::Put, kv("cfg/a", b"on", 31)),
            kv_event(v1::kv_event::Kind::Delete, kv("cfg/b", b"", 31)),
            v1::Event {
                event: Some(v1::event::Event::State(v1::StateEvent {
                    kind: "vip".into(),
                    name: "web-vip".into(),
                    deleted: true,
                })),
            },
            v1::Event {
                event: Some(v1::event::Event::State(v1::StateEvent {
                    kind: "node".into(),
                    name: "2".into(),
                    deleted: false,
                })),
            },
            v1::Event { event: None },
        ],
    };
    assert_eq!(
        watch_lines(&r, Output::Table),
        lines(&[
            "31 PUT cfg/a on",
            "31 DELETE cfg/b ",
            "31 STATE vip web-vip deleted",
            "31 STATE node 2",
        ])
    );
    let json_lines: Vec<serde_json::Value> = watch_lines(&r, Output::Json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json_lines.len(), 4);
    assert_eq!(json_lines[0]["type"], json!("PUT"));
    assert_eq!(json_lines[0]["revision"], json!(31));
    assert_eq!(json_lines[0]["kv"]["value"], json!("on"));
    assert_eq!(json_lines[1]["type"], json!("DELETE"));
    assert_eq!(
        json_lines[2],
        json!({"revision": 31, "type": "STATE", "kind": "vip", "name": "web-vip", "deleted": true})
    );
    // A progress mark (no events) prints nothing.
    let mark = v1::WatchResponse {
        revision: 40,
        events: vec![],
    };
    assert_eq!(watch_lines(&mark, Output::Table), "");
    assert_eq!(
        resync_line(41, Output::Table),
        "41 RESYNC (changes before this revision were lost to compaction: read the keys again)\n"
    );
    assert_eq!(
        resync_line(41, Output::Json),
        "{\"revision\":41,\"type\":\"RESYNC\"}\n"
    );
}

fn release(id: &str, sha256: &str, status: v1::ReleaseStatus, failure: &str) -> v1::Release {
    v1::Release {
        id: id.into(),
        artifact: format!("/srv/{id}.tar.gz"),
        sha256: sha256.into(),
        registered_ms: 1000,
        status: status as i32,
        failure: failure.into(),
    }
}

#[test]
fn releases_newest_first_with_short_digests() {
    let rs = vec![
        release("r1", "0123456789abcdef0123", v1::ReleaseStatus::Retired, ""),
        release("r2", "abc", v1::ReleaseStatus::Active, ""),
        release("r3", "", v1::ReleaseStatus::Failed, "gate failed on node 2"),
    ];
    assert_eq!(
        releases_out(&rs, Output::Table),
        lines(&[
            "RELEASE  STATUS   ARTIFACT        SHA256        NOTE",
            "r3       failed   /srv/r3.tar.gz                gate failed on node 2",
            "r2       active   /srv/r2.tar.gz  abc",
            "r1       retired  /srv/r1.tar.gz  0123456789ab",
        ])
    );
    let j: serde_json::Value = serde_json::from_str(&releases_out(&rs, Output::Json)).unwrap();
    // JSON keeps the cluster's order (oldest first) and the whole digest.
    assert_eq!(
        j[0],
        json!({"id": "r1", "artifact": "/srv/r1.tar.gz", "sha256": "0123456789abcdef0123",
               "status": "retired", "failure": "", "registered_ms": 1000})
    );
    assert_eq!(j[2]["status"], json!("failed"));
}

/// web rolls r3 out over r2 and is rolling back: node 1 runs it, node 2 failed to.
fn rolling_back() -> v1::Service {
    let mut svc = service(
        "web",
        vec![
            backend(1, v1::Health::Healthy, "r3"),
            backend(2, v1::Health::Unhealthy, "r2"),
            backend(3, v1::Health::Unknown, ""),
            backend(4, v1::Health::Healthy, "r2"),
        ],
        "r2",
    );
    let b2 = svc.backends.get_mut(&2).unwrap();
    b2.apply_error = "sha256 mismatch".into();
    b2.release_failed = "r3".into();
    svc.previous_release = "r1".into();
    svc.rollout = Some(v1::Rollout {
        release: "r3".into(),
        from_release: "r2".into(),
        state: v1::RolloutState::RollingBack as i32,
        desired: [(1, "r3".to_string()), (2, "r3".to_string())]
            .into_iter()
            .collect(),
        message: "node 2 unhealthy".into(),
        ..Default::default()
    });
    svc
}

#[test]
fn rollouts_show_each_node_and_the_progress() {
    assert_eq!(
        rollout_lines(&rolling_back(), false),
        [
            "web: r2 -> r3  rolling back  switched 2/4  running it 1/4  (node 2 unhealthy)",
            "  node 1: wants r3           runs r3           healthy",
            "  node 2: wants r3           runs r2           unhealthy  failed r3: sha256 mismatch",
            "  node 3: wants -            runs -            unknown",
            "  node 4: wants -            runs r2           healthy",
        ]
    );
    // On a terminal: a bar of 20, filled by the share of nodes running the release.
    assert_eq!(
        rollout_lines(&rolling_back(), true)[0],
        "[#####---------------] web: r2 -> r3  rolling back  switched 2/4  running it 1/4  (node 2 unhealthy)"
    );
    let mut first = rolling_back();
    let r = first.rollout.as_mut().unwrap();
    r.from_release.clear();
    r.message.clear();
    r.state = v1::RolloutState::Running as i32;
    first.backends.clear();
    assert_eq!(
        rollout_lines(&first, true),
        ["[--------------------] web: (none) -> r3  running  switched 2/0  running it 0/0"]
    );
    let none = service("db", vec![], "r7");
    assert_eq!(
        rollout_lines(&none, true),
        ["db: no rollout; active \"r7\""]
    );
    assert_eq!(redraw(5), "\x1b[5A\x1b[J");
}

#[test]
fn rollout_json_has_the_rollout_and_every_backend() {
    let j = rollout_json(&rolling_back());
    assert_eq!(j["service"], json!("web"));
    assert_eq!(j["active_release"], json!("r2"));
    assert_eq!(j["previous_release"], json!("r1"));
    assert_eq!(
        j["rollout"],
        json!({"release": "r3", "from_release": "r2", "state": "rolling back",
               "message": "node 2 unhealthy", "desired": {"1": "r3", "2": "r3"}})
    );
    assert_eq!(
        j["backends"][1],
        json!({"node_id": 2, "applied_release": "r2", "health": 2, "apply_error": "sha256 mismatch"})
    );
    assert_eq!(j["backends"].as_array().unwrap().len(), 4);
    assert_eq!(
        rollout_json(&service("db", vec![], ""))["rollout"],
        json!(null)
    );
}

#[test]
fn backups_say_what_they_hold() {
    let h = backup::Header {
        cluster_id: "c-1".into(),
        revision: 77,
        created_ms: 1_700_000_000_000,
        payload_len: 10,
        payload_sha256: "feed".into(),
    };
    let file = Path::new("/var/backups/b.bak");
    assert_eq!(
        backup_out(file, 120, &h, true, Output::Table),
        "saved /var/backups/b.bak: revision 77 of cluster c-1, 120 bytes, state sha256 feed\n"
    );
    assert_eq!(
        backup_out(file, 120, &h, false, Output::Table),
        "valid backup /var/backups/b.bak: revision 77 of cluster c-1, 120 bytes, state sha256 feed\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&backup_out(file, 120, &h, false, Output::Json)).unwrap();
    assert_eq!(
        j,
        json!({"file": "/var/backups/b.bak", "bytes": 120, "cluster_id": "c-1", "revision": 77,
               "created_ms": 1_700_000_000_000u64, "sha256": "feed"})
    );
}

#[test]
fn bench_results() {
    let r = BenchResult {
        op: "get".into(),
        concurrency: 16,
        ops_per_sec: 12345.678,
        p50: Duration::from_millis(500),
        p99: Duration::from_millis(1250),
        count: 123_456,
        errors: 2,
        value_size: 64,
    };
    assert_eq!(
        bench_line(&r),
        "get  c=16    12345.7 ops/s  p50  500.00 ms  p99 1250.00 ms  (123456 ok, 2 errors)\n"
    );
    assert_eq!(
        bench_json(&r),
        json!({"op": "get", "concurrency": 16, "ops_per_sec": 12345.7, "p50_ms": 500.0,
               "p99_ms": 1250.0, "count": 123456, "errors": 2, "value_size": 64})
    );
}
