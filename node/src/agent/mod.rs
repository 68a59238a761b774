//! The agent's building blocks. The agent loop itself (watch, reconcile, renew, probe) comes
//! next; what is here is tested on its own.

pub mod fence;
