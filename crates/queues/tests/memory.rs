//! A backlog costs no memory: the engine keeps state only for messages delivered and not yet
//! settled, and for gaps above the low-water mark. Measured on the internal collections (the
//! issue's RSS bound is the broker's benchmark to prove).

use sluice_queues::{Acquire, ConsumerId, Footprint, QueueConfig, QueueState, Record};

const BACKLOG: i64 = 10_000_000;
const A: ConsumerId = ConsumerId(1);

#[test]
fn ten_million_ready_messages_cost_no_per_message_state() {
    let mut q = QueueState::new(QueueConfig::default(), 0);
    assert_eq!(q.ready(BACKLOG), BACKLOG as u64);
    assert_eq!(q.footprint(), Footprint::default());

    // Work the head of the backlog: deliver and ack a thousand, one in flight left.
    let got = q.acquire(&Acquire::new(A, 1001, BACKLOG, 0)).deliveries;
    assert_eq!(got.len(), 1001);
    q.ack_range(A, 0..1000).unwrap();
    assert_eq!(q.ready(BACKLOG), BACKLOG as u64 - 1001);
    assert_eq!(
        q.footprint(),
        Footprint {
            leases: 1,
            consumers: 1,
            ..Footprint::default()
        }
    );
    assert_eq!(q.low_water(), 1000);

    // Its snapshot is a few dozen bytes, and so is the recovered queue's state.
    q.write_snapshot();
    let snapshot = q.drain_records().pop().unwrap();
    assert!(matches!(snapshot, Record::Snapshot(_)));
    assert_eq!(snapshot.encoded_len(), 2 + 24 + 4 + 4 + 16);
    let r = QueueState::recover(QueueConfig::default(), [snapshot]);
    assert_eq!(r.ready(BACKLOG), BACKLOG as u64 - 1000);
    assert_eq!(
        r.footprint(),
        Footprint {
            returned: 1,
            ..Footprint::default()
        }
    );
}

#[test]
fn purging_ten_million_ready_messages_leaves_no_state() {
    let mut q = QueueState::new(QueueConfig::default(), 0);
    q.acquire(&Acquire::new(A, 1, BACKLOG, 0));
    assert_eq!(q.purge_below(BACKLOG), BACKLOG as u64 - 1);
    assert_eq!(q.ready(BACKLOG), 0);
    assert_eq!(
        q.footprint().settled_ranges,
        1,
        "one range above the in-flight head"
    );
    q.ack(A, &[0]).unwrap();
    assert_eq!(q.low_water(), BACKLOG);
    assert_eq!(q.footprint(), Footprint::default());
    // The purge was persisted as one range, not ten million offsets.
    let records = q.drain_records();
    assert!(records.iter().all(|r| r.encoded_len() <= 64), "{records:?}");
}

#[test]
fn in_order_acks_keep_state_bounded_by_what_is_in_flight() {
    let mut q = QueueState::new(QueueConfig::default(), 0);
    // A steady stream: 100 in flight at a time, acked in order, through 100,000 messages.
    let mut next_ack = 0;
    for round in 0..1000 {
        q.acquire(&Acquire::new(A, 100, BACKLOG, round));
        q.ack_range(A, next_ack..next_ack + 100).unwrap();
        next_ack += 100;
        q.drain_records();
    }
    assert_eq!(q.low_water(), 100_000);
    assert_eq!(q.footprint(), Footprint::default());
}

#[test]
fn an_idle_queue_costs_a_few_hundred_bytes() {
    // Tens of thousands of queues (one per AMQP queue, per RocketMQ group and queue) must
    // stay cheap: the fixed part, with no heap allocation until a message is delivered.
    assert!(
        std::mem::size_of::<QueueState>() <= 320,
        "{}",
        std::mem::size_of::<QueueState>()
    );
    let mut q = QueueState::new(QueueConfig::default(), 42);
    q.drain_records();
    assert_eq!(q.footprint(), Footprint::default());
    assert_eq!((q.ready(42), q.unacked(), q.next_deadline()), (0, 0, None));
}
