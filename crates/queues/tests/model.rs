//! The queue engine against a model that keeps one state per offset in a `Vec`: random
//! sequences of acquire / ack / nack / release / expire / extend / purge / log-start moves /
//! appends / snapshots must give the same deliveries, errors and counts. After every step the
//! persisted records (encoded and decoded; drained after a random subset of steps, so they
//! coalesce in between) must recover a queue that delivers exactly the unsettled messages,
//! each with the right `redelivered` flag and delivery count — from all records and from the
//! last snapshot onwards.
//!
//! Scheduling (issue 16) is in the same model: offsets scheduled at publish time or from the
//! ready set, nacks with a backoff policy, explicit releases, cancels, clock jumps forward
//! and backward, and restarts that continue with the recovered queue (from all records or
//! from the last snapshot). Nothing comes out before its due time, due offsets come out in
//! `(due, offset)` order, nothing is lost or duplicated.

use proptest::prelude::*;
use sluice_queues::{
    Acquire, Acquired, Backoff, ConsumerId, DeadLetter, DeadReason, Delivery, LostLease, Offset,
    QueueConfig, QueueError, QueueState, Record, Released, Retried, RetryPolicy, ScheduledEntry,
    Verdict,
};

const CONSUMERS: u64 = 3;
const LEASE_MS: i64 = 40;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    /// Delivered this many times, available.
    Available(u32),
    Held {
        consumer: u64,
        deadline_ms: i64,
        count: u32,
    },
    Settled,
    /// Hidden until `due`, delivered `count` times before.
    Scheduled {
        due: i64,
        count: u32,
    },
}

struct Model {
    log_start: Offset,
    log_end: Offset,
    now_ms: i64,
    limit: Option<u32>,
    slots: Vec<Slot>,
}

impl Model {
    fn slot(&self, offset: Offset) -> Option<Slot> {
        if offset < self.log_start || offset >= self.log_end {
            return None;
        }
        Some(self.slots[offset as usize])
    }

    fn acquire(&mut self, req: &Acquire, filter: impl Fn(Offset) -> bool) -> Acquired {
        self.release(req.now_ms);
        let mut out = Acquired::default();
        let mut scanned = 0;
        let max_scan = req.max_scan.unwrap_or(u32::MAX);
        for o in req.from.max(self.log_start)..self.log_end {
            let Slot::Available(count) = self.slots[o as usize] else {
                continue;
            };
            if out.deliveries.len() == req.max_n as usize {
                break;
            }
            if scanned == max_scan {
                out.resume_from = Some(o);
                break;
            }
            scanned += 1;
            if !filter(o) {
                continue;
            }
            self.slots[o as usize] = Slot::Held {
                consumer: req.consumer.0,
                deadline_ms: req.now_ms + req.lease_ms.unwrap_or(LEASE_MS),
                count: count + 1,
            };
            out.deliveries.push(Delivery {
                offset: o,
                delivery_count: count + 1,
                redelivered: count > 0,
            });
        }
        out
    }

    /// The error the engine must give for `offsets`, if any (first bad offset, ascending).
    fn check_held(&self, consumer: u64, offsets: &[Offset]) -> Result<Vec<Offset>, QueueError> {
        let mut sorted = offsets.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for &offset in &sorted {
            match self.slot(offset) {
                Some(Slot::Held { consumer: c, .. }) if c == consumer => {}
                Some(Slot::Held { consumer: c, .. }) => {
                    return Err(QueueError::HeldByOther {
                        offset,
                        consumer: ConsumerId(consumer),
                        holder: ConsumerId(c),
                    });
                }
                _ => {
                    return Err(QueueError::NotInFlight {
                        offset,
                        consumer: ConsumerId(consumer),
                    });
                }
            }
        }
        Ok(sorted)
    }

    fn settle(
        &mut self,
        consumer: u64,
        offsets: &[Offset],
        dead: bool,
    ) -> Result<Released, QueueError> {
        let sorted = self.check_held(consumer, offsets)?;
        let mut released = Released::default();
        for &o in &sorted {
            if let Slot::Held { count, .. } = self.slots[o as usize]
                && dead
            {
                released.dead.push(DeadLetter {
                    offset: o,
                    delivery_count: count,
                    reason: DeadReason::Rejected,
                });
            }
            self.slots[o as usize] = Slot::Settled;
        }
        Ok(released)
    }

    fn give_back(&mut self, offsets: &[Offset]) -> Released {
        let mut released = Released::default();
        for &o in offsets {
            let Slot::Held { count, .. } = self.slots[o as usize] else {
                unreachable!("giving back an offset not held");
            };
            if self.limit.is_some_and(|limit| count > limit) {
                self.slots[o as usize] = Slot::Settled;
                released.dead.push(DeadLetter {
                    offset: o,
                    delivery_count: count,
                    reason: DeadReason::DeliveryLimit,
                });
            } else {
                self.slots[o as usize] = Slot::Available(count);
                released.requeued.push(o);
            }
        }
        released
    }

    fn held(&self, pred: impl Fn(u64, i64) -> bool) -> Vec<Offset> {
        (self.log_start..self.log_end)
            .filter(|&o| {
                matches!(
                    self.slots[o as usize],
                    Slot::Held { consumer, deadline_ms, .. } if pred(consumer, deadline_ms)
                )
            })
            .collect()
    }

    fn ready(&self) -> u64 {
        (self.log_start..self.log_end)
            .filter(|&o| matches!(self.slots[o as usize], Slot::Available(_)))
            .count() as u64
    }

    /// What a recovered queue must deliver once it released what is due at `now`: every
    /// unsettled message not scheduled later, with its count.
    fn after_restart(&self, now: i64) -> Vec<Delivery> {
        (self.log_start..self.log_end)
            .filter_map(|o| {
                let count = match self.slots[o as usize] {
                    Slot::Available(count) | Slot::Held { count, .. } => count,
                    Slot::Scheduled { due, count } if due <= now => count,
                    Slot::Scheduled { .. } | Slot::Settled => return None,
                };
                Some(Delivery {
                    offset: o,
                    delivery_count: count + 1,
                    redelivered: count > 0,
                })
            })
            .collect()
    }
}

/// Names an offset for an ack, nack or extend: mostly one the consumer holds, sometimes one
/// another consumer holds, sometimes any offset (in flight or not).
#[derive(Clone, Debug)]
enum Target {
    Own(prop::sample::Index),
    Anyone(prop::sample::Index),
    Raw(i64),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        30 => any::<prop::sample::Index>().prop_map(Target::Own),
        1 => any::<prop::sample::Index>().prop_map(Target::Anyone),
        1 => (0i64..40).prop_map(Target::Raw),
    ]
}

impl Model {
    fn resolve(&self, consumer: u64, targets: &[Target]) -> Vec<Offset> {
        let own = self.held(|c, _| c == consumer);
        let anyone = self.held(|_, _| true);
        let pick = |from: &[Offset], i: &prop::sample::Index| {
            (!from.is_empty()).then(|| from[i.index(from.len())])
        };
        targets
            .iter()
            .filter_map(|t| match t {
                Target::Own(i) => pick(&own, i),
                Target::Anyone(i) => pick(&anyone, i),
                Target::Raw(o) => Some(*o),
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(i64),
    Acquire {
        consumer: u64,
        max_n: u32,
        filter_mod: i64,
        max_scan: Option<u32>,
        lease_ms: Option<i64>,
        from: Option<i64>,
    },
    Ack {
        consumer: u64,
        targets: Vec<Target>,
    },
    AckRange {
        consumer: u64,
        start: Target,
        len: i64,
    },
    Nack {
        consumer: u64,
        targets: Vec<Target>,
        requeue: bool,
    },
    Release(u64),
    Extend {
        consumer: u64,
        target: Target,
        by_ms: i64,
    },
    Tick(i64),
    AdvanceLogStart(i64),
    Purge(i64),
    Snapshot,
    /// Schedule an offset `delay` ms from now (negative: overdue).
    Schedule {
        what: Sched,
        delay: i64,
    },
    NackLater {
        consumer: u64,
        targets: Vec<Target>,
        policy: usize,
    },
    ReleaseDue,
    ClockBack(i64),
    Cancel(Vec<Sched>),
    /// Drain, persist, and continue with the queue recovered from every record (or from the
    /// last snapshot on).
    Restart {
        from_snapshot: bool,
    },
}

/// Names an offset to schedule or cancel.
#[derive(Clone, Debug)]
enum Sched {
    /// Append one message and name it.
    Fresh,
    /// An available offset.
    Ready(prop::sample::Index),
    /// A scheduled offset.
    Scheduled(prop::sample::Index),
    Raw(i64),
}

fn sched() -> impl Strategy<Value = Sched> {
    prop_oneof![
        4 => Just(Sched::Fresh),
        2 => any::<prop::sample::Index>().prop_map(Sched::Ready),
        2 => any::<prop::sample::Index>().prop_map(Sched::Scheduled),
        1 => (0i64..40).prop_map(Sched::Raw),
    ]
}

fn policies() -> Vec<RetryPolicy> {
    vec![
        RetryPolicy {
            backoff: Backoff::Fixed(15),
            max_retries: None,
        },
        RetryPolicy {
            backoff: Backoff::Exponential {
                initial_ms: 4,
                multiplier_milli: 2_000,
                max_ms: 50,
            },
            max_retries: Some(2),
        },
        RetryPolicy {
            backoff: Backoff::Ladder(vec![30, 3, 0]),
            max_retries: Some(0),
        },
        RetryPolicy {
            backoff: Backoff::Fixed(0),
            max_retries: Some(4),
        },
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let consumer = 0..CONSUMERS;
    let targets = || proptest::collection::vec(target(), 1..5);
    prop_oneof![
        2 => (0i64..8).prop_map(Op::Append),
        6 => (
            consumer.clone(),
            0u32..6,
            0i64..4,
            proptest::option::of(1u32..6),
            proptest::option::of(1i64..80),
            proptest::option::of(0i64..40),
        )
            .prop_map(|(consumer, max_n, filter_mod, max_scan, lease_ms, from)| Op::Acquire {
                consumer,
                max_n,
                filter_mod,
                max_scan,
                lease_ms,
                from,
            }),
        3 => (consumer.clone(), targets())
            .prop_map(|(consumer, targets)| Op::Ack { consumer, targets }),
        1 => (consumer.clone(), target(), 0i64..5)
            .prop_map(|(consumer, start, len)| Op::AckRange { consumer, start, len }),
        2 => (consumer.clone(), targets(), any::<bool>())
            .prop_map(|(consumer, targets, requeue)| Op::Nack { consumer, targets, requeue }),
        1 => consumer.clone().prop_map(Op::Release),
        1 => (consumer, target(), 0i64..100)
            .prop_map(|(consumer, target, by_ms)| Op::Extend { consumer, target, by_ms }),
        2 => (0i64..50).prop_map(Op::Tick),
        1 => (0i64..4).prop_map(Op::AdvanceLogStart),
        1 => (0i64..6).prop_map(Op::Purge),
        1 => Just(Op::Snapshot),
        4 => (sched(), -20i64..120).prop_map(|(what, delay)| Op::Schedule { what, delay }),
        2 => (0..CONSUMERS, targets(), 0usize..4)
            .prop_map(|(consumer, targets, policy)| Op::NackLater { consumer, targets, policy }),
        2 => Just(Op::ReleaseDue),
        1 => (1i64..80).prop_map(Op::ClockBack),
        1 => proptest::collection::vec(sched(), 1..3).prop_map(Op::Cancel),
        1 => any::<bool>().prop_map(|from_snapshot| Op::Restart { from_snapshot }),
    ]
}

/// Deliver every offset when `k == 0`, else those not divisible by `k + 1`.
fn filter_for(k: i64) -> impl Fn(Offset) -> bool {
    move |o| k == 0 || o % (k + 1) != 0
}

fn step(q: &mut QueueState, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op.clone() {
        Op::Append(n) => m.append(n),
        Op::Acquire {
            consumer,
            max_n,
            filter_mod,
            max_scan,
            lease_ms,
            from,
        } => {
            let mut req = Acquire::new(ConsumerId(consumer), max_n, m.log_end, m.now_ms);
            req.max_scan = max_scan;
            req.lease_ms = lease_ms;
            req.from = from.unwrap_or(Offset::MIN);
            let filter = filter_for(filter_mod);
            let got = q.acquire_filtered(&req, |o| {
                if filter(o) {
                    Verdict::Deliver
                } else {
                    Verdict::Skip
                }
            });
            let mut model_req = req.clone();
            model_req.max_scan = Some(max_scan.unwrap_or(u32::MAX));
            prop_assert_eq!(got, m.acquire(&model_req, filter));
        }
        Op::Ack { consumer, targets } => {
            let offsets = m.resolve(consumer, &targets);
            let distinct = offsets
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let want = m.settle(consumer, &offsets, false).map(|_| distinct as u64);
            prop_assert_eq!(q.ack(ConsumerId(consumer), &offsets), want);
        }
        Op::AckRange {
            consumer,
            start,
            len,
        } => {
            let Some(&start) = m.resolve(consumer, &[start]).first() else {
                return Ok(());
            };
            let offsets: Vec<_> = (start..start + len).collect();
            let want = m
                .settle(consumer, &offsets, false)
                .map(|_| offsets.len() as u64);
            prop_assert_eq!(q.ack_range(ConsumerId(consumer), start..start + len), want);
        }
        Op::Nack {
            consumer,
            targets,
            requeue,
        } => {
            let offsets = m.resolve(consumer, &targets);
            let want = if requeue {
                m.check_held(consumer, &offsets)
                    .map(|sorted| m.give_back(&sorted))
            } else {
                m.settle(consumer, &offsets, true)
            };
            prop_assert_eq!(q.nack(ConsumerId(consumer), &offsets, requeue), want);
        }
        Op::Release(consumer) => {
            let held = m.held(|c, _| c == consumer);
            prop_assert_eq!(q.release_consumer(ConsumerId(consumer)), m.give_back(&held));
        }
        Op::Extend {
            consumer,
            target,
            by_ms,
        } => {
            let Some(&offset) = m.resolve(consumer, &[target]).first() else {
                return Ok(());
            };
            let deadline = m.now_ms + by_ms;
            let want = m.check_held(consumer, &[offset]).map(|_| {
                if let Slot::Held { deadline_ms, .. } = &mut m.slots[offset as usize] {
                    *deadline_ms = deadline;
                }
            });
            prop_assert_eq!(q.extend_lease(ConsumerId(consumer), offset, deadline), want);
        }
        Op::Tick(ms) => {
            m.now_ms += ms;
            let now = m.now_ms;
            let due = m.held(|_, deadline| deadline <= now);
            prop_assert_eq!(q.expire(now), m.give_back(&due));
            prop_assert_eq!(q.next_deadline(), m.next_deadline());
        }
        Op::AdvanceLogStart(delta) => {
            let new_start = (m.log_start + delta).min(m.log_end);
            let lost = m.advance_log_start(new_start);
            prop_assert_eq!(q.advance_log_start(new_start), lost);
        }
        Op::Purge(k) => {
            let up_to = (m.log_start + k).min(m.log_end);
            let purged = m.purge_below(up_to);
            prop_assert_eq!(q.purge_below(up_to), purged);
        }
        Op::Snapshot => q.write_snapshot(),
        _ => step_schedule(q, m, op)?,
    }
    Ok(())
}

/// The scheduling operations (issue 16).
fn step_schedule(q: &mut QueueState, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op.clone() {
        Op::Schedule { what, delay } => {
            let Some(offset) = m.resolve_sched(&what) else {
                return Ok(());
            };
            let due = m.now_ms + delay;
            let want = match m.slot(offset) {
                Some(Slot::Available(count)) => {
                    m.slots[offset as usize] = Slot::Scheduled { due, count };
                    Ok(())
                }
                _ => Err(QueueError::NotAvailable { offset }),
            };
            prop_assert_eq!(q.schedule(offset, due), want);
        }
        Op::NackLater {
            consumer,
            targets,
            policy,
        } => {
            let policy = &policies()[policy];
            let offsets = m.resolve(consumer, &targets);
            let want = m
                .check_held(consumer, &offsets)
                .map(|sorted| m.nack_later(&sorted, policy));
            prop_assert_eq!(
                q.nack_later(ConsumerId(consumer), &offsets, m.now_ms, policy),
                want
            );
        }
        Op::ReleaseDue => {
            let want = m.release(m.now_ms);
            prop_assert_eq!(q.release_due(m.now_ms), want);
        }
        Op::ClockBack(ms) => m.now_ms -= ms,
        Op::Cancel(whats) => {
            let offsets: Vec<Offset> = whats.iter().filter_map(|w| m.resolve_sched(w)).collect();
            let mut sorted = offsets.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let bad = sorted
                .iter()
                .find(|&&o| !matches!(m.slot(o), Some(Slot::Scheduled { .. })));
            let want = match bad {
                Some(&offset) => Err(QueueError::NotScheduled { offset }),
                None => {
                    for &o in &sorted {
                        m.slots[o as usize] = Slot::Settled;
                    }
                    Ok(sorted.len() as u64)
                }
            };
            prop_assert_eq!(q.cancel_scheduled(&offsets), want);
        }
        // Handled by the driver, which owns the persisted records.
        Op::Restart { .. } => {}
        _ => unreachable!("not a scheduling operation: {op:?}"),
    }
    Ok(())
}

impl Model {
    fn resolve_sched(&mut self, what: &Sched) -> Option<Offset> {
        let pick = |from: Vec<Offset>, i: &prop::sample::Index| {
            (!from.is_empty()).then(|| from[i.index(from.len())])
        };
        match what {
            Sched::Fresh => {
                self.append(1);
                Some(self.log_end - 1)
            }
            Sched::Ready(i) => pick(self.offsets(|s| matches!(s, Slot::Available(_))), i),
            Sched::Scheduled(i) => pick(self.offsets(|s| matches!(s, Slot::Scheduled { .. })), i),
            Sched::Raw(o) => (*o < self.log_end).then_some(*o),
        }
    }

    fn offsets(&self, pred: impl Fn(Slot) -> bool) -> Vec<Offset> {
        (self.log_start..self.log_end)
            .filter(|&o| pred(self.slots[o as usize]))
            .collect()
    }

    /// Scheduled offsets due at `now`, in (due, offset) order, made available.
    fn release(&mut self, now: i64) -> Vec<Offset> {
        let mut due: Vec<(i64, Offset)> = (self.log_start..self.log_end)
            .filter_map(|o| match self.slots[o as usize] {
                Slot::Scheduled { due, .. } if due <= now => Some((due, o)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for &(_, o) in &due {
            if let Slot::Scheduled { count, .. } = self.slots[o as usize] {
                self.slots[o as usize] = Slot::Available(count);
            }
        }
        due.into_iter().map(|(_, o)| o).collect()
    }

    fn nack_later(&mut self, sorted: &[Offset], policy: &RetryPolicy) -> Retried {
        let mut out = Retried::default();
        for &o in sorted {
            let Slot::Held { count, .. } = self.slots[o as usize] else {
                unreachable!("checked held");
            };
            if policy.exhausted(count) || self.limit.is_some_and(|l| count > l) {
                self.slots[o as usize] = Slot::Settled;
                out.dead.push(DeadLetter {
                    offset: o,
                    delivery_count: count,
                    reason: DeadReason::DeliveryLimit,
                });
            } else {
                let due = self.now_ms + policy.backoff.delay_ms(count);
                self.slots[o as usize] = Slot::Scheduled { due, count };
                out.scheduled.push(ScheduledEntry {
                    offset: o,
                    due_ms: due,
                });
            }
        }
        out
    }

    fn scheduled(&self) -> Vec<(i64, Offset)> {
        let mut out: Vec<(i64, Offset)> = (self.log_start..self.log_end)
            .filter_map(|o| match self.slots[o as usize] {
                Slot::Scheduled { due, .. } => Some((due, o)),
                _ => None,
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// A restart voids every lease.
    fn restart(&mut self) {
        for slot in &mut self.slots {
            if let Slot::Held { count, .. } = *slot {
                *slot = Slot::Available(count);
            }
        }
    }
}

impl Model {
    fn append(&mut self, n: i64) {
        self.log_end += n;
        self.slots.resize(self.log_end as usize, Slot::Available(0));
    }

    fn next_deadline(&self) -> Option<i64> {
        (self.log_start..self.log_end)
            .filter_map(|o| match self.slots[o as usize] {
                Slot::Held { deadline_ms, .. } => Some(deadline_ms),
                _ => None,
            })
            .min()
    }

    fn advance_log_start(&mut self, new_start: Offset) -> Vec<LostLease> {
        let lost = (self.log_start..new_start.max(self.log_start))
            .filter_map(|o| match self.slots[o as usize] {
                Slot::Held { consumer, .. } => Some(LostLease {
                    consumer: ConsumerId(consumer),
                    offset: o,
                }),
                _ => None,
            })
            .collect();
        self.log_start = self.log_start.max(new_start);
        lost
    }

    fn purge_below(&mut self, up_to: Offset) -> u64 {
        let mut purged = 0;
        for o in self.log_start..up_to {
            if matches!(self.slots[o as usize], Slot::Available(_)) {
                self.slots[o as usize] = Slot::Settled;
                purged += 1;
            }
        }
        purged
    }
}

fn check_counts(q: &QueueState, m: &Model) -> Result<(), TestCaseError> {
    q.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(q.ready(m.log_end), m.ready());
    let scheduled = m.scheduled();
    prop_assert_eq!(q.scheduled(), scheduled.len() as u64);
    if let Some(&(first, _)) = scheduled.first() {
        // Never later than the next real release (a cancelled entry may make it earlier).
        prop_assert!(
            q.next_due().is_some_and(|d| d <= first),
            "{:?}",
            q.next_due()
        );
    }
    prop_assert_eq!(q.unacked(), m.held(|_, _| true).len() as u64);
    for c in 0..CONSUMERS {
        prop_assert_eq!(
            q.acquired_by(ConsumerId(c)),
            m.held(|held, _| held == c).len() as u64
        );
    }
    Ok(())
}

/// Recovers from `records` and checks the queue delivers exactly what the model says.
fn check_recovery(
    config: &QueueConfig,
    records: &[Vec<u8>],
    m: &Model,
) -> Result<(), TestCaseError> {
    let mut r = QueueState::recover_encoded(config.clone(), records.iter().map(Vec::as_slice))
        .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))?;
    r.check_invariants().map_err(TestCaseError::fail)?;
    let scheduled = m.scheduled();
    prop_assert_eq!(r.scheduled(), scheduled.len() as u64);
    // Everything overdue comes out at once, in due order; nothing else.
    let due: Vec<Offset> = scheduled
        .iter()
        .filter(|&&(d, _)| d <= m.now_ms)
        .map(|&(_, o)| o)
        .collect();
    prop_assert_eq!(r.release_due(m.now_ms), due.clone());
    r.check_invariants().map_err(TestCaseError::fail)?;
    prop_assert_eq!(r.scheduled(), (scheduled.len() - due.len()) as u64);
    let want = m.after_restart(m.now_ms);
    prop_assert_eq!(r.ready(m.log_end), want.len() as u64);
    prop_assert_eq!(r.unacked(), 0);
    let req = Acquire::new(ConsumerId(99), u32::MAX, m.log_end, m.now_ms).max_scan(u32::MAX);
    let got = r.acquire(&req);
    prop_assert_eq!(got.deliveries, want);
    Ok(())
}

/// A crash that kept only a prefix of the records (flush = async) recovers to a state that
/// claims nothing false: what it treats as settled is settled, and no delivery count is
/// higher than the real one. (What the lost tail said — acks, deliveries — may be lost.)
fn check_torn_recovery(
    config: &QueueConfig,
    records: &[Vec<u8>],
    m: &Model,
) -> Result<(), TestCaseError> {
    let mut r = QueueState::recover_encoded(config.clone(), records.iter().map(Vec::as_slice))
        .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))?;
    r.check_invariants().map_err(TestCaseError::fail)?;
    // Whatever is still scheduled is not lost: release it all and look.
    r.release_due(i64::MAX);
    let req = Acquire::new(ConsumerId(99), u32::MAX, m.log_end, m.now_ms).max_scan(u32::MAX);
    let delivered = r.acquire(&req).deliveries;
    let from = r.log_start().max(m.log_start);
    let mut next = delivered.iter().filter(|d| d.offset >= from).peekable();
    for o in from..m.log_end {
        let d = next.next_if(|d| d.offset == o);
        match (m.slots[o as usize], d) {
            (Slot::Settled, _) => {}
            (
                Slot::Available(count) | Slot::Held { count, .. } | Slot::Scheduled { count, .. },
                Some(d),
            ) => {
                prop_assert!(
                    d.delivery_count <= count + 1,
                    "offset {o}: {d:?}, real count {count}"
                );
            }
            (slot, None) => prop_assert!(false, "offset {o} ({slot:?}) treated as settled"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn engine_matches_model_and_recovers(
        start in 0i64..5,
        limit in proptest::option::of(0u32..4),
        ops in proptest::collection::vec((op(), proptest::bool::weighted(0.6)), 1..60),
    ) {
        let config = QueueConfig {
            lease_ms: LEASE_MS,
            delivery_limit: limit,
            ..QueueConfig::default()
        };
        let mut q = QueueState::new(config.clone(), start);
        let mut m = Model {
            log_start: start,
            log_end: start,
            now_ms: 1_000,
            limit,
            slots: vec![Slot::Settled; start as usize],
        };
        let mut persisted: Vec<Vec<u8>> = Vec::new();
        let mut last_snapshot = 0;
        for (i, (op, drain)) in ops.iter().enumerate() {
            if let Op::Restart { from_snapshot } = op {
                for record in q.drain_records() {
                    if matches!(record, Record::Snapshot(_)) {
                        last_snapshot = persisted.len();
                    }
                    persisted.push(record.to_bytes());
                }
                let from = if *from_snapshot { last_snapshot } else { 0 };
                q = QueueState::recover_encoded(
                    config.clone(),
                    persisted[from..].iter().map(Vec::as_slice),
                )
                .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))?;
                m.restart();
            }
            step(&mut q, &mut m, op)?;
            check_counts(&q, &m)?;
            // Records left in the outbox coalesce with later ones; recovery is checked
            // whenever the outbox has been drained (always after the last step).
            if !*drain && i + 1 < ops.len() {
                continue;
            }
            for record in q.drain_records() {
                let bytes = record.to_bytes();
                prop_assert_eq!(bytes.len(), record.encoded_len());
                prop_assert_eq!(Record::decode(&bytes), Ok(record.clone()));
                if matches!(record, Record::Snapshot(_)) {
                    last_snapshot = persisted.len();
                }
                persisted.push(bytes);
            }
            check_recovery(&config, &persisted, &m)?;
            check_recovery(&config, &persisted[last_snapshot..], &m)?;
        }
        for torn in 0..persisted.len() {
            check_torn_recovery(&config, &persisted[..torn], &m)?;
        }
    }
}
