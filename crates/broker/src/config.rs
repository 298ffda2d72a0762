//! Broker-wide settings, with Kafka's names in the docs where Kafka has one.

use std::path::PathBuf;

use storage::Flush;

/// Settings of the broker core. `Default` is what `sluice server` uses with no config.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Root of the data directory; broker metadata lives in `data_dir/meta/`.
    pub data_dir: PathBuf,
    /// Kafka `node.id` / `broker.id`.
    pub node_id: i32,
    /// Cluster id reported in Metadata/DescribeCluster.
    pub cluster_id: String,
    /// Kafka `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Kafka `num.partitions`: partitions of auto-created topics and of CreateTopics with -1.
    pub default_partitions: u32,
    /// Kafka `message.max.bytes`: largest record batch accepted (topic `max.message.bytes`).
    pub message_max_bytes: usize,
    /// Kafka `log.retention.ms` (None = keep forever).
    pub default_retention_ms: Option<i64>,
    /// Kafka `log.retention.bytes` (None = no size limit).
    pub default_retention_bytes: Option<u64>,
    /// Default flush policy of new topics (`sluice.flush`).
    pub default_flush: Flush,
    /// Build the key/time index for new topics by default (`sluice.index`).
    pub default_index: bool,
    /// Kafka `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: u64,
    /// Kafka `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// Kafka `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// Kafka `group.max.size`.
    pub group_max_size: usize,
    /// Kafka `offsets.retention.minutes`, in ms (None = keep committed offsets forever).
    pub offsets_retention_ms: Option<i64>,
    /// Most topics the broker will hold.
    pub max_topics: usize,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: u32,
    /// Most partitions the broker will hold in total.
    pub max_partitions_total: u32,
    /// Metadata log records before it is compacted into a snapshot.
    pub metadata_snapshot_every: usize,
    /// Idle time after which an idempotent producer's sequence state is forgotten (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// Adopt store partitions that hold records but that no topic in the metadata names
    /// (its snapshot or log was lost) as topics `recovered-<partition id>` instead of
    /// refusing to open. Set by `sluice storage repair`, never by a normal start.
    pub recover_orphan_partitions: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            recover_orphan_partitions: false,
            data_dir: PathBuf::from("./sluice-data"),
            node_id: 0,
            cluster_id: "sluice-cluster".to_string(),
            auto_create_topics: true,
            default_partitions: 1,
            message_max_bytes: common::limits::MAX_MESSAGE_BYTES,
            default_retention_ms: Some(storage::DEFAULT_RETENTION_MS),
            default_retention_bytes: None,
            default_flush: Flush::Async,
            default_index: true,
            // The server's default (`groups.initial_rebalance_delay_ms`); Kafka's is 3 s.
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1_000,
            offsets_retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            max_topics: 10_000,
            max_partitions_per_topic: 10_000,
            max_partitions_total: 200_000,
            metadata_snapshot_every: 10_000,
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
        }
    }
}
