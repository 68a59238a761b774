//! Everything `ballastctl` shows of the cluster's answers: aligned tables, JSON, the lines
//! of `status`, and the labels they use for roles, admin states, health, VIP states, releases
//! and rollouts. `kv.rs`, `release.rs` and `bench.rs` below it hold what `kv`, `release` and
//! `bench` show; their renderers are re-exported here.
//!
//! Renderers take answers (`v1::*` values) and return text (`String`, each line ending in a
//! newline) or JSON (`Value`); they never talk to the cluster and never print. The verb
//! modules ask the cluster, call them and print what they return, so that what is shown can
//! be tested without a cluster. One-line confirmations of writes ("vip web applied") stay
//! with their verbs.

mod bench;
mod kv;
mod release;

use std::collections::BTreeMap;
use std::path::Path;

use ballast_client::{backup, report, v1, Error};
use clap::ValueEnum;
use serde_json::{json, Value};

pub(crate) use bench::{bench_json, bench_line, BenchResult};
pub(crate) use kv::{cas_json, get_json, range_out, resync_line, watch_lines};
pub(crate) use release::{redraw, releases_out, rollout_json, rollout_lines};

/// The format of read commands (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

/// `v` as indented JSON, with a final newline.
pub(crate) fn pretty(v: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap())
}

/// Bytes as text (invalid UTF-8 shown as U+FFFD).
pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Rows under a header: every column as wide as its widest cell, two spaces between
/// columns, no trailing spaces; one line each.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect();
        format!("{}\n", s.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        out += &line(r);
    }
    out
}

// ---- labels ----

fn role(r: i32) -> &'static str {
    v1::Role::try_from(r)
        .unwrap_or(v1::Role::Unspecified)
        .label()
}

fn admin_label(a: i32) -> &'static str {
    v1::AdminState::try_from(a)
        .unwrap_or(v1::AdminState::Unspecified)
        .label()
}

fn health(h: i32) -> &'static str {
    v1::Health::try_from(h)
        .unwrap_or(v1::Health::Unknown)
        .label()
}

/// A VIP's owner for tables ("-" when nobody owns it).
fn owner_cell(owner: u64) -> String {
    if owner == 0 {
        "-".into()
    } else {
        owner.to_string()
    }
}

pub(crate) fn vip_state(v: &v1::Vip) -> String {
    match (v.owner, v.releasing, v.move_to) {
        (0, _, _) => "unowned".into(),
        (_, true, _) => "releasing".into(),
        (_, false, 0) => "held".into(),
        (_, false, to) => format!("moving to {to}"),
    }
}

fn release_status(r: &v1::Release) -> &'static str {
    match v1::ReleaseStatus::try_from(r.status).unwrap_or(v1::ReleaseStatus::Unspecified) {
        v1::ReleaseStatus::Registered => "registered",
        v1::ReleaseStatus::RollingOut => "rolling out",
        v1::ReleaseStatus::Active => "active",
        v1::ReleaseStatus::Retired => "retired",
        v1::ReleaseStatus::Failed => "failed",
        v1::ReleaseStatus::Unspecified => "?",
    }
}

fn rollout_state(r: &v1::Rollout) -> &'static str {
    match v1::RolloutState::try_from(r.state).unwrap_or(v1::RolloutState::Unspecified) {
        v1::RolloutState::Running => "running",
        v1::RolloutState::Paused => "paused",
        v1::RolloutState::Succeeded => "succeeded",
        v1::RolloutState::RollingBack => "rolling back",
        v1::RolloutState::RolledBack => "rolled back",
        v1::RolloutState::Aborted => "aborted",
        v1::RolloutState::Unspecified => "?",
    }
}

/// The revision of an answer (0 when it carries no header).
pub(crate) fn revision(h: Option<&v1::ResponseHeader>) -> u64 {
    h.map(|h| h.revision).unwrap_or(0)
}

// ---- status ----

/// What `status` shows: the answer that speaks for the cluster (the leader of the highest
/// term, else the first member that answered), every member's own answer by id (one for
/// each of `cluster.members`), and the decided state and the leader's leases where they
/// could be read.
pub(crate) struct StatusView {
    pub(crate) cluster: v1::StatusResponse,
    pub(crate) views: BTreeMap<u64, Result<v1::StatusResponse, Error>>,
    /// The highest term any member answered with.
    pub(crate) highest_term: u64,
    pub(crate) state: Option<v1::GetStateResponse>,
    pub(crate) leases: Option<v1::LeasesResponse>,
}

impl StatusView {
    /// A member's replication lag, known only when a leader speaks for the cluster.
    fn lag(&self, m: &v1::Member) -> Option<u64> {
        (self.cluster.raft_state == "leader").then_some(m.lag)
    }
}

pub(crate) fn status_json(v: &StatusView) -> Value {
    let s = &v.cluster;
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            let lag = v.lag(m);
            let mut j = json!({"id": m.id, "addr": m.addr, "role": role(m.role), "matched_index": lag.map(|_| m.matched_index), "lag": lag});
            match &v.views[&m.id] {
                Ok(own) => {
                    j["reachable"] = json!(true);
                    j["raft_state"] = json!(own.raft_state);
                    j["stale_leader"] =
                        json!(report::member_state(own, v.highest_term) == "stale leader");
                    j["term"] = json!(own.term);
                    j["applied_index"] = json!(own.applied_index);
                    j["commit_index"] = json!(own.commit_index);
                }
                Err(e) => {
                    j["reachable"] = json!(false);
                    j["error"] = json!(e.to_string());
                }
            }
            j
        })
        .collect();
    json!({
        "cluster_id": s.cluster_id,
        "leader_id": s.leader_id,
        "leader_addr": s.leader_addr,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "revision": revision(s.header.as_ref()),
        "members": members,
        "vips": v.state.as_ref().map(|st| vip_leases_json(&st.vips, v.leases.as_ref())),
        "differences": match (&v.state, &v.leases) {
            (Some(st), Some(l)) => json!(report::differences(&st.vips, l)),
            _ => Value::Null,
        },
    })
}

pub(crate) fn status_text(v: &StatusView) -> String {
    let s = &v.cluster;
    let leader = if s.leader_id == 0 {
        "none".to_string()
    } else {
        s.leader_id.to_string()
    };
    let mut out = format!("cluster   {}\n", s.cluster_id);
    out += &format!("leader    {leader} ({})\n", s.leader_addr);
    out += &format!("term      {}\n", s.term);
    out += &format!(
        "commit    {}   applied {}   revision {}\n",
        s.commit_index,
        s.applied_index,
        revision(s.header.as_ref())
    );
    out += "\n";
    let rows = s
        .members
        .iter()
        .map(|m| {
            let (state, term, applied) = match &v.views[&m.id] {
                Ok(own) => (
                    report::member_state(own, v.highest_term),
                    own.term.to_string(),
                    own.applied_index.to_string(),
                ),
                Err(_) => ("unreachable".to_string(), "-".into(), "-".into()),
            };
            vec![
                m.id.to_string(),
                m.addr.clone(),
                role(m.role).to_string(),
                state,
                term,
                applied,
                v.lag(m).map_or("-".into(), |l| l.to_string()),
            ]
        })
        .collect();
    out += &table(
        &["ID", "ADDRESS", "ROLE", "STATE", "TERM", "APPLIED", "LAG"],
        rows,
    );
    let Some(st) = &v.state else {
        return out;
    };
    if !st.vips.is_empty() {
        out += "\n";
        out += &vip_leases_table(&st.vips, v.leases.as_ref());
    }
    if !st.services.is_empty() {
        out += "\n";
        out += &services_table(&st.services);
    }
    match &v.leases {
        Some(l) => {
            let d = report::differences(&st.vips, l);
            if !d.is_empty() {
                out += "\nagents (or their HAProxy) differ from the decisions:\n";
                for line in d {
                    out += &format!("  {line}\n");
                }
            }
        }
        None if !st.vips.is_empty() => out += "\n(leases unknown: no leader answered)\n",
        None => {}
    }
    out
}

/// Lease time left at the leader, as shown to operators.
fn lease_left(vip: &str, leases: Option<&v1::LeasesResponse>) -> Option<u32> {
    leases?
        .leases
        .iter()
        .find(|l| l.vip == vip)
        .map(|l| l.remaining_ms)
}

fn vip_leases_json(vips: &[v1::Vip], leases: Option<&v1::LeasesResponse>) -> Value {
    json!(vips
        .iter()
        .map(|v| json!({
            "name": v.name, "owner": v.owner, "epoch": v.epoch, "state": vip_state(v),
            "lease_remaining_ms": lease_left(&v.name, leases),
            "held_by": leases.map(|l| report::held_by(&v.name, l)),
        }))
        .collect::<Vec<_>>())
}

fn vip_leases_table(vips: &[v1::Vip], leases: Option<&v1::LeasesResponse>) -> String {
    table(
        &[
            "VIP", "ADDRESS", "OWNER", "EPOCH", "STATE", "LEASE", "HELD BY",
        ],
        vips.iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.address.clone(),
                    owner_cell(v.owner),
                    v.epoch.to_string(),
                    vip_state(v),
                    match lease_left(&v.name, leases) {
                        Some(ms) if v.owner != 0 => format!("{ms} ms"),
                        _ => "-".into(),
                    },
                    match leases {
                        Some(l) => {
                            let h: Vec<String> = report::held_by(&v.name, l)
                                .iter()
                                .map(|n| n.to_string())
                                .collect();
                            if h.is_empty() {
                                "nobody".into()
                            } else {
                                h.join(",")
                            }
                        }
                        None => "?".into(),
                    },
                ]
            })
            .collect(),
    )
}

// ---- members, nodes, services, VIPs, the state ----

/// Members with their replication: `leader_view` says the answer came from a leader (only a
/// leader knows how far each member is).
pub(crate) fn members_out(members: &[v1::Member], leader_view: bool, out: Output) -> String {
    let lag = |m: &v1::Member| leader_view.then_some((m.matched_index, m.lag));
    if out == Output::Json {
        let v: Vec<Value> = members
            .iter()
            .map(|m| json!({"id": m.id, "addr": m.addr, "role": role(m.role), "matched_index": lag(m).map(|l| l.0), "lag": lag(m).map(|l| l.1)}))
            .collect();
        return pretty(&json!(v));
    }
    let rows = members
        .iter()
        .map(|m| {
            let (matched, lag) = lag(m).map_or(("-".into(), "-".into()), |(a, b)| {
                (a.to_string(), b.to_string())
            });
            vec![
                m.id.to_string(),
                m.addr.clone(),
                role(m.role).to_string(),
                matched,
                lag,
            ]
        })
        .collect();
    table(&["ID", "ADDRESS", "ROLE", "MATCHED", "LAG"], rows)
}

pub(crate) fn nodes_out(nodes: &[v1::Node], out: Output) -> String {
    if out == Output::Json {
        let v: Vec<Value> = nodes
            .iter()
            .map(|n| json!({"id": n.id, "addr": n.addr, "role": role(n.role), "admin": admin_label(n.admin), "alive": n.alive}))
            .collect();
        return pretty(&json!(v));
    }
    table(
        &["ID", "ADDRESS", "ROLE", "ADMIN", "AGENT"],
        nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.to_string(),
                    n.addr.clone(),
                    role(n.role).into(),
                    admin_label(n.admin).into(),
                    if n.alive {
                        "alive".into()
                    } else {
                        "down".into()
                    },
                ]
            })
            .collect(),
    )
}

/// Services as JSON: every field of the cluster's answer.
pub(crate) fn services_json(services: &[v1::Service]) -> Value {
    serde_json::to_value(services).unwrap_or(Value::Null)
}

pub(crate) fn services_table(services: &[v1::Service]) -> String {
    table(
        &["SERVICE", "BACKENDS", "RELEASE"],
        services
            .iter()
            .map(|s| {
                let b: Vec<String> = s
                    .backends
                    .values()
                    .map(|b| format!("{}={}", b.node_id, health(b.health)))
                    .collect();
                vec![s.name.clone(), b.join(" "), s.active_release.clone()]
            })
            .collect(),
    )
}

pub(crate) fn vips_out(vips: &[v1::Vip], out: Output) -> String {
    if out == Output::Json {
        let v: Vec<Value> = vips
            .iter()
            .map(|v| {
                json!({"name": v.name, "address": v.address, "interface": v.interface, "service": v.service,
                       "owner": v.owner, "epoch": v.epoch, "releasing": v.releasing, "move_to": v.move_to})
            })
            .collect();
        return pretty(&json!(v));
    }
    table(
        &[
            "NAME",
            "ADDRESS",
            "INTERFACE",
            "SERVICE",
            "OWNER",
            "EPOCH",
            "STATE",
        ],
        vips.iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    v.address.clone(),
                    v.interface.clone(),
                    v.service.clone(),
                    owner_cell(v.owner),
                    v.epoch.to_string(),
                    vip_state(v),
                ]
            })
            .collect(),
    )
}

/// `state show`: every field as JSON, or the tables of `node ls`, `service ls` and `vip ls`.
pub(crate) fn state_out(s: &v1::GetStateResponse, out: Output) -> String {
    if out == Output::Json {
        return pretty(&serde_json::to_value(s).unwrap_or(Value::Null));
    }
    format!(
        "NODES\n{}\nSERVICES\n{}\nVIPS\n{}",
        nodes_out(&s.nodes, Output::Table),
        services_table(&s.services),
        vips_out(&s.vips, Output::Table)
    )
}

/// The lease settings in force: JSON on one line, or one line per setting.
pub(crate) fn lease_out(l: &v1::LeaseSettings, out: Output) -> String {
    match out {
        Output::Json => format!(
            "{}\n",
            json!({
                "lease_ms": l.lease_ms, "renew_ms": l.renew_ms, "drift_ms": l.drift_ms,
                "margin_ms": l.margin_ms, "wait_ms": l.wait_ms,
            })
        ),
        Output::Table => format!(
            "lease     {} ms\n\
             renew     every {} ms\n\
             drift     {} ms (the agent's deadline: lease - drift)\n\
             margin    {} ms (the leader's expiry: lease + margin)\n\
             new-leader wait {} ms\n",
            l.lease_ms, l.renew_ms, l.drift_ms, l.margin_ms, l.wait_ms
        ),
    }
}

// ---- backups ----

/// `snapshot save` and `snapshot inspect`: what the backup `file` of `len` bytes holds
/// (`saved`: it was just written).
pub(crate) fn backup_out(
    file: &Path,
    len: usize,
    h: &backup::Header,
    saved: bool,
    out: Output,
) -> String {
    if out == Output::Json {
        return pretty(&json!({
            "file": file.display().to_string(), "bytes": len, "cluster_id": h.cluster_id,
            "revision": h.revision, "created_ms": h.created_ms, "sha256": h.payload_sha256,
        }));
    }
    format!(
        "{} {}: revision {} of cluster {}, {} bytes, state sha256 {}\n",
        if saved { "saved" } else { "valid backup" },
        file.display(),
        h.revision,
        h.cluster_id,
        len,
        h.payload_sha256
    )
}

#[cfg(test)]
mod tests;
