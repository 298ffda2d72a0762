//! KIP-932 share groups: membership (ShareGroupHeartbeat) and share sessions (the
//! partitions a member's ShareFetch requests cover). Records are handed out by the broker's
//! queue engine, one delivery state per share-partition (group, topic, partition), so many
//! members consume one partition and acknowledge records one by one.
//!
//! Assignment: every member of a share group is assigned every partition of the topics it
//! subscribes to (share groups need no exclusive owner; the queue engine hands each record
//! to one member at a time). The group epoch moves when membership or a subscribed topic's
//! partition count changes; a member's epoch follows it at its next heartbeat.
//!
//! A state machine over `now_ms` and a topic lookup, like `consumer_group.rs`; members are
//! not saved (a restart makes them rejoin: their acquired records are released at once).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::TimestampMs;

use crate::consumer_group::{Assignment, TopicMeta};

/// Settings (Kafka's `group.share.*` broker configs).
#[derive(Clone, Debug)]
pub struct ShareGroupConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    /// How long a fetched record stays acquired before it is released to others.
    pub record_lock_duration_ms: i32,
    /// Deliveries after which a record is archived instead of delivered again.
    pub delivery_count_limit: u32,
    /// A new share-partition starts at the log start, not the end.
    pub start_earliest: bool,
    pub max_members: usize,
    pub max_groups: usize,
}

impl Default for ShareGroupConfig {
    fn default() -> Self {
        ShareGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            record_lock_duration_ms: 30_000,
            delivery_count_limit: 5,
            start_earliest: false,
            max_members: 200,
            max_groups: 100_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareError {
    InvalidRequest(&'static str),
    UnknownMemberId,
    FencedMemberEpoch,
    GroupMaxSizeReached,
    /// The group id is used by another kind of group.
    GroupIdNotFound,
    InvalidShareSessionEpoch,
    ShareSessionNotFound,
}

#[derive(Clone, Debug)]
struct Member {
    epoch: i32,
    subscribed: Vec<String>,
    last_heartbeat_ms: TimestampMs,
    /// The assignment last sent.
    sent: Option<Assignment>,
    /// Share session: its epoch and partitions (topic id, partition).
    session: Option<(i32, BTreeSet<(u128, i32)>)>,
    client_id: String,
}

#[derive(Clone, Debug, Default)]
pub struct ShareGroup {
    pub group_id: String,
    pub epoch: i32,
    members: BTreeMap<String, Member>,
    topics_seen: BTreeMap<String, i32>,
}

/// One ShareGroupHeartbeat's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareHeartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

/// A member's description (ShareGroupDescribe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareMemberInfo {
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub subscribed: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ShareGroups {
    pub config: ShareGroupConfig,
    groups: HashMap<String, ShareGroup>,
    next_member: u64,
}

impl ShareGroups {
    pub fn new(config: ShareGroupConfig) -> ShareGroups {
        ShareGroups {
            config,
            ..ShareGroups::default()
        }
    }

    pub fn is_share_group(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    pub fn group_ids(&self) -> Vec<(String, usize)> {
        self.groups
            .values()
            .map(|g| (g.group_id.clone(), g.members.len()))
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<(i32, Vec<ShareMemberInfo>)> {
        let g = self.groups.get(group_id)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| ShareMemberInfo {
                member_id: id.clone(),
                member_epoch: m.epoch,
                client_id: m.client_id.clone(),
                subscribed: m.subscribed.clone(),
            })
            .collect();
        Some((g.epoch, members))
    }

    /// One heartbeat: join (epoch 0), stay (its epoch), or leave (-1). Returns the answer
    /// and, when the member left, its id (so its acquired records can be released).
    #[allow(clippy::too_many_arguments)]
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        subscribed: Option<Vec<String>>,
        client_id: &str,
        topics: &dyn Fn(&str) -> Option<TopicMeta>,
        now_ms: TimestampMs,
    ) -> Result<ShareHeartbeat, ShareError> {
        if group_id.is_empty() {
            return Err(ShareError::InvalidRequest("the group id is empty"));
        }
        if !self.groups.contains_key(group_id) && self.groups.len() >= self.config.max_groups {
            return Err(ShareError::GroupMaxSizeReached);
        }
        let interval = self.config.heartbeat_interval_ms;
        let max = self.config.max_members;
        self.next_member += 1;
        let fresh = format!("share-{:x}-{}", now_ms, self.next_member);
        let g = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| ShareGroup {
                group_id: group_id.to_string(),
                ..ShareGroup::default()
            });
        if member_epoch < 0 {
            if g.members.remove(member_id).is_some() {
                g.epoch += 1;
            }
            return Ok(ShareHeartbeat {
                member_id: member_id.to_string(),
                member_epoch,
                heartbeat_interval_ms: interval,
                assignment: None,
            });
        }
        let id = if member_epoch == 0 {
            let id = if member_id.is_empty() {
                fresh
            } else {
                member_id.to_string()
            };
            if !g.members.contains_key(&id) {
                if g.members.len() >= max {
                    return Err(ShareError::GroupMaxSizeReached);
                }
                let Some(subs) = subscribed.clone() else {
                    return Err(ShareError::InvalidRequest(
                        "a joining member names its topics",
                    ));
                };
                g.members.insert(
                    id.clone(),
                    Member {
                        epoch: 0,
                        subscribed: subs,
                        last_heartbeat_ms: now_ms,
                        sent: None,
                        session: None,
                        client_id: client_id.to_string(),
                    },
                );
                g.epoch += 1;
            }
            id
        } else {
            let m = g
                .members
                .get(member_id)
                .ok_or(ShareError::UnknownMemberId)?;
            if member_epoch > m.epoch {
                return Err(ShareError::FencedMemberEpoch);
            }
            member_id.to_string()
        };
        let seen: BTreeMap<String, i32> = g
            .members
            .values()
            .flat_map(|m| m.subscribed.iter())
            .filter_map(|t| topics(t).map(|meta| (t.clone(), meta.partitions)))
            .collect();
        if seen != g.topics_seen {
            g.topics_seen = seen;
            g.epoch += 1;
        }
        let epoch = g.epoch;
        let m = g.members.get_mut(&id).ok_or(ShareError::UnknownMemberId)?;
        m.last_heartbeat_ms = now_ms;
        if let Some(mut subs) = subscribed {
            subs.sort();
            subs.dedup();
            m.subscribed = subs;
        }
        m.epoch = epoch;
        let mut target = Assignment::new();
        for t in &m.subscribed {
            if let Some(meta) = topics(t) {
                target.insert(meta.id, (0..meta.partitions).collect());
            }
        }
        let assignment = if member_epoch == 0 || m.sent.as_ref() != Some(&target) {
            m.sent = Some(target.clone());
            Some(target)
        } else {
            None
        };
        Ok(ShareHeartbeat {
            member_id: id,
            member_epoch: epoch,
            heartbeat_interval_ms: interval,
            assignment,
        })
    }

    /// Members silent past the session timeout leave; returns (group, member) of each.
    pub fn tick(&mut self, now_ms: TimestampMs) -> Vec<(String, String)> {
        let timeout = i64::from(self.config.session_timeout_ms);
        let mut gone = Vec::new();
        for g in self.groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| now_ms - m.last_heartbeat_ms > timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                g.members.remove(&id);
                g.epoch += 1;
                gone.push((g.group_id.clone(), id));
            }
        }
        gone
    }

    /// Moves a member's share session for a ShareFetch / ShareAcknowledge: epoch 0 opens
    /// it with `add`, -1 closes it, otherwise it must be the session's next epoch (`add`
    /// joins it, `forget` leaves it). Returns the session's partitions.
    pub fn session(
        &mut self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
        add: &[(u128, i32)],
        forget: &[(u128, i32)],
    ) -> Result<BTreeSet<(u128, i32)>, ShareError> {
        let m = self
            .groups
            .get_mut(group_id)
            .and_then(|g| g.members.get_mut(member_id))
            .ok_or(ShareError::UnknownMemberId)?;
        match epoch {
            0 => {
                let parts: BTreeSet<(u128, i32)> = add.iter().copied().collect();
                m.session = Some((1, parts.clone()));
                Ok(parts)
            }
            -1 => Ok(m.session.take().map(|(_, p)| p).unwrap_or_default()),
            e => {
                let Some((next, parts)) = m.session.as_mut() else {
                    return Err(ShareError::ShareSessionNotFound);
                };
                if e != *next {
                    return Err(ShareError::InvalidShareSessionEpoch);
                }
                *next = next.wrapping_add(1).max(1);
                parts.extend(add.iter().copied());
                for f in forget {
                    parts.remove(f);
                }
                Ok(parts.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(name: &str) -> Option<TopicMeta> {
        (name == "t").then_some(TopicMeta {
            id: 9,
            partitions: 2,
        })
    }

    #[test]
    fn every_member_gets_every_partition_and_sessions_count_epochs() {
        let mut s = ShareGroups::default();
        let a = s
            .heartbeat("g", "", 0, Some(vec!["t".into()]), "c", &topics, 0)
            .unwrap();
        let b = s
            .heartbeat("g", "", 0, Some(vec!["t".into()]), "c", &topics, 1)
            .unwrap();
        let all: Assignment = [(9u128, BTreeSet::from([0, 1]))].into();
        assert_eq!(a.assignment, Some(all.clone()));
        assert_eq!(b.assignment, Some(all));
        assert_ne!(a.member_id, b.member_id);
        let again = s
            .heartbeat("g", &a.member_id, a.member_epoch, None, "c", &topics, 2)
            .unwrap();
        assert_eq!(again.assignment, None, "unchanged");
        assert!(
            s.heartbeat("g", "nobody", 3, None, "c", &topics, 2)
                .is_err()
        );
        let parts = s
            .session("g", &a.member_id, 0, &[(9, 0), (9, 1)], &[])
            .unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            s.session("g", &a.member_id, 2, &[], &[]),
            Err(ShareError::InvalidShareSessionEpoch)
        );
        let after = s.session("g", &a.member_id, 1, &[], &[(9, 1)]).unwrap();
        assert_eq!(after, BTreeSet::from([(9, 0)]));
        // Share groups are bounded in number, as their members are.
        let mut few = ShareGroups::new(ShareGroupConfig {
            max_groups: 1,
            ..ShareGroupConfig::default()
        });
        few.heartbeat("x", "", 0, Some(vec![]), "c", &topics, 0)
            .unwrap();
        assert_eq!(
            few.heartbeat("y", "", 0, Some(vec![]), "c", &topics, 0),
            Err(ShareError::GroupMaxSizeReached)
        );
        // b goes silent: it leaves, and is named so its records can be released.
        s.heartbeat(
            "g",
            &a.member_id,
            again.member_epoch,
            None,
            "c",
            &topics,
            40_000,
        )
        .unwrap();
        assert_eq!(s.tick(46_000), vec![("g".to_string(), b.member_id.clone())]);
    }
}
