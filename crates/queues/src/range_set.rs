//! A set of offsets, compact whether it is a few long runs or millions of short ones.
//!
//! The offsets are cut into chunks of `2^16` (Roaring bitmaps' layout, on ranges):
//! - a run of chunks entirely in the set is one map entry, so a run of any length costs one
//!   entry (a purge of ten million messages, the low-water region);
//! - a chunk partly in the set is one entry with a container: its runs as `(first, last)`
//!   `u16` pairs (4 bytes a run), or, once that would be larger, a bitmap (8 KiB, one bit an
//!   offset).
//!
//! So a set fragmented into runs of a few offsets — settled messages between scheduled ones
//! still waiting, issue 16 — costs at most one bit per offset of the span, where one map
//! entry per run cost ~27–40 bytes. Counts are O(1); membership, insertion and removal are a
//! map lookup plus work inside one chunk (at most 8 KiB moved) or one map update per run of
//! whole chunks.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use common::Offset;

/// Offsets per chunk: `2^CHUNK_BITS` (tiny in unit tests, so they cross chunks often).
const CHUNK_BITS: u32 = if cfg!(test) { 4 } else { 16 };
const CHUNK: i64 = 1 << CHUNK_BITS;
const MASK: i64 = CHUNK - 1;
/// `u64` words of a bitmap container.
const WORDS: usize = (CHUNK as usize).div_ceil(64);
/// A run container converts to a bitmap once its runs (4 bytes each) would outweigh one.
const MAX_RUNS: usize = if WORDS * 2 > 1 { WORDS * 2 } else { 1 };

fn chunk_of(offset: Offset) -> i64 {
    offset >> CHUNK_BITS
}

fn pos_of(offset: Offset) -> u16 {
    (offset & MASK) as u16
}

fn chunk_start(chunk: i64) -> Offset {
    chunk << CHUNK_BITS
}

/// Where chunk `chunk + n` starts, or the end of the offsets (the last chunk's end, past
/// `Offset::MAX`, is clamped: `Offset::MAX` itself is never a member).
fn chunk_end(chunk: i64) -> Offset {
    chunk
        .checked_add(1)
        .and_then(|c| c.checked_mul(CHUNK))
        .unwrap_or(Offset::MAX)
}

/// The members of one chunk that is neither empty nor full.
#[derive(Clone, Debug)]
struct Container {
    count: u32,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Ascending, disjoint, non-touching inclusive runs.
    Runs(Vec<(u16, u16)>),
    Bits(Box<[u64]>),
}

impl Container {
    fn empty() -> Self {
        Container {
            count: 0,
            kind: Kind::Runs(Vec::new()),
        }
    }

    fn full() -> Self {
        Container {
            count: CHUNK as u32,
            kind: Kind::Runs(vec![(0, MASK as u16)]),
        }
    }

    fn contains(&self, p: u16) -> bool {
        match &self.kind {
            Kind::Runs(runs) => {
                let i = runs.partition_point(|&(_, last)| last < p);
                runs.get(i).is_some_and(|&(first, _)| first <= p)
            }
            Kind::Bits(words) => (words[usize::from(p) / 64] >> (p % 64)) & 1 == 1,
        }
    }

    /// Adds `lo..=hi`; returns how many were not members.
    fn insert(&mut self, lo: u16, hi: u16) -> u32 {
        let added = match &mut self.kind {
            Kind::Runs(runs) => {
                // Runs that overlap or touch `lo..=hi` merge with it.
                let from = runs.partition_point(|&(_, last)| u32::from(last) + 1 < u32::from(lo));
                let to = runs.partition_point(|&(first, _)| u32::from(first) <= u32::from(hi) + 1);
                let (mut first, mut last) = (lo, hi);
                let mut had = 0u32;
                for &(f, l) in &runs[from..to] {
                    // Only the overlapping part (not a touching neighbour) was there.
                    let (a, b) = (f.max(lo), l.min(hi));
                    if a <= b {
                        had += u32::from(b) + 1 - u32::from(a);
                    }
                    first = first.min(f);
                    last = last.max(l);
                }
                runs.splice(from..to, [(first, last)]);
                u32::from(hi) + 1 - u32::from(lo) - had
            }
            Kind::Bits(words) => set_bits(words, lo, hi, true),
        };
        self.count += added;
        self.compact();
        added
    }

    /// Removes `lo..=hi`; returns how many were members.
    fn remove(&mut self, lo: u16, hi: u16) -> u32 {
        let removed = match &mut self.kind {
            Kind::Runs(runs) => {
                let from = runs.partition_point(|&(_, last)| last < lo);
                let to = runs.partition_point(|&(first, _)| first <= hi);
                let mut kept = Vec::with_capacity(2);
                let mut removed = 0u32;
                for &(f, l) in &runs[from..to] {
                    removed += u32::from(l.min(hi)) + 1 - u32::from(f.max(lo));
                    if f < lo {
                        kept.push((f, lo - 1));
                    }
                    if l > hi {
                        kept.push((hi + 1, l));
                    }
                }
                runs.splice(from..to, kept);
                removed
            }
            Kind::Bits(words) => set_bits(words, lo, hi, false),
        };
        self.count -= removed;
        self.compact();
        removed
    }

    /// Runs become a bitmap once they would be larger (never back: a bitmap is bounded).
    fn compact(&mut self) {
        if let Kind::Runs(runs) = &self.kind
            && runs.len() > MAX_RUNS
        {
            let mut words = vec![0u64; WORDS].into_boxed_slice();
            for &(f, l) in runs {
                set_bits(&mut words, f, l, true);
            }
            self.kind = Kind::Bits(words);
        }
    }

    /// The runs, ascending, from the one holding `p` or the next (a bitmap's first run is
    /// clipped to start at `p`). Lazy: finding the next member costs a binary search or a
    /// scan to it, not the whole chunk.
    fn runs_from(&self, p: u16) -> RunIter<'_> {
        match &self.kind {
            Kind::Runs(runs) => {
                let i = runs.partition_point(|&(_, last)| last < p);
                RunIter::Runs(runs[i..].iter())
            }
            Kind::Bits(words) => RunIter::Bits {
                words,
                pos: usize::from(p),
            },
        }
    }

    #[cfg(test)]
    fn runs(&self) -> Vec<(u16, u16)> {
        self.runs_from(0).collect()
    }

    fn heap_bytes(&self) -> usize {
        match &self.kind {
            Kind::Runs(runs) => runs.capacity() * 4,
            Kind::Bits(words) => words.len() * 8,
        }
    }
}

/// A container's runs, ascending.
enum RunIter<'a> {
    Runs(std::slice::Iter<'a, (u16, u16)>),
    /// Scanning a bitmap from bit `pos`.
    Bits {
        words: &'a [u64],
        pos: usize,
    },
}

impl Iterator for RunIter<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        match self {
            RunIter::Runs(it) => it.next().copied(),
            RunIter::Bits { words, pos } => {
                let bits = CHUNK as usize;
                if *pos >= bits {
                    return None;
                }
                // The next set bit at or after `pos`…
                let mut w = *pos / 64;
                let mut word = words[w] & (u64::MAX << (*pos % 64));
                while word == 0 {
                    w += 1;
                    if w == words.len() {
                        *pos = bits;
                        return None;
                    }
                    word = words[w];
                }
                let start = w * 64 + word.trailing_zeros() as usize;
                // …and the next clear bit after it.
                let mut clear = !words[w] & (u64::MAX << (start % 64));
                while clear == 0 && w + 1 < words.len() {
                    w += 1;
                    clear = !words[w];
                }
                let end = if clear == 0 {
                    bits
                } else {
                    (w * 64 + clear.trailing_zeros() as usize).min(bits)
                };
                *pos = end;
                Some((start as u16, (end - 1) as u16))
            }
        }
    }
}

/// Sets (or clears) bits `lo..=hi`; returns how many changed.
fn set_bits(words: &mut [u64], lo: u16, hi: u16, on: bool) -> u32 {
    let mut changed = 0;
    let (lo, hi) = (usize::from(lo), usize::from(hi));
    for (w, word) in words.iter_mut().enumerate().take(hi / 64 + 1).skip(lo / 64) {
        let from = lo.max(w * 64) - w * 64;
        let to = hi.min(w * 64 + 63) - w * 64;
        let mask = (u64::MAX >> (63 - to)) & (u64::MAX << from);
        let before = *word;
        if on {
            *word |= mask;
        } else {
            *word &= !mask;
        }
        changed += (before ^ *word).count_ones();
    }
    changed
}

/// One map entry: a run of whole chunks, or one partial chunk.
#[derive(Clone, Debug)]
enum Entry {
    /// Chunks from the key up to (not including) this one are entirely in the set.
    Full(i64),
    /// The key's chunk is partly in the set.
    Part(Container),
}

/// A set of offsets (see the module doc for its layout). `len` (the number of offsets) is
/// kept up to date, so counts are O(1).
///
/// Invariant: entries do not overlap (a `Full` run ends at or before the next key); no two
/// `Full` runs touch; a `Part` container is neither empty nor full.
#[derive(Clone, Default)]
pub struct RangeSet {
    chunks: BTreeMap<i64, Entry>,
    len: u64,
}

impl PartialEq for RangeSet {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for RangeSet {}

impl fmt::Debug for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding one range (empty if the range is).
    pub fn from_range(range: Range<Offset>) -> Self {
        let mut set = Self::new();
        set.insert(range);
        set
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of offsets in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The number of maximal ranges (O(ranges)).
    pub fn range_count(&self) -> usize {
        self.iter().count()
    }

    /// Heap bytes held: map nodes estimated at 1.5 times their payload.
    pub fn heap_bytes(&self) -> usize {
        let node = std::mem::size_of::<(i64, Entry)>();
        self.chunks.len() * node * 3 / 2
            + self
                .chunks
                .values()
                .map(|e| match e {
                    Entry::Full(_) => 0,
                    Entry::Part(c) => c.heap_bytes(),
                })
                .sum::<usize>()
    }

    /// The maximal ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Range<Offset>> + '_ {
        self.ranges_from(Offset::MIN)
    }

    pub fn first(&self) -> Option<Range<Offset>> {
        self.iter().next()
    }

    pub fn last(&self) -> Option<Range<Offset>> {
        // A maximal range spans at most three entries (a partial chunk's tail, whole
        // chunks, a partial chunk's head).
        let from = *self.chunks.keys().rev().take(3).min()?;
        self.ranges_from(chunk_start(from)).last()
    }

    pub fn contains(&self, offset: Offset) -> bool {
        let chunk = chunk_of(offset);
        match self.chunks.range(..=chunk).next_back() {
            Some((_, Entry::Full(until))) => *until > chunk,
            Some((&k, Entry::Part(c))) => k == chunk && c.contains(pos_of(offset)),
            None => false,
        }
    }

    /// The smallest member `>= offset`.
    pub fn first_at_or_after(&self, offset: Offset) -> Option<Offset> {
        self.pieces_from(offset)
            .find(|r| r.end > offset)
            .map(|r| r.start.max(offset))
    }

    /// Adds `range`; returns how many offsets were not already members.
    pub fn insert(&mut self, range: Range<Offset>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let added = self.each_chunk(range, Self::insert_in_chunk, Self::insert_chunks);
        self.len += added;
        added
    }

    /// Removes `range`; returns how many offsets were members.
    pub fn remove(&mut self, range: Range<Offset>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let removed = self.each_chunk(range, Self::remove_in_chunk, Self::remove_chunks);
        self.len -= removed;
        removed
    }

    /// Removes every member below `offset`.
    pub fn remove_below(&mut self, offset: Offset) -> u64 {
        match self.first() {
            Some(first) if first.start < offset => self.remove(first.start..offset),
            _ => 0,
        }
    }

    /// The members inside `range`, as ranges clipped to it.
    pub fn intersection(&self, range: Range<Offset>) -> Vec<Range<Offset>> {
        if range.is_empty() {
            return Vec::new();
        }
        self.ranges_from(range.start)
            .map(|r| r.start.max(range.start)..r.end.min(range.end))
            .take_while(|r| r.start < range.end)
            .filter(|r| !r.is_empty())
            .collect()
    }

    /// Splits `range` into its first chunk's part, the whole chunks in the middle, and its
    /// last chunk's part, applying `in_chunk` / `chunks`; returns the sum of their counts.
    fn each_chunk(
        &mut self,
        range: Range<Offset>,
        in_chunk: fn(&mut Self, i64, u16, u16) -> u64,
        chunks: fn(&mut Self, Range<i64>) -> u64,
    ) -> u64 {
        let (first, last) = (chunk_of(range.start), chunk_of(range.end - 1));
        let (lo, hi) = (pos_of(range.start), pos_of(range.end - 1));
        if first == last {
            return in_chunk(self, first, lo, hi);
        }
        let mut n = in_chunk(self, first, lo, MASK as u16);
        if last > first + 1 {
            n += chunks(self, first + 1..last);
        }
        n + in_chunk(self, last, 0, hi)
    }

    /// The `Full` run holding `chunk`: `(start, until)`.
    fn full_run(&self, chunk: i64) -> Option<(i64, i64)> {
        match self.chunks.range(..=chunk).next_back() {
            Some((&k, Entry::Full(until))) if *until > chunk => Some((k, *until)),
            _ => None,
        }
    }

    fn insert_in_chunk(&mut self, chunk: i64, lo: u16, hi: u16) -> u64 {
        if self.full_run(chunk).is_some() {
            return 0;
        }
        if lo == 0 && i64::from(hi) == MASK {
            return self.insert_chunks(chunk..chunk + 1);
        }
        let entry = self
            .chunks
            .entry(chunk)
            .or_insert_with(|| Entry::Part(Container::empty()));
        let Entry::Part(container) = entry else {
            unreachable!("a Full run at {chunk} would hold it");
        };
        let added = container.insert(lo, hi);
        if i64::from(container.count) == CHUNK {
            self.chunks.remove(&chunk);
            self.put_full(chunk..chunk + 1);
        }
        u64::from(added)
    }

    fn insert_chunks(&mut self, chunks: Range<i64>) -> u64 {
        let had = self.clear_chunks(chunks.clone());
        self.put_full(chunks.clone());
        (chunks.end - chunks.start) as u64 * CHUNK as u64 - had
    }

    fn remove_in_chunk(&mut self, chunk: i64, lo: u16, hi: u16) -> u64 {
        if self.full_run(chunk).is_some() {
            if lo == 0 && i64::from(hi) == MASK {
                return self.remove_chunks(chunk..chunk + 1);
            }
            self.clear_chunks(chunk..chunk + 1);
            let mut container = Container::full();
            let removed = container.remove(lo, hi);
            self.chunks.insert(chunk, Entry::Part(container));
            return u64::from(removed);
        }
        let Some(Entry::Part(container)) = self.chunks.get_mut(&chunk) else {
            return 0;
        };
        let removed = container.remove(lo, hi);
        if container.count == 0 {
            self.chunks.remove(&chunk);
        }
        u64::from(removed)
    }

    fn remove_chunks(&mut self, chunks: Range<i64>) -> u64 {
        self.clear_chunks(chunks)
    }

    /// Removes everything in `chunks` (cutting `Full` runs that stick out); returns how
    /// many offsets that was.
    fn clear_chunks(&mut self, chunks: Range<i64>) -> u64 {
        let mut removed = 0u64;
        if let Some((k, until)) = self.full_run(chunks.start)
            && k < chunks.start
        {
            self.chunks.insert(k, Entry::Full(chunks.start));
            if until > chunks.end {
                self.chunks.insert(chunks.end, Entry::Full(until));
            }
            removed += (until.min(chunks.end) - chunks.start) as u64 * CHUNK as u64;
        }
        let inside: Vec<i64> = self.chunks.range(chunks.clone()).map(|(&k, _)| k).collect();
        for k in inside {
            match self.chunks.remove(&k) {
                Some(Entry::Full(until)) => {
                    if until > chunks.end {
                        self.chunks.insert(chunks.end, Entry::Full(until));
                    }
                    removed += (until.min(chunks.end) - k) as u64 * CHUNK as u64;
                }
                Some(Entry::Part(c)) => removed += u64::from(c.count),
                None => {}
            }
        }
        removed
    }

    /// Adds the `Full` run `chunks` (nothing may be in it), merged with touching runs.
    fn put_full(&mut self, chunks: Range<i64>) {
        let (mut start, mut end) = (chunks.start, chunks.end);
        if let Some((&k, Entry::Full(until))) = self.chunks.range(..start).next_back()
            && *until >= start
        {
            start = k;
        }
        if let Some(Entry::Full(until)) = self.chunks.get(&end) {
            let until = *until;
            self.chunks.remove(&end);
            end = until;
        }
        self.chunks.insert(start, Entry::Full(end));
    }

    /// The set's pieces — whole-chunk runs and container runs, not merged across chunk
    /// boundaries — ascending, from the one holding `offset` (clipped to start there) or
    /// the next. Lazy.
    fn pieces_from(&self, offset: Offset) -> impl Iterator<Item = Range<Offset>> + '_ {
        let chunk = chunk_of(offset);
        let from = self.full_run(chunk).map_or(chunk, |(k, _)| k);
        self.chunks
            .range(from..)
            .flat_map(move |(&k, entry)| {
                let (full, runs) = match entry {
                    Entry::Full(until) => (Some(chunk_start(k)..chunk_end(until - 1)), None),
                    Entry::Part(c) => {
                        let base = chunk_start(k);
                        let p = if k == chunk { pos_of(offset) } else { 0 };
                        let runs = c
                            .runs_from(p)
                            .map(move |(f, l)| base + i64::from(f)..base + i64::from(l) + 1);
                        (None, Some(runs))
                    }
                };
                full.into_iter().chain(runs.into_iter().flatten())
            })
            .filter(move |r| r.end > offset)
            .map(move |r| r.start.max(offset)..r.end)
    }

    /// Maximal ranges, ascending, from the one holding `offset` (clipped to start there) or
    /// the next.
    fn ranges_from(&self, offset: Offset) -> impl Iterator<Item = Range<Offset>> + '_ {
        let mut pieces = self.pieces_from(offset).peekable();
        std::iter::from_fn(move || {
            let mut range = pieces.next()?;
            while let Some(next) = pieces.next_if(|p| p.start == range.end) {
                range.end = next.end;
            }
            Some(range)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn touching_ranges_merge_into_one_range() {
        let mut set = RangeSet::new();
        assert_eq!(set.insert(0..5), 5);
        assert_eq!(set.insert(10..15), 5);
        assert_eq!(set.insert(5..10), 5);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..15]);
        assert_eq!(set.range_count(), 1);
        assert_eq!(set.len(), 15);
    }

    #[test]
    fn removing_the_middle_splits_a_range() {
        let mut set = RangeSet::from_range(0..10);
        assert_eq!(set.remove(3..5), 2);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..3, 5..10]);
        assert_eq!(set.first_at_or_after(3), Some(5));
        assert_eq!(set.intersection(2..7), vec![2..3, 5..7]);
    }

    #[test]
    fn a_long_run_is_one_entry_and_fragments_become_a_bitmap() {
        let mut set = RangeSet::from_range(3..1_000_000 * CHUNK + 5);
        assert_eq!(
            set.chunks.len(),
            3,
            "the two ends and one run of whole chunks"
        );
        assert_eq!(set.range_count(), 1);
        // Every other offset of one chunk removed: more runs than a bitmap is worth.
        for o in (CHUNK * 7..CHUNK * 8).step_by(2) {
            set.remove(o..o + 1);
        }
        assert!(matches!(
            &set.chunks[&7],
            Entry::Part(Container {
                kind: Kind::Bits(_),
                ..
            })
        ));
        assert_eq!(
            set.len(),
            (1_000_000 * CHUNK + 2) as u64 - (CHUNK / 2) as u64
        );
        assert_eq!(set.first_at_or_after(CHUNK * 7), Some(CHUNK * 7 + 1));
        assert!(!set.contains(CHUNK * 7 + 2) && set.contains(CHUNK * 7 + 3));
        assert_eq!(set.last(), Some(CHUNK * 8 - 1..1_000_000 * CHUNK + 5));
        // Filled in again: whole once more.
        set.insert(CHUNK * 7..CHUNK * 8);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![3..1_000_000 * CHUNK + 5]
        );
        assert_eq!(set.chunks.len(), 3);
    }

    #[test]
    fn the_ends_of_the_offsets_are_handled() {
        let mut set = RangeSet::from_range(Offset::MAX - 3 * CHUNK..Offset::MAX);
        assert_eq!(set.len(), 3 * CHUNK as u64);
        assert_eq!(set.last(), Some(Offset::MAX - 3 * CHUNK..Offset::MAX));
        set.insert(Offset::MIN..Offset::MIN + 2);
        assert_eq!(set.first(), Some(Offset::MIN..Offset::MIN + 2));
        assert_eq!(set.remove(Offset::MIN..Offset::MAX), 3 * CHUNK as u64 + 2);
        assert!(set.is_empty());
    }

    fn check_against(set: &RangeSet, model: &BTreeSet<Offset>) -> Result<(), TestCaseError> {
        prop_assert_eq!(set.len(), model.len() as u64);
        let ranges: Vec<_> = set.iter().collect();
        for pair in ranges.windows(2) {
            prop_assert!(pair[0].end < pair[1].start, "touching ranges {:?}", pair);
        }
        let flat: BTreeSet<Offset> = ranges.iter().cloned().flatten().collect();
        prop_assert_eq!(&flat, model);
        prop_assert_eq!(set.first(), ranges.first().cloned());
        prop_assert_eq!(set.last(), ranges.last().cloned());
        let mut prev_end: Option<(i64, bool)> = None;
        for (&k, entry) in &set.chunks {
            if let Some((end, was_full)) = prev_end {
                prop_assert!(k >= end, "entries overlap at {}", k);
                let touching_full = was_full && k == end && matches!(entry, Entry::Full(_));
                prop_assert!(!touching_full, "touching full runs at {}", k);
            }
            match entry {
                Entry::Full(until) => {
                    prop_assert!(*until > k);
                    prev_end = Some((*until, true));
                }
                Entry::Part(container) => {
                    prop_assert!(container.count > 0 && i64::from(container.count) < CHUNK);
                    let n: u32 = container
                        .runs()
                        .iter()
                        .map(|&(f, l)| u32::from(l) + 1 - u32::from(f))
                        .sum();
                    prop_assert_eq!(n, container.count);
                    prev_end = Some((k + 1, false));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn behaves_like_a_set_of_offsets(
            ops in proptest::collection::vec((any::<bool>(), 0i64..300, 0i64..70), 0..80),
            probes in proptest::collection::vec(0i64..400, 1..8),
        ) {
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            for (add, start, len) in ops {
                let range = start..start + len;
                if add {
                    let n = range.clone().filter(|o| model.insert(*o)).count();
                    prop_assert_eq!(set.insert(range), n as u64);
                } else {
                    let n = range.clone().filter(|o| model.remove(o)).count();
                    prop_assert_eq!(set.remove(range), n as u64);
                }
                check_against(&set, &model)?;
            }
            for &probe in &probes {
                prop_assert_eq!(set.contains(probe), model.contains(&probe));
                prop_assert_eq!(set.first_at_or_after(probe), model.range(probe..).next().copied());
                let window = probe..probe + 37;
                let flat: BTreeSet<Offset> = set.intersection(window.clone()).into_iter().flatten().collect();
                let want: BTreeSet<Offset> = model.range(window).copied().collect();
                prop_assert_eq!(flat, want);
            }
            let probe = probes[0];
            set.remove_below(probe);
            model.retain(|o| *o >= probe);
            check_against(&set, &model)?;
        }
    }
}
