//! Dead letters, length limits, the TTL sweep and queue expiry (issue 16).
//!
//! - Every operation that settles a message dead (rejected, expired, maxlen,
//!   delivery_limit) puts it, with its record, in the registry's dead-letter box when the
//!   queue has a dead-letter target (`x-dead-letter-exchange`); without one the message is
//!   dropped, as in RabbitMQ. A door takes the box's letters ([`Broker::take_dead_letters`],
//!   woken by [`Broker::dead_letters_ready`]) and republishes them with its own headers
//!   (AMQP: `x-death`). The box is in memory: a crash between a message's settle and its
//!   republish loses it — RabbitMQ's default `at-most-once` dead-lettering. It never holds
//!   more than [`MAX_WAITING`] letters (more are dropped, with a warning).
//! - [`Broker::queue_publish`] stores a message in queues under their length limits:
//!   drop-head settles the oldest ready messages dead (reason maxlen) after the store;
//!   reject-publish refuses the message before it is stored; reject-publish-dlx also
//!   dead-letters it (the door does, from what it published).
//! - [`Broker::queue_sweep`] settles expired messages at the head of every queue (RabbitMQ
//!   classic queues: an expired message behind a live one waits until it reaches the head,
//!   and is never delivered meanwhile). A door calls it every few tens of milliseconds; a
//!   queue whose head is live is looked at again when the head expires, is published to or
//!   gets a message back.
//! - [`Broker::queues_unused`]: queues with `x-expires` unused for that long.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use common::Offset;
use queues::{DeadLetter, DeadReason, Overflow};

use super::{QueueHandle, body_len};
use crate::broker::Broker;
use crate::data_path::PendingProduce;
use crate::error::{BrokerError, Result};
use crate::record_read::StoredRecord;

/// Most dead letters waiting for a door.
pub const MAX_WAITING: usize = 100_000;
/// Most expired messages one sweep settles per queue.
const SWEEP_MAX: usize = 4096;
/// A queue whose head has no expiry is looked at again after this long (a message may have
/// come in without [`Broker::queue_publish`], e.g. from a Kafka producer).
const SWEEP_IDLE_MS: i64 = 1000;
/// Ready messages read to sum body bytes for `x-max-length-bytes` (the limit holds over the
/// first this many ready messages).
const BYTES_WINDOW: usize = 65_536;

/// A message settled dead, for a door to republish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLettered {
    /// The queue it died in (internal name).
    pub queue: String,
    pub reason: DeadReason,
    /// Deliveries before it died (0: never delivered).
    pub delivery_count: u32,
    pub record: StoredRecord,
    /// The queue's dead-letter exchange and routing key (`x-dead-letter-…`).
    pub exchange: String,
    pub routing_key: Option<String>,
    /// When it died.
    pub time_ms: i64,
}

/// What [`Broker::queue_publish`] did with a message.
pub struct Routed {
    /// Queues that are full and refuse publishes (`reject-publish`), each with whether the
    /// caller dead-letters the message (reason maxlen: `reject-publish-dlx`).
    pub refused: Vec<(String, bool)>,
    /// The store's acknowledgement, durable once it resolves; `None` when no queue took
    /// the message.
    pub pending: Option<PendingProduce>,
}

#[derive(Default)]
pub(crate) struct DeadLetterBox {
    waiting: parking_lot::Mutex<Vec<DeadLettered>>,
    ready: tokio::sync::Notify,
}

impl Broker {
    /// Waits until dead letters wait in the box.
    pub async fn dead_letters_ready(&self) {
        self.queues.dead.ready.notified().await;
    }

    /// Takes every waiting dead letter, oldest first.
    pub fn take_dead_letters(&self) -> Vec<DeadLettered> {
        std::mem::take(&mut *self.queues.dead.waiting.lock())
    }

    /// Puts `dead` (settled in queue `q`) in the box with their records (`known` holds
    /// some already read), or drops them when the queue has no dead-letter target.
    pub(super) fn emit_dead(
        &self,
        q: &QueueHandle,
        dead: &[DeadLetter],
        mut known: HashMap<Offset, StoredRecord>,
    ) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        for d in dead {
            self.metrics.count_dead(&q.name, d.reason.name(), 1);
        }
        let Some(exchange) = q.policy.dead_letter_exchange.clone() else {
            tracing::debug!(queue = %q.name, n = dead.len(), "dead messages dropped: no dead-letter exchange");
            return Ok(());
        };
        let mut missing: Vec<Offset> = dead
            .iter()
            .map(|d| d.offset)
            .filter(|o| !known.contains_key(o))
            .collect();
        missing.sort_unstable();
        if !missing.is_empty() {
            known.extend(self.read_span(q, &missing)?.0);
        }
        let now = self.now_ms();
        let mut letters = Vec::with_capacity(dead.len());
        for d in dead {
            let Some(record) = known.remove(&d.offset) else {
                continue; // a control record, or gone with retention
            };
            letters.push(DeadLettered {
                queue: q.name.clone(),
                reason: d.reason,
                delivery_count: d.delivery_count,
                record,
                exchange: exchange.clone(),
                routing_key: q.policy.dead_letter_routing_key.clone(),
                time_ms: now,
            });
        }
        let mut waiting = self.queues.dead.waiting.lock();
        let room = MAX_WAITING.saturating_sub(waiting.len());
        if letters.len() > room {
            tracing::warn!(queue = %q.name, dropped = letters.len() - room, "dead-letter box full: dead letters dropped");
            letters.truncate(room);
        }
        waiting.extend(letters);
        drop(waiting);
        self.queues.dead.ready.notify_one();
        Ok(())
    }

    /// Stores `batch` (one message of `body_bytes` body bytes) in every queue of `names`
    /// under its length limits (see the module doc): written to the commit log once, with
    /// an entry in each queue that takes it (storage's shared entry when more than one
    /// does). Queues without limits are a plain produce.
    ///
    /// The message is written (readable) when this returns; [`Routed::pending`] resolves
    /// when it is durable (`flush = sync`), for a publisher confirm. Nothing waits for the
    /// disk under a queue's lock.
    ///
    /// With `due_ms` (a delayed message: AMQP's `x-delayed-message` exchange), each queue
    /// that takes it holds it scheduled, invisible to consumers until then (stored once,
    /// now; `queues` §Scheduling); the record should carry [`super::HEADER_DUE_MS`] too.
    pub async fn queue_publish(
        &self,
        names: &[String],
        batch: BytesMut,
        body_bytes: u64,
        due_ms: Option<i64>,
    ) -> Result<Routed> {
        let mut handles = names
            .iter()
            .map(|n| self.queue(n))
            .collect::<Result<Vec<_>>>()?;
        handles.sort_by(|a, b| a.name.cmp(&b.name));
        handles.dedup_by(|a, b| a.name == b.name);
        // Limited queues are locked across the store, in name order (no deadlock between
        // two publishers): publishers to one take turns, so the check and the store see
        // the same queue. So is every queue of a delayed message: no consumer may take it
        // between the store and its schedule.
        let delayed = due_ms.is_some_and(|due| due > self.now_ms());
        let mut guards = Vec::with_capacity(handles.len());
        for q in &handles {
            guards.push(match q.policy.limits.is_set() || delayed {
                true => Some(q.state.lock().await),
                false => None,
            });
        }
        let mut refused = Vec::new();
        let mut takes = vec![true; handles.len()];
        for (i, q) in handles.iter().enumerate() {
            q.head_changed();
            let limits = q.policy.limits;
            let Some(state) = guards[i].as_deref() else {
                continue;
            };
            if limits.overflow == Overflow::DropHead {
                continue;
            }
            let end = self.queue_end(q)?;
            let ready = state.ready(end);
            let ready_bytes = self.ready_bytes(q, state, end)?;
            if !limits.admits(ready, ready_bytes, body_bytes) {
                refused.push((
                    q.name.clone(),
                    limits.overflow == Overflow::RejectPublishDlx,
                ));
                takes[i] = false;
            }
        }
        let topics: Vec<&str> = handles
            .iter()
            .zip(&takes)
            .filter(|(_, take)| **take)
            .map(|(q, _)| q.topic.as_str())
            .collect();
        let (pending, bases) = match &topics[..] {
            [] => (None, Vec::new()),
            [topic] => {
                let p = self.produce_begin(topic, 0, batch).await?;
                let base = p.base_offset();
                (Some(p), vec![base])
            }
            _ => {
                let (p, bases) = self.produce_shared_begin(&topics, batch)?;
                (Some(p), bases.into_iter().map(Some).collect())
            }
        };
        // One base offset per queue that took it, in `handles` order.
        let mut bases = bases.into_iter();
        for (i, q) in handles.iter().enumerate() {
            if !takes[i] {
                continue;
            }
            let base = bases.next();
            if let (true, Some(due), Some(state), Some(Some(offset))) =
                (delayed, due_ms, guards[i].as_deref_mut(), base)
            {
                state
                    .schedule(offset, due)
                    .map_err(|e| BrokerError::InvalidRecord(e.to_string()))?;
                self.save(q, state)?;
            }
            self.metrics.count_published(&q.name);
            q.bytes_added(body_bytes);
            if let Some(state) = guards[i].as_deref_mut()
                && q.policy.limits.overflow == Overflow::DropHead
            {
                self.drop_excess(q, state)?;
            }
        }
        Ok(Routed { refused, pending })
    }

    /// Drop-head: settles the oldest ready messages of `q` dead (reason maxlen) while the
    /// queue is over its limits.
    fn drop_excess(&self, q: &QueueHandle, state: &mut queues::QueueState) -> Result<()> {
        let limits = q.policy.limits;
        let end = self.queue_end(q)?;
        let ready = state.ready(end);
        let ready_bytes = self.ready_bytes(q, state, end)?;
        // Read head sizes only as far as the bytes to drop need (a window growing 8x).
        let mut window = 64;
        let excess = loop {
            let over = limits.max_length_bytes.is_some_and(|max| ready_bytes > max);
            let sizes = if over {
                self.head_sizes(q, state, end, window)?
            } else {
                Vec::new()
            };
            let n = limits.excess(ready, ready_bytes, &sizes);
            if !over || n < sizes.len() as u64 || sizes.len() < window || window >= BYTES_WINDOW {
                break n;
            }
            window *= 8;
        };
        if excess > 0 {
            let dropped = state.drop_head(end, excess);
            let offsets: Vec<Offset> = dropped.iter().map(|d| d.offset).collect();
            let known = if q.tracks_bytes() || q.policy.dead_letter_exchange.is_some() {
                self.read_span(q, &offsets)?.0
            } else {
                HashMap::new()
            };
            for o in &offsets {
                q.bytes_taken(*o, known.get(o).map_or(0, body_len), false);
            }
            self.emit_dead(q, &dropped, known)?;
            self.save(q, state)?;
        }
        Ok(())
    }

    /// The ready body bytes of queue `q` (counted from the log once after a start, then kept
    /// by every operation; see `ReadyBytes`). 0 for a queue without `x-max-length-bytes`.
    fn ready_bytes(&self, q: &QueueHandle, state: &queues::QueueState, end: Offset) -> Result<u64> {
        if !q.tracks_bytes() {
            return Ok(0);
        }
        if let Some(t) = q.bytes.lock().total {
            return Ok(t);
        }
        let total = self.head_sizes(q, state, end, BYTES_WINDOW)?.iter().sum();
        q.bytes.lock().total = Some(total);
        Ok(total)
    }

    /// Body sizes of the first `window` ready messages, oldest first.
    fn head_sizes(
        &self,
        q: &QueueHandle,
        state: &queues::QueueState,
        end: Offset,
        window: usize,
    ) -> Result<Vec<u64>> {
        let offsets = state.available(end, window);
        let (records, _) = self.read_span(q, &offsets)?;
        Ok(offsets
            .iter()
            .map(|o| records.get(o).map_or(0, body_len))
            .collect())
    }

    /// Settles the expired messages at the head of every queue due for a look (see the
    /// module doc). A queue busy at this instant is looked at next time.
    pub async fn queue_sweep(&self) -> Result<()> {
        let now = self.now_ms();
        let due: Vec<Arc<QueueHandle>> = self
            .queues
            .by_name
            .read()
            .values()
            .filter(|q| q.next_sweep.load(Ordering::Relaxed) <= now)
            .cloned()
            .collect();
        for q in due {
            let Ok(mut state) = q.state.try_lock() else {
                continue;
            };
            let end = self.queue_end(&q)?;
            let mut next = now.saturating_add(SWEEP_IDLE_MS);
            let head = state.first_available(Offset::MIN, end);
            if head.is_none_or(|h| h == q.live_head.load(Ordering::Relaxed)) {
                // Empty, or a head already known never to expire: nothing to read.
                q.next_sweep.store(next, Ordering::Relaxed);
                continue;
            }
            let mut known: HashMap<Offset, StoredRecord> = HashMap::new();
            let mut dead = Vec::new();
            for round in 0..8 {
                let policy = &q.policy;
                let swept = state.expire_head(end, now, SWEEP_MAX - dead.len(), |o| {
                    known.get(&o).map(|r| policy.expiry(r))
                });
                for d in &swept.dead {
                    q.bytes_taken(d.offset, known.get(&d.offset).map_or(0, body_len), false);
                }
                dead.extend(swept.dead);
                if let Some(at) = swept.next_expiry {
                    next = next.min(at);
                }
                let Some(from) = swept.unknown else {
                    break;
                };
                if dead.len() >= SWEEP_MAX {
                    next = now;
                    break;
                }
                // A small first read: most heads are live.
                let (n, bytes) = if round == 0 {
                    (16, 64 << 10)
                } else {
                    (512, 1 << 20)
                };
                let read = self.read_records(&q.topic, q.partition, from, n, bytes)?;
                if read.records.is_empty() {
                    break;
                }
                known.extend(read.records.into_iter().map(|r| (r.offset, r)));
            }
            q.next_sweep.store(next, Ordering::Relaxed);
            if let Some(h) = state.first_available(Offset::MIN, end)
                && known.get(&h).is_some_and(|r| q.policy.expiry(r).is_none())
            {
                q.live_head.store(h, Ordering::Relaxed);
            }
            if !dead.is_empty() {
                self.emit_dead(&q, &dead, known)?;
                self.save(&q, &mut state)?;
            }
        }
        Ok(())
    }

    /// Makes the scheduled messages that are due deliverable, in every queue whose earliest
    /// one is (a door calls this every few tens of milliseconds; an acquire does it too).
    /// True when any came back: consumers should look again. A queue busy at this instant
    /// is looked at next time.
    pub fn queue_release_due(&self) -> Result<bool> {
        let now = self.now_ms();
        let due: Vec<Arc<QueueHandle>> = self
            .queues
            .by_name
            .read()
            .values()
            .filter(|q| q.next_due.load(Ordering::Relaxed) <= now)
            .cloned()
            .collect();
        let mut any = false;
        for q in due {
            let Ok(mut state) = q.state.try_lock() else {
                continue;
            };
            if !state.release_due(now).is_empty() {
                any = true;
                q.head_changed();
            }
            self.save(&q, &mut state)?;
        }
        Ok(any)
    }

    /// Marks queue `name` used now (a consumer came or went): `x-expires` counts from here.
    pub fn queue_touch(&self, name: &str) {
        if let Some(q) = self.queues.get(name) {
            q.touch(self.now_ms());
        }
    }

    /// Queues with `x-expires` not used for that long (the caller deletes those without
    /// consumers, and touches the others).
    pub fn queues_unused(&self) -> Vec<String> {
        let now = self.now_ms();
        self.queues
            .by_name
            .read()
            .values()
            .filter(|q| {
                q.policy
                    .expires_ms
                    .is_some_and(|ms| q.last_used.load(Ordering::Relaxed).saturating_add(ms) <= now)
            })
            .map(|q| q.name.clone())
            .collect()
    }

    /// The policy of queue `name`.
    pub fn queue_policy(&self, name: &str) -> Option<super::QueuePolicy> {
        self.queues.get(name).map(|q| q.policy.clone())
    }
}
