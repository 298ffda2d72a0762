//! Committed offsets, for any protocol's consumer groups: Kafka's groups, and later
//! RocketMQ's and MQTT's subscriptions. A group here is a name and its offsets; who may
//! commit (generations, members) is the business of the layer above (`kafka-coord`).
//!
//! Every change goes record → metadata store → memory, under the store's lock, so a commit
//! that could not be saved is an error and changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::error::Result;
use crate::metadata::{MetaImage, MetaRecord};

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// (topic, partition, offset) of one partition's committed offset.
pub type PartitionOffset = (String, i32, CommittedOffset);

/// Committed offsets by group, then (topic, partition).
#[derive(Debug, Default)]
pub struct OffsetStore {
    groups: BTreeMap<String, BTreeMap<(String, i32), CommittedOffset>>,
}

impl OffsetStore {
    pub(crate) fn from_image(image: &MetaImage) -> OffsetStore {
        let mut store = OffsetStore::default();
        for (g, t, p, o) in image.committed_offsets() {
            store
                .groups
                .entry(g.to_string())
                .or_default()
                .insert((t.to_string(), p), o.clone());
        }
        store
    }

    fn apply(&mut self, r: &MetaRecord) {
        match r {
            MetaRecord::OffsetsCommitted { group_id, offsets } => {
                let g = self.groups.entry(group_id.clone()).or_default();
                for (t, p, o) in offsets {
                    g.insert((t.clone(), *p), o.clone());
                }
            }
            MetaRecord::OffsetsDeleted {
                group_id,
                partitions,
            } => {
                if let Some(g) = self.groups.get_mut(group_id) {
                    for k in partitions {
                        g.remove(k);
                    }
                    if g.is_empty() {
                        self.groups.remove(group_id);
                    }
                }
            }
            MetaRecord::GroupDeleted { group_id } => {
                self.groups.remove(group_id);
            }
            MetaRecord::TopicDeleted { name } => {
                for g in self.groups.values_mut() {
                    g.retain(|(t, _), _| t != name);
                }
                self.groups.retain(|_, g| !g.is_empty());
            }
            _ => {}
        }
    }

    fn fetch(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let g = self.groups.get(group_id);
        match partitions {
            Some(parts) => parts
                .iter()
                .map(|(t, p)| {
                    let o = g.and_then(|g| g.get(&(t.clone(), *p)).cloned());
                    (t.clone(), *p, o)
                })
                .collect(),
            None => g
                .into_iter()
                .flatten()
                .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                .collect(),
        }
    }
}

impl Broker {
    /// Saves a record about committed offsets, then applies it (see the module doc).
    fn change_offsets(&self, record: MetaRecord) -> Result<()> {
        let mut offsets = self.offsets.lock();
        self.persist(record.clone(), self.metadata_durable())?;
        offsets.apply(&record);
        Ok(())
    }

    /// Commits offsets of `group_id`. The caller checked the partitions exist and the
    /// committer's right to commit.
    pub fn commit_offsets(&self, group_id: &str, offsets: Vec<PartitionOffset>) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.change_offsets(MetaRecord::OffsetsCommitted {
            group_id: group_id.to_string(),
            offsets,
        })
    }

    /// Committed offsets of `group_id`; `None`: every partition it has committed.
    pub fn committed_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        self.offsets.lock().fetch(group_id, partitions)
    }

    /// Drops the committed offsets of `partitions`.
    pub fn delete_committed_offsets(
        &self,
        group_id: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.change_offsets(MetaRecord::OffsetsDeleted {
            group_id: group_id.to_string(),
            partitions,
        })
    }

    /// Drops every committed offset of `group_id`.
    pub fn delete_offset_group(&self, group_id: &str) -> Result<()> {
        self.change_offsets(MetaRecord::GroupDeleted {
            group_id: group_id.to_string(),
        })
    }

    /// Groups holding committed offsets.
    pub fn offset_groups(&self) -> Vec<String> {
        self.offsets.lock().groups.keys().cloned().collect()
    }

    /// Offsets committed before `cutoff_ms` in the groups `idle` accepts, by group.
    pub fn offsets_older_than(
        &self,
        cutoff_ms: i64,
        idle: impl Fn(&str) -> bool,
    ) -> Vec<(String, Vec<(String, i32)>)> {
        let offsets = self.offsets.lock();
        offsets
            .groups
            .iter()
            .filter(|(g, _)| idle(g))
            .filter_map(|(g, parts)| {
                let old: Vec<(String, i32)> = parts
                    .iter()
                    .filter(|(_, o)| o.commit_timestamp_ms < cutoff_ms)
                    .map(|(k, _)| k.clone())
                    .collect();
                (!old.is_empty()).then(|| (g.clone(), old))
            })
            .collect()
    }

    /// Topics deleted: their offsets go (the metadata record of the deletion did it on disk).
    pub(crate) fn forget_topic_offsets(&self, topic: &str) {
        self.offsets.lock().apply(&MetaRecord::TopicDeleted {
            name: topic.to_string(),
        });
    }

    /// (group, topic, partition, high watermark - committed) for every committed offset.
    pub fn group_lags(&self) -> Vec<(String, String, i32, i64)> {
        let all: Vec<(String, String, i32, i64)> = {
            let offsets = self.offsets.lock();
            offsets
                .groups
                .iter()
                .flat_map(|(g, parts)| {
                    parts
                        .iter()
                        .map(move |((t, p), o)| (g.clone(), t.clone(), *p, o.offset))
                })
                .collect()
        };
        all.into_iter()
            .filter_map(|(g, t, p, committed)| {
                let marks = self.watermarks(&t, p).ok()?;
                let lag = marks.high_watermark.saturating_sub(committed).max(0);
                Some((g, t, p, lag))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(o: i64) -> CommittedOffset {
        CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: o,
        }
    }

    #[test]
    fn records_apply_as_the_image_does() {
        let records = vec![
            MetaRecord::OffsetsCommitted {
                group_id: "g".into(),
                offsets: vec![("t".into(), 0, offset(1)), ("u".into(), 1, offset(2))],
            },
            MetaRecord::OffsetsCommitted {
                group_id: "h".into(),
                offsets: vec![("t".into(), 0, offset(3))],
            },
            MetaRecord::OffsetsDeleted {
                group_id: "g".into(),
                partitions: vec![("u".into(), 1)],
            },
            MetaRecord::TopicDeleted { name: "t".into() },
            MetaRecord::OffsetsCommitted {
                group_id: "g".into(),
                offsets: vec![("v".into(), 2, offset(4))],
            },
        ];
        let mut store = OffsetStore::default();
        let mut image = MetaImage::default();
        for r in records {
            store.apply(&r);
            image.apply(r);
            let from_image = OffsetStore::from_image(&image);
            assert_eq!(
                format!("{:?}", from_image.groups),
                format!("{:?}", store.groups)
            );
        }
        assert_eq!(
            store.fetch("g", None),
            vec![("v".into(), 2, Some(offset(4)))]
        );
        assert!(store.fetch("h", None).is_empty());
    }
}
