//! The VIP workload's checker. From the client host an observer asks "who has the VIP?" by
//! ARP every few milliseconds and records which MACs answered; the cluster's decisions (owner,
//! epoch) are sampled too. Violations: any probe answered by two hosts (split brain), an epoch
//! that goes backwards, and a VIP that is not answered again within the liveness bound after
//! the last fault healed.

use std::time::{Duration, Instant};

use crate::arp::Probe;

/// A sample of the cluster's decision for the VIP.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochSample {
    pub at: Instant,
    pub owner: u64,
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
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

#[cfg(test)]
mod tests {
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
