//! The persisted form of a queue's delivery state: records and their byte format.
//!
//! The format is documented in the crate doc (`lib.rs`, §FORMAT); keep the two in step.

use std::ops::Range;

use common::{Offset, TimestampMs};

use crate::error::DecodeError;

/// The newest format version. Every record starts with its version byte; a record written
/// the same way as in version 1 (no scheduling) is written as version 1, byte for byte, so a
/// queue that never schedules writes what an older reader reads. Both versions decode.
pub const FORMAT_VERSION: u8 = 2;
/// The first format version (no scheduled offsets).
pub const FORMAT_VERSION_1: u8 = 1;
/// Most entries (runs or ranges) in one `Delivered` or `Settled` record: at 16 bytes an
/// entry, a record stays under 64 KiB. The outbox splits larger ones.
pub const MAX_RECORD_ENTRIES: usize = 4096;
/// Longest run in a `Delivered` record or a snapshot (recovery touches each offset of a
/// run, so a run's length bounds the work one 16-byte entry can cause).
pub const MAX_RUN_LEN: u32 = crate::MAX_ACQUIRE;

const KIND_DELIVERED: u8 = 1;
const KIND_SETTLED: u8 = 2;
const KIND_LOG_START: u8 = 3;
const KIND_SNAPSHOT: u8 = 4;
const KIND_SCHEDULED: u8 = 5;
const KIND_RELEASED_THROUGH: u8 = 6;
const KIND_SNAPSHOT_SCHEDULED: u8 = 7;
const HEADER_BYTES: usize = 2;
const ENTRY_BYTES: usize = 16;

/// `len` consecutive offsets from `start`, each delivered `delivery_count` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveredRun {
    pub start: Offset,
    pub len: u32,
    pub delivery_count: u32,
}

impl DeliveredRun {
    pub fn end(&self) -> Offset {
        self.start + i64::from(self.len)
    }
}

/// A message hidden until `due_ms` (a scheduled or delayed message, or a retry waiting out
/// its backoff).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScheduledEntry {
    pub offset: Offset,
    pub due_ms: TimestampMs,
}

/// Scheduled entries packed for a snapshot part (`Record::SnapshotScheduled`): per entry,
/// the offset as a zigzag varint delta from the previous entry's (the first from 0) and the
/// due time as a varint delta from `base_due` (the part's earliest). Entries taken from the
/// time index bucket by bucket come in about offset order, so this is ~6 bytes an entry
/// where the plain form is 16 — what keeps a snapshot of 10 M scheduled offsets near 60 MB.
/// Built by [`PackedEntries::pack`]; decoding checks every byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedEntries {
    base_due: TimestampMs,
    count: u32,
    bytes: Vec<u8>,
}

impl PackedEntries {
    /// Packs `entries` (at most [`MAX_RECORD_ENTRIES`], offsets non-negative), in order.
    pub fn pack(entries: &[ScheduledEntry]) -> PackedEntries {
        assert!(
            entries.len() <= MAX_RECORD_ENTRIES,
            "a part holds at most 4096"
        );
        let base_due = entries.iter().map(|e| e.due_ms).min().unwrap_or(0);
        let mut bytes = Vec::with_capacity(entries.len() * 6);
        let mut prev: Offset = 0;
        for e in entries {
            assert!(e.offset >= 0, "offsets are non-negative");
            put_varint(&mut bytes, zigzag(e.offset.wrapping_sub(prev)));
            put_varint(&mut bytes, e.due_ms.wrapping_sub(base_due) as u64);
            prev = e.offset;
        }
        bytes.shrink_to_fit();
        PackedEntries {
            base_due,
            count: entries.len() as u32,
            bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries, in the order packed.
    pub fn iter(&self) -> impl Iterator<Item = ScheduledEntry> + '_ {
        let mut pos = 0;
        let mut prev: Offset = 0;
        (0..self.count).map(move |_| {
            let (d, n) = get_varint(&self.bytes[pos..]).expect("checked when built");
            pos += n;
            let (due, n) = get_varint(&self.bytes[pos..]).expect("checked when built");
            pos += n;
            prev = prev.wrapping_add(unzigzag(d));
            ScheduledEntry {
                offset: prev,
                due_ms: self.base_due.wrapping_add(due as i64),
            }
        })
    }

    /// Checks packed bytes from a record: exactly `count` well-formed entries, offsets
    /// non-negative, due times within `i64`.
    fn check(base_due: TimestampMs, count: u32, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut pos = 0;
        let mut prev: i128 = 0;
        for _ in 0..count {
            let bad = |pos: usize| DecodeError::InvalidPacked { at: pos };
            let (d, n) = get_varint(&bytes[pos..]).ok_or(bad(pos))?;
            pos += n;
            let (due, n) = get_varint(&bytes[pos..]).ok_or(bad(pos))?;
            pos += n;
            prev += i128::from(unzigzag(d));
            let due = i128::from(base_due) + i128::from(due);
            if prev < 0 || prev > i128::from(Offset::MAX) || due > i128::from(TimestampMs::MAX) {
                return Err(bad(pos));
            }
        }
        match bytes.len() - pos {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint and its length; `None` if truncated or longer than 64 bits.
pub(crate) fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if b < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

/// How settled offsets ended. Recovery treats all alike (settled is final); the outcome is
/// kept for the dead-letter machinery and for operators reading the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    Acked = 0,
    Dead = 1,
    Purged = 2,
}

/// Everything recovery needs, at one instant: the state minus leases' holders and deadlines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub log_start: Offset,
    /// Every offset below is settled or below the log start.
    pub low_water: Offset,
    /// Every offset at or above was never delivered and is not settled.
    pub cursor: Offset,
    /// Settled ranges within `low_water..cursor`, ascending.
    pub settled: Vec<Range<Offset>>,
    /// Delivered at least once and not settled (in flight, returned, or scheduled for a
    /// retry), ascending.
    pub delivered: Vec<DeliveredRun>,
    /// How many scheduled offsets the [`Record::SnapshotScheduled`] records right after this
    /// one carry (0: none follow). The snapshot counts only once all of them are read.
    pub scheduled: u64,
}

/// One persisted change to a queue's delivery state. Replaying records in order, each on the
/// result of the previous (a `Snapshot` replaces everything), rebuilds the state; replaying a
/// suffix of them again is harmless (every record *sets* state; settled is final).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// One acquire (or several, coalesced in the outbox): these offsets now have these
    /// delivery counts. Later runs win over earlier ones for the same offset.
    Delivered(Vec<DeliveredRun>),
    /// These offsets are settled (acked, dead or purged) and never delivered again.
    Settled {
        outcome: SettleOutcome,
        ranges: Vec<Range<Offset>>,
    },
    /// The log start moved here: forget everything below.
    LogStart(Offset),
    /// The whole state; records before it are no longer needed. When it has scheduled
    /// offsets, they follow in [`Record::SnapshotScheduled`] records.
    Snapshot(Snapshot),
    /// These offsets are hidden until their due time (a later entry for the same offset
    /// replaces an earlier one). Version 2.
    Scheduled(Vec<ScheduledEntry>),
    /// Every offset scheduled by an earlier record and due at or before this time is
    /// available again (`QueueState::release_due` ran at this time). Version 2.
    ReleasedThrough(TimestampMs),
    /// Part of the scheduled offsets of the `Snapshot` just before, packed. Version 2.
    SnapshotScheduled(PackedEntries),
}

impl Record {
    /// Runs or ranges held (the unit of the per-record limit).
    pub fn entry_count(&self) -> usize {
        match self {
            Record::Delivered(runs) => runs.len(),
            Record::Settled { ranges, .. } => ranges.len(),
            Record::LogStart(_) | Record::ReleasedThrough(_) => 0,
            Record::Snapshot(s) => s.settled.len() + s.delivered.len(),
            Record::Scheduled(entries) => entries.len(),
            Record::SnapshotScheduled(packed) => packed.len(),
        }
    }

    /// The version this record is written as: 1 unless it needs version 2.
    pub fn version(&self) -> u8 {
        match self {
            Record::Delivered(_) | Record::Settled { .. } | Record::LogStart(_) => FORMAT_VERSION_1,
            Record::Snapshot(s) if s.scheduled == 0 => FORMAT_VERSION_1,
            _ => FORMAT_VERSION,
        }
    }

    /// The exact length of [`Record::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        HEADER_BYTES
            + match self {
                Record::Delivered(runs) => 4 + ENTRY_BYTES * runs.len(),
                Record::Settled { ranges, .. } => 1 + 4 + ENTRY_BYTES * ranges.len(),
                Record::LogStart(_) => 8,
                Record::Snapshot(s) => {
                    3 * 8
                        + 2 * 4
                        + ENTRY_BYTES * self.entry_count()
                        + if s.scheduled > 0 { 8 } else { 0 }
                }
                Record::Scheduled(e) => 4 + ENTRY_BYTES * e.len(),
                Record::SnapshotScheduled(p) => 8 + 4 + 4 + p.bytes.len(),
                Record::ReleasedThrough(_) => 8,
            }
    }

    /// Appends the record's bytes to `out` (format: crate doc §FORMAT).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.push(self.version());
        match self {
            Record::Delivered(runs) => {
                out.push(KIND_DELIVERED);
                put_runs(out, runs);
            }
            Record::Settled { outcome, ranges } => {
                out.push(KIND_SETTLED);
                out.push(*outcome as u8);
                put_ranges(out, ranges);
            }
            Record::LogStart(offset) => {
                out.push(KIND_LOG_START);
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Record::Snapshot(s) => {
                out.push(KIND_SNAPSHOT);
                for mark in [s.log_start, s.low_water, s.cursor] {
                    out.extend_from_slice(&mark.to_be_bytes());
                }
                put_ranges(out, &s.settled);
                put_runs(out, &s.delivered);
                if s.scheduled > 0 {
                    out.extend_from_slice(&s.scheduled.to_be_bytes());
                }
            }
            Record::Scheduled(entries) => {
                out.push(KIND_SCHEDULED);
                put_entries(out, entries);
            }
            Record::ReleasedThrough(at) => {
                out.push(KIND_RELEASED_THROUGH);
                out.extend_from_slice(&at.to_be_bytes());
            }
            Record::SnapshotScheduled(p) => {
                out.push(KIND_SNAPSHOT_SCHEDULED);
                out.extend_from_slice(&p.base_due.to_be_bytes());
                out.extend_from_slice(&p.count.to_be_bytes());
                out.extend_from_slice(&count_u32(p.bytes.len()).to_be_bytes());
                out.extend_from_slice(&p.bytes);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one record from `bytes` (nothing may follow it).
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != FORMAT_VERSION_1 && version != FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let v2 = version == FORMAT_VERSION;
        let kind = r.u8()?;
        let record = match kind {
            KIND_DELIVERED => Record::Delivered(r.runs(MAX_RECORD_ENTRIES, false)?),
            KIND_SETTLED => {
                let outcome = match r.u8()? {
                    0 => SettleOutcome::Acked,
                    1 => SettleOutcome::Dead,
                    2 => SettleOutcome::Purged,
                    other => return Err(DecodeError::UnknownOutcome(other)),
                };
                let ranges = r.ranges(MAX_RECORD_ENTRIES)?;
                Record::Settled { outcome, ranges }
            }
            KIND_LOG_START => {
                let offset = r.i64()?;
                if offset < 0 {
                    return Err(DecodeError::InvalidRange {
                        start: offset,
                        end: offset,
                    });
                }
                Record::LogStart(offset)
            }
            KIND_SNAPSHOT => Record::Snapshot(r.snapshot(v2)?),
            KIND_SCHEDULED if v2 => Record::Scheduled(r.entries()?),
            KIND_RELEASED_THROUGH if v2 => Record::ReleasedThrough(r.i64()?),
            KIND_SNAPSHOT_SCHEDULED if v2 => Record::SnapshotScheduled(r.packed()?),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if record.version() != version {
            return Err(DecodeError::WrongVersion { version, kind });
        }
        match bytes.len() - r.pos {
            0 => Ok(record),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}

fn put_ranges(out: &mut Vec<u8>, ranges: &[Range<Offset>]) {
    out.extend_from_slice(&count_u32(ranges.len()).to_be_bytes());
    for r in ranges {
        out.extend_from_slice(&r.start.to_be_bytes());
        out.extend_from_slice(&r.end.to_be_bytes());
    }
}

fn put_runs(out: &mut Vec<u8>, runs: &[DeliveredRun]) {
    out.extend_from_slice(&count_u32(runs.len()).to_be_bytes());
    for run in runs {
        out.extend_from_slice(&run.start.to_be_bytes());
        out.extend_from_slice(&run.len.to_be_bytes());
        out.extend_from_slice(&run.delivery_count.to_be_bytes());
    }
}

fn put_entries(out: &mut Vec<u8>, entries: &[ScheduledEntry]) {
    out.extend_from_slice(&count_u32(entries.len()).to_be_bytes());
    for e in entries {
        out.extend_from_slice(&e.offset.to_be_bytes());
        out.extend_from_slice(&e.due_ms.to_be_bytes());
    }
}

fn count_u32(n: usize) -> u32 {
    // A snapshot of more than 4 G entries would need 64 GiB of in-flight state first.
    u32::try_from(n).expect("record entry count fits u32")
}

/// A bounds-checked cursor over the input; every read fails with `Truncated` at the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let rest = &self.bytes[self.pos..];
        let Some(chunk) = rest.get(..N) else {
            return Err(DecodeError::Truncated {
                needed: N - rest.len(),
            });
        };
        self.pos += N;
        Ok(chunk.try_into().expect("slice of length N"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<Offset, DecodeError> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    /// Reads an entry count, refusing more than `max` or more than the bytes left could
    /// hold, so nothing is allocated from a claim the input cannot back.
    fn count(&mut self, max: usize) -> Result<usize, DecodeError> {
        let claimed = self.u32()? as usize;
        let fits = (self.bytes.len() - self.pos) / ENTRY_BYTES;
        if claimed > max {
            return Err(DecodeError::TooManyEntries {
                claimed: claimed as u64,
                max: max as u64,
            });
        }
        if claimed > fits {
            return Err(DecodeError::Truncated {
                needed: (claimed - fits) * ENTRY_BYTES,
            });
        }
        Ok(claimed)
    }

    /// Ranges: non-negative, non-empty, ascending and disjoint.
    fn ranges(&mut self, max: usize) -> Result<Vec<Range<Offset>>, DecodeError> {
        let n = self.count(max)?;
        let mut out = Vec::with_capacity(n);
        let mut prev_end = 0;
        for _ in 0..n {
            let (start, end) = (self.i64()?, self.i64()?);
            if start < prev_end || end <= start {
                return Err(DecodeError::InvalidRange { start, end });
            }
            prev_end = end;
            out.push(start..end);
        }
        Ok(out)
    }

    /// Runs: non-negative, 1..=MAX_RUN_LEN long, count >= 1; `ordered` also demands
    /// ascending, disjoint runs (snapshots; a coalesced `Delivered` may revisit offsets).
    fn runs(&mut self, max: usize, ordered: bool) -> Result<Vec<DeliveredRun>, DecodeError> {
        let n = self.count(max)?;
        let mut out = Vec::with_capacity(n);
        let mut prev_end = 0;
        for _ in 0..n {
            let start = self.i64()?;
            let (len, count) = (self.u32()?, self.u32()?);
            let bad = start < 0
                || len == 0
                || len > MAX_RUN_LEN
                || count == 0
                || start.checked_add(i64::from(len)).is_none()
                || (ordered && start < prev_end);
            if bad {
                return Err(DecodeError::InvalidRun { start, len, count });
            }
            let run = DeliveredRun {
                start,
                len,
                delivery_count: count,
            };
            prev_end = run.end();
            out.push(run);
        }
        Ok(out)
    }

    /// A packed snapshot part: at most `MAX_RECORD_ENTRIES` entries, every byte checked.
    fn packed(&mut self) -> Result<PackedEntries, DecodeError> {
        let base_due = self.i64()?;
        let count = self.u32()?;
        let len = self.u32()? as usize;
        if count as usize > MAX_RECORD_ENTRIES {
            return Err(DecodeError::TooManyEntries {
                claimed: u64::from(count),
                max: MAX_RECORD_ENTRIES as u64,
            });
        }
        let rest = self.bytes.len() - self.pos;
        if len > rest {
            return Err(DecodeError::Truncated { needed: len - rest });
        }
        let bytes = &self.bytes[self.pos..self.pos + len];
        PackedEntries::check(base_due, count, bytes)?;
        self.pos += len;
        Ok(PackedEntries {
            base_due,
            count,
            bytes: bytes.to_vec(),
        })
    }

    /// Scheduled entries: non-negative offsets, any due time, any order.
    fn entries(&mut self) -> Result<Vec<ScheduledEntry>, DecodeError> {
        let n = self.count(MAX_RECORD_ENTRIES)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (offset, due_ms) = (self.i64()?, self.i64()?);
            if offset < 0 {
                return Err(DecodeError::InvalidRange {
                    start: offset,
                    end: offset,
                });
            }
            out.push(ScheduledEntry { offset, due_ms });
        }
        Ok(out)
    }

    fn snapshot(&mut self, v2: bool) -> Result<Snapshot, DecodeError> {
        let (log_start, low_water, cursor) = (self.i64()?, self.i64()?, self.i64()?);
        if !(0 <= log_start && log_start <= low_water && low_water <= cursor) {
            return Err(DecodeError::InvalidMarks {
                log_start,
                low_water,
                cursor,
            });
        }
        let settled = self.ranges(usize::MAX)?;
        let delivered = self.runs(usize::MAX, true)?;
        let scheduled = if v2 { self.u64()? } else { 0 };
        let outside = |start: Offset, end: Offset| start < low_water || end > cursor;
        if let Some(r) = settled.iter().find(|r| outside(r.start, r.end)) {
            return Err(DecodeError::InvalidRange {
                start: r.start,
                end: r.end,
            });
        }
        if let Some(run) = delivered.iter().find(|r| outside(r.start, r.end())) {
            return Err(DecodeError::InvalidRun {
                start: run.start,
                len: run.len,
                count: run.delivery_count,
            });
        }
        Ok(Snapshot {
            log_start,
            low_water,
            cursor,
            settled,
            delivered,
            scheduled,
        })
    }
}
