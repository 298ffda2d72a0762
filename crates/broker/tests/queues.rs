//! Queues over a real store: competing consumers, acks, requeue in place, delivery limits,
//! purge, and what a restart keeps (acked messages never again; in-flight ones again, with
//! `redelivered` set).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_broker::{Broker, BrokerConfig};

fn open(dir: &std::path::Path) -> Arc<Broker> {
    let store =
        Arc::new(storage::Store::open(storage::StoreConfig::new(dir.join("store"))).unwrap());
    let cfg = BrokerConfig {
        data_dir: dir.to_path_buf(),
        ..BrokerConfig::default()
    };
    Broker::open(store, cfg, Arc::new(common::SystemClock)).unwrap()
}

fn now_ms() -> i64 {
    use common::Clock;
    common::SystemClock.now_ms()
}

/// Publishes messages "m{from}".."m{to-1}", one batch.
async fn publish(b: &Broker, queue: &str, from: u32, to: u32) {
    let mut batch = storage::batch_builder::BatchBuilder::new();
    for i in from..to {
        batch.record(None, Some(format!("m{i}").as_bytes()), now_ms(), &[]);
    }
    b.produce(queue, 0, BytesMut::from(&batch.build()[..]))
        .await
        .unwrap();
}

fn bodies(d: &[sluice_broker::QueueDelivery]) -> Vec<String> {
    d.iter()
        .map(|d| String::from_utf8_lossy(d.record.value.as_deref().unwrap()).into_owned())
        .collect()
}

fn offsets(d: &[sluice_broker::QueueDelivery]) -> Vec<i64> {
    d.iter().map(|d| d.record.offset).collect()
}

#[tokio::test]
async fn competing_consumers_acks_and_requeue_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    assert!(b.declare_queue("work", BTreeMap::new()).unwrap());
    assert!(
        !b.declare_queue("work", BTreeMap::new()).unwrap(),
        "redeclare"
    );
    let other = BTreeMap::from([("x-delivery-limit".to_string(), "3".to_string())]);
    assert!(b.declare_queue("work", other).is_err(), "other arguments");
    publish(&b, "work", 0, 10).await;

    let a = b.queue_acquire("work", 1, 3, None).await.unwrap();
    let c = b.queue_acquire("work", 2, 3, None).await.unwrap();
    assert_eq!(bodies(&a), ["m0", "m1", "m2"]);
    assert_eq!(bodies(&c), ["m3", "m4", "m5"]);
    assert!(a.iter().all(|d| !d.redelivered && d.delivery_count == 1));
    let counts = b.queue_counts("work").await.unwrap();
    assert_eq!((counts.ready, counts.unacked), (4, 6));

    // A consumer cannot ack what another holds; nothing changes.
    assert!(b.queue_ack("work", 2, &[0]).await.is_err());
    b.queue_ack("work", 1, &[0, 2]).await.unwrap();
    // Requeued: back at its original place, before newer messages.
    b.queue_nack("work", 1, &[1], true).await.unwrap();
    let again = b.queue_acquire("work", 2, 2, None).await.unwrap();
    assert_eq!(bodies(&again), ["m1", "m6"]);
    assert!(again[0].redelivered);
    assert_eq!(again[0].delivery_count, 2);
    assert!(!again[1].redelivered);

    // A consumer that goes away gives everything back.
    b.queue_release("work", 2).await.unwrap();
    let counts = b.queue_counts("work").await.unwrap();
    assert_eq!((counts.ready, counts.unacked), (8, 0));
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_delivers_in_flight_messages_again_and_acked_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        b.declare_queue("q", BTreeMap::new()).unwrap();
        publish(&b, "q", 0, 6).await;
        let got = b.queue_acquire("q", 1, 4, None).await.unwrap();
        assert_eq!(offsets(&got), [0, 1, 2, 3]);
        b.queue_ack("q", 1, &[0, 2]).await.unwrap();
        b.shutdown().await.unwrap();
    }
    let b = open(dir.path());
    assert!(b.queue_exists("q"));
    let got = b.queue_acquire("q", 7, 10, None).await.unwrap();
    assert_eq!(bodies(&got), ["m1", "m3", "m4", "m5"]);
    let flags: Vec<bool> = got.iter().map(|d| d.redelivered).collect();
    assert_eq!(flags, [true, true, false, false]);
    b.queue_ack("q", 7, &offsets(&got)).await.unwrap();
    b.shutdown().await.unwrap();
    drop(b);
    let b = open(dir.path());
    assert!(b.queue_acquire("q", 1, 10, None).await.unwrap().is_empty());
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn delivery_limit_purge_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let limited = BTreeMap::from([("x-delivery-limit".to_string(), "2".to_string())]);
    b.declare_queue("poison", limited).unwrap();
    publish(&b, "poison", 0, 1).await;
    let mut dead = Vec::new();
    for _ in 0..3 {
        let got = b.queue_acquire("poison", 1, 1, None).await.unwrap();
        if got.is_empty() {
            break;
        }
        dead = b
            .queue_nack("poison", 1, &offsets(&got), true)
            .await
            .unwrap();
    }
    assert_eq!(dead.len(), 1, "the message past its delivery limit is dead");
    assert!(
        b.queue_acquire("poison", 1, 1, None)
            .await
            .unwrap()
            .is_empty()
    );

    b.declare_queue("bulk", BTreeMap::new()).unwrap();
    publish(&b, "bulk", 0, 5).await;
    let held = b.queue_acquire("bulk", 1, 1, None).await.unwrap();
    assert_eq!(
        b.queue_purge("bulk").await.unwrap(),
        4,
        "held messages stay"
    );
    b.queue_ack("bulk", 1, &offsets(&held)).await.unwrap();
    assert_eq!(b.queue_counts("bulk").await.unwrap().ready, 0);

    // Deleting the topic deletes the queue over it; a restart finds neither and no orphan.
    b.delete_topic("bulk").unwrap();
    assert!(!b.queue_exists("bulk"));
    b.delete_queue("poison", false).unwrap();
    assert!(b.topic("poison").is_ok(), "the log stays for other readers");
    assert_eq!(b.list_queues(), Vec::<String>::new());
    b.shutdown().await.unwrap();
    drop(b);
    let b = open(dir.path());
    assert!(b.list_queues().is_empty());
    b.shutdown().await.unwrap();
}

/// `/metrics` per queue: ready, unacked, consumers holding messages, and the delivered /
/// acked / returned / published counters.
#[tokio::test]
async fn per_queue_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.declare_queue("jobs", BTreeMap::new()).unwrap();
    publish(&b, "jobs", 0, 5).await;
    let got = b.queue_acquire("jobs", 1, 3, None).await.unwrap();
    b.queue_ack("jobs", 1, &offsets(&got)[..1]).await.unwrap();
    b.queue_nack("jobs", 1, &offsets(&got)[1..2], true)
        .await
        .unwrap();
    b.refresh_gauges();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &b.metrics().registry.lock()).unwrap();
    for line in [
        "sluice_queue_messages_ready{queue=\"jobs\"} 3",
        "sluice_queue_messages_unacked{queue=\"jobs\"} 1",
        "sluice_queue_consumers{queue=\"jobs\"} 1",
        "sluice_queue_delivered_total{queue=\"jobs\"} 3",
        "sluice_queue_acked_total{queue=\"jobs\"} 1",
        "sluice_queue_returned_total{queue=\"jobs\"} 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    // Publishes through the queue API count per queue (the five above were plain produces).
    assert_eq!(publish_limited(&b, "jobs", "one more").await, Ok(()));
    let totals = b.metrics().queue_totals("jobs");
    assert_eq!(
        (totals.published, totals.delivered, totals.acked),
        (1, 3, 1)
    );
    b.metrics().set_subscribed("jobs", Some(2));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &b.metrics().registry.lock()).unwrap();
    for line in [
        "sluice_queue_published_total{queue=\"jobs\"} 1",
        "sluice_queue_consumers_subscribed{queue=\"jobs\"} 2",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    b.shutdown().await.unwrap();
}

/// A queue declared over an existing topic (a Kafka topic read as a queue) never deletes
/// that topic; a queue whose declare created its topic takes it along.
#[tokio::test]
async fn deleting_a_queue_keeps_a_topic_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    b.create_topic(
        sluice_broker::NewTopic {
            name: "orders".into(),
            partitions: Some(1),
            replication_factor: None,
            configs: BTreeMap::new(),
        },
        false,
    )
    .unwrap();
    publish(&b, "orders", 0, 3).await;
    b.declare_queue("orders", BTreeMap::new()).unwrap();
    b.declare_queue("scratch", BTreeMap::new()).unwrap();
    b.shutdown().await.unwrap();
    drop(b);
    let b = open(dir.path());
    b.delete_queue("orders", true).unwrap();
    b.delete_queue("scratch", true).unwrap();
    assert_eq!(
        b.watermarks("orders", 0).unwrap().high_watermark,
        3,
        "the Kafka topic stays"
    );
    assert!(
        b.topic("scratch").is_err(),
        "the queue's own topic went with it"
    );
    b.shutdown().await.unwrap();
}

/// A damaged record in a queue's state partition is not met in silence: the broker refuses
/// to open, naming the partition, instead of guessing which messages were delivered.
#[tokio::test]
async fn a_damaged_queue_state_record_refuses_the_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = open(dir.path());
        b.declare_queue("q", BTreeMap::new()).unwrap();
        publish(&b, "q", 0, 2).await;
        b.queue_acquire("q", 1, 1, None).await.unwrap();
        b.shutdown().await.unwrap();
    }
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("meta/snapshot.json")).unwrap())
            .unwrap();
    let state = snapshot["queues"]["q"]["state_partition"].as_u64().unwrap() as u32;
    {
        // A well-formed batch whose record is not a queue state record.
        let store =
            storage::Store::open(storage::StoreConfig::new(dir.path().join("store"))).unwrap();
        let mut garbage = storage::batch_builder::BatchBuilder::new();
        garbage.record(None, Some(b"\x01\x63not a record"), now_ms(), &[]);
        store
            .append(
                storage::PartitionId(state),
                BytesMut::from(&garbage.build()[..]),
            )
            .await
            .unwrap();
        store.close().unwrap();
    }
    let store = Arc::new(
        storage::Store::open(storage::StoreConfig::new(dir.path().join("store"))).unwrap(),
    );
    let cfg = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let err = Broker::open(store, cfg, Arc::new(common::SystemClock)).unwrap_err();
    assert!(err.to_string().contains("queue state partition"), "{err}");
}

/// One message "body" through `queue_publish` to one queue: whether it stored it, or
/// refused it (with whether it dead-letters it).
async fn publish_limited(b: &Broker, queue: &str, body: &str) -> Result<(), bool> {
    let mut batch = storage::batch_builder::BatchBuilder::new();
    batch.record(None, Some(body.as_bytes()), now_ms(), &[]);
    let routed = b
        .queue_publish(
            &[queue.to_string()],
            BytesMut::from(&batch.build()[..]),
            body.len() as u64,
            None,
        )
        .await
        .unwrap();
    if let Some(pending) = routed.pending {
        pending.acked().await.unwrap();
    }
    match routed.refused.first() {
        Some((_, dead_letter)) => Err(*dead_letter),
        None => Ok(()),
    }
}

#[tokio::test]
async fn length_limits_count_ready_body_bytes_through_deliveries_and_requeues() {
    use sluice_broker::queue::DeadReason;
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path());
    let settings = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    b.declare_queue(
        "bytes",
        settings(&[
            ("x-max-length-bytes", "10"),
            ("x-dead-letter-exchange", "dlx"),
        ]),
    )
    .unwrap();
    for body in ["aaaa", "bbbb", "cccc"] {
        assert_eq!(publish_limited(&b, "bytes", body).await, Ok(()));
    }
    // 12 bytes > 10: the oldest went, dead-lettered with reason maxlen.
    let dead = b.take_dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadReason::MaxLen);
    assert_eq!(dead[0].record.value.as_deref(), Some(&b"aaaa"[..]));
    // An unacked message does not count: 4 ready bytes + 4 + 2 new fit.
    let held = b.queue_acquire("bytes", 1, 1, None).await.unwrap();
    assert_eq!(bodies(&held), ["bbbb"]);
    assert_eq!(
        publish_limited(&b, "bytes", "dddd").await,
        Ok(()),
        "drop-head takes it"
    );
    assert_eq!(
        publish_limited(&b, "bytes", "ee").await,
        Ok(()),
        "drop-head takes it"
    );
    assert!(
        b.take_dead_letters().is_empty(),
        "10 ready bytes: within the limit"
    );
    // Back in the queue it counts again: the next publish drops from the head.
    b.queue_nack("bytes", 1, &offsets(&held), true)
        .await
        .unwrap();
    assert_eq!(
        publish_limited(&b, "bytes", "f").await,
        Ok(()),
        "drop-head takes it"
    );
    let dropped: Vec<_> = b
        .take_dead_letters()
        .into_iter()
        .map(|d| String::from_utf8_lossy(d.record.value.as_deref().unwrap()).into_owned())
        .collect();
    assert_eq!(dropped, ["bbbb", "cccc"], "15 bytes: the two oldest go");

    b.declare_queue(
        "refusing",
        settings(&[("x-max-length", "1"), ("x-overflow", "reject-publish")]),
    )
    .unwrap();
    assert_eq!(publish_limited(&b, "refusing", "one").await, Ok(()));
    assert_eq!(publish_limited(&b, "refusing", "two").await, Err(false));
    assert_eq!(b.queue_counts("refusing").await.unwrap().ready, 1);
}
