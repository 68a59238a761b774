//! The state's VIPs and the index of their addresses, in one type ([`Vips`]) that reads as
//! the map of VIPs and changes only through methods that keep the index right: no code can
//! change a VIP and leave the index behind (issue 14's review: with the map and the index
//! side by side in `StateData`, a `vips.insert` or an address changed in place would have
//! broken it silently).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Serialize};

use crate::model;
use crate::types::vip_ip;

/// The VIPs of the state, by name.
///
/// Reads go through `Deref` to the map (`get`, `iter`, `values`, `len`, ...); there is no
/// mutable access to the map, only [`Vips::insert`], [`Vips::remove`], [`Vips::update`] and
/// a whole new value (`Vips::from` a map), each of which keeps the index right.
///
/// The index (which VIPs have each address, by its IP as `vip_ip` reads it) lets a new VIP's
/// address be checked against the others in O(log V), not by reading every VIP. It is
/// derived and never stored: a `Vips` is stored as its map alone (`serde(transparent)`), so
/// a snapshot or backup holds the same bytes as before the index existed; a decoded, default
/// or restored one starts with no index, built on first use. Two `Vips` are equal when their
/// maps are, whatever their indexes hold.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Vips {
    map: BTreeMap<String, model::Vip>,
    /// IP -> the names of the VIPs whose address has it. None: not built yet.
    #[serde(skip)]
    index: Option<BTreeMap<String, BTreeSet<String>>>,
}

impl Deref for Vips {
    type Target = BTreeMap<String, model::Vip>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<'a> IntoIterator for &'a Vips {
    type Item = (&'a String, &'a model::Vip);
    type IntoIter = std::collections::btree_map::Iter<'a, String, model::Vip>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl From<BTreeMap<String, model::Vip>> for Vips {
    /// Every VIP at once (a decoded old format, a restore): the index is built on first use.
    fn from(map: BTreeMap<String, model::Vip>) -> Self {
        Vips { map, index: None }
    }
}

impl PartialEq for Vips {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl std::fmt::Debug for Vips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

/// Adds `name` under `ip`.
fn index_add(index: &mut BTreeMap<String, BTreeSet<String>>, ip: &str, name: &str) {
    match index.get_mut(ip) {
        Some(names) => {
            names.insert(name.to_string());
        }
        None => {
            index.insert(ip.to_string(), BTreeSet::from([name.to_string()]));
        }
    }
}

/// Removes `name` from under `ip`, and `ip` if no other VIP has it.
fn index_drop(index: &mut BTreeMap<String, BTreeSet<String>>, ip: &str, name: &str) {
    if let Some(names) = index.get_mut(ip) {
        names.remove(name);
        if names.is_empty() {
            index.remove(ip);
        }
    }
}

/// The index of `map`, made from scratch.
fn build(map: &BTreeMap<String, model::Vip>) -> BTreeMap<String, BTreeSet<String>> {
    let mut index = BTreeMap::new();
    for (name, v) in map {
        index_add(&mut index, vip_ip(&v.address), name);
    }
    index
}

impl Vips {
    /// Adds or replaces the VIP `name`. Returns the VIP it replaced.
    pub fn insert(&mut self, name: String, v: model::Vip) -> Option<model::Vip> {
        let ip = vip_ip(&v.address).to_string();
        let old = self.map.insert(name.clone(), v);
        if let Some(index) = self.index.as_mut() {
            if let Some(o) = &old {
                index_drop(index, vip_ip(&o.address), &name);
            }
            index_add(index, &ip, &name);
        }
        old
    }

    /// Removes the VIP `name`.
    pub fn remove(&mut self, name: &str) -> Option<model::Vip> {
        let old = self.map.remove(name)?;
        if let Some(index) = self.index.as_mut() {
            index_drop(index, vip_ip(&old.address), name);
        }
        Some(old)
    }

    /// Changes the VIP `name` in place with `f` (None if there is none). Made for what the
    /// controller and the operator change of a VIP (owner, epoch, releasing, move_to), which
    /// costs the index nothing but one copy of the address; an address `f` changes is indexed
    /// again after it.
    pub fn update<R>(&mut self, name: &str, f: impl FnOnce(&mut model::Vip) -> R) -> Option<R> {
        let v = self.map.get_mut(name)?;
        let Some(index) = self.index.as_mut() else {
            return Some(f(v));
        };
        let before = v.address.clone();
        let r = f(v);
        let (old_ip, new_ip) = (vip_ip(&before), vip_ip(&v.address));
        if old_ip != new_ip {
            index_drop(index, old_ip, name);
            index_add(index, new_ip, name);
        }
        Some(r)
    }

    /// The first VIP (in the order of the map) not named `name` whose address has the IP of
    /// `address`: the one a VIP `name` at `address` would collide with. Builds the index if
    /// it is not yet.
    pub fn other_at(&mut self, name: &str, address: &str) -> Option<&model::Vip> {
        let ip = vip_ip(address);
        let map = &self.map;
        let index = self.index.get_or_insert_with(|| build(map));
        let found = index
            .get(ip)
            .into_iter()
            .flatten()
            .filter_map(|n| map.get(n))
            .find(|v| v.name != name);
        // Every test run checks the index against the full search it replaced.
        debug_assert_eq!(
            found.map(|v| &v.name),
            map.values()
                .find(|v| v.name != name && vip_ip(&v.address) == ip)
                .map(|v| &v.name),
            "the address index of the VIPs is out of step"
        );
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Vips {
        /// Asserts that the index, if built, is the one made from scratch; then builds it.
        fn check(&mut self) {
            if let Some(index) = &self.index {
                assert_eq!(*index, build(&self.map), "the index is out of step");
            }
            self.index.get_or_insert_with(|| build(&self.map));
        }
    }

    /// The index reads only names and addresses.
    fn vip(name: &str, address: &str) -> model::Vip {
        let (name, address) = (name.into(), address.into());
        model::Vip {
            name,
            address,
            ..Default::default()
        }
    }

    /// Every way to change the VIPs keeps the index equal to one made from scratch: adding,
    /// replacing (same or another address), removing, changing a VIP in place (its lease
    /// fields, its address, its prefix alone), replacing them all, and a decoded copy.
    #[test]
    fn every_change_keeps_the_index_as_made_from_scratch() {
        let mut vips = Vips::default();
        let mut next = crate::member::state::tests::xorshift(0x9e37_79b9_7f4a_7c15);
        let mut changed_addresses = 0;
        for _ in 0..5_000 {
            let name = format!("v{}", next(16));
            let address = format!("10.213.0.{}/{}", next(12), 20 + next(8));
            match next(9) {
                0..=2 => {
                    vips.insert(name.clone(), vip(&name, &address));
                }
                3 => {
                    vips.remove(&name);
                }
                4 => {
                    let (owner, epoch) = (next(3), next(100));
                    vips.update(&name, |v| {
                        (v.owner, v.epoch, v.releasing, v.move_to) = (owner, epoch, true, owner)
                    });
                }
                5 => {
                    let to = address.clone();
                    if vips.update(&name, |v| v.address = to).is_some() {
                        changed_addresses += 1;
                    }
                }
                6 => {
                    // The prefix alone: the same IP, nothing to index again.
                    vips.update(&name, |v| {
                        v.address = format!("{}/32", vip_ip(&v.address));
                    });
                }
                7 => {
                    let mut all = BTreeMap::clone(&vips);
                    all.insert(name.clone(), vip(&name, &address));
                    vips = Vips::from(all);
                }
                _ => {
                    vips = bincode::deserialize(&bincode::serialize(&vips).unwrap()).unwrap();
                    assert!(vips.index.is_none(), "a decoded copy has no index yet");
                }
            }
            vips.check();
            // And the collision check answers as a search of every VIP would.
            vips.other_at(&name, &address);
        }
        assert!(changed_addresses > 100, "{changed_addresses}");
        assert!(vips.len() > 4);
    }

    /// `Vips` is stored as its bare map (so snapshots and backups are unchanged), decodes from
    /// one, and is equal to another whatever their indexes.
    #[test]
    fn stored_as_the_bare_map_and_equal_whatever_the_index() {
        let map: BTreeMap<String, model::Vip> = (0..5)
            .map(|i| {
                (
                    format!("v{i}"),
                    vip(&format!("v{i}"), &format!("10.0.0.{i}/24")),
                )
            })
            .collect();
        let mut built = Vips::from(map.clone());
        assert!(built.other_at("x", "10.0.0.3/32").is_some());
        assert!(built.index.is_some());
        let bytes = bincode::serialize(&map).unwrap();
        assert_eq!(bincode::serialize(&built).unwrap(), bytes);
        let decoded: Vips = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, built);
        assert_eq!(*decoded, map);
        assert_eq!(format!("{decoded:?}"), format!("{map:?}"));
    }
}
