//! The lab's network: the namespaces (a switch with a bridge, one per host), the veth pairs
//! and addresses, the per-host iptables chain that cuts use, and their deletion when the
//! [`Lab`] is dropped (with the sweep of what dead labs left); commands and threads inside a
//! host. Starting programs is `process.rs`'s, cutting links `cuts.rs`'s, serving on the hosts
//! `serve.rs`'s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a lab could not be built or driven.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, veth, iptables); this process runs as uid {0}. Run the lab tests as root, as CI does")]
    NotRoot(u32),
    #[error(
        "the lab needs `{0}` on PATH (Debian: apt-get install iproute2 iptables iputils-ping)"
    )]
    MissingTool(&'static str),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// One simulated machine: a network namespace with `eth0` on the lab's bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// "n1", "n2", ... or "client".
    pub name: String,
    /// The network namespace, unique on the machine.
    pub netns: String,
    pub addr: Ipv4Addr,
    /// Its IPv6 address on the same segment: `fd0a:d500::<last octet, in hex>`, a unique local
    /// address spelled after 10.213 (0x0a, 0xd5), added without duplicate address detection.
    pub addr6: Ipv6Addr,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "bl";
const SUBNET: [u8; 3] = [10, 213, 0];
/// The segment's IPv6 prefix (/64): fd0a:d500::, a unique local prefix that spells 10.213.
pub const SUBNET6: [u16; 2] = [0xfd0a, 0xd500];
/// Address of the client host; nodes are .1, .2, ...
const CLIENT_OCTET: u8 = 200;
pub(super) const CHAIN: &str = "LAB_CUT";

/// A lab network. Dropping it kills its processes and deletes its namespaces.
pub struct Lab {
    id: String,
    switch: String,
    pub(super) nodes: Vec<Host>,
    client: Host,
    created: Mutex<Vec<String>>,
    /// Tells the threads of [`Lab::serve_names`] to end.
    pub(super) stop_servers: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn run(cmd: &str, args: &[&str]) -> Result<Output, LabError> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LabError::MissingTool(match cmd {
                    "ip" => "ip",
                    "iptables" => "iptables",
                    _ => "a required tool",
                })
            } else {
                LabError::Io(e)
            }
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("{cmd} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces left by lab processes that died without cleaning up (SIGKILL of a
/// test run). Names are `bl<pid>x<n>-...`; only those whose pid is gone are touched.
fn sweep_stale() {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<u32> = rest.split('x').next().and_then(|p| p.parse().ok());
        if let Some(pid) = pid {
            if !pid_alive(pid) && name.contains('-') {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
}

impl Lab {
    /// Builds a lab with `nodes` node hosts (n1..nN at 10.213.0.1..N and fd0a:d500::1..N) and a
    /// client host (10.213.0.200, fd0a:d500::c8), all on one bridge, with no default route.
    pub fn new(nodes: usize) -> Result<Self, LabError> {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        if uid != 0 {
            return Err(LabError::NotRoot(uid));
        }
        assert!((1..CLIENT_OCTET as usize).contains(&nodes), "1..200 nodes");
        sweep_stale();
        let id = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let host = |name: &str, octet: u8| Host {
            name: name.to_string(),
            netns: format!("{id}-{name}"),
            addr: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet),
            addr6: Ipv6Addr::new(SUBNET6[0], SUBNET6[1], 0, 0, 0, 0, 0, octet as u16),
        };
        let lab = Lab {
            switch: format!("{id}-sw"),
            nodes: (1..=nodes)
                .map(|i| host(&format!("n{i}"), i as u8))
                .collect(),
            client: host("client", CLIENT_OCTET),
            id,
            created: Mutex::new(Vec::new()),
            stop_servers: Default::default(),
        };
        // From here on, Drop removes whatever was made, even if a later step fails.
        lab.add_netns(&lab.switch)?;
        run(
            "ip",
            &["-n", &lab.switch, "link", "add", "br0", "type", "bridge"],
        )?;
        run("ip", &["-n", &lab.switch, "link", "set", "br0", "up"])?;
        let hosts: Vec<Host> = lab.hosts().cloned().collect();
        for (i, h) in hosts.iter().enumerate() {
            lab.add_netns(&h.netns)?;
            let port = format!("p{i}");
            run(
                "ip",
                &[
                    "-n",
                    &lab.switch,
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &h.netns,
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    &lab.switch,
                    "link",
                    "set",
                    &port,
                    "master",
                    "br0",
                    "up",
                ],
            )?;
            let cidr = format!("{}/24", h.addr);
            run("ip", &["-n", &h.netns, "addr", "add", &cidr, "dev", "eth0"])?;
            let cidr6 = format!("{}/64", h.addr6);
            run(
                "ip",
                &[
                    "-n", &h.netns, "addr", "add", &cidr6, "dev", "eth0", "nodad",
                ],
            )?;
            run("ip", &["-n", &h.netns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &h.netns, "link", "set", "lo", "up"])?;
            // The chain that partitions use; healing flushes it.
            lab.iptables(h, &["-N", CHAIN])?;
            lab.iptables(h, &["-I", "INPUT", "-j", CHAIN])?;
        }
        Ok(lab)
    }

    fn add_netns(&self, name: &str) -> Result<(), LabError> {
        run("ip", &["netns", "add", name])?;
        self.created.lock().unwrap().push(name.to_string());
        Ok(())
    }

    pub(super) fn iptables(&self, h: &Host, args: &[&str]) -> Result<Output, LabError> {
        let mut a = vec!["netns", "exec", &h.netns, "iptables", "-w"];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// The lab's unique id (prefix of its namespace names).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Node host `i`, 1-based.
    pub fn node(&self, i: usize) -> &Host {
        &self.nodes[i - 1]
    }

    pub fn nodes(&self) -> &[Host] {
        &self.nodes
    }

    pub fn client(&self) -> &Host {
        &self.client
    }

    pub(super) fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.nodes.iter().chain(std::iter::once(&self.client))
    }

    /// Namespaces this lab created and has not deleted yet.
    pub fn namespaces(&self) -> Vec<String> {
        self.created.lock().unwrap().clone()
    }

    /// Runs a command to completion on a host.
    pub fn exec(&self, h: &Host, cmd: &str, args: &[&str]) -> Result<Output, LabError> {
        let out = Command::new("ip")
            .args(["netns", "exec", &h.netns, cmd])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok(out)
    }

    /// Whether `from` gets an answer to one ping of `to` within a second.
    pub fn can_ping(&self, from: &Host, to: &Host) -> bool {
        self.exec(
            from,
            "ping",
            &["-c", "1", "-W", "1", "-q", &to.addr.to_string()],
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    }

    /// Whether `from` gets an answer to one ping of `addr` within a second.
    pub fn can_ping_addr(&self, from: &Host, addr: impl Into<IpAddr>) -> bool {
        let addr: IpAddr = addr.into();
        self.exec(
            from,
            "ping",
            &["-c", "1", "-W", "1", "-q", &addr.to_string()],
        )
        .map(|o| o.status.success())
        .unwrap_or(false)
    }

    /// Runs `f` on a new thread inside `h`'s network namespace (sockets it opens live there)
    /// and waits for its result.
    pub fn run_in<T: Send + 'static>(
        &self,
        h: &Host,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LabError> {
        let handle = in_netns(h, f)?;
        handle
            .join()
            .map_err(|_| LabError::Setup("the thread in the namespace panicked".into()))
    }

    /// Polls `f` every 20 ms until it returns Some, or gives up after `timeout`.
    pub fn wait_for<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `f` on a thread that first enters `h`'s network namespace (that thread only).
pub(crate) fn in_netns<T: Send + 'static>(
    h: &Host,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, LabError> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/run/netns/{}", h.netns))?;
    Ok(std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd; affects this thread only.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    }))
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_servers.store(true, Ordering::Relaxed);
        // Deleting a namespace kills nothing: processes are the owners' (LabProcess) to kill.
        // Namespaces go in reverse order; veth pairs vanish with them.
        let mut created = self.created.lock().unwrap();
        while let Some(ns) = created.pop() {
            if let Err(e) = run("ip", &["netns", "del", &ns]) {
                eprintln!("lab {}: could not delete namespace {ns}: {e}", self.id);
            }
        }
    }
}
