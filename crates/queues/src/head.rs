//! The head of the queue and the policies that act on it (issue 16): settling expired
//! messages as they reach the head (RabbitMQ classic queues), dropping the oldest ready
//! messages of a full queue (`x-overflow = drop-head`), and priority order
//! ([`QueueState::acquire_ranked`]).
//!
//! The engine holds no message bytes: the caller answers per offset (an expiry time, a
//! priority) from the records it read, and says "unknown" for offsets it did not read, where
//! the engine stops.

use std::collections::BTreeSet;

use common::{Offset, TimestampMs};

use crate::delivery::{Acquire, Acquired, DeadLetter, DeadReason, Verdict};
use crate::policy::is_expired;
use crate::queue_state::QueueState;
use crate::range_set::RangeSet;
use crate::record::SettleOutcome;

/// What [`QueueState::expire_head`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadExpiry {
    /// Settled dead, reason [`DeadReason::Expired`] (ascending).
    pub dead: Vec<DeadLetter>,
    /// The head offset the caller could not say anything about: read it and call again.
    pub unknown: Option<Offset>,
    /// The head is a live message expiring at this time: call again then.
    pub next_expiry: Option<TimestampMs>,
}

impl QueueState {
    /// The smallest available offset `>= from` below `log_end` (the head of the queue when
    /// `from` is `Offset::MIN`).
    pub fn first_available(&self, from: Offset, log_end: Offset) -> Option<Offset> {
        self.next_candidate(from.max(self.low_water), log_end)
            .map(|(o, _)| o)
    }

    /// Up to `limit` available offsets from the head, ascending.
    pub fn available(&self, log_end: Offset, limit: usize) -> Vec<Offset> {
        let mut out = Vec::new();
        let mut pos = self.low_water;
        while out.len() < limit {
            let Some((offset, _)) = self.next_candidate(pos, log_end) else {
                break;
            };
            out.push(offset);
            pos = offset + 1;
        }
        out
    }

    /// Settles dead the expired messages at the head of the queue, in order, stopping at the
    /// first live one (RabbitMQ classic queues: an expired message behind a live one waits
    /// until it reaches the head; it is never delivered meanwhile, see the broker's
    /// acquire). `expiry(offset)` answers `Some(expiry time or None for never)`, or `None`
    /// when the caller does not know (not read yet). At most `max` are settled per call.
    pub fn expire_head(
        &mut self,
        log_end: Offset,
        now_ms: TimestampMs,
        max: usize,
        mut expiry: impl FnMut(Offset) -> Option<Option<TimestampMs>>,
    ) -> HeadExpiry {
        let mut out = HeadExpiry::default();
        let mut dead = RangeSet::new();
        let mut pos = self.low_water;
        while out.dead.len() < max {
            let Some((offset, source)) = self.next_candidate(pos, log_end) else {
                break;
            };
            match expiry(offset) {
                None => {
                    out.unknown = Some(offset);
                    break;
                }
                Some(at) if is_expired(at, now_ms) => {
                    let delivery_count = self.take_available(offset, source);
                    dead.insert(offset..offset + 1);
                    out.dead.push(DeadLetter {
                        offset,
                        delivery_count,
                        reason: DeadReason::Expired,
                    });
                    pos = offset + 1;
                }
                Some(at) => {
                    out.next_expiry = at;
                    break;
                }
            }
        }
        self.settle(&dead, SettleOutcome::Dead);
        out
    }

    /// Settles dead the `n` oldest ready messages (a full queue with `x-overflow =
    /// drop-head`), reason [`DeadReason::MaxLen`]. In-flight messages are untouched.
    pub fn drop_head(&mut self, log_end: Offset, n: u64) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        let mut dead = RangeSet::new();
        let mut pos = self.low_water;
        while (out.len() as u64) < n {
            let Some((offset, source)) = self.next_candidate(pos, log_end) else {
                break;
            };
            let delivery_count = self.take_available(offset, source);
            dead.insert(offset..offset + 1);
            out.push(DeadLetter {
                offset,
                delivery_count,
                reason: DeadReason::MaxLen,
            });
            pos = offset + 1;
        }
        self.settle(&dead, SettleOutcome::Dead);
        out
    }

    /// Priority order (`x-max-priority`): among the first `max_scan` available messages,
    /// leases the `max_n` with the highest `rank` (their priority), oldest first within a
    /// priority; a requeued message keeps its rank, so it goes out before newer ones of its
    /// priority. Offsets `rank` cannot answer for (`None`: not read) are not taken. The
    /// others stay available in place. One `Delivered` record, as [`QueueState::acquire`].
    pub fn acquire_ranked(
        &mut self,
        request: &Acquire,
        mut rank: impl FnMut(Offset) -> Option<u8>,
    ) -> Acquired {
        self.release_due(request.now_ms);
        let max_scan = request.max_scan.unwrap_or(self.config.max_scan).max(1) as usize;
        let mut candidates: Vec<(std::cmp::Reverse<u8>, Offset)> = Vec::new();
        let mut pos = request.from.max(self.low_water);
        while candidates.len() < max_scan {
            let Some((offset, _)) = self.next_candidate(pos, request.log_end) else {
                break;
            };
            if let Some(r) = rank(offset) {
                candidates.push((std::cmp::Reverse(r), offset));
            }
            pos = offset + 1;
        }
        candidates.sort_unstable();
        let chosen: BTreeSet<Offset> = candidates
            .into_iter()
            .take(request.max_n.min(crate::MAX_ACQUIRE) as usize)
            .map(|(_, o)| o)
            .collect();
        let Some(&max_chosen) = chosen.last() else {
            return Acquired::default();
        };
        // Scan exactly up to the last chosen offset: everything passed over stays available.
        let mut scan = request.clone();
        scan.max_n = chosen.len() as u32;
        scan.max_scan = Some(u32::MAX);
        scan.log_end = max_chosen + 1;
        let mut acquired = self.acquire_filtered(&scan, |o| {
            if chosen.contains(&o) {
                Verdict::Deliver
            } else {
                Verdict::Skip
            }
        });
        // Hand them out in priority order, not offset order.
        acquired
            .deliveries
            .sort_by_cached_key(|d| (std::cmp::Reverse(rank(d.offset).unwrap_or(0)), d.offset));
        acquired
    }
}
