//! Records waiting for the caller to persist them, coalesced while they wait.

use std::collections::BTreeMap;

use common::{Offset, TimestampMs};

use crate::range_set::RangeSet;
use crate::record::{
    DeliveredRun, MAX_RECORD_ENTRIES, MAX_RUN_LEN, Record, ScheduledEntry, SettleOutcome,
};

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
    /// Scheduled offsets by offset (a later schedule of the same offset replaces it).
    Scheduled(BTreeMap<Offset, TimestampMs>),
    /// `ReleasedThrough`.
    Released(TimestampMs),
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
/// Scheduling records (`Scheduled`, `ReleasedThrough`) are kept apart, in `timer`, and
/// drained *before* the delivery records of the same stretch (replay applies the two kinds
/// independently: a schedule touches no delivery count, a delivery no due time). So a torn
/// tail that keeps any delivery record of a drain keeps all its schedules, and the cursor a
/// prefix recovers never passes a scheduled offset whose schedule it lost. Among
/// themselves, a schedule joins the first `Scheduled` group such that every
/// `ReleasedThrough` after it is earlier than its due time (so replay releases nothing it
/// should not); an offset released within the stretch it was scheduled in leaves its group (it
/// needs no record), and consecutive releases merge. So a stretch holds one `Scheduled` and
/// one `ReleasedThrough` record however many of each happened, unless the clock went back
/// between a release and a schedule.
///
/// It also counts what was drained since the last snapshot, for [`Outbox::snapshot_due`].
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    pending: Vec<Pending>,
    /// Index in `pending` of the first entry after the last barrier.
    open_from: usize,
    /// The open stretch's scheduling records, in order; they go before `pending[open_from..]`.
    timer: Vec<Pending>,
    snapshot_queued: bool,
    records_since_snapshot: u64,
    bytes_since_snapshot: u64,
    last_snapshot_bytes: u64,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.timer.is_empty()
    }

    /// `offset` is hidden until `due_ms`: it joins the first group that no later release
    /// would wrongly release at replay (every `ReleasedThrough` after it is earlier than
    /// `due_ms`), or a new group at the end.
    pub fn push_scheduled(&mut self, offset: Offset, due_ms: TimestampMs) {
        // The latest release after each position, from the back.
        let mut latest_after = TimestampMs::MIN;
        let mut fits = None;
        for (i, p) in self.timer.iter().enumerate().rev() {
            match p {
                Pending::Released(at) => latest_after = latest_after.max(*at),
                Pending::Scheduled(_) if latest_after < due_ms => fits = Some(i),
                _ => {}
            }
        }
        match fits.map(|i| &mut self.timer[i]) {
            Some(Pending::Scheduled(entries)) => {
                entries.insert(offset, due_ms);
            }
            _ => self
                .timer
                .push(Pending::Scheduled(BTreeMap::from([(offset, due_ms)]))),
        }
    }

    /// Everything scheduled and due at or before `at` was released: `released` (ascending
    /// or not). An offset scheduled and released within the open stretch needs no record at
    /// all (replay leaves it available, as it now is), so it leaves its group; emptied
    /// groups go, and releases that become neighbours merge.
    pub fn push_released(&mut self, at: TimestampMs, released: &[Offset]) {
        for p in &mut self.timer {
            if let Pending::Scheduled(entries) = p {
                for o in released {
                    entries.remove(o);
                }
            }
        }
        self.timer
            .retain(|p| !matches!(p, Pending::Scheduled(entries) if entries.is_empty()));
        self.timer.push(Pending::Released(at));
        // Neighbouring releases, with nothing scheduled between them, are one release.
        let mut merged: Vec<Pending> = Vec::with_capacity(self.timer.len());
        for p in self.timer.drain(..) {
            match (merged.last_mut(), p) {
                (Some(Pending::Released(last)), Pending::Released(at)) => {
                    *last = (*last).max(at);
                }
                (_, p) => merged.push(p),
            }
        }
        self.timer = merged;
    }

    /// Moves the open stretch's scheduling records in front of its delivery records.
    fn seal(&mut self) {
        if !self.timer.is_empty() {
            let timer = std::mem::take(&mut self.timer);
            self.pending.splice(self.open_from..self.open_from, timer);
        }
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
        self.seal();
        self.snapshot_queued |= matches!(record, Record::Snapshot(_));
        self.pending.push(Pending::Other(record));
        self.open_from = self.pending.len();
    }

    /// Takes every pending record, oldest first, for the caller to append to the queue's
    /// state log in this order.
    pub fn drain(&mut self) -> Vec<Record> {
        self.seal();
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
                Pending::Scheduled(entries) => {
                    let entries: Vec<ScheduledEntry> = entries
                        .into_iter()
                        .map(|(offset, due_ms)| ScheduledEntry { offset, due_ms })
                        .collect();
                    for chunk in entries.chunks(MAX_RECORD_ENTRIES) {
                        out.push(Record::Scheduled(chunk.to_vec()));
                    }
                }
                Pending::Released(at) => out.push(Record::ReleasedThrough(at)),
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
        } else if matches!(record, Record::SnapshotScheduled(_)) {
            // Part of the snapshot before it.
            self.last_snapshot_bytes += bytes;
        } else {
            self.records_since_snapshot += 1;
            self.bytes_since_snapshot += bytes;
        }
    }

    /// A snapshot is due once the records since the last one reach `every_records`, or their
    /// bytes reach `every_bytes` — and in either case their bytes reach the last snapshot's
    /// size (so the log between snapshots stays within about twice the live state, and a
    /// large state — millions of scheduled messages — is not rewritten every few thousand
    /// small records: the bytes written stay linear in what happens). Never while a snapshot
    /// waits in the outbox.
    pub fn snapshot_due(&self, every_records: u64, every_bytes: u64) -> bool {
        !self.snapshot_queued
            && (self.records_since_snapshot >= every_records
                || self.bytes_since_snapshot >= every_bytes)
            && self.bytes_since_snapshot >= self.last_snapshot_bytes
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
