//! The async side of group coordination: parks JoinGroup/SyncGroup callers on oneshot
//! channels, feeds the state machine the clock's time, routes its completions, and
//! persists committed offsets and generations to the metadata log.

use std::collections::{BTreeSet, HashMap};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::group::{
    CommittedOffset, Completion, GroupCoordinator, GroupDescription, GroupError, GroupListing,
    JoinOutcome, JoinRequest, LeavingMember, Reply, SyncOutcome, SyncRequest,
};
use crate::metadata::MetaRecord;

type Key = (String, String);

/// How often committed offsets are checked for expiry.
const OFFSET_EXPIRY_CHECK_MS: i64 = 60_000;
type Waiter<T> = oneshot::Sender<Result<T, GroupError>>;

pub struct GroupsInner {
    pub coordinator: GroupCoordinator,
    /// When committed offsets were last checked against `offsets_retention_ms`.
    last_offset_expiry_ms: i64,
    join_waiters: HashMap<Key, Waiter<JoinOutcome>>,
    sync_waiters: HashMap<Key, Waiter<SyncOutcome>>,
}

pub struct GroupsCell(Mutex<GroupsInner>);

impl GroupsCell {
    pub fn new(coordinator: GroupCoordinator) -> Self {
        Self(Mutex::new(GroupsInner {
            coordinator,
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

    fn generation_records(&self, groups: BTreeSet<String>) -> Vec<MetaRecord> {
        groups
            .into_iter()
            .filter_map(|g| {
                self.coordinator
                    .generation(&g)
                    .map(
                        |(generation_id, protocol_type)| MetaRecord::GroupGeneration {
                            group_id: g,
                            generation_id,
                            protocol_type,
                        },
                    )
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

impl Broker {
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
        for r in g.generation_records(changed) {
            let MetaRecord::GroupGeneration { group_id, .. } = &r else {
                continue;
            };
            let group_id = group_id.clone();
            if self.persist(r, false).is_err() {
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
        let now = self.now_ms();
        let rx = {
            let mut g = self.groups.lock();
            let (reply, out) = g.coordinator.sync(req, now);
            let rx = match reply {
                Reply::Now(r) => Err(r),
                Reply::Parked { member_id } => {
                    let (tx, rx) = oneshot::channel();
                    g.sync_waiters.insert((group_id, member_id), tx);
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

    /// Runs the coordinator's timers (called every `GROUP_TICK_MS` by the broker task).
    pub fn tick_groups(&self) {
        let now = self.now_ms();
        self.expire_offsets(now);
        let mut g = self.groups.lock();
        let out = g.coordinator.tick(now);
        if !out.is_empty() {
            self.complete(&mut g, out, None);
        }
    }

    /// Applies `offsets_retention_ms` at most once per `OFFSET_EXPIRY_CHECK_MS`. Each
    /// expiry is persisted before it is applied; one that cannot be saved stays (in memory
    /// and on disk alike) and is retried at the next check.
    fn expire_offsets(&self, now: i64) {
        let Some(retention) = self.config.offsets_retention_ms else {
            return;
        };
        let mut g = self.groups.lock();
        if now - g.last_offset_expiry_ms < OFFSET_EXPIRY_CHECK_MS {
            return;
        }
        g.last_offset_expiry_ms = now;
        let (dropped, forgotten) = g.coordinator.expired_offsets(now, retention);
        for (group_id, partitions) in dropped {
            let record = MetaRecord::OffsetsDeleted {
                group_id: group_id.clone(),
                partitions: partitions.clone(),
            };
            if self.persist(record, false).is_ok() {
                tracing::info!(group = %group_id, partitions = partitions.len(), "committed offsets expired");
                g.coordinator.remove_offsets(&group_id, &partitions);
            }
        }
        for group_id in forgotten {
            let record = MetaRecord::GroupDeleted {
                group_id: group_id.clone(),
            };
            if self.persist(record, false).is_ok() {
                g.coordinator.forget_group(&group_id);
            }
        }
    }

    /// OffsetCommit. Group-level errors fail the whole request; unknown partitions fail
    /// only themselves.
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
        {
            let topics = self.topics.read();
            for o in offsets {
                let known = topics
                    .get(&o.topic)
                    .and_then(|t| t.partition(o.partition))
                    .is_ok();
                if known {
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
        }
        // Applied, persisted and (if the persist fails) undone under one lock, so no
        // reader sees an offset that was never saved survive the failure.
        let mut g = self.groups.lock();
        let keys: Vec<(String, i32)> = valid.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let previous = g.coordinator.fetch_offsets(group_id, Some(&keys));
        let existed = g.coordinator.has_group(group_id);
        g.coordinator.commit_offsets(
            group_id,
            generation_id,
            member_id,
            group_instance_id,
            valid.clone(),
            now,
        )?;
        if !valid.is_empty() {
            let record = MetaRecord::OffsetsCommitted {
                group_id: group_id.to_string(),
                offsets: valid,
            };
            if self.persist(record, false).is_err() {
                g.coordinator.revert_offsets(group_id, previous, existed);
                return Err(GroupError::CoordinatorNotAvailable);
            }
        }
        Ok(results)
    }

    /// OffsetFetch; `None` = every partition the group has committed.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<(String, i32, Option<CommittedOffset>)> {
        self.groups
            .lock()
            .coordinator
            .fetch_offsets(group_id, partitions)
    }

    /// OffsetDelete; `subscribed_topics` are the topics live members subscribe to (the
    /// front door decodes them from member metadata).
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
        subscribed_topics: &[String],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        // Applied, persisted and (if the persist fails) undone under one lock.
        let mut g = self.groups.lock();
        let previous = g.coordinator.fetch_offsets(group_id, Some(partitions));
        let results = g
            .coordinator
            .delete_offsets(group_id, partitions, subscribed_topics)?;
        let deleted: Vec<(String, i32)> = partitions
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p.clone())
            .collect();
        if !deleted.is_empty() {
            let record = MetaRecord::OffsetsDeleted {
                group_id: group_id.to_string(),
                partitions: deleted,
            };
            if self.persist(record, false).is_err() {
                g.coordinator.revert_offsets(group_id, previous, true);
                return Err(GroupError::CoordinatorNotAvailable);
            }
        }
        Ok(results)
    }

    pub fn list_groups(&self) -> Vec<GroupListing> {
        self.groups.lock().coordinator.list_groups()
    }

    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        self.groups.lock().coordinator.describe_group(group_id)
    }

    pub fn delete_group(&self, group_id: &str) -> Result<(), GroupError> {
        let mut g = self.groups.lock();
        let generation = g.coordinator.generation(group_id);
        let offsets = g.coordinator.fetch_offsets(group_id, None);
        g.coordinator.delete_group(group_id)?;
        let record = MetaRecord::GroupDeleted {
            group_id: group_id.to_string(),
        };
        if self.persist(record, false).is_err() {
            let (generation_id, protocol_type) = generation.unwrap_or((0, None));
            let offsets = offsets
                .into_iter()
                .filter_map(|(t, p, o)| Some(((t, p), o?)));
            g.coordinator
                .restore_group(group_id, generation_id, protocol_type, offsets);
            return Err(GroupError::CoordinatorNotAvailable);
        }
        Ok(())
    }

    /// (group, topic, partition, high watermark - committed) for every committed offset.
    pub fn group_lags(&self) -> Vec<(String, String, i32, i64)> {
        let export = self.groups.lock().coordinator.export();
        let topics = self.topics.read();
        let mut out = Vec::new();
        for (group, _, _, offsets) in export {
            for ((topic, partition), o) in offsets {
                let Ok(pid) = topics.get(&topic).and_then(|t| t.partition(partition)) else {
                    continue;
                };
                if let Ok(offs) = self.store.offsets(pid) {
                    out.push((
                        group.clone(),
                        topic,
                        partition,
                        offs.log_end.saturating_sub(o.offset).max(0),
                    ));
                }
            }
        }
        out
    }
}
