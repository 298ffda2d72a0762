//! The in-flight messages: who holds each, until when, and how often it was delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use common::{Offset, TimestampMs};

use crate::ConsumerId;

/// One acquired message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub consumer: ConsumerId,
    pub deadline_ms: TimestampMs,
    pub delivery_count: u32,
}

/// Every lease, indexed three ways: by offset (acks, ordered scans), by deadline (expiry,
/// the next timer) and by consumer (release on disconnect, prefetch counts).
///
/// Memory per in-flight message: one `by_offset` entry (8-byte key + 24-byte value), one
/// `by_deadline` entry (16 bytes) and one `by_consumer` entry (8 bytes), each inside a
/// B-tree node (roughly 1.5–2× the payload): about 100–130 bytes.
///
/// Invariant: the three indexes hold exactly the same offsets; `by_deadline` holds
/// `(lease.deadline_ms, offset)` and `by_consumer[c]` the offsets leased to `c` (no empty
/// sets are kept).
#[derive(Clone, Debug, Default)]
pub struct Leases {
    by_offset: BTreeMap<Offset, Lease>,
    by_deadline: BTreeSet<(TimestampMs, Offset)>,
    by_consumer: BTreeMap<ConsumerId, BTreeSet<Offset>>,
}

impl Leases {
    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    pub fn get(&self, offset: Offset) -> Option<&Lease> {
        self.by_offset.get(&offset)
    }

    pub fn range(&self, range: Range<Offset>) -> impl Iterator<Item = (Offset, &Lease)> + '_ {
        self.by_offset.range(range).map(|(&o, l)| (o, l))
    }

    pub fn iter(&self) -> impl Iterator<Item = (Offset, &Lease)> + '_ {
        self.by_offset.iter().map(|(&o, l)| (o, l))
    }

    pub fn insert(&mut self, offset: Offset, lease: Lease) {
        let old = self.by_offset.insert(offset, lease);
        assert!(old.is_none(), "offset {offset} leased twice");
        self.by_deadline.insert((lease.deadline_ms, offset));
        self.by_consumer
            .entry(lease.consumer)
            .or_default()
            .insert(offset);
    }

    pub fn remove(&mut self, offset: Offset) -> Option<Lease> {
        let lease = self.by_offset.remove(&offset)?;
        self.by_deadline.remove(&(lease.deadline_ms, offset));
        if let Some(held) = self.by_consumer.get_mut(&lease.consumer) {
            held.remove(&offset);
            if held.is_empty() {
                self.by_consumer.remove(&lease.consumer);
            }
        }
        Some(lease)
    }

    /// Moves a lease's deadline; false if `offset` is not leased.
    pub fn set_deadline(&mut self, offset: Offset, deadline_ms: TimestampMs) -> bool {
        let Some(lease) = self.by_offset.get_mut(&offset) else {
            return false;
        };
        self.by_deadline.remove(&(lease.deadline_ms, offset));
        lease.deadline_ms = deadline_ms;
        self.by_deadline.insert((deadline_ms, offset));
        true
    }

    /// Offsets whose deadline is `<= now_ms`, ascending.
    pub fn due(&self, now_ms: TimestampMs) -> Vec<Offset> {
        let mut due: Vec<Offset> = self
            .by_deadline
            .range(..=(now_ms, Offset::MAX))
            .map(|&(_, o)| o)
            .collect();
        due.sort_unstable();
        due
    }

    pub fn next_deadline(&self) -> Option<TimestampMs> {
        self.by_deadline.first().map(|&(d, _)| d)
    }

    /// Offsets leased to `consumer`, ascending.
    pub fn held_by(&self, consumer: ConsumerId) -> Vec<Offset> {
        self.by_consumer
            .get(&consumer)
            .map(|held| held.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn count_held_by(&self, consumer: ConsumerId) -> usize {
        self.by_consumer.get(&consumer).map_or(0, BTreeSet::len)
    }

    pub fn consumer_count(&self) -> usize {
        self.by_consumer.len()
    }

    /// Removes and returns every lease below `offset`, ascending.
    pub fn remove_below(&mut self, offset: Offset) -> Vec<(Offset, Lease)> {
        let below: Vec<Offset> = self.by_offset.range(..offset).map(|(&o, _)| o).collect();
        below
            .into_iter()
            .filter_map(|o| self.remove(o).map(|l| (o, l)))
            .collect()
    }

    /// Checks the indexes agree (tests).
    pub fn check(&self) -> Result<(), String> {
        if self.by_deadline.len() != self.by_offset.len() {
            return Err("deadline index size differs".into());
        }
        let by_consumer: usize = self.by_consumer.values().map(BTreeSet::len).sum();
        if by_consumer != self.by_offset.len() {
            return Err("consumer index size differs".into());
        }
        for (&o, l) in &self.by_offset {
            if !self.by_deadline.contains(&(l.deadline_ms, o)) {
                return Err(format!("offset {o} missing from the deadline index"));
            }
            if !self
                .by_consumer
                .get(&l.consumer)
                .is_some_and(|s| s.contains(&o))
            {
                return Err(format!("offset {o} missing from the consumer index"));
            }
        }
        Ok(())
    }
}
