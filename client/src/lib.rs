//! Rust client for Ballast.
//!
//! - takes several endpoints, finds the leader and prefers it;
//! - fails over on unreachable members and NOT_LEADER answers (following the leader hint);
//! - retries with exponential backoff and jitter until a deadline;
//! - gives every write a (client id, seq) so a retry after an ambiguous failure is applied
//!   at most once;
//! - resumes watches from the last revision seen, with no gap and no duplicate, and for as
//!   long as they live: after compaction with a [`WatchItem::Resync`], after failures with
//!   backoff.
//! - speaks mutual TLS when given a CA, a certificate and a key ([`tls`]).
//!
//! It never depends on the server crate: only on the `ballast.v1` contract.

mod auth_channel;
pub mod backup;
pub mod certs;
pub mod cli;
mod client;
pub mod digest;
mod error;
pub mod files;
pub mod identity;
pub mod report;
pub mod tls;
mod watch;

pub use ballast_proto::v1;
pub use client::{Client, ClientConfig};
pub use error::Error;
pub use watch::{WatchItem, WatchStream};
