//! The async side of group coordination: parks JoinGroup/SyncGroup callers on oneshot
//! channels, feeds the state machine the clock's time, routes its completions, saves
//! generations (metadata extension entries) and committed offsets (the core's store).

use std::collections::{BTreeSet, HashMap};

use broker::metadata::KAFKA_GROUP_NS;
use broker::{BrokerError, CommittedOffset};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::oneshot;

use crate::KafkaCoord;
use crate::consumer_group::{
    CgError, ConsumerGroups, HeartbeatRequest, HeartbeatResponse, TopicMeta,
};
use crate::group::{
    Completion, GroupCoordinator, GroupDescription, GroupError, GroupListing, JoinOutcome,
    JoinRequest, LeavingMember, Reply, SyncOutcome, SyncRequest,
};
use crate::share_group::{ShareError, ShareGroups, ShareHeartbeat};

type Key = (String, String);

/// How often committed offsets are checked for expiry.
const OFFSET_EXPIRY_CHECK_MS: i64 = 60_000;
type Waiter<T> = oneshot::Sender<Result<T, GroupError>>;

/// Namespace of saved KIP-848 consumer groups (`consumer_group.rs`).
pub const KAFKA_CONSUMER_GROUP_NS: &str = "kafka.consumer_group";

pub struct GroupsInner {
    pub coordinator: GroupCoordinator,
    /// KIP-848 consumer groups, side by side with the classic ones.
    pub consumer: ConsumerGroups,
    /// KIP-932 share groups.
    pub share: ShareGroups,
    /// The saved form of each consumer group as last written (saved again only when it
    /// changes, not on every heartbeat).
    consumer_saved: HashMap<String, String>,
    /// When committed offsets were last checked against `offsets_retention_ms`.
    last_offset_expiry_ms: i64,
    join_waiters: HashMap<Key, Waiter<JoinOutcome>>,
    sync_waiters: HashMap<Key, Waiter<SyncOutcome>>,
}

pub struct GroupsCell(Mutex<GroupsInner>);

impl GroupsCell {
    pub fn new(
        coordinator: GroupCoordinator,
        consumer: ConsumerGroups,
        share: ShareGroups,
    ) -> Self {
        Self(Mutex::new(GroupsInner {
            coordinator,
            consumer,
            share,
            consumer_saved: HashMap::new(),
            last_offset_expiry_ms: 0,
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
        }))
    }

    pub fn lock(&self) -> MutexGuard<'_, GroupsInner> {
        self.0.lock()
    }

    pub fn fail_all_waiters(&self) {
        let mut g = self.0.lock();
        for (_, w) in g.join_waiters.drain() {
            let _ = w.send(Err(GroupError::CoordinatorNotAvailable));
        }
        for (_, w) in g.sync_waiters.drain() {
            let _ = w.send(Err(GroupError::CoordinatorNotAvailable));
        }
    }
}

impl GroupsInner {
    /// Routes completions to their waiters. Members whose group is in `unsaved` (its new
    /// generation could not be persisted) get COORDINATOR_NOT_AVAILABLE instead of a
    /// generation a restart would not know, and rejoin.
    fn deliver(&mut self, out: Vec<Completion>, unsaved: &BTreeSet<String>) {
        for c in out {
            match c {
                Completion::Join {
                    group_id,
                    member_id,
                    result,
                } => {
                    let result = match result {
                        Ok(_) if unsaved.contains(&group_id) => {
                            Err(GroupError::CoordinatorNotAvailable)
                        }
                        r => r,
                    };
                    if let Some(w) = self.join_waiters.remove(&(group_id, member_id)) {
                        let _ = w.send(result);
                    }
                }
                Completion::Sync {
                    group_id,
                    member_id,
                    result,
                } => {
                    if let Some(w) = self.sync_waiters.remove(&(group_id, member_id)) {
                        let _ = w.send(result);
                    }
                }
            }
        }
    }

    /// (group, its saved form) of each group in `groups` the coordinator knows.
    fn generations(&self, groups: BTreeSet<String>) -> Vec<(String, serde_json::Value)> {
        groups
            .into_iter()
            .filter_map(|g| {
                let (generation_id, protocol_type) = self.coordinator.generation(&g)?;
                let value = serde_json::json!({
                    "generation_id": generation_id,
                    "protocol_type": protocol_type,
                    "protocol_name": self.coordinator.protocol_name(&g),
                    "static_members": self.coordinator.static_members(&g),
                });
                Some((g, value))
            })
            .collect()
    }
}

/// A partition's offset to commit.
#[derive(Clone, Debug)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

impl KafkaCoord {
    /// Persists the generation of every group a rebalance in `out` completed (and of
    /// `also`), then answers the parked members (see [`GroupsInner::deliver`]). Runs under
    /// the groups lock, so no member learns a generation before it is saved.
    fn complete(&self, g: &mut GroupsInner, out: Vec<Completion>, also: Option<&str>) {
        let mut changed: BTreeSet<String> = out
            .iter()
            .filter_map(|c| match c {
                Completion::Join {
                    group_id,
                    result: Ok(_),
                    ..
                } => Some(group_id.clone()),
                _ => None,
            })
            .collect();
        changed.extend(also.map(str::to_string));
        let mut unsaved = BTreeSet::new();
        for (group_id, value) in g.generations(changed) {
            let saved = self.broker.persist_extension(
                KAFKA_GROUP_NS,
                &group_id,
                Some(value),
                self.broker.metadata_durable(),
            );
            if saved.is_err() {
                unsaved.insert(group_id);
            }
        }
        g.deliver(out, &unsaved);
    }

    /// JoinGroup; waits until the rebalance completes when the member must be parked.
    pub async fn join_group(&self, req: JoinRequest) -> Result<JoinOutcome, GroupError> {
        if self.is_shutting_down() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let group_id = req.group_id.clone();
        let now = self.now_ms();
        let rx = {
            let mut g = self.groups.lock();
            let (reply, out) = g.coordinator.join(req, now);
            let rx = match reply {
                Reply::Now(r) => Err(r),
                Reply::Parked { member_id } => {
                    let (tx, rx) = oneshot::channel();
                    g.join_waiters.insert((group_id, member_id), tx);
                    Ok(rx)
                }
            };
            self.complete(&mut g, out, None);
            rx
        };
        match rx {
            Err(now_result) => now_result,
            Ok(rx) => rx.await.unwrap_or(Err(GroupError::RebalanceInProgress)),
        }
    }

    /// SyncGroup; followers wait for the leader's assignment.
    pub async fn sync_group(&self, req: SyncRequest) -> Result<SyncOutcome, GroupError> {
        if self.is_shutting_down() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let group_id = req.group_id.clone();
        // The leader's SyncGroup hands out the assignments: saved, so static members keep
        // theirs across a restart.
        let leader_sync = !req.assignments.is_empty();
        let now = self.now_ms();
        let rx = {
            let mut g = self.groups.lock();
            let (reply, out) = g.coordinator.sync(req, now);
            let rx = match reply {
                Reply::Now(r) => Err(r),
                Reply::Parked { member_id } => {
                    let (tx, rx) = oneshot::channel();
                    g.sync_waiters.insert((group_id.clone(), member_id), tx);
                    Ok(rx)
                }
            };
            self.complete(&mut g, out, leader_sync.then_some(group_id.as_str()));
            rx
        };
        match rx {
            Err(now_result) => now_result,
            Ok(rx) => rx.await.unwrap_or(Err(GroupError::RebalanceInProgress)),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        let now = self.now_ms();
        self.groups.lock().coordinator.heartbeat(
            group_id,
            member_id,
            group_instance_id,
            generation_id,
            now,
        )
    }

    pub fn leave_group(
        &self,
        group_id: &str,
        members: &[LeavingMember],
    ) -> Vec<Result<(), GroupError>> {
        let now = self.now_ms();
        let mut g = self.groups.lock();
        let (results, out) = g.coordinator.leave(group_id, members, now);
        self.complete(&mut g, out, Some(group_id));
        results
    }

    /// ConsumerGroupHeartbeat (KIP-848). A group id used by a classic group with members
    /// is GROUP_ID_NOT_FOUND for the consumer protocol (one protocol per group at a time).
    pub fn consumer_heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatResponse, CgError> {
        let now = self.now_ms();
        let broker = self.broker.clone();
        let lookup = move |name: &str| {
            broker.topic(name).ok().map(|t| TopicMeta {
                id: t.topic_id,
                partitions: t.partitions as i32,
            })
        };
        let group_id = req.group_id.clone();
        let mut g = self.groups.lock();
        if g.consumer.get(&group_id).is_none() && !g.coordinator.is_idle(&group_id) {
            return Err(CgError::GroupIdNotFound);
        }
        let r = g.consumer.heartbeat(req, &lookup, now)?;
        self.save_consumer_group(&mut g, &group_id);
        Ok(r)
    }

    /// ShareGroupHeartbeat (KIP-932). A member that leaves gets its acquired records
    /// released at once.
    pub async fn share_heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        subscribed: Option<Vec<String>>,
        client_id: &str,
    ) -> Result<ShareHeartbeat, ShareError> {
        let now = self.now_ms();
        let broker = self.broker.clone();
        let lookup = move |name: &str| {
            broker.topic(name).ok().map(|t| TopicMeta {
                id: t.topic_id,
                partitions: t.partitions as i32,
            })
        };
        let r = {
            let mut g = self.groups.lock();
            let taken = g.consumer.get(group_id).is_some() || !g.coordinator.is_idle(group_id);
            if taken && !g.share.is_share_group(group_id) {
                return Err(ShareError::GroupIdNotFound);
            }
            g.share.heartbeat(
                group_id,
                member_id,
                member_epoch,
                subscribed,
                client_id,
                &lookup,
                now,
            )?
        };
        if member_epoch < 0 {
            let _ = self
                .broker
                .share_release_member(group_id, share_member_key(member_id))
                .await;
        }
        Ok(r)
    }

    /// Moves a member's share session (ShareFetch / ShareAcknowledge): `(add, forget)`
    /// partitions, at most `max_partitions` in it.
    pub fn share_session(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
        (add, forget): (&[SharePartition], &[SharePartition]),
        max_partitions: usize,
    ) -> Result<BTreeSet<SharePartition>, ShareError> {
        let mut g = self.groups.lock();
        let parts = g.share.session(group_id, member_id, epoch, add, forget)?;
        if parts.len() > max_partitions {
            // Closed: the client opens a smaller one.
            let _ = g.share.session(group_id, member_id, -1, &[], &[]);
            return Err(ShareError::InvalidRequest(
                "too many partitions in one share session",
            ));
        }
        Ok(parts)
    }

    /// (record lock duration ms, delivery count limit, start at the log start) of share
    /// groups.
    pub fn share_settings(&self) -> (i32, u32, bool) {
        let g = self.groups.lock();
        (
            g.share.config.record_lock_duration_ms,
            g.share.config.delivery_count_limit,
            g.share.config.start_earliest,
        )
    }

    /// A share group's epoch and members (ShareGroupDescribe).
    pub fn describe_share_group(
        &self,
        group_id: &str,
    ) -> Option<(i32, Vec<crate::share_group::ShareMemberInfo>)> {
        self.groups.lock().share.describe(group_id)
    }

    /// Saves a consumer group when its saved form changed (members, epochs, assignments).
    /// A failed save is logged and retried at the next change: the group's members keep
    /// working, a restart before then brings back the previous form (members rejoin).
    fn save_consumer_group(&self, g: &mut GroupsInner, group_id: &str) {
        let Some(group) = g.consumer.get(group_id) else {
            return;
        };
        let Ok(value) = serde_json::to_value(group) else {
            return;
        };
        let text = value.to_string();
        if g.consumer_saved.get(group_id) == Some(&text) {
            return;
        }
        match self.broker.persist_extension(
            KAFKA_CONSUMER_GROUP_NS,
            group_id,
            Some(value),
            self.broker.metadata_durable(),
        ) {
            Ok(()) => {
                g.consumer_saved.insert(group_id.to_string(), text);
            }
            Err(e) => tracing::warn!(group = %group_id, error = %e, "consumer group not saved"),
        }
    }

    /// Puts back a saved consumer group (at open).
    pub(crate) fn restore_consumer_group(&self, value: &serde_json::Value) {
        let Ok(group) = serde_json::from_value::<crate::consumer_group::Group>(value.clone())
        else {
            tracing::warn!("a saved consumer group does not decode; skipped");
            return;
        };
        let now = self.now_ms();
        let mut g = self.groups.lock();
        g.consumer_saved
            .insert(group.group_id.clone(), value.to_string());
        g.consumer.restore(group, now);
    }

    /// Runs the coordinator's timers (called every `GROUP_TICK_MS` by the broker task).
    pub fn tick_groups(&self) {
        let now = self.now_ms();
        self.expire_offsets(now);
        let mut g = self.groups.lock();
        let out = g.coordinator.tick(now);
        if !out.is_empty() {
            self.complete(&mut g, out, None);
        }
        for group_id in g.consumer.tick(now) {
            self.save_consumer_group(&mut g, &group_id);
        }
        let gone = g.share.tick(now);
        if !gone.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let broker = self.broker.clone();
            rt.spawn(async move {
                for (group, member) in gone {
                    let _ = broker
                        .share_release_member(&group, share_member_key(&member))
                        .await;
                }
            });
        }
        self.broker
            .metrics()
            .groups
            .set(g.coordinator.group_count() as i64);
    }

    /// Applies `offsets_retention_ms` at most once per `OFFSET_EXPIRY_CHECK_MS`: in groups
    /// with no members, offsets older than the retention go, and a group left with none is
    /// forgotten. Each change is saved before it is applied; one that cannot be saved stays
    /// (in memory and on disk alike) and is retried at the next check.
    fn expire_offsets(&self, now: i64) {
        let Some(retention) = self.config.offsets_retention_ms else {
            return;
        };
        let mut g = self.groups.lock();
        if now - g.last_offset_expiry_ms < OFFSET_EXPIRY_CHECK_MS {
            return;
        }
        g.last_offset_expiry_ms = now;
        let cutoff = now.saturating_sub(retention);
        let expired = self
            .broker
            .offsets_older_than(cutoff, |group| g.coordinator.is_idle(group));
        for (group_id, partitions) in expired {
            let count = partitions.len();
            if self
                .broker
                .delete_committed_offsets(&group_id, partitions)
                .is_err()
            {
                continue;
            }
            tracing::info!(group = %group_id, partitions = count, "committed offsets expired");
            let empty = self.broker.committed_offsets(&group_id, None).is_empty();
            if empty && self.forget_generation(&group_id).is_ok() {
                g.coordinator.forget_group(&group_id);
            }
        }
    }

    /// Removes a group's saved generation.
    fn forget_generation(&self, group_id: &str) -> broker::Result<()> {
        self.broker.persist_extension(
            KAFKA_GROUP_NS,
            group_id,
            None,
            self.broker.metadata_durable(),
        )
    }

    /// OffsetCommit. Group-level errors fail the whole request; unknown partitions fail
    /// only themselves. Checked and saved under the groups lock, so a group a commit
    /// created goes again when the commit cannot be saved.
    pub fn commit_offsets(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        offsets: Vec<OffsetToCommit>,
    ) -> Result<Vec<Result<(), BrokerError>>, GroupError> {
        let now = self.now_ms();
        let mut results = Vec::with_capacity(offsets.len());
        let mut valid = Vec::with_capacity(offsets.len());
        for o in offsets {
            if self.broker.partition_id(&o.topic, o.partition).is_ok() {
                valid.push((
                    o.topic,
                    o.partition,
                    CommittedOffset {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata,
                        commit_timestamp_ms: now,
                    },
                ));
                results.push(Ok(()));
            } else {
                results.push(Err(BrokerError::UnknownTopicOrPartition));
            }
        }
        let mut g = self.groups.lock();
        if let Some(checked) = g.consumer.check_commit(group_id, member_id, generation_id) {
            checked.map_err(|e| match e {
                CgError::UnknownMemberId => GroupError::UnknownMemberId,
                _ => GroupError::StaleMemberEpoch,
            })?;
            if self.broker.commit_offsets(group_id, valid).is_err() {
                return Err(GroupError::CoordinatorNotAvailable);
            }
            return Ok(results);
        }
        let metadata = valid
            .iter()
            .map(|(_, _, o)| o.metadata.as_ref().map_or(0, String::len));
        let created = g.coordinator.check_commit(
            group_id,
            generation_id,
            member_id,
            group_instance_id,
            metadata,
            now,
        )?;
        if self.broker.commit_offsets(group_id, valid).is_err() {
            if created {
                g.coordinator.forget_group(group_id);
            }
            return Err(GroupError::CoordinatorNotAvailable);
        }
        Ok(results)
    }

    /// OffsetFetch; `None` = every partition the group has committed.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        self.broker.committed_offsets(group_id, partitions)
    }

    /// OffsetDelete; `subscribed_topics` are the topics live members subscribe to (the
    /// front door decodes them from member metadata).
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed_topics: &[String],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let g = self.groups.lock();
        let results =
            g.coordinator
                .check_delete_offsets(group_id, partitions, subscribed_topics)?;
        let deleted: Vec<(String, i32)> = partitions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p.clone())
            .collect();
        if self
            .broker
            .delete_committed_offsets(group_id, deleted)
            .is_err()
        {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        Ok(results)
    }

    /// Classic and consumer groups (the latter with protocol type `consumer`).
    pub fn list_groups(&self) -> Vec<GroupListing> {
        let g = self.groups.lock();
        let mut v = g.coordinator.list_groups();
        let classic: BTreeSet<String> = v.iter().map(|l| l.group_id.clone()).collect();
        for cg in g.consumer.groups() {
            if classic.contains(&cg.group_id) && !g.coordinator.is_idle(&cg.group_id) {
                continue;
            }
            v.retain(|l| l.group_id != cg.group_id);
            v.push(GroupListing {
                group_id: cg.group_id.clone(),
                protocol_type: "consumer".to_string(),
                state: if cg.members.is_empty() {
                    crate::group::GroupState::Empty
                } else {
                    crate::group::GroupState::Stable
                },
            });
        }
        v.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        v
    }

    /// A consumer group as ConsumerGroupDescribe shows it.
    pub fn describe_consumer_group(&self, group_id: &str) -> Option<crate::consumer_group::Group> {
        self.groups.lock().consumer.get(group_id).cloned()
    }

    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        self.groups.lock().coordinator.describe_group(group_id)
    }

    /// DeleteGroup: only an empty group; its offsets and generation go with it.
    pub fn delete_group(&self, group_id: &str) -> Result<(), GroupError> {
        let mut g = self.groups.lock();
        if !g.coordinator.has_group(group_id) {
            return Err(GroupError::GroupIdNotFound);
        }
        if !g.coordinator.is_idle(group_id) {
            return Err(GroupError::NonEmptyGroup);
        }
        let saved = self
            .broker
            .delete_offset_group(group_id)
            .and_then(|()| self.forget_generation(group_id));
        if saved.is_err() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        g.coordinator.delete_group(group_id)?;
        self.broker
            .metrics()
            .groups
            .set(g.coordinator.group_count() as i64);
        Ok(())
    }
}

/// A partition of a share session: (topic id, partition).
pub type SharePartition = (u128, i32);

/// The queue engine's consumer id of a share-group member.
pub fn share_member_key(member_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    member_id.hash(&mut h);
    h.finish()
}
