//! Issue 14, topic semantics a Kafka user relies on, with librdkafka against the binary:
//! a compacted topic is never emptied by time retention and refuses keyless records, and
//! CreateTopics / CreatePartitions accept a replica assignment naming this broker.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use testkit::Server;

const TIMEOUT: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn admin(server: &Server) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .create()
        .expect("admin client")
}

fn opts() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(TIMEOUT))
}

/// Keys and values of partition 0 of `topic`, read to its end.
fn read(server: &Server, topic: &str) -> Vec<(Option<String>, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("group.id", format!("read-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {}
        }
    }
    panic!("never reached the end of {topic}");
}

#[test]
fn a_compacted_topic_outlives_its_retention_and_refuses_keyless_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let rt = rt();
    let a = admin(&server);
    let topics = [
        NewTopic::new("changelog", 1, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact")
            .set("retention.ms", "2000"),
        // The control: the same retention with the delete policy does expire.
        NewTopic::new("events", 1, TopicReplication::Fixed(1)).set("retention.ms", "2000"),
    ];
    for r in rt.block_on(a.create_topics(&topics, &opts())).unwrap() {
        r.unwrap();
    }
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let mut want = Vec::new();
    for i in 0..10 {
        let key = format!("k{}", i % 3);
        let value = format!("v{i}");
        for topic in ["changelog", "events"] {
            rt.block_on(
                p.send(
                    FutureRecord::to(topic)
                        .partition(0)
                        .key(&key)
                        .payload(&value),
                    TIMEOUT,
                ),
            )
            .unwrap();
        }
        want.push((Some(key), value));
    }
    // A keyless record is refused on the compacted topic only.
    let keyless = rt.block_on(
        p.send(
            FutureRecord::<(), _>::to("changelog")
                .partition(0)
                .payload("no key"),
            TIMEOUT,
        ),
    );
    match keyless {
        Err((KafkaError::MessageProduction(code), _)) => {
            assert_eq!(code, RDKafkaErrorCode::InvalidRecord)
        }
        other => panic!("a keyless record on a compacted topic: {other:?}"),
    }
    rt.block_on(
        p.send(
            FutureRecord::<(), _>::to("events")
                .partition(0)
                .payload("no key"),
            TIMEOUT,
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(4000));
    assert_eq!(read(&server, "changelog"), want);
    assert!(read(&server, "events").is_empty(), "retention did not run");
}

#[test]
fn replica_assignments_naming_this_broker_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let rt = rt();
    let a = admin(&server);
    let here: &[&[i32]] = &[&[0], &[0]];
    let t = NewTopic::new("placed", 2, TopicReplication::Variable(here));
    for r in rt.block_on(a.create_topics([&t], &opts())).unwrap() {
        r.unwrap();
    }
    let md = a.inner().fetch_metadata(Some("placed"), TIMEOUT).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 2);
    // A broker that does not exist is refused with Kafka's error.
    let elsewhere: &[&[i32]] = &[&[7]];
    let t = NewTopic::new("misplaced", 1, TopicReplication::Variable(elsewhere));
    let r = rt.block_on(a.create_topics([&t], &opts())).unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidReplicaAssignment
    );
    // CreatePartitions with an assignment for the new partition.
    let more = NewPartitions::new("placed", 3).assign(&[&[0]]);
    for r in rt.block_on(a.create_partitions([&more], &opts())).unwrap() {
        r.unwrap();
    }
    let md = a.inner().fetch_metadata(Some("placed"), TIMEOUT).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 3);
}

#[test]
fn timestamp_configs_take_effect() {
    use rdkafka::message::Timestamp;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let rt = rt();
    let a = admin(&server);
    let topics = [
        NewTopic::new("stamped", 1, TopicReplication::Fixed(1))
            .set("message.timestamp.type", "LogAppendTime"),
        NewTopic::new("bounded", 1, TopicReplication::Fixed(1))
            .set("message.timestamp.before.max.ms", "60000"),
    ];
    for r in rt.block_on(a.create_topics(&topics, &opts())).unwrap() {
        r.unwrap();
    }
    // A setting this single-replica broker cannot honour is refused, not stored.
    let t = NewTopic::new("durable", 1, TopicReplication::Fixed(1)).set("min.insync.replicas", "2");
    let r = rt.block_on(a.create_topics([&t], &opts())).unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidConfig
    );
    // So is a topic codec the broker would not recompress to.
    let t = NewTopic::new("zstd", 1, TopicReplication::Fixed(1)).set("compression.type", "zstd");
    let r = rt.block_on(a.create_topics([&t], &opts())).unwrap();
    assert_eq!(
        r[0].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidConfig
    );

    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .create()
        .unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = now();
    let sent = |topic: &str, ts: i64| {
        rt.block_on(
            p.send(
                FutureRecord::to(topic)
                    .partition(0)
                    .key("k")
                    .payload("v")
                    .timestamp(ts),
                TIMEOUT,
            ),
        )
        .map_err(|(e, _)| e)
    };
    // LogAppendTime: an ancient CreateTime (which the default 7-day retention would
    // expire at once) is replaced by the append time, reported back to the producer.
    let d = sent("stamped", 1000).unwrap();
    assert!(
        matches!(d.timestamp, Timestamp::LogAppendTime(t) if t >= before && t <= now()),
        "{d:?}"
    );
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("group.id", "ts-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("stamped", 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let m = loop {
        assert!(
            Instant::now() < deadline,
            "the stamped record never arrived"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            break m.unwrap().detach();
        }
    };
    assert!(
        matches!(m.timestamp(), Timestamp::LogAppendTime(t) if t >= before),
        "{:?}",
        m.timestamp()
    );
    // Bounds: a record an hour old is refused, a current one accepted.
    match sent("bounded", now() - 3_600_000) {
        Err(KafkaError::MessageProduction(code)) => {
            assert_eq!(code, RDKafkaErrorCode::InvalidTimestamp)
        }
        other => panic!("an out-of-bounds timestamp: {other:?}"),
    }
    sent("bounded", now()).unwrap();
}

/// Issue 14: a backfill of records with old timestamps, and a record without a timestamp
/// (-1, what librdkafka's C++ producer sends when the application gives none), survive an
/// acks=all produce into a topic with the default 7-day retention; ListOffsets by time finds
/// the first record at or after the time whatever the timestamps' order.
#[test]
fn old_and_missing_timestamps_are_kept_and_found_by_time() {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use testkit::wire::{Client, topic_name};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let rt = rt();
    let a = admin(&server);
    let topic = NewTopic::new("backfill", 1, TopicReplication::Fixed(1));
    for r in rt.block_on(a.create_topics([&topic], &opts())).unwrap() {
        r.unwrap();
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("acks", "all")
        .create()
        .unwrap();
    for (ts, v) in [
        (1234i64, "old"),
        (999_999_999_999, "2001"),
        (1235, "older-order"),
    ] {
        let rec = FutureRecord::to("backfill")
            .key("k")
            .payload(v)
            .timestamp(ts);
        rt.block_on(producer.send(rec, TIMEOUT))
            .expect("acks=all produce");
    }
    // A batch whose records carry no timestamp, sent as such.
    let mut no_ts = testkit::BatchBuilder::new();
    no_ts.record(Some(b"k"), Some(b"untimed"), -1, &[]);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name("backfill"))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(bytes::Bytes::from(no_ts.build()))),
                ]),
        ]);
    let mut wire = Client::connect(server.bootstrap()).unwrap();
    let resp = wire.call(&req, 9).expect("produce response");
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);

    // Give the broker's retention pass a chance to run (every flush interval, 1 s).
    std::thread::sleep(Duration::from_millis(2500));
    let values: Vec<String> = read(&server, "backfill")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["old", "2001", "older-order", "untimed"]);

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("group.id", "by-time")
        .create()
        .unwrap();
    let at = |ts: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("backfill", 0, Offset::Offset(ts))
            .unwrap();
        let found = c.offsets_for_times(tpl, TIMEOUT).unwrap();
        found.elements()[0].offset()
    };
    assert_eq!(at(1234), Offset::Offset(0), "Kafka answers 0");
    assert_eq!(
        at(1235),
        Offset::Offset(1),
        "the first record at or after 1235"
    );
    assert_eq!(
        at(1_000_000_000_000),
        Offset::End,
        "no record at or after it"
    );
}
