//! The leader wing: what a member does only while it leads.
//!
//! - `controller`: VIP placement, releases, revocations and liveness as a pure function of
//!   the state, the lease book's view and now;
//! - `rollout`: the rollout controller, pure (batches, canary, rollback);
//! - `handover`: keeps the Raft leadership off VIP owners, pure;
//! - `book`: the lease book, the one owner of the leader's observations (grants, agent
//!   contacts, confirmed releases) and of the decisions that end leases; pure;
//! - `loops`: the controller loop and the leadership hand-over loop, which act on the book
//!   and propose through Raft (the only part here that does IO).
//!
//! The deciders take what they need as arguments and return actions; `loops` is the one
//! place that reads the clock, holds the book and proposes. The shared handle (`node.rs`)
//! holds the book and the controller's settings, and the loops run on that handle, so
//! `node.rs` imports `book` and `controller` only, never `loops` (no file imports one that
//! imports it).

pub mod book;
pub mod controller;
pub(crate) mod handover;
pub(crate) mod loops;
pub(crate) mod rollout;
