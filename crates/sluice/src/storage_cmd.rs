//! `sluice storage check|repair`: offline tools for a data directory whose files are damaged
//! in a way a crash cannot explain (the server refuses to start on those and names this
//! command). Both take the data directory's lock, so they never run beside a live server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::args::{ServerArgs, StorageArgs, StorageCommand};
use crate::cli::exit::{EXIT_DAMAGED, usage};
use crate::outln as out;

pub async fn run(cmd: StorageCommand) -> anyhow::Result<i32> {
    match cmd {
        StorageCommand::Check(args) => check(&args),
        StorageCommand::Repair { args, skip_damaged } => repair(&args, skip_damaged).await,
    }
}

/// The server configuration the data directory was written with.
fn server_config(args: &StorageArgs) -> anyhow::Result<crate::config::Layered> {
    let server_args = ServerArgs {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..ServerArgs::default()
    };
    crate::server::load_config(&server_args)
}

fn store_config(
    cfg: &crate::config::Layered,
    data_dir: &std::path::Path,
    mode: storage::OpenMode,
) -> storage::StoreConfig {
    let mut c = storage::StoreConfig::from_settings(cfg, data_dir.join("store"));
    c.background = false;
    c.open_mode = mode;
    c
}

fn locked_dir(cfg: &crate::config::Layered) -> anyhow::Result<(PathBuf, impl Sized)> {
    let data_dir = cfg.server_config().data_dir;
    let dir = std::fs::canonicalize(&data_dir)
        .with_context(|| format!("no data directory at {}", data_dir.display()))?;
    // Never create a store while checking for one.
    if !dir.join("store").join("FORMAT").exists() {
        return Err(usage(format!(
            "no Sluice store in {} (expected {})",
            dir.display(),
            dir.join("store").display()
        )));
    }
    let lock = crate::data_dir_lock::DataDirLock::acquire(&dir)
        .map_err(|e| usage(format!("{e:#} (stop the server first)")))?;
    Ok((dir, lock))
}

fn print_report(r: &storage::CheckReport) {
    out!("batches checked: {}", r.batches_checked);
    for f in &r.findings {
        out!("damaged file: {f}");
    }
    for d in &r.damaged {
        out!("damaged batch: {d}");
    }
    for (p, n) in &r.queues_to_rebuild {
        out!(
            "consume queue of partition {} unreadable: {n} batches rebuildable from the commit log",
            p.0
        );
    }
    for (p, a, z) in &r.lost {
        out!("lost: partition {} offsets {a}..={z}", p.0);
    }
    for (p, a, z) in &r.skipped {
        out!(
            "skipped earlier by a repair: partition {} offsets {a}..={z}",
            p.0
        );
    }
}

fn check(args: &StorageArgs) -> anyhow::Result<i32> {
    let cfg = server_config(args)?;
    let (dir, _lock) = locked_dir(&cfg)?;
    let store = storage::Store::open(store_config(&cfg, &dir, storage::OpenMode::Check))
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let report = store.check()?;
    print_report(&report);
    if report.is_clean() {
        out!("clean: nothing damaged");
        return Ok(0);
    }
    out!("damage found: `sluice storage repair` rebuilds what the commit log still holds");
    Ok(EXIT_DAMAGED)
}

async fn repair(args: &StorageArgs, skip_damaged: bool) -> anyhow::Result<i32> {
    let cfg = server_config(args)?;
    let (dir, _lock) = locked_dir(&cfg)?;
    let store = Arc::new(
        storage::Store::open(store_config(&cfg, &dir, storage::OpenMode::Repair))
            .with_context(|| format!("cannot open the store in {}", dir.display()))?,
    );
    let report = match store.repair(skip_damaged) {
        Ok(r) => r,
        Err(storage::StorageError::Damaged(msg)) => {
            out!("{msg}");
            return Ok(EXIT_DAMAGED);
        }
        Err(e) => return Err(e.into()),
    };
    print_report(&report);
    // Metadata: partitions holding records that no topic names become recovered-<id>.
    let broker_cfg = broker::BrokerConfig {
        recover_orphan_partitions: true,
        ..broker::BrokerConfig::from_settings(&cfg, &dir)
    };
    let clock: Arc<dyn common::Clock> = Arc::new(common::SystemClock);
    let broker = broker::Broker::open(store.clone(), broker_cfg, clock)
        .context("cannot open the broker's metadata")?;
    let recovered: Vec<String> = broker
        .list_topics()
        .into_iter()
        .map(|t| t.name)
        .filter(|t| t.starts_with("recovered-"))
        .collect();
    for t in &recovered {
        out!("metadata: topic {t} holds a partition no topic named");
    }
    broker.shutdown().await?;
    out!(
        "repaired: {} damaged batches given up, {} consume queues rebuilt",
        report.damaged.len(),
        report.queues_to_rebuild.len()
    );
    Ok(0)
}
