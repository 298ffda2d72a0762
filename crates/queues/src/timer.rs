//! The scheduled-offset index: `(due, offset)` pairs kept compactly, handed back in
//! `(due, offset)` order once due.
//!
//! Two tiers:
//! - **far**: one bucket per `2^BUCKET_SHIFT` ms of due time (about 17 minutes), in a
//!   `BTreeMap` by bucket number. A bucket is a byte string of varint pairs — the offset as
//!   a zigzag delta from the bucket's previous entry, the due time as a delta from the
//!   bucket's start (at most 3 bytes) — in insertion order, unsorted. Messages are scheduled
//!   in about the order they are published, so the offset deltas are small: 10 M entries
//!   spread over a year cost 6.6 bytes each, bucket overhead and slack included (measured
//!   in `tests/scheduler_memory.rs`).
//!   Inserting is one map lookup and a few byte pushes.
//! - **near**: once the clock reaches a bucket, it is decoded and sorted into `run` (16 bytes
//!   an entry, only while its ~17 minutes pass); entries scheduled below the refined horizon
//!   go to a small `BTreeSet`. Popping due entries merges the two.
//!
//! Popping is proportional to what is popped, plus the one-time decode and sort of each
//! bucket the clock enters (each entry is decoded once). The index knows nothing of queue
//! states: the queue decides whether a popped entry is still scheduled (`QueueState` keeps
//! settled entries here as garbage until they are popped or compacted).

use std::collections::{BTreeMap, BTreeSet};

use common::{Offset, TimestampMs};

use crate::record::{put_varint, unzigzag, zigzag};

/// Due times per far bucket: `2^20` ms, about 17.5 minutes (30,000 buckets a year).
const BUCKET_SHIFT: u32 = 20;
const BUCKET_MS: i64 = 1 << BUCKET_SHIFT;

/// One far bucket: the entries whose due time falls in `[key << SHIFT, (key + 1) << SHIFT)`.
#[derive(Clone, Debug, Default)]
struct Bucket {
    /// Varint pairs: zigzag(offset - previous offset), due - bucket start.
    bytes: Vec<u8>,
    len: u32,
    min_due: TimestampMs,
    last_offset: Offset,
}

impl Bucket {
    fn push(&mut self, start: TimestampMs, due: TimestampMs, offset: Offset) {
        if self.len == 0 || due < self.min_due {
            self.min_due = due;
        }
        if self.bytes.len() + 2 * MAX_VARINT > self.bytes.capacity() {
            // Grow by a quarter (not double): the slack stays under 25 % of a bucket,
            // still amortized O(1) per byte.
            let extra = (self.bytes.capacity() / 4).max(4 * MAX_VARINT);
            self.bytes.reserve_exact(extra);
        }
        let delta = offset.wrapping_sub(self.last_offset);
        put_varint(&mut self.bytes, zigzag(delta));
        put_varint(&mut self.bytes, due.wrapping_sub(start) as u64);
        self.last_offset = offset;
        self.len += 1;
    }

    fn decode(&self, start: TimestampMs, mut each: impl FnMut(TimestampMs, Offset)) {
        let mut pos = 0;
        let mut offset: Offset = 0;
        while pos < self.bytes.len() {
            offset = offset.wrapping_add(unzigzag(get_varint(&self.bytes, &mut pos)));
            let due = start.wrapping_add(get_varint(&self.bytes, &mut pos) as i64);
            each(due, offset);
        }
    }
}

const MAX_VARINT: usize = 10;

/// Reads a varint the index wrote itself (so always well formed).
fn get_varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let (v, n) = crate::record::get_varint(&bytes[*pos..])
        .expect("the time index holds only varints it wrote");
    *pos += n;
    v
}

fn bucket_of(due: TimestampMs) -> i64 {
    due >> BUCKET_SHIFT
}

fn bucket_start(key: i64) -> TimestampMs {
    key << BUCKET_SHIFT
}

/// The end of bucket `key` (saturating at the end of time).
fn bucket_end(key: i64) -> TimestampMs {
    key.checked_add(1)
        .and_then(|k| k.checked_mul(BUCKET_MS))
        .unwrap_or(TimestampMs::MAX)
}

/// A multiset of `(due, offset)` pairs, popped in `(due, offset)` order.
#[derive(Clone, Debug)]
pub(crate) struct Timer {
    /// The refined bucket's entries, sorted descending (the next one to pop is last).
    run: Vec<(TimestampMs, Offset)>,
    /// Entries due before `horizon` scheduled after their bucket was refined.
    near: BTreeSet<(TimestampMs, Offset)>,
    /// Entries due at or after `horizon` live in `far`; before it, in `run` or `near`.
    horizon: TimestampMs,
    far: BTreeMap<i64, Bucket>,
    far_len: usize,
    /// Entries decoded from far buckets or popped, ever (the work counter tests bound).
    work: u64,
}

impl Default for Timer {
    fn default() -> Self {
        Self {
            run: Vec::new(),
            near: BTreeSet::new(),
            horizon: TimestampMs::MIN,
            far: BTreeMap::new(),
            far_len: 0,
            work: 0,
        }
    }
}

/// Sizes of the index, for footprints and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerFootprint {
    /// Entries held (scheduled offsets, plus settled ones not yet dropped).
    pub entries: usize,
    /// Far buckets (one per ~17 minutes of due times that hold any entry).
    pub buckets: usize,
    /// Entries in the sorted near tier (the bucket the clock is in).
    pub near: usize,
    /// Heap bytes the index holds, from its collections' capacities (B-tree nodes
    /// estimated at 1.5 times their payload).
    pub heap_bytes: usize,
    /// Entries decoded or popped since the queue was built or recovered: the index's work.
    pub work: u64,
}

impl Timer {
    pub fn len(&self) -> usize {
        self.run.len() + self.near.len() + self.far_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&mut self, due: TimestampMs, offset: Offset) {
        if due < self.horizon {
            self.near.insert((due, offset));
            return;
        }
        let key = bucket_of(due);
        self.far
            .entry(key)
            .or_default()
            .push(bucket_start(key), due, offset);
        self.far_len += 1;
    }

    /// The earliest due time held.
    pub fn next_due(&self) -> Option<TimestampMs> {
        [
            self.run.last().map(|&(d, _)| d),
            self.near.first().map(|&(d, _)| d),
            self.far.first_key_value().map(|(_, b)| b.min_due),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Removes and returns, in `(due, offset)` order, every entry due at or before `now`.
    pub fn pop_due(&mut self, now: TimestampMs, out: &mut Vec<(TimestampMs, Offset)>) {
        loop {
            self.pop_near(now, out);
            // Everything due before the next bucket's start is popped; refine it if the
            // clock is inside it.
            let Some(entry) = self.far.first_entry() else {
                return;
            };
            let key = *entry.key();
            if bucket_start(key) > now {
                return;
            }
            let bucket = entry.remove();
            self.far_len -= bucket.len as usize;
            self.refine(key, &bucket);
        }
    }

    fn pop_near(&mut self, now: TimestampMs, out: &mut Vec<(TimestampMs, Offset)>) {
        loop {
            let from_run = self.run.last().copied().filter(|&(d, _)| d <= now);
            let from_near = self.near.first().copied().filter(|&(d, _)| d <= now);
            let next = match (from_run, from_near) {
                (Some(a), Some(b)) if b < a => self.near.pop_first(),
                (Some(_), _) => self.run.pop(),
                (None, Some(_)) => self.near.pop_first(),
                (None, None) => break,
            };
            out.extend(next);
            self.work += 1;
        }
        if self.run.is_empty() && self.run.capacity() > 0 {
            self.run = Vec::new();
        }
    }

    /// Moves far bucket `key` into the near tier, sorted.
    fn refine(&mut self, key: i64, bucket: &Bucket) {
        let mut entries = Vec::with_capacity(bucket.len as usize);
        bucket.decode(bucket_start(key), |d, o| entries.push((d, o)));
        self.work += entries.len() as u64;
        entries.sort_unstable_by(|a, b| b.cmp(a));
        if self.run.is_empty() {
            self.run = entries;
        } else {
            // Entries left from an earlier bucket (only when popping stopped early): keep
            // the run sorted by merging through the near set.
            self.near.extend(entries);
        }
        self.horizon = self.horizon.max(bucket_end(key));
    }

    /// Every entry, in no particular order.
    pub fn for_each(&self, mut each: impl FnMut(TimestampMs, Offset)) {
        for &(d, o) in self.run.iter().chain(self.near.iter()) {
            each(d, o);
        }
        for (&key, bucket) in &self.far {
            bucket.decode(bucket_start(key), &mut each);
        }
    }

    /// Keeps only the entries `keep` accepts (compaction of settled entries; O(entries)).
    pub fn retain(&mut self, mut keep: impl FnMut(TimestampMs, Offset) -> bool) {
        self.run.retain(|&(d, o)| keep(d, o));
        self.near.retain(|&(d, o)| keep(d, o));
        let far = std::mem::take(&mut self.far);
        self.far_len = 0;
        for (key, bucket) in far {
            let mut kept = Bucket::default();
            bucket.decode(bucket_start(key), |d, o| {
                if keep(d, o) {
                    kept.push(bucket_start(key), d, o);
                }
            });
            if kept.len > 0 {
                kept.bytes.shrink_to_fit();
                self.far_len += kept.len as usize;
                self.far.insert(key, kept);
            }
        }
    }

    pub fn footprint(&self) -> TimerFootprint {
        let entry = std::mem::size_of::<(TimestampMs, Offset)>();
        let far_node = std::mem::size_of::<(i64, Bucket)>();
        let heap_bytes = self.run.capacity() * entry
            + self.near.len() * entry * 3 / 2
            + self.far.len() * far_node * 3 / 2
            + self.far.values().map(|b| b.bytes.capacity()).sum::<usize>();
        TimerFootprint {
            entries: self.len(),
            buckets: self.far.len(),
            near: self.run.len() + self.near.len(),
            heap_bytes,
            work: self.work,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            i64::MAX,
            i64::MIN,
            1 << 40,
            -(1 << 40),
        ] {
            assert_eq!(unzigzag(zigzag(v)), v);
            let mut bytes = Vec::new();
            put_varint(&mut bytes, zigzag(v));
            let mut pos = 0;
            assert_eq!(unzigzag(get_varint(&bytes, &mut pos)), v);
            assert_eq!(pos, bytes.len());
        }
    }

    #[test]
    fn far_entries_come_out_in_due_then_offset_order() {
        let mut t = Timer::default();
        let year = 365 * 24 * 3_600_000i64;
        t.insert(year, 5);
        t.insert(10, 7);
        t.insert(10, 3);
        t.insert(BUCKET_MS * 3 + 1, 1);
        t.insert(-5, 9);
        assert_eq!(t.next_due(), Some(-5));
        let mut out = Vec::new();
        t.pop_due(10, &mut out);
        assert_eq!(out, vec![(-5, 9), (10, 3), (10, 7)]);
        out.clear();
        t.insert(11, 2); // below the horizon now: the near set
        t.pop_due(i64::MAX, &mut out);
        assert_eq!(out, vec![(11, 2), (BUCKET_MS * 3 + 1, 1), (year, 5)]);
        assert!(t.is_empty());
        assert_eq!(t.next_due(), None);
    }

    proptest! {
        #[test]
        fn behaves_like_a_sorted_multiset(
            ops in proptest::collection::vec(
                (0u8..4, -3i64..(8 * BUCKET_MS), 0i64..1_000_000),
                0..200,
            ),
        ) {
            let mut t = Timer::default();
            let mut model: Vec<(i64, i64)> = Vec::new();
            let mut now = 0i64;
            for (kind, a, b) in ops {
                match kind {
                    0 | 1 => {
                        t.insert(a, b);
                        model.push((a, b));
                    }
                    2 => {
                        // Clock moves, forward or back.
                        now = a;
                        let mut got = Vec::new();
                        t.pop_due(now, &mut got);
                        model.sort_unstable();
                        let split = model.partition_point(|&(d, _)| d <= now);
                        let want: Vec<_> = model.drain(..split).collect();
                        prop_assert_eq!(got, want);
                    }
                    _ => {
                        t.retain(|_, o| o % 3 != 0);
                        model.retain(|&(_, o)| o % 3 != 0);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert_eq!(t.next_due(), model.iter().map(|&(d, _)| d).min());
                let mut all = Vec::new();
                t.for_each(|d, o| all.push((d, o)));
                all.sort_unstable();
                let mut sorted = model.clone();
                sorted.sort_unstable();
                prop_assert_eq!(all, sorted);
            }
            let _ = now;
        }
    }
}
