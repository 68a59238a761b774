//! An ARP observer on a lab host: asks "who has VIP?" every few milliseconds and records
//! which MACs answered each probe, on one monotonic clock.

use std::net::Ipv4Addr;
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
/// reply to a probe, a request a node sent from the VIP. Each may only leave a node while its
/// lease is valid.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When it reached the observer's host (the kernel's stamp, on the monotonic clock).
    pub at: Instant,
    /// The sending interface's MAC (the Ethernet source).
    pub mac: [u8; 6],
    /// Sender and target address both the VIP: an announcement.
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

fn observe(
    netns: String,
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
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
    let proto = (libc::ETH_P_ARP as u16).to_be();
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
    let frame = request(mac, src_ip, target);
    let mut buf = [0u8; 128];
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
            let arp = buf[12..14] == [0x08, 0x06];
            if arp && buf[28..32] == target.octets() {
                let mut m = [0u8; 6];
                m.copy_from_slice(&buf[6..12]);
                frames.lock().unwrap().push(Frame {
                    at: stamp(rt),
                    mac: m,
                    gratuitous: buf[38..42] == target.octets(),
                });
            }
            // ARP reply (op 2) whose sender IP is the target.
            if arp && buf[20..22] == [0, 2] && buf[28..32] == target.octets() {
                let mut m = [0u8; 6];
                m.copy_from_slice(&buf[22..28]);
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
    /// Starts probing `target` from `host` every `every` (at least 1 ms).
    pub fn start(host: &Host, target: Ipv4Addr, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (s, p, f) = (stop.clone(), probes.clone(), frames.clone());
        let (ns, ip) = (host.netns.clone(), host.addr);
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
