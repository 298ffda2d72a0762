//! The classic group coordinator as a state machine: requests and `tick(now)` in, replies
//! and `Completion`s out. It never reads a clock or does I/O; the caller passes `now_ms`
//! and routes parked replies (see `crate::broker::groups`).

use std::collections::HashMap;

use bytes::Bytes;
use common::TimestampMs;

use super::group::Group;
use super::member::Member;
use super::types::{
    CommittedOffset, Completion, GroupDescription, GroupError, GroupListing, GroupState,
    JoinOutcome, JoinRequest, JoinedMember, LeavingMember, MemberDescription, Reply, SyncOutcome,
    SyncRequest,
};

/// Limits and timing of the coordinator (Kafka's broker-side group settings).
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub initial_rebalance_delay_ms: u64,
    pub max_groups: usize,
    pub max_members_per_group: usize,
    pub max_protocols_per_member: usize,
    pub max_offset_metadata_bytes: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_groups: 100_000,
            max_members_per_group: 1_000,
            max_protocols_per_member: 64,
            max_offset_metadata_bytes: 4096,
        }
    }
}

#[derive(Debug, Default)]
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    groups: HashMap<String, Group>,
    next_member_seq: u64,
}

type Out = Vec<Completion>;

/// (group id, partitions whose committed offsets expired).
pub type ExpiredOffsets = (String, Vec<(String, i32)>);

/// (group id, generation, protocol type, committed offsets) of one group.
pub type GroupExport = (
    String,
    i32,
    Option<String>,
    Vec<((String, i32), CommittedOffset)>,
);

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig) -> Self {
        Self {
            config,
            groups: HashMap::new(),
            next_member_seq: 0,
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    fn new_member_id(&mut self, client_id: &str, now_ms: TimestampMs) -> String {
        self.next_member_seq += 1;
        let prefix: String = client_id.chars().take(64).collect();
        format!("{prefix}-{now_ms:x}-{:x}", self.next_member_seq)
    }

    pub fn join(&mut self, req: JoinRequest, now_ms: TimestampMs) -> (Reply<JoinOutcome>, Out) {
        let mut out = Vec::new();
        let reply = self.join_inner(req, now_ms, &mut out);
        (reply, out)
    }

    fn join_inner(
        &mut self,
        req: JoinRequest,
        now_ms: TimestampMs,
        out: &mut Out,
    ) -> Reply<JoinOutcome> {
        use GroupError as E;
        if req.group_id.is_empty() {
            return Reply::Now(Err(E::InvalidGroupId));
        }
        let timeout = req.session_timeout_ms;
        if timeout < self.config.min_session_timeout_ms
            || timeout > self.config.max_session_timeout_ms
        {
            return Reply::Now(Err(E::InvalidSessionTimeout));
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || req.protocols.len() > self.config.max_protocols_per_member
        {
            return Reply::Now(Err(E::InconsistentGroupProtocol));
        }
        if !self.groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                return Reply::Now(Err(E::UnknownMemberId));
            }
            if self.groups.len() >= self.config.max_groups {
                return Reply::Now(Err(E::GroupMaxSizeReached));
            }
            self.groups
                .insert(req.group_id.clone(), Group::new(req.group_id.clone()));
        }
        let new_id = if req.member_id.is_empty() {
            Some(self.new_member_id(&req.client_id, now_ms))
        } else {
            None
        };
        let delay = self.config.initial_rebalance_delay_ms;
        let max_members = self.config.max_members_per_group;
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return Reply::Now(Err(E::UnknownMemberId));
        };
        let offered: Vec<String> = req.protocols.iter().map(|p| p.name.clone()).collect();
        let others_compatible = {
            let others: Vec<&Member> = group
                .members
                .values()
                .filter(|m| m.member_id != req.member_id)
                .collect();
            others.is_empty()
                || (group.protocol_type.as_deref() == Some(req.protocol_type.as_str())
                    && offered.iter().any(|n| others.iter().all(|m| m.supports(n))))
        };
        if !others_compatible {
            return Reply::Now(Err(E::InconsistentGroupProtocol));
        }
        match new_id {
            Some(new_id) => {
                if let Some(instance) = req.group_instance_id.clone() {
                    if let Some(old_id) = group.static_members.get(&instance).cloned() {
                        return rejoin_static(group, req, old_id, new_id, now_ms, delay, out);
                    }
                } else if req.require_known_member_id {
                    group
                        .pending_members
                        .insert(new_id.clone(), now_ms + i64::from(req.session_timeout_ms));
                    return Reply::Now(Err(E::MemberIdRequired(new_id)));
                }
                if group.members.len() >= max_members {
                    return Reply::Now(Err(E::GroupMaxSizeReached));
                }
                add_member_and_rebalance(group, req, new_id, now_ms, delay, out)
            }
            None => {
                let member_id = req.member_id.clone();
                if group.pending_members.remove(&member_id).is_some() {
                    if group.members.len() >= max_members {
                        return Reply::Now(Err(E::GroupMaxSizeReached));
                    }
                    return add_member_and_rebalance(group, req, member_id, now_ms, delay, out);
                }
                if let Some(instance) = &req.group_instance_id
                    && let Some(owner) = group.static_members.get(instance)
                    && *owner != member_id
                {
                    return Reply::Now(Err(E::FencedInstanceId));
                }
                rejoin_known(group, req, now_ms, delay, out)
            }
        }
    }

    pub fn sync(&mut self, req: SyncRequest, now_ms: TimestampMs) -> (Reply<SyncOutcome>, Out) {
        let mut out = Vec::new();
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return (Reply::Now(Err(GroupError::UnknownMemberId)), out);
        };
        if let Err(e) = group.check_member(
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        ) {
            return (Reply::Now(Err(e)), out);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != group.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n) != group.protocol_name.as_ref())
        {
            return (Reply::Now(Err(GroupError::InconsistentGroupProtocol)), out);
        }
        let reply = match group.state {
            GroupState::PreparingRebalance => Reply::Now(Err(GroupError::RebalanceInProgress)),
            GroupState::Empty | GroupState::Dead => Reply::Now(Err(GroupError::UnknownMemberId)),
            GroupState::CompletingRebalance => {
                if let Some(m) = group.members.get_mut(&req.member_id) {
                    m.awaiting_sync = true;
                    m.last_heartbeat_ms = now_ms;
                }
                if group.leader_id.as_deref() == Some(req.member_id.as_str()) {
                    group.apply_assignments(req.assignments, &mut out);
                }
                Reply::Parked {
                    member_id: req.member_id,
                }
            }
            GroupState::Stable => {
                let assignment = group
                    .members
                    .get_mut(&req.member_id)
                    .map(|m| {
                        m.last_heartbeat_ms = now_ms;
                        m.assignment.clone()
                    })
                    .unwrap_or_default();
                Reply::Now(Ok(SyncOutcome {
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment,
                }))
            }
        };
        (reply, out)
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: TimestampMs,
    ) -> Result<(), GroupError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        group.check_member(member_id, group_instance_id, generation_id)?;
        if let Some(m) = group.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
        match group.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    pub fn leave(
        &mut self,
        group_id: &str,
        leaving: &[LeavingMember],
        now_ms: TimestampMs,
    ) -> (Vec<Result<(), GroupError>>, Out) {
        let mut out = Vec::new();
        let delay = self.config.initial_rebalance_delay_ms;
        let Some(group) = self.groups.get_mut(group_id) else {
            return (
                leaving
                    .iter()
                    .map(|_| Err(GroupError::UnknownMemberId))
                    .collect(),
                out,
            );
        };
        let mut removed_any = false;
        let results = leaving
            .iter()
            .map(|l| {
                let member_id = match &l.group_instance_id {
                    Some(instance) => {
                        let owner = group
                            .static_members
                            .get(instance)
                            .cloned()
                            .ok_or(GroupError::UnknownMemberId)?;
                        if !l.member_id.is_empty() && l.member_id != owner {
                            return Err(GroupError::FencedInstanceId);
                        }
                        owner
                    }
                    None => l.member_id.clone(),
                };
                if group.pending_members.remove(&member_id).is_some() {
                    return Ok(());
                }
                let m = group
                    .remove_member(&member_id)
                    .ok_or(GroupError::UnknownMemberId)?;
                Group::fail_parked(&m, group_id, GroupError::UnknownMemberId, &mut out);
                removed_any = true;
                Ok(())
            })
            .collect();
        if removed_any && group.state != GroupState::Empty {
            group.prepare_rebalance(now_ms, 0, &mut out);
            let _ = delay;
            group.maybe_complete_rebalance(now_ms, &mut out);
        }
        (results, out)
    }

    /// Advances time: expires sessions and pending member ids, finishes rebalances whose
    /// deadline or initial delay passed.
    pub fn tick(&mut self, now_ms: TimestampMs) -> Out {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            group.pending_members.retain(|_, expiry| *expiry > now_ms);
            let expired: Vec<String> = group
                .members
                .values()
                // A parked JoinGroup/SyncGroup keeps its member alive (as in Kafka).
                .filter(|m| !m.awaiting_join && !m.awaiting_sync && m.session_expired(now_ms))
                .map(|m| m.member_id.clone())
                .collect();
            for id in &expired {
                if let Some(m) = group.remove_member(id) {
                    tracing::info!(group = %group.group_id, member = %id, "member session expired");
                    Group::fail_parked(&m, &group.group_id, GroupError::UnknownMemberId, &mut out);
                }
            }
            if !expired.is_empty() && group.state != GroupState::Empty {
                group.prepare_rebalance(now_ms, 0, &mut out);
            }
            group.maybe_complete_rebalance(now_ms, &mut out);
        }
        out
    }

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
    /// `retention_ms` are dropped, and a group left with nothing is forgotten. Returns the
    /// dropped (group, partitions) and the forgotten groups.
    pub fn expire_offsets(
        &mut self,
        now_ms: TimestampMs,
        retention_ms: i64,
    ) -> (Vec<ExpiredOffsets>, Vec<String>) {
        let mut dropped = Vec::new();
        let mut forgotten = Vec::new();
        for g in self.groups.values_mut() {
            if g.state != GroupState::Empty {
                continue;
            }
            let old: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, o)| now_ms.saturating_sub(o.commit_timestamp_ms) > retention_ms)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &old {
                g.offsets.remove(k);
            }
            if !old.is_empty() {
                dropped.push((g.group_id.clone(), old));
                if g.offsets.is_empty() && g.pending_members.is_empty() {
                    forgotten.push(g.group_id.clone());
                }
            }
        }
        for id in &forgotten {
            self.groups.remove(id);
        }
        (dropped, forgotten)
    }

    /// Drops every committed offset of a deleted topic.
    pub fn forget_topic(&mut self, topic: &str) {
        for g in self.groups.values_mut() {
            g.offsets.retain(|(t, _), _| t != topic);
        }
    }

    pub fn list_groups(&self) -> Vec<GroupListing> {
        let mut v: Vec<GroupListing> = self
            .groups
            .values()
            .map(|g| GroupListing {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        v.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        v
    }

    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(g) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        GroupDescription {
            group_id: g.group_id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    pub fn delete_group(&mut self, group_id: &str) -> Result<(), GroupError> {
        let g = self
            .groups
            .get(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        if g.state != GroupState::Empty {
            return Err(GroupError::NonEmptyGroup);
        }
        self.groups.remove(group_id);
        Ok(())
    }

    /// Restores a group from persisted metadata (members are not persisted: after a restart
    /// consumers rejoin and resume from committed offsets).
    pub fn restore_group(
        &mut self,
        group_id: &str,
        generation_id: i32,
        protocol_type: Option<String>,
        offsets: impl IntoIterator<Item = ((String, i32), CommittedOffset)>,
    ) {
        let g = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id.to_string()));
        g.generation_id = generation_id;
        g.protocol_type = protocol_type;
        g.offsets.extend(offsets);
    }

    /// (generation, protocol type, offsets) of every group, for snapshots and lag.
    pub fn export(&self) -> Vec<GroupExport> {
        self.groups
            .values()
            .map(|g| {
                (
                    g.group_id.clone(),
                    g.generation_id,
                    g.protocol_type.clone(),
                    g.offsets
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            })
            .collect()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn generation(&self, group_id: &str) -> Option<(i32, Option<String>)> {
        self.groups
            .get(group_id)
            .map(|g| (g.generation_id, g.protocol_type.clone()))
    }
}

fn new_member(req: &JoinRequest, member_id: String, now_ms: TimestampMs) -> Member {
    Member {
        member_id,
        group_instance_id: req.group_instance_id.clone(),
        client_id: req.client_id.clone(),
        client_host: req.client_host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: req.rebalance_timeout_ms.max(req.session_timeout_ms),
        protocols: req.protocols.clone(),
        assignment: Bytes::new(),
        last_heartbeat_ms: now_ms,
        awaiting_join: true,
        awaiting_sync: false,
    }
}

fn add_member_and_rebalance(
    group: &mut Group,
    req: JoinRequest,
    member_id: String,
    now_ms: TimestampMs,
    delay_ms: u64,
    out: &mut Out,
) -> Reply<JoinOutcome> {
    let member = new_member(&req, member_id.clone(), now_ms);
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), member_id.clone());
    }
    if group.members.is_empty() {
        group.protocol_type = Some(req.protocol_type.clone());
    }
    group.members.insert(member_id.clone(), member);
    group.prepare_rebalance(now_ms, delay_ms, out);
    group.maybe_complete_rebalance(now_ms, out);
    Reply::Parked { member_id }
}

fn current_outcome(group: &Group, member_id: &str) -> JoinOutcome {
    let leader = group.leader_id.clone().unwrap_or_default();
    let protocol = group.protocol_name.clone().unwrap_or_default();
    JoinOutcome {
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader_id: leader.clone(),
        member_id: member_id.to_string(),
        members: if leader == member_id {
            group
                .members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn rejoin_known(
    group: &mut Group,
    req: JoinRequest,
    now_ms: TimestampMs,
    delay_ms: u64,
    out: &mut Out,
) -> Reply<JoinOutcome> {
    let member_id = req.member_id.clone();
    let is_leader = group.leader_id.as_deref() == Some(member_id.as_str());
    let state = group.state;
    let Some(m) = group.members.get_mut(&member_id) else {
        return Reply::Now(Err(GroupError::UnknownMemberId));
    };
    let same_protocols = m.protocols == req.protocols;
    m.protocols = req.protocols;
    m.session_timeout_ms = req.session_timeout_ms;
    m.rebalance_timeout_ms = req.rebalance_timeout_ms.max(req.session_timeout_ms);
    m.last_heartbeat_ms = now_ms;
    match state {
        GroupState::CompletingRebalance if same_protocols => {
            Reply::Now(Ok(current_outcome(group, &member_id)))
        }
        GroupState::Stable if same_protocols && !is_leader => {
            Reply::Now(Ok(current_outcome(group, &member_id)))
        }
        GroupState::Empty | GroupState::Dead => Reply::Now(Err(GroupError::UnknownMemberId)),
        _ => {
            m.awaiting_join = true;
            group.prepare_rebalance(now_ms, delay_ms, out);
            group.maybe_complete_rebalance(now_ms, out);
            Reply::Parked { member_id }
        }
    }
}

/// A static member (known group.instance.id) rejoined without its member id: it replaces
/// the old member id (fencing the old instance) and keeps its assignment.
fn rejoin_static(
    group: &mut Group,
    req: JoinRequest,
    old_id: String,
    new_id: String,
    now_ms: TimestampMs,
    delay_ms: u64,
    out: &mut Out,
) -> Reply<JoinOutcome> {
    let Some(mut m) = group.members.remove(&old_id) else {
        return add_member_and_rebalance(group, req, new_id, now_ms, delay_ms, out);
    };
    Group::fail_parked(&m, &group.group_id, GroupError::FencedInstanceId, out);
    let same_protocols = m.protocols == req.protocols;
    m.member_id = new_id.clone();
    m.protocols = req.protocols.clone();
    m.session_timeout_ms = req.session_timeout_ms;
    m.rebalance_timeout_ms = req.rebalance_timeout_ms.max(req.session_timeout_ms);
    m.last_heartbeat_ms = now_ms;
    m.awaiting_join = false;
    m.awaiting_sync = false;
    if let Some(instance) = &req.group_instance_id {
        group
            .static_members
            .insert(instance.clone(), new_id.clone());
    }
    if group.leader_id.as_deref() == Some(old_id.as_str()) {
        group.leader_id = Some(new_id.clone());
    }
    group.members.insert(new_id.clone(), m);
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance if same_protocols => {
            Reply::Now(Ok(current_outcome(group, &new_id)))
        }
        _ => {
            if let Some(m) = group.members.get_mut(&new_id) {
                m.awaiting_join = true;
            }
            group.prepare_rebalance(now_ms, delay_ms, out);
            group.maybe_complete_rebalance(now_ms, out);
            Reply::Parked { member_id: new_id }
        }
    }
}
