//! What it takes for sled 0.34's own files to survive a power cut.
//!
//! sled writes its data file (`db`), its settings (`conf`), the recovery snapshot it makes
//! while opening (`snap.<lsn>`, written as `snap.<lsn>.generating` and renamed) and blobs
//! (`blobs/<lsn>`, records above a quarter of a segment; [`super::chunks`] keeps us below
//! that), and fsyncs none of their directories. These functions make them durable around
//! `sled::open`; `SledEngine::sync` does the rest (the data file) after every write.

use std::path::Path;

use super::engine::EngineError;

fn io_err(path: &Path, e: std::io::Error) -> EngineError {
    EngineError(format!("{}: {e}", path.display()))
}

/// fsyncs a file or directory by path.
pub(super) fn fsync(path: &Path) -> Result<(), EngineError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(path, e))
}

/// Creates `dir` and its missing ancestors, each made durable in its parent.
pub fn create_durable_dir(dir: &Path) -> Result<(), EngineError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    for p in missing.iter().rev() {
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent)?;
        }
    }
    fsync(dir)
}

/// sled 0.34 reads back any `snap.*` but `*.in___motion` as a snapshot, while it writes them
/// as `*.generating` first: one left by a crash before the rename is taken for the newest
/// snapshot, and sled refuses to open when it is incomplete. A snapshot never holds anything
/// the log does not (sled makes a new one from the log when none is left), so it goes.
pub fn remove_unfinished_snapshots(dir: &Path) -> Result<(), EngineError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut removed = false;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(e.path()).map_err(|err| io_err(&e.path(), err))?;
            removed = true;
        }
    }
    if removed {
        fsync(dir)?;
    }
    Ok(())
}

/// fsyncs every file sled keeps in `dir` and `dir/blobs`, then both directories. Before
/// `sled::open`: what a killed process left in the page cache becomes durable before sled
/// builds its recovery snapshot (which it fsyncs) on top of it. After: sled's new `conf`,
/// snapshot and files are durable before anything is acknowledged.
pub fn sync_sled_files(dir: &Path) -> Result<(), EngineError> {
    for d in [dir.join("blobs"), dir.to_path_buf()] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                fsync(&e.path())?;
            }
        }
        fsync(&d)?;
    }
    Ok(())
}
