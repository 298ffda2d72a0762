//! KIP-848 consumer groups (`group.protocol=consumer`): the broker computes each member's
//! target assignment (the `uniform` or `range` assignor) and hands it out through
//! ConsumerGroupHeartbeat, one step at a time, so no partition is ever owned by two members:
//!
//! - the *group epoch* moves whenever membership, a subscription or the partition count of
//!   a subscribed topic changes; the *target assignment* is recomputed at that epoch;
//! - a member that holds partitions its target does not gets its assignment without them,
//!   and they stay *pending revocation* (still owned by it) until a heartbeat reports it no
//!   longer owns them, or its rebalance timeout expires (it is then removed);
//! - a member with nothing left to revoke moves to the target epoch and gets each target
//!   partition as soon as no other member owns it or has it pending revocation;
//! - a heartbeat carries the member epoch it knows: the current one or the one before
//!   (a response lost on the way), else FENCED_MEMBER_EPOCH and the member rejoins with 0.
//!
//! A state machine over `now_ms` and a topic lookup: no clock, no I/O (`crate::groups`
//! persists and times it). Members are saved with their assignments so a restart costs no
//! rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::TimestampMs;
use serde::{Deserialize, Serialize};

/// Partitions by topic id.
pub type Assignment = BTreeMap<u128, BTreeSet<i32>>;

/// A topic as the assignor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicMeta {
    pub id: u128,
    pub partitions: i32,
}

/// Settings (Kafka's `group.consumer.*` broker configs).
#[derive(Clone, Debug)]
pub struct ConsumerGroupConfig {
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    pub max_members: usize,
    pub max_groups: usize,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_members: 1_000,
            max_groups: 100_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgError {
    InvalidRequest(&'static str),
    UnknownMemberId,
    FencedMemberEpoch,
    UnsupportedAssignor,
    GroupMaxSizeReached,
    /// The group id belongs to a classic group.
    GroupIdNotFound,
    UnreleasedInstanceId,
}

/// One ConsumerGroupHeartbeat, decoded.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topics: Option<Vec<String>>,
    pub server_assignor: Option<String>,
    /// What the member owns now; `None`: unchanged since its last heartbeat.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None`: unchanged since the last one sent.
    pub assignment: Option<Assignment>,
}

/// A member as saved and described.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub subscribed: Vec<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// What the member may own now.
    pub assigned: Assignment,
    /// What it was told to give up and has not yet confirmed.
    pub revoking: Assignment,
    #[serde(skip)]
    pub last_heartbeat_ms: TimestampMs,
    #[serde(skip)]
    revoke_deadline_ms: Option<TimestampMs>,
    /// The assignment last sent (to send `None` when it has not changed).
    #[serde(skip)]
    sent: Option<Assignment>,
}

/// One consumer group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub group_id: String,
    pub epoch: i32,
    pub target_epoch: i32,
    pub target: BTreeMap<String, Assignment>,
    pub members: BTreeMap<String, Member>,
    /// Partition counts of the subscribed topics the target was computed for.
    pub topics_seen: BTreeMap<String, i32>,
}

impl Group {
    /// `empty`, `assigning` (target not yet reached by every member), `stable`.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.members.values().all(|m| {
            m.epoch == self.target_epoch
                && m.revoking.is_empty()
                && Some(&m.assigned) == self.target.get(&m.member_id)
        }) {
            "Stable"
        } else {
            "Reconciling"
        }
    }
}

/// Every consumer group of the broker.
#[derive(Debug, Default)]
pub struct ConsumerGroups {
    pub config: ConsumerGroupConfig,
    groups: HashMap<String, Group>,
    next_member: u64,
}

fn union(a: &mut Assignment, b: &Assignment) {
    for (t, ps) in b {
        a.entry(*t).or_default().extend(ps.iter().copied());
    }
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let keep: BTreeSet<i32> = match b.get(t) {
            Some(bs) => ps.difference(bs).copied().collect(),
            None => ps.clone(),
        };
        if !keep.is_empty() {
            out.insert(*t, keep);
        }
    }
    out
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(bs) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(bs).copied().collect();
            if !both.is_empty() {
                out.insert(*t, both);
            }
        }
    }
    out
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

impl ConsumerGroups {
    pub fn new(config: ConsumerGroupConfig) -> ConsumerGroups {
        ConsumerGroups {
            config,
            ..ConsumerGroups::default()
        }
    }

    pub fn get(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Puts back a saved group (after a restart): every member's session starts now.
    pub fn restore(&mut self, mut g: Group, now_ms: TimestampMs) {
        for m in g.members.values_mut() {
            m.last_heartbeat_ms = now_ms;
            m.sent = Some(m.assigned.clone());
            if !m.revoking.is_empty() {
                m.revoke_deadline_ms = Some(now_ms + i64::from(m.rebalance_timeout_ms));
            }
        }
        self.groups.insert(g.group_id.clone(), g);
    }

    /// One heartbeat. `topics` looks up a topic by name.
    pub fn heartbeat(
        &mut self,
        req: HeartbeatRequest,
        topics: &dyn Fn(&str) -> Option<TopicMeta>,
        now_ms: TimestampMs,
    ) -> Result<HeartbeatResponse, CgError> {
        if req.group_id.is_empty() {
            return Err(CgError::InvalidRequest("the group id is empty"));
        }
        if let Some(a) = &req.server_assignor
            && a != "uniform"
            && a != "range"
        {
            return Err(CgError::UnsupportedAssignor);
        }
        if !self.groups.contains_key(&req.group_id) && self.groups.len() >= self.config.max_groups {
            return Err(CgError::GroupMaxSizeReached);
        }
        let interval = self.config.heartbeat_interval_ms;
        let max_members = self.config.max_members;
        self.next_member += 1;
        let fresh_id = format!("sluice-{:x}-{}", now_ms, self.next_member);
        let g = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group {
                group_id: req.group_id.clone(),
                ..Group::default()
            });
        if req.member_epoch == -2 && g.members.contains_key(&req.member_id) {
            // A static member leaving for now (a restart): its assignment stays reserved
            // until its session times out; its next incarnation (same instance id) takes
            // it over without a rebalance.
            return Ok(HeartbeatResponse {
                member_id: req.member_id,
                member_epoch: -2,
                heartbeat_interval_ms: interval,
                assignment: None,
            });
        }
        if req.member_epoch < 0 {
            // Leaving for good.
            if g.members.remove(&req.member_id).is_some() {
                g.target.remove(&req.member_id);
                g.epoch += 1;
            }
            return Ok(HeartbeatResponse {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: interval,
                assignment: None,
            });
        }
        let member_id = if req.member_epoch == 0 {
            join_member(g, &req, fresh_id, max_members, now_ms)?
        } else {
            let m = g
                .members
                .get(&req.member_id)
                .ok_or(CgError::UnknownMemberId)?;
            if req.member_epoch != m.epoch && req.member_epoch != m.previous_epoch {
                return Err(CgError::FencedMemberEpoch);
            }
            req.member_id.clone()
        };
        let full = req.member_epoch == 0 || req.owned.is_some();
        {
            let m = g
                .members
                .get_mut(&member_id)
                .ok_or(CgError::UnknownMemberId)?;
            m.last_heartbeat_ms = now_ms;
            if req.rebalance_timeout_ms > 0 {
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            }
            if req.server_assignor.is_some() {
                m.assignor = req.server_assignor.clone();
            }
            if let Some(mut t) = req.subscribed_topics.clone() {
                t.sort();
                t.dedup();
                if t != m.subscribed {
                    m.subscribed = t;
                    g.epoch += 1;
                }
            }
            if let Some(owned) = &req.owned {
                // Revocations the member has done.
                m.revoking = intersect(&m.revoking, owned);
                if m.revoking.is_empty() {
                    m.revoke_deadline_ms = None;
                }
            }
        }
        // A subscribed topic created, deleted or grown: a new epoch.
        let seen = subscribed_topics(g, topics);
        if seen != g.topics_seen {
            g.topics_seen = seen;
            g.epoch += 1;
        }
        if g.epoch > g.target_epoch {
            compute_target(g, topics);
            g.target_epoch = g.epoch;
        }
        reconcile(g, &member_id, now_ms);
        let m = g
            .members
            .get_mut(&member_id)
            .ok_or(CgError::UnknownMemberId)?;
        let assignment = if full || m.sent.as_ref() != Some(&m.assigned) {
            m.sent = Some(m.assigned.clone());
            Some(m.assigned.clone())
        } else {
            None
        };
        Ok(HeartbeatResponse {
            member_id,
            member_epoch: m.epoch,
            heartbeat_interval_ms: interval,
            assignment,
        })
    }

    /// Removes members whose session or revocation time ran out; returns the groups changed.
    pub fn tick(&mut self, now_ms: TimestampMs) -> Vec<String> {
        let session = i64::from(self.config.session_timeout_ms);
        let mut changed = Vec::new();
        for g in self.groups.values_mut() {
            let gone: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    now_ms - m.last_heartbeat_ms > session
                        || m.revoke_deadline_ms.is_some_and(|d| now_ms > d)
                })
                .map(|m| m.member_id.clone())
                .collect();
            if gone.is_empty() {
                continue;
            }
            for id in &gone {
                tracing::info!(group = %g.group_id, member = %id, "consumer group member expired");
                g.members.remove(id);
                g.target.remove(id);
            }
            g.epoch += 1;
            changed.push(g.group_id.clone());
        }
        changed
    }

    /// OffsetCommit of a member of a consumer group: it must exist with this epoch (or the
    /// one before). `None`: not a consumer group.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Option<Result<(), CgError>> {
        let g = self.groups.get(group_id)?;
        if epoch < 0 && g.members.is_empty() {
            return Some(Ok(())); // a commit from outside the group (assign())
        }
        Some(match g.members.get(member_id) {
            None => Err(CgError::UnknownMemberId),
            Some(m) if epoch == m.epoch || epoch == m.previous_epoch => Ok(()),
            Some(_) => Err(CgError::FencedMemberEpoch),
        })
    }

    /// Deletes an empty group.
    pub fn delete(&mut self, group_id: &str) -> bool {
        match self.groups.get(group_id) {
            Some(g) if g.members.is_empty() => self.groups.remove(group_id).is_some(),
            _ => false,
        }
    }
}

/// A heartbeat with epoch 0: a new member, a static member's new incarnation taking over
/// its predecessor, or a member starting over. Returns its member id.
fn join_member(
    g: &mut Group,
    req: &HeartbeatRequest,
    fresh_id: String,
    max_members: usize,
    now_ms: TimestampMs,
) -> Result<String, CgError> {
    let id = if req.member_id.is_empty() {
        fresh_id
    } else {
        req.member_id.clone()
    };
    // A static member coming back replaces its previous incarnation.
    if let Some(instance) = &req.instance_id {
        let old = g
            .members
            .values()
            .find(|m| m.instance_id.as_ref() == Some(instance) && m.member_id != id)
            .map(|m| m.member_id.clone());
        if let Some(old) = old
            && let Some(mut m) = g.members.remove(&old)
        {
            m.member_id = id.clone();
            m.sent = None;
            if let Some(t) = g.target.remove(&old) {
                g.target.insert(id.clone(), t);
            }
            g.members.insert(id.clone(), m);
        }
    }
    if !g.members.contains_key(&id) {
        if g.members.len() >= max_members {
            return Err(CgError::GroupMaxSizeReached);
        }
        if req.subscribed_topics.is_none() {
            return Err(CgError::InvalidRequest("a joining member names its topics"));
        }
        g.members.insert(
            id.clone(),
            Member {
                member_id: id.clone(),
                instance_id: req.instance_id.clone(),
                rack_id: req.rack_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                epoch: 0,
                previous_epoch: -1,
                subscribed: Vec::new(),
                assignor: None,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                assigned: Assignment::new(),
                revoking: Assignment::new(),
                last_heartbeat_ms: now_ms,
                revoke_deadline_ms: None,
                sent: None,
            },
        );
        g.epoch += 1;
    } else if let Some(m) = g.members.get_mut(&id) {
        // Rejoining with epoch 0 after losing its state: start over.
        m.sent = None;
    }
    Ok(id)
}

fn subscribed_topics(
    g: &Group,
    topics: &dyn Fn(&str) -> Option<TopicMeta>,
) -> BTreeMap<String, i32> {
    g.members
        .values()
        .flat_map(|m| m.subscribed.iter())
        .filter_map(|t| topics(t).map(|meta| (t.clone(), meta.partitions)))
        .collect()
}

/// The target assignment of every member (`range` when every member asks for it, else
/// `uniform`), sticky to the previous target where balance allows.
fn compute_target(g: &mut Group, topics: &dyn Fn(&str) -> Option<TopicMeta>) {
    let range = !g.members.is_empty()
        && g.members
            .values()
            .all(|m| m.assignor.as_deref() == Some("range"));
    let mut target: BTreeMap<String, Assignment> = g
        .members
        .keys()
        .map(|id| (id.clone(), Assignment::new()))
        .collect();
    let topic_names: BTreeSet<&String> = g
        .members
        .values()
        .flat_map(|m| m.subscribed.iter())
        .collect();
    if range {
        for t in topic_names {
            let Some(meta) = topics(t) else { continue };
            let subs: Vec<&String> = g
                .members
                .values()
                .filter(|m| m.subscribed.contains(t))
                .map(|m| &m.member_id)
                .collect();
            let n = subs.len() as i32;
            if n == 0 {
                continue;
            }
            let (per, extra) = (meta.partitions / n, meta.partitions % n);
            let mut p = 0;
            for (k, id) in subs.iter().enumerate() {
                let take = per + i32::from((k as i32) < extra);
                let set: BTreeSet<i32> = (p..p + take).collect();
                p += take;
                if !set.is_empty() {
                    target
                        .entry((*id).clone())
                        .or_default()
                        .insert(meta.id, set);
                }
            }
        }
    } else {
        // Uniform: every partition to a subscribed member; keep the previous owner while
        // it holds no more than its fair share, then fill the least loaded.
        let mut all: Vec<(u128, i32, &String)> = Vec::new();
        for t in &topic_names {
            if let Some(meta) = topics(t) {
                all.extend((0..meta.partitions).map(|p| (meta.id, p, *t)));
            }
        }
        let members = g.members.len().max(1);
        let quota = all.len().div_ceil(members);
        let mut load: BTreeMap<String, usize> = g.members.keys().map(|k| (k.clone(), 0)).collect();
        let mut rest = Vec::new();
        for (id, p, t) in all {
            let prev = g
                .target
                .iter()
                .find(|(_, a)| a.get(&id).is_some_and(|s| s.contains(&p)));
            match prev {
                Some((owner, _))
                    if g.members
                        .get(owner)
                        .is_some_and(|m| m.subscribed.contains(t))
                        && load.get(owner).is_some_and(|l| *l < quota) =>
                {
                    *load.entry(owner.clone()).or_default() += 1;
                    target
                        .entry(owner.clone())
                        .or_default()
                        .entry(id)
                        .or_default()
                        .insert(p);
                }
                _ => rest.push((id, p, t)),
            }
        }
        for (id, p, t) in rest {
            let best = g
                .members
                .values()
                .filter(|m| m.subscribed.contains(t))
                .min_by_key(|m| {
                    (
                        load.get(&m.member_id).copied().unwrap_or(0),
                        m.member_id.clone(),
                    )
                });
            if let Some(m) = best {
                *load.entry(m.member_id.clone()).or_default() += 1;
                target
                    .entry(m.member_id.clone())
                    .or_default()
                    .entry(id)
                    .or_default()
                    .insert(p);
            }
        }
    }
    g.target = target;
}

/// Moves `member_id` one step towards its target (module docs).
fn reconcile(g: &mut Group, member_id: &str, now_ms: TimestampMs) {
    let target = g.target.get(member_id).cloned().unwrap_or_default();
    let mut in_use_by_others = Assignment::new();
    for (id, m) in &g.members {
        if id != member_id {
            union(&mut in_use_by_others, &m.assigned);
            union(&mut in_use_by_others, &m.revoking);
        }
    }
    let target_epoch = g.target_epoch;
    let Some(m) = g.members.get_mut(member_id) else {
        return;
    };
    if !m.revoking.is_empty() {
        return; // waiting for the member to give partitions up
    }
    let to_revoke = minus(&m.assigned, &target);
    if !to_revoke.is_empty() {
        m.assigned = intersect(&m.assigned, &target);
        m.revoking = to_revoke;
        m.revoke_deadline_ms = Some(now_ms + i64::from(m.rebalance_timeout_ms.max(1)));
        return;
    }
    let free = minus(&minus(&target, &m.assigned), &in_use_by_others);
    union(&mut m.assigned, &free);
    if m.epoch != target_epoch {
        m.previous_epoch = m.epoch;
        m.epoch = target_epoch;
    }
    debug_assert!(count(&minus(&m.assigned, &target)) == 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u128 = 7;

    fn topics(name: &str) -> Option<TopicMeta> {
        (name == "t").then_some(TopicMeta {
            id: T,
            partitions: 4,
        })
    }

    fn join(c: &mut ConsumerGroups, id: &str, now: i64) -> HeartbeatResponse {
        c.heartbeat(
            HeartbeatRequest {
                group_id: "g".into(),
                member_id: id.into(),
                member_epoch: 0,
                rebalance_timeout_ms: 10_000,
                subscribed_topics: Some(vec!["t".into()]),
                ..HeartbeatRequest::default()
            },
            &topics,
            now,
        )
        .unwrap()
    }

    fn beat(
        c: &mut ConsumerGroups,
        id: &str,
        epoch: i32,
        owned: Option<&Assignment>,
        now: i64,
    ) -> Result<HeartbeatResponse, CgError> {
        c.heartbeat(
            HeartbeatRequest {
                group_id: "g".into(),
                member_id: id.into(),
                member_epoch: epoch,
                owned: owned.cloned(),
                ..HeartbeatRequest::default()
            },
            &topics,
            now,
        )
    }

    fn parts(a: &Assignment) -> BTreeSet<i32> {
        a.get(&T).cloned().unwrap_or_default()
    }

    /// A second member joins: the first gives up half its partitions before the second
    /// gets them; no partition is ever assigned to both.
    #[test]
    fn partitions_move_only_after_they_are_revoked() {
        let mut c = ConsumerGroups::default();
        let a = join(&mut c, "a", 0);
        assert_eq!(
            parts(a.assignment.as_ref().unwrap()),
            BTreeSet::from([0, 1, 2, 3])
        );
        let a_owned = a.assignment.clone().unwrap();
        let b = join(&mut c, "b", 1);
        assert_eq!(
            parts(b.assignment.as_ref().unwrap()),
            BTreeSet::new(),
            "nothing free yet"
        );
        // a is told to give two up, keeps its epoch until it has.
        let a2 = beat(&mut c, "a", a.member_epoch, None, 2).unwrap();
        let kept = a2.assignment.clone().unwrap();
        assert_eq!(parts(&kept).len(), 2);
        assert_eq!(a2.member_epoch, a.member_epoch);
        let b2 = beat(&mut c, "b", b.member_epoch, None, 3).unwrap();
        assert!(b2.assignment.is_none() || parts(b2.assignment.as_ref().unwrap()).is_empty());
        // a still reports owning all four: nothing moves.
        let a3 = beat(&mut c, "a", a.member_epoch, Some(&a_owned), 4).unwrap();
        assert_eq!(a3.member_epoch, a.member_epoch);
        // a confirms: it moves to the new epoch; b then gets the other two.
        let a4 = beat(&mut c, "a", a.member_epoch, Some(&kept), 5).unwrap();
        assert!(a4.member_epoch > a.member_epoch);
        let b3 = beat(&mut c, "b", b.member_epoch, None, 6).unwrap();
        let got = parts(b3.assignment.as_ref().unwrap());
        assert_eq!(got.len(), 2);
        assert!(got.is_disjoint(&parts(&kept)));
        assert_eq!(c.get("g").unwrap().state(), "Stable");
    }

    #[test]
    fn stale_epochs_are_fenced_and_silent_members_expire() {
        let mut c = ConsumerGroups::default();
        let a = join(&mut c, "a", 0);
        assert_eq!(
            beat(&mut c, "a", a.member_epoch + 5, None, 1),
            Err(CgError::FencedMemberEpoch)
        );
        assert_eq!(beat(&mut c, "x", 3, None, 1), Err(CgError::UnknownMemberId));
        let b = join(&mut c, "b", 1);
        assert!(c.tick(30_000).is_empty());
        beat(&mut c, "b", b.member_epoch, None, 40_000).unwrap();
        // a stopped heartbeating 45 s ago: gone, b gets everything.
        assert_eq!(c.tick(46_000), vec!["g".to_string()]);
        let b2 = beat(&mut c, "b", b.member_epoch, None, 46_001).unwrap();
        assert_eq!(
            parts(b2.assignment.as_ref().unwrap()),
            BTreeSet::from([0, 1, 2, 3])
        );
    }

    #[test]
    fn range_splits_each_topic_in_contiguous_runs() {
        let mut c = ConsumerGroups::default();
        for id in ["a", "b"] {
            c.heartbeat(
                HeartbeatRequest {
                    group_id: "g".into(),
                    member_id: id.into(),
                    member_epoch: 0,
                    subscribed_topics: Some(vec!["t".into()]),
                    server_assignor: Some("range".into()),
                    ..HeartbeatRequest::default()
                },
                &topics,
                0,
            )
            .unwrap();
        }
        let g = c.get("g").unwrap();
        assert_eq!(parts(&g.target["a"]), BTreeSet::from([0, 1]));
        assert_eq!(parts(&g.target["b"]), BTreeSet::from([2, 3]));
        let bad = HeartbeatRequest {
            group_id: "g".into(),
            member_epoch: 0,
            subscribed_topics: Some(vec![]),
            server_assignor: Some("sticky".into()),
            ..HeartbeatRequest::default()
        };
        assert_eq!(
            c.heartbeat(bad, &topics, 1),
            Err(CgError::UnsupportedAssignor)
        );
    }
}
