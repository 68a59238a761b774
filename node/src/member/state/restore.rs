//! Backups as the state machine sees them: what a backup of the state holds
//! (`StateData::backup`), and how `Op::RestoreHeld` (and `Op::Restore`, as old logs hold it)
//! seeds a new, empty cluster with one. Deterministic like the rest of `StateData::apply`:
//! no clock, no IO. Writing, reading and checking backup files, `--force-new-cluster` and the
//! payload's format are `member/backup.rs` and `model/backup.rs`.

use std::collections::BTreeMap;

use crate::member::state::{rejected, state_event, Applied, StateData, Vips};
use crate::model;
use crate::model::RetiredVip;
use crate::types::Outcome;

impl StateData {
    /// What a backup of this state holds (see `model/backup.rs`).
    pub fn backup(&self) -> model::backup::BackupState {
        model::backup::BackupState {
            format: model::backup::PAYLOAD_FORMAT,
            revision: self.revision,
            kv: self.kv.clone(),
            nodes: self.nodes.clone(),
            services: self.services.clone(),
            vips: BTreeMap::clone(&self.vips),
            lease_wait_ms: self.lease_wait_ms,
            retired: self.retired.clone(),
            vip_epochs: self.vip_epochs.clone(),
        }
    }

    /// Takes a backup's state (see `backup.rs`): its KV with their revisions, services and
    /// VIPs; its nodes beside this cluster's own (which win). The revision continues from the
    /// backup's when it is ahead.
    ///
    /// VIPs start unowned, keeping their epochs (above any this cluster already used for the
    /// name), so that the new cluster's controller assigns them afresh and epochs
    /// never go backwards. But a node of the old cluster may still answer for any of them
    /// (maybe one the backup does not name as owner: it may be older than the last move)
    /// until the lease the old cluster granted runs out. So every VIP's name and address are
    /// retired as if the VIP had been deleted, and the cluster's lease wait rises to the old
    /// cluster's: the leader places none of them before that wait has passed since its
    /// election (which came after the old cluster stopped granting). No confirmation frees
    /// them sooner: the retired entries name no owner, since an agent of the new cluster with
    /// the node id the backup names may not be the process (or the server) that held it.
    ///
    /// That is `Op::RestoreHeld` (`held`). `Op::Restore`, as entries written until November
    /// 2026 hold it, applies as it did then (VIPs unowned and free at once), so that a log
    /// replayed by a newer member gives the state the others computed.
    pub(crate) fn restore(&mut self, payload: &[u8], held: bool) -> Applied {
        let b = match model::backup::BackupState::decode(payload) {
            Ok(b) => b,
            Err(e) => return (rejected("backup", e), Vec::new()),
        };
        if !self.kv.is_empty()
            || !self.services.is_empty()
            || !self.vips.is_empty()
            || (held && !self.retired.is_empty())
        {
            return (
                rejected(
                    "backup",
                    "the cluster already holds KV data, services or VIPs: a backup only seeds a new, empty cluster",
                ),
                Vec::new(),
            );
        }
        self.revision = self.revision.max(b.revision);
        self.kv = b.kv;
        for (id, mut n) in b.nodes {
            n.alive = false;
            n.vips_held.clear();
            self.nodes.entry(id).or_insert(n);
        }
        self.services = b.services;
        let vips: BTreeMap<String, model::Vip> = b
            .vips
            .into_iter()
            .map(|(name, mut v)| {
                if held {
                    // Past any epoch this cluster used for the name: a confirmation the
                    // leader holds for that one must not count for the restored address.
                    if let Some(used) = self.vip_epochs.remove(&name) {
                        v.epoch = v.epoch.max(used + 1);
                    }
                    self.retired.insert(
                        name.clone(),
                        RetiredVip {
                            address: v.address.clone(),
                            interface: v.interface.clone(),
                            owner: 0,
                            epoch: v.epoch,
                            deleted: true,
                        },
                    );
                }
                v.owner = 0;
                v.releasing = false;
                v.move_to = 0;
                (name, v)
            })
            .collect();
        self.vips = Vips::from(vips);
        if held {
            // What the old cluster itself still held back (payload format 3 on): its retired
            // addresses, with no owner like the rest, and its deleted VIPs' epochs. A retired
            // address of a VIP the backup also holds (its address was changing) is kept under
            // `NAME/EPOCH`, which no VIP can be named, so that both addresses are held.
            for (name, r) in b.retired {
                let key = if self.retired.contains_key(&name) {
                    format!("{name}/{}", r.epoch)
                } else {
                    name
                };
                self.retired.insert(
                    key,
                    RetiredVip {
                        owner: 0,
                        deleted: true,
                        ..r
                    },
                );
            }
            for (name, epoch) in b.vip_epochs {
                if !self.vips.contains_key(&name) {
                    let e = self.vip_epochs.entry(name).or_insert(0);
                    *e = (*e).max(epoch);
                }
            }
        }
        if held && b.lease_wait_ms > self.lease_wait_ms {
            self.lease_wait_ms = b.lease_wait_ms;
            self.lease_generation += 1;
        }
        (
            Outcome::StateWritten,
            vec![state_event("restore", "backup", false)],
        )
    }
}
