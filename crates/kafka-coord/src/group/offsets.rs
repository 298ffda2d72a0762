//! Who may commit or delete a group's offsets (Kafka's rules). The offsets themselves live
//! in the core's offset store; the wiring (`groups.rs`) checks here, then saves there.

use common::TimestampMs;

use super::coordinator::GroupCoordinator;
use super::group::Group;
use super::types::{GroupError, GroupState};

impl GroupCoordinator {
    /// OffsetCommit's checks (Kafka's rules): a valid group id, metadata within its limit,
    /// and a member of the current generation — or, for a group with no members, a commit
    /// from outside the group protocol (`generation_id < 0`, consumers using assign()),
    /// which creates the group if it is new. Returns whether the group was created (to
    /// undo with [`GroupCoordinator::forget_group`] if the commit cannot be saved).
    pub fn check_commit(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        metadata_bytes: impl IntoIterator<Item = usize>,
        now_ms: TimestampMs,
    ) -> Result<bool, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        if metadata_bytes
            .into_iter()
            .any(|len| len > self.config.max_offset_metadata_bytes)
        {
            return Err(GroupError::OffsetMetadataTooLarge);
        }
        let mut created = false;
        if !self.groups.contains_key(group_id) {
            if generation_id >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            if self.groups.len() >= self.config.max_groups {
                return Err(GroupError::GroupMaxSizeReached);
            }
            self.groups
                .insert(group_id.to_string(), Group::new(group_id.to_string()));
            created = true;
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
        Ok(created)
    }

    /// TxnOffsetCommit's check (KIP-447): a producer that names its consumer's group
    /// membership (`generation_id >= 0`, TxnOffsetCommit v3+) must name the group's current
    /// generation and a member of it, so a zombie that lost its partitions in a rebalance
    /// cannot commit offsets for them. Older clients (generation -1) are not checked.
    pub fn check_txn_commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        if generation_id < 0 {
            return Ok(());
        }
        let group = self
            .groups
            .get(group_id)
            .ok_or(GroupError::IllegalGeneration)?;
        group
            .check_member(member_id, group_instance_id, generation_id)
            .map(|_| ())
    }

    /// Whether the coordinator knows `group_id`.
    pub fn has_group(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// Whether `group_id` has no members (unknown groups count as idle): Kafka expires
    /// committed offsets only of such groups.
    pub fn is_idle(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_none_or(|g| g.state == GroupState::Empty)
    }

    /// OffsetDelete's checks: the group exists, and a live group's subscribed topics are
    /// refused per partition.
    pub fn check_delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed_topics: &[String],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let group = self
            .groups
            .get(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        let active = group.state != GroupState::Empty;
        Ok(partitions
            .iter()
            .map(|(t, _)| {
                if active && subscribed_topics.contains(t) {
                    Err(GroupError::GroupSubscribedToTopic)
                } else {
                    Ok(())
                }
            })
            .collect())
    }

    /// Forgets an empty group (its offsets expired, or a commit that created it failed).
    pub fn forget_group(&mut self, group_id: &str) {
        let idle = self
            .groups
            .get(group_id)
            .is_some_and(|g| g.state == GroupState::Empty && g.pending_members.is_empty());
        if idle {
            self.groups.remove(group_id);
        }
    }
}
