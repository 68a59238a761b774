//! The API benchmark beside etcd: the same closed-loop load (put, linearizable get) against a
//! three-member Ballast cluster and a three-member etcd 3.4 cluster on the same lab hosts,
//! from the same client host, one after the other.
//!
//! Load: `concurrency` workers, each sending its next request when the last one returned, for
//! a fixed time; keys `bench/0..keys` written beforehand so that gets read real values. Every
//! successful call's latency is recorded; throughput is successes per second.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// etcd's v3 API, the part the benchmark uses (`proto/etcd_kv.proto`).
pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

/// One measured load.
#[derive(Debug, Clone)]
pub struct Figures {
    pub ok: usize,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Nearest-rank percentile of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `concurrency` closed-loop workers for `length`; worker `w` calls `op(w, n)` for its
/// n-th request.
pub async fn measure<F, Fut>(concurrency: usize, length: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let started = Instant::now();
    let end = started + length;
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            let mut n = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                match op(w, n).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                n += 1;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    lat.sort_unstable();
    Figures {
        ok: lat.len(),
        errors,
        elapsed,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

/// Which key worker `w` uses for its `n`-th request: workers walk the key space in step so
/// that they rarely touch the same key at once.
pub fn key_for(w: usize, n: u64, concurrency: usize, keys: usize) -> String {
    let i = (n as usize).wrapping_mul(concurrency).wrapping_add(w) % keys.max(1);
    format!("bench/{i}")
}

/// A connection to every etcd member, and which of them leads.
#[derive(Clone)]
pub struct Etcd {
    pub members: Vec<Channel>,
    pub leader: usize,
}

impl Etcd {
    /// Connects to every endpoint (`host:port`) and asks each for the leader's member id.
    pub async fn connect(endpoints: &[String]) -> Result<Self, String> {
        let mut members = Vec::new();
        let mut leader = None;
        for (i, ep) in endpoints.iter().enumerate() {
            let ch = Channel::from_shared(format!("http://{ep}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| format!("{ep}: {e}"))?;
            let s = etcdpb::maintenance_client::MaintenanceClient::new(ch.clone())
                .status(etcdpb::StatusRequest {})
                .await
                .map_err(|e| format!("{ep}: {e}"))?
                .into_inner();
            let me = s.header.map(|h| h.member_id).unwrap_or(0);
            if s.leader != 0 && s.leader == me {
                leader = Some(i);
            }
            members.push(ch);
        }
        let leader = leader.ok_or("no etcd member says it leads")?;
        Ok(Etcd { members, leader })
    }

    pub async fn put(ch: Channel, key: String, value: Vec<u8>) -> Result<(), String> {
        etcdpb::kv_client::KvClient::new(ch)
            .put(etcdpb::PutRequest {
                key: key.into_bytes(),
                value,
                lease: 0,
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Linearizable (etcd's default) get of one key.
    pub async fn get(ch: Channel, key: String) -> Result<(), String> {
        etcdpb::kv_client::KvClient::new(ch)
            .range(etcdpb::RangeRequest {
                key: key.into_bytes(),
                serializable: false,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `ours / theirs`, for throughput (higher is better for us).
pub fn ratio(ours: f64, theirs: f64) -> String {
    if theirs <= 0.0 {
        return "-".into();
    }
    format!("{:.2}x", ours / theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn workers_walk_disjoint_keys() {
        let keys: Vec<String> = (0..4).map(|w| key_for(w, 3, 4, 1000)).collect();
        assert_eq!(keys, ["bench/12", "bench/13", "bench/14", "bench/15"]);
        assert_eq!(key_for(1, 0, 4, 3), "bench/1");
        assert_eq!(key_for(0, 5, 1, 0), "bench/0");
    }

    #[test]
    fn ratios_say_how_many_times() {
        assert_eq!(ratio(200.0, 100.0), "2.00x");
        assert_eq!(ratio(1.0, 0.0), "-");
    }

    #[tokio::test]
    async fn measure_counts_successes_and_errors() {
        let f = measure(3, Duration::from_millis(50), |w, n| async move {
            tokio::task::yield_now().await;
            if w == 0 && n % 2 == 1 {
                Err("odd".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        assert!(f.ok > 0 && f.errors > 0, "{f:?}");
        assert!(f.elapsed >= Duration::from_millis(50));
        assert!(f.p50 <= f.p99);
    }
}
