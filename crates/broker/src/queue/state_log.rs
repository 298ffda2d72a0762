//! A queue's delivery state on disk: the engine's records (`sluice-queues` §FORMAT), one
//! record per Kafka v2 record in the queue's internal state partition, in order. A snapshot
//! record makes everything before it unnecessary: the partition's log start moves to it.

use bytes::BytesMut;
use common::{Offset, PartitionId};
use queues::{QueueConfig, QueueState, Record};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};

/// Bytes read per step when replaying a state partition.
const REPLAY_READ_BYTES: usize = 4 << 20;

/// Appends `records` to the state partition `p` as one batch (waiting for durability when
/// the partition's flush is sync). Returns the offset of the last snapshot among them.
pub(super) async fn persist(
    broker: &Broker,
    p: PartitionId,
    records: &[Record],
) -> Result<Option<Offset>> {
    if records.is_empty() {
        return Ok(None);
    }
    let now = broker.now_ms();
    let mut batch = storage::batch_builder::BatchBuilder::new();
    let mut snapshot_at = None;
    for (i, r) in records.iter().enumerate() {
        if matches!(r, Record::Snapshot(_)) {
            snapshot_at = Some(i as i64);
        }
        batch.record(None, Some(&r.to_bytes()), now, &[]);
    }
    let base = broker
        .store
        .append(p, BytesMut::from(&batch.build()[..]))
        .await?
        .base_offset;
    let snapshot = snapshot_at.map(|i| base + i);
    if let Some(at) = snapshot {
        // Everything before the snapshot is covered by it.
        broker.store.delete_records(p, at)?;
    }
    Ok(snapshot)
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
