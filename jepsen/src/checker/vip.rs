//! The VIP workload's checker. From the client host an observer asks "who has the VIP?" by
//! ARP every few milliseconds and records which MACs answered; the cluster's decisions (owner,
//! epoch) are sampled too. Violations: any probe answered by two hosts (split brain), an epoch
//! that goes backwards, and a VIP that is not answered again within the liveness bound after
//! the last fault healed. Each node's own view is sampled on its host too (the address on its
//! interface, what its kernel fence still allows): an allowance longer than the lease is a
//! violation, since it could outlive the lease the cluster counts on.

use std::time::{Duration, Instant};

use crate::arp::Probe;

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
            macs: p.macs.iter().map(crate::mac_string).collect(),
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
