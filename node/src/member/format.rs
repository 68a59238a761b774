//! The stored formats of the state (snapshots), with an explicit version.
//!
//! A snapshot is `MAGIC`, a version (u16, little endian), then the bincode of that version's
//! state. The first format (version 0) had no header: it is the bincode of [`StateDataV0`],
//! whose first byte (an `Option` tag, 0 or 1) can never be the first byte of `MAGIC`. The
//! decoder knows every version ever written; files written by each are kept in
//! `tests/fixtures/formats/` and decoded by `tests/formats.rs` for ever.
//!
//! To change what is stored: add the field to `StateData`, freeze the previous layout here as
//! `StateDataV<n>` with its conversion, bump [`STATE_VERSION`], and add the new version's
//! fixture (`cargo test -p ballast-node --test formats -- --ignored`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::member::state::{Session, StateData};
use crate::model;
use crate::model::KvEntry;
use crate::types::{LogId, NodeId, StoredMembership};

/// What every versioned snapshot starts with.
pub const MAGIC: &[u8; 8] = b"BLSTSTAT";
/// The version written now.
pub const STATE_VERSION: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("snapshot format version {0} is newer than this ballastd knows (up to {STATE_VERSION}): upgrade ballastd")]
    TooNew(u16),
    #[error("undecodable snapshot (format version {version}): {message}")]
    Corrupt { version: u16, message: String },
}

/// Version 0: the state as stored up to November 2026 (no header).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateDataV0 {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub revision: u64,
    pub kv: BTreeMap<Vec<u8>, KvEntry>,
    pub nodes: BTreeMap<NodeId, model::Node>,
    pub services: BTreeMap<String, model::Service>,
    pub vips: BTreeMap<String, model::Vip>,
    pub sessions: BTreeMap<u64, Session>,
    pub history: VecDeque<model::Changes>,
}

impl From<StateDataV0> for StateData {
    /// Nothing of version 1 was known then: lease settings unset (the next leader sets its
    /// own), no retired address, no deleted VIP's epoch, no agent bound.
    fn from(v: StateDataV0) -> Self {
        StateData {
            last_applied: v.last_applied,
            membership: v.membership,
            revision: v.revision,
            kv: v.kv,
            nodes: v.nodes,
            services: v.services,
            vips: v.vips.into(),
            sessions: v.sessions,
            history: v.history.into_iter().map(Arc::new).collect(),
            ..Default::default()
        }
    }
}

pub fn encode_state(s: &StateData) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + 4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&STATE_VERSION.to_le_bytes());
    bincode::serialize_into(&mut out, s).expect("the state always encodes");
    out
}

pub fn decode_state(bytes: &[u8]) -> Result<StateData, FormatError> {
    let corrupt = |version: u16| {
        move |e: bincode::Error| FormatError::Corrupt {
            version,
            message: e.to_string(),
        }
    };
    let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        let v0: StateDataV0 = bincode::deserialize(bytes).map_err(corrupt(0))?;
        return Ok(v0.into());
    };
    let (version, body) = match rest {
        [a, b, body @ ..] => (u16::from_le_bytes([*a, *b]), body),
        _ => {
            return Err(FormatError::Corrupt {
                version: 0,
                message: "truncated header".into(),
            })
        }
    };
    match version {
        1 => bincode::deserialize(body).map_err(corrupt(1)),
        v => Err(FormatError::TooNew(v)),
    }
}

/// What every versioned log entry starts with. An entry of version 0 (plain bincode, until
/// November 2026) starts with its term as a little-endian u64, which never reaches
/// `u64::MAX`: the two cannot be confused.
pub const ENTRY_MAGIC: [u8; 8] = [0xff; 8];
/// The log entry version written now: the header, then the bincode of the entry.
pub const ENTRY_VERSION: u16 = 1;

/// A log entry as the log store keeps it.
pub fn encode_entry(e: &crate::types::Entry) -> Vec<u8> {
    let size = bincode::serialized_size(e).expect("entries always encode") as usize;
    let mut out = Vec::with_capacity(ENTRY_MAGIC.len() + 2 + size);
    out.extend_from_slice(&ENTRY_MAGIC);
    out.extend_from_slice(&ENTRY_VERSION.to_le_bytes());
    bincode::serialize_into(&mut out, e).expect("entries always encode");
    out
}

/// A log entry written by this or any earlier version.
pub fn decode_entry(bytes: &[u8]) -> Result<crate::types::Entry, FormatError> {
    let corrupt = |version: u16| {
        move |e: bincode::Error| FormatError::Corrupt {
            version,
            message: format!("log entry: {e}"),
        }
    };
    let Some(rest) = bytes.strip_prefix(ENTRY_MAGIC.as_slice()) else {
        return bincode::deserialize(bytes).map_err(corrupt(0));
    };
    match rest {
        [a, b, body @ ..] => match u16::from_le_bytes([*a, *b]) {
            1 => bincode::deserialize(body).map_err(corrupt(1)),
            v => Err(FormatError::TooNew(v)),
        },
        _ => Err(FormatError::Corrupt {
            version: 0,
            message: "log entry: truncated header".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries written before the header (plain bincode, as every data directory of format
    /// 0 and 1 snapshots holds) and with it read the same; a newer version is refused.
    #[test]
    fn log_entries_of_every_version_decode() {
        use crate::types::{log_id, EntryPayload};
        use crate::types::{Batch, Command, Entry, Op};
        let e = Entry {
            log_id: log_id(7, 1, 42),
            payload: EntryPayload::Normal(Batch {
                commands: vec![Command {
                    request: None,
                    now_ms: 5,
                    op: Op::DeleteVip("v".into()),
                }],
            }),
        };
        let v0 = bincode::serialize(&e).unwrap();
        assert_eq!(decode_entry(&v0).unwrap(), e);
        let v1 = encode_entry(&e);
        assert_eq!(&v1[..8], &ENTRY_MAGIC);
        assert_eq!(decode_entry(&v1).unwrap(), e);
        let mut newer = v1.clone();
        newer[8..10].copy_from_slice(&(ENTRY_VERSION + 1).to_le_bytes());
        assert!(matches!(decode_entry(&newer), Err(FormatError::TooNew(_))));
        assert!(decode_entry(&v1[..v1.len() - 1]).is_err());
    }

    #[test]
    fn the_current_version_round_trips_and_newer_ones_are_refused() {
        let s = StateData {
            revision: 42,
            lease_wait_ms: 900,
            ..Default::default()
        };
        let bytes = encode_state(&s);
        assert_eq!(decode_state(&bytes).unwrap(), s);
        let mut newer = bytes.clone();
        newer[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&(STATE_VERSION + 1).to_le_bytes());
        assert!(matches!(decode_state(&newer), Err(FormatError::TooNew(_))));
        assert!(matches!(
            decode_state(&bytes[..bytes.len() - 1]),
            Err(FormatError::Corrupt { .. })
        ));
    }
}
