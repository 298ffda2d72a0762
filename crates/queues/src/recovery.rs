//! Snapshots of a queue's state and its recovery from persisted records.

use std::collections::BTreeMap;

use common::{Offset, TimestampMs};

use crate::config::QueueConfig;
use crate::error::DecodeError;
use crate::outbox::Outbox;
use crate::queue_state::QueueState;
use crate::range_set::RangeSet;
use crate::record::{
    DeliveredRun, MAX_RECORD_ENTRIES, MAX_RUN_LEN, PackedEntries, Record, ScheduledEntry, Snapshot,
};
use crate::schedule::Scheduler;
use crate::timer::Timer;

impl QueueState {
    /// The whole state as a snapshot record's content. Leases appear as
    /// delivered-not-settled with their counts: after a restart every lease is void and the
    /// message is redelivered. Scheduled offsets are not in it, only their number: they
    /// travel in the [`Record::SnapshotScheduled`] records [`QueueState::write_snapshot`]
    /// queues after it.
    pub fn snapshot(&self) -> Snapshot {
        let retries = self.scheduler.iter().flat_map(|s| s.counts.iter());
        let mut counts: Vec<(Offset, u32)> = self
            .leases
            .iter()
            .map(|(o, lease)| (o, lease.delivery_count))
            .chain(self.returned.iter().map(|(&o, &c)| (o, c)))
            .chain(retries.map(|(&o, &c)| (o, c)))
            .collect();
        counts.sort_unstable();
        Snapshot {
            log_start: self.log_start,
            low_water: self.low_water,
            cursor: self.cursor,
            settled: self.settled.iter().collect(),
            delivered: runs_of(&counts),
            scheduled: self.scheduled(),
        }
    }

    /// Whether the records persisted since the last snapshot call for a new one
    /// ([`QueueConfig::snapshot_every_records`] / `snapshot_every_bytes`, or more bytes than
    /// the last snapshot had).
    pub fn snapshot_due(&self) -> bool {
        self.outbox.snapshot_due(
            self.config.snapshot_every_records,
            self.config.snapshot_every_bytes,
        )
    }

    /// Queues a `Snapshot` record behind the pending ones. Once it is persisted, every
    /// record before it in the state log may be deleted.
    pub fn write_snapshot(&mut self) {
        for record in self.snapshot_records() {
            self.outbox.push(record);
        }
    }

    /// The snapshot as records: the `Snapshot`, then its scheduled offsets in
    /// `SnapshotScheduled` records of at most [`MAX_RECORD_ENTRIES`] entries, packed (~6
    /// bytes an entry; built part by part, so nothing larger is held on the way).
    pub fn snapshot_records(&self) -> Vec<Record> {
        let snapshot = self.snapshot();
        let expected = snapshot.scheduled;
        let mut out = vec![Record::Snapshot(snapshot)];
        let mut part: Vec<ScheduledEntry> = Vec::with_capacity(MAX_RECORD_ENTRIES);
        let mut packed = 0u64;
        if let Some(scheduler) = &self.scheduler {
            scheduler.timer.for_each(|due_ms, offset| {
                if self.is_scheduled(offset) {
                    part.push(ScheduledEntry { offset, due_ms });
                    if part.len() == MAX_RECORD_ENTRIES {
                        out.push(Record::SnapshotScheduled(PackedEntries::pack(&part)));
                        packed += part.len() as u64;
                        part.clear();
                    }
                }
            });
        }
        if !part.is_empty() {
            packed += part.len() as u64;
            out.push(Record::SnapshotScheduled(PackedEntries::pack(&part)));
        }
        debug_assert_eq!(packed, expected);
        out
    }

    /// Rebuilds a queue from its persisted records, oldest first (a snapshot and what
    /// followed it, or everything since `new`). No lease survives: every message delivered
    /// and not settled is available again with its delivery count, so its next delivery is
    /// `redelivered`; settled messages are never delivered again. Scheduled messages stay
    /// hidden until due; those whose release was persisted stay released. Call
    /// [`QueueState::release_due`] next: everything overdue comes out at once, in due order.
    /// A snapshot whose scheduled parts are not all there (a torn tail) is ignored. The
    /// outbox starts empty.
    pub fn recover(config: QueueConfig, records: impl IntoIterator<Item = Record>) -> Self {
        let mut image = Image::default();
        let mut staged: Option<(Image, u64)> = None;
        let mut outbox = Outbox::default();
        for record in records {
            outbox.note_persisted(&record);
            if let Record::SnapshotScheduled(packed) = record {
                // Part of the staged snapshot; an orphan part (its snapshot torn) is ignored.
                if let Some((mut next, missing)) = staged.take() {
                    let missing = missing.saturating_sub(packed.len() as u64);
                    next.schedule(packed.iter().map(|e| (e.offset, e.due_ms)));
                    if missing == 0 {
                        image = next;
                    } else {
                        staged = Some((next, missing));
                    }
                }
                continue;
            }
            // Anything else abandons a snapshot whose parts did not all arrive.
            staged = None;
            match record {
                Record::Snapshot(s) if s.scheduled > 0 => {
                    let missing = s.scheduled;
                    staged = Some((Image::from_snapshot(s), missing));
                }
                Record::Snapshot(s) => image = Image::from_snapshot(s),
                other => image.apply(other),
            }
        }
        let mut state = image.into_state(config);
        state.outbox = outbox;
        state
    }

    /// [`QueueState::recover`] from encoded records, decoding one at a time (nothing but
    /// the state is held); the first that does not decode is the error.
    pub fn recover_encoded<'a>(
        config: QueueConfig,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DecodeError> {
        let mut error = None;
        let decoded = records
            .into_iter()
            .map_while(|bytes| match Record::decode(bytes) {
                Ok(record) => Some(record),
                Err(e) => {
                    error = Some(e);
                    None
                }
            });
        let state = Self::recover(config, decoded);
        match error {
            Some(e) => Err(e),
            None => Ok(state),
        }
    }
}

/// `(offset, count)` pairs, ascending and distinct, as runs.
fn runs_of(counts: &[(Offset, u32)]) -> Vec<DeliveredRun> {
    let mut runs: Vec<DeliveredRun> = Vec::new();
    for &(offset, count) in counts {
        match runs.last_mut() {
            Some(run)
                if run.end() == offset && run.delivery_count == count && run.len < MAX_RUN_LEN =>
            {
                run.len += 1;
            }
            _ => runs.push(DeliveredRun {
                start: offset,
                len: 1,
                delivery_count: count,
            }),
        }
    }
    runs
}

/// The state as records describe it: what is settled, what was delivered how often, how
/// far deliveries reached, what is scheduled until when. Records only ever *set* facts and
/// settled is final, so replaying a record twice is harmless.
#[derive(Default)]
struct Image {
    log_start: Offset,
    settled: RangeSet,
    counts: BTreeMap<Offset, u32>,
    cursor: Offset,
    /// Scheduled `(due, offset)`s not released yet (settled ones are dropped at the end).
    timer: Timer,
}

impl Image {
    fn from_snapshot(s: Snapshot) -> Image {
        let mut settled = RangeSet::from_range(s.log_start..s.low_water);
        for range in s.settled {
            settled.insert(range);
        }
        Image {
            log_start: s.log_start,
            settled,
            counts: s
                .delivered
                .iter()
                .flat_map(|run| (run.start..run.end()).map(|o| (o, run.delivery_count)))
                .collect(),
            cursor: s.cursor,
            timer: Timer::default(),
        }
    }

    fn schedule(&mut self, entries: impl Iterator<Item = (Offset, TimestampMs)>) {
        for (offset, due) in entries {
            if offset >= self.log_start && !self.settled.contains(offset) {
                self.timer.insert(due, offset);
                self.cursor = self.cursor.max(offset.saturating_add(1));
            }
        }
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Snapshot(s) => *self = Image::from_snapshot(s),
            Record::Scheduled(entries) => {
                self.schedule(entries.iter().map(|e| (e.offset, e.due_ms)));
            }
            Record::SnapshotScheduled(packed) => {
                self.schedule(packed.iter().map(|e| (e.offset, e.due_ms)));
            }
            Record::ReleasedThrough(at) => {
                let mut released = Vec::new();
                self.timer.pop_due(at, &mut released);
            }
            Record::LogStart(offset) => {
                if offset > self.log_start {
                    self.log_start = offset;
                    self.settled.remove_below(offset);
                    self.counts = self.counts.split_off(&offset);
                    self.cursor = self.cursor.max(offset);
                }
            }
            Record::Delivered(runs) => {
                for run in runs {
                    for offset in run.start.max(self.log_start)..run.end() {
                        if !self.settled.contains(offset) {
                            self.counts.insert(offset, run.delivery_count);
                        }
                    }
                    self.cursor = self.cursor.max(run.end());
                }
            }
            Record::Settled { ranges, .. } => {
                for range in ranges {
                    let range = range.start.max(self.log_start)..range.end;
                    if range.is_empty() {
                        continue;
                    }
                    let mut above = self.counts.split_off(&range.start);
                    let mut rest = above.split_off(&range.end);
                    self.counts.append(&mut rest);
                    self.cursor = self.cursor.max(range.end);
                    self.settled.insert(range);
                }
            }
        }
    }

    fn into_state(mut self, config: QueueConfig) -> QueueState {
        let mut state = QueueState::empty(config, self.log_start);
        state.cursor = self.cursor.max(self.log_start);
        state.settled = self.settled;
        state.advance_low_water();
        let (low_water, cursor) = (state.low_water, state.cursor);
        // The scheduled offsets: the index's entries not settled (nor below the log start).
        let settled = &state.settled;
        let live = |o: Offset| o >= low_water && o < cursor && !settled.contains(o);
        self.timer.retain(|_, o| live(o));
        // Below the cursor, whatever is neither settled, scheduled nor delivered was passed
        // over by a filter or released: available, never delivered. (A `RangeSet`, so even
        // millions of scheduled holes cost at most a bit an offset on the way.)
        let mut skipped = RangeSet::from_range(low_water..cursor);
        for range in state.settled.iter() {
            skipped.remove(range);
        }
        let mut repeated = false;
        let mut scheduler = Scheduler::default();
        self.timer.for_each(|_, o| {
            if skipped.remove(o..o + 1) == 0 {
                // The same offset scheduled twice (a torn or repeated stretch of records).
                repeated = true;
            }
            if let Some(count) = self.counts.remove(&o) {
                scheduler.counts.insert(o, count);
            }
        });
        for &o in self.counts.keys() {
            skipped.remove(o..o + 1);
        }
        if repeated {
            // Keep the latest due time, so nothing comes out early.
            dedup_keep_latest(&mut self.timer);
        }
        state.skipped = skipped;
        if !self.timer.is_empty() {
            scheduler.timer = self.timer;
            state.scheduler = Some(Box::new(scheduler));
        }
        state.returned = self.counts;
        state
    }
}

/// Keeps one entry per offset, the one with the latest due time.
fn dedup_keep_latest(timer: &mut Timer) {
    let mut latest: BTreeMap<Offset, TimestampMs> = BTreeMap::new();
    let mut seen: BTreeMap<Offset, u32> = BTreeMap::new();
    timer.for_each(|d, o| {
        *seen.entry(o).or_default() += 1;
        let e = latest.entry(o).or_insert(d);
        *e = (*e).max(d);
    });
    seen.retain(|_, n| *n > 1);
    let mut kept = std::collections::BTreeSet::new();
    timer.retain(|d, o| {
        if !seen.contains_key(&o) {
            return true;
        }
        latest.get(&o) == Some(&d) && kept.insert(o)
    });
}
