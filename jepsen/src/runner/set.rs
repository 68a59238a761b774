//! The set workload: its clients (unique adds, each a key under "set/", paced), the values
//! and the final checks. Every element's value is derived from the element (64 bytes to
//! 200 KiB, skewed toward small), so the final read can tell a value that came back damaged;
//! the final read pages through the set; after it every member must be running and caught up.
//! The members' timing flags in set runs are here too.
//!
//! Not here: the run's schedule (`mod.rs`), the verdict on the adds and the final read
//! (`verdict.rs`, with `crate::checker::set`).

use std::time::{Duration, Instant};

use ballast_client::{v1, Client};

use super::members::{ask_cluster, workload_client, Members, Shared};
use crate::history::{Op, Outcome, RegisterOp};
use crate::lab::{Lab, LabProcess};

/// Adds per second, all set clients together: the state grows by about 3 KiB per add
/// ([`value_len`]), so a 10-minute run ends near 45 MB.
const SET_RATE: f64 = 25.0;

/// At most this many keys per read of the final read: 64 values of 200 KiB fit the 16 MiB
/// message limit.
const PAGE: u32 = 64;

/// How long the members have after the final read to be up and to have applied what was
/// committed.
const REJOIN: Duration = Duration::from_secs(60);

/// The members' timing flags in set runs. openraft 0.9 gives an AppendEntries one heartbeat
/// (50 ms by default) and resends one that timed out unchanged, for ever (issue 13, item 8);
/// a debug build of ballastd on this machine takes longer than that to move AppendEntries
/// full of the set's larger values, and replication to a member that fell behind never
/// resumes. Debug builds (CI's) therefore run their members with a 200 ms heartbeat (and the
/// election timeout and lease that must follow it); release builds keep the defaults.
pub(super) fn timing() -> Vec<String> {
    if !cfg!(debug_assertions) {
        return Vec::new();
    }
    [
        "--heartbeat-ms",
        "200",
        "--election-timeout-min-ms",
        "600",
        "--election-timeout-max-ms",
        "1200",
        "--vip-lease-ms",
        "3500",
        "--node-down-after-ms",
        "5000",
    ]
    .map(String::from)
    .to_vec()
}

fn mix(e: i64) -> u64 {
    // splitmix64
    let mut z = (e as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The length of element `e`'s value: 90% from 64 B to 1 KiB, 8% to 16 KiB, 1.5% to
/// 128 KiB, 0.5% from 128 to 200 KiB (above sled's blob threshold on their own); about
/// 3.1 KiB on average.
fn value_len(e: i64) -> usize {
    let h = mix(e);
    let (pick, within) = (h % 1000, (h >> 10) as usize);
    let (lo, hi) = match pick {
        0..=899 => (64, 1024),
        900..=979 => (1024, 16 * 1024),
        980..=994 => (16 * 1024, 128 * 1024),
        _ => (128 * 1024, 200 * 1024),
    };
    lo + within % (hi - lo + 1)
}

/// Element `e`'s value: [`value_len`] bytes that depend on `e`.
fn value(e: i64) -> Vec<u8> {
    pseudo_random_bytes(mix(e), value_len(e))
}

/// `len` bytes of a xorshift stream seeded with `seed`: cheap, and different for every seed.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The whole set, read linearizably from the client host once the cluster recovered, in
/// pages (a prefix with more than [`PAGE`] keys is read as its ten longer prefixes): the
/// elements present, and those whose value is not the one added.
pub(super) fn read_set(lab: &Lab, members: &Members) -> Result<(Vec<i64>, Vec<i64>), String> {
    ask_cluster(members, lab, Duration::from_secs(30), |c| async move {
        let (mut found, mut damaged) = (Vec::new(), Vec::new());
        let mut prefixes = vec!["set/".to_string()];
        while let Some(p) = prefixes.pop() {
            let r = c
                .range(p.clone(), PAGE, false)
                .await
                .map_err(|e| format!("final read of {p}: {e}"))?;
            if r.more {
                prefixes.extend((0..10).map(|d| format!("{p}{d}")));
                continue;
            }
            for kv in r.kvs {
                let Some(e) = std::str::from_utf8(&kv.key)
                    .ok()
                    .and_then(|k| k.strip_prefix("set/")?.parse().ok())
                else {
                    continue;
                };
                if kv.value != value(e) {
                    damaged.push(e);
                }
                found.push(e);
            }
        }
        found.sort_unstable();
        damaged.sort_unstable();
        Ok((found, damaged))
    })
    .unwrap_or_else(|| Err("final read: the client thread failed".into()))
}

/// Members that are not running, or have not applied what the cluster had committed
/// within [`REJOIN`] (empty: every member reopened and rejoined).
pub(super) fn not_rejoined(
    lab: &Lab,
    members: &Members,
    procs: &mut [Option<LabProcess>],
) -> Vec<String> {
    let mut problems: Vec<String> = procs
        .iter_mut()
        .enumerate()
        .filter_map(|(i, p)| {
            (!p.as_mut().is_some_and(|p| p.is_running()))
                .then(|| format!("n{}: not running", i + 1))
        })
        .collect();
    let endpoints = members.endpoints.clone();
    let lagging = ask_cluster(members, lab, Duration::from_secs(2), move |c| async move {
        let target = statuses(&c, &endpoints)
            .await
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .map(|s| s.commit_index)
            .max()
            .unwrap_or(0);
        let deadline = Instant::now() + REJOIN;
        loop {
            let lagging: Vec<String> = statuses(&c, &endpoints)
                .await
                .iter()
                .zip(1..)
                .filter_map(|(s, id)| match s {
                    Ok(s) if s.applied_index >= target && s.leader_id != 0 => None,
                    Ok(s) => Some(format!(
                        "n{id}: applied {} of {target} committed, leader {}",
                        s.applied_index, s.leader_id
                    )),
                    Err(e) => Some(format!("n{id}: {e}")),
                })
                .collect();
            if lagging.is_empty() || Instant::now() > deadline {
                return lagging;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .unwrap_or_else(|| vec!["the status thread failed".into()]);
    problems.extend(lagging);
    problems
}

/// Each member's own status, in endpoint order.
async fn statuses(c: &Client, endpoints: &[String]) -> Vec<Result<v1::StatusResponse, String>> {
    let mut out = Vec::new();
    for ep in endpoints {
        out.push(c.member_status(ep).await.map_err(|e| e.to_string()));
    }
    out
}

/// Adds unique elements (each a key under "set/") until stopped.
pub(super) async fn set_client(p: u64, n: u64, shared: Shared) {
    let new_client = || workload_client(&shared.members);
    let mut client = new_client();
    let mut process = p;
    let ns = |t: Instant| t.duration_since(shared.t0).as_nanos() as u64;
    let mut next = (p as i64) * 1_000_000;
    // Paced so that all clients together add at most SET_RATE per second.
    let every = Duration::from_secs_f64(n as f64 / SET_RATE);
    let mut due = Instant::now();
    while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep_until(due.into()).await;
        due = Instant::now().max(due + every);
        next += 1;
        let call = Instant::now();
        let outcome = match client.put(format!("set/{next:020}"), value(next)).await {
            Ok(_) => Outcome::Ok(None),
            Err(ballast_client::Error::InvalidArgument(_)) => Outcome::Fail,
            Err(_) => Outcome::Unknown,
        };
        let unknown = outcome == Outcome::Unknown;
        shared.history.lock().unwrap().push(Op {
            process,
            key: "set".into(),
            op: RegisterOp::Write(next),
            outcome,
            call: ns(call),
            ret: ns(Instant::now()),
        });
        if unknown {
            process += n;
            client = new_client();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_span_64_bytes_to_200_kib_and_average_about_3_kib() {
        let lens: Vec<usize> = (0..100_000).map(value_len).collect();
        assert_eq!(*lens.iter().min().unwrap(), 64);
        assert!(*lens.iter().max().unwrap() <= 200 * 1024);
        assert!(*lens.iter().max().unwrap() > 199 * 1024);
        let mean = lens.iter().sum::<usize>() / lens.len();
        assert!((2_500..4_000).contains(&mean), "{mean}");
        let above = lens.iter().filter(|l| **l > 131_020).count();
        assert!(
            (300..700).contains(&above),
            "{above} of 100000 above sled's blob threshold"
        );
        assert_eq!(value(7), value(7));
        assert_ne!(value(7)[..64], value(8)[..64]);
    }
}
