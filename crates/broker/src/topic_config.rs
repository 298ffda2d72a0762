//! Topic configuration: Kafka's key names (plus `sluice.*`), validation, and the effective
//! typed values the broker and storage act on.

use std::collections::BTreeMap;

use storage::{Compaction, Flush, PartitionConfig};

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const FLUSH_MESSAGES: &str = "flush.messages";
pub const SLUICE_FLUSH: &str = "sluice.flush";
pub const SLUICE_INDEX: &str = "sluice.index";
pub const TIMESTAMP_TYPE: &str = "message.timestamp.type";
pub const TIMESTAMP_BEFORE_MAX_MS: &str = "message.timestamp.before.max.ms";
pub const TIMESTAMP_AFTER_MAX_MS: &str = "message.timestamp.after.max.ms";
/// Deprecated in Kafka: both bounds at once when the two above are not set.
pub const TIMESTAMP_DIFFERENCE_MAX_MS: &str = "message.timestamp.difference.max.ms";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
pub const MAX_COMPACTION_LAG_MS: &str = "max.compaction.lag.ms";
pub const MIN_CLEANABLE_DIRTY_RATIO: &str = "min.cleanable.dirty.ratio";
/// Keys accepted only with the one value that describes what this broker does (anything
/// else is refused with INVALID_CONFIG, saying why), with that value.
pub const FIXED_KEYS: &[(&str, &str, &str)] = &[
    (
        "compression.type",
        "producer",
        "batches are stored with the producer's codec; recompression to a topic codec is not \
         implemented (set compression.type on the producer)",
    ),
    (
        "unclean.leader.election.enable",
        "false",
        "no replica that missed records is ever made leader",
    ),
    (
        "remote.storage.enable",
        "false",
        "there is no tiered storage",
    ),
    (
        "local.retention.ms",
        "-2",
        "without tiered storage all data is local (-2: follow retention.ms)",
    ),
    (
        "local.retention.bytes",
        "-2",
        "without tiered storage all data is local (-2: follow retention.bytes)",
    ),
    (
        "message.downconversion.enable",
        "false",
        "batches are served in the v2 format only (Fetch v4 and later); nothing is down-converted",
    ),
    (
        "leader.replication.throttled.replicas",
        "",
        "there is no replication to throttle",
    ),
    (
        "follower.replication.throttled.replicas",
        "",
        "there is no replication to throttle",
    ),
];

/// Keys that change behaviour.
pub const ACTIVE_KEYS: &[&str] = &[
    RETENTION_MS,
    RETENTION_BYTES,
    MAX_MESSAGE_BYTES,
    CLEANUP_POLICY,
    FLUSH_MESSAGES,
    SLUICE_FLUSH,
    SLUICE_INDEX,
    TIMESTAMP_TYPE,
    TIMESTAMP_BEFORE_MAX_MS,
    TIMESTAMP_AFTER_MAX_MS,
    TIMESTAMP_DIFFERENCE_MAX_MS,
    MIN_INSYNC_REPLICAS,
    DELETE_RETENTION_MS,
    MIN_COMPACTION_LAG_MS,
    MAX_COMPACTION_LAG_MS,
    MIN_CLEANABLE_DIRTY_RATIO,
];

/// Kafka topic keys whose meaning holds here whatever their (valid) value, stored and
/// shown as set: (key, the least value accepted, why it holds). DescribeConfigs shows them
/// with Kafka's default until set.
pub const HONOURED_KEYS: &[(&str, i64, &str, &str)] = &[
    (
        "segment.bytes",
        14,
        "1073741824",
        "retention removes records batch by batch, never later than a segment of any size",
    ),
    (
        "segment.ms",
        1,
        "604800000",
        "retention removes records batch by batch, never later than a segment rolled at any age",
    ),
    (
        "segment.jitter.ms",
        0,
        "0",
        "retention removes records batch by batch; there is no roll to jitter",
    ),
    (
        "index.interval.bytes",
        0,
        "4096",
        "every batch has an index entry, denser than any interval",
    ),
    (
        "segment.index.bytes",
        4,
        "10485760",
        "Kafka's per-partition index files do not exist in the shared log: nothing to size",
    ),
    (
        "file.delete.delay.ms",
        0,
        "60000",
        "segments are shared and deleted once no partition holds a live record in them",
    ),
];

/// Kafka topic keys accepted only as booleans, for the same reasons as [`HONOURED_KEYS`].
pub const HONOURED_FLAGS: &[(&str, &str, &str)] = &[(
    "preallocate",
    "false",
    "segments are created at full size (sparse) whatever the topic",
)];

/// Kafka's `flush.ms`: 0 means an fsync before every acknowledgement (as `flush.messages=1`);
/// values at or above the broker's background flush interval hold (it fsyncs that often);
/// smaller ones cannot and are refused.
pub const FLUSH_MS: &str = "flush.ms";

/// Longest config value accepted.
const MAX_VALUE_LEN: usize = 4096;

/// Effective settings of one topic (defaults merged with its overrides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: Option<i64>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: usize,
    pub cleanup_policy: String,
    pub flush: Flush,
    pub index: bool,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps every batch with the time
    /// it appends it.
    pub log_append_time: bool,
    /// Record timestamps older than now minus this are refused (CreateTime topics).
    pub timestamp_before_max_ms: Option<i64>,
    /// Record timestamps newer than now plus this are refused (CreateTime topics).
    pub timestamp_after_max_ms: Option<i64>,
    /// The broker's background flush interval (`flush.ms` checks against it).
    pub flush_interval_ms: u64,
    /// How compacted topics are cleaned (`delete.retention.ms`, `min.compaction.lag.ms`,
    /// `max.compaction.lag.ms`, `min.cleanable.dirty.ratio`).
    pub compaction: Compaction,
}

impl TopicConfig {
    /// Validates `overrides` and merges them over the broker defaults.
    pub fn resolve(defaults: &BrokerConfig, overrides: &BTreeMap<String, String>) -> Result<Self> {
        let mut c = TopicConfig {
            retention_ms: defaults.default_retention_ms,
            retention_bytes: defaults.default_retention_bytes,
            max_message_bytes: defaults.message_max_bytes,
            cleanup_policy: "delete".to_string(),
            flush: defaults.default_flush,
            index: defaults.default_index,
            log_append_time: false,
            timestamp_before_max_ms: None,
            timestamp_after_max_ms: None,
            flush_interval_ms: defaults.flush_interval_ms,
            compaction: Compaction::default(),
        };
        for (k, v) in overrides {
            c.apply(k, v)?;
        }
        // The deprecated key bounds both sides unless they are set.
        if let Some(d) = overrides.get(TIMESTAMP_DIFFERENCE_MAX_MS) {
            let d = parse_bound(TIMESTAMP_DIFFERENCE_MAX_MS, d)?;
            if !overrides.contains_key(TIMESTAMP_BEFORE_MAX_MS) {
                c.timestamp_before_max_ms = d;
            }
            if !overrides.contains_key(TIMESTAMP_AFTER_MAX_MS) {
                c.timestamp_after_max_ms = d;
            }
        }
        Ok(c)
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = || BrokerError::InvalidConfig(format!("invalid value {value:?} for {key}"));
        if value.len() > MAX_VALUE_LEN {
            return Err(bad());
        }
        match key {
            RETENTION_MS => {
                let v: i64 = value.trim().parse().map_err(|_| bad())?;
                self.retention_ms = match v {
                    -1 => None,
                    v if v >= 0 => Some(v),
                    _ => return Err(bad()),
                };
            }
            RETENTION_BYTES => {
                let v: i64 = value.trim().parse().map_err(|_| bad())?;
                self.retention_bytes = match v {
                    -1 => None,
                    v if v >= 0 => Some(v as u64),
                    _ => return Err(bad()),
                };
            }
            MAX_MESSAGE_BYTES => {
                let v: i64 = value.trim().parse().map_err(|_| bad())?;
                if !(0..=i64::from(i32::MAX)).contains(&v) {
                    return Err(bad());
                }
                self.max_message_bytes = v as usize;
            }
            CLEANUP_POLICY => {
                let ok = value
                    .split(',')
                    .map(str::trim)
                    .all(|p| p == "delete" || p == "compact");
                if !ok || value.trim().is_empty() {
                    return Err(bad());
                }
                self.cleanup_policy = value.trim().to_string();
            }
            FLUSH_MESSAGES => {
                let v: i64 = value.trim().parse().map_err(|_| bad())?;
                if v < 1 {
                    return Err(bad());
                }
                self.flush = if v == 1 { Flush::Sync } else { Flush::Async };
            }
            SLUICE_FLUSH => {
                self.flush = match value.trim() {
                    "sync" => Flush::Sync,
                    "async" => Flush::Async,
                    _ => return Err(bad()),
                };
            }
            SLUICE_INDEX => {
                self.index = match value.trim() {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    _ => return Err(bad()),
                };
            }
            TIMESTAMP_TYPE => {
                self.log_append_time = match value.trim() {
                    "CreateTime" => false,
                    "LogAppendTime" => true,
                    _ => return Err(bad()),
                };
            }
            TIMESTAMP_BEFORE_MAX_MS => self.timestamp_before_max_ms = parse_bound(key, value)?,
            TIMESTAMP_AFTER_MAX_MS => self.timestamp_after_max_ms = parse_bound(key, value)?,
            TIMESTAMP_DIFFERENCE_MAX_MS => {
                parse_bound(key, value)?;
            }
            MIN_INSYNC_REPLICAS => {
                // One replica until replication exists: asking for more cannot be honoured.
                if value.trim() != "1" {
                    return Err(BrokerError::InvalidConfig(format!(
                        "{key}={value}: this broker keeps one replica of each partition, so \
                         only 1 can hold"
                    )));
                }
            }
            DELETE_RETENTION_MS | MIN_COMPACTION_LAG_MS | MAX_COMPACTION_LAG_MS => {
                let v: i64 = value.trim().parse().map_err(|_| bad())?;
                let least = if key == MAX_COMPACTION_LAG_MS { 1 } else { 0 };
                if v < least {
                    return Err(bad());
                }
                match key {
                    DELETE_RETENTION_MS => self.compaction.delete_retention_ms = v,
                    MIN_COMPACTION_LAG_MS => self.compaction.min_lag_ms = v,
                    _ => self.compaction.max_lag_ms = v,
                }
            }
            MIN_CLEANABLE_DIRTY_RATIO => {
                let v: f64 = value.trim().parse().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(bad());
                }
                self.compaction.min_dirty_ppm = (v * 1_000_000.0).round() as u32;
            }
            k if FIXED_KEYS.iter().any(|(f, _, _)| *f == k) => {
                let (_, only, why) = FIXED_KEYS
                    .iter()
                    .find(|(f, _, _)| *f == k)
                    .ok_or_else(bad)?;
                if value.trim() != *only {
                    return Err(BrokerError::InvalidConfig(format!(
                        "{key}={value}: only {only} is accepted: {why}"
                    )));
                }
            }
            k => self.apply_other(k, value)?,
        }
        Ok(())
    }

    /// `flush.ms`, the keys whose meaning holds whatever their value, the keys fixed to
    /// this broker's value, and unknown keys.
    fn apply_other(&mut self, key: &str, value: &str) -> Result<()> {
        let bad = || BrokerError::InvalidConfig(format!("invalid value {value:?} for {key}"));
        match key {
            FLUSH_MS => {
                let v: i64 = value.trim().parse().map_err(|_| bad())?;
                let interval = self.flush_interval_ms as i64;
                self.flush = match v {
                    0 => Flush::Sync,
                    v if v >= interval => Flush::Async,
                    _ => {
                        return Err(BrokerError::InvalidConfig(format!(
                            "{key}={value}: the background flush fsyncs every {interval} ms \
                             (storage.flush_interval_ms); use 0 (fsync before every \
                             acknowledgement) or a value of at least {interval}"
                        )));
                    }
                };
            }
            k if HONOURED_KEYS.iter().any(|(h, _, _, _)| *h == k) => {
                let least = HONOURED_KEYS
                    .iter()
                    .find(|(h, _, _, _)| *h == k)
                    .map_or(0, |(_, least, _, _)| *least);
                let v: i64 = value.trim().parse().map_err(|_| bad())?;
                if v < least {
                    return Err(bad());
                }
            }
            k if HONOURED_FLAGS.iter().any(|(h, _, _)| *h == k) => {
                if !matches!(value.trim(), "true" | "false") {
                    return Err(bad());
                }
            }
            k => {
                return Err(BrokerError::InvalidConfig(format!(
                    "unknown topic config {k:?}"
                )));
            }
        }
        Ok(())
    }

    /// True for `compact` and `compact,delete`: every record needs a key.
    pub fn is_compacted(&self) -> bool {
        self.cleanup_policy
            .split(',')
            .any(|p| p.trim() == "compact")
    }

    /// The policy storage applies to each partition of the topic. A `compact`-only topic
    /// is never deleted by time or size (Kafka keeps at least the latest value of every key
    /// forever); storage compacts it (`storage::Compaction`).
    pub fn partition_config(&self) -> PartitionConfig {
        let deletes = self.cleanup_policy.split(',').any(|p| p.trim() == "delete");
        PartitionConfig {
            flush: self.flush,
            retention_ms: self.retention_ms.filter(|_| deletes),
            retention_bytes: self.retention_bytes.filter(|_| deletes),
            index: self.index,
            compaction: self.is_compacted().then_some(self.compaction),
        }
    }

    /// The value of an active key as DescribeConfigs shows it.
    pub fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            RETENTION_MS => self.retention_ms.unwrap_or(-1).to_string(),
            RETENTION_BYTES => self
                .retention_bytes
                .map(|b| b as i64)
                .unwrap_or(-1)
                .to_string(),
            MAX_MESSAGE_BYTES => self.max_message_bytes.to_string(),
            CLEANUP_POLICY => self.cleanup_policy.clone(),
            FLUSH_MESSAGES => match self.flush {
                Flush::Sync => "1".to_string(),
                Flush::Async => i64::MAX.to_string(),
            },
            SLUICE_FLUSH => match self.flush {
                Flush::Sync => "sync".to_string(),
                Flush::Async => "async".to_string(),
            },
            SLUICE_INDEX => if self.index { "on" } else { "off" }.to_string(),
            TIMESTAMP_TYPE => if self.log_append_time {
                "LogAppendTime"
            } else {
                "CreateTime"
            }
            .to_string(),
            TIMESTAMP_BEFORE_MAX_MS => self.timestamp_before_max_ms.unwrap_or(i64::MAX).to_string(),
            TIMESTAMP_AFTER_MAX_MS => self.timestamp_after_max_ms.unwrap_or(i64::MAX).to_string(),
            TIMESTAMP_DIFFERENCE_MAX_MS => {
                let widest = self
                    .timestamp_before_max_ms
                    .zip(self.timestamp_after_max_ms);
                widest.map_or(i64::MAX, |(b, a)| b.max(a)).to_string()
            }
            MIN_INSYNC_REPLICAS => "1".to_string(),
            DELETE_RETENTION_MS => self.compaction.delete_retention_ms.to_string(),
            MIN_COMPACTION_LAG_MS => self.compaction.min_lag_ms.to_string(),
            MAX_COMPACTION_LAG_MS => self.compaction.max_lag_ms.to_string(),
            MIN_CLEANABLE_DIRTY_RATIO => {
                (f64::from(self.compaction.min_dirty_ppm) / 1_000_000.0).to_string()
            }
            k => FIXED_KEYS.iter().find(|(f, _, _)| *f == k)?.1.to_string(),
        })
    }
}

/// A timestamp bound in ms: `Long.MAX_VALUE` (Kafka's default) means none.
fn parse_bound(key: &str, value: &str) -> Result<Option<i64>> {
    match value.trim().parse::<i64>() {
        Ok(i64::MAX) => Ok(None),
        Ok(v) if v >= 0 => Ok(Some(v)),
        _ => Err(BrokerError::InvalidConfig(format!(
            "invalid value {value:?} for {key}"
        ))),
    }
}

/// One row of DescribeConfigs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// True when the topic overrides the broker default.
    pub is_override: bool,
    /// The value comes from a broker setting changed from its built-in default (Kafka's
    /// STATIC_BROKER_CONFIG source; otherwise DEFAULT_CONFIG unless overridden).
    pub broker_set: bool,
    pub read_only: bool,
    pub sensitive: bool,
}

/// One AlterConfigs / IncrementalAlterConfigs operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    Append(String, String),
    Subtract(String, String),
}

/// Applies incremental ops to an override map (list-valued keys use comma lists).
pub fn apply_ops(overrides: &mut BTreeMap<String, String>, ops: &[ConfigOp]) {
    for op in ops {
        match op {
            ConfigOp::Set(k, v) => {
                overrides.insert(k.clone(), v.clone());
            }
            ConfigOp::Delete(k) => {
                overrides.remove(k);
            }
            ConfigOp::Append(k, v) => {
                let cur = overrides.get(k).cloned().unwrap_or_default();
                let mut items: Vec<&str> = cur.split(',').filter(|s| !s.is_empty()).collect();
                if !items.contains(&v.as_str()) {
                    items.push(v);
                }
                overrides.insert(k.clone(), items.join(","));
            }
            ConfigOp::Subtract(k, v) => {
                if let Some(cur) = overrides.get(k).cloned() {
                    let items: Vec<&str> =
                        cur.split(',').filter(|s| !s.is_empty() && s != v).collect();
                    overrides.insert(k.clone(), items.join(","));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Issue 14: every Kafka key that used to be stored without effect now either holds
    /// (checked and stored), takes effect (`flush.ms`), or is refused saying why.
    #[test]
    fn every_kafka_key_holds_takes_effect_or_is_refused() {
        let d = BrokerConfig::default();
        let ok = |kv: &[(&str, &str)]| TopicConfig::resolve(&d, &map(kv));
        for (k, v) in [
            ("segment.bytes", "52428800"),
            ("segment.ms", "600000"),
            ("segment.jitter.ms", "0"),
            ("index.interval.bytes", "4096"),
            ("delete.retention.ms", "86400000"),
            ("min.compaction.lag.ms", "1000"),
            ("segment.index.bytes", "10485760"),
            ("file.delete.delay.ms", "60000"),
            ("preallocate", "true"),
            ("max.compaction.lag.ms", "9223372036854775807"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("message.downconversion.enable", "false"),
            ("leader.replication.throttled.replicas", ""),
        ] {
            assert!(ok(&[(k, v)]).is_ok(), "{k}={v} refused");
        }
        for (k, v, why) in [
            ("segment.bytes", "10", "invalid value"),
            ("segment.ms", "0", "invalid value"),
            ("preallocate", "maybe", "invalid value"),
            ("max.compaction.lag.ms", "0", "invalid value"),
            ("min.cleanable.dirty.ratio", "1.5", "invalid value"),
            ("delete.retention.ms", "-1", "invalid value"),
            ("message.downconversion.enable", "true", "v2 format only"),
            (
                "follower.replication.throttled.replicas",
                "0:1",
                "no replication",
            ),
            ("flush.ms", "100", "fsyncs every 1000 ms"),
        ] {
            let refused = ok(&[(k, v)]);
            assert!(
                matches!(&refused, Err(BrokerError::InvalidConfig(m)) if m.contains(why)),
                "{k}={v}: {refused:?}"
            );
        }
        assert_eq!(ok(&[("flush.ms", "0")]).unwrap().flush, Flush::Sync);
        let compacted = ok(&[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "5"),
            ("min.compaction.lag.ms", "6"),
            ("max.compaction.lag.ms", "7"),
            ("min.cleanable.dirty.ratio", "0.25"),
        ])
        .unwrap();
        let want = Compaction {
            delete_retention_ms: 5,
            min_lag_ms: 6,
            max_lag_ms: 7,
            min_dirty_ppm: 250_000,
        };
        assert_eq!(compacted.partition_config().compaction, Some(want));
        assert_eq!(
            compacted.value_of("min.cleanable.dirty.ratio").unwrap(),
            "0.25"
        );
        assert_eq!(ok(&[]).unwrap().partition_config().compaction, None);
        assert_eq!(ok(&[("flush.ms", "5000")]).unwrap().flush, Flush::Async);
    }

    #[test]
    fn resolves_overrides() {
        let d = BrokerConfig::default();
        let c = TopicConfig::resolve(
            &d,
            &map(&[
                ("retention.ms", "-1"),
                ("flush.messages", "1"),
                ("sluice.index", "off"),
            ]),
        )
        .unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.flush, Flush::Sync);
        assert!(!c.index);
        assert!(TopicConfig::resolve(&d, &map(&[("retention.ms", "x")])).is_err());
        assert!(TopicConfig::resolve(&d, &map(&[("bogus.key", "1")])).is_err());
        assert!(TopicConfig::resolve(&d, &map(&[("segment.bytes", "1000")])).is_ok());
        let t = TopicConfig::resolve(
            &d,
            &map(&[
                ("message.timestamp.type", "LogAppendTime"),
                ("message.timestamp.difference.max.ms", "5000"),
                ("message.timestamp.after.max.ms", "100"),
                ("min.insync.replicas", "1"),
            ]),
        )
        .unwrap();
        assert!(t.log_append_time);
        assert_eq!(
            (t.timestamp_before_max_ms, t.timestamp_after_max_ms),
            (Some(5000), Some(100))
        );
        assert!(TopicConfig::resolve(&d, &map(&[("min.insync.replicas", "2")])).is_err());
        assert!(TopicConfig::resolve(&d, &map(&[("compression.type", "producer")])).is_ok());
        let refused = TopicConfig::resolve(&d, &map(&[("compression.type", "zstd")]));
        assert!(
            matches!(refused, Err(BrokerError::InvalidConfig(m)) if m.contains("recompression"))
        );
        assert!(
            TopicConfig::resolve(&d, &map(&[("unclean.leader.election.enable", "true")])).is_err()
        );
        assert!(TopicConfig::resolve(&d, &map(&[("message.timestamp.type", "x")])).is_err());
    }

    #[test]
    fn incremental_ops() {
        let mut m = map(&[("cleanup.policy", "delete")]);
        apply_ops(
            &mut m,
            &[ConfigOp::Append("cleanup.policy".into(), "compact".into())],
        );
        assert_eq!(m["cleanup.policy"], "delete,compact");
        apply_ops(
            &mut m,
            &[ConfigOp::Subtract("cleanup.policy".into(), "delete".into())],
        );
        assert_eq!(m["cleanup.policy"], "compact");
        apply_ops(&mut m, &[ConfigOp::Delete("cleanup.policy".into())]);
        assert!(m.is_empty());
    }
}
