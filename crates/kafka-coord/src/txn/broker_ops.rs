//! The broker side of transactions: runs the coordinator under its lock, persists what it
//! returns (inside the lock, so records reach the metadata log in the order they were
//! made), writes markers, applies committed offsets, and serves the read_committed view.

use std::collections::HashMap;
use std::sync::Weak;

use common::{Offset, PartitionId};
use serde::Serialize;

use crate::KafkaCoord;
use broker::BrokerError;
use broker::Fetched;

use crate::error::Result;
use crate::txn::control;
use crate::txn::coordinator::{EndOutcome, EndPlan, TxnError, TxnRecord, TxnState};
use broker::CommittedOffset;
use broker::metadata::KAFKA_TXN_NS;

/// How often transaction timeouts (and unfinished completions) are checked.
pub const TXN_TICK_MS: u64 = 1_000;

/// A fetch as one isolation level sees it.
#[derive(Clone, Debug, Default)]
pub struct IsolatedFetch {
    pub fetched: Fetched,
    pub last_stable_offset: Offset,
    /// (producer id, first offset) of aborted transactions overlapping the data.
    pub aborted: Vec<(i64, Offset)>,
}

/// The consumer group membership a transactional producer names in TxnOffsetCommit v3+
/// (KIP-447); `generation_id` -1 for older clients.
#[derive(Clone, Copy, Debug)]
pub struct GroupMember<'a> {
    pub generation_id: i32,
    pub member_id: &'a str,
    pub group_instance_id: Option<&'a str>,
}

/// DescribeTransactions' view of one transactional id.
#[derive(Clone, Debug, Serialize)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub state: &'static str,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

/// DescribeProducers' view of one producer on one partition.
#[derive(Clone, Debug, Serialize)]
pub struct ProducerListing {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    pub current_txn_start_offset: Offset,
}

impl KafkaCoord {
    /// Saves a transactional id's whole state (its metadata extension entry).
    fn persist_txn(&self, rec: &TxnRecord) -> Result<()> {
        let value = serde_json::to_value(rec)
            .map_err(|e| BrokerError::Metadata(format!("transaction state: {e}")))?;
        let id = &rec.transactional_id;
        Ok(self.broker.persist_extension(
            KAFKA_TXN_NS,
            id,
            Some(value),
            self.broker.metadata_durable(),
        )?)
    }

    /// InitProducerId with a transactional id. Fences the previous producer and aborts its
    /// open transaction before answering.
    pub async fn init_transactional_producer(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        if self.is_shutting_down() {
            return Err(BrokerError::ShuttingDown.into());
        }
        let now = self.now_ms();
        let outcome = {
            let mut c = self.txns.lock();
            let outcome =
                c.init_producer(transactional_id, timeout_ms, expected, now, || {
                    self.init_producer_id().map(|(id, _)| id)
                })??;
            self.persist_txn(&outcome.record)?;
            outcome
        };
        if let Some(plan) = outcome.abort {
            self.execute_plan(plan).await?;
        }
        Ok((outcome.producer_id, outcome.producer_epoch))
    }

    /// AddPartitionsToTxn; partitions of unknown topics fail the request.
    pub fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<()> {
        for (t, p) in partitions {
            self.broker.partition_id(t, *p)?;
        }
        let now = self.now_ms();
        let mut c = self.txns.lock();
        if let Some(rec) =
            c.add_partitions(transactional_id, producer_id, epoch, partitions, now)?
        {
            self.persist_txn(&rec)?;
        }
        Ok(())
    }

    pub fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group_id: &str,
    ) -> Result<()> {
        let now = self.now_ms();
        let mut c = self.txns.lock();
        if let Some(rec) = c.add_offsets(transactional_id, producer_id, epoch, group_id, now)? {
            self.persist_txn(&rec)?;
        }
        Ok(())
    }

    /// TxnOffsetCommit: (topic, partition, offset, leader epoch, metadata). The offsets
    /// become visible to OffsetFetch when the transaction commits.
    pub fn txn_offset_commit(
        &self,
        transactional_id: &str,
        group_id: &str,
        producer_id: i64,
        epoch: i16,
        member: &GroupMember<'_>,
        offsets: Vec<(String, i32, i64, i32, Option<String>)>,
    ) -> Result<()> {
        self.groups.lock().coordinator.check_txn_commit(
            group_id,
            member.generation_id,
            member.member_id,
            member.group_instance_id,
        )?;
        let now = self.now_ms();
        let offsets = offsets
            .into_iter()
            .map(|(t, p, offset, leader_epoch, metadata)| {
                (
                    t,
                    p,
                    CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                    },
                )
            })
            .collect();
        let mut c = self.txns.lock();
        let rec =
            c.txn_offset_commit(transactional_id, producer_id, epoch, group_id, offsets, now)?;
        self.persist_txn(&rec)
    }

    /// EndTxn: writes the markers and completes before answering.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        if self.is_shutting_down() {
            return Err(BrokerError::ShuttingDown.into());
        }
        let now = self.now_ms();
        let plan = {
            let mut c = self.txns.lock();
            let before = c.get(transactional_id).cloned();
            match c.end_txn(transactional_id, producer_id, epoch, commit, now)? {
                EndOutcome::AlreadyDone => return Ok(()),
                EndOutcome::Plan(plan, rec) => {
                    // Not persisted: not done. The transaction stays open, as before.
                    if let Err(e) = self.persist_txn(&rec) {
                        c.put_back(transactional_id, before);
                        return Err(e);
                    }
                    plan
                }
            }
        };
        self.execute_plan(plan).await
    }

    /// Appends a marker to every partition of the transaction, applies its offsets when it
    /// commits, then marks it complete. On failure (markers, or a metadata record that
    /// could not be saved) the transaction stays prepared and the timer retries; markers
    /// written twice are harmless (the second finds no open transaction).
    async fn execute_plan(&self, plan: EndPlan) -> Result<()> {
        let result = self.write_markers(&plan).await;
        let result = match result {
            Ok(()) if plan.commit && !plan.offsets.is_empty() => self.apply_txn_offsets(&plan),
            r => r,
        };
        if let Err(e) = &result {
            tracing::warn!(transactional_id = %plan.transactional_id, error = %e, "completing the transaction failed; will retry");
            self.txns.lock().retry_later(&plan.transactional_id);
            return result;
        }
        let now = self.now_ms();
        let mut c = self.txns.lock();
        let before = c.get(&plan.transactional_id).cloned();
        if let Some(rec) = c.complete(&plan.transactional_id, plan.producer_epoch, now)
            && let Err(e) = self.persist_txn(&rec)
        {
            c.put_back(&plan.transactional_id, before);
            c.retry_later(&plan.transactional_id);
            return Err(e);
        }
        Ok(())
    }

    async fn write_markers(&self, plan: &EndPlan) -> Result<()> {
        for (topic, partition) in &plan.partitions {
            let pid = match self.broker.partition_id(topic, *partition) {
                Ok(p) => p,
                // The topic was deleted: nothing left to mark.
                Err(BrokerError::UnknownTopicOrPartition) => continue,
                Err(e) => return Err(e.into()),
            };
            self.write_marker(pid, plan.producer_id, plan.producer_epoch, plan.commit)
                .await?;
        }
        Ok(())
    }

    /// Under the partition's producer lock, so a transactional append that passed its
    /// check lands before the marker, never after it.
    async fn write_marker(
        &self,
        pid: PartitionId,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<()> {
        let batch = control::marker_batch(producer_id, epoch, commit, 0, self.now_ms());
        let lock = self.broker.append_lock(pid);
        let _guard = lock.lock().await;
        let base_offset = self.broker.append_locked(pid, batch).await?;
        self.txn_index.end(pid, producer_id, commit, base_offset);
        Ok(())
    }

    /// Saves, then applies, the offsets a committed transaction carries (a group's offsets
    /// that could not be saved are not applied: the caller retries the completion).
    fn apply_txn_offsets(&self, plan: &EndPlan) -> Result<()> {
        let mut by_group: std::collections::BTreeMap<&str, Vec<(String, i32, CommittedOffset)>> =
            Default::default();
        for o in &plan.offsets {
            by_group.entry(&o.group_id).or_default().push((
                o.topic.clone(),
                o.partition,
                o.offset.clone(),
            ));
        }
        for (group_id, offsets) in by_group {
            let mut g = self.groups.lock();
            self.broker.commit_offsets(group_id, offsets)?;
            // A group known only through its transactional commits exists from now on.
            g.coordinator.restore_group(group_id, 0, None);
        }
        Ok(())
    }

    /// Fetch at an isolation level: read_committed stops at the last stable offset and
    /// lists the aborted transactions in the range.
    pub fn fetch_isolated(
        &self,
        topic: &str,
        partition: i32,
        offset: Offset,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<IsolatedFetch> {
        let pid = self.broker.partition_id(topic, partition)?;
        if !read_committed {
            // The hot path: one extra map lookup for the LSO field, nothing else.
            let fetched = self.broker.fetch(topic, partition, offset, max_bytes)?;
            let lso = self
                .txn_index
                .last_stable_offset(pid, fetched.high_watermark);
            return Ok(IsolatedFetch {
                fetched,
                last_stable_offset: lso,
                aborted: Vec::new(),
            });
        }
        let hw = self.broker.partition_watermarks(pid)?.high_watermark;
        let lso = self.txn_index.last_stable_offset(pid, hw);
        let budget = if offset >= lso { 0 } else { max_bytes };
        let mut fetched = self.broker.fetch(topic, partition, offset, budget)?;
        let before = fetched.chunks.len();
        fetched.chunks.retain(|c| {
            broker::batch::BatchHeader::parse(c).map_or(true, |h| h.last_offset() < lso)
        });
        if fetched.chunks.len() != before {
            fetched.bytes = fetched.chunks.iter().map(|c| c.len()).sum();
            fetched.records = fetched
                .chunks
                .iter()
                .filter_map(|c| broker::batch::BatchHeader::parse(c).ok())
                .map(|h| h.record_count().max(0) as u64)
                .sum();
        }
        let aborted = if fetched.chunks.is_empty() {
            Vec::new()
        } else {
            self.txn_index.aborted_between(pid, offset, lso)
        };
        Ok(IsolatedFetch {
            fetched,
            last_stable_offset: lso,
            aborted,
        })
    }

    /// True when a transaction not yet complete carries an offset for the partition.
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.txns
            .lock()
            .has_pending_offset(group_id, topic, partition)
    }

    /// ListOffsets latest under read_committed.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Result<Offset> {
        let pid = self.broker.partition_id(topic, partition)?;
        let hw = self.broker.partition_watermarks(pid)?.high_watermark;
        Ok(self.txn_index.last_stable_offset(pid, hw))
    }

    /// ListTransactions: (transactional id, producer id, state), filtered by state names
    /// and producer ids (empty filter = all).
    pub fn list_transactions(
        &self,
        states: &[String],
        producer_ids: &[i64],
    ) -> Vec<(String, i64, &'static str)> {
        self.txns
            .lock()
            .records()
            .filter(|r| states.is_empty() || states.iter().any(|s| s == r.state.as_str()))
            .filter(|r| producer_ids.is_empty() || producer_ids.contains(&r.producer_id))
            .map(|r| (r.transactional_id.clone(), r.producer_id, r.state.as_str()))
            .collect()
    }

    pub fn describe_transaction(&self, transactional_id: &str) -> Result<TxnDescription> {
        let c = self.txns.lock();
        let r = c
            .get(transactional_id)
            .ok_or(TxnError::TransactionalIdNotFound)?;
        Ok(TxnDescription {
            transactional_id: r.transactional_id.clone(),
            state: r.state.as_str(),
            producer_id: r.producer_id,
            producer_epoch: r.producer_epoch,
            timeout_ms: r.timeout_ms,
            start_ms: r.started_ms,
            partitions: r.partitions.iter().cloned().collect(),
        })
    }

    /// DescribeProducers: producers with state on the partition and, for those with an
    /// open transaction, where it starts.
    pub fn describe_producers(&self, topic: &str, partition: i32) -> Result<Vec<ProducerListing>> {
        let pid = self.broker.partition_id(topic, partition)?;
        let open = self.txn_index.ongoing(pid);
        let mut out: Vec<ProducerListing> = self
            .producers
            .describe(pid)
            .into_iter()
            .map(
                |(producer_id, producer_epoch, last_sequence, last_timestamp_ms)| ProducerListing {
                    producer_id,
                    producer_epoch,
                    last_sequence,
                    last_timestamp_ms,
                    current_txn_start_offset: open
                        .iter()
                        .find(|(id, _)| *id == producer_id)
                        .map_or(-1, |(_, o)| *o),
                },
            )
            .collect();
        for (producer_id, first) in open {
            if !out.iter().any(|p| p.producer_id == producer_id) {
                out.push(ProducerListing {
                    producer_id,
                    producer_epoch: -1,
                    last_sequence: -1,
                    last_timestamp_ms: -1,
                    current_txn_start_offset: first,
                });
            }
        }
        Ok(out)
    }

    /// Timer work: aborts timed-out transactions, retries unfinished completions, forgets
    /// idle transactional ids. A transition whose record cannot be saved is put back and
    /// tried again at the next tick.
    pub async fn tick_transactions(&self) {
        let now = self.now_ms();
        let plans = {
            let mut c = self.txns.lock();
            // What a failed save puts back: the transactions a tick may move.
            let before: HashMap<String, TxnRecord> = c
                .records()
                .filter(|r| {
                    matches!(
                        r.state,
                        TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                    )
                })
                .map(|r| (r.transactional_id.clone(), r.clone()))
                .collect();
            let mut plans = c.tick(now);
            plans.retain(|(plan, rec)| {
                let saved = self.persist_txn(rec).is_ok();
                if !saved {
                    let id = &plan.transactional_id;
                    c.put_back(id, before.get(id).cloned());
                }
                saved
            });
            for rec in c.expire(now) {
                let removed = self.broker.persist_extension(
                    KAFKA_TXN_NS,
                    &rec.transactional_id,
                    None,
                    self.broker.metadata_durable(),
                );
                if removed.is_err() {
                    c.restore([rec]);
                }
            }
            plans
        };
        for (plan, _) in plans {
            tracing::info!(transactional_id = %plan.transactional_id, commit = plan.commit, "completing transaction from the timer");
            let _ = self.execute_plan(plan).await;
        }
    }

    /// At open: an open transaction the index found in the log that no coordinator record
    /// owns (its Ongoing record was lost in a crash) would hold the LSO forever; abort it.
    pub(crate) async fn abort_orphaned_transactions(&self) {
        for (topic, partition, pid) in self.broker.all_partitions() {
            for (producer_id, _) in self.txn_index.ongoing(pid) {
                let owned = {
                    let c = self.txns.lock();
                    c.transactional_id_of(producer_id)
                        .and_then(|id| c.get(id))
                        .is_some_and(|r| {
                            r.state != TxnState::Empty
                                && r.partitions.contains(&(topic.clone(), partition))
                        })
                };
                if !owned {
                    tracing::warn!(%topic, partition, producer_id, "aborting an orphaned open transaction");
                    if let Err(e) = self.write_marker(pid, producer_id, i16::MAX, false).await {
                        tracing::warn!(error = %e, "orphan abort failed");
                    }
                }
            }
        }
    }
}

/// Checks transaction timeouts every `TXN_TICK_MS`; first clears orphaned transactions.
pub(crate) async fn txn_timer(
    coord: Weak<KafkaCoord>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if let Some(c) = coord.upgrade() {
        c.abort_orphaned_transactions().await;
    }
    crate::every(coord, shutdown, TXN_TICK_MS, |c| async move {
        c.tick_transactions().await
    })
    .await;
}
