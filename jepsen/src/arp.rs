//! An ARP observer on a lab host: asks "who has VIP?" every few milliseconds and records
//! which MACs answered each probe, on one monotonic clock. For an IPv6 VIP it asks with
//! neighbour solicitations and reads the advertisements that answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lab::{in_netns, Host};

/// The answers to one probe.
#[derive(Debug, Clone)]
pub struct Probe {
    /// When it was sent.
    pub at: Instant,
    /// MACs that answered before the next probe, in order, without repeats.
    pub macs: Vec<[u8; 6]>,
}

/// An ARP frame that speaks for the VIP (its sender address is the VIP): a gratuitous ARP, a
/// reply to a probe, a request a node sent from the VIP. For IPv6: a neighbour advertisement
/// for the VIP, or any packet from it. Each may only leave a node while its lease is valid.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When it reached the observer's host (the kernel's stamp, on the monotonic clock).
    pub at: Instant,
    /// The sending interface's MAC (the Ethernet source).
    pub mac: [u8; 6],
    /// Sender and target address both the VIP (IPv6: an advertisement not solicited): an
    /// announcement.
    pub gratuitous: bool,
}

/// Probing in the background until dropped (or [`ArpObserver::stop`]).
pub struct ArpObserver {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    frames: Arc<Mutex<Vec<Frame>>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

fn request(src_mac: [u8; 6], src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// The solicited-node multicast group of `a` (ff02::1:ffXX:XXXX), and its MAC.
fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = a.octets();
    let mut g = [0u8; 16];
    g[0] = 0xff;
    g[1] = 0x02;
    g[11] = 0x01;
    g[12] = 0xff;
    g[13..].copy_from_slice(&o[13..]);
    (Ipv6Addr::from(g), [0x33, 0x33, 0xff, o[13], o[14], o[15]])
}

/// The ICMPv6 checksum of `msg` between `src` and `dst` (RFC 4443, 2.3).
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A neighbour solicitation for `target` from `src_ip`, as an Ethernet frame to its
/// solicited-node group.
fn solicitation(src_mac: [u8; 6], src_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
    icmp.extend_from_slice(&src_mac);
    let sum = icmpv6_checksum(src_ip, group, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&group_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&group.octets());
    f.extend_from_slice(&icmp);
    f
}

/// What a received frame says about the VIP.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    /// It speaks for the VIP: (sender MAC, an announcement).
    speaks: Option<([u8; 6], bool)>,
    /// It answers a probe: the MAC that answered.
    answers: Option<[u8; 6]>,
}

fn classify_arp(buf: &[u8], target: Ipv4Addr) -> Seen {
    let mut seen = Seen::default();
    if buf.len() < 42 || buf[12..14] != [0x08, 0x06] || buf[28..32] != target.octets() {
        return seen;
    }
    let mut m = [0u8; 6];
    m.copy_from_slice(&buf[6..12]);
    seen.speaks = Some((m, buf[38..42] == target.octets()));
    // ARP reply (op 2) whose sender IP is the target.
    if buf[20..22] == [0, 2] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&buf[22..28]);
        seen.answers = Some(m);
    }
    seen
}

fn classify_nd(buf: &[u8], target: Ipv6Addr) -> Seen {
    let mut seen = Seen::default();
    if buf.len() < 54 || buf[12..14] != [0x86, 0xdd] {
        return seen;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&buf[6..12]);
    let from_vip = buf[22..38] == target.octets();
    let advert =
        buf.len() >= 78 && buf[20] == 58 && buf[54] == 136 && buf[62..78] == target.octets();
    if advert || from_vip {
        let solicited = advert && buf[58] & 0x40 != 0;
        seen.speaks = Some((mac, advert && !solicited));
    }
    if advert && buf[58] & 0x40 != 0 {
        seen.answers = Some(mac);
    }
    seen
}

fn observe(
    netns: String,
    src_ip: IpAddr,
    target: IpAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    frames: Arc<Mutex<Vec<Frame>>>,
) -> Result<(), String> {
    // This thread runs in the host's network namespace (`in_netns`). /sys stays the caller's,
    // so the MAC is read through `ip netns exec`, which mounts the namespace's own /sys.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &netns,
            "cat",
            "/sys/class/net/eth0/address",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mac = [0u8; 6];
    for (i, p) in text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(p, 16).map_err(|e| e.to_string())?;
    }
    let ethertype = if target.is_ipv4() {
        libc::ETH_P_ARP
    } else {
        libc::ETH_P_IPV6
    };
    let proto = (ethertype as u16).to_be();
    // SAFETY: plain socket(2); closed at the end.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
    if fd < 0 {
        return Err(format!(
            "packet socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    let name = std::ffi::CString::new("eth0").unwrap();
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: zeroed sockaddr_ll is valid; we fill the fields we use.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: binding to our interface with a valid sockaddr_ll.
    unsafe {
        libc::bind(
            fd,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 1000,
    };
    // SAFETY: setting a receive timeout with a valid timeval.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    // Frames are stamped by the kernel when they arrive (SO_TIMESTAMPNS, CLOCK_REALTIME),
    // not when this thread gets to them: a descheduled observer must not make a frame look
    // later than it was. The realtime stamps are put on the monotonic clock with an offset
    // taken now (the lab's clock is not stepped during a run).
    let on: libc::c_int = 1;
    // SAFETY: a valid int option.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    let (base_mono, base_rt) = (Instant::now(), realtime_ns());
    let stamp = |rt: Option<u64>| match rt {
        Some(rt) if rt >= base_rt => base_mono + Duration::from_nanos(rt - base_rt),
        _ => Instant::now(),
    };
    let frame = match (src_ip, target) {
        (IpAddr::V4(s), IpAddr::V4(t)) => request(mac, s, t),
        (IpAddr::V6(s), IpAddr::V6(t)) => solicitation(mac, s, t),
        _ => return Err("the observer's address and the VIP differ in family".into()),
    };
    let classify = |buf: &[u8]| match target {
        IpAddr::V4(t) => classify_arp(buf, t),
        IpAddr::V6(t) => classify_nd(buf, t),
    };
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        // SAFETY: frame and sll are valid for the call.
        unsafe {
            libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
        }
        let mut probe = Probe {
            at,
            macs: Vec::new(),
        };
        while at.elapsed() < every {
            let (n, rt) = recv_stamped(fd, &mut buf);
            if n < 42 {
                continue;
            }
            let seen = classify(&buf[..n as usize]);
            if let Some((mac, gratuitous)) = seen.speaks {
                frames.lock().unwrap().push(Frame {
                    at: stamp(rt),
                    mac,
                    gratuitous,
                });
            }
            if let Some(m) = seen.answers {
                if !probe.macs.contains(&m) {
                    probe.macs.push(m);
                }
            }
        }
        probes.lock().unwrap().push(probe);
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    Ok(())
}

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Receives one frame into `buf`: its length (negative: none) and the kernel's arrival
/// stamp (CLOCK_REALTIME ns), if it gave one.
fn recv_stamped(fd: libc::c_int, buf: &mut [u8]) -> (isize, Option<u64>) {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: zeroed msghdr is valid; we point it at our iovec and control buffer.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg and the buffers it points to outlive the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return (n, None);
    }
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    (n, stamp)
}

impl ArpObserver {
    /// Starts probing `target` (IPv4: ARP; IPv6: neighbour solicitations) from `host` every
    /// `every` (at least 1 ms).
    pub fn start(host: &Host, target: impl Into<IpAddr>, every: Duration) -> Self {
        let target: IpAddr = target.into();
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (s, p, f) = (stop.clone(), probes.clone(), frames.clone());
        let ip = match target {
            IpAddr::V4(_) => IpAddr::V4(host.addr),
            IpAddr::V6(_) => IpAddr::V6(host.addr6),
        };
        let ns = host.netns.clone();
        let every = every.max(Duration::from_millis(1));
        let thread = in_netns(host, move || observe(ns, ip, target, every, s, p, f))
            .unwrap_or_else(|e| {
                let e = e.to_string();
                std::thread::spawn(move || Err(e))
            });
        ArpObserver {
            stop,
            probes,
            frames,
            thread: Some(thread),
        }
    }

    /// Every frame that spoke for the VIP so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap().clone()
    }

    /// Every probe so far.
    pub fn probes(&self) -> Vec<Probe> {
        self.probes.lock().unwrap().clone()
    }

    /// Stops probing and returns every probe; fails if the observer could not run.
    pub fn stop(self) -> Result<Vec<Probe>, String> {
        self.stop_all().map(|(p, _)| p)
    }

    /// Stops probing and returns every probe and every frame that spoke for the VIP.
    pub fn stop_all(mut self) -> Result<(Vec<Probe>, Vec<Frame>), String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| "observer thread panicked".to_string())??;
        }
        Ok((self.probes(), self.frames()))
    }
}

impl Drop for ArpObserver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Formats a MAC as aa:bb:...
pub fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solicitation_goes_to_the_solicited_node_group_with_a_valid_checksum() {
        let mac = [2, 0, 0, 0, 0, 9];
        let src: Ipv6Addr = "fd0a:d500::c8".parse().unwrap();
        let vip: Ipv6Addr = "fd0a:d500::1:2345".parse().unwrap();
        let f = solicitation(mac, src, vip);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0x01, 0x23, 0x45]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
        assert_eq!(dst, "ff02::1:ff01:2345".parse::<Ipv6Addr>().unwrap());
        // A message with its checksum in place sums to zero.
        assert_eq!(icmpv6_checksum(src, dst, &f[54..]), 0);
        assert_eq!(f[54], 135);
        assert_eq!(&f[62..78], &vip.octets());
    }

    #[test]
    fn advertisements_for_the_vip_are_told_apart_by_the_solicited_flag() {
        let vip: Ipv6Addr = "fd0a:d500::64".parse().unwrap();
        let mut f = vec![0u8; 86];
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[20] = 58;
        f[22..38].copy_from_slice(&vip.octets());
        f[54] = 136;
        f[62..78].copy_from_slice(&vip.octets());
        f[58] = 0x60; // solicited, override
        let s = classify_nd(&f, vip);
        assert_eq!(s.answers, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(s.speaks, Some(([2, 0, 0, 0, 0, 1], false)));
        f[58] = 0x20; // unsolicited: an announcement
        let s = classify_nd(&f, vip);
        assert_eq!(s.answers, None);
        assert_eq!(s.speaks, Some(([2, 0, 0, 0, 0, 1], true)));
        let other: Ipv6Addr = "fd0a:d500::65".parse().unwrap();
        assert_eq!(classify_nd(&f, other), Seen::default());
    }
}
