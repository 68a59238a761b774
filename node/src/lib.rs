//! `ballastd`: a Raft member holding Ballast's authoritative cluster state.
//!
//! See DESIGN.md in this crate for what each module does and does not do.

pub mod agent;
pub mod auth;
pub mod backup;
pub mod config;
pub mod controller;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod handover;
pub mod http;
pub mod identity;
pub mod leader;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod network;
pub mod node;
pub mod notify;
pub mod proposer;
pub mod releases;
pub mod replicate;
pub mod rollout;
pub mod server;
pub mod start;
pub mod state;
mod state_kv;
mod state_leases;
mod state_vips;
pub mod store;
pub mod tls;
pub mod types;
pub mod validate;

pub use config::{Config, ConfigError};
pub use node::Node;
pub use start::{start, NodeHandle};
