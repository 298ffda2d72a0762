//! Kafka's checks on producer appends, run by the core under the partition's append lock
//! ([`broker::PartitionHooks`]): idempotent producers' sequences (a retry is acknowledged
//! with its original offset and not stored twice), and a transactional batch belonging to
//! its producer's open transaction. Also tells committed-only readers where open and
//! aborted transactions are.

use std::sync::Arc;

use broker::{AbortedRange, Admit, PartitionHooks, PartitionRef};
use common::{Clock, Offset, PartitionId};
use parking_lot::Mutex;

use crate::error::CoordError;
use crate::producer_state::{BatchIdentity, ProducerStateTable, Verdict};
use crate::txn::TxnError;
use crate::txn::coordinator::TxnCoordinator;
use crate::txn::partition_txns::PartitionTxnIndex;

/// The state the hooks share with [`crate::KafkaCoord`] (not the coordinator itself: the
/// broker holds the hooks, and must not keep the coordinator, which holds the broker).
pub(crate) struct KafkaHooks {
    pub producers: Arc<ProducerStateTable>,
    pub txns: Arc<Mutex<TxnCoordinator>>,
    pub txn_index: Arc<PartitionTxnIndex>,
    pub clock: Arc<dyn Clock>,
}

impl PartitionHooks for KafkaHooks {
    fn before_append(&self, p: PartitionRef<'_>, batches: &[u8]) -> broker::Result<Admit> {
        let ids = producer_identities(batches);
        if ids.is_empty() {
            return Ok(Admit::Append { note: None });
        }
        let verdict = self
            .producers
            .check(p.id, &ids)
            .map_err(CoordError::into_broker)?;
        if let Verdict::Duplicate { base_offset } = verdict {
            return Ok(Admit::Duplicate { base_offset });
        }
        // Transactional batches must belong to their producer's open transaction.
        let Some((producer_id, epoch)) = crate::txn::transactional_producer(batches) else {
            return Ok(Admit::Append { note: None });
        };
        let checked = self
            .txns
            .lock()
            .verify_produce(producer_id, epoch, p.topic, p.partition);
        if let Err(e) = checked {
            let e = match e {
                TxnError::ProducerFenced(m) => CoordError::ProducerFenced(m),
                other => CoordError::Txn(other),
            };
            return Err(e.into_broker());
        }
        let opened = self.txn_index.begin(p.id, producer_id, p.log_end);
        Ok(Admit::Append {
            note: opened.then_some(producer_id),
        })
    }

    fn after_append(
        &self,
        p: PartitionRef<'_>,
        batches: &[u8],
        note: Option<i64>,
        base_offset: Option<Offset>,
    ) {
        // The transaction this append opened starts at its offset (or was not opened).
        if let Some(producer_id) = note {
            match base_offset {
                Some(o) => self.txn_index.fix_first(p.id, producer_id, o),
                None => self.txn_index.cancel(p.id, producer_id),
            }
        }
        if let Some(base) = base_offset {
            let ids = producer_identities(batches);
            if !ids.is_empty() {
                self.producers.record(p.id, &ids, base, self.clock.now_ms());
            }
        }
    }

    fn last_stable_offset(&self, p: PartitionId, high_watermark: Offset) -> Offset {
        self.txn_index.last_stable_offset(p, high_watermark)
    }

    fn aborted_between(&self, p: PartitionId, from: Offset, to: Offset) -> Vec<AbortedRange> {
        self.txn_index.aborted_ranges(p, from, to)
    }

    fn forget_partition(&self, p: PartitionId) {
        self.txn_index.forget_partition(p);
        self.producers.forget_partition(p);
    }
}

/// Producer identities of the batches, or none when the first batch is not from an
/// idempotent producer (producer id -1).
fn producer_identities(batches: &[u8]) -> Vec<BatchIdentity> {
    let ids: Vec<BatchIdentity> = broker::headers(batches)
        .map(|h| BatchIdentity::of(&h))
        .collect();
    if ids.iter().any(|id| id.producer_id < 0 || id.first_seq < 0) {
        return Vec::new();
    }
    ids
}
