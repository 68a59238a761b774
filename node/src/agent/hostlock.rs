//! One agent per network namespace.
//!
//! The fence's nftables tables belong to the network namespace, not to the agent process
//! that installed them. A second agent started in the same namespace (two `ballastd agent`
//! units on one server, or a member's `--agent` beside a standalone agent) would remove the
//! first one's VIP addresses and install its own fence, which manages nothing: the first
//! agent, which believes its fence still governs its VIP, would then answer past its lease
//! (review of issue 13). So the fence is taken by binding an abstract Unix socket, whose
//! names belong to the network namespace itself (whatever mount namespace or `/run` each
//! agent sees), held for the life of the process; the kernel frees the name when the process
//! ends, however it ends.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// The abstract socket name the fence lock holds.
pub const LOCK_NAME: &[u8] = b"ballast-vip-fence";

/// The held lock; dropping it lets the next agent of this namespace start.
#[derive(Debug)]
pub struct FenceLock {
    _socket: UnixListener,
}

impl FenceLock {
    /// Takes this network namespace's fence lock, or says that another agent holds it.
    pub fn acquire() -> std::io::Result<Self> {
        Self::acquire_named(LOCK_NAME)
    }

    pub fn acquire_named(name: &[u8]) -> std::io::Result<Self> {
        let addr = SocketAddr::from_abstract_name(name)?;
        match UnixListener::bind_addr(&addr) {
            Ok(socket) => Ok(FenceLock { _socket: socket }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another agent holds the VIP fence of this network namespace (abstract \
                     socket @{}): run one agent per server",
                    String::from_utf8_lossy(name)
                ),
            )),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_in_the_namespace_is_refused_until_the_first_lets_go() {
        let name = format!("ballast-test-fence-{}", std::process::id());
        let first = FenceLock::acquire_named(name.as_bytes()).unwrap();
        let e = FenceLock::acquire_named(name.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("another agent"), "{e}");
        drop(first);
        // Another test thread may fork between our bind and drop: its child holds a copy of
        // the socket until it execs (the descriptor is close-on-exec), so the name comes
        // free once that child has exec'd, not necessarily at the drop itself.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match FenceLock::acquire_named(name.as_bytes()) {
                Ok(_) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
                    std::thread::yield_now();
                }
                Err(e) => panic!("the name never came free after the holder let go: {e}"),
            }
        }
    }
}
