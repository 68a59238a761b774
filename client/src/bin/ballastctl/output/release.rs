//! How releases and rollouts look: `release ls` as a table or JSON, `release status` as
//! lines per node (with a progress bar on a terminal) or JSON. Part of `output`: it builds
//! text and JSON, asks no cluster and prints nothing.

use ballast_client::v1;
use serde_json::{json, Value};

use super::{health, pretty, release_status, rollout_state, table, Output};

/// `release ls`: JSON oldest first, the table newest (the active one) first.
pub(crate) fn releases_out(releases: &[v1::Release], out: Output) -> String {
    if out == Output::Json {
        let v: Vec<Value> = releases
            .iter()
            .map(|r| json!({"id": r.id, "artifact": r.artifact, "sha256": r.sha256,
                "status": release_status(r), "failure": r.failure, "registered_ms": r.registered_ms}))
            .collect();
        return pretty(&json!(v));
    }
    table(
        &["RELEASE", "STATUS", "ARTIFACT", "SHA256", "NOTE"],
        releases
            .iter()
            .rev()
            .map(|r| {
                vec![
                    r.id.clone(),
                    release_status(r).into(),
                    r.artifact.clone(),
                    r.sha256[..12.min(r.sha256.len())].to_string(),
                    r.failure.clone(),
                ]
            })
            .collect(),
    )
}

/// `release status -o json`: the service's releases, its rollout and every backend.
pub(crate) fn rollout_json(svc: &v1::Service) -> Value {
    json!({
        "service": svc.name, "active_release": svc.active_release,
        "previous_release": svc.previous_release,
        "rollout": svc.rollout.as_ref().map(|r| json!({
            "release": r.release, "from_release": r.from_release,
            "state": rollout_state(r), "message": r.message,
            "desired": r.desired,
        })),
        "backends": svc.backends.values().map(|b| json!({
            "node_id": b.node_id, "applied_release": b.applied_release,
            "health": b.health, "apply_error": b.apply_error,
        })).collect::<Vec<_>>(),
    })
}

/// One line per node: what it must run, what it runs, its health; with `bar` (on a
/// terminal) the first line carries a progress bar. Lines have no newline.
pub(crate) fn rollout_lines(svc: &v1::Service, bar: bool) -> Vec<String> {
    let Some(r) = &svc.rollout else {
        return vec![format!(
            "{}: no rollout; active {:?}",
            svc.name, svc.active_release
        )];
    };
    let switched = r.desired.values().filter(|d| **d == r.release).count();
    let done = svc
        .backends
        .values()
        .filter(|b| b.applied_release == r.release && r.desired.get(&b.node_id) == Some(&r.release))
        .count();
    let n = svc.backends.len();
    let progress = if bar {
        let width = 20;
        let filled = (done * width).checked_div(n).unwrap_or(0);
        format!("[{}{}] ", "#".repeat(filled), "-".repeat(width - filled))
    } else {
        String::new()
    };
    let mut out = vec![format!(
        "{progress}{}: {} -> {}  {}  switched {switched}/{n}  running it {done}/{n}{}",
        svc.name,
        if r.from_release.is_empty() {
            "(none)"
        } else {
            &r.from_release
        },
        r.release,
        rollout_state(r),
        if r.message.is_empty() {
            String::new()
        } else {
            format!("  ({})", r.message)
        },
    )];
    for (id, b) in &svc.backends {
        let want = r.desired.get(id).map(String::as_str).unwrap_or("");
        let mut line = format!(
            "  node {id}: wants {:<12} runs {:<12} {}",
            if want.is_empty() { "-" } else { want },
            if b.applied_release.is_empty() {
                "-"
            } else {
                &b.applied_release
            },
            health(b.health),
        );
        if !b.apply_error.is_empty() {
            line.push_str(&format!("  failed {}: {}", b.release_failed, b.apply_error));
        }
        out.push(line);
    }
    out
}

/// On a terminal: moves the cursor up `lines` lines and clears from there, so that the next
/// lines replace them.
pub(crate) fn redraw(lines: usize) -> String {
    format!("\x1b[{lines}A\x1b[J")
}
