//! Produce, fetch and offset queries: the hot path. Batches stay opaque bytes: the broker
//! reads batch headers for size limits and counts, storage checks CRCs and assigns offsets.

use bytes::{Bytes, BytesMut};
use common::{Offset, PartitionId, TimestampMs};
use storage::batch::BatchHeader;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::hooks::{Admit, PartitionRef};
use crate::metrics::TopicCounters;

/// What a topic's configs require of each produced record (see
/// [`Broker::apply_record_rules`]).
#[derive(Clone, Copy, Debug)]
struct RecordRules {
    keys_required: bool,
    log_append_time: bool,
    before_max_ms: Option<i64>,
    after_max_ms: Option<i64>,
}

/// Result of one partition's append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    pub base_offset: Offset,
    pub log_start_offset: Offset,
    /// The time the broker stamped on the batches (LogAppendTime topics), else `None`.
    pub log_append_time_ms: Option<i64>,
}

/// A produce that is written and waits for its acknowledgement (see
/// [`Broker::produce_begin`]).
pub enum PendingProduce {
    /// Written; `Option`: the LogAppendTime stamped on it.
    Append(storage::PendingAppend, Option<i64>),
    /// A retried batch already in the log; `flush`: the store whose next group commit it
    /// waits for (`flush = sync` partitions, where the original may not be durable yet).
    Duplicate {
        produced: Produced,
        flush: Option<std::sync::Arc<storage::Store>>,
    },
}

impl PendingProduce {
    /// The offset the produce's first record got (`None` for a retried duplicate: it is
    /// where the original went).
    pub fn base_offset(&self) -> Option<Offset> {
        match self {
            PendingProduce::Append(pending, _) => Some(pending.appended.base_offset),
            PendingProduce::Duplicate { produced, .. } => Some(produced.base_offset),
        }
    }

    /// True when [`PendingProduce::acked`] will not wait (nothing to fsync).
    pub fn is_acked(&self) -> bool {
        match self {
            PendingProduce::Append(pending, _) => !pending.waits_for_sync(),
            PendingProduce::Duplicate { flush, .. } => flush.is_none(),
        }
    }

    /// Resolves when the append may be acknowledged: at once for `flush = async`, after
    /// the fsync covering it for `flush = sync`.
    pub async fn acked(self) -> Result<Produced> {
        match self {
            PendingProduce::Append(pending, log_append_time_ms) => {
                let a = pending.durable().await?;
                Ok(Produced {
                    base_offset: a.base_offset,
                    log_start_offset: a.log_start_offset,
                    log_append_time_ms,
                })
            }
            PendingProduce::Duplicate { produced, flush } => {
                if let Some(store) = flush {
                    store.synced().await?;
                }
                Ok(produced)
            }
        }
    }
}

/// Result of one partition's read.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    /// Whole batches (the last may exceed `max_bytes` when it is the first one).
    pub chunks: Vec<Bytes>,
    pub bytes: usize,
    /// Records in `chunks` (from batch headers).
    pub records: u64,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

/// Log start and end ("high watermark": next offset to be written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    pub log_start: Offset,
    pub high_watermark: Offset,
}

impl Broker {
    fn resolve(&self, topic: &str, partition: i32) -> Result<(PartitionId, usize, TopicCounters)> {
        let topics = self.topics.read();
        let t = topics.get(topic)?;
        let pid = t.partition(partition)?;
        Ok((pid, t.config.max_message_bytes, t.counters.clone()))
    }

    pub fn partition_id(&self, topic: &str, partition: i32) -> Result<PartitionId> {
        Ok(self.resolve(topic, partition)?.0)
    }

    /// The partition, its batch size limit, counters and record rules, under one lock.
    fn resolve_for_produce(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(PartitionId, usize, TopicCounters, RecordRules)> {
        let topics = self.topics.read();
        let t = topics.get(topic)?;
        let c = &t.config;
        let rules = RecordRules {
            keys_required: c.is_compacted(),
            log_append_time: c.log_append_time,
            before_max_ms: c.timestamp_before_max_ms,
            after_max_ms: c.timestamp_after_max_ms,
        };
        Ok((
            t.partition(partition)?,
            c.max_message_bytes,
            t.counters.clone(),
            rules,
        ))
    }

    /// Applies the topic's record rules. Compacted topics need a key on every record
    /// (Kafka refuses keyless records there with INVALID_RECORD); CreateTime topics with
    /// `message.timestamp.before/after.max.ms` refuse records outside the bounds (records
    /// without a timestamp, -1, pass, as in Kafka) — both in one decoding pass, only for
    /// topics that set them. LogAppendTime topics get every batch stamped with the append
    /// time, which is returned.
    fn apply_record_rules(
        &self,
        topic: &str,
        rules: RecordRules,
        batches: &mut BytesMut,
    ) -> Result<Option<i64>> {
        let now = self.clock.now_ms();
        let bounded = !rules.log_append_time
            && (rules.before_max_ms.is_some() || rules.after_max_ms.is_some());
        if rules.keys_required || bounded {
            let low = rules
                .before_max_ms
                .map_or(i64::MIN, |b| now.saturating_sub(b));
            let high = rules
                .after_max_ms
                .map_or(i64::MAX, |a| now.saturating_add(a));
            let cap = self.store.config().max_decompressed_batch_bytes;
            for h in crate::log_scan::headers(batches) {
                let data = storage::records::records_bytes(&h, cap)?;
                let (mut keyless, mut outside) = (false, None);
                storage::records::for_each_record(&h, &data, |r| {
                    keyless |= r.key.is_none();
                    if bounded && r.timestamp != -1 && (r.timestamp < low || r.timestamp > high) {
                        outside.get_or_insert(r.timestamp);
                    }
                })?;
                if rules.keys_required && keyless {
                    return Err(BrokerError::InvalidRecord(format!(
                        "topic {topic} is compacted (cleanup.policy contains compact): every \
                         record needs a key"
                    )));
                }
                if let Some(ts) = outside {
                    return Err(BrokerError::InvalidTimestamp(format!(
                        "record timestamp {ts} is outside [{low}, {high}] (topic {topic}: \
                         message.timestamp.before.max.ms / after.max.ms)"
                    )));
                }
            }
        }
        if !rules.log_append_time {
            return Ok(None);
        }
        let mut at = 0;
        while at < batches.len() {
            let len = storage::batch::BatchHeader::parse(&batches[at..])?.total_len();
            storage::batch::set_log_append_time(&mut batches[at..at + len], now);
            at += len;
        }
        Ok(Some(now))
    }

    /// Appends Kafka v2 record batches to a partition, stored as sent, and waits for the
    /// partition's acknowledgement (durable for `flush = sync`).
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
    ) -> Result<Produced> {
        self.produce_begin(topic, partition, batches)
            .await?
            .acked()
            .await
    }

    /// The first half of [`Broker::produce`]: checks and writes the batches (readable when
    /// this returns; producer-sequence state already advanced), leaving the wait for
    /// durability to [`PendingProduce::acked`]. A connection calls this for its requests in
    /// arrival order, so appends keep the client's order while several fsync waits overlap.
    pub async fn produce_begin(
        &self,
        topic: &str,
        partition: i32,
        batches: BytesMut,
    ) -> Result<PendingProduce> {
        if self.is_shutting_down() {
            return Err(BrokerError::ShuttingDown);
        }
        let (pid, max_bytes, counters, rules) = self.resolve_for_produce(topic, partition)?;
        let seen = inspect_client_batches(&batches, max_bytes)?;
        let mut batches = batches;
        let stamped = self.apply_record_rules(topic, rules, &mut batches)?;
        let records = seen.records;
        let len = batches.len() as u64;
        let log_failure = |e: &storage::StorageError| log_append_failure(topic, partition, e);
        let hooks = self.hooks.get().filter(|_| seen.from_producer);
        let Some(hooks) = hooks else {
            let pending = self
                .store
                .append_begin(pid, batches)
                .inspect_err(log_failure)?;
            counters.bytes_in.inc_by(len);
            counters.records_in.inc_by(records);
            return Ok(PendingProduce::Append(pending, stamped));
        };
        // Producer batches: checked, written and recorded under the partition's append lock
        // so two in-flight requests cannot both pass a sequence check. The lock is not held
        // while the append waits for its fsync: the next batch of the same producer may be
        // written meanwhile, and its check must see this one.
        let lock = self.append_lock(pid);
        let _guard = lock.lock().await;
        let at = PartitionRef {
            topic,
            partition,
            id: pid,
            log_end: self.store.offsets(pid)?.log_end,
        };
        let note = match hooks.before_append(at, &batches)? {
            Admit::Append { note } => note,
            Admit::Duplicate { base_offset } => {
                let log_start_offset = self.store.offsets(pid)?.log_start;
                let produced = Produced {
                    base_offset,
                    log_start_offset,
                    log_append_time_ms: None,
                };
                // The original may still be waiting for its fsync: a retry must not be
                // acknowledged before it is durable.
                let sync = self.store.partition_config(pid)?.flush == storage::Flush::Sync;
                return Ok(PendingProduce::Duplicate {
                    produced,
                    flush: sync.then(|| self.store.clone()),
                });
            }
        };
        // The hook reads the producer fields, which the write leaves alone: keep a copy of
        // the headers' bytes only (61 bytes per batch), not the records.
        let headers = batch_headers(&batches);
        let pending = self
            .store
            .append_begin(pid, batches)
            .inspect_err(log_failure);
        let base = pending.as_ref().ok().map(|a| a.appended.base_offset);
        hooks.after_append(at, &headers, note, base);
        let pending = pending?;
        counters.bytes_in.inc_by(len);
        counters.records_in.inc_by(records);
        Ok(PendingProduce::Append(pending, stamped))
    }

    /// Appends one batch to partition 0 of each of `topics` (2 or more, distinct), stored
    /// once (the storage's shared entry): each topic reads it at its own next offset. For
    /// a message routed to several queues. Each topic's record rules apply; batches of an
    /// idempotent or transactional producer are refused (their sequence state is one
    /// partition's). Like [`Broker::produce_begin`], the batch is readable when this
    /// returns and the result resolves when it is durable.
    /// Returns the acknowledgement and the batch's base offset in each topic.
    pub fn produce_shared_begin(
        &self,
        topics: &[&str],
        batches: BytesMut,
    ) -> Result<(PendingProduce, Vec<Offset>)> {
        if self.is_shutting_down() {
            return Err(BrokerError::ShuttingDown);
        }
        let mut pids = Vec::with_capacity(topics.len());
        let mut all_counters = Vec::with_capacity(topics.len());
        let mut batches = batches;
        let mut stamped = None;
        for topic in topics {
            let (pid, max_bytes, counters, rules) = self.resolve_for_produce(topic, 0)?;
            let seen = inspect_client_batches(&batches, max_bytes)?;
            if seen.from_producer {
                return Err(BrokerError::InvalidRecord(
                    "a batch stored for several topics carries no producer id".into(),
                ));
            }
            stamped = stamped.or(self.apply_record_rules(topic, rules, &mut batches)?);
            pids.push(pid);
            all_counters.push((counters, seen.records));
        }
        let len = batches.len() as u64;
        let (appended, pending) = self
            .store
            .append_shared_begin(&pids, batches)
            .inspect_err(|e| log_append_failure(topics[0], 0, e))?;
        for (counters, records) in all_counters {
            counters.bytes_in.inc_by(len);
            counters.records_in.inc_by(records);
        }
        let bases = appended.iter().map(|a| a.base_offset).collect();
        Ok((PendingProduce::Append(pending, stamped), bases))
    }

    /// Reads whole batches from the one holding `offset`, up to about `max_bytes`.
    /// `offset == high watermark` returns no data; outside [log start, HW] is
    /// `OffsetOutOfRange`.
    pub fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<Fetched> {
        let (pid, _, _) = self.resolve(topic, partition)?;
        let marks = self.store.offsets(pid)?;
        if offset < marks.log_start || offset > marks.log_end {
            return Err(BrokerError::OffsetOutOfRange {
                offset,
                log_start: marks.log_start,
                log_end: marks.log_end,
            });
        }
        let mut out = Fetched {
            chunks: Vec::new(),
            bytes: 0,
            records: 0,
            high_watermark: marks.log_end,
            log_start_offset: marks.log_start,
        };
        if offset == marks.log_end || max_bytes == 0 {
            return Ok(out);
        }
        let read = self.store.read(pid, offset, max_bytes)?;
        let mut records = 0u64;
        for c in &read.chunks {
            out.bytes += c.len();
            records += crate::log_scan::headers(c)
                .map(|h| h.record_count().max(0) as u64)
                .sum::<u64>();
        }
        out.chunks = read.chunks;
        out.records = records;
        Ok(out)
    }

    /// Counts what a front door actually sent from `fetch` results (a long poll may read
    /// several times before answering).
    pub fn count_fetched(&self, topic: &str, bytes: u64, records: u64) {
        if let Ok(t) = self.topics.read().get(topic) {
            t.counters.bytes_out.inc_by(bytes);
            t.counters.records_out.inc_by(records);
        }
    }

    pub fn watermarks(&self, topic: &str, partition: i32) -> Result<Watermarks> {
        let (pid, _, _) = self.resolve(topic, partition)?;
        let o = self.store.offsets(pid)?;
        Ok(Watermarks {
            log_start: o.log_start,
            high_watermark: o.log_end,
        })
    }

    /// First offset whose timestamp is >= `ts`, with that timestamp.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: i32,
        ts: TimestampMs,
    ) -> Result<Option<(Offset, TimestampMs)>> {
        let (pid, _, _) = self.resolve(topic, partition)?;
        Ok(self.store.offset_for_timestamp(pid, ts)?)
    }

    /// Offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<(Offset, TimestampMs)>> {
        let (pid, _, _) = self.resolve(topic, partition)?;
        Ok(self.store.max_timestamp(pid)?)
    }

    /// DeleteRecords: moves the log start to `before` (-1 = high watermark).
    pub fn delete_records(&self, topic: &str, partition: i32, before: Offset) -> Result<Offset> {
        let (pid, _, _) = self.resolve(topic, partition)?;
        let marks = self.store.offsets(pid)?;
        let before = if before == -1 { marks.log_end } else { before };
        if before < 0 || before > marks.log_end {
            return Err(BrokerError::OffsetOutOfRange {
                offset: before,
                log_start: marks.log_start,
                log_end: marks.log_end,
            });
        }
        Ok(self.store.delete_records(pid, before)?)
    }

    /// Bumps on every append; long-polling fetches wait on it.
    pub fn subscribe_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.subscribe_appends()
    }
}

/// What one walk over a produce request's batch headers found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Inspection {
    /// Records in all batches (from the headers).
    records: u64,
    /// The batches come from a producer with an id (idempotent or transactional): the
    /// partition hooks check and follow them.
    from_producer: bool,
}

/// One walk over the headers of the batches a client sent: whole v2 batches (a partial
/// one is CORRUPT_MESSAGE, another magic INVALID_RECORD), each within `max_bytes`, and the
/// rules on top of storage's checks of each batch against its records (Kafka's, from its
/// log validator): only the broker writes control batches (a client's would stop
/// read_committed consumers at a fake marker); a batch with a producer id carries a
/// sequence; a transactional batch carries a producer id; and the batches of one request
/// come from one producer, so the hooks, which read the first batch's producer fields,
/// see every batch.
fn inspect_client_batches(batches: &[u8], max_bytes: usize) -> Result<Inspection> {
    let mut first: Option<(i64, i16, bool)> = None;
    let (mut at, mut records, mut i) = (0, 0u64, 0usize);
    while at < batches.len() {
        let h = client_batch_header(&batches[at..], i, at)?;
        if h.total_len() > max_bytes {
            return Err(BrokerError::MessageTooLarge {
                size: h.total_len(),
                max: max_bytes,
            });
        }
        let id = producer_of(&h, i)?;
        match first {
            None => first = Some(id),
            Some(f) if f != id => {
                return Err(BrokerError::InvalidRecord(format!(
                    "batch {i} comes from producer {id:?}, batch 0 from {f:?}: one request \
                     carries one producer's batches"
                )));
            }
            Some(_) => {}
        }
        records += h.record_count().max(0) as u64;
        at += h.total_len();
        i += 1;
    }
    match first {
        None => Err(BrokerError::InvalidRecord("no record batch".into())),
        Some((producer_id, _, _)) => Ok(Inspection {
            records,
            from_producer: producer_id >= 0,
        }),
    }
}

/// The header of batch `i` at byte `at`: a v2 batch, whole.
fn client_batch_header(rest: &[u8], i: usize, at: usize) -> Result<BatchHeader<'_>> {
    if let Some(&magic) = rest.get(storage::batch::MAGIC_OFFSET)
        && magic != 2
    {
        return Err(BrokerError::InvalidRecord(format!(
            "batch {i} has magic {}: only v2 record batches are accepted",
            magic as i8
        )));
    }
    BatchHeader::parse(rest).map_err(|e| {
        BrokerError::CorruptMessage(format!("batch {i} at byte {at} is cut short: {e}"))
    })
}

/// (producer id, epoch, transactional) of a client's batch, after the rules on who may
/// write what; producer id -1 for batches without one.
fn producer_of(h: &BatchHeader<'_>, i: usize) -> Result<(i64, i16, bool)> {
    let invalid = |msg: String| Err(BrokerError::InvalidRecord(msg));
    if h.is_control() {
        return invalid(format!(
            "batch {i} has the control bit set: only the broker writes control batches"
        ));
    }
    let producer_id = h.producer_id();
    if producer_id >= 0 && h.base_sequence() < 0 {
        return invalid(format!(
            "batch {i} has producer id {producer_id} but base sequence {}",
            h.base_sequence()
        ));
    }
    if h.is_transactional() && producer_id < 0 {
        return invalid(format!("batch {i} is transactional without a producer id"));
    }
    Ok(if producer_id < 0 {
        (-1, 0, false)
    } else {
        (producer_id, h.producer_epoch(), h.is_transactional())
    })
}

/// The batches with their records cut off: each batch's 61-byte header, its length field
/// rewritten to cover only the header (what the hooks read after the write).
fn batch_headers(batches: &[u8]) -> Vec<u8> {
    const HEADER: usize = storage::batch::HEADER_BYTES;
    let mut out = Vec::new();
    for h in crate::log_scan::headers(batches) {
        let start = out.len();
        out.extend_from_slice(&h.bytes()[..HEADER]);
        // batchLength counts the bytes after the length field (offset 8..12).
        let len = (HEADER - storage::batch::LOG_OVERHEAD) as i32;
        out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
    }
    out
}

/// Storage failures on produce (disk full, I/O errors) are the operator's business: say
/// which partition could not be written and why. Client mistakes (bad batches) are not.
fn log_append_failure(topic: &str, partition: i32, e: &storage::StorageError) {
    use storage::StorageError as S;
    if !matches!(e, S::CorruptBatch { .. } | S::InvalidBatch(_)) {
        tracing::error!(topic, partition, error = %e, "produce failed: could not append to the log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer: Option<(i64, i32)>, records: usize) -> Vec<u8> {
        let mut b = storage::batch_builder::BatchBuilder::new();
        if let Some((id, seq)) = producer {
            b = b.producer(id, 0, seq);
        }
        for _ in 0..records {
            b.record(None, Some(b"v"), 1_000, &[]);
        }
        b.build()
    }

    #[test]
    fn one_walk_counts_records_and_finds_the_producer() {
        let mut two = batch(None, 3);
        two.extend(batch(None, 2));
        let seen = inspect_client_batches(&two, 1 << 20).unwrap();
        assert_eq!(
            seen,
            Inspection {
                records: 5,
                from_producer: false
            }
        );
        let idempotent = batch(Some((7, 0)), 1);
        assert!(
            inspect_client_batches(&idempotent, 1 << 20)
                .unwrap()
                .from_producer
        );
    }

    #[test]
    fn refuses_partial_batches_other_magics_big_batches_and_mixed_producers() {
        let b = batch(None, 1);
        let cut = inspect_client_batches(&b[..b.len() - 1], 1 << 20);
        assert!(
            matches!(cut, Err(BrokerError::CorruptMessage(_))),
            "{cut:?}"
        );
        let mut old = b.clone();
        old[storage::batch::MAGIC_OFFSET] = 1;
        let magic = inspect_client_batches(&old, 1 << 20);
        assert!(
            matches!(magic, Err(BrokerError::InvalidRecord(_))),
            "{magic:?}"
        );
        let big = inspect_client_batches(&b, b.len() - 1);
        assert!(
            matches!(big, Err(BrokerError::MessageTooLarge { .. })),
            "{big:?}"
        );
        let mut mixed = batch(Some((7, 0)), 1);
        mixed.extend(batch(Some((8, 0)), 1));
        let two_producers = inspect_client_batches(&mixed, 1 << 20);
        assert!(matches!(two_producers, Err(BrokerError::InvalidRecord(_))));
        assert!(inspect_client_batches(&[], 1 << 20).is_err());
    }
}
