//! How a JoinGroup changes a group: new members, known members rejoining, static members
//! replacing their previous instance.

use bytes::Bytes;
use common::TimestampMs;

use super::group::Group;
use super::member::Member;
use super::types::{
    Completion, GroupError, GroupState, JoinOutcome, JoinRequest, JoinedMember, Reply,
};

type Out = Vec<Completion>;

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

pub(super) fn add_member_and_rebalance(
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

pub(super) fn current_outcome(group: &Group, member_id: &str) -> JoinOutcome {
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

pub(super) fn rejoin_known(
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
pub(super) fn rejoin_static(
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
