//! The topic table: names, ids, partition → storage `PartitionId`, configs.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use common::PartitionId;

use crate::error::{BrokerError, Result};
use crate::metrics::TopicCounters;
use crate::topic_config::TopicConfig;

/// Kafka's topic name limit.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

#[derive(Clone, Debug)]
pub struct Topic {
    pub name: String,
    /// Kafka topic id (a UUID as u128; never 0).
    pub topic_id: u128,
    /// Storage partition of each partition index.
    pub partitions: Vec<PartitionId>,
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
    pub counters: TopicCounters,
}

/// What front doors see of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: u128,
    pub partitions: u32,
}

impl Topic {
    pub fn info(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            topic_id: self.topic_id,
            partitions: self.partitions.len() as u32,
        }
    }

    pub fn partition(&self, index: i32) -> Result<PartitionId> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i).copied())
            .ok_or(BrokerError::UnknownTopicOrPartition)
    }
}

#[derive(Debug, Default)]
pub struct TopicRegistry {
    pub by_name: HashMap<String, Topic>,
    pub by_id: HashMap<u128, String>,
    pub next_partition_id: u32,
    pub partition_count: u32,
}

impl TopicRegistry {
    pub fn get(&self, name: &str) -> Result<&Topic> {
        self.by_name
            .get(name)
            .ok_or(BrokerError::UnknownTopicOrPartition)
    }

    pub fn name_of(&self, topic_id: u128) -> Option<&str> {
        self.by_id.get(&topic_id).map(String::as_str)
    }

    pub fn insert(&mut self, t: Topic) {
        self.partition_count += t.partitions.len() as u32;
        if let Some(max) = t.partitions.iter().map(|p| p.0).max() {
            self.next_partition_id = self.next_partition_id.max(max + 1);
        }
        self.by_id.insert(t.topic_id, t.name.clone());
        self.by_name.insert(t.name.clone(), t);
    }

    pub fn remove(&mut self, name: &str) -> Option<Topic> {
        let t = self.by_name.remove(name)?;
        self.by_id.remove(&t.topic_id);
        self.partition_count -= t.partitions.len() as u32;
        Some(t)
    }

    /// Reserves `n` fresh storage partition ids.
    pub fn allocate_partitions(&mut self, n: u32) -> Result<Vec<PartitionId>> {
        let end = self
            .next_partition_id
            .checked_add(n)
            .ok_or_else(|| BrokerError::LimitReached("partition ids exhausted".into()))?;
        let ids = (self.next_partition_id..end).map(PartitionId).collect();
        self.next_partition_id = end;
        Ok(ids)
    }
}

/// Kafka's rules: 1..=249 chars of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(BrokerError::InvalidTopic(format!("{name:?}: {why}")));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("reserved name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only [a-zA-Z0-9._-] allowed");
    }
    Ok(())
}

/// A random (per-process seeded) non-zero 128-bit id with UUIDv4 version bits.
pub fn new_topic_id(name: &str, salt: u64) -> u128 {
    let s = std::collections::hash_map::RandomState::new();
    let mut h1 = s.build_hasher();
    h1.write(name.as_bytes());
    h1.write_u64(salt);
    let a = h1.finish();
    let mut h2 = s.build_hasher();
    h2.write_u64(a ^ 0x9e37_79b9_7f4a_7c15);
    h2.write_u64(salt);
    let b = h2.finish();
    let raw = (u128::from(a) << 64) | u128::from(b);
    // Version 4, variant 1 (RFC 4122).
    let v = (raw & !(0xF_u128 << 76)) | (0x4_u128 << 76);
    let v = (v & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    v.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_topic_id("a", 1), new_topic_id("a", 2));
        assert_ne!(new_topic_id("a", 1), 0);
    }
}
