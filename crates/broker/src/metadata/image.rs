//! The metadata state machine: [`MetaRecord`]s (one change each) applied in order to a
//! [`MetaImage`] (the whole state). Pure: no I/O. A [`super::MetadataStore`] persists the
//! records; every change the broker makes goes record → store → `apply`, so the image a
//! store holds is always what a restart would rebuild.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::group::CommittedOffset;

/// Format version written in every snapshot.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub name: String,
    #[serde(with = "hex_u128")]
    pub topic_id: u128,
    pub partitions: Vec<u32>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupRecord {
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
    OffsetsCommitted {
        group_id: String,
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    OffsetsDeleted {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
    GroupGeneration {
        group_id: String,
        generation_id: i32,
        protocol_type: Option<String>,
    },
    GroupDeleted {
        group_id: String,
    },
    ProducerIdsReserved {
        next_producer_id: i64,
    },
    /// A transactional id's whole state after a transition.
    TxnUpdated(crate::txn::coordinator::TxnRecord),
    /// A transactional id expired.
    TxnRemoved {
        transactional_id: String,
    },
}

/// The whole metadata image.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MetaImage {
    pub version: u32,
    pub topics: BTreeMap<String, TopicRecord>,
    pub groups: BTreeMap<String, GroupRecord>,
    pub next_partition_id: u32,
    pub next_producer_id: i64,
    /// Transaction coordinator state by transactional id.
    #[serde(default)]
    pub transactions: BTreeMap<String, crate::txn::coordinator::TxnRecord>,
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
                for g in self.groups.values_mut() {
                    g.offsets.retain(|(t, _, _)| *t != name);
                }
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
                let g = self.group(&group_id);
                for (t, p, o) in offsets {
                    match g
                        .offsets
                        .iter_mut()
                        .find(|(gt, gp, _)| *gt == t && *gp == p)
                    {
                        Some(slot) => slot.2 = o,
                        None => g.offsets.push((t, p, o)),
                    }
                }
            }
            MetaRecord::OffsetsDeleted {
                group_id,
                partitions,
            } => {
                let g = self.group(&group_id);
                g.offsets
                    .retain(|(t, p, _)| !partitions.iter().any(|(dt, dp)| dt == t && dp == p));
            }
            MetaRecord::GroupGeneration {
                group_id,
                generation_id,
                protocol_type,
            } => {
                let g = self.group(&group_id);
                g.generation_id = generation_id;
                g.protocol_type = protocol_type;
            }
            MetaRecord::GroupDeleted { group_id } => {
                self.groups.remove(&group_id);
            }
            MetaRecord::ProducerIdsReserved { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(next_producer_id);
            }
            MetaRecord::TxnUpdated(t) => {
                self.transactions.insert(t.transactional_id.clone(), t);
            }
            MetaRecord::TxnRemoved { transactional_id } => {
                self.transactions.remove(&transactional_id);
            }
        }
    }

    fn group(&mut self, group_id: &str) -> &mut GroupRecord {
        self.groups
            .entry(group_id.to_string())
            .or_insert_with(|| GroupRecord {
                group_id: group_id.to_string(),
                generation_id: 0,
                protocol_type: None,
                offsets: Vec::new(),
            })
    }
}
