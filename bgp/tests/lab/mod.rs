//! A BGP lab in network namespaces: a router namespace running BIRD 2 on a bridge, and node
//! namespaces on veth pairs into it, with addresses in 10.213.240.0/24 and fd0a:d5f0::/64
//! only and no default route, so nothing leaves the lab. Speakers run on Tokio runtimes
//! whose threads enter a node's namespace. Dropping the lab stops BIRD and deletes the
//! namespaces, also when a test panics; namespaces that a killed test run left are swept
//! at the next start.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_bgp::{PeerConfig, Speaker, SpeakerConfig};

/// Namespaces are `bgpt<pid>x<n>-<role>`.
const PREFIX: &str = "bgpt";
static COUNTER: AtomicU32 = AtomicU32::new(0);

pub const ROUTER_AS: u32 = 65000;
pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(10, 213, 240, 1);
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd0a, 0xd5f0, 0, 0, 0, 0, 0, 1);

/// One node: a namespace with `eth0` on the router's bridge.
#[derive(Debug, Clone)]
pub struct Node {
    /// "a", "b", ...: also its BIRD protocol's name.
    pub name: String,
    pub netns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

/// How BIRD sees one node.
#[derive(Debug, Clone)]
pub struct Neighbor {
    pub node: Node,
    pub asn: u32,
    pub password: Option<String>,
    /// A session over IPv6 (IPv6 channel) instead of IPv4 (IPv4 channel).
    pub ipv6: bool,
    /// BIRD's default, "graceful restart aware", instead of `graceful restart off`.
    pub gr_aware: bool,
}

/// One route in `birdc show route ... all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdRoute {
    /// The protocol (node) it came from.
    pub from: String,
    pub best: bool,
    pub med: Option<u32>,
    pub large_community: Option<String>,
}

pub struct Lab {
    id: String,
    pub router: String,
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
    bird: Option<Child>,
    created: Vec<String>,
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (the lab needs iproute2 and bird2)"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes namespaces of lab runs whose process is gone (a SIGKILLed `cargo test`).
fn sweep_stale() {
    for line in run("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('x').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() && name.contains('-') {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

impl Lab {
    /// A router namespace and `nodes` node namespaces (a, b, ... at .2, .3, ...).
    pub fn new(nodes: usize) -> Lab {
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            uid, 0,
            "the BIRD lab test needs root (network namespaces, veth, BGP port 179), as CI runs \
             it; this process runs as uid {uid}"
        );
        assert!(
            Command::new("bird").arg("--version").output().is_ok(),
            "the BIRD lab test needs `bird` and `birdc` (Debian: apt-get install bird2)"
        );
        sweep_stale();
        let id = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            router: format!("{id}-r"),
            nodes: (0..nodes)
                .map(|i| Node {
                    name: ((b'a' + i as u8) as char).to_string(),
                    netns: format!("{id}-{}", (b'a' + i as u8) as char),
                    v4: Ipv4Addr::new(10, 213, 240, 2 + i as u8),
                    v6: Ipv6Addr::new(0xfd0a, 0xd5f0, 0, 0, 0, 0, 0, 2 + i as u16),
                })
                .collect(),
            id,
            dir: tempfile::tempdir().unwrap(),
            bird: None,
            created: Vec::new(),
        };
        // From here on, Drop removes whatever was made, even if a later step fails.
        let r = lab.router.clone();
        lab.add_netns(&r);
        run("ip", &["-n", &r, "link", "add", "br0", "type", "bridge"]);
        run(
            "ip",
            &["-n", &r, "addr", "add", "10.213.240.1/24", "dev", "br0"],
        );
        run(
            "ip",
            &[
                "-n",
                &r,
                "addr",
                "add",
                "fd0a:d5f0::1/64",
                "dev",
                "br0",
                "nodad",
            ],
        );
        run("ip", &["-n", &r, "link", "set", "br0", "up"]);
        run("ip", &["-n", &r, "link", "set", "lo", "up"]);
        for node in lab.nodes.clone() {
            let ns = &node.netns;
            lab.add_netns(ns);
            let port = format!("v{}", node.name);
            run(
                "ip",
                &[
                    "-n", &r, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", ns,
                ],
            );
            run(
                "ip",
                &["-n", &r, "link", "set", &port, "master", "br0", "up"],
            );
            let v4 = format!("{}/24", node.v4);
            let v6 = format!("{}/64", node.v6);
            run("ip", &["-n", ns, "addr", "add", &v4, "dev", "eth0"]);
            run(
                "ip",
                &["-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"],
            );
            run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn add_netns(&mut self, name: &str) {
        run("ip", &["netns", "add", name]);
        self.created.push(name.to_string());
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("bird.ctl")
    }

    /// BIRD's log, for failure messages.
    pub fn bird_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bird.log")).unwrap_or_default()
    }

    /// Starts BIRD in the router namespace with a config for `neighbors` (`med metric on`
    /// when asked), and waits until it answers on its control socket.
    pub fn start_bird(&mut self, neighbors: &[Neighbor], med_metric: bool) {
        assert!(self.bird.is_none(), "BIRD already runs");
        let conf = self.dir.path().join("bird.conf");
        std::fs::write(&conf, self.bird_config(neighbors, med_metric)).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.router, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(self.socket())
            .arg("-P")
            .arg(self.dir.path().join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe. BIRD dies with the thread that started it, so a
        // SIGKILLed test run leaves no router behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.bird = Some(cmd.spawn().expect("spawn bird"));
        self.wait_for(
            "BIRD to answer on its socket",
            Duration::from_secs(10),
            || {
                self.try_birdc(&["show", "status"])
                    .filter(|s| s.contains("Daemon is up"))
            },
        );
    }

    /// Kills BIRD (the router crashes: its sessions' sockets close).
    pub fn stop_bird(&mut self) {
        if let Some(mut child) = self.bird.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn bird_config(&self, neighbors: &[Neighbor], med_metric: bool) -> String {
        let mut conf = format!(
            "log \"{}\" all;\nrouter id {ROUTER_V4};\nprotocol device {{ }}\n",
            self.dir.path().join("bird.log").display()
        );
        for n in neighbors {
            let (local, addr, channel, len) = if n.ipv6 {
                (IpAddr::V6(ROUTER_V6), IpAddr::V6(n.node.v6), "ipv6", 128)
            } else {
                (IpAddr::V4(ROUTER_V4), IpAddr::V4(n.node.v4), "ipv4", 32)
            };
            let password = n
                .password
                .as_ref()
                .map(|p| format!("  password \"{p}\";\n"))
                .unwrap_or_default();
            let med = if med_metric { "  med metric on;\n" } else { "" };
            let gr = if n.gr_aware {
                ""
            } else {
                "  graceful restart off;\n"
            };
            conf += &format!(
                "protocol bgp {name} {{\n  local {local} as {ROUTER_AS};\n  neighbor {addr} as {asn};\n\
                 {password}  hold time 3;\n  keepalive time 1;\n  connect retry time 1;\n  \
                 error wait time 1, 5;\n{gr}{med}  {channel} {{\n    \
                 import filter {{ if net.len = {len} then accept; reject; }};\n    export none;\n  }};\n}}\n",
                name = n.node.name,
                asn = n.asn,
            );
        }
        conf
    }

    /// birdc's output, and whether it succeeded.
    fn birdc_output(&self, args: &[&str]) -> Option<(bool, String)> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Some((out.status.success(), stdout))
    }

    fn try_birdc(&self, args: &[&str]) -> Option<String> {
        self.birdc_output(args)
            .and_then(|(ok, out)| ok.then_some(out))
    }

    pub fn birdc(&self, args: &[&str]) -> String {
        self.try_birdc(args)
            .unwrap_or_else(|| panic!("birdc {args:?} failed; BIRD log:\n{}", self.bird_log()))
    }

    /// Every route BIRD holds for exactly `prefix`, best first or not.
    pub fn routes(&self, prefix: &str) -> Vec<BirdRoute> {
        let args = ["show", "route", prefix, "all"];
        match self.birdc_output(&args) {
            Some((true, out)) => parse_routes(&out),
            // birdc exits 1 for a prefix it holds no route for.
            Some((false, out)) if out.contains("Network not found") => Vec::new(),
            _ => panic!("birdc {args:?} failed; BIRD log:\n{}", self.bird_log()),
        }
    }

    /// The state of the BGP protocol for `node` ("Established", "Active", ...).
    pub fn bgp_state(&self, node: &Node) -> String {
        let out = self.birdc(&["show", "protocols", "all", &node.name]);
        out.lines()
            .find_map(|l| l.trim().strip_prefix("BGP state:"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// A kernel counter of the router namespace, e.g. `TcpExtTCPMD5Failure`.
    pub fn router_counter(&self, name: &str) -> u64 {
        // -a absolute, -s leave nstat's history file alone, -z list zeros too.
        let out = run(
            "ip",
            &["netns", "exec", &self.router, "nstat", "-asz", name],
        );
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in:\n{out}"))
    }

    /// Polls `f` every 20 ms until it gives a value; panics with `what` and BIRD's log after
    /// `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "lab {}: no {what} within {timeout:?}; BIRD log:\n{}",
                    self.id,
                    self.bird_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The route from `node` that BIRD holds as best for `prefix`, once there is one.
    pub fn wait_best(&self, prefix: &str, node: &Node) -> BirdRoute {
        self.wait_for(
            &format!("best route for {prefix} from {}", node.name),
            Duration::from_secs(10),
            || {
                self.routes(prefix)
                    .into_iter()
                    .find(|r| r.best && r.from == node.name)
            },
        )
    }

    /// Waits until BIRD holds no route for `prefix`; returns how long that took.
    pub fn wait_gone(&self, prefix: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        self.wait_for(&format!("withdrawal of {prefix}"), timeout, || {
            self.routes(prefix).is_empty().then_some(())
        });
        start.elapsed()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_bird();
        // Veth pairs and the bridge go with their namespaces.
        while let Some(ns) = self.created.pop() {
            let ok = Command::new("ip")
                .args(["netns", "del", &ns])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("lab {}: could not delete namespace {ns}", self.id);
            }
        }
    }
}

/// Reads `birdc show route ... all`: a route starts on a line with `[protocol time]`, with
/// `*` after it when best; its attributes follow on indented lines.
fn parse_routes(out: &str) -> Vec<BirdRoute> {
    let mut routes: Vec<BirdRoute> = Vec::new();
    for line in out.lines() {
        if let Some(open) = line.find(" [") {
            if line[..open].trim_start().starts_with("Table") {
                continue;
            }
            let inside = &line[open + 2..];
            let from = inside.split_whitespace().next().unwrap_or("").to_string();
            let after = inside.split_once(']').map(|(_, a)| a).unwrap_or("");
            routes.push(BirdRoute {
                from,
                best: after.trim_start().starts_with('*'),
                med: None,
                large_community: None,
            });
        } else if let (Some(r), Some((key, value))) = (routes.last_mut(), line.split_once(": ")) {
            match key.trim() {
                "BGP.med" => r.med = value.trim().parse().ok(),
                "BGP.large_community" => r.large_community = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    routes
}

/// A speaker running on a runtime whose threads are in a node's namespace, so its sockets
/// are the node's.
pub struct NodeSpeaker {
    runtime: Option<tokio::runtime::Runtime>,
    speaker: Option<Speaker>,
}

impl NodeSpeaker {
    pub fn start(node: &Node, config: SpeakerConfig) -> NodeSpeaker {
        let ns = Arc::new(File::open(format!("/run/netns/{}", node.netns)).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_start(move || {
                // SAFETY: setns on a namespace fd; it affects this thread only.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            })
            .build()
            .unwrap();
        let speaker = {
            let _inside = runtime.enter();
            Speaker::start(config).unwrap()
        };
        NodeSpeaker {
            runtime: Some(runtime),
            speaker: Some(speaker),
        }
    }

    /// A speaker on `node` with one peer, the lab's router, over IPv4 or IPv6.
    pub fn to_router(node: &Node, asn: u32, password: Option<&str>, ipv6: bool) -> NodeSpeaker {
        let router = if ipv6 {
            IpAddr::V6(ROUTER_V6)
        } else {
            IpAddr::V4(ROUTER_V4)
        };
        let mut peer = PeerConfig::new(router, ROUTER_AS);
        peer.password = password.map(str::to_string);
        NodeSpeaker::start(
            node,
            SpeakerConfig {
                local_asn: asn,
                router_id: node.v4,
                community_asn: ROUTER_AS,
                peers: vec![peer],
            },
        )
    }

    pub fn speaker(&self) -> &Speaker {
        self.speaker.as_ref().unwrap()
    }

    /// The process dies: its runtime goes without a word and the kernel closes the sockets.
    pub fn kill(mut self) {
        self.runtime.take().unwrap().shutdown_background();
    }

    /// Polls the speaker's first peer every 20 ms until `f` holds; false after `timeout`.
    pub fn peer_becomes(
        &self,
        timeout: Duration,
        f: impl Fn(&ballast_bgp::PeerStatus) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !f(&self.speaker().peers()[0]) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for NodeSpeaker {
    fn drop(&mut self) {
        if let (Some(rt), Some(speaker)) = (self.runtime.take(), self.speaker.take()) {
            rt.block_on(speaker.shutdown());
        }
    }
}
