//! Where a member's engine lives in its data directory, and the one-time move of a log
//! written on sled (`raft/`, by ballastd before December 2026) into the file engine (`log/`).
//!
//! The move copies everything (metadata, every entry, the snapshot) into `log.moving/`,
//! syncs it, renames it to `log/` and syncs the data directory: until that rename the sled
//! directory is the member's data, and a crash means starting the copy again. After it,
//! `raft/` is swapped in one step (`renameat2` with `RENAME_EXCHANGE`) for a plain file that
//! says where the log went, so that a ballastd from before refuses to start here (sled cannot
//! open a file) instead of starting with an empty log, which would let it vote twice in a
//! term and lose entries it acknowledged; the old directory is then removed. (A file system
//! without the exchange gets a rename aside and the file after it: a crash between the two
//! leaves no `raft` until the next start.) A data directory made by this
//! ballastd gets the same file, for the same reason.

use std::path::Path;

use ballast_client::files::{write_atomic, Existing};

use super::engine::{EngineError, LogEngine};
use super::file_engine::{io_err, FileEngine};
use super::log_store::META_KEYS;
use super::sled_engine::SledEngine;
use super::sled_files::fsync;
use super::state_machine::{StoredSnapshot, META_SNAPSHOT};

/// The file engine's directory in a member's data directory.
pub const LOG_DIR: &str = "log";
/// The sled engine's directory, before the move.
pub const SLED_DIR: &str = "raft";
const MOVING_DIR: &str = "log.moving";
/// The keep-out file before the swap, the old sled directory after it.
const MOVED_DIR: &str = "raft.moved";
/// Entries copied per read.
const COPY_PIECE: u64 = 1024;

/// Opens the engine of the member whose data directory is `data_dir`, moving a sled log
/// there first (see the module's documentation).
pub fn open_member_engine(data_dir: &Path) -> Result<FileEngine, EngineError> {
    let log = data_dir.join(LOG_DIR);
    let sled = data_dir.join(SLED_DIR);
    if sled.is_dir() {
        if !log.exists() {
            move_sled_log(data_dir)?;
        }
        retire_sled_dir(data_dir)?;
    } else if sled.exists() {
        if !log.exists() {
            return Err(EngineError(format!(
                "{} says the log moved to {}, which is missing",
                sled.display(),
                log.display()
            )));
        }
    } else {
        // A new directory: the log first, so that a crash never leaves the file that points
        // at it without it.
        let engine = FileEngine::open(&log)?;
        write_keep_out(&sled)?;
        fsync(data_dir)?;
        return Ok(engine);
    }
    remove_moved(data_dir)?;
    FileEngine::open(&log)
}

/// The bytes of the newer of the sled engine's snapshot file and its old metadata snapshot,
/// unchanged.
fn newest_snapshot_bytes(from: &SledEngine) -> Result<Option<Vec<u8>>, EngineError> {
    let last = |b: &[u8]| -> Result<_, EngineError> {
        let s: StoredSnapshot = bincode::deserialize(b).map_err(EngineError::new)?;
        Ok(s.meta.last_log_id)
    };
    Ok(
        match (from.get_snapshot()?, from.get_meta(META_SNAPSHOT)?) {
            (Some(f), Some(m)) => Some(if last(&m)? > last(&f)? { m } else { f }),
            (f, m) => f.or(m),
        },
    )
}

/// Removes what a swap left at [`MOVED_DIR`]: the old sled directory, or a keep-out file not
/// swapped in yet.
fn remove_moved(data_dir: &Path) -> Result<(), EngineError> {
    let moved = data_dir.join(MOVED_DIR);
    match std::fs::symlink_metadata(&moved) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&moved).map_err(io_err(&moved)),
        Ok(_) => std::fs::remove_file(&moved).map_err(io_err(&moved)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&moved)(e)),
    }
}

/// Copies the sled log into `log/` (through `log.moving/`).
fn move_sled_log(data_dir: &Path) -> Result<(), EngineError> {
    let sled_dir = data_dir.join(SLED_DIR);
    let moving = data_dir.join(MOVING_DIR);
    if moving.exists() {
        std::fs::remove_dir_all(&moving).map_err(io_err(&moving))?;
    }
    let started = std::time::Instant::now();
    let entries = {
        let from = SledEngine::open(&sled_dir)?;
        let to = FileEngine::open(&moving)?;
        // The log store's values as they are; the old metadata snapshot (`META_SNAPSHOT`)
        // only as the snapshot file (each segment starts with a copy of every metadata value).
        for key in META_KEYS {
            if let Some(v) = from.get_meta(key)? {
                to.put_meta(key, v)?;
            }
        }
        let mut entries = 0u64;
        if let (Some(first), Some((last, _))) = (from.first_log_index()?, from.last_log()?) {
            let mut at = first;
            while at <= last {
                let piece = from.read_logs(at, at.saturating_add(COPY_PIECE))?;
                entries += piece.len() as u64;
                to.insert_logs(piece)?;
                at = at.saturating_add(COPY_PIECE);
            }
        }
        if let Some(snapshot) = newest_snapshot_bytes(&from)? {
            to.put_snapshot(&snapshot)?;
        }
        to.sync()?;
        entries
    };
    let log = data_dir.join(LOG_DIR);
    std::fs::rename(&moving, &log).map_err(io_err(&log))?;
    fsync(data_dir)?;
    tracing::info!(
        from = %sled_dir.display(),
        to = %log.display(),
        entries,
        ms = started.elapsed().as_millis() as u64,
        "moved the log from sled to the file engine"
    );
    Ok(())
}

/// Puts a file in the sled directory's place (see the module's documentation).
fn retire_sled_dir(data_dir: &Path) -> Result<(), EngineError> {
    let sled = data_dir.join(SLED_DIR);
    let moved = data_dir.join(MOVED_DIR);
    remove_moved(data_dir)?;
    write_keep_out(&moved)?;
    if let Err(e) = exchange(&moved, &sled) {
        tracing::warn!(error = %e, "swapping the sled directory for a file in one step failed; renaming it aside first");
        std::fs::remove_file(&moved).map_err(io_err(&moved))?;
        std::fs::rename(&sled, &moved).map_err(io_err(&sled))?;
        write_keep_out(&sled)?;
    }
    fsync(data_dir)?;
    remove_moved(data_dir)?;
    Ok(())
}

/// The file in the sled directory's place that keeps a ballastd from before the file engine
/// out of this data directory.
fn write_keep_out(path: &Path) -> Result<(), EngineError> {
    write_atomic(
        path,
        format!(
            "This member's log is in {LOG_DIR}/ (ballastd's file engine). A ballastd from \
             before that cannot read it: do not downgrade this member; replace it instead.\n"
        )
        .as_bytes(),
        0o600,
        Existing::Refuse,
    )
    .map_err(|e| EngineError(e.to_string()))
}

/// Swaps the names `a` and `b` in one step (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that live through the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
