//! The agent: obeys the leader's VIP decisions on this server and reports backend health.
//!
//! - `plan`: the reconcile's decisions, pure (what to drop, confirm, claim, acquire, which
//!   addresses the fence governs, what happens to an address let go); unit-tested;
//! - `shell`: carries out the plan: fence, addresses, announcements, the Agent service's calls;
//! - `run`: start (stale addresses removed, fence installed, process registered), the
//!   reconcile loop, the clean stop;
//! - `loops`: the health, HAProxy and release loops beside it;
//! - `settings`: what the agent is told at start (`AgentConfig`);
//! - `interfaces`: the local interface of each VIP (`--vip-interface`,
//!   `--segment-interface`), applied to every state view, and the VIPs this server cannot
//!   place, reported with each renewal;
//! - `fence`: the kernel-enforced fence (nftables set elements that expire at the deadline,
//!   and an egress filter that keeps announcements inside the lease);
//! - `journal`: the fence's allowance intervals on the shared monotonic clock, for the lab;
//! - `addr`: VIP addresses through netlink, with a valid lifetime as a backstop;
//! - `garp`: gratuitous ARP bursts on acquire, each frame only while the lease is valid;
//! - `health`: probes and rise/fall;
//! - `caps`: checks and hooks start with no capabilities;
//! - `haproxy`: the local HAProxy's servers follow the cluster's health and admin states.

pub(crate) mod addr;
pub(crate) mod caps;
pub mod fence;
pub(crate) mod garp;
pub mod haproxy;
pub mod health;
pub mod hostlock;
pub mod interfaces;
pub(crate) mod journal;
mod loops;
pub mod nd;
pub mod plan;
pub mod release;
mod run;
mod settings;
mod shell;

pub use run::{cluster_client, new_instance, run, state_watch};
pub use settings::AgentConfig;
