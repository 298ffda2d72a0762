//! The commit log: every partition's batches interleaved in fixed-capacity segment files.
//!
//! Positions are global: segment files are named by the position of their first byte, and an
//! entry never spans two segments (the rest of a segment that cannot hold the next entry stays
//! zero). One writer at a time (the `Writer` behind a mutex, held by the store while it also
//! assigns offsets); readers only need the segment map.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::Clock;
use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::entry::ENTRY_HEADER_BYTES;
use crate::error::{Result, StorageError};
use crate::segment::Segment;

pub struct CommitLog {
    pub dir: PathBuf,
    segment_bytes: u64,
    /// The store's clock: when each segment was last written (time retention reads it).
    clock: Arc<dyn Clock>,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// Everything below this position is known durable (fdatasync returned).
    synced: AtomicU64,
    /// Serialises `sync` calls: a second caller must not report a position durable while the
    /// first is still inside the fdatasync that covers it.
    sync_lock: Mutex<()>,
    /// Set when an fdatasync failed. After a failed fsync Linux may have dropped the dirty
    /// pages (marking them clean), so a later successful fsync proves nothing: the log
    /// refuses appends until the store is reopened and recovery re-reads what is on disk.
    poisoned: std::sync::atomic::AtomicBool,
    /// Test hook: fail writes with ENOSPC while set.
    pub(crate) inject_enospc: std::sync::atomic::AtomicBool,
}

/// Writer state; whoever holds it may append.
pub struct Writer {
    /// Next global write position.
    pub pos: u64,
    active: Option<Arc<Segment>>,
    /// Segments written since the last sync snapshot.
    dirty: Vec<Arc<Segment>>,
}

impl CommitLog {
    /// Opens the segment files of `dir` (created if absent). The write position is set by
    /// recovery via [`CommitLog::set_end`].
    pub fn open(dir: &Path, segment_bytes: u64, clock: Arc<dyn Clock>) -> Result<CommitLog> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating dir", dir, e))?;
        let mut segments = BTreeMap::new();
        let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StorageError::io("listing", dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(".log") else {
                continue;
            };
            let Ok(base) = stem.parse::<u64>() else {
                continue;
            };
            let seg = Segment::open(ent.path(), base)?;
            segments.insert(base, Arc::new(seg));
        }
        for seg in segments.values() {
            // A clock behind the system's (tests) must not see writes in its future.
            let now = clock.now_ms();
            seg.touch(seg.last_write_ms(now));
        }
        Ok(CommitLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            clock,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                pos: 0,
                active: None,
                dirty: Vec::new(),
            }),
            synced: AtomicU64::new(0),
            sync_lock: Mutex::new(()),
            poisoned: std::sync::atomic::AtomicBool::new(false),
            inject_enospc: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }

    /// All segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().values().cloned().collect()
    }

    /// The segment holding global position `pos`.
    pub fn segment_at(&self, pos: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let (_, seg) = segs.range(..=pos).next_back()?;
        (pos < seg.end()).then(|| seg.clone())
    }

    /// First position still held (start of the oldest segment), or the write position.
    pub fn start(&self) -> u64 {
        self.segments.read().keys().next().copied().unwrap_or(0)
    }

    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Sets the write position after recovery: everything from `end` on is zeroed and later
    /// segments are deleted.
    pub fn set_end(&self, end: u64) -> Result<()> {
        let mut w = self.writer.lock();
        self.cut(&mut w, end)?;
        self.synced.store(end, Ordering::Release);
        Ok(())
    }

    fn cut(&self, w: &mut Writer, end: u64) -> Result<()> {
        let doomed: Vec<Arc<Segment>> = {
            let segs = self.segments.read();
            segs.range(end..).map(|(_, s)| s.clone()).collect()
        };
        for seg in doomed {
            self.segments.write().remove(&seg.base);
            std::fs::remove_file(&seg.path)
                .map_err(|e| StorageError::io("deleting segment", &seg.path, e))?;
        }
        w.active = self.segment_at(end);
        if let Some(seg) = &w.active {
            seg.zero_from(end - seg.base)?;
            // The zeroing must reach disk before anything written later can be trusted by
            // a scan.
            seg.sync_data()?;
        }
        w.dirty.clear();
        w.pos = end;
        self.synced.fetch_min(end, Ordering::AcqRel);
        Ok(())
    }

    /// Truncates the log to `end` (used by `truncate_to`).
    pub fn truncate(&self, w: &mut Writer, end: u64) -> Result<()> {
        if end > w.pos {
            return Ok(());
        }
        self.cut(w, end)
    }

    /// Appends entries (each a header and a batch); returns the global position of each.
    /// All or nothing: on error nothing is left that a recovery scan could find, and the
    /// write position is unchanged.
    pub fn append(&self, w: &mut Writer, entries: &[([u8; 16], &[u8])]) -> Result<Vec<u64>> {
        let start = w.pos;
        let start_active = w.active.clone();
        match self.append_inner(w, entries) {
            Ok(p) => Ok(p),
            Err(e) => {
                // Undo: zero what may have been written, go back to where we were.
                for seg in self.segments.read().range(..).map(|(_, s)| s.clone()) {
                    if seg.end() > start {
                        let from = start.saturating_sub(seg.base);
                        let _ = seg.zero_from(from);
                    }
                }
                w.pos = start;
                w.active = start_active;
                Err(e)
            }
        }
    }

    fn append_inner(&self, w: &mut Writer, entries: &[([u8; 16], &[u8])]) -> Result<Vec<u64>> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::io(
                "appending after a failed fdatasync (reopen the store)",
                &self.dir,
                std::io::Error::other("commit log poisoned"),
            ));
        }
        let mut positions = Vec::with_capacity(entries.len());
        let mut run: Vec<IoSlice<'_>> = Vec::with_capacity(entries.len() * 2);
        let mut run_start = w.pos;
        for (hdr, body) in entries {
            let size = (ENTRY_HEADER_BYTES + body.len()) as u64;
            let fits = w.active.as_ref().is_some_and(|s| w.pos + size <= s.end());
            if !fits {
                if !run.is_empty() {
                    self.write_run(w, run_start, &run)?;
                    run.clear();
                }
                self.roll(w, size)?;
                run_start = w.pos;
            }
            positions.push(w.pos);
            run.push(IoSlice::new(hdr));
            run.push(IoSlice::new(body));
            w.pos += size;
        }
        if !run.is_empty() {
            self.write_run(w, run_start, &run)?;
        }
        Ok(positions)
    }

    fn write_run(&self, w: &mut Writer, at: u64, run: &[IoSlice<'_>]) -> Result<()> {
        let seg = w.active.clone().ok_or(StorageError::Closed)?;
        if self.inject_enospc.load(Ordering::Relaxed) {
            return Err(StorageError::io(
                "writing segment",
                &seg.path,
                std::io::Error::from(rustix::io::Errno::NOSPC),
            ));
        }
        seg.write_all_at(at - seg.base, run)?;
        seg.touch(self.clock.now_ms());
        // Every entry handed to the log was validated (batch CRC) before this write.
        let len: usize = run.iter().map(|s| s.len()).sum();
        seg.mark_verified(at - seg.base, len as u64);
        if !w.dirty.last().is_some_and(|d| Arc::ptr_eq(d, &seg)) {
            w.dirty.push(seg);
        }
        Ok(())
    }

    /// Moves the writer to a new segment able to hold an entry of `size` bytes.
    fn roll(&self, w: &mut Writer, size: u64) -> Result<()> {
        let base = match &w.active {
            Some(seg) => seg.end(),
            None => w.pos,
        };
        let capacity = self.segment_bytes.max(size);
        let existing = self.segments.read().get(&base).cloned();
        let seg = match existing {
            Some(seg) if seg.capacity >= size => seg,
            Some(seg) => {
                // An empty leftover from a failed append that is too small: replace it.
                self.segments.write().remove(&base);
                std::fs::remove_file(&seg.path)
                    .map_err(|e| StorageError::io("deleting segment", &seg.path, e))?;
                self.create_segment(base, capacity)?
            }
            None => self.create_segment(base, capacity)?,
        };
        w.active = Some(seg);
        w.pos = base;
        Ok(())
    }

    /// Creates a zero-filled segment over `[base, base + len)`, where a segment file is
    /// missing or was truncated (repair only; the range must not overlap a segment).
    pub fn fill_gap(&self, base: u64, len: u64) -> Result<()> {
        debug_assert!(self.segment_at(base).is_none());
        self.create_segment(base, len).map(|_| ())
    }

    fn create_segment(&self, base: u64, capacity: u64) -> Result<Arc<Segment>> {
        let seg = Arc::new(Segment::create(&self.dir, base, capacity)?);
        sync_dir(&self.dir)?;
        self.segments.write().insert(base, seg.clone());
        Ok(seg)
    }

    /// fdatasyncs every segment written since the last call; returns the durable position and
    /// how many fdatasync calls that took. Runs without the writer lock except for taking the
    /// snapshot, so appends continue while the disk works (that is what makes group commit
    /// batch).
    pub fn sync_counted(&self) -> Result<(u64, usize)> {
        let _one_at_a_time = self.sync_lock.lock();
        let (pos, dirty) = {
            let mut w = self.writer.lock();
            (w.pos, std::mem::take(&mut w.dirty))
        };
        for (i, seg) in dirty.iter().enumerate() {
            if let Err(e) = seg.sync_data() {
                self.poisoned.store(true, Ordering::Release);
                // Still dirty: the next sync must cover them again.
                let mut w = self.writer.lock();
                let mut again = dirty[i..].to_vec();
                again.append(&mut w.dirty);
                w.dirty = again;
                return Err(e);
            }
        }
        self.synced.fetch_max(pos, Ordering::AcqRel);
        Ok((pos, dirty.len()))
    }

    /// Like [`CommitLog::sync`] for a caller already holding the writer.
    pub fn sync_locked(&self, w: &mut Writer) -> Result<u64> {
        // A concurrent `sync` may hold segments taken from `dirty` mid-fsync, so sync every
        // segment that may hold undurable bytes rather than trusting `dirty`.
        let synced = self.synced();
        for seg in self.segments() {
            if seg.end() > synced && seg.base < w.pos {
                seg.sync_data()
                    .inspect_err(|_| self.poisoned.store(true, Ordering::Release))?;
            }
        }
        self.synced.fetch_max(w.pos, Ordering::AcqRel);
        Ok(w.pos)
    }

    /// The first segment starting at or after `pos`.
    pub fn segment_from(&self, pos: u64) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .range(pos..)
            .next()
            .map(|(_, s)| s.clone())
    }

    /// Deletes whole segments that end at or below `pos` (never the active one).
    pub fn delete_segments_below(&self, pos: u64) -> Result<usize> {
        let w = self.writer.lock();
        let doomed: Vec<Arc<Segment>> = self
            .segments
            .read()
            .values()
            .filter(|s| s.end() <= pos && s.end() <= w.pos)
            .filter(|s| !w.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, s)))
            .cloned()
            .collect();
        drop(w);
        for seg in &doomed {
            self.segments.write().remove(&seg.base);
            std::fs::remove_file(&seg.path)
                .map_err(|e| StorageError::io("deleting segment", &seg.path, e))?;
        }
        Ok(doomed.len())
    }
}

/// fsync a directory so a created/renamed/deleted entry in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}
