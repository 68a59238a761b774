//! The agent's decisions, without IO: given what the cluster decided (a view of its state),
//! what this agent holds and the time, which VIPs to drop (and whether to confirm the
//! release), what to claim, and what a renewal's answer means. `run.rs` carries them out.
//! Tested by asserting the steps these functions return.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ballast_proto::v1;

use crate::types::NodeId;

/// A VIP this agent answers for: its fence allows it until `deadline`.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub epoch: u64,
    pub addr: Ipv4Addr,
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
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub iface: String,
    /// Not held before: announce it (gratuitous ARP).
    pub fresh: bool,
}

/// The address and prefix of a VIP ("10.0.0.1/24").
pub fn parse_addr(address: &str) -> Option<(Ipv4Addr, u8)> {
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
/// earlier), so that planned moves proceed. `letting_go`: VIPs whose drop has not succeeded
/// yet; they are confirmed only once it does.
pub fn confirms_not_held(
    state: &v1::GetStateResponse,
    held: &BTreeMap<String, Held>,
    letting_go: &[String],
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
        .filter(|(name, _)| !held.contains_key(name) && !letting_go.contains(name))
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
pub fn managed(state: &v1::GetStateResponse, held: &BTreeMap<String, Held>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = state
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
                "10.213.0.100".parse::<Ipv4Addr>().unwrap(),
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
}
