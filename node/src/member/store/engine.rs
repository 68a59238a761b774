//! `LogEngine`, the storage trait under everything Ballast persists: an ordered log of opaque
//! entries by index, and metadata values by name, made durable by `sync`. It knows nothing of
//! Raft or of what the bytes mean (`format.rs` encodes them); the engines are `FileEngine`
//! (what `ballastd` runs on), `SledEngine` (older data directories, moved at start) and
//! `MemEngine`, and `tests/store_suite.rs` holds every engine to the contract below. To add an engine: implement the trait and run the suite on it.

use std::fmt;

/// An error of the storage engine. It is fatal for the member: openraft stops on storage errors.
#[derive(Debug, thiserror::Error)]
pub struct EngineError(pub String);

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage engine: {}", self.0)
    }
}

/// openraft 0.10's storage traits report `std::io::Error`.
impl From<EngineError> for std::io::Error {
    fn from(e: EngineError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

impl EngineError {
    pub fn new(e: impl fmt::Display) -> Self {
        EngineError(e.to_string())
    }
}

/// The project's storage trait: an ordered log of opaque entries plus a few metadata values.
///
/// Contract (checked by `tests/store_suite.rs` on every implementation):
/// - writes are visible to reads as soon as the call returns;
/// - they are durable only after [`LogEngine::sync`] returns;
/// - the log store keeps indexes dense above its purge point; below it, purged entries (and
///   a stale tail a snapshot install left behind) may stay until the prune thread removes
///   them, so the engine alone may hold a gap;
/// - entries and metadata values may be of any size (the suite writes up to 16 MiB), and a
///   value is written whole or not at all, also across a crash or a power cut.
pub trait LogEngine: Send + Sync + 'static {
    /// Inserts (or overwrites) log entries by index.
    fn insert_logs(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), EngineError>;
    /// Entries with index in `[start, end)`, in order.
    fn read_logs(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, EngineError>;
    /// The entry with the greatest index.
    fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, EngineError>;
    /// The smallest index held, without reading its entry.
    fn first_log_index(&self) -> Result<Option<u64>, EngineError>;
    /// Removes every entry with index >= `start`.
    fn remove_logs_from(&self, start: u64) -> Result<(), EngineError>;
    /// Removes every entry with index <= `end`.
    fn remove_logs_upto(&self, end: u64) -> Result<(), EngineError>;
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, EngineError>;
    fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), EngineError>;
    /// Removes a metadata value (nothing if there is none).
    fn remove_meta(&self, key: &str) -> Result<(), EngineError>;
    /// Replaces the stored snapshot with `value`, durable when this returns (no `sync`
    /// needed) and whole: a crash leaves the old snapshot or the new one. It must not hold up
    /// log writes while it works: a snapshot holds the whole state, tens of MB.
    fn put_snapshot(&self, value: &[u8]) -> Result<(), EngineError>;
    /// The snapshot last stored by [`LogEngine::put_snapshot`].
    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, EngineError>;
    /// Makes every earlier write durable (fsync).
    fn sync(&self) -> Result<(), EngineError>;
}
