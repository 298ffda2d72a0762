//! One commit-log segment file: fixed capacity, written with `pwritev`, read through a
//! read-only mmap of the whole capacity.
//!
//! Why not write through the mmap: a write fault on a full disk is a SIGBUS, not an error.
//! Why map the whole capacity up front: the file is `set_len` to its capacity at creation
//! (sparse), so the mapping never needs to grow and never maps past EOF.
#![allow(unsafe_code)] // see the SAFETY comments

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::Mmap;

use crate::error::{Result, StorageError};

pub struct Segment {
    /// Global commit-log position of byte 0 of this file.
    pub base: u64,
    /// File length = bytes this segment can hold.
    pub capacity: u64,
    pub path: PathBuf,
    file: File,
    map: Arc<Mmap>,
    /// Segment-relative end of the prefix whose entries this process has checked: written
    /// by it after validation, or read and CRC-checked once. Reads inside it skip the batch
    /// CRC (see `Inner::load_batch`).
    verified: AtomicU64,
    /// When an entry was last written into this segment (ms, the store's clock): no entry
    /// in it was appended later. Time retention keeps an entry until this is past the
    /// retention too (`retention.rs`), so old or missing record timestamps never make an
    /// acknowledged record vanish at once. At open: the file's modification time.
    last_write_ms: AtomicI64,
}

/// An owner for `Bytes::from_owner`: keeps the mapping alive while a reader holds bytes.
struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

pub fn file_name(base: u64) -> String {
    format!("{base:020}.log")
}

impl Segment {
    /// Creates a new, zero-filled (sparse) segment.
    pub fn create(dir: &Path, base: u64, capacity: u64) -> Result<Segment> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io("creating segment", &path, e))?;
        file.set_len(capacity)
            .map_err(|e| StorageError::io("sizing segment", &path, e))?;
        Self::map(base, path, file)
    }

    /// Opens an existing segment; its capacity is its file length.
    pub fn open(path: PathBuf, base: u64) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("opening segment", &path, e))?;
        Self::map(base, path, file)
    }

    fn map(base: u64, path: PathBuf, file: File) -> Result<Segment> {
        let capacity = file
            .metadata()
            .map_err(|e| StorageError::io("stat segment", &path, e))?
            .len();
        // SAFETY: the file is only ever extended by this process at creation and shrunk
        // never; holes are punched (which reads back as zeros) instead of truncating, so the
        // mapping never points past EOF. Other processes must not modify the store.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| StorageError::io("mmap", &path, e))?;
        // Not written since it was modified on disk; a store whose clock runs behind the
        // system's (tests) counts it as written now.
        let modified_ms = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(i64::MAX, |d| d.as_millis() as i64);
        Ok(Segment {
            base,
            capacity,
            path,
            file,
            map: Arc::new(map),
            verified: AtomicU64::new(0),
            last_write_ms: AtomicI64::new(modified_ms),
        })
    }

    pub fn end(&self) -> u64 {
        self.base + self.capacity
    }

    /// When an entry was last written here (see the field); never later than `now_ms`.
    pub fn last_write_ms(&self, now_ms: i64) -> i64 {
        self.last_write_ms.load(Ordering::Relaxed).min(now_ms)
    }

    /// Records a write at `now_ms`.
    pub fn touch(&self, now_ms: i64) {
        self.last_write_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The mapped bytes of the whole segment.
    pub fn bytes(&self) -> &[u8] {
        &self.map[..]
    }

    /// Unmaps the pages of `[from, to)` (segment-relative) from this process: a scan that
    /// touched them (the cleaner's walk) does not leave them counted in the broker's
    /// resident memory. The page cache keeps them; a later read maps them again. Errors
    /// are ignored (only memory accounting depends on it).
    pub fn drop_resident(&self, from: u64, to: u64) {
        const PAGE: u64 = 4096;
        let from = from.next_multiple_of(PAGE);
        let to = to.min(self.map.len() as u64) / PAGE * PAGE;
        if to <= from {
            return;
        }
        // SAFETY: the mapping is read-only and shared (`Mmap::map` of a file): MADV_DONTNEED
        // only drops this process's page-table entries, and the next access maps the same
        // page-cache page again, so bytes borrowed from the range (zero-copy reads) keep
        // their contents.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                from as usize,
                (to - from) as usize,
            )
        };
    }

    /// True if `[at, at+len)` (segment-relative) lies in the checked prefix.
    pub fn is_verified(&self, at: u64, len: u64) -> bool {
        at + len <= self.verified.load(Ordering::Acquire)
    }

    /// Records that the entries in `[at, at+len)` are checked; extends the checked prefix
    /// when the range touches it (a range past it is not remembered).
    pub fn mark_verified(&self, at: u64, len: u64) {
        let _ = self
            .verified
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (at <= v && at + len > v).then_some(at + len)
            });
    }

    /// Zero-copy `Bytes` over `[at, at+len)` (segment-relative).
    pub fn slice(&self, at: usize, len: usize) -> Bytes {
        Bytes::from_owner(MapSlice {
            map: self.map.clone(),
            start: at,
            len,
        })
    }

    /// Writes all of `bufs` at segment-relative `at`, retrying short writes.
    pub fn write_all_at(&self, at: u64, bufs: &[IoSlice<'_>]) -> Result<()> {
        // Usually one pwritev writes everything; the slices are copied (to be advanced) only
        // after a short write. At most IOV_MAX (1024) slices go to one call.
        const IOV_MAX: usize = 1024;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if bufs.len() <= IOV_MAX && rustix::io::pwritev(&self.file, bufs, at) == Ok(total) {
            return Ok(());
        }
        let mut bufs: Vec<IoSlice<'_>> = bufs.to_vec();
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        let mut pos = at;
        while !slices.is_empty() {
            let n = slices.len().min(IOV_MAX);
            let written = match rustix::io::pwritev(&self.file, &slices[..n], pos) {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(StorageError::io("writing segment", &self.path, e));
                }
                Ok(w) => w,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(StorageError::io("writing segment", &self.path, e.into())),
            };
            pos += written as u64;
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }

    /// Makes `[at, capacity)` read as zeros again and frees its blocks, without changing the
    /// file length (so the mapping stays valid). Used after a torn tail, a failed write and
    /// `truncate_to`: stale entries past the end must never be found by a later scan.
    pub fn zero_from(&self, at: u64) -> Result<()> {
        if at >= self.capacity {
            return Ok(());
        }
        self.verified.fetch_min(at, Ordering::AcqRel);
        let mode = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        if rustix::fs::fallocate(&self.file, mode, at, self.capacity - at).is_ok() {
            return Ok(());
        }
        // Filesystems without hole punching: write zeros in 1 MiB steps.
        let zeros = vec![0u8; 1 << 20];
        let mut pos = at;
        while pos < self.capacity {
            let n = ((self.capacity - pos) as usize).min(zeros.len());
            self.write_all_at(pos, &[IoSlice::new(&zeros[..n])])?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Frees the blocks of `[at, at+len)` (segment-relative, both multiples of the block
    /// size for anything to be freed) without changing the file length: the range reads as
    /// zeros afterwards, through the mapping too. The cleaner's tool (`cleaner.rs`); unlike
    /// [`Segment::zero_from`] there is no fallback, since writing zeros frees nothing.
    pub fn punch_hole(&self, at: u64, len: u64) -> Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        if len == 0 {
            return Ok(());
        }
        let mode = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        fallocate(&self.file, mode, at, len)
            .map_err(|e| StorageError::io("punching a hole in segment", &self.path, e.into()))
    }

    /// True while a reader holds bytes of this segment (a `Bytes` from [`Segment::slice`]):
    /// the cleaner then leaves the segment for a later pass, so bytes already handed out
    /// never turn into zeros under their reader.
    pub fn readers_hold_bytes(&self) -> bool {
        Arc::strong_count(&self.map) > 1
    }

    pub fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync segment", &self.path, e))
    }

    /// Bytes actually allocated on disk (the file is sparse).
    pub fn allocated_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map(|m| m.blocks() * 512).unwrap_or(0)
    }
}
