//! The kernel-enforced VIP fence.
//!
//! The fence decides, in the kernel, whether this server may answer for a VIP: nftables drop
//! ARP and IP traffic to and from every *managed* VIP address that is not in the *allowed*
//! set, and (netdev egress hook, which also sees frames sent on packet sockets) every ARP
//! frame whose sender address is such a VIP: a gratuitous ARP cannot leave the host outside
//! the lease either. Allowed elements carry a millisecond timeout set to the agent's lease
//! deadline, so when the agent stops renewing — killed, paused, cut off — the kernel stops
//! answering on time without any help from the agent. Tables are replaced atomically; every
//! change is one nft transaction.
//!
//! The kernel counts an element's timeout from the moment it commits the transaction, not from
//! the moment the agent computed it. Anything between the two (a loaded machine, the agent
//! stopped by SIGSTOP right then, while nft waits for its script) would stretch the
//! allowance past the agent's deadline. So an allowance is given as a deadline: nft runs
//! under a watchdog (`timeout -s KILL`, a process of its own that pausing the agent does not
//! stop) that kills it [`COMMIT_BUDGET`] after it started, so whatever it commits it commits
//! by then; the timeout is computed only once nft is running, minus that budget and
//! [`KERNEL_TICK`] for the kernel's timer resolution. An allowance therefore ends by the
//! agent's deadline however long the agent is paused anywhere. If nft took longer than its
//! budget the allowance is given again, with a larger budget and a shorter timeout, and if
//! the deadline is near the address is revoked instead.
//!
//! Every call blocks on the nft process: callers on an async runtime run it with
//! `spawn_blocking`. With a [`Journal`], the fence records every interval during which it
//! allowed an address (see `journal.rs`), for the lab's exact overlap check.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::journal::{mono_ns, Journal};

/// Time allowed between writing a transaction to nft and the kernel committing it. The fence
/// closes this much before the agent's deadline; a transaction that took longer is redone.
pub const COMMIT_BUDGET: Duration = Duration::from_millis(30);
/// The largest budget a retry may take (see `allow_until`).
pub const MAX_COMMIT_BUDGET: Duration = Duration::from_millis(300);
/// How much later than its timeout the kernel may expire an element: set timeouts count in
/// jiffies, rounded up (4 ms at 250 Hz; 10 ms covers 100 Hz kernels).
pub const KERNEL_TICK: Duration = Duration::from_millis(10);

/// A fence operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("nft: {0}")]
pub struct FenceError(pub String);

/// What the agent needs from a fence; one conformance suite runs on every implementation.
pub trait VipFence: Send + Sync {
    /// Installs the fence (replacing any earlier one): every managed address is blocked until
    /// allowed.
    fn install(&self) -> Result<(), FenceError>;
    /// Sets the addresses the fence governs, and the interfaces on which it filters
    /// announcements (they must exist).
    fn manage(&self, addrs: &[Ipv4Addr], interfaces: &[String]) -> Result<(), FenceError>;
    /// Lets the server answer for `addr` until at most `deadline` (refreshing any earlier
    /// allowance). Returns false, with the address revoked, when the deadline is too near to
    /// allow it safely.
    fn allow_until(&self, addr: Ipv4Addr, deadline: Instant) -> Result<bool, FenceError>;
    /// Stops answering for `addr` now.
    fn revoke(&self, addr: Ipv4Addr) -> Result<(), FenceError>;
    /// Removes the fence entirely (clean stop; the addresses must be gone first).
    fn remove(&self) -> Result<(), FenceError>;
}

const TABLE: &str = "ballast_fence";
const FAMILIES: [&str; 3] = ["arp", "ip", "netdev"];

/// [`VipFence`] on nftables, driven through the `nft` command (`nft -f -`, one transaction per
/// call).
pub struct NftFence {
    /// The command that runs nft: `["nft"]`, or with a prefix such as `ip netns exec NS nft`
    /// (the last word is nft; a watchdog goes right before it).
    argv: Vec<String>,
    /// How many egress chains the netdev table has now (one per filtered interface).
    egress_chains: Mutex<usize>,
    journal: Option<Journal>,
    /// Tests only: a stop between computing an allowance and handing it to nft.
    stall: Duration,
}

fn ruleset() -> String {
    // A table per family: ARP requests and replies for a managed, not allowed address are
    // dropped both ways; so is IP traffic to or from it. The netdev table starts without
    // chains: `manage` adds one egress chain per interface.
    let mut s = String::new();
    for (family, input_match, output_match, prio) in [
        ("arp", "arp daddr ip", "arp saddr ip", "0"),
        ("ip", "ip daddr", "ip saddr", "-150"),
    ] {
        s.push_str(&format!(
            "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n\
             table {family} {TABLE} {{\n\
               set managed {{ type ipv4_addr; }}\n\
               set allowed {{ type ipv4_addr; flags timeout; }}\n\
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
         }}\n"
    ));
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
            egress_chains: Mutex::new(0),
            journal: None,
            stall: Duration::ZERO,
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
        self.spawn_with(&self.argv)
    }

    /// nft under a watchdog that kills it `budget` after it started: nothing it commits is
    /// committed later than that.
    fn spawn_bounded(&self, budget: Duration) -> Result<Child, FenceError> {
        let (nft, prefix) = self.argv.split_last().expect("an nft command");
        let mut argv = prefix.to_vec();
        argv.extend([
            "timeout".to_string(),
            "-s".into(),
            "KILL".into(),
            format!("{:.3}", budget.as_secs_f64()),
            nft.clone(),
        ]);
        self.spawn_with(&argv)
    }

    fn spawn_with(&self, argv: &[String]) -> Result<Child, FenceError> {
        Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| FenceError(format!("running {argv:?}: {e}")))
    }

    fn run(&self, script: &str) -> Result<(), FenceError> {
        let child = self.spawn()?;
        finish(child, script)
    }

    fn revoke_script(addr: Ipv4Addr) -> String {
        let mut s = String::new();
        for family in FAMILIES {
            s.push_str(&format!(
                "add element {family} {TABLE} allowed {{ {addr} }}\n\
                 delete element {family} {TABLE} allowed {{ {addr} }}\n"
            ));
        }
        s
    }
}

/// This machine's fence, recording its allowances in `journal` if given.
pub fn local(
    node: crate::types::NodeId,
    journal: Option<&std::path::Path>,
) -> std::io::Result<std::sync::Arc<dyn VipFence>> {
    let mut fence = NftFence::local();
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
        *self.egress_chains.lock().unwrap() = 0;
        if let Some(j) = &self.journal {
            // The old tables and every allowance in them are gone.
            j.cleared(mono_ns());
        }
        Ok(())
    }

    fn manage(&self, addrs: &[Ipv4Addr], interfaces: &[String]) -> Result<(), FenceError> {
        if let Some(bad) = interfaces.iter().find(|i| !valid_interface(i)) {
            return Err(FenceError(format!("bad interface name {bad:?}")));
        }
        let mut chains = self.egress_chains.lock().unwrap();
        let mut s = String::new();
        for family in FAMILIES {
            s.push_str(&format!("flush set {family} {TABLE} managed\n"));
            if !addrs.is_empty() {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                s.push_str(&format!(
                    "add element {family} {TABLE} managed {{ {} }}\n",
                    list.join(", ")
                ));
            }
        }
        for i in 0..*chains {
            s.push_str(&format!("delete chain netdev {TABLE} egress{i}\n"));
        }
        for (i, iface) in interfaces.iter().enumerate() {
            s.push_str(&format!(
                "add chain netdev {TABLE} egress{i} {{ type filter hook egress device \"{iface}\" priority 0; policy accept; }}\n\
                 add rule netdev {TABLE} egress{i} arp saddr ip @managed arp saddr ip != @allowed drop\n"
            ));
        }
        self.run(&s)?;
        *chains = interfaces.len();
        Ok(())
    }

    fn allow_until(&self, addr: Ipv4Addr, deadline: Instant) -> Result<bool, FenceError> {
        // At most three tries. One that overran its budget is redone with a budget twice what
        // it took (capped): a busy kernel (namespaces being torn down, say) can make every
        // commit slower than the default for a while, and the allowance then shrinks by that
        // much instead of failing. Success still requires the commit to fit its own budget.
        let mut budget = COMMIT_BUDGET;
        for _ in 0..3 {
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
                self.revoke(addr)?;
                return Ok(false);
            };
            let ms = timeout.as_millis() as u64;
            let mut s = String::new();
            for family in FAMILIES {
                // add (no-op if present), delete, add with the new timeout: one transaction,
                // so the address is never unprotected nor allowed past the new deadline.
                s.push_str(&format!(
                    "add element {family} {TABLE} allowed {{ {addr} }}\n\
                     delete element {family} {TABLE} allowed {{ {addr} }}\n\
                     add element {family} {TABLE} allowed {{ {addr} timeout {ms}ms }}\n"
                ));
            }
            if !self.stall.is_zero() {
                std::thread::sleep(self.stall);
            }
            // Recorded before the kernel can commit it, so a kill right after cannot hide it.
            let seq = self
                .journal
                .as_ref()
                .map(|j| j.allowing(addr, written_ns, ms, budget.as_millis() as u64));
            let done = finish(child, &s);
            let took = written.elapsed();
            match done {
                Ok(()) => {}
                // Killed by its watchdog (the machine is slow, or this process was stopped
                // meanwhile): whatever it committed ends by the deadline; try again below.
                Err(_) if took >= budget => {}
                Err(e) => return Err(e),
            }
            if let (Some(j), Some(seq), true) = (&self.journal, seq, done.is_ok()) {
                j.allowed(addr, seq, mono_ns(), ms);
            }
            if done.is_ok() && took <= budget {
                return Ok(true);
            }
            tracing::warn!(?took, ?budget, %addr, "nft overran its commit budget; allowing again");
            budget = (took * 2).min(MAX_COMMIT_BUDGET);
        }
        self.revoke(addr)?;
        Ok(false)
    }

    fn revoke(&self, addr: Ipv4Addr) -> Result<(), FenceError> {
        self.run(&Self::revoke_script(addr))?;
        if let Some(j) = &self.journal {
            j.revoked(addr, mono_ns());
        }
        Ok(())
    }

    fn remove(&self) -> Result<(), FenceError> {
        let mut s = String::new();
        for family in FAMILIES {
            s.push_str(&format!(
                "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"
            ));
        }
        self.run(&s)?;
        *self.egress_chains.lock().unwrap() = 0;
        if let Some(j) = &self.journal {
            j.cleared(mono_ns());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
