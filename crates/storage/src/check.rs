//! Finding and repairing damage a crash cannot explain (`sluice storage check|repair`).
//!
//! - [`find_on_open`]: cheap checks run by every open, over file sizes and names only:
//!   segments that do not meet (one was truncated or deleted), a log that ends before the
//!   checkpoint's position, partitions whose live entries start before the oldest segment,
//!   consume-queue files missing under live entries. A normal open refuses to start on any.
//! - [`Store::check`]: a full read-only scan. Every live consume-queue slot is read from its
//!   file (no automatic repair) and its commit-log entry checked byte for byte (header CRC,
//!   batch CRC, partition and offset). A partition with unreadable slots is replayed from the
//!   commit log (a dry run) to tell which of its offsets can be rebuilt and which are lost.
//! - [`Store::repair`]: the same scan, then: rebuilds the consume queues it has to from the
//!   commit log, fills missing or truncated segment ranges with zeros (so positions stay
//!   contiguous and appends never land on a hole), and gives up lost offsets only when told
//!   to (`skip_damaged`): they are recorded in the `lost` file (reads skip them) and a lost
//!   range at the head of a partition moves its log start past it. Without `skip_damaged`
//!   nothing is changed when something would be lost.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::{Offset, PartitionId};
use parking_lot::Mutex;

use crate::batch::BatchHeader;
use crate::checkpoint::Checkpoint;
use crate::commit_log::CommitLog;
use crate::consume_queue::{CQ_ENTRY_BYTES, CqEntry};
use crate::damage::{DamagedBatch, Finding};
use crate::entry::{self, ENTRY_HEADER_BYTES, ENTRY_MAGIC, ENTRY_VERSION};
use crate::error::{Result, StorageError};
use crate::partition::{Partition, QueueFiles};
use crate::store::{Inner, Store};

/// Consume-queue slots read per step of a scan.
const SCAN_SLOTS: u64 = 4096;

/// What [`Store::check`] found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Problems with files, found when the store was opened.
    pub findings: Vec<Finding>,
    /// Live batches that fail their checks (their offsets are lost unless rebuilt).
    pub damaged: Vec<DamagedBatch>,
    /// Partitions whose consume queue is unreadable; `rebuildable` of their batches were
    /// found intact in the commit log.
    pub queues_to_rebuild: Vec<(PartitionId, u64)>,
    /// Offset ranges (first, last inclusive) a repair would give up.
    pub lost: Vec<(PartitionId, Offset, Offset)>,
    /// Ranges given up by earlier repairs (reads skip them).
    pub skipped: Vec<(PartitionId, Offset, Offset)>,
    /// Live batches checked.
    pub batches_checked: u64,
}

impl CheckReport {
    /// True when nothing is wrong (earlier skipped ranges aside).
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
            && self.damaged.is_empty()
            && self.queues_to_rebuild.is_empty()
            && self.lost.is_empty()
    }
}

/// The open-time checks (see the module docs). `position`: the checkpoint's.
pub fn find_on_open(ckpt: &Checkpoint, log: &CommitLog, files: &QueueFiles) -> Vec<Finding> {
    let mut out = Vec::new();
    let segs = log.segments();
    for pair in segs.windows(2) {
        if pair[0].end() != pair[1].base {
            out.push(Finding {
                file: pair[0].path.clone(),
                what: format!(
                    "segment ends at position {} but the next one ({}) starts at {}: a \
                     segment was truncated or deleted",
                    pair[0].end(),
                    pair[1].path.display(),
                    pair[1].base
                ),
            });
        }
    }
    let log_end = segs.last().map_or(0, |s| s.end());
    if ckpt.position > log_end {
        out.push(Finding {
            file: segs
                .last()
                .map_or_else(|| log.dir.clone(), |s| s.path.clone()),
            what: format!(
                "the checkpoint covers the commit log up to position {} but the segments end \
                 at {log_end}: the last segment was truncated or deleted",
                ckpt.position
            ),
        });
    }
    let log_start = log.start();
    for r in &ckpt.partitions {
        // A partition whose directory is gone was deleted after the checkpoint (its
        // directory is renamed away first): nothing of it is expected.
        if r.cq_end <= r.cq_start || r.log_end <= r.log_start || !files.dir(r.id).exists() {
            continue;
        }
        if r.start_pos < log_start {
            out.push(Finding {
                file: log.dir.clone(),
                what: format!(
                    "partition {} has live entries from position {} but the oldest segment \
                     starts at {log_start}: a segment file was deleted",
                    r.id.0, r.start_pos
                ),
            });
        }
        let dir = files.dir(r.id);
        let per_file = files.cq.per_file;
        let mut first = r.cq_start / per_file * per_file;
        while first < r.cq_end {
            let path = files.cq.path(&dir, first);
            let (from, to) = (first.max(r.cq_start), (first + per_file).min(r.cq_end));
            // The checkpoint's slots were written (and synced) before it: the file holds at
            // least up to its last live slot.
            let needed = (to - first) * CQ_ENTRY_BYTES as u64;
            match std::fs::metadata(&path) {
                Err(_) => out.push(Finding {
                    file: path,
                    what: format!(
                        "consume-queue file of partition {} is missing (slots {from}..{to} are live)",
                        r.id.0
                    ),
                }),
                Ok(m) if m.len() < needed => out.push(Finding {
                    file: path,
                    what: format!(
                        "consume-queue file of partition {} is {} bytes, shorter than its live \
                         slots {from}..{to} need ({needed})",
                        r.id.0,
                        m.len()
                    ),
                }),
                Ok(_) => {}
            }
            first += per_file;
        }
    }
    out
}

/// The refusal a normal open gives for `findings`.
pub fn refusal(dir: &std::path::Path, findings: &[Finding]) -> StorageError {
    let list: Vec<String> = findings.iter().map(|f| format!("  - {f}")).collect();
    StorageError::Damaged(format!(
        "the store in {} is damaged in a way a crash cannot explain:\n{}\nRefusing to start. \
         `sluice storage check --data-dir <dir>` lists the affected offsets; `sluice storage \
         repair --data-dir <dir>` rebuilds what the commit log still holds (add \
         --skip-damaged to give up what it does not, reporting exactly which offsets).",
        dir.display(),
        list.join("\n")
    ))
}

/// One partition's scan result.
struct PartitionScan {
    damaged: Vec<DamagedBatch>,
    /// The queue has unreadable slots: rebuild it from the commit log.
    rebuild: bool,
    checked: u64,
}

impl Inner {
    /// Checks the entry a slot points at, byte for byte (ignores the checked-prefix cache).
    fn check_slot(&self, p: PartitionId, e: &CqEntry) -> std::result::Result<(), DamagedBatch> {
        let damaged = |file: PathBuf, reason: &str| DamagedBatch {
            partition: p,
            first_offset: e.base_offset,
            last_offset: e.next_offset() - 1,
            position: e.position,
            file,
            reason: reason.to_string(),
        };
        let Some(seg) = self.log.segment_at(e.position) else {
            return Err(damaged(PathBuf::new(), "segment missing"));
        };
        let at = (e.position - seg.base) as usize;
        let trailer = entry::trailer_len(seg.bytes().get(at..).unwrap_or_default());
        let len = ENTRY_HEADER_BYTES + e.batch_len as usize + trailer;
        let Some(bytes) = seg.bytes().get(at..at + len) else {
            return Err(damaged(seg.path.clone(), "entry runs past its segment"));
        };
        match entry::check(bytes) {
            Err(entry::EntryFault::BadHeader) => {
                Err(damaged(seg.path.clone(), "entry header CRC mismatch"))
            }
            Err(entry::EntryFault::BadBody) => Err(damaged(seg.path.clone(), "batch CRC mismatch")),
            Ok(h) => {
                let base = BatchHeader::parse(&bytes[ENTRY_HEADER_BYTES..])
                    .ok()
                    .and_then(|b| h.offset_in(bytes, p, b.base_offset()));
                if h.batch_len != e.batch_len || base != Some(e.base_offset) {
                    Err(damaged(
                        seg.path.clone(),
                        "entry does not match its consume-queue slot",
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Reads every live slot of `p` from its files (no automatic repair) and checks its
    /// entry.
    fn scan_partition(&self, p: PartitionId, part: &Mutex<Partition>) -> Result<PartitionScan> {
        let (cq_start, cq_flushed, pending) = {
            let g = part.lock();
            (g.cq_start, g.cq_flushed, g.cq_pending.clone())
        };
        let mut out = PartitionScan {
            damaged: Vec::new(),
            rebuild: false,
            checked: 0,
        };
        let dir = self.files.dir(p);
        let mut i = cq_start;
        let mut slots = Vec::new();
        while i < cq_flushed {
            let n = (cq_flushed - i).min(SCAN_SLOTS);
            let raw = self.files.cq.read(&self.files.cache, &dir, i, n)?;
            if (raw.len() / CQ_ENTRY_BYTES) < n as usize {
                out.rebuild = true;
            }
            for b in raw.chunks_exact(CQ_ENTRY_BYTES) {
                match CqEntry::decode(b) {
                    Some(e) => slots.push(e),
                    None => out.rebuild = true,
                }
            }
            if out.rebuild {
                return Ok(out);
            }
            for e in slots.drain(..) {
                out.checked += 1;
                if let Err(d) = self.check_slot(p, &e) {
                    out.damaged.push(d);
                }
            }
            i += n;
        }
        for e in &pending {
            out.checked += 1;
            if let Err(d) = self.check_slot(p, e) {
                out.damaged.push(d);
            }
        }
        Ok(out)
    }

    /// The intact entries of `p` in the commit log with offsets in `[log_start, log_end)`,
    /// in order, found by walking every segment's entries (resynchronising past damaged
    /// bytes on the next valid entry header). A compacted partition's entries are its copies
    /// in `[start_pos, copy_hi)` and its appends from `copy_hi` on (`compaction.rs`).
    fn entries_from_log(
        &self,
        p: PartitionId,
        (log_start, log_end): (Offset, Offset),
        (start_pos, copy_hi): (u64, u64),
    ) -> Vec<CqEntry> {
        let end = self.log.lock_writer().pos;
        let mut out: Vec<CqEntry> = Vec::new();
        for seg in self.log.segments() {
            let bytes = seg.bytes();
            let mut at = 0usize;
            while at + ENTRY_HEADER_BYTES <= bytes.len() && seg.base + (at as u64) < end {
                // The cleaner's padding covers dead entries (and holes): skip it whole.
                if let Some(span) = entry::padding_span(&bytes[at..]) {
                    at += span as usize;
                    continue;
                }
                let Ok(h) = entry::check_header(&bytes[at..]) else {
                    at = next_header_candidate(bytes, at + 1);
                    continue;
                };
                let size = h.span() as usize;
                let pos = seg.base + at as u64;
                let body_end = at + ENTRY_HEADER_BYTES + h.batch_len as usize;
                let body = &bytes[at + ENTRY_HEADER_BYTES..body_end.min(bytes.len())];
                let current = if h.copy {
                    (start_pos..copy_hi).contains(&pos)
                        && crate::compaction::commit_marker_of(body).is_none()
                } else {
                    pos >= copy_hi
                };
                if current
                    && entry::check(&bytes[at..]).is_ok()
                    && let Ok(b) = BatchHeader::parse(body)
                    && let Some(base_offset) = h.offset_in(&bytes[at..], p, b.base_offset())
                {
                    let e = CqEntry {
                        position: seg.base + at as u64,
                        batch_len: h.batch_len,
                        offset_span: b.last_offset_delta().max(0) as u32 + 1,
                        base_offset,
                        max_timestamp: b.max_timestamp(),
                        filter_bits: 0,
                    };
                    let after_last = out.last().is_none_or(|l| e.base_offset >= l.next_offset());
                    if after_last && e.next_offset() > log_start && e.base_offset < log_end {
                        out.push(e);
                    }
                }
                at += size;
            }
        }
        out
    }
}

/// The next position at or after `from` that could start an entry header.
fn next_header_candidate(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while at + 1 < bytes.len() {
        match bytes[at..].iter().position(|&b| b == ENTRY_MAGIC) {
            Some(k) => {
                at += k;
                if bytes.get(at + 1) == Some(&ENTRY_VERSION) {
                    return at;
                }
                at += 1;
            }
            None => return bytes.len(),
        }
    }
    bytes.len()
}

/// Sorted ranges with adjacent or overlapping ones of a partition joined.
fn merge(mut ranges: Vec<(PartitionId, Offset, Offset)>) -> Vec<(PartitionId, Offset, Offset)> {
    ranges.sort();
    let mut out: Vec<(PartitionId, Offset, Offset)> = Vec::with_capacity(ranges.len());
    for (p, a, z) in ranges {
        match out.last_mut() {
            Some(last) if last.0 == p && a <= last.2.saturating_add(1) => last.2 = last.2.max(z),
            _ => out.push((p, a, z)),
        }
    }
    out
}

/// Offset ranges of `[log_start, log_end)` that `entries` (in order) do not cover.
fn gaps(entries: &[CqEntry], log_start: Offset, log_end: Offset) -> Vec<(Offset, Offset)> {
    let mut out = Vec::new();
    let mut next = log_start;
    for e in entries {
        if e.base_offset > next {
            out.push((next, e.base_offset - 1));
        }
        next = next.max(e.next_offset());
    }
    if next < log_end {
        out.push((next, log_end - 1));
    }
    out
}

impl Store {
    /// A read-only scan of every live batch (see the module docs). Run it on a store opened
    /// with [`crate::OpenMode::Check`] (nothing refused, nothing written) or any open store.
    pub fn check(&self) -> Result<CheckReport> {
        Ok(self.scan()?.0)
    }

    fn scan(&self) -> Result<(CheckReport, BTreeMap<PartitionId, Vec<CqEntry>>)> {
        let inner = &self.inner;
        let mut report = CheckReport {
            findings: inner.findings.lock().clone(),
            skipped: inner.lost.list(),
            ..CheckReport::default()
        };
        let mut rebuilt = BTreeMap::new();
        let parts: Vec<(PartitionId, Arc<Mutex<Partition>>)> = {
            let mut v: Vec<_> = inner
                .parts
                .read()
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            v.sort_by_key(|(k, _)| *k);
            v
        };
        for (p, part) in parts {
            let scan = inner.scan_partition(p, &part)?;
            report.batches_checked += scan.checked;
            let (log_start, log_end, start_pos, copy_hi) = {
                let g = part.lock();
                (g.log_start, g.log_end, g.start_pos, g.copy_hi)
            };
            if scan.rebuild {
                let entries = inner.entries_from_log(p, (log_start, log_end), (start_pos, copy_hi));
                report.queues_to_rebuild.push((p, entries.len() as u64));
                // Compaction leaves gaps between copies: only what follows them must be dense.
                let copies = entries.iter().take_while(|e| e.position < copy_hi).count();
                let dense_from = match copies {
                    0 => log_start,
                    n => entries[n - 1].next_offset(),
                };
                for (a, z) in gaps(&entries[copies..], dense_from, log_end) {
                    if !inner.lost.covers(p, a, z + 1) {
                        report.lost.push((p, a, z));
                    }
                }
                rebuilt.insert(p, entries);
                continue;
            }
            for d in scan.damaged {
                if !inner.lost.covers(p, d.first_offset, d.last_offset + 1) {
                    report
                        .lost
                        .push((p, d.first_offset.max(log_start), d.last_offset));
                    report.damaged.push(d);
                }
            }
        }
        report.lost = merge(std::mem::take(&mut report.lost));
        Ok((report, rebuilt))
    }

    /// Repairs what [`Store::check`] finds (see the module docs). Returns the report of the
    /// scan it acted on. Without `skip_damaged`, fails with `Damaged` (and changes nothing)
    /// when offsets would be lost.
    pub fn repair(&self, skip_damaged: bool) -> Result<CheckReport> {
        let (report, rebuilt) = self.scan()?;
        if !report.lost.is_empty() && !skip_damaged {
            let list: Vec<String> = report
                .lost
                .iter()
                .map(|(p, a, z)| format!("  - partition {} offsets {a}..={z}", p.0))
                .collect();
            return Err(StorageError::Damaged(format!(
                "repair would lose these offsets (the commit log no longer holds them):\n{}\n\
                 Nothing was changed. Run again with --skip-damaged to give them up.",
                list.join("\n")
            )));
        }
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        inner.fill_segment_gaps()?;
        for (p, entries) in &rebuilt {
            inner.rebuild_queue(*p, entries)?;
            tracing::warn!(
                partition = p.0,
                batches = entries.len(),
                "consume queue rebuilt from the commit log"
            );
        }
        if !report.lost.is_empty() {
            inner.lost.add(&report.lost)?;
            for &(p, a, z) in &report.lost {
                inner.skip_lost_head(p, a, z)?;
                tracing::warn!(
                    partition = p.0,
                    first = a,
                    last = z,
                    "offsets given up by repair"
                );
            }
        }
        inner.findings.lock().clear();
        inner.checkpoint(false)?;
        Ok(report)
    }
}

impl Inner {
    /// Creates zero-filled segment files over every gap between segments and between the
    /// last segment and the checkpointed position, so positions stay contiguous and no
    /// append reuses a position a queue slot may point at.
    fn fill_segment_gaps(&self) -> Result<()> {
        let segs = self.log.segments();
        let mut holes: Vec<(u64, u64)> = segs
            .windows(2)
            .filter(|w| w[0].end() < w[1].base)
            .map(|w| (w[0].end(), w[1].base))
            .collect();
        let log_end = segs.last().map_or(0, |s| s.end());
        let wanted = self.log.lock_writer().pos;
        if wanted > log_end && !segs.is_empty() {
            holes.push((log_end, wanted));
        }
        for (from, to) in holes {
            self.log.fill_gap(from, to - from)?;
            tracing::warn!(from, to, "filled a missing commit-log range with zeros");
        }
        Ok(())
    }

    /// Replaces the consume queue of `p` with `entries` (slot numbering continues from the
    /// partition's `cq_start`).
    fn rebuild_queue(&self, p: PartitionId, entries: &[CqEntry]) -> Result<()> {
        let part = self.partition(p)?;
        let mut g = part.lock();
        let dir = self.files.dir(p);
        for (_, path) in self.files.cq.list(&dir)? {
            self.files.cache.forget(&path);
            std::fs::remove_file(&path).map_err(|e| StorageError::io("deleting", &path, e))?;
        }
        let mut bytes = Vec::with_capacity(entries.len() * CQ_ENTRY_BYTES);
        entries.iter().for_each(|e| e.encode(&mut bytes));
        let touched = self
            .files
            .cq
            .write(&self.files.cache, &dir, g.cq_start, &bytes)?;
        self.unsynced_files.lock().extend(touched);
        self.queues_dir_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        g.cq_end = g.cq_start + entries.len() as u64;
        g.cq_flushed = g.cq_end;
        g.cq_pending = Vec::new();
        g.cq_trimmed = g.cq_start;
        g.bytes = entries.iter().map(|e| e.batch_len as u64).sum();
        (g.start_pos, g.head_max_ts) = entries
            .first()
            .map_or((u64::MAX, i64::MIN), |e| (e.position, e.max_timestamp));
        if let Some(e) = entries.iter().max_by_key(|e| e.max_timestamp) {
            (g.max_ts, g.max_ts_offset) = (e.max_timestamp, e.base_offset);
        }
        self.changed();
        Ok(())
    }

    /// Moves the log start of `p` past the lost range `[a, z]` when the range is at its
    /// head (the partition then reads from the first batch after it).
    fn skip_lost_head(&self, p: PartitionId, a: Offset, z: Offset) -> Result<()> {
        let part = self.partition(p)?;
        let mut g = part.lock();
        if a > g.log_start || z < g.log_start {
            return Ok(());
        }
        let k = self.files.find_locked(p, &g, z + 1)?;
        let start = match self.files.cq_entries_locked(p, &g, k, 1)?.first() {
            Some(e) => e.base_offset.max(z + 1),
            None => g.log_end,
        };
        self.advance_start_locked(p, &mut g, k, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(base: i64, span: u32) -> CqEntry {
        CqEntry {
            position: 0,
            batch_len: 100,
            offset_span: span,
            base_offset: base,
            max_timestamp: 0,
            filter_bits: 0,
        }
    }

    #[test]
    fn gaps_are_the_offsets_no_entry_covers() {
        assert_eq!(gaps(&[e(0, 5), e(5, 5)], 0, 10), vec![]);
        assert_eq!(gaps(&[e(0, 5), e(8, 2)], 0, 10), vec![(5, 7)]);
        assert_eq!(gaps(&[e(3, 2)], 1, 10), vec![(1, 2), (5, 9)]);
        assert_eq!(gaps(&[], 4, 6), vec![(4, 5)]);
        // log start inside the first batch
        assert_eq!(gaps(&[e(0, 5)], 2, 5), vec![]);
    }

    #[test]
    fn adjacent_ranges_merge_per_partition() {
        let (a, b) = (PartitionId(1), PartitionId(2));
        assert_eq!(
            merge(vec![
                (b, 0, 4),
                (a, 5, 9),
                (a, 0, 4),
                (a, 11, 12),
                (b, 5, 5)
            ]),
            vec![(a, 0, 9), (a, 11, 12), (b, 0, 5)]
        );
    }

    #[test]
    fn header_candidates_skip_to_magic_and_version() {
        let mut b = vec![0u8; 64];
        b[20] = ENTRY_MAGIC;
        b[30] = ENTRY_MAGIC;
        b[31] = ENTRY_VERSION;
        assert_eq!(next_header_candidate(&b, 0), 30);
        assert_eq!(next_header_candidate(&b, 31), 64);
    }
}
