//! The queue engine driven by events, one behaviour a consumer would notice per test. Time
//! comes from a `ManualClock`; nothing sleeps.

// Records hold `Vec<Range>`s of settled offsets: a one-range vector is what is meant.
#![allow(clippy::single_range_in_vec_init)]

use common::{Clock, ManualClock};
use sluice_queues::{
    Acquire, ConsumerId, DeadLetter, DeadReason, DeliveredRun, Delivery, LostLease, Offset,
    QueueConfig, QueueError, QueueState, Record, SettleOutcome, Verdict,
};

const A: ConsumerId = ConsumerId(1);
const B: ConsumerId = ConsumerId(2);
const LEASE_MS: i64 = 10_000;

fn queue() -> (QueueState, ManualClock) {
    let config = QueueConfig {
        lease_ms: LEASE_MS,
        ..QueueConfig::default()
    };
    (QueueState::new(config, 0), ManualClock::new(1_000_000))
}

fn take(
    q: &mut QueueState,
    clock: &ManualClock,
    who: ConsumerId,
    n: u32,
    log_end: Offset,
) -> Vec<Offset> {
    q.acquire(&Acquire::new(who, n, log_end, clock.now_ms()))
        .deliveries
        .iter()
        .map(|d| d.offset)
        .collect()
}

/// Restarts the queue from every record it wrote.
fn restart(q: &mut QueueState, log: &mut Vec<Vec<u8>>) -> QueueState {
    log.extend(q.drain_records().iter().map(Record::to_bytes));
    QueueState::recover_encoded(q.config().clone(), log.iter().map(Vec::as_slice))
        .expect("records decode")
}

#[test]
fn first_deliveries_come_in_offset_order_and_count_as_unacked() {
    let (mut q, clock) = queue();
    let got = q.acquire(&Acquire::new(A, 3, 10, clock.now_ms()));
    assert_eq!(
        got.deliveries,
        (0..3)
            .map(|offset| Delivery {
                offset,
                delivery_count: 1,
                redelivered: false
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(got.resume_from, None);
    assert_eq!((q.ready(10), q.unacked(), q.acquired_by(A)), (7, 3, 3));
    assert_eq!(
        take(&mut q, &clock, B, 100, 10),
        (3..10).collect::<Vec<_>>()
    );
    assert_eq!(
        take(&mut q, &clock, B, 100, 10),
        Vec::<Offset>::new(),
        "nothing left"
    );
}

#[test]
fn a_requeued_message_goes_out_again_before_newer_ones_marked_redelivered() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 3, 10);
    let back = q.nack(A, &[1], true).unwrap();
    assert_eq!(back.requeued, vec![1]);
    assert_eq!(q.ready(10), 8);
    let again = q
        .acquire(&Acquire::new(B, 2, 10, clock.now_ms()))
        .deliveries;
    assert_eq!(
        again,
        vec![
            Delivery {
                offset: 1,
                delivery_count: 2,
                redelivered: true
            },
            Delivery {
                offset: 3,
                delivery_count: 1,
                redelivered: false
            },
        ]
    );
}

#[test]
fn an_ack_from_a_consumer_that_does_not_hold_the_message_is_refused_and_changes_nothing() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 2, 10);
    assert_eq!(
        q.ack(B, &[0]),
        Err(QueueError::HeldByOther {
            offset: 0,
            consumer: B,
            holder: A
        })
    );
    // One bad offset refuses the whole call: 0 stays in flight.
    assert_eq!(
        q.ack(A, &[0, 5]),
        Err(QueueError::NotInFlight {
            offset: 5,
            consumer: A
        })
    );
    assert_eq!(
        q.ack(A, &[7]),
        Err(QueueError::NotInFlight {
            offset: 7,
            consumer: A
        })
    );
    assert_eq!(q.unacked(), 2);
    assert_eq!(q.ack(A, &[0, 1]), Ok(2));
    assert_eq!(
        q.ack(A, &[0]),
        Err(QueueError::NotInFlight {
            offset: 0,
            consumer: A
        }),
        "acked twice"
    );
    let backwards = std::ops::Range { start: 5, end: 2 };
    assert_eq!(
        q.ack_range(A, backwards),
        Err(QueueError::InvalidRange { start: 5, end: 2 })
    );
    assert_eq!((q.unacked(), q.low_water()), (0, 2));
}

#[test]
fn a_range_ack_settles_thousands_of_messages_as_one_range() {
    let (mut q, clock) = queue();
    q.drain_records();
    take(&mut q, &clock, A, 5000, 5000);
    assert_eq!(q.ack_range(A, 0..5000), Ok(5000));
    assert_eq!((q.unacked(), q.low_water(), q.ready(5000)), (0, 5000, 0));
    let records = q.drain_records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(
        records[1],
        Record::Settled {
            outcome: SettleOutcome::Acked,
            ranges: vec![0..5000]
        }
    );
}

#[test]
fn a_consumer_that_goes_away_gives_its_messages_back_in_place() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 2, 10);
    take(&mut q, &clock, B, 2, 10);
    let released = q.release_consumer(A);
    assert_eq!(released.requeued, vec![0, 1]);
    assert_eq!(
        (q.acquired_by(A), q.acquired_by(B), q.consumers_holding()),
        (0, 2, 1)
    );
    let again = q
        .acquire(&Acquire::new(B, 3, 10, clock.now_ms()))
        .deliveries;
    assert_eq!(
        again
            .iter()
            .map(|d| (d.offset, d.redelivered))
            .collect::<Vec<_>>(),
        vec![(0, true), (1, true), (4, false)]
    );
}

#[test]
fn a_lease_expires_at_its_deadline_unless_extended() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 2, 10);
    assert_eq!(q.next_deadline(), Some(clock.now_ms() + LEASE_MS));
    q.extend_lease(A, 1, clock.now_ms() + 3 * LEASE_MS).unwrap();
    assert_eq!(
        q.extend_lease(B, 1, 0),
        Err(QueueError::HeldByOther {
            offset: 1,
            consumer: B,
            holder: A
        })
    );
    clock.advance_ms(LEASE_MS - 1);
    assert!(q.expire(clock.now_ms()).requeued.is_empty(), "not yet due");
    clock.advance_ms(1);
    assert_eq!(q.expire(clock.now_ms()).requeued, vec![0]);
    assert_eq!(q.next_deadline(), Some(clock.now_ms() + 2 * LEASE_MS));
    assert_eq!(
        q.ack(A, &[0]),
        Err(QueueError::NotInFlight {
            offset: 0,
            consumer: A
        }),
        "lease gone"
    );
    assert_eq!(q.ack(A, &[1]), Ok(1), "the extended lease still holds");
}

#[test]
fn a_per_call_lease_overrides_the_queue_default() {
    let (mut q, clock) = queue();
    q.acquire(&Acquire::new(A, 1, 10, clock.now_ms()).lease_ms(500));
    assert_eq!(q.next_deadline(), Some(clock.now_ms() + 500));
}

#[test]
fn a_poison_message_is_dead_lettered_after_the_delivery_limit() {
    let (mut q, clock) = queue();
    q.set_config(QueueConfig {
        delivery_limit: Some(2),
        ..q.config().clone()
    });
    for attempt in 1..=2 {
        let d = q.acquire(&Acquire::new(A, 1, 1, clock.now_ms())).deliveries;
        assert_eq!(d[0].delivery_count, attempt);
        assert_eq!(q.nack(A, &[0], true).unwrap().requeued, vec![0]);
    }
    q.acquire(&Acquire::new(A, 1, 1, clock.now_ms()));
    let third = q.nack(A, &[0], true).unwrap();
    assert_eq!(third.requeued, Vec::<Offset>::new());
    assert_eq!(
        third.dead,
        vec![DeadLetter {
            offset: 0,
            delivery_count: 3,
            reason: DeadReason::DeliveryLimit
        }]
    );
    assert!(
        q.acquire(&Acquire::new(A, 1, 1, clock.now_ms()))
            .deliveries
            .is_empty()
    );
    assert_eq!(q.ready(1), 0);
}

#[test]
fn a_reject_without_requeue_is_dead_and_never_delivered_again() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 2, 2);
    let out = q.nack(A, &[0], false).unwrap();
    assert_eq!(
        out.dead,
        vec![DeadLetter {
            offset: 0,
            delivery_count: 1,
            reason: DeadReason::Rejected
        }]
    );
    q.nack(A, &[1], true).unwrap();
    assert_eq!(take(&mut q, &clock, A, 10, 2), vec![1]);
    let records = q.drain_records();
    assert!(
        records.contains(&Record::Settled {
            outcome: SettleOutcome::Dead,
            ranges: vec![0..1]
        }),
        "{records:?}"
    );
}

#[test]
fn a_filter_leaves_skipped_messages_for_other_consumers() {
    let (mut q, clock) = queue();
    let even = |o: Offset| {
        if o % 2 == 0 {
            Verdict::Deliver
        } else {
            Verdict::Skip
        }
    };
    let got = q.acquire_filtered(&Acquire::new(A, 3, 10, clock.now_ms()), even);
    assert_eq!(
        got.deliveries.iter().map(|d| d.offset).collect::<Vec<_>>(),
        vec![0, 2, 4]
    );
    assert_eq!(q.ready(10), 7);
    assert_eq!(
        take(&mut q, &clock, B, 3, 10),
        vec![1, 3, 5],
        "odd ones, never delivered before"
    );
}

#[test]
fn a_filter_matching_nothing_costs_bounded_work_and_can_resume() {
    let (mut q, clock) = queue();
    let log_end = 10_000_000;
    let mut asked = 0;
    let got = q.acquire_filtered(
        &Acquire::new(A, 10, log_end, clock.now_ms()).max_scan(1000),
        |o| {
            asked += 1;
            if o == 1500 {
                Verdict::Deliver
            } else {
                Verdict::Skip
            }
        },
    );
    assert_eq!(
        (got.deliveries.len(), got.resume_from, asked),
        (0, Some(1000), 1000)
    );
    let next = q.acquire_filtered(
        &Acquire::new(A, 10, log_end, clock.now_ms())
            .max_scan(1000)
            .from(1000),
        |o| {
            if o == 1500 {
                Verdict::Deliver
            } else {
                Verdict::Skip
            }
        },
    );
    assert_eq!(
        next.deliveries.iter().map(|d| d.offset).collect::<Vec<_>>(),
        vec![1500]
    );
    assert_eq!(q.ready(log_end), log_end as u64 - 1);
    assert_eq!(
        q.footprint().skipped_ranges,
        1,
        "the skipped prefix is one range"
    );
}

#[test]
fn purge_drops_ready_messages_but_not_those_in_flight() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 2, 10);
    q.nack(A, &[0], true).unwrap();
    assert_eq!(q.purge_below(10), 9);
    assert_eq!((q.ready(10), q.ready(12), q.unacked()), (0, 2, 1));
    assert_eq!(q.ack(A, &[1]), Ok(1));
    assert_eq!(q.low_water(), 10);
    assert_eq!(take(&mut q, &clock, A, 10, 12), vec![10, 11]);
}

#[test]
fn the_head_of_the_queue_can_be_dead_lettered_as_ranges() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 2, 10);
    q.nack(A, &[0], true).unwrap();
    q.drain_records();
    // Offset 1 is in flight; 0 (returned) and 2..6 (never delivered) are dropped.
    let dropped = q.settle_ready_below(6, SettleOutcome::Dead);
    assert_eq!(dropped.iter().collect::<Vec<_>>(), vec![0..1, 2..6]);
    assert_eq!((q.ready(10), q.unacked()), (4, 1));
    assert_eq!(
        q.drain_records(),
        vec![Record::Settled {
            outcome: SettleOutcome::Dead,
            ranges: vec![0..1, 2..6]
        }]
    );
    assert_eq!(take(&mut q, &clock, B, 10, 10), vec![6, 7, 8, 9]);
}

#[test]
fn retention_past_in_flight_messages_drops_their_leases() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, A, 3, 10);
    assert_eq!(
        q.advance_log_start(2),
        vec![
            LostLease {
                consumer: A,
                offset: 0
            },
            LostLease {
                consumer: A,
                offset: 1
            }
        ]
    );
    assert_eq!(
        q.ack(A, &[0]),
        Err(QueueError::NotInFlight {
            offset: 0,
            consumer: A
        })
    );
    assert_eq!((q.unacked(), q.ready(10), q.log_start()), (1, 7, 2));
    assert!(
        q.advance_log_start(1).is_empty(),
        "the log start never moves back"
    );
    assert_eq!(
        q.advance_log_start(6),
        vec![LostLease {
            consumer: A,
            offset: 2
        }]
    );
    assert_eq!(take(&mut q, &clock, B, 10, 10), vec![6, 7, 8, 9]);
}

#[test]
fn one_acquire_batch_writes_one_small_record_and_acks_coalesce_between_drains() {
    let (mut q, clock) = queue();
    q.drain_records();
    take(&mut q, &clock, A, 1000, 100_000);
    let records = q.drain_records();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].encoded_len(),
        22,
        "one run: 2 + 4 + 16 bytes for 1000 deliveries"
    );
    // 1000 acks, one call each, out of order: one record with one range.
    for o in (0..1000).rev() {
        q.ack(A, &[o]).unwrap();
    }
    let records = q.drain_records();
    assert_eq!(
        records,
        vec![Record::Settled {
            outcome: SettleOutcome::Acked,
            ranges: vec![0..1000]
        }]
    );
    // A steady consumer between two flushes: 100 acquires of 10, each acked at once, two
    // consumers interleaved. Still two records: every delivery, then every ack.
    for round in 0..100 {
        let who = if round % 2 == 0 { A } else { B };
        let got = take(&mut q, &clock, who, 10, 100_000);
        q.ack(who, &got).unwrap();
    }
    let records = q.drain_records();
    assert_eq!(
        records,
        vec![
            Record::Delivered(vec![DeliveredRun {
                start: 1000,
                len: 1000,
                delivery_count: 1
            }]),
            Record::Settled {
                outcome: SettleOutcome::Acked,
                ranges: vec![1000..2000]
            },
        ]
    );
}

#[test]
fn after_a_restart_acked_messages_stay_acked_and_in_flight_ones_come_back_redelivered() {
    let (mut q, clock) = queue();
    let mut log = Vec::new();
    take(&mut q, &clock, A, 4, 6);
    q.ack(A, &[0, 2]).unwrap();
    q.nack(A, &[3], true).unwrap();
    take(&mut q, &clock, B, 1, 6); // 3 again: its second delivery
    let mut r = restart(&mut q, &mut log);
    assert_eq!((r.ready(6), r.unacked()), (4, 0));
    let got = r
        .acquire(&Acquire::new(A, 10, 6, clock.now_ms()))
        .deliveries;
    assert_eq!(
        got,
        vec![
            Delivery {
                offset: 1,
                delivery_count: 2,
                redelivered: true
            },
            Delivery {
                offset: 3,
                delivery_count: 3,
                redelivered: true
            },
            Delivery {
                offset: 4,
                delivery_count: 1,
                redelivered: false
            },
            Delivery {
                offset: 5,
                delivery_count: 1,
                redelivered: false
            },
        ]
    );
    // A second restart keeps the counts of the deliveries made after the first.
    let mut again = restart(&mut r, &mut log);
    let got = again
        .acquire(&Acquire::new(A, 1, 6, clock.now_ms()))
        .deliveries;
    assert_eq!(
        got,
        vec![Delivery {
            offset: 1,
            delivery_count: 3,
            redelivered: true
        }]
    );
}

#[test]
fn a_snapshot_replaces_the_records_before_it() {
    let (mut q, clock) = queue();
    q.set_config(QueueConfig {
        snapshot_every_records: 3,
        ..q.config().clone()
    });
    let mut log: Vec<Vec<u8>> = Vec::new();
    for round in 0..3 {
        take(&mut q, &clock, A, 2, 100);
        q.ack(A, &[round * 2]).unwrap();
        log.extend(q.drain_records().iter().map(Record::to_bytes));
    }
    assert!(q.snapshot_due(), "6 records since the start");
    q.write_snapshot();
    assert!(!q.snapshot_due(), "a snapshot is already on its way");
    let snapshot = q.drain_records();
    assert!(!q.snapshot_due());
    let trimmed: Vec<Vec<u8>> = snapshot.iter().map(Record::to_bytes).collect();
    let mut r =
        QueueState::recover_encoded(q.config().clone(), trimmed.iter().map(Vec::as_slice)).unwrap();
    let got: Vec<_> = r
        .acquire(&Acquire::new(B, 10, 8, clock.now_ms()))
        .deliveries
        .iter()
        .map(|d| (d.offset, d.redelivered))
        .collect();
    assert_eq!(
        got,
        vec![(1, true), (3, true), (5, true), (6, false), (7, false)]
    );
}

#[test]
fn a_large_snapshot_is_not_rewritten_after_every_small_batch() {
    let (mut q, clock) = queue();
    q.set_config(QueueConfig {
        snapshot_every_bytes: 100,
        snapshot_every_records: u64::MAX,
        ..q.config().clone()
    });
    // 200 in-flight messages with alternating counts: a snapshot of ~3 KiB.
    take(&mut q, &clock, A, 200, 200);
    q.nack(A, &(0..200).step_by(2).collect::<Vec<_>>(), true)
        .unwrap();
    take(&mut q, &clock, A, 100, 200);
    q.write_snapshot();
    let size = q.drain_records().last().unwrap().encoded_len();
    assert!(size > 3000, "{size}");
    take(&mut q, &clock, A, 10, 300);
    q.drain_records();
    assert!(
        !q.snapshot_due(),
        "a 22-byte record does not call for a {size}-byte snapshot"
    );
}
