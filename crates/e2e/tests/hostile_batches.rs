//! Issue 13, items 1-3: record batches a hostile or broken client can build. Each is sent
//! raw (a Produce request over a real socket, the batch bytes built here with a correct
//! CRC) to the real binary, which must refuse it with INVALID_RECORD, stay up, log who sent
//! it, and leave the partition exactly as it was: librdkafka consumers then read every
//! good record, densely numbered, to the end of the partition.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use testkit::Server;
use testkit::put_varint;
use testkit::wire::{Client, topic_name};

const INVALID_RECORD: i16 = 87;
const PRODUCE_VERSION: i16 = 8;

/// One record as the test wants it on the wire: value and offset delta.
struct Rec {
    value: &'static [u8],
    offset_delta: i64,
}

fn recs(values: &[&'static [u8]]) -> Vec<Rec> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Rec {
            value: v,
            offset_delta: i as i64,
        })
        .collect()
}

/// The header fields a test may lie about; the defaults describe `records` honestly.
#[derive(Clone, Copy)]
struct Header {
    attributes: i16,
    last_offset_delta: Option<i32>,
    record_count: Option<i32>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            attributes: 0,
            last_offset_delta: None,
            record_count: None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// A v2 batch with a correct CRC whatever the header claims.
fn batch(h: Header, records: &[Rec]) -> Vec<u8> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut section = Vec::new();
    for r in records {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, r.offset_delta);
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, r.value.len() as i64);
        body.extend_from_slice(r.value);
        put_varint(&mut body, 0); // headers
        put_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    let n = records.len() as i32;
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + section.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.push(2);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&h.attributes.to_be_bytes());
    b.extend_from_slice(&h.last_offset_delta.unwrap_or(n - 1).to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&h.producer_id.to_be_bytes());
    b.extend_from_slice(&h.producer_epoch.to_be_bytes());
    b.extend_from_slice(&h.base_sequence.to_be_bytes());
    b.extend_from_slice(&h.record_count.unwrap_or(n).to_be_bytes());
    b.extend_from_slice(&section);
    let crc = storage::batch::BatchHeader::parse(&b)
        .expect("the header parses (its fields may lie)")
        .computed_crc();
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// What a Produce answered for the one partition sent.
#[derive(Debug)]
struct Answer {
    code: i16,
    base_offset: i64,
    message: String,
}

/// Sends `records` to partition 0 of `topic` (acks=all) over `c`.
fn produce(c: &mut Client, topic: &str, records: Vec<u8>) -> Answer {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ]);
    let resp = c.call(&req, PRODUCE_VERSION).expect("produce response");
    let p = &resp.responses[0].partition_responses[0];
    Answer {
        code: p.error_code,
        base_offset: p.base_offset,
        message: p
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    }
}

/// Refused with INVALID_RECORD and a message containing `why`.
fn assert_refused(a: &Answer, why: &str) {
    assert_eq!(a.code, INVALID_RECORD, "{a:?}");
    assert!(a.message.contains(why), "message {a:?} should say `{why}`");
}

fn create_topic(server: &Server, topic: &str) {
    let out = std::process::Command::new(testkit::sluice_bin())
        .args([
            "topic",
            "create",
            topic,
            "--partitions",
            "1",
            "--bootstrap-server",
        ])
        .arg(server.bootstrap())
        .output()
        .expect("sluice topic create");
    assert!(out.status.success(), "{out:?}");
}

/// (offset, value) of every record of partition 0 read by a librdkafka consumer at
/// `isolation` until it reports the end of the partition; fails if it never does.
fn read_to_end(server: &Server, topic: &str, isolation: &str) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("group.id", format!("reader-{topic}-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consuming {topic} ({isolation}): {e}"),
            None => {}
        }
    }
    panic!("{isolation} consumer of {topic} never reached the end; read {out:?}");
}

fn dense(values: &[&str]) -> Vec<(i64, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect()
}

#[test]
fn a_huge_claimed_record_count_is_refused_and_the_broker_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    create_topic(&server, "count");
    let mut p = Client::connect(server.bootstrap()).unwrap();
    // The 69-byte request of the issue: recordCount 2^31-1, lastOffsetDelta 0, one record.
    let lie = Header {
        record_count: Some(i32::MAX),
        last_offset_delta: Some(0),
        ..Header::default()
    };
    let b = batch(lie, &recs(&[b"x"]));
    assert_eq!(b.len(), 69);
    assert_refused(&produce(&mut p, "count", b), "lastOffsetDelta");
    // The same count with a matching lastOffsetDelta is refused before any allocation.
    let lie = Header {
        record_count: Some(i32::MAX),
        last_offset_delta: Some(i32::MAX - 1),
        ..Header::default()
    };
    assert_refused(
        &produce(&mut p, "count", batch(lie, &recs(&[b"x"]))),
        "cannot fit",
    );
    // The same connection still works, the broker is alive and the log names the client.
    let ok = produce(
        &mut p,
        "count",
        batch(Header::default(), &recs(&[b"a", b"b"])),
    );
    assert_eq!((ok.code, ok.base_offset), (0, 0), "{ok:?}");
    let peer = format!("peer={}", p.local_addr());
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refused a record batch") && l.contains(&peer)),
        "no log line naming {peer}:\n{log}"
    );
    assert_eq!(
        read_to_end(&server, "count", "read_uncommitted"),
        dense(&["a", "b"])
    );
}

#[test]
fn client_control_batches_are_refused_and_consumers_read_past_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    create_topic(&server, "ctl");
    let mut p = Client::connect(server.bootstrap()).unwrap();
    assert_eq!(
        produce(&mut p, "ctl", batch(Header::default(), &recs(&[b"a"]))).code,
        0
    );
    for (attributes, producer_id) in [(0x20, -1), (0x30, 4242)] {
        let h = Header {
            attributes,
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            ..Header::default()
        };
        let a = produce(&mut p, "ctl", batch(h, &recs(&[b"fake marker"])));
        assert_refused(&a, "control");
    }
    assert_eq!(
        produce(&mut p, "ctl", batch(Header::default(), &recs(&[b"b"]))).code,
        0
    );
    for isolation in ["read_uncommitted", "read_committed"] {
        assert_eq!(read_to_end(&server, "ctl", isolation), dense(&["a", "b"]));
    }
}

#[test]
fn offsets_must_agree_with_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    create_topic(&server, "offs");
    let mut p = Client::connect(server.bootstrap()).unwrap();
    assert_eq!(
        produce(&mut p, "offs", batch(Header::default(), &recs(&[b"a"]))).code,
        0
    );
    // Three records declaring lastOffsetDelta 0 (the next batch would reuse offsets).
    let short = Header {
        last_offset_delta: Some(0),
        ..Header::default()
    };
    assert_refused(
        &produce(&mut p, "offs", batch(short, &recs(&[b"x", b"y", b"z"]))),
        "lastOffsetDelta",
    );
    // One record declaring lastOffsetDelta 2^31-1 (would move the log end by 2^31).
    let long = Header {
        last_offset_delta: Some(i32::MAX),
        ..Header::default()
    };
    assert_refused(
        &produce(&mut p, "offs", batch(long, &recs(&[b"x"]))),
        "lastOffsetDelta",
    );
    // Negative and duplicate record offset deltas.
    for deltas in [[0, -1], [0, 0], [1, 0]] {
        let rs: Vec<Rec> = deltas
            .iter()
            .map(|&d| Rec {
                value: b"x",
                offset_delta: d,
            })
            .collect();
        assert_refused(
            &produce(&mut p, "offs", batch(Header::default(), &rs)),
            "offset delta",
        );
    }
    let ok = produce(
        &mut p,
        "offs",
        batch(Header::default(), &recs(&[b"b", b"c"])),
    );
    assert_eq!((ok.code, ok.base_offset), (0, 1), "{ok:?}");
    assert_eq!(
        read_to_end(&server, "offs", "read_uncommitted"),
        dense(&["a", "b", "c"])
    );
}

#[test]
fn transactional_batches_need_their_producers_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    create_topic(&server, "txn");
    let mut p = Client::connect(server.bootstrap()).unwrap();
    let invented = |base_sequence| Header {
        attributes: 0x10,
        producer_id: 4242,
        producer_epoch: 0,
        base_sequence,
        ..Header::default()
    };
    // baseSequence -1 used to skip the transaction check.
    let a = produce(
        &mut p,
        "txn",
        batch(invented(-1), &recs(&[b"never committed"])),
    );
    assert_refused(&a, "sequence");
    // With a sequence, the invented producer has no open transaction.
    let a = produce(
        &mut p,
        "txn",
        batch(invented(0), &recs(&[b"never committed"])),
    );
    assert_ne!(a.code, 0, "{a:?}");
    // A plain batch followed by a transactional one in the same request.
    let mut mixed = batch(Header::default(), &recs(&[b"plain"]));
    mixed.extend(batch(invented(0), &recs(&[b"never committed"])));
    assert_refused(&produce(&mut p, "txn", mixed), "one producer");
    // Transactional without a producer id.
    let orphan = Header {
        attributes: 0x10,
        ..Header::default()
    };
    assert_refused(
        &produce(&mut p, "txn", batch(orphan, &recs(&[b"x"]))),
        "producer id",
    );
    assert_eq!(
        produce(&mut p, "txn", batch(Header::default(), &recs(&[b"a"]))).code,
        0
    );
    for isolation in ["read_committed", "read_uncommitted"] {
        assert_eq!(read_to_end(&server, "txn", isolation), dense(&["a"]));
    }
}
