//! How a protocol's semantics above the core follow the log without the core knowing them:
//! Kafka's idempotent producers and transactions (`kafka-coord`) check each producer batch
//! before it is written and record it after, under the partition's append lock, and tell
//! committed-only readers where open and aborted transactions are.

use common::{Offset, PartitionId};

use crate::error::Result;
use crate::record_read::AbortedRange;

/// The partition an append goes to.
#[derive(Clone, Copy, Debug)]
pub struct PartitionRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub id: PartitionId,
    /// The partition's log end when the append lock was taken (the offset the batches
    /// will get if written).
    pub log_end: Offset,
}

/// What [`PartitionHooks::before_append`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write the batches; `note` is handed back to [`PartitionHooks::after_append`].
    Append { note: Option<i64> },
    /// A retry of batches already stored at `base_offset`: acknowledge, do not write.
    Duplicate { base_offset: Offset },
}

/// Installed once per broker ([`crate::Broker::set_partition_hooks`]). The core calls
/// `before_append` and `after_append` for every append whose batches carry a producer id
/// (Kafka v2 batch fields), holding the partition's append lock across both and the write,
/// so two appends of one producer cannot interleave their checks. An error from
/// `before_append` refuses the append ([`crate::BrokerError::Refused`]).
pub trait PartitionHooks: Send + Sync + 'static {
    fn before_append(&self, p: PartitionRef<'_>, batches: &[u8]) -> Result<Admit>;

    /// After the write: the base offset the batches got, or `None` when it failed.
    fn after_append(
        &self,
        p: PartitionRef<'_>,
        batches: &[u8],
        note: Option<i64>,
        base_offset: Option<Offset>,
    );

    /// The first offset a committed-only reader may not see yet (the start of the oldest
    /// open transaction), given the high watermark.
    fn last_stable_offset(&self, _p: PartitionId, high_watermark: Offset) -> Offset {
        high_watermark
    }

    /// Every aborted transaction with records in `[from, to)`: committed-only readers
    /// skip those producers' records inside each range.
    fn aborted_between(&self, _p: PartitionId, _from: Offset, _to: Offset) -> Vec<AbortedRange> {
        Vec::new()
    }

    /// A partition was deleted with its topic.
    fn forget_partition(&self, _p: PartitionId) {}
}
