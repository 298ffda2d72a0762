//! The real `sluice` binary driven by librdkafka (the `rdkafka` crate): the proof of issue 4
//! that an unmodified Kafka client produces, consumes in groups, commits, survives a broker
//! restart, rebalances, seeks by time and administers topics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use testkit::Server;

const TIMEOUT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

fn producer(bootstrap: &str, compression: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .expect("consumer")
}

async fn create_topic(admin: &AdminClient<DefaultClientContext>, name: &str, partitions: i32) {
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(topic, err)| panic!("create {topic}: {err}"));
    }
}

/// Produces `count` records whose keys are `k0..k{keys}` and whose values carry the per-key
/// sequence number, so consumers can check per-key order. Returns once all are acknowledged.
async fn produce_keyed(producer: &FutureProducer, topic: &str, count: usize, keys: usize) {
    let mut next_seq = vec![0usize; keys];
    for chunk_start in (0..count).step_by(10_000) {
        let mut deliveries = Vec::with_capacity(10_000);
        for i in chunk_start..(chunk_start + 10_000).min(count) {
            let key_index = i % keys;
            let key = format!("k{key_index}");
            let value = format!("{topic}|{key}|{}", next_seq[key_index]);
            next_seq[key_index] += 1;
            let record = FutureRecord::to(topic).key(&key).payload(&value);
            let future = producer
                .send_result(record)
                .unwrap_or_else(|(err, _)| panic!("enqueue to {topic}: {err}"));
            deliveries.push(future);
        }
        for delivery in futures_join(deliveries).await {
            delivery
                .expect("delivery report")
                .unwrap_or_else(|(err, _)| panic!("produce to {topic}: {err}"));
        }
    }
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(futures.len());
    for f in futures {
        out.push(f.await);
    }
    out
}

/// Received record: (topic, partition, offset, key, value).
type Received = (String, i32, i64, String, String);

/// Polls until `stop` says so or the deadline passes; returns everything received.
fn poll_until(
    consumer: &BaseConsumer,
    total: &AtomicUsize,
    expected: usize,
    deadline: Instant,
) -> Vec<Received> {
    let mut got = Vec::new();
    while total.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                got.push((m.topic().to_owned(), m.partition(), m.offset(), key, value));
                total.fetch_add(1, Ordering::SeqCst);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    got
}

fn assigned_partitions(consumer: &BaseConsumer) -> usize {
    consumer.assignment().map(|a| a.count()).unwrap_or(0)
}

/// Polls every consumer until the group's assignments add up to `partitions` with each
/// member holding at least one partition.
fn wait_for_stable_group(consumers: &[Arc<BaseConsumer>], partitions: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for c in consumers {
            assert!(c.poll(Duration::from_millis(50)).is_none(), "no data yet");
        }
        let counts: Vec<usize> = consumers.iter().map(|c| assigned_partitions(c)).collect();
        if counts.iter().sum::<usize>() == partitions && counts.iter().all(|&n| n > 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group never stabilised: {counts:?}"
        );
    }
}

/// Checks per-key order and completeness: for each key, the sequence numbers seen by the
/// group are exactly 0..n in order, with no duplicate and nothing missing.
fn check_per_key_order(received: &[Vec<Received>], topic: &str, count: usize, keys: usize) {
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    let mut offsets = HashSet::new();
    for member in received {
        for (t, partition, offset, key, value) in member {
            if t != topic {
                continue;
            }
            assert!(
                offsets.insert((*partition, *offset)),
                "duplicate {t}/{partition}@{offset}"
            );
            let mut parts = value.split('|');
            assert_eq!(parts.next(), Some(topic));
            assert_eq!(parts.next(), Some(key.as_str()));
            let seq: usize = parts.next().and_then(|s| s.parse().ok()).expect("seq");
            per_key.entry(key.clone()).or_default().push(seq);
        }
    }
    assert_eq!(offsets.len(), count, "records received for {topic}");
    assert_eq!(per_key.len(), keys);
    for (key, seqs) in per_key {
        let expected: Vec<usize> = (0..seqs.len()).collect();
        assert_eq!(seqs, expected, "per-key order for {key} in {topic}");
    }
}

#[test]
fn every_codec_through_a_group_of_three_and_resume_after_restart() {
    const COUNT: usize = 100_000;
    const KEYS: usize = 100;
    const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    let rt = runtime();
    let admin = admin(&bootstrap);
    let topics: Vec<String> = CODECS.iter().map(|c| format!("codec-{c}")).collect();
    rt.block_on(async {
        for topic in &topics {
            create_topic(&admin, topic, 6).await;
        }
    });

    // Three members join first, so each partition has one owner from offset 0.
    let consumers: Vec<Arc<BaseConsumer>> = (0..3)
        .map(|_| {
            let c = consumer(&bootstrap, "codec-group");
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            c.subscribe(&names).expect("subscribe");
            Arc::new(c)
        })
        .collect();
    wait_for_stable_group(&consumers, 6 * CODECS.len());

    rt.block_on(async {
        for (codec, topic) in CODECS.iter().zip(&topics) {
            let p = producer(&bootstrap, codec);
            produce_keyed(&p, topic, COUNT, KEYS).await;
        }
    });

    let total = Arc::new(AtomicUsize::new(0));
    let expected = COUNT * CODECS.len();
    let deadline = Instant::now() + Duration::from_secs(300);
    let received: Vec<Vec<Received>> = std::thread::scope(|s| {
        let handles: Vec<_> = consumers
            .iter()
            .map(|c| {
                let total = total.clone();
                s.spawn(move || {
                    let got = poll_until(c, &total, expected, deadline);
                    c.commit_consumer_state(CommitMode::Sync).expect("commit");
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for topic in &topics {
        check_per_key_order(&received, topic, COUNT, KEYS);
    }
    assert!(
        received.iter().all(|r| !r.is_empty()),
        "every member of the group consumed something"
    );
    drop(consumers);

    // Restart the broker; committed offsets survive, so the group resumes after them.
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    server.restart();
    rt.block_on(async {
        let p = producer(&bootstrap, "none");
        for topic in &topics {
            for i in 0..100 {
                let value = format!("after-restart-{i}");
                p.send(FutureRecord::<str, _>::to(topic).payload(&value), TIMEOUT)
                    .await
                    .unwrap_or_else(|(e, _)| panic!("produce after restart: {e}"));
            }
        }
    });
    let resumed = consumer(&bootstrap, "codec-group");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    resumed.subscribe(&names).unwrap();
    let total = AtomicUsize::new(0);
    let got = poll_until(
        &resumed,
        &total,
        100 * topics.len(),
        Instant::now() + Duration::from_secs(60),
    );
    assert_eq!(got.len(), 100 * topics.len());
    assert!(
        got.iter()
            .all(|(_, _, _, _, v)| v.starts_with("after-restart-")),
        "resumed from committed offsets, nothing replayed"
    );
    // Nothing more arrives: no record was delivered twice.
    assert!(resumed.poll(Duration::from_secs(2)).is_none());
}

#[test]
fn joining_and_leaving_member_rebalances_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    let rt = runtime();
    rt.block_on(create_topic(&admin(&bootstrap), "rebalance", 6));

    let first = Arc::new(consumer(&bootstrap, "rebalance-group"));
    first.subscribe(&["rebalance"]).unwrap();
    wait_for_stable_group(std::slice::from_ref(&first), 6);

    let second = Arc::new(consumer(&bootstrap, "rebalance-group"));
    second.subscribe(&["rebalance"]).unwrap();
    let both = [first.clone(), second.clone()];
    wait_for_stable_group(&both, 6);
    assert_eq!(assigned_partitions(&first), 3);
    assert_eq!(assigned_partitions(&second), 3);

    second.unsubscribe();
    drop(both);
    drop(second);
    wait_for_stable_group(std::slice::from_ref(&first), 6);
    assert_eq!(
        assigned_partitions(&first),
        6,
        "the leaver's partitions came back"
    );
}

#[test]
fn offsets_for_times_finds_the_exact_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    let rt = runtime();
    // Recent enough that the default 7-day retention (which, as in Kafka, goes by record
    // timestamps) keeps them.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base_ms: i64 = now_ms - 3_600_000;
    rt.block_on(async {
        create_topic(&admin(&bootstrap), "timed", 1).await;
        let p = producer(&bootstrap, "none");
        // Sent together, so librdkafka packs many records into each batch.
        let futures: Vec<_> = (0..100i64)
            .map(|i| {
                let value = format!("v{i}");
                let record = FutureRecord::<str, _>::to("timed")
                    .payload(&value)
                    .timestamp(base_ms + i * 1000);
                p.send_result(record)
                    .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"))
            })
            .collect();
        for d in futures_join(futures).await {
            d.expect("delivery report")
                .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    });
    let c = consumer(&bootstrap, "unused");
    let lookup = |ts: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("timed", 0, Offset::Offset(ts))
            .unwrap();
        let found = c
            .offsets_for_times(tpl, TIMEOUT)
            .expect("offsets_for_times");
        found.elements()[0].offset()
    };
    assert_eq!(lookup(base_ms), Offset::Offset(0));
    assert_eq!(lookup(base_ms + 50_000), Offset::Offset(50));
    assert_eq!(
        lookup(base_ms + 50_500),
        Offset::Offset(51),
        "first record at or after"
    );
    assert_eq!(lookup(base_ms + 99_000), Offset::Offset(99));
    assert_eq!(
        lookup(base_ms + 200_000),
        Offset::End,
        "past the last record"
    );

    // Seeking there and consuming starts at that record.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("timed", 0, Offset::Offset(50))
        .unwrap();
    c.assign(&tpl).unwrap();
    let first = loop {
        if let Some(m) = c.poll(TIMEOUT) {
            break m.expect("fetch").detach();
        }
    };
    assert_eq!(first.offset(), 50);
    assert_eq!(first.payload(), Some(&b"v50"[..]));
    assert_eq!(first.timestamp().to_millis(), Some(base_ms + 50_000));
}

#[test]
fn admin_topics_configs_partitions_and_delete_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    let rt = runtime();
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    rt.block_on(async {
        let topic =
            NewTopic::new("admin-t", 2, TopicReplication::Fixed(1)).set("retention.ms", "3600000");
        for r in admin.create_topics(&[topic], &opts).await.unwrap() {
            r.unwrap();
        }
        // Creating it again is refused with the protocol's error.
        let again = NewTopic::new("admin-t", 2, TopicReplication::Fixed(1));
        let r = admin.create_topics(&[again], &opts).await.unwrap();
        assert!(r[0].is_err(), "duplicate create must fail");

        let get_retention = || async {
            let r = admin
                .describe_configs(&[ResourceSpecifier::Topic("admin-t")], &AdminOptions::new())
                .await
                .unwrap();
            let res = r.into_iter().next().unwrap().expect("describe ok");
            res.get("retention.ms").and_then(|e| e.value.clone())
        };
        assert_eq!(get_retention().await.as_deref(), Some("3600000"));

        let alter =
            AlterConfig::new(ResourceSpecifier::Topic("admin-t")).set("retention.ms", "7200000");
        for r in admin.alter_configs(&[alter], &opts).await.unwrap() {
            r.unwrap();
        }
        assert_eq!(get_retention().await.as_deref(), Some("7200000"));

        for r in admin
            .create_partitions(&[NewPartitions::new("admin-t", 4)], &opts)
            .await
            .unwrap()
        {
            r.unwrap();
        }

        let p = producer(&bootstrap, "none");
        for i in 0..10 {
            p.send(
                FutureRecord::<str, _>::to("admin-t")
                    .partition(3)
                    .payload(&format!("r{i}")),
                TIMEOUT,
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to new partition: {e}"));
        }
        let c = consumer(&bootstrap, "wm");
        assert_eq!(c.fetch_watermarks("admin-t", 3, TIMEOUT).unwrap(), (0, 10));

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("admin-t", 3, Offset::Offset(4))
            .unwrap();
        let result = admin.delete_records(&tpl, &opts).await.unwrap();
        assert_eq!(result.elements()[0].offset(), Offset::Offset(4));
        assert_eq!(c.fetch_watermarks("admin-t", 3, TIMEOUT).unwrap(), (4, 10));

        for r in admin.delete_topics(&["admin-t"], &opts).await.unwrap() {
            r.unwrap();
        }
        let md = c.fetch_metadata(None, TIMEOUT).unwrap();
        assert!(
            md.topics().iter().all(|t| t.name() != "admin-t"),
            "deleted topic is gone from metadata"
        );
    });
}

/// DescribeConfigs says where each value comes from, as Kafka does: the topic's override
/// (DynamicTopic), a broker setting changed from its default (StaticBroker), or the default.
#[test]
fn describe_configs_reports_each_values_source() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--set", "topics.log_retention_ms=86400000"],
    );
    let rt = runtime();
    let admin = admin(&server.bootstrap());
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    rt.block_on(async {
        let topic = NewTopic::new("sources", 1, TopicReplication::Fixed(1))
            .set("max.message.bytes", "100000");
        for r in admin.create_topics(&[topic], &opts).await.unwrap() {
            r.unwrap();
        }
        let specs = [
            ResourceSpecifier::Topic("sources"),
            ResourceSpecifier::Broker(0),
        ];
        let r = admin.describe_configs(&specs, &opts).await.unwrap();
        let mut it = r.into_iter();
        let topic = it.next().unwrap().expect("topic configs");
        let broker = it.next().unwrap().expect("broker configs");
        let source = |res: &rdkafka::admin::ConfigResource, k: &str| {
            res.get(k)
                .map(|e| (e.value.clone(), format!("{:?}", e.source)))
        };
        assert_eq!(
            source(&topic, "max.message.bytes"),
            Some((Some("100000".into()), "DynamicTopic".to_string()))
        );
        assert_eq!(
            source(&topic, "retention.ms"),
            Some((Some("86400000".into()), "StaticBroker".to_string()))
        );
        assert_eq!(
            source(&topic, "cleanup.policy"),
            Some((Some("delete".into()), "Default".to_string()))
        );
        assert_eq!(
            source(&broker, "log.retention.ms"),
            Some((Some("86400000".into()), "StaticBroker".to_string()))
        );
        assert_eq!(
            source(&broker, "num.partitions").map(|x| x.1),
            Some("Default".to_string())
        );
    });
}
