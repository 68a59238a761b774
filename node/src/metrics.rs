//! Prometheus metrics of a member, served on `/metrics`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::types::Raft;
use openraft::async_runtime::WatchReceiver;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    // Registration only fails on a duplicate name, which is a programming error caught by tests.
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("metric registered twice");
    c
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "ballast_apply_duration_seconds",
                "Time to apply one batch of committed entries to the state machine",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap(),
    )
});

pub static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "ballast_request_duration_seconds",
                "Latency of public API requests, by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .unwrap(),
    )
});

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "ballast_requests_total",
                "Public API requests, by method and status code",
            ),
            &["method", "code"],
        )
        .unwrap(),
    )
});

macro_rules! counter {
    ($name:ident, $metric:expr, $help:expr) => {
        pub static $name: LazyLock<prometheus::IntCounter> =
            LazyLock::new(|| register(prometheus::IntCounter::new($metric, $help).unwrap()));
    };
}

counter!(
    RAFT_REFUSED,
    "ballast_raft_refused_total",
    "Raft messages refused because they came from another cluster"
);
counter!(
    ACCEPT_ERRORS,
    "ballast_accept_errors_total",
    "Failed accepts on the gRPC port that made the accept loop pause (out of file descriptors or memory)"
);

macro_rules! gauge {
    ($name:ident, $metric:expr, $help:expr) => {
        pub static $name: LazyLock<IntGauge> =
            LazyLock::new(|| register(IntGauge::new($metric, $help).unwrap()));
    };
}

gauge!(TERM, "ballast_raft_term", "Current Raft term");
gauge!(
    LEADER,
    "ballast_raft_leader_id",
    "Id of the known leader (0 when unknown)"
);
gauge!(
    IS_LEADER,
    "ballast_raft_is_leader",
    "1 when this member is the leader"
);
gauge!(
    LAST_LOG,
    "ballast_raft_last_log_index",
    "Index of the last log entry"
);
gauge!(
    COMMIT,
    "ballast_raft_commit_index",
    "Highest committed log index"
);
gauge!(
    APPLIED,
    "ballast_raft_applied_index",
    "Highest applied log index"
);
gauge!(
    SNAPSHOT,
    "ballast_raft_snapshot_index",
    "Log index of the last snapshot"
);
gauge!(
    REVISION,
    "ballast_revision",
    "Cluster revision applied on this member"
);

/// Copies Raft metrics into the gauges.
pub fn update_from_raft(raft: &Raft, committed: u64, revision: u64) {
    let m = raft.metrics().borrow_watched().clone();
    TERM.set(m.current_term as i64);
    LEADER.set(m.current_leader.unwrap_or(0) as i64);
    IS_LEADER.set((m.current_leader == Some(m.id)) as i64);
    LAST_LOG.set(m.last_log_index.unwrap_or(0) as i64);
    APPLIED.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
    SNAPSHOT.set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
    COMMIT.set(committed as i64);
    REVISION.set(revision as i64);
}

/// The text exposition of every metric.
pub fn render() -> String {
    // Touch the lazies so that every metric appears even before its first observation.
    let _ = (
        &*APPLY_SECONDS,
        &*REQUEST_SECONDS,
        &*REQUESTS,
        &*RAFT_REFUSED,
        &*TERM,
        &*LEADER,
    );
    let _ = (
        &*IS_LEADER,
        &*LAST_LOG,
        &*COMMIT,
        &*APPLIED,
        &*SNAPSHOT,
        &*REVISION,
    );
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut buf)
        .expect("text encoding of metrics");
    String::from_utf8(buf).unwrap_or_default()
}
