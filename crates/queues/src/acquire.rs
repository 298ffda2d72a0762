//! Acquiring: the smallest available offsets first, leased to one consumer.

use common::Offset;

use crate::config::MAX_ACQUIRE;
use crate::delivery::{Acquire, Acquired, Delivery, Verdict};
use crate::lease::Lease;
use crate::queue_state::QueueState;
use crate::record::{DeliveredRun, MAX_RUN_LEN};

/// Where an available offset is kept.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source {
    /// In `returned`, delivered this many times before.
    Returned(u32),
    /// In `skipped`.
    Skipped,
    /// At or above the cursor.
    Fresh,
}

impl QueueState {
    /// Leases up to `request.max_n` available messages to `request.consumer`, smallest
    /// offsets first: a message nacked with requeue or released goes out again before newer
    /// ones (its original position, as RabbitMQ does). Scheduled offsets due at
    /// `request.now_ms` are released first ([`QueueState::release_due`]); the others stay
    /// hidden. Queues one `Delivered` record.
    pub fn acquire(&mut self, request: &Acquire) -> Acquired {
        self.acquire_filtered(request, |_| Verdict::Deliver)
    }

    /// As [`QueueState::acquire`], asking `filter` about each candidate in offset order; a
    /// skipped offset stays available in place. At most `max_scan` candidates are examined
    /// (`Acquired::resume_from` says where the scan stopped), so a filter that matches
    /// nothing costs bounded work per call.
    pub fn acquire_filtered(
        &mut self,
        request: &Acquire,
        mut filter: impl FnMut(Offset) -> Verdict,
    ) -> Acquired {
        self.release_due(request.now_ms);
        let max_n = request.max_n.min(MAX_ACQUIRE) as usize;
        let max_scan = request.max_scan.unwrap_or(self.config.max_scan).max(1);
        let lease_ms = request.lease_ms.unwrap_or(self.config.lease_ms);
        let deadline_ms = request.now_ms.saturating_add(lease_ms);
        let mut out = Acquired::default();
        let mut pos = request.from.max(self.low_water);
        let mut scanned = 0u32;
        while out.deliveries.len() < max_n {
            let Some((offset, source)) = self.next_candidate(pos, request.log_end) else {
                break;
            };
            if scanned == max_scan {
                out.resume_from = Some(offset);
                break;
            }
            scanned += 1;
            pos = offset + 1; // offset < log_end, so no overflow
            if filter(offset) == Verdict::Skip {
                continue;
            }
            let delivery_count = self.take_available(offset, source).saturating_add(1);
            let lease = Lease {
                consumer: request.consumer,
                deadline_ms,
                delivery_count,
            };
            self.leases.insert(offset, lease);
            out.deliveries.push(Delivery {
                offset,
                delivery_count,
                redelivered: delivery_count > 1,
            });
        }
        self.record_deliveries(&out.deliveries);
        out
    }

    /// The smallest available offset `>= pos` and `< log_end`.
    pub(crate) fn next_candidate(&self, pos: Offset, log_end: Offset) -> Option<(Offset, Source)> {
        let returned = self
            .returned
            .range(pos..)
            .next()
            .map(|(&o, &count)| (o, Source::Returned(count)));
        let skipped = self
            .skipped
            .first_at_or_after(pos)
            .map(|o| (o, Source::Skipped));
        let fresh = Some((pos.max(self.cursor), Source::Fresh));
        [returned, skipped, fresh]
            .into_iter()
            .flatten()
            .min_by_key(|&(o, _)| o)
            .filter(|&(o, _)| o < log_end)
    }

    /// Removes `offset` from the available state it is in; returns its delivery count.
    pub(crate) fn take_available(&mut self, offset: Offset, source: Source) -> u32 {
        match source {
            Source::Returned(count) => {
                self.returned.remove(&offset);
                count
            }
            Source::Skipped => {
                self.skipped.remove(offset..offset + 1);
                0
            }
            Source::Fresh => {
                // Offsets the cursor passes without delivering (a filter skipped them, or the
                // scan started above the cursor) stay available as `skipped`.
                self.skipped.insert(self.cursor..offset);
                self.cursor = offset + 1;
                0
            }
        }
    }

    /// Queues one `Delivered` record for an acquire: consecutive offsets with the same count
    /// become one run, so a batch of fresh messages costs 16 bytes.
    fn record_deliveries(&mut self, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        let mut runs: Vec<DeliveredRun> = Vec::new();
        for d in deliveries {
            match runs.last_mut() {
                Some(run)
                    if run.end() == d.offset
                        && run.delivery_count == d.delivery_count
                        && run.len < MAX_RUN_LEN =>
                {
                    run.len += 1;
                }
                _ => runs.push(DeliveredRun {
                    start: d.offset,
                    len: 1,
                    delivery_count: d.delivery_count,
                }),
            }
        }
        self.outbox.push_delivered(&runs);
    }
}
