//! Kafka's semantics above the Sluice core: classic consumer groups, idempotent producers
//! and transactions. The core (`broker`) knows topics, partitions, appends, reads and
//! committed offsets; this crate adds what only Kafka clients need, and follows every
//! producer append through the core's [`broker::PartitionHooks`].
//!
//! Reading order:
//! - [`KafkaCoord`] (here) — what the Kafka door holds: open (state restored from the
//!   metadata store's `kafka.*` entries and rebuilt from the log), timers, shutdown.
//! - [`group`] — the classic group state machine (clock-free, unit tested); `groups.rs`
//!   wires it: parked JoinGroup/SyncGroup callers, generations saved before members learn
//!   them, commit checks here and offsets in the core's store.
//! - [`producer_state`] — idempotent producers: sequence checks, retries, snapshot + rebuild.
//! - [`txn`] — transactions: the coordinator, the partition index behind the last stable
//!   offset, the markers; `hooks.rs` — the append checks the core calls under the
//!   partition's append lock.
//! - [`CoordConfig`] (`config.rs`) — `groups.*` settings and their config keys.
//!
//! Invariants: every change to state a restart must see is saved (metadata extension entry,
//! core offset record) before a client learns of it; producer and transaction state derived
//! from the log is rebuilt from the log at open, so it never disagrees with what is stored.

mod config;
pub mod consumer_group;
mod derived;
mod error;
pub mod group;
mod groups;
mod hooks;
pub mod producer_state;
pub mod share_group;
pub mod txn;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use broker::Broker;
use broker::metadata::{KAFKA_GROUP_NS, KAFKA_PRODUCER_IDS_NS, KAFKA_TXN_NS, NEXT_PRODUCER_ID_KEY};
use parking_lot::Mutex;

pub use config::{CONFIG_KEYS, CoordConfig};
pub use error::{CoordError, Result};
pub use groups::{OffsetToCommit, share_member_key};

use group::{CoordinatorConfig, GroupCoordinator};
use groups::GroupsCell;
use producer_state::ProducerStateTable;
use txn::coordinator::{TxnCoordinator, TxnRecord};
use txn::partition_txns::PartitionTxnIndex;

/// How often the group coordinator's timers (sessions, rebalance deadlines) are checked.
pub const GROUP_TICK_MS: u64 = 100;
/// How often idempotent-producer state is snapshotted (bounds the log scan after a crash).
pub const PRODUCER_SNAPSHOT_INTERVAL_MS: u64 = 30_000;
/// How long shutdown waits for each timer task to stop.
const SHUTDOWN_TASK_WAIT: Duration = Duration::from_secs(5);
/// Producer ids reserved per metadata record.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Kafka's coordinators over one broker core.
pub struct KafkaCoord {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: CoordConfig,
    pub(crate) groups: GroupsCell,
    pub(crate) producers: Arc<ProducerStateTable>,
    pub(crate) txns: Arc<Mutex<TxnCoordinator>>,
    pub(crate) txn_index: Arc<PartitionTxnIndex>,
    next_producer_id: AtomicI64,
    reserved_producer_id: AtomicI64,
    shutting_down: AtomicBool,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    /// Timer tasks; `shutdown` waits for them.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for KafkaCoord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaCoord").finish_non_exhaustive()
    }
}

impl KafkaCoord {
    /// Restores groups, producer ids and transactions from the metadata store, rebuilds
    /// producer and transaction state from the log, installs the append hooks and (inside a
    /// tokio runtime) starts the timers.
    pub fn open(broker: Arc<Broker>, config: CoordConfig) -> Result<Arc<KafkaCoord>> {
        let mut coordinator = GroupCoordinator::new(CoordinatorConfig {
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
            max_members_per_group: config.group_max_size,
            ..CoordinatorConfig::default()
        });
        for group_id in broker.offset_groups() {
            coordinator.restore_group(&group_id, 0, None);
        }
        let now = broker.now_ms();
        for (group_id, v) in broker.extension_entries(KAFKA_GROUP_NS) {
            let generation = v["generation_id"].as_i64().unwrap_or(0);
            let protocol_type = v["protocol_type"].as_str().map(str::to_string);
            coordinator.restore_group(&group_id, generation as i32, protocol_type);
            // Static members (group.instance.id) carry on after a restart without a
            // rebalance; entries of earlier builds have none.
            let saved = serde_json::from_value(v["static_members"].clone()).unwrap_or_default();
            let protocol_name = v["protocol_name"].as_str().map(str::to_string);
            coordinator.restore_static_members(&group_id, protocol_name, saved, now);
        }
        broker
            .metrics()
            .groups
            .set(coordinator.group_count() as i64);
        let consumer_groups = broker.extension_entries(groups::KAFKA_CONSUMER_GROUP_NS);
        let next_pid = broker
            .extension_entries(KAFKA_PRODUCER_IDS_NS)
            .into_iter()
            .find(|(k, _)| k == NEXT_PRODUCER_ID_KEY)
            .and_then(|(_, v)| v.as_i64())
            .unwrap_or(0)
            .max(1);
        let meta_dir = broker.config().data_dir.join("meta");
        let producers = Arc::new(ProducerStateTable::new(
            &meta_dir,
            config.producer_id_expiration_ms,
        ));
        let partitions: Vec<common::PartitionId> = broker
            .all_partitions()
            .into_iter()
            .map(|(_, _, p)| p)
            .collect();
        producers.rebuild(&broker, &partitions, broker.now_ms())?;
        let txn_index = Arc::new(PartitionTxnIndex::new(&meta_dir));
        txn_index.rebuild(&broker, &partitions)?;
        let mut txns = TxnCoordinator::new();
        let mut records = Vec::new();
        for (id, v) in broker.extension_entries(KAFKA_TXN_NS) {
            match serde_json::from_value::<TxnRecord>(v) {
                Ok(r) => records.push(r),
                Err(e) => {
                    let msg = format!("transaction state of {id} is unreadable: {e}");
                    return Err(broker::BrokerError::Metadata(msg).into());
                }
            }
        }
        txns.restore(records);
        let txns = Arc::new(Mutex::new(txns));
        broker.set_partition_hooks(Arc::new(hooks::KafkaHooks {
            producers: producers.clone(),
            txns: txns.clone(),
            txn_index: txn_index.clone(),
            clock: broker.clock(),
        }))?;
        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        let consumer = consumer_group::ConsumerGroups::new(consumer_group::ConsumerGroupConfig {
            session_timeout_ms: config.consumer_session_timeout_ms,
            heartbeat_interval_ms: config.consumer_heartbeat_interval_ms,
            max_members: config.group_max_size,
            ..consumer_group::ConsumerGroupConfig::default()
        });
        let share = share_group::ShareGroups::new(share_group::ShareGroupConfig {
            session_timeout_ms: config.consumer_session_timeout_ms,
            heartbeat_interval_ms: config.consumer_heartbeat_interval_ms,
            record_lock_duration_ms: config.share_record_lock_duration_ms,
            delivery_count_limit: config.share_delivery_count_limit,
            start_earliest: config.share_start_earliest,
            ..share_group::ShareGroupConfig::default()
        });
        let coord = Arc::new(KafkaCoord {
            broker,
            config,
            groups: GroupsCell::new(coordinator, consumer, share),
            producers,
            txns,
            txn_index,
            next_producer_id: AtomicI64::new(next_pid),
            reserved_producer_id: AtomicI64::new(next_pid),
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            background: Mutex::new(Vec::new()),
        });
        for (_, v) in &consumer_groups {
            coord.restore_consumer_group(v);
        }
        coord.start_timers();
        Ok(coord)
    }

    fn start_timers(self: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let signal = || self.shutdown_tx.subscribe();
        let groups = every(weak.clone(), signal(), GROUP_TICK_MS, |c| async move {
            c.tick_groups()
        });
        let snapshots = every(
            weak.clone(),
            signal(),
            PRODUCER_SNAPSHOT_INTERVAL_MS,
            |c| async move {
                if let Err(e) = c.snapshot_producers() {
                    tracing::warn!(error = %e, "producer state snapshot failed");
                }
            },
        );
        let txns = txn::txn_timer(weak, signal());
        *self.background.lock() = vec![
            handle.spawn(groups),
            handle.spawn(snapshots),
            handle.spawn(txns),
        ];
    }

    /// The core this coordinator runs over.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.broker.now_ms()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst) || self.broker.is_shutting_down()
    }

    /// InitProducerId: a fresh producer id (epoch 0). Ids are reserved in blocks in the
    /// metadata store so they are never reused after a restart.
    pub fn init_producer_id(&self) -> Result<(i64, i16)> {
        let id = self.next_producer_id.fetch_add(1, Ordering::SeqCst);
        if id >= self.reserved_producer_id.load(Ordering::SeqCst) {
            let next = id + PRODUCER_ID_BLOCK;
            self.broker.persist_extension(
                KAFKA_PRODUCER_IDS_NS,
                NEXT_PRODUCER_ID_KEY,
                Some(next.into()),
                true,
            )?;
            self.reserved_producer_id.fetch_max(next, Ordering::SeqCst);
        }
        Ok((id, 0))
    }

    /// Kafka's broker-level settings for DescribeConfigs(BROKER) that are this crate's.
    pub fn describe_configs(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        vec![
            (
                "group.initial.rebalance.delay.ms",
                c.group_initial_rebalance_delay_ms.to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                c.group_min_session_timeout_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                c.group_max_session_timeout_ms.to_string(),
            ),
        ]
    }

    /// Snapshots idempotent-producer state and the transaction index (after expiring idle
    /// producers).
    pub(crate) fn snapshot_producers(&self) -> Result<()> {
        self.producers.expire(self.now_ms());
        // Log ends first: the snapshot must not claim appends whose state it lacks.
        let mut ends = Vec::new();
        let mut txn_ends = Vec::new();
        for (_, _, p) in self.broker.all_partitions() {
            if let Ok(o) = self.broker.partition_watermarks(p) {
                ends.push((p, o.high_watermark));
                txn_ends.push((p, o.log_start, o.high_watermark));
            }
        }
        self.txn_index.snapshot(&txn_ends)?;
        self.producers.snapshot(&ends)
    }

    /// Answers parked group members, stops the timers and snapshots producer state. Call
    /// before the broker's shutdown, once the Kafka door has stopped serving. Idempotent.
    pub async fn shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
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
                tracing::warn!(
                    "a Kafka coordinator timer did not stop within {SHUTDOWN_TASK_WAIT:?}"
                );
            }
        }
        if let Err(e) = self.snapshot_producers() {
            tracing::warn!(error = %e, "producer state snapshot failed at shutdown");
        }
    }
}

/// Runs `tick` every `period_ms` until shutdown starts or the coordinator is dropped. The
/// coordinator is held only while a tick runs, so a timer never keeps it alive.
pub(crate) async fn every<F, Fut>(
    coord: Weak<KafkaCoord>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    period_ms: u64,
    tick: F,
) where
    F: Fn(Arc<KafkaCoord>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(Duration::from_millis(period_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(c) = coord.upgrade() else { return };
        if c.is_shutting_down() {
            return;
        }
        tick(c).await;
    }
}

/// A broker over a fresh store in `dir`, for unit tests of state rebuilt from the log.
#[cfg(test)]
pub(crate) fn test_broker(dir: &std::path::Path) -> Arc<Broker> {
    let store = storage::Store::open(storage::StoreConfig::new(dir.join("store"))).unwrap();
    let config = broker::BrokerConfig {
        data_dir: dir.to_path_buf(),
        ..broker::BrokerConfig::default()
    };
    Broker::open(Arc::new(store), config, Arc::new(common::SystemClock)).unwrap()
}

/// Partition 0 of a new one-partition topic "t".
#[cfg(test)]
pub(crate) fn test_partition(broker: &Broker) -> common::PartitionId {
    let topic = broker::NewTopic {
        name: "t".into(),
        partitions: Some(1),
        replication_factor: None,
        configs: Default::default(),
    };
    broker.create_topic(topic, false).unwrap();
    broker.partition_id("t", 0).unwrap()
}
