//! Shared vocabulary of every Sluice crate: identifiers with units in their names, limits,
//! and the clock abstraction that keeps state machines testable.
//!
//! Nothing here does I/O or knows a wire protocol.

mod clock;
pub mod config;
mod ids;
pub mod limits;
mod log_limit;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{Offset, PartitionId, TimestampMs};
pub use log_limit::LogLimit;
