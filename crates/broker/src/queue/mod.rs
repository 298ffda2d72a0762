//! Queues: many consumers taking messages from one log, each message acknowledged on its
//! own — RabbitMQ's queues, and later RocketMQ's consumer groups, MQTT shared subscriptions
//! and Kafka share groups. A queue is partition 0 of the topic of the same name (so a Kafka
//! consumer can read it as a log) plus a delivery state: the `sluice-queues` engine, whose
//! records go to an internal state partition (`state_log.rs`) before a caller learns of the
//! change they record.
//!
//! Messages are published by producing to the topic; consumers `acquire` committed records
//! (aborted transactions and control batches are settled without being delivered), then
//! `ack`, `nack` (requeue or not) or `release` them. Each queue's state sits behind its own
//! async mutex, held across the persistence of its records so they reach the log in order.

mod share;
mod state_log;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::{Offset, PartitionId};
use parking_lot::RwLock;
use queues::{Acquire, ConsumerId, QueueConfig, QueueState, Released};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::metadata::{MetaRecord, QueueRecord};
use crate::record_read::StoredRecord;

pub use queues::{DeadLetter, DeadReason};
pub use share::{AckType, SHARE_QUEUE_PREFIX, ShareAcquired};

/// Most bytes read to serve one acquire.
const ACQUIRE_READ_BYTES: usize = 8 << 20;

/// One delivery to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDelivery {
    pub record: StoredRecord,
    /// Deliveries of this message including this one.
    pub delivery_count: u32,
    pub redelivered: bool,
}

/// Ready and unacknowledged messages, and consumers holding some.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub ready: u64,
    pub unacked: u64,
    pub consumers_holding: usize,
}

/// One open queue.
pub(crate) struct QueueHandle {
    pub name: String,
    pub data: PartitionId,
    pub state_partition: PartitionId,
    pub settings: BTreeMap<String, String>,
    /// The declare created the topic (see `QueueRecord::owns_topic`).
    pub owns_topic: bool,
    /// The topic and partition it delivers from (the queue's own topic, partition 0,
    /// except for share-partitions).
    pub topic: String,
    pub partition: i32,
    state: tokio::sync::Mutex<QueueState>,
}

/// The open queues.
#[derive(Default)]
pub(crate) struct QueueRegistry {
    by_name: RwLock<HashMap<String, Arc<QueueHandle>>>,
}

impl QueueRegistry {
    pub fn get(&self, name: &str) -> Option<Arc<QueueHandle>> {
        self.by_name.read().get(name).cloned()
    }

    /// State partitions of every queue (not orphans, though no topic names them).
    pub fn state_partitions(records: &BTreeMap<String, QueueRecord>) -> Vec<PartitionId> {
        records
            .values()
            .map(|q| PartitionId(q.state_partition))
            .collect()
    }
}

fn config_of(settings: &BTreeMap<String, String>) -> QueueConfig {
    let mut c = QueueConfig::default();
    if let Some(limit) = settings
        .get("x-delivery-limit")
        .and_then(|v| v.parse().ok())
    {
        c.delivery_limit = Some(limit);
    }
    c
}

impl Broker {
    /// Opens the queues of the metadata image (state replayed from their state partitions).
    pub(crate) fn open_queues(&self, records: &BTreeMap<String, QueueRecord>) -> Result<()> {
        for q in records.values() {
            let state_partition = PartitionId(q.state_partition);
            self.store
                .configure_partition(state_partition, state_partition_config())?;
            let (topic, partition) = q.over.clone().unwrap_or_else(|| (q.name.clone(), 0));
            let data = match self.partition_id(&topic, partition) {
                Ok(d) => d,
                Err(_) if q.over.is_some() => {
                    // A share-partition whose topic went (deleted before its queue was):
                    // nothing left to deliver.
                    tracing::warn!(queue = %q.name, "share-partition over a missing topic; dropped");
                    let gone = MetaRecord::QueueDeleted {
                        name: q.name.clone(),
                    };
                    self.persist(gone, true)?;
                    let _ = self.store.delete_partition(state_partition);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut state = state_log::replay(self, state_partition, config_of(&q.settings))?;
            state.advance_log_start(self.store.offsets(data)?.log_start);
            let handle = QueueHandle {
                name: q.name.clone(),
                data,
                state_partition,
                settings: q.settings.clone(),
                owns_topic: q.owns_topic,
                topic,
                partition,
                state: tokio::sync::Mutex::new(state),
            };
            self.queues
                .by_name
                .write()
                .insert(q.name.clone(), Arc::new(handle));
        }
        Ok(())
    }

    /// Declares queue `name` over partition 0 of the topic of the same name (created with
    /// one partition if absent). Returns false when it already existed with the same
    /// settings; other settings are refused (AMQP's PRECONDITION_FAILED).
    pub fn declare_queue(&self, name: &str, settings: BTreeMap<String, String>) -> Result<bool> {
        if let Some(q) = self.queues.get(name) {
            if q.settings != settings {
                return Err(BrokerError::InvalidConfig(format!(
                    "queue {name} exists with other arguments ({:?})",
                    q.settings
                )));
            }
            return Ok(false);
        }
        let owns_topic = self.topic(name).is_err();
        if owns_topic {
            self.create_topic(
                crate::NewTopic {
                    name: name.to_string(),
                    partitions: Some(1),
                    replication_factor: None,
                    configs: BTreeMap::new(),
                },
                false,
            )?;
        }
        let data = self.partition_id(name, 0)?;
        let flush = self.store.partition_config(data)?.flush;
        let state_partition = self.topics.write().allocate_partitions(1)?[0];
        self.store.configure_partition(
            state_partition,
            storage::PartitionConfig {
                flush,
                ..state_partition_config()
            },
        )?;
        let record = QueueRecord {
            name: name.to_string(),
            state_partition: state_partition.0,
            settings: settings.clone(),
            owns_topic,
            over: None,
        };
        if let Err(e) = self.persist(MetaRecord::QueueDeclared(record), true) {
            let _ = self.store.delete_partition(state_partition);
            return Err(e);
        }
        let start = self.store.offsets(data)?.log_start;
        let handle = QueueHandle {
            name: name.to_string(),
            data,
            state_partition,
            state: tokio::sync::Mutex::new(QueueState::new(config_of(&settings), start)),
            settings,
            owns_topic,
            topic: name.to_string(),
            partition: 0,
        };
        self.queues
            .by_name
            .write()
            .insert(name.to_string(), Arc::new(handle));
        Ok(true)
    }

    /// The settings queue `name` was declared with.
    pub fn queue_settings(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.queues.get(name).map(|q| q.settings.clone())
    }

    /// Whether queue `name` exists.
    pub fn queue_exists(&self, name: &str) -> bool {
        self.queues.get(name).is_some()
    }

    /// Deletes queue `name`: its delivery state goes, and with `with_topic` its messages
    /// too — the topic is deleted when the queue's declare created it; a topic the queue was
    /// declared over (a Kafka topic read as a queue) is never deleted by the queue.
    pub fn delete_queue(&self, name: &str, with_topic: bool) -> Result<()> {
        let q = self.queue(name)?;
        self.persist(
            MetaRecord::QueueDeleted {
                name: name.to_string(),
            },
            true,
        )?;
        self.queues.by_name.write().remove(name);
        if let Err(e) = self.store.delete_partition(q.state_partition) {
            tracing::warn!(queue = %name, error = %e, "deleting the queue's state partition failed");
        }
        if with_topic && q.owns_topic {
            self.delete_topic(name)?;
        }
        Ok(())
    }

    fn queue(&self, name: &str) -> Result<Arc<QueueHandle>> {
        self.queues
            .get(name)
            .ok_or(BrokerError::UnknownTopicOrPartition)
    }

    /// Saves what the state has queued since the last call, snapshotting when due.
    async fn save(&self, q: &QueueHandle, state: &mut QueueState) -> Result<()> {
        if state.snapshot_due() {
            state.write_snapshot();
        }
        let records = state.drain_records();
        state_log::persist(self, q.state_partition, &records).await?;
        Ok(())
    }

    /// Up to `max` messages for `consumer`, each leased for `lease_ms` (the queue's default
    /// when `None`): the oldest available first (a returned message goes out again before
    /// newer ones). The deliveries are saved before they are returned.
    pub async fn queue_acquire(
        &self,
        name: &str,
        consumer: u64,
        max: u32,
        lease_ms: Option<i64>,
    ) -> Result<Vec<QueueDelivery>> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        let now = self.now_ms();
        state.expire(now);
        let marks = self.partition_watermarks(q.data)?;
        state.advance_log_start(marks.log_start);
        let stable = self.stable_below(q.data, marks.high_watermark);
        let mut request = Acquire::new(ConsumerId(consumer), max, stable, now);
        request.lease_ms = lease_ms;
        let acquired = state.acquire(&request);
        let Some(first) = acquired.deliveries.first().map(|d| d.offset) else {
            return Ok(Vec::new());
        };
        let last = acquired.deliveries.last().map_or(first, |d| d.offset);
        let span = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
        let read = self.read_records(&q.topic, q.partition, first, span, ACQUIRE_READ_BYTES)?;
        let mut records: HashMap<Offset, StoredRecord> =
            read.records.into_iter().map(|r| (r.offset, r)).collect();
        let mut out = Vec::with_capacity(acquired.deliveries.len());
        let mut nothing_there = Vec::new();
        for d in acquired.deliveries {
            match records.remove(&d.offset) {
                Some(record) => out.push(QueueDelivery {
                    record,
                    delivery_count: d.delivery_count,
                    redelivered: d.redelivered,
                }),
                // A control record, an aborted transaction's record, or one past what one
                // read returns: settled (the first two) or handed back (the last).
                None if d.offset < read.next_offset => nothing_there.push(d.offset),
                None => {
                    let _ = state.nack(ConsumerId(consumer), &[d.offset], true);
                }
            }
        }
        if !nothing_there.is_empty() {
            state
                .ack(ConsumerId(consumer), &nothing_there)
                .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
        }
        self.save(&q, &mut state).await?;
        let labels = crate::metrics::queue_labels(&q.name);
        self.metrics
            .queue_delivered
            .get_or_create(&labels)
            .inc_by(out.len() as u64);
        Ok(out)
    }

    /// Acknowledges messages `consumer` holds; all or nothing.
    pub async fn queue_ack(&self, name: &str, consumer: u64, offsets: &[Offset]) -> Result<()> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        let acked = state
            .ack(ConsumerId(consumer), offsets)
            .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
        self.save(&q, &mut state).await?;
        let labels = crate::metrics::queue_labels(&q.name);
        self.metrics
            .queue_acked
            .get_or_create(&labels)
            .inc_by(acked);
        Ok(())
    }

    /// Returns messages `consumer` holds: back in place (`requeue`, redelivered later) or
    /// dead. Returns the dead ones (rejected, or past the queue's delivery limit) for the
    /// caller to dead-letter or drop.
    pub async fn queue_nack(
        &self,
        name: &str,
        consumer: u64,
        offsets: &[Offset],
        requeue: bool,
    ) -> Result<Vec<DeadLetter>> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        let released = state
            .nack(ConsumerId(consumer), offsets, requeue)
            .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
        self.save(&q, &mut state).await?;
        self.count_returned(&q.name, &released);
        Ok(released.dead)
    }

    /// Everything `consumer` holds goes back (a closed channel, a cancelled consumer).
    pub async fn queue_release(&self, name: &str, consumer: u64) -> Result<Vec<DeadLetter>> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        let released = state.release_consumer(ConsumerId(consumer));
        self.save(&q, &mut state).await?;
        self.count_returned(&q.name, &released);
        Ok(released.dead)
    }

    /// Settles every message not held by a consumer; returns how many.
    pub async fn queue_purge(&self, name: &str) -> Result<u64> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        let end = self.queue_end(&q)?;
        let before = state.ready(end);
        state.purge_below(end);
        let purged = before - state.ready(end);
        self.save(&q, &mut state).await?;
        Ok(purged)
    }

    /// Ready and unacknowledged counts.
    pub async fn queue_counts(&self, name: &str) -> Result<QueueCounts> {
        let q = self.queue(name)?;
        let state = q.state.lock().await;
        let end = self.queue_end(&q)?;
        Ok(QueueCounts {
            ready: state.ready(end),
            unacked: state.unacked(),
            consumers_holding: state.consumers_holding(),
        })
    }

    fn count_returned(&self, queue: &str, released: &Released) {
        let labels = crate::metrics::queue_labels(queue);
        self.metrics
            .queue_returned
            .get_or_create(&labels)
            .inc_by(released.requeued.len() as u64);
    }

    /// Sets the per-queue gauges (scrape time). A queue busy at this instant keeps its
    /// last values rather than making the scrape wait.
    pub(crate) fn refresh_queue_gauges(&self) {
        let queues: Vec<Arc<QueueHandle>> = self.queues.by_name.read().values().cloned().collect();
        self.metrics.queue_ready.clear();
        self.metrics.queue_unacked.clear();
        self.metrics.queue_consumers.clear();
        for q in queues {
            let Ok(state) = q.state.try_lock() else {
                continue;
            };
            let Ok(end) = self.queue_end(&q) else {
                continue;
            };
            let labels = crate::metrics::queue_labels(&q.name);
            let m = &self.metrics;
            m.queue_ready
                .get_or_create(&labels)
                .set(state.ready(end) as i64);
            m.queue_unacked
                .get_or_create(&labels)
                .set(state.unacked() as i64);
            m.queue_consumers
                .get_or_create(&labels)
                .set(state.consumers_holding() as i64);
        }
    }

    /// Where a queue's deliverable messages end: its partition's last stable offset.
    fn queue_end(&self, q: &QueueHandle) -> Result<Offset> {
        let hw = self.partition_watermarks(q.data)?.high_watermark;
        Ok(self.stable_below(q.data, hw))
    }

    /// Every queue's name (not the share-partitions of Kafka share groups).
    pub fn list_queues(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .queues
            .by_name
            .read()
            .keys()
            .filter(|n| !n.starts_with(SHARE_QUEUE_PREFIX))
            .cloned()
            .collect();
        names.sort();
        names
    }
}

/// A state partition: no time or size retention (snapshots trim it), no key index.
fn state_partition_config() -> storage::PartitionConfig {
    storage::PartitionConfig {
        retention_ms: None,
        retention_bytes: None,
        index: false,
        ..storage::PartitionConfig::default()
    }
}
