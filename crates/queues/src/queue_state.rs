//! [`QueueState`]: the delivery state of one queue, and the operations that settle messages.
//! Acquiring is in `acquire.rs`; snapshots and recovery in `recovery.rs`.

use std::collections::BTreeMap;
use std::ops::Range;

use common::{Offset, TimestampMs};

use crate::config::QueueConfig;
use crate::delivery::{ConsumerId, DeadLetter, DeadReason, LostLease, Released};
use crate::error::QueueError;
use crate::lease::Leases;
use crate::outbox::Outbox;
use crate::range_set::RangeSet;
use crate::record::{Record, SettleOutcome};
use crate::schedule::Scheduler;

/// The delivery state of one queue over its partition's offsets. See the crate doc for the
/// model; in short, every offset `>= log_start` is in exactly one of these places:
///
/// | where                      | meaning                                    |
/// |----------------------------|--------------------------------------------|
/// | `< low_water`              | settled                                    |
/// | `settled`                  | settled (acked, dead or purged)            |
/// | `leases`                   | acquired by one consumer until a deadline  |
/// | `returned`                 | available, delivered before (with count)   |
/// | `skipped`                  | available, never delivered (a filter passed over it, or released from a schedule) |
/// | in none of the above       | scheduled: hidden until due (`schedule.rs`)  |
/// | `>= cursor`                | available, never delivered (or not yet in the log) |
///
/// Invariants (checked by [`QueueState::check_invariants`]): `log_start <= low_water <=
/// cursor`; `settled`, `leases`, `returned`, `skipped` and the scheduled offsets are
/// disjoint and together cover exactly `low_water..cursor`, where the scheduled offsets are
/// the live entries of the time index, each once; `low_water` is not settled (it is the
/// first offset that is not, or `cursor`).
#[derive(Clone, Debug)]
pub struct QueueState {
    pub(crate) config: QueueConfig,
    pub(crate) log_start: Offset,
    pub(crate) low_water: Offset,
    pub(crate) cursor: Offset,
    pub(crate) settled: RangeSet,
    pub(crate) skipped: RangeSet,
    pub(crate) returned: BTreeMap<Offset, u32>,
    pub(crate) leases: Leases,
    /// Due times of scheduled offsets; `None` (no heap) while nothing is scheduled.
    pub(crate) scheduler: Option<Box<Scheduler>>,
    pub(crate) outbox: Outbox,
}

/// Sizes of the internal collections: what the state costs beyond its fixed part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub settled_ranges: usize,
    pub skipped_ranges: usize,
    pub returned: usize,
    pub leases: usize,
    pub consumers: usize,
    /// Entries in the scheduled-offset index (scheduled offsets, plus settled ones not yet
    /// dropped); see [`QueueState::timer_footprint`] for its bytes.
    pub scheduled_entries: usize,
    /// Scheduled offsets delivered before (retries), each with its count.
    pub scheduled_counts: usize,
}

impl QueueState {
    /// A new queue whose first message is `start` (a partition's log start for "from the
    /// beginning", its log end for "new messages only"). Queues a `LogStart` record.
    pub fn new(config: QueueConfig, start: Offset) -> Self {
        let mut state = Self::empty(config, start);
        state.outbox.push(Record::LogStart(start));
        state
    }

    pub(crate) fn empty(config: QueueConfig, start: Offset) -> Self {
        Self {
            config,
            log_start: start,
            low_water: start,
            cursor: start,
            settled: RangeSet::new(),
            skipped: RangeSet::new(),
            returned: BTreeMap::new(),
            leases: Leases::default(),
            scheduler: None,
            outbox: Outbox::default(),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Changes settings (lease length, delivery limit…); applies to later operations.
    pub fn set_config(&mut self, config: QueueConfig) {
        self.config = config;
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    /// Every offset below is settled (or below the log start).
    pub fn low_water(&self) -> Offset {
        self.low_water
    }

    /// Every offset at or above was never delivered.
    pub fn cursor(&self) -> Offset {
        self.cursor
    }

    /// Available messages given the partition's `log_end` (RabbitMQ's "ready").
    pub fn ready(&self, log_end: Offset) -> u64 {
        if log_end >= self.cursor {
            // The usual case, O(1): everything available below the cursor is in the log.
            return self.returned.len() as u64 + self.skipped.len() + log_end.abs_diff(self.cursor);
        }
        // The log end is behind the cursor (a truncated log): count what is below it.
        self.returned.range(..log_end).count() as u64
            + self
                .skipped
                .intersection(self.low_water..log_end)
                .iter()
                .map(|r| r.end.abs_diff(r.start))
                .sum::<u64>()
    }

    /// Acquired, not yet settled (RabbitMQ's "unacked").
    pub fn unacked(&self) -> u64 {
        self.leases.len() as u64
    }

    /// Messages `consumer` holds (for prefetch limits).
    pub fn acquired_by(&self, consumer: ConsumerId) -> u64 {
        self.leases.count_held_by(consumer) as u64
    }

    /// Offsets `consumer` holds, ascending.
    pub fn held_by(&self, consumer: ConsumerId) -> Vec<Offset> {
        self.leases.held_by(consumer)
    }

    /// Consumers holding at least one message.
    pub fn consumers_holding(&self) -> usize {
        self.leases.consumer_count()
    }

    /// The earliest lease deadline: call [`QueueState::expire`] then.
    pub fn next_deadline(&self) -> Option<TimestampMs> {
        self.leases.next_deadline()
    }

    pub fn footprint(&self) -> Footprint {
        Footprint {
            settled_ranges: self.settled.range_count(),
            skipped_ranges: self.skipped.range_count(),
            returned: self.returned.len(),
            leases: self.leases.len(),
            consumers: self.leases.consumer_count(),
            scheduled_entries: self.scheduler.as_ref().map_or(0, |s| s.timer.len()),
            scheduled_counts: self.scheduler.as_ref().map_or(0, |s| s.counts.len()),
        }
    }

    /// Takes the records to persist, oldest first (see the crate doc, §Persistence).
    pub fn drain_records(&mut self) -> Vec<Record> {
        self.outbox.drain()
    }

    pub fn has_pending_records(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Acks `offsets` held by `consumer`. Returns how many were settled.
    pub fn ack(&mut self, consumer: ConsumerId, offsets: &[Offset]) -> Result<u64, QueueError> {
        let set = offsets_to_set(offsets)?;
        self.ack_set(consumer, &set)
    }

    /// Acks every offset in `ranges` (each must be held by `consumer`): one range entry per
    /// run however long, for `multiple` acks and batched acknowledgements.
    pub fn ack_ranges(
        &mut self,
        consumer: ConsumerId,
        ranges: &[Range<Offset>],
    ) -> Result<u64, QueueError> {
        let set = ranges_to_set(ranges)?;
        self.ack_set(consumer, &set)
    }

    /// Nack/reject: with `requeue` the messages go back to available at their original
    /// positions (redelivered next time, delivery count kept, unless over the delivery
    /// limit); without, they are settled dead and returned for dead-lettering.
    /// [`QueueState::ack_ranges`] for one range (AMQP `multiple` over a contiguous run).
    pub fn ack_range(
        &mut self,
        consumer: ConsumerId,
        range: Range<Offset>,
    ) -> Result<u64, QueueError> {
        self.ack_ranges(consumer, std::slice::from_ref(&range))
    }

    pub fn nack(
        &mut self,
        consumer: ConsumerId,
        offsets: &[Offset],
        requeue: bool,
    ) -> Result<Released, QueueError> {
        let set = offsets_to_set(offsets)?;
        self.nack_set(consumer, &set, requeue)
    }

    pub fn nack_ranges(
        &mut self,
        consumer: ConsumerId,
        ranges: &[Range<Offset>],
        requeue: bool,
    ) -> Result<Released, QueueError> {
        let set = ranges_to_set(ranges)?;
        self.nack_set(consumer, &set, requeue)
    }

    /// Moves the lease on `offset` to `deadline_ms` (visibility timeout,
    /// ChangeInvisibleDuration). A deadline in the past expires at the next `expire`.
    pub fn extend_lease(
        &mut self,
        consumer: ConsumerId,
        offset: Offset,
        deadline_ms: TimestampMs,
    ) -> Result<(), QueueError> {
        match self.leases.get(offset) {
            None => Err(QueueError::NotInFlight { offset, consumer }),
            Some(lease) if lease.consumer != consumer => Err(QueueError::HeldByOther {
                offset,
                consumer,
                holder: lease.consumer,
            }),
            Some(_) => {
                self.leases.set_deadline(offset, deadline_ms);
                Ok(())
            }
        }
    }

    /// Everything `consumer` held becomes available again (it went away).
    pub fn release_consumer(&mut self, consumer: ConsumerId) -> Released {
        let held = self.leases.held_by(consumer);
        self.return_leases(&held)
    }

    /// Returns every lease whose deadline is `<= now_ms` to the queue.
    pub fn expire(&mut self, now_ms: TimestampMs) -> Released {
        let due = self.leases.due(now_ms);
        self.return_leases(&due)
    }

    /// Settles every *available* message below `up_to` (queue.purge with `up_to = log_end`).
    /// In-flight messages are untouched. Returns how many were settled.
    pub fn purge_below(&mut self, up_to: Offset) -> u64 {
        self.settle_ready_below(up_to, SettleOutcome::Purged).len()
    }

    /// Settles every *available* message below `up_to` with `outcome` and returns them as
    /// ranges (cheap for any depth). For dropping or dead-lettering the head of the queue
    /// (length limits, TTL): with [`SettleOutcome::Dead`] the caller dead-letters the
    /// returned offsets. In-flight messages are untouched.
    pub fn settle_ready_below(&mut self, up_to: Offset, outcome: SettleOutcome) -> RangeSet {
        let from = self.low_water;
        let mut settled = RangeSet::new();
        if up_to <= from {
            return settled;
        }
        let rest = self.returned.split_off(&up_to);
        for &offset in self.returned.keys() {
            settled.insert(offset..offset + 1);
        }
        self.returned = rest;
        for range in self.skipped.intersection(from..up_to) {
            self.skipped.remove(range.clone());
            settled.insert(range);
        }
        if up_to > self.cursor {
            settled.insert(self.cursor..up_to);
            self.cursor = up_to;
        }
        self.settle(&settled, outcome);
        settled
    }

    /// The partition's log start moved to `new_start` (retention, delete-records): forget
    /// everything below. Leases below it are dropped and returned so the door can forget
    /// them (a later ack of one fails with `NotInFlight`).
    pub fn advance_log_start(&mut self, new_start: Offset) -> Vec<LostLease> {
        if new_start <= self.log_start {
            return Vec::new();
        }
        self.log_start = new_start;
        let lost = self
            .leases
            .remove_below(new_start)
            .into_iter()
            .map(|(offset, lease)| LostLease {
                consumer: lease.consumer,
                offset,
            })
            .collect();
        self.returned = self.returned.split_off(&new_start);
        self.settled.remove_below(new_start);
        self.skipped.remove_below(new_start);
        self.cursor = self.cursor.max(new_start);
        self.low_water = self.low_water.max(new_start);
        self.advance_low_water();
        if let Some(scheduler) = self.scheduler.as_mut() {
            // Scheduled offsets below the new start are gone with the log.
            scheduler.counts = scheduler.counts.split_off(&new_start);
            self.compact_scheduler();
        }
        self.outbox.push(Record::LogStart(new_start));
        lost
    }

    fn ack_set(&mut self, consumer: ConsumerId, set: &RangeSet) -> Result<u64, QueueError> {
        self.check_held(consumer, set)?;
        for range in set.iter() {
            for offset in range {
                self.leases.remove(offset);
            }
        }
        self.settle(set, SettleOutcome::Acked);
        Ok(set.len())
    }

    fn nack_set(
        &mut self,
        consumer: ConsumerId,
        set: &RangeSet,
        requeue: bool,
    ) -> Result<Released, QueueError> {
        self.check_held(consumer, set)?;
        let offsets: Vec<Offset> = set.iter().flatten().collect();
        if requeue {
            return Ok(self.return_leases(&offsets));
        }
        Ok(self.kill_held(set, &offsets, DeadReason::Rejected))
    }

    /// Settles dead the messages `consumer` holds, for `reason` (an acquired message found
    /// expired before it was handed over: reason [`DeadReason::Expired`]).
    pub fn dead_letter_held(
        &mut self,
        consumer: ConsumerId,
        offsets: &[Offset],
        reason: DeadReason,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let set = offsets_to_set(offsets)?;
        self.check_held(consumer, &set)?;
        let offsets: Vec<Offset> = set.iter().flatten().collect();
        Ok(self.kill_held(&set, &offsets, reason).dead)
    }

    fn kill_held(&mut self, set: &RangeSet, offsets: &[Offset], reason: DeadReason) -> Released {
        let mut dead = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            if let Some(lease) = self.leases.remove(offset) {
                dead.push(DeadLetter {
                    offset,
                    delivery_count: lease.delivery_count,
                    reason,
                });
            }
        }
        self.settle(set, SettleOutcome::Dead);
        Released {
            requeued: Vec::new(),
            dead,
        }
    }

    /// Every offset of `set` must be leased to `consumer`; the first that is not is the error.
    pub(crate) fn check_held(
        &self,
        consumer: ConsumerId,
        set: &RangeSet,
    ) -> Result<(), QueueError> {
        for range in set.iter() {
            let mut expect = range.start;
            for (offset, lease) in self.leases.range(range.clone()) {
                if offset != expect {
                    break;
                }
                if lease.consumer != consumer {
                    return Err(QueueError::HeldByOther {
                        offset,
                        consumer,
                        holder: lease.consumer,
                    });
                }
                expect += 1;
            }
            if expect != range.end {
                return Err(QueueError::NotInFlight {
                    offset: expect,
                    consumer,
                });
            }
        }
        Ok(())
    }

    /// Ends the leases on `offsets` (ascending): back to available, or settled dead when over
    /// the delivery limit.
    fn return_leases(&mut self, offsets: &[Offset]) -> Released {
        let mut released = Released::default();
        let mut dead = RangeSet::new();
        for &offset in offsets {
            let Some(lease) = self.leases.remove(offset) else {
                continue;
            };
            let count = lease.delivery_count;
            if self
                .config
                .delivery_limit
                .is_some_and(|limit| count > limit)
            {
                dead.insert(offset..offset + 1);
                released.dead.push(DeadLetter {
                    offset,
                    delivery_count: count,
                    reason: DeadReason::DeliveryLimit,
                });
            } else {
                self.returned.insert(offset, count);
                released.requeued.push(offset);
            }
        }
        self.settle(&dead, SettleOutcome::Dead);
        released
    }

    /// Marks `set` settled (its offsets already removed from wherever they were) and queues
    /// the record.
    pub(crate) fn settle(&mut self, set: &RangeSet, outcome: SettleOutcome) {
        if set.is_empty() {
            return;
        }
        for range in set.iter() {
            self.settled.insert(range);
        }
        self.advance_low_water();
        self.outbox.push_settled(outcome, set);
    }

    /// Folds settled ranges that start at the low-water mark into it.
    pub(crate) fn advance_low_water(&mut self) {
        while let Some(first) = self.settled.first() {
            if first.start > self.low_water {
                break;
            }
            self.settled.remove(first.clone());
            self.low_water = self.low_water.max(first.end);
        }
    }

    /// Checks the invariants in the type doc (tests and debugging; O(state)).
    pub fn check_invariants(&self) -> Result<(), String> {
        if !(self.log_start <= self.low_water && self.low_water <= self.cursor) {
            return Err(format!(
                "marks out of order: log_start {} low_water {} cursor {}",
                self.log_start, self.low_water, self.cursor
            ));
        }
        self.leases.check()?;
        let span = self.low_water..self.cursor;
        let mut seen = RangeSet::new();
        let mut add = |what: &str, range: Range<Offset>| {
            if range.start < span.start || range.end > span.end {
                return Err(format!("{what} {range:?} outside {span:?}"));
            }
            if seen.insert(range.clone()) != range.end.abs_diff(range.start) {
                return Err(format!("{what} {range:?} overlaps another state"));
            }
            Ok(())
        };
        for range in self.settled.iter() {
            add("settled", range)?;
        }
        for range in self.skipped.iter() {
            add("skipped", range)?;
        }
        for &offset in self.returned.keys() {
            add("returned", offset..offset + 1)?;
        }
        for (offset, _) in self.leases.iter() {
            add("leased", offset..offset + 1)?;
        }
        if let Some(scheduler) = &self.scheduler {
            let mut live = Vec::new();
            scheduler.timer.for_each(|_, offset| {
                if self.is_scheduled(offset) {
                    live.push(offset);
                }
            });
            for offset in live {
                add("scheduled", offset..offset + 1)?;
            }
            if let Some((&offset, _)) = scheduler
                .counts
                .iter()
                .find(|&(&o, &c)| c == 0 || !self.is_scheduled(o))
            {
                return Err(format!("retry count kept for {offset}, not scheduled"));
            }
        }
        if seen.len() != span.end.abs_diff(span.start) {
            return Err(format!("states cover {} of {span:?}", seen.len()));
        }
        if self
            .settled
            .first()
            .is_some_and(|r| r.start == self.low_water)
        {
            return Err("low water is settled".into());
        }
        Ok(())
    }
}

pub(crate) fn offsets_to_set(offsets: &[Offset]) -> Result<RangeSet, QueueError> {
    let mut set = RangeSet::new();
    for &offset in offsets {
        let Some(end) = offset.checked_add(1) else {
            return Err(QueueError::InvalidRange {
                start: offset,
                end: offset,
            });
        };
        set.insert(offset..end);
    }
    Ok(set)
}

pub(crate) fn ranges_to_set(ranges: &[Range<Offset>]) -> Result<RangeSet, QueueError> {
    let mut set = RangeSet::new();
    for range in ranges {
        if range.end < range.start {
            return Err(QueueError::InvalidRange {
                start: range.start,
                end: range.end,
            });
        }
        set.insert(range.clone());
    }
    Ok(set)
}
