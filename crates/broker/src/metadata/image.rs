//! The metadata state machine: [`MetaRecord`]s (one change each) applied in order to a
//! [`MetaImage`] (the whole state). Pure: no I/O. A [`super::MetadataStore`] persists the
//! records; every change the broker makes goes record → store → `apply`, so the image a
//! store holds is always what a restart would rebuild.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::offsets::CommittedOffset;

/// Format version written in every snapshot. Version 1 (before the Kafka coordinator moved
/// out of the core) kept group generations, producer-id blocks and transactions in fields
/// of their own; [`MetaImage::upgrade`] turns them into extension entries.
pub const SNAPSHOT_VERSION: u32 = 2;

/// Namespaces of extension entries written by the Kafka coordinator (`kafka-coord`), named
/// here only to upgrade version-1 images and records.
pub const KAFKA_GROUP_NS: &str = "kafka.group";
pub const KAFKA_TXN_NS: &str = "kafka.txn";
pub const KAFKA_PRODUCER_IDS_NS: &str = "kafka.producer_ids";
/// The key of the next unreserved producer id in [`KAFKA_PRODUCER_IDS_NS`].
pub const NEXT_PRODUCER_ID_KEY: &str = "next";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub name: String,
    #[serde(with = "hex_u128")]
    pub topic_id: u128,
    pub partitions: Vec<u32>,
    pub configs: BTreeMap<String, String>,
}

/// A queue: shared delivery over partition 0 of the topic of the same name, its delivery
/// state kept as records in an internal partition (no topic names it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueueRecord {
    pub name: String,
    pub state_partition: u32,
    /// The declare created the topic: deleting the queue deletes it too. A queue declared
    /// over an existing topic (a Kafka topic read as a queue) leaves it when deleted.
    #[serde(default)]
    pub owns_topic: bool,
    /// Queue settings (lease, delivery limit; the door's arguments), as strings.
    pub settings: BTreeMap<String, String>,
    /// The partition the queue delivers from when it is not partition 0 of the topic of
    /// its own name (a Kafka share group's share-partition, `queue/share.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<(String, i32)>,
}

/// A version-1 image's group: its generation went to the Kafka coordinator's extension
/// entries, its offsets to [`MetaImage::offsets`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LegacyGroupRecord {
    pub group_id: String,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub offsets: Vec<(String, i32, CommittedOffset)>,
}

/// u128 as a 32-digit hex string (JSON numbers cannot hold it).
mod hex_u128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

/// One change to the metadata image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum MetaRecord {
    TopicCreated(TopicRecord),
    TopicDeleted {
        name: String,
    },
    PartitionsAdded {
        name: String,
        partitions: Vec<u32>,
    },
    TopicConfigsSet {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Committed offsets of a group (any protocol's consumer group or subscription).
    OffsetsCommitted {
        group_id: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    OffsetsDeleted {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
    /// Every committed offset of a group goes.
    GroupDeleted {
        group_id: String,
    },
    /// A queue was declared over the topic of its name.
    QueueDeclared(QueueRecord),
    QueueDeleted {
        name: String,
    },
    /// A layer above the core (a front door's coordinator) sets (`Some`) or removes
    /// (`None`) one entry of its own namespace. The core stores it and never reads it.
    Extension {
        namespace: String,
        key: String,
        value: Option<serde_json::Value>,
    },
    /// Version 1 (read only): a Kafka group's generation.
    GroupGeneration {
        group_id: String,
        generation_id: i32,
        protocol_type: Option<String>,
    },
    /// Version 1 (read only): producer ids reserved up to here.
    ProducerIdsReserved {
        next_producer_id: i64,
    },
    /// Version 1 (read only): a transactional id's whole state.
    TxnUpdated(serde_json::Value),
    /// Version 1 (read only): a transactional id expired.
    TxnRemoved {
        transactional_id: String,
    },
}

/// The whole metadata image.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MetaImage {
    pub version: u32,
    pub topics: BTreeMap<String, TopicRecord>,
    pub next_partition_id: u32,
    /// Committed offsets by group, then (topic, partition).
    #[serde(default)]
    pub offsets: BTreeMap<String, BTreeMap<String, Vec<(i32, CommittedOffset)>>>,
    /// Queues by name.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueRecord>,
    /// Entries of the layers above the core, by namespace and key ([`MetaRecord::Extension`]).
    #[serde(default)]
    pub extensions: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Version 1 fields, moved by [`MetaImage::upgrade`].
    #[serde(default, skip_serializing)]
    groups: BTreeMap<String, LegacyGroupRecord>,
    #[serde(default, skip_serializing)]
    next_producer_id: i64,
    #[serde(default, skip_serializing)]
    transactions: BTreeMap<String, serde_json::Value>,
}

impl MetaImage {
    pub fn apply(&mut self, r: MetaRecord) {
        match r {
            MetaRecord::TopicCreated(t) => {
                let max = t
                    .partitions
                    .iter()
                    .copied()
                    .max()
                    .map(|m| m + 1)
                    .unwrap_or(0);
                self.next_partition_id = self.next_partition_id.max(max);
                self.topics.insert(t.name.clone(), t);
            }
            MetaRecord::TopicDeleted { name } => {
                self.topics.remove(&name);
                for topics in self.offsets.values_mut() {
                    topics.remove(&name);
                }
                self.offsets.retain(|_, topics| !topics.is_empty());
            }
            MetaRecord::PartitionsAdded { name, partitions } => {
                if let Some(max) = partitions.iter().copied().max() {
                    self.next_partition_id = self.next_partition_id.max(max + 1);
                }
                if let Some(t) = self.topics.get_mut(&name) {
                    t.partitions.extend(partitions);
                }
            }
            MetaRecord::TopicConfigsSet { name, configs } => {
                if let Some(t) = self.topics.get_mut(&name) {
                    t.configs = configs;
                }
            }
            MetaRecord::OffsetsCommitted { group_id, offsets } => {
                self.commit(&group_id, offsets);
            }
            MetaRecord::OffsetsDeleted {
                group_id,
                partitions,
            } => {
                if let Some(topics) = self.offsets.get_mut(&group_id) {
                    for (t, p) in partitions {
                        if let Some(parts) = topics.get_mut(&t) {
                            parts.retain(|(q, _)| *q != p);
                        }
                    }
                    topics.retain(|_, parts| !parts.is_empty());
                }
                self.offsets.retain(|_, topics| !topics.is_empty());
            }
            MetaRecord::GroupDeleted { group_id } => {
                self.offsets.remove(&group_id);
                // Version 1 deleted the group's generation with it.
                self.set_extension(KAFKA_GROUP_NS, &group_id, None);
            }
            MetaRecord::QueueDeclared(q) => {
                self.next_partition_id = self.next_partition_id.max(q.state_partition + 1);
                self.queues.insert(q.name.clone(), q);
            }
            MetaRecord::QueueDeleted { name } => {
                self.queues.remove(&name);
            }
            MetaRecord::Extension {
                namespace,
                key,
                value,
            } => self.set_extension(&namespace, &key, value),
            legacy => self.apply_v1(legacy),
        }
    }

    /// Version-1 records, as the extension entries the Kafka coordinator now writes.
    fn apply_v1(&mut self, r: MetaRecord) {
        match r {
            MetaRecord::GroupGeneration {
                group_id,
                generation_id,
                protocol_type,
            } => {
                let value = serde_json::json!({
                    "generation_id": generation_id,
                    "protocol_type": protocol_type,
                });
                self.set_extension(KAFKA_GROUP_NS, &group_id, Some(value));
            }
            MetaRecord::ProducerIdsReserved { next_producer_id } => {
                let ids = self
                    .extensions
                    .entry(KAFKA_PRODUCER_IDS_NS.to_string())
                    .or_default();
                let now = ids
                    .get(NEXT_PRODUCER_ID_KEY)
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0);
                ids.insert(
                    NEXT_PRODUCER_ID_KEY.to_string(),
                    next_producer_id.max(now).into(),
                );
            }
            MetaRecord::TxnUpdated(value) => {
                if let Some(id) = value.get("transactional_id").and_then(|v| v.as_str()) {
                    let id = id.to_string();
                    self.set_extension(KAFKA_TXN_NS, &id, Some(value));
                }
            }
            MetaRecord::TxnRemoved { transactional_id } => {
                self.set_extension(KAFKA_TXN_NS, &transactional_id, None);
            }
            _ => unreachable!("apply_v1 is called with version-1 records only"),
        }
    }

    fn commit(&mut self, group_id: &str, offsets: Vec<(String, i32, CommittedOffset)>) {
        let topics = self.offsets.entry(group_id.to_string()).or_default();
        for (t, p, o) in offsets {
            let parts = topics.entry(t).or_default();
            match parts.iter_mut().find(|(q, _)| *q == p) {
                Some(slot) => slot.1 = o,
                None => parts.push((p, o)),
            }
        }
    }

    fn set_extension(&mut self, namespace: &str, key: &str, value: Option<serde_json::Value>) {
        match value {
            Some(v) => {
                self.extensions
                    .entry(namespace.to_string())
                    .or_default()
                    .insert(key.to_string(), v);
            }
            None => {
                if let Some(ns) = self.extensions.get_mut(namespace) {
                    ns.remove(key);
                    if ns.is_empty() {
                        self.extensions.remove(namespace);
                    }
                }
            }
        }
    }

    /// Moves a version-1 image's group, producer-id and transaction fields into
    /// [`MetaImage::offsets`] and the Kafka coordinator's extension entries.
    pub fn upgrade(&mut self) {
        for (group_id, g) in std::mem::take(&mut self.groups) {
            if !g.offsets.is_empty() {
                self.commit(&group_id, g.offsets);
            }
            self.apply_v1(MetaRecord::GroupGeneration {
                group_id,
                generation_id: g.generation_id,
                protocol_type: g.protocol_type,
            });
        }
        let next = std::mem::take(&mut self.next_producer_id);
        if next > 0 {
            self.apply_v1(MetaRecord::ProducerIdsReserved {
                next_producer_id: next,
            });
        }
        for (_, t) in std::mem::take(&mut self.transactions) {
            self.apply_v1(MetaRecord::TxnUpdated(t));
        }
        self.version = SNAPSHOT_VERSION;
    }

    /// The entries of one extension namespace.
    pub fn extension(
        &self,
        namespace: &str,
    ) -> impl Iterator<Item = (&String, &serde_json::Value)> {
        self.extensions.get(namespace).into_iter().flatten()
    }

    /// Every committed offset, as (group, topic, partition, offset).
    pub fn committed_offsets(&self) -> impl Iterator<Item = (&str, &str, i32, &CommittedOffset)> {
        self.offsets.iter().flat_map(|(g, topics)| {
            topics.iter().flat_map(move |(t, parts)| {
                parts
                    .iter()
                    .map(move |(p, o)| (g.as_str(), t.as_str(), *p, o))
            })
        })
    }
}
