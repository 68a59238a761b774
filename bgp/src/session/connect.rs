//! Opening the TCP connection to a peer: the source address, the TCP-MD5 key (RFC 2385), then
//! `connect`. Linux takes the key from user space with `setsockopt(TCP_MD5SIG)`, which must
//! come before `connect` so that the SYN is signed; `libc` has the constant but not the struct.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::{TcpSocket, TcpStream};

use crate::config::{PeerConfig, MAX_PASSWORD_LEN};

/// `struct tcp_md5sig` of `<linux/tcp.h>`.
#[repr(C)]
struct TcpMd5Sig {
    /// The peer, as a `sockaddr_in` or `sockaddr_in6` at the start.
    addr: libc::sockaddr_storage,
    /// No `TCP_MD5SIG_FLAG_PREFIX` or `_IFINDEX`: the key is for this one address.
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_PASSWORD_LEN],
}

// The kernel copies exactly this many octets; a layout mistake must not compile.
const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);

/// Connects to `peer` from its source address, signing with its password if it has one.
pub(crate) async fn connect(peer: &PeerConfig) -> io::Result<TcpStream> {
    let addr = peer.socket_addr();
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = peer.source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    if let Some(password) = &peer.password {
        set_md5_key(socket.as_raw_fd(), addr.ip(), password.as_bytes())?;
    }
    let stream = socket.connect(addr).await?;
    // UPDATEs are small and latency is the point: no Nagle delay.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sets the TCP-MD5 key for segments to and from `peer` on socket `fd`.
fn set_md5_key(fd: RawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.is_empty() || key.len() > MAX_PASSWORD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP-MD5 key of 1 to 80 octets",
        ));
    }
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let storage = std::ptr::addr_of_mut!(sig.addr);
    match peer {
        IpAddr::V4(a) => {
            // SAFETY: all-zero is a valid sockaddr_in.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { storage.cast::<libc::sockaddr_in>().write(sin) };
        }
        IpAddr::V6(a) => {
            // SAFETY: all-zero is a valid sockaddr_in6.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { storage.cast::<libc::sockaddr_in6>().write(sin6) };
        }
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a valid tcp_md5sig that outlives the call; the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::addr_of!(sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_kernel_takes_an_md5_key_for_ipv4_and_ipv6_peers() {
        let v4 = TcpSocket::new_v4().unwrap();
        set_md5_key(v4.as_raw_fd(), "127.0.0.1".parse().unwrap(), b"secret").unwrap();
        let v6 = TcpSocket::new_v6().unwrap();
        set_md5_key(v6.as_raw_fd(), "::1".parse().unwrap(), &[7; 80]).unwrap();
        assert!(set_md5_key(v4.as_raw_fd(), "127.0.0.1".parse().unwrap(), &[]).is_err());
    }

    #[tokio::test]
    async fn matching_keys_connect_and_a_missing_key_does_not() {
        use std::time::Duration;
        // A listener that signs with `key` for 127.0.0.1.
        let listener = TcpSocket::new_v4().unwrap();
        set_md5_key(listener.as_raw_fd(), "127.0.0.1".parse().unwrap(), b"key").unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let listener = listener.listen(4).unwrap();
        let mut peer = PeerConfig::new("127.0.0.1".parse().unwrap(), 65000);
        peer.port = port;
        peer.password = Some("key".into());
        let (ok, accepted) = tokio::join!(connect(&peer), listener.accept());
        ok.unwrap();
        accepted.unwrap();
        // Unsigned SYNs are dropped by the listener's kernel: no connection, only a timeout.
        peer.password = None;
        let unsigned = tokio::time::timeout(Duration::from_millis(300), connect(&peer)).await;
        assert!(unsigned.is_err(), "an unsigned connect must not complete");
    }
}
