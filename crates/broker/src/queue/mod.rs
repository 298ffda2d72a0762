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
//! async mutex; its records are appended under it, so they reach the log in order, and
//! waited for (when they must be durable) after it is released (`save`).
//!
//! A queue's declare settings carry RabbitMQ's policies (`policy.rs`: TTL, queue expiry,
//! dead-letter target, delivery limit, length limits, priorities); `dead.rs` applies the
//! ones that act outside an acquire (limits at publish, the TTL sweep, dead letters handed
//! to a door, unused queues).

mod dead;
mod policy;
mod share;
mod state_log;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::{Offset, PartitionId};
use parking_lot::RwLock;
use queues::{Acquire, ConsumerId, QueueConfig, QueueState, Released};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::metadata::{MetaRecord, QueueRecord};
use crate::record_read::StoredRecord;

pub use dead::{DeadLettered, Routed};
pub use policy::{
    HEADER_DUE_MS, HEADER_PRIORITY, HEADER_TTL_MS, QUORUM_DELIVERY_LIMIT, QueuePolicy,
};
pub use queues::{DeadLetter, DeadReason};
pub use share::{AckType, SHARE_QUEUE_PREFIX, ShareAcquired};

/// Most bytes read to serve one acquire.
const ACQUIRE_READ_BYTES: usize = 8 << 20;
/// Ready messages a priority queue compares per acquire: priority order holds among the
/// first this many ready messages (RabbitMQ's holds over the whole queue).
const PRIORITY_WINDOW: usize = 4096;

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
    /// Delayed or retrying messages not yet due.
    pub scheduled: u64,
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
    /// What the settings ask for (TTL, dead letters, limits, priorities).
    pub policy: QueuePolicy,
    /// When the queue was last used (declared, read from): `x-expires` counts from here.
    last_used: AtomicI64,
    /// The head need not be looked at for expired messages before this time (a publish or a
    /// requeue resets it).
    next_sweep: AtomicI64,
    /// The head offset last found to hold a message that never expires (`i64::MIN`: none):
    /// the sweep does not read it again.
    live_head: AtomicI64,
    /// Ready body bytes, for `x-max-length-bytes` (changed only under the state lock).
    bytes: parking_lot::Mutex<ReadyBytes>,
    /// When the earliest scheduled message is due (`i64::MAX`: none), kept by every save
    /// so the release tick needs no lock to skip a queue (`Broker::queue_release_due`).
    next_due: AtomicI64,
    /// Priority queues: the priorities of the ready messages of the last acquire's window
    /// (records do not change, so a later acquire reads only what is new).
    priorities: parking_lot::Mutex<HashMap<Offset, u8>>,
    state: tokio::sync::Mutex<QueueState>,
}

/// The body bytes of a queue's ready messages, kept up to date by every operation that
/// moves a message in or out of "ready" when the queue has `x-max-length-bytes` (counting
/// them per publish would read the whole backlog each time). Messages appended without
/// [`Broker::queue_publish`] (a Kafka producer writing into the queue's topic) are not
/// counted until the next start, which counts the ready messages once from the log.
#[derive(Debug, Default)]
pub(crate) struct ReadyBytes {
    /// `None` until first needed after a start.
    total: Option<u64>,
    /// Body sizes of the messages in flight, added back when they return.
    in_flight: HashMap<Offset, u64>,
}

impl QueueHandle {
    fn new(
        name: String,
        data: PartitionId,
        state_partition: PartitionId,
        settings: BTreeMap<String, String>,
        owns_topic: bool,
        state: QueueState,
        now: i64,
    ) -> QueueHandle {
        // Settings saved before a policy was refused at declare cannot exist; be lenient.
        let policy = QueuePolicy::parse(&settings).unwrap_or_default();
        QueueHandle {
            topic: name.clone(),
            partition: 0,
            name,
            data,
            state_partition,
            settings,
            owns_topic,
            policy,
            last_used: AtomicI64::new(now),
            next_sweep: AtomicI64::new(i64::MIN),
            live_head: AtomicI64::new(i64::MIN),
            next_due: AtomicI64::new(i64::MAX),
            bytes: parking_lot::Mutex::new(ReadyBytes::default()),
            priorities: parking_lot::Mutex::new(HashMap::new()),
            state: tokio::sync::Mutex::new(state),
        }
    }

    /// The queue delivers from `topic`'s `partition` (a share-partition), not from
    /// partition 0 of its own topic.
    fn over(mut self, topic: String, partition: i32) -> QueueHandle {
        self.topic = topic;
        self.partition = partition;
        self
    }

    fn touch(&self, now: i64) {
        self.last_used.fetch_max(now, Ordering::Relaxed);
    }

    /// The head may have changed: look at it at the next sweep.
    fn head_changed(&self) {
        self.next_sweep.store(i64::MIN, Ordering::Relaxed);
    }

    fn tracks_bytes(&self) -> bool {
        self.policy.limits.max_length_bytes.is_some()
    }

    /// A ready message of `size` body bytes left "ready": delivered (`in_flight`) or settled.
    fn bytes_taken(&self, offset: Offset, size: u64, in_flight: bool) {
        if !self.tracks_bytes() {
            return;
        }
        let mut b = self.bytes.lock();
        if let Some(t) = b.total.as_mut() {
            *t = t.saturating_sub(size);
        }
        if in_flight {
            b.in_flight.insert(offset, size);
        }
    }

    /// In-flight messages came back to "ready".
    fn bytes_returned(&self, offsets: &[Offset]) {
        if !self.tracks_bytes() {
            return;
        }
        let mut b = self.bytes.lock();
        for o in offsets {
            let size = b.in_flight.remove(o).unwrap_or(0);
            if let Some(t) = b.total.as_mut() {
                *t += size;
            }
        }
    }

    /// In-flight messages were settled (acked, dead).
    fn bytes_settled(&self, offsets: impl IntoIterator<Item = Offset>) {
        if !self.tracks_bytes() {
            return;
        }
        let mut b = self.bytes.lock();
        for o in offsets {
            b.in_flight.remove(&o);
        }
    }

    /// A message of `size` body bytes was stored.
    fn bytes_added(&self, size: u64) {
        if let Some(t) = self.bytes.lock().total.as_mut() {
            *t += size;
        }
    }

    fn track_released(&self, released: &Released) {
        self.bytes_returned(&released.requeued);
        self.bytes_settled(released.dead.iter().map(|d| d.offset));
    }
}

fn body_len(record: &StoredRecord) -> u64 {
    record.value.as_ref().map_or(0, |v| v.len() as u64)
}

/// The open queues.
#[derive(Default)]
pub(crate) struct QueueRegistry {
    by_name: RwLock<HashMap<String, Arc<QueueHandle>>>,
    /// Dead letters waiting for a door to republish them (`dead.rs`).
    dead: dead::DeadLetterBox,
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
    QueuePolicy::parse(settings)
        .unwrap_or_default()
        .engine_config()
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
            let handle = QueueHandle::new(
                q.name.clone(),
                data,
                state_partition,
                q.settings.clone(),
                q.owns_topic,
                state,
                self.now_ms(),
            )
            .over(topic, partition);
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
            q.touch(self.now_ms());
            return Ok(false);
        }
        QueuePolicy::parse(&settings).map_err(BrokerError::InvalidConfig)?;
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
        let state_partition = self.save_new_queue(data, |state_partition| QueueRecord {
            name: name.to_string(),
            state_partition,
            settings: settings.clone(),
            owns_topic,
            over: None,
        })?;
        let start = self.store.offsets(data)?.log_start;
        let handle = QueueHandle::new(
            name.to_string(),
            data,
            state_partition,
            settings.clone(),
            owns_topic,
            QueueState::new(config_of(&settings), start),
            self.now_ms(),
        );
        self.queues
            .by_name
            .write()
            .insert(name.to_string(), Arc::new(handle));
        Ok(true)
    }

    /// Allocates a new queue's state partition (flushed like its data partition `data`)
    /// and saves the queue's declare record `record(state partition)`; the partition goes
    /// again when the record cannot be saved.
    fn save_new_queue(
        &self,
        data: PartitionId,
        record: impl FnOnce(u32) -> QueueRecord,
    ) -> Result<PartitionId> {
        let flush = self.store.partition_config(data)?.flush;
        let state_partition = self.topics.write().allocate_partitions(1)?[0];
        self.store.configure_partition(
            state_partition,
            storage::PartitionConfig {
                flush,
                ..state_partition_config()
            },
        )?;
        let declared = MetaRecord::QueueDeclared(record(state_partition.0));
        if let Err(e) = self.persist(declared, true) {
            let _ = self.store.delete_partition(state_partition);
            return Err(e);
        }
        Ok(state_partition)
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

    /// Appends what the state has queued since the last call (snapshotting when due), under
    /// the queue's lock so records reach the log in the order they happened. The returned
    /// append resolves when they are durable (`flush = sync`); wait for it *after*
    /// releasing the lock, so one operation's fsync does not hold up the queue.
    ///
    /// Who waits: an acquire, before handing out what its lease records promise (a
    /// delivery must not be forgotten by a crash: it is redelivered marked redelivered).
    /// Settles (ack, nack, release, expiry, drop-head) do not: the commit log is one
    /// ordered file and a group commit covers everything before it, so the next delivery's
    /// wait makes every earlier settle durable too — with `flush = sync` no delivery
    /// decision relies on an ack that a crash could take back. A settle lost to a crash
    /// before that only makes its message come back (unacked, redelivered).
    fn save(
        &self,
        q: &QueueHandle,
        state: &mut QueueState,
    ) -> Result<Option<storage::PendingAppend>> {
        if state.snapshot_due() {
            state.write_snapshot();
        }
        q.next_due
            .store(state.next_due().unwrap_or(i64::MAX), Ordering::Relaxed);
        let records = state.drain_records();
        state_log::append(self, q.state_partition, &records)
    }

    /// Waits until everything appended so far is durable, when queue `name`'s state is
    /// kept with `flush = sync` (a protocol that answers an acknowledgement only once it
    /// is saved: Kafka's ShareAcknowledge, a purge).
    pub async fn queue_synced(&self, name: &str) -> Result<()> {
        let q = self.queue(name)?;
        if self.store.partition_config(q.state_partition)?.flush == storage::Flush::Sync {
            self.store.synced().await?;
        }
        Ok(())
    }

    /// Up to `max` messages for `consumer`, each leased for `lease_ms` (the queue's default
    /// when `None`): the oldest available first (a returned message goes out again before
    /// newer ones), or the highest priority first in a priority queue. An expired message is
    /// never handed out: it is dead-lettered instead (and so is one whose lease ran out past
    /// the delivery limit). The deliveries are saved before they are returned.
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
        q.touch(now);
        if !state.release_due(now).is_empty() {
            q.head_changed();
        }
        let expired_leases = state.expire(now);
        q.track_released(&expired_leases);
        let mut dead = expired_leases.dead;
        if !dead.is_empty() || !expired_leases.requeued.is_empty() {
            q.head_changed();
        }
        let marks = self.partition_watermarks(q.data)?;
        state.advance_log_start(marks.log_start);
        let stable = self.stable_below(q.data, marks.high_watermark);
        let mut known: HashMap<Offset, StoredRecord> = HashMap::new();
        let mut out = Vec::new();
        // Each round hands out what is live; one that found expired messages tries again
        // for the room they took (bounded: a long run of expired messages is left to the
        // sweep).
        for _ in 0..8 {
            let room = max.saturating_sub(out.len() as u32);
            if room == 0 {
                break;
            }
            let mut request = Acquire::new(ConsumerId(consumer), room, stable, now);
            request.lease_ms = lease_ms;
            let (acquired, mut records, read_end) = match q.policy.max_priority {
                Some(_) => {
                    let window = state.available(stable, PRIORITY_WINDOW);
                    let ranks = self.priorities_of(&q, &window)?;
                    request.max_scan = Some(PRIORITY_WINDOW as u32);
                    let acquired = state.acquire_ranked(&request, |o| ranks.get(&o).copied());
                    let mut offsets: Vec<Offset> =
                        acquired.deliveries.iter().map(|d| d.offset).collect();
                    offsets.sort_unstable();
                    let (records, read_end) = self.read_span(&q, &offsets)?;
                    (acquired, records, read_end)
                }
                None => {
                    let acquired = state.acquire(&request);
                    let offsets: Vec<Offset> =
                        acquired.deliveries.iter().map(|d| d.offset).collect();
                    let (records, read_end) = self.read_span(&q, &offsets)?;
                    (acquired, records, read_end)
                }
            };
            if acquired.deliveries.is_empty() {
                break;
            }
            let mut nothing_there = Vec::new();
            let mut expired = Vec::new();
            let mut early = Vec::new();
            let mut handed_back = false;
            for d in acquired.deliveries {
                let record = records.remove(&d.offset);
                let due = record.as_ref().and_then(|r| q.policy.due(r));
                match record {
                    // A delayed message whose schedule record a crash lost: not before its
                    // time (scheduled again).
                    Some(_) if let Some(due) = due.filter(|&due| due > now) => {
                        early.push((d.offset, due));
                    }
                    Some(record) if queues::is_expired(q.policy.expiry(&record), now) => {
                        q.bytes_taken(d.offset, body_len(&record), false);
                        expired.push(d.offset);
                        known.insert(d.offset, record);
                    }
                    Some(record) => {
                        q.bytes_taken(d.offset, body_len(&record), true);
                        out.push(QueueDelivery {
                            record,
                            delivery_count: d.delivery_count,
                            redelivered: d.redelivered,
                        })
                    }
                    // A control record, an aborted transaction's record, or one past what one
                    // read returns: settled (the first two) or handed back (the last).
                    None if d.offset < read_end => nothing_there.push(d.offset),
                    None => {
                        handed_back = true;
                        let _ = state.nack(ConsumerId(consumer), &[d.offset], true);
                    }
                }
            }
            if !nothing_there.is_empty() {
                state
                    .ack(ConsumerId(consumer), &nothing_there)
                    .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
            }
            if !early.is_empty() {
                let offsets: Vec<Offset> = early.iter().map(|(o, _)| *o).collect();
                let _ = state.nack(ConsumerId(consumer), &offsets, true);
                for (o, due) in early {
                    let _ = state.schedule(o, due);
                }
                handed_back = true;
            }
            if expired.is_empty() || handed_back {
                break;
            }
            dead.extend(
                state
                    .dead_letter_held(ConsumerId(consumer), &expired, DeadReason::Expired)
                    .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?,
            );
        }
        self.emit_dead(&q, &dead, known)?;
        let saved = self.save(&q, &mut state)?;
        drop(state);
        if let Some(saved) = saved {
            saved.durable().await?;
        }
        let labels = crate::metrics::queue_labels(&q.name);
        self.metrics
            .queue_delivered
            .get_or_create(&labels)
            .inc_by(out.len() as u64);
        Ok(out)
    }

    /// The priorities of the ready messages `window` (ascending) of priority queue `q`,
    /// reading only those the last call did not (a control record or an aborted
    /// transaction's record ranks 0: it is taken and settled without a delivery).
    fn priorities_of(&self, q: &QueueHandle, window: &[Offset]) -> Result<HashMap<Offset, u8>> {
        let mut cache = q.priorities.lock();
        let mut ranks: HashMap<Offset, u8> = window
            .iter()
            .filter_map(|o| cache.get(o).map(|p| (*o, *p)))
            .collect();
        let missing: Vec<Offset> = window
            .iter()
            .copied()
            .filter(|o| !ranks.contains_key(o))
            .collect();
        if !missing.is_empty() {
            let (records, read_end) = self.read_span(q, &missing)?;
            for o in missing {
                match records.get(&o) {
                    Some(r) => {
                        ranks.insert(o, q.policy.priority(r));
                    }
                    None if o < read_end => {
                        ranks.insert(o, 0);
                    }
                    None => {}
                }
            }
        }
        cache.clone_from(&ranks);
        Ok(ranks)
    }

    /// The records of queue `q` at `offsets` (ascending), read from the first to the last in
    /// as few reads as the read budget allows; and where the reads ended (an offset below it
    /// missing from the map is a control record or an aborted transaction's).
    fn read_span(
        &self,
        q: &QueueHandle,
        offsets: &[Offset],
    ) -> Result<(HashMap<Offset, StoredRecord>, Offset)> {
        let mut out = HashMap::new();
        let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
            return Ok((out, Offset::MIN));
        };
        let wanted: std::collections::BTreeSet<Offset> = offsets.iter().copied().collect();
        let mut at = first;
        // A few reads at most: the rest is handed back and read by the next call.
        for _ in 0..4 {
            let span = usize::try_from(last - at + 1).unwrap_or(usize::MAX);
            let read = self.read_records(&q.topic, q.partition, at, span, ACQUIRE_READ_BYTES)?;
            for r in read.records {
                if wanted.contains(&r.offset) {
                    out.insert(r.offset, r);
                }
            }
            if read.next_offset <= at || read.next_offset > last {
                return Ok((out, read.next_offset));
            }
            at = read.next_offset;
        }
        Ok((out, at))
    }

    /// Acknowledges messages `consumer` holds; all or nothing.
    pub async fn queue_ack(&self, name: &str, consumer: u64, offsets: &[Offset]) -> Result<()> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        let acked = state
            .ack(ConsumerId(consumer), offsets)
            .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
        q.bytes_settled(offsets.iter().copied());
        self.save(&q, &mut state)?;
        let labels = crate::metrics::queue_labels(&q.name);
        self.metrics
            .queue_acked
            .get_or_create(&labels)
            .inc_by(acked);
        Ok(())
    }

    /// Returns messages `consumer` holds: back in place (`requeue`, redelivered later) or
    /// dead. Returns the dead ones (rejected, or past the queue's delivery limit); they are
    /// in the dead-letter box already when the queue has a dead-letter target (`dead.rs`).
    pub async fn queue_nack(
        &self,
        name: &str,
        consumer: u64,
        offsets: &[Offset],
        requeue: bool,
    ) -> Result<Vec<DeadLetter>> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        if requeue && let Some(retry) = q.policy.retry.as_ref() {
            // Retry with backoff: back after the policy's delay, or dead once out of retries.
            let retried = state
                .nack_later(ConsumerId(consumer), offsets, self.now_ms(), retry)
                .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
            let later: Vec<Offset> = retried.scheduled.iter().map(|e| e.offset).collect();
            q.bytes_returned(&later);
            q.bytes_settled(retried.dead.iter().map(|d| d.offset));
            self.emit_dead(&q, &retried.dead, HashMap::new())?;
            self.save(&q, &mut state)?;
            return Ok(retried.dead);
        }
        let released = state
            .nack(ConsumerId(consumer), offsets, requeue)
            .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
        q.head_changed();
        q.track_released(&released);
        self.emit_dead(&q, &released.dead, HashMap::new())?;
        self.save(&q, &mut state)?;
        self.count_returned(&q.name, &released);
        Ok(released.dead)
    }

    /// Everything `consumer` holds goes back (a closed channel, a cancelled consumer).
    pub async fn queue_release(&self, name: &str, consumer: u64) -> Result<Vec<DeadLetter>> {
        let q = self.queue(name)?;
        let mut state = q.state.lock().await;
        let released = state.release_consumer(ConsumerId(consumer));
        q.head_changed();
        q.track_released(&released);
        self.emit_dead(&q, &released.dead, HashMap::new())?;
        self.save(&q, &mut state)?;
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
        if q.tracks_bytes() {
            q.bytes.lock().total = Some(0);
        }
        let saved = self.save(&q, &mut state)?;
        drop(state);
        if let Some(saved) = saved {
            saved.durable().await?;
        }
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
            scheduled: state.scheduled(),
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
        self.metrics.queue_scheduled.clear();
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
            m.queue_scheduled
                .get_or_create(&labels)
                .set(state.scheduled() as i64);
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
