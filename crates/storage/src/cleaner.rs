//! The cleaner: frees the disk blocks of dead commit-log entries in place, so disk use
//! follows live data although every partition shares the commit log (retention deletes a
//! segment only once *no* partition has a live entry in it).
//!
//! Dead, forever: an entry whose partition was deleted, or whose whole offset range is
//! below its partition's log start (retention, size limits and `delete_records` only move
//! it forward). Since a partition's entries are in commit-log position order, that is: its
//! partition is absent from the last durable checkpoint, or its position is below that
//! partition's `start_pos` (the position of its first live entry) there. Nothing else is
//! ever treated as dead, and only the *durable* checkpoint is trusted (in memory a log start
//! may be ahead of disk; freeing on its strength would lose entries a crash brings back).
//!
//! A pass (after each retention pass, or [`Store::clean`]) walks, from a round-robin cursor,
//! the segments lying wholly below the last durable checkpoint position (never the active
//! one), entry by entry from their headers. Each maximal run of consecutive dead entries
//! (and padding entries) of at least `clean_min_run_bytes` becomes one *padding entry*
//! (`entry.rs`): its header is written over the first dead entry's header (fdatasync),
//! then the whole blocks after the header up to the run's end are punched
//! (`fallocate(PUNCH_HOLE | KEEP_SIZE)`): the file keeps its size, holes read as zeros,
//! the blocks are free. Whole dead segments are punched the same way (positions stay
//! contiguous: recovery relies on an unbroken segment chain). Format and crash safety:
//! `docs/storage-format.md` §Cleaner.
//!
//! Budget: a pass walks at most `clean_bytes_per_pass` bytes of entries (padding entries
//! are skipped by their length and cost nothing), writes at most one batch of headers and
//! one fdatasync per segment. A segment walked to its end is not walked again until a
//! partition that still has live entries in it loses some (deletion, log start moved);
//! each segment remembers those partitions as bits (`id % LIVE_BITS`).

use std::collections::{BTreeMap, HashSet};
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Offset, PartitionId};
use parking_lot::Mutex;

use crate::checkpoint::Checkpoint;
use crate::entry::{self, ENTRY_HEADER_BYTES};
use crate::error::{Result, StorageError};
use crate::partition::Partition;
use crate::segment::Segment;
use crate::store::{Inner, Store};

/// Holes are punched in whole blocks of this size (the page size, and the block size of
/// ext4, xfs and tmpfs as usually set up; a larger block only frees less).
const BLOCK_BYTES: u64 = 4096;
/// A padding header is only written where its 16 bytes lie within one 512-byte sector: a
/// sector is written whole by the disk and a page whole by the kernel, so a torn write
/// leaves the old header or the new one, never a mix.
const SECTOR_BYTES: u64 = 512;
/// Partitions with live entries in a segment are remembered as bit `id % LIVE_BITS`.
const LIVE_BITS: usize = 1024;
/// A padding entry's length field is a u32: longer runs become several padding entries.
const MAX_RUN_BYTES: u64 = u32::MAX as u64;

/// What one cleaner pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanPass {
    /// Segments walked, wholly or in part.
    pub segments_walked: usize,
    /// Bytes of batch entries walked over (the I/O budget counts these).
    pub bytes_walked: u64,
    /// Padding entries written (new, or rewritten to cover a longer run).
    pub paddings_written: usize,
    /// Bytes newly covered by holes.
    pub bytes_punched: u64,
    /// Drop in the allocated bytes of the segments punched.
    pub bytes_freed: u64,
    /// Segments left for a later pass because a reader held bytes of them.
    pub segments_busy: usize,
    /// The budget ran out with work left: another pass would continue.
    pub more: bool,
}

/// What the last durable checkpoint says is live: its position and each partition's first
/// live commit-log position, ascending by partition.
pub(crate) struct DurableView {
    position: u64,
    /// (partition, first live position, end of its copy range or 0).
    starts: Vec<(PartitionId, u64, u64)>,
}

impl DurableView {
    fn of(c: &Checkpoint) -> DurableView {
        let mut starts: Vec<(PartitionId, u64, u64)> = c
            .partitions
            .iter()
            .map(|r| (r.id, r.start_pos, r.copy_hi))
            .collect();
        starts.sort_unstable();
        DurableView {
            position: c.position,
            starts,
        }
    }

    fn start(&self, p: PartitionId) -> Option<(u64, u64)> {
        let i = self.starts.binary_search_by_key(&p, |e| e.0).ok()?;
        Some((self.starts[i].1, self.starts[i].2))
    }

    /// The entry of `p` at global position `pos` (below `self.position`) is dead. `copy`:
    /// it is a copy entry (log compaction, `compaction.rs`): live only inside the
    /// partition's copy range `[start, copy_hi)`, while its appends below `copy_hi` were
    /// all copied there (or compacted away) and are dead.
    fn is_dead(&self, p: PartitionId, pos: u64, copy: bool) -> bool {
        // An empty partition's start is u64::MAX: everything it wrote is dead.
        self.start(p).is_none_or(|(start, copy_hi)| {
            if copy {
                pos < start || pos >= copy_hi
            } else {
                pos < start.max(copy_hi)
            }
        })
    }

    /// Partitions that lost entries from `self` to `newer` (deleted, start moved, compacted).
    fn changed_in(&self, newer: &DurableView) -> LiveBits {
        let mut bits = LiveBits::default();
        for &(p, start, copy_hi) in &self.starts {
            if newer.start(p) != Some((start, copy_hi)) {
                bits.set(p);
            }
        }
        bits
    }
}

#[derive(Clone, Copy, Default)]
struct LiveBits([u64; LIVE_BITS / 64]);

impl LiveBits {
    fn set(&mut self, p: PartitionId) {
        let b = p.0 as usize % LIVE_BITS;
        self.0[b / 64] |= 1 << (b % 64);
    }

    fn intersects(&self, other: &LiveBits) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }
}

/// The cleaner's state, owned by the store (`Inner::cleaner`).
#[derive(Default)]
pub(crate) struct Cleaner {
    /// Set after every durable checkpoint.
    durable: Mutex<Option<Arc<DurableView>>>,
    work: Mutex<Work>,
    passes: AtomicU64,
    bytes_punched: AtomicU64,
    bytes_freed: AtomicU64,
    /// `FORMAT` allows padding entries (checked before the first one this process writes).
    format_ready: AtomicBool,
    /// The filesystem cannot punch holes: the cleaner stays off (logged once).
    unsupported: AtomicBool,
}

/// Totals since the store was opened (for `StoreStats`).
pub(crate) struct CleanerTotals {
    pub passes: u64,
    pub bytes_punched: u64,
    pub bytes_freed: u64,
}

#[derive(Default)]
struct Work {
    /// The view the per-segment state below was computed against.
    view: Option<Arc<DurableView>>,
    /// Base of the segment the next pass starts with (passes go round robin).
    cursor: u64,
    segs: BTreeMap<u64, SegWork>,
}

#[derive(Clone, Copy, Default)]
struct SegWork {
    /// Walked to its end: nothing more to free until a partition in `live` loses entries.
    done: bool,
    /// Where the walk continues (segment-relative entry boundary) after running out of
    /// budget.
    resume_at: u64,
    /// Partitions with live entries in the part walked so far.
    live: LiveBits,
}

impl Work {
    /// Moves to `view`: segments where a partition with live entries lost some are walked
    /// again from their start.
    fn adopt(&mut self, view: &Arc<DurableView>) {
        if let Some(old) = &self.view {
            if Arc::ptr_eq(old, view) {
                return;
            }
            let changed = old.changed_in(view);
            for st in self.segs.values_mut() {
                if st.live.intersects(&changed) {
                    *st = SegWork::default();
                }
            }
        }
        self.view = Some(view.clone());
    }
}

impl Cleaner {
    /// Called once a checkpoint is durable: its partition states are what the next passes
    /// may treat as dead.
    pub(crate) fn record_checkpoint(&self, c: &Checkpoint) {
        *self.durable.lock() = Some(Arc::new(DurableView::of(c)));
    }

    /// Forgets every walk (after `truncate_to`: segments past the cut are rewritten, so
    /// remembered boundaries mean nothing there).
    pub(crate) fn forget_walks(&self) {
        *self.work.lock() = Work::default();
    }

    pub(crate) fn totals(&self) -> CleanerTotals {
        CleanerTotals {
            passes: self.passes.load(Ordering::Relaxed),
            bytes_punched: self.bytes_punched.load(Ordering::Relaxed),
            bytes_freed: self.bytes_freed.load(Ordering::Relaxed),
        }
    }
}

/// A run of consecutive dead or padding entries in one segment (segment-relative).
struct Run {
    start: u64,
    end: u64,
    /// Where its padding header goes: the first entry of the run whose header lies within
    /// one sector (entries before it stay as they are).
    pad_at: Option<u64>,
    /// The run starts (at `pad_at`) with a padding entry spanning it all: nothing to write.
    padded: bool,
    /// Bytes the padding entries inside the run already cover with holes.
    old_hole: u64,
    /// Where its hole may end (past `end` when the rest of the segment is unused).
    hole_end: u64,
}

impl Run {
    fn new(start: u64) -> Run {
        Run {
            start,
            end: start,
            pad_at: None,
            padded: false,
            old_hole: 0,
            hole_end: start,
        }
    }

    fn add(&mut self, at: u64, span: u64, padding: bool) {
        let fits_sector = at % SECTOR_BYTES + ENTRY_HEADER_BYTES as u64 <= SECTOR_BYTES;
        if self.pad_at.is_none() && fits_sector {
            self.pad_at = Some(at);
            self.padded = padding;
        } else if self.pad_at.is_some() {
            // Anything after the padding position needs the padding rewritten.
            self.padded = false;
        }
        if padding {
            self.old_hole += hole(at, at + span).1;
        }
        self.end = at + span;
        self.hole_end = self.end;
    }
}

/// The whole blocks a padding entry at `at` ending at `end` frees: `(start, len)`.
fn hole(at: u64, end: u64) -> (u64, u64) {
    let start = (at + ENTRY_HEADER_BYTES as u64).next_multiple_of(BLOCK_BYTES);
    let stop = end / BLOCK_BYTES * BLOCK_BYTES;
    (start, stop.saturating_sub(start))
}

/// What one segment's walk decided.
#[derive(Default)]
struct Plan {
    /// Padding headers to write: (segment-relative position, span).
    headers: Vec<(u64, u64)>,
    /// Holes to punch: (segment-relative start, length, bytes newly covered).
    holes: Vec<(u64, u64, u64)>,
}

impl Inner {
    /// One cleaner pass (see the module docs). Holds the admin lock: retention,
    /// `delete_records`, `delete_partition` and `truncate_to` wait for it.
    pub fn clean(&self) -> Result<CleanPass> {
        let budget = self.cfg.clean_bytes_per_pass;
        let mut pass = CleanPass::default();
        // After `close` its checkpoint must stay the last (the clean one).
        if budget == 0
            || self.cleaner.unsupported.load(Ordering::Acquire)
            || self.closed.load(Ordering::Acquire)
        {
            return Ok(pass);
        }
        let _admin = self.admin.lock();
        // What died since the last checkpoint without one of its own (a log start moved at
        // read time) counts only once durable.
        let version = self.state_version.load(Ordering::Acquire);
        if self
            .last_checkpoint
            .lock()
            .is_none_or(|(_, seen)| seen != version)
        {
            self.checkpoint(false)?;
        }
        let Some(view) = self.cleaner.durable.lock().clone() else {
            return Ok(pass);
        };
        let mut work = self.cleaner.work.lock();
        work.adopt(&view);
        let write_pos = self.log.lock_writer().pos;
        let segs: Vec<Arc<Segment>> = self
            .log
            .segments()
            .into_iter()
            .filter(|s| s.end() <= view.position && s.end() < write_pos)
            .collect();
        let present: HashSet<u64> = segs.iter().map(|s| s.base).collect();
        work.segs.retain(|base, _| present.contains(base));
        let first = segs.partition_point(|s| s.base < work.cursor);
        let order = segs[first..].iter().chain(segs[..first].iter());
        let mut outcome = Ok(());
        for seg in order {
            let mut st = work.segs.get(&seg.base).copied().unwrap_or_default();
            if st.done {
                continue;
            }
            if pass.bytes_walked >= budget {
                pass.more = true;
                work.cursor = seg.base;
                break;
            }
            outcome =
                self.clean_segment(seg, &view, &mut st, budget - pass.bytes_walked, &mut pass);
            if outcome.is_err() {
                // Walked again from its start next time (its holes may be missing).
                work.segs.insert(seg.base, SegWork::default());
                break;
            }
            work.segs.insert(seg.base, st);
            if !st.done && st.resume_at > 0 {
                pass.more = true;
                work.cursor = seg.base;
                break;
            }
        }
        self.cleaner.passes.fetch_add(1, Ordering::Relaxed);
        self.cleaner
            .bytes_punched
            .fetch_add(pass.bytes_punched, Ordering::Relaxed);
        self.cleaner
            .bytes_freed
            .fetch_add(pass.bytes_freed, Ordering::Relaxed);
        outcome.map(|()| pass)
    }

    /// Walks `seg` from `st.resume_at` with at most `budget` bytes, then writes its padding
    /// headers, syncs, and punches.
    fn clean_segment(
        &self,
        seg: &Segment,
        view: &DurableView,
        st: &mut SegWork,
        budget: u64,
        pass: &mut CleanPass,
    ) -> Result<()> {
        pass.segments_walked += 1;
        let plan = self.walk(seg, view, st, budget, pass);
        if plan.holes.is_empty() {
            return Ok(());
        }
        if !plan.headers.is_empty() {
            self.allow_new_entry_kinds()?;
            for &(at, span) in &plan.headers {
                let span = u32::try_from(span).map_err(|_| {
                    StorageError::io(
                        "writing a padding entry",
                        &seg.path,
                        std::io::Error::other("run longer than 4 GiB"),
                    )
                })?;
                seg.write_all_at(at, &[IoSlice::new(&entry::encode_padding(span))])?;
            }
            // The padding headers must be durable before any byte they cover is freed:
            // after a crash a scan finds either a padding or the intact dead entries.
            seg.sync_data()?;
            pass.paddings_written += plan.headers.len();
        }
        if seg.readers_hold_bytes() {
            // A reader may still be sending bytes of an entry that died since it read it;
            // the paddings are written (harmless), the holes wait for a later pass.
            pass.segments_busy += 1;
            *st = SegWork::default();
            return Ok(());
        }
        let before = seg.allocated_bytes();
        for &(at, len, new) in &plan.holes {
            match seg.punch_hole(at, len) {
                Ok(()) => pass.bytes_punched += new,
                Err(StorageError::Io { source, .. })
                    if source.raw_os_error()
                        == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) =>
                {
                    tracing::warn!(path = ?seg.path, "the filesystem cannot punch holes: the cleaner is off; dead entries are freed only with whole segments");
                    self.cleaner.unsupported.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        pass.bytes_freed += before.saturating_sub(seg.allocated_bytes());
        Ok(())
    }

    /// Walks entries of `seg` from `st.resume_at`; returns the headers to write and holes to
    /// punch. Updates `st` (where to resume, live partitions, done).
    fn walk(
        &self,
        seg: &Segment,
        view: &DurableView,
        st: &mut SegWork,
        budget: u64,
        pass: &mut CleanPass,
    ) -> Plan {
        let bytes = seg.bytes();
        let min_run = self.cfg.clean_min_run_bytes;
        let mut plan = Plan::default();
        let mut run: Option<Run> = None;
        let mut at = st.resume_at;
        let mut walked = 0u64;
        let finished = loop {
            if walked >= budget {
                break false;
            }
            let rest = bytes.get(at as usize..).unwrap_or_default();
            if let Some(span) = entry::padding_span(rest) {
                extend_run(&mut run, at, span, true, min_run, &mut plan);
                at += span;
                continue;
            }
            // The end of the segment's data (or damage: nothing after it is touched).
            let Ok(h) = entry::check_header(rest) else {
                break true;
            };
            let span = h.span();
            walked += span;
            // A shared entry lives while any of its partitions holds it.
            let mut holders = vec![h.partition];
            holders.extend(h.others(rest).into_iter().map(|(p, _)| p));
            let live: Vec<PartitionId> = holders
                .into_iter()
                .filter(|p| !view.is_dead(*p, seg.base + at, h.copy))
                .collect();
            if live.is_empty() {
                extend_run(&mut run, at, span, false, min_run, &mut plan);
            } else {
                for p in live {
                    st.live.set(p);
                }
                if let Some(r) = run.take() {
                    plan_run(&r, min_run, &mut plan);
                }
            }
            at += span;
        };
        if let Some(mut r) = run.take() {
            // A run ending where the segment's data ends may also free the block holding
            // its end: the rest of that block was never written (checked: zeros).
            let tail = at.next_multiple_of(BLOCK_BYTES).min(seg.capacity);
            let unused = bytes
                .get(at as usize..tail as usize)
                .is_some_and(|b| b.iter().all(|&x| x == 0));
            if finished && r.end == at && unused {
                r.hole_end = tail;
            }
            plan_run(&r, min_run, &mut plan);
        }
        pass.bytes_walked += walked;
        // The walk read headers through the mapping: its pages need not stay resident.
        seg.drop_resident(st.resume_at, at);
        st.done = finished;
        st.resume_at = if finished { 0 } else { at };
        plan
    }

    /// Before `truncate_to(position)`: when the cut falls inside a padding entry (a run the
    /// cleaner freed), that padding is split at the cut, so no scan ever skips what is
    /// written there after the truncation. The second half's header is made durable first:
    /// at every moment a scan sees the whole padding or both halves, never a gap. A cold
    /// path: walks the segment's headers from its start.
    pub(crate) fn fence_padding_at(&self, position: u64) -> Result<()> {
        let Some(seg) = self.log.segment_at(position) else {
            return Ok(());
        };
        let bytes = seg.bytes();
        let target = position - seg.base;
        let header = ENTRY_HEADER_BYTES as u64;
        let mut at = 0u64;
        while at < target {
            let rest = bytes.get(at as usize..).unwrap_or_default();
            let Some(span) = entry::padding_span(rest) else {
                match entry::check_header(rest) {
                    Ok(h) => at += h.span(),
                    Err(_) => return Ok(()),
                }
                continue;
            };
            let (head, tail) = (target - at, (at + span).saturating_sub(target));
            // Entry boundaries inside a run are at least a batch entry away from its ends.
            if head >= header && tail >= header {
                // Both are shorter than `span`, which fits a u32 (`MAX_RUN_BYTES`).
                let (head, tail) = (head as u32, tail as u32);
                seg.write_all_at(target, &[IoSlice::new(&entry::encode_padding(tail))])?;
                seg.sync_data()?;
                seg.write_all_at(at, &[IoSlice::new(&entry::encode_padding(head))])?;
                return seg.sync_data();
            }
            at += span;
        }
        Ok(())
    }

    /// Makes sure `FORMAT` says padding, copy and shared entries may exist before the
    /// first one is written.
    pub(crate) fn allow_new_entry_kinds(&self) -> Result<()> {
        if !self.cleaner.format_ready.load(Ordering::Acquire) {
            crate::recovery::upgrade_format(&self.cfg.dir)?;
            self.cleaner.format_ready.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Adds the entry at `at` to the current run (starting one, or closing the current one
/// first when the padding's length field could not cover both).
fn extend_run(
    run: &mut Option<Run>,
    at: u64,
    span: u64,
    padding: bool,
    min_run: u64,
    plan: &mut Plan,
) {
    if run
        .as_ref()
        .is_some_and(|r| at + span - r.start > MAX_RUN_BYTES)
        && let Some(r) = run.take()
    {
        plan_run(&r, min_run, plan);
    }
    run.get_or_insert_with(|| Run::new(at))
        .add(at, span, padding);
}

/// Adds what a finished run needs to `plan`: a padding header if it covers more than the
/// run's existing paddings already free (by at least a block), and its hole (punched again
/// when only a padding is there: after a crash the punch may not have happened).
fn plan_run(r: &Run, min_run: u64, plan: &mut Plan) {
    let Some(pad_at) = r.pad_at else {
        return;
    };
    if r.end - pad_at < min_run {
        return;
    }
    let (start, len) = hole(pad_at, r.hole_end);
    if len == 0 {
        return;
    }
    if r.padded {
        plan.holes.push((start, len, 0));
    } else if len >= r.old_hole + BLOCK_BYTES {
        plan.headers.push((pad_at, r.end - pad_at));
        plan.holes.push((start, len, len - r.old_hole));
    }
}

impl Store {
    /// Runs one cleaner pass now (also run after each background retention pass): frees
    /// the blocks of dead commit-log entries below the last durable checkpoint, within
    /// `clean_bytes_per_pass`. Checkpoints first if a log start moved or a partition went
    /// since the last checkpoint; entries written since it are not cleaned: call
    /// [`Store::flush`] first for those.
    pub fn clean(&self) -> Result<CleanPass> {
        self.inner.clean()
    }
}

/// Recovery without a checkpoint (or after a torn `truncate_to`) replays entries a cleaner
/// already turned into padding. A partition whose next batch skips offsets after a padding
/// entry lost them to the cleaner, so all its earlier entries were dead too: it restarts at
/// this batch (`log_start` = its base offset). Returns false when the gap is not explained
/// by a padding entry seen since the partition's last replayed entry (`padding_end`: end
/// of the last padding entry crossed by the replay).
pub(crate) fn cleaned_gap(g: &Partition, base: Offset, padding_end: Option<u64>) -> bool {
    let Some(padding_end) = padding_end else {
        return false;
    };
    // Replayed entries are still pending (nothing is written back during the replay);
    // none means the partition's last entry lies below where the replay started.
    let last = g.cq_pending.last().map(|e| e.position);
    base > g.log_end && last.is_none_or(|p| p < padding_end)
}

/// Restarts partition `g` at `base` (a gap [`cleaned_gap`] explained).
pub(crate) fn skip_cleaned_gap(g: &mut Partition, base: Offset) {
    g.cq_start = g.cq_end;
    g.log_start = base;
    g.log_end = base;
    g.bytes = 0;
    g.start_pos = u64::MAX;
    g.head_max_ts = i64::MIN;
    g.max_ts = -1;
    g.max_ts_offset = -1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(entries: &[(u64, u64, bool)], min_run: u64) -> Plan {
        let mut plan = Plan::default();
        let mut run = None;
        for &(at, span, padding) in entries {
            extend_run(&mut run, at, span, padding, min_run, &mut plan);
        }
        if let Some(r) = run {
            plan_run(&r, min_run, &mut plan);
        }
        plan
    }

    #[test]
    fn only_whole_blocks_after_the_padding_header_are_freed() {
        assert_eq!(hole(0, 4096), (4096, 0));
        assert_eq!(hole(0, 3 * 4096 + 5), (4096, 2 * 4096));
        assert_eq!(hole(4080, 3 * 4096), (4096, 2 * 4096));
        assert_eq!(hole(4081, 3 * 4096), (8192, 4096));
    }

    #[test]
    fn a_run_gets_one_padding_spanning_it_at_a_sector_safe_entry() {
        // Three dead entries from 100: one padding at 100 to the run's end.
        let p = planned(&[(100, 40_000, false), (40_100, 40_000, false)], 64 << 10);
        assert_eq!(p.headers, vec![(100, 80_000)]);
        assert_eq!(p.holes, vec![(4096, 72 * 1024, 72 * 1024)]);
        // A first header crossing a sector boundary stays; the padding goes at the next.
        let p = planned(&[(500, 1000, false), (1500, 80_000, false)], 64 << 10);
        assert_eq!(p.headers, vec![(1500, 80_000)]);
        // Too short: nothing.
        assert!(planned(&[(0, 60_000, false)], 64 << 10).holes.is_empty());
    }

    #[test]
    fn existing_padding_is_punched_again_and_rewritten_only_to_free_more() {
        // A lone padding: no header, its hole again (completes a punch a crash lost).
        let p = planned(&[(0, 100_000, true)], 64 << 10);
        assert!(p.headers.is_empty());
        assert_eq!(p.holes.len(), 1);
        assert_eq!(p.holes[0].2, 0, "nothing newly covered");
        // Followed by a newly dead entry of less than a block: not worth a header.
        assert!(
            planned(&[(0, 100_000, true), (100_000, 100, false)], 64 << 10)
                .headers
                .is_empty()
        );
        // Followed by 64 KiB more: rewritten to span both.
        let p = planned(&[(0, 100_000, true), (100_000, 65_536, false)], 64 << 10);
        assert_eq!(p.headers, vec![(0, 165_536)]);
    }

    #[test]
    fn the_durable_view_decides_by_position() {
        let v = DurableView {
            position: 1 << 20,
            starts: vec![
                (PartitionId(1), 5000, 0),
                (PartitionId(2), u64::MAX, 0),
                (PartitionId(4), 7000, 8000),
            ],
        };
        assert!(v.is_dead(PartitionId(1), 4999, false));
        assert!(!v.is_dead(PartitionId(1), 5000, false));
        assert!(v.is_dead(PartitionId(2), 0, false), "an empty partition");
        assert!(v.is_dead(PartitionId(3), 0, false), "a deleted partition");
        // A compacted partition: its copies in [7000, 8000) and appends from 8000 live;
        // appends below 8000 (copied) and copies outside the range (an older compaction's,
        // or one a crash interrupted) dead.
        assert!(v.is_dead(PartitionId(4), 7500, false));
        assert!(!v.is_dead(PartitionId(4), 8000, false));
        assert!(!v.is_dead(PartitionId(4), 7000, true));
        assert!(v.is_dead(PartitionId(4), 6999, true));
        assert!(v.is_dead(PartitionId(4), 8000, true));
        assert!(
            v.is_dead(PartitionId(1), 6000, true),
            "a copy never committed"
        );
        let newer = DurableView {
            position: 2 << 20,
            starts: vec![
                (PartitionId(1), 5000, 0),
                (PartitionId(2), 9000, 0),
                (PartitionId(4), 7000, 8000),
            ],
        };
        let changed = v.changed_in(&newer);
        let mut two = LiveBits::default();
        two.set(PartitionId(2));
        let mut one = LiveBits::default();
        one.set(PartitionId(1));
        assert!(changed.intersects(&two) && !changed.intersects(&one));
    }
}
