//! Per-partition transaction state the read path needs: the first offset of every open
//! transaction (the last stable offset is the smallest, else the high watermark) and the
//! aborted transactions (producer id, first offset, marker offset) that read_committed
//! fetches report so clients drop their records.
//!
//! Derived state, like the idempotence table: rebuilt at open from a snapshot
//! (`meta/txn_index.json`) plus a scan of each partition's log past what it covers; the
//! scan sees transactional batches open transactions and markers close them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use broker::batch::BatchHeader;
use broker::{AbortedRange, Broker};
use common::{Offset, PartitionId};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::txn::control;

const SNAPSHOT_FILE: &str = "txn_index.json";

/// One aborted transaction in one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// Offset of its abort marker.
    pub last_offset: Offset,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PartitionTxns {
    /// Open transactions: producer id → first offset (a lower bound while its first
    /// append is in flight).
    ongoing: BTreeMap<i64, Offset>,
    /// Ordered by marker offset.
    aborted: Vec<AbortedTxn>,
}

#[derive(Default, Serialize, Deserialize)]
struct Snapshot {
    covered_to: HashMap<u32, Offset>,
    partitions: Vec<(u32, PartitionTxns)>,
}

pub struct PartitionTxnIndex {
    parts: Mutex<HashMap<u32, PartitionTxns>>,
    dir: PathBuf,
}

impl PartitionTxnIndex {
    pub fn new(meta_dir: &Path) -> Self {
        Self {
            parts: Mutex::new(HashMap::new()),
            dir: meta_dir.to_path_buf(),
        }
    }

    /// Registers an open transaction of `producer_id` before its first batch is appended,
    /// at `lower_bound` (the log end before the append). Returns true when this call
    /// opened it (the caller then fixes or cancels it).
    pub fn begin(&self, p: PartitionId, producer_id: i64, lower_bound: Offset) -> bool {
        let mut parts = self.parts.lock();
        let ongoing = &mut parts.entry(p.0).or_default().ongoing;
        if ongoing.contains_key(&producer_id) {
            return false;
        }
        ongoing.insert(producer_id, lower_bound);
        true
    }

    /// The first append landed at `first_offset`.
    pub fn fix_first(&self, p: PartitionId, producer_id: i64, first_offset: Offset) {
        if let Some(t) = self.parts.lock().get_mut(&p.0)
            && let Some(o) = t.ongoing.get_mut(&producer_id)
        {
            *o = (*o).max(first_offset);
        }
    }

    /// The first append failed: nothing is open after all.
    pub fn cancel(&self, p: PartitionId, producer_id: i64) {
        if let Some(t) = self.parts.lock().get_mut(&p.0) {
            t.ongoing.remove(&producer_id);
        }
    }

    /// A marker of `producer_id` was written at `offset`. An abort already recorded (the
    /// rebuild re-scans what the snapshot may hold) is not recorded twice: clients would
    /// take a second entry for a later transaction of the producer and drop its records.
    pub fn end(&self, p: PartitionId, producer_id: i64, commit: bool, offset: Offset) {
        let mut parts = self.parts.lock();
        let t = parts.entry(p.0).or_default();
        if let Some(first) = t.ongoing.remove(&producer_id)
            && !commit
            && !t
                .aborted
                .iter()
                .rev()
                .take_while(|a| a.last_offset >= offset)
                .any(|a| a.producer_id == producer_id && a.last_offset == offset)
        {
            t.aborted.push(AbortedTxn {
                producer_id,
                first_offset: first,
                last_offset: offset,
            });
        }
    }

    /// Applies one stored batch (log scan at open).
    fn observe(&self, p: PartitionId, h: &BatchHeader<'_>) {
        if !h.is_transactional() || h.producer_id() < 0 {
            return;
        }
        if h.is_control() {
            if let Some(commit) = control::marker_kind(h) {
                self.end(p, h.producer_id(), commit, h.base_offset());
            }
        } else {
            self.begin(p, h.producer_id(), h.base_offset());
        }
    }

    /// Last stable offset: the first offset of the oldest open transaction, else `hw`.
    pub fn last_stable_offset(&self, p: PartitionId, hw: Offset) -> Offset {
        self.parts
            .lock()
            .get(&p.0)
            .and_then(|t| t.ongoing.values().min().copied())
            .map_or(hw, |first| first.min(hw))
    }

    /// Aborted transactions overlapping offsets `from..to`: (producer id, first offset), as
    /// Kafka's Fetch response lists them.
    pub fn aborted_between(&self, p: PartitionId, from: Offset, to: Offset) -> Vec<(i64, Offset)> {
        self.aborted_ranges(p, from, to)
            .into_iter()
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// Aborted transactions overlapping offsets `from..to`, with their marker offsets (for
    /// the core's committed-only reader).
    pub fn aborted_ranges(&self, p: PartitionId, from: Offset, to: Offset) -> Vec<AbortedRange> {
        let parts = self.parts.lock();
        let Some(t) = parts.get(&p.0) else {
            return Vec::new();
        };
        let start = t.aborted.partition_point(|a| a.last_offset < from);
        t.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .map(|a| AbortedRange {
                producer_id: a.producer_id,
                first_offset: a.first_offset,
                last_offset: a.last_offset,
            })
            .collect()
    }

    /// Open transactions of `p`: (producer id, first offset).
    pub fn ongoing(&self, p: PartitionId) -> Vec<(i64, Offset)> {
        self.parts
            .lock()
            .get(&p.0)
            .map(|t| t.ongoing.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    pub fn forget_partition(&self, p: PartitionId) {
        self.parts.lock().remove(&p.0);
    }

    /// Writes the snapshot atomically; `log_ends` must be read before the call. Aborted
    /// entries below each partition's log start are dropped first.
    pub fn snapshot(&self, log_ends: &[(PartitionId, Offset, Offset)]) -> Result<()> {
        let partitions = {
            let mut parts = self.parts.lock();
            for (p, start, _) in log_ends {
                if let Some(t) = parts.get_mut(&p.0) {
                    t.aborted.retain(|a| a.last_offset >= *start);
                }
            }
            parts.retain(|_, t| !t.ongoing.is_empty() || !t.aborted.is_empty());
            parts.iter().map(|(p, t)| (*p, t.clone())).collect()
        };
        let snap = Snapshot {
            covered_to: log_ends.iter().map(|(p, _, end)| (p.0, *end)).collect(),
            partitions,
        };
        crate::derived::write_snapshot(&self.dir, SNAPSHOT_FILE, &snap, "transaction index")
    }

    /// Loads the snapshot and scans every partition's log past what it covers.
    pub fn rebuild(&self, broker: &Broker, partitions: &[PartitionId]) -> Result<()> {
        let snap: Snapshot =
            crate::derived::load_snapshot(&self.dir, SNAPSHOT_FILE, "transaction index");
        self.parts.lock().extend(snap.partitions);
        crate::derived::scan_past(broker, partitions, &snap.covered_to, |p, h| {
            self.observe(p, h)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId(3);

    /// Batches need a recent timestamp, or retention expires them at once.
    fn now_ms() -> i64 {
        use common::Clock;
        common::SystemClock.now_ms()
    }

    /// A one-record transactional data batch of `producer_id` (a marker without the
    /// control bit).
    fn data_batch(producer_id: i64) -> bytes::BytesMut {
        let mut b = control::marker_batch(producer_id, 0, true, 0, now_ms());
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes());
        b[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = BatchHeader::parse(&b).unwrap().computed_crc();
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn lso_follows_the_oldest_open_transaction() {
        let idx = PartitionTxnIndex::new(Path::new("/nonexistent"));
        assert_eq!(idx.last_stable_offset(P, 10), 10);
        assert!(idx.begin(P, 1, 10));
        idx.fix_first(P, 1, 12);
        assert!(!idx.begin(P, 1, 20));
        assert!(idx.begin(P, 2, 15));
        assert_eq!(idx.last_stable_offset(P, 30), 12);
        idx.end(P, 1, true, 30);
        assert_eq!(idx.last_stable_offset(P, 31), 15);
        idx.end(P, 2, false, 31);
        assert_eq!(idx.last_stable_offset(P, 32), 32);
        assert_eq!(idx.aborted_between(P, 0, 32), vec![(2, 15)]);
        assert_eq!(idx.aborted_between(P, 32, 40), vec![]);
        assert_eq!(idx.aborted_between(P, 0, 15), vec![]);
    }

    #[test]
    fn rebuilt_from_the_log_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let broker = crate::test_broker(dir.path());
        let p = crate::test_partition(&broker);
        let append = |b| rt.block_on(broker.append_locked(p, b)).unwrap();
        // pid 7 writes and aborts; pid 8 writes and is still open at the "crash".
        append(data_batch(7));
        append(data_batch(8));
        append(control::marker_batch(7, 0, false, 0, now_ms()));
        let idx = PartitionTxnIndex::new(dir.path());
        idx.rebuild(&broker, &[p]).unwrap();
        assert_eq!(idx.last_stable_offset(p, 3), 1);
        assert_eq!(idx.aborted_between(p, 0, 3), vec![(7, 0)]);
        assert_eq!(idx.ongoing(p), vec![(8, 1)]);
        // Snapshot, then the commit of pid 8 is only in the log: the scan applies it.
        idx.snapshot(&[(p, 0, 3)]).unwrap();
        append(control::marker_batch(8, 0, true, 0, now_ms()));
        let again = PartitionTxnIndex::new(dir.path());
        again.rebuild(&broker, &[p]).unwrap();
        // A snapshot that covers less than its state: the re-scan must not duplicate
        // the abort of pid 7.
        again.snapshot(&[(p, 0, 0)]).unwrap();
        let third = PartitionTxnIndex::new(dir.path());
        third.rebuild(&broker, &[p]).unwrap();
        assert_eq!(third.aborted_between(p, 0, 4), vec![(7, 0)]);
        assert_eq!(third.last_stable_offset(p, 4), 4);
        assert_eq!(again.last_stable_offset(p, 4), 4);
        assert_eq!(again.aborted_between(p, 0, 4), vec![(7, 0)]);
    }
}
