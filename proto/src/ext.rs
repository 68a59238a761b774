//! Helpers for generated types.

use crate::v1;

/// gRPC metadata key carrying the id of the leader a member knows of.
pub const LEADER_ID_HEADER: &str = "ballast-leader-id";
/// gRPC metadata key carrying the address of the leader a member knows of.
pub const LEADER_ADDR_HEADER: &str = "ballast-leader-addr";
/// gRPC metadata key carrying the cluster id on Raft traffic.
pub const CLUSTER_ID_HEADER: &str = "ballast-cluster-id";
/// gRPC metadata key set on requests a member forwards to the leader (they are not forwarded twice).
pub const FORWARDED_HEADER: &str = "ballast-forwarded";

/// Largest key the KV accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value the KV accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 256 * 1024;
/// Largest gRPC message a member or client accepts.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;

impl v1::Role {
    /// Short lowercase name for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            v1::Role::Unspecified => "unknown",
            v1::Role::Voter => "voter",
            v1::Role::Learner => "learner",
            v1::Role::Agent => "agent",
        }
    }
}

impl v1::AdminState {
    /// Short lowercase name for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            v1::AdminState::Unspecified => "unknown",
            v1::AdminState::Active => "active",
            v1::AdminState::Draining => "draining",
            v1::AdminState::Maintenance => "maintenance",
        }
    }
}

impl v1::Health {
    /// Short lowercase name for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            v1::Health::Unknown => "unknown",
            v1::Health::Healthy => "healthy",
            v1::Health::Unhealthy => "unhealthy",
        }
    }
}
