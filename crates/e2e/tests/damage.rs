//! Issue 13, item 4, against the real binary with librdkafka consumers: damage a crash
//! cannot explain is loud, located and recoverable. For each kind of damage the outcome is
//! "recovered, nothing lost", "refused to start naming the file" or "repair reports exactly
//! the lost offsets" — and consumers never spin silently: before a repair they get an
//! error, after it they continue past what was given up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use testkit::{Server, sluice_bin};

const RECORDS: usize = 3000;
/// Small segments, so the test's damage lands in the middle of the log.
const SEGMENT: &str = "storage.segment_bytes=1048576";

fn start(data: &Path) -> Server {
    Server::start_with(data, &["--set", SEGMENT])
}

/// Produces `RECORDS` records `v0..` to partition 0 of `topic` in small batches.
fn produce(server: &Server, topic: &str) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("batch.num.messages", "20")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    for i in 0..RECORDS {
        let v = format!("v{i}-{}", "x".repeat(400));
        loop {
            match p.send(BaseRecord::<(), _>::to(topic).partition(0).payload(&v)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        matches!(e, KafkaError::MessageProduction(_)),
                        "produce: {e}"
                    );
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// What a consumer reading partition 0 from the start meets.
enum Read {
    /// (offset, record number) of every record, up to the end of the partition.
    All(Vec<(i64, usize)>),
    /// The error it got, after reading these records.
    Failed(KafkaError, Vec<(i64, usize)>),
}

fn consume(server: &Server, topic: &str) -> Read {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("group.id", "damage-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                let n = v[1..v.find('-').unwrap()].parse().unwrap();
                got.push((m.offset(), n));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Read::All(got),
            Some(Err(e)) => return Read::Failed(e, got),
            None => {}
        }
    }
    panic!("the consumer neither finished nor failed within 30 s: it spins silently");
}

/// Runs `sluice storage <args>` on `data`; returns (exit code, stdout).
fn storage(data: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(sluice_bin())
        .arg("storage")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("sluice storage");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Starting a server on `data` fails; returns what it printed.
fn refused_start(data: &Path) -> String {
    let out = Command::new(sluice_bin())
        .args([
            "server",
            "--kafka-listener",
            "127.0.0.1:0",
            "--amqp-listener",
            "127.0.0.1:0",
            "--admin-listener",
        ])
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data)
        .args(["--set", SEGMENT])
        .output()
        .expect("sluice server");
    assert!(
        !out.status.success(),
        "the server started on a damaged store"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `lost: partition P offsets A..=Z` lines of a check or repair.
fn lost(report: &str) -> Vec<(i64, i64)> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("lost: partition "))
        .map(|l| {
            let range = l.split("offsets ").nth(1).unwrap();
            let (a, z) = range.split_once("..=").unwrap();
            (a.parse().unwrap(), z.trim().parse().unwrap())
        })
        .collect()
}

fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("store/commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn flipped_bytes_fail_consumers_loudly_until_a_repair_skips_exactly_the_lost_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data);
    produce(&server, "flip");
    server.terminate();
    // Flip bytes in the middle of the used part of the first segment.
    let seg = &segments(&data)[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let used = bytes.iter().rposition(|&b| b != 0).unwrap();
    for b in &mut bytes[used / 2..used / 2 + 20] {
        *b ^= 0x5a;
    }
    std::fs::write(seg, bytes).unwrap();

    // Starts (nothing an open can see), then fails the consumer at the damage.
    server.restart();
    let Read::Failed(err, before) = consume(&server, "flip") else {
        panic!("a consumer read past damaged bytes without an error");
    };
    assert!(err.to_string().contains("Invalid message"), "{err}"); // CORRUPT_MESSAGE
    let health = server.http_get("/health").1;
    assert!(health.contains("\"degraded\""), "{health}");
    assert!(health.contains(&seg.display().to_string()), "{health}");
    let metrics = server.http_get("/metrics").1;
    assert!(
        metrics.contains("sluice_storage_damaged_batches_total 1"),
        "{metrics}"
    );
    assert!(server.log().contains("damaged batch in the commit log"));
    server.terminate();

    // Check names the lost offsets; repair keeps them unless told to skip.
    let (code, report) = storage(&data, &["check"]);
    assert_eq!(code, 5, "{report}");
    let lost = lost(&report);
    assert_eq!(lost.len(), 1, "{report}");
    let (a, z) = lost[0];
    assert_eq!(before.last().map(|(o, _)| o + 1), Some(a), "{report}");
    assert_eq!(storage(&data, &["repair"]).0, 5);
    let (code, out) = storage(&data, &["repair", "--skip-damaged"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(storage(&data, &["check"]).0, 0);

    server.restart();
    let Read::All(got) = consume(&server, "flip") else {
        panic!("consumer failed after the repair");
    };
    let want: Vec<(i64, usize)> = (0..RECORDS)
        .map(|i| (i as i64, i))
        .filter(|(o, _)| *o < a || *o > z)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_truncated_segment_refuses_to_start_and_repair_reports_the_lost_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data);
    produce(&server, "cut");
    produce(&server, "cut");
    server.terminate();
    let segs = segments(&data);
    assert!(segs.len() >= 2, "{segs:?}");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    let msg = refused_start(&data);
    assert!(
        msg.contains(&segs[0].file_name().unwrap().to_string_lossy().to_string()),
        "{msg}"
    );
    assert!(msg.contains("sluice storage repair"), "{msg}");

    let (code, report) = storage(&data, &["repair", "--skip-damaged"]);
    assert_eq!(code, 0, "{report}");
    let lost = lost(&report);
    assert!(!lost.is_empty(), "{report}");
    server.restart();
    let Read::All(got) = consume(&server, "cut") else {
        panic!("consumer failed after the repair");
    };
    let is_lost = |o: i64| lost.iter().any(|&(a, z)| a <= o && o <= z);
    let want: Vec<i64> = (0..2 * RECORDS as i64).filter(|&o| !is_lost(o)).collect();
    assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), want);
    for (o, n) in &got {
        assert_eq!(*n as i64, o % RECORDS as i64);
    }
    // New records go after the old end, never onto the cut range.
    produce(&server, "cut");
    let Read::All(after) = consume(&server, "cut") else {
        panic!("consumer failed");
    };
    assert_eq!(after.len(), got.len() + RECORDS);
    assert_eq!(after.last().unwrap().0, 3 * RECORDS as i64 - 1);
}

#[test]
fn a_deleted_consume_queue_file_refuses_to_start_and_is_rebuilt_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data);
    produce(&server, "cq");
    server.terminate();
    let qdir = std::fs::read_dir(data.join("store/queues"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("00000000000000000000.cq").exists())
        .unwrap();
    let cq = qdir.join("00000000000000000000.cq");
    std::fs::remove_file(&cq).unwrap();
    let msg = refused_start(&data);
    assert!(msg.contains("00000000000000000000.cq"), "{msg}");
    let (code, report) = storage(&data, &["repair"]);
    assert_eq!(code, 0, "{report}");
    assert!(lost(&report).is_empty(), "{report}");
    server.restart();
    let Read::All(got) = consume(&server, "cq") else {
        panic!("consumer failed after the repair");
    };
    assert_eq!(got, (0..RECORDS).map(|i| (i as i64, i)).collect::<Vec<_>>());
}

#[test]
fn lost_metadata_refuses_to_start_and_repair_recovers_the_records_as_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data);
    produce(&server, "meta");
    server.terminate();
    for f in ["snapshot.json", "metadata.log"] {
        let _ = std::fs::remove_file(data.join("meta").join(f));
    }
    let msg = refused_start(&data);
    assert!(msg.contains("meta"), "{msg}");
    assert!(msg.contains(&format!("{RECORDS} records")), "{msg}");
    let (code, report) = storage(&data, &["repair"]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("recovered-0"), "{report}");
    server.restart();
    let Read::All(got) = consume(&server, "recovered-0") else {
        panic!("consumer of the recovered topic failed");
    };
    assert_eq!(got, (0..RECORDS).map(|i| (i as i64, i)).collect::<Vec<_>>());
}
