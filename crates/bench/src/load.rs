//! Load generators on librdkafka, so the figures are what a real Kafka client sees.
#![allow(unsafe_code)] // see the SAFETY comments

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use crate::cpu::CpuMeter;
use crate::report::Report;

#[derive(clap::Args, Clone)]
pub struct Common {
    /// Kafka-protocol broker to measure.
    #[arg(long, default_value = "127.0.0.1:9092", env = "SLUICE_BOOTSTRAP")]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Pid of the broker, for CPU per GB (default: the local `sluice server`, if one).
    #[arg(long)]
    broker_pid: Option<u32>,
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    /// Records to send (ignored with --duration-secs).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Send for this long instead of a fixed count.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Distinct keys (0: no keys, records go round-robin over partitions).
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Without keys: consecutive records sent to the same partition before moving to the
    /// next (record n goes to partition (n / run) mod partitions). 1 is strict per-record
    /// round-robin; larger runs let the client build real batches, as Kafka's sticky
    /// partitioner does for unkeyed records, while still covering every partition evenly.
    #[arg(long, default_value_t = 1)]
    run: u64,
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Producer batch size in bytes (librdkafka batch.size).
    #[arg(long, default_value_t = 1 << 20)]
    batch_size: u64,
    /// Concurrent producer clients.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Fixed total rate in records/s for latency runs (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Send inside Kafka transactions (one transactional.id per producer client).
    #[arg(long)]
    transactional: bool,
    /// Records per transaction with --transactional.
    #[arg(long, default_value_t = 100)]
    records_per_txn: u64,
}

#[derive(clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Records to read (default: everything stored when the run starts).
    #[arg(long)]
    count: Option<u64>,
}

#[derive(clap::Args)]
pub struct E2eArgs {
    #[command(flatten)]
    common: Common,
    /// Records per second.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
}

/// Runs a future to completion on this thread (admin calls only; no runtime needed).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn ensure_topic(common: &Common) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &common.bootstrap)
        .create()?;
    let topic = NewTopic::new(&common.topic, common.partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics(&[topic], &opts))
        .with_context(|| format!("no broker answered at {}", common.bootstrap))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("create topic {topic}: {code}"),
        }
    }
    Ok(())
}

fn micros_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Delivery reports of one producer: acknowledgement latency and counts.
struct Deliveries {
    started: Instant,
    latency_us: Mutex<Histogram<u64>>,
    acked: AtomicU64,
    failed: AtomicU64,
    last_ack_us: AtomicU64,
}

struct DeliveryContext(Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// Microseconds since `started` when the record was handed to librdkafka.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_us: usize) {
        let now_us = self.0.started.elapsed().as_micros() as u64;
        match result {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .0
                    .latency_us
                    .lock()
                    .map(|mut h| h.record(now_us.saturating_sub(sent_at_us as u64)));
                self.0.last_ack_us.fetch_max(now_us, Ordering::Relaxed);
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn producer_config(
    bootstrap: &str,
    acks: &str,
    compression: &str,
    linger_ms: u64,
    batch_size: u64,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("compression.type", compression)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", batch_size.to_string())
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000");
    config
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Sends `count` records (or for `duration`) from one producer; pacing to `rate` if non-zero.
struct Feed<'a> {
    topic: &'a str,
    partitions: i32,
    keys: u64,
    run: u64,
    rate: u64,
    count: u64,
    deadline: Option<Instant>,
    payload: Vec<u8>,
    stamp: bool,
    /// Commit a transaction every this many records (0: not transactional).
    records_per_txn: u64,
}

fn feed(
    producer: &ThreadedProducer<DeliveryContext>,
    started: Instant,
    f: &Feed<'_>,
    bar: &ProgressBar,
) -> Result<u64> {
    let mut payload = f.payload.clone();
    let mut sent = 0u64;
    let mut key = String::new();
    let txn_timeout = Duration::from_secs(60);
    while sent < f.count && f.deadline.is_none_or(|d| Instant::now() < d) {
        if f.records_per_txn > 0 && sent.is_multiple_of(f.records_per_txn) {
            producer.begin_transaction()?;
        }
        if f.rate > 0 {
            let elapsed = started.elapsed().as_secs_f64();
            let due = (elapsed * f.rate as f64) as u64;
            if sent >= due {
                // Sleep until the next record is due, in steps of at least 1 ms (records
                // due meanwhile go out together): waking every few microseconds in each of
                // 16 producer threads would take a core from the 2 the broker shares.
                let next = (sent + 1) as f64 / f.rate as f64;
                std::thread::sleep(Duration::from_secs_f64((next - elapsed).max(0.001)));
                continue;
            }
        }
        if f.stamp && payload.len() >= 8 {
            payload[..8].copy_from_slice(&micros_since_epoch().to_le_bytes());
        }
        let opaque = started.elapsed().as_micros() as usize;
        let mut record =
            BaseRecord::<str, [u8], usize>::with_opaque_to(f.topic, opaque).payload(&payload);
        if f.keys > 0 {
            key.clear();
            use std::fmt::Write;
            let _ = write!(key, "key-{}", sent % f.keys);
            record = record.key(key.as_str());
        } else {
            record = record.partition(((sent / f.run) % f.partitions as u64) as i32);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => bail!("produce: {e}"),
            }
        }
        sent += 1;
        if f.records_per_txn > 0 && sent.is_multiple_of(f.records_per_txn) {
            commit(producer, txn_timeout)?;
        }
        if sent.is_multiple_of(4096) {
            bar.inc(4096);
        }
    }
    if f.records_per_txn > 0 && !sent.is_multiple_of(f.records_per_txn) {
        commit(producer, txn_timeout)?;
    }
    Ok(sent)
}

/// Commits the open transaction with librdkafka's own `rd_kafka_commit_transaction`,
/// whose flush sends lingering records at once and waits on a condition variable while the
/// `ThreadedProducer`'s thread serves the delivery reports. The rdkafka crate's
/// `commit_transaction` first runs its own flush, which neither bypasses `linger.ms` nor
/// wakes up on reports taken by that thread (it polls in 100 ms steps): ~100 ms per
/// transaction spent in the client, which is not what is being measured here.
fn commit(producer: &ThreadedProducer<DeliveryContext>, timeout: Duration) -> Result<()> {
    let handle = producer.client().native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `handle` is the live librdkafka handle owned by `producer`, which outlives the
    // call; a returned error object is ours and is destroyed exactly once below.
    let err = unsafe { rdkafka::bindings::rd_kafka_commit_transaction(handle, timeout_ms) };
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: `err` is a valid error object until destroyed; its string lives as long.
    let message = unsafe {
        std::ffi::CStr::from_ptr(rdkafka::bindings::rd_kafka_error_string(err))
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: destroyed once; not used afterwards.
    unsafe { rdkafka::bindings::rd_kafka_error_destroy(err) };
    bail!("commit_transaction: {message}")
}

#[expect(
    clippy::too_many_lines,
    reason = "setup, run and report of one load phase read together"
)]
pub fn produce(args: &ProduceArgs) -> Result<Report> {
    let common = &args.common;
    ensure_topic(common)?;
    let deadline = args
        .duration_secs
        .map(|s| Instant::now() + Duration::from_secs(s));
    let count_per_producer = if deadline.is_some() {
        u64::MAX
    } else {
        args.count / args.producers as u64
    };
    let bar = progress(if deadline.is_some() { 0 } else { args.count });
    let cpu = CpuMeter::begin(common.broker_pid);
    let started = Instant::now();
    let payload = crate::baseline_pattern(common.size);
    let results: Vec<Result<(u64, Arc<Deliveries>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.producers)
            .map(|index| {
                let bar = &bar;
                let payload = payload.clone();
                s.spawn(move || -> Result<(u64, Arc<Deliveries>)> {
                    let deliveries = Arc::new(Deliveries {
                        started,
                        latency_us: Mutex::new(Histogram::new(3)?),
                        acked: AtomicU64::new(0),
                        failed: AtomicU64::new(0),
                        last_ack_us: AtomicU64::new(0),
                    });
                    let mut config = producer_config(
                        &common.bootstrap,
                        &args.acks,
                        &args.compression,
                        args.linger_ms,
                        args.batch_size,
                    );
                    if args.transactional {
                        config
                            .set(
                                "transactional.id",
                                format!("sluice-bench-{}-{index}", std::process::id()),
                            )
                            // librdkafka requires message.timeout.ms <= this.
                            .set("transaction.timeout.ms", "120000");
                    }
                    let producer: ThreadedProducer<DeliveryContext> =
                        config.create_with_context(DeliveryContext(deliveries.clone()))?;
                    if args.transactional {
                        producer.init_transactions(Duration::from_secs(30))?;
                    }
                    let sent = feed(
                        &producer,
                        started,
                        &Feed {
                            topic: &common.topic,
                            partitions: common.partitions,
                            keys: args.keys,
                            run: args.run.max(1),
                            rate: args.rate / args.producers as u64,
                            count: count_per_producer,
                            deadline,
                            payload,
                            stamp: false,
                            records_per_txn: if args.transactional {
                                args.records_per_txn.max(1)
                            } else {
                                0
                            },
                        },
                        bar,
                    )?;
                    producer.flush(Duration::from_secs(120))?;
                    Ok((sent, deliveries))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("producer thread panicked"))
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut acked, mut failed, mut sent, mut last_us) = (0u64, 0u64, 0u64, 0u64);
    for r in results {
        let (s, d) = r?;
        sent += s;
        acked += d.acked.load(Ordering::Relaxed);
        failed += d.failed.load(Ordering::Relaxed);
        last_us = last_us.max(d.last_ack_us.load(Ordering::Relaxed));
        if let Ok(h) = d.latency_us.lock() {
            hist.add(&*h)?;
        }
    }
    let secs = (last_us as f64 / 1e6).max(1e-6);
    let bytes = acked as f64 * common.size as f64;
    let mut report = Report::new("produce");
    report.setting("bootstrap", common.bootstrap.clone());
    report.setting("topic", common.topic.clone());
    report.setting("partitions", common.partitions);
    report.setting("record_bytes", common.size as u64);
    report.setting("acks", args.acks.clone());
    report.setting("compression", args.compression.clone());
    report.setting("linger_ms", args.linger_ms);
    report.setting("producers", args.producers);
    report.setting("rate", args.rate);
    if args.keys == 0 {
        report.setting("round_robin_run", args.run.max(1));
    }
    if args.transactional {
        report.setting("records_per_txn", args.records_per_txn);
    }
    report.figure("records sent", sent as f64, "records");
    report.figure("records acknowledged", acked as f64, "records");
    report.figure("records failed", failed as f64, "records");
    report.figure("throughput records", acked as f64 / secs, "records/s");
    report.figure("throughput MB", bytes / 1e6 / secs, "MB/s");
    report.latency("ack latency", &hist);
    cpu_figures(&mut report, &cpu, bytes);
    if failed > 0 {
        eprintln!("warning: {failed} records failed delivery");
    }
    Ok(report)
}

fn cpu_figures(report: &mut Report, cpu: &CpuMeter, bytes: f64) {
    if let (Some(pid), Some(seconds)) = (cpu.pid(), cpu.seconds_since()) {
        report.setting("broker_pid", pid);
        report.figure("broker cpu", seconds, "s");
        if bytes > 0.0 {
            report.figure("broker cpu per GB", seconds / (bytes / 1e9), "s/GB");
        }
    }
}

fn consumer(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // Responses up to 16 MiB: librdkafka allocates a receive buffer per response, and
        // glibc serves blocks over 32 MiB with a fresh mmap each time (page faults and
        // zeroing on every fetch: 12 % of the client's time at 50 MiB).
        .set("fetch.max.bytes", "16777216")
        .set("max.partition.fetch.bytes", "4194304")
        .set("queued.max.messages.kbytes", "262144")
        .set("fetch.wait.max.ms", "100")
        .create()?)
}

pub fn consume(args: &ConsumeArgs) -> Result<Report> {
    let common = &args.common;
    let consumer = consumer(&common.bootstrap, "sluice-bench-consume")?;
    let metadata = consumer
        .fetch_metadata(Some(&common.topic), Duration::from_secs(30))
        .with_context(|| format!("no broker answered at {}", common.bootstrap))?;
    let topic = metadata
        .topics()
        .first()
        .filter(|t| !t.partitions().is_empty())
        .with_context(|| format!("topic {} has no partitions: produce first", common.topic))?;
    let mut tpl = TopicPartitionList::new();
    let mut stored = 0i64;
    for p in topic.partitions() {
        let (low, high) =
            consumer.fetch_watermarks(&common.topic, p.id(), Duration::from_secs(30))?;
        stored += high - low;
        tpl.add_partition_offset(&common.topic, p.id(), Offset::Beginning)?;
    }
    let want = args.count.unwrap_or(stored as u64);
    consumer.assign(&tpl)?;
    let bar = progress(want);
    let cpu = CpuMeter::begin(common.broker_pid);
    let started = Instant::now();
    let (mut got, mut bytes) = (0u64, 0u64);
    // Consecutive empty 100 ms polls; the clock is not read per record.
    let mut idle_polls = 0u32;
    while got < want {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                got += 1;
                bytes += m.payload_len() as u64;
                idle_polls = 0;
                if got.is_multiple_of(4096) {
                    bar.inc(4096);
                }
            }
            Some(Err(e)) => bail!("fetch: {e}"),
            None if idle_polls >= 300 => bail!("no record for 30 s after {got} of {want}"),
            None => idle_polls += 1,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut report = Report::new("consume");
    report.setting("bootstrap", common.bootstrap.clone());
    report.setting("topic", common.topic.clone());
    report.figure("records", got as f64, "records");
    report.figure("throughput records", got as f64 / secs, "records/s");
    report.figure("throughput MB", bytes as f64 / 1e6 / secs, "MB/s");
    cpu_figures(&mut report, &cpu, bytes as f64);
    Ok(report)
}

pub fn e2e(args: &E2eArgs) -> Result<Report> {
    let common = &args.common;
    if common.size < 8 {
        bail!("--size must be at least 8 (the payload carries a timestamp)");
    }
    ensure_topic(common)?;
    let consumer = consumer(&common.bootstrap, "sluice-bench-e2e")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..common.partitions {
        tpl.add_partition_offset(&common.topic, p, Offset::End)?;
    }
    consumer.assign(&tpl)?;
    // Let the consumer resolve its start offsets before the first record is sent.
    let warmup = Instant::now() + Duration::from_secs(2);
    while Instant::now() < warmup {
        consumer.poll(Duration::from_millis(100));
    }
    let total = args.rate * args.duration_secs;
    let deliveries = Arc::new(Deliveries {
        started: Instant::now(),
        latency_us: Mutex::new(Histogram::new(3)?),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_ack_us: AtomicU64::new(0),
    });
    let producer: ThreadedProducer<DeliveryContext> = producer_config(
        &common.bootstrap,
        &args.acks,
        "none",
        args.linger_ms,
        1 << 20,
    )
    .create_with_context(DeliveryContext(deliveries.clone()))?;
    let cpu = CpuMeter::begin(common.broker_pid);
    let bar = progress(total);
    let mut e2e_hist = Histogram::<u64>::new(3)?;
    let payload = crate::baseline_pattern(common.size);
    let started = deliveries.started;
    std::thread::scope(|s| -> Result<()> {
        let feeder = s.spawn(|| {
            feed(
                &producer,
                started,
                &Feed {
                    topic: &common.topic,
                    partitions: common.partitions,
                    keys: 0,
                    run: 1,
                    rate: args.rate,
                    count: total,
                    deadline: None,
                    payload,
                    stamp: true,
                    records_per_txn: 0,
                },
                &bar,
            )
        });
        let mut got = 0u64;
        let mut idle_since = Instant::now();
        while got < total {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let Some(bytes) = m.payload().and_then(|p| p.get(..8)) {
                        let mut stamp = [0u8; 8];
                        stamp.copy_from_slice(bytes);
                        let sent = u64::from_le_bytes(stamp);
                        e2e_hist.record(micros_since_epoch().saturating_sub(sent))?;
                    }
                    got += 1;
                    idle_since = Instant::now();
                }
                Some(Err(e)) => bail!("fetch: {e}"),
                None if idle_since.elapsed() > Duration::from_secs(30) => {
                    bail!("no record for 30 s after {got} of {total}")
                }
                None => {}
            }
        }
        feeder
            .join()
            .unwrap_or_else(|_| bail!("producer thread panicked"))?;
        Ok(())
    })?;
    producer.flush(Duration::from_secs(60))?;
    bar.finish_and_clear();
    let mut report = Report::new("e2e");
    report.setting("bootstrap", common.bootstrap.clone());
    report.setting("topic", common.topic.clone());
    report.setting("rate", args.rate);
    report.setting("record_bytes", common.size as u64);
    report.setting("acks", args.acks.clone());
    report.setting("linger_ms", args.linger_ms);
    report.figure("records", e2e_hist.len() as f64, "records");
    report.latency("end-to-end", &e2e_hist);
    if let Ok(h) = deliveries.latency_us.lock() {
        report.latency("ack latency", &h);
    }
    cpu_figures(&mut report, &cpu, (total * common.size as u64) as f64);
    Ok(report)
}
