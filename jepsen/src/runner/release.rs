//! The release workload: rollouts under faults. A three-member [`VipLab`] whose service
//! serves each node's current release (see [`crate::releaselab`]); before the run the first
//! release runs everywhere and every other one is registered, among them one that is never
//! activated. Each fault starts with a rollout of the next release (batch 1, 1 s healthy
//! gate), so faults hit rollouts mid-way; every third release is broken (its health check
//! fails) and must roll back by itself. Clients on the client host request every node's
//! service and the VIP's every 50 ms. After healing the cluster gets [`SETTLE`] to finish what
//! it started; then the active release and each node's are read once more.
//!
//! Here: the whole run (its own schedule) and its history lines. Not here: the faults' mechanics
//! (`faults.rs`), the verdict on the lines (`verdict.rs`, with `crate::checker::release`),
//! storing the run (`store.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ballast_client::v1;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::faults::{end_fault, inject};
use super::members::{ask_cluster, Members};
use super::options::Options;
use super::store::{timestamp, write_reports, write_results};
use super::verdict::{check_lines, Results};
use crate::checker::release as rc;
use crate::history::{write_history, Line};
use crate::http::{get, Answer, HttpProber};
use crate::lab::Lab;
use crate::releaselab::{self, artifact_dir, release_of, PORT};
use crate::viplab::{VipLab, VIP};

/// One release in this many is broken.
const BROKEN_EVERY: usize = 3;
/// How long after healing the cluster has to finish its rollout and agree.
const SETTLE: Duration = Duration::from_secs(90);
/// A release registered and never activated: serving it is a violation.
const NEVER: &str = "never";

pub(super) fn run_release(o: &Options) -> Result<(PathBuf, Results), String> {
    let work = std::env::temp_dir().join(format!(
        "ballast-release-{}-{}",
        std::process::id(),
        timestamp()
    ));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let rounds = (o.time_limit.as_secs() / 7 + 2) as usize;
    let ids: Vec<String> = (1..=rounds + 1).map(|i| format!("r{i}")).collect();
    let art = |i: usize, id: &str| {
        let text = if i > 0 && i.is_multiple_of(BROKEN_EVERY) {
            format!("broken {id}\n")
        } else {
            format!("release {id}\n")
        };
        artifact_dir(&work, id, &text)
    };
    let first = art(0, &ids[0]);
    let (mut v, _, _) =
        VipLab::start_opts(releaselab::options((ids[0].clone(), first.0, first.1), 3));
    for (i, id) in ids.iter().enumerate().skip(1) {
        releaselab::register(&v, id, &art(i, id))?;
    }
    releaselab::register(&v, NEVER, &artifact_dir(&work, NEVER, "release never\n"))?;

    let t0 = Instant::now();
    let ns = |t: Instant| t.saturating_duration_since(t0).as_nanos() as u64;
    let every = Duration::from_millis(50);
    let mut probers: Vec<(String, HttpProber)> = Vec::new();
    let vip: std::net::Ipv4Addr = VIP.parse().expect("VIP");
    probers.push((
        "vip".into(),
        HttpProber::start(v.lab.client(), vip, PORT, every).map_err(|e| e.to_string())?,
    ));
    for h in v.lab.nodes().to_vec() {
        let p =
            HttpProber::start(v.lab.client(), h.addr, PORT, every).map_err(|e| e.to_string())?;
        probers.push((h.name.clone(), p));
    }
    let members = Members::plain(v.lab.member_endpoints(v.members));

    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut faults = Vec::new();
    let mut activations = Vec::new();
    let mut next = 1;
    let end = t0 + o.time_limit;
    let (quiet, hold) = (Duration::from_secs(3), Duration::from_secs(4));
    std::thread::sleep(quiet.min(o.time_limit));
    while Instant::now() + hold < end {
        let start = Instant::now();
        let injected = if o.nemeses.is_empty() {
            None
        } else {
            let nemesis = o.nemeses[rng.gen_range(0..o.nemeses.len())];
            Some((
                nemesis,
                inject(&v.lab, &mut v.procs, nemesis, &mut rng, &members)?,
            ))
        };
        if next < ids.len() {
            activations.push(activate(&v.lab, &members, &ids[next], ns));
            next += 1;
        }
        std::thread::sleep(hold.saturating_sub(start.elapsed()));
        if let Some((nemesis, (detail, undo))) = injected {
            faults.push(end_fault(&mut v, nemesis, detail, undo, ns(start), ns)?);
        }
        std::thread::sleep(quiet.min(end.saturating_duration_since(Instant::now())));
    }
    v.lab.heal().map_err(|e| e.to_string())?;

    // Settle: the rollout in a final state and every node answering with the active release.
    let nodes: Vec<(String, std::net::Ipv4Addr)> = v
        .lab
        .nodes()
        .iter()
        .map(|h| (h.name.clone(), h.addr))
        .collect();
    let read_nodes = |v: &VipLab| -> BTreeMap<String, Option<String>> {
        let nodes = nodes.clone();
        v.lab
            .run_in(v.lab.client(), move || {
                nodes
                    .into_iter()
                    .map(|(name, addr)| (name, get(addr, PORT).ok().map(|b| release_of(&b))))
                    .collect()
            })
            .unwrap_or_default()
    };
    let settled = v.lab.wait_for(SETTLE, || {
        let s = releaselab::status(&v)?;
        let state = s["rollout"]["state"].as_str().unwrap_or("");
        let active = s["active_release"].as_str()?.to_string();
        let done = matches!(state, "succeeded" | "rolled back" | "aborted" | "");
        let serving = read_nodes(&v);
        (done
            && serving
                .values()
                .all(|r| r.as_deref() == Some(active.as_str())))
        .then_some((Some(active), serving))
    });
    let (active, serving) = match settled {
        Some(x) => x,
        None => (
            releaselab::status(&v).and_then(|s| s["active_release"].as_str().map(String::from)),
            read_nodes(&v),
        ),
    };
    let final_at = ns(Instant::now());

    let mut lines: Vec<Line> = Vec::new();
    for (who, p) in probers {
        lines.extend(served_lines(&who, &p.stop(), ns));
    }
    lines.extend(activations);
    lines.extend(faults.into_iter().map(Line::Fault));
    lines.push(Line::ReleaseFinal {
        at: final_at,
        initial: ids[0].clone(),
        active,
        nodes: serving,
    });
    drop(v);
    let _ = std::fs::remove_dir_all(&work);
    let dir = o.store.join("release").join(timestamp());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    write_history(&dir.join("history.jsonl"), &lines)?;
    let results = check_lines(&lines, o.seed, o.check_budget);
    write_results(&dir, &results)?;
    write_reports(&dir, &lines, &results)?;
    Ok((dir, results))
}

/// Starts a rollout of `release` from the client host and records how the request ended.
fn activate(lab: &Lab, members: &Members, release: &str, ns: impl Fn(Instant) -> u64) -> Line {
    let at = ns(Instant::now());
    let rel = release.to_string();
    let r = ask_cluster(members, lab, Duration::from_secs(5), move |c| async move {
        c.start_rollout(v1::StartRolloutRequest {
            service: "web".into(),
            release: rel,
            batch: 1,
            min_healthy_ms: 1000,
            deadline_ms: 60_000,
            ..Default::default()
        })
        .await
    });
    use ballast_client::Error;
    let (outcome, detail) = match r {
        Some(Ok(_)) => (rc::Outcome::Ok, String::new()),
        Some(Err(
            e @ (Error::InvalidArgument(_) | Error::NotFound(_) | Error::FailedPrecondition(_)),
        )) => (rc::Outcome::Fail, e.to_string()),
        Some(Err(e)) => (rc::Outcome::Unknown, e.to_string()),
        None => (rc::Outcome::Unknown, "the client thread failed".into()),
    };
    Line::Activate {
        at,
        release: release.to_string(),
        outcome,
        detail,
    }
}

/// A prober's answers as `Served` lines: each change of release, and the first answer after
/// a failure.
fn served_lines(who: &str, answers: &[Answer], ns: impl Fn(Instant) -> u64) -> Vec<Line> {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    for a in answers {
        match &a.result {
            Ok(body) => {
                let r = release_of(body);
                if last.as_deref() != Some(r.as_str()) {
                    out.push(Line::Served {
                        at: ns(a.at),
                        who: who.to_string(),
                        release: r.clone(),
                    });
                    last = Some(r);
                }
            }
            Err(_) => last = None,
        }
    }
    out
}
