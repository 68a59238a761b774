//! The VIP workload's checker. From the client host an observer asks "who has the VIP?" by
//! ARP every few milliseconds and records which MACs answered; the cluster's decisions (owner,
//! epoch) are sampled too. Violations: any probe answered by two hosts (split brain), an epoch
//! that goes backwards, and a VIP that is not answered again within the liveness bound after
//! the last fault healed. Each node's own view is sampled on its host too (the address on its
//! interface, what its kernel fence still allows): an allowance longer than the lease is a
//! violation, since it could outlive the lease the cluster counts on.
//!
//! The probes sample every 10 ms, so an overlap shorter than that can slip between them. The
//! exact check does not sample: each node's fence journal (`ballastd --fence-journal`)
//! records every interval during which its kernel fence allowed the VIP, on the monotonic
//! clock that all the lab's hosts share; no two nodes' intervals may overlap, and every ARP
//! frame the observer saw speak for the VIP (a gratuitous ARP, a reply) must come from a node
//! inside one of its intervals.

use std::time::{Duration, Instant};

use crate::arp::{mac_string, Probe};

/// A sample of the cluster's decision for the VIP.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochSample {
    pub at: Instant,
    pub owner: u64,
    pub epoch: u64,
}

/// One node's view, sampled on its host.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub at: Instant,
    pub node: u64,
    /// The VIP address is on the node's interface.
    pub address: bool,
    /// How much longer the node's fence lets the VIP answer (None: it does not).
    pub allowed_for: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// A node's fence allowed the VIP for longer than a lease.
    FenceBeyondLease {
        at: Instant,
        node: u64,
        allowed_for: Duration,
        lease: Duration,
    },
    /// Two or more hosts answered one probe.
    SplitBrain { at: Instant, macs: Vec<String> },
    /// The epoch decreased from one sample to a later one.
    EpochBackwards { at: Instant, from: u64, to: u64 },
    /// Nobody answered within the bound after healing (`since`: the heal).
    NotRestored { since: Instant, bound: Duration },
    /// Two nodes' fences allowed the VIP at once (ns since the run's start).
    FencesOverlap {
        a: Allowed,
        b: Allowed,
        overlap_ns: u64,
    },
    /// A node sent an ARP frame for the VIP while its fence did not allow it.
    FrameOutsideLease {
        node: u64,
        at_ns: u64,
        gratuitous: bool,
    },
    /// A frame for the VIP came from a MAC that is no node's.
    UnknownSender { mac: String, at_ns: u64 },
}

/// An interval during which a node's fence allowed the VIP, in ns on the run's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allowed {
    pub node: u64,
    pub from: u64,
    pub until: u64,
    /// The journal recorded that nft returned (false: the process died first; the end is the
    /// deadline the allowance was computed for, which nft's watchdog guarantees).
    pub confirmed: bool,
    /// By when the kernel had surely committed it (nft returned, or its watchdog's bound):
    /// a revocation or a new table ends it only if committed after that.
    #[serde(default)]
    pub committed_by: u64,
}

/// How much later than the end of its timeout the kernel may drop an allowed element: set
/// timeouts count in jiffies, rounded up (see `ballast_node::agent::fence::KERNEL_TICK`).
pub const KERNEL_TICK_NS: u64 = 10_000_000;

/// Time a frame may take from the sender's fence to the observer (one bridge, no queueing to
/// speak of).
pub const FRAME_TRANSIT_NS: u64 = 2_000_000;

/// The intervals during which one node's fence journal allowed `addr`, in ns of CLOCK_MONOTONIC
/// less `base` (the run's start on that clock).
pub fn journal_intervals(text: &str, addr: &str, base: u64) -> Result<Vec<Allowed>, String> {
    use std::collections::BTreeMap;
    let mut out: Vec<Allowed> = Vec::new();
    // Allowances whose commit record has not been seen yet, by sequence.
    let mut pending: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    let rel = |t: u64| t.saturating_sub(base);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("journal line {}: {e}", n + 1))?;
        let get = |k: &str| {
            v[k].as_u64()
                .ok_or(format!("journal line {}: no {k}", n + 1))
        };
        let node = get("node")?;
        let op = v["op"].as_str().unwrap_or_default();
        let about = v["addr"].as_str() == Some(addr);
        match op {
            "allowing" if about => {
                let from = rel(get("from_ns")?);
                let (timeout, budget) = (get("timeout_ms")?, get("budget_ms")?);
                pending.insert(get("seq")?, (out.len(), timeout));
                out.push(Allowed {
                    node,
                    from,
                    until: from + (timeout + budget) * 1_000_000 + KERNEL_TICK_NS,
                    confirmed: false,
                    committed_by: from + budget * 1_000_000,
                });
            }
            "allowed" if about => {
                // nft returned by then: the allowance ends by then + its timeout, unless the
                // process was stopped before it read the clock, when the watchdog's bound
                // (the allowing line's) is the tighter one.
                if let Some((i, timeout)) = pending.remove(&get("seq")?) {
                    let until = rel(get("until_ns")?);
                    let done = until.saturating_sub(timeout * 1_000_000);
                    out[i].until = out[i].until.min(until + KERNEL_TICK_NS);
                    out[i].committed_by = out[i].committed_by.min(done);
                    out[i].confirmed = true;
                }
            }
            "revoked" if about => cut(&mut out, rel(get("at_ns")?)),
            "cleared" => cut(&mut out, rel(get("at_ns")?)),
            _ => {}
        }
    }
    Ok(out)
}

/// Every allowance the kernel had committed before `at` ends by `at` (a revocation or a new
/// table committed then). One that may have been committed after (an orphaned nft of a
/// killed agent, within its watchdog's bound) is left as it was.
fn cut(intervals: &mut [Allowed], at: u64) {
    for a in intervals.iter_mut() {
        if a.committed_by <= at && a.until > at {
            a.until = at;
        }
    }
}

/// The exact check: no two nodes' intervals overlap, and every frame (`(at_ns, mac,
/// gratuitous)`) comes from a node inside one of its own intervals. `node_of` maps a MAC to
/// its node.
pub fn check_exact(
    intervals: &[Allowed],
    frames: &[(u64, String, bool)],
    node_of: &dyn Fn(&str) -> Option<u64>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut sorted: Vec<Allowed> = intervals.to_vec();
    sorted.sort_by_key(|a| a.from);
    // Sweep: each interval against those that started before it and may still run.
    for (i, b) in sorted.iter().enumerate() {
        for a in sorted[..i].iter().rev() {
            if a.node != b.node && a.until > b.from {
                out.push(Violation::FencesOverlap {
                    a: *a,
                    b: *b,
                    overlap_ns: a.until.min(b.until) - b.from,
                });
            }
        }
    }
    for (at, mac, gratuitous) in frames {
        let Some(node) = node_of(mac) else {
            out.push(Violation::UnknownSender {
                mac: mac.clone(),
                at_ns: *at,
            });
            continue;
        };
        let inside = intervals
            .iter()
            .any(|a| a.node == node && a.from <= *at && *at <= a.until + FRAME_TRANSIT_NS);
        if !inside {
            out.push(Violation::FrameOutsideLease {
                node,
                at_ns: *at,
                gratuitous: *gratuitous,
            });
        }
    }
    out
}

/// Every violation in the run. `healed`: when the last fault ended; `bound`: how soon after
/// it the VIP must answer again.
pub fn check(
    probes: &[Probe],
    epochs: &[EpochSample],
    healed: Instant,
    bound: Duration,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for p in probes.iter().filter(|p| p.macs.len() > 1) {
        out.push(Violation::SplitBrain {
            at: p.at,
            macs: p.macs.iter().map(mac_string).collect(),
        });
    }
    for w in epochs.windows(2) {
        if w[1].epoch < w[0].epoch {
            out.push(Violation::EpochBackwards {
                at: w[1].at,
                from: w[0].epoch,
                to: w[1].epoch,
            });
        }
    }
    let answered_after = probes
        .iter()
        .find(|p| p.at >= healed && !p.macs.is_empty())
        .map(|p| p.at);
    let observed_long_enough = probes.last().is_some_and(|p| p.at >= healed + bound);
    match answered_after {
        Some(at) if at <= healed + bound => {}
        Some(_) => out.push(Violation::NotRestored {
            since: healed,
            bound,
        }),
        None if observed_long_enough => out.push(Violation::NotRestored {
            since: healed,
            bound,
        }),
        None => {} // the run ended too early to tell
    }
    out
}

/// Violations in the nodes' own views: an allowance longer than `lease`.
pub fn check_views(views: &[NodeView], lease: Duration) -> Vec<Violation> {
    views
        .iter()
        .filter_map(|v| {
            let allowed_for = v.allowed_for.filter(|a| *a > lease)?;
            Some(Violation::FenceBeyondLease {
                at: v.at,
                node: v.node,
                allowed_for,
                lease,
            })
        })
        .collect()
}

/// A duration as nft prints it: "1s768ms", "780ms", "2m3s".
pub fn parse_nft_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                Duration::from_millis(1)
            }
            'm' => Duration::from_secs(60),
            's' => Duration::from_secs(1),
            'h' => Duration::from_secs(3600),
            'd' => Duration::from_secs(86_400),
            _ => return None,
        };
        total += unit * n as u32;
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

/// What `nft list set arp ballast_fence allowed` says of `vip`: how much longer it is allowed.
pub fn allowance_in(nft_listing: &str, vip: &str) -> Option<Duration> {
    let i = nft_listing.find(&format!("{vip} "))?;
    let rest = &nft_listing[i..];
    let rest = &rest[..rest.find([',', '}']).unwrap_or(rest.len())];
    let after = rest
        .split_whitespace()
        .skip_while(|w| *w != "expires")
        .nth(1)?;
    parse_nft_duration(after)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nft_durations_and_allowances_parse() {
        assert_eq!(
            parse_nft_duration("1s768ms"),
            Some(Duration::from_millis(1768))
        );
        assert_eq!(
            parse_nft_duration("780ms"),
            Some(Duration::from_millis(780))
        );
        assert_eq!(parse_nft_duration("2m3s"), Some(Duration::from_secs(123)));
        assert_eq!(parse_nft_duration("12"), None);
        assert_eq!(parse_nft_duration("3x"), None);
        let listing = "elements = { 10.213.0.100 timeout 780ms expires 512ms }";
        assert_eq!(
            allowance_in(listing, "10.213.0.100"),
            Some(Duration::from_millis(512))
        );
        assert_eq!(allowance_in(listing, "10.213.0.101"), None);
        assert_eq!(allowance_in("elements = { }", "10.213.0.100"), None);
    }

    #[test]
    fn an_allowance_beyond_the_lease_is_caught() {
        let t = Instant::now();
        let view = |node, ms| NodeView {
            at: t,
            node,
            address: true,
            allowed_for: Some(Duration::from_millis(ms)),
        };
        let lease = Duration::from_millis(800);
        assert_eq!(check_views(&[view(1, 780), view(2, 10)], lease), vec![]);
        let v = check_views(&[view(1, 780), view(3, 1200)], lease);
        assert!(
            matches!(v[..], [Violation::FenceBeyondLease { node: 3, .. }]),
            "{v:?}"
        );
    }

    use super::*;

    const MS: u64 = 1_000_000;

    fn journal(lines: &[serde_json::Value]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn journal_lines_make_intervals_cut_by_revocations() {
        use serde_json::json;
        let vip = "10.213.0.100";
        let text = journal(&[
            json!({"op":"cleared","node":1,"at_ns":1_000*MS}),
            json!({"op":"allowing","node":1,"addr":vip,"seq":7,"from_ns":1_100*MS,"timeout_ms":740,"budget_ms":30}),
            json!({"op":"allowed","node":1,"addr":vip,"seq":7,"until_ns":1_845*MS}),
            json!({"op":"allowing","node":1,"addr":"10.213.0.101","seq":8,"from_ns":1_200*MS,"timeout_ms":740,"budget_ms":30}),
            json!({"op":"allowing","node":1,"addr":vip,"seq":9,"from_ns":1_300*MS,"timeout_ms":740,"budget_ms":30}),
            json!({"op":"revoked","node":1,"addr":vip,"at_ns":1_500*MS}),
            // A process killed before it recorded the commit: the deadline bounds it.
            json!({"op":"allowing","node":1,"addr":vip,"seq":10,"from_ns":3_000*MS,"timeout_ms":740,"budget_ms":30}),
        ]);
        let iv = journal_intervals(&text, vip, 1_000 * MS).unwrap();
        let tick = KERNEL_TICK_NS;
        assert_eq!(
            iv.iter()
                .map(|a| (a.from, a.until, a.confirmed))
                .collect::<Vec<_>>(),
            vec![
                (100 * MS, 500 * MS, true),
                (300 * MS, 500 * MS, false),
                (2_000 * MS, 2_770 * MS + tick, false),
            ]
        );
        assert!(journal_intervals("{nope", vip, 0).is_err());
    }

    /// An orphaned nft (its agent killed) may commit after the next process cleared the
    /// tables, within its watchdog's budget: that allowance is not cut by the clearing.
    #[test]
    fn a_clearing_before_a_possible_commit_does_not_end_the_allowance() {
        use serde_json::json;
        let vip = "10.213.0.100";
        let text = journal(&[
            json!({"op":"allowing","node":1,"addr":vip,"seq":1,"from_ns":1_000*MS,"timeout_ms":700,"budget_ms":30}),
            json!({"op":"cleared","node":1,"at_ns":1_010*MS}),
        ]);
        let iv = journal_intervals(&text, vip, 0).unwrap();
        assert_eq!(iv[0].until, 1_730 * MS + KERNEL_TICK_NS);
    }

    #[test]
    fn overlapping_fences_and_frames_outside_a_lease_are_caught() {
        let iv = |node, from, until| Allowed {
            node,
            from: from * MS,
            until: until * MS,
            confirmed: true,
            committed_by: from * MS,
        };
        let node_of = |m: &str| match m {
            "a" => Some(1),
            "b" => Some(2),
            _ => None,
        };
        // A clean hand-over: node 1 until 1,000 ms, node 2 from 1,050 ms.
        let clean = [iv(1, 0, 500), iv(1, 400, 1_000), iv(2, 1_050, 2_000)];
        let frames = [
            (10 * MS, "a".to_string(), true),
            (1_001 * MS, "a".to_string(), false),
            (1_060 * MS, "b".to_string(), true),
        ];
        assert_eq!(check_exact(&clean, &frames, &node_of), vec![]);
        // One millisecond of overlap is enough.
        let v = check_exact(&[iv(1, 0, 1_000), iv(2, 999, 2_000)], &[], &node_of);
        assert!(
            matches!(v[..], [Violation::FencesOverlap { overlap_ns, .. }] if overlap_ns == MS),
            "{v:?}"
        );
        // A gratuitous ARP after the sender's lease ended, and one from a stranger.
        let late = [
            (1_010 * MS, "a".to_string(), true),
            (5 * MS, "c".to_string(), true),
        ];
        let v = check_exact(&clean, &late, &node_of);
        assert!(
            matches!(
                v[..],
                [
                    Violation::FrameOutsideLease {
                        node: 1,
                        gratuitous: true,
                        ..
                    },
                    Violation::UnknownSender { .. }
                ]
            ),
            "{v:?}"
        );
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn probes(t0: Instant, answers: &[&[[u8; 6]]]) -> Vec<Probe> {
        answers
            .iter()
            .enumerate()
            .map(|(i, m)| Probe {
                at: t0 + Duration::from_millis(10 * i as u64),
                macs: m.to_vec(),
            })
            .collect()
    }

    fn epochs(t0: Instant, e: &[u64]) -> Vec<EpochSample> {
        e.iter()
            .enumerate()
            .map(|(i, e)| EpochSample {
                at: t0 + Duration::from_millis(100 * i as u64),
                owner: 1,
                epoch: *e,
            })
            .collect()
    }

    #[test]
    fn a_clean_failover_is_accepted() {
        let t0 = Instant::now();
        let p = probes(t0, &[&[A], &[A], &[], &[], &[B], &[B]]);
        let v = check(
            &p,
            &epochs(t0, &[1, 1, 2, 2]),
            t0,
            Duration::from_millis(45),
        );
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn two_holders_at_once_are_rejected() {
        let t0 = Instant::now();
        let p = probes(t0, &[&[A], &[A, B], &[B]]);
        let v = check(&p, &[], t0, Duration::from_secs(1));
        assert!(
            matches!(&v[..], [Violation::SplitBrain { macs, .. }] if macs.len() == 2),
            "{v:?}"
        );
    }

    #[test]
    fn an_epoch_going_backwards_is_rejected() {
        let t0 = Instant::now();
        let p = probes(t0, &[&[A]]);
        let v = check(&p, &epochs(t0, &[3, 4, 2]), t0, Duration::from_secs(1));
        assert_eq!(
            v,
            vec![Violation::EpochBackwards {
                at: t0 + Duration::from_millis(200),
                from: 4,
                to: 2
            }]
        );
    }

    #[test]
    fn a_vip_not_restored_in_time_is_rejected() {
        let t0 = Instant::now();
        let p = probes(t0, &[&[], &[], &[], &[], &[A]]);
        let v = check(&p, &[], t0, Duration::from_millis(25));
        assert!(matches!(&v[..], [Violation::NotRestored { .. }]), "{v:?}");
        // Never answered although observed past the bound.
        let p = probes(t0, &[&[], &[], &[], &[]]);
        assert!(!check(&p, &[], t0, Duration::from_millis(25)).is_empty());
    }
}
