//! Issue 5's first promise, end to end through the Kafka front door: with `flush = sync`,
//! a record librdkafka reports as delivered (acks=all, idempotence on) survives any number
//! of `kill -9`s of the broker, intact and in per-partition order.
//!
//! `SLUICE_CRASH_KILLS` raises the number of kills for a longer soak (default 20).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Mutex;
use testkit::Server;

const PARTITIONS: i32 = 4;
const TOPIC: &str = "durable";
const RECORD_BYTES: usize = 200;

/// The exact bytes of record `seq` on `partition`: a header plus deterministic filler, so
/// the verifier can check every byte.
fn payload(partition: i32, seq: u64) -> Vec<u8> {
    let mut v = format!("p{partition}-s{seq}-").into_bytes();
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ partition as u64;
    while v.len() < RECORD_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// Acknowledged sequence numbers per partition, in acknowledgement order.
#[derive(Default)]
struct Acks {
    per_partition: Mutex<BTreeMap<i32, Vec<u64>>>,
    failures: Mutex<u64>,
}

/// The producer's context: delivery reports land in the shared `Acks`.
struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<(i32, u64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (partition, seq) = *opaque;
        match result {
            Ok(_) => self
                .0
                .per_partition
                .lock()
                .unwrap()
                .entry(partition)
                .or_default()
                .push(seq),
            Err(_) => *self.0.failures.lock().unwrap() += 1,
        }
    }
}

/// A small xorshift generator seeded from the clock; the seed is printed so a failing run
/// can be replayed with `SLUICE_CRASH_SEED`.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("SLUICE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("crash test seed: {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
#[test]
fn acknowledged_records_survive_repeated_kill_9_with_sync_flush() {
    let kills: usize = std::env::var("SLUICE_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("SLUICE_STORAGE_FLUSH", "sync"),
            ("SLUICE_TOPICS_NUM_PARTITIONS", "4"),
        ],
    );
    let bootstrap = server.bootstrap();
    let acks = Arc::new(Acks::default());
    let producer: ThreadedProducer<AckContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200")
        .create_with_context(AckContext(acks.clone()))
        .expect("producer");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = std::thread::scope(|s| {
        let feeder = s.spawn(|| {
            let mut next = [0u64; PARTITIONS as usize];
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for partition in 0..PARTITIONS {
                    let seq = next[partition as usize];
                    let value = payload(partition, seq);
                    let record =
                        BaseRecord::<(), _, _>::with_opaque_to(TOPIC, Box::new((partition, seq)))
                            .partition(partition)
                            .payload(&value);
                    match producer.send(record) {
                        Ok(()) => {
                            next[partition as usize] += 1;
                            sent += 1;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err((e, _)) => panic!("enqueue: {e}"),
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        });

        let mut rng = Rng::new();
        let started = Instant::now();
        for kill in 0..kills {
            std::thread::sleep(Duration::from_millis(200 + rng.below(600)));
            let acked: usize = acks
                .per_partition
                .lock()
                .unwrap()
                .values()
                .map(Vec::len)
                .sum();
            eprintln!("kill -9 #{kill} after {acked} acknowledged records");
            server.kill9();
            server.restart();
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        eprintln!("{kills} kills in {:?}", started.elapsed());
        feeder.join().unwrap()
    });
    assert!(
        producer.flush(Duration::from_secs(120)).is_ok(),
        "every enqueued record was delivered or failed within the timeout"
    );
    drop(producer);

    let acked = std::mem::take(&mut *acks.per_partition.lock().unwrap());
    let total_acked: usize = acked.values().map(Vec::len).sum();
    eprintln!(
        "sent {sent}, acknowledged {total_acked}, failed {}",
        acks.failures.lock().unwrap()
    );
    assert!(
        total_acked > 1000,
        "the producer made progress between kills"
    );

    // One more crash before verifying, then read every partition from the start.
    server.kill9();
    server.restart();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "verifier")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    for partition in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(TOPIC, partition, Duration::from_secs(30))
            .expect("watermarks");
        assert_eq!(low, 0);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut stored: Vec<u64> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while (stored.len() as i64) < high && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message.expect("fetch");
            let bytes = message.payload().unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
            let seq: u64 = text
                .split('-')
                .nth(1)
                .and_then(|s| s.strip_prefix('s'))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("unrecognised record {text:?}"));
            assert_eq!(
                bytes,
                payload(partition, seq).as_slice(),
                "record p{partition} s{seq} is byte-identical"
            );
            stored.push(seq);
        }
        assert_eq!(stored.len() as i64, high, "read the whole partition");
        let acked_here = acked.get(&partition).cloned().unwrap_or_default();
        // Per-partition order: sequence numbers never go backwards.
        assert!(
            stored.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: order broken or duplicate: {:?}",
            first_violation(&stored)
        );
        let stored_set: std::collections::HashSet<u64> = stored.iter().copied().collect();
        let lost: Vec<u64> = acked_here
            .iter()
            .copied()
            .filter(|s| !stored_set.contains(s))
            .collect();
        assert!(
            lost.is_empty(),
            "partition {partition}: {} acknowledged records lost, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        eprintln!(
            "partition {partition}: {} stored, {} acknowledged, all present once, in order",
            stored.len(),
            acked_here.len()
        );
    }
}

fn first_violation(seqs: &[u64]) -> Option<(usize, u64, u64)> {
    seqs.windows(2)
        .position(|w| w[0] >= w[1])
        .map(|i| (i, seqs[i], seqs[i + 1]))
}
