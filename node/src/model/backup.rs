//! The payload of a backup file: the application state at one revision (KV with revisions,
//! nodes, services with releases and rollouts, VIPs) and what a restored cluster needs to
//! keep the VIP promise (the old cluster's lease wait, its retired addresses and the epochs
//! of its deleted VIPs), versioned like every stored format (see `format.rs`). The file
//! around it (header, checksum) is `ballast_client::backup`; taking and restoring one is
//! the member's `backup` module and `StateData::restore`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{KvEntry, Node, RetiredVip, Service, Vip};

/// Version of the payload encoding written now. Format 1 (until November 2026) had no
/// lease wait, format 2 no retired addresses and deleted VIPs' epochs; [`BackupState::decode`]
/// reads them all.
pub const PAYLOAD_FORMAT: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupState {
    pub format: u32,
    pub revision: u64,
    pub kv: BTreeMap<Vec<u8>, KvEntry>,
    pub nodes: BTreeMap<u64, Node>,
    pub services: BTreeMap<String, Service>,
    pub vips: BTreeMap<String, Vip>,
    /// How long (ms) a lease granted by the cluster the backup came from may be held (its
    /// `lease_wait_ms`): the restored cluster counts the old owners' leases that long from its
    /// leader's election before placing their VIPs. 0 when unknown (format 1).
    pub lease_wait_ms: u64,
    /// Addresses the old cluster had retired (deleted or changed VIPs whose last owner may
    /// still answer): held back by the restored cluster like its VIPs' own. Empty before
    /// format 3.
    pub retired: BTreeMap<String, RetiredVip>,
    /// The last epochs of the old cluster's deleted VIPs, so that a VIP made again under one
    /// of those names continues its epochs. Empty before format 3.
    pub vip_epochs: BTreeMap<String, u64>,
}

/// Format 1 of the payload, frozen: read only.
#[derive(Deserialize)]
struct BackupStateV1 {
    format: u32,
    revision: u64,
    kv: BTreeMap<Vec<u8>, KvEntry>,
    nodes: BTreeMap<u64, Node>,
    services: BTreeMap<String, Service>,
    vips: BTreeMap<String, Vip>,
}

/// Format 2 of the payload (format 1 and the lease wait), frozen: read only.
#[derive(Deserialize)]
struct BackupStateV2 {
    format: u32,
    revision: u64,
    kv: BTreeMap<Vec<u8>, KvEntry>,
    nodes: BTreeMap<u64, Node>,
    services: BTreeMap<String, Service>,
    vips: BTreeMap<String, Vip>,
    lease_wait_ms: u64,
}

impl BackupState {
    /// What a cluster never writes but a hand-edited file could hold, and the restored state
    /// would keep for ever (nothing refuses it after the fact): a VIP stored under a name
    /// other than its own (the address check for a new VIP of that name would skip it), or
    /// two VIPs on one address.
    pub fn check_vips(&self) -> Result<(), String> {
        let mut by_address: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, v) in &self.vips {
            if *name != v.name {
                return Err(format!("the VIP stored as {name:?} is named {:?}", v.name));
            }
            if let Some(other) = by_address.insert(crate::types::vip_ip(&v.address), name) {
                return Err(format!(
                    "VIPs {other:?} and {name:?} both have the address {}",
                    v.address
                ));
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("state always encodes")
    }

    /// Reads a payload of any format ever written (the format is its first field).
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        let unreadable = |e: bincode::Error| format!("the state in the backup is unreadable: {e}");
        let format: u32 = bincode::deserialize(payload).map_err(unreadable)?;
        match format {
            1 => {
                let b: BackupStateV1 = bincode::deserialize(payload).map_err(unreadable)?;
                Ok(BackupState {
                    format: b.format,
                    revision: b.revision,
                    kv: b.kv,
                    nodes: b.nodes,
                    services: b.services,
                    vips: b.vips,
                    lease_wait_ms: 0,
                    retired: BTreeMap::new(),
                    vip_epochs: BTreeMap::new(),
                })
            }
            2 => {
                let b: BackupStateV2 = bincode::deserialize(payload).map_err(unreadable)?;
                Ok(BackupState {
                    format: b.format,
                    revision: b.revision,
                    kv: b.kv,
                    nodes: b.nodes,
                    services: b.services,
                    vips: b.vips,
                    lease_wait_ms: b.lease_wait_ms,
                    retired: BTreeMap::new(),
                    vip_epochs: BTreeMap::new(),
                })
            }
            PAYLOAD_FORMAT => bincode::deserialize(payload).map_err(unreadable),
            other => Err(format!(
                "backup payload format {other} (this ballastd reads 1 to {PAYLOAD_FORMAT}): upgrade ballastd"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(vips: &[(&str, &str, &str)]) -> BackupState {
        BackupState {
            format: 3,
            revision: 1,
            kv: BTreeMap::new(),
            nodes: BTreeMap::new(),
            services: BTreeMap::new(),
            vips: vips
                .iter()
                .map(|(key, name, address)| {
                    let v = Vip {
                        name: name.to_string(),
                        address: address.to_string(),
                        ..Default::default()
                    };
                    (key.to_string(), v)
                })
                .collect(),
            lease_wait_ms: 0,
            retired: BTreeMap::new(),
            vip_epochs: BTreeMap::new(),
        }
    }

    /// A hand-edited backup that no cluster would write is refused before it seeds one.
    #[test]
    fn a_backup_with_vips_no_cluster_would_hold_is_refused() {
        let ok = state(&[("a", "a", "10.0.0.1/24"), ("b", "b", "10.0.0.2/24")]);
        assert_eq!(ok.check_vips(), Ok(()));
        let shared = state(&[("a", "a", "10.0.0.1/24"), ("b", "b", "10.0.0.1/32")]);
        let e = shared.check_vips().unwrap_err();
        assert!(e.contains("both have the address"), "{e}");
        let renamed = state(&[("a", "b", "10.0.0.1/24")]);
        let e = renamed.check_vips().unwrap_err();
        assert!(e.contains("is named"), "{e}");
    }
}
