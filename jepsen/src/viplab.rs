//! A ready-made lab cluster for VIP tests and benchmarks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::arp::{mac_string, ArpObserver, Probe};
use crate::lab::{ballast_bin, Host, Lab, LabProcess};

/// The VIP every VipLab serves (see [`VipLabOptions::ipv6`] for the other).
pub const VIP: &str = "10.213.0.100";
/// The VIP of a VipLab with [`VipLabOptions::ipv6`]: on the lab's IPv6 segment.
pub const VIP6: &str = "fd0a:d500::64";

/// The lease a VipLab's members run with (ballastd's default): no fence may allow the VIP for
/// longer.
pub const VIP_LEASE: Duration = Duration::from_millis(800);
/// The drift allowance and leader margin that go with [`VIP_LEASE`] (ballastd's defaults).
pub const VIP_DRIFT: Duration = Duration::from_millis(20);
pub const VIP_MARGIN: Duration = Duration::from_millis(50);

/// Three `ballastd --agent` members on lab hosts with service "web" (exec check `up`, which
/// passes while the file `dir/up-nN` exists) and VIP "web-vip" at 10.213.0.100/24 on eth0;
/// optionally more hosts that run `ballastd agent` alone (nodes 4, 5, ...).
pub struct VipLab {
    pub lab: Lab,
    /// Raft members (nodes 1..=members); the other nodes run the agent alone.
    pub members: usize,
    /// The VIP's address ([`VIP`], or [`VIP6`] in an IPv6 lab).
    pub vip: IpAddr,
    /// Extra command-line arguments per node (see [`VipLabOptions::extra`]).
    extra: Vec<Vec<String>>,
    /// The admin token `ctl` calls with (see [`VipLabOptions::tokens`]).
    pub token: Option<String>,
    pub procs: Vec<Option<LabProcess>>,
    pub dir: PathBuf,
    /// When the lab started, as an `Instant` and on CLOCK_MONOTONIC (the journals' clock).
    started: (Instant, u64),
    /// One VipLab at a time per process: three members per lab host is already the load of
    /// three servers on this machine's two cores; several labs at once would measure the
    /// scheduler, not Ballast. Declared last, so it is released after everything stopped.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// See [`VipLabOptions::before_vip`].
pub type BeforeVip = Box<dyn Fn(&VipLab)>;
/// See [`VipLabOptions::extra`].
pub type ExtraArgs = Box<dyn Fn(u64, &std::path::Path) -> Vec<String>>;

/// How to build a [`VipLab`].
#[derive(Default)]
pub struct VipLabOptions {
    /// Hosts beyond the three members that run `ballastd agent`.
    pub standalone: usize,
    /// The service's health check (default `exec:up`).
    pub check: Option<String>,
    /// Called before anything waits on the VIP, once the service exists (e.g. to activate a
    /// first release, without which the check cannot pass).
    pub before_vip: Option<BeforeVip>,
    /// Extra ballastd arguments for node `id`, given the lab's data directory.
    pub extra: Option<ExtraArgs>,
    /// API tokens: the members get `dir/tokens` (a member, an admin and a read token, and a
    /// `node <id>` line per standalone agent), each standalone agent `dir/tokens-n<id>`
    /// with its own line only; [`VipLab::ctl`] calls with the admin token.
    pub tokens: bool,
    /// The VIP is IPv6 ([`VIP6`]/64): announced by neighbour advertisements, observed with
    /// neighbour solicitations.
    pub ipv6: bool,
}

/// The lab's tokens (a lab only: fixed, not secret).
pub const LAB_MEMBER_TOKEN: &str = "lab-member-token-0000000000";
pub const LAB_ADMIN_TOKEN: &str = "lab-admin-token-00000000000";
pub const LAB_READ_TOKEN: &str = "lab-read-token-000000000000";

/// Node `id`'s token in a lab with tokens.
pub fn lab_node_token(id: u64) -> String {
    format!("lab-node-{id}-token-0000000000")
}

static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl VipLab {
    /// Three members with agents; service "web" gated by an exec check `up` that passes while
    /// the file `dir/up-nN` exists; VIP "web-vip" on eth0. Returns once the VIP answers.
    pub fn start() -> (Self, u64, u64) {
        Self::start_with(0)
    }

    /// Like [`VipLab::start`], plus `standalone` hosts running `ballastd agent`, also backends
    /// of "web".
    pub fn start_with(standalone: usize) -> (Self, u64, u64) {
        Self::start_opts(VipLabOptions {
            standalone,
            ..Default::default()
        })
    }

    /// The general form: see [`VipLabOptions`].
    pub fn start_opts(o: VipLabOptions) -> (Self, u64, u64) {
        let standalone = o.standalone;
        for bin in ["ballastd", "ballastctl"] {
            assert!(
                ballast_bin(bin).exists(),
                "{} missing: cargo build --workspace --bins",
                ballast_bin(bin).display()
            );
        }
        let guard = ONE_LAB
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let lab = Lab::new(3 + standalone).unwrap_or_else(|e| panic!("LAB SETUP FAILED: {e}"));
        let dir = std::env::temp_dir().join(format!("{}-data", lab.id()));
        std::fs::create_dir_all(&dir).unwrap();
        let total = 3 + standalone as u64;
        let mut extra: Vec<Vec<String>> = (1..=total)
            .map(|id| o.extra.as_ref().map_or(Vec::new(), |f| f(id, &dir)))
            .collect();
        if o.tokens {
            let mut members = format!(
                "member {LAB_MEMBER_TOKEN}\nadmin {LAB_ADMIN_TOKEN}\nread {LAB_READ_TOKEN}\n"
            );
            for id in 4..=total {
                let own = format!("node {id} {}\n", lab_node_token(id));
                let file = dir.join(format!("tokens-n{id}"));
                std::fs::write(&file, &own).unwrap();
                members.push_str(&own);
                extra[id as usize - 1].extend(["--token-file".into(), file.display().to_string()]);
            }
            std::fs::write(dir.join("tokens"), members).unwrap();
            for e in extra.iter_mut().take(3) {
                e.extend([
                    "--token-file".into(),
                    dir.join("tokens").display().to_string(),
                ]);
            }
        }
        let vip: IpAddr = if o.ipv6 { VIP6 } else { VIP }.parse().unwrap();
        let mut v = VipLab {
            procs: Vec::new(),
            started: (Instant::now(), crate::lab::mono_ns()),
            lab,
            members: 3,
            vip,
            extra,
            token: o.tokens.then(|| LAB_ADMIN_TOKEN.to_string()),
            dir,
            _one_at_a_time: guard,
        };
        for id in 1..=3u64 {
            std::fs::write(v.up_file(id), "").unwrap();
            let p = v.spawn(id);
            v.procs.push(Some(p));
        }
        v.lab
            .wait_for(Duration::from_secs(30), || {
                let (ok, out, _) = v.ctl(&["status", "-o", "json"]);
                let s: Value = serde_json::from_str(&out).ok()?;
                (ok && s["leader_id"].as_u64()? > 0).then_some(())
            })
            .expect("cluster formed");
        for id in 4..=total {
            std::fs::write(v.up_file(id), "").unwrap();
            let p = v.spawn(id);
            v.procs.push(Some(p));
        }
        v.lab
            .wait_for(Duration::from_secs(30), || {
                let (ok, out, _) = v.ctl(&["node", "ls", "-o", "json"]);
                let nodes: Value = serde_json::from_str(&out).ok()?;
                (ok && nodes.as_array()?.len() as u64 == total).then_some(())
            })
            .unwrap_or_else(|| panic!("standalone agents registered; logs:\n{}", v.logs()));
        let backends: Vec<String> = (1..=total).map(|i| i.to_string()).collect();
        let backends = backends.join(",");
        let (ok, _, err) = v.ctl(&[
            "service",
            "apply",
            "web",
            "--check",
            o.check.as_deref().unwrap_or("exec:up"),
            "--backends",
            &backends,
            "--interval-ms",
            "100",
            "--timeout-ms",
            "100",
        ]);
        assert!(ok, "{err}");
        if let Some(f) = &o.before_vip {
            f(&v);
        }
        let (ok, _, err) = v.ctl(&[
            "vip",
            "apply",
            "web-vip",
            "--address",
            &v.vip_cidr(),
            "--interface",
            "eth0",
            "--service",
            "web",
        ]);
        assert!(ok, "{err}");
        let (owner, epoch) = v
            .lab
            .wait_for(Duration::from_secs(30), || {
                v.owner()
                    .filter(|_| v.lab.can_ping_addr(v.lab.client(), v.vip))
            })
            .unwrap_or_else(|| panic!("the VIP never answered; logs:\n{}", v.logs()));
        (v, owner, epoch)
    }

    /// The VIP's address with its prefix, as `vip apply` takes it (see [`ip_of`]).
    pub fn vip_cidr(&self) -> String {
        match self.vip {
            IpAddr::V4(a) => format!("{a}/24"),
            IpAddr::V6(a) => format!("{a}/64"),
        }
    }

    /// Node `id`'s fence journal (`--fence-journal`): every interval its fence allowed a VIP.
    pub fn journal(&self, id: u64) -> PathBuf {
        self.dir.join(format!("fence-n{id}.jsonl"))
    }

    /// Every interval during which a node's fence allowed the VIP, in ns of CLOCK_MONOTONIC
    /// less `base`.
    pub fn allowed(&self, base: u64) -> Result<Vec<crate::checker::vip::Allowed>, String> {
        self.allowed_for(&self.vip.to_string(), base)
    }

    /// Like [`VipLab::allowed`], for any address.
    pub fn allowed_for(
        &self,
        addr: &str,
        base: u64,
    ) -> Result<Vec<crate::checker::vip::Allowed>, String> {
        let mut out = Vec::new();
        for id in 1..=self.lab.nodes().len() as u64 {
            let text = self.journal_text(id)?;
            // Told apart by host (one journal each), not by the node id an agent claims: two
            // processes with one node id on two hosts must not be taken for one.
            out.extend(
                crate::checker::vip::journal_intervals(&text, addr, base)?
                    .into_iter()
                    .map(|a| crate::checker::vip::Allowed { node: id, ..a }),
            );
        }
        Ok(out)
    }

    /// Node `id`'s fence journal, empty if it was never created (a node that never ran). An
    /// unreadable journal is an error, not "no allowances": read as empty it would turn every
    /// frame of its node into a violation and hide the real cause.
    fn journal_text(&self, id: u64) -> Result<String, String> {
        let path = self.journal(id);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(format!("fence journal {}: {e}", path.display())),
        }
    }

    /// The exact check over the run so far: no two nodes' fences allowed the VIP at once, and
    /// every frame the observer saw speak for it came from a node inside its lease. `base`:
    /// CLOCK_MONOTONIC at `t0` (see `journal::mono_ns`).
    pub fn check_exact(
        &self,
        frames: &[crate::arp::Frame],
        t0: Instant,
        base: u64,
    ) -> Vec<crate::checker::vip::Violation> {
        self.check_exact_for(&self.vip.to_string(), frames, t0, base)
    }

    /// Like [`VipLab::check_exact`], for any address (`frames` from an observer of it).
    pub fn check_exact_for(
        &self,
        addr: &str,
        frames: &[crate::arp::Frame],
        t0: Instant,
        base: u64,
    ) -> Vec<crate::checker::vip::Violation> {
        let allowed = self
            .allowed_for(addr, base)
            .expect("fence journals read and parse");
        assert!(
            !allowed.is_empty(),
            "no fence journal recorded an allowance"
        );
        // A frame from any of a node's interfaces is that node's (a VIP may go on another
        // interface than eth0: `ballastd --segment-interface`).
        let macs: Vec<(u64, String)> = (1..=self.lab.nodes().len() as u64)
            .flat_map(|id| self.macs(id).into_iter().map(move |m| (id, m)))
            .collect();
        let frames: Vec<(u64, String, bool)> = frames
            .iter()
            .filter(|f| f.at >= t0)
            .map(|f| {
                (
                    (f.at - t0).as_nanos() as u64,
                    mac_string(&f.mac),
                    f.gratuitous,
                )
            })
            .collect();
        let node_of = |m: &str| macs.iter().find(|(_, x)| x == m).map(|(id, _)| *id);
        crate::checker::vip::check_exact(&allowed, &frames, &node_of)
    }

    /// When the lab started: an `Instant` and CLOCK_MONOTONIC ns (the journals' clock).
    pub fn started(&self) -> (Instant, u64) {
        self.started
    }

    /// Stops `obs` and checks the whole run: no probe after `from` answered by two hosts, and
    /// the exact check since the lab started (panics with the violations). Returns the
    /// client-visible outage after `from`.
    pub fn check_run(&self, obs: ArpObserver, from: Instant) -> Duration {
        self.check_run_for(&self.vip.to_string(), obs, from)
    }

    /// Like [`VipLab::check_run`], for an observer of `addr`.
    pub fn check_run_for(&self, addr: &str, obs: ArpObserver, from: Instant) -> Duration {
        let (probes, frames) = obs.stop_all().expect("the observer ran");
        let outage = check_history(&probes, from);
        let violations = self.check_exact_for(addr, &frames, self.started.0, self.started.1);
        assert!(
            violations.is_empty(),
            "the exact check failed: {violations:?}\n{}\nlogs:\n{}",
            self.explain(addr, &violations),
            self.logs()
        );
        outage
    }

    /// For a failed exact check: the offending node's intervals within a second of its first
    /// frame outside them, and the raw journal lines of that stretch, so that a failure in CI
    /// says whether the fence or the journal is at fault.
    fn explain(&self, addr: &str, violations: &[crate::checker::vip::Violation]) -> String {
        use crate::checker::vip::Violation;
        let Some((node, at)) = violations.iter().find_map(|v| match v {
            Violation::FrameOutsideLease { node, at_ns, .. } => Some((*node, *at_ns)),
            _ => None,
        }) else {
            return String::new();
        };
        let base = self.started.1;
        let near = |t: u64| t + 1_000_000_000 >= at && t <= at + 1_000_000_000;
        let all: Vec<_> = self
            .allowed_for(addr, base)
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.node == node)
            .collect();
        let intervals: Vec<_> = all
            .iter()
            .filter(|a| near(a.from) || near(a.until))
            .collect();
        let text = self.journal_text(node).unwrap_or_else(|e| e);
        // Where the journal's record of this node ends, against where its frames do: a journal
        // that stops early points at the record, one that goes on at the fence.
        let outside: Vec<u64> = violations
            .iter()
            .filter_map(|v| match v {
                Violation::FrameOutsideLease { node: n, at_ns, .. } if *n == node => Some(*at_ns),
                _ => None,
            })
            .collect();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                ["from_ns", "until_ns", "at_ns"]
                    .iter()
                    .find_map(|k| v[k].as_u64())
                    .is_some_and(|t| near(t.saturating_sub(base)))
            })
            .collect();
        format!(
            "node {node}'s first frame outside its intervals at {at} ns, last at {} ns ({} \
             frames); it has {} intervals, the first {:?}, the last {:?}; its intervals within \
             1 s: {intervals:?}\nits journal ({} lines, the last: {:?}) within 1 s:\n{}",
            outside.iter().max().unwrap_or(&at),
            outside.len(),
            all.len(),
            all.first(),
            all.last(),
            text.lines().count(),
            text.lines().last().unwrap_or_default(),
            lines.join("\n")
        )
    }

    pub fn up_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("up-n{id}"))
    }

    /// Starts node `id`: a member with its agent, or the agent alone beyond the members.
    pub fn spawn(&self, id: u64) -> LabProcess {
        let check = [
            "--exec-check".to_string(),
            format!("up=test -e {}", self.up_file(id).display()),
        ];
        let mut check = check.to_vec();
        check.extend([
            "--fence-journal".to_string(),
            self.journal(id).display().to_string(),
        ]);
        check.extend(self.extra[id as usize - 1].iter().cloned());
        if id as usize > self.members {
            return self
                .lab
                .spawn_standalone_agent(id as usize, self.members, &self.dir, &check)
                .unwrap();
        }
        let mut extra = vec!["--agent".to_string()];
        extra.extend(check);
        self.lab
            .spawn_member(id as usize, self.members, &self.dir, &extra)
            .unwrap()
    }

    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let ep = self.lab.member_endpoints(self.members).join(",");
        let mut a = vec!["--endpoints", ep.as_str(), "--timeout", "10"];
        if let Some(t) = &self.token {
            a.extend(["--token", t.as_str()]);
        }
        a.extend_from_slice(args);
        let out = self
            .lab
            .exec(
                self.lab.client(),
                ballast_bin("ballastctl").to_str().unwrap(),
                &a,
            )
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// (owner, epoch) as the cluster decided, if owned.
    pub fn owner(&self) -> Option<(u64, u64)> {
        let (ok, out, _) = self.ctl(&["vip", "ls", "-o", "json"]);
        if !ok {
            return None;
        }
        let v: Value = serde_json::from_str(&out).ok()?;
        let vip = v.as_array()?.first()?;
        let owner = vip["owner"].as_u64()?;
        (owner != 0 && vip["releasing"] == false)
            .then(|| (owner, vip["epoch"].as_u64().unwrap_or(0)))
    }

    /// The Raft leader, if there is one.
    pub fn leader(&self) -> Option<u64> {
        let (ok, out, _) = self.ctl(&["status", "-o", "json"]);
        let s: Value = serde_json::from_str(&out).ok()?;
        let id = s["leader_id"].as_u64()?;
        (ok && id != 0).then_some(id)
    }

    /// Whether the cluster counts node `id` as alive.
    pub fn node_alive(&self, id: u64) -> Option<bool> {
        let (ok, out, _) = self.ctl(&["node", "ls", "-o", "json"]);
        let nodes: Value = serde_json::from_str(&out).ok()?;
        let n = nodes.as_array()?.iter().find(|n| n["id"] == id)?;
        ok.then(|| n["alive"] == true)
    }

    pub fn mac(&self, id: u64) -> String {
        let out = self
            .lab
            .exec(
                self.lab.node(id as usize),
                "cat",
                &["/sys/class/net/eth0/address"],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_lowercase()
    }

    /// The MAC addresses of every interface of node `id`'s host but loopback.
    pub fn macs(&self, id: u64) -> Vec<String> {
        let out = self
            .lab
            .exec(
                self.lab.node(id as usize),
                "sh",
                &["-c", "cat /sys/class/net/*/address"],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_lowercase())
            .filter(|m| !m.is_empty() && m != "00:00:00:00:00:00")
            .collect()
    }

    pub fn host(&self, id: u64) -> &Host {
        self.lab.node(id as usize)
    }

    /// Waits until another node than `old` owns the VIP and answers ARP for it.
    pub fn wait_moved(&self, old: u64, obs: &ArpObserver) -> (u64, u64) {
        let old_mac = self.mac(old);
        self.lab
            .wait_for(Duration::from_secs(30), || {
                let (o, e) = self.owner().filter(|(o, _)| *o != old)?;
                let new_mac = self.mac(o);
                let last = obs.probes().last().cloned()?;
                let macs: Vec<String> = last.macs.iter().map(mac_string).collect();
                (macs == vec![new_mac] && !macs.contains(&old_mac)).then_some((o, e))
            })
            .unwrap_or_else(|| {
                panic!(
                    "the VIP did not move away from node {old}; logs:\n{}",
                    self.logs()
                )
            })
    }

    /// Waits until every node's agent is alive and healthy and the VIP is owned and answers.
    pub fn wait_settled(&self) -> (u64, u64) {
        self.lab
            .wait_for(Duration::from_secs(60), || {
                let (ok, out, _) = self.ctl(&["node", "ls", "-o", "json"]);
                let nodes: Value = serde_json::from_str(&out).ok()?;
                let all_alive = ok
                    && nodes
                        .as_array()?
                        .iter()
                        .all(|n| n["alive"] == true && n["admin"] == "active");
                let (ok, out, _) = self.ctl(&["service", "ls", "-o", "json"]);
                let svcs: Value = serde_json::from_str(&out).ok()?;
                let healthy = ok
                    && svcs.as_array()?.iter().all(|s| {
                        s["backends"]
                            .as_object()
                            .is_some_and(|b| b.values().all(|b| b["health"] == 1))
                    });
                (all_alive && healthy && self.lab.can_ping_addr(self.lab.client(), self.vip))
                    .then_some(())?;
                self.owner()
            })
            .unwrap_or_else(|| panic!("the lab did not settle; logs:\n{}", self.logs()))
    }

    /// The log of member `id` so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("n{id}.log"))).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        (1..=self.lab.nodes().len() as u64)
            .map(|i| self.log(i))
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for VipLab {
    fn drop(&mut self) {
        self.procs.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What an observer saw from `from` on.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Longest time without an answered probe from `from` on (the client-visible outage).
    pub outage: Duration,
    /// Probes answered by more than one host.
    pub split_brain_probes: usize,
    /// Time during which two hosts answered: each such probe counts until the next probe.
    pub split_brain: Duration,
    /// When each MAC first answered, relative to `from`.
    pub first_answer: Vec<(String, Duration)>,
}

pub fn analyze(probes: &[Probe], from: Instant) -> Analysis {
    let mut a = Analysis {
        outage: Duration::ZERO,
        split_brain_probes: 0,
        split_brain: Duration::ZERO,
        first_answer: Vec::new(),
    };
    // Counted from the last answer before `from` (or `from`): when nothing answers from the
    // fault on (a server gone), the outage runs until the first answer after it.
    let mut last_answer: Option<Instant> = Some(
        probes
            .iter()
            .filter(|p| p.at < from && !p.macs.is_empty())
            .map(|p| p.at)
            .next_back()
            .unwrap_or(from),
    );
    let seen: Vec<&Probe> = probes.iter().filter(|p| p.at >= from).collect();
    for (i, p) in seen.iter().enumerate() {
        if p.macs.len() > 1 {
            a.split_brain_probes += 1;
            a.split_brain += seen
                .get(i + 1)
                .map_or(Duration::from_millis(10), |n| n.at - p.at);
        }
        for m in &p.macs {
            let m = mac_string(m);
            if !a.first_answer.iter().any(|(x, _)| *x == m) {
                a.first_answer.push((m, p.at - from));
            }
        }
        if !p.macs.is_empty() {
            if let Some(l) = last_answer {
                a.outage = a.outage.max(p.at - l);
            }
            last_answer = Some(p.at);
        }
    }
    a
}

/// Fails on any probe answered by two hosts; returns the longest run without any answer
/// after `from` (the client-visible outage).
pub fn check_history(probes: &[Probe], from: Instant) -> Duration {
    for p in probes.iter().filter(|p| p.at >= from) {
        assert!(
            p.macs.len() <= 1,
            "split brain: {} hosts answered the probe at {:?}: {:?}",
            p.macs.len(),
            p.at - from,
            p.macs.iter().map(mac_string).collect::<Vec<_>>()
        );
    }
    analyze(probes, from).outage
}

/// The address of `cidr` ("10.213.0.100/24" -> 10.213.0.100).
pub fn ip_of(cidr: &str) -> IpAddr {
    cidr.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{cidr:?} is not an address with a prefix"))
}

/// Starts a 10 ms ARP (IPv6: neighbour solicitation) observer on the client host and waits
/// until it sees the VIP.
pub fn observer(v: &VipLab) -> ArpObserver {
    let o = ArpObserver::start(v.lab.client(), v.vip, Duration::from_millis(10));
    v.lab
        .wait_for(Duration::from_secs(5), || {
            o.probes().iter().any(|p| !p.macs.is_empty()).then_some(())
        })
        .expect("the observer sees the VIP");
    o
}
