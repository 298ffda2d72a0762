//! A queue's delivery state on disk: the engine's records (`sluice-queues` §FORMAT), one
//! record per Kafka v2 record in the queue's internal state partition, in order. A snapshot
//! record makes everything before it unnecessary: the partition's log start moves to it.

use bytes::BytesMut;
use common::PartitionId;
use queues::{QueueConfig, QueueState, Record};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};

/// Bytes read per step when replaying a state partition.
const REPLAY_READ_BYTES: usize = 4 << 20;

/// Most encoded record bytes in one batch: a large snapshot (millions of scheduled
/// messages) goes out as several batches, so its encoded copy never exists whole.
const APPEND_BATCH_BYTES: usize = 1 << 20;

/// Appends `records` to the state partition `p`, in call order, as batches of at most about
/// [`APPEND_BATCH_BYTES`] (the caller holds the queue's lock). The records are readable at
/// once; for a `flush = sync` partition the returned append (the last batch's: the log is
/// ordered, so its group commit covers the others) resolves when they are durable. A
/// snapshot among them makes everything before it unnecessary: the partition's log start
/// moves to it (a crash before the snapshot is durable brings back the log start of the
/// last checkpoint, which still covers the records before it).
pub(super) fn append(
    broker: &Broker,
    p: PartitionId,
    records: &[Record],
) -> Result<Option<storage::PendingAppend>> {
    let now = broker.now_ms();
    let mut last = None;
    let mut snapshot_at = None;
    let mut batch = storage::batch_builder::BatchBuilder::new();
    // (records in the batch, their bytes, the snapshot's index in it)
    let (mut count, mut bytes, mut snapshot_in_batch) = (0i64, 0usize, None);
    let mut flush = |batch: &mut storage::batch_builder::BatchBuilder,
                     snapshot_in_batch: Option<i64>|
     -> Result<()> {
        let full = std::mem::take(batch);
        let pending = broker
            .store
            .append_begin(p, BytesMut::from(&full.build()[..]))?;
        if let Some(i) = snapshot_in_batch {
            snapshot_at = Some(pending.appended.base_offset + i);
        }
        last = Some(pending);
        Ok(())
    };
    for r in records {
        let encoded = r.to_bytes();
        if count > 0 && bytes + encoded.len() > APPEND_BATCH_BYTES {
            flush(&mut batch, snapshot_in_batch.take())?;
            (count, bytes) = (0, 0);
        }
        if matches!(r, Record::Snapshot(_)) {
            snapshot_in_batch = Some(count);
        }
        batch.record(None, Some(&encoded), now, &[]);
        count += 1;
        bytes += encoded.len();
    }
    if count > 0 {
        flush(&mut batch, snapshot_in_batch)?;
    }
    if let Some(at) = snapshot_at {
        broker.store.delete_records(p, at)?;
    }
    Ok(last)
}

/// Rebuilds a queue's state from its state partition (from its log start: the last
/// snapshot, or the first record).
pub(super) fn replay(broker: &Broker, p: PartitionId, config: QueueConfig) -> Result<QueueState> {
    let marks = broker.store.offsets(p)?;
    let cap = broker.store.config().max_decompressed_batch_bytes;
    let mut records = Vec::new();
    let mut at = marks.log_start;
    while at < marks.log_end {
        let read = broker.store.read(p, at, REPLAY_READ_BYTES)?;
        let before = at;
        for chunk in &read.chunks {
            for h in crate::log_scan::headers(chunk) {
                let data = storage::records::records_bytes(&h, cap)?;
                let mut bad = None;
                storage::records::for_each_record(&h, &data, |r| {
                    let offset = h.base_offset() + i64::from(r.offset_delta);
                    if offset < at || bad.is_some() {
                        return;
                    }
                    match Record::decode(r.value.unwrap_or_default()) {
                        Ok(rec) => records.push(rec),
                        Err(e) => bad = Some(format!("offset {offset}: {e}")),
                    }
                })?;
                if let Some(e) = bad {
                    return Err(BrokerError::CorruptMessage(format!(
                        "queue state partition {p}: {e}"
                    )));
                }
                at = at.max(h.last_offset() + 1);
            }
        }
        if at == before {
            break;
        }
    }
    Ok(QueueState::recover(config, records))
}
