//! The routes the speaker announces, the attributes an epoch gives them, and the UPDATEs that
//! bring one peer from what it holds to what is announced. Pure.
//!
//! A session never replays a log of announce and withdraw calls: it compares the table as it
//! is now with what it has sent on this session, and sends the difference. A new session has
//! sent nothing, so its first difference is the whole table; a route withdrawn while the
//! session was down is simply not in the table, and a route announced twice is sent once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::status::{Withheld, WithholdReason};
use crate::wire::{self, Family, PathAttributes};

/// Host routes and the epoch each is announced with.
pub(crate) type Routes = BTreeMap<IpAddr, u64>;

/// The largest epoch that has a MED: 4294967294 - epoch must stay a valid MED, and a MED of
/// 4294967295 is avoided because some routers read it as "missing, worst"
/// (docs/bgp-research.md §4).
pub const MAX_EPOCH: u64 = 4_294_967_294;

/// The MED for `epoch`: lower wins at the router, so a higher epoch wins. `None` past
/// [`MAX_EPOCH`]: wrapping would let an old owner win, and saturating would tie two owners.
pub fn med_for_epoch(epoch: u64) -> Option<u32> {
    u32::try_from(MAX_EPOCH.checked_sub(epoch)?).ok()
}

/// LOCAL_PREF sent on iBGP sessions: the common default, the same on every node, so that the
/// MED decides between owners on iBGP as on eBGP.
pub(crate) const IBGP_LOCAL_PREF: u32 = 100;

/// What one session knows that shapes its UPDATEs.
#[derive(Debug, Clone)]
pub(crate) struct Peering {
    /// Our AS number; the AS_PATH holds it on eBGP.
    pub local_asn: u32,
    pub ebgp: bool,
    /// Global administrator of the large community.
    pub community_asn: u32,
    /// The configured next hop, else the session's own address when it is of that family.
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Families the peer's OPEN offered.
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Peering {
    /// Whether routes of `family` can be sent on this session.
    pub fn check(&self, family: Family) -> Result<(), WithholdReason> {
        let (negotiated, hop) = match family {
            Family::Ipv4 => (self.ipv4, self.next_hop_v4.is_some()),
            Family::Ipv6 => (self.ipv6, self.next_hop_v6.is_some()),
        };
        if !negotiated {
            Err(WithholdReason::NotNegotiated)
        } else if !hop {
            Err(WithholdReason::NoNextHop)
        } else {
            Ok(())
        }
    }

    /// The families this session carries, for End-of-RIB.
    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter(|f| self.check(*f).is_ok())
    }

    fn attributes(&self, epoch: u64) -> PathAttributes {
        let med = med_for_epoch(epoch).expect("the speaker refuses epochs without a MED");
        PathAttributes {
            as_path: self.ebgp.then_some(self.local_asn),
            med,
            local_pref: (!self.ebgp).then_some(IBGP_LOCAL_PREF),
            large_community: [self.community_asn, 1, epoch as u32],
        }
    }
}

/// The UPDATEs of one step, ready to write.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub bytes: Vec<u8>,
    pub updates: usize,
    pub withheld: Vec<Withheld>,
}

/// Encodes what brings the peer from `sent` to `desired` and records it in `sent`: the
/// caller writes the bytes or drops the session (and with it `sent`). Withdrawals go first,
/// then announcements grouped by epoch (one set of attributes each).
pub(crate) fn sync(desired: &Routes, sent: &mut Routes, peering: &Peering) -> Changes {
    let mut changes = Changes::default();
    let (mut gone4, mut gone6) = (Vec::new(), Vec::new());
    sent.retain(|addr, _| {
        let keep = desired.contains_key(addr);
        if !keep {
            match addr {
                IpAddr::V4(a) => gone4.push(*a),
                IpAddr::V6(a) => gone6.push(*a),
            }
        }
        keep
    });
    let mut by_epoch: BTreeMap<u64, (Vec<Ipv4Addr>, Vec<Ipv6Addr>)> = BTreeMap::new();
    let mut withheld: BTreeMap<Family, (usize, WithholdReason)> = BTreeMap::new();
    for (&addr, &epoch) in desired {
        if let Err(reason) = peering.check(Family::of(addr)) {
            withheld.entry(Family::of(addr)).or_insert((0, reason)).0 += 1;
            continue;
        }
        if sent.insert(addr, epoch) == Some(epoch) {
            continue;
        }
        let group = by_epoch.entry(epoch).or_default();
        match addr {
            IpAddr::V4(a) => group.0.push(a),
            IpAddr::V6(a) => group.1.push(a),
        }
    }
    let out = &mut changes.bytes;
    changes.updates += wire::withdraw_v4(out, &gone4) + wire::withdraw_v6(out, &gone6);
    for (epoch, (v4, v6)) in by_epoch {
        let attrs = peering.attributes(epoch);
        if let Some(hop) = peering.next_hop_v4.filter(|_| !v4.is_empty()) {
            changes.updates += wire::announce_v4(out, &attrs, hop, &v4);
        }
        if let Some(hop) = peering.next_hop_v6.filter(|_| !v6.is_empty()) {
            changes.updates += wire::announce_v6(out, &attrs, hop, &v6);
        }
    }
    changes.withheld = withheld
        .into_iter()
        .map(|(family, (routes, reason))| Withheld {
            family,
            routes,
            reason,
        })
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Update};

    fn peering() -> Peering {
        Peering {
            local_asn: 65001,
            ebgp: true,
            community_asn: 65000,
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            next_hop_v6: None,
            ipv4: true,
            ipv6: true,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn updates(bytes: &[u8]) -> Vec<Update> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some((_, used)) = decode(rest).unwrap() {
            out.push(Update::decode(&rest[..used]).unwrap());
            rest = &rest[used..];
        }
        out
    }

    #[test]
    fn the_med_falls_as_the_epoch_rises_and_stops_at_the_largest_epoch() {
        assert_eq!(med_for_epoch(0), Some(4_294_967_294));
        assert_eq!(med_for_epoch(6), Some(4_294_967_288));
        assert!(med_for_epoch(7) < med_for_epoch(6));
        assert_eq!(med_for_epoch(MAX_EPOCH), Some(0));
        assert_eq!(med_for_epoch(MAX_EPOCH + 1), None);
        assert_eq!(med_for_epoch(u64::MAX), None);
    }

    #[test]
    fn a_new_session_is_sent_the_whole_table_once() {
        let desired = Routes::from([
            (ip("10.0.0.9"), 5),
            (ip("10.0.0.8"), 5),
            (ip("10.0.0.7"), 6),
        ]);
        let mut sent = Routes::new();
        let c = sync(&desired, &mut sent, &peering());
        assert_eq!(sent, desired);
        let u = updates(&c.bytes);
        assert_eq!(c.updates, 2, "one UPDATE per epoch");
        assert_eq!(u[0].announced, vec![ip("10.0.0.8"), ip("10.0.0.9")]);
        assert_eq!(u[0].med, Some(4_294_967_289));
        assert_eq!(u[1].announced, vec![ip("10.0.0.7")]);
        assert_eq!(u[1].large_communities, vec![[65000, 1, 6]]);
        let again = sync(&desired, &mut sent, &peering());
        assert_eq!((again.updates, again.bytes.len()), (0, 0));
    }

    #[test]
    fn only_the_difference_is_sent_withdrawals_first() {
        let mut sent = Routes::from([(ip("10.0.0.1"), 1), (ip("10.0.0.2"), 1)]);
        let desired = Routes::from([(ip("10.0.0.2"), 3), (ip("10.0.0.3"), 1)]);
        let c = sync(&desired, &mut sent, &peering());
        let u = updates(&c.bytes);
        assert_eq!(u[0].withdrawn, vec![ip("10.0.0.1")]);
        assert_eq!(u[1].announced, vec![ip("10.0.0.3")]);
        assert_eq!(u[2].announced, vec![ip("10.0.0.2")]);
        assert_eq!(u[2].med, med_for_epoch(3));
        assert_eq!(sent, desired);
    }

    #[test]
    fn routes_without_a_next_hop_or_family_are_withheld_and_said_why() {
        let desired = Routes::from([(ip("10.0.0.1"), 1), (ip("fd0a:d5f0::1"), 1)]);
        let mut sent = Routes::new();
        let c = sync(&desired, &mut sent, &peering());
        assert_eq!(sent.len(), 1);
        assert_eq!(
            c.withheld,
            vec![Withheld {
                family: Family::Ipv6,
                routes: 1,
                reason: WithholdReason::NoNextHop
            }]
        );
        let v4_only = Peering {
            ipv6: false,
            next_hop_v6: Some("fd0a:d5f0::2".parse().unwrap()),
            ..peering()
        };
        let c = sync(&desired, &mut Routes::new(), &v4_only);
        assert_eq!(c.withheld[0].reason, WithholdReason::NotNegotiated);
        assert_eq!(v4_only.families().collect::<Vec<_>>(), vec![Family::Ipv4]);
    }

    #[test]
    fn ipv6_routes_go_in_mp_reach_with_the_ipv6_next_hop() {
        let hop: Ipv6Addr = "fd0a:d5f0::2".parse().unwrap();
        let p = Peering {
            next_hop_v6: Some(hop),
            ..peering()
        };
        let desired = Routes::from([(ip("fd0a:d5f0::100"), 2)]);
        let mut sent = Routes::new();
        let u = updates(&sync(&desired, &mut sent, &p).bytes);
        assert_eq!(u[0].mp_next_hop, Some(hop));
        assert_eq!(u[0].announced, vec![ip("fd0a:d5f0::100")]);
        let u = updates(&sync(&Routes::new(), &mut sent, &p).bytes);
        assert_eq!(u[0].withdrawn, vec![ip("fd0a:d5f0::100")]);
    }

    #[test]
    fn ibgp_sends_an_empty_as_path_and_the_common_local_pref() {
        let p = Peering {
            ebgp: false,
            ..peering()
        };
        let u = updates(&sync(&Routes::from([(ip("10.0.0.1"), 1)]), &mut Routes::new(), &p).bytes);
        assert_eq!(u[0].as_path, Some(vec![]));
        assert_eq!(u[0].local_pref, Some(IBGP_LOCAL_PREF));
    }
}
