//! The vocabulary of one delivery decision: who asks, what they get, what comes back.

use std::fmt;

use common::{Offset, TimestampMs};

/// One consumer of a queue as the engine knows it. The door maps its own notion (an AMQP
/// channel + consumer tag, a RocketMQ client id, a share-group member) to one of these and
/// must not reuse an id while leases of the old holder may still be outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerId(pub u64);

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consumer {}", self.0)
    }
}

/// A filter's answer for one available offset (tag filtering, selectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Lease it to the asking consumer.
    Deliver,
    /// Leave it available, in place, for other consumers.
    Skip,
}

/// One acquire call. Build with [`Acquire::new`] and the optional setters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquire {
    pub consumer: ConsumerId,
    /// At most this many deliveries (clamped to [`crate::MAX_ACQUIRE`]); the door derives it
    /// from prefetch minus [`crate::QueueState::acquired_by`].
    pub max_n: u32,
    /// The partition's log end: offsets `>= log_end` do not exist yet.
    pub log_end: Offset,
    pub now_ms: TimestampMs,
    /// Lease length for this call; `None` takes [`crate::QueueConfig::lease_ms`].
    pub lease_ms: Option<i64>,
    /// Candidates to examine at most; `None` takes [`crate::QueueConfig::max_scan`].
    pub max_scan: Option<u32>,
    /// Examine only offsets `>= from` (continue a filtered scan at [`Acquired::resume_from`]).
    pub from: Offset,
}

impl Acquire {
    pub fn new(consumer: ConsumerId, max_n: u32, log_end: Offset, now_ms: TimestampMs) -> Self {
        Self {
            consumer,
            max_n,
            log_end,
            now_ms,
            lease_ms: None,
            max_scan: None,
            from: Offset::MIN,
        }
    }

    pub fn lease_ms(mut self, lease_ms: i64) -> Self {
        self.lease_ms = Some(lease_ms);
        self
    }

    pub fn max_scan(mut self, max_scan: u32) -> Self {
        self.max_scan = Some(max_scan);
        self
    }

    pub fn from(mut self, from: Offset) -> Self {
        self.from = from;
        self
    }
}

/// One leased message handed to a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub offset: Offset,
    /// Deliveries of this message so far, this one included (1 on the first delivery).
    pub delivery_count: u32,
    /// Delivered before (RabbitMQ's `redelivered`): `delivery_count > 1`.
    pub redelivered: bool,
}

/// What an acquire handed out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acquired {
    /// Ascending offsets.
    pub deliveries: Vec<Delivery>,
    /// Set when the scan budget ran out before `max_n` deliveries: the next candidate not
    /// examined. A filtered consumer may call again with `from` set to it; the engine never
    /// spins on a filter that matches nothing.
    pub resume_from: Option<Offset>,
}

/// Why a message was settled dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadReason {
    /// Nack/reject without requeue.
    Rejected,
    /// Returned more often than [`crate::QueueConfig::delivery_limit`] allows.
    DeliveryLimit,
    /// Its TTL ran out (`x-message-ttl`, `expiration`).
    Expired,
    /// Dropped from the head of a full queue, or refused by one (`x-max-length`,
    /// `x-max-length-bytes`).
    MaxLen,
}

impl DeadReason {
    /// RabbitMQ's name, as `x-death` carries it.
    pub fn name(self) -> &'static str {
        match self {
            DeadReason::Rejected => "rejected",
            DeadReason::DeliveryLimit => "delivery_limit",
            DeadReason::Expired => "expired",
            DeadReason::MaxLen => "maxlen",
        }
    }
}

/// A message settled dead: the caller dead-letters it or drops it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub offset: Offset,
    pub delivery_count: u32,
    pub reason: DeadReason,
}

/// What a nack, a release or an expiry returned to the queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Back to available at their original positions (ascending).
    pub requeued: Vec<Offset>,
    /// Settled dead instead (ascending).
    pub dead: Vec<DeadLetter>,
}

/// In-flight leases lost because the log start moved past them (retention, delete-records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostLease {
    pub consumer: ConsumerId,
    pub offset: Offset,
}
