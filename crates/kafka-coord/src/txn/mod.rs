//! Kafka transactions (KIP-98): the coordinator keyed by `transactional.id`
//! ([`coordinator`]), the per-partition open/aborted transaction index behind the last
//! stable offset and read_committed fetches ([`partition_txns`]), the commit/abort marker
//! batches ([`control`]), and the broker operations tying them to the log and the metadata
//! log (`broker_ops.rs`).
//!
//! Flow of one transaction: InitProducerId (fences older epochs) → AddPartitionsToTxn /
//! AddOffsetsToTxn (state Ongoing, persisted) → transactional produce (checked against the
//! open transaction; the partition's first offset opens it in the index) → TxnOffsetCommit
//! (held in the transaction) → EndTxn: Prepare* persisted, a marker appended to every
//! partition, offsets applied to their groups on commit, Complete* persisted.

mod broker_ops;
pub mod control;
pub mod coordinator;
pub mod partition_txns;

pub(crate) use broker_ops::txn_timer;
pub use broker_ops::{GroupMember, IsolatedFetch, ProducerListing, TXN_TICK_MS, TxnDescription};
pub use coordinator::{TxnError, TxnState};

/// (producer id, epoch) of a produce payload whose first batch is transactional.
pub(crate) fn transactional_producer(batches: &[u8]) -> Option<(i64, i16)> {
    let h = broker::batch::BatchHeader::parse(batches).ok()?;
    (h.is_transactional() && !h.is_control() && h.producer_id() >= 0)
        .then(|| (h.producer_id(), h.producer_epoch()))
}
