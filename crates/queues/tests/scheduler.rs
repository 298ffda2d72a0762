//! Scheduled offsets and retry with backoff (issue 16), one behaviour per test, driven by a
//! `ManualClock`; nothing sleeps. The random sequences are in `model.rs`; the memory bound
//! in `scheduler_memory.rs`.

// Records hold `Vec<Range>`s of settled offsets: a one-range vector is what is meant.
#![allow(clippy::single_range_in_vec_init)]

use common::{Clock, ManualClock};
use sluice_queues::{
    Acquire, Backoff, ConsumerId, DeadLetter, DeadReason, Delivery, Offset, QueueConfig,
    QueueError, QueueState, Record, RetryPolicy, ScheduledEntry, SettleOutcome,
};

const A: ConsumerId = ConsumerId(1);
const SECOND: i64 = 1_000;
const YEAR: i64 = 365 * 24 * 3_600 * SECOND;

fn queue() -> (QueueState, ManualClock) {
    (
        QueueState::new(QueueConfig::default(), 0),
        ManualClock::new(1_700_000_000_000),
    )
}

fn take(q: &mut QueueState, clock: &ManualClock, n: u32, log_end: Offset) -> Vec<Delivery> {
    q.acquire(&Acquire::new(A, n, log_end, clock.now_ms()))
        .deliveries
}

fn offsets(deliveries: &[Delivery]) -> Vec<Offset> {
    deliveries.iter().map(|d| d.offset).collect()
}

/// Persists what the queue wrote and restarts it from every record.
fn restart(q: &mut QueueState, log: &mut Vec<Vec<u8>>) -> QueueState {
    log.extend(q.drain_records().iter().map(Record::to_bytes));
    let r = QueueState::recover_encoded(q.config().clone(), log.iter().map(Vec::as_slice))
        .expect("records decode");
    r.check_invariants().unwrap();
    r
}

#[test]
fn a_delayed_message_is_hidden_until_due_then_delivered_fresh() {
    let (mut q, clock) = queue();
    // Offsets 0..3 published; 1 is delayed by 10 s.
    q.schedule(1, clock.now_ms() + 10 * SECOND).unwrap();
    assert_eq!((q.ready(3), q.scheduled()), (2, 1));
    assert_eq!(q.next_due(), Some(clock.now_ms() + 10 * SECOND));
    assert_eq!(offsets(&take(&mut q, &clock, 10, 3)), vec![0, 2]);
    clock.advance_ms(10 * SECOND - 1);
    assert!(
        take(&mut q, &clock, 10, 3).is_empty(),
        "not a millisecond early"
    );
    clock.advance_ms(1);
    assert_eq!(
        take(&mut q, &clock, 10, 3),
        vec![Delivery {
            offset: 1,
            delivery_count: 1,
            redelivered: false
        }],
        "a delay is not a delivery"
    );
    assert_eq!((q.scheduled(), q.next_due()), (0, None));
    q.check_invariants().unwrap();
}

#[test]
fn only_an_available_offset_can_be_scheduled() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, 1, 5);
    q.schedule(3, clock.now_ms() + SECOND).unwrap();
    for offset in [0, 3] {
        assert_eq!(
            q.schedule(offset, 0),
            Err(QueueError::NotAvailable { offset }),
            "in flight, then already scheduled"
        );
    }
    q.ack(A, &[0]).unwrap();
    assert_eq!(
        q.schedule(0, 0),
        Err(QueueError::NotAvailable { offset: 0 })
    );
    // Offset 1 and 2 were passed by the cursor and stay available; 2 can be scheduled.
    q.schedule(2, clock.now_ms() + SECOND).unwrap();
    assert_eq!(q.ready(5), 2, "1 and 4");
    q.check_invariants().unwrap();
}

#[test]
fn due_offsets_come_out_in_due_order_then_offset_order() {
    let (mut q, clock) = queue();
    let now = clock.now_ms();
    for (offset, delay) in [(0, 30), (1, 10), (2, 20), (3, 10), (4, 5 * YEAR / 10)] {
        q.schedule(offset, now + delay).unwrap();
    }
    assert_eq!(q.release_due(now + 9), Vec::<Offset>::new());
    assert_eq!(q.release_due(now + 25), vec![1, 3, 2]);
    assert_eq!(q.release_due(now + 25), Vec::<Offset>::new(), "once");
    assert_eq!(q.release_due(now + YEAR), vec![0, 4]);
    assert_eq!(q.ready(5), 5);
}

#[test]
fn a_retry_comes_back_after_its_backoff_redelivered_and_dies_after_max_retries() {
    let (mut q, clock) = queue();
    let policy = RetryPolicy::parse(Some("exponential:1s,2,60s"), Some("2"))
        .unwrap()
        .unwrap();
    let mut delays = Vec::new();
    for attempt in 1..=3u32 {
        let got = take(&mut q, &clock, 1, 1);
        assert_eq!(
            got,
            vec![Delivery {
                offset: 0,
                delivery_count: attempt,
                redelivered: attempt > 1
            }]
        );
        let retried = q.nack_later(A, &[0], clock.now_ms(), &policy).unwrap();
        if attempt == 3 {
            assert_eq!(
                retried.dead,
                vec![DeadLetter {
                    offset: 0,
                    delivery_count: 3,
                    reason: DeadReason::DeliveryLimit
                }],
                "two retries, then dead (x-death reason delivery_limit)"
            );
            break;
        }
        let [ScheduledEntry { offset: 0, due_ms }] = retried.scheduled[..] else {
            panic!("{retried:?}");
        };
        delays.push(due_ms - clock.now_ms());
        assert_eq!(q.unacked(), 0, "a waiting retry holds no lease");
        clock.advance_ms(due_ms - clock.now_ms() - 1);
        assert!(take(&mut q, &clock, 1, 1).is_empty());
        clock.advance_ms(1);
    }
    assert_eq!(delays, vec![SECOND, 2 * SECOND]);
    assert_eq!((q.ready(1), q.scheduled(), q.low_water()), (0, 0, 1));
    let records = q.drain_records();
    assert!(records.contains(&Record::Settled {
        outcome: SettleOutcome::Dead,
        ranges: vec![0..1],
    }));
}

#[test]
fn a_retry_respects_the_queue_delivery_limit_too() {
    let config = QueueConfig {
        delivery_limit: Some(1),
        ..QueueConfig::default()
    };
    let mut q = QueueState::new(config, 0);
    let policy = RetryPolicy {
        backoff: Backoff::rocketmq(),
        max_retries: None,
    };
    q.acquire(&Acquire::new(A, 1, 1, 0));
    let first = q.nack_later(A, &[0], 0, &policy).unwrap();
    assert_eq!(first.scheduled[0].due_ms, SECOND, "RocketMQ's first level");
    q.acquire(&Acquire::new(A, 1, 1, SECOND));
    let second = q.nack_later(A, &[0], SECOND, &policy).unwrap();
    assert_eq!(second.dead.len(), 1);
    assert_eq!(second.dead[0].reason, DeadReason::DeliveryLimit);
}

#[test]
fn a_restart_before_release_releases_everything_overdue_at_once_in_due_order() {
    let (mut q, clock) = queue();
    let mut log = Vec::new();
    let now = clock.now_ms();
    for (offset, delay) in [(0, 300), (1, 100), (2, 200), (3, 10 * SECOND)] {
        q.schedule(offset, now + delay).unwrap();
    }
    clock.advance_ms(5 * SECOND); // the broker was down meanwhile
    let mut r = restart(&mut q, &mut log);
    assert_eq!(r.scheduled(), 4);
    assert_eq!(r.next_due(), Some(now + 100));
    assert_eq!(r.release_due(clock.now_ms()), vec![1, 2, 0]);
    assert_eq!(
        take(&mut r, &clock, 10, 4)
            .iter()
            .map(|d| (d.offset, d.redelivered))
            .collect::<Vec<_>>(),
        vec![(0, false), (1, false), (2, false)]
    );
    assert_eq!(r.scheduled(), 1);
}

#[test]
fn a_restart_after_release_does_not_hide_it_again_even_if_the_clock_went_back() {
    let (mut q, clock) = queue();
    let mut log = Vec::new();
    let now = clock.now_ms();
    q.schedule(0, now + 100).unwrap();
    q.schedule(1, now + 200).unwrap();
    clock.advance_ms(150);
    assert_eq!(q.release_due(clock.now_ms()), vec![0]);
    clock.advance_ms(-1_000);
    assert_eq!(q.release_due(clock.now_ms()), Vec::<Offset>::new());
    assert_eq!(q.ready(2), 1, "released stays released");
    // Scheduled while the clock is behind: judged by the clock it has now.
    q.schedule(2, clock.now_ms() + 50).unwrap();
    let mut r = restart(&mut q, &mut log);
    assert_eq!((r.ready(3), r.scheduled()), (1, 2));
    assert_eq!(r.release_due(clock.now_ms()), Vec::<Offset>::new());
    clock.advance_ms(50);
    assert_eq!(r.release_due(clock.now_ms()), vec![2]);
    assert_eq!(offsets(&take(&mut r, &clock, 10, 3)), vec![0, 2]);
}

#[test]
fn records_stay_few_however_many_schedules_and_releases_interleave() {
    let (mut q, clock) = queue();
    let now = clock.now_ms();
    for o in 0..1_000 {
        q.schedule(o, now + 1_000 + (o * 7919) % 5_000).unwrap();
        if o % 10 == 0 {
            q.release_due(now + o * 5);
        }
    }
    // Schedules already due by the last release's time wait in a group of their own after
    // it (replay must not release them early)…
    let kinds = |records: &[Record]| -> Vec<&str> {
        records
            .iter()
            .map(|r| match r {
                Record::Scheduled(_) => "scheduled",
                Record::ReleasedThrough(_) => "released",
                _ => "other",
            })
            .collect()
    };
    let mut copy = q.clone();
    assert_eq!(
        kinds(&copy.drain_records()),
        ["other", "scheduled", "released", "scheduled"]
    );
    // …until a release takes them: then they need no record at all.
    q.release_due(now + 4_999);
    let records = q.drain_records();
    assert_eq!(kinds(&records), ["other", "scheduled", "released"]);
    let Record::Scheduled(entries) = &records[1] else {
        unreachable!()
    };
    assert!(
        entries.len() < 1_000 && entries.iter().all(|e| e.due_ms > now + 4_999),
        "only what is still scheduled is written"
    );
}

#[test]
fn a_snapshot_carries_the_schedule_and_a_torn_one_is_ignored() {
    let (mut q, clock) = queue();
    let now = clock.now_ms();
    let n = 5_000; // two SnapshotScheduled parts
    for o in 0..n {
        q.schedule(o, now + 10 + o % 97).unwrap();
    }
    take(&mut q, &clock, 1, n + 1); // offset n, in flight
    let mut log: Vec<Vec<u8>> = q.drain_records().iter().map(Record::to_bytes).collect();
    let before = log.len();
    q.write_snapshot();
    let snapshot: Vec<Record> = q.drain_records();
    assert_eq!(snapshot.len(), 3, "the snapshot and two parts");
    assert!(matches!(&snapshot[0], Record::Snapshot(s) if s.scheduled == n as u64));
    log.extend(snapshot.iter().map(Record::to_bytes));

    let recover = |records: &[Vec<u8>]| {
        let r =
            QueueState::recover_encoded(QueueConfig::default(), records.iter().map(Vec::as_slice))
                .unwrap();
        r.check_invariants().unwrap();
        r
    };
    for r in [recover(&log), recover(&log[before..])] {
        assert_eq!((r.scheduled(), r.ready(n + 1)), (n as u64, 1));
        assert_eq!(r.next_due(), Some(now + 10));
    }
    // The last part torn off: the snapshot does not count, the records before it do.
    let torn = recover(&log[..log.len() - 1]);
    assert_eq!((torn.scheduled(), torn.ready(n + 1)), (n as u64, 1));
    // Only the snapshot and one part (the records before it deleted): nothing is made
    // visible early — the snapshot is not applied at all.
    let alone = recover(&log[before..log.len() - 1]);
    assert_eq!(alone.scheduled(), 0);
    assert_eq!(alone.cursor(), 0);
}

#[test]
fn cancelling_and_retention_settle_scheduled_offsets_and_the_index_is_compacted() {
    let (mut q, clock) = queue();
    let now = clock.now_ms();
    for o in 0..10_000 {
        q.schedule(o, now + YEAR / 2 + o).unwrap();
    }
    assert_eq!(
        q.cancel_scheduled(&[5, 10_000]),
        Err(QueueError::NotScheduled { offset: 10_000 })
    );
    assert_eq!(q.cancel_scheduled(&[5, 6]), Ok(2));
    assert_eq!(q.scheduled(), 9_998);
    assert_eq!(
        q.footprint().scheduled_entries,
        10_000,
        "garbage stays a while"
    );
    q.advance_log_start(8_000);
    q.check_invariants().unwrap();
    assert_eq!(q.scheduled(), 2_000);
    assert_eq!(q.footprint().scheduled_entries, 2_000, "compacted");
    assert_eq!(
        q.release_due(now + YEAR),
        (8_000..10_000).collect::<Vec<_>>()
    );
    assert_eq!(q.footprint().scheduled_entries, 0);
    let records = q.drain_records();
    assert!(records.contains(&Record::Settled {
        outcome: SettleOutcome::Purged,
        ranges: vec![5..7],
    }));
}

#[test]
fn a_queue_that_never_schedules_writes_version_1_records() {
    let (mut q, clock) = queue();
    take(&mut q, &clock, 3, 10);
    q.ack(A, &[1]).unwrap();
    q.write_snapshot();
    for r in q.drain_records() {
        assert_eq!(r.to_bytes()[0], sluice_queues::FORMAT_VERSION_1, "{r:?}");
    }
}

#[test]
fn a_million_offsets_due_in_the_same_second_release_with_work_bounded_by_their_number() {
    let (mut q, clock) = queue();
    let now = clock.now_ms();
    let n: i64 = 1_000_000;
    // A million due in the same second, behind a hundred thousand spread over a year.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for o in 0..n + 100_000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let due = if o < n {
            now + 3_600 * SECOND + (rng % 1_000) as i64
        } else {
            now + 2 * 3_600 * SECOND + (rng % (YEAR as u64)) as i64
        };
        q.schedule(o, due).unwrap();
    }
    q.drain_records();
    let before = q.timer_footprint().work;
    assert_eq!(q.release_due(now + 2_000 * SECOND), Vec::<Offset>::new());
    assert_eq!(q.timer_footprint().work, before, "nothing due: no work");
    // The clock enters their ~17-minute bucket: decoded and sorted once, nothing released.
    assert_eq!(q.release_due(now + 3_599 * SECOND), Vec::<Offset>::new());
    let released = q.release_due(now + 3_601 * SECOND);
    assert_eq!(released.len(), n as usize);
    // Each due entry is decoded once and popped once; the far future is not touched.
    let work = q.timer_footprint().work - before;
    assert!(work <= 2 * n as u64 + 2_000, "work {work}");
    assert_eq!(q.ready(n + 100_000), n as u64);
    assert_eq!(
        q.footprint().skipped_ranges,
        1,
        "consecutive offsets: one range"
    );
    let records = q.drain_records();
    assert_eq!(records, vec![Record::ReleasedThrough(now + 3_601 * SECOND)]);
}

#[test]
fn an_offset_scheduled_twice_in_the_records_keeps_its_latest_due_time() {
    // Not something the outbox writes without a release between, but a torn or repeated
    // stretch of records must not let the message out early.
    let entry = |due_ms| Record::Scheduled(vec![ScheduledEntry { offset: 0, due_ms }]);
    let records = [Record::LogStart(0), entry(500), entry(100)];
    let mut r = QueueState::recover(QueueConfig::default(), records);
    r.check_invariants().unwrap();
    assert_eq!((r.scheduled(), r.ready(1)), (1, 0));
    assert_eq!(r.release_due(499), Vec::<Offset>::new());
    assert_eq!(r.release_due(500), vec![0]);
}
