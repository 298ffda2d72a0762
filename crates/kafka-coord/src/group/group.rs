//! One classic group: members, generation, selected protocol. (Its committed offsets live
//! in the core's offset store.)
//!
//! Invariants: `leader_id` is a key of `members` whenever `members` is non-empty and the
//! state is not `Empty`; `static_members` maps each instance id to a key of `members`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use common::TimestampMs;

use super::member::Member;
use super::types::{Completion, GroupError, GroupState, JoinOutcome, JoinedMember, SyncOutcome};

#[derive(Debug)]
pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, with their expiry time.
    pub pending_members: HashMap<String, TimestampMs>,
    pub static_members: HashMap<String, String>,
    /// When the current rebalance gives up on members that have not rejoined.
    pub rebalance_deadline_ms: TimestampMs,
    /// While set, a rebalance of an empty group waits for more members (Kafka's
    /// group.initial.rebalance.delay.ms).
    pub initial_delay_until_ms: Option<TimestampMs>,
    pub rebalance_started_ms: TimestampMs,
}

impl Group {
    pub fn new(group_id: String) -> Self {
        Self {
            group_id,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            rebalance_started_ms: 0,
        }
    }

    /// Starts (or extends) a rebalance. Members must rejoin before the deadline.
    pub fn prepare_rebalance(
        &mut self,
        now_ms: TimestampMs,
        initial_delay_ms: u64,
        out: &mut Vec<Completion>,
    ) {
        let max_rebalance_ms = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        if self.state != GroupState::PreparingRebalance {
            self.rebalance_started_ms = now_ms;
            self.initial_delay_until_ms = if self.state == GroupState::Empty && initial_delay_ms > 0
            {
                Some(now_ms + initial_delay_ms as i64)
            } else {
                None
            };
        } else if let Some(until) = self.initial_delay_until_ms.as_mut() {
            // A new member arrived during the initial delay: wait a bit more, bounded by
            // the rebalance timeout.
            let cap = self.rebalance_started_ms + max_rebalance_ms;
            *until = (now_ms + initial_delay_ms as i64).min(cap).max(*until);
        }
        // A sync that was waiting for the leader can no longer complete.
        for m in self.members.values_mut() {
            if m.awaiting_sync {
                m.awaiting_sync = false;
                out.push(Completion::Sync {
                    group_id: self.group_id.clone(),
                    member_id: m.member_id.clone(),
                    result: Err(GroupError::RebalanceInProgress),
                });
            }
        }
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline_ms = self.rebalance_started_ms + max_rebalance_ms;
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.awaiting_join)
    }

    /// Completes the rebalance if it can: everyone rejoined (and the initial delay passed),
    /// or the deadline passed (then stragglers are removed).
    pub fn maybe_complete_rebalance(&mut self, now_ms: TimestampMs, out: &mut Vec<Completion>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let delay_over = self.initial_delay_until_ms.is_none_or(|t| now_ms >= t);
        let deadline_passed = now_ms >= self.rebalance_deadline_ms;
        if !(deadline_passed || (delay_over && self.all_joined())) {
            return;
        }
        if deadline_passed {
            let stale: Vec<String> = self
                .members
                .values()
                .filter(|m| !m.awaiting_join)
                .map(|m| m.member_id.clone())
                .collect();
            for id in stale {
                self.remove_member(&id);
            }
            self.pending_members.clear();
        }
        self.initial_delay_until_ms = None;
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            return;
        }
        self.protocol_name = self.select_protocol();
        if self
            .leader_id
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader_id.clone().unwrap_or_default();
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let all: Vec<JoinedMember> = self
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        for m in self.members.values_mut() {
            m.awaiting_join = false;
            m.last_heartbeat_ms = now_ms;
            m.assignment = Bytes::new();
            let outcome = JoinOutcome {
                generation_id: self.generation_id,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader_id: leader.clone(),
                member_id: m.member_id.clone(),
                members: if m.member_id == leader {
                    all.clone()
                } else {
                    Vec::new()
                },
            };
            out.push(Completion::Join {
                group_id: self.group_id.clone(),
                member_id: m.member_id.clone(),
                result: Ok(outcome),
            });
        }
    }

    /// Kafka's rule: among protocols every member supports, each member votes for its
    /// most preferred; the most votes wins (ties: first candidate in the leader's order).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some(choice) = m
                .protocols
                .iter()
                .find(|p| candidates.contains(&p.name.as_str()))
                && let Some(v) = votes.iter_mut().find(|(_, n)| *n == choice.name)
            {
                v.0 += 1;
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .iter()
            .find(|(n, _)| *n == best)
            .map(|(_, name)| name.to_string())
    }

    pub fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let removed = self.members.remove(member_id)?;
        if let Some(instance) = &removed.group_instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        if self.members.is_empty() {
            self.protocol_type = None;
        }
        Some(removed)
    }

    /// The leader's SyncGroup: store every assignment, go Stable, release parked syncs.
    pub fn apply_assignments(
        &mut self,
        assignments: Vec<(String, Bytes)>,
        out: &mut Vec<Completion>,
    ) {
        let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
        for m in self.members.values_mut() {
            m.assignment = by_member.remove(&m.member_id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        for m in self.members.values_mut() {
            if m.awaiting_sync {
                m.awaiting_sync = false;
                out.push(Completion::Sync {
                    group_id: self.group_id.clone(),
                    member_id: m.member_id.clone(),
                    result: Ok(SyncOutcome {
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    }),
                });
            }
        }
    }

    /// Fails every parked join/sync of `member_id` (it was removed or fenced).
    pub fn fail_parked(
        member: &Member,
        group_id: &str,
        err: GroupError,
        out: &mut Vec<Completion>,
    ) {
        if member.awaiting_join {
            out.push(Completion::Join {
                group_id: group_id.to_string(),
                member_id: member.member_id.clone(),
                result: Err(err.clone()),
            });
        }
        if member.awaiting_sync {
            out.push(Completion::Sync {
                group_id: group_id.to_string(),
                member_id: member.member_id.clone(),
                result: Err(err),
            });
        }
    }

    /// Validates (member, instance id, generation) for heartbeat/sync/commit.
    pub fn check_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<&Member, GroupError> {
        if let Some(instance) = group_instance_id
            && let Some(owner) = self.static_members.get(instance)
            && owner != member_id
        {
            return Err(GroupError::FencedInstanceId);
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if generation_id != self.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(member)
    }
}
