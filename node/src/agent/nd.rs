//! Unsolicited neighbour advertisements (RFC 4861, 7.2.6): the IPv6 counterpart of a
//! gratuitous ARP, telling the segment's hosts and switches that the VIP now lives at this
//! interface's MAC.
//!
//! Sent on a raw ICMPv6 socket bound to the VIP, so that each advertisement passes the fence's
//! `ip6` output hook (its source is the VIP) and the egress filter behind it: one sent after
//! the lease ended is dropped by the kernel, however late the process gets to send it. As for
//! ARP, the burst also reads the lease before each message and stops when it is near.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::garp::{link, GarpError, LeaseClock, FRAME_GUARD};

/// ICMPv6 type of a neighbour advertisement.
const NEIGHBOR_ADVERT: u8 = 136;
/// The Override flag: replace whatever link-layer address a neighbour cached for the VIP.
const OVERRIDE: u8 = 0x20;
/// Target Link-Layer Address option type.
const TARGET_LLADDR: u8 = 2;

/// The ICMPv6 message (checksum left 0: the kernel fills it in for raw ICMPv6 sockets): an
/// unsolicited advertisement for `target` with the Override flag and this MAC.
pub fn advert(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = NEIGHBOR_ADVERT;
    m[4] = OVERRIDE; // not a router, not solicited
    m[8..24].copy_from_slice(&target.octets());
    m[24] = TARGET_LLADDR;
    m[25] = 1; // option length in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

fn last_error(what: &str) -> GarpError {
    GarpError(format!("{what}: {}", std::io::Error::last_os_error()))
}

fn set_int(fd: i32, name: i32, value: i32) -> Result<(), GarpError> {
    // SAFETY: a plain setsockopt with an int value that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            name,
            &value as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r != 0 {
        return Err(last_error("setsockopt"));
    }
    Ok(())
}

/// A raw ICMPv6 socket bound to `vip`, sending to all nodes on interface `index` with the hop
/// limit neighbour discovery requires (255: receivers drop anything that crossed a router).
struct Socket(i32);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours.
        unsafe { libc::close(self.0) };
    }
}

fn sockaddr(addr: Ipv6Addr, scope: u32) -> libc::sockaddr_in6 {
    // SAFETY: zeroed sockaddr_in6 is a valid starting value.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_addr.s6_addr = addr.octets();
    sa.sin6_scope_id = scope;
    sa
}

impl Socket {
    fn open(vip: Ipv6Addr, index: u32) -> Result<Self, GarpError> {
        // SAFETY: plain socket(2) call; the descriptor is closed by Drop.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMPV6,
            )
        };
        if fd < 0 {
            return Err(last_error("ICMPv6 socket"));
        }
        let s = Socket(fd);
        set_int(fd, libc::IPV6_MULTICAST_IF, index as i32)?;
        set_int(fd, libc::IPV6_MULTICAST_HOPS, 255)?;
        set_int(fd, libc::IPV6_MULTICAST_LOOP, 0)?;
        let sa = sockaddr(vip, 0);
        // SAFETY: sa outlives the call; its size is its own.
        let r = unsafe {
            libc::bind(
                fd,
                &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        if r != 0 {
            return Err(last_error(&format!("binding to {vip}")));
        }
        Ok(s)
    }

    fn send(&self, msg: &[u8], index: u32) -> std::io::Result<()> {
        let to = sockaddr(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), index);
        // SAFETY: msg and to outlive the call; sizes are theirs.
        let n = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &to as *const libc::sockaddr_in6 as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sends one unsolicited advertisement for `vip` (which must be an address of this host) on
/// interface `index` whose MAC is `mac`, from this thread's network namespace. For the lab's
/// fence tests; the agent sends bursts.
pub fn advertise_once(vip: Ipv6Addr, index: u32, mac: [u8; 6]) -> std::io::Result<()> {
    let socket = Socket::open(vip, index).map_err(|e| std::io::Error::other(e.to_string()))?;
    socket.send(&advert(mac, vip), index)
}

/// Sends up to `count` unsolicited advertisements for `vip` on `iface`, `interval` apart, each
/// only while `lease` is valid for at least [`FRAME_GUARD`]. Returns how many were sent.
pub async fn burst(
    iface: &str,
    vip: Ipv6Addr,
    count: u32,
    interval: Duration,
    lease: &LeaseClock,
) -> Result<u32, GarpError> {
    let (mac, index) = link(iface)?;
    let socket = Socket::open(vip, index)?;
    let msg = advert(mac, vip);
    let mut sent = 0;
    for i in 0..count {
        if !lease.valid_for(FRAME_GUARD) {
            break;
        }
        if let Err(e) = socket.send(&msg, index) {
            // EPERM: the fence's output hook dropped it; ENOBUFS: its egress filter did (the
            // lease ended meanwhile). Anything else while the lease lasts is a failure.
            let fenced = matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOBUFS));
            if !fenced || lease.valid_for(Duration::ZERO) {
                return Err(GarpError(format!("neighbour advertisement: {e}")));
            }
            break;
        }
        sent = i + 1;
        if i + 1 < count {
            tokio::time::sleep(interval).await;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advert_overrides_and_names_the_vip_and_the_mac() {
        let mac = [2, 0, 0, 0, 0, 7];
        let m = advert(mac, "fd0a:d500::100".parse().unwrap());
        assert_eq!(m[0], 136, "neighbour advertisement");
        assert_eq!(m[1], 0, "code");
        assert_eq!(
            m[4] & 0xe0,
            0x20,
            "override only: not router, not solicited"
        );
        assert_eq!(
            &m[8..24],
            &"fd0a:d500::100".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&m[24..26], &[2, 1], "target link-layer address, 8 bytes");
        assert_eq!(&m[26..32], &mac);
    }
}
