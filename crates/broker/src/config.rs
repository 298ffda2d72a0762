//! Broker-wide settings, with Kafka's names in the docs where Kafka has one, and the
//! configuration keys that set them ([`CONFIG_KEYS`]).

use std::path::{Path, PathBuf};

use common::config::{I32_MAX, KeySpec, Kind, Settings};

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
    /// Most topics the broker will hold.
    pub max_topics: usize,
    /// Most partitions one topic may have.
    pub max_partitions_per_topic: u32,
    /// Most partitions the broker will hold in total.
    pub max_partitions_total: u32,
    /// Metadata log records before it is compacted into a snapshot.
    pub metadata_snapshot_every: usize,
    /// The store's background flush interval (`storage.flush_interval_ms`): how often
    /// `flush = async` partitions are fsynced (topic `flush.ms` is checked against it).
    pub flush_interval_ms: u64,
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
            max_topics: 10_000,
            max_partitions_per_topic: 10_000,
            max_partitions_total: 200_000,
            metadata_snapshot_every: 10_000,
            flush_interval_ms: common::limits::FLUSH_INTERVAL_MS,
        }
    }
}

/// The broker core's configuration keys: identity, topic defaults, its limits.
pub const CONFIG_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "kafka.node_id",
        kind: Kind::Int {
            min: 0,
            max: I32_MAX,
        },
        default: "0",
        kafka_name: Some("node.id"),
        doc: "This broker's id in metadata responses.",
    },
    KeySpec {
        key: "kafka.cluster_id",
        kind: Kind::Str,
        default: "\"sluice-cluster\"",
        kafka_name: Some("cluster.id"),
        doc: "Cluster id reported to clients in metadata.",
    },
    KeySpec {
        key: "storage.flush",
        kind: Kind::Enum(&["async", "sync"]),
        default: "\"async\"",
        kafka_name: None,
        doc: "async: acknowledge after the page cache, fsync every flush_interval_ms. sync: acknowledge after fsync (group commit).",
    },
    KeySpec {
        key: "storage.index",
        kind: Kind::Bool,
        default: "true",
        kafka_name: None,
        doc: "Build the key/time index for new topics (per-topic config sluice.index overrides).",
    },
    KeySpec {
        key: "topics.auto_create_topics_enable",
        kind: Kind::Bool,
        default: "true",
        kafka_name: Some("auto.create.topics.enable"),
        doc: "Create a topic when a client produces to or asks metadata for an unknown one.",
    },
    KeySpec {
        key: "topics.num_partitions",
        kind: Kind::Int {
            min: 1,
            max: 10_000,
        },
        default: "1",
        kafka_name: Some("num.partitions"),
        doc: "Partitions of a topic created without an explicit count.",
    },
    KeySpec {
        key: "topics.log_retention_ms",
        kind: Kind::Int {
            min: -1,
            max: i64::MAX,
        },
        default: "604800000",
        kafka_name: Some("log.retention.ms"),
        doc: "Default time retention of a topic (-1: keep forever).",
    },
    KeySpec {
        key: "topics.log_retention_bytes",
        kind: Kind::Int {
            min: -1,
            max: i64::MAX,
        },
        default: "-1",
        kafka_name: Some("log.retention.bytes"),
        doc: "Default size retention per partition (-1: no limit).",
    },
    KeySpec {
        key: "limits.message_max_bytes",
        kind: Kind::Int {
            min: 1024,
            max: I32_MAX,
        },
        default: "1048588",
        kafka_name: Some("message.max.bytes"),
        doc: "Largest record batch a producer may send.",
    },
    KeySpec {
        key: "limits.max_topics",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "10000",
        kafka_name: None,
        doc: "Most topics the broker will hold.",
    },
    KeySpec {
        key: "limits.max_partitions_per_topic",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "10000",
        kafka_name: None,
        doc: "Most partitions one topic may have.",
    },
    KeySpec {
        key: "limits.max_partitions",
        kind: Kind::Int {
            min: 1,
            max: 10_000_000,
        },
        default: "200000",
        kafka_name: None,
        doc: "Most partitions the broker will hold in total.",
    },
];

impl BrokerConfig {
    /// The settings [`CONFIG_KEYS`] hold, for a broker whose data lives in `data_dir`;
    /// the rest at their defaults.
    pub fn from_settings(s: &dyn Settings, data_dir: &Path) -> BrokerConfig {
        let optional = |k: &str| Some(s.int(k)).filter(|v| *v >= 0);
        let int32 = |k: &str| i32::try_from(s.int(k)).unwrap_or(i32::MAX);
        BrokerConfig {
            data_dir: data_dir.to_path_buf(),
            node_id: int32("kafka.node_id"),
            cluster_id: s.str("kafka.cluster_id"),
            auto_create_topics: s.bool("topics.auto_create_topics_enable"),
            default_partitions: u32::try_from(s.int("topics.num_partitions")).unwrap_or(1),
            message_max_bytes: usize::try_from(s.int("limits.message_max_bytes"))
                .unwrap_or(usize::MAX),
            default_retention_ms: optional("topics.log_retention_ms"),
            default_retention_bytes: optional("topics.log_retention_bytes").map(|b| b as u64),
            default_flush: if s.str("storage.flush") == "sync" {
                Flush::Sync
            } else {
                Flush::Async
            },
            default_index: s.bool("storage.index"),
            max_topics: usize::try_from(s.int("limits.max_topics")).unwrap_or(usize::MAX),
            max_partitions_per_topic: u32::try_from(s.int("limits.max_partitions_per_topic"))
                .unwrap_or(u32::MAX),
            max_partitions_total: u32::try_from(s.int("limits.max_partitions")).unwrap_or(u32::MAX),
            ..BrokerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::Defaults;

    /// One default per setting: the keys' built-in defaults are `BrokerConfig::default()`.
    #[test]
    fn key_defaults_are_the_struct_defaults() {
        let default = BrokerConfig::default();
        let from_keys = BrokerConfig::from_settings(&Defaults(CONFIG_KEYS), &default.data_dir);
        assert_eq!(format!("{from_keys:?}"), format!("{default:?}"));
    }
}
