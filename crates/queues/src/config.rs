//! Per-queue settings and the engine's limits.

/// Most deliveries one acquire hands out (larger `max_n` is clamped).
pub const MAX_ACQUIRE: u32 = 65_536;
/// Default candidates one acquire examines before giving up (a filter matching nothing).
pub const DEFAULT_MAX_SCAN: u32 = 16_384;
/// Default lease: RabbitMQ's `consumer_timeout` (30 minutes).
pub const DEFAULT_LEASE_MS: i64 = 30 * 60 * 1000;
/// Default: a snapshot is due after this many records since the last one…
pub const DEFAULT_SNAPSHOT_EVERY_RECORDS: u64 = 10_000;
/// …or this many record bytes (or the last snapshot's size, if larger).
pub const DEFAULT_SNAPSHOT_EVERY_BYTES: u64 = 4 << 20;

/// Settings of one queue. Everything is a value the door or the broker's config supplies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Lease length when an acquire names none (visibility timeout).
    pub lease_ms: i64,
    /// A message returned (nack with requeue, release, expiry) with a delivery count above
    /// this is settled dead instead (`x-delivery-limit`). `None`: redeliver forever.
    pub delivery_limit: Option<u32>,
    /// Candidates one acquire examines when it names no budget.
    pub max_scan: u32,
    pub snapshot_every_records: u64,
    pub snapshot_every_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease_ms: DEFAULT_LEASE_MS,
            delivery_limit: None,
            max_scan: DEFAULT_MAX_SCAN,
            snapshot_every_records: DEFAULT_SNAPSHOT_EVERY_RECORDS,
            snapshot_every_bytes: DEFAULT_SNAPSHOT_EVERY_BYTES,
        }
    }
}
