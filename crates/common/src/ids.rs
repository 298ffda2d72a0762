use serde::{Deserialize, Serialize};
use std::fmt;

/// Store-wide identifier of one partition (a RocketMQ "queue"). The broker maps
/// `(topic, partition index)` to one of these; storage never sees topic names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Dense, per-partition record offset (Kafka's `int64` offset).
pub type Offset = i64;

/// Milliseconds since the Unix epoch, as Kafka record timestamps are.
pub type TimestampMs = i64;
