//! Durable storage behind Ballast's own trait.
//!
//! [`LogEngine`] is the only thing that touches the disk. [`LogStore`] and [`StateMachineStore`]
//! adapt it to openraft's `RaftLogStorage` and `RaftStateMachine`, so a different engine (or a
//! fault-injecting one in tests) can be swapped in without touching Raft code.

mod chunks;
mod engine;
mod file_engine;
mod file_records;
mod log_store;
mod mem;
mod member_dir;
mod sled_engine;
mod sled_files;
mod state_machine;

pub use engine::{EngineError, LogEngine};
pub use file_engine::FileEngine;
pub use log_store::LogStore;
pub use mem::MemEngine;
pub use member_dir::{open_member_engine, LOG_DIR, SLED_DIR};
pub use sled_engine::SledEngine;
pub use sled_files::create_durable_dir;
pub use state_machine::{StateMachineStore, StoredSnapshot};
