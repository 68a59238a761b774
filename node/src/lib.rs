//! `ballastd`: a Raft member holding Ballast's authoritative cluster state.
//!
//! See DESIGN.md in this crate for what each module does and does not do.

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
