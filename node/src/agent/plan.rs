//! The agent's decisions, without IO: given what the cluster decided (a view of its state),
//! what this agent holds and the time, which VIPs to drop (and whether to confirm the
//! release), what to claim, and what a renewal's answer means. `run.rs` carries them out.
//! Tested by asserting the steps these functions return.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ballast_proto::v1;

use crate::types::NodeId;

/// A VIP this agent answers for: its fence allows it until `deadline`.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub epoch: u64,
    pub addr: IpAddr,
    pub iface: String,
    pub deadline: Instant,
}

/// Why a held VIP is let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The cluster shows an epoch lower than one seen: a stale view.
    EpochBackwards,
    Deleted,
    Reassigned,
    /// A planned move (drain, move, health, or a change of its address or interface).
    ReleaseRequested,
    /// The cluster's VIP has another address or interface than the one held.
    AddressChanged,
    Expired,
    /// The leader did not renew it: it counts the lease as over.
    RenewalRefused,
}

impl Why {
    pub fn label(self) -> &'static str {
        match self {
            Why::EpochBackwards => "epoch went backwards",
            Why::Deleted => "VIP deleted",
            Why::Reassigned => "reassigned",
            Why::ReleaseRequested => "release requested",
            Why::AddressChanged => "address or interface changed",
            Why::Expired => "lease expired",
            Why::RenewalRefused => "renewal refused",
        }
    }
}

/// Let go of a held VIP; `confirm`: the epoch whose release the leader waits for (a planned
/// move, or a deleted VIP's retired address), confirmed once the VIP no longer answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drop {
    pub vip: String,
    pub why: Why,
    pub confirm: Option<u64>,
}

/// Start (or keep) answering for a VIP after a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquire {
    pub vip: String,
    pub epoch: u64,
    pub addr: IpAddr,
    pub prefix: u8,
    pub iface: String,
    /// Not held before: announce it (gratuitous ARP).
    pub fresh: bool,
}

/// The address and prefix of a VIP ("10.0.0.1/24").
pub fn parse_addr(address: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = address.split_once('/')?;
    Some((ip.parse().ok()?, len.parse().ok()?))
}

/// Whether the release of (`vip`, `epoch`) by `me` is awaited: a planned move of that epoch,
/// or the retired address of a VIP deleted or changed while `me` held it.
fn release_awaited(state: &v1::GetStateResponse, me: NodeId, vip: &str, epoch: u64) -> bool {
    let moving = state
        .vips
        .iter()
        .any(|v| v.name == vip && v.owner == me && v.epoch == epoch && v.releasing);
    let retired = state
        .retired
        .iter()
        .any(|r| r.vip == vip && r.owner == me && r.epoch == epoch);
    moving || retired
}

/// What to let go before renewing, and the highest epoch seen per VIP (updated). A view
/// whose epoch is below one already seen is stale: whatever it says, the VIP is dropped.
pub fn drops(
    state: &v1::GetStateResponse,
    held: &BTreeMap<String, Held>,
    max_epoch: &mut BTreeMap<String, u64>,
    me: NodeId,
    now: Instant,
) -> Vec<Drop> {
    let mut stale = Vec::new();
    for v in &state.vips {
        let seen = max_epoch.entry(v.name.clone()).or_insert(0);
        if v.epoch < *seen {
            stale.push(v.name.clone());
        }
        *seen = (*seen).max(v.epoch);
    }
    let vips: BTreeMap<&str, &v1::Vip> = state.vips.iter().map(|v| (v.name.as_str(), v)).collect();
    let mut out = Vec::new();
    for (name, h) in held {
        let why = match vips.get(name.as_str()) {
            _ if stale.contains(name) => Some(Why::EpochBackwards),
            None => Some(Why::Deleted),
            Some(v) if v.owner != me || v.epoch != h.epoch => Some(Why::Reassigned),
            Some(v) if v.releasing => Some(Why::ReleaseRequested),
            Some(v)
                if parse_addr(&v.address).map(|a| a.0) != Some(h.addr)
                    || v.interface != h.iface =>
            {
                Some(Why::AddressChanged)
            }
            _ if h.deadline <= now => Some(Why::Expired),
            _ => None,
        };
        if let Some(why) = why {
            let confirm = (why != Why::EpochBackwards && release_awaited(state, me, name, h.epoch))
                .then_some(h.epoch);
            out.push(Drop {
                vip: name.clone(),
                why,
                confirm,
            });
        }
    }
    out
}

/// Releases to confirm for VIPs this agent does not hold (never acquired here, or let go
/// earlier), so that planned moves proceed. `skip`: VIPs whose drop has not succeeded yet
/// (they are confirmed only once it does) and those whose drop just confirmed them.
pub fn confirms_not_held(
    state: &v1::GetStateResponse,
    held: &BTreeMap<String, Held>,
    skip: &[String],
    me: NodeId,
) -> Vec<(String, u64)> {
    let moving = state
        .vips
        .iter()
        .filter(|v| v.owner == me && v.releasing)
        .map(|v| (v.name.clone(), v.epoch));
    let retired = state
        .retired
        .iter()
        .filter(|r| r.owner == me)
        .map(|r| (r.vip.clone(), r.epoch));
    let mut out: Vec<(String, u64)> = moving
        .chain(retired)
        .filter(|(name, _)| !held.contains_key(name) && !skip.contains(name))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What to claim from the leader: the VIPs the cluster gives this node, not being released,
/// at an epoch not below one already seen.
pub fn claims(
    state: &v1::GetStateResponse,
    max_epoch: &BTreeMap<String, u64>,
    me: NodeId,
) -> Vec<v1::VipClaim> {
    state
        .vips
        .iter()
        .filter(|v| {
            v.owner == me && !v.releasing && v.epoch >= max_epoch.get(&v.name).copied().unwrap_or(0)
        })
        .map(|v| v1::VipClaim {
            vip: v.name.clone(),
            epoch: v.epoch,
        })
        .collect()
}

/// Whether a change of the cluster state is worth a renewal before the next one is due: it
/// is when the state gives this node a VIP it does not hold at that epoch and did not claim
/// in the last answered renewal (a new owner answers as soon as the leader grants it).
/// Anything else waits for the renew interval: a renewal extends only leases already held,
/// so one skipped here holds nothing longer. A claim the leader did not grant (refused, or
/// granted for a VIP this server cannot place) is tried again at the tick, not at every
/// change. Every agent renewing on every change cost A agents x C changes renewals in a
/// burst and overloaded the leader while 1,000 agents took 10,000 VIPs (scale bench, issue
/// 14). `held_epoch` gives the epoch a VIP is held at after this reconcile's drops (the
/// agent's and the scale bench's records of what they hold differ).
pub fn renew_early(
    claims: &[v1::VipClaim],
    held_epoch: impl Fn(&str) -> Option<u64>,
    claimed_last: &BTreeSet<(String, u64)>,
) -> bool {
    claims.iter().any(|c| {
        held_epoch(&c.vip) != Some(c.epoch) && !claimed_last.contains(&(c.vip.clone(), c.epoch))
    })
}

/// The agent's deadline for grants of a renewal sent at `sent`, from the settings the leader
/// sent with them (its own `fallback` when the leader sent none).
pub fn deadline(
    sent: Instant,
    resp: &v1::RenewResponse,
    fallback: &crate::lease::LeaseConfig,
) -> Instant {
    let (lease, drift) = if resp.lease_ms > 0 {
        (
            Duration::from_millis(resp.lease_ms as u64),
            Duration::from_millis(resp.drift_ms as u64),
        )
    } else {
        (fallback.lease, fallback.drift_allowance)
    };
    crate::lease::agent_deadline(sent, lease, drift)
}

/// What a renewal's answer means for the VIPs of `state`: held VIPs it refused are dropped at
/// once (the leader counts their lease as over); granted ones are acquired or refreshed.
pub fn after_renewal(
    state: &v1::GetStateResponse,
    held: &BTreeMap<String, Held>,
    resp: &v1::RenewResponse,
) -> (Vec<Drop>, Vec<Acquire>) {
    let mut drops = Vec::new();
    let mut acquires = Vec::new();
    for g in &resp.grants {
        let holding = held.get(&g.vip).is_some_and(|h| h.epoch == g.epoch);
        if !g.granted {
            if holding {
                drops.push(Drop {
                    vip: g.vip.clone(),
                    why: Why::RenewalRefused,
                    confirm: None,
                });
            }
            continue;
        }
        let Some(v) = state
            .vips
            .iter()
            .find(|v| v.name == g.vip && v.epoch == g.epoch)
        else {
            continue;
        };
        let Some((addr, prefix)) = parse_addr(&v.address) else {
            continue;
        };
        acquires.push(Acquire {
            vip: g.vip.clone(),
            epoch: g.epoch,
            addr,
            prefix,
            iface: v.interface.clone(),
            fresh: !holding,
        });
    }
    (drops, acquires)
}

/// Every address the fence must govern: the cluster's VIPs, the retired addresses their last
/// owners may still hold, and whatever this agent holds (never unmanaged while held).
pub fn managed(state: &v1::GetStateResponse, held: &BTreeMap<String, Held>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = state
        .vips
        .iter()
        .map(|v| v.address.as_str())
        .chain(state.retired.iter().map(|r| r.address.as_str()))
        .filter_map(|a| parse_addr(a).map(|x| x.0))
        .chain(held.values().map(|h| h.addr))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The interfaces the fence's announcement filter must cover: those of every VIP and
/// retired address, and of what is held.
pub fn interfaces(state: &v1::GetStateResponse, held: &BTreeMap<String, Held>) -> Vec<String> {
    let mut out: Vec<String> = state
        .vips
        .iter()
        .map(|v| v.interface.clone())
        .chain(state.retired.iter().map(|r| r.interface.clone()))
        .chain(held.values().map(|h| h.iface.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Addresses let go whose removal failed, by address, with their interface: kept governed by
/// the fence (silent) and removed again every round.
pub type Leftover = BTreeMap<IpAddr, String>;

/// What the fence must govern this round: `managed` and `interfaces`, and every leftover
/// address with its interface (so that an address whose removal failed never answers).
pub fn governed(
    state: &v1::GetStateResponse,
    held: &BTreeMap<String, Held>,
    leftover: &Leftover,
) -> (Vec<IpAddr>, Vec<String>) {
    let mut addrs = managed(state, held);
    addrs.extend(leftover.keys());
    addrs.sort();
    addrs.dedup();
    let mut ifaces = interfaces(state, held);
    ifaces.extend(leftover.values().cloned());
    ifaces.sort();
    ifaces.dedup();
    (addrs, ifaces)
}

/// The leftover addresses to remove again this round. One held again (the cluster gave it to
/// this node under a VIP since) on the same interface is not removed but forgotten: it is a
/// held VIP's address now. On another interface it is still a leftover: once nothing names
/// its address, no fence would govern it there.
pub fn leftovers_to_remove(
    leftover: &Leftover,
    held: &BTreeMap<String, Held>,
) -> (Vec<IpAddr>, Vec<(IpAddr, String)>) {
    let (forget, remove): (Vec<_>, Vec<_>) = leftover
        .iter()
        .map(|(a, i)| (*a, i.clone()))
        .partition(|(a, i)| held.values().any(|h| h.addr == *a && h.iface == *i));
    (forget.into_iter().map(|(a, _)| a).collect(), remove)
}

/// Why a granted VIP does not answer here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The grant's deadline has passed already.
    Expired,
    /// The fence does not govern its address or interface: it would answer unfenced.
    Ungoverned,
}

/// Whether a granted VIP may answer here until `deadline`, and for how long: never past the
/// deadline, never at an address or on an interface the fence does not govern (`governed`,
/// what the fence last accepted).
pub fn may_answer(
    a: &Acquire,
    governed: &(Vec<IpAddr>, Vec<String>),
    deadline: Instant,
    now: Instant,
) -> Result<Duration, Refusal> {
    if deadline <= now {
        return Err(Refusal::Expired);
    }
    if !governed.0.contains(&a.addr) || !governed.1.contains(&a.iface) {
        return Err(Refusal::Ungoverned);
    }
    Ok(deadline - now)
}

/// The address a held VIP no longer has when it is acquired again at `a` (its release failed,
/// and the VIP came back to this node with another address or interface): no longer this
/// VIP's, so it becomes a leftover, governed and removed like any address let go.
pub fn displaced(before: Option<&Held>, a: &Acquire) -> Option<(IpAddr, String)> {
    let h = before?;
    (h.addr != a.addr || h.iface != a.iface).then(|| (h.addr, h.iface.clone()))
}

/// What letting a VIP go achieved, from its two steps: the fence's revoke (`revoked`: it
/// succeeded and the fence governs the address, so the VIP is silent) and the address's
/// removal (`removed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LetGo {
    /// The release may be confirmed right after the revoke, before the address is removed.
    pub confirm_after_revoke: bool,
    /// Not silenced by the fence, but the address is gone: confirm after the removal.
    pub confirm_after_removal: bool,
    /// Neither worked: the VIP still answers, so it stays held and is let go again later.
    pub still_held: bool,
    /// Silent but its address is still on the interface: a leftover, removed again later.
    pub leftover: bool,
}

pub fn let_go(revoked: bool, removed: bool) -> LetGo {
    LetGo {
        confirm_after_revoke: revoked,
        confirm_after_removal: !revoked && removed,
        still_held: !revoked && !removed,
        leftover: revoked && !removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;

    fn vip(name: &str, owner: NodeId, epoch: u64) -> v1::Vip {
        v1::Vip {
            name: name.into(),
            address: "10.213.0.100/24".into(),
            interface: "eth0".into(),
            service: "web".into(),
            owner,
            epoch,
            ..Default::default()
        }
    }

    fn state(vips: Vec<v1::Vip>) -> v1::GetStateResponse {
        v1::GetStateResponse {
            vips,
            ..Default::default()
        }
    }

    fn held(epoch: u64, deadline: Instant) -> BTreeMap<String, Held> {
        [(
            "v".to_string(),
            Held {
                epoch,
                addr: "10.213.0.100".parse().unwrap(),
                iface: "eth0".into(),
                deadline,
            },
        )]
        .into()
    }

    fn why_of(d: &[Drop]) -> Vec<(Why, Option<u64>)> {
        d.iter().map(|d| (d.why, d.confirm)).collect()
    }

    #[test]
    fn a_change_is_renewed_for_early_only_when_it_gives_this_node_a_vip_it_does_not_hold() {
        let later = Instant::now() + Duration::from_secs(1);
        let max = BTreeMap::new();
        let none = BTreeSet::new();
        let c = |s: &v1::GetStateResponse| claims(s, &max, ME);
        let epochs = |h: BTreeMap<String, Held>| move |v: &str| h.get(v).map(|h| h.epoch);
        // Held at the epoch the state shows, or given to another node: wait for the tick.
        assert!(!renew_early(
            &c(&state(vec![vip("v", ME, 3)])),
            epochs(held(3, later)),
            &none
        ));
        assert!(!renew_early(
            &c(&state(vec![vip("v", 2, 4)])),
            epochs(held(3, later)),
            &none
        ));
        assert!(!renew_early(
            &c(&state(vec![])),
            epochs(BTreeMap::new()),
            &none
        ));
        // Given here anew, or again at a new epoch: renew now.
        assert!(renew_early(
            &c(&state(vec![vip("v", ME, 3)])),
            epochs(BTreeMap::new()),
            &none
        ));
        assert!(renew_early(
            &c(&state(vec![vip("v", ME, 4)])),
            epochs(held(3, later)),
            &none
        ));
        assert!(renew_early(
            &c(&state(vec![vip("v", ME, 3), vip("w", ME, 1)])),
            epochs(held(3, later)),
            &none
        ));
        // Being released here: not claimed, nothing to renew for.
        let mut releasing = vip("v", ME, 3);
        releasing.releasing = true;
        assert!(!renew_early(
            &c(&state(vec![releasing])),
            epochs(held(3, later)),
            &none
        ));
        // Claimed in the last answered renewal and not held (refused, or not placeable here):
        // tried again at the tick, not at every change; a claim at another epoch is new.
        let claimed: BTreeSet<_> = [("v".to_string(), 3)].into();
        assert!(!renew_early(
            &c(&state(vec![vip("v", ME, 3)])),
            epochs(BTreeMap::new()),
            &claimed
        ));
        assert!(renew_early(
            &c(&state(vec![vip("v", ME, 4)])),
            epochs(BTreeMap::new()),
            &claimed
        ));
    }

    #[test]
    fn a_held_vip_is_kept_only_while_the_cluster_gives_it_here_at_its_epoch() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut max = BTreeMap::new();
        let d = |s: &v1::GetStateResponse, h, max: &mut BTreeMap<String, u64>| {
            why_of(&drops(s, &h, max, ME, now))
        };
        assert_eq!(
            d(&state(vec![vip("v", ME, 3)]), held(3, later), &mut max),
            []
        );
        assert_eq!(
            d(&state(vec![vip("v", 2, 4)]), held(3, later), &mut max),
            [(Why::Reassigned, None)]
        );
        assert_eq!(
            d(&state(vec![vip("v", ME, 3)]), held(3, later), &mut max),
            [(Why::EpochBackwards, None)],
            "epoch 4 was seen"
        );
        let mut max = BTreeMap::new();
        assert_eq!(
            d(&state(vec![vip("v", ME, 3)]), held(3, now), &mut max),
            [(Why::Expired, None)]
        );
        let mut releasing = vip("v", ME, 3);
        releasing.releasing = true;
        assert_eq!(
            d(&state(vec![releasing]), held(3, later), &mut max),
            [(Why::ReleaseRequested, Some(3))]
        );
    }

    #[test]
    fn a_deleted_or_changed_vip_is_let_go_and_its_release_confirmed() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let retired = |deleted| v1::RetiredVip {
            vip: "v".into(),
            address: "10.213.0.100/24".into(),
            interface: "eth0".into(),
            owner: ME,
            epoch: 3,
            deleted,
        };
        // Deleted: the VIP is gone, its address retired under our epoch.
        let mut s = state(vec![]);
        s.retired.push(retired(true));
        let d = drops(&s, &held(3, later), &mut BTreeMap::new(), ME, now);
        assert_eq!(why_of(&d), [(Why::Deleted, Some(3))]);
        // Changed address: the state asks for the release; the old address is what we hold.
        let mut v = vip("v", ME, 3);
        v.address = "10.213.0.101/24".into();
        v.releasing = true;
        let mut s = state(vec![v.clone()]);
        s.retired.push(retired(false));
        let d = drops(&s, &held(3, later), &mut BTreeMap::new(), ME, now);
        assert_eq!(why_of(&d), [(Why::ReleaseRequested, Some(3))]);
        // Not held (never acquired, or let go earlier): confirmed all the same, unless a drop
        // of it has not succeeded yet.
        assert_eq!(
            confirms_not_held(&s, &BTreeMap::new(), &[], ME),
            [("v".to_string(), 3)]
        );
        assert!(confirms_not_held(&s, &BTreeMap::new(), &["v".into()], ME).is_empty());
        // The fence governs the retired address as well as the new one.
        assert_eq!(
            managed(&s, &BTreeMap::new()),
            vec![
                "10.213.0.100".parse::<IpAddr>().unwrap(),
                "10.213.0.101".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_refused_renewal_drops_what_is_held_and_a_grant_acquires() {
        let later = Instant::now() + Duration::from_secs(1);
        let s = state(vec![vip("v", ME, 3), vip("w", ME, 1)]);
        let resp = v1::RenewResponse {
            grants: vec![
                v1::LeaseGrant {
                    vip: "v".into(),
                    epoch: 3,
                    granted: false,
                },
                v1::LeaseGrant {
                    vip: "w".into(),
                    epoch: 1,
                    granted: true,
                },
            ],
            ..Default::default()
        };
        let (d, a) = after_renewal(&s, &held(3, later), &resp);
        assert_eq!(why_of(&d), [(Why::RenewalRefused, None)]);
        assert_eq!(a.len(), 1);
        assert!(a[0].fresh && a[0].vip == "w");
        // Refused but not held: nothing to do.
        let (d, _) = after_renewal(&s, &BTreeMap::new(), &resp);
        assert!(d.is_empty());
    }

    #[test]
    fn the_deadline_follows_the_leaders_settings() {
        let sent = Instant::now();
        let resp = v1::RenewResponse {
            lease_ms: 2_000,
            drift_ms: 100,
            ..Default::default()
        };
        let own = crate::lease::LeaseConfig::default();
        assert_eq!(
            deadline(sent, &resp, &own),
            sent + Duration::from_millis(1_900)
        );
        let old_leader = v1::RenewResponse::default();
        assert_eq!(
            deadline(sent, &old_leader, &own),
            sent + Duration::from_millis(780)
        );
    }

    fn acquire_at(addr: &str, iface: &str) -> Acquire {
        Acquire {
            vip: "v".into(),
            epoch: 2,
            addr: addr.parse().unwrap(),
            prefix: 24,
            iface: iface.into(),
            fresh: false,
        }
    }

    #[test]
    fn an_address_whose_removal_failed_stays_governed_until_it_is_removed() {
        // The VIP is gone from the state and nothing is held: only the leftover names it.
        let leftover: Leftover = [("10.213.0.7".parse().unwrap(), "eth1".to_string())].into();
        let (addrs, ifaces) = governed(&state(vec![]), &BTreeMap::new(), &leftover);
        assert_eq!(addrs, vec!["10.213.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(ifaces, vec!["eth1".to_string()]);
        // Beside the cluster's VIPs, without duplicates.
        let leftover: Leftover = [("10.213.0.100".parse().unwrap(), "eth0".to_string())].into();
        let (addrs, ifaces) = governed(&state(vec![vip("v", 2, 1)]), &BTreeMap::new(), &leftover);
        assert_eq!(addrs.len(), 1);
        assert_eq!(ifaces, vec!["eth0".to_string()]);
    }

    #[test]
    fn a_leftover_address_held_again_is_forgotten_not_removed() {
        let far = Instant::now() + Duration::from_secs(5);
        let leftover: Leftover = [
            ("10.213.0.100".parse().unwrap(), "eth0".to_string()),
            ("10.213.0.7".parse().unwrap(), "eth0".to_string()),
        ]
        .into();
        // "v" holds 10.213.0.100 again: removing it would silence a VIP this node answers for.
        let (forget, remove) = leftovers_to_remove(&leftover, &held(2, far));
        assert_eq!(forget, vec!["10.213.0.100".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            remove,
            vec![("10.213.0.7".parse().unwrap(), "eth0".to_string())]
        );
        let (forget, remove) = leftovers_to_remove(&leftover, &BTreeMap::new());
        assert!(forget.is_empty());
        assert_eq!(remove.len(), 2);
        // Held again at that address but on another interface (an interface change whose
        // removal failed, then the VIP came back here): the old copy still goes.
        let mut elsewhere = held(2, far);
        elsewhere.get_mut("v").unwrap().iface = "eth1".into();
        let (forget, remove) = leftovers_to_remove(&leftover, &elsewhere);
        assert!(forget.is_empty());
        assert!(remove.contains(&("10.213.0.100".parse().unwrap(), "eth0".to_string())));
    }

    #[test]
    fn a_vip_acquired_again_elsewhere_leaves_its_old_address_to_be_removed() {
        let far = Instant::now() + Duration::from_secs(5);
        let before = held(1, far);
        let h = before.get("v");
        // The cluster changed the VIP's address while this node held it, and the release of
        // the old one failed; the next grant is at the new address.
        assert_eq!(
            displaced(h, &acquire_at("10.213.0.101", "eth0")),
            Some(("10.213.0.100".parse().unwrap(), "eth0".into()))
        );
        assert_eq!(
            displaced(h, &acquire_at("10.213.0.100", "eth1")),
            Some(("10.213.0.100".parse().unwrap(), "eth0".into()))
        );
        // A renewal at the same place, or a first acquire, displaces nothing.
        assert_eq!(displaced(h, &acquire_at("10.213.0.100", "eth0")), None);
        assert_eq!(displaced(None, &acquire_at("10.213.0.100", "eth0")), None);

        // Through the whole round: the state moved "v" to .101; the renewal grants it there.
        let mut moved = vip("v", ME, 1);
        moved.address = "10.213.0.101/24".into();
        let s = state(vec![moved]);
        let resp = v1::RenewResponse {
            grants: vec![v1::LeaseGrant {
                vip: "v".into(),
                epoch: 1,
                granted: true,
            }],
            ..Default::default()
        };
        let (_, acquires) = after_renewal(&s, &before, &resp);
        assert_eq!(acquires.len(), 1);
        let (addr, iface) = displaced(before.get("v"), &acquires[0]).unwrap();
        let leftover: Leftover = [(addr, iface)].into();
        let mut now_held = before.clone();
        now_held.get_mut("v").unwrap().addr = acquires[0].addr;
        // The old address stays governed (silent) and is removed, not forgotten.
        let (addrs, _) = governed(&s, &now_held, &leftover);
        assert!(addrs.contains(&"10.213.0.100".parse().unwrap()));
        let (forget, remove) = leftovers_to_remove(&leftover, &now_held);
        assert!(forget.is_empty());
        assert_eq!(remove.len(), 1);
    }

    #[test]
    fn a_grant_is_acted_on_only_before_its_deadline_and_inside_the_fence() {
        let now = Instant::now();
        let a = acquire_at("10.213.0.100", "eth0");
        let fence = (
            vec!["10.213.0.100".parse().unwrap()],
            vec!["eth0".to_string()],
        );
        let d = now + Duration::from_millis(1500);
        assert_eq!(
            may_answer(&a, &fence, d, now),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(may_answer(&a, &fence, now, now), Err(Refusal::Expired));
        let no_iface = (fence.0.clone(), vec!["eth1".to_string()]);
        assert_eq!(may_answer(&a, &no_iface, d, now), Err(Refusal::Ungoverned));
        let no_addr = (vec![], fence.1.clone());
        assert_eq!(may_answer(&a, &no_addr, d, now), Err(Refusal::Ungoverned));
    }

    #[test]
    fn a_release_is_confirmed_only_once_the_vip_is_silent() {
        // Revoked in a fence that governs it: confirmed at once, before the address goes.
        let l = let_go(true, true);
        assert!(l.confirm_after_revoke && !l.confirm_after_removal);
        assert!(!l.still_held && !l.leftover);
        // Revoked but the address stays: silent, confirmed, removed again later.
        let l = let_go(true, false);
        assert!(l.confirm_after_revoke && !l.confirm_after_removal);
        assert!(!l.still_held && l.leftover);
        // Not revoked, the address removed: silent only now, confirmed after the removal.
        let l = let_go(false, true);
        assert!(!l.confirm_after_revoke && l.confirm_after_removal);
        assert!(!l.still_held && !l.leftover);
        // Neither: it may still answer, so it is neither confirmed nor let go.
        let l = let_go(false, false);
        assert!(!l.confirm_after_revoke && !l.confirm_after_removal);
        assert!(l.still_held);
    }
}
