//! Topic administration: create, delete, add partitions, describe and alter configs.

use std::collections::BTreeMap;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::metadata::{MetaRecord, TopicRecord};
use crate::topic_config::{self, ACTIVE_KEYS, ConfigEntry, ConfigOp, TopicConfig};
use crate::topics::{Topic, TopicInfo, new_topic_id, validate_topic_name};

/// A CreateTopics entry in domain terms.
#[derive(Clone, Debug, Default)]
pub struct NewTopic {
    pub name: String,
    /// None (-1 on the wire) = broker default.
    pub partitions: Option<u32>,
    /// None (-1 on the wire) = broker default (1). Anything but 1 is refused.
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
}

impl Broker {
    pub fn list_topics(&self) -> Vec<TopicInfo> {
        let mut v: Vec<TopicInfo> = self
            .topics
            .read()
            .by_name
            .values()
            .map(Topic::info)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(self.topics.read().get(name)?.info())
    }

    pub fn topic_name_by_id(&self, topic_id: u128) -> Option<String> {
        self.topics.read().name_of(topic_id).map(str::to_string)
    }

    /// Metadata lookup that creates the topic when auto-creation is on and `allow_create`.
    pub fn topic_or_create(&self, name: &str, allow_create: bool) -> Result<TopicInfo> {
        match self.topic(name) {
            Err(BrokerError::UnknownTopicOrPartition)
                if allow_create && self.config.auto_create_topics =>
            {
                validate_topic_name(name)?;
                match self.create_topic(
                    NewTopic {
                        name: name.to_string(),
                        ..Default::default()
                    },
                    false,
                ) {
                    Err(BrokerError::TopicAlreadyExists(_)) => self.topic(name),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// CreateTopics (one topic). `validate_only` checks everything and changes nothing.
    pub fn create_topic(&self, req: NewTopic, validate_only: bool) -> Result<TopicInfo> {
        validate_topic_name(&req.name)?;
        if let Some(rf) = req.replication_factor
            && rf != 1
            && rf != -1
        {
            return Err(BrokerError::InvalidReplicationFactor(i32::from(rf)));
        }
        let n = req.partitions.unwrap_or(self.config.default_partitions);
        if n == 0 {
            return Err(BrokerError::InvalidPartitions("must be at least 1".into()));
        }
        if n > self.config.max_partitions_per_topic {
            return Err(BrokerError::InvalidPartitions(format!(
                "{n} exceeds the per-topic limit {}",
                self.config.max_partitions_per_topic
            )));
        }
        let tc = TopicConfig::resolve(&self.config, &req.configs)?;
        let mut topics = self.topics.write();
        if topics.by_name.contains_key(&req.name) {
            return Err(BrokerError::TopicAlreadyExists(req.name));
        }
        if topics.by_name.len() >= self.config.max_topics {
            return Err(BrokerError::LimitReached(format!(
                "{} topics",
                self.config.max_topics
            )));
        }
        if topics.partition_count.saturating_add(n) > self.config.max_partitions_total {
            return Err(BrokerError::LimitReached(format!(
                "{} partitions in total",
                self.config.max_partitions_total
            )));
        }
        let topic_id = new_topic_id(&req.name, self.now_ms() as u64);
        if validate_only {
            return Ok(TopicInfo {
                name: req.name,
                topic_id,
                partitions: n,
            });
        }
        let partitions = topics.allocate_partitions(n)?;
        for p in &partitions {
            self.store.configure_partition(*p, tc.partition_config())?;
        }
        let record = MetaRecord::TopicCreated(TopicRecord {
            name: req.name.clone(),
            topic_id,
            partitions: partitions.iter().map(|p| p.0).collect(),
            configs: req.configs.clone(),
        });
        if let Err(e) = self.persist(record, true) {
            // Not recorded: no topic. Its empty partitions go now (or at the next start).
            for p in &partitions {
                let _ = self.store.delete_partition(*p);
            }
            return Err(e);
        }
        let topic = Topic {
            name: req.name.clone(),
            topic_id,
            partitions,
            overrides: req.configs,
            config: tc,
            counters: self.metrics.topic_counters(&req.name),
        };
        let info = topic.info();
        topics.insert(topic);
        self.metrics.topics.set(topics.by_name.len() as i64);
        self.metrics
            .partitions
            .set(i64::from(topics.partition_count));
        tracing::info!(topic = %info.name, partitions = info.partitions, "topic created");
        Ok(info)
    }

    /// Makes store partition `p`, which holds records no topic names, a one-partition topic
    /// `recovered-<p>` with infinite retention (repair after lost metadata).
    pub(crate) fn adopt_orphan(&self, p: common::PartitionId) -> Result<()> {
        let name = format!("recovered-{}", p.0);
        let configs: std::collections::BTreeMap<String, String> =
            [("retention.ms".to_string(), "-1".to_string())].into();
        let tc = TopicConfig::resolve(&self.config, &configs)?;
        let mut topics = self.topics.write();
        let topic_id = new_topic_id(&name, self.now_ms() as u64);
        self.store.configure_partition(p, tc.partition_config())?;
        self.persist(
            MetaRecord::TopicCreated(TopicRecord {
                name: name.clone(),
                topic_id,
                partitions: vec![p.0],
                configs: configs.clone(),
            }),
            true,
        )?;
        topics.insert(Topic {
            name: name.clone(),
            topic_id,
            partitions: vec![p],
            overrides: configs,
            config: tc,
            counters: self.metrics.topic_counters(&name),
        });
        tracing::warn!(topic = %name, partition = %p, "recovered a partition no topic named");
        Ok(())
    }

    /// DeleteTopics (one topic): its partitions' data and its committed offsets go too.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if self.queue_exists(name) {
            // The queue over it goes first (its state would name a missing topic).
            self.delete_queue(name, false)?;
        }
        // So do share groups' share-partitions over it.
        for q in self.share_queues_over(name) {
            self.delete_queue(&q, false)?;
        }
        let mut topics = self.topics.write();
        let partitions = topics.get(name)?.partitions.clone();
        // The data goes before the metadata record: a crash in between leaves the topic
        // with empty partitions (delete it again), never records that no topic names (which
        // the next start would take for lost metadata).
        for p in &partitions {
            if let Some(h) = self.hooks.get() {
                h.forget_partition(*p);
            }
            if let Err(e) = self.store.delete_partition(*p) {
                tracing::warn!(topic = %name, partition = %p, error = %e, "deleting partition data failed");
            }
        }
        self.persist(
            MetaRecord::TopicDeleted {
                name: name.to_string(),
            },
            true,
        )?;
        if topics.remove(name).is_none() {
            return Err(BrokerError::UnknownTopicOrPartition);
        }
        self.metrics.topics.set(topics.by_name.len() as i64);
        self.metrics
            .partitions
            .set(i64::from(topics.partition_count));
        drop(topics);
        self.forget_topic_offsets(name);
        self.metrics.forget_topic(name);
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    /// CreatePartitions: grow the topic to `total` partitions.
    pub fn create_partitions(&self, name: &str, total: u32, validate_only: bool) -> Result<()> {
        let mut topics = self.topics.write();
        let t = topics.get(name)?;
        let current = t.partitions.len() as u32;
        if total <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic has {current} partitions; the new count must be larger"
            )));
        }
        if total > self.config.max_partitions_per_topic {
            return Err(BrokerError::InvalidPartitions(format!(
                "{total} exceeds the per-topic limit {}",
                self.config.max_partitions_per_topic
            )));
        }
        let add = total - current;
        if topics.partition_count.saturating_add(add) > self.config.max_partitions_total {
            return Err(BrokerError::LimitReached("partitions in total".into()));
        }
        if validate_only {
            return Ok(());
        }
        let pc = t.config.partition_config();
        let new = topics.allocate_partitions(add)?;
        for p in &new {
            self.store.configure_partition(*p, pc.clone())?;
        }
        self.persist(
            MetaRecord::PartitionsAdded {
                name: name.to_string(),
                partitions: new.iter().map(|p| p.0).collect(),
            },
            true,
        )?;
        topics.partition_count += add;
        if let Some(t) = topics.by_name.get_mut(name) {
            t.partitions.extend(new);
        }
        self.metrics
            .partitions
            .set(i64::from(topics.partition_count));
        Ok(())
    }

    /// DescribeConfigs for a topic: every active key plus the accepted overrides.
    /// `keys` None = all.
    pub fn describe_topic_configs(
        &self,
        name: &str,
        keys: Option<&[String]>,
    ) -> Result<Vec<ConfigEntry>> {
        let topics = self.topics.read();
        let t = topics.get(name)?;
        let wanted = |k: &str| keys.is_none_or(|ks| ks.iter().any(|w| w == k));
        // What a topic without overrides gets here, and with the built-in broker defaults:
        // where they differ, the value comes from the broker's configuration.
        let none = BTreeMap::new();
        let here = TopicConfig::resolve(&self.config, &none).ok();
        let builtin = TopicConfig::resolve(&crate::BrokerConfig::default(), &none).ok();
        let from_broker = |k: &str| {
            here.as_ref().and_then(|c| c.value_of(k))
                != builtin.as_ref().and_then(|c| c.value_of(k))
        };
        let mut out = Vec::new();
        for k in ACTIVE_KEYS {
            if wanted(k) {
                out.push(ConfigEntry {
                    name: k.to_string(),
                    value: t.config.value_of(k),
                    is_override: t.overrides.contains_key(*k),
                    broker_set: from_broker(k),
                    read_only: false,
                    sensitive: false,
                });
            }
        }
        // Keys with the one value this broker has: shown, read-only.
        for (k, v, _) in topic_config::FIXED_KEYS {
            if wanted(k) {
                out.push(ConfigEntry {
                    name: k.to_string(),
                    value: Some(v.to_string()),
                    is_override: t.overrides.contains_key(*k),
                    broker_set: false,
                    read_only: true,
                    sensitive: false,
                });
            }
        }
        // Keys whose meaning holds whatever their value: as set, else Kafka's default.
        let honoured = topic_config::HONOURED_KEYS
            .iter()
            .map(|(k, _, default, _)| (*k, *default))
            .chain(
                topic_config::HONOURED_FLAGS
                    .iter()
                    .map(|(k, d, _)| (*k, *d)),
            )
            .chain([(topic_config::FLUSH_MS, "9223372036854775807")]);
        for (k, default) in honoured {
            if wanted(k) {
                let set = t.overrides.get(k);
                out.push(ConfigEntry {
                    name: k.to_string(),
                    value: Some(set.cloned().unwrap_or_else(|| default.to_string())),
                    is_override: set.is_some(),
                    broker_set: false,
                    read_only: false,
                    sensitive: false,
                });
            }
        }
        Ok(out)
    }

    /// AlterConfigs (`incremental == false`: `ops` are the complete new override set) and
    /// IncrementalAlterConfigs.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        ops: &[ConfigOp],
        incremental: bool,
        validate_only: bool,
    ) -> Result<()> {
        let mut topics = self.topics.write();
        let t = topics.get(name)?;
        let mut overrides = if incremental {
            t.overrides.clone()
        } else {
            BTreeMap::new()
        };
        topic_config::apply_ops(&mut overrides, ops);
        let tc = TopicConfig::resolve(&self.config, &overrides)?;
        if validate_only {
            return Ok(());
        }
        let pc = tc.partition_config();
        let old = t.config.partition_config();
        for p in &t.partitions {
            self.store.configure_partition(*p, pc.clone())?;
        }
        let record = MetaRecord::TopicConfigsSet {
            name: name.to_string(),
            configs: overrides.clone(),
        };
        if let Err(e) = self.persist(record, true) {
            // Not saved, not changed: the partitions go back to the old settings.
            for p in &t.partitions {
                self.store.configure_partition(*p, old.clone())?;
            }
            return Err(e);
        }
        if let Some(t) = topics.by_name.get_mut(name) {
            t.overrides = overrides;
            t.config = tc;
        }
        Ok(())
    }

    /// Broker-level configs for DescribeConfigs(BROKER): Kafka's names, read-only here.
    pub fn describe_broker_configs(&self) -> Vec<ConfigEntry> {
        let builtin = broker_entries(&crate::BrokerConfig::default());
        broker_entries(&self.config)
            .into_iter()
            .zip(builtin)
            .map(|((k, v), (_, d))| ConfigEntry {
                name: k.to_string(),
                broker_set: v != d,
                value: Some(v),
                is_override: false,
                read_only: true,
                sensitive: false,
            })
            .collect()
    }
}

/// The broker-level Kafka keys DescribeConfigs shows, with their values under `c`.
fn broker_entries(c: &crate::BrokerConfig) -> Vec<(&'static str, String)> {
    vec![
        ("broker.id", c.node_id.to_string()),
        ("node.id", c.node_id.to_string()),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        ("num.partitions", c.default_partitions.to_string()),
        ("message.max.bytes", c.message_max_bytes.to_string()),
        (
            "log.retention.ms",
            c.default_retention_ms.unwrap_or(-1).to_string(),
        ),
        (
            "log.retention.bytes",
            c.default_retention_bytes
                .map(|b| b as i64)
                .unwrap_or(-1)
                .to_string(),
        ),
        ("default.replication.factor", "1".to_string()),
        ("offsets.topic.replication.factor", "1".to_string()),
        ("min.insync.replicas", "1".to_string()),
    ]
}
