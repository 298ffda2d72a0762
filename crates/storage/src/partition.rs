//! In-memory state of one partition and the lookups over its consume queue.
//!
//! Invariants (hold whenever the partition mutex is released):
//! - consume-queue entries `[cq_start, cq_end)` are live; entries `[cq_start, cq_flushed)` are
//!   in the `.cq` files, `[cq_flushed, cq_end)` are `cq_pending` (not yet written back);
//! - entry `i+1`'s `base_offset` = entry `i`'s `next_offset()`; `log_end` = last entry's
//!   `next_offset()` (or the value kept when the queue is empty);
//! - `log_start` lies in entry `cq_start` (or equals `log_end` when `cq_start == cq_end`);
//! - the same holds for index entries `[0, idx_end)` with `idx_flushed`/`idx_pending`.
//!
//! An idle partition holds no file descriptor and empty vectors: ~200 bytes.

use std::path::PathBuf;
use std::sync::Arc;

use common::{Offset, PartitionId, TimestampMs};
use parking_lot::Mutex;

use crate::config::PartitionConfig;
use crate::consume_queue::{self, CQ_ENTRY_BYTES, CqEntry};
use crate::error::{Result, StorageError};
use crate::file_cache::FileCache;
use crate::fixed_files::FixedFiles;
use crate::index::{self, INDEX_ENTRY_BYTES, IndexEntry};

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
    pub idx_end: u64,
    pub idx_flushed: u64,
    pub idx_pending: Vec<IndexEntry>,
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
            idx_end: 0,
            idx_flushed: 0,
            idx_pending: Vec::new(),
            max_ts: -1,
            max_ts_offset: -1,
            start_pos: u64::MAX,
            bytes: 0,
            cq_trimmed: 0,
            head_max_ts: i64::MIN,
        }
    }

    /// Records an appended batch (already in the commit log).
    pub fn push(&mut self, e: CqEntry) {
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

    pub fn push_index(&mut self, e: IndexEntry) {
        self.idx_pending.push(e);
        self.idx_end += 1;
    }
}

/// Where a partition's files live and how they are split; shared by every partition.
pub struct QueueFiles {
    pub root: PathBuf,
    pub cache: FileCache,
    pub cq: FixedFiles,
    pub idx: FixedFiles,
}

impl QueueFiles {
    pub fn new(root: PathBuf, per_file: u64, max_open: usize) -> QueueFiles {
        QueueFiles {
            root,
            cache: FileCache::new(max_open),
            cq: consume_queue::files(per_file),
            idx: index::files(per_file),
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
        let (flushed, end) = {
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
            (g.cq_flushed, end)
        };
        let file_end = end.min(flushed);
        let mut out = self.read_cq_files(p, i, file_end - i)?;
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
            out = self.read_cq_files(p, i, end.min(g.cq_flushed) - i)?;
        }
        if end > g.cq_flushed {
            let a = i.max(g.cq_flushed) - g.cq_flushed;
            let b = end - g.cq_flushed;
            out.extend_from_slice(&g.cq_pending[a as usize..b as usize]);
        }
        Ok(out)
    }

    fn read_cq_files(&self, p: PartitionId, i: u64, n: u64) -> Result<Vec<CqEntry>> {
        let raw = self.cq.read(&self.cache, &self.dir(p), i, n)?;
        raw.chunks_exact(CQ_ENTRY_BYTES)
            .enumerate()
            .map(|(k, b)| CqEntry::decode(b).ok_or_else(|| Self::corrupt(p, i + k as u64)))
            .collect()
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

    /// Index entries `[i, i+n)` (partition locked).
    pub fn idx_entries_locked(
        &self,
        p: PartitionId,
        g: &Partition,
        i: u64,
        n: u64,
    ) -> Result<Vec<IndexEntry>> {
        let end = (i + n).min(g.idx_end);
        if i >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if i < g.idx_flushed {
            let raw = self
                .idx
                .read(&self.cache, &self.dir(p), i, end.min(g.idx_flushed) - i)?;
            for (k, b) in raw.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
                out.push(IndexEntry::decode(b).ok_or_else(|| StorageError::Format {
                    path: self.dir(p),
                    reason: format!("index entry {} fails its CRC", i + k as u64),
                })?);
            }
        }
        if end > g.idx_flushed {
            let a = i.max(g.idx_flushed) - g.idx_flushed;
            let b = end - g.idx_flushed;
            out.extend_from_slice(&g.idx_pending[a as usize..b as usize]);
        }
        Ok(out)
    }

    /// Scans every live index entry (in pages), calling `f`.
    pub fn scan_index(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        mut f: impl FnMut(&IndexEntry),
    ) -> Result<()> {
        const PAGE: u64 = 4096;
        let mut i = 0;
        loop {
            let page = {
                let g = part.lock();
                self.idx_entries_locked(p, &g, i, PAGE)?
            };
            if page.is_empty() {
                return Ok(());
            }
            page.iter().for_each(&mut f);
            i += page.len() as u64;
        }
    }

    /// Writes back in-memory entries of one partition. Returns files touched.
    pub fn write_back(&self, p: PartitionId, part: &Arc<Mutex<Partition>>) -> Result<Vec<PathBuf>> {
        let (cq_at, cq_bytes, cq_n, idx_at, idx_bytes, idx_n) = {
            let g = part.lock();
            if g.deleted || (g.cq_pending.is_empty() && g.idx_pending.is_empty()) {
                return Ok(Vec::new());
            }
            let mut cq = Vec::with_capacity(g.cq_pending.len() * CQ_ENTRY_BYTES);
            g.cq_pending.iter().for_each(|e| e.encode(&mut cq));
            let mut idx = Vec::with_capacity(g.idx_pending.len() * INDEX_ENTRY_BYTES);
            g.idx_pending.iter().for_each(|e| e.encode(&mut idx));
            (
                g.cq_flushed,
                cq,
                g.cq_pending.len(),
                g.idx_flushed,
                idx,
                g.idx_pending.len(),
            )
        };
        let dir = self.dir(p);
        let mut touched = self.cq.write(&self.cache, &dir, cq_at, &cq_bytes)?;
        touched.extend(self.idx.write(&self.cache, &dir, idx_at, &idx_bytes)?);
        let mut g = part.lock();
        // Only drain what was written and is still there (truncate_to may have cut it).
        if g.cq_flushed == cq_at && g.cq_pending.len() >= cq_n {
            g.cq_pending.drain(..cq_n);
            g.cq_flushed += cq_n as u64;
        }
        if g.idx_flushed == idx_at && g.idx_pending.len() >= idx_n {
            g.idx_pending.drain(..idx_n);
            g.idx_flushed += idx_n as u64;
        }
        if g.cq_pending.is_empty() {
            g.cq_pending = Vec::new();
        }
        if g.idx_pending.is_empty() {
            g.idx_pending = Vec::new();
        }
        Ok(touched)
    }
}
