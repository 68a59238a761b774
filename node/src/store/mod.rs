//! Durable storage behind Ballast's own trait.
//!
//! [`LogEngine`] is the only thing that touches the disk. [`LogStore`] and [`StateMachineStore`]
//! adapt it to openraft's `RaftLogStorage` and `RaftStateMachine`, so a different engine (or a
//! fault-injecting one in tests) can be swapped in without touching Raft code.

mod engine;
mod log_store;
mod mem;
mod sled_engine;
mod state_machine;

pub use engine::{EngineError, LogEngine};
pub use log_store::LogStore;
pub use mem::MemEngine;
pub use sled_engine::SledEngine;
pub use state_machine::{StateMachineStore, StoredSnapshot};
