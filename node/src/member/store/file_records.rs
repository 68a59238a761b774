//! The file engine's records: `[u32 body length][u32 CRC-32 of the body][body]`,
//! little-endian, the body a kind byte and its fields, written by the `push_*` functions and
//! read back by [`parse`]. A length of 0 is never a record: the zeros written ahead of a
//! segment's records end replay (see `file_engine.rs`). Change a kind's fields only with a
//! new kind (or a new `FORMAT_VERSION`): older ballastd versions must refuse, not misread.

use super::engine::EngineError;

/// The largest record body read back: bigger lengths are damage, not data.
const MAX_BODY: u64 = 1 << 30;
pub(super) const HEADER_MAGIC: &[u8] = b"ballast log segment\0";
pub(super) const FORMAT_VERSION: u32 = 1;

pub(super) const K_HEADER: u8 = 0;
const K_ENTRY: u8 = 1;
const K_META_PUT: u8 = 2;
const K_META_REMOVE: u8 = 3;
pub(super) const K_TRUNCATE: u8 = 4;
pub(super) const K_PURGE: u8 = 5;

/// One record, as replay reads it.
pub(super) enum Rec<'a> {
    Header {
        version: u32,
    },
    Entry {
        index: u64,
        payload_at: usize,
        len: usize,
    },
    MetaPut {
        key: &'a str,
        value: &'a [u8],
    },
    MetaRemove {
        key: &'a str,
    },
    /// Every entry with index >= `from` is gone.
    Truncate {
        from: u64,
    },
    /// Every entry with index <= `upto` is gone.
    Purge {
        upto: u64,
    },
    /// Whole and checked, of a kind this build does not know: a newer ballastd wrote it.
    Unknown {
        kind: u8,
    },
}

pub(super) fn bad(what: impl std::fmt::Display) -> EngineError {
    EngineError(what.to_string())
}

/// Appends one record with `body` to `buf`.
pub(super) fn push_record(buf: &mut Vec<u8>, body: &[&[u8]]) {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let mut crc = crc32fast::Hasher::new();
    for b in body {
        crc.update(b);
    }
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    for b in body {
        buf.extend_from_slice(b);
    }
}

pub(super) fn push_entry(
    buf: &mut Vec<u8>,
    index: u64,
    payload: &[u8],
) -> Result<usize, EngineError> {
    if payload.len() as u64 + 9 > MAX_BODY {
        return Err(bad(format!(
            "log entry {index} of {} bytes is too large",
            payload.len()
        )));
    }
    push_record(buf, &[&[K_ENTRY], &index.to_le_bytes(), payload]);
    // The payload is the record's last bytes.
    Ok(buf.len() - payload.len())
}

pub(super) fn push_meta(
    buf: &mut Vec<u8>,
    key: &str,
    value: Option<&[u8]>,
) -> Result<(), EngineError> {
    let k = key.as_bytes();
    let klen = u16::try_from(k.len()).map_err(|_| bad("metadata name too long"))?;
    if (k.len() + value.map_or(0, <[u8]>::len)) as u64 + 3 > MAX_BODY {
        return Err(bad(format!("metadata value {key} is too large")));
    }
    match value {
        Some(v) => push_record(buf, &[&[K_META_PUT], &klen.to_le_bytes(), k, v]),
        None => push_record(buf, &[&[K_META_REMOVE], &klen.to_le_bytes(), k]),
    }
    Ok(())
}

pub(super) fn push_marker(buf: &mut Vec<u8>, kind: u8, index: u64) {
    push_record(buf, &[&[kind], &index.to_le_bytes()]);
}

/// Parses the record at `at` in `data`: the record and the offset after it, or `None` where
/// no whole, intact record starts (the end of what was written).
pub(super) fn parse(data: &[u8], at: usize) -> Option<(Rec<'_>, usize)> {
    let head = data.get(at..at.checked_add(8)?)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len == 0 || len as u64 > MAX_BODY {
        return None;
    }
    let start = at + 8;
    let body = data.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(body.get(i..i + 8)?.try_into().ok()?))
    };
    let key_of = || -> Option<(&str, usize)> {
        let klen = u16::from_le_bytes(body.get(1..3)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(body.get(3..3 + klen)?).ok()?;
        Some((key, 3 + klen))
    };
    let rec = match body[0] {
        K_HEADER => {
            if body.get(1..1 + HEADER_MAGIC.len())? != HEADER_MAGIC {
                return None;
            }
            let v = body.get(1 + HEADER_MAGIC.len()..5 + HEADER_MAGIC.len())?;
            Rec::Header {
                version: u32::from_le_bytes(v.try_into().ok()?),
            }
        }
        K_ENTRY => Rec::Entry {
            index: u64_at(1)?,
            payload_at: start + 9,
            len: len.checked_sub(9)?,
        },
        K_META_PUT => {
            let (key, vat) = key_of()?;
            Rec::MetaPut {
                key,
                value: &body[vat..],
            }
        }
        K_META_REMOVE => Rec::MetaRemove { key: key_of()?.0 },
        K_TRUNCATE => Rec::Truncate { from: u64_at(1)? },
        K_PURGE => Rec::Purge { upto: u64_at(1)? },
        kind => Rec::Unknown { kind },
    };
    Some((rec, start + len))
}
