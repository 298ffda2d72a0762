//! Snapshots of a queue's state and its recovery from persisted records.

use std::collections::BTreeMap;

use common::Offset;

use crate::config::QueueConfig;
use crate::error::DecodeError;
use crate::outbox::Outbox;
use crate::queue_state::QueueState;
use crate::range_set::RangeSet;
use crate::record::{DeliveredRun, MAX_RUN_LEN, Record, Snapshot};

impl QueueState {
    /// The whole state as one record's content. Leases appear as delivered-not-settled with
    /// their counts: after a restart every lease is void and the message is redelivered.
    pub fn snapshot(&self) -> Snapshot {
        let mut counts: Vec<(Offset, u32)> = self
            .leases
            .iter()
            .map(|(o, lease)| (o, lease.delivery_count))
            .chain(self.returned.iter().map(|(&o, &c)| (o, c)))
            .collect();
        counts.sort_unstable();
        Snapshot {
            log_start: self.log_start,
            low_water: self.low_water,
            cursor: self.cursor,
            settled: self.settled.iter().collect(),
            delivered: runs_of(&counts),
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
        let snapshot = self.snapshot();
        self.outbox.push(Record::Snapshot(snapshot));
    }

    /// Rebuilds a queue from its persisted records, oldest first (a snapshot and what
    /// followed it, or everything since `new`). No lease survives: every message delivered
    /// and not settled is available again with its delivery count, so its next delivery is
    /// `redelivered`; settled messages are never delivered again. The outbox starts empty.
    pub fn recover(config: QueueConfig, records: impl IntoIterator<Item = Record>) -> Self {
        let mut image = Image::default();
        let mut outbox = Outbox::default();
        for record in records {
            outbox.note_persisted(&record);
            image.apply(record);
        }
        let mut state = image.into_state(config);
        state.outbox = outbox;
        state
    }

    /// [`QueueState::recover`] from encoded records; the first that does not decode is the
    /// error.
    pub fn recover_encoded<'a>(
        config: QueueConfig,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DecodeError> {
        let decoded = records
            .into_iter()
            .map(Record::decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::recover(config, decoded))
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
/// far deliveries reached. Records only ever *set* facts and settled is final, so replaying
/// a record twice is harmless.
#[derive(Default)]
struct Image {
    log_start: Offset,
    settled: RangeSet,
    counts: BTreeMap<Offset, u32>,
    cursor: Offset,
}

impl Image {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Snapshot(s) => {
                self.log_start = s.log_start;
                self.settled = RangeSet::from_range(s.log_start..s.low_water);
                for range in s.settled {
                    self.settled.insert(range);
                }
                self.counts = s
                    .delivered
                    .iter()
                    .flat_map(|run| (run.start..run.end()).map(|o| (o, run.delivery_count)))
                    .collect();
                self.cursor = s.cursor;
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

    fn into_state(self, config: QueueConfig) -> QueueState {
        let mut state = QueueState::empty(config, self.log_start);
        state.cursor = self.cursor.max(self.log_start);
        state.settled = self.settled;
        state.advance_low_water();
        // Below the cursor, whatever is neither settled nor delivered was passed over by a
        // filter: available, never delivered.
        let mut skipped = RangeSet::from_range(state.low_water..state.cursor);
        for range in state.settled.iter() {
            skipped.remove(range);
        }
        for &offset in self.counts.keys() {
            skipped.remove(offset..offset + 1);
        }
        state.skipped = skipped;
        state.returned = self.counts;
        state
    }
}
