//! The register workload's clients: each process reads, writes and compare-and-sets random
//! keys of a few, one operation at a time, and records every operation with its outcome. A
//! process whose operation ended unknown is replaced by a new one with a new client. Checking
//! the history for linearizability is `verdict.rs`'s (with `crate::checker::linear`).

use std::time::Instant;

use ballast_client::v1;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::members::{workload_client, Shared};
use crate::history::{Op, Outcome, RegisterOp};

pub(super) async fn register_client(p: u64, n: u64, shared: Shared, keys: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut process = p;
    let new_client = || workload_client(&shared.members);
    let mut client = new_client();
    let mut next_value = (p as i64) * 1_000_000;
    // The last value this process saw per key: what its CASes expect.
    let mut seen: std::collections::HashMap<String, i64> = Default::default();
    let ns = |t: Instant| t.duration_since(shared.t0).as_nanos() as u64;
    while !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
        let key = format!("r{}", rng.gen_range(0..keys));
        let op = match rng.gen_range(0..3) {
            0 => RegisterOp::Read,
            1 => {
                next_value += 1;
                RegisterOp::Write(next_value)
            }
            _ => {
                next_value += 1;
                RegisterOp::Cas(seen.get(&key).copied().unwrap_or(0), next_value)
            }
        };
        let call = Instant::now();
        let outcome = match &op {
            RegisterOp::Read => match client.get(key.clone(), false).await {
                Ok(r) => Outcome::Ok(r.kv.and_then(|kv| parse(&kv.value))),
                Err(_) => Outcome::Fail, // a read that did not answer constrains nothing
            },
            RegisterOp::Write(v) => match client.put(key.clone(), v.to_string()).await {
                Ok(_) => Outcome::Ok(None),
                Err(ballast_client::Error::InvalidArgument(_)) => Outcome::Fail,
                Err(_) => Outcome::Unknown,
            },
            RegisterOp::Cas(from, to) => match client
                .compare_and_set(
                    key.clone(),
                    v1::compare_and_set_request::Expected::ExpectedValue(
                        from.to_string().into_bytes(),
                    ),
                    to.to_string(),
                )
                .await
            {
                Ok(r) => Outcome::Ok(Some(r.succeeded as i64)),
                Err(ballast_client::Error::InvalidArgument(_)) => Outcome::Fail,
                Err(_) => Outcome::Unknown,
            },
        };
        let ret = Instant::now();
        if let (RegisterOp::Read, Outcome::Ok(Some(v))) = (&op, &outcome) {
            seen.insert(key.clone(), *v);
        }
        let unknown = outcome == Outcome::Unknown;
        shared.history.lock().unwrap().push(Op {
            process,
            key,
            op,
            outcome,
            call: ns(call),
            ret: ns(ret),
        });
        if unknown {
            // The operation may still be in flight: this process is done, a new one takes
            // its place (with a new client, so a new session).
            process += n;
            client = new_client();
        }
    }
}

fn parse(v: &[u8]) -> Option<i64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}
