//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6, `nd.rs`): tell the
//! segment that the VIP now lives at this interface's MAC.
//!
//! Every frame goes out only while this node's lease is valid: the burst reads the lease's
//! deadline before each frame and stops when it is near or the VIP was let go. The fence's
//! egress filter (`fence.rs`) drops any frame that still slips out after the deadline (the
//! process paused between the check and the send, say): this check keeps the burst honest,
//! the kernel makes it safe.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::journal::mono_ns;

/// How much of the lease must be left for a frame to be sent: it must reach the wire well
/// before the deadline.
pub const FRAME_GUARD: Duration = Duration::from_millis(20);

/// The deadline of a held VIP's lease (CLOCK_MONOTONIC ns), shared with its announcements;
/// 0 once the VIP is let go.
#[derive(Debug, Default)]
pub struct LeaseClock(AtomicU64);

impl LeaseClock {
    pub fn new(deadline_ns: u64) -> Self {
        LeaseClock(AtomicU64::new(deadline_ns))
    }

    pub fn set(&self, deadline_ns: u64) {
        self.0.store(deadline_ns, Ordering::Release);
    }

    /// The VIP was let go: no more announcements.
    pub fn end(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// Whether the lease runs at least `guard` longer.
    pub fn valid_for(&self, guard: Duration) -> bool {
        mono_ns() + (guard.as_nanos() as u64) < self.0.load(Ordering::Acquire)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("gratuitous ARP: {0}")]
pub struct GarpError(pub String);

/// The MAC and index of `iface`, which announcements are sent with.
pub(super) fn link(iface: &str) -> Result<([u8; 6], u32), GarpError> {
    let mac = mac_of(iface)?;
    let name = std::ffi::CString::new(iface).map_err(|_| GarpError("bad interface name".into()))?;
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(GarpError(format!("no interface {iface:?}")));
    }
    Ok((mac, index))
}

fn mac_of(iface: &str) -> Result<[u8; 6], GarpError> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .map_err(|e| GarpError(format!("MAC of {iface}: {e}")))?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(GarpError(format!("MAC of {iface}: {text:?}")));
    }
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16)
            .map_err(|_| GarpError(format!("MAC of {iface}: {text:?}")))?;
    }
    Ok(mac)
}

/// An ARP request with sender and target both the VIP, broadcast (what `arping -U` sends).
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]); // destination: broadcast
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// Sends up to `count` announcements of `ip` on `iface` (gratuitous ARP for IPv4, unsolicited
/// neighbour advertisements for IPv6), `interval` apart, each only while `lease` is valid for
/// at least [`FRAME_GUARD`]. Returns how many were sent.
pub async fn burst(
    iface: &str,
    ip: IpAddr,
    count: u32,
    interval: Duration,
    lease: &LeaseClock,
) -> Result<u32, GarpError> {
    match ip {
        IpAddr::V4(v4) => arp_burst(iface, v4, count, interval, lease).await,
        IpAddr::V6(v6) => super::nd::burst(iface, v6, count, interval, lease).await,
    }
}

async fn arp_burst(
    iface: &str,
    ip: Ipv4Addr,
    count: u32,
    interval: Duration,
    lease: &LeaseClock,
) -> Result<u32, GarpError> {
    let (mac, index) = link(iface)?;
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
    if fd < 0 {
        return Err(GarpError(format!(
            "packet socket: {}",
            std::io::Error::last_os_error()
        )));
    }
    let frame = frame(mac, ip);
    // SAFETY: zeroed sockaddr_ll is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut result = Ok(0);
    for i in 0..count {
        if !lease.valid_for(FRAME_GUARD) {
            break;
        }
        // SAFETY: frame and sll outlive the call; sizes are theirs.
        let n = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // ENOBUFS: the fence's egress filter dropped it (the lease ended meanwhile).
            if e.raw_os_error() != Some(libc::ENOBUFS) || lease.valid_for(Duration::ZERO) {
                result = Err(GarpError(format!("send: {e}")));
            }
            break;
        }
        result = Ok(i + 1);
        if i + 1 < count {
            tokio::time::sleep(interval).await;
        }
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_clock_is_valid_until_its_deadline_less_the_guard_and_ends_at_once() {
        let c = LeaseClock::new(mono_ns() + 1_000_000_000);
        assert!(c.valid_for(FRAME_GUARD));
        assert!(!c.valid_for(Duration::from_secs(2)));
        c.end();
        assert!(!c.valid_for(Duration::ZERO));
    }

    #[test]
    fn the_frame_is_a_broadcast_arp_request_for_the_vip() {
        let f = frame([2, 0, 0, 0, 0, 1], "10.213.0.100".parse().unwrap());
        assert_eq!(f.len(), 42);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[10, 213, 0, 100], "sender ip");
        assert_eq!(&f[38..42], &[10, 213, 0, 100], "target ip");
    }
}
