//! HAProxy follows the cluster's view of backend health (`--haproxy-socket`,
//! `--haproxy-backend SERVICE=BACKEND`). Every second the agent compares, for each mapped
//! service, what the cluster decided for each backend node with what the local HAProxy's
//! runtime API reports (`show servers state BACKEND`), and sets the servers that differ
//! (`set server BACKEND/nID state ready|drain|maint`). Servers are named `n<node id>` in the
//! HAProxy configuration. Because it compares every second, states are re-applied after an
//! HAProxy reload or restart, which starts every server ready.
//!
//! The decision per backend node: `maint` when the node is in maintenance, down, or its
//! backend is not healthy; `drain` when the node is draining; `ready` otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq)]
pub struct HaproxyConfig {
    /// The runtime API socket (`stats socket ... level admin`).
    pub socket: PathBuf,
    /// Service -> HAProxy backend.
    pub backends: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Ready,
    Drain,
    Maint,
}

impl Want {
    pub fn word(self) -> &'static str {
        match self {
            Want::Ready => "ready",
            Want::Drain => "drain",
            Want::Maint => "maint",
        }
    }
}

/// Server name -> state, for every backend node of `service`.
pub fn desired(state: &v1::GetStateResponse, service: &str) -> BTreeMap<String, Want> {
    let Some(svc) = state.services.iter().find(|s| s.name == service) else {
        return BTreeMap::new();
    };
    svc.backends
        .iter()
        .map(|(id, b)| {
            let node = state.nodes.iter().find(|n| n.id == *id);
            let admin = node.map_or(v1::AdminState::Active as i32, |n| n.admin);
            let alive = node.is_some_and(|n| n.alive);
            let want = if admin == v1::AdminState::Maintenance as i32 {
                Want::Maint
            } else if admin == v1::AdminState::Draining as i32 {
                Want::Drain
            } else if alive && b.health == v1::Health::Healthy as i32 {
                Want::Ready
            } else {
                Want::Maint
            };
            (format!("n{id}"), want)
        })
        .collect()
}

/// HAProxy's admin-state bits that matter here: forced maintenance (0x01) or inherited
/// maintenance (0x02, 0x04), forced drain (0x08).
fn want_of_admin(bits: u32) -> Want {
    if bits & 0x07 != 0 {
        Want::Maint
    } else if bits & 0x08 != 0 {
        Want::Drain
    } else {
        Want::Ready
    }
}

/// Server name -> state, from `show servers state BACKEND`.
pub fn parse_servers_state(text: &str) -> BTreeMap<String, Want> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
            let bits: u32 = f.get(6)?.parse().ok()?;
            Some((f.get(3)?.to_string(), want_of_admin(bits)))
        })
        .collect()
}

/// One runtime API command; HAProxy answers and closes.
pub async fn command(socket: &Path, cmd: &str) -> std::io::Result<String> {
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    s.write_all(format!("{cmd}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::other("HAProxy did not answer within 2 s"))??;
    Ok(out)
}

/// What one pass over a backend did, and what it could not fix.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// `backend/server state` set in this pass.
    pub changed: Vec<String>,
    /// Servers still not as decided: HAProxy refused the state, or has no such server.
    pub differs: Vec<v1::HaproxyDiff>,
}

/// Sets every server of `backend` whose state differs from `want`. A server the
/// configuration lacks, or a state HAProxy refuses, is reported in `differs`, not fatal.
pub async fn reconcile(
    socket: &Path,
    backend: &str,
    want: &BTreeMap<String, Want>,
) -> std::io::Result<Reconciled> {
    let current =
        parse_servers_state(&command(socket, &format!("show servers state {backend}")).await?);
    let mut out = Reconciled::default();
    for (server, w) in want {
        let differs = |have: &str| v1::HaproxyDiff {
            backend: backend.to_string(),
            server: server.clone(),
            want: w.word().to_string(),
            have: have.to_string(),
        };
        match current.get(server) {
            Some(c) if c == w => {}
            Some(c) => {
                let answer = command(
                    socket,
                    &format!("set server {backend}/{server} state {}", w.word()),
                )
                .await?;
                if answer.trim().is_empty() {
                    out.changed.push(format!("{backend}/{server} {}", w.word()));
                } else {
                    tracing::warn!(%backend, %server, answer = answer.trim(), "HAProxy refused a state");
                    out.differs.push(differs(c.word()));
                }
            }
            None => {
                tracing::warn!(%backend, %server, "HAProxy has no such server (name servers n<node id>)");
                out.differs.push(differs("missing"));
            }
        }
    }
    Ok(out)
}

/// What the agent last saw of its HAProxy, sent with every renewal for `ballastctl status`.
#[derive(Debug, Default, Clone)]
pub struct HaproxyView {
    pub differs: Vec<v1::HaproxyDiff>,
    /// Why HAProxy cannot be driven at all (empty: it can).
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str =
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
2 be_web 1 n1 127.0.0.1 2 8 1\n2 be_web 2 n2 127.0.0.1 0 1 1\n2 be_web 3 n3 127.0.0.1 2 0 1\n\n";

    #[test]
    fn haproxy_states_parse_from_the_admin_bits() {
        let s = parse_servers_state(SHOW);
        assert_eq!(s["n1"], Want::Drain);
        assert_eq!(s["n2"], Want::Maint);
        assert_eq!(s["n3"], Want::Ready);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn the_decision_follows_admin_state_liveness_and_health() {
        let node = |id, admin: v1::AdminState, alive| v1::Node {
            id,
            admin: admin as i32,
            alive,
            ..Default::default()
        };
        let backend = |h: v1::Health| v1::Backend {
            health: h as i32,
            ..Default::default()
        };
        let state = v1::GetStateResponse {
            nodes: vec![
                node(1, v1::AdminState::Active, true),
                node(2, v1::AdminState::Active, true),
                node(3, v1::AdminState::Draining, true),
                node(4, v1::AdminState::Maintenance, true),
                node(5, v1::AdminState::Active, false),
            ],
            services: vec![v1::Service {
                name: "web".into(),
                backends: [
                    (1, backend(v1::Health::Healthy)),
                    (2, backend(v1::Health::Unhealthy)),
                    (3, backend(v1::Health::Healthy)),
                    (4, backend(v1::Health::Healthy)),
                    (5, backend(v1::Health::Healthy)),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let d = desired(&state, "web");
        assert_eq!(d["n1"], Want::Ready);
        assert_eq!(d["n2"], Want::Maint);
        assert_eq!(d["n3"], Want::Drain);
        assert_eq!(d["n4"], Want::Maint);
        assert_eq!(d["n5"], Want::Maint);
        assert!(desired(&state, "other").is_empty());
    }
}
