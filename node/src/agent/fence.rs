//! The kernel-enforced VIP fence.
//!
//! The fence decides, in the kernel, whether this server may answer for a VIP: nftables drop
//! ARP and IP traffic to and from every *managed* VIP address that is not in the *allowed*
//! set. Allowed elements carry a millisecond timeout set to the agent's lease deadline, so when
//! the agent stops renewing — killed, paused, cut off — the kernel stops answering on time
//! without any help from the agent. Tables are replaced atomically; every change is one nft
//! transaction.
//!
//! The kernel counts an element's timeout from the moment it commits the transaction, not from
//! the moment the agent computed it. Anything between the two (spawning nft, a loaded machine,
//! the agent stopped by SIGSTOP right then) would stretch the allowance past the agent's
//! deadline. So an allowance is given as a deadline: the timeout is computed only once nft is
//! running and waiting for its script, minus [`COMMIT_BUDGET`] for nft's own work before the
//! commit; if nft took longer than that budget the allowance is given again, shorter, and if
//! the deadline is near the address is revoked instead.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Time allowed between writing a transaction to nft and the kernel committing it. The fence
/// closes this much before the agent's deadline; a transaction that took longer is redone.
pub const COMMIT_BUDGET: Duration = Duration::from_millis(30);
/// The largest budget a retry may take (see `allow_until`).
pub const MAX_COMMIT_BUDGET: Duration = Duration::from_millis(300);

/// A fence operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("nft: {0}")]
pub struct FenceError(pub String);

/// What the agent needs from a fence; one conformance suite runs on every implementation.
pub trait VipFence: Send + Sync {
    /// Installs the fence (replacing any earlier one): every managed address is blocked until
    /// allowed.
    fn install(&self) -> Result<(), FenceError>;
    /// Sets the addresses the fence governs.
    fn manage(&self, addrs: &[Ipv4Addr]) -> Result<(), FenceError>;
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

/// [`VipFence`] on nftables, driven through the `nft` command (`nft -f -`, one transaction per
/// call).
pub struct NftFence {
    /// The command that runs nft: `["nft"]`, or a prefix such as `ip netns exec NS nft`.
    argv: Vec<String>,
}

fn ruleset() -> String {
    // A table per family: ARP requests and replies for a managed, not allowed address are
    // dropped both ways; so is IP traffic to or from it.
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
    s
}

impl NftFence {
    pub fn new(argv: Vec<String>) -> Self {
        NftFence { argv }
    }

    /// The fence of this machine (`nft` on PATH).
    pub fn local() -> Self {
        Self::new(vec!["nft".into()])
    }

    fn spawn(&self) -> Result<Child, FenceError> {
        Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args(["-f", "-"])
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
        self.run(&ruleset())
    }

    fn manage(&self, addrs: &[Ipv4Addr]) -> Result<(), FenceError> {
        let mut s = String::new();
        for family in ["arp", "ip"] {
            s.push_str(&format!("flush set {family} {TABLE} managed\n"));
            if !addrs.is_empty() {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                s.push_str(&format!(
                    "add element {family} {TABLE} managed {{ {} }}\n",
                    list.join(", ")
                ));
            }
        }
        self.run(&s)
    }

    fn allow_until(&self, addr: Ipv4Addr, deadline: Instant) -> Result<bool, FenceError> {
        // At most three tries. One that overran its budget is redone with a budget twice what
        // it took (capped): a busy kernel (namespaces being torn down, say) can make every
        // commit slower than the default for a while, and the allowance then shrinks by that
        // much instead of failing. Success still requires the commit to fit its own budget.
        let mut budget = COMMIT_BUDGET;
        for _ in 0..3 {
            let child = self.spawn()?;
            // nft is running and waiting for its script: the timeout is computed now.
            let written = Instant::now();
            let Some(timeout) = deadline
                .checked_duration_since(written)
                .and_then(|d| d.checked_sub(budget))
                .filter(|d| *d >= Duration::from_millis(1))
            else {
                let _ = finish(child, ""); // an empty transaction
                self.revoke(addr)?;
                return Ok(false);
            };
            let ms = timeout.as_millis();
            let mut s = String::new();
            for family in ["arp", "ip"] {
                // add (no-op if present), delete, add with the new timeout: one transaction,
                // so the address is never unprotected nor allowed past the new deadline.
                s.push_str(&format!(
                    "add element {family} {TABLE} allowed {{ {addr} }}\n\
                     delete element {family} {TABLE} allowed {{ {addr} }}\n\
                     add element {family} {TABLE} allowed {{ {addr} timeout {ms}ms }}\n"
                ));
            }
            finish(child, &s)?;
            let took = written.elapsed();
            if took <= budget {
                return Ok(true);
            }
            tracing::warn!(?took, ?budget, %addr, "nft overran its commit budget; allowing again");
            budget = (took * 2).min(MAX_COMMIT_BUDGET);
        }
        self.revoke(addr)?;
        Ok(false)
    }

    fn revoke(&self, addr: Ipv4Addr) -> Result<(), FenceError> {
        let mut s = String::new();
        for family in ["arp", "ip"] {
            s.push_str(&format!(
                "add element {family} {TABLE} allowed {{ {addr} }}\n\
                 delete element {family} {TABLE} allowed {{ {addr} }}\n"
            ));
        }
        self.run(&s)
    }

    fn remove(&self) -> Result<(), FenceError> {
        let mut s = String::new();
        for family in ["arp", "ip"] {
            s.push_str(&format!(
                "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"
            ));
        }
        self.run(&s)
    }
}
