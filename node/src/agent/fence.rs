//! The kernel-enforced VIP fence.
//!
//! The fence decides, in the kernel, whether this server may answer for a VIP: nftables drop
//! ARP and IP traffic to and from every *managed* VIP address that is not in the *allowed*
//! set, and (netdev egress hook, which also sees frames sent on packet sockets) every ARP
//! frame whose sender address is such a VIP: a gratuitous ARP cannot leave the host outside
//! the lease either. IPv6 VIPs get the same in the `ip6` family: their traffic both ways, which
//! takes in neighbour discovery for them. Linux answers a solicitation for an address it has
//! (and announces one) with an advertisement whose source is that address, so a fenced VIP's
//! advertisements are dropped on the way out whoever solicits; a solicitation from the VIP
//! (this host resolving a neighbour for the VIP's traffic) is too, and unicast ones to it
//! (neighbour unreachability detection) on the way in. The egress filter drops
//! advertisements from a fenced VIP as it drops ARP. nftables 1.0.6 (Debian 12) cannot match
//! the ND target address against a set (`icmpv6 taddr` is newer), hence the source address.
//!
//! Allowed elements carry a millisecond timeout set to the agent's lease deadline, so when
//! the agent stops renewing — killed, paused, cut off — the kernel stops answering on time
//! without any help from the agent. Tables are replaced atomically; every change is one nft
//! transaction.
//!
//! The kernel counts an element's timeout from the moment it commits the transaction, not from
//! the moment the agent computed it. Anything between the two (a loaded machine, the agent
//! stopped by SIGSTOP right then, while nft waits for its script) would stretch the
//! allowance past the agent's deadline. So an allowance is given as a deadline: nft runs
//! under a watchdog (a real-time timer armed in nft's own process before it execs, which
//! stopping the agent does not stop) that ends it [`COMMIT_BUDGET`] after it was forked, so
//! whatever it commits it commits by then; the timeout is computed only once nft is running, minus that budget and
//! [`KERNEL_TICK`] for the kernel's timer resolution. An allowance therefore ends by the
//! agent's deadline however long the agent is paused anywhere, with one assumption: nft gets
//! the kernel's nftables commit lock within its budget. The kernel counts the timeout from
//! when it processes the batch, after taking that lock, and a task waiting for it cannot be
//! killed; another program holding it for long (a large ruleset reload by firewalld, docker
//! or kube-proxy) stretches the allowance by its wait beyond the budget. The agent gives such
//! an allowance again at once (below), so it matters only if the agent dies or is stopped
//! during that wait (README, "Assumptions"). If nft took longer than its
//! budget the allowance is given again, with a larger budget and a shorter timeout, and if
//! the deadline is near the address is revoked instead.
//!
//! Every call blocks on the nft process: callers on an async runtime run it with
//! `spawn_blocking`. With a [`Journal`], the fence records every interval during which it
//! allowed an address (see `journal.rs`), for the lab's exact overlap check.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::journal::{mono_ns, Journal};

/// Time allowed between writing a transaction to nft and the kernel committing it. The fence
/// closes this much before the agent's deadline; a transaction that took longer is redone.
pub const COMMIT_BUDGET: Duration = Duration::from_millis(30);
/// The largest budget a retry may take (see `allow_all_until`).
pub const MAX_COMMIT_BUDGET: Duration = Duration::from_millis(300);
/// How much later than its timeout the kernel may expire an element: set timeouts count in
/// jiffies, rounded up (4 ms at 250 Hz; 10 ms covers 100 Hz kernels).
pub const KERNEL_TICK: Duration = Duration::from_millis(10);

// The lease arithmetic counts on the fence closing this early (`lease::FENCE_CLOSES_EARLY`).
const _: () = assert!(
    COMMIT_BUDGET.as_millis() + KERNEL_TICK.as_millis()
        == crate::lease::FENCE_CLOSES_EARLY.as_millis()
);

/// A fence operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("nft: {0}")]
pub struct FenceError(pub String);

/// What the agent needs from a fence. nftables (`NftFence`) is the one implementation; the
/// lab's tests (`jepsen/tests/fence.rs`) check it against the kernel.
pub trait VipFence: Send + Sync {
    /// Installs the fence (replacing any earlier one): every managed address is blocked until
    /// allowed.
    fn install(&self) -> Result<(), FenceError>;
    /// Sets the addresses the fence governs, and the interfaces on which it filters
    /// announcements (they must exist).
    fn manage(&self, addrs: &[IpAddr], interfaces: &[String]) -> Result<(), FenceError>;
    /// Lets the server answer for every one of `addrs` until at most `deadline` (refreshing
    /// any earlier allowance), in one transaction: all of them or none. Returns false, with
    /// all of them revoked, when the deadline is too near to allow them safely. One renewal
    /// grants a node all its VIPs under one deadline, so this is one nft run per renewal,
    /// not one per VIP.
    fn allow_all_until(&self, addrs: &[IpAddr], deadline: Instant) -> Result<bool, FenceError>;
    /// [`VipFence::allow_all_until`] for one address.
    fn allow_until(&self, addr: IpAddr, deadline: Instant) -> Result<bool, FenceError> {
        self.allow_all_until(&[addr], deadline)
    }
    /// Stops answering for every one of `addrs` now, in one transaction: all of them or none.
    /// A reconcile that lets many VIPs go at once (a rebalance, a failing service) pays one
    /// nft run, not one per VIP, before the renewal that keeps the rest.
    fn revoke_all(&self, addrs: &[IpAddr]) -> Result<(), FenceError>;
    /// [`VipFence::revoke_all`] for one address.
    fn revoke(&self, addr: IpAddr) -> Result<(), FenceError> {
        self.revoke_all(&[addr])
    }
    /// Removes the fence entirely (clean stop; the addresses must be gone first).
    fn remove(&self) -> Result<(), FenceError>;
    /// The addresses an installed fence governs now (none if there is no fence): what an
    /// earlier agent process may have held, before `install` forgets them.
    fn governed(&self) -> Result<Vec<IpAddr>, FenceError>;
}

const TABLE: &str = "ballast_fence";
/// Every family that has a table.
const FAMILIES: [&str; 4] = ["arp", "ip", "ip6", "netdev"];
/// Where an address of each family is governed: (family, managed set, allowed set).
const SETS_V4: [(&str, &str, &str); 3] = [
    ("arp", "managed", "allowed"),
    ("ip", "managed", "allowed"),
    ("netdev", "managed", "allowed"),
];
const SETS_V6: [(&str, &str, &str); 2] = [
    ("ip6", "managed", "allowed"),
    ("netdev", "managed6", "allowed6"),
];

/// The sets that govern `addr`.
fn sets_of(addr: &IpAddr) -> &'static [(&'static str, &'static str, &'static str)] {
    match addr {
        IpAddr::V4(_) => &SETS_V4,
        IpAddr::V6(_) => &SETS_V6,
    }
}

/// [`VipFence`] on nftables, driven through the `nft` command (`nft -f -`, one transaction per
/// call).
pub struct NftFence {
    /// The command that runs nft: `["nft"]`, or a prefix such as `ip netns exec NS nft`.
    argv: Vec<String>,
    /// What `manage` last set: the governed addresses, and the netdev table's egress chains
    /// by interface (with the number the next new chain is named after).
    governs: Mutex<Governs>,
    journal: Option<Journal>,
    /// Tests only: a stop between computing an allowance and handing it to nft.
    stall: Duration,
    /// This namespace's fence lock, for the fence of the machine (`local`).
    lock: Option<super::hostlock::FenceLock>,
}

/// What an [`NftFence`] governs now.
#[derive(Debug, Default)]
struct Governs {
    addrs: Vec<IpAddr>,
    chains: std::collections::BTreeMap<String, usize>,
    next_chain: usize,
}

fn ruleset() -> String {
    // A table per family: ARP requests and replies for a managed, not allowed address are
    // dropped both ways; so is IP and IPv6 traffic to or from it (neighbour discovery
    // included, see the module's doc). The netdev table starts without
    // chains: `manage` adds one egress chain per interface.
    let mut s = String::new();
    for (family, kind, input_match, output_match, prio) in [
        ("arp", "ipv4_addr", "arp daddr ip", "arp saddr ip", "0"),
        ("ip", "ipv4_addr", "ip daddr", "ip saddr", "-150"),
        ("ip6", "ipv6_addr", "ip6 daddr", "ip6 saddr", "-150"),
    ] {
        s.push_str(&format!(
            "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n\
             table {family} {TABLE} {{\n\
               set managed {{ type {kind}; }}\n\
               set allowed {{ type {kind}; flags timeout; }}\n\
               chain input {{ type filter hook input priority {prio}; policy accept; {input_match} @managed {input_match} != @allowed drop; }}\n\
               chain output {{ type filter hook output priority {prio}; policy accept; {output_match} @managed {output_match} != @allowed drop; }}\n\
             }}\n"
        ));
    }
    s.push_str(&format!(
        "table netdev {TABLE} {{}}\ndelete table netdev {TABLE}\n\
         table netdev {TABLE} {{\n\
           set managed {{ type ipv4_addr; }}\n\
           set allowed {{ type ipv4_addr; flags timeout; }}\n\
           set managed6 {{ type ipv6_addr; }}\n\
           set allowed6 {{ type ipv6_addr; flags timeout; }}\n\
         }}\n"
    ));
    s
}

/// One nft statement per set that governs any of `addrs`: `{verb} element FAMILY TABLE SET
/// { a, b, ... }`, with `set` choosing the managed or the allowed set.
fn elements(verb: &str, addrs: &[IpAddr], managed: bool) -> String {
    let mut s = String::new();
    for (v4, sets) in [(true, &SETS_V4[..]), (false, &SETS_V6[..])] {
        let of_family: Vec<String> = addrs
            .iter()
            .filter(|a| a.is_ipv4() == v4)
            .map(|a| a.to_string())
            .collect();
        if of_family.is_empty() {
            continue;
        }
        for (family, m, a) in sets {
            let set = if managed { m } else { a };
            s.push_str(&format!(
                "{verb} element {family} {TABLE} {set} {{ {} }}\n",
                of_family.join(", ")
            ));
        }
    }
    s
}

/// An interface name nft takes in quotes (what the kernel allows in a name, less quotes).
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'/')
}

impl NftFence {
    pub fn new(argv: Vec<String>) -> Self {
        NftFence {
            argv,
            governs: Mutex::new(Governs::default()),
            journal: None,
            stall: Duration::ZERO,
            lock: None,
        }
    }

    /// The fence of this machine (`nft` on PATH).
    pub fn local() -> Self {
        Self::new(vec!["nft".into()])
    }

    /// For tests: stops for `stall` between computing each allowance and handing it to nft,
    /// as an agent stopped right there (SIGSTOP, a long scheduling delay) would.
    pub fn stalled(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// Records every allowance interval in `journal`.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    fn spawn(&self) -> Result<Child, FenceError> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        self.start(cmd)
    }

    /// nft under a watchdog that kills it `budget` after it was forked: nothing it commits is
    /// committed later than that. The watchdog is a real-time interval timer armed in the
    /// child before exec (timers survive exec; SIGALRM's default action ends the process),
    /// so it runs whatever happens to this process.
    fn spawn_bounded(&self, budget: Duration) -> Result<Child, FenceError> {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        let micros = budget.as_micros().max(1) as i64;
        // SAFETY: between fork and exec only async-signal-safe calls (sigaction, sigprocmask,
        // setitimer) on values owned by this closure.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                // The default action (terminate), unblocked, whatever the parent had.
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGALRM);
                if libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let t = libc::itimerval {
                    it_interval: libc::timeval {
                        tv_sec: 0,
                        tv_usec: 0,
                    },
                    it_value: libc::timeval {
                        tv_sec: micros / 1_000_000,
                        tv_usec: micros % 1_000_000,
                    },
                };
                if libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.start(cmd)
    }

    fn start(&self, mut cmd: Command) -> Result<Child, FenceError> {
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| FenceError(format!("running {:?}: {e}", self.argv)))
    }

    fn run(&self, script: &str) -> Result<(), FenceError> {
        let child = self.spawn()?;
        finish(child, script)
    }

    fn revoke_script(addrs: &[IpAddr]) -> String {
        let mut s = String::new();
        for addr in addrs {
            for (family, _, allowed) in sets_of(addr) {
                s.push_str(&format!(
                    "add element {family} {TABLE} {allowed} {{ {addr} }}\n\
                     delete element {family} {TABLE} {allowed} {{ {addr} }}\n"
                ));
            }
        }
        s
    }
}

/// This machine's fence, recording its allowances in `journal` if given. Refused while
/// another agent holds this network namespace's fence (see `hostlock.rs`).
pub fn local(
    node: crate::types::NodeId,
    journal: Option<&std::path::Path>,
) -> std::io::Result<std::sync::Arc<dyn VipFence>> {
    let mut fence = NftFence::local();
    fence.lock = Some(super::hostlock::FenceLock::acquire()?);
    if let Some(path) = journal {
        fence = fence.with_journal(Journal::open(path, node).map_err(|e| {
            std::io::Error::new(e.kind(), format!("fence journal {}: {e}", path.display()))
        })?);
    }
    Ok(std::sync::Arc::new(fence))
}

/// Feeds `script` to a running nft and waits for the transaction.
fn finish(mut child: Child, script: &str) -> Result<(), FenceError> {
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .map_err(|e| FenceError(e.to_string()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| FenceError(e.to_string()))?;
    if !out.status.success() {
        return Err(FenceError(format!(
            "{}\n(script was:\n{script})",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl VipFence for NftFence {
    fn install(&self) -> Result<(), FenceError> {
        self.run(&ruleset())?;
        *self.governs.lock().unwrap() = Governs::default();
        if let Some(j) = &self.journal {
            // The old tables and every allowance in them are gone.
            j.cleared(mono_ns());
        }
        Ok(())
    }

    fn manage(&self, addrs: &[IpAddr], interfaces: &[String]) -> Result<(), FenceError> {
        if let Some(bad) = interfaces.iter().find(|i| !valid_interface(i)) {
            return Err(FenceError(format!("bad interface name {bad:?}")));
        }
        // Every addition comes before any removal, so that even a prefix of the script (the
        // agent killed while writing it) never governs less than before.
        let mut g = self.governs.lock().unwrap();
        let mut s = elements("add", addrs, true);
        let mut chains = g.chains.clone();
        let mut next = g.next_chain;
        let new: Vec<&String> = interfaces
            .iter()
            .filter(|i| !chains.contains_key(*i))
            .collect();
        for iface in new {
            s.push_str(&format!(
                "add chain netdev {TABLE} egress{next} {{ type filter hook egress device \"{iface}\" priority 0; policy accept; }}\n\
                 add rule netdev {TABLE} egress{next} arp saddr ip @managed arp saddr ip != @allowed drop\n\
                 add rule netdev {TABLE} egress{next} icmpv6 type nd-neighbor-advert ip6 saddr @managed6 ip6 saddr != @allowed6 drop\n"
            ));
            chains.insert(iface.clone(), next);
            next += 1;
        }
        let gone: Vec<IpAddr> = g
            .addrs
            .iter()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        s.push_str(&elements("delete", &gone, true));
        chains.retain(|iface, n| {
            let keep = interfaces.contains(iface);
            if !keep {
                s.push_str(&format!("delete chain netdev {TABLE} egress{n}\n"));
            }
            keep
        });
        if !s.is_empty() {
            self.run(&s)?;
        }
        *g = Governs {
            addrs: addrs.to_vec(),
            chains,
            next_chain: next,
        };
        Ok(())
    }

    fn allow_all_until(&self, addrs: &[IpAddr], deadline: Instant) -> Result<bool, FenceError> {
        if addrs.is_empty() {
            return Ok(true);
        }
        // At most three tries. One that overran its budget is redone with a budget twice what
        // it took (capped): a busy kernel (namespaces being torn down, say) can make every
        // commit slower than the default for a while, and the allowance then shrinks by that
        // much instead of failing. Success still requires the commit to fit its own budget.
        let mut budget = COMMIT_BUDGET;
        for _ in 0..3 {
            // Before the fork: the watchdog's clock starts later, so a kill by it always comes
            // at least `budget` after this (a slow fork can make it come sooner than `budget`
            // after `written`).
            let forking = Instant::now();
            let child = self.spawn_bounded(budget)?;
            // nft is running (its watchdog's clock too) and waiting for its script: the
            // timeout is computed now.
            let written = Instant::now();
            let written_ns = mono_ns();
            let Some(timeout) = deadline
                .checked_duration_since(written)
                .and_then(|d| d.checked_sub(budget + KERNEL_TICK))
                .filter(|d| *d >= Duration::from_millis(1))
            else {
                let _ = finish(child, ""); // an empty transaction
                self.revoke_all(addrs)?;
                return Ok(false);
            };
            let ms = timeout.as_millis() as u64;
            let mut s = String::new();
            for addr in addrs {
                for (family, _, allowed) in sets_of(addr) {
                    // add (no-op if present), delete, add with the new timeout: one
                    // transaction, so no address is ever unprotected nor allowed past the new
                    // deadline.
                    s.push_str(&format!(
                        "add element {family} {TABLE} {allowed} {{ {addr} }}\n\
                         delete element {family} {TABLE} {allowed} {{ {addr} }}\n\
                         add element {family} {TABLE} {allowed} {{ {addr} timeout {ms}ms }}\n"
                    ));
                }
            }
            if !self.stall.is_zero() {
                std::thread::sleep(self.stall);
            }
            // Recorded before the kernel can commit it, so a kill right after cannot hide it.
            let seqs: Option<Vec<u64>> = self.journal.as_ref().map(|j| {
                addrs
                    .iter()
                    .map(|a| j.allowing(*a, written_ns, ms, budget.as_millis() as u64))
                    .collect()
            });
            let done = finish(child, &s);
            let took = written.elapsed();
            match done {
                Ok(()) => {}
                // Killed by its watchdog (the machine is slow, or this process was stopped
                // meanwhile): whatever it committed ends by the deadline; try again below.
                Err(_) if forking.elapsed() >= budget => {}
                Err(e) => return Err(e),
            }
            if let (Some(j), Some(seqs), true) = (&self.journal, &seqs, done.is_ok()) {
                let done_ns = mono_ns();
                for (addr, seq) in addrs.iter().zip(seqs) {
                    j.allowed(*addr, *seq, done_ns, ms);
                }
            }
            if done.is_ok() && took <= budget {
                return Ok(true);
            }
            tracing::warn!(?took, ?budget, addrs = addrs.len(), first = %addrs[0], "nft overran its commit budget; allowing again");
            budget = (forking.elapsed() * 2).min(MAX_COMMIT_BUDGET);
        }
        self.revoke_all(addrs)?;
        Ok(false)
    }

    fn revoke_all(&self, addrs: &[IpAddr]) -> Result<(), FenceError> {
        if addrs.is_empty() {
            return Ok(());
        }
        self.run(&Self::revoke_script(addrs))?;
        if let Some(j) = &self.journal {
            let at = mono_ns();
            for addr in addrs {
                j.revoked(*addr, at);
            }
        }
        Ok(())
    }

    fn governed(&self) -> Result<Vec<IpAddr>, FenceError> {
        // IPv4 from the arp table, IPv6 from the ip6 table (absent in a fence installed by an
        // agent from before IPv6 VIPs: it governed none).
        let mut out = Vec::new();
        for family in ["arp", "ip6"] {
            let listing = Command::new(&self.argv[0])
                .args(&self.argv[1..])
                .args(["list", "set", family, TABLE, "managed"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| FenceError(format!("running {:?}: {e}", self.argv)))?;
            if listing.status.success() {
                out.extend(parse_elements(&String::from_utf8_lossy(&listing.stdout)));
            }
        }
        Ok(out)
    }

    fn remove(&self) -> Result<(), FenceError> {
        let mut s = String::new();
        for family in FAMILIES {
            s.push_str(&format!(
                "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"
            ));
        }
        self.run(&s)?;
        *self.governs.lock().unwrap() = Governs::default();
        if let Some(j) = &self.journal {
            j.cleared(mono_ns());
        }
        Ok(())
    }
}

/// The addresses in `nft list set` output (`elements = { a, b, ... }`).
fn parse_elements(listing: &str) -> Vec<IpAddr> {
    let Some(start) = listing.find("elements = {") else {
        return Vec::new();
    };
    let rest = &listing[start + "elements = {".len()..];
    let body = &rest[..rest.find('}').unwrap_or(rest.len())];
    body.split([',', '\n', ' ', '\t'])
        .filter_map(|w| w.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_listing_gives_its_addresses() {
        let listing = "table arp ballast_fence {\n\tset managed {\n\t\ttype ipv4_addr\n\t\telements = { 10.213.0.100, 10.213.0.101,\n\t\t\t     10.213.0.102 }\n\t}\n}\n";
        assert_eq!(
            parse_elements(listing),
            ["10.213.0.100", "10.213.0.101", "10.213.0.102"]
                .map(|a| a.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        assert!(parse_elements("set managed { type ipv4_addr }").is_empty());
    }

    #[test]
    fn interface_names_are_checked_before_they_reach_nft() {
        for ok in ["eth0", "bond0.100", "veth-a_1", "br@x"] {
            assert!(valid_interface(ok), "{ok}");
        }
        for bad in ["", "eth\"0", "a b", "x/y", "averylongname1234", "eth\n0"] {
            assert!(!valid_interface(bad), "{bad:?}");
        }
    }
}
