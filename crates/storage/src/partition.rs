//! In-memory state of one partition and the lookups over its consume queue.
//!
//! Invariants (hold whenever the partition mutex is released):
//! - consume-queue entries `[cq_start, cq_end)` are live; entries `[cq_start, cq_flushed)` are
//!   in the `.cq` files, `[cq_flushed, cq_end)` are `cq_pending` (not yet written back);
//! - entry `i+1`'s `base_offset` = entry `i`'s `next_offset()`; `log_end` = last entry's
//!   `next_offset()` (or the value kept when the queue is empty);
//! - `log_start` lies in entry `cq_start` (or equals `log_end` when `cq_start == cq_end`);
//!
//! Key / message-id entries are not here: they are store-wide (`hash_index.rs`).
//! An idle partition holds no file descriptor and an empty vector: ~200 bytes.
//!
//! A consume-queue entry failing its CRC on read is rebuilt from the commit log
//! ([`QueueFiles::repair`]) and written back; the read goes on.

use std::path::PathBuf;
use std::sync::Arc;

use common::{Offset, PartitionId, TimestampMs};
use parking_lot::Mutex;

use crate::batch::BatchHeader;
use crate::commit_log::CommitLog;
use crate::config::PartitionConfig;
use crate::consume_queue::{self, CQ_ENTRY_BYTES, CqEntry};
use crate::entry::{self, ENTRY_HEADER_BYTES};
use crate::error::{Result, StorageError};
use crate::file_cache::FileCache;
use crate::fixed_files::FixedFiles;

#[derive(Debug, Clone)]
pub struct Partition {
    pub cfg: PartitionConfig,
    pub deleted: bool,
    pub log_start: Offset,
    pub log_end: Offset,
    pub cq_start: u64,
    pub cq_end: u64,
    pub cq_flushed: u64,
    pub cq_pending: Vec<CqEntry>,
    /// Largest batch max timestamp seen and the base offset of that batch (-1: none).
    pub max_ts: TimestampMs,
    pub max_ts_offset: Offset,
    /// Commit-log position of entry `cq_start`, `u64::MAX` when the queue is empty;
    /// segments wholly below the minimum over partitions can be deleted.
    pub start_pos: u64,
    /// Sum of `batch_len` over live entries (for `retention_bytes`).
    pub bytes: u64,
    /// Max timestamp of entry `cq_start` (`i64::MIN`: unknown), so the read-time retention
    /// check is one comparison.
    pub head_max_ts: i64,
    /// Queue files below this entry index have been deleted.
    pub cq_trimmed: u64,
    /// Log compaction (`compaction.rs`): the partition's entries below this commit-log
    /// position are copies (from `start_pos` on), its appends are at or above it; 0 when
    /// it was never compacted.
    pub copy_hi: u64,
    /// Offset below which the partition is compacted (Kafka's cleaner checkpoint): the
    /// dirty part starts here. In memory only (a restart compacts once more).
    pub clean_end: i64,
    /// Earliest delete horizon of a tombstone or transaction marker the last pass kept:
    /// once it passes, the partition is due again though nothing new is dirty (`i64::MAX`:
    /// none).
    pub next_horizon: i64,
}

impl Partition {
    pub fn new(cfg: PartitionConfig) -> Partition {
        Partition {
            cfg,
            deleted: false,
            log_start: 0,
            log_end: 0,
            cq_start: 0,
            cq_end: 0,
            cq_flushed: 0,
            cq_pending: Vec::new(),
            max_ts: -1,
            max_ts_offset: -1,
            start_pos: u64::MAX,
            bytes: 0,
            cq_trimmed: 0,
            head_max_ts: i64::MIN,
            copy_hi: 0,
            clean_end: 0,
            next_horizon: i64::MAX,
        }
    }

    /// Records an appended batch (already in the commit log).
    pub fn push(&mut self, e: CqEntry) {
        // lib.rs invariants: slots in commit-log position order, offsets dense.
        debug_assert!(
            self.cq_pending
                .last()
                .is_none_or(|last| e.position > last.position),
            "queue slot at log position {} after one at {:?}",
            e.position,
            self.cq_pending.last().map(|l| l.position)
        );
        debug_assert!(
            self.cq_start == self.cq_end || e.base_offset == self.log_end,
            "queue slot for offset {} after log end {}",
            e.base_offset,
            self.log_end
        );
        if self.cq_start == self.cq_end {
            self.start_pos = e.position;
            self.head_max_ts = e.max_timestamp;
            self.log_start = self.log_start.max(e.base_offset);
        }
        self.cq_pending.push(e);
        self.cq_end += 1;
        self.log_end = e.next_offset();
        self.bytes += e.batch_len as u64;
        if e.max_timestamp > self.max_ts {
            self.max_ts = e.max_timestamp;
            self.max_ts_offset = e.base_offset;
        }
    }
}

/// Where a partition's files live and how they are split; shared by every partition.
pub struct QueueFiles {
    pub root: PathBuf,
    pub cache: FileCache,
    pub cq: FixedFiles,
    /// The source of truth damaged queue entries are rebuilt from.
    pub log: Arc<CommitLog>,
}

impl QueueFiles {
    pub fn new(root: PathBuf, per_file: u64, max_open: usize, log: Arc<CommitLog>) -> QueueFiles {
        QueueFiles {
            root,
            cache: FileCache::new(max_open),
            cq: consume_queue::files(per_file),
            log,
        }
    }

    pub fn dir(&self, p: PartitionId) -> PathBuf {
        self.root.join(p.0.to_string())
    }

    fn corrupt(p: PartitionId, i: u64) -> StorageError {
        StorageError::Format {
            path: PathBuf::from(format!("queues/{}", p.0)),
            reason: format!("consume-queue entry {i} fails its CRC"),
        }
    }

    /// Live consume-queue entries `[i, i+n)` clipped to what exists. Takes the partition lock
    /// only to copy in-memory entries; file reads happen without it, so a cold page never
    /// stalls an append.
    pub fn cq_entries(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        i: u64,
        n: u64,
    ) -> Result<Vec<CqEntry>> {
        let (flushed, end, head) = {
            let g = part.lock();
            if i < g.cq_start || i >= g.cq_end {
                return Ok(Vec::new());
            }
            let end = (i + n).min(g.cq_end);
            if i >= g.cq_flushed {
                let a = (i - g.cq_flushed) as usize;
                let b = (end - g.cq_flushed) as usize;
                return Ok(g.cq_pending[a..b].to_vec());
            }
            (g.cq_flushed, end, (g.cq_start, g.start_pos, g.copy_hi))
        };
        let file_end = end.min(flushed);
        let mut out = self.read_cq_files(p, i, file_end - i, head)?;
        if out.len() as u64 == file_end - i && end > file_end {
            // Continue into the in-memory tail (it may have been written back meanwhile).
            out.extend(self.cq_entries(p, part, file_end, end - file_end)?);
        }
        Ok(out)
    }

    /// Same as [`QueueFiles::cq_entries`] but with the partition already locked.
    pub fn cq_entries_locked(
        &self,
        p: PartitionId,
        g: &Partition,
        i: u64,
        n: u64,
    ) -> Result<Vec<CqEntry>> {
        if i < g.cq_start || i >= g.cq_end {
            return Ok(Vec::new());
        }
        let end = (i + n).min(g.cq_end);
        let mut out = Vec::new();
        if i < g.cq_flushed {
            let head = (g.cq_start, g.start_pos, g.copy_hi);
            out = self.read_cq_files(p, i, end.min(g.cq_flushed) - i, head)?;
        }
        if end > g.cq_flushed {
            let a = i.max(g.cq_flushed) - g.cq_flushed;
            let b = end - g.cq_flushed;
            out.extend_from_slice(&g.cq_pending[a as usize..b as usize]);
        }
        Ok(out)
    }

    /// Entries `[i, i+n)` from the files; `head` = (first live entry, its commit-log
    /// position, the partition's copy range end), for repairs.
    fn read_cq_files(
        &self,
        p: PartitionId,
        i: u64,
        n: u64,
        head: (u64, u64, u64),
    ) -> Result<Vec<CqEntry>> {
        let raw = self.cq.read(&self.cache, &self.dir(p), i, n)?;
        let mut out: Vec<CqEntry> = Vec::with_capacity(raw.len() / CQ_ENTRY_BYTES);
        for (k, b) in raw.chunks_exact(CQ_ENTRY_BYTES).enumerate() {
            let j = i + k as u64;
            let e = match CqEntry::decode(b) {
                Some(e) => e,
                None => {
                    let prev = match out.last() {
                        Some(e) => Some(*e),
                        None if j > head.0 => {
                            self.read_cq_files(p, j - 1, 1, head)?.first().copied()
                        }
                        None => None,
                    };
                    self.repair(p, j, prev, head)?
                }
            };
            out.push(e);
        }
        Ok(out)
    }

    /// Rebuilds consume-queue entry `j` of `p` from the commit log (its CRC failed): it is
    /// the first entry of `p` after entry `j-1` (`prev`), or at the partition's first live
    /// position when `j` is its first live entry (a copy when below the partition's copy
    /// range end, an append from there on: `compaction.rs`). Writes it back; fails with
    /// `Format` if the commit log does not hold it.
    fn repair(
        &self,
        p: PartitionId,
        j: u64,
        prev: Option<CqEntry>,
        head: (u64, u64, u64),
    ) -> Result<CqEntry> {
        let (mut pos, want_base) = match prev {
            Some(e) => {
                // Past the whole entry (a shared entry's trailer included).
                let trailer = self.log.segment_at(e.position).map_or(0, |s| {
                    entry::trailer_len(&s.bytes()[(e.position - s.base) as usize..])
                });
                let end = e.position + (ENTRY_HEADER_BYTES + trailer) as u64 + e.batch_len as u64;
                (end, Some(e.next_offset()))
            }
            None if j == head.0 && head.1 != u64::MAX => (head.1, None),
            None => return Err(Self::corrupt(p, j)),
        };
        let found = loop {
            let seg = match self.log.segment_at(pos) {
                Some(s) => s,
                None => match self.log.segment_from(pos) {
                    Some(s) => {
                        pos = s.base;
                        continue;
                    }
                    None => break None,
                },
            };
            let bytes = &seg.bytes()[(pos - seg.base) as usize..];
            if let Some(span) = entry::padding_span(bytes) {
                pos += span; // dead entries the cleaner freed (`cleaner.rs`)
                continue;
            }
            let Ok(h) = entry::check_header(bytes) else {
                // End of this segment's data: the writer rolled to the next one.
                match self.log.segment_from(seg.end()) {
                    Some(next) => {
                        pos = next.base;
                        continue;
                    }
                    None => break None,
                }
            };
            let body = &bytes[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + h.batch_len as usize];
            let current = if h.copy {
                // A copy of the current pass, not its commit marker.
                pos < head.2 && crate::compaction::commit_marker_of(body).is_none()
            } else {
                pos >= head.2
            };
            // A shared entry may hold `p` too, at its own offset (`entry.rs`).
            let held = BatchHeader::parse(body)
                .ok()
                .and_then(|b| Some((h.offset_in(bytes, p, b.base_offset())?, b)));
            if let Some((base_offset, b)) = held.filter(|_| current) {
                break Some(CqEntry {
                    position: pos,
                    batch_len: h.batch_len,
                    offset_span: b.last_offset_delta().max(0) as u32 + 1,
                    base_offset,
                    max_timestamp: b.max_timestamp(),
                    filter_bits: 0,
                });
            }
            pos += h.span();
        };
        // Offsets are dense but for the gaps compaction leaves between copies.
        let e = found
            .filter(|e| {
                want_base.is_none_or(|b| {
                    b == e.base_offset || (e.position < head.2 && b < e.base_offset)
                })
            })
            .ok_or_else(|| Self::corrupt(p, j))?;
        let mut b = Vec::with_capacity(CQ_ENTRY_BYTES);
        e.encode(&mut b);
        self.cq.write(&self.cache, &self.dir(p), j, &b)?;
        tracing::warn!(partition = %p, entry = j, position = e.position, "consume-queue entry failed its CRC; rebuilt from the commit log");
        Ok(e)
    }

    /// Index of the live entry holding `offset`, or of the first entry after it when
    /// `offset` falls in a gap; `None` if no live entry is at or after `offset`.
    pub fn find(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        offset: Offset,
    ) -> Result<Option<u64>> {
        let (mut lo, mut hi) = {
            let g = part.lock();
            (g.cq_start, g.cq_end)
        };
        // Invariant: entries < lo end at or before `offset`; entries >= hi start after it.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(e) = self.cq_entries(p, part, mid, 1)?.first().copied() else {
                // Raced with retention/truncation: retry from the new bounds, if they moved.
                let g = part.lock();
                if g.cq_start >= hi || g.cq_end <= lo {
                    return Ok(None);
                }
                if g.cq_start <= lo && g.cq_end >= hi {
                    // Nothing moved, yet a live slot is missing from its file.
                    return Err(StorageError::Format {
                        path: self.dir(p),
                        reason: format!("consume-queue entry {mid} is missing"),
                    });
                }
                lo = lo.max(g.cq_start);
                hi = hi.min(g.cq_end);
                continue;
            };
            if e.next_offset() <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let g = part.lock();
        Ok((lo < g.cq_end).then_some(lo))
    }

    /// Like [`QueueFiles::find`] with the partition locked.
    pub fn find_locked(&self, p: PartitionId, g: &Partition, offset: Offset) -> Result<u64> {
        let (mut lo, mut hi) = (g.cq_start, g.cq_end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.cq_entries_locked(p, g, mid, 1)?;
            let e = e.first().ok_or_else(|| Self::corrupt(p, mid))?;
            if e.next_offset() <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// First live entry whose commit-log position is `>= pos` (entries are in position order).
    pub fn find_position_locked(&self, p: PartitionId, g: &Partition, pos: u64) -> Result<u64> {
        let (mut lo, mut hi) = (g.cq_start, g.cq_end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.cq_entries_locked(p, g, mid, 1)?;
            let e = e.first().ok_or_else(|| Self::corrupt(p, mid))?;
            if e.position < pos {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Writes back in-memory entries of one partition. Returns files touched.
    pub fn write_back(&self, p: PartitionId, part: &Arc<Mutex<Partition>>) -> Result<Vec<PathBuf>> {
        let (cq_at, cq_bytes, cq_n) = {
            let g = part.lock();
            if g.deleted || g.cq_pending.is_empty() {
                return Ok(Vec::new());
            }
            let mut cq = Vec::with_capacity(g.cq_pending.len() * CQ_ENTRY_BYTES);
            g.cq_pending.iter().for_each(|e| e.encode(&mut cq));
            (g.cq_flushed, cq, g.cq_pending.len())
        };
        let dir = self.dir(p);
        let touched = self.cq.write(&self.cache, &dir, cq_at, &cq_bytes)?;
        let mut g = part.lock();
        // Only drain what was written and is still there (truncate_to may have cut it).
        if g.cq_flushed == cq_at && g.cq_pending.len() >= cq_n {
            g.cq_pending.drain(..cq_n);
            g.cq_flushed += cq_n as u64;
        }
        if g.cq_pending.is_empty() {
            g.cq_pending = Vec::new();
        }
        Ok(touched)
    }
}
