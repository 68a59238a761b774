//! The agent: obeys the leader's VIP decisions on this server and reports backend health.
//!
//! - `fence`: the kernel-enforced fence (nftables set elements that expire at the deadline);
//! - `addr`: VIP addresses through netlink, with a valid lifetime as a backstop;
//! - `garp`: gratuitous ARP bursts on acquire;
//! - `health`: probes and rise/fall;
//! - `caps`: checks and hooks start with no capabilities;
//! - `haproxy`: the local HAProxy's servers follow the cluster's health and admin states;
//! - `run`: the reconcile loop.

pub mod addr;
pub mod caps;
pub mod fence;
pub mod garp;
pub mod haproxy;
pub mod health;
pub mod release;
mod run;

pub use run::{cluster_client, run, AgentConfig};
