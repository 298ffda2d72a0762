//! `Broker`: the core every front door talks to. Owns the topic table, the metadata store,
//! the committed offsets and the store handle. Its API speaks domain types only; the
//! semantics of one protocol (Kafka's groups, idempotence, transactions) live above it and
//! plug in through [`PartitionHooks`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use common::{Clock, Offset, PartitionId};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use storage::Store;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::hooks::PartitionHooks;
use crate::metadata::{LocalMetadataLog, MetaRecord, MetadataStore};
use crate::metrics::BrokerMetrics;
use crate::offsets::OffsetStore;
use crate::topic_config::TopicConfig;
use crate::topics::{Topic, TopicRegistry};

/// Numbers for the health endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct HealthInfo {
    pub node_id: i32,
    pub topics: usize,
    pub partitions: u32,
    /// Groups holding committed offsets.
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
    pub(crate) offsets: Mutex<OffsetStore>,
    pub(crate) metrics: BrokerMetrics,
    /// One append lock per partition: appends that run hooks, and writers of control
    /// batches, serialise on it (plain appends do not need it).
    append_locks: Mutex<HashMap<PartitionId, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) hooks: OnceLock<Arc<dyn PartitionHooks>>,
    /// Open queues (`queue/`).
    pub(crate) queues: crate::queue::QueueRegistry,
    pub(crate) shutting_down: AtomicBool,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
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
    /// the store and restores committed offsets.
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
        let image = meta.image();
        for t in image.topics.values() {
            let tc = match TopicConfig::resolve(&config, &t.configs) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(topic = %t.name, error = %e, "stored topic config invalid; using defaults");
                    TopicConfig::resolve(&config, &Default::default())?
                }
            };
            let partitions: Vec<PartitionId> =
                t.partitions.iter().map(|p| PartitionId(*p)).collect();
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
        let offsets = OffsetStore::from_image(image);
        let queue_records = image.queues.clone();
        let state_partitions = crate::queue::QueueRegistry::state_partitions(&queue_records);
        let orphans = orphan_partitions(&store, &registry, &state_partitions, &config)?;
        // Never hand out an id the store already holds.
        if let Some(max) = store.partitions().iter().map(|p| p.0).max() {
            registry.next_partition_id = registry.next_partition_id.max(max + 1);
        }
        metrics.topics.set(registry.by_name.len() as i64);
        metrics.partitions.set(i64::from(registry.partition_count));
        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        let broker = Arc::new(Broker {
            store,
            clock,
            topics: RwLock::new(registry),
            meta: Mutex::new(meta),
            meta_fails: AtomicBool::new(false),
            offsets: Mutex::new(offsets),
            metrics,
            append_locks: Mutex::new(HashMap::new()),
            hooks: OnceLock::new(),
            queues: crate::queue::QueueRegistry::default(),
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            config,
        });
        for p in orphans {
            broker.adopt_orphan(p)?;
        }
        broker.open_queues(&queue_records)?;
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    /// The storage engine (for tests and the binary's storage statistics; front doors go
    /// through the broker's API).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The clock the broker reads (layers above take time from it too).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
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
            groups: self.metrics.groups.get() as usize,
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

    /// Whether changes that follow data (committed offsets, a coordinator's state) are
    /// fsynced before they are acknowledged: under `flush = sync`, as data is.
    pub fn metadata_durable(&self) -> bool {
        self.config.default_flush == storage::Flush::Sync
    }

    /// Metadata appends fsynced so far.
    pub fn metadata_durable_appends(&self) -> u64 {
        self.meta.lock().durable_appends()
    }

    /// Saves one entry of a layer above the core (`value: None` removes it); an error
    /// means nothing was saved.
    pub fn persist_extension(
        &self,
        namespace: &str,
        key: &str,
        value: Option<serde_json::Value>,
        durable: bool,
    ) -> Result<()> {
        let record = MetaRecord::Extension {
            namespace: namespace.to_string(),
            key: key.to_string(),
            value,
        };
        self.persist(record, durable)
    }

    /// The saved entries of one extension namespace (read when a layer above opens).
    pub fn extension_entries(&self, namespace: &str) -> Vec<(String, serde_json::Value)> {
        self.meta
            .lock()
            .image()
            .extension(namespace)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Installs the layer that checks and follows appends of Kafka-format producer batches
    /// (see [`PartitionHooks`]). Once per broker; a second call is refused.
    pub fn set_partition_hooks(&self, hooks: Arc<dyn PartitionHooks>) -> Result<()> {
        self.hooks
            .set(hooks)
            .map_err(|_| BrokerError::InvalidConfig("partition hooks are already set".into()))
    }

    /// The append lock of partition `p` (see [`Broker::append_locked`]).
    pub fn append_lock(&self, p: PartitionId) -> Arc<tokio::sync::Mutex<()>> {
        self.append_locks.lock().entry(p).or_default().clone()
    }

    /// Appends `batches` to partition `p` as they are (no client checks, no hooks):
    /// for a layer above that writes its own batches (transaction markers) while holding
    /// [`Broker::append_lock`]. Waits for durability as the partition's flush policy says.
    pub async fn append_locked(&self, p: PartitionId, batches: bytes::BytesMut) -> Result<Offset> {
        Ok(self.store.append(p, batches).await?.base_offset)
    }

    /// Every partition: (topic, index, id).
    pub fn all_partitions(&self) -> Vec<(String, i32, PartitionId)> {
        self.topics
            .read()
            .by_name
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (t.name.clone(), i as i32, *p))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Log start and end of partition `p`.
    pub fn partition_watermarks(&self, p: PartitionId) -> Result<crate::Watermarks> {
        let o = self.store.offsets(p)?;
        Ok(crate::Watermarks {
            log_start: o.log_start,
            high_watermark: o.log_end,
        })
    }

    /// Calls `f` with the header of every batch of partition `p` from the one holding
    /// `from` up to `to` (rebuilding state derived from the log); returns how many.
    pub fn for_each_batch(
        &self,
        p: PartitionId,
        from: Offset,
        to: Offset,
        f: impl FnMut(&storage::batch::BatchHeader<'_>),
    ) -> Result<usize> {
        crate::log_scan::for_each_batch(&self.store, p, from, to, f)
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
        self.refresh_queue_gauges();
    }

    /// A receiver that flips to true when shutdown starts (long polls return early).
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Compacts the metadata and closes the store. Idempotent. Layers above shut down
    /// first (their state snapshots read the store).
    pub async fn shutdown(&self) -> Result<()> {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let _ = self.shutdown_tx.send(true);
        self.meta.lock().compact()?;
        self.store.close()?;
        Ok(())
    }
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
    queue_state: &[PartitionId],
    config: &BrokerConfig,
) -> Result<Vec<common::PartitionId>> {
    let known: std::collections::HashSet<common::PartitionId> = registry
        .by_name
        .values()
        .flat_map(|t| t.partitions.iter().copied())
        .chain(queue_state.iter().copied())
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
