//! One agent per network namespace.
//!
//! The fence's nftables tables belong to the network namespace, not to the agent process
//! that installed them. A second agent started in the same namespace (two `ballastd agent`
//! units on one server, or a member's `--agent` beside a standalone agent) would remove the
//! first one's VIP addresses and install its own fence, which manages nothing: the first
//! agent, which believes its fence still governs its VIP, would then answer past its lease
//! (review of issue 13). So the fence is taken with an exclusive lock on a file named after
//! the namespace, held for the life of the process; the kernel drops it when the process
//! ends, however it ends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the lock files live.
pub const LOCK_DIR: &str = "/run/ballast";

/// The held lock; dropping it lets the next agent of this namespace start.
#[derive(Debug)]
pub struct FenceLock {
    _file: File,
    pub path: PathBuf,
}

impl FenceLock {
    /// Takes this network namespace's fence lock in [`LOCK_DIR`], or says which process
    /// holds it.
    pub fn acquire() -> std::io::Result<Self> {
        Self::acquire_in(Path::new(LOCK_DIR))
    }

    pub fn acquire_in(dir: &Path) -> std::io::Result<Self> {
        let ns = std::fs::read_link("/proc/self/ns/net")?;
        let ns: String = ns
            .to_string_lossy()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("fence-net-{ns}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err);
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another agent (pid {}) holds the VIP fence of this network namespace \
                     ({}): run one agent per server",
                    holder.trim(),
                    path.display()
                ),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(FenceLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_in_the_namespace_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = FenceLock::acquire_in(dir.path()).unwrap();
        let e = FenceLock::acquire_in(dir.path()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        FenceLock::acquire_in(dir.path()).unwrap();
    }
}
