//! The leader wing: what a member does only while it leads.
//!
//! - `book`: the lease book, the one owner of the leader's observations (grants, agent
//!   contacts, confirmed releases) and of the decisions that end leases; pure.
//! - `loops`: the controller loop (placement, releases, revocations, liveness, rollouts) and
//!   the leadership hand-over loop, which act on the book and propose through Raft.

mod book;
mod loops;

pub use book::{LeaseBook, LeaseTerms, World};
pub use loops::{controller_loop, handover_loop, propose_decided};
