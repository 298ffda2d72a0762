//! Records waiting for the caller to persist them, coalesced while they wait.

use crate::range_set::RangeSet;
use crate::record::{DeliveredRun, MAX_RECORD_ENTRIES, MAX_RUN_LEN, Record, SettleOutcome};

/// A record still open for coalescing.
#[derive(Clone, Debug)]
enum Pending {
    /// Runs in the order they were delivered; touching runs with equal counts are merged.
    Delivered(Vec<DeliveredRun>),
    /// Settled offsets as a range set, so acks arriving in any order coalesce in O(log n);
    /// split into records of at most `MAX_RECORD_ENTRIES` ranges when drained.
    Settled {
        outcome: SettleOutcome,
        set: RangeSet,
    },
    Other(Record),
}

/// The queue's outbox. Records coalesce until drained: a burst of acks between two flushes
/// becomes a few ranges, a burst of acquires one `Delivered` record, however the two
/// interleave.
///
/// Why reordering is safe: replay keeps settled offsets settled (a `Delivered` for a settled
/// offset is ignored), so moving `Settled` ranges across `Delivered` records changes no
/// replayed state; `Delivered` records keep their order among themselves (later counts
/// win). Nothing moves across a `LogStart` or `Snapshot` (a barrier). And a torn tail of
/// the drained batch still leaves only true facts: each persisted record says what happened.
///
/// It also counts what was drained since the last snapshot, for [`Outbox::snapshot_due`].
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    pending: Vec<Pending>,
    /// Index in `pending` of the first entry after the last barrier.
    open_from: usize,
    snapshot_queued: bool,
    records_since_snapshot: u64,
    bytes_since_snapshot: u64,
    last_snapshot_bytes: u64,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn push_delivered(&mut self, runs: &[DeliveredRun]) {
        let open = &self.pending[self.open_from..];
        let last = open
            .iter()
            .rposition(|p| matches!(p, Pending::Delivered(_)))
            .map(|i| i + self.open_from);
        let mut target = last;
        for &run in runs {
            match target.map(|i| &mut self.pending[i]) {
                Some(Pending::Delivered(open)) if open.len() < MAX_RECORD_ENTRIES => {
                    push_run(open, run);
                }
                _ => {
                    self.pending.push(Pending::Delivered(vec![run]));
                    target = Some(self.pending.len() - 1);
                }
            }
        }
    }

    pub fn push_settled(&mut self, outcome: SettleOutcome, set: &RangeSet) {
        let found = self.pending[self.open_from..]
            .iter()
            .position(|p| matches!(p, Pending::Settled { outcome: o, .. } if *o == outcome))
            .map(|i| i + self.open_from);
        match found.map(|i| &mut self.pending[i]) {
            Some(Pending::Settled { set: open, .. }) => {
                for range in set.iter() {
                    open.insert(range);
                }
            }
            _ => self.pending.push(Pending::Settled {
                outcome,
                set: set.clone(),
            }),
        }
    }

    /// Queues a barrier record (`LogStart`, `Snapshot`): nothing coalesces across it.
    pub fn push(&mut self, record: Record) {
        self.snapshot_queued |= matches!(record, Record::Snapshot(_));
        self.pending.push(Pending::Other(record));
        self.open_from = self.pending.len();
    }

    /// Takes every pending record, oldest first, for the caller to append to the queue's
    /// state log in this order.
    pub fn drain(&mut self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.pending.len());
        self.open_from = 0;
        self.snapshot_queued = false;
        for pending in self.pending.drain(..) {
            match pending {
                Pending::Delivered(runs) => out.push(Record::Delivered(runs)),
                Pending::Settled { outcome, set } => {
                    let ranges: Vec<_> = set.iter().collect();
                    // A coalesced set may hold more ranges than one record may.
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
    /// rewritten after every small batch). Never while a snapshot waits in the outbox.
    pub fn snapshot_due(&self, every_records: u64, every_bytes: u64) -> bool {
        !self.snapshot_queued
            && (self.records_since_snapshot >= every_records
                || self.bytes_since_snapshot >= every_bytes.max(self.last_snapshot_bytes))
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
