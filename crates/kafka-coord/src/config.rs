//! Settings of Kafka's coordinators, and the configuration keys that set them
//! ([`CONFIG_KEYS`], gathered by the server with every other crate's).

use common::config::{KeySpec, Kind, Settings};

/// Kafka coordinator settings. `Default` is what `sluice server` uses with no config.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordConfig {
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
    /// Idle time after which an idempotent producer's sequence state is forgotten (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// KIP-848 consumer groups: Kafka's `group.consumer.session.timeout.ms`.
    pub consumer_session_timeout_ms: i32,
    /// KIP-848 consumer groups: Kafka's `group.consumer.heartbeat.interval.ms` (share
    /// groups use it too).
    pub consumer_heartbeat_interval_ms: i32,
    /// KIP-932 share groups: Kafka's `group.share.record.lock.duration.ms`.
    pub share_record_lock_duration_ms: i32,
    /// KIP-932 share groups: Kafka's `group.share.delivery.count.limit`.
    pub share_delivery_count_limit: u32,
    /// KIP-932 share groups: a share-partition starts at the partition's log start
    /// (`earliest`) instead of its end (Kafka's `share.auto.offset.reset`, a group config
    /// there; here the default of every share group).
    pub share_start_earliest: bool,
}

impl Default for CoordConfig {
    fn default() -> Self {
        Self {
            // The server's default (`groups.initial_rebalance_delay_ms`); Kafka's is 3 s.
            group_initial_rebalance_delay_ms: 0,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1_000,
            offsets_retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            producer_id_expiration_ms: 24 * 60 * 60 * 1000,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            share_record_lock_duration_ms: 30_000,
            share_delivery_count_limit: 5,
            share_start_earliest: false,
        }
    }
}

impl CoordConfig {
    /// The settings [`CONFIG_KEYS`] hold; the rest at their defaults.
    pub fn from_settings(s: &dyn Settings) -> CoordConfig {
        let int32 = |k: &str| i32::try_from(s.int(k)).unwrap_or(i32::MAX);
        CoordConfig {
            group_initial_rebalance_delay_ms: u64::try_from(
                s.int("groups.initial_rebalance_delay_ms"),
            )
            .unwrap_or(0),
            group_min_session_timeout_ms: int32("groups.min_session_timeout_ms"),
            group_max_session_timeout_ms: int32("groups.max_session_timeout_ms"),
            group_max_size: usize::try_from(s.int("groups.max_size")).unwrap_or(usize::MAX),
            offsets_retention_ms: Some(s.int("groups.offsets_retention_ms")).filter(|v| *v >= 0),
            consumer_session_timeout_ms: int32("groups.consumer_session_timeout_ms"),
            consumer_heartbeat_interval_ms: int32("groups.consumer_heartbeat_interval_ms"),
            share_record_lock_duration_ms: int32("groups.share_record_lock_duration_ms"),
            share_delivery_count_limit: u32::try_from(s.int("groups.share_delivery_count_limit"))
                .unwrap_or(5),
            share_start_earliest: s.str("groups.share_auto_offset_reset") == "earliest",
            ..CoordConfig::default()
        }
    }
}

/// The Kafka coordinators' configuration keys (`groups.*`).
pub const CONFIG_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "groups.max_session_timeout_ms",
        kind: Kind::Int {
            min: 1000,
            max: 3_600_000,
        },
        default: "1800000",
        kafka_name: Some("group.max.session.timeout.ms"),
        doc: "Largest consumer session timeout a member may ask for.",
    },
    KeySpec {
        key: "groups.initial_rebalance_delay_ms",
        kind: Kind::Int {
            min: 0,
            max: 300_000,
        },
        default: "0",
        kafka_name: Some("group.initial.rebalance.delay.ms"),
        doc: "Wait this long for more members before the first rebalance of an empty group.",
    },
    KeySpec {
        key: "groups.min_session_timeout_ms",
        kind: Kind::Int {
            min: 1,
            max: 3_600_000,
        },
        default: "6000",
        kafka_name: Some("group.min.session.timeout.ms"),
        doc: "Smallest consumer session timeout a member may ask for.",
    },
    KeySpec {
        key: "groups.max_size",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "1000",
        kafka_name: Some("group.max.size"),
        doc: "Most members in one consumer group.",
    },
    KeySpec {
        key: "groups.offsets_retention_ms",
        kind: Kind::Int {
            min: -1,
            max: i64::MAX,
        },
        default: "604800000",
        kafka_name: None,
        doc: "Committed offsets of an empty group are dropped after this long (-1: keep forever; Kafka: offsets.retention.minutes).",
    },
    KeySpec {
        key: "groups.consumer_session_timeout_ms",
        kind: Kind::Int {
            min: 1_000,
            max: 3_600_000,
        },
        default: "45000",
        kafka_name: Some("group.consumer.session.timeout.ms"),
        doc: "A member of a consumer group (group.protocol=consumer, KIP-848) that sends no heartbeat for this long is removed.",
    },
    KeySpec {
        key: "groups.consumer_heartbeat_interval_ms",
        kind: Kind::Int {
            min: 100,
            max: 3_600_000,
        },
        default: "5000",
        kafka_name: Some("group.consumer.heartbeat.interval.ms"),
        doc: "How often members of consumer groups (group.protocol=consumer, KIP-848) and share groups (KIP-932) heartbeat; each step of a rebalance takes one.",
    },
    KeySpec {
        key: "groups.share_record_lock_duration_ms",
        kind: Kind::Int {
            min: 1_000,
            max: 3_600_000,
        },
        default: "30000",
        kafka_name: Some("group.share.record.lock.duration.ms"),
        doc: "How long a record a share-group member fetched stays acquired by it before it goes back to the group.",
    },
    KeySpec {
        key: "groups.share_delivery_count_limit",
        kind: Kind::Int { min: 2, max: 10 },
        default: "5",
        kafka_name: Some("group.share.delivery.count.limit"),
        doc: "Deliveries after which a share group's record is archived instead of delivered again.",
    },
    KeySpec {
        key: "groups.share_auto_offset_reset",
        kind: Kind::Enum(&["latest", "earliest"]),
        default: "\"latest\"",
        kafka_name: Some("share.auto.offset.reset"),
        doc: "Where a share group starts reading a partition it has not read before: its end (latest, Kafka's default) or its log start (earliest). Kafka sets it per group; here it is every share group's.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::Defaults;

    /// One default per setting: the keys' built-in defaults are `CoordConfig::default()`.
    #[test]
    fn key_defaults_are_the_struct_defaults() {
        assert_eq!(
            CoordConfig::from_settings(&Defaults(CONFIG_KEYS)),
            CoordConfig::default()
        );
    }
}
