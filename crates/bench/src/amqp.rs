//! `sluice bench amqp`: AMQP 0-9-1 load with lapin, the same client against any broker
//! (Sluice or RabbitMQ), so the two can be compared message for message.
//!
//! Publishers and consumers run at once; a run ends when every message published has been
//! delivered (to every queue, for fan-out). Messages/s is end to end: messages published ÷
//! the time from the first publish to the last delivery. Bounded by `--count` and
//! `--duration-secs` (publishing stops at whichever comes first).
//!
//! Scenarios (issue 15):
//! - `durable`: a durable queue, persistent messages, publisher confirms with a window of
//!   `--confirm-window` in flight, manual acks with prefetch `--prefetch`.
//! - `transient`: a non-durable queue, transient messages, no confirms, auto-ack.
//! - `fanout`: a fan-out exchange to `--queues` non-durable queues, one auto-ack consumer
//!   each, transient messages, no confirms.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use crate::cpu::{CpuMeter, process_cpu_seconds};
use crate::report::Report;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Durable queue, persistent messages, confirms, manual acks with prefetch.
    Durable,
    /// Non-durable queue, transient messages, no confirms, auto-ack.
    Transient,
    /// Fan-out exchange to --queues non-durable queues, auto-ack.
    Fanout,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Durable => "durable",
            Scenario::Transient => "transient",
            Scenario::Fanout => "fanout",
        }
    }
}

#[derive(clap::Args)]
pub struct AmqpArgs {
    /// Broker to measure.
    #[arg(
        long,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        env = "SLUICE_AMQP_URL"
    )]
    url: String,
    #[arg(long, value_enum, default_value = "durable")]
    scenario: Scenario,
    /// Messages to publish (in total over all publishers).
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Stop publishing after this long even if --count is not reached.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// How long consumers may take after the last publish before the run fails.
    #[arg(long, default_value_t = 60)]
    drain_secs: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Consumer connections on the queue (durable, transient); fan-out has one per queue.
    /// 0: publish only (the run ends with the last publish; messages stay queued until the
    /// queue is deleted).
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Unconfirmed messages in flight per publisher (durable).
    #[arg(long, default_value_t = 1000)]
    confirm_window: usize,
    /// Prefetch (basic.qos) of each manual-ack consumer (durable).
    #[arg(long, default_value_t = 1000)]
    prefetch: u16,
    /// Manual acks: ack with `multiple` every this many deliveries (1: each delivery on
    /// its own, as most applications do; RabbitMQ PerfTest's --multi-ack-every).
    #[arg(long, default_value_t = 1)]
    ack_every: u64,
    /// Queues bound to the fan-out exchange.
    #[arg(long, default_value_t = 10)]
    queues: u32,
    /// Queue (and exchange) name prefix; a fresh name per run by default. The queues and
    /// exchange are deleted at the end.
    #[arg(long)]
    name: Option<String>,
    /// Keep the run's queues (and exchange) instead of deleting them at the end, e.g. to
    /// measure what the broker stored.
    #[arg(long)]
    keep: bool,
    /// Client runtime threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Pid of the broker, for CPU per GB (default: the local `sluice server`, if one).
    #[arg(long)]
    broker_pid: Option<u32>,
}

/// What every task of a run shares.
struct Counters {
    started: Instant,
    published: AtomicU64,
    delivered: AtomicU64,
    /// Microseconds since `started` of the last publish (confirmed, with confirms).
    last_publish_us: AtomicU64,
    /// Microseconds since `started` of the last delivery.
    last_delivery_us: AtomicU64,
}

impl Counters {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

async fn connect(url: &str) -> Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("no AMQP broker answered at {}", redact(url)))
}

/// The URL without its password, for reports.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

pub fn run(args: &AmqpArgs) -> Result<Report> {
    if args.publishers == 0 {
        bail!("--publishers must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

/// Declares the queues (and exchange) of the scenario; returns (exchange, routing key, queues).
async fn declare(args: &AmqpArgs, prefix: &str) -> Result<(String, String, Vec<String>)> {
    let conn = connect(&args.url).await?;
    let channel = conn.create_channel().await?;
    let durable = args.scenario == Scenario::Durable;
    let queues: Vec<String> = match args.scenario {
        Scenario::Fanout => (0..args.queues).map(|i| format!("{prefix}-{i}")).collect(),
        _ => vec![prefix.to_string()],
    };
    for q in &queues {
        channel
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    durable,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declare queue {q}"))?;
    }
    let (exchange, key) = if args.scenario == Scenario::Fanout {
        let exchange = format!("{prefix}-fanout");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declare exchange {exchange}"))?;
        for q in &queues {
            channel
                .queue_bind(
                    q.as_str().into(),
                    exchange.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        (exchange, String::new())
    } else {
        (String::new(), prefix.to_string())
    };
    let _ = conn.close(200, "declared".into()).await;
    Ok((exchange, key, queues))
}

async fn cleanup(url: &str, exchange: &str, queues: &[String]) -> Result<()> {
    let conn = connect(url).await?;
    let channel = conn.create_channel().await?;
    for q in queues {
        channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    if !exchange.is_empty() {
        channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

struct PublishPlan {
    exchange: String,
    key: String,
    count: u64,
    deadline: Instant,
    /// 0: no confirms.
    confirm_window: usize,
    persistent: bool,
    payload: Arc<Vec<u8>>,
}

async fn publish(url: String, plan: PublishPlan, counters: Arc<Counters>) -> Result<u64> {
    let conn = connect(&url).await?;
    let channel = conn.create_channel().await?;
    if plan.confirm_window > 0 {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    let props = BasicProperties::default().with_delivery_mode(if plan.persistent { 2 } else { 1 });
    let mut in_flight = VecDeque::with_capacity(plan.confirm_window);
    let mut sent = 0u64;
    let confirmed = |n: u64| {
        counters.published.fetch_add(n, Ordering::Relaxed);
        counters
            .last_publish_us
            .fetch_max(counters.now_us(), Ordering::Relaxed);
    };
    while sent < plan.count && (!sent.is_multiple_of(256) || Instant::now() < plan.deadline) {
        let confirm = channel
            .basic_publish(
                plan.exchange.as_str().into(),
                plan.key.as_str().into(),
                BasicPublishOptions::default(),
                &plan.payload,
                props.clone(),
            )
            .await
            .context("publish")?;
        sent += 1;
        if plan.confirm_window == 0 {
            confirmed(1);
            continue;
        }
        in_flight.push_back(confirm);
        if in_flight.len() >= plan.confirm_window {
            let confirm = in_flight.pop_front().expect("non-empty");
            if !confirm.await.context("confirm")?.is_ack() {
                bail!("the broker nacked a publish");
            }
            confirmed(1);
        }
    }
    while let Some(confirm) = in_flight.pop_front() {
        if !confirm.await.context("confirm")?.is_ack() {
            bail!("the broker nacked a publish");
        }
        confirmed(1);
    }
    let _ = conn.close(200, "published".into()).await;
    Ok(sent)
}

/// How a consumer settles: `None` auto-ack, `Some(n)` a manual ack every n deliveries.
async fn consume(
    url: String,
    queue: String,
    ack_every: Option<u64>,
    prefetch: u16,
    counters: Arc<Counters>,
) -> Result<()> {
    let manual_ack = ack_every.is_some();
    let conn = connect(&url).await?;
    let channel = conn.create_channel().await?;
    if manual_ack {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: !manual_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consume {queue}"))?;
    // Runs until the run is over and this task is dropped.
    let mut received = 0u64;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("delivery")?;
        received += 1;
        if let Some(every) = ack_every
            && received.is_multiple_of(every)
        {
            delivery
                .ack(BasicAckOptions {
                    multiple: every > 1,
                })
                .await?;
        }
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        counters
            .last_delivery_us
            .fetch_max(counters.now_us(), Ordering::Relaxed);
    }
    bail!("consumer on {queue} ended before the run did")
}

#[expect(
    clippy::too_many_lines,
    reason = "setup, run and report of one scenario read together"
)]
async fn run_async(args: &AmqpArgs) -> Result<Report> {
    let prefix = args.name.clone().unwrap_or_else(|| {
        format!(
            "bench-{}-{}-{}",
            args.scenario.name(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() % 1_000_000)
                .unwrap_or(0)
        )
    });
    let (exchange, key, queues) = declare(args, &prefix).await?;
    let manual_ack = args.scenario == Scenario::Durable;
    let counters = Arc::new(Counters {
        started: Instant::now(),
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        last_publish_us: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
    });
    // Consumers first, so a fan-out's queues are drained from the first message.
    let mut consumers = tokio::task::JoinSet::new();
    let consumer_queues: Vec<String> = match args.scenario {
        Scenario::Fanout => queues.clone(),
        _ => (0..args.consumers).map(|_| queues[0].clone()).collect(),
    };
    for q in &consumer_queues {
        consumers.spawn(consume(
            args.url.clone(),
            q.clone(),
            manual_ack.then_some(args.ack_every.max(1)),
            args.prefetch,
            counters.clone(),
        ));
    }
    // Give the consumers their basic.consume-ok before the clock starts; times below are
    // measured from the first publish (`offset_us` after `counters.started`).
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(done) = consumers.try_join_next() {
        done??;
    }
    let early = counters.delivered.load(Ordering::Relaxed);
    if early > 0 {
        bail!("{early} messages delivered before the first publish: the queue was not new");
    }
    let payload = Arc::new(crate::baseline_pattern(args.size));
    let cpu = CpuMeter::begin(args.broker_pid);
    let client_cpu_start = process_cpu_seconds(std::process::id());
    let started = Instant::now();
    let offset_us = started.duration_since(counters.started).as_micros() as u64;
    let deadline = started + Duration::from_secs(args.duration_secs);
    let mut publishers = tokio::task::JoinSet::new();
    let per = args.count / u64::from(args.publishers);
    for i in 0..args.publishers {
        let extra = if i == 0 {
            args.count % u64::from(args.publishers)
        } else {
            0
        };
        publishers.spawn(publish(
            args.url.clone(),
            PublishPlan {
                exchange: exchange.clone(),
                key: key.clone(),
                count: per + extra,
                deadline,
                confirm_window: if args.scenario == Scenario::Durable {
                    args.confirm_window.max(1)
                } else {
                    0
                },
                persistent: args.scenario == Scenario::Durable,
                payload: payload.clone(),
            },
            counters.clone(),
        ));
    }
    let mut sent = 0u64;
    while let Some(done) = publishers.join_next().await {
        sent += done??;
    }
    let published = counters.published.load(Ordering::Relaxed);
    // Every publish reaches each queue once.
    let want = if consumer_queues.is_empty() {
        0
    } else {
        sent * queues.len() as u64
    };
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    while counters.delivered.load(Ordering::Relaxed) < want {
        if let Some(done) = consumers.try_join_next() {
            done??;
        }
        if Instant::now() > drain_deadline {
            bail!(
                "{} of {want} deliveries {} s after the last publish",
                counters.delivered.load(Ordering::Relaxed),
                args.drain_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let broker_cpu = cpu.seconds_since();
    let client_cpu = process_cpu_seconds(std::process::id())
        .zip(client_cpu_start)
        .map(|(end, start)| end - start);
    consumers.abort_all();
    let end_us = if consumer_queues.is_empty() {
        counters.last_publish_us.load(Ordering::Relaxed)
    } else {
        counters.last_delivery_us.load(Ordering::Relaxed)
    }
    .saturating_sub(offset_us);
    let publish_us = counters
        .last_publish_us
        .load(Ordering::Relaxed)
        .saturating_sub(offset_us);
    let secs = (end_us as f64 / 1e6).max(1e-6);
    if !args.keep {
        cleanup(&args.url, &exchange, &queues)
            .await
            .context("delete the run's queues")?;
    }

    let bytes_in = published as f64 * args.size as f64;
    let mut report = Report::new("amqp");
    report.setting("url", redact(&args.url));
    report.setting("scenario", args.scenario.name());
    report.setting("message_bytes", args.size as u64);
    report.setting("publishers", args.publishers);
    report.setting("consumers", consumer_queues.len() as u64);
    match args.scenario {
        Scenario::Durable => {
            report.setting("confirm_window", args.confirm_window as u64);
            report.setting("prefetch", u64::from(args.prefetch));
            report.setting("ack_every", args.ack_every.max(1));
        }
        Scenario::Transient => {}
        Scenario::Fanout => report.setting("queues", queues.len() as u64),
    }
    report.figure("messages published", published as f64, "msgs");
    report.figure("messages delivered", delivered as f64, "msgs");
    report.figure("throughput messages", published as f64 / secs, "msgs/s");
    report.figure("throughput MB", bytes_in / 1e6 / secs, "MB/s");
    if args.scenario == Scenario::Fanout {
        report.figure("deliveries", delivered as f64 / secs, "msgs/s");
    }
    report.figure(
        "publish rate",
        published as f64 / (publish_us as f64 / 1e6).max(1e-6),
        "msgs/s",
    );
    report.figure("elapsed", secs, "s");
    if let (Some(pid), Some(seconds)) = (cpu.pid(), broker_cpu) {
        report.setting("broker_pid", pid);
        report.figure("broker cpu", seconds, "s");
        if bytes_in > 0.0 {
            report.figure("broker cpu per GB", seconds / (bytes_in / 1e9), "s/GB");
        }
    }
    if let Some(seconds) = client_cpu {
        report.figure("client cpu", seconds, "s");
    }
    Ok(report)
}
