//! The transaction coordinator state machine (KIP-98), keyed by `transactional.id`.
//! Clock-free: every call takes `now_ms`; the broker persists the records it returns to
//! the metadata log and writes the markers of the plans it returns.
//!
//! States: Empty → Ongoing (first AddPartitions/AddOffsets) → PrepareCommit/PrepareAbort
//! (EndTxn, timeout, or a new producer fencing an open transaction) → CompleteCommit/
//! CompleteAbort (markers written) → Ongoing again with the next transaction. Invariants:
//! a transaction in a Prepare state has a plan in flight or queued in `needs_completion`;
//! `by_producer` maps every record's producer id back to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::TimestampMs;
use serde::{Deserialize, Serialize};

use crate::group::CommittedOffset;

/// Kafka `transaction.max.timeout.ms`.
pub const TXN_MAX_TIMEOUT_MS: i32 = 900_000;
/// A Prepare state older than this has lost its writer (its request was cancelled, say,
/// when the client vanished): `tick` writes its markers again. Markers are idempotent for
/// readers: a second marker of a finished transaction changes nothing.
pub const PREPARE_RETRY_MS: i64 = 5_000;
/// Kafka `transactional.id.expiration.ms`: an idle transactional id with no open
/// transaction is forgotten after this long.
pub const TXN_ID_EXPIRATION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
}

impl TxnState {
    /// The name Kafka tools print (DescribeTransactions / ListTransactions).
    pub fn as_str(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("producer fenced: {0}")]
    ProducerFenced(String),
    #[error("producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("a previous transaction is still completing")]
    ConcurrentTransactions,
    #[error("transaction timeout {0} ms outside 1..={TXN_MAX_TIMEOUT_MS}")]
    InvalidTransactionTimeout(i32),
    #[error("unknown transactional id")]
    TransactionalIdNotFound,
}

/// An offset committed inside a transaction, applied to its group when it commits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingOffset {
    pub group_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: CommittedOffset,
}

/// One transactional id's persisted state (the metadata log stores it whole).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    pub pending_offsets: Vec<PendingOffset>,
    /// When the current transaction started (-1 when none is open).
    pub started_ms: TimestampMs,
    pub updated_ms: TimestampMs,
    /// The producer id that takes over once the abort under the old, exhausted id is
    /// written (epoch overflow with a transaction open).
    #[serde(default)]
    pub next_producer_id: Option<i64>,
}

/// Markers to write (one per partition) before the transaction can complete.
#[derive(Clone, Debug, PartialEq)]
pub struct EndPlan {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
    pub offsets: Vec<PendingOffset>,
}

/// InitProducerId's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct InitOutcome {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// An open transaction of the fenced producer, to abort before answering.
    pub abort: Option<EndPlan>,
    pub record: TxnRecord,
}

/// EndTxn's answer. Made once per EndTxn and consumed at once: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum EndOutcome {
    /// A retry of an EndTxn that already completed.
    AlreadyDone,
    Plan(EndPlan, TxnRecord),
}

#[derive(Default)]
pub struct TxnCoordinator {
    txns: BTreeMap<String, TxnRecord>,
    by_producer: HashMap<i64, String>,
    /// Prepare-state transactions whose markers must be (re)written by `tick`.
    needs_completion: BTreeSet<String>,
}

impl TxnRecord {
    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced(format!(
                "epoch {epoch} is not the current epoch {} of {}",
                self.producer_epoch, self.transactional_id
            )));
        }
        Ok(())
    }

    fn plan(&self, commit: bool) -> EndPlan {
        EndPlan {
            transactional_id: self.transactional_id.clone(),
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            commit,
            partitions: self.partitions.iter().cloned().collect(),
            offsets: if commit {
                self.pending_offsets.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// Opens a transaction if none is open. Prepare states refuse (still completing).
    fn ensure_ongoing(&mut self, now_ms: TimestampMs) -> Result<(), TxnError> {
        match self.state {
            TxnState::Ongoing => Ok(()),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                self.state = TxnState::Ongoing;
                self.partitions.clear();
                self.groups.clear();
                self.pending_offsets.clear();
                self.started_ms = now_ms;
                Ok(())
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(TxnError::ConcurrentTransactions)
            }
            TxnState::Dead => Err(TxnError::InvalidTxnState("transactional id is dead".into())),
        }
    }
}

impl TxnCoordinator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads persisted records; transactions caught in a Prepare state are completed by
    /// the next `tick`.
    pub fn restore(&mut self, records: impl IntoIterator<Item = TxnRecord>) {
        for r in records {
            if matches!(r.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                self.needs_completion.insert(r.transactional_id.clone());
            }
            self.by_producer
                .insert(r.producer_id, r.transactional_id.clone());
            self.txns.insert(r.transactional_id.clone(), r);
        }
    }

    /// Puts a transactional id back the way it was (`before`: its record, or `None` when it
    /// did not exist) after a transition whose record could not be persisted.
    pub fn put_back(&mut self, transactional_id: &str, before: Option<TxnRecord>) {
        self.needs_completion.remove(transactional_id);
        if let Some(now) = self.txns.remove(transactional_id) {
            self.by_producer.remove(&now.producer_id);
        }
        if let Some(r) = before {
            self.restore([r]);
        }
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnRecord> {
        self.txns.get(transactional_id)
    }

    pub fn records(&self) -> impl Iterator<Item = &TxnRecord> {
        self.txns.values()
    }

    /// InitProducerId with a transactional id: the same producer id with the epoch bumped
    /// (a new id when the epoch would overflow), fencing the previous producer; its open
    /// transaction is aborted under the new epoch. `expected` is the caller's current
    /// (id, epoch) when it re-initialises itself (KIP-360), else None.
    pub fn init_producer(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        now_ms: TimestampMs,
        allocate_id: impl FnOnce() -> Result<i64, crate::CoordError>,
    ) -> Result<Result<InitOutcome, TxnError>, crate::CoordError> {
        if !(1..=TXN_MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Ok(Err(TxnError::InvalidTransactionTimeout(timeout_ms)));
        }
        let Some(rec) = self.txns.get_mut(transactional_id) else {
            if expected.is_some() {
                return Ok(Err(TxnError::InvalidProducerIdMapping));
            }
            let producer_id = allocate_id()?;
            let rec = TxnRecord {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                pending_offsets: Vec::new(),
                started_ms: -1,
                updated_ms: now_ms,
                next_producer_id: None,
            };
            self.by_producer
                .insert(producer_id, transactional_id.to_string());
            self.txns.insert(transactional_id.to_string(), rec.clone());
            return Ok(Ok(InitOutcome {
                producer_id,
                producer_epoch: 0,
                abort: None,
                record: rec,
            }));
        };
        if matches!(rec.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Ok(Err(TxnError::ConcurrentTransactions));
        }
        if let Some((id, epoch)) = expected
            && let Err(e) = rec.check_producer(id, epoch)
        {
            return Ok(Err(e));
        }
        if rec.producer_epoch >= i16::MAX - 1 {
            let new_id = allocate_id()?;
            if rec.state == TxnState::Ongoing {
                // The open transaction is aborted under the old id's last epoch (its
                // batches carry the old id); the new id takes over in `complete`.
                rec.producer_epoch = i16::MAX;
                rec.next_producer_id = Some(new_id);
            } else {
                self.by_producer.remove(&rec.producer_id);
                self.by_producer
                    .insert(new_id, transactional_id.to_string());
                rec.producer_id = new_id;
                rec.producer_epoch = 0;
            }
        } else {
            rec.producer_epoch += 1;
        }
        rec.timeout_ms = timeout_ms;
        rec.updated_ms = now_ms;
        let abort = if rec.state == TxnState::Ongoing {
            rec.state = TxnState::PrepareAbort;
            Some(rec.plan(false))
        } else {
            rec.state = TxnState::Empty;
            rec.partitions.clear();
            rec.groups.clear();
            rec.pending_offsets.clear();
            rec.started_ms = -1;
            None
        };
        let (producer_id, producer_epoch) = match rec.next_producer_id {
            Some(next) => (next, 0),
            None => (rec.producer_id, rec.producer_epoch),
        };
        Ok(Ok(InitOutcome {
            producer_id,
            producer_epoch,
            abort,
            record: rec.clone(),
        }))
    }

    fn producer_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<&mut TxnRecord, TxnError> {
        let rec = self
            .txns
            .get_mut(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        rec.check_producer(producer_id, epoch)?;
        Ok(rec)
    }

    /// AddPartitionsToTxn. Returns the record to persist when something changed.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: TimestampMs,
    ) -> Result<Option<TxnRecord>, TxnError> {
        let rec = self.producer_txn(transactional_id, producer_id, epoch)?;
        let was_ongoing = rec.state == TxnState::Ongoing;
        rec.ensure_ongoing(now_ms)?;
        let mut changed = !was_ongoing;
        for p in partitions {
            changed |= rec.partitions.insert(p.clone());
        }
        if !changed {
            return Ok(None);
        }
        rec.updated_ms = now_ms;
        Ok(Some(rec.clone()))
    }

    /// AddOffsetsToTxn: the group whose offsets the transaction will commit.
    pub fn add_offsets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group_id: &str,
        now_ms: TimestampMs,
    ) -> Result<Option<TxnRecord>, TxnError> {
        let rec = self.producer_txn(transactional_id, producer_id, epoch)?;
        let was_ongoing = rec.state == TxnState::Ongoing;
        rec.ensure_ongoing(now_ms)?;
        if !rec.groups.insert(group_id.to_string()) && was_ongoing {
            return Ok(None);
        }
        rec.updated_ms = now_ms;
        Ok(Some(rec.clone()))
    }

    /// TxnOffsetCommit: offsets held back until the transaction commits.
    pub fn txn_offset_commit(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group_id: &str,
        offsets: Vec<(String, i32, CommittedOffset)>,
        now_ms: TimestampMs,
    ) -> Result<TxnRecord, TxnError> {
        let rec = self.producer_txn(transactional_id, producer_id, epoch)?;
        if rec.state != TxnState::Ongoing || !rec.groups.contains(group_id) {
            return Err(TxnError::InvalidTxnState(format!(
                "group {group_id} was not added to the transaction"
            )));
        }
        for (topic, partition, offset) in offsets {
            match rec
                .pending_offsets
                .iter_mut()
                .find(|p| p.group_id == group_id && p.topic == topic && p.partition == partition)
            {
                Some(p) => p.offset = offset,
                None => rec.pending_offsets.push(PendingOffset {
                    group_id: group_id.to_string(),
                    topic,
                    partition,
                    offset,
                }),
            }
        }
        rec.updated_ms = now_ms;
        Ok(rec.clone())
    }

    /// EndTxn: moves an open transaction to PrepareCommit/PrepareAbort and returns the
    /// markers to write; a retry of a finished EndTxn is `AlreadyDone`.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: TimestampMs,
    ) -> Result<EndOutcome, TxnError> {
        let rec = self.producer_txn(transactional_id, producer_id, epoch)?;
        match (rec.state, commit) {
            (TxnState::Ongoing, _) => {
                rec.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                rec.updated_ms = now_ms;
                Ok(EndOutcome::Plan(rec.plan(commit), rec.clone()))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndOutcome::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            (state, _) => Err(TxnError::InvalidTxnState(format!(
                "{} cannot {} from {}",
                transactional_id,
                if commit { "commit" } else { "abort" },
                state.as_str()
            ))),
        }
    }

    /// Markers written: Prepare* → Complete*. Returns the record to persist.
    pub fn complete(
        &mut self,
        transactional_id: &str,
        epoch: i16,
        now_ms: TimestampMs,
    ) -> Option<TxnRecord> {
        self.needs_completion.remove(transactional_id);
        let rec = self.txns.get_mut(transactional_id)?;
        if rec.producer_epoch != epoch {
            return None;
        }
        rec.state = match rec.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        rec.partitions.clear();
        rec.groups.clear();
        rec.pending_offsets.clear();
        rec.started_ms = -1;
        rec.updated_ms = now_ms;
        if let Some(next) = rec.next_producer_id.take() {
            self.by_producer.remove(&rec.producer_id);
            self.by_producer.insert(next, transactional_id.to_string());
            rec.producer_id = next;
            rec.producer_epoch = 0;
        }
        Some(rec.clone())
    }

    /// Writing markers failed: `tick` retries.
    pub fn retry_later(&mut self, transactional_id: &str) {
        self.needs_completion.insert(transactional_id.to_string());
    }

    /// Timers: open transactions past their timeout are aborted under a bumped epoch
    /// (fencing their producer); Prepare states left by a crash or a failed marker write
    /// are retried. Returns the plans with the records to persist first.
    pub fn tick(&mut self, now_ms: TimestampMs) -> Vec<(EndPlan, TxnRecord)> {
        let mut out = Vec::new();
        for rec in self.txns.values_mut() {
            if rec.state == TxnState::Ongoing && now_ms - rec.started_ms > i64::from(rec.timeout_ms)
            {
                // The bump fences the timed-out producer; at the last epoch the abort
                // still happens (the next InitProducerId switches to a new id).
                rec.producer_epoch = rec.producer_epoch.saturating_add(1);
                rec.state = TxnState::PrepareAbort;
                rec.updated_ms = now_ms;
                out.push((rec.plan(false), rec.clone()));
            } else if matches!(rec.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                && now_ms - rec.updated_ms > PREPARE_RETRY_MS
                && !self.needs_completion.contains(&rec.transactional_id)
            {
                rec.updated_ms = now_ms;
                out.push((rec.plan(rec.state == TxnState::PrepareCommit), rec.clone()));
            }
        }
        for id in std::mem::take(&mut self.needs_completion) {
            if let Some(rec) = self.txns.get(&id) {
                match rec.state {
                    TxnState::PrepareCommit => out.push((rec.plan(true), rec.clone())),
                    TxnState::PrepareAbort => out.push((rec.plan(false), rec.clone())),
                    _ => {}
                }
            }
        }
        out
    }

    /// Forgets transactional ids idle for `TXN_ID_EXPIRATION_MS` with no transaction open
    /// or completing. Returns them (to persist their removal).
    pub fn expire(&mut self, now_ms: TimestampMs) -> Vec<TxnRecord> {
        let expired: Vec<String> = self
            .txns
            .values()
            .filter(|r| {
                matches!(
                    r.state,
                    TxnState::Empty
                        | TxnState::CompleteCommit
                        | TxnState::CompleteAbort
                        | TxnState::Dead
                ) && now_ms - r.updated_ms > TXN_ID_EXPIRATION_MS
            })
            .map(|r| r.transactional_id.clone())
            .collect();
        let mut removed = Vec::with_capacity(expired.len());
        for id in &expired {
            if let Some(r) = self.txns.remove(id) {
                self.by_producer.remove(&r.producer_id);
                removed.push(r);
            }
        }
        removed
    }

    /// Checks a transactional batch: its producer's current epoch, an open transaction
    /// holding the partition.
    pub fn verify_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), TxnError> {
        let rec = self
            .by_producer
            .get(&producer_id)
            .and_then(|id| self.txns.get(id))
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if epoch != rec.producer_epoch {
            return Err(TxnError::ProducerFenced(format!(
                "epoch {epoch} is not the current epoch {}",
                rec.producer_epoch
            )));
        }
        if rec.state != TxnState::Ongoing
            || !rec
                .partitions
                .iter()
                .any(|(t, p)| t == topic && *p == partition)
        {
            return Err(TxnError::InvalidTxnState(format!(
                "{topic}-{partition} is not in an open transaction of producer {producer_id}"
            )));
        }
        Ok(())
    }

    /// Whether an open (or committing) transaction holds an offset for the partition of
    /// the group: OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT then.
    pub fn has_pending_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.txns.values().any(|r| {
            matches!(r.state, TxnState::Ongoing | TxnState::PrepareCommit)
                && r.pending_offsets
                    .iter()
                    .any(|o| o.group_id == group_id && o.topic == topic && o.partition == partition)
        })
    }

    /// The transactional id owning `producer_id`.
    pub fn transactional_id_of(&self, producer_id: i64) -> Option<&str> {
        self.by_producer.get(&producer_id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::{Clock, ManualClock};

    fn offset(o: i64) -> CommittedOffset {
        CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: None,
            commit_timestamp_ms: 0,
        }
    }

    fn init(c: &mut TxnCoordinator, id: &str, now: i64, next: i64) -> InitOutcome {
        c.init_producer(id, 60_000, None, now, || Ok(next))
            .unwrap()
            .unwrap()
    }

    fn parts(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn commit_walks_empty_ongoing_prepare_complete() {
        let clock = ManualClock::new(1_000);
        let mut c = TxnCoordinator::new();
        let o = init(&mut c, "tx", clock.now_ms(), 7);
        assert_eq!((o.producer_id, o.producer_epoch, o.abort), (7, 0, None));
        assert_eq!(o.record.state, TxnState::Empty);
        let r = c
            .add_partitions("tx", 7, 0, &parts(&[("a", 0), ("a", 1)]), clock.now_ms())
            .unwrap()
            .unwrap();
        assert_eq!(r.state, TxnState::Ongoing);
        // Adding the same partitions again changes nothing (nothing to persist).
        assert_eq!(
            c.add_partitions("tx", 7, 0, &parts(&[("a", 0)]), clock.now_ms())
                .unwrap(),
            None
        );
        c.verify_produce(7, 0, "a", 1).unwrap();
        assert!(matches!(
            c.verify_produce(7, 0, "a", 2),
            Err(TxnError::InvalidTxnState(_))
        ));
        c.add_offsets("tx", 7, 0, "g", clock.now_ms()).unwrap();
        c.txn_offset_commit("tx", 7, 0, "g", vec![("in".into(), 0, offset(5))], 0)
            .unwrap();
        let EndOutcome::Plan(plan, rec) = c.end_txn("tx", 7, 0, true, clock.now_ms()).unwrap()
        else {
            panic!("expected a plan");
        };
        assert_eq!(rec.state, TxnState::PrepareCommit);
        assert!(plan.commit);
        assert_eq!(plan.partitions, parts(&[("a", 0), ("a", 1)]));
        assert_eq!(plan.offsets.len(), 1);
        // A produce while completing is refused; so is another EndTxn.
        assert!(c.verify_produce(7, 0, "a", 0).is_err());
        assert_eq!(
            c.end_txn("tx", 7, 0, true, 0),
            Err(TxnError::ConcurrentTransactions)
        );
        let done = c.complete("tx", 0, clock.now_ms()).unwrap();
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty() && done.pending_offsets.is_empty());
        // The client retrying its EndTxn gets success.
        assert_eq!(
            c.end_txn("tx", 7, 0, true, 0).unwrap(),
            EndOutcome::AlreadyDone
        );
        assert!(matches!(
            c.end_txn("tx", 7, 0, false, 0),
            Err(TxnError::InvalidTxnState(_))
        ));
    }

    #[test]
    fn abort_drops_pending_offsets() {
        let mut c = TxnCoordinator::new();
        init(&mut c, "tx", 0, 1);
        c.add_offsets("tx", 1, 0, "g", 0).unwrap();
        c.txn_offset_commit("tx", 1, 0, "g", vec![("in".into(), 0, offset(9))], 0)
            .unwrap();
        let EndOutcome::Plan(plan, _) = c.end_txn("tx", 1, 0, false, 0).unwrap() else {
            panic!("expected a plan");
        };
        assert!(!plan.commit && plan.offsets.is_empty());
        assert_eq!(
            c.complete("tx", 0, 0).unwrap().state,
            TxnState::CompleteAbort
        );
    }

    #[test]
    fn a_new_producer_fences_the_old_and_aborts_its_open_transaction() {
        let mut c = TxnCoordinator::new();
        init(&mut c, "tx", 0, 3);
        c.add_partitions("tx", 3, 0, &parts(&[("t", 0)]), 0)
            .unwrap();
        let o = c
            .init_producer("tx", 60_000, None, 10, || panic!("no new id"))
            .unwrap()
            .unwrap();
        assert_eq!((o.producer_id, o.producer_epoch), (3, 1));
        let abort = o.abort.unwrap();
        assert!(!abort.commit);
        assert_eq!(abort.producer_epoch, 1);
        assert_eq!(abort.partitions, parts(&[("t", 0)]));
        // The zombie (epoch 0) is fenced everywhere.
        assert!(matches!(
            c.end_txn("tx", 3, 0, true, 0),
            Err(TxnError::ProducerFenced(_))
        ));
        assert!(matches!(
            c.add_partitions("tx", 3, 0, &parts(&[("t", 1)]), 0),
            Err(TxnError::ProducerFenced(_))
        ));
        assert!(matches!(
            c.verify_produce(3, 0, "t", 0),
            Err(TxnError::ProducerFenced(_))
        ));
        // While the abort is being written, a third InitProducerId must wait.
        assert_eq!(
            c.init_producer("tx", 60_000, None, 10, || Ok(99))
                .unwrap()
                .unwrap_err(),
            TxnError::ConcurrentTransactions
        );
        c.complete("tx", 1, 10).unwrap();
        c.add_partitions("tx", 3, 1, &parts(&[("t", 1)]), 20)
            .unwrap();
        c.verify_produce(3, 1, "t", 1).unwrap();
        // KIP-360: a re-init with a stale (id, epoch) is fenced.
        assert!(matches!(
            c.init_producer("tx", 60_000, Some((3, 0)), 30, || Ok(99))
                .unwrap(),
            Err(TxnError::ProducerFenced(_))
        ));
    }

    #[test]
    fn timeout_aborts_with_a_bumped_epoch() {
        let clock = ManualClock::new(0);
        let mut c = TxnCoordinator::new();
        c.init_producer("tx", 1_000, None, clock.now_ms(), || Ok(5))
            .unwrap()
            .unwrap();
        c.add_partitions("tx", 5, 0, &parts(&[("t", 0)]), clock.now_ms())
            .unwrap();
        clock.advance_ms(1_000);
        assert!(c.tick(clock.now_ms()).is_empty());
        clock.advance_ms(1);
        let plans = c.tick(clock.now_ms());
        assert_eq!(plans.len(), 1);
        let (plan, rec) = &plans[0];
        assert!(!plan.commit);
        assert_eq!((rec.state, rec.producer_epoch), (TxnState::PrepareAbort, 1));
        // The timed-out producer's commit is fenced.
        assert!(matches!(
            c.end_txn("tx", 5, 0, true, clock.now_ms()),
            Err(TxnError::ProducerFenced(_))
        ));
        c.complete("tx", 1, clock.now_ms()).unwrap();
        assert!(c.tick(clock.now_ms() + 10_000).is_empty());
    }

    #[test]
    fn restored_prepare_states_are_completed_by_the_next_tick() {
        let mut c = TxnCoordinator::new();
        init(&mut c, "a", 0, 1);
        c.add_partitions("a", 1, 0, &parts(&[("t", 0)]), 0).unwrap();
        let EndOutcome::Plan(_, rec) = c.end_txn("a", 1, 0, true, 0).unwrap() else {
            panic!("expected a plan");
        };
        let mut again = TxnCoordinator::new();
        again.restore([rec]);
        let plans = again.tick(1);
        assert_eq!(plans.len(), 1);
        assert!(plans[0].0.commit);
        assert_eq!(again.transactional_id_of(1), Some("a"));
        // Until completed, a failed write is retried.
        again.retry_later("a");
        assert_eq!(again.tick(2).len(), 1);
        // A Prepare state whose writer vanished is retried after PREPARE_RETRY_MS.
        assert!(again.tick(3).is_empty());
        assert_eq!(again.tick(3 + PREPARE_RETRY_MS + 1).len(), 1);
        again.complete("a", 0, 3).unwrap();
        assert!(again.tick(10 * PREPARE_RETRY_MS).is_empty());
    }

    #[test]
    fn epoch_overflow_aborts_under_the_old_id_then_switches_ids() {
        let mut c = TxnCoordinator::new();
        let mut rec = init(&mut c, "tx", 0, 1).record;
        rec.producer_epoch = i16::MAX - 1;
        rec.state = TxnState::Ongoing;
        rec.partitions.insert(("t".into(), 0));
        let mut c = TxnCoordinator::new();
        c.restore([rec]);
        let o = c
            .init_producer("tx", 60_000, None, 1, || Ok(2))
            .unwrap()
            .unwrap();
        assert_eq!((o.producer_id, o.producer_epoch), (2, 0));
        let abort = o.abort.unwrap();
        assert_eq!((abort.producer_id, abort.producer_epoch), (1, i16::MAX));
        let done = c.complete("tx", abort.producer_epoch, 2).unwrap();
        assert_eq!((done.producer_id, done.producer_epoch), (2, 0));
        assert_eq!(c.transactional_id_of(2), Some("tx"));
        assert_eq!(c.transactional_id_of(1), None);
        c.add_partitions("tx", 2, 0, &parts(&[("t", 0)]), 3)
            .unwrap();
        // Without an open transaction the switch is immediate.
        let mut c = TxnCoordinator::new();
        let mut rec = init(&mut c, "tx", 0, 1).record;
        rec.producer_epoch = i16::MAX - 1;
        let mut c = TxnCoordinator::new();
        c.restore([rec]);
        let o = c
            .init_producer("tx", 60_000, None, 1, || Ok(3))
            .unwrap()
            .unwrap();
        assert_eq!((o.producer_id, o.producer_epoch, o.abort), (3, 0, None));
    }

    #[test]
    fn idle_transactional_ids_expire_but_open_ones_do_not() {
        let clock = ManualClock::new(0);
        let mut c = TxnCoordinator::new();
        init(&mut c, "idle", clock.now_ms(), 1);
        c.init_producer("busy", TXN_MAX_TIMEOUT_MS, None, 0, || Ok(2))
            .unwrap()
            .unwrap();
        c.add_partitions("busy", 2, 0, &parts(&[("t", 0)]), 0)
            .unwrap();
        clock.advance_ms(TXN_ID_EXPIRATION_MS);
        assert!(c.expire(clock.now_ms()).is_empty());
        clock.advance_ms(1);
        let expired: Vec<String> = c
            .expire(clock.now_ms())
            .into_iter()
            .map(|r| r.transactional_id)
            .collect();
        assert_eq!(expired, vec!["idle".to_string()]);
        assert!(c.get("idle").is_none() && c.transactional_id_of(1).is_none());
        assert!(c.get("busy").is_some());
    }

    #[test]
    fn bad_timeouts_and_unknown_mappings_are_refused() {
        let mut c = TxnCoordinator::new();
        assert_eq!(
            c.init_producer("tx", 0, None, 0, || Ok(1)).unwrap(),
            Err(TxnError::InvalidTransactionTimeout(0))
        );
        assert_eq!(
            c.init_producer("tx", TXN_MAX_TIMEOUT_MS + 1, None, 0, || Ok(1))
                .unwrap(),
            Err(TxnError::InvalidTransactionTimeout(TXN_MAX_TIMEOUT_MS + 1))
        );
        init(&mut c, "tx", 0, 1);
        assert_eq!(
            c.add_partitions("tx", 2, 0, &parts(&[("t", 0)]), 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            c.add_partitions("nope", 1, 0, &parts(&[("t", 0)]), 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert!(matches!(
            c.txn_offset_commit("tx", 1, 0, "g", vec![], 0),
            Err(TxnError::InvalidTxnState(_))
        ));
    }
}
