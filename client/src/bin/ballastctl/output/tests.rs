//! The renderers of `output.rs` on hand-built answers: the exact text of tables and lines,
//! and the fields of the JSON, as scripts and operators see them. No cluster is needed.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_client::{backup, v1, Error};
use serde_json::json;

use super::kv::kv_json;
use super::*;

/// Lines as `ballastctl` prints them: each ends in a newline.
fn lines(ls: &[&str]) -> String {
    ls.iter().map(|l| format!("{l}\n")).collect()
}

fn member(id: u64, role: v1::Role, matched_index: u64, lag: u64) -> v1::Member {
    v1::Member {
        id,
        addr: format!("10.0.0.{id}:7401"),
        role: role as i32,
        matched_index,
        lag,
    }
}

fn members() -> Vec<v1::Member> {
    vec![
        member(1, v1::Role::Voter, 120, 0),
        member(2, v1::Role::Voter, 118, 2),
        member(13, v1::Role::Learner, 0, 120),
    ]
}

fn vip(name: &str, owner: u64, epoch: u64) -> v1::Vip {
    v1::Vip {
        name: name.into(),
        address: "10.213.0.100/24".into(),
        interface: "eth0".into(),
        service: "web".into(),
        owner,
        epoch,
        ..Default::default()
    }
}

fn backend(node_id: u64, health: v1::Health, applied: &str) -> (u64, v1::Backend) {
    let b = v1::Backend {
        node_id,
        health: health as i32,
        applied_release: applied.into(),
        ..Default::default()
    };
    (node_id, b)
}

fn service(name: &str, backends: Vec<(u64, v1::Backend)>, active: &str) -> v1::Service {
    v1::Service {
        name: name.into(),
        backends: backends.into_iter().collect(),
        active_release: active.into(),
        ..Default::default()
    }
}

fn claim(vip: &str, epoch: u64) -> v1::VipClaim {
    v1::VipClaim {
        vip: vip.into(),
        epoch,
    }
}

fn agent(node_id: u64, holding: Vec<v1::VipClaim>) -> v1::AgentReport {
    v1::AgentReport {
        node_id,
        heard: true,
        last_heard_ms_ago: 100,
        holding,
        ..Default::default()
    }
}

/// web-vip is node 1's at epoch 3, with 4500 ms of lease left; node 1 holds it, and so does
/// node 2 at an older epoch.
fn leases() -> v1::LeasesResponse {
    v1::LeasesResponse {
        leases: vec![v1::VipLease {
            vip: "web-vip".into(),
            owner: 1,
            epoch: 3,
            remaining_ms: 4500,
        }],
        agents: vec![
            agent(1, vec![claim("web-vip", 3)]),
            agent(2, vec![claim("web-vip", 2)]),
        ],
        lease_ms: 5000,
        ..Default::default()
    }
}

fn header(revision: u64) -> Option<v1::ResponseHeader> {
    Some(v1::ResponseHeader {
        revision,
        ..Default::default()
    })
}

#[test]
fn tables_pad_columns_to_the_widest_cell_and_trim_trailing_space() {
    let t = table(
        &["A", "BB"],
        vec![
            vec!["x".into(), "".into()],
            vec!["longer".into(), "y".into()],
        ],
    );
    assert_eq!(t, lines(&["A       BB", "x", "longer  y"]));
    assert_eq!(table(&["ONLY"], vec![]), "ONLY\n");
}

#[test]
fn labels() {
    assert_eq!(role(v1::Role::Learner as i32), "learner");
    assert_eq!(role(99), "unknown");
    assert_eq!(admin_label(v1::AdminState::Draining as i32), "draining");
    assert_eq!(admin_label(-1), "unknown");
    assert_eq!(health(v1::Health::Unhealthy as i32), "unhealthy");
    assert_eq!(health(7), "unknown");
    assert_eq!(owner_cell(0), "-");
    assert_eq!(owner_cell(12), "12");

    let mut v = vip("v", 0, 0);
    assert_eq!(vip_state(&v), "unowned");
    v.owner = 2;
    assert_eq!(vip_state(&v), "held");
    v.move_to = 3;
    assert_eq!(vip_state(&v), "moving to 3");
    v.releasing = true;
    assert_eq!(vip_state(&v), "releasing");

    use v1::{ReleaseStatus as R, RolloutState as S};
    let release = |status: i32| {
        release_status(&v1::Release {
            status,
            ..Default::default()
        })
    };
    assert_eq!(
        [
            R::Unspecified,
            R::Registered,
            R::RollingOut,
            R::Active,
            R::Retired,
            R::Failed
        ]
        .map(|r| release(r as i32)),
        [
            "?",
            "registered",
            "rolling out",
            "active",
            "retired",
            "failed"
        ]
    );
    assert_eq!(release(42), "?");
    let rollout = |state: i32| {
        rollout_state(&v1::Rollout {
            state,
            ..Default::default()
        })
    };
    assert_eq!(
        [
            S::Unspecified,
            S::Running,
            S::Paused,
            S::Succeeded,
            S::RollingBack,
            S::RolledBack,
            S::Aborted
        ]
        .map(|r| rollout(r as i32)),
        [
            "?",
            "running",
            "paused",
            "succeeded",
            "rolling back",
            "rolled back",
            "aborted"
        ]
    );
    assert_eq!(rollout(42), "?");
}

#[test]
fn members_show_replication_only_from_a_leader() {
    assert_eq!(
        members_out(&members(), true, Output::Table),
        lines(&[
            "ID  ADDRESS         ROLE     MATCHED  LAG",
            "1   10.0.0.1:7401   voter    120      0",
            "2   10.0.0.2:7401   voter    118      2",
            "13  10.0.0.13:7401  learner  0        120",
        ])
    );
    assert_eq!(
        members_out(&members(), false, Output::Table),
        lines(&[
            "ID  ADDRESS         ROLE     MATCHED  LAG",
            "1   10.0.0.1:7401   voter    -        -",
            "2   10.0.0.2:7401   voter    -        -",
            "13  10.0.0.13:7401  learner  -        -",
        ])
    );
    let j: serde_json::Value =
        serde_json::from_str(&members_out(&members(), true, Output::Json)).unwrap();
    assert_eq!(
        j[2],
        json!({"id": 13, "addr": "10.0.0.13:7401", "role": "learner", "matched_index": 0, "lag": 120})
    );
    let j: serde_json::Value =
        serde_json::from_str(&members_out(&members(), false, Output::Json)).unwrap();
    assert_eq!(j[0]["matched_index"], json!(null));
    assert_eq!(j[0]["lag"], json!(null));
    assert_eq!(j.as_array().unwrap().len(), 3);
}

#[test]
fn json_is_indented_and_ends_in_a_newline() {
    assert_eq!(
        members_out(&members()[..1], false, Output::Json),
        lines(&[
            "[",
            "  {",
            "    \"addr\": \"10.0.0.1:7401\",",
            "    \"id\": 1,",
            "    \"lag\": null,",
            "    \"matched_index\": null,",
            "    \"role\": \"voter\"",
            "  }",
            "]",
        ])
    );
    assert_eq!(members_out(&[], true, Output::Json), "[]\n");
    assert_eq!(
        members_out(&[], true, Output::Table),
        "ID  ADDRESS  ROLE  MATCHED  LAG\n"
    );
}

fn nodes() -> Vec<v1::Node> {
    vec![
        v1::Node {
            id: 1,
            addr: "10.0.0.1:7401".into(),
            role: v1::Role::Voter as i32,
            admin: v1::AdminState::Active as i32,
            alive: true,
            ..Default::default()
        },
        v1::Node {
            id: 14,
            addr: "agent-14:7401".into(),
            role: v1::Role::Agent as i32,
            admin: v1::AdminState::Maintenance as i32,
            alive: false,
            ..Default::default()
        },
    ]
}

#[test]
fn nodes_show_role_admin_state_and_liveness() {
    assert_eq!(
        nodes_out(&nodes(), Output::Table),
        lines(&[
            "ID  ADDRESS        ROLE   ADMIN        AGENT",
            "1   10.0.0.1:7401  voter  active       alive",
            "14  agent-14:7401  agent  maintenance  down",
        ])
    );
    let j: serde_json::Value = serde_json::from_str(&nodes_out(&nodes(), Output::Json)).unwrap();
    assert_eq!(
        j,
        json!([
            {"id": 1, "addr": "10.0.0.1:7401", "role": "voter", "admin": "active", "alive": true},
            {"id": 14, "addr": "agent-14:7401", "role": "agent", "admin": "maintenance", "alive": false},
        ])
    );
}

fn vips() -> Vec<v1::Vip> {
    let mut moving = vip("api-vip", 1, 12);
    moving.move_to = 2;
    moving.interface = "bond0.42".into();
    vec![vip("web-vip", 1, 3), moving, vip("spare", 0, 0)]
}

#[test]
fn vips_show_owner_epoch_and_moves() {
    assert_eq!(
        vips_out(&vips(), Output::Table),
        lines(&[
            "NAME     ADDRESS          INTERFACE  SERVICE  OWNER  EPOCH  STATE",
            "web-vip  10.213.0.100/24  eth0       web      1      3      held",
            "api-vip  10.213.0.100/24  bond0.42   web      1      12     moving to 2",
            "spare    10.213.0.100/24  eth0       web      -      0      unowned",
        ])
    );
    let j: serde_json::Value = serde_json::from_str(&vips_out(&vips(), Output::Json)).unwrap();
    assert_eq!(
        j[1],
        json!({"name": "api-vip", "address": "10.213.0.100/24", "interface": "bond0.42",
               "service": "web", "owner": 1, "epoch": 12, "releasing": false, "move_to": 2})
    );
    // The owner is a number in JSON, 0 for none.
    assert_eq!(j[2]["owner"], json!(0));
}

#[test]
fn services_show_each_backends_health_in_node_order() {
    let services = vec![
        service(
            "web",
            vec![
                backend(2, v1::Health::Unhealthy, ""),
                backend(1, v1::Health::Healthy, ""),
            ],
            "r2",
        ),
        service("db", vec![], ""),
    ];
    assert_eq!(
        services_table(&services),
        lines(&[
            "SERVICE  BACKENDS               RELEASE",
            "web      1=healthy 2=unhealthy  r2",
            "db",
        ])
    );
    let j = services_json(&services);
    assert_eq!(j[0]["name"], json!("web"));
    assert_eq!(j[0]["active_release"], json!("r2"));
    assert_eq!(j[1]["name"], json!("db"));
}

#[test]
fn vip_leases_show_time_left_and_who_holds_them() {
    let mut vips = vec![vip("web-vip", 1, 3), vip("spare", 0, 0)];
    vips[1].address = "10.213.0.101/24".into();
    assert_eq!(
        vip_leases_table(&vips, Some(&leases())),
        lines(&[
            "VIP      ADDRESS          OWNER  EPOCH  STATE    LEASE    HELD BY",
            "web-vip  10.213.0.100/24  1      3      held     4500 ms  1,2",
            "spare    10.213.0.101/24  -      0      unowned  -        nobody",
        ])
    );
    // Without the leader's leases, neither is known.
    assert_eq!(
        vip_leases_table(&vips, None),
        lines(&[
            "VIP      ADDRESS          OWNER  EPOCH  STATE    LEASE  HELD BY",
            "web-vip  10.213.0.100/24  1      3      held     -      ?",
            "spare    10.213.0.101/24  -      0      unowned  -      ?",
        ])
    );
    assert_eq!(
        vip_leases_json(&vips, Some(&leases())),
        json!([
            {"name": "web-vip", "owner": 1, "epoch": 3, "state": "held", "lease_remaining_ms": 4500, "held_by": [1, 2]},
            {"name": "spare", "owner": 0, "epoch": 0, "state": "unowned", "lease_remaining_ms": null, "held_by": []},
        ])
    );
    assert_eq!(vip_leases_json(&vips, None)[0]["held_by"], json!(null));
}

fn own_view(raft_state: &str, term: u64, applied_index: u64) -> v1::StatusResponse {
    v1::StatusResponse {
        raft_state: raft_state.into(),
        term,
        applied_index,
        commit_index: applied_index + 1,
        ..Default::default()
    }
}

/// A leader of term 7 speaks; member 2 still calls itself leader of term 6; member 3 does
/// not answer.
fn status_view() -> StatusView {
    let cluster = v1::StatusResponse {
        header: header(55),
        cluster_id: "c-1".into(),
        raft_state: "leader".into(),
        leader_id: 1,
        leader_addr: "10.0.0.1:7401".into(),
        term: 7,
        commit_index: 120,
        applied_index: 119,
        members: vec![
            member(1, v1::Role::Voter, 120, 0),
            member(2, v1::Role::Voter, 118, 2),
            member(3, v1::Role::Voter, 0, 120),
        ],
        ..Default::default()
    };
    let views: BTreeMap<u64, Result<v1::StatusResponse, Error>> = [
        (1, Ok(own_view("leader", 7, 119))),
        (2, Ok(own_view("leader", 6, 118))),
        (3, Err(Error::Unavailable("no route".into()))),
    ]
    .into_iter()
    .collect();
    let state = v1::GetStateResponse {
        vips: vec![vip("web-vip", 1, 3)],
        services: vec![service(
            "web",
            vec![
                backend(1, v1::Health::Healthy, ""),
                backend(2, v1::Health::Unhealthy, ""),
            ],
            "r2",
        )],
        ..Default::default()
    };
    StatusView {
        cluster,
        views,
        highest_term: 7,
        state: Some(state),
        leases: Some(leases()),
    }
}

#[test]
fn status_shows_members_vips_services_and_differences() {
    assert_eq!(
        status_text(&status_view()),
        lines(&[
            "cluster   c-1",
            "leader    1 (10.0.0.1:7401)",
            "term      7",
            "commit    120   applied 119   revision 55",
            "",
            "ID  ADDRESS        ROLE   STATE         TERM  APPLIED  LAG",
            "1   10.0.0.1:7401  voter  leader        7     119      0",
            "2   10.0.0.2:7401  voter  stale leader  6     118      2",
            "3   10.0.0.3:7401  voter  unreachable   -     -        120",
            "",
            "VIP      ADDRESS          OWNER  EPOCH  STATE  LEASE    HELD BY",
            "web-vip  10.213.0.100/24  1      3      held   4500 ms  1,2",
            "",
            "SERVICE  BACKENDS               RELEASE",
            "web      1=healthy 2=unhealthy  r2",
            "",
            "agents (or their HAProxy) differ from the decisions:",
            "  web-vip: node 2 holds it at epoch 2, but the cluster gave it to node 1 at epoch 3",
        ])
    );
}

#[test]
fn status_without_a_leader_or_its_leases_says_so() {
    let mut v = status_view();
    v.cluster.leader_id = 0;
    v.cluster.leader_addr.clear();
    v.cluster.raft_state = "follower".into();
    v.cluster.header = None;
    v.leases = None;
    v.state.as_mut().unwrap().services.clear();
    assert_eq!(
        status_text(&v),
        lines(&[
            "cluster   c-1",
            "leader    none ()",
            "term      7",
            "commit    120   applied 119   revision 0",
            "",
            "ID  ADDRESS        ROLE   STATE         TERM  APPLIED  LAG",
            "1   10.0.0.1:7401  voter  leader        7     119      -",
            "2   10.0.0.2:7401  voter  stale leader  6     118      -",
            "3   10.0.0.3:7401  voter  unreachable   -     -        -",
            "",
            "VIP      ADDRESS          OWNER  EPOCH  STATE  LEASE  HELD BY",
            "web-vip  10.213.0.100/24  1      3      held   -      ?",
            "",
            "(leases unknown: no leader answered)",
        ])
    );
    // No state at all: the members alone.
    v.state = None;
    let text = status_text(&v);
    assert!(
        text.ends_with("3   10.0.0.3:7401  voter  unreachable   -     -        -\n"),
        "{text}"
    );
}

#[test]
fn status_json_has_every_members_own_view() {
    let j = status_json(&status_view());
    assert_eq!(j["cluster_id"], json!("c-1"));
    assert_eq!(j["leader_id"], json!(1));
    assert_eq!(j["revision"], json!(55));
    assert_eq!(
        j["members"][0],
        json!({"id": 1, "addr": "10.0.0.1:7401", "role": "voter", "matched_index": 120, "lag": 0,
               "reachable": true, "raft_state": "leader", "stale_leader": false, "term": 7,
               "applied_index": 119, "commit_index": 120})
    );
    assert_eq!(j["members"][1]["stale_leader"], json!(true));
    assert_eq!(
        j["members"][2],
        json!({"id": 3, "addr": "10.0.0.3:7401", "role": "voter", "matched_index": 0, "lag": 120,
               "reachable": false, "error": "unavailable: no route"})
    );
    assert_eq!(j["vips"][0]["held_by"], json!([1, 2]));
    assert_eq!(
        j["differences"],
        json!([
            "web-vip: node 2 holds it at epoch 2, but the cluster gave it to node 1 at epoch 3"
        ])
    );
    let mut v = status_view();
    v.cluster.raft_state = "follower".into();
    v.leases = None;
    let j = status_json(&v);
    assert_eq!(j["members"][0]["lag"], json!(null));
    assert_eq!(j["members"][0]["matched_index"], json!(null));
    assert_eq!(j["differences"], json!(null));
    v.state = None;
    assert_eq!(status_json(&v)["vips"], json!(null));
}

#[test]
fn state_show_is_the_node_service_and_vip_tables() {
    let s = v1::GetStateResponse {
        nodes: nodes()[..1].to_vec(),
        services: vec![service("db", vec![], "")],
        vips: vec![vip("spare", 0, 0)],
        ..Default::default()
    };
    assert_eq!(
        state_out(&s, Output::Table),
        lines(&[
            "NODES",
            "ID  ADDRESS        ROLE   ADMIN   AGENT",
            "1   10.0.0.1:7401  voter  active  alive",
            "",
            "SERVICES",
            "SERVICE  BACKENDS  RELEASE",
            "db",
            "",
            "VIPS",
            "NAME   ADDRESS          INTERFACE  SERVICE  OWNER  EPOCH  STATE",
            "spare  10.213.0.100/24  eth0       web      -      0      unowned",
        ])
    );
    let j: serde_json::Value = serde_json::from_str(&state_out(&s, Output::Json)).unwrap();
    assert_eq!(j["nodes"][0]["addr"], json!("10.0.0.1:7401"));
    assert_eq!(j["vips"][0]["name"], json!("spare"));
    assert_eq!(j["lease"], json!(null));
}

#[test]
fn lease_settings() {
    let l = v1::LeaseSettings {
        lease_ms: 3000,
        renew_ms: 1000,
        drift_ms: 30,
        margin_ms: 40,
        wait_ms: 3040,
    };
    assert_eq!(
        lease_out(&l, Output::Table),
        lines(&[
            "lease     3000 ms",
            "renew     every 1000 ms",
            "drift     30 ms (the agent's deadline: lease - drift)",
            "margin    40 ms (the leader's expiry: lease + margin)",
            "new-leader wait 3040 ms",
        ])
    );
    // JSON on one line.
    assert_eq!(
        lease_out(&l, Output::Json),
        "{\"drift_ms\":30,\"lease_ms\":3000,\"margin_ms\":40,\"renew_ms\":1000,\"wait_ms\":3040}\n"
    );
}

/// Keys, watches, releases, rollouts, backups and the bench: the data verbs' output.
mod data;
