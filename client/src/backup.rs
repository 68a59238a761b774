//! The backup file format, written by `ballastctl snapshot save` and read by `ballastd restore`.
//!
//! ```text
//! BALLAST-BACKUP 1\n
//! {"cluster_id":"…","revision":N,"created_ms":T,"payload_len":L,"payload_sha256":"…"}\n
//! <L bytes of payload: the cluster's state as the members encode it>
//! ```
//!
//! The header is one JSON line so that `head -2 FILE` shows what a backup holds. The payload's
//! length and SHA-256 are checked before anything is restored: a truncated or altered file is
//! refused with a message that says which.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MAGIC: &str = "BALLAST-BACKUP 1\n";

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The cluster the state was taken from.
    pub cluster_id: String,
    /// The cluster revision the state is at.
    pub revision: u64,
    /// The serving member's wall clock when it was taken (ms since the epoch).
    pub created_ms: u64,
    pub payload_len: u64,
    /// Lowercase hex.
    pub payload_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a Ballast backup (it does not start with {:?})", MAGIC.trim_end())]
    NotABackup,
    #[error("the header line is unreadable: {0}")]
    BadHeader(String),
    #[error("truncated: the header promises {expected} bytes of state, the file has {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("{0} bytes after the state: the file was appended to or is not one backup")]
    Trailing(u64),
    #[error("checksum mismatch: the state's SHA-256 is {found}, the header says {expected}; the file is corrupt")]
    Checksum { expected: String, found: String },
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A whole backup file: header and payload.
pub fn encode(cluster_id: &str, revision: u64, created_ms: u64, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        cluster_id: cluster_id.to_string(),
        revision,
        created_ms,
        payload_len: payload.len() as u64,
        payload_sha256: sha256_hex(payload),
    };
    let mut out = MAGIC.as_bytes().to_vec();
    out.extend(serde_json::to_vec(&header).expect("a header always encodes"));
    out.push(b'\n');
    out.extend_from_slice(payload);
    out
}

/// Checks a backup file and returns its header and payload.
pub fn decode(file: &[u8]) -> Result<(Header, &[u8]), BackupError> {
    let rest = file
        .strip_prefix(MAGIC.as_bytes())
        .ok_or(BackupError::NotABackup)?;
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| BackupError::BadHeader("no end of line: truncated in the header".into()))?;
    let header: Header =
        serde_json::from_slice(&rest[..nl]).map_err(|e| BackupError::BadHeader(e.to_string()))?;
    let payload = &rest[nl + 1..];
    let found = payload.len() as u64;
    if found < header.payload_len {
        return Err(BackupError::Truncated {
            expected: header.payload_len,
            found,
        });
    }
    if found > header.payload_len {
        return Err(BackupError::Trailing(found - header.payload_len));
    }
    let sum = sha256_hex(payload);
    if sum != header.payload_sha256 {
        return Err(BackupError::Checksum {
            expected: header.payload_sha256,
            found: sum,
        });
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode("cid-1", 42, 1_700_000_000_000, b"some state bytes")
    }

    #[test]
    fn round_trip() {
        let f = sample();
        let (h, p) = decode(&f).unwrap();
        assert_eq!(
            (h.cluster_id.as_str(), h.revision, p),
            ("cid-1", 42, &b"some state bytes"[..])
        );
        assert!(String::from_utf8_lossy(&f).starts_with("BALLAST-BACKUP 1\n{\"cluster_id\""));
    }

    #[test]
    fn truncation_anywhere_is_refused() {
        let f = sample();
        for cut in 0..f.len() {
            assert!(decode(&f[..cut]).is_err(), "accepted a file cut at {cut}");
        }
        assert_eq!(
            decode(&f[..f.len() - 3]).unwrap_err(),
            BackupError::Truncated {
                expected: 16,
                found: 13
            }
        );
    }

    #[test]
    fn a_changed_byte_or_an_appended_one_is_refused() {
        let mut f = sample();
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(matches!(decode(&f), Err(BackupError::Checksum { .. })));
        let mut g = sample();
        g.push(0);
        assert_eq!(decode(&g).unwrap_err(), BackupError::Trailing(1));
        assert_eq!(decode(b"{}").unwrap_err(), BackupError::NotABackup);
    }
}
