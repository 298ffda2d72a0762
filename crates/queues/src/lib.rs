//! Sluice queue engine: shared delivery over a partition's log — many consumers take messages
//! from one queue, each message leased to one consumer until acked, nacked, released or
//! expired. RabbitMQ queues, RocketMQ SimpleConsumer/POP, MQTT shared subscriptions and
//! Kafka share groups all sit on it (`shared/DESIGN.md` §Layers for many doors; issue 15).
//!
//! It is a pure state machine: events in, deliveries and persistence records out. It holds
//! no message bytes (only offsets), does no I/O, reads no clock (time comes in as `now_ms`
//! arguments; callers use `common::Clock`), and knows no protocol.
//!
//! Reading order:
//! - [`QueueState`] (`queue_state.rs`): the state of one queue and the settling operations
//!   (ack, nack, release, expire, extend, purge / settle the head, advance the log start,
//!   counts).
//! - `acquire.rs`: [`QueueState::acquire`] / [`QueueState::acquire_filtered`], taking an
//!   [`Acquire`] request (`delivery.rs` holds the request and result types).
//! - `lease.rs`: the in-flight leases, indexed by offset, deadline and consumer.
//! - `range_set.rs`: [`RangeSet`], the compact set of offsets everything else is built on:
//!   runs of whole 64 Ki-offset chunks as one entry, partial chunks as run lists or bitmaps.
//! - `record.rs` + `outbox.rs`: the persistence [`Record`]s, their byte format (§FORMAT
//!   below) and the outbox that coalesces them until the caller drains it.
//! - `schedule.rs` + `timer.rs`: scheduled offsets (issue 16) — [`QueueState::schedule`],
//!   [`QueueState::release_due`] / [`QueueState::next_due`], [`QueueState::nack_later`]
//!   (retry with backoff) — and the compact index of due times they sit in.
//! - `backoff.rs`: [`Backoff`] and [`RetryPolicy`], the retry policy shared by every door, and
//!   the syntax of `x-retry-backoff` / `x-retry-max`.
//! - `policy.rs` + `head.rs`: RabbitMQ's queue policies (issue 16) — TTL
//!   ([`QueueState::expire_head`], [`expires_at`]), length limits ([`Limits`],
//!   [`QueueState::drop_head`]), priorities ([`QueueState::acquire_ranked`]) and the dead
//!   reasons they give ([`DeadReason`]). Expiry times and priorities come from the caller
//!   (read from the stored messages), so they need no persisted state of their own.
//! - `recovery.rs`: [`QueueState::snapshot`], [`QueueState::snapshot_due`] and
//!   [`QueueState::recover`].
//!
//! # The model
//!
//! A queue is a partition's offsets `log_start..log_end` plus a delivery state. Each offset is
//! *available* (never delivered, or returned with its delivery count), *acquired* (leased to
//! one consumer until a deadline), *scheduled* (hidden until a due time, with its delivery
//! count: a delayed message, or a retry waiting out its backoff), or *settled* (acked,
//! dead, or purged). The state is:
//! - `low_water`: every offset below is settled (or below the log start);
//! - `cursor`: every offset at or above was never delivered and is not settled, so a backlog
//!   of any depth costs nothing — 10 M ready messages are the number `log_end - cursor`;
//! - between them, compact sets: settled ranges, leases (a `BTreeMap` by offset), returned
//!   offsets with their delivery counts, and ranges a filter skipped or a schedule released
//!   (available, never delivered). What is in none of them is scheduled: its due time is in
//!   the time index (`timer.rs`), which is only asked "what is due?", and its delivery count,
//!   for a retry, in a small side map.
//!
//! Memory: a fixed part under 320 bytes per queue (`size_of::<QueueState>()`, no heap until
//! a message is delivered), plus about 100–130 bytes per in-flight message (its lease in
//! three B-tree indexes, see `lease.rs`), ~40 bytes per returned message awaiting
//! redelivery, and for each *gap* (a settled run or skipped run above the low water; acks
//! in offset order leave none) 4 bytes in its chunk of 65,536 offsets, a chunk never
//! costing more than 8 KiB (a bitmap) however fragmented, plus ~80 bytes per chunk that
//! has any (`range_set.rs`). Nothing per ready message. A scheduled message costs 6.6
//! bytes in the time index when 10 M are spread over a year (measured with a counting
//! allocator in `tests/scheduler_memory.rs`; ~9 bytes at 1 M, where each ~17-minute bucket
//! holds fewer; taking a snapshot of them peaks at ~7 bytes each, recovering from it at
//! ~10). Half a year into a 1 M schedule whose released messages were delivered and acked
//! — settled runs interleaved with the scheduled offsets, about one gap per two — the whole
//! state measures ~9.5 bytes per still-scheduled offset. Nothing is allocated for
//! scheduling until something is scheduled.
//!
//! Invariants (checked by [`QueueState::check_invariants`], which the model test runs after
//! every step): `log_start <= low_water <= cursor`; the settled, leased, returned, skipped
//! and scheduled sets are disjoint and cover exactly `low_water..cursor` (the time index
//! holds each scheduled offset exactly once, besides settled ones it has not dropped yet);
//! `low_water` itself is not settled.
//!
//! # What callers may rely on
//!
//! - `acquire` hands out the smallest available offsets first, so a message nacked with
//!   requeue, released or expired goes out again before newer ones (its original position,
//!   as RabbitMQ). `delivery_count` counts deliveries including this one; `redelivered` is
//!   `delivery_count > 1`. One call examines at most `max_scan` candidates (a filter that
//!   matches nothing costs bounded work; `resume_from` says where it stopped).
//! - Every offset of an ack/nack/extend is checked before any is applied: an offset not in
//!   flight, or held by another consumer, fails the whole call with a [`QueueError`] and
//!   changes nothing.
//! - With a `delivery_limit`, a message returned with a delivery count above it is settled
//!   dead and reported in [`Released::dead`] (reason [`DeadReason::DeliveryLimit`]);
//!   `nack(requeue = false)` reports [`DeadReason::Rejected`]. The caller dead-letters or
//!   drops them; the engine has already settled them.
//! - Leases expire only when the caller calls [`QueueState::expire`] (at
//!   [`QueueState::next_deadline`]). A lease's end is `now_ms + lease_ms`, saturating.
//! - Offsets are non-negative (Kafka's); `log_end` is passed in because the log grows without
//!   the engine hearing of it.
//! - A scheduled offset is never handed out before its due time: [`QueueState::release_due`]
//!   releases, in `(due, offset)` order, everything due at or before `now` (acquire calls it
//!   first). A release is not a delivery: the delivery count and `redelivered` stay what they
//!   were. Once available, a released message takes its place in offset order like any
//!   returned one (two released by one call go out in offset order). A release is final:
//!   the clock going back does not hide it again; something scheduled while the clock is
//!   behind is judged by the clock it is given. A purge, a drop-head or a TTL sweep does not
//!   touch scheduled messages (they are not ready); [`QueueState::cancel_scheduled`] settles
//!   them, and so does the log start moving past them.
//! - Retry with backoff: [`QueueState::nack_later`] schedules each message
//!   `policy.backoff.delay_ms(delivery_count)` after `now`, or settles it dead (reason
//!   [`DeadReason::DeliveryLimit`]) once it has used [`RetryPolicy::max_retries`] or is
//!   over the queue's `delivery_limit`.
//!
//! # Persistence
//!
//! Each operation that changes what must survive a restart queues a [`Record`] in the
//! outbox; the caller drains them ([`QueueState::drain_records`]), encodes them
//! ([`Record::encode`]) and appends them, in order, to the queue's internal state partition.
//! - One acquire writes one `Delivered` record; a run of consecutive offsets with the same
//!   count is one 16-byte entry, so a batch of fresh messages costs 22 bytes.
//! - Acks write `Settled` ranges. Records coalesce in the outbox until drained: between two
//!   drains, however acquires and acks interleave, the outbox holds one `Delivered` record
//!   and one `Settled` per outcome (more only past [`MAX_RECORD_ENTRIES`] entries or across
//!   a `LogStart`/`Snapshot`), so tens of thousands of acks per flush become a few ranges.
//!   Moving settles across deliveries is safe because replay keeps settled offsets settled;
//!   deliveries keep their order (see `outbox.rs`).
//! - Any prefix of the drained records (a torn tail under `flush = async`) recovers to a
//!   state that claims nothing false: what it treats as settled was settled, and no
//!   delivery count exceeds the real one. The model test checks every prefix.
//! - Requeue, release, expiry and lease extension write nothing: recovery voids every lease
//!   anyway, and the delivery count was persisted when the message was delivered.
//! - A schedule (or a `nack_later`) writes a 16-byte `Scheduled` entry; a `release_due` that
//!   released anything writes one `ReleasedThrough(now)`, 10 bytes however many it freed.
//!   Between drains they coalesce too: schedules into one record unless the clock went back
//!   between a release and a schedule (replay must not release a schedule early), releases
//!   into one, and a schedule released before the drain is not written at all. Within a
//!   drain they come before the delivery records (replay applies the two independently), so
//!   a torn tail that keeps any delivery record keeps the drain's schedules.
//! - After a restart ([`QueueState::recover`] over the records, oldest first): settled
//!   messages are never delivered again; delivered-not-settled ones are available with
//!   `redelivered` set and their persisted delivery count; scheduled ones stay hidden until
//!   due, and a persisted release stays released — call [`QueueState::release_due`] right
//!   after recovery and everything overdue comes out at once, in due order. What the caller had not yet
//!   persisted is lost; with the broker's `flush = sync` a record is durable before the
//!   next delivery decision relies on it, with `flush = async` acks in the last flush
//!   window may be redelivered.
//! - [`QueueState::snapshot_due`] says when to [`QueueState::write_snapshot`]: after
//!   `snapshot_every_records` records, or more record bytes than `snapshot_every_bytes` and
//!   the last snapshot's size (never while one waits in the outbox). Once the snapshot is
//!   persisted, every record before it can be deleted. Replaying records the snapshot
//!   already covers is harmless. A snapshot of a queue with scheduled offsets is the
//!   `Snapshot` record followed by `SnapshotScheduled` parts (4096 entries each, packed to
//!   ~6.7 bytes an entry: 1 M scheduled make a 6.8 MB snapshot, 10 M about 65 MB, built
//!   part by part); recovery applies it only once every part it announces has been read,
//!   so a torn snapshot leaves the records before it in force.
//!
//! # For the broker that drives it
//!
//! - Dead letters: a [`DeadLetter`] is settled in memory when returned, but its `Settled`
//!   record waits in the outbox; publish the dead letter first, then drain and persist, and
//!   a crash in between redelivers rather than loses it.
//! - Delivery counts: AMQP's `x-delivery-count` is `delivery_count - 1` (earlier attempts);
//!   Kafka share groups' `deliveryCount` is `delivery_count`.
//! - A snapshot is one record holding every in-flight run and settled gap: 16 bytes each,
//!   so a queue with very many fragmented in-flight messages writes a large value; the
//!   state partition's message size limit must allow it.
//! - Scheduling (issue 16): after appending a delayed message at `offset`, call
//!   [`QueueState::schedule`]`(offset, due)` under the same lock and persist the drained
//!   records with the publish (its confirm waits for both under `flush = sync`). A crash
//!   between the message's append and the record's loses the schedule, and the engine then
//!   offers the message as fresh: so, as for TTL, check the stored due time when acquire
//!   hands a message out, and one still ahead goes back with `nack(requeue)` +
//!   `schedule` (it then counts one delivery) instead of to the consumer. Keep one timer per queue at [`QueueState::next_due`] (re-arm
//!   it after every schedule, nack_later, release and restart); when it fires, call
//!   [`QueueState::release_due`]`(now)`, persist, and wake the consumers waiting on the queue
//!   if it released anything (acquire also releases, so a poll never misses a due message).
//!   `queue describe`: [`QueueState::scheduled`]; metrics: [`QueueState::timer_footprint`].
//! - Retry with backoff: parse the queue's `x-retry-backoff` / `x-retry-max` with
//!   [`RetryPolicy::parse`] when it is declared; a nack/reject with requeue on such a queue
//!   calls [`QueueState::nack_later`] instead of `nack`, dead-letters
//!   [`Retried::dead`] as `delivery_limit`, and re-arms the timer. AMQP's
//!   `x-delivery-count` of a retried message is `delivery_count - 1`, as for any
//!   redelivery.
//!
//! # FORMAT
//!
//! Version 2 (scheduling added; version 1 is its subset). Every record is one byte string
//! (the state partition's message value); integers are fixed-width big-endian; offsets are
//! `i64` and non-negative; times are `i64` milliseconds; ranges are half-open. Integrity
//! (CRC) is the commit log's job. Each record has exactly one encoding: kinds 1–3, and a
//! snapshot without scheduled offsets, are version 1 (byte for byte what version 1 wrote,
//! so a queue that never schedules stays readable by a version-1 reader); kinds 5–7 and a
//! snapshot with scheduled offsets are version 2. Anything else is refused.
//!
//! ```text
//! record      = version:u8 (1 or 2) kind:u8 body
//! kind 1  Delivered   n:u32 (<= 4096)  n x run                                    v1
//! kind 2  Settled     outcome:u8 (0 acked, 1 dead, 2 purged)  n:u32 (<= 4096)  n x range   v1
//! kind 3  LogStart    offset:i64                                                  v1
//! kind 4  Snapshot    log_start:i64 low_water:i64 cursor:i64                      v1 / v2
//!                     n:u32 n x range      settled ranges inside low_water..cursor
//!                     m:u32 m x run        delivered, not settled (ascending, disjoint)
//!                     [v2 only] scheduled:u64 (> 0)  entries in the parts that follow
//! kind 5  Scheduled          n:u32 (<= 4096)  n x entry                           v2
//! kind 6  ReleasedThrough    at:i64                                               v2
//! kind 7  SnapshotScheduled  base_due:i64 n:u32 (<= 4096) len:u32 len bytes:     v2
//!                            n x (zigzag varint of offset - previous offset (first: - 0),
//!                                 varint of due - base_due)   offsets >= 0, no bytes left
//! run         = start:i64 len:u32 (1..=65536) delivery_count:u32 (>= 1)      16 bytes
//! range       = start:i64 end:i64 (start < end; ascending, disjoint)         16 bytes
//! entry       = offset:i64 due:i64 (any order)                               16 bytes
//! varint      = LEB128, 7 bits a byte, low first, at most 10 bytes (64 bits)
//! ```
//!
//! Record meanings, applied in order: `Delivered` sets the delivery count of each offset in
//! its runs (later runs win; settled offsets stay settled); `Settled` settles its ranges;
//! `LogStart` forgets everything below (it only moves forward); `Snapshot` replaces the
//! whole state (`log_start <= low_water <= cursor`; everything in `log_start..low_water` is
//! settled; offsets in `low_water..cursor` neither settled nor delivered were passed over by
//! a filter and are available). `Scheduled` hides each offset until its due time (the
//! latest entry for an offset wins; settled offsets stay settled); `ReleasedThrough(at)`
//! makes every offset scheduled by an *earlier* record with a due time `<= at` available
//! again (a schedule written after it is untouched, whatever its due time); a `Snapshot`
//! with `scheduled > 0` replaces the state only once that many `SnapshotScheduled` entries
//! have followed it (any other record first abandons it), and those parts schedule as
//! `Scheduled` does. Offsets in `low_water..cursor` neither settled, delivered nor
//! scheduled are available. The recovered cursor is the highest end any record names.
//! Decoding checks all of the above, refuses trailing bytes, unknown versions and kinds, and
//! never allocates more entries than the remaining bytes could hold.

mod acquire;
mod backoff;
mod config;
mod delivery;
mod error;
mod head;
mod lease;
mod outbox;
mod policy;
mod queue_state;
mod range_set;
mod record;
mod recovery;
mod schedule;
mod timer;

pub use backoff::{
    Backoff, BackoffError, MAX_BACKOFF_MS, MAX_LADDER_STEPS, ROCKETMQ_LEVELS_MS, RetryPolicy,
};
pub use config::{
    DEFAULT_LEASE_MS, DEFAULT_MAX_SCAN, DEFAULT_SNAPSHOT_EVERY_BYTES,
    DEFAULT_SNAPSHOT_EVERY_RECORDS, MAX_ACQUIRE, QueueConfig,
};
pub use delivery::{
    Acquire, Acquired, ConsumerId, DeadLetter, DeadReason, Delivery, LostLease, Released, Verdict,
};
pub use error::{DecodeError, QueueError};
pub use head::HeadExpiry;
pub use policy::{Limits, MAX_PRIORITY, Overflow, effective_priority, expires_at, is_expired};
pub use queue_state::{Footprint, QueueState};
pub use range_set::RangeSet;
pub use record::{
    DeliveredRun, FORMAT_VERSION, FORMAT_VERSION_1, MAX_RECORD_ENTRIES, MAX_RUN_LEN, PackedEntries,
    Record, ScheduledEntry, SettleOutcome, Snapshot,
};
pub use schedule::Retried;
pub use timer::TimerFootprint;

pub use common::{Offset, TimestampMs};
