//! Checkers: judge histories. Each is a pure function of recorded data, tested on hand-made
//! histories it must reject (a stale read, a lost write, two VIP holders at once, an epoch
//! going backwards) and valid ones it must accept.

pub(crate) mod linear;
pub(crate) mod release;
pub(crate) mod set;
pub mod vip;
