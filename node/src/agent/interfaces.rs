//! Per-server interfaces: a VIP's `interface` names its segment, the same for the whole
//! cluster; a server may call that segment's interface otherwise (`eth0`, `ens3`, `bond0`).
//! The agent's local configuration maps a VIP (`--vip-interface VIP=IFACE`) or every VIP of a
//! segment (`--segment-interface SEGMENT=IFACE`) to its own interface; the VIP's own name is
//! used otherwise. Local configuration only, never the API, and fixed for the process's
//! life.
//!
//! Applied in one place: `run.rs` maps every state view it reads (VIPs and retired
//! addresses) before anything else sees it, so the plan, the fence, the addresses and the
//! announcements all see one local name per VIP. And, at every renewal, which VIPs this
//! server cannot place (their local interface does not exist here), for the leader's
//! placement and `ballastctl status`. Pure but for reading `/sys/class/net`.

use std::collections::{BTreeMap, BTreeSet};

use ballast_proto::v1;

use crate::types::NodeId;

/// The local interface of VIPs, by VIP name and by segment (the cluster's interface name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceMap {
    /// VIP name -> local interface (wins over the segment's).
    pub vips: BTreeMap<String, String>,
    /// Segment (the VIP's `interface` in the cluster) -> local interface.
    pub segments: BTreeMap<String, String>,
}

impl InterfaceMap {
    /// Where VIP `vip` of segment `segment` goes on this server.
    pub fn local<'a>(&'a self, vip: &str, segment: &'a str) -> &'a str {
        self.vips
            .get(vip)
            .or_else(|| self.segments.get(segment))
            .map_or(segment, String::as_str)
    }

    /// `state` as this server sees it: every VIP's and retired address's interface replaced
    /// by its local one.
    pub fn apply(&self, state: &mut v1::GetStateResponse) {
        if self.vips.is_empty() && self.segments.is_empty() {
            return;
        }
        for v in &mut state.vips {
            let local = self.local(&v.name, &v.interface);
            if local != v.interface {
                v.interface = local.to_string();
            }
        }
        for r in &mut state.retired {
            let local = self.local(&r.vip, &r.interface);
            if local != r.interface {
                r.interface = local.to_string();
            }
        }
    }
}

/// The VIPs of `state` (mapped: see [`InterfaceMap::apply`]) of services node `me` backs
/// whose interface does not exist here (`exists`), sorted by VIP name. Only those: a node
/// that backs no service of a VIP is never eligible for it, and a cluster of many VIPs on
/// segments this server is not on would otherwise fill every renewal.
pub fn unplaceable<'a>(
    state: &'a v1::GetStateResponse,
    me: NodeId,
    exists: impl Fn(&str) -> bool,
) -> Vec<v1::Unplaceable> {
    let backs: BTreeSet<&str> = state
        .services
        .iter()
        .filter(|s| s.backends.contains_key(&me))
        .map(|s| s.name.as_str())
        .collect();
    // Each interface looked up once, however many VIPs it carries.
    let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
    let mut missing = |i: &'a str| *seen.entry(i).or_insert_with(|| !exists(i));
    let mut out: Vec<v1::Unplaceable> = state
        .vips
        .iter()
        .filter(|v| backs.contains(v.service.as_str()) && missing(&v.interface))
        .map(|v| v1::Unplaceable {
            vip: v.name.clone(),
            interface: v.interface.clone(),
            reason: NO_SUCH_INTERFACE.into(),
        })
        .collect();
    out.sort_by(|a, b| a.vip.cmp(&b.vip));
    out.dedup_by(|a, b| a.vip == b.vip);
    out
}

/// The reason an [`unplaceable`] VIP is given.
pub const NO_SUCH_INTERFACE: &str = "no such interface";

/// Whether interface `name` exists on this server (in this network namespace).
pub fn exists(name: &str) -> bool {
    !matches!(name, "" | "." | "..")
        && !name.contains('/')
        && std::path::Path::new("/sys/class/net").join(name).exists()
}

/// A VIP by name, and the local interface it would go on.
pub type VipOn = (String, String);

/// What the agent said in its log about unplaceable VIPs: each one once (by VIP and
/// interface) while it stays so, not at every renewal.
#[derive(Debug, Default)]
pub struct Told(BTreeSet<VipOn>);

impl Told {
    /// The entries of `now` not told yet, and those told before that are placeable again;
    /// remembers `now`.
    pub fn news(&mut self, now: &[v1::Unplaceable]) -> (Vec<VipOn>, Vec<VipOn>) {
        let current: BTreeSet<VipOn> = now
            .iter()
            .map(|u| (u.vip.clone(), u.interface.clone()))
            .collect();
        let new = current.difference(&self.0).cloned().collect();
        let gone = self.0.difference(&current).cloned().collect();
        self.0 = current;
        (new, gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(vips: &[(&str, &str)], segments: &[(&str, &str)]) -> InterfaceMap {
        let m = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        InterfaceMap {
            vips: m(vips),
            segments: m(segments),
        }
    }

    fn vip(name: &str, interface: &str, service: &str) -> v1::Vip {
        v1::Vip {
            name: name.into(),
            address: "10.0.0.1/24".into(),
            interface: interface.into(),
            service: service.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_vip_goes_on_its_own_mapping_then_its_segments_then_the_clusters_name() {
        let m = map(
            &[("web-vip", "ens3")],
            &[("eth0", "bond0"), ("lan2", "eth1")],
        );
        assert_eq!(m.local("web-vip", "eth0"), "ens3", "per VIP wins");
        assert_eq!(m.local("db-vip", "eth0"), "bond0", "per segment");
        assert_eq!(
            m.local("db-vip", "eth9"),
            "eth9",
            "unmapped: the cluster's name"
        );
        let mut s = v1::GetStateResponse {
            vips: vec![
                vip("web-vip", "eth0", "web"),
                vip("db-vip", "eth0", "db"),
                vip("x", "lan2", "db"),
                vip("y", "eth9", "db"),
            ],
            retired: vec![
                v1::RetiredVip {
                    vip: "web-vip".into(),
                    interface: "lan2".into(),
                    ..Default::default()
                },
                v1::RetiredVip {
                    vip: "gone".into(),
                    interface: "eth0".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let before = s.clone();
        m.apply(&mut s);
        let ifaces: Vec<&str> = s.vips.iter().map(|v| v.interface.as_str()).collect();
        assert_eq!(ifaces, ["ens3", "bond0", "eth1", "eth9"]);
        let retired: Vec<&str> = s.retired.iter().map(|r| r.interface.as_str()).collect();
        assert_eq!(
            retired,
            ["ens3", "bond0"],
            "a retired address goes where its VIP went"
        );
        // Nothing else changes, and mapping is stable: a view mapped again is the same.
        let mut again = s.clone();
        m.apply(&mut again);
        assert_eq!(again, s);
        for (a, b) in s.vips.iter().zip(&before.vips) {
            assert_eq!(
                (&a.name, &a.address, &a.service),
                (&b.name, &b.address, &b.service)
            );
        }
        // No mapping: the view as the cluster gave it.
        let mut plain = before.clone();
        InterfaceMap::default().apply(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn only_vips_of_backed_services_on_missing_interfaces_are_unplaceable() {
        let backend = |id| {
            (
                id,
                v1::Backend {
                    node_id: id,
                    ..Default::default()
                },
            )
        };
        let s = v1::GetStateResponse {
            vips: vec![
                vip("b", "ens3", "web"),
                vip("a", "eth0", "web"),
                vip("c", "nosuch0", "web"),
                vip("d", "nosuch0", "db"),
            ],
            services: vec![
                v1::Service {
                    name: "web".into(),
                    backends: [backend(1), backend(2)].into(),
                    ..Default::default()
                },
                v1::Service {
                    name: "db".into(),
                    backends: [backend(2)].into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let here = |i: &str| i == "eth0";
        let u = unplaceable(&s, 1, here);
        let got: Vec<(&str, &str)> = u
            .iter()
            .map(|u| (u.vip.as_str(), u.interface.as_str()))
            .collect();
        assert_eq!(
            got,
            [("b", "ens3"), ("c", "nosuch0")],
            "not d: node 1 backs no db"
        );
        assert!(u.iter().all(|u| u.reason == NO_SUCH_INTERFACE));
        assert_eq!(unplaceable(&s, 3, here), vec![], "node 3 backs nothing");
        assert_eq!(unplaceable(&s, 1, |_| true), vec![]);
    }

    #[test]
    fn each_unplaceable_vip_is_told_once_while_it_stays_so() {
        let u = |vip: &str, i: &str| v1::Unplaceable {
            vip: vip.into(),
            interface: i.into(),
            reason: NO_SUCH_INTERFACE.into(),
        };
        let p = |v: &str, i: &str| (v.to_string(), i.to_string());
        let mut t = Told::default();
        assert_eq!(t.news(&[u("a", "ens3")]), (vec![p("a", "ens3")], vec![]));
        assert_eq!(t.news(&[u("a", "ens3")]), (vec![], vec![]), "once");
        assert_eq!(
            t.news(&[u("b", "ens3")]),
            (vec![p("b", "ens3")], vec![p("a", "ens3")])
        );
        assert_eq!(t.news(&[]), (vec![], vec![p("b", "ens3")]));
        assert_eq!(t.news(&[u("b", "ens3")]).0, vec![p("b", "ens3")], "again");
    }

    #[test]
    fn an_interface_exists_only_if_the_kernel_has_it() {
        assert!(exists("lo"));
        assert!(!exists("nosuch-if0"));
        assert!(!exists(""));
        assert!(!exists("../lo"));
        assert!(!exists(".."));
    }
}
