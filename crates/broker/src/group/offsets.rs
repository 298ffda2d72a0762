//! Committed offsets of groups: Kafka's commit rules, fetch, delete, retention.

use common::TimestampMs;

use super::coordinator::{ExpiredOffsets, GroupCoordinator};
use super::group::Group;
use super::types::{CommittedOffset, GroupError, GroupState};

impl GroupCoordinator {
    /// OffsetCommit validation (Kafka's rules) and store.
    pub fn commit_offsets(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        offsets: Vec<(String, i32, CommittedOffset)>,
        now_ms: TimestampMs,
    ) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if offsets.iter().any(|(_, _, o)| {
            o.metadata
                .as_ref()
                .is_some_and(|m| m.len() > self.config.max_offset_metadata_bytes)
        }) {
            return Err(GroupError::OffsetMetadataTooLarge);
        }
        if !self.groups.contains_key(group_id) {
            if generation_id >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            if self.groups.len() >= self.config.max_groups {
                return Err(GroupError::GroupMaxSizeReached);
            }
            self.groups
                .insert(group_id.to_string(), Group::new(group_id.to_string()));
        }
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        if generation_id < 0 && group.state == GroupState::Empty {
            // Manual commits of a consumer outside the group protocol (assign()).
        } else if group.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        } else {
            group.check_member(member_id, group_instance_id, generation_id)?;
            if let Some(m) = group.members.get_mut(member_id) {
                m.last_heartbeat_ms = now_ms;
            }
        }
        for (topic, partition, o) in offsets {
            group.offsets.insert((topic, partition), o);
        }
        Ok(())
    }

    /// Undoes a commit whose record could not be persisted: each partition gets its
    /// previous offset back (or none), and a group the commit created goes again.
    pub fn revert_offsets(
        &mut self,
        group_id: &str,
        previous: Vec<(String, i32, Option<CommittedOffset>)>,
        group_existed: bool,
    ) {
        if !group_existed {
            self.groups.remove(group_id);
            return;
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return;
        };
        for (topic, partition, o) in previous {
            match o {
                Some(o) => {
                    group.offsets.insert((topic, partition), o);
                }
                None => {
                    group.offsets.remove(&(topic, partition));
                }
            }
        }
    }

    /// Whether the coordinator knows `group_id`.
    pub fn has_group(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// Committed offsets; `None` partitions means all of the group's.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        let group = self.groups.get(group_id);
        match partitions {
            Some(parts) => parts
                .iter()
                .map(|(t, p)| {
                    let o = group.and_then(|g| g.offsets.get(&(t.clone(), *p)).cloned());
                    (t.clone(), *p, o)
                })
                .collect(),
            None => group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), o)| (t.clone(), *p, Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// OffsetDelete: refused per partition for topics the live group subscribes to.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed_topics: &[String],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        let active = group.state != GroupState::Empty;
        Ok(partitions
            .iter()
            .map(|(t, p)| {
                if active && subscribed_topics.contains(t) {
                    return Err(GroupError::GroupSubscribedToTopic);
                }
                group.offsets.remove(&(t.clone(), *p));
                Ok(())
            })
            .collect())
    }

    /// Kafka's offset retention: in groups with no members, committed offsets older than
    /// `retention_ms` expire, and a group left with nothing is forgotten. Returns the
    /// expiring (group, partitions) and the groups to forget, changing nothing: the caller
    /// persists each change, then applies it with [`GroupCoordinator::remove_offsets`] and
    /// [`GroupCoordinator::forget_group`] (a change that could not be saved is not made).
    pub fn expired_offsets(
        &self,
        now_ms: TimestampMs,
        retention_ms: i64,
    ) -> (Vec<ExpiredOffsets>, Vec<String>) {
        let mut dropped = Vec::new();
        let mut forgotten = Vec::new();
        for g in self.groups.values() {
            if g.state != GroupState::Empty {
                continue;
            }
            let old: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, o)| now_ms.saturating_sub(o.commit_timestamp_ms) > retention_ms)
                .map(|(k, _)| k.clone())
                .collect();
            if !old.is_empty() {
                if old.len() == g.offsets.len() && g.pending_members.is_empty() {
                    forgotten.push(g.group_id.clone());
                }
                dropped.push((g.group_id.clone(), old));
            }
        }
        (dropped, forgotten)
    }

    /// Drops `partitions`' committed offsets of `group_id` (expired, or deleted).
    pub fn remove_offsets(&mut self, group_id: &str, partitions: &[(String, i32)]) {
        if let Some(g) = self.groups.get_mut(group_id) {
            for k in partitions {
                g.offsets.remove(k);
            }
        }
    }

    /// Forgets a group that is empty and holds no offsets (after its offsets expired).
    pub fn forget_group(&mut self, group_id: &str) {
        let idle = self.groups.get(group_id).is_some_and(|g| {
            g.state == GroupState::Empty && g.offsets.is_empty() && g.pending_members.is_empty()
        });
        if idle {
            self.groups.remove(group_id);
        }
    }

    /// Drops every committed offset of a deleted topic.
    pub fn forget_topic(&mut self, topic: &str) {
        for g in self.groups.values_mut() {
            g.offsets.retain(|(t, _), _| t != topic);
        }
    }
}
