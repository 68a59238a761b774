//! What an agent is told at start (from ballastd's configuration): its node, the lease
//! settings to use until the leader sends the cluster's, announcements, health checks,
//! release sites, the local HAProxy and the local names of the VIPs' interfaces. Read by the
//! loop, the shell and the side loops; it decides nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::lease::LeaseConfig;
use crate::types::NodeId;

/// Settings of the agent (from ballastd's configuration).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_id: NodeId,
    /// Used only until the leader sends the cluster's settings with a grant.
    pub lease: LeaseConfig,
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// Where health checks connect (the backend runs on this server).
    pub check_host: IpAddr,
    /// Commands exec checks may run, by name. Only from local configuration.
    pub exec_checks: BTreeMap<String, Vec<String>>,
    /// Per service: where its releases live and how they are activated.
    pub release_sites: BTreeMap<String, super::release::ReleaseSite>,
    /// The local HAProxy to drive, if any.
    pub haproxy: Option<super::haproxy::HaproxyConfig>,
    /// Where VIPs go on this server when its interfaces are named otherwise than the
    /// cluster's segments (`--vip-interface`, `--segment-interface`). Fixed for the
    /// process's life: what the agent holds and fences was placed by it.
    pub interfaces: super::interfaces::InterfaceMap,
    /// This agent process (random, not 0); the cluster binds the node's leases to it.
    pub instance: u64,
    /// A standalone agent's address for operators (`ballastd agent --advertise`, may be
    /// empty); None for the agent inside a member.
    pub advertise: Option<String>,
}
