//! Verdicts: a run's history turned into its checked [`Results`] (what `results.json` says),
//! by the checker of its workload, found from the lines the history holds. Pure functions of
//! the recorded lines: running a workload, injecting faults and writing files are not here
//! (the workload files, `faults.rs` and `store.rs`), and neither are the checkers themselves
//! (`crate::checker`); the exit code is the binary's.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::arp::{mac_string, Probe};
use crate::checker::{linear, release as rc, set, vip};
use crate::history::{Line, Op, Outcome, RegisterOp};
use crate::viplab::VIP_LEASE;

/// What `results.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub valid: Option<bool>,
    pub verdict: String,
    pub ops: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub faults: usize,
    pub seed: u64,
    /// A small failing sub-history, when not linearizable.
    pub witness: Vec<Op>,
}

/// Runs the checkers on a history.
pub(super) fn check_lines(lines: &[Line], seed: u64, budget: Duration) -> Results {
    let ops: Vec<Op> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Op(o) => Some(o.clone()),
            _ => None,
        })
        .collect();
    let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|o| f(&o.outcome)).count();
    let final_read = lines.iter().find_map(|l| match l {
        Line::FinalRead {
            values,
            damaged,
            not_rejoined,
            ..
        } => Some((values.clone(), damaged.clone(), not_rejoined.clone())),
        _ => None,
    });
    let (valid, text, witness) = match (final_read, vip_verdict(lines)) {
        _ if lines.iter().any(|l| matches!(l, Line::ReleaseFinal { .. })) => {
            let (valid, text) = release_verdict(lines);
            (valid, text, Vec::new())
        }
        (_, Some((valid, text))) => (valid, text, Vec::new()),
        (Some((values, damaged, not_rejoined)), None) => {
            set_verdict(&ops, values, damaged, not_rejoined)
        }
        (None, None) => register_verdict(&ops, budget),
    };
    Results {
        valid,
        verdict: text,
        ops: ops.len(),
        ok: count(|o| matches!(o, Outcome::Ok(_))),
        failed: count(|o| matches!(o, Outcome::Fail)),
        unknown: count(|o| matches!(o, Outcome::Unknown)),
        faults: lines.iter().filter(|l| matches!(l, Line::Fault(_))).count(),
        seed,
        witness,
    }
}

fn set_verdict(
    ops: &[Op],
    final_read: Vec<i64>,
    damaged: Vec<i64>,
    not_rejoined: Vec<String>,
) -> (Option<bool>, String, Vec<Op>) {
    let mut h = set::SetHistory {
        final_read: final_read.into_iter().collect(),
        damaged: damaged.into_iter().collect(),
        ..Default::default()
    };
    for o in ops {
        if let RegisterOp::Write(v) = o.op {
            match o.outcome {
                Outcome::Ok(_) => h.acknowledged.insert(v),
                Outcome::Unknown => h.unknown.insert(v),
                Outcome::Fail => h.failed.insert(v),
            };
        }
    }
    let r = set::check(&h);
    let valid = r.valid() && not_rejoined.is_empty();
    let text = if valid {
        format!(
            "set valid: {} acknowledged adds all present with their values, {} of {} unknown \
             adds present, every member running and caught up",
            h.acknowledged.len(),
            r.recovered,
            h.unknown.len()
        )
    } else {
        let few = |v: &[i64]| match v.len() {
            0..=20 => format!("{v:?}"),
            n => format!("{n}: {:?} ...", &v[..20]),
        };
        format!(
            "set INVALID: lost {}, damaged {}, unexpected {}, failed but present {}, \
             members not rejoined {:?}",
            few(&r.lost),
            few(&r.damaged),
            few(&r.unexpected),
            few(&r.failed_but_present),
            not_rejoined
        )
    };
    (Some(valid), text, Vec::new())
}

fn register_verdict(ops: &[Op], budget: Duration) -> (Option<bool>, String, Vec<Op>) {
    let verdict = linear::check(ops, budget);
    match verdict {
        linear::Verdict::Linearizable => (Some(true), "linearizable".to_string(), Vec::new()),
        linear::Verdict::NotLinearizable { key, witness } => (
            Some(false),
            format!("not linearizable on key {key}"),
            witness,
        ),
        linear::Verdict::Unknown { key } => (
            None,
            format!(
                "unknown: the search on key {key} ran out of its {} s (try `jepsen check --budget`)",
                budget.as_secs()
            ),
            Vec::new(),
        ),
    }
}

/// The vip checker on the probe, epoch and heal lines of a history (None: not a vip run).
fn vip_verdict(lines: &[Line]) -> Option<(Option<bool>, String)> {
    let base = Instant::now();
    let at = |ns: u64| base + Duration::from_nanos(ns);
    let mut probes = Vec::new();
    let mut epochs = Vec::new();
    let mut views = Vec::new();
    let mut healed = None;
    // By VIP ("" the main one): its intervals, its frames and (other VIPs) its probes.
    type PerVip = (Vec<vip::Allowed>, Vec<(u64, String, bool)>, Vec<Probe>);
    let mut per_vip: std::collections::BTreeMap<String, PerVip> = Default::default();
    let mut node_macs = Vec::new();
    for l in lines {
        match l {
            Line::Probe { at: t, macs, vip } => {
                let p = Probe {
                    at: at(*t),
                    macs: macs.iter().filter_map(|m| parse_mac(m)).collect(),
                };
                if vip.is_empty() {
                    probes.push(p);
                } else {
                    per_vip.entry(vip.clone()).or_default().2.push(p);
                }
            }
            Line::Epoch {
                at: t,
                owner,
                epoch,
            } => epochs.push(vip::EpochSample {
                at: at(*t),
                owner: *owner,
                epoch: *epoch,
            }),
            Line::Healed { at: t, bound_ms } => {
                healed = Some((at(*t), Duration::from_millis(*bound_ms)))
            }
            Line::NodeView {
                at: t,
                node,
                address,
                allowed_ms,
            } => views.push(vip::NodeView {
                at: at(*t),
                node: *node,
                address: *address,
                allowed_for: allowed_ms.map(Duration::from_millis),
            }),
            Line::NodeMac { node, mac } => node_macs.push((*node, mac.clone())),
            Line::Allowed { vip, allowed } => {
                per_vip.entry(vip.clone()).or_default().0.push(*allowed)
            }
            Line::Frame {
                at,
                mac,
                gratuitous,
                vip,
            } => per_vip
                .entry(vip.clone())
                .or_default()
                .1
                .push((*at, mac.clone(), *gratuitous)),
            _ => {}
        }
    }
    let (healed, bound) = healed?;
    let mut violations = vip::check(&probes, &epochs, healed, bound);
    violations.extend(vip::check_views(&views, VIP_LEASE));
    // The exact check, on the fences' own records, for each VIP; and no two holders seen on
    // the other VIPs' probes either.
    if per_vip.get("").is_none_or(|p| p.0.is_empty()) {
        return Some((
            None,
            "vip: no fence journal in the history; the exact check cannot tell".into(),
        ));
    }
    let node_of = |m: &str| node_macs.iter().find(|(_, x)| x == m).map(|(n, _)| *n);
    let (mut allowed, mut frames, mut other_probes) = (0, 0, 0);
    let mut announcements = 0;
    for (intervals, seen, vip_probes) in per_vip.values() {
        violations.extend(vip::check_exact(intervals, seen, &node_of));
        violations.extend(vip_probes.iter().filter(|p| p.macs.len() > 1).map(|p| {
            vip::Violation::SplitBrain {
                at: p.at,
                macs: p.macs.iter().map(mac_string).collect(),
            }
        }));
        allowed += intervals.len();
        frames += seen.len();
        announcements += seen.iter().filter(|f| f.2).count();
        other_probes += vip_probes.len();
    }
    let split = violations
        .iter()
        .filter(|v| matches!(v, vip::Violation::SplitBrain { .. }))
        .count();
    Some(if violations.is_empty() {
        (
            Some(true),
            format!(
                "vip valid: {} probes (and {other_probes} of {} other VIPs), never two \
                 holders, epochs monotonic ({} samples), no fence allowance beyond the \
                 {VIP_LEASE:?} lease ({} node views, {} with the address), answered within \
                 {bound:?} of healing; exact: {allowed} fence intervals of {} nodes never \
                 overlap on any VIP, {frames} frames for the VIPs ({announcements} gratuitous) \
                 all inside their sender's lease",
                probes.len(),
                per_vip.len().saturating_sub(1),
                epochs.len(),
                views.len(),
                views.iter().filter(|v| v.address).count(),
                node_macs.len(),
            ),
        )
    } else {
        (
            Some(false),
            format!(
                "vip INVALID: {} violations ({split} probes answered by two hosts): {:?}",
                violations.len(),
                violations.iter().take(5).collect::<Vec<_>>()
            ),
        )
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

/// The release checker on a history's lines.
fn release_verdict(lines: &[Line]) -> (Option<bool>, String) {
    let mut h = rc::ReleaseHistory::default();
    for l in lines {
        match l {
            Line::Activate {
                at,
                release,
                outcome,
                ..
            } => h.activations.push(rc::Activation {
                at: *at,
                release: release.clone(),
                outcome: *outcome,
            }),
            Line::Served { at, who, release } => h.served.push(rc::Served {
                at: *at,
                who: who.clone(),
                release: release.clone(),
            }),
            Line::ReleaseFinal {
                initial,
                active,
                nodes,
                ..
            } => {
                h.initial = initial.clone();
                h.final_active = active.clone();
                h.final_nodes = nodes.clone();
            }
            _ => {}
        }
    }
    let violations = rc::check(&h);
    let count = |o: rc::Outcome| h.activations.iter().filter(|a| a.outcome == o).count();
    let summary = format!(
        "{} rollouts ({} started, {} refused, {} unknown), {} changes of release seen",
        h.activations.len(),
        count(rc::Outcome::Ok),
        count(rc::Outcome::Fail),
        count(rc::Outcome::Unknown),
        h.served.len()
    );
    if violations.is_empty() {
        (
            Some(true),
            format!(
                "release valid: {summary}; no release served before its activation; \
                 every node ends on the active release {}",
                h.final_active.as_deref().unwrap_or("?")
            ),
        )
    } else {
        (
            Some(false),
            format!("release INVALID: {summary}; violations: {violations:?}"),
        )
    }
}
