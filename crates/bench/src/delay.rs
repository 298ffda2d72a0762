//! `sluice bench delay`: how late scheduled messages become visible (issue 16). lapin
//! publishers send `--count` messages to an `x-delayed-message` exchange, every one due at
//! the same instant (`--due-in-secs` after the run starts, on a whole second). The queue's
//! ready count (queue.declare passive) is polled every few ms from then on: a message is
//! visible once it is ready to be delivered, and the percentiles say how long after the due
//! time each share of the messages was (the delivery rate of a consumer is `sluice bench
//! amqp`'s business). Also checks nothing is ready before the due time, and reports the
//! publish rate and, with `--broker-pid`, the broker's resident memory while all wait.
//!
//! RabbitMQ's delayed-message plugin is the peer where it is installed; it is not packaged
//! in Debian (see docs/benchmarks.md).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use crate::report::Report;

#[derive(clap::Args)]
pub struct DelayArgs {
    /// Broker to measure.
    #[arg(
        long,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        env = "SLUICE_AMQP_URL"
    )]
    url: String,
    /// Messages, all due at the same instant.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// When they are due, in seconds after the run starts (publishing must finish first).
    #[arg(long, default_value_t = 90)]
    due_in_secs: u64,
    /// Publisher connections.
    #[arg(long, default_value_t = 2)]
    publishers: u32,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Spread the due times over this many seconds after `--due-in-secs` instead of one
    /// instant (e.g. 31536000: a year): then only the broker's memory with everything
    /// scheduled is measured, not the release, and the queue is left in place.
    #[arg(long, default_value_t = 0)]
    spread_secs: u64,
    /// Pid of the broker, for its resident memory while the messages wait.
    #[arg(long)]
    broker_pid: Option<u32>,
}

fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(args: &DelayArgs) -> Result<Report> {
    if args.publishers == 0 || args.count == 0 {
        bail!("--publishers and --count must be at least 1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run_async(args))
}

async fn connect(url: &str) -> Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .context("no AMQP broker answered")
}

/// The run's `x-delayed-message` exchange (routing as direct) and its queue, both `name`.
async fn declare(ch: &lapin::Channel, name: &str) -> Result<()> {
    let mut xargs = FieldTable::default();
    xargs.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString("direct".into()),
    );
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions::default(),
        xargs,
    )
    .await
    .context("declaring an x-delayed-message exchange (is the delayed-message plugin on?)")?;
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        name.into(),
        name.into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Publishes `--count` messages due at `due` (spread over `--spread-secs` after it);
/// returns the seconds it took.
async fn publish_all(args: &DelayArgs, name: &str, due: i64) -> Result<f64> {
    // Publishers: every message due at `due`.
    let started = Instant::now();
    let body = vec![b'x'; args.size];
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let per = args.count / u64::from(args.publishers)
            + u64::from(u64::from(p) < args.count % u64::from(args.publishers));
        let (url, name, body) = (args.url.clone(), name.to_string(), body.clone());
        let spread_ms = args.spread_secs as i64 * 1000;
        tasks.push(tokio::spawn(async move {
            let conn = connect(&url).await?;
            let ch = conn.create_channel().await?;
            for i in 0..per {
                // Spread: a scrambled point of the span (i × a large prime, mod the span).
                let offset = match spread_ms {
                    0 => 0,
                    span => (i as i64).wrapping_mul(2_654_435_761).rem_euclid(span),
                };
                let mut headers = FieldTable::default();
                headers.insert(
                    "x-delay".into(),
                    AMQPValue::LongLongInt((due + offset - epoch_ms()).max(1)),
                );
                ch.basic_publish(
                    name.as_str().into(),
                    "k".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_headers(headers),
                )
                .await?;
            }
            // A round trip: everything before it was handled.
            ch.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
            conn.close(200, "done".into()).await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn run_async(args: &DelayArgs) -> Result<Report> {
    let name = format!("bench-delay-{}", epoch_ms());
    let setup = connect(&args.url).await?;
    let ch = setup.create_channel().await?;
    declare(&ch, &name).await?;
    // Due on a whole second, `due_in_secs` from now.
    let due = (epoch_ms() + args.due_in_secs as i64 * 1000) / 1000 * 1000;

    let publish_secs = publish_all(args, &name, due).await?;
    let published_at = epoch_ms();
    if published_at >= due {
        bail!("publishing took {publish_secs:.1} s, past the due time: raise --due-in-secs");
    }
    if args.spread_secs > 0 {
        // Memory only: everything waits, spread over the span.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut r = Report::new("delay");
        r.setting("count", args.count);
        r.setting("spread_secs", args.spread_secs);
        r.figure("publish rate", args.count as f64 / publish_secs, "msgs/s");
        if let Some(rss) = args.broker_pid.and_then(rss_bytes) {
            r.figure("broker RSS while all wait", rss as f64 / 1048576.0, "MiB");
        }
        // Kept, so a plain publish can be measured beside them (delete `bench-delay-*`
        // afterwards).
        r.setting("queue", name);
        return Ok(r);
    }
    // Everything is scheduled now: nothing may be ready before the due time.
    tokio::time::sleep(Duration::from_millis(
        ((due - published_at) / 2).max(0) as u64
    ))
    .await;
    let rss_waiting = args.broker_pid.and_then(rss_bytes);
    let ready = |ch: lapin::Channel, name: String| async move {
        let q = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        anyhow::Ok(u64::from(q.message_count()))
    };
    let ready_before = ready(ch.clone(), name.clone()).await?;
    while epoch_ms() < due - 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_at_due = ready(ch.clone(), name.clone()).await?;
    // Then how many are visible (ready), polled every few ms, until all are.
    let mut visible = Histogram::<u64>::new(3)?;
    let mut seen = 0u64;
    let deadline = due + 120_000;
    while seen < args.count {
        if epoch_ms() > deadline {
            bail!(
                "only {seen} of {} visible 120 s after their due time",
                args.count
            );
        }
        let now = ready(ch.clone(), name.clone()).await?;
        let late_us = (epoch_ms() - due).max(0) as u64 * 1000;
        if now > seen {
            visible.record_n(late_us, now - seen)?;
            seen = now;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let mut r = Report::new("delay");
    r.setting("count", args.count);
    r.setting("publishers", args.publishers);
    r.setting("message_bytes", args.size as u64);
    r.setting("due_in_secs", args.due_in_secs);
    r.figure("publish rate", args.count as f64 / publish_secs, "msgs/s");
    r.figure("ready before the due time", ready_before as f64, "msgs");
    r.figure(
        "ready 20 ms before the due time",
        ready_at_due as f64,
        "msgs",
    );
    r.latency("visible after due", &visible);
    if let Some(rss) = rss_waiting {
        r.figure("broker RSS while all wait", rss as f64 / 1048576.0, "MiB");
    }
    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await?;
    ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    Ok(r)
}
