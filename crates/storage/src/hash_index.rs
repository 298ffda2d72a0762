//! Store-wide hash index: message key / message id → (partition, offset, commit-log position),
//! RocketMQ IndexFile style (format and recovery rules: `docs/storage-format.md` §Hash index).
//!
//! Files `hindex/<seq>.hix`: a 40-byte header, a fixed slot table (`u32` newest entry number
//! per slot) and 40-byte entries appended in commit-log order, each linking to the previous
//! entry of its slot. The newest file is *active*: its table lives in memory and new entries
//! collect in an in-memory tail, handed at 1 MiB to the writer thread
//! ([`HashIndex::run_writer`]), written by the background flush and by [`HashIndex::sync`]
//! (checkpoint: tail, changed table pages, header, fdatasync). Older files are *sealed*, read
//! with `pread`.
//!
//! Invariants:
//! - entries of a file are numbered `1..=count`; an entry's `prev` is `< ` its number and in
//!   the same slot; the table holds each slot's newest entry;
//! - entries `1..=written` of the active file are in the file, then come those of
//!   `inflight` (being written by the writer thread), then those of `tail`, up to `count`;
//! - nothing here is trusted as an answer: callers confirm every candidate by decoding.
//!
//! Memory: one slot table (`slots × 4` bytes) for the whole store, none per partition; file
//! descriptors: one per kept file (bounded by `files_max`).
#![allow(unsafe_code)] // see the SAFETY comments

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::PartitionId;
use parking_lot::{Condvar, Mutex};

use crate::error::{Result, StorageError};

pub const KIND_KEY: u8 = 1;
pub const KIND_ID: u8 = 2;
const MAGIC: &[u8; 4] = b"SLHX";
const VERSION: u8 = 1;
const HEADER_BYTES: u64 = 40;
pub const ENTRY_BYTES: usize = 40;
/// The active file's tail is handed to the writer thread once it holds this many entries
/// (1 MiB encoded).
const TAIL_WRITE_ENTRIES: usize = (1 << 20) / ENTRY_BYTES;
/// The append path writes the tail itself past this (the writer thread is behind, or not
/// running yet: recovery): a bound on memory.
const TAIL_MAX_ENTRIES: usize = 16 * TAIL_WRITE_ENTRIES;
/// Slots per dirty-tracking page of the table (4 KiB).
const PAGE_SLOTS: usize = 1024;

/// FNV-1a 64 over the kind byte and the key / id bytes (stored on disk: never change it).
pub fn hash(kind: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(&kind).chain(bytes) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One record to index, decoded before the commit-log write: offset relative to its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexKey {
    pub hash: u64,
    pub offset_delta: i32,
    pub kind: u8,
}

/// One on-disk entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HEntry {
    pub hash: u64,
    pub position: u64,
    pub offset: i64,
    pub partition: PartitionId,
    pub prev: u32,
    pub kind: u8,
}

impl HEntry {
    /// The entry for one record's key or id in the batch at commit-log `position`
    /// (`prev` is set when it is linked into its slot's chain).
    fn of(p: PartitionId, position: u64, base_offset: i64, k: &IndexKey) -> HEntry {
        HEntry {
            hash: k.hash,
            position,
            offset: base_offset + k.offset_delta as i64,
            partition: p,
            prev: 0,
            kind: k.kind,
        }
    }

    pub fn encode(&self) -> [u8; ENTRY_BYTES] {
        let mut b = [0u8; ENTRY_BYTES];
        b[0..8].copy_from_slice(&self.hash.to_le_bytes());
        b[8..16].copy_from_slice(&self.position.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.partition.0.to_le_bytes());
        b[28..32].copy_from_slice(&self.prev.to_le_bytes());
        b[32] = self.kind;
        let crc = crc_fast::crc32_iscsi(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` if the CRC fails.
    pub fn decode(b: &[u8]) -> Option<HEntry> {
        let b: &[u8; ENTRY_BYTES] = b.try_into().ok()?;
        if crc_fast::crc32_iscsi(&b[..36]).to_le_bytes() != b[36..40] {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(HEntry {
            hash: u64_at(0),
            position: u64_at(8),
            offset: u64_at(16) as i64,
            partition: PartitionId(u32_at(24)),
            prev: u32_at(28),
            kind: b[32],
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    slots: u32,
    capacity: u32,
    first_pos: u64,
    table_n: u32,
    table_crc: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut b = [0u8; HEADER_BYTES as usize];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[8..12].copy_from_slice(&self.slots.to_le_bytes());
        b[12..16].copy_from_slice(&self.capacity.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_pos.to_le_bytes());
        b[24..28].copy_from_slice(&self.table_n.to_le_bytes());
        b[28..32].copy_from_slice(&self.table_crc.to_le_bytes());
        let crc = crc_fast::crc32_iscsi(&b[..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_BYTES as usize || &b[0..4] != MAGIC || b[4] != VERSION {
            return None;
        }
        if crc_fast::crc32_iscsi(&b[..36]).to_le_bytes() != b[36..40] {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let h = Header {
            slots: u32_at(8),
            capacity: u32_at(12),
            first_pos: u64::from_le_bytes(b[16..24].try_into().ok()?),
            table_n: u32_at(24),
            table_crc: u32_at(28),
        };
        (h.slots > 0 && h.capacity > 0 && h.table_n <= h.capacity).then_some(h)
    }
}

/// Geometry and limits from `StoreConfig`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub slots: u32,
    pub capacity: u32,
    pub files_max: usize,
}

/// One index file (active or sealed). Clones share the open file.
#[derive(Clone)]
struct IndexFile {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    slots: u32,
    capacity: u32,
    first_pos: u64,
    /// Entries `1..=count` exist.
    count: u32,
    /// Sealed: the table CRC has been checked since open.
    table_checked: bool,
    /// Found damaged: rebuilt from the commit log before its next use.
    damaged: bool,
}

impl IndexFile {
    fn entry_at(&self, k: u32) -> u64 {
        HEADER_BYTES + 4 * self.slots as u64 + ENTRY_BYTES as u64 * (k as u64 - 1)
    }

    /// Where the entries start. A file is created this long (its table a hole) and grows
    /// as entries are appended: writing past EOF measured ~2× faster here than filling
    /// the holes of a preallocated sparse file.
    fn table_end(&self) -> u64 {
        HEADER_BYTES + 4 * self.slots as u64
    }

    fn io(&self, op: &'static str, e: std::io::Error) -> StorageError {
        StorageError::io(op, &self.path, e)
    }

    /// Entry `k`; `None` if it fails its CRC or lies past the end of the file.
    fn read_entry(&self, k: u32) -> Result<Option<HEntry>> {
        let mut b = [0u8; ENTRY_BYTES];
        match self.file.read_exact_at(&mut b, self.entry_at(k)) {
            Ok(()) => Ok(HEntry::decode(&b)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(self.io("reading", e)),
        }
    }

    fn read_slot(&self, s: u32) -> Result<u32> {
        let mut b = [0u8; 4];
        self.file
            .read_exact_at(&mut b, HEADER_BYTES + 4 * s as u64)
            .map_err(|e| self.io("reading", e))?;
        Ok(u32::from_le_bytes(b))
    }

    fn header(&self, table_n: u32, table_crc: u32) -> Header {
        Header {
            slots: self.slots,
            capacity: self.capacity,
            first_pos: self.first_pos,
            table_n,
            table_crc,
        }
    }

    fn write_header(&self, h: &Header) -> Result<()> {
        self.file
            .write_all_at(&h.encode(), 0)
            .map_err(|e| self.io("writing", e))
    }

    /// Reads the whole slot table.
    fn read_table(&self) -> Result<Vec<u32>> {
        let mut raw = vec![0u8; 4 * self.slots as usize];
        self.file
            .read_exact_at(&mut raw, HEADER_BYTES)
            .map_err(|e| self.io("reading", e))?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.hix"))
}

/// A file being written: the active one, or a sealed one being rebuilt.
struct Writable {
    f: IndexFile,
    table: Vec<u32>,
    /// One bit per `PAGE_SLOTS` slots changed since the table was last written.
    dirty: Vec<u64>,
    /// Entries not yet handed off, decoded: encoding (and its CRC) is left to whoever
    /// writes them, off the append path.
    tail: Vec<HEntry>,
    /// Entries `written+1 ..= written+n` being written by the writer thread (the tail holds
    /// the ones after them).
    inflight: Option<Arc<Vec<HEntry>>>,
    /// A cleared buffer for the next tail (the writer thread hands it back).
    spare: Vec<HEntry>,
    written: u32,
    /// `table_n` of the header on disk.
    header_n: u32,
}

impl Writable {
    fn create(path: PathBuf, seq: u64, lim: Limits, first_pos: u64) -> Result<Writable> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StorageError::io("creating", &path, e))?;
        let f = IndexFile {
            seq,
            path,
            file: Arc::new(file),
            slots: lim.slots,
            capacity: lim.capacity,
            first_pos,
            count: 0,
            table_checked: true,
            damaged: false,
        };
        f.file
            .set_len(f.table_end())
            .map_err(|e| f.io("sizing", e))?;
        let table = vec![0u32; lim.slots as usize];
        f.write_header(&f.header(0, table_crc(&table)))?;
        Ok(Writable {
            f,
            dirty: vec![0; (lim.slots as usize).div_ceil(PAGE_SLOTS).div_ceil(64)],
            table,
            tail: Vec::new(),
            inflight: None,
            spare: Vec::new(),
            written: 0,
            header_n: 0,
        })
    }

    fn full(&self) -> bool {
        self.f.count >= self.f.capacity
    }

    fn add(&mut self, mut e: HEntry) -> Result<()> {
        debug_assert!(!self.full());
        let s = (e.hash % self.f.slots as u64) as usize;
        let k = self.f.count + 1;
        e.prev = self.table[s];
        self.table[s] = k;
        self.dirty[s / PAGE_SLOTS / 64] |= 1 << (s / PAGE_SLOTS % 64);
        self.tail.push(e);
        self.f.count = k;
        Ok(())
    }

    fn inflight_n(&self) -> u32 {
        self.inflight.as_ref().map_or(0, |b| b.len() as u32)
    }

    /// After an add: hands a full tail to the writer thread (true: wake it), or writes it
    /// here when the writer is too far behind.
    fn hand_off(&mut self) -> bool {
        if self.tail.len() < TAIL_WRITE_ENTRIES {
            return false;
        }
        if self.inflight.is_none() {
            let next = std::mem::take(&mut self.spare);
            self.inflight = Some(Arc::new(std::mem::replace(&mut self.tail, next)));
            return true;
        }
        if self.tail.len() >= TAIL_MAX_ENTRIES
            && let Err(err) = self.write_tail()
        {
            // Left in memory; the next write retries it.
            tracing::warn!(error = %err, "hash index write failed; will retry");
        }
        false
    }

    fn entry(&self, k: u32) -> Result<Option<HEntry>> {
        if k <= self.written {
            return self.f.read_entry(k);
        }
        let mut i = (k - self.written - 1) as usize;
        if let Some(b) = &self.inflight {
            if i < b.len() {
                return Ok(b.get(i).copied());
            }
            i -= b.len();
        }
        Ok(self.tail.get(i).copied())
    }

    /// Writes the in-flight buffer (if the writer thread has not yet) and the tail. The
    /// writer thread may still be writing the same bytes to the same place: harmless, and
    /// it will not advance `written` again (see [`HashIndex::run_writer`]).
    fn write_tail(&mut self) -> Result<()> {
        if let Some(b) = &self.inflight {
            self.f
                .file
                .write_all_at(&encode_all(b), self.f.entry_at(self.written + 1))
                .map_err(|e| self.f.io("writing", e))?;
            self.written += self.inflight_n();
            self.inflight = None;
        }
        if self.tail.is_empty() {
            return Ok(());
        }
        self.f
            .file
            .write_all_at(&encode_all(&self.tail), self.f.entry_at(self.written + 1))
            .map_err(|e| self.f.io("writing", e))?;
        self.written = self.f.count;
        self.tail.clear();
        if self.tail.capacity() > 2 * TAIL_MAX_ENTRIES {
            self.tail = Vec::new();
        }
        Ok(())
    }

    /// Writes the tail, changed table pages and the header (page cache only).
    fn write_out(&mut self, all_pages: bool) -> Result<()> {
        self.write_tail()?;
        let pages = (self.f.slots as usize).div_ceil(PAGE_SLOTS);
        let dirty = |d: &[u64], page: usize| all_pages || d[page / 64] & (1 << (page % 64)) != 0;
        let bytes = table_bytes(&self.table);
        let mut changed = false;
        let mut page = 0;
        while page < pages {
            if !dirty(&self.dirty, page) {
                page += 1;
                continue;
            }
            // One write per run of dirty pages.
            let first = page;
            while page < pages && dirty(&self.dirty, page) {
                page += 1;
            }
            let lo = first * PAGE_SLOTS * 4;
            let hi = (page * PAGE_SLOTS * 4).min(bytes.len());
            self.f
                .file
                .write_all_at(&bytes[lo..hi], HEADER_BYTES + lo as u64)
                .map_err(|e| self.f.io("writing", e))?;
            changed = true;
        }
        drop(bytes);
        self.dirty.iter_mut().for_each(|d| *d = 0);
        if changed || self.header_n != self.f.count {
            let h = self.f.header(self.f.count, table_crc(&self.table));
            self.f.write_header(&h)?;
            self.header_n = self.f.count;
        }
        Ok(())
    }

    /// Rebuilds the table from entries `1..=count` (after a crash or a truncation); false if
    /// an entry is damaged. Reads the file in 1 MiB steps.
    fn rebuild_table(&mut self) -> Result<bool> {
        self.table.iter_mut().for_each(|v| *v = 0);
        self.dirty.iter_mut().for_each(|v| *v = u64::MAX);
        let step = TAIL_WRITE_ENTRIES as u32;
        let mut buf = Vec::new();
        let mut k = 1;
        while k <= self.f.count {
            let n = step.min(self.f.count - k + 1);
            if k + n - 1 <= self.written {
                buf.resize(n as usize * ENTRY_BYTES, 0);
                self.f
                    .file
                    .read_exact_at(&mut buf, self.f.entry_at(k))
                    .map_err(|e| self.f.io("reading", e))?;
            } else {
                buf.clear();
                for j in k..k + n {
                    let e = self
                        .entry(j)?
                        .map(|e| e.encode())
                        .unwrap_or([0; ENTRY_BYTES]);
                    buf.extend_from_slice(&e);
                }
            }
            for (i, b) in buf.chunks_exact(ENTRY_BYTES).enumerate() {
                let j = k + i as u32;
                let Some(e) = HEntry::decode(b).filter(|e| e.prev < j) else {
                    return Ok(false);
                };
                self.table[(e.hash % self.f.slots as u64) as usize] = j;
            }
            k += n;
        }
        Ok(true)
    }
}

/// Entries as their on-disk bytes.
fn encode_all(entries: &[HEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    entries
        .iter()
        .for_each(|e| out.extend_from_slice(&e.encode()));
    out
}

fn table_crc(table: &[u32]) -> u32 {
    crc_fast::crc32_iscsi(&table_bytes(table))
}

/// The slot table as its on-disk bytes (little-endian `u32`s), without a copy where the
/// target is little-endian (every target Sluice runs on).
#[cfg(target_endian = "little")]
fn table_bytes(table: &[u32]) -> std::borrow::Cow<'_, [u8]> {
    // SAFETY: `u32` has no padding and every byte is a valid `u8`; the length is the table's
    // size in bytes; on a little-endian target the in-memory bytes are the encoding.
    std::borrow::Cow::Borrowed(unsafe {
        std::slice::from_raw_parts(table.as_ptr().cast::<u8>(), std::mem::size_of_val(table))
    })
}

#[cfg(not(target_endian = "little"))]
fn table_bytes(table: &[u32]) -> std::borrow::Cow<'_, [u8]> {
    std::borrow::Cow::Owned(table.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Result of walking the chains.
pub enum Walk {
    Found(Vec<HEntry>),
    /// File `seq` is damaged: rebuild it, then walk again.
    Damaged(u64),
}

struct State {
    /// Oldest first.
    sealed: Vec<IndexFile>,
    active: Writable,
    /// Sealed files not yet fdatasynced (made durable by the next checkpoint).
    unsynced: Vec<Arc<File>>,
    /// (seq, table entries, first position) of the active file at its last fdatasync.
    synced: Option<(u64, u32, u64)>,
    /// A file was created or renamed since the directory was last fsynced.
    dir_dirty: bool,
    /// Tells the writer thread to exit.
    shutdown: bool,
}

/// Lock order: `io` → `state`. The append path takes only `state`; whatever moves the
/// active file's entries (truncation, reset) takes `io` first, so the writer thread's
/// `pwrite` (done holding `io` but not `state`) can never land on entries written after it.
pub struct HashIndex {
    dir: PathBuf,
    lim: Limits,
    state: Mutex<State>,
    io: Mutex<()>,
    /// Wakes the writer thread (a tail was handed off, or shutdown).
    wake: Condvar,
}

/// What [`HashIndex::open`] found.
pub struct Opened {
    pub index: HashIndex,
    /// No index file existed: the commit log below the checkpoint must be re-indexed.
    pub rebuild_all: bool,
}

impl HashIndex {
    /// Opens `dir` (creating it) given the checkpoint position (format doc: "Opening");
    /// `log_start` is the commit log's first position (a new file starts there).
    pub fn open(dir: &Path, lim: Limits, ckpt_pos: u64, log_start: u64) -> Result<Opened> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating dir", dir, e))?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        let rd = std::fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StorageError::io("listing", dir, e))?;
            let path = ent.path();
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
            } else if let Some(seq) = name.strip_suffix(".hix").and_then(|s| s.parse().ok()) {
                found.push((seq, path));
            }
        }
        found.sort();
        let rebuild_all = found.is_empty();
        let mut files: Vec<(IndexFile, Option<Header>)> = Vec::new();
        for (seq, path) in found {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| StorageError::io("opening", &path, e))?;
            let mut hb = [0u8; HEADER_BYTES as usize];
            let header = file
                .read_exact_at(&mut hb, 0)
                .ok()
                .and_then(|_| Header::decode(&hb));
            let prev_first = files.last().map(|(f, _)| f.first_pos).unwrap_or(0);
            if let Some(h) = header
                && h.first_pos > ckpt_pos
            {
                // Created after the checkpoint: the replay recreates its entries.
                drop(file);
                remove(&path)?;
                continue;
            }
            let f = match header {
                Some(h) => IndexFile {
                    seq,
                    path,
                    file: Arc::new(file),
                    slots: h.slots,
                    capacity: h.capacity,
                    first_pos: h.first_pos,
                    count: h.table_n,
                    table_checked: false,
                    damaged: false,
                },
                None => {
                    tracing::warn!(path = %path.display(), "hash index header damaged; will rebuild the file from the commit log");
                    IndexFile {
                        seq,
                        path,
                        file: Arc::new(file),
                        slots: lim.slots,
                        capacity: lim.capacity,
                        first_pos: prev_first,
                        count: 0,
                        table_checked: true,
                        damaged: true,
                    }
                }
            };
            files.push((f, header));
        }
        let active = match files.pop() {
            None => {
                let seq = 1;
                Writable::create(file_path(dir, seq), seq, lim, log_start.min(ckpt_pos))?
            }
            Some((f, header)) => Self::recover_active(f, header, ckpt_pos)?,
        };
        let index = HashIndex {
            dir: dir.to_path_buf(),
            lim,
            state: Mutex::new(State {
                sealed: files.into_iter().map(|(f, _)| f).collect(),
                active,
                unsynced: Vec::new(),
                synced: None,
                dir_dirty: true,
                shutdown: false,
            }),
            io: Mutex::new(()),
            wake: Condvar::new(),
        };
        Ok(Opened { index, rebuild_all })
    }

    /// The newest file after a restart: count = the valid prefix below the checkpoint.
    fn recover_active(mut f: IndexFile, header: Option<Header>, ckpt_pos: u64) -> Result<Writable> {
        let table_n = header.map(|h| h.table_n).unwrap_or(0);
        // Entries 1..=lo are valid and below the checkpoint; they form a prefix.
        let (mut lo, mut hi) = (0u32, table_n);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match f.read_entry(mid)? {
                Some(e) if e.position < ckpt_pos => lo = mid,
                _ => hi = mid - 1,
            }
        }
        // Past the prefix: only entries written after the checkpoint (a crash) may be
        // there. A valid entry below the checkpoint means damage cut the prefix short.
        let mut damaged = false;
        for k in lo + 1..=table_n {
            if f.read_entry(k)?.is_some_and(|e| e.position < ckpt_pos) {
                damaged = true;
                break;
            }
        }
        f.count = lo;
        f.damaged |= damaged;
        f.table_checked = true;
        let mut table = if header.is_some() {
            f.read_table()?
        } else {
            vec![0; f.slots as usize]
        };
        let trusted = header.is_some_and(|h| h.table_n == lo && h.table_crc == table_crc(&table));
        if !trusted {
            table = vec![0; f.slots as usize];
        }
        let slots = f.slots as usize;
        let mut w = Writable {
            f,
            table,
            dirty: vec![0; slots.div_ceil(PAGE_SLOTS).div_ceil(64)],
            tail: Vec::new(),
            inflight: None,
            spare: Vec::new(),
            written: lo,
            header_n: table_n,
        };
        if !trusted && !w.f.damaged && !w.rebuild_table()? {
            w.f.damaged = true;
        }
        Ok(w)
    }

    /// Adds the index entries of one batch (caller holds the commit-log writer lock, so
    /// entries arrive in position order).
    pub fn add(&self, p: PartitionId, position: u64, base_offset: i64, keys: &[IndexKey]) {
        if keys.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        for k in keys {
            if st.active.full()
                && let Err(e) = self.roll(&mut st, position)
            {
                tracing::warn!(error = %e, "hash index roll failed; entries not indexed");
                return;
            }
            if let Err(e) = st.active.add(HEntry::of(p, position, base_offset, k)) {
                tracing::warn!(error = %e, "hash index write failed");
            }
        }
        if st.active.hand_off() {
            self.wake.notify_one();
        }
    }

    /// The writer thread: writes handed-off tails of the active file, so the append path
    /// never waits for a `pwrite` (measured: 1 MiB tail writes on the append path cost
    /// ~15 % of append throughput with the index on). Returns after [`HashIndex::shutdown`].
    pub fn run_writer(&self) {
        loop {
            {
                let mut st = self.state.lock();
                while st.active.inflight.is_none() && !st.shutdown {
                    self.wake.wait(&mut st);
                }
                if st.shutdown {
                    return; // whatever is left is written by the closing checkpoint
                }
            }
            let _io = self.io.lock();
            let (buf, file, at, path) = {
                let st = self.state.lock();
                let a = &st.active;
                let Some(buf) = a.inflight.clone() else {
                    continue; // written meanwhile by a synchronous path
                };
                let at = a.f.entry_at(a.written + 1);
                (buf, a.f.file.clone(), at, a.f.path.clone())
            };
            let r = file.write_all_at(&encode_all(&buf), at);
            let mut st = self.state.lock();
            let a = &mut st.active;
            if !a.inflight.as_ref().is_some_and(|b| Arc::ptr_eq(b, &buf)) {
                continue; // written meanwhile by a synchronous path (same bytes, same place)
            }
            match r {
                Ok(()) => {
                    a.written += a.inflight_n();
                    a.inflight = None;
                    if let Ok(mut v) = Arc::try_unwrap(buf)
                        && a.spare.capacity() == 0
                    {
                        v.clear();
                        a.spare = v;
                    }
                }
                Err(e) => {
                    // Back into the tail, in order; the next write retries it.
                    tracing::warn!(error = %e, path = %path.display(), "hash index write failed; will retry");
                    let mut v = Vec::with_capacity(buf.len() + a.tail.len());
                    v.extend_from_slice(&buf);
                    v.extend_from_slice(&a.tail);
                    a.tail = v;
                    a.inflight = None;
                }
            }
        }
    }

    /// Stops [`HashIndex::run_writer`].
    pub fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.wake.notify_all();
    }

    /// Seals the active file and starts the next one at `position`.
    fn roll(&self, st: &mut State, position: u64) -> Result<()> {
        st.active.write_out(true)?;
        let seq = st.active.f.seq + 1;
        let next = Writable::create(file_path(&self.dir, seq), seq, self.lim, position)?;
        let old = std::mem::replace(&mut st.active, next);
        st.unsynced.push(old.f.file.clone());
        st.dir_dirty = true;
        st.sealed.push(old.f);
        self.trim_count(st);
        Ok(())
    }

    /// Deletes the oldest files beyond `files_max`.
    fn trim_count(&self, st: &mut State) {
        while st.sealed.len() + 1 > self.lim.files_max.max(1) {
            let f = st.sealed.remove(0);
            let _ = std::fs::remove_file(&f.path);
        }
    }

    /// Writes everything to the files and fdatasyncs them (before a checkpoint). Skips the
    /// fdatasyncs when nothing changed since the last one.
    pub fn sync(&self) -> Result<()> {
        let (files, mark, dir_dirty) = {
            let _io = self.io.lock();
            let mut st = self.state.lock();
            st.active.write_out(false)?;
            let mut v = std::mem::take(&mut st.unsynced);
            let mark = (st.active.f.seq, st.active.header_n, st.active.f.first_pos);
            if st.synced != Some(mark) {
                v.push(st.active.f.file.clone());
            }
            (v, mark, std::mem::take(&mut st.dir_dirty))
        };
        for f in files {
            f.sync_data()
                .map_err(|e| StorageError::io("fdatasync", &self.dir, e))?;
        }
        if dir_dirty && let Err(e) = crate::commit_log::sync_dir(&self.dir) {
            self.state.lock().dir_dirty = true;
            return Err(e);
        }
        self.state.lock().synced = Some(mark);
        Ok(())
    }

    /// Writes the active tail out (background flush; page cache only).
    pub fn write_tail(&self) -> Result<()> {
        let _io = self.io.lock();
        self.state.lock().active.write_tail()
    }

    /// Walks the chains of `hash` in every file, newest first; `want` filters partitions.
    /// The active file is walked under the lock (its table and tail are in memory); sealed
    /// files, which do not change, are read after it is released, so a lookup's `pread`s
    /// never stall appends.
    pub fn walk(&self, kind: u8, h: u64, want: &dyn Fn(PartitionId) -> bool) -> Result<Walk> {
        let mut out = Vec::new();
        let matches = |e: &HEntry| e.hash == h && e.kind == kind && want(e.partition);
        let sealed: Vec<IndexFile> = {
            let st = self.state.lock();
            let a = &st.active;
            if a.f.damaged {
                return Ok(Walk::Damaged(a.f.seq));
            }
            let s = (h % a.f.slots as u64) as u32;
            let mut k = a.table[s as usize];
            while k != 0 {
                let Some(e) = a.entry(k)?.filter(|e| e.prev < k && k <= a.f.count) else {
                    return Ok(Walk::Damaged(a.f.seq));
                };
                if (e.hash % a.f.slots as u64) as u32 != s {
                    return Ok(Walk::Damaged(a.f.seq));
                }
                if matches(&e) {
                    out.push(e);
                }
                k = e.prev;
            }
            st.sealed.iter().rev().cloned().collect()
        };
        for f in sealed {
            if f.damaged {
                return Ok(Walk::Damaged(f.seq));
            }
            if !f.table_checked {
                let t = f.read_table()?;
                let mut hb = [0u8; HEADER_BYTES as usize];
                f.file
                    .read_exact_at(&mut hb, 0)
                    .map_err(|e| StorageError::io("reading", &f.path, e))?;
                let ok = Header::decode(&hb).is_some_and(|hd| hd.table_crc == table_crc(&t));
                self.mark(f.seq, |g| {
                    g.table_checked = ok;
                    g.damaged |= !ok;
                });
                if !ok {
                    return Ok(Walk::Damaged(f.seq));
                }
            }
            let s = (h % f.slots as u64) as u32;
            let mut k = f.read_slot(s)?;
            while k != 0 {
                let e = if k <= f.count { f.read_entry(k)? } else { None };
                let Some(e) = e.filter(|e| e.prev < k && (e.hash % f.slots as u64) as u32 == s)
                else {
                    self.mark(f.seq, |g| g.damaged = true);
                    return Ok(Walk::Damaged(f.seq));
                };
                if matches(&e) {
                    out.push(e);
                }
                k = e.prev;
            }
        }
        Ok(Walk::Found(out))
    }

    /// Updates the flags of sealed file `seq` (if it is still there).
    fn mark(&self, seq: u64, f: impl FnOnce(&mut IndexFile)) {
        if let Some(g) = self.state.lock().sealed.iter_mut().find(|g| g.seq == seq) {
            f(g);
        }
    }

    pub fn is_active(&self, seq: u64) -> bool {
        self.state.lock().active.f.seq == seq
    }

    /// Position range `[from, to]` of sealed file `seq` (to = next file's first position:
    /// the batch there may have its first records in this file).
    pub fn sealed_range(&self, seq: u64) -> Option<(u64, u64)> {
        let st = self.state.lock();
        let i = st.sealed.iter().position(|f| f.seq == seq)?;
        let to = st
            .sealed
            .get(i + 1)
            .map(|f| f.first_pos)
            .unwrap_or(st.active.f.first_pos);
        Some((st.sealed[i].first_pos, to))
    }

    /// Empties the active file before it is re-indexed from its first position (caller
    /// holds the writer lock). Returns that first position.
    pub fn reset_active(&self) -> Result<u64> {
        let _io = self.io.lock();
        let mut st = self.state.lock();
        st.synced = None;
        let a = &mut st.active;
        a.f.count = 0;
        a.written = 0;
        a.inflight = None;
        a.tail.clear();
        a.table.iter_mut().for_each(|v| *v = 0);
        a.dirty.iter_mut().for_each(|v| *v = u64::MAX);
        a.f.damaged = false;
        a.write_out(true)?;
        Ok(a.f.first_pos)
    }

    /// A fresh file to rebuild sealed file `seq` into (`.hix.tmp`).
    pub fn builder(&self, seq: u64, first_pos: u64) -> Result<Builder> {
        let (slots, capacity) = {
            let st = self.state.lock();
            st.sealed
                .iter()
                .find(|f| f.seq == seq)
                .map(|f| (f.slots, f.capacity))
                .unwrap_or((self.lim.slots, self.lim.capacity))
        };
        let lim = Limits {
            slots,
            capacity,
            ..self.lim
        };
        let path = file_path(&self.dir, seq).with_extension("hix.tmp");
        Ok(Builder(Writable::create(path, seq, lim, first_pos)?))
    }

    /// Swaps a finished rebuild in for the damaged sealed file.
    pub fn install(&self, b: Builder) -> Result<()> {
        let mut w = b.0;
        w.write_out(true)?;
        w.f.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &w.f.path, e))?;
        let mut st = self.state.lock();
        let Some(slot) = st.sealed.iter_mut().find(|f| f.seq == w.f.seq) else {
            let _ = std::fs::remove_file(&w.f.path);
            return Ok(()); // deleted meanwhile
        };
        let path = file_path(&self.dir, w.f.seq);
        std::fs::rename(&w.f.path, &path).map_err(|e| StorageError::io("renaming", &path, e))?;
        w.f.path = path;
        *slot = w.f;
        drop(st);
        crate::commit_log::sync_dir(&self.dir)
    }

    /// Cuts the active file back to the entries below `position` (`truncate_to`).
    pub fn truncate(&self, position: u64) -> Result<()> {
        let _io = self.io.lock();
        let mut st = self.state.lock();
        st.synced = None;
        let a = &mut st.active;
        if a.f.first_pos >= position {
            a.f.first_pos = position;
            a.f.count = 0;
            a.written = 0;
            a.inflight = None;
            a.tail.clear();
            a.table.iter_mut().for_each(|v| *v = 0);
            a.dirty.iter_mut().for_each(|v| *v = u64::MAX);
            return a.write_out(true);
        }
        let (mut lo, mut hi) = (0u32, a.f.count);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match a.entry(mid)? {
                Some(e) if e.position < position => lo = mid,
                _ => hi = mid - 1,
            }
        }
        if lo == a.f.count {
            return Ok(());
        }
        a.write_tail()?;
        a.f.count = lo;
        a.written = a.written.min(lo);
        if !a.rebuild_table()? {
            a.f.damaged = true;
        }
        a.write_out(true)
    }

    /// Deletes sealed files whose entries all point below `log_start` (deleted segments).
    /// A file's last entries may belong to the batch at the next file's first position (a
    /// roll in the middle of a batch), so that position must itself be below `log_start`:
    /// when it equals it, that batch is the first live one.
    pub fn drop_below(&self, log_start: u64) {
        let mut st = self.state.lock();
        loop {
            let next_first = st
                .sealed
                .get(1)
                .map(|f| f.first_pos)
                .unwrap_or(st.active.f.first_pos);
            if st.sealed.is_empty() || next_first >= log_start {
                return;
            }
            let f = st.sealed.remove(0);
            let _ = std::fs::remove_file(&f.path);
        }
    }

    /// Number of files (tests, stats).
    pub fn file_count(&self) -> usize {
        self.state.lock().sealed.len() + 1
    }
}

/// A sealed file under reconstruction.
pub struct Builder(Writable);

impl Builder {
    pub fn add(&mut self, p: PartitionId, position: u64, base_offset: i64, keys: &[IndexKey]) {
        for k in keys {
            if self.0.full() {
                // The range's first and last batches may have had records in the
                // neighbouring files too: grow (entries are last in the file) rather than
                // drop any.
                let f = &mut self.0.f;
                f.capacity = f.capacity.saturating_add((f.capacity / 8).max(64));
            }
            let _ = self.0.add(HEntry::of(p, position, base_offset, k));
        }
    }
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("deleting", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip_and_crc() {
        let e = HEntry {
            hash: hash(KIND_KEY, b"k"),
            position: 1 << 40,
            offset: 77,
            partition: PartitionId(9),
            prev: 3,
            kind: KIND_KEY,
        };
        let mut b = e.encode();
        assert_eq!(HEntry::decode(&b), Some(e));
        b[17] ^= 1;
        assert_eq!(HEntry::decode(&b), None);
        assert_ne!(hash(KIND_KEY, b"x"), hash(KIND_ID, b"x"));
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            slots: 8,
            capacity: 100,
            first_pos: 4096,
            table_n: 7,
            table_crc: 0xabcd,
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b), Some(h));
        b[20] ^= 1;
        assert_eq!(Header::decode(&b), None);
    }
}
