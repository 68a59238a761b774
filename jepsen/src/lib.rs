//! Ballast's lab: real multi-host networks in Linux network namespaces.
//!
//! [`Lab`] builds an isolated layer-2 network — a bridge in a switch namespace, one namespace
//! per node host and one client host, addresses in 10.213.0.0/24, no default route — runs real
//! processes on the hosts, cuts links with iptables (one way or both; links stay up, as in a
//! real partition), kills and pauses processes, and deletes everything it created when dropped,
//! also when a test panics. Needs root.

pub mod apibench;
mod arp;
pub mod checker;
pub mod failover;
mod history;
pub mod http;
mod lab;
mod nemesis;
pub mod powerfs;
pub mod releaselab;
mod report;
pub mod runner;
pub mod viplab;

pub use arp::{mac_string, ArpObserver, Probe};
pub use lab::{ballast_bin, Host, Lab, LabError, LabProcess};
