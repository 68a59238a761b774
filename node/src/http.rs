//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics;
use crate::node::Node;
use openraft::async_runtime::WatchReceiver;

/// Serves until `stop` turns true.
pub async fn serve(node: Arc<Node>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(node);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn metrics_handler(State(node): State<Arc<Node>>) -> String {
    metrics::update_from_raft(&node.raft, node.committed_index(), node.sm.read().revision);
    metrics::render()
}

/// Alive: the process serves and Raft has not stopped.
async fn healthz(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    let m = node.raft.metrics().borrow_watched().clone();
    match m.running_state {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {e}\n"),
        ),
    }
}

/// Ready: a member of a cluster that has a leader, with the log applied up to what it knows
/// is committed.
async fn readyz(State(node): State<Arc<Node>>) -> (StatusCode, String) {
    let m = node.raft.metrics().borrow_watched().clone();
    if m.running_state.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "raft stopped\n".into());
    }
    if m.membership_config
        .membership()
        .get_node(&node.id)
        .is_none()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not a member of a cluster yet\n".into(),
        );
    }
    let Some(leader) = m.current_leader else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no leader\n".into());
    };
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let committed = node.committed_index();
    if applied < committed {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("applying: {applied} of {committed}\n"),
        );
    }
    (StatusCode::OK, format!("ready; leader {leader}\n"))
}
