//! Issue 15's proof with lapin (Rust's AMQP 0-9-1 client) against the real binary: what a
//! user of a RabbitMQ work queue relies on. Publisher confirms mean stored; three consumers
//! with manual acks and prefetch 100 share a queue so that every message is processed once;
//! a nack with requeue comes back marked `redelivered`; a topic exchange routes by pattern;
//! and with `flush = sync`, every message the broker confirmed is still there after a
//! `kill -9`, with any message delivered but not acked before the crash delivered again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use testkit::Server;

/// Bytes in every message body.
const BODY_BYTES: usize = 1024;

async fn connect(server: &Server) -> Connection {
    let uri = format!("amqp://guest:guest@{}/%2f", server.amqp_addr());
    Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {uri}: {e}; log:\n{}", server.log()))
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Persistent (delivery mode 2) properties naming message `id`.
fn persistent(id: u64) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(id.to_string().into())
}

/// A 1 KiB body that starts with `id` and is otherwise deterministic, so a delivered body
/// can be checked byte for byte.
fn body(id: u64) -> Vec<u8> {
    let mut v = format!("msg-{id:08}-").into_bytes();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < BODY_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// The id a delivered message carries in its `message_id`, checked against its body.
fn id_of(props: &BasicProperties, data: &[u8]) -> u64 {
    let id: u64 = props
        .message_id()
        .as_ref()
        .expect("message_id survives")
        .as_str()
        .parse()
        .expect("numeric message_id");
    assert!(data == body(id).as_slice(), "body of message {id} altered");
    id
}

/// Publishes `ids` to `queue` through the default exchange with confirms, keeping at most
/// `window` unconfirmed; returns the ids the broker acked, stopping at the first error
/// (the broker went away) or nack.
async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    ids: impl Iterator<Item = u64>,
    window: usize,
    confirmed: &Mutex<Vec<u64>>,
) -> lapin::Result<()> {
    let mut in_flight = VecDeque::new();
    for id in ids {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(id),
                persistent(id),
            )
            .await?;
        in_flight.push_back((id, confirm));
        if in_flight.len() >= window {
            let (id, confirm) = in_flight.pop_front().expect("non-empty");
            assert!(confirm.await?.is_ack(), "message {id} nacked");
            confirmed.lock().unwrap().push(id);
        }
    }
    while let Some((id, confirm)) = in_flight.pop_front() {
        assert!(confirm.await?.is_ack(), "message {id} nacked");
        confirmed.lock().unwrap().push(id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_confirmed_messages_reach_three_consumers_exactly_once() {
    const COUNT: u64 = 10_000;
    const PREFETCH: u16 = 100;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let conn = connect(&server).await;
    let publisher = conn.create_channel().await.unwrap();
    let q = publisher
        .queue_declare("work".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed = Mutex::new(Vec::new());
    publish_confirmed(&publisher, "work", 0..COUNT, 1000, &confirmed)
        .await
        .unwrap();
    assert_eq!(confirmed.lock().unwrap().len() as u64, COUNT);
    // A passive declare counts what is ready: every confirmed message, before any consumer.
    let q = publisher
        .queue_declare(
            "work".into(),
            QueueDeclareOptions {
                passive: true,
                ..durable()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count() as u64, COUNT);

    // Three consumers, each on its own connection, prefetch 100, manual acks.
    let seen: Arc<Mutex<BTreeMap<u64, usize>>> = Arc::default();
    let mut consumers = Vec::new();
    for index in 0..3usize {
        let conn = connect(&server).await;
        let channel = conn.create_channel().await.unwrap();
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .unwrap();
        let mut consumer = channel
            .basic_consume(
                "work".into(),
                format!("worker-{index}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let seen = seen.clone();
        consumers.push(tokio::spawn(async move {
            let mut mine = 0u64;
            let mut redelivered = 0u64;
            loop {
                let total = seen.lock().unwrap().values().sum::<usize>() as u64;
                if total >= COUNT {
                    break;
                }
                let next = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
                let Ok(Some(delivery)) = next else { continue };
                let delivery = delivery.expect("delivery");
                let id = id_of(&delivery.properties, &delivery.data);
                redelivered += u64::from(delivery.redelivered);
                *seen.lock().unwrap().entry(id).or_default() += 1;
                mine += 1;
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            drop(conn);
            (mine, redelivered)
        }));
    }
    let mut per_consumer = Vec::new();
    let all = async {
        for c in consumers {
            per_consumer.push(c.await.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(40), all)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "consumers did not receive {COUNT} messages in 40 s: {} distinct",
                seen.lock().unwrap().len()
            )
        });
    let seen = seen.lock().unwrap().clone();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..COUNT).collect::<Vec<_>>(),
        "every confirmed id, once"
    );
    for (index, (mine, redelivered)) in per_consumer.iter().enumerate() {
        assert!(*mine > 0, "worker-{index} got no message: {per_consumer:?}");
        assert_eq!(*redelivered, 0, "nothing was nacked or lost");
    }
    // Everything acked: nothing left to get.
    let get = publisher
        .basic_get("work".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(get.is_none(), "queue should be empty after every ack");
}

/// The next delivery, within 10 s.
async fn next(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("consumer open")
        .expect("delivery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_deliveries_stop_at_prefetch_and_nack_requeue_sets_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let conn = connect(&server).await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare("retry".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    for id in 0..20 {
        channel
            .basic_publish(
                "".into(),
                "retry".into(),
                BasicPublishOptions::default(),
                &body(id),
                persistent(id),
            )
            .await
            .unwrap();
    }
    channel
        .basic_qos(5, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            "retry".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Prefetch 5: five deliveries, then nothing until one is settled.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(next(&mut consumer).await);
    }
    let ids: Vec<u64> = held.iter().map(|d| id_of(&d.properties, &d.data)).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4], "queue order");
    assert!(held.iter().all(|d| !d.redelivered));
    let sixth = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(sixth.is_err(), "a sixth delivery beyond prefetch 5");

    // Nack the first with requeue: it comes back (at its place, ahead of 5), marked.
    held[0]
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await
        .unwrap();
    let again = next(&mut consumer).await;
    assert_eq!(id_of(&again.properties, &again.data), 0);
    assert!(
        again.redelivered,
        "a requeued message must be flagged redelivered"
    );
    // Settle everything else; the rest arrive unflagged, once each.
    again.ack(BasicAckOptions::default()).await.unwrap();
    for d in &held[1..] {
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let mut rest = BTreeSet::new();
    for _ in 5..20 {
        let d = next(&mut consumer).await;
        assert!(!d.redelivered);
        rest.insert(id_of(&d.properties, &d.data));
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(rest, (5..20).collect());
    let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(extra.is_err(), "an acked message came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_exchange_routes_by_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let conn = connect(&server).await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .exchange_declare(
            "events".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // queue → binding keys
    let bindings: &[(&str, &[&str])] = &[
        ("eu-orders", &["orders.*.eu"]),
        ("all-orders", &["orders.#"]),
        ("created", &["*.created.*"]),
        ("everything", &["#"]),
        ("two-keys", &["payments.*.us", "orders.cancelled.*"]),
    ];
    for (queue, keys) in bindings {
        channel
            .queue_declare((*queue).into(), durable(), FieldTable::default())
            .await
            .unwrap();
        for key in *keys {
            channel
                .queue_bind(
                    (*queue).into(),
                    "events".into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
    }
    let keys = [
        "orders.created.eu",
        "orders.created.us",
        "orders.cancelled.eu",
        "orders",
        "orders.created.eu.extra",
        "payments.created.us",
        "payments.refunded.eu",
        "users.created.eu",
    ];
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for key in keys {
        channel
            .basic_publish(
                "events".into(),
                key.into(),
                BasicPublishOptions::default(),
                key.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    assert!(channel.wait_for_confirms().await.unwrap().is_empty());
    let expect: BTreeMap<&str, Vec<&str>> = [
        (
            "eu-orders",
            vec!["orders.created.eu", "orders.cancelled.eu"],
        ),
        (
            "all-orders",
            vec![
                "orders.created.eu",
                "orders.created.us",
                "orders.cancelled.eu",
                "orders",
                "orders.created.eu.extra",
            ],
        ),
        (
            "created",
            vec![
                "orders.created.eu",
                "orders.created.us",
                "payments.created.us",
                "users.created.eu",
            ],
        ),
        ("everything", keys.to_vec()),
        (
            "two-keys",
            vec!["orders.cancelled.eu", "payments.created.us"],
        ),
    ]
    .into_iter()
    .collect();
    for (queue, want) in expect {
        let mut got = Vec::new();
        while let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            assert_eq!(m.delivery.routing_key.as_str().as_bytes(), m.delivery.data);
            got.push(String::from_utf8(m.delivery.data).unwrap());
        }
        assert_eq!(got, want, "queue {queue}: routed keys in publish order");
    }
}

/// Consumes `queue` with manual acks until it stays quiet for 2 s: id → `redelivered`.
async fn drain(server: &Server, queue: &str) -> BTreeMap<u64, bool> {
    let conn = connect(server).await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_qos(500, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "after".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut after: BTreeMap<u64, bool> = BTreeMap::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        let d = d.expect("delivery");
        let id = id_of(&d.properties, &d.data);
        assert!(
            after.insert(id, d.redelivered).is_none(),
            "message {id} delivered twice after the restart"
        );
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_confirmed_message_with_flush_sync() {
    const PREFETCH: u16 = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&dir.path().join("data"), &["--set", "storage.flush=sync"]);
    let conn = connect(&server).await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare("ledger".into(), durable(), FieldTable::default())
        .await
        .unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirmed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let publisher = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            // Runs until the broker dies under it.
            let res = publish_confirmed(&channel, "ledger", 0.., 64, &confirmed).await;
            drop(conn);
            res
        })
    };
    // A manual-ack consumer alongside, acking as it goes.
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let delivered_before: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let consumer_conn = connect(&server).await;
    let consumer_channel = consumer_conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            "ledger".into(),
            "before".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let consuming = {
        let (acked, delivered_before) = (acked.clone(), delivered_before.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let id = id_of(&d.properties, &d.data);
                delivered_before.lock().unwrap().insert(id);
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    break;
                }
                acked.lock().unwrap().insert(id);
            }
            drop(consumer_conn);
        })
    };
    // Let a few thousand confirms happen, then crash the broker mid-stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while confirmed.lock().unwrap().len() < 3000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let confirmed_at_kill = confirmed.lock().unwrap().len();
    assert!(confirmed_at_kill >= 100, "too few confirms before the kill");
    server.kill9();
    let published = tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("publisher notices the broker is gone")
        .unwrap();
    assert!(
        published.is_err(),
        "the publisher must see the connection drop"
    );
    // The consumer's stream usually ends with the connection; on a loaded machine lapin
    // can take longer to notice, and what it acked so far is all the checks below use.
    let abort = consuming.abort_handle();
    if tokio::time::timeout(Duration::from_secs(15), consuming)
        .await
        .is_err()
    {
        abort.abort();
    }
    let confirmed: BTreeSet<u64> = confirmed.lock().unwrap().iter().copied().collect();
    let acked = acked.lock().unwrap().clone();
    let delivered_before = delivered_before.lock().unwrap().clone();

    server.restart();
    let after = drain(&server, "ledger").await;
    let present: BTreeSet<u64> = acked
        .union(&after.keys().copied().collect())
        .copied()
        .collect();
    let lost: Vec<_> = confirmed.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} confirmed messages lost by kill -9 (of {}): first {:?}",
        lost.len(),
        confirmed.len(),
        &lost[..lost.len().min(10)]
    );
    // Delivered before the crash and not acked (or acked too late to be recorded): these
    // are the re-deliveries. The broker never had more than the prefetch unacked, plus the
    // acks still in flight on the wire, so they are few.
    let again: Vec<u64> = after
        .keys()
        .copied()
        .filter(|id| delivered_before.contains(id))
        .collect();
    let flagged = again.iter().filter(|id| after[id]).count();
    eprintln!(
        "kill -9: {} confirmed, {} acked before the crash, {} delivered after the restart, \
         {} of them re-deliveries ({flagged} flagged redelivered)",
        confirmed.len(),
        acked.len(),
        after.len(),
        again.len(),
    );
    assert!(
        again.len() <= 2 * PREFETCH as usize,
        "{} re-deliveries with prefetch {PREFETCH}",
        again.len()
    );
    // What was delivered before the crash and comes again is marked as such, as RabbitMQ
    // does for the unacked messages of a crashed node.
    let unflagged: Vec<_> = again.iter().filter(|id| !after[id]).collect();
    assert!(
        unflagged.is_empty(),
        "delivered before the crash, delivered again without `redelivered`: {unflagged:?}"
    );
}
