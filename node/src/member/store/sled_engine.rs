//! The `LogEngine` on sled 0.34, the one `ballastd` runs on: what sled is asked to do and what
//! is done around it so that a synced write survives a power cut (`chunks.rs` for large
//! values, `sled_files.rs` for sled's own files, an fdatasync of the data file on `sync`).
//! The snapshot is a file beside sled's, not a sled value (see [`SNAPSHOT_FILE`]).

use std::path::{Path, PathBuf};

use ballast_client::files::{write_atomic, Existing};

use super::chunks::{Assembly, Slot};
use super::engine::{EngineError, LogEngine};
use super::sled_files::{create_durable_dir, remove_unfinished_snapshots, sync_sled_files};

/// The snapshot, in the engine's directory. Not in sled: sled writes a batch under a lock that
/// every other write waits for, and a 46 MB snapshot (11,000 chunks) held the log's appends
/// for over a second on every member at once. Written by `write_atomic` (a temporary
/// `.ballast-snapshot.*.tmp`, fsynced, renamed, the directory fsynced; mode 0600, as it
/// holds every value). (sled reads every `snap.*` file as its own: keep the names clear of
/// that.)
pub const SNAPSHOT_FILE: &str = "ballast-snapshot";
/// Written when a sync failed; the engine refuses to open while it exists.
pub const SYNC_FAILED_FILE: &str = "SYNC-FAILED";

/// [`LogEngine`] on sled: one tree for the log (big-endian index keys, so sled's order is the
/// log's order) and one for metadata. Values longer than 4 KiB are split into chunks (see
/// `chunks.rs`: sled would put them in blob files it never fsyncs).
#[derive(Clone)]
pub struct SledEngine {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    /// sled's data file, for the fdatasync that sled itself does not do.
    data_file: std::sync::Arc<std::fs::File>,
    /// The directory, for the snapshot file.
    dir: PathBuf,
    /// Held through each sync, so that syncs never overlap: holds the first failure, which
    /// every later one reports too (see `sync`).
    sync_failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl SledEngine {
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        // sled's files as a power cut may have left them (see `sled_files.rs`).
        create_durable_dir(dir)?;
        check_sync_failed_marker(dir)?;
        remove_unfinished_snapshots(dir)?;
        sync_sled_files(dir)?;
        let db = open_locked(dir)?;
        remove_unfinished_snapshot_files(dir)?;
        let logs = db.open_tree("logs").map_err(EngineError::new)?;
        let meta = db.open_tree("meta").map_err(EngineError::new)?;
        let data_file = std::fs::File::open(dir.join("db"))
            .map_err(|e| EngineError(format!("opening {}/db: {e}", dir.display())))?;
        let engine = SledEngine {
            db,
            logs,
            meta,
            data_file: std::sync::Arc::new(data_file),
            dir: dir.to_path_buf(),
            sync_failed: Default::default(),
        };
        // What sled wrote while opening (its recovery snapshot, `conf`, the trees) is
        // durable before anything is written on top of it.
        engine.sync()?;
        sync_sled_files(dir)?;
        Ok(engine)
    }
}

/// Replaces the snapshot file in `dir` (see [`SNAPSHOT_FILE`]).
pub(super) fn store_snapshot_file(dir: &Path, value: &[u8]) -> Result<(), EngineError> {
    write_atomic(&dir.join(SNAPSHOT_FILE), value, 0o600, Existing::Replace)
        .map_err(|e| EngineError(format!("storing the snapshot: {e}")))
}

/// The snapshot file in `dir`, if there is one.
pub(super) fn read_snapshot_file(dir: &Path) -> Result<Option<Vec<u8>>, EngineError> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError(format!("reading the snapshot file: {e}"))),
    }
}

/// Refuses a directory where a sync failed (see [`mark_sync_failed`]).
pub(super) fn check_sync_failed_marker(dir: &Path) -> Result<(), EngineError> {
    let marker = dir.join(SYNC_FAILED_FILE);
    match std::fs::read(&marker) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        found => {
            let why = found.map_or_else(
                |e| e.to_string(),
                |b| String::from_utf8_lossy(&b).into_owned(),
            );
            return Err(EngineError(format!(
                "{} says a sync failed ({}): writes acknowledged as durable may be missing \
                 from the disk. Replace this member (wipe the directory and join it \
                 again); remove the file only if you know the disk holds everything",
                marker.display(),
                why.trim()
            )));
        }
    }
    Ok(())
}

/// Leaves the `SYNC-FAILED` marker, best effort and in place: on a failing disk any part of
/// writing it may fail, and a name that exists (even empty, even only in the page cache
/// until a reboot) is what makes the next open refuse; a temporary file unlinked on failure,
/// as `write_atomic` does, would leave nothing.
pub(super) fn mark_sync_failed(dir: &Path, why: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join(SYNC_FAILED_FILE))
    {
        let _ = f.write_all(why.as_bytes()).and_then(|()| f.sync_all());
    }
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
}

/// Removes the temporary files of snapshots whose writing a crash cut short (`write_atomic`
/// names them `.ballast-snapshot.*.tmp`; commits of 2026-11-30 before it wrote
/// `ballast-snapshot.tmp`): the previous snapshot is still in place.
pub(super) fn remove_unfinished_snapshot_files(dir: &Path) -> Result<(), EngineError> {
    let gone = |p: &Path, e: std::io::Error| EngineError(format!("{}: {e}", p.display()));
    for entry in std::fs::read_dir(dir).map_err(|e| gone(dir, e))? {
        let path = entry.map_err(|e| gone(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let unfinished = |n: &str| {
            n == format!("{SNAPSHOT_FILE}.tmp")
                || (n.starts_with(&format!(".{SNAPSHOT_FILE}.")) && n.ends_with(".tmp"))
        };
        if name.is_some_and(|n| unfinished(&n)) {
            std::fs::remove_file(&path).map_err(|e| gone(&path, e))?;
        }
    }
    Ok(())
}

/// How long opening waits for another holder of sled's lock on the directory to let go.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled at `dir`. sled locks its file while any handle of the database lives, and its
/// background threads drop theirs a moment after the last one of ours: a member reopened in
/// the same process (a restart in tests, a restore) waits for that, up to [`LOCK_WAIT`].
/// Another process holding the directory is still refused, with the lock named.
fn open_locked(dir: &Path) -> Result<sled::Db, EngineError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let r = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // sled's own periodic flush is not what makes us durable; `sync` is.
            .flush_every_ms(None)
            .open();
        match r {
            Err(sled::Error::Io(e))
                // sled reports the lock as `Other`, with the OS error in its message.
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => {
                return r.map_err(|e| {
                    EngineError(format!(
                        "opening sled at {}: {e} (is another ballastd using this data directory?)",
                        dir.display()
                    ))
                })
            }
        }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(k: &[u8]) -> Result<u64, EngineError> {
    let b: [u8; 8] = k
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EngineError(format!("log key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(b))
}

fn log_slot(k: &[u8; 8]) -> Slot<'_> {
    Slot { key: k, sep: &[] }
}

fn meta_slot(name: &str) -> Result<Slot<'_>, EngineError> {
    if name.contains('\0') {
        return Err(EngineError(format!("metadata name {name:?} contains NUL")));
    }
    Ok(Slot {
        key: name.as_bytes(),
        sep: b"\0",
    })
}

/// Removes every record (entries and their chunks) with a key in `range`, in one batch.
fn remove_range(
    tree: &sled::Tree,
    range: impl std::ops::RangeBounds<[u8; 8]>,
) -> Result<(), EngineError> {
    let mut batch = sled::Batch::default();
    for r in tree.range(range) {
        let (k, _) = r.map_err(EngineError::new)?;
        batch.remove(k);
    }
    tree.apply_batch(batch).map_err(EngineError::new)
}

impl LogEngine for SledEngine {
    fn insert_logs(&self, mut entries: Vec<(u64, Vec<u8>)>) -> Result<(), EngineError> {
        if entries.len() == 1 {
            let (i, v) = entries.pop().expect("one entry");
            return log_slot(&key(i)).put(&self.logs, v);
        }
        let mut batch = sled::Batch::default();
        for (i, v) in entries {
            log_slot(&key(i)).write(&self.logs, &mut batch, v)?;
        }
        self.logs.apply_batch(batch).map_err(EngineError::new)
    }

    fn read_logs(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, EngineError> {
        if start >= end {
            return Ok(Vec::new());
        }
        // Chunk keys (index ++ n) sort right after their index's key, so the range holds
        // each chunked entry whole.
        let mut out = Vec::new();
        let mut chunked: Option<(u64, Assembly)> = None;
        for r in self.logs.range(key(start)..key(end)) {
            let (k, v) = r.map_err(EngineError::new)?;
            let i = index_of(&k)?;
            if k.len() == 8 {
                out.push((i, v.to_vec()));
                continue;
            }
            let (at, a) = chunked.get_or_insert_with(|| (i, Assembly::default()));
            if *at != i {
                return Err(EngineError(format!("log entry {at}: chunks missing")));
            }
            a.add(&k[8..], &v)?;
            if a.complete() {
                let (i, a) = chunked.take().expect("assembling");
                out.push((i, a.finish()?.unwrap_or_default()));
            }
        }
        if let Some((i, _)) = chunked {
            return Err(EngineError(format!("log entry {i}: chunks missing")));
        }
        Ok(out)
    }

    fn last_log(&self) -> Result<Option<(u64, Vec<u8>)>, EngineError> {
        let Some((k, v)) = self.logs.last().map_err(EngineError::new)? else {
            return Ok(None);
        };
        let i = index_of(&k)?;
        if k.len() == 8 {
            return Ok(Some((i, v.to_vec())));
        }
        let value = log_slot(&key(i))
            .get(&self.logs)?
            .ok_or_else(|| EngineError(format!("log entry {i}: chunks missing")))?;
        Ok(Some((i, value)))
    }

    fn first_log_index(&self) -> Result<Option<u64>, EngineError> {
        match self.logs.first().map_err(EngineError::new)? {
            Some((k, _)) => Ok(Some(index_of(&k)?)),
            None => Ok(None),
        }
    }

    fn remove_logs_from(&self, start: u64) -> Result<(), EngineError> {
        remove_range(&self.logs, key(start)..)
    }

    fn remove_logs_upto(&self, end: u64) -> Result<(), EngineError> {
        // Up to the next index's key, so that `end`'s chunks go too.
        match end.checked_add(1) {
            Some(next) => remove_range(&self.logs, ..key(next)),
            None => remove_range(&self.logs, ..),
        }
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, EngineError> {
        meta_slot(key)?.get(&self.meta)
    }

    fn put_meta(&self, key: &str, value: Vec<u8>) -> Result<(), EngineError> {
        meta_slot(key)?.put(&self.meta, value)
    }

    fn remove_meta(&self, key: &str) -> Result<(), EngineError> {
        meta_slot(key)?.remove(&self.meta)
    }

    fn put_snapshot(&self, value: &[u8]) -> Result<(), EngineError> {
        store_snapshot_file(&self.dir, value)
    }

    fn get_snapshot(&self) -> Result<Option<Vec<u8>>, EngineError> {
        read_snapshot_file(&self.dir)
    }

    /// Once a sync failed, every later one fails too. Linux reports a failed write-back to
    /// one fsync caller only and may drop the dirty pages: a second sync after a failed one
    /// can succeed while writes made before the failure are gone, and an entry it covers
    /// would be acknowledged as durable. openraft stops the member on the error.
    /// Syncs never overlap (one lock through check, flush, fdatasync and record): two at once
    /// would share one write-back error between them, and the one that did not see it would
    /// report success. A marker file (best effort) makes the next open refuse the directory:
    /// after a restart the page cache may still show writes the disk never took.
    fn sync(&self) -> Result<(), EngineError> {
        let mut failed = self.sync_failed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(first) = failed.as_ref() {
            return Err(EngineError(format!("an earlier sync failed: {first}")));
        }
        let r = self
            .db
            .flush()
            .map(|_| ())
            .map_err(|e| e.to_string())
            .and_then(|()| {
                // sled 0.34 makes its writes stable with sync_file_range, which neither writes
                // file metadata nor flushes the drive's cache: enough for a killed process, not
                // for a power loss. fdatasync makes them durable. Nothing else needs it: no
                // record goes to a blob file (`chunks.rs`), and sled's other files were synced
                // at open.
                self.data_file.sync_data().map_err(|e| e.to_string())
            });
        r.map_err(|e| {
            mark_sync_failed(&self.dir, &e);
            *failed = Some(e.clone());
            EngineError(e)
        })
    }
}
