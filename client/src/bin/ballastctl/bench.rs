//! `bench`: put, linearizable get and serializable get throughput and latency at several
//! concurrencies, against the cluster it is given. It writes keys under `bench/`; it does
//! not clean them up.

use std::time::{Duration, Instant};

use ballast_client::v1::ReadConsistency::{Lease, ReadIndex};
use ballast_client::{Client, Error};

use crate::output::{self, BenchResult, Output};

#[derive(Debug, PartialEq, clap::Args)]
pub(crate) struct BenchArgs {
    /// Operations to measure, comma separated: put, get (linearizable, as the members'
    /// --read-policy says), rget (linearizable by a quorum round), lget (linearizable by the
    /// leader's lease), sget (serializable get, answered by whichever member is asked: the
    /// client round trip alone).
    #[arg(long, default_value = "put,get")]
    ops: String,
    /// Concurrency levels, comma separated.
    #[arg(long, default_value = "1,16,64")]
    concurrency: String,
    /// Seconds per (op, concurrency) pair.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
}

/// The latency below which a fraction `p` of `sorted` lies (nearest rank; 0 when empty).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Comma-separated items, trimmed, empty ones left out.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

pub(crate) async fn run(c: &Client, a: BenchArgs, out: Output) -> Result<(), Error> {
    let _ = c.find_leader().await;
    let value = vec![b'x'; a.value_size];
    // Make sure the keys exist so that gets read real values.
    for k in 0..a.keys.min(1000) {
        c.put(format!("bench/{k}"), value.clone()).await?;
    }
    let mut results = Vec::new();
    for op in items(&a.ops) {
        if !matches!(op, "put" | "get" | "rget" | "lget" | "sget") {
            return Err(Error::InvalidArgument(format!(
                "unknown op {op:?}; use put, get, rget, lget or sget"
            )));
        }
        for conc in items(&a.concurrency) {
            let conc: usize = conc.parse().map_err(|_| {
                Error::InvalidArgument(format!("concurrency {conc:?} is not a number"))
            })?;
            let r = measure(c, op, conc, &a, &value).await?;
            if out == Output::Table {
                print!("{}", output::bench_line(&r));
            }
            results.push(output::bench_json(&r));
        }
    }
    if out == Output::Json {
        print!("{}", output::pretty(&serde_json::json!(results)));
    }
    Ok(())
}

/// Runs `op` from `conc` concurrent tasks for `a.seconds`, each on its own keys in turn.
async fn measure(
    c: &Client,
    op: &str,
    conc: usize,
    a: &BenchArgs,
    value: &[u8],
) -> Result<BenchResult, Error> {
    let end = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for w in 0..conc {
        let c = c.clone();
        let value = value.to_vec();
        let op = op.to_string();
        let keys = a.keys.max(1);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = w;
            while Instant::now() < end {
                let key = format!("bench/{}", i % keys);
                i += conc;
                let t = Instant::now();
                let r = match op.as_str() {
                    "put" => c.put(key, value.clone()).await.map(|_| ()),
                    // A serializable get is one client round trip and no Raft work: the
                    // floor every other figure stands on.
                    "sget" => c.get(key, true).await.map(|_| ()),
                    "rget" => c.get_with(key, ReadIndex).await.map(|_| ()),
                    "lget" => c.get_with(key, Lease).await.map(|_| ()),
                    _ => c.get(key, false).await.map(|_| ()),
                };
                match r {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| Error::Other(e.to_string()))?;
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64().max(a.seconds as f64);
    lat.sort_unstable();
    Ok(BenchResult {
        op: op.to_string(),
        concurrency: conc,
        ops_per_sec: lat.len() as f64 / secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        count: lat.len(),
        errors,
        value_size: a.value_size,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::error::ErrorKind;

    use super::{items, percentile, BenchArgs};
    use crate::test_args::{assert_refused, cmd};
    use crate::Cmd;

    #[test]
    fn bench_options_parse_with_their_defaults() {
        assert_eq!(
            cmd("bench"),
            Cmd::Bench(BenchArgs {
                ops: "put,get".into(),
                concurrency: "1,16,64".into(),
                seconds: 10,
                value_size: 64,
                keys: 1000,
            })
        );
        assert_eq!(
            cmd("bench --ops sget --concurrency 8 --seconds 2 --value-size 1024 --keys 10"),
            Cmd::Bench(BenchArgs {
                ops: "sget".into(),
                concurrency: "8".into(),
                seconds: 2,
                value_size: 1024,
                keys: 10,
            })
        );
        assert_refused(&[
            ("bench --seconds x", ErrorKind::ValueValidation),
            ("bench put", ErrorKind::UnknownArgument),
        ]);
    }

    #[test]
    fn lists_and_percentiles() {
        assert_eq!(items(" put, ,get,").collect::<Vec<_>>(), ["put", "get"]);
        let ms = |n: u64| Duration::from_millis(n);
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 0.5), ms(51));
        assert_eq!(percentile(&sorted, 0.99), ms(99));
        assert_eq!(percentile(&sorted[..1], 0.99), ms(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
