//! Committed records one by one, for doors that deliver single messages (AMQP, RocketMQ,
//! MQTT) and for Kafka's share groups: batches decoded, control batches and the records of
//! aborted transactions left out, nothing at or past the last stable offset.

use bytes::Bytes;
use common::Offset;

use crate::broker::Broker;
use crate::error::Result;

/// One stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: Offset,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Headers in order, (name, value).
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// What [`Broker::read_records`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordRead {
    pub records: Vec<StoredRecord>,
    /// Where the next read starts: past every record returned or skipped.
    pub next_offset: Offset,
}

/// An aborted transaction's records: producer `producer_id`'s transactional records in
/// `[first_offset, last_offset]` (the last is its abort marker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedRange {
    pub producer_id: i64,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

impl Broker {
    /// The first offset committed-only readers may not see yet: the start of the oldest
    /// open transaction, else the high watermark.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Result<Offset> {
        let pid = self.partition_id(topic, partition)?;
        let hw = self.partition_watermarks(pid)?.high_watermark;
        Ok(self.stable_below(pid, hw))
    }

    /// The last stable offset of partition `pid` whose high watermark is `hw`.
    pub(crate) fn stable_below(&self, pid: common::PartitionId, hw: Offset) -> Offset {
        match self.hooks.get() {
            Some(h) => h.last_stable_offset(pid, hw),
            None => hw,
        }
    }

    /// Up to `max_records` committed records of a partition from `offset`, reading about
    /// `max_bytes` of batches.
    pub fn read_records(
        &self,
        topic: &str,
        partition: i32,
        offset: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<RecordRead> {
        let pid = self.partition_id(topic, partition)?;
        let marks = self.partition_watermarks(pid)?;
        let stable = self.stable_below(pid, marks.high_watermark);
        let from = offset.max(marks.log_start);
        let mut out = RecordRead {
            records: Vec::new(),
            next_offset: from,
        };
        if from >= stable || max_records == 0 {
            return Ok(out);
        }
        let aborted = match self.hooks.get() {
            Some(h) => h.aborted_between(pid, from, stable),
            None => Vec::new(),
        };
        let cap = self.store.config().max_decompressed_batch_bytes;
        let read = self.store.read(pid, from, max_bytes)?;
        'batches: for chunk in &read.chunks {
            for h in crate::log_scan::headers(chunk) {
                let base = h.base_offset();
                if base >= stable {
                    break 'batches;
                }
                let skip = h.is_control()
                    || (h.is_transactional()
                        && aborted.iter().any(|a| {
                            a.producer_id == h.producer_id()
                                && (a.first_offset..=a.last_offset).contains(&base)
                        }));
                if !skip {
                    let data = storage::records::records_bytes(&h, cap)?;
                    let data = Bytes::copy_from_slice(&data);
                    storage::records::for_each_record(&h, &data, |r| {
                        let at = base + i64::from(r.offset_delta);
                        if at < from || at >= stable || out.records.len() >= max_records {
                            return;
                        }
                        let slice = |s: &[u8]| data.slice_ref(s);
                        out.records.push(StoredRecord {
                            offset: at,
                            timestamp_ms: r.timestamp,
                            key: r.key.map(slice),
                            value: r.value.map(slice),
                            headers: r.headers().map(|(k, v)| (slice(k), v.map(slice))).collect(),
                        });
                        out.next_offset = at + 1;
                    })?;
                    if out.records.len() >= max_records {
                        break 'batches;
                    }
                }
                out.next_offset = out.next_offset.max((h.last_offset() + 1).min(stable));
            }
        }
        Ok(out)
    }
}
