//! A file system that loses, on a simulated power cut, everything not made durable: the lab's
//! version of Jepsen's LazyFS (see `volume.rs` for the exact rules, `fuse.rs` for how the
//! kernel is kept from caching).
//!
//! [`PowerFs::mount`] serves an empty in-memory volume over FUSE at a directory, from a
//! thread of this process; [`PowerFs::cut`] is the power cut: what was not fsynced is gone,
//! and the file system carries on with the durable state. A cut does not stop the processes
//! using the file system: the caller kills them first (see `runner`'s power-cut nemesis,
//! which SIGKILLs the member and reaps it, so the cut falls on the instant of its death and
//! nothing it did after that instant can exist). Needs root and `/dev/fuse`.

mod fuse;
mod volume;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use volume::{CutReport, Volume};

/// Why a power-loss file system could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum PowerFsError {
    #[error("mounting the power-loss file system at {path}: {source} (it needs root and /dev/fuse; Debian: apt-get install fuse3)")]
    Mount {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The `fsname` of our mounts carries the pid that serves them, so a later run can find
/// mounts whose server died (see [`sweep_stale_mounts`]).
const FSNAME: &str = "ballast-powerfs-";

/// A mounted power-loss file system. Dropping it unmounts it.
pub struct PowerFs {
    volume: Arc<Mutex<Volume>>,
    session: Option<::fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

impl PowerFs {
    /// Mounts an empty volume at `dir` (created if missing), owned by this process's user.
    pub fn mount(dir: &Path) -> Result<Self, PowerFsError> {
        sweep_stale_mounts();
        std::fs::create_dir_all(dir).map_err(|source| PowerFsError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let volume = Arc::new(Mutex::new(Volume::new(uid, gid)));
        let mut config = ::fuser::Config::default();
        config.mount_options = vec![
            ::fuser::MountOption::FSName(format!("{FSNAME}{}", std::process::id())),
            ::fuser::MountOption::Subtype("powerfs".into()),
            ::fuser::MountOption::RW,
            ::fuser::MountOption::NoDev,
            ::fuser::MountOption::NoSuid,
        ];
        let session = ::fuser::spawn_mount(
            fuse::PowerFuse {
                volume: volume.clone(),
            },
            dir,
            &config,
        )
        .map_err(|source| PowerFsError::Mount {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(PowerFs {
            volume,
            session: Some(session),
            mountpoint: dir.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The power cut: every file loses what was written since its last fsync, every
    /// directory the changes since its last fsync, every open handle dies (EIO). Kill the
    /// processes that use the file system first.
    pub fn cut(&self) -> CutReport {
        self.volume.lock().unwrap_or_else(|p| p.into_inner()).cut()
    }

    /// How many cuts so far.
    pub fn cuts(&self) -> u64 {
        self.volume.lock().unwrap_or_else(|p| p.into_inner()).cuts()
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                // Busy (a process still has it open): detach it, it goes with the last user.
                eprintln!(
                    "powerfs: unmounting {}: {e}; detaching",
                    self.mountpoint.display()
                );
                detach(&self.mountpoint);
            }
        }
    }
}

fn detach(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: umount2 with a valid C string.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Detaches power-loss mounts whose serving process is gone (a run that was killed leaves
/// them behind, answering ENOTCONN).
pub fn sweep_stale_mounts() {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in info.lines() {
        // "... mountpoint ... - fuse.powerfs ballast-powerfs-<pid> rw,..."
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mnt), Some(source)) = (fields.get(4), fields.get(dash + 2)) else {
            continue;
        };
        let Some(pid) = source
            .strip_prefix(FSNAME)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            detach(Path::new(&mnt.replace("\\040", " ")));
        }
    }
}
