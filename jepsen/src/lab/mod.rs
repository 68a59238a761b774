//! The lab: network namespaces joined by a bridge (10.213.0.0/16, no default route), one per
//! node and one client host, with `ballastd` processes started inside and faults applied from
//! outside (iptables cuts, SIGSTOP and SIGKILL). Everything it makes is named and
//! deleted when the `Lab` is dropped. Needs root; it says so and stops without it.
//!
//! One [`Lab`], in four files, none of which imports this one:
//! - `network.rs`: the namespaces, bridge, veths and addresses, teardown, commands and
//!   threads inside a host;
//! - `process.rs`: programs on the hosts ([`LabProcess`], `ballastd` members and agents);
//! - `cuts.rs`: cuts, partitions, loss and healing;
//! - `serve.rs`: small servers on the node hosts for tests.

mod cuts;
mod network;
mod process;
mod serve;

pub(crate) use network::in_netns;
pub use network::{Host, Lab, LabError};
pub(crate) use process::mono_ns;
pub use process::{ballast_bin, LabProcess};
