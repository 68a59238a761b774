//! `ballastd`: a Raft member holding Ballast's authoritative cluster state.
//!
//! Three roles, three wings: `member` (what every Raft member does: state machine, storage,
//! formats, Raft network, proposer), `leader` (what a member does only while it leads:
//! placement, rollouts, hand-over, the lease book and the loops that act on them), and
//! `agent` (what runs on each server: a pure plan and the shell that carries it out).
//! `server` holds the gRPC services, which translate and delegate; `start` wires a member in
//! order; the other modules are what the wings share. DESIGN.md in this crate tells what each
//! module does and does not do.

pub mod agent;
pub mod auth;
pub mod config;
mod error;
mod failpoint;
mod http;
pub mod leader;
pub mod lease;
pub mod member;
pub mod metrics;
pub mod model;
mod node;
pub mod notify;
mod server;
pub mod start;
pub mod tls;
pub mod types;
pub mod validate;

pub use config::{Config, ConfigError};
pub use node::Node;
pub use start::{start, NodeHandle};
