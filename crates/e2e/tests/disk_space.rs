//! Issue 13, item 5 (disk space follows live data), end to end with librdkafka:
//! - a full disk shared by a small topic and a large one produced interleaved: deleting
//!   the large one makes the small one writable again within a bounded time, although
//!   every commit-log segment also holds the small topic's records (needs root for
//!   `mount -t tmpfs`; CI runs as root);
//! - one topic kept forever with a trickle of records next to one with 10 s retention at a
//!   fixed rate: the data directory's allocated blocks stay within 1.5 × the live bytes +
//!   one segment. 45 s by default, 10 minutes with `SLUICE_SOAK=1`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use testkit::{Server, Tmpfs};

const TIMEOUT: Duration = Duration::from_secs(30);
const SEGMENT_BYTES: u64 = 8 << 20;

/// Bytes allocated under `dir` (what `du` counts: st_blocks of every file).
fn du_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn start(dir: &Path, retention_check_ms: &str) -> Server {
    Server::start_with_env(
        dir,
        &[],
        &[
            ("SLUICE_STORAGE_SEGMENT_BYTES", &SEGMENT_BYTES.to_string()),
            (
                "SLUICE_STORAGE_RETENTION_CHECK_INTERVAL_MS",
                retention_check_ms,
            ),
        ],
    )
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

fn create(rt: &tokio::runtime::Runtime, bootstrap: &str, topics: &[NewTopic<'_>]) {
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    rt.block_on(async {
        for r in admin(bootstrap).create_topics(topics, &opts).await.unwrap() {
            r.unwrap();
        }
    });
}

fn producer(bootstrap: &str, linger_ms: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "disk-space-reader")
        .create()
        .unwrap()
}

fn read_all(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    let c = consumer(bootstrap);
    let (_, high) = c.fetch_watermarks(topic, 0, TIMEOUT).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while (out.len() as i64) < high && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.expect("fetch").payload().unwrap_or_default().to_vec());
        }
    }
    out
}

fn value(tag: &str, i: usize, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}-{i}-").into_bytes();
    v.resize(len, b'a' + (i % 26) as u8);
    v
}

#[test]
fn deleting_the_large_topic_on_a_full_disk_makes_the_small_one_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    let mount_dir = dir.path().join("small");
    let _tmpfs = Tmpfs::mount(&mount_dir, "64m");
    let data = mount_dir.join("data");
    let server = start(&data, "200");
    let bootstrap = server.bootstrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    create(
        &rt,
        &bootstrap,
        &[
            NewTopic::new("keep", 1, TopicReplication::Fixed(1)),
            NewTopic::new("fill", 1, TopicReplication::Fixed(1)),
        ],
    );
    let p = producer(&bootstrap, "1");
    // Interleaved: a small `keep` record, then 256 KiB of `fill`, until the disk is full.
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut refused = None;
    rt.block_on(async {
        'fill: for i in 0..2000 {
            let v = value("keep", i, 100);
            match p
                .send(FutureRecord::<(), _>::to("keep").payload(&v), TIMEOUT)
                .await
            {
                Ok(_) => kept.push(v),
                Err((e, _)) => {
                    refused = Some(e);
                    break 'fill;
                }
            }
            for j in 0..4 {
                let v = value("fill", i * 4 + j, 64 << 10);
                if let Err((e, _)) = p
                    .send(FutureRecord::<(), _>::to("fill").payload(&v), TIMEOUT)
                    .await
                {
                    refused = Some(e);
                    break 'fill;
                }
            }
        }
    });
    let error = refused.expect("a 64 MiB disk fills before 500 MiB are accepted");
    assert!(
        matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError)
        ),
        "produce on a full disk gets KAFKA_STORAGE_ERROR, got {error:?}"
    );
    let full = du_bytes(&data);
    eprintln!(
        "disk full after {} keep records: {error}; {full} bytes allocated",
        kept.len()
    );
    assert!(kept.len() > 40, "every segment holds keep records");
    assert_eq!(read_all(&bootstrap, "keep"), kept);

    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    rt.block_on(async {
        for r in admin(&bootstrap)
            .delete_topics(&["fill"], &opts)
            .await
            .unwrap()
        {
            r.unwrap();
        }
    });
    // The cleaner runs after each retention pass (every 200 ms here): `keep` takes 16 MiB
    // more, which only fits if `fill`'s blocks in the shared segments were freed.
    let deleted = Instant::now();
    let big: Vec<Vec<u8>> = (0..256).map(|i| value("after", i, 64 << 10)).collect();
    rt.block_on(async {
        let mut first = None;
        while first.is_none() && deleted.elapsed() < TIMEOUT {
            match p
                .send(FutureRecord::<(), _>::to("keep").payload(&big[0]), TIMEOUT)
                .await
            {
                Ok(_) => first = Some(deleted.elapsed()),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let first = first.expect("keep writable again within 30 s of deleting fill");
        eprintln!("keep writable {first:?} after the delete");
        for v in &big[1..] {
            p.send(FutureRecord::<(), _>::to("keep").payload(v), TIMEOUT)
                .await
                .unwrap_or_else(|(e, _)| panic!("16 MiB more to keep after the delete: {e}"));
        }
    });
    let after = du_bytes(&data);
    eprintln!("allocated: {full} when full, {after} after the delete and 16 MiB more");
    kept.extend(big);
    assert_eq!(
        read_all(&bootstrap, "keep"),
        kept,
        "every keep record, before and after"
    );
}

#[test]
fn disk_use_follows_live_data_with_a_forever_topic_next_to_a_short_one() {
    let soak = std::env::var("SLUICE_SOAK").is_ok_and(|v| v == "1");
    let duration = Duration::from_secs(if soak { 600 } else { 45 });
    // `short`: 64 records of 32 KiB a second (2 MiB/s), 10 s retention: ~20 MiB live.
    // `forever`: one 200-byte record a second, kept forever.
    const SHORT_PER_SEC: usize = 64;
    const SHORT_BYTES: usize = 32 << 10;
    const FOREVER_BYTES: usize = 200;
    // On disk per record (at most): the value, the record's own framing, a batch header
    // (61) and an entry header (16) each, rdkafka sending about one record per batch here.
    const OVERHEAD: u64 = 16 + 61 + 24;
    // On a tmpfs, so the test does not depend on the machine's filesystem punching holes.
    let dir = tempfile::tempdir().unwrap();
    let mount_dir = dir.path().join("space");
    let _tmpfs = Tmpfs::mount(&mount_dir, "1g");
    let data = mount_dir.join("data");
    let server = start(&data, "1000");
    let bootstrap = server.bootstrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    create(
        &rt,
        &bootstrap,
        &[
            NewTopic::new("forever", 1, TopicReplication::Fixed(1)).set("retention.ms", "-1"),
            NewTopic::new("short", 1, TopicReplication::Fixed(1)).set("retention.ms", "10000"),
        ],
    );
    let p = producer(&bootstrap, "5");
    let watcher = consumer(&bootstrap);
    let live_bytes = || -> u64 {
        [("forever", FOREVER_BYTES), ("short", SHORT_BYTES)]
            .iter()
            .map(|(t, len)| {
                let (lo, hi) = watcher.fetch_watermarks(t, 0, TIMEOUT).unwrap();
                (hi - lo) as u64 * (*len as u64 + OVERHEAD)
            })
            .sum()
    };
    let started = Instant::now();
    let (mut worst, mut samples, mut produced) = (0.0f64, 0, 0u64);
    let mut forever = 0usize;
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut n = 0usize;
        while started.elapsed() < duration {
            tick.tick().await;
            n += 1;
            let mut pending = Vec::new();
            for k in 0..SHORT_PER_SEC / 4 {
                let v = value("short", n * 100 + k, SHORT_BYTES);
                let f = p
                    .send_result(FutureRecord::<(), _>::to("short").payload(&v))
                    .map_err(|(e, _)| e)
                    .unwrap();
                pending.push(f);
                produced += v.len() as u64;
            }
            if n.is_multiple_of(4) {
                let v = value("forever", forever, FOREVER_BYTES);
                forever += 1;
                let f = p
                    .send_result(FutureRecord::<(), _>::to("forever").payload(&v))
                    .map_err(|(e, _)| e)
                    .unwrap();
                pending.push(f);
            }
            for f in pending {
                f.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
            if n.is_multiple_of(4) {
                let (disk, live) = (du_bytes(&data), live_bytes());
                let bound = live * 3 / 2 + SEGMENT_BYTES;
                samples += 1;
                worst = worst.max(disk as f64 / bound as f64);
                assert!(
                    disk <= bound,
                    "at {:?}: {disk} bytes allocated > 1.5 × {live} live + one segment",
                    started.elapsed()
                );
            }
        }
    });
    let (disk, live) = (du_bytes(&data), live_bytes());
    eprintln!(
        "{samples} samples over {duration:?}: {produced} bytes produced, finally {disk} \
         allocated for {live} live; worst disk/bound {worst:.2}"
    );
    assert!(
        produced > 2 * disk,
        "the test wrote more than it keeps (else it shows nothing)"
    );
    assert_eq!(
        read_all(&bootstrap, "forever").len(),
        forever,
        "every forever record kept"
    );
}
