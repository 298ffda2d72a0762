//! The classic group coordinator as a state machine: requests and `tick(now)` in, replies
//! and `Completion`s out. It never reads a clock or does I/O; the caller passes `now_ms`
//! and routes parked replies (see `crate::groups`). JoinGroup's cases live in `join.rs`,
//! committed offsets in `offsets.rs`.

use std::collections::HashMap;

use bytes::Bytes;
use common::TimestampMs;

use super::group::Group;
use super::join::{add_member_and_rebalance, rejoin_known, rejoin_static};
use super::member::{Member, ProtocolOffer};
use super::types::{
    Completion, GroupDescription, GroupError, GroupListing, GroupState, JoinOutcome, JoinRequest,
    LeavingMember, MemberDescription, Reply, SavedMember, SyncOutcome, SyncRequest,
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
    pub(super) config: CoordinatorConfig,
    pub(super) groups: HashMap<String, Group>,
    next_member_seq: u64,
}

type Out = Vec<Completion>;

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
    /// consumers rejoin and resume from committed offsets). Keeps a newer generation.
    pub fn restore_group(
        &mut self,
        group_id: &str,
        generation_id: i32,
        protocol_type: Option<String>,
    ) {
        let g = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id.to_string()));
        if generation_id >= g.generation_id {
            g.generation_id = generation_id;
            g.protocol_type = protocol_type.or(g.protocol_type.take());
        }
    }

    /// The static members of a stable group, with their assignments: what a restart
    /// must keep so they carry on without a rebalance (Kafka keeps a group's members in
    /// `__consumer_offsets` for this). Empty when the group is not stable.
    pub fn static_members(&self, group_id: &str) -> Vec<SavedMember> {
        let Some(g) = self.groups.get(group_id) else {
            return Vec::new();
        };
        if g.state != GroupState::Stable {
            return Vec::new();
        }
        g.members
            .values()
            .filter_map(|m| {
                Some(SavedMember {
                    instance_id: m.group_instance_id.clone()?,
                    member_id: m.member_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|p| (p.name.clone(), p.metadata.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                    leader: g.leader_id.as_deref() == Some(m.member_id.as_str()),
                })
            })
            .collect()
    }

    /// Brings back a group's static members after a restart ([`Self::static_members`]):
    /// the group is stable at its saved generation, each member's session starting now,
    /// so their heartbeats carry on. A dynamic member of the group was not kept: its
    /// heartbeat gets UNKNOWN_MEMBER_ID and its rejoin starts a rebalance, as after a
    /// Kafka coordinator failover.
    pub fn restore_static_members(
        &mut self,
        group_id: &str,
        protocol_name: Option<String>,
        saved: Vec<SavedMember>,
        now_ms: TimestampMs,
    ) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        if saved.is_empty() || protocol_name.is_none() || !g.members.is_empty() {
            return;
        }
        for s in saved {
            if s.leader || g.leader_id.is_none() {
                g.leader_id = Some(s.member_id.clone());
            }
            g.static_members
                .insert(s.instance_id.clone(), s.member_id.clone());
            let m = Member {
                member_id: s.member_id.clone(),
                group_instance_id: Some(s.instance_id),
                client_id: s.client_id,
                client_host: s.client_host,
                session_timeout_ms: s.session_timeout_ms,
                rebalance_timeout_ms: s.rebalance_timeout_ms,
                protocols: s
                    .protocols
                    .into_iter()
                    .map(|(name, metadata)| ProtocolOffer {
                        name,
                        metadata: Bytes::from(metadata),
                    })
                    .collect(),
                assignment: Bytes::from(s.assignment),
                last_heartbeat_ms: now_ms,
                awaiting_join: false,
                awaiting_sync: false,
            };
            g.members.insert(s.member_id, m);
        }
        g.protocol_name = protocol_name;
        g.state = GroupState::Stable;
    }

    /// The selected protocol of a group (saved with its static members).
    pub fn protocol_name(&self, group_id: &str) -> Option<String> {
        self.groups.get(group_id)?.protocol_name.clone()
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
