//! Issue 5: limits with backpressure, each configurable (`SLUICE_LIMITS_…`) and checked here
//! against the real binary: per-IP connections, the global in-flight request byte budget
//! under a produce flood (memory bounded, a well-behaved client still served), partitions
//! per request, the decompressed-size cap and the idle timeout.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use testkit::Server;
use testkit::wire::{self, Client, topic_name};

const MIB: usize = 1024 * 1024;

fn create_topic(server: &Server, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ]);
    let mut raw = Client::connect(server.bootstrap()).expect("connect");
    let resp = raw.call(&req, 7).expect("CreateTopics");
    assert_eq!(resp.topics[0].error_code, 0, "create {topic}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One record batch holding one record with `value`.
fn batch(value: Bytes, compression: Compression) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now_ms(),
        key: None,
        value: Some(value),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &[record],
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

/// A Produce (acks=1) of `records` to each of `partitions` of `topic`.
fn produce_req(topic: &str, partitions: i32, records: &Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(
                    (0..partitions)
                        .map(|p| {
                            produce_request::PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(records.clone()))
                        })
                        .collect(),
                ),
        ])
}

fn fetch_req(topic: &str, partitions: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(16 * MIB as i32)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(
                    (0..partitions)
                        .map(|p| {
                            fetch_request::FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(0)
                                .with_partition_max_bytes(MIB as i32)
                        })
                        .collect(),
                ),
        ])
}

/// Waits until the server log contains `needle`.
fn log_shows(server: &Server, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if server.log().contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Anonymous resident memory of `pid` in KiB (heap and stacks; not the page cache the
/// store maps, which RssFile counts and the kernel can reclaim).
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
}

#[test]
fn per_ip_connection_limit_refuses_the_extra_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("SLUICE_LIMITS_MAX_CONNECTIONS_PER_IP", "3")],
    );
    // Server::start probes the port once; let that connection go away first.
    std::thread::sleep(Duration::from_millis(300));
    let mut open: Vec<Client> = (0..3)
        .map(|_| Client::connect(server.bootstrap()).unwrap())
        .collect();
    for c in &mut open {
        assert!(c.served(), "connections within the limit are served");
    }
    let mut extra = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    assert!(
        wire::closed_within(&mut extra, Duration::from_secs(5)),
        "the 4th connection from 127.0.0.1 is closed"
    );
    assert!(
        log_shows(
            &server,
            "per-IP connection limit reached; closing new connection",
            Duration::from_secs(5)
        ),
        "log names the refusal:\n{}",
        server.log()
    );
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("per-IP connection limit reached"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("limit=3") && line.contains("127.0.0.1"),
        "{line}"
    );
    // The admitted ones keep working.
    for c in &mut open {
        assert!(c.served(), "admitted connections still served");
    }
    // Another client IP (127.0.0.2 is loopback too) is not affected.
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind("127.0.0.2:0".parse().unwrap())?;
            let s = socket
                .connect(format!("127.0.0.1:{}", server.kafka_port).parse().unwrap())
                .await?;
            s.into_std()
        })
        .unwrap();
    let mut other = Client::from_stream(other).unwrap();
    assert!(other.served(), "a different IP is admitted");
    // Closing one frees its slot.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = Client::connect(server.bootstrap()).unwrap();
        again
            .stream()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        if again.served() {
            break;
        }
        assert!(Instant::now() < deadline, "slot freed after a close");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn partitions_past_the_per_request_limit_get_policy_violation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("SLUICE_LIMITS_MAX_PARTITIONS_PER_REQUEST", "4")],
    );
    create_topic(&server, "wide", 6);
    let mut raw = Client::connect(server.bootstrap()).unwrap();
    let records = batch(Bytes::from_static(b"v"), Compression::None);

    let resp = raw.call(&produce_req("wide", 6, &records), 8).unwrap();
    let parts = &resp.responses[0].partition_responses;
    let codes: Vec<i16> = parts.iter().map(|p| p.error_code).collect();
    assert_eq!(codes, vec![0, 0, 0, 0, 44, 44], "POLICY_VIOLATION past 4");
    let msg = parts[5].error_message.as_ref().map(|m| m.to_string());
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.contains("limits.max_partitions_per_request")),
        "{msg:?}"
    );
    // Within the limit: all served.
    let resp = raw.call(&produce_req("wide", 4, &records), 8).unwrap();
    assert!(
        resp.responses[0]
            .partition_responses
            .iter()
            .all(|p| p.error_code == 0)
    );

    let resp = raw.call(&fetch_req("wide", 6), 11).unwrap();
    let parts = &resp.responses[0].partitions;
    let codes: Vec<i16> = parts.iter().map(|p| p.error_code).collect();
    assert_eq!(
        codes,
        vec![0, 0, 0, 0, 44, 44],
        "Fetch: POLICY_VIOLATION past 4"
    );
    assert!(
        parts[..4]
            .iter()
            .all(|p| p.records.as_ref().is_some_and(|r| !r.is_empty())),
        "the first 4 partitions are served"
    );
    assert!(raw.served(), "the connection stays open");
    for api in ["api=\"Produce\"", "api=\"Fetch\""] {
        assert!(
            server
                .log()
                .lines()
                .any(|l| l.contains("request over the partition limit")
                    && l.contains(api)
                    && l.contains("partitions=6")
                    && l.contains("limit=4")),
            "{api} over the limit is logged:\n{}",
            server.log()
        );
    }
}

#[test]
fn decompressed_size_cap_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("SLUICE_LIMITS_MAX_DECOMPRESSED_BATCH_BYTES", "65536")],
    );
    create_topic(&server, "zipped", 1);
    let mut raw = Client::connect(server.bootstrap()).unwrap();
    let small = batch(Bytes::from(vec![0u8; 16 * 1024]), Compression::Gzip);
    let resp = raw.call(&produce_req("zipped", 1, &small), 8).unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    // 256 KiB of zeros gzip to well under 64 KiB, but inflate past the cap.
    let bomb = batch(Bytes::from(vec![0u8; 256 * 1024]), Compression::Gzip);
    assert!(bomb.len() < 64 * 1024);
    let resp = raw.call(&produce_req("zipped", 1, &bomb), 8).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 87, "INVALID_RECORD: {:?}", p.error_message);
    assert!(raw.served(), "the connection stays open");
}

#[test]
fn idle_connection_is_closed_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("SLUICE_KAFKA_IDLE_TIMEOUT_MS", "1000")],
    );
    let mut idle = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    let started = Instant::now();
    assert!(wire::closed_within(&mut idle, Duration::from_secs(10)));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        log_shows(&server, "reason=idle for 1000 ms", Duration::from_secs(5)),
        "{}",
        server.log()
    );
}

#[test]
fn a_frame_larger_than_the_whole_budget_is_served() {
    // Budget 1 MiB, frames up to 8 MiB: a 4 MiB request reserves the whole budget, waits
    // for nothing else, and is served (no deadlock).
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("SLUICE_LIMITS_MAX_INFLIGHT_REQUEST_BYTES", "1048576"),
            ("SLUICE_LIMITS_MAX_FRAME_BYTES", "8388608"),
        ],
    );
    create_topic(&server, "big", 4);
    let records = batch(Bytes::from(vec![7u8; 1000 * 1024]), Compression::None);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client::connect(server.bootstrap()).unwrap())
        .collect();
    // Several at once, so they queue on the budget.
    let frames: Vec<Bytes> = clients
        .iter_mut()
        .map(|c| c.frame(&produce_req("big", 4, &records), 8))
        .collect();
    assert!(frames[0].len() > 4 * 1000 * 1024);
    for (c, f) in clients.iter_mut().zip(&frames) {
        c.send_raw(f).unwrap();
    }
    for c in &mut clients {
        let resp = c
            .recv::<ProduceRequest>(c.correlation_id(), 8)
            .expect("served");
        assert!(
            resp.responses[0]
                .partition_responses
                .iter()
                .all(|p| p.error_code == 0)
        );
    }
}

#[test]
fn a_stalled_frame_gives_its_budget_back_after_the_read_timeout() {
    // Budget 1 MiB: a client announcing a 4 MiB frame and stalling holds the whole
    // large-frame share, but only for `kafka.frame_read_timeout_ms`.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("SLUICE_LIMITS_MAX_INFLIGHT_REQUEST_BYTES", "1048576"),
            ("SLUICE_LIMITS_MAX_FRAME_BYTES", "8388608"),
            ("SLUICE_KAFKA_FRAME_READ_TIMEOUT_MS", "2000"),
        ],
    );
    create_topic(&server, "after-stall", 1);
    let mut stalled = TcpStream::connect(("127.0.0.1", server.kafka_port)).unwrap();
    let peer = stalled.local_addr().unwrap();
    stalled.write_all(&(4 * MIB as i32).to_be_bytes()).unwrap();
    stalled.write_all(&[0u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A large produce queues behind the stalled reservation, then goes through.
    let started = Instant::now();
    let records = batch(Bytes::from(vec![1u8; 512 * 1024]), Compression::None);
    let mut producer = Client::connect(server.bootstrap()).unwrap();
    let resp = producer
        .call(&produce_req("after-stall", 1, &records), 8)
        .expect("served once the stalled frame times out");
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "waited {waited:?} for the stalled reservation (timeout 2 s)"
    );
    // Small requests were never blocked by it.
    assert!(Client::connect(server.bootstrap()).unwrap().served());
    assert!(wire::closed_within(&mut stalled, Duration::from_secs(5)));
    assert!(
        log_shows(
            &server,
            &format!(
                "peer={peer} reason=frame of 4194304 bytes not received within 2000 ms of its length"
            ),
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
}

/// What one flood run measured.
struct Flood {
    baseline_anon_mib: u64,
    peak_anon_mib: u64,
    flood_mib_per_s: f64,
    probes: Vec<Duration>,
}

/// `flooders` raw connections push 8 MiB Produce requests (8 partitions × 1 MiB, acks=1)
/// back to back at a `flush = sync` broker for `secs`, while a well-behaved rdkafka client
/// produces one record and fetches it back, again and again.
fn flood(budget_bytes: usize, flooders: usize, secs: u64) -> Flood {
    let dir = tempfile::tempdir().unwrap();
    let budget = budget_bytes.to_string();
    let server = Server::start_with_env(
        &dir.path().join("data"),
        &["--flush", "sync"],
        &[
            ("SLUICE_LIMITS_MAX_INFLIGHT_REQUEST_BYTES", budget.as_str()),
            ("SLUICE_STORAGE_SEGMENT_BYTES", "67108864"),
        ],
    );
    let pid = server.pid();
    create_topic(&server, "flood", 8);
    create_topic(&server, "calm", 1);
    let records = batch(Bytes::from(vec![0x5a; 1000 * 1024]), Compression::None);
    let frame = Arc::new(
        Client::connect(server.bootstrap())
            .unwrap()
            .frame(&produce_req("flood", 8, &records), 8),
    );
    let baseline = rss_anon_kib(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let flooders: Vec<_> = (0..flooders)
        .map(|_| {
            let (stop, written, frame) = (stop.clone(), written.clone(), frame.clone());
            let mut raw = Client::connect(server.bootstrap()).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // The same frame (one correlation id) every time: read, not decoded.
                    if raw.send_raw(&frame).is_err() || raw.recv_frame().is_err() {
                        return;
                    }
                    written.fetch_add(frame.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // The well-behaved client: produce one record, read it back, repeat.
    std::thread::sleep(Duration::from_secs(1));
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .set("group.id", "calm")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("calm", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut probes = Vec::new();
    let mut seen = 0usize;
    while started.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let payload = format!("probe {}", probes.len());
        producer
            .send(BaseRecord::<str, str>::to("calm").payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
        producer
            .flush(Duration::from_secs(30))
            .expect("the well-behaved producer is acknowledged under the flood");
        loop {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the well-behaved consumer reads its record under the flood"
            );
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    seen += 1;
                    if m.payload() == Some(payload.as_bytes()) {
                        break;
                    }
                }
                Some(Err(e)) => panic!("consumer error under the flood: {e}"),
                None => {}
            }
        }
        probes.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    let _ = sampler.join();
    assert_eq!(seen, probes.len(), "every probe read exactly once");
    Flood {
        baseline_anon_mib: baseline / 1024,
        peak_anon_mib: peak.load(Ordering::Relaxed) / 1024,
        flood_mib_per_s: written.load(Ordering::Relaxed) as f64
            / MIB as f64
            / elapsed.as_secs_f64(),
        probes,
    }
}

#[test]
fn produce_flood_is_slowed_not_buffered_and_others_are_served() {
    // 24 connections × 8 MiB requests = 192 MiB that would be in memory at once without
    // the global budget; with a 32 MiB budget at most 32 MiB of request bodies are (plus
    // a copy of each while it is appended).
    const BUDGET_MIB: u64 = 32;
    let f = flood(BUDGET_MIB as usize * MIB, 24, 8);
    let mut sorted = f.probes.clone();
    sorted.sort();
    let max = sorted.last().copied().unwrap_or_default();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "flood: {:.0} MiB/s acknowledged; broker RssAnon {} -> peak {} MiB (budget {BUDGET_MIB} MiB); \
         well-behaved produce+fetch: {} rounds, median {:?}, max {:?}",
        f.flood_mib_per_s,
        f.baseline_anon_mib,
        f.peak_anon_mib,
        f.probes.len(),
        median,
        max
    );
    // Stated bound: request bodies (budget) + their copies while appended (budget) + 64
    // MiB for everything else (runtime, 24 connections' buffers, allocator slack).
    let bound = f.baseline_anon_mib + 2 * BUDGET_MIB + 64;
    assert!(
        f.peak_anon_mib <= bound,
        "broker RssAnon peaked at {} MiB, bound {bound} MiB",
        f.peak_anon_mib
    );
    assert!(
        !f.probes.is_empty(),
        "the well-behaved client completed rounds"
    );
    assert!(
        max < Duration::from_secs(10),
        "a well-behaved produce+fetch took {max:?} under the flood"
    );
}

/// The same flood with the budget effectively off (2 GiB), for comparison:
/// `cargo test -p sluice-e2e --test limits -- --ignored --nocapture`.
#[test]
#[ignore]
fn produce_flood_without_a_budget_for_comparison() {
    let f = flood(2047 * MIB, 24, 8);
    let mut sorted = f.probes.clone();
    sorted.sort();
    eprintln!(
        "no budget: {:.0} MiB/s acknowledged; broker RssAnon {} -> peak {} MiB; \
         well-behaved produce+fetch: {} rounds, median {:?}, max {:?}",
        f.flood_mib_per_s,
        f.baseline_anon_mib,
        f.peak_anon_mib,
        f.probes.len(),
        sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
        sorted.last().copied().unwrap_or_default()
    );
    // What the comparison is for: without the budget the same flood takes more memory
    // than the budgeted run is held to, so the budget is what bounds it.
    const BUDGET_MIB: u64 = 32; // the budgeted test's budget and bound
    let budgeted_bound = f.baseline_anon_mib + 2 * BUDGET_MIB + 64;
    assert!(
        f.peak_anon_mib > budgeted_bound,
        "without a budget the broker peaked at {} MiB, within the budgeted bound {budgeted_bound} MiB: \
         the flood does not exercise the budget",
        f.peak_anon_mib
    );
}
