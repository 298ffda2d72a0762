//! `sluice server`: load the configuration, open the store and the broker, bind the Kafka and
//! admin listeners, and run until SIGINT/SIGTERM.
//!
//! Shutdown order (first signal): stop accepting and let in-flight requests finish (the Kafka
//! front door watches the shutdown channel), then `broker.shutdown()` persists group state
//! and closes the store (flush + checkpoints), then exit 0. A second signal exits at once
//! with 130; the store recovers on the next start like after a crash.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::args::ServerArgs;
use crate::cli::exit::{EXIT_SECOND_SIGNAL, usage};
use crate::config::{Layered, Sources};

/// Turns the dedicated flags and `--set` into `(key, value, origin)` overrides.
fn flag_overrides(args: &ServerArgs) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut add = |key: &str, value: &Option<String>, flag: &str| {
        if let Some(v) = value {
            out.push((key.to_string(), v.clone(), flag.to_string()));
        }
    };
    add("storage.dir", &args.data_dir, "--data-dir");
    add("kafka.listener", &args.kafka_listener, "--kafka-listener");
    add(
        "kafka.advertised_host",
        &args.advertised_host,
        "--advertised-host",
    );
    add(
        "kafka.advertised_port",
        &args.advertised_port,
        "--advertised-port",
    );
    add("amqp.listener", &args.amqp_listener, "--amqp-listener");
    add("admin.listener", &args.admin_listener, "--admin-listener");
    add("storage.flush", &args.flush, "--flush");
    add("log.format", &args.log_format, "--log-format");
    add("log.level", &args.log_level, "--log-level");
    for s in &args.set {
        let Some((k, v)) = s.split_once('=') else {
            return Err(usage(format!(
                "--set `{s}` must look like key=value, e.g. --set storage.flush=sync"
            )));
        };
        out.push((
            k.trim().to_string(),
            v.trim().to_string(),
            format!("--set {}", k.trim()),
        ));
    }
    Ok(out)
}

pub fn load_config(args: &ServerArgs) -> anyhow::Result<Layered> {
    let flags = flag_overrides(args)?;
    let env = |k: &str| std::env::var(k).ok();
    Ok(Layered::load(&Sources {
        file: args.config.as_deref(),
        env: &env,
        flags,
    })?)
}

pub(crate) async fn bind(addr: &str, what: &str, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                " — another process (another sluice, or Kafka) uses it; pick a free address with {key}"
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot listen for {what} on {addr}: {e}{hint}")
    })
}

pub async fn run(args: ServerArgs) -> anyhow::Result<i32> {
    let layered = load_config(&args)?;
    if args.print_config {
        crate::out!("{}", layered.to_toml());
        return Ok(0);
    }
    let cfg = layered.server_config();
    crate::logging::init(cfg.log_json, &cfg.log_level).map_err(|e| usage(format!("{e:#}")))?;
    // Installed first, so a signal during start-up is seen (it triggers shutdown right after).
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;

    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let data_dir: PathBuf = std::fs::canonicalize(&cfg.data_dir).unwrap_or(cfg.data_dir.clone());
    let _lock = crate::data_dir_lock::DataDirLock::acquire(&data_dir)
        .map_err(|e| usage(format!("{e:#}")))?;

    let store = open_store(&layered, &data_dir)?;
    let clock: Arc<dyn common::Clock> = Arc::new(common::SystemClock);
    let broker_config = broker::BrokerConfig {
        flush_interval_ms: store.config().flush_interval_ms,
        ..broker::BrokerConfig::from_settings(&layered, &data_dir)
    };
    let broker = broker::Broker::open(store.clone(), broker_config, clock)
        .context("cannot open the broker")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut doors = match crate::doors::start(
        crate::doors::configured(&layered, &cfg),
        &broker,
        &shutdown_rx,
    )
    .await
    {
        Ok(d) => d,
        Err(e) => {
            let _ = shutdown_tx.send(true);
            let _ = broker.shutdown().await;
            return Err(usage(format!("{e:#}")));
        }
    };

    let admin = if cfg.admin_enabled {
        let listener = match bind(&cfg.admin_listener, "admin HTTP", "--admin-listener").await {
            Ok(l) => l,
            Err(e) => {
                let _ = shutdown_tx.send(true);
                doors.stop(Duration::from_secs(2)).await;
                let _ = broker.shutdown().await;
                return Err(usage(format!("{e:#}")));
            }
        };
        let listeners = admin::Listeners {
            doors: doors.listeners.clone(),
            admin: listener.local_addr()?,
        };
        let mut server = admin::AdminServer::new(broker.clone(), data_dir.clone(), listeners)
            .with_storage_sampler(storage_sampler(store.clone()));
        if let Some(amqp) = doors.amqp.clone() {
            server = server.with_amqp(amqp);
        }
        Some(spawn_admin(listener, server, shutdown_rx.clone())?)
    } else {
        None
    };

    announce(
        broker.config().default_flush,
        &data_dir,
        &doors.listeners,
        admin.as_ref().map(|a| a.0),
    );

    let reason = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        e = doors.stopped() => {
            let _ = shutdown_tx.send(true);
            let _ = broker.shutdown().await;
            return Err(e);
        }
    };
    tracing::info!(
        signal = reason,
        "shutting down: no new connections, finishing in-flight requests (signal again to exit at once)"
    );
    // A second signal: leave now; the store recovers like after a crash.
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        eprintln!("second signal: exiting without finishing shutdown");
        std::process::exit(EXIT_SECOND_SIGNAL);
    });
    let _ = shutdown_tx.send(true);
    doors
        .stop(Duration::from_millis(cfg.shutdown_timeout_ms))
        .await;
    broker
        .shutdown()
        .await
        .context("flushing the store on shutdown")?;
    if let Some((_, task)) = admin {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    tracing::info!("shutdown complete; data flushed");
    Ok(0)
}

fn announce(
    flush: storage::Flush,
    data_dir: &Path,
    doors: &[admin::DoorListener],
    admin_addr: Option<SocketAddr>,
) {
    let admin = match admin_addr {
        Some(a) => format!("http://{a} (/metrics, /health, /api)"),
        None => "disabled".to_string(),
    };
    let listeners: Vec<String> = doors
        .iter()
        .map(|d| format!("{}={}", d.protocol, d.address))
        .collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listeners = %listeners.join(","),
        admin,
        data_dir = %data_dir.display(),
        flush = match flush {
            storage::Flush::Sync => "sync",
            storage::Flush::Async => "async",
        },
        "sluice server ready"
    );
    // The banner goes to stdout whatever the log format (logs go to stderr). A closed
    // stdout must not stop a server, so write errors are ignored. One line per door:
    // `  <protocol>  <bound address>[ (clients connect to <advertised>)]`; test harnesses
    // read the bound ports from it.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "sluice {} ready", env!("CARGO_PKG_VERSION"));
    for d in doors {
        let _ = match &d.advertised {
            Some(a) => writeln!(
                out,
                "  {:<6} {} (clients connect to {a})",
                d.protocol, d.address
            ),
            None => writeln!(out, "  {:<6} {}", d.protocol, d.address),
        };
    }
    let _ = writeln!(out, "  admin  {admin}");
    let _ = writeln!(out, "  data   {}", data_dir.display());
    let _ = writeln!(out, "  press Ctrl-C to stop");
    let _ = out.flush();
}

/// The store under `<data dir>/store`, configured from the server config. A store damaged in
/// a way a crash cannot explain refuses to open with a message naming the files.
fn open_store(cfg: &Layered, data_dir: &Path) -> anyhow::Result<Arc<storage::Store>> {
    let store_config = storage::StoreConfig::from_settings(cfg, data_dir.join("store"));
    let store = storage::Store::open(store_config)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Serves the admin HTTP API until shutdown; its failure never stops the Kafka service.
fn spawn_admin(
    listener: TcpListener,
    server: admin::AdminServer,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = admin::serve(listener, server, shutdown).await {
            tracing::error!(error = %e, "admin HTTP server stopped; Kafka service continues");
        }
    });
    Ok((addr, task))
}

fn storage_sampler(store: Arc<storage::Store>) -> admin::StorageSampler {
    use admin::Sample;
    Arc::new(move || {
        let s = store.stats();
        vec![
            Sample::gauge(
                "sluice_storage_segments",
                "Commit-log segment files",
                s.segments as f64,
            ),
            Sample::gauge(
                "sluice_storage_bytes",
                "Bytes allocated on disk by commit-log segments",
                s.bytes_on_disk as f64,
            ),
            Sample::counter(
                "sluice_storage_cleaner_freed_bytes",
                "Commit-log bytes the cleaner freed in place (dead entries' blocks punched)",
                s.clean_bytes_freed as f64,
            ),
            Sample::gauge(
                "sluice_storage_partitions",
                "Partitions in the store",
                s.partitions as f64,
            ),
            Sample::gauge(
                "sluice_storage_open_queue_files",
                "Consume-queue and index files open now",
                s.open_queue_files as f64,
            ),
            Sample::gauge(
                "sluice_storage_unsynced_bytes",
                "Commit-log bytes written but not yet fsynced",
                s.write_position.saturating_sub(s.synced_position) as f64,
            ),
            Sample::counter(
                "sluice_storage_fsyncs",
                "fsync/fdatasync calls on the commit log",
                s.fsync_count as f64,
            ),
            Sample::counter(
                "sluice_storage_damaged_batches",
                "Damaged commit-log batches met while serving (never served; see /health)",
                s.damaged_batches as f64,
            ),
            Sample::summary(
                "sluice_storage_fsync_seconds",
                "Time spent in fsync/fdatasync of the commit log",
                s.fsync_total_micros as f64 / 1e6,
                s.fsync_count,
            ),
        ]
    })
}
