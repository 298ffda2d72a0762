//! Idempotent producers (KIP-98): per (partition, producer id) the current epoch and the
//! sequence ranges and offsets of the last five batches — a producer has at most five
//! requests in flight, so a retry is always one of them. A retried batch is acknowledged
//! again with its original offset and not stored twice; a gap in sequence numbers is
//! OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is fenced.
//!
//! The table is derived state: it is rebuilt at open from a snapshot (`meta/producers.json`,
//! written at shutdown and periodically) plus a scan of every partition's log past the
//! offset the snapshot covered. So after a kill -9 a producer's retry of a batch that was
//! stored (but whose acknowledgement was lost) is still recognised.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use broker::batch::BatchHeader;
use common::{Offset, PartitionId, TimestampMs};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{CoordError, Result};
use broker::Broker;

/// Batches remembered per producer and partition (Kafka's max in-flight requests).
pub const MAX_CACHED_BATCHES: usize = 5;
const SNAPSHOT_FILE: &str = "producers.json";

/// What a produce of one idempotent batch run should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New batches: append them.
    Append,
    /// A retry of batches already stored at `base_offset`: acknowledge, do not store.
    Duplicate { base_offset: Offset },
}

/// The producer fields of one batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchIdentity {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub record_count: i64,
}

impl BatchIdentity {
    pub fn of(header: &BatchHeader<'_>) -> BatchIdentity {
        let first_seq = header.base_sequence();
        let last_seq = ((i64::from(first_seq) + i64::from(header.last_offset_delta()))
            % (i64::from(i32::MAX) + 1)) as i32;
        BatchIdentity {
            producer_id: header.producer_id(),
            epoch: header.producer_epoch(),
            first_seq,
            last_seq,
            record_count: i64::from(header.last_offset_delta()) + 1,
        }
    }

    fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.first_seq >= 0
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CachedBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: Offset,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<CachedBatch>,
    last_seen_ms: TimestampMs,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerEntry {
    fn verdict(&self, id: &BatchIdentity) -> Result<Verdict> {
        if id.epoch < self.epoch {
            return Err(CoordError::ProducerFenced(format!(
                "producer {} epoch {} is older than the current epoch {}",
                id.producer_id, id.epoch, self.epoch
            )));
        }
        if id.epoch > self.epoch {
            return if id.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(CoordError::OutOfOrderSequence(format!(
                    "producer {} started epoch {} at sequence {}, expected 0",
                    id.producer_id, id.epoch, id.first_seq
                )))
            };
        }
        if let Some(b) = self
            .batches
            .iter()
            .find(|b| b.first_seq == id.first_seq && b.last_seq == id.last_seq)
        {
            return Ok(Verdict::Duplicate {
                base_offset: b.base_offset,
            });
        }
        match self.batches.back() {
            Some(last) if id.first_seq != next_seq(last.last_seq) => {
                Err(CoordError::OutOfOrderSequence(format!(
                    "producer {} sent sequence {} after {}",
                    id.producer_id, id.first_seq, last.last_seq
                )))
            }
            _ => Ok(Verdict::Append),
        }
    }

    fn record(&mut self, id: &BatchIdentity, base_offset: Offset, now_ms: TimestampMs) {
        if id.epoch != self.epoch {
            self.epoch = id.epoch;
            self.batches.clear();
        }
        if self.batches.len() == MAX_CACHED_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(CachedBatch {
            first_seq: id.first_seq,
            last_seq: id.last_seq,
            base_offset,
        });
        self.last_seen_ms = now_ms;
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    /// Per partition, the log end offset the entries cover.
    covered_to: HashMap<u32, Offset>,
    entries: Vec<(u32, i64, ProducerEntry)>,
}

/// The idempotence table of the whole broker.
pub struct ProducerStateTable {
    /// Check-append-record runs under the core's append lock of the partition (see
    /// `hooks.rs`), so two in-flight requests of one producer cannot both pass the check.
    entries: Mutex<HashMap<(u32, i64), ProducerEntry>>,
    dir: PathBuf,
    idle_expiry_ms: i64,
}

impl ProducerStateTable {
    /// An empty table that snapshots into `meta_dir`.
    pub fn new(meta_dir: &Path, idle_expiry_ms: i64) -> ProducerStateTable {
        ProducerStateTable {
            entries: Mutex::new(HashMap::new()),
            dir: meta_dir.to_path_buf(),
            idle_expiry_ms,
        }
    }

    /// Decides what to do with a run of batches from one idempotent producer. The first
    /// batch decides: a retry repeats the whole request, new batches must continue it.
    pub fn check(&self, p: PartitionId, ids: &[BatchIdentity]) -> Result<Verdict> {
        let Some(first) = ids.first().filter(|id| id.is_idempotent()) else {
            return Ok(Verdict::Append);
        };
        let entries = self.entries.lock();
        let Some(entry) = entries.get(&(p.0, first.producer_id)) else {
            // Unknown producer (new, or its state expired): accept, as Kafka does.
            return Ok(Verdict::Append);
        };
        let verdict = entry.verdict(first)?;
        if let Verdict::Append = verdict {
            for pair in ids.windows(2) {
                if pair[1].first_seq != next_seq(pair[0].last_seq) {
                    return Err(CoordError::OutOfOrderSequence(format!(
                        "batches in one request jump from sequence {} to {}",
                        pair[0].last_seq, pair[1].first_seq
                    )));
                }
            }
        }
        Ok(verdict)
    }

    /// Remembers appended batches; `base_offset` is the first batch's offset.
    pub fn record(
        &self,
        p: PartitionId,
        ids: &[BatchIdentity],
        base_offset: Offset,
        now_ms: TimestampMs,
    ) {
        let mut entries = self.entries.lock();
        let mut offset = base_offset;
        for id in ids {
            if id.is_idempotent() {
                let entry = entries
                    .entry((p.0, id.producer_id))
                    .or_insert_with(|| ProducerEntry {
                        epoch: id.epoch,
                        batches: VecDeque::new(),
                        last_seen_ms: now_ms,
                    });
                entry.record(id, offset, now_ms);
            }
            offset += id.record_count;
        }
    }

    /// Forgets producers idle for longer than the expiry, and everything about `p` when a
    /// partition is deleted.
    pub fn expire(&self, now_ms: TimestampMs) {
        let cutoff = now_ms - self.idle_expiry_ms;
        self.entries.lock().retain(|_, e| e.last_seen_ms >= cutoff);
    }

    pub fn forget_partition(&self, p: PartitionId) {
        self.entries.lock().retain(|(part, _), _| *part != p.0);
    }

    /// (producer id, epoch, last sequence, last seen) of the producers of `p`.
    pub fn describe(&self, p: PartitionId) -> Vec<(i64, i16, i32, TimestampMs)> {
        self.entries
            .lock()
            .iter()
            .filter(|((part, _), _)| *part == p.0)
            .map(|((_, id), e)| {
                let last_seq = e.batches.back().map_or(-1, |b| b.last_seq);
                (*id, e.epoch, last_seq, e.last_seen_ms)
            })
            .collect()
    }

    pub fn producer_count(&self) -> usize {
        self.entries.lock().len()
    }

    /// Writes the snapshot atomically. `log_ends` must be read *before* this call, so
    /// the snapshot never claims to cover an append whose state it lacks.
    pub fn snapshot(&self, log_ends: &[(PartitionId, Offset)]) -> Result<()> {
        let snap = Snapshot {
            covered_to: log_ends.iter().map(|(p, o)| (p.0, *o)).collect(),
            entries: self
                .entries
                .lock()
                .iter()
                .map(|((p, id), e)| (*p, *id, e.clone()))
                .collect(),
        };
        crate::derived::write_snapshot(&self.dir, SNAPSHOT_FILE, &snap, "producer state")
    }

    /// Loads the snapshot (if any) and scans each partition's log past what it covers.
    pub fn rebuild(
        &self,
        broker: &Broker,
        partitions: &[PartitionId],
        now_ms: TimestampMs,
    ) -> Result<()> {
        let snap: Snapshot =
            crate::derived::load_snapshot(&self.dir, SNAPSHOT_FILE, "producer state");
        {
            let mut entries = self.entries.lock();
            for (p, id, e) in snap.entries {
                entries.insert((p, id), e);
            }
        }
        let scanned = crate::derived::scan_past(broker, partitions, &snap.covered_to, |p, h| {
            let id = BatchIdentity::of(h);
            // Re-recording what the snapshot already holds is harmless: a duplicate is
            // skipped, anything else overwrites.
            if !matches!(
                self.check(p, std::slice::from_ref(&id)),
                Ok(Verdict::Duplicate { .. })
            ) {
                self.record(p, std::slice::from_ref(&id), h.base_offset(), now_ms);
            }
        })?;
        self.expire(now_ms);
        tracing::info!(
            producers = self.producer_count(),
            batches_scanned = scanned,
            "idempotent producer state rebuilt"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pid: i64, epoch: i16, first: i32, count: i32) -> BatchIdentity {
        BatchIdentity {
            producer_id: pid,
            epoch,
            first_seq: first,
            last_seq: ((i64::from(first) + i64::from(count) - 1) % (i64::from(i32::MAX) + 1))
                as i32,
            record_count: i64::from(count),
        }
    }

    fn table() -> ProducerStateTable {
        ProducerStateTable::new(Path::new("/nonexistent"), 1000)
    }

    const P: PartitionId = PartitionId(7);

    #[test]
    fn in_order_batches_append_and_retries_get_their_original_offset() {
        let t = table();
        let a = id(1, 0, 0, 10);
        let b = id(1, 0, 10, 5);
        assert_eq!(t.check(P, &[a]).unwrap(), Verdict::Append);
        t.record(P, &[a], 100, 0);
        assert_eq!(t.check(P, &[b]).unwrap(), Verdict::Append);
        t.record(P, &[b], 110, 0);
        assert_eq!(
            t.check(P, &[a]).unwrap(),
            Verdict::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            t.check(P, &[b]).unwrap(),
            Verdict::Duplicate { base_offset: 110 }
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let t = table();
        for i in 0..7 {
            t.record(P, &[id(1, 0, i, 1)], i64::from(i), 0);
        }
        assert!(matches!(
            t.check(P, &[id(1, 0, 6, 1)]),
            Ok(Verdict::Duplicate { base_offset: 6 })
        ));
        assert!(matches!(
            t.check(P, &[id(1, 0, 2, 1)]),
            Ok(Verdict::Duplicate { .. })
        ));
        // Sequence 1 fell out of the window: neither a known retry nor the next batch.
        assert!(matches!(
            t.check(P, &[id(1, 0, 1, 1)]),
            Err(CoordError::OutOfOrderSequence(_))
        ));
    }

    #[test]
    fn gaps_are_out_of_order_and_old_epochs_are_fenced() {
        let t = table();
        t.record(P, &[id(1, 3, 0, 10)], 0, 0);
        assert!(matches!(
            t.check(P, &[id(1, 3, 11, 1)]),
            Err(CoordError::OutOfOrderSequence(_))
        ));
        assert!(matches!(
            t.check(P, &[id(1, 2, 10, 1)]),
            Err(CoordError::ProducerFenced(_))
        ));
        // A bumped epoch starts again at sequence 0.
        assert_eq!(t.check(P, &[id(1, 4, 0, 1)]).unwrap(), Verdict::Append);
        assert!(matches!(
            t.check(P, &[id(1, 4, 5, 1)]),
            Err(CoordError::OutOfOrderSequence(_))
        ));
    }

    #[test]
    fn producers_are_independent_per_partition_and_expire_when_idle() {
        let t = table();
        t.record(P, &[id(1, 0, 0, 1)], 0, 0);
        assert_eq!(
            t.check(PartitionId(8), &[id(1, 0, 0, 1)]).unwrap(),
            Verdict::Append
        );
        t.expire(5000);
        assert_eq!(t.producer_count(), 0);
        // Unknown again: any sequence is accepted.
        assert_eq!(t.check(P, &[id(1, 0, 1, 1)]).unwrap(), Verdict::Append);
    }

    #[test]
    fn sequence_numbers_wrap_after_i32_max() {
        let t = table();
        t.record(P, &[id(1, 0, i32::MAX, 1)], 0, 0);
        assert_eq!(t.check(P, &[id(1, 0, 0, 1)]).unwrap(), Verdict::Append);
    }

    #[test]
    fn snapshot_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let t = ProducerStateTable::new(dir.path(), i64::MAX / 2);
        t.record(P, &[id(9, 1, 0, 3)], 40, 0);
        t.snapshot(&[(P, 43)]).unwrap();
        let broker = crate::test_broker(dir.path());
        let again = ProducerStateTable::new(dir.path(), i64::MAX / 2);
        again.rebuild(&broker, &[], 0).unwrap();
        assert_eq!(
            again.check(P, &[id(9, 1, 0, 3)]).unwrap(),
            Verdict::Duplicate { base_offset: 40 }
        );
    }
}
