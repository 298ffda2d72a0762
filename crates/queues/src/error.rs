//! Typed errors: an operation refused (state unchanged) and bytes that are not a record.

use common::Offset;

use crate::ConsumerId;

/// A refused operation. The state is unchanged: every offset of the call is checked before
/// any is applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The offset is not in flight: never delivered, available again, settled, below the
    /// log start, or not in the log (AMQP: unknown delivery tag).
    #[error("offset {offset} is not held by {consumer}: it is not in flight")]
    NotInFlight {
        offset: Offset,
        consumer: ConsumerId,
    },
    /// Another consumer holds the lease.
    #[error("offset {offset} is held by {holder}, not {consumer}")]
    HeldByOther {
        offset: Offset,
        consumer: ConsumerId,
        holder: ConsumerId,
    },
    /// The offset cannot be scheduled: it is not available (in flight, settled, already
    /// scheduled, or below the log start).
    #[error("offset {offset} cannot be scheduled: it is not available")]
    NotAvailable { offset: Offset },
    /// The offset is not scheduled (never was, already released, or settled).
    #[error("offset {offset} is not scheduled")]
    NotScheduled { offset: Offset },
    /// A range whose end is before its start.
    #[error("invalid offset range {start}..{end}")]
    InvalidRange { start: Offset, end: Offset },
}

/// Bytes that do not decode as a queue state record. Never a panic; allocation is bounded by
/// the input length.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A record of a kind written at a lower version (each record has exactly one encoding).
    #[error("record kind {kind} is not written as version {version}")]
    WrongVersion { version: u8, kind: u8 },
    #[error("unknown settle outcome {0}")]
    UnknownOutcome(u8),
    #[error("record claims {claimed} entries; at most {max} allowed")]
    TooManyEntries { claimed: u64, max: u64 },
    #[error("invalid range {start}..{end} (empty, negative, or out of order)")]
    InvalidRange { start: Offset, end: Offset },
    #[error("invalid delivered run at {start}: length {len}, count {count}")]
    InvalidRun { start: Offset, len: u32, count: u32 },
    #[error(
        "invalid snapshot marks: log start {log_start}, low water {low_water}, cursor {cursor}"
    )]
    InvalidMarks {
        log_start: Offset,
        low_water: Offset,
        cursor: Offset,
    },
    #[error("invalid packed scheduled entry at byte {at}")]
    InvalidPacked { at: usize },
    #[error("{0} bytes after the record")]
    TrailingBytes(usize),
}
