//! Writing files that must appear whole, with exactly the mode asked for: backups and
//! certificate keys (0600), certificates (0644).
//!
//! The data goes to a temporary file beside the target, created with `O_CREAT|O_EXCL` under a
//! fresh random name (`.<name>.<random>.tmp`), so no file or symlink already there is ever
//! followed or reused; its mode is set on the open descriptor (`fchmod`), so the umask does
//! not widen or narrow it. The file is fsynced, renamed into place and the directory fsynced:
//! after a crash the target is either absent or complete. A temporary file is removed when
//! writing fails; one left by a killed process keeps mode 0600 and is never touched again
//! (its name is never chosen twice, and another writer may still own it, so it is not
//! deleted by guesswork).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What to do when the target exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it atomically (a symlink there is replaced, its target left alone).
    Replace,
    /// Refuse, atomically: a file created meanwhile by someone else is not overwritten either.
    Refuse,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0} exists already; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` to `path` with permission bits `mode` (e.g. 0o600), atomically and durably.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    existing: Existing,
) -> Result<(), FileError> {
    let name = path.file_name().ok_or_else(|| FileError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile opens with O_CREAT|O_EXCL (never through an existing name) and mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    let tmp_path = tmp.path().to_path_buf();
    let f = tmp.as_file_mut();
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(data))
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp_path))?;
    // On failure the temporary file is dropped, which removes it.
    match existing {
        Existing::Replace => tmp.persist(path).map(drop),
        Existing::Refuse => tmp.persist_noclobber(path).map(drop),
    }
    .map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => FileError::Exists(path.to_path_buf()),
        _ => io(path)(e.error),
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn the_mode_is_exact_whatever_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("backup");
        for mode in [0o600, 0o644, 0o400] {
            write_atomic(&p, b"x", mode, Existing::Replace).unwrap();
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!(m.mode() & 0o7777, mode);
        }
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_or_refused_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let p = dir.path().join("key.pem");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        assert!(matches!(
            write_atomic(&p, b"secret", 0o600, Existing::Refuse),
            Err(FileError::Exists(_))
        ));
        // A dangling one too.
        let q = dir.path().join("dangling.pem");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &q).unwrap();
        assert!(matches!(
            write_atomic(&q, b"secret", 0o600, Existing::Refuse),
            Err(FileError::Exists(_))
        ));
        assert!(!dir.path().join("nowhere").exists());
        write_atomic(&p, b"secret", 0o600, Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file() && m.mode() & 0o7777 == 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert!(leftovers(dir.path()).is_empty(), "no temporary file left");
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails after the temporary file was written.
        let p = dir.path().join("taken");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), "x").unwrap();
        assert!(write_atomic(&p, b"data", 0o600, Existing::Replace).is_err());
        assert!(leftovers(dir.path()).is_empty());
        // The directory does not exist.
        let e = write_atomic(
            &dir.path().join("no/such/file"),
            b"",
            0o600,
            Existing::Refuse,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no/such"), "{e}");
    }
}
