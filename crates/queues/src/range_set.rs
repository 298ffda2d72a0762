//! A set of offsets stored as disjoint half-open ranges.

use std::collections::BTreeMap;
use std::ops::Range;

use common::Offset;

/// A set of offsets kept as disjoint, non-touching half-open ranges `start..end` in a
/// `BTreeMap<start, end>`: a run of any length costs one map entry (about 40 bytes with the
/// B-tree's overhead). `len` (the number of offsets) is kept up to date so counts are O(1).
///
/// Invariant: no two stored ranges overlap or touch (`a.end < b.start` for neighbours), and
/// every stored range is non-empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: BTreeMap<Offset, Offset>,
    len: u64,
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
        self.ranges.is_empty()
    }

    /// The number of offsets in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The number of stored ranges (the memory this set costs).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The ranges in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = Range<Offset>> + '_ {
        self.ranges.iter().map(|(&start, &end)| start..end)
    }

    pub fn first(&self) -> Option<Range<Offset>> {
        self.ranges
            .first_key_value()
            .map(|(&start, &end)| start..end)
    }

    pub fn last(&self) -> Option<Range<Offset>> {
        self.ranges
            .last_key_value()
            .map(|(&start, &end)| start..end)
    }

    pub fn contains(&self, offset: Offset) -> bool {
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &end)| offset < end)
    }

    /// The smallest member `>= offset`.
    pub fn first_at_or_after(&self, offset: Offset) -> Option<Offset> {
        if self.contains(offset) {
            return Some(offset);
        }
        self.ranges.range(offset..).next().map(|(&start, _)| start)
    }

    /// Adds `range`; returns how many offsets were not already members.
    pub fn insert(&mut self, range: Range<Offset>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let before = self.len;
        let (mut start, mut end) = (range.start, range.end);
        // A predecessor that overlaps or touches absorbs the new range.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            self.take(s);
            start = s;
            end = end.max(e);
        }
        // Successors starting inside (or touching) the merged range are absorbed too.
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            self.take(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        self.len += end.abs_diff(start);
        self.len - before
    }

    /// Removes `range`; returns how many offsets were members.
    pub fn remove(&mut self, range: Range<Offset>) -> u64 {
        if range.is_empty() {
            return 0;
        }
        let before = self.len;
        // A predecessor that straddles `range.start` is cut in two.
        if let Some((&s, &e)) = self.ranges.range(..range.start).next_back()
            && e > range.start
        {
            self.take(s);
            self.put(s, range.start);
            if e > range.end {
                self.put(range.end, e);
            }
        }
        while let Some((&s, &e)) = self.ranges.range(range.clone()).next() {
            self.take(s);
            if e > range.end {
                self.put(range.end, e);
            }
        }
        before - self.len
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
        let mut out = Vec::new();
        if range.is_empty() {
            return out;
        }
        if let Some((_, &e)) = self.ranges.range(..range.start).next_back()
            && e > range.start
        {
            out.push(range.start..e.min(range.end));
        }
        for (&s, &e) in self.ranges.range(range.clone()) {
            out.push(s..e.min(range.end));
        }
        out
    }

    fn take(&mut self, start: Offset) {
        if let Some(end) = self.ranges.remove(&start) {
            self.len -= end.abs_diff(start);
        }
    }

    fn put(&mut self, start: Offset, end: Offset) {
        debug_assert!(start < end);
        self.ranges.insert(start, end);
        self.len += end.abs_diff(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn touching_ranges_merge_into_one_entry() {
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

    proptest! {
        #[test]
        fn behaves_like_a_set_of_offsets(
            ops in proptest::collection::vec((any::<bool>(), 0i64..60, 0i64..12), 0..60),
            probe in 0i64..80,
        ) {
            let mut set = RangeSet::new();
            let mut model = BTreeSet::new();
            for (add, start, len) in ops {
                let range = start..start + len;
                let changed = if add {
                    let n = range.clone().filter(|o| model.insert(*o)).count();
                    prop_assert_eq!(set.insert(range), n as u64);
                    n
                } else {
                    let n = range.clone().filter(|o| model.remove(o)).count();
                    prop_assert_eq!(set.remove(range), n as u64);
                    n
                };
                let _ = changed;
                prop_assert_eq!(set.len(), model.len() as u64);
                let ranges: Vec<_> = set.iter().collect();
                for pair in ranges.windows(2) {
                    prop_assert!(pair[0].end < pair[1].start, "touching ranges {:?}", pair);
                }
                let flat: BTreeSet<Offset> = ranges.into_iter().flatten().collect();
                prop_assert_eq!(&flat, &model);
            }
            prop_assert_eq!(set.first_at_or_after(probe), model.range(probe..).next().copied());
            set.remove_below(probe);
            model.retain(|o| *o >= probe);
            prop_assert_eq!(set.len(), model.len() as u64);
        }
    }
}
