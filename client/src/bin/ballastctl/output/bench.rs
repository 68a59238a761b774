//! How `bench` figures look: a line per (op, concurrency) pair, or JSON. Part of `output`:
//! it formats figures that `bench.rs` measured, and measures and prints nothing itself.

use std::time::Duration;

use serde_json::{json, Value};

/// The figures of one (op, concurrency) pair of `bench`.
pub(crate) struct BenchResult {
    pub(crate) op: String,
    pub(crate) concurrency: usize,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Operations that succeeded.
    pub(crate) count: usize,
    pub(crate) errors: u64,
    pub(crate) value_size: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One pair for `bench -o json` (ops per second rounded to a tenth).
pub(crate) fn bench_json(r: &BenchResult) -> Value {
    json!({
        "op": r.op, "concurrency": r.concurrency, "ops_per_sec": (r.ops_per_sec * 10.0).round() / 10.0,
        "p50_ms": ms(r.p50), "p99_ms": ms(r.p99),
        "count": r.count, "errors": r.errors, "value_size": r.value_size,
    })
}

/// One pair as a line of `bench`'s table.
pub(crate) fn bench_line(r: &BenchResult) -> String {
    format!(
        "{:<4} c={:<3} {:>9.1} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} ok, {} errors)\n",
        r.op,
        r.concurrency,
        r.ops_per_sec,
        ms(r.p50),
        ms(r.p99),
        r.count,
        r.errors
    )
}
