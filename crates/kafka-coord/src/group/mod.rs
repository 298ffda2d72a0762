//! Classic (Kafka "consumer" protocol) group coordination: a clock-free state machine.
//!
//! - `coordinator` — `GroupCoordinator`: join/sync/heartbeat/leave/tick, offsets.
//! - `join` — what a JoinGroup does to a group (new, known and static members).
//! - `offsets` — committed offsets: commit rules, fetch, delete, retention.
//! - `group` — one group's members, generation and committed offsets.
//! - `member` — one member.
//! - `types` — domain requests, replies, errors.

mod coordinator;
#[allow(clippy::module_inception)]
mod group;
mod join;
mod member;
mod offsets;
mod types;

#[cfg(test)]
mod tests;

pub use coordinator::{CoordinatorConfig, GroupCoordinator};
pub use member::ProtocolOffer;
pub use types::*;
