//! Records waiting for the caller to persist them, coalesced while they wait.

use crate::range_set::RangeSet;
use crate::record::{DeliveredRun, MAX_RECORD_ENTRIES, MAX_RUN_LEN, Record, SettleOutcome};

/// A record still open for coalescing.
#[derive(Clone, Debug)]
enum Pending {
    /// Runs in the order they were delivered; touching runs with equal counts are merged.
    Delivered(Vec<DeliveredRun>),
    /// Settled offsets as a range set, so acks arriving in any order coalesce in O(log n).
    Settled {
        outcome: SettleOutcome,
        set: RangeSet,
    },
    Other(Record),
}

/// The queue's outbox. Consecutive records of the same kind merge until drained: a burst of
/// acks between two flushes becomes a few ranges, a burst of acquires one `Delivered` record.
/// Merging only with the *last* pending record keeps replay order intact.
///
/// It also counts what was drained since the last snapshot, for [`Outbox::snapshot_due`].
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    pending: Vec<Pending>,
    records_since_snapshot: u64,
    bytes_since_snapshot: u64,
    last_snapshot_bytes: u64,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn push_delivered(&mut self, runs: &[DeliveredRun]) {
        for &run in runs {
            match self.pending.last_mut() {
                Some(Pending::Delivered(open)) if open.len() < MAX_RECORD_ENTRIES => {
                    push_run(open, run);
                }
                _ => self.pending.push(Pending::Delivered(vec![run])),
            }
        }
    }

    pub fn push_settled(&mut self, outcome: SettleOutcome, set: &RangeSet) {
        for range in set.iter() {
            match self.pending.last_mut() {
                Some(Pending::Settled {
                    outcome: o,
                    set: open,
                }) if *o == outcome && open.range_count() < MAX_RECORD_ENTRIES => {
                    open.insert(range);
                }
                _ => self.pending.push(Pending::Settled {
                    outcome,
                    set: RangeSet::from_range(range),
                }),
            }
        }
    }

    pub fn push(&mut self, record: Record) {
        self.pending.push(Pending::Other(record));
    }

    /// Takes every pending record, oldest first, for the caller to append to the queue's
    /// state log in this order.
    pub fn drain(&mut self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.pending.len());
        for pending in self.pending.drain(..) {
            match pending {
                Pending::Delivered(runs) => out.push(Record::Delivered(runs)),
                Pending::Settled { outcome, set } => {
                    let ranges: Vec<_> = set.iter().collect();
                    // An open set may pass the limit by absorbing; split it back.
                    for chunk in ranges.chunks(MAX_RECORD_ENTRIES) {
                        out.push(Record::Settled {
                            outcome,
                            ranges: chunk.to_vec(),
                        });
                    }
                }
                Pending::Other(record) => out.push(record),
            }
        }
        for record in &out {
            self.note_persisted(record);
        }
        out
    }

    /// Counts a record the log now holds (drained, or replayed by recovery).
    pub fn note_persisted(&mut self, record: &Record) {
        let bytes = record.encoded_len() as u64;
        if matches!(record, Record::Snapshot(_)) {
            self.records_since_snapshot = 0;
            self.bytes_since_snapshot = 0;
            self.last_snapshot_bytes = bytes;
        } else {
            self.records_since_snapshot += 1;
            self.bytes_since_snapshot += bytes;
        }
    }

    /// A snapshot is due once the records since the last one reach `every_records`, or their
    /// bytes reach `every_bytes` or the last snapshot's size, whichever is larger (so the log
    /// between snapshots stays within about twice the live state, and a large state is not
    /// rewritten after every small batch).
    pub fn snapshot_due(&self, every_records: u64, every_bytes: u64) -> bool {
        self.records_since_snapshot >= every_records
            || self.bytes_since_snapshot >= every_bytes.max(self.last_snapshot_bytes)
    }
}

fn push_run(runs: &mut Vec<DeliveredRun>, run: DeliveredRun) {
    if let Some(last) = runs.last_mut()
        && last.end() == run.start
        && last.delivery_count == run.delivery_count
        && last.len + run.len <= MAX_RUN_LEN
    {
        last.len += run.len;
        return;
    }
    runs.push(run);
}
