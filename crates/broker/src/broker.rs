//! `Broker`: the core every front door talks to. Owns the topic table, the metadata log,
//! the group coordinator and the store handle. Its API speaks domain types only.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use common::Clock;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use storage::Store;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::group::{CoordinatorConfig, GroupCoordinator};
use crate::groups::GroupsCell;
use crate::metadata::{LocalMetadataLog, MetaRecord, MetadataStore};
use crate::metrics::BrokerMetrics;
use crate::producer_state::ProducerStateTable;
use crate::topic_config::TopicConfig;
use crate::topics::{Topic, TopicRegistry};
use crate::txn::coordinator::TxnCoordinator;
use crate::txn::partition_txns::PartitionTxnIndex;

/// How often the group coordinator's timers (sessions, rebalance deadlines) are checked.
pub const GROUP_TICK_MS: u64 = 100;
/// How often idempotent-producer state is snapshotted (bounds the log scan after a crash).
pub const PRODUCER_SNAPSHOT_INTERVAL_MS: u64 = 30_000;
/// How long shutdown waits for each timer task to stop.
const SHUTDOWN_TASK_WAIT: Duration = Duration::from_secs(5);
/// Producer ids reserved per metadata record.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Numbers for the health endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct HealthInfo {
    pub node_id: i32,
    pub topics: usize,
    pub partitions: u32,
    pub groups: usize,
    /// Damaged batches met while serving, described (never served; the broker is
    /// degraded).
    pub damage: Vec<String>,
}

pub struct Broker {
    pub(crate) store: Arc<Store>,
    pub(crate) config: BrokerConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) topics: RwLock<TopicRegistry>,
    /// Every metadata change goes through here: record → persist → apply.
    pub(crate) meta: Mutex<Box<dyn MetadataStore>>,
    /// Test hook: metadata appends fail while set (`inject_metadata_failure`).
    meta_fails: AtomicBool,
    pub(crate) groups: GroupsCell,
    pub(crate) metrics: BrokerMetrics,
    next_producer_id: AtomicI64,
    reserved_producer_id: AtomicI64,
    pub(crate) producers: ProducerStateTable,
    pub(crate) txns: Mutex<TxnCoordinator>,
    pub(crate) txn_index: PartitionTxnIndex,
    pub(crate) shutting_down: AtomicBool,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    /// Timer tasks; `shutdown` waits for them so none still holds the broker (and its
    /// store's directory lock) when shutdown returns.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Loads the metadata image from `config.data_dir/meta`, configures every partition in
    /// the store, restores groups and committed offsets, and (inside a tokio runtime)
    /// starts the group timer task.
    pub fn open(
        store: Arc<Store>,
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Broker>> {
        let meta: Box<dyn MetadataStore> = Box::new(LocalMetadataLog::open(
            &config.data_dir.join("meta"),
            config.metadata_snapshot_every,
        )?);
        let metrics = BrokerMetrics::new();
        let mut registry = TopicRegistry::default();
        let image = meta.image().clone();
        for t in image.topics.values() {
            let tc = match TopicConfig::resolve(&config, &t.configs) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(topic = %t.name, error = %e, "stored topic config invalid; using defaults");
                    TopicConfig::resolve(&config, &Default::default())?
                }
            };
            let partitions: Vec<common::PartitionId> = t
                .partitions
                .iter()
                .map(|p| common::PartitionId(*p))
                .collect();
            for p in &partitions {
                store.configure_partition(*p, tc.partition_config())?;
            }
            registry.insert(Topic {
                name: t.name.clone(),
                topic_id: t.topic_id,
                partitions,
                overrides: t.configs.clone(),
                config: tc,
                counters: metrics.topic_counters(&t.name),
            });
        }
        registry.next_partition_id = registry.next_partition_id.max(image.next_partition_id);
        let orphans = orphan_partitions(&store, &registry, &config)?;
        // Never hand out an id the store already holds.
        if let Some(max) = store.partitions().iter().map(|p| p.0).max() {
            registry.next_partition_id = registry.next_partition_id.max(max + 1);
        }
        let mut coordinator = GroupCoordinator::new(CoordinatorConfig {
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            max_members_per_group: config.group_max_size,
            ..CoordinatorConfig::default()
        });
        for g in image.groups.values() {
            coordinator.restore_group(
                &g.group_id,
                g.generation_id,
                g.protocol_type.clone(),
                g.offsets
                    .iter()
                    .map(|(t, p, o)| ((t.clone(), *p), o.clone())),
            );
        }
        metrics.topics.set(registry.by_name.len() as i64);
        metrics.partitions.set(i64::from(registry.partition_count));
        metrics.groups.set(coordinator.group_count() as i64);
        let next_pid = image.next_producer_id.max(1);
        let producers = ProducerStateTable::new(
            &config.data_dir.join("meta"),
            config.producer_id_expiration_ms,
        );
        let all_partitions: Vec<common::PartitionId> = registry
            .by_name
            .values()
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        producers.rebuild(&store, &all_partitions, clock.now_ms())?;
        let txn_index = PartitionTxnIndex::new(&config.data_dir.join("meta"));
        txn_index.rebuild(&store, &all_partitions)?;
        let mut txns = TxnCoordinator::new();
        txns.restore(image.transactions.values().cloned());
        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        let broker = Arc::new(Broker {
            store,
            clock,
            topics: RwLock::new(registry),
            meta: Mutex::new(meta),
            meta_fails: AtomicBool::new(false),
            groups: GroupsCell::new(coordinator),
            metrics,
            next_producer_id: AtomicI64::new(next_pid),
            reserved_producer_id: AtomicI64::new(next_pid),
            producers,
            txns: Mutex::new(txns),
            txn_index,
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            background: Mutex::new(Vec::new()),
            config,
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let tasks = vec![
                handle.spawn(group_timer(
                    Arc::downgrade(&broker),
                    broker.shutdown_tx.subscribe(),
                )),
                handle.spawn(producer_snapshot_timer(
                    Arc::downgrade(&broker),
                    broker.shutdown_tx.subscribe(),
                )),
                handle.spawn(crate::txn::txn_timer(
                    Arc::downgrade(&broker),
                    broker.shutdown_tx.subscribe(),
                )),
            ];
            *broker.background.lock() = tasks;
        }
        for p in orphans {
            broker.adopt_orphan(p)?;
        }
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn cluster_id(&self) -> &str {
        &self.config.cluster_id
    }

    pub fn health(&self) -> HealthInfo {
        let topics = self.topics.read();
        HealthInfo {
            node_id: self.config.node_id,
            topics: topics.by_name.len(),
            partitions: topics.partition_count,
            groups: self.groups.lock().coordinator.group_count(),
            damage: self.store.damage().iter().map(|d| d.to_string()).collect(),
        }
    }

    /// Test hook: while `on`, every metadata append fails (as a failing disk would).
    #[doc(hidden)]
    pub fn inject_metadata_failure(&self, on: bool) {
        self.meta_fails.store(on, Ordering::SeqCst);
    }

    /// Appends a metadata record; errors are logged and returned.
    pub(crate) fn persist(&self, r: MetaRecord, durable: bool) -> Result<()> {
        let res = if self.meta_fails.load(Ordering::SeqCst) {
            Err(BrokerError::Metadata(
                "metadata append: injected failure (test hook)".into(),
            ))
        } else {
            self.meta.lock().append(r, durable)
        };
        if let Err(e) = &res {
            tracing::error!(error = %e, "metadata log append failed");
        }
        res
    }

    /// InitProducerId: a fresh producer id (epoch 0). Ids are reserved in blocks in the
    /// metadata log so they are never reused after a restart.
    pub fn init_producer_id(&self) -> Result<(i64, i16)> {
        let id = self.next_producer_id.fetch_add(1, Ordering::SeqCst);
        if id >= self.reserved_producer_id.load(Ordering::SeqCst) {
            let next = id + PRODUCER_ID_BLOCK;
            self.persist(
                MetaRecord::ProducerIdsReserved {
                    next_producer_id: next,
                },
                true,
            )?;
            self.reserved_producer_id.fetch_max(next, Ordering::SeqCst);
        }
        Ok((id, 0))
    }

    /// Recomputes scrape-time gauges (group lag, counts).
    pub fn refresh_gauges(&self) {
        let lags = self.group_lags();
        self.metrics.group_lag.clear();
        for (g, t, p, lag) in lags {
            let l = vec![
                ("group".to_string(), g),
                ("topic".to_string(), t),
                ("partition".to_string(), p.to_string()),
            ];
            self.metrics.group_lag.get_or_create(&l).set(lag);
        }
        let topics = self.topics.read();
        self.metrics.topics.set(topics.by_name.len() as i64);
        self.metrics
            .partitions
            .set(i64::from(topics.partition_count));
        drop(topics);
        self.metrics
            .groups
            .set(self.groups.lock().coordinator.group_count() as i64);
    }

    /// A receiver that flips to true when shutdown starts (long polls return early).
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Persists group state and closes the store. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.shutdown_tx.send(true);
        self.groups.fail_all_waiters();
        let tasks = std::mem::take(&mut *self.background.lock());
        for task in tasks {
            // A timer mid-tick finishes that tick, then sees the signal and returns.
            if tokio::time::timeout(SHUTDOWN_TASK_WAIT, task)
                .await
                .is_err()
            {
                tracing::warn!("a broker timer task did not stop within {SHUTDOWN_TASK_WAIT:?}");
            }
        }
        self.meta.lock().compact()?;
        if let Err(e) = self.snapshot_producers() {
            tracing::warn!(error = %e, "producer state snapshot failed at shutdown");
        }
        self.store.close()?;
        Ok(())
    }
}

impl Broker {
    /// Snapshots idempotent-producer state (after expiring idle producers).
    pub(crate) fn snapshot_producers(&self) -> Result<()> {
        self.producers.expire(self.clock.now_ms());
        // Log ends first: the snapshot must not claim appends whose state it lacks.
        let partitions: Vec<common::PartitionId> = self
            .topics
            .read()
            .by_name
            .values()
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        let mut ends = Vec::with_capacity(partitions.len());
        let mut txn_ends = Vec::with_capacity(partitions.len());
        for p in partitions {
            if let Ok(o) = self.store.offsets(p) {
                ends.push((p, o.log_end));
                txn_ends.push((p, o.log_start, o.log_end));
            }
        }
        self.txn_index.snapshot(&txn_ends)?;
        self.producers.snapshot(&ends)
    }
}

/// Runs `tick` every `period` until shutdown starts or the broker is dropped. The broker is
/// held only while a tick runs, so a timer never keeps it alive.
pub(crate) async fn every<F, Fut>(
    broker: Weak<Broker>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    period: Duration,
    tick: F,
) where
    F: Fn(Arc<Broker>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(b) = broker.upgrade() else { return };
        if b.is_shutting_down() {
            return;
        }
        tick(b).await;
    }
}

async fn producer_snapshot_timer(
    broker: Weak<Broker>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let period = Duration::from_millis(PRODUCER_SNAPSHOT_INTERVAL_MS);
    every(broker, shutdown, period, |b| async move {
        if let Err(e) = b.snapshot_producers() {
            tracing::warn!(error = %e, "producer state snapshot failed");
        }
    })
    .await;
}

async fn group_timer(broker: Weak<Broker>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_millis(GROUP_TICK_MS);
    every(broker, shutdown, period, |b| async move { b.tick_groups() }).await;
}

impl From<BrokerError> for std::io::Error {
    fn from(e: BrokerError) -> Self {
        std::io::Error::other(e.to_string())
    }
}

/// Store partitions no topic names. Empty ones are leftovers of a topic creation that did
/// not finish (the store is configured before the metadata record is written): deleted.
/// Ones holding records mean the metadata lost topics (a deleted or damaged
/// `meta/snapshot.json` or `meta/metadata.log`): refused, unless the config says to adopt
/// them (returned).
fn orphan_partitions(
    store: &Store,
    registry: &TopicRegistry,
    config: &BrokerConfig,
) -> Result<Vec<common::PartitionId>> {
    let known: std::collections::HashSet<common::PartitionId> = registry
        .by_name
        .values()
        .flat_map(|t| t.partitions.iter().copied())
        .collect();
    let mut with_data = Vec::new();
    let mut records = 0i64;
    for p in store.partitions() {
        if known.contains(&p) {
            continue;
        }
        let o = store.offsets(p)?;
        if o.log_end == 0 {
            tracing::info!(partition = %p, "removing an empty partition no topic names");
            store.delete_partition(p)?;
        } else {
            records += o.log_end - o.log_start;
            with_data.push(p);
        }
    }
    if with_data.is_empty() || config.recover_orphan_partitions {
        return Ok(with_data);
    }
    let ids: Vec<String> = with_data.iter().map(|p| p.0.to_string()).collect();
    Err(BrokerError::Metadata(format!(
        "the metadata in {} names no topic for store partitions [{}], which hold {records} \
         records: meta/snapshot.json or meta/metadata.log was deleted or damaged. Refusing to \
         start (topics would be missing and their ids reused). Restore the meta directory, or \
         run `sluice storage repair --data-dir <dir>` to recover each partition as a topic \
         named recovered-<partition id>.",
        config.data_dir.join("meta").display(),
        ids.join(", ")
    )))
}
