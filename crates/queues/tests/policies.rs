//! RabbitMQ's queue policies on the engine (issue 16), one behaviour a user would notice per
//! test: TTL at the head, delivery limits, drop-head, priority order. Time comes from a
//! `ManualClock`; nothing sleeps. The "messages" are a map from offset to what the broker
//! would read from the stored record (timestamp, TTL, priority).

use std::collections::BTreeMap;

use common::{Clock, ManualClock};
use sluice_queues::{
    Acquire, ConsumerId, DeadReason, Limits, Offset, QueueConfig, QueueState, Record, expires_at,
};

const A: ConsumerId = ConsumerId(1);

#[derive(Clone, Copy)]
struct Msg {
    stored_at: i64,
    ttl: Option<i64>,
    priority: u8,
}

fn offsets(got: &sluice_queues::Acquired) -> Vec<Offset> {
    got.deliveries.iter().map(|d| d.offset).collect()
}

#[test]
fn expired_messages_leave_the_head_in_order_and_a_live_head_stops_the_sweep() {
    let clock = ManualClock::new(1_000);
    let mut q = QueueState::new(QueueConfig::default(), 0);
    let queue_ttl = Some(200);
    let mut log: BTreeMap<Offset, Msg> = BTreeMap::new();
    // 0,1 at t=1000 (queue TTL 200); 2 at t=1100 with its own TTL of 50; 3 at t=1150
    // with its own TTL of 5000 (the queue's 200 is smaller).
    log.insert(
        0,
        Msg {
            stored_at: 1_000,
            ttl: None,
            priority: 0,
        },
    );
    log.insert(
        1,
        Msg {
            stored_at: 1_000,
            ttl: None,
            priority: 0,
        },
    );
    log.insert(
        2,
        Msg {
            stored_at: 1_100,
            ttl: Some(50),
            priority: 0,
        },
    );
    log.insert(
        3,
        Msg {
            stored_at: 1_150,
            ttl: Some(5_000),
            priority: 0,
        },
    );
    let expiry = |o: Offset| {
        log.get(&o)
            .map(|m| expires_at(m.stored_at, queue_ttl, m.ttl))
    };
    clock.advance_ms(199);
    let none = q.expire_head(4, clock.now_ms(), 100, expiry);
    assert!(none.dead.is_empty(), "nothing is over its TTL yet");
    assert_eq!(
        none.next_expiry,
        Some(1_200),
        "call again when the head expires"
    );
    clock.advance_ms(1);
    let first = q.expire_head(4, clock.now_ms(), 100, expiry);
    assert_eq!(
        first.dead.iter().map(|d| d.offset).collect::<Vec<_>>(),
        [0, 1, 2],
        "2 expired at 1150 too"
    );
    assert!(first.dead.iter().all(|d| d.reason == DeadReason::Expired));
    assert_eq!(first.next_expiry, Some(1_350));
    assert_eq!(q.ready(4), 1);
    // An offset the caller did not read stops the sweep and is named.
    let mut short = QueueState::new(QueueConfig::default(), 0);
    let stop = short.expire_head(10, 5_000, 100, |o| if o < 2 { Some(Some(0)) } else { None });
    assert_eq!(stop.dead.len(), 2);
    assert_eq!(stop.unknown, Some(2));
    // What expired is settled: it survives a restart as settled (no extra state).
    let records: Vec<Record> = q.drain_records();
    let back = QueueState::recover(QueueConfig::default(), records);
    assert_eq!(back.ready(4), 1);
    q.check_invariants().unwrap();
}

#[test]
fn an_expired_message_behind_a_live_one_waits_for_the_head_but_is_not_delivered() {
    let mut q = QueueState::new(QueueConfig::default(), 0);
    // 0 lives long, 1 has expired: the sweep stops at 0 (RabbitMQ classic queues) …
    let ttl = [Some(Some(10_000)), Some(Some(0))];
    let swept = q.expire_head(2, 5_000, 100, |o| ttl[o as usize]);
    assert!(swept.dead.is_empty());
    // … and a consumer that takes both has 1 settled dead before it is handed over.
    let got = q.acquire(&Acquire::new(A, 2, 2, 5_000));
    assert_eq!(offsets(&got), [0, 1]);
    let dead = q.dead_letter_held(A, &[1], DeadReason::Expired).unwrap();
    assert_eq!(dead[0].reason, DeadReason::Expired);
    assert_eq!(q.unacked(), 1);
    assert!(
        q.dead_letter_held(A, &[1], DeadReason::Expired).is_err(),
        "settled once"
    );
}

#[test]
fn a_poison_message_is_dead_lettered_after_the_delivery_limit() {
    let clock = ManualClock::new(0);
    let config = QueueConfig {
        delivery_limit: Some(2),
        ..QueueConfig::default()
    };
    let mut q = QueueState::new(config, 0);
    let mut deliveries = 0;
    loop {
        let got = q.acquire(&Acquire::new(A, 1, 1, clock.now_ms()));
        let Some(d) = got.deliveries.first() else {
            break;
        };
        deliveries += 1;
        let released = q.nack(A, &[d.offset], true).unwrap();
        if let Some(dead) = released.dead.first() {
            assert_eq!(dead.reason, DeadReason::DeliveryLimit);
            assert_eq!(dead.delivery_count, 3);
            assert_eq!(DeadReason::DeliveryLimit.name(), "delivery_limit");
        }
    }
    assert_eq!(
        deliveries, 3,
        "limit 2: the first delivery and two redeliveries"
    );
    // A lease that runs out counts as a return too.
    let mut q = QueueState::new(
        QueueConfig {
            delivery_limit: Some(0),
            lease_ms: 100,
            ..QueueConfig::default()
        },
        0,
    );
    q.acquire(&Acquire::new(A, 1, 1, clock.now_ms()));
    clock.advance_ms(100);
    let expired = q.expire(clock.now_ms());
    assert_eq!(expired.dead[0].reason, DeadReason::DeliveryLimit);
}

#[test]
fn a_full_queue_drops_its_oldest_ready_messages_not_the_unacked_ones() {
    let mut q = QueueState::new(QueueConfig::default(), 0);
    let limits = Limits {
        max_length: Some(2),
        ..Limits::default()
    };
    // 0 is unacked; 1..5 ready (4 messages): 2 over the limit.
    q.acquire(&Acquire::new(A, 1, 5, 0));
    let excess = limits.excess(q.ready(5), 0, &[]);
    assert_eq!(excess, 2);
    let dropped = q.drop_head(5, excess);
    assert_eq!(dropped.iter().map(|d| d.offset).collect::<Vec<_>>(), [1, 2]);
    assert!(dropped.iter().all(|d| d.reason == DeadReason::MaxLen));
    assert_eq!(q.ready(5), 2);
    assert_eq!(
        q.unacked(),
        1,
        "unacknowledged messages do not count and stay"
    );
    assert_eq!(DeadReason::MaxLen.name(), "maxlen");
    q.check_invariants().unwrap();
}

#[test]
fn higher_priorities_go_first_fifo_within_one_and_requeued_keep_theirs() {
    let mut q = QueueState::new(QueueConfig::default(), 0);
    let msgs: Vec<Msg> = [1u8, 5, 1, 9, 5, 0]
        .iter()
        .map(|&priority| Msg {
            stored_at: 0,
            ttl: None,
            priority,
        })
        .collect();
    let rank = |o: Offset| msgs.get(o as usize).map(|m| m.priority);
    let first = q.acquire_ranked(&Acquire::new(A, 3, 6, 0), rank);
    assert_eq!(
        offsets(&first),
        [3, 1, 4],
        "9, then the two 5s in publish order"
    );
    // The 5 at offset 1 is requeued: it goes out again before the 1s, after nothing newer of 5.
    q.nack(A, &[1], true).unwrap();
    let next = q.acquire_ranked(&Acquire::new(A, 10, 6, 0), rank);
    assert_eq!(offsets(&next), [1, 0, 2, 5]);
    assert!(next.deliveries[0].redelivered);
    q.check_invariants().unwrap();
    // A window the caller did not read is not taken.
    let mut q = QueueState::new(QueueConfig::default(), 0);
    let part = q.acquire_ranked(&Acquire::new(A, 10, 6, 0), |o| (o < 2).then_some(1));
    assert_eq!(offsets(&part), [0, 1]);
    assert_eq!(q.ready(6), 4);
}
