//! The lab: network namespaces joined by a bridge (10.213.0.0/16, no default route), one per
//! node and one client host, with `ballastd` processes started inside and faults applied from
//! outside (iptables cuts, SIGSTOP and SIGKILL). Everything it makes is named and
//! deleted when the `Lab` is dropped. Needs root; it says so and stops without it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
}

/// A process running on a lab host.
pub struct LabProcess {
    pub host: String,
    child: Child,
}

impl LabProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and up to `grace` for it to exit; then SIGKILL. Reaped either way.
    pub fn terminate(&mut self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }

    /// SIGSTOP: the process stays, frozen.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Whether it is still running (or stopped), not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "bl";
const SUBNET: [u8; 3] = [10, 213, 0];
/// Address of the client host; nodes are .1, .2, ...
const CLIENT_OCTET: u8 = 200;
const CHAIN: &str = "LAB_CUT";

/// A lab network. Dropping it kills its processes and deletes its namespaces.
pub struct Lab {
    id: String,
    switch: String,
    nodes: Vec<Host>,
    client: Host,
    created: Mutex<Vec<String>>,
    /// Tells the threads of [`Lab::serve_names`] to end.
    stop_servers: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
    /// Builds a lab with `nodes` node hosts (n1..nN at 10.213.0.1..N) and a client host
    /// (10.213.0.200), all on one bridge, with no default route.
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

    fn iptables(&self, h: &Host, args: &[&str]) -> Result<Output, LabError> {
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

    fn hosts(&self) -> impl Iterator<Item = &Host> {
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
    pub fn can_ping_addr(&self, from: &Host, addr: Ipv4Addr) -> bool {
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

    /// Serves TCP on `0.0.0.0:port` in every node host until the lab is dropped: each
    /// connection is answered with the host's name and closed. Shows which server a TCP client
    /// of a VIP reached.
    pub fn serve_names(&self, port: u16) -> Result<(), LabError> {
        self.serve_each(port, |h| {
            let name = h.name.clone();
            move |mut c: std::net::TcpStream| {
                use std::io::Write;
                let _ = c.write_all(name.as_bytes());
            }
        })
    }

    /// Serves HTTP on `0.0.0.0:port` in every node host until the lab is dropped, a tiny
    /// stand-in for a real service: `GET` answers 200 with the content of `file(host)`, or 503
    /// when the file is missing or starts with "broken".
    pub fn serve_files(&self, port: u16, file: impl Fn(&Host) -> PathBuf) -> Result<(), LabError> {
        self.serve_each(port, |h| {
            let path = file(h);
            move |mut c: std::net::TcpStream| {
                use std::io::{Read, Write};
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let mut req = [0u8; 1024];
                let _ = c.read(&mut req);
                let (code, body) = match std::fs::read_to_string(&path) {
                    Ok(b) if !b.starts_with("broken") => ("200 OK", b),
                    _ => ("503 Service Unavailable", "unavailable".to_string()),
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
    }

    /// Listens on `0.0.0.0:port` in every node host, one thread each, until the lab is
    /// dropped; `handler(host)` answers each connection of that host, one at a time.
    fn serve_each<H: FnMut(std::net::TcpStream) + Send + 'static>(
        &self,
        port: u16,
        handler: impl Fn(&Host) -> H,
    ) -> Result<(), LabError> {
        for h in &self.nodes {
            let mut handle = handler(h);
            let stop = self.stop_servers.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            in_netns(h, move || {
                let l = match std::net::TcpListener::bind(("0.0.0.0", port)) {
                    Ok(l) => l,
                    Err(e) => return ready_tx.send(Err(e.to_string())).unwrap_or(()),
                };
                l.set_nonblocking(true).expect("nonblocking listener");
                let _ = ready_tx.send(Ok(()));
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            let _ = c.set_nonblocking(false);
                            handle(c);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })?;
            ready_rx
                .recv()
                .map_err(|e| LabError::Setup(e.to_string()))?
                .map_err(|e| LabError::Setup(format!("serving on {port} in {}: {e}", h.name)))?;
        }
        Ok(())
    }

    /// Connects from `from` to `addr:port` (1 s limit) and returns what the server sent.
    pub fn tcp_read(&self, from: &Host, addr: Ipv4Addr, port: u16) -> Result<String, LabError> {
        self.run_in(from, move || -> Result<String, String> {
            use std::io::Read;
            let mut c = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from((addr, port)),
                Duration::from_secs(1),
            )
            .map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
            let mut s = String::new();
            c.read_to_string(&mut s).map_err(|e| e.to_string())?;
            Ok(s)
        })?
        .map_err(LabError::Setup)
    }

    /// Starts a long-running process on a host, its stdout and stderr appended to `log`.
    pub fn spawn(
        &self,
        h: &Host,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<LabProcess, LabError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        // `ip netns exec` execs the program, so the child's pid is the program's.
        let child = Command::new("ip")
            .args(["netns", "exec", &h.netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(LabProcess {
            host: h.name.clone(),
            child,
        })
    }

    /// Starts `ballastd` as member `id` (1-based) of a cluster of every node host: gRPC on
    /// port 7400 and HTTP on 7480 of the host's address, data and log under `dir`, default
    /// timing, then `extra` arguments.
    pub fn spawn_ballastd(
        &self,
        id: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<LabProcess, LabError> {
        self.spawn_member(id, self.nodes.len(), dir, extra)
    }

    /// The gRPC endpoints of the first `members` node hosts.
    pub fn member_endpoints(&self, members: usize) -> Vec<String> {
        self.nodes[..members]
            .iter()
            .map(|h| format!("{}:7400", h.addr))
            .collect()
    }

    /// Starts `ballastd agent` (the agent alone, not a Raft member) as node `id` on node host
    /// `id`, talking to the first `members` hosts; log under `dir`, then `extra` arguments.
    pub fn spawn_standalone_agent(
        &self,
        id: usize,
        members: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<LabProcess, LabError> {
        let h = self.node(id);
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--node-id".into(),
            id.to_string(),
            "--endpoints".into(),
            self.member_endpoints(members).join(","),
            "--advertise".into(),
            format!("{}:7400", h.addr),
        ];
        args.extend_from_slice(extra);
        self.spawn_logged_ballastd(id, &args, dir)
    }

    /// Runs `ballastd ARGS` on node host `id`, logging to `dir/nID.log`.
    fn spawn_logged_ballastd(
        &self,
        id: usize,
        args: &[String],
        dir: &Path,
    ) -> Result<LabProcess, LabError> {
        self.spawn(
            self.node(id),
            &ballast_bin("ballastd"),
            args,
            &dir.join(format!("n{id}.log")),
        )
    }

    /// Starts `ballastd` as member `id` of a cluster of the first `members` node hosts (see
    /// [`Lab::spawn_ballastd`]).
    pub fn spawn_member(
        &self,
        id: usize,
        members: usize,
        dir: &Path,
        extra: &[String],
    ) -> Result<LabProcess, LabError> {
        let h = self.node(id);
        let members: Vec<String> = self.nodes[..members]
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{}={}:7400", i + 1, h.addr))
            .collect();
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.join(format!("n{id}")).display().to_string(),
            "--listen".into(),
            format!("{}:7400", h.addr),
            "--http-listen".into(),
            format!("{}:7480", h.addr),
            "--initial-cluster".into(),
            members.join(","),
        ];
        args.extend_from_slice(extra);
        self.spawn_logged_ballastd(id, &args, dir)
    }

    /// Drops every packet from `from` at `to` (one way: `to` stops hearing `from`). The link
    /// stays up.
    pub fn cut(&self, from: &Host, to: &Host) -> Result<(), LabError> {
        self.iptables(
            to,
            &["-A", CHAIN, "-s", &from.addr.to_string(), "-j", "DROP"],
        )?;
        Ok(())
    }

    /// Drops a random `percent` of the packets from `from` at `to` (iptables `statistic`; the
    /// kernel here has no netem). Healed by [`Lab::heal`].
    pub fn lossy(&self, from: &Host, to: &Host, percent: u32) -> Result<(), LabError> {
        let p = format!("{:.2}", percent.min(100) as f64 / 100.0);
        self.iptables(
            to,
            &[
                "-A",
                CHAIN,
                "-s",
                &from.addr.to_string(),
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )?;
        Ok(())
    }

    /// Cuts both ways between every host of `a` and every host of `b`.
    pub fn partition(&self, a: &[&Host], b: &[&Host]) -> Result<(), LabError> {
        for x in a {
            for y in b {
                self.cut(x, y)?;
                self.cut(y, x)?;
            }
        }
        Ok(())
    }

    /// Cuts `h` off from every other node host, both ways; the client still reaches all.
    pub fn isolate(&self, h: &Host) -> Result<(), LabError> {
        let others: Vec<&Host> = self.nodes.iter().filter(|n| n.name != h.name).collect();
        self.partition(&[h], &others)
    }

    /// Removes every cut.
    pub fn heal(&self) -> Result<(), LabError> {
        for h in self.hosts() {
            self.iptables(h, &["-F", CHAIN])?;
        }
        Ok(())
    }

    /// Packets dropped by cuts on `h` so far.
    pub fn dropped_at(&self, h: &Host) -> u64 {
        let Ok(out) = self.iptables(h, &["-L", CHAIN, "-v", "-n", "-x"]) else {
            return 0;
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
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

/// Path of a workspace binary (`ballastd`, `ballastctl`) next to the running test or program:
/// `target/<profile>/<name>`.
pub fn ballast_bin(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("BALLAST_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock every lab host shares, and that the members'
/// fence journals (`ballastd --fence-journal`) are written on.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
