//! Scheduled offsets (issue 16): a message stored in the queue's partition but hidden until a
//! due time — a delayed or scheduled message ([`QueueState::schedule`]), or a rejected one
//! waiting out its retry backoff ([`QueueState::nack_later`]).
//!
//! A scheduled offset is a fifth state beside settled, leased, returned and skipped: it lies
//! below the cursor and is in none of the other sets, so the queue knows it *by elimination*
//! (`is_scheduled`, O(log n)) and counts it in O(1) ([`QueueState::scheduled`]). Its due time
//! lives in the compact time index (`timer.rs`), which is only ever asked "what is due?";
//! its delivery count, when it was delivered before (a retry), in a small side map. A
//! settled scheduled offset (cancelled, or below a new log start) stays in the time index as
//! garbage until it is popped or compacted away: popping checks every entry against the
//! elimination rule.
//!
//! Release is explicit: [`QueueState::release_due`] (at [`QueueState::next_due`]) makes every
//! offset due at or before `now` available again, in `(due, offset)` order, keeping its
//! delivery count (so `redelivered` is what it was); acquire calls it first, so nothing due
//! stays hidden from a consumer that asks. Released offsets stay released whatever the clock
//! does next.

use std::collections::BTreeMap;
use std::ops::Range;

use common::{Offset, TimestampMs};

use crate::backoff::RetryPolicy;
use crate::delivery::{ConsumerId, DeadLetter, DeadReason};
use crate::error::QueueError;
use crate::queue_state::QueueState;
use crate::range_set::RangeSet;
use crate::record::{ScheduledEntry, SettleOutcome};
use crate::timer::{Timer, TimerFootprint};

/// The scheduled offsets' due times and, for those delivered before, their delivery counts.
/// Boxed in [`QueueState`] and only there while something is scheduled.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scheduler {
    pub timer: Timer,
    /// Delivery counts of scheduled offsets delivered before (retries); absent: never.
    pub counts: BTreeMap<Offset, u32>,
}

/// What [`QueueState::nack_later`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retried {
    /// Hidden until their due time (ascending offsets).
    pub scheduled: Vec<ScheduledEntry>,
    /// Out of retries (or over the delivery limit): settled dead, reason
    /// [`DeadReason::DeliveryLimit`] (ascending).
    pub dead: Vec<DeadLetter>,
}

impl QueueState {
    /// Hides `offset` until `due_ms`: a delayed or scheduled message. The offset must be at
    /// or above the cursor (the caller just appended it, so it is below the log end; offsets
    /// the cursor passes stay available) or available (a ready message, which keeps its delivery count). Anything
    /// else — in flight, settled, already scheduled, below the log start — is
    /// [`QueueError::NotAvailable`] and changes nothing. A due time in the past is released
    /// by the next [`QueueState::release_due`] or acquire. Queues a `Scheduled` record.
    pub fn schedule(&mut self, offset: Offset, due_ms: TimestampMs) -> Result<(), QueueError> {
        if offset < self.log_start || offset == Offset::MAX {
            return Err(QueueError::NotAvailable { offset });
        }
        let Some((_, source)) = self
            .next_candidate(offset, Offset::MAX)
            .filter(|&(o, _)| o == offset)
        else {
            return Err(QueueError::NotAvailable { offset });
        };
        let count = self.take_available(offset, source);
        let scheduler = self.scheduler.get_or_insert_default();
        scheduler.timer.insert(due_ms, offset);
        if count > 0 {
            scheduler.counts.insert(offset, count);
        }
        self.outbox.push_scheduled(offset, due_ms);
        Ok(())
    }

    /// Makes every scheduled offset due at or before `now_ms` available again and returns
    /// them in `(due, offset)` order. Each keeps its delivery count (a delayed message is
    /// delivered fresh, a retry `redelivered`). Work is proportional to what is released
    /// (plus a one-time decode of each ~17-minute bucket of due times the clock enters).
    /// Queues one `ReleasedThrough` record when anything was released. Call it at
    /// [`QueueState::next_due`], and after a restart (everything overdue comes out at once);
    /// acquire calls it too.
    pub fn release_due(&mut self, now_ms: TimestampMs) -> Vec<Offset> {
        let Some(scheduler) = self.scheduler.as_mut() else {
            return Vec::new();
        };
        let mut popped = Vec::new();
        scheduler.timer.pop_due(now_ms, &mut popped);
        if popped.is_empty() {
            return Vec::new();
        }
        let mut released = Vec::with_capacity(popped.len());
        for (_, offset) in popped {
            if !self.is_scheduled(offset) {
                continue; // settled while scheduled: garbage
            }
            let count = self
                .scheduler
                .as_mut()
                .and_then(|s| s.counts.remove(&offset));
            match count {
                Some(count) => {
                    self.returned.insert(offset, count);
                }
                None => {
                    self.skipped.insert(offset..offset + 1);
                }
            }
            released.push(offset);
        }
        if !released.is_empty() {
            self.outbox.push_released(now_ms, &released);
        }
        self.drop_idle_scheduler();
        released
    }

    /// The earliest due time of a scheduled offset: call [`QueueState::release_due`] then.
    /// It may be earlier than the next real release (a settled offset not yet dropped from
    /// the index), never later.
    pub fn next_due(&self) -> Option<TimestampMs> {
        self.scheduler.as_ref().and_then(|s| s.timer.next_due())
    }

    /// Scheduled offsets (hidden until due), O(1): the offsets between the low-water mark
    /// and the cursor that are in no other state.
    pub fn scheduled(&self) -> u64 {
        let span = self.cursor.abs_diff(self.low_water);
        span - self.settled.len()
            - self.skipped.len()
            - self.returned.len() as u64
            - self.leases.len() as u64
    }

    /// Whether `offset` is scheduled.
    pub fn is_scheduled(&self, offset: Offset) -> bool {
        self.scheduler.is_some() && self.is_scheduled_without_index(offset)
    }

    /// The time index's sizes and work counter.
    pub fn timer_footprint(&self) -> TimerFootprint {
        self.scheduler
            .as_ref()
            .map(|s| s.timer.footprint())
            .unwrap_or_default()
    }

    /// Retry with backoff: `offsets` held by `consumer` go back to the queue after the delay
    /// `policy` gives for their delivery count (at their original position once released,
    /// `redelivered`), or, out of retries ([`RetryPolicy::max_retries`]) or over the queue's
    /// delivery limit, are settled dead with reason [`DeadReason::DeliveryLimit`]. Checked
    /// before anything is applied, as [`QueueState::nack`]. Queues `Scheduled` (and, for the
    /// dead, `Settled`) records.
    pub fn nack_later(
        &mut self,
        consumer: ConsumerId,
        offsets: &[Offset],
        now_ms: TimestampMs,
        policy: &RetryPolicy,
    ) -> Result<Retried, QueueError> {
        let set = crate::queue_state::offsets_to_set(offsets)?;
        self.nack_later_set(consumer, &set, now_ms, policy)
    }

    /// [`QueueState::nack_later`] over ranges (AMQP `multiple`).
    pub fn nack_later_ranges(
        &mut self,
        consumer: ConsumerId,
        ranges: &[Range<Offset>],
        now_ms: TimestampMs,
        policy: &RetryPolicy,
    ) -> Result<Retried, QueueError> {
        let set = crate::queue_state::ranges_to_set(ranges)?;
        self.nack_later_set(consumer, &set, now_ms, policy)
    }

    fn nack_later_set(
        &mut self,
        consumer: ConsumerId,
        set: &RangeSet,
        now_ms: TimestampMs,
        policy: &RetryPolicy,
    ) -> Result<Retried, QueueError> {
        self.check_held(consumer, set)?;
        let mut out = Retried::default();
        let mut dead = RangeSet::new();
        for offset in set.iter().flatten() {
            let Some(lease) = self.leases.remove(offset) else {
                continue;
            };
            let count = lease.delivery_count;
            let over_limit = self
                .config
                .delivery_limit
                .is_some_and(|limit| count > limit);
            if over_limit || policy.exhausted(count) {
                dead.insert(offset..offset + 1);
                out.dead.push(DeadLetter {
                    offset,
                    delivery_count: count,
                    reason: DeadReason::DeliveryLimit,
                });
                continue;
            }
            let due_ms = policy.backoff.due_ms(now_ms, count);
            let scheduler = self.scheduler.get_or_insert_default();
            scheduler.timer.insert(due_ms, offset);
            scheduler.counts.insert(offset, count);
            self.outbox.push_scheduled(offset, due_ms);
            out.scheduled.push(ScheduledEntry { offset, due_ms });
        }
        self.settle(&dead, SettleOutcome::Dead);
        Ok(out)
    }

    /// Cancels scheduled offsets: settled (outcome `Purged`), never delivered. Every offset
    /// must be scheduled ([`QueueError::NotScheduled`] otherwise; nothing changes). Returns
    /// how many were cancelled.
    pub fn cancel_scheduled(&mut self, offsets: &[Offset]) -> Result<u64, QueueError> {
        let set = crate::queue_state::offsets_to_set(offsets)?;
        if let Some(offset) = set.iter().flatten().find(|&o| !self.is_scheduled(o)) {
            return Err(QueueError::NotScheduled { offset });
        }
        if let Some(scheduler) = self.scheduler.as_mut() {
            for offset in set.iter().flatten() {
                scheduler.counts.remove(&offset);
            }
        }
        self.settle(&set, SettleOutcome::Purged);
        self.compact_scheduler();
        Ok(set.len())
    }

    /// Every scheduled offset with its due time, in no particular order (snapshots,
    /// `queue describe`; O(scheduled)).
    pub fn scheduled_entries(&self) -> Vec<ScheduledEntry> {
        let mut out = Vec::new();
        if let Some(scheduler) = &self.scheduler {
            scheduler.timer.for_each(|due_ms, offset| {
                if self.is_scheduled(offset) {
                    out.push(ScheduledEntry { offset, due_ms });
                }
            });
        }
        out
    }

    /// Drops the index's garbage (settled entries) once it outweighs the live entries.
    pub(crate) fn compact_scheduler(&mut self) {
        let live = self.scheduled();
        let Some(mut scheduler) = self.scheduler.take() else {
            return;
        };
        if scheduler.timer.len() as u64 > 2 * live + 1024 {
            scheduler
                .timer
                .retain(|_, o| self.is_scheduled_without_index(o));
            let low_water = self.low_water;
            scheduler.counts = scheduler.counts.split_off(&low_water);
        }
        self.scheduler = Some(scheduler);
        self.drop_idle_scheduler();
    }

    /// `is_scheduled` while the scheduler is taken out.
    fn is_scheduled_without_index(&self, offset: Offset) -> bool {
        offset >= self.low_water
            && offset < self.cursor
            && self.leases.get(offset).is_none()
            && !self.returned.contains_key(&offset)
            && !self.skipped.contains(offset)
            && !self.settled.contains(offset)
    }

    /// No heap for scheduling once nothing is scheduled.
    fn drop_idle_scheduler(&mut self) {
        if self
            .scheduler
            .as_ref()
            .is_some_and(|s| s.timer.is_empty() || self.scheduled() == 0)
        {
            self.scheduler = None;
        }
    }
}
