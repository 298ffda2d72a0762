//! Lookups by message key, message id and time range, and the re-indexing of commit-log
//! ranges they rely on when a hash-index file is damaged (or missing on open).
//!
//! Key and id lookups walk the store-wide hash index (`hash_index.rs`) and confirm every
//! candidate: the partition exists with its index on, the offset is live, the consume-queue
//! entry holding it is at the candidate's commit-log position, and the decoded record has the
//! key / id. So nothing deleted, expired, truncated, re-created or colliding is returned.
//! Time-range lookups need no file of their own: a binary search over the consume queue's
//! batch max timestamps, then decoding the matching region (guarantee in
//! `docs/storage-format.md` §Time-range lookup).

use std::collections::HashSet;

use common::{Offset, PartitionId, TimestampMs};

use crate::batch::BatchHeader;
use crate::entry::{self, ENTRY_HEADER_BYTES};
use crate::error::Result;
use crate::hash_index::{self, IndexKey, Walk};
use crate::records;
use crate::store::{Inner, Store, index_batch};

/// Receives a re-indexed batch: (partition, commit-log position, base offset, keys).
pub type IndexSink<'a> = dyn FnMut(PartitionId, u64, i64, &[IndexKey]) + 'a;

/// How many damaged index files one lookup rebuilds before giving up on the index.
const MAX_REPAIRS_PER_LOOKUP: usize = 4;

impl Store {
    /// Offsets of live records of `p` whose key is `key`, ascending (empty if the
    /// partition's index is off). Candidates come from the hash index and are confirmed by
    /// decoding their batch, so a hash collision never returns a wrong record.
    pub fn lookup_key(&self, p: PartitionId, key: &[u8]) -> Result<Vec<Offset>> {
        let hits = self.inner.lookup_hashed(hash_index::KIND_KEY, key, &[p])?;
        Ok(hits.into_iter().map(|(_, o)| o).collect())
    }

    /// [`Store::lookup_key`] over a set of partitions (a topic): `(partition, offset)` pairs
    /// ascending. Unknown partitions are an error; partitions whose index is off add nothing.
    pub fn lookup_keys(
        &self,
        partitions: &[PartitionId],
        key: &[u8],
    ) -> Result<Vec<(PartitionId, Offset)>> {
        self.inner
            .lookup_hashed(hash_index::KIND_KEY, key, partitions)
    }

    /// Live records of `partitions` whose message-id header (`StoreConfig::message_id_header`)
    /// has the value `id`: `(partition, offset)` pairs ascending. Empty when ids are not
    /// indexed. (A message is also addressed by its `(partition, offset)` without an index.)
    pub fn lookup_message_id(
        &self,
        partitions: &[PartitionId],
        id: &[u8],
    ) -> Result<Vec<(PartitionId, Offset)>> {
        if self.inner.cfg.message_id_header.is_none() {
            return Ok(Vec::new());
        }
        self.inner
            .lookup_hashed(hash_index::KIND_ID, id, partitions)
    }

    /// Offsets of live records of `p` with `from <= timestamp <= to`, ascending (empty if the
    /// partition's index is off). Finds the start by binary search over the consume queue's
    /// batch max timestamps and decodes only the region from there to the second of two
    /// consecutive batches wholly later than `to`: exact over that window, which holds every
    /// match whenever timestamp disorder stays within a batch and its neighbours (see
    /// `docs/storage-format.md` §Time-range lookup).
    pub fn lookup_time_range(
        &self,
        p: PartitionId,
        from: TimestampMs,
        to: TimestampMs,
    ) -> Result<Vec<Offset>> {
        let inner = &self.inner;
        let part = inner.partition(p)?;
        inner.expire_head(p, &part)?;
        let (lo, hi, on) = {
            let g = part.lock();
            (g.cq_start, g.cq_end, g.cfg.index)
        };
        if !on || from > to {
            return Ok(Vec::new());
        }
        let max_ts = |i: u64| -> Result<Option<i64>> {
            Ok(inner
                .files
                .cq_entries(p, &part, i, 1)?
                .first()
                .map(|e| e.max_timestamp))
        };
        // First entry whose max is >= from, treating the maxima as ascending.
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let mid = a + (b - a) / 2;
            match max_ts(mid)? {
                Some(t) if t >= from => b = mid,
                // Below `from`, or gone to retention meanwhile: the start is later.
                _ => a = mid + 1,
            }
        }
        // Step back over earlier batches that may still hold matches: with disorder
        // confined to neighbouring batches, a batch before `a` whose max is >= from has
        // such a batch at `a-1` or `a-2`.
        loop {
            if a > lo && max_ts(a - 1)?.is_some_and(|t| t >= from) {
                a -= 1;
            } else if a > lo + 1 && max_ts(a - 2)?.is_some_and(|t| t >= from) {
                a -= 2;
            } else {
                break;
            }
        }
        let cap = inner.cfg.max_decompressed_batch_bytes;
        let mut out = Vec::new();
        let mut i = a;
        // Consecutive batches whose records are all later than `to`; two end the scan.
        let mut later = 0;
        'pages: loop {
            let page = inner.files.cq_entries(p, &part, i, 64)?;
            if page.is_empty() {
                break;
            }
            let (log_start, log_end) = {
                let g = part.lock();
                (g.log_start, g.log_end)
            };
            for e in &page {
                later = match self.records_in_range(
                    p,
                    e,
                    from,
                    to,
                    (log_start, log_end),
                    cap,
                    &mut out,
                ) {
                    Some(min_ts) if min_ts > to => later + 1,
                    _ => 0,
                };
                if later == 2 {
                    break 'pages;
                }
            }
            i += page.len() as u64;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

impl Store {
    /// Pushes the live offsets of the batch of `e` whose record timestamps are in
    /// `[from, to]`; returns the batch's smallest record timestamp (`None`: not decoded,
    /// because its max is below `from` or it cannot be read — damaged data is never served).
    #[allow(clippy::too_many_arguments)]
    fn records_in_range(
        &self,
        p: PartitionId,
        e: &crate::consume_queue::CqEntry,
        from: TimestampMs,
        to: TimestampMs,
        (log_start, log_end): (Offset, Offset),
        cap: usize,
        out: &mut Vec<Offset>,
    ) -> Option<i64> {
        if e.max_timestamp < from {
            return None;
        }
        let bytes = self.inner.load_batch(p, e).ok()?;
        let h = BatchHeader::parse(&bytes).ok()?;
        let data = records::records_bytes(&h, cap).ok()?;
        let mut min_ts = i64::MAX;
        records::for_each_record(&h, &data, |r| {
            min_ts = min_ts.min(r.timestamp);
            let off = h.base_offset() + r.offset_delta as i64;
            if r.timestamp >= from && r.timestamp <= to && off >= log_start && off < log_end {
                out.push(off);
            }
        })
        .ok()?;
        Some(min_ts)
    }
}

impl Inner {
    /// Key / id lookup over `partitions`: walk the hash index, then confirm.
    pub fn lookup_hashed(
        &self,
        kind: u8,
        value: &[u8],
        partitions: &[PartitionId],
    ) -> Result<Vec<(PartitionId, Offset)>> {
        let mut want = HashSet::new();
        for &p in partitions {
            let part = self.partition(p)?;
            self.expire_head(p, &part)?;
            if part.lock().cfg.index {
                want.insert(p);
            }
        }
        if want.is_empty() {
            return Ok(Vec::new());
        }
        let h = hash_index::hash(kind, value);
        let mut repairs = 0;
        let mut cands = loop {
            match self.hindex.walk(kind, h, &|p| want.contains(&p))? {
                Walk::Found(v) => break v,
                Walk::Damaged(seq) if repairs < MAX_REPAIRS_PER_LOOKUP => {
                    repairs += 1;
                    self.repair_hash_index(seq)?;
                }
                Walk::Damaged(seq) => {
                    tracing::error!(seq, "hash index still damaged after rebuilds");
                    break Vec::new();
                }
            }
        };
        cands.sort_unstable_by_key(|e| (e.partition, e.position, e.offset));
        cands.dedup_by_key(|e| (e.partition, e.position, e.offset));
        let mut out = Vec::new();
        for group in cands.chunk_by(|a, b| (a.partition, a.position) == (b.partition, b.position)) {
            // After a truncation a position can hold stale entries (old offsets) next to
            // live ones: the batch is confirmed once, through any offset live there.
            let (p, position) = (group[0].partition, group[0].position);
            for e in group {
                if self.confirm(p, position, e.offset, kind, value, &mut out)? {
                    break;
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Adds to `out` the live records of the batch at `position` in `p` (a candidate said
    /// `offset` is in it) whose key / id is `value`. False when `offset` is not live in a
    /// batch at `position` (a stale candidate: truncated, or a re-created partition).
    fn confirm(
        &self,
        p: PartitionId,
        position: u64,
        offset: Offset,
        kind: u8,
        value: &[u8],
        out: &mut Vec<(PartitionId, Offset)>,
    ) -> Result<bool> {
        // These checks come before anything is loaded: a candidate of a deleted partition
        // or below the log start may point into a run the cleaner freed (`cleaner.rs`),
        // which must be dropped, not loaded and reported as damage.
        let Ok(part) = self.partition(p) else {
            return Ok(false); // deleted since
        };
        let (log_start, log_end) = {
            let g = part.lock();
            (g.log_start, g.log_end)
        };
        if offset < log_start || offset >= log_end {
            return Ok(false);
        }
        let Some(i) = self.files.find(p, &part, offset)? else {
            return Ok(false);
        };
        let Some(e) = self.files.cq_entries(p, &part, i, 1)?.first().copied() else {
            return Ok(false);
        };
        if e.position != position || offset < e.base_offset || offset >= e.next_offset() {
            return Ok(false);
        }
        // Damaged data is never served: such a batch confirms nothing.
        let Ok(bytes) = self.load_batch(p, &e) else {
            return Ok(true);
        };
        let Ok(h) = BatchHeader::parse(&bytes) else {
            return Ok(true);
        };
        let Ok(data) = records::records_bytes(&h, self.cfg.max_decompressed_batch_bytes) else {
            return Ok(true);
        };
        let id_header = self.cfg.message_id_header.as_deref();
        let _ = records::for_each_record_with_id(&h, &data, id_header, |r, id| {
            let got = if kind == hash_index::KIND_KEY {
                r.key
            } else {
                id
            };
            let off = h.base_offset() + r.offset_delta as i64;
            if got == Some(value) && off >= log_start && off < log_end {
                out.push((p, off));
            }
        });
        Ok(true)
    }

    /// Rebuilds damaged hash-index file `seq` from the commit log.
    pub fn repair_hash_index(&self, seq: u64) -> Result<()> {
        tracing::warn!(
            seq,
            "hash index file damaged; rebuilding it from the commit log"
        );
        if self.hindex.is_active(seq) {
            let w = self.log.lock_writer();
            if !self.hindex.is_active(seq) {
                return Ok(()); // rolled meanwhile: the next walk finds it sealed
            }
            let from = self.hindex.reset_active()?;
            let to = w.pos;
            self.reindex_range(from, to, &mut |p, pos, base, keys| {
                self.hindex.add(p, pos, base, keys)
            });
            drop(w);
            return self.hindex.sync();
        }
        let Some((from, to)) = self.hindex.sealed_range(seq) else {
            return Ok(()); // deleted meanwhile
        };
        let mut b = self.hindex.builder(seq, from)?;
        // `to` inclusive: the batch starting there may have records in this file.
        let end = to.saturating_add(1);
        self.reindex_range(from, end, &mut |p, pos, base, keys| {
            b.add(p, pos, base, keys)
        });
        self.hindex.install(b)
    }

    /// Decodes the commit-log entries in `[from, to)` of partitions whose index is on and
    /// passes each batch's index keys to `sink(partition, position, base offset, keys)`.
    /// Entries failing their CRC, padding entries and deleted segments are skipped.
    pub fn reindex_range(&self, from: u64, to: u64, sink: &mut IndexSink<'_>) {
        let cap = self.cfg.max_decompressed_batch_bytes;
        let id_header = self.cfg.message_id_header.as_deref();
        let mut pos = from;
        while pos < to {
            let seg = match self.log.segment_at(pos) {
                Some(s) => s,
                None => match self.log.segment_from(pos) {
                    Some(s) => {
                        pos = s.base;
                        continue;
                    }
                    None => return,
                },
            };
            let bytes = &seg.bytes()[(pos - seg.base) as usize..];
            if let Some(span) = entry::padding_span(bytes) {
                pos += span; // dead entries the cleaner freed (`cleaner.rs`)
                continue;
            }
            let Ok(h) = entry::check_header(bytes) else {
                pos = seg.end(); // the rest of this segment is unused
                continue;
            };
            let index_on = |p: &PartitionId| {
                self.parts
                    .read()
                    .get(p)
                    .is_some_and(|part| part.lock().cfg.index)
            };
            let body = &bytes[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + h.batch_len as usize];
            if let Ok(b) = BatchHeader::parse(body) {
                // A shared entry is in each of its partitions at its own offset.
                let mut holders = vec![(h.partition, b.base_offset())];
                holders.extend(h.others(bytes));
                holders.retain(|(p, _)| index_on(p));
                if !holders.is_empty()
                    && entry::check(bytes).is_ok()
                    && let Ok(keys) = index_batch(body, cap, id_header)
                {
                    for (p, base) in holders {
                        sink(p, pos, base, &keys);
                    }
                }
            }
            pos += h.span();
        }
    }
}
