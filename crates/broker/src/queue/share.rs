//! Kafka share groups (KIP-932) on the queue engine: each *share-partition* — a share
//! group reading one topic partition — is a queue over that partition (`QueueRecord::over`),
//! named `__share/<group>/<topic>/<partition>`, created by the group's first fetch of it at
//! the partition's end (Kafka's default `share.auto.offset.reset=latest`). Fetches acquire
//! records for a member with a lock (the lease); acknowledgements accept (settle), release
//! (back for anyone, redelivered) or reject (settled as dead: Kafka's "archived"); a record
//! delivered more than the delivery-count limit is archived instead. Its state is the
//! queue's: persisted in its state partition, kept across restarts.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use common::Offset;
use queues::QueueState;

use super::{QueueHandle, config_of};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::metadata::QueueRecord;

/// Names of share-partition queues start with this.
pub const SHARE_QUEUE_PREFIX: &str = "__share/";

/// Most bytes of batches one share fetch of a partition returns.
const SHARE_READ_BYTES: usize = 8 << 20;

/// A KIP-932 acknowledgement type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckType {
    /// An offset with no record to acknowledge (a control record): settled.
    Gap,
    Accept,
    Release,
    Reject,
}

impl AckType {
    pub fn from_code(code: i8) -> Option<AckType> {
        Some(match code {
            0 => AckType::Gap,
            1 => AckType::Accept,
            2 => AckType::Release,
            3 => AckType::Reject,
            _ => return None,
        })
    }
}

/// What one share fetch of a partition acquired: the batches holding the records (a client
/// keeps only the acquired offsets of them) and the acquired offsets as (first, last,
/// delivery count) runs.
#[derive(Clone, Debug, Default)]
pub struct ShareAcquired {
    pub records: Bytes,
    pub acquired: Vec<(Offset, Offset, u32)>,
}

fn queue_name(group: &str, topic: &str, partition: i32) -> String {
    format!("{SHARE_QUEUE_PREFIX}{group}/{topic}/{partition}")
}

impl Broker {
    /// The share-partition queue, created at the partition's end (or its log start with
    /// `earliest`) the first time.
    fn share_queue(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        delivery_limit: u32,
        earliest: bool,
    ) -> Result<Arc<QueueHandle>> {
        let name = queue_name(group, topic, partition);
        if let Some(q) = self.queues.get(&name) {
            return Ok(q);
        }
        let data = self.partition_id(topic, partition)?;
        // One creation at a time: the registry's lock is held across it (a rare path).
        let mut by_name = self.queues.by_name.write();
        if let Some(q) = by_name.get(&name) {
            return Ok(q.clone());
        }
        let marks = self.store.offsets(data)?;
        let start = if earliest {
            marks.log_start
        } else {
            marks.log_end
        };
        // Kafka's limit counts deliveries; the engine's, returns after a delivery (a record
        // returned with a count above it is dead): at most `delivery_limit` deliveries.
        let returns = delivery_limit.saturating_sub(1).max(1);
        let settings = BTreeMap::from([("x-delivery-limit".to_string(), returns.to_string())]);
        let state_partition = self.save_new_queue(data, |state_partition| QueueRecord {
            name: name.clone(),
            state_partition,
            owns_topic: false,
            settings: settings.clone(),
            over: Some((topic.to_string(), partition)),
        })?;
        let state = QueueState::new(config_of(&settings), start);
        let handle = QueueHandle::new(
            name.clone(),
            data,
            state_partition,
            settings,
            false,
            state,
            self.now_ms(),
        )
        .over(topic.to_string(), partition);
        let handle = Arc::new(handle);
        by_name.insert(name, handle.clone());
        Ok(handle)
    }

    /// Acquires up to `max_records` records of a share-partition for `member`, and reads
    /// the batches holding them; `(lock_ms, delivery_limit, earliest)`: each is locked for
    /// `lock_ms`, archived after `delivery_limit` deliveries, and a new share-partition
    /// starts at the log start when `earliest`. Records past what one read returns are
    /// released again at once.
    pub async fn share_acquire(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        member: u64,
        max_records: u32,
        (lock_ms, delivery_limit, earliest): (i64, u32, bool),
    ) -> Result<ShareAcquired> {
        let q = self.share_queue(group, topic, partition, delivery_limit, earliest)?;
        let deliveries = self
            .queue_acquire(&q.name, member, max_records.max(1), Some(lock_ms))
            .await?;
        let Some(first) = deliveries.first().map(|d| d.record.offset) else {
            return Ok(ShareAcquired::default());
        };
        let fetched = self.fetch(topic, partition, first, SHARE_READ_BYTES)?;
        let covered_end = fetched
            .chunks
            .iter()
            .filter_map(|c| {
                crate::log_scan::headers(c)
                    .last()
                    .map(|h| h.last_offset() + 1)
            })
            .max()
            .unwrap_or(first);
        let mut buf = BytesMut::with_capacity(fetched.bytes);
        for c in &fetched.chunks {
            buf.extend_from_slice(c);
        }
        let mut acquired: Vec<(Offset, Offset, u32)> = Vec::new();
        let mut uncovered = Vec::new();
        for d in &deliveries {
            let o = d.record.offset;
            if o >= covered_end {
                uncovered.push(o);
                continue;
            }
            match acquired.last_mut() {
                Some((_, last, count)) if *last + 1 == o && *count == d.delivery_count => *last = o,
                _ => acquired.push((o, o, d.delivery_count)),
            }
        }
        if !uncovered.is_empty() {
            self.queue_nack(&q.name, member, &uncovered, true).await?;
        }
        Ok(ShareAcquired {
            records: buf.freeze(),
            acquired,
        })
    }

    /// Applies a member's acknowledgements of a share-partition: (offset, type) pairs.
    /// Offsets the member does not hold are INVALID_RECORD_STATE, as Kafka answers.
    pub async fn share_acknowledge(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        member: u64,
        acks: &[(Offset, AckType)],
    ) -> Result<()> {
        let name = queue_name(group, topic, partition);
        if self.queues.get(&name).is_none() {
            return Err(BrokerError::InvalidRecordState(format!(
                "no record of {topic}-{partition} is acquired in share group {group}"
            )));
        }
        let pick = |want: &[AckType]| -> Vec<Offset> {
            acks.iter()
                .filter(|(_, t)| want.contains(t))
                .map(|(o, _)| *o)
                .collect()
        };
        let refused = |e: BrokerError| match e {
            BrokerError::InvalidRecord(m) => BrokerError::InvalidRecordState(m),
            e => e,
        };
        let accept = pick(&[AckType::Accept, AckType::Gap]);
        if !accept.is_empty() {
            self.queue_ack(&name, member, &accept)
                .await
                .map_err(refused)?;
        }
        let release = pick(&[AckType::Release]);
        if !release.is_empty() {
            self.queue_nack(&name, member, &release, true)
                .await
                .map_err(refused)?;
        }
        let reject = pick(&[AckType::Reject]);
        if !reject.is_empty() {
            self.queue_nack(&name, member, &reject, false)
                .await
                .map_err(refused)?;
        }
        // Kafka answers once the share-partition's state is saved.
        self.queue_synced(&name).await
    }

    /// Names of the share-partition queues over `topic`.
    pub(crate) fn share_queues_over(&self, topic: &str) -> Vec<String> {
        self.queues
            .by_name
            .read()
            .values()
            .filter(|q| q.name.starts_with(SHARE_QUEUE_PREFIX) && q.topic == topic)
            .map(|q| q.name.clone())
            .collect()
    }

    /// Releases everything `member` holds in any share-partition of `group` (it left or
    /// its session expired).
    pub async fn share_release_member(&self, group: &str, member: u64) -> Result<()> {
        let prefix = format!("{SHARE_QUEUE_PREFIX}{group}/");
        let names: Vec<String> = self
            .queues
            .by_name
            .read()
            .keys()
            .filter(|n| n.starts_with(&prefix))
            .cloned()
            .collect();
        for n in names {
            self.queue_release(&n, member).await?;
        }
        Ok(())
    }
}
