//! `Store`: the public face of the engine. Owns the commit log, the partitions' state and the
//! background threads (group-commit syncer, hash-index writer, periodic flush/checkpoint/retention).
//!
//! Lock order (never take them the other way round): `admin` → `ckpt_lock` → commit-log
//! writer → `parts` map → one partition's mutex.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use common::{Offset, PartitionId, TimestampMs};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::batch::{self, BatchHeader};
use crate::commit_log::CommitLog;
use crate::config::{Flush, PartitionConfig, StoreConfig};
use crate::consume_queue::CqEntry;
use crate::damage::{DamageLog, DamagedBatch, Finding, LostRanges};
use crate::entry::{self, ENTRY_HEADER_BYTES};
use crate::error::{Result, StorageError};
use crate::flush::{GroupCommit, Stop};
use crate::hash_index::{self, HashIndex, IndexKey};
use crate::partition::{Partition, QueueFiles};
use crate::records;

/// Result of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start_offset: Offset,
}

/// An append that is written (readable) and, for `Flush::Sync`, waiting for its group
/// commit. Dropping it does not undo the write; it only stops waiting.
#[derive(Debug)]
pub struct PendingAppend {
    pub appended: Appended,
    wait: Option<(
        tokio::sync::oneshot::Receiver<std::result::Result<(), String>>,
        PathBuf,
    )>,
}

impl PendingAppend {
    /// True if [`PendingAppend::durable`] waits for a group commit (`Flush::Sync`).
    pub fn waits_for_sync(&self) -> bool {
        self.wait.is_some()
    }

    /// Resolves when the append is acknowledged: at once for `Flush::Async`, after the
    /// fdatasync covering it for `Flush::Sync`.
    pub async fn durable(self) -> Result<Appended> {
        if let Some((rx, dir)) = self.wait {
            let done = rx.await.map_err(|_| StorageError::Closed)?;
            done.map_err(|msg| StorageError::io("group commit", dir, std::io::Error::other(msg)))?;
        }
        Ok(self.appended)
    }
}

/// Result of a read: whole batches, zero-copy views of the segment files.
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    pub chunks: Vec<Bytes>,
    pub log_start_offset: Offset,
    /// The next offset to be written (Kafka's high watermark on a single node).
    pub high_watermark: Offset,
}

impl ReadResult {
    pub fn total_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: Offset,
    /// Next offset to be written.
    pub log_end: Offset,
}

/// Counters for metrics.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub partitions: usize,
    pub segments: usize,
    /// Bytes allocated by commit-log segments (they are sparse files).
    pub bytes_on_disk: u64,
    pub fsync_count: u64,
    pub fsync_total_micros: u64,
    /// Consume-queue/index files currently open (bounded by `max_open_files`).
    pub open_queue_files: usize,
    pub write_position: u64,
    pub synced_position: u64,
    /// Hash-index files kept (key / message-id lookups).
    pub hash_index_files: usize,
    /// Damaged batches met while serving since the store opened (never served).
    pub damaged_batches: u64,
    /// Cleaner passes run since open (`cleaner.rs`).
    pub clean_passes: u64,
    /// Bytes of dead commit-log entries the cleaner covered with holes since open.
    pub clean_bytes_punched: u64,
    /// Drop in allocated commit-log bytes from the cleaner's hole punching since open.
    pub clean_bytes_freed: u64,
}

/// The storage engine. `Send + Sync`; share as `Arc<Store>`.
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    stop: Arc<Stop>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

pub(crate) struct Inner {
    pub cfg: StoreConfig,
    pub log: Arc<CommitLog>,
    /// Store-wide key / message-id index (`hash_index.rs`).
    pub hindex: HashIndex,
    pub parts: RwLock<HashMap<PartitionId, Arc<Mutex<Partition>>>>,
    pub files: QueueFiles,
    pub appends: watch::Sender<u64>,
    pub group: GroupCommit,
    pub fsync_count: AtomicU64,
    pub fsync_micros: AtomicU64,
    pub closed: AtomicBool,
    pub ckpt_lock: Mutex<()>,
    pub admin: Mutex<()>,
    pub unsynced_files: Mutex<HashSet<PathBuf>>,
    pub queues_dir_dirty: AtomicBool,
    /// Bumped by every change a checkpoint records other than appends (config, log start,
    /// truncation, deletion); with the write position it tells whether a checkpoint would
    /// say anything new.
    pub state_version: AtomicU64,
    /// (write position, state_version) of the last checkpoint written.
    pub last_checkpoint: Mutex<Option<(u64, u64)>>,
    /// The flock'ed `LOCK` file; released when the store is dropped.
    pub lock: Mutex<Option<std::fs::File>>,
    /// Damaged batches met while serving (`damage.rs`).
    pub damage: DamageLog,
    /// Offset ranges given up by a repair; reads skip them.
    pub lost: LostRanges,
    /// What the open found wrong with the files (only a `Check`/`Repair` open gets past
    /// them).
    pub findings: Mutex<Vec<Finding>>,
    /// Frees dead commit-log entries in place (`cleaner.rs`).
    pub cleaner: crate::cleaner::Cleaner,
    /// Test hook for log compaction (`compaction.rs`): 0 none; `n` stops a pass before its
    /// `n`th copy is queued; `u64::MAX` switches without the committing checkpoint.
    pub compaction_fault: AtomicU64,
}

impl Inner {
    pub fn new(
        cfg: StoreConfig,
        log: Arc<CommitLog>,
        files: QueueFiles,
        hindex: HashIndex,
        lost: LostRanges,
    ) -> Inner {
        Inner {
            damage: DamageLog::default(),
            lost,
            findings: Mutex::new(Vec::new()),
            cfg,
            log,
            hindex,
            parts: RwLock::new(HashMap::new()),
            files,
            appends: watch::Sender::new(0),
            group: GroupCommit::default(),
            fsync_count: AtomicU64::new(0),
            fsync_micros: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            ckpt_lock: Mutex::new(()),
            admin: Mutex::new(()),
            unsynced_files: Mutex::new(HashSet::new()),
            queues_dir_dirty: AtomicBool::new(false),
            state_version: AtomicU64::new(0),
            last_checkpoint: Mutex::new(None),
            lock: Mutex::new(None),
            cleaner: Default::default(),
            compaction_fault: AtomicU64::new(0),
        }
    }

    /// Persists a partition's policy in its directory (`config`, 24 bytes).
    pub fn changed(&self) {
        self.state_version.fetch_add(1, Ordering::AcqRel);
    }

    pub fn write_partition_config(&self, p: PartitionId, cfg: &PartitionConfig) -> Result<()> {
        self.changed();
        let path = self.files.dir(p).join("config");
        std::fs::write(&path, cfg.encode()).map_err(|e| StorageError::io("writing", &path, e))
    }

    pub fn partition(&self, p: PartitionId) -> Result<Arc<Mutex<Partition>>> {
        self.parts
            .read()
            .get(&p)
            .cloned()
            .ok_or(StorageError::UnknownPartition(p))
    }

    /// The first offset at or after `offset` outside the ranges a repair gave up.
    pub fn past_lost(&self, p: PartitionId, offset: Offset) -> Offset {
        if self.lost.is_empty() {
            return offset;
        }
        let mut at = offset;
        for (q, first, last) in self.lost.list() {
            if q == p && first <= at && at <= last {
                at = last + 1;
            }
        }
        at
    }

    /// Remembers (and logs once) a batch whose read failed its checks.
    pub fn note_damage(&self, p: PartitionId, e: &CqEntry, err: &StorageError) {
        let StorageError::CorruptData { reason, .. } = err else {
            return;
        };
        self.damage.note(DamagedBatch {
            partition: p,
            first_offset: e.base_offset,
            last_offset: e.next_offset() - 1,
            position: e.position,
            file: self
                .log
                .segment_at(e.position)
                .map(|s| s.path.clone())
                .unwrap_or_default(),
            reason: (*reason).to_string(),
        });
    }

    /// Reads and fully checks the entry of `e` (header CRC, batch CRC, partition and offset
    /// agree with the consume queue); returns the batch as zero-copy `Bytes`.
    pub fn load_batch(&self, p: PartitionId, e: &CqEntry) -> Result<Bytes> {
        let corrupt = |reason| StorageError::CorruptData {
            partition: p,
            offset: e.base_offset,
            position: e.position,
            reason,
        };
        let seg = self
            .log
            .segment_at(e.position)
            .ok_or_else(|| corrupt("segment missing"))?;
        let at = (e.position - seg.base) as usize;
        let trailer = entry::trailer_len(seg.bytes().get(at..).unwrap_or_default());
        let len = ENTRY_HEADER_BYTES + e.batch_len as usize + trailer;
        let bytes = seg
            .bytes()
            .get(at..at + len)
            .ok_or_else(|| corrupt("entry runs past its segment"))?;
        // Slots never point at dead entries, the only ones the cleaner pads (`cleaner.rs`).
        debug_assert!(
            entry::padding_span(&seg.bytes()[at..]).is_none(),
            "a consume-queue slot of {p} points at a padding entry (position {})",
            e.position
        );
        // The batch CRC is checked once per process: entries this process wrote were
        // checked before the write, and an entry read once is remembered as checked (the
        // segment's checked prefix). The entry header (its own CRC covers the batch header)
        // is checked on every read.
        let verified = seg.is_verified(at as u64, len as u64);
        let checked = if verified {
            entry::check_header(bytes)
        } else {
            entry::check(bytes)
        };
        let h = checked.map_err(|f| match f {
            entry::EntryFault::BadHeader => corrupt("entry header CRC mismatch"),
            entry::EntryFault::BadBody => corrupt("batch CRC mismatch"),
        })?;
        if h.batch_len != e.batch_len {
            return Err(corrupt("entry does not match its consume-queue slot"));
        }
        let body = &bytes[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + e.batch_len as usize];
        let stored_base = BatchHeader::parse(body)
            .map(|b| b.base_offset())
            .map_err(|_| corrupt("batch header unreadable"))?;
        let owner = h.partition == p;
        match h.offset_in(bytes, p, stored_base) {
            None => return Err(corrupt("entry does not match its consume-queue slot")),
            Some(base) if base != e.base_offset => {
                return Err(corrupt(
                    "batch base offset does not match its consume-queue slot",
                ));
            }
            Some(_) => {}
        }
        if !verified {
            seg.mark_verified(at as u64, len as u64);
        }
        if owner {
            return Ok(seg.slice(at + ENTRY_HEADER_BYTES, e.batch_len as usize));
        }
        // Another partition's view of a shared batch: its own offsets (the base offset is
        // outside the batch CRC).
        let mut own = body.to_vec();
        batch::set_base_offset(&mut own, e.base_offset);
        Ok(Bytes::from(own))
    }
}

/// Checks one batch's records against its header ([`records::check_batch`], when `strict`:
/// a produced batch; otherwise only that its records decode) and, when
/// `index` is set, returns its hash-index keys (offsets relative to the batch): a key entry
/// per record with a key, an id entry per record with an `id_header` header. Control
/// batches are checked but index nothing. Fails if the batch does not decode (within `cap`).
pub(crate) fn check_and_index(
    b: &[u8],
    cap: usize,
    id_header: Option<&[u8]>,
    index: bool,
    strict: bool,
) -> Result<Vec<IndexKey>> {
    let h = BatchHeader::parse(b)?;
    let index = index && !h.is_control();
    // Bounded by the bytes present: a claimed count reserves nothing by itself.
    let room = h.records().len() / records::MIN_RECORD_BYTES;
    let mut out = Vec::with_capacity(if index {
        (h.record_count().max(0) as usize).min(room)
    } else {
        0
    });
    let id_header = id_header.filter(|_| index);
    let add = |r: records::RecordMeta<'_>, id: Option<&[u8]>| {
        if !index {
            return;
        }
        if let Some(k) = r.key {
            out.push(IndexKey {
                hash: hash_index::hash(hash_index::KIND_KEY, k),
                offset_delta: r.offset_delta,
                kind: hash_index::KIND_KEY,
            });
        }
        if let Some(id) = id {
            out.push(IndexKey {
                hash: hash_index::hash(hash_index::KIND_ID, id),
                offset_delta: r.offset_delta,
                kind: hash_index::KIND_ID,
            });
        }
    };
    if strict {
        records::check_batch(&h, cap, id_header, add)?;
    } else {
        let data = records::records_bytes(&h, cap)?;
        records::for_each_record_with_id(&h, &data, id_header, add)?;
    }
    Ok(out)
}

/// The hash-index keys of a stored batch (see [`check_and_index`]); a batch compaction
/// rewrote (`compaction.rs`) may have fewer records than offsets.
pub(crate) fn index_batch(b: &[u8], cap: usize, id_header: Option<&[u8]>) -> Result<Vec<IndexKey>> {
    check_and_index(b, cap, id_header, true, false)
}

impl Store {
    /// Opens (or creates) the store in `config.dir`, running recovery.
    pub fn open(config: StoreConfig) -> Result<Store> {
        let background = config.background;
        let inner = Arc::new(crate::recovery::open(config)?);
        let stop = Arc::new(Stop::default());
        let mut threads = Vec::new();
        let spawn_err = |e: std::io::Error| StorageError::io("spawning thread", PathBuf::new(), e);
        {
            let inner = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("sluice-group-commit".into())
                    .spawn(move || inner.group.run(&inner))
                    .map_err(spawn_err)?,
            );
        }
        {
            let inner = inner.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("sluice-index-writer".into())
                    .spawn(move || inner.hindex.run_writer())
                    .map_err(spawn_err)?,
            );
        }
        if background {
            {
                let (inner, stop) = (inner.clone(), stop.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name("sluice-flush".into())
                        .spawn(move || crate::flush::background(inner, stop))
                        .map_err(spawn_err)?,
                );
            }
            // Compaction on its own thread: a long pass never delays flushes.
            let (inner, stop) = (inner.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("sluice-compactor".into())
                    .spawn(move || crate::compaction::background(inner, stop))
                    .map_err(spawn_err)?,
            );
        }
        Ok(Store {
            inner,
            stop,
            threads: Mutex::new(threads),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Creates the partition if absent (idempotent) and sets its policy.
    pub fn configure_partition(&self, p: PartitionId, cfg: PartitionConfig) -> Result<()> {
        let existing = self.inner.parts.read().get(&p).cloned();
        if let Some(part) = existing {
            let mut g = part.lock();
            if g.cfg != cfg {
                self.inner.write_partition_config(p, &cfg)?;
                g.cfg = cfg;
            }
            return Ok(());
        }
        let mut parts = self.inner.parts.write();
        if let Some(part) = parts.get(&p) {
            part.lock().cfg = cfg;
            return Ok(());
        }
        let dir = self.inner.files.dir(p);
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("creating dir", &dir, e))?;
        self.inner.write_partition_config(p, &cfg)?;
        // The directory entry is made durable by the next log sync, before any append to
        // this partition is acknowledged as durable.
        self.inner.queues_dir_dirty.store(true, Ordering::Release);
        parts.insert(p, Arc::new(Mutex::new(Partition::new(cfg))));
        Ok(())
    }

    pub fn partition_config(&self, p: PartitionId) -> Result<PartitionConfig> {
        Ok(self.inner.partition(p)?.lock().cfg.clone())
    }

    pub fn partitions(&self) -> Vec<PartitionId> {
        let mut v: Vec<_> = self.inner.parts.read().keys().copied().collect();
        v.sort();
        v
    }

    /// Appends one or more v2 record batches (see the crate docs for the contract).
    /// Resolves once the batches are readable (`Flush::Async`) or durable (`Flush::Sync`).
    pub async fn append(&self, p: PartitionId, batches: BytesMut) -> Result<Appended> {
        self.append_begin(p, batches)?.durable().await
    }

    /// The first half of [`Store::append`]: validates, assigns offsets and writes (the
    /// batches are readable when this returns), and for `Flush::Sync` joins the next group
    /// commit. Await [`PendingAppend::durable`] for the acknowledgement. Lets a connection
    /// write its next request while the previous one waits for its fsync; appends stay in
    /// call order.
    pub fn append_begin(&self, p: PartitionId, mut batches: BytesMut) -> Result<PendingAppend> {
        let inner = &self.inner;
        let part = inner.partition(p)?;
        let (flush, index_on) = {
            let g = part.lock();
            (g.cfg.flush, g.cfg.index)
        };
        // Everything that can refuse the request runs before anything is written: the
        // headers and CRCs, then every batch's records against its header (decoded once,
        // also yielding the index keys when the index is on).
        let spans = batch::validate_batches(&batches)?;
        let cap = inner.cfg.max_decompressed_batch_bytes;
        let id_header = inner.cfg.message_id_header.as_deref();
        let keys: Vec<Vec<IndexKey>> = spans
            .iter()
            .map(|&(s, l)| check_and_index(&batches[s..s + l], cap, id_header, index_on, true))
            .collect::<Result<_>>()?;
        let indexed = index_on.then_some(keys);
        let (appended, end) = {
            let mut w = inner.log.lock_writer();
            if inner.closed.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            let mut g = part.lock();
            if g.deleted {
                return Err(StorageError::UnknownPartition(p));
            }
            let base = g.log_end;
            let mut next = base;
            let mut metas = Vec::with_capacity(spans.len());
            for &(s, l) in &spans {
                let b = &mut batches[s..s + l];
                batch::set_base_offset(b, next);
                let h = BatchHeader::parse(b)?;
                let span = h.last_offset_delta() as u32 + 1;
                metas.push((next, span, h.max_timestamp()));
                next += span as i64;
            }
            let entries: Vec<([u8; ENTRY_HEADER_BYTES], &[u8])> = spans
                .iter()
                .map(|&(s, l)| {
                    let b = &batches[s..s + l];
                    (entry::encode(p, b), b)
                })
                .collect();
            let positions = inner.log.append(&mut w, &entries)?;
            for (k, &(base_offset, span, max_ts)) in metas.iter().enumerate() {
                g.push(CqEntry {
                    position: positions[k],
                    batch_len: spans[k].1 as u32,
                    offset_span: span,
                    base_offset,
                    max_timestamp: max_ts,
                    filter_bits: 0,
                });
            }
            let appended = Appended {
                base_offset: base,
                last_offset: next - 1,
                log_start_offset: g.log_start,
            };
            drop(g);
            // Still under the writer lock: index entries arrive in commit-log order.
            if let Some(ix) = &indexed {
                for (k, &(base_offset, _, _)) in metas.iter().enumerate() {
                    inner.hindex.add(p, positions[k], base_offset, &ix[k]);
                }
            }
            (appended, w.pos)
        };
        inner.appends.send_modify(|v| *v = v.wrapping_add(1));
        let wait = if flush == Flush::Sync {
            Some((inner.group.register(end)?, inner.log.dir.clone()))
        } else {
            None
        };
        Ok(PendingAppend { appended, wait })
    }

    /// Appends one v2 record batch to every partition of `parts` (2 to 256, distinct),
    /// stored once: a shared entry (`entry.rs`) the first partition owns, with a
    /// consume-queue entry in each partition at that partition's next offset. What
    /// [`Store::append_begin`] is for one partition: the batch is readable in all of them
    /// when this returns, and the returned append (the first partition's) resolves when it
    /// is durable, if any of them is `Flush::Sync`. Returns each partition's offsets.
    pub fn append_shared_begin(
        &self,
        parts: &[PartitionId],
        mut batches: BytesMut,
    ) -> Result<(Vec<Appended>, PendingAppend)> {
        let inner = &self.inner;
        let distinct: HashSet<PartitionId> = parts.iter().copied().collect();
        if parts.len() < 2 || parts.len() > entry::MAX_SHARED + 1 || distinct.len() != parts.len() {
            return Err(StorageError::InvalidBatch(format!(
                "a shared append names 2 to {} distinct partitions, not {}",
                entry::MAX_SHARED + 1,
                parts.len()
            )));
        }
        let handles: Vec<Arc<Mutex<Partition>>> = parts
            .iter()
            .map(|p| inner.partition(*p))
            .collect::<Result<_>>()?;
        let (mut sync, mut index_on) = (false, Vec::with_capacity(parts.len()));
        for h in &handles {
            let g = h.lock();
            sync |= g.cfg.flush == Flush::Sync;
            index_on.push(g.cfg.index);
        }
        let spans = batch::validate_batches(&batches)?;
        let &[(s0, len)] = &spans[..] else {
            return Err(StorageError::InvalidBatch(format!(
                "a shared append holds one batch, not {}",
                spans.len()
            )));
        };
        inner.allow_new_entry_kinds()?;
        let cap = inner.cfg.max_decompressed_batch_bytes;
        let id_header = inner.cfg.message_id_header.as_deref();
        let keys = check_and_index(
            &batches[s0..s0 + len],
            cap,
            id_header,
            index_on.iter().any(|&on| on),
            true,
        )?;
        let (appended, end) = {
            let mut w = inner.log.lock_writer();
            if inner.closed.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            // Every partition is still there before anything is written.
            let mut bases = Vec::with_capacity(parts.len());
            for (p, h) in parts.iter().zip(&handles) {
                let g = h.lock();
                if g.deleted {
                    return Err(StorageError::UnknownPartition(*p));
                }
                bases.push(g.log_end);
            }
            let b = &mut batches[s0..s0 + len];
            batch::set_base_offset(b, bases[0]);
            let h = BatchHeader::parse(b)?;
            let span = h.last_offset_delta() as u32 + 1;
            let max_ts = h.max_timestamp();
            let others: Vec<(PartitionId, i64)> = parts[1..]
                .iter()
                .copied()
                .zip(bases[1..].iter().copied())
                .collect();
            let (header, body) = entry::encode_shared(parts[0], b, &others);
            let position = inner.log.append(&mut w, &[(header, &body[..])])?[0];
            let mut appended = Vec::with_capacity(parts.len());
            for (k, h) in handles.iter().enumerate() {
                let mut g = h.lock();
                g.push(CqEntry {
                    position,
                    batch_len: len as u32,
                    offset_span: span,
                    base_offset: bases[k],
                    max_timestamp: max_ts,
                    filter_bits: 0,
                });
                appended.push(Appended {
                    base_offset: bases[k],
                    last_offset: bases[k] + span as i64 - 1,
                    log_start_offset: g.log_start,
                });
            }
            // Still under the writer lock: index entries arrive in commit-log order.
            for (k, p) in parts.iter().enumerate() {
                if index_on[k] {
                    inner.hindex.add(*p, position, bases[k], &keys);
                }
            }
            (appended, w.pos)
        };
        inner.appends.send_modify(|v| *v = v.wrapping_add(1));
        let wait = if sync {
            Some((inner.group.register(end)?, inner.log.dir.clone()))
        } else {
            None
        };
        let first = PendingAppend {
            appended: appended[0],
            wait,
        };
        Ok((appended, first))
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (the first batch is
    /// always whole). A batch failing its CRC is never returned: if it is the first, the
    /// read fails with `CorruptData`; otherwise the read stops before it.
    pub fn read(&self, p: PartitionId, offset: Offset, max_bytes: usize) -> Result<ReadResult> {
        let inner = &self.inner;
        let part = inner.partition(p)?;
        inner.expire_head(p, &part)?;
        let (log_start, log_end) = {
            let g = part.lock();
            (g.log_start, g.log_end)
        };
        let mut out = ReadResult {
            chunks: Vec::new(),
            log_start_offset: log_start,
            high_watermark: log_end,
        };
        if offset < log_start || offset > log_end {
            return Err(StorageError::OffsetOutOfRange {
                partition: p,
                offset,
                log_start,
                log_end,
            });
        }
        if offset == log_end {
            return Ok(out);
        }
        // Offsets a repair gave up are skipped: the read serves the first batch after them.
        let offset = inner.past_lost(p, offset);
        // Out of range against the partition as it is now (retention or delete_records may
        // have moved its start while we looked).
        let gone = || {
            let g = part.lock();
            StorageError::OffsetOutOfRange {
                partition: p,
                offset,
                log_start: g.log_start,
                log_end: g.log_end,
            }
        };
        let started_after = || offset < part.lock().log_start;
        let Some(mut i) = inner.files.find(p, &part, offset)? else {
            if started_after() {
                return Err(gone());
            }
            return Ok(out);
        };
        let mut total = 0usize;
        let mut want = offset;
        let skips = !inner.lost.is_empty();
        'pages: loop {
            let page = inner.files.cq_entries(p, &part, i, 64)?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if skips && inner.lost.covers(p, e.base_offset, e.next_offset()) {
                    if out.chunks.is_empty() {
                        want = want.max(e.next_offset());
                    }
                    continue;
                }
                if out.chunks.is_empty() && e.base_offset > want && started_after() {
                    // The batches holding `offset` went while we searched (retention, or
                    // delete_records): out of range now, never a later batch in its place.
                    // (A gap above the log start is compaction's: the next batch is served,
                    // as Kafka does.)
                    return Err(gone());
                }
                if !out.chunks.is_empty() && total + e.batch_len as usize > max_bytes {
                    break 'pages;
                }
                match inner.load_batch(p, e) {
                    Ok(b) => {
                        total += b.len();
                        out.chunks.push(b);
                    }
                    Err(err) => {
                        // An entry that died while we read it (retention moved the log start
                        // and the cleaner freed it) is gone, not damaged.
                        if e.next_offset() <= part.lock().log_start {
                            if out.chunks.is_empty() {
                                return Err(gone());
                            }
                            break 'pages;
                        }
                        inner.note_damage(p, e, &err);
                        if out.chunks.is_empty() {
                            return Err(err);
                        }
                        break 'pages;
                    }
                }
                if total >= max_bytes {
                    break 'pages;
                }
            }
            i += page.len() as u64;
        }
        if out.chunks.is_empty() && started_after() {
            return Err(gone());
        }
        Ok(out)
    }

    pub fn offsets(&self, p: PartitionId) -> Result<PartitionOffsets> {
        let part = self.inner.partition(p)?;
        self.inner.expire_head(p, &part)?;
        let g = part.lock();
        Ok(PartitionOffsets {
            log_start: g.log_start,
            log_end: g.log_end,
        })
    }

    /// The first record whose timestamp is `>= ts`: its offset and timestamp. Finds the first
    /// batch whose max timestamp is `>= ts` through the consume queue, then decodes that batch
    /// for the exact record (falling back to the batch's base offset and max timestamp if it
    /// cannot be decoded).
    pub fn offset_for_timestamp(
        &self,
        p: PartitionId,
        ts: TimestampMs,
    ) -> Result<Option<(Offset, TimestampMs)>> {
        let inner = &self.inner;
        let part = inner.partition(p)?;
        inner.expire_head(p, &part)?;
        let (mut i, log_start) = {
            let g = part.lock();
            (g.cq_start, g.log_start)
        };
        loop {
            let page = inner.files.cq_entries(p, &part, i, 1024)?;
            if page.is_empty() {
                return Ok(None);
            }
            if let Some(e) = page.iter().find(|e| e.max_timestamp >= ts) {
                let fallback = (e.base_offset.max(log_start), e.max_timestamp);
                let Ok(bytes) = inner.load_batch(p, e) else {
                    return Ok(Some(fallback));
                };
                return Ok(Some(
                    exact_record(
                        &bytes,
                        ts,
                        log_start,
                        inner.cfg.max_decompressed_batch_bytes,
                    )
                    .unwrap_or(fallback),
                ));
            }
            i += page.len() as u64;
        }
    }

    /// The largest timestamp in the partition and the offset of the (first) record carrying
    /// it (Kafka's `MAX_TIMESTAMP`): the batch comes from the consume queue, the record from
    /// decoding that batch (its base offset if it cannot be decoded).
    pub fn max_timestamp(&self, p: PartitionId) -> Result<Option<(Offset, TimestampMs)>> {
        let inner = &self.inner;
        let part = inner.partition(p)?;
        inner.expire_head(p, &part)?;
        let (log_start, log_end, max_ts, max_off, mut i) = {
            let g = part.lock();
            (
                g.log_start,
                g.log_end,
                g.max_ts,
                g.max_ts_offset,
                g.cq_start,
            )
        };
        if log_start >= log_end {
            return Ok(None);
        }
        if max_off >= 0 && max_off >= log_start {
            return Ok(Some(
                self.record_with_timestamp(p, &part, max_off, max_ts, log_start)?,
            ));
        }
        // The batch that held the maximum is gone: rescan what is left.
        let mut best: Option<(Offset, TimestampMs)> = None;
        loop {
            let page = inner.files.cq_entries(p, &part, i, 1024)?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if best.is_none_or(|(_, t)| e.max_timestamp > t) {
                    best = Some((e.base_offset.max(log_start), e.max_timestamp));
                }
            }
            i += page.len() as u64;
        }
        let Some((o, t)) = best else {
            return Ok(None);
        };
        {
            let mut g = part.lock();
            g.max_ts = t;
            g.max_ts_offset = o;
        }
        Ok(Some(self.record_with_timestamp(p, &part, o, t, log_start)?))
    }

    /// The first record at or after `log_start` with timestamp `>= ts` in the batch holding
    /// `offset`; `(offset, ts)` when the batch cannot be decoded.
    fn record_with_timestamp(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        offset: Offset,
        ts: TimestampMs,
        log_start: Offset,
    ) -> Result<(Offset, TimestampMs)> {
        let inner = &self.inner;
        let Some(i) = inner.files.find(p, part, offset)? else {
            return Ok((offset, ts));
        };
        let Some(e) = inner.files.cq_entries(p, part, i, 1)?.first().copied() else {
            return Ok((offset, ts));
        };
        let Ok(bytes) = inner.load_batch(p, &e) else {
            return Ok((offset, ts));
        };
        let cap = inner.cfg.max_decompressed_batch_bytes;
        Ok(exact_record(&bytes, ts, log_start, cap).unwrap_or((offset, ts)))
    }

    /// Advances the log start to `before` (Kafka DeleteRecords); returns the new log start.
    pub fn delete_records(&self, p: PartitionId, before: Offset) -> Result<Offset> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let part = inner.partition(p)?;
        {
            let g = part.lock();
            if before > g.log_end || before < 0 {
                return Err(StorageError::OffsetOutOfRange {
                    partition: p,
                    offset: before,
                    log_start: g.log_start,
                    log_end: g.log_end,
                });
            }
            if before <= g.log_start {
                return Ok(g.log_start);
            }
        }
        {
            let mut g = part.lock();
            let k = inner.files.find_locked(p, &g, before)?;
            inner.advance_start_locked(p, &mut g, k, before)?;
        }
        inner.checkpoint(false)?;
        Ok(before)
    }

    /// Deletes a partition: its queues and index go now; its commit-log bytes go with their
    /// segments (when no other partition still needs them).
    pub fn delete_partition(&self, p: PartitionId) -> Result<()> {
        let inner = &self.inner;
        let _admin = inner.admin.lock();
        let part = inner
            .parts
            .write()
            .remove(&p)
            .ok_or(StorageError::UnknownPartition(p))?;
        {
            let mut g = part.lock();
            g.deleted = true;
            inner.changed();
            g.cq_pending = Vec::new();
        }
        let dir = inner.files.dir(p);
        let doomed = dir.with_extension("deleted");
        inner.files.cache.forget_dir(&dir);
        match std::fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("renaming", &dir, e)),
        }
        inner.queues_dir_dirty.store(true, Ordering::Release);
        inner.checkpoint(false)?;
        let _ = std::fs::remove_dir_all(&doomed);
        Ok(())
    }

    /// A receiver whose value bumps after each append becomes readable.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.inner.appends.subscribe()
    }

    /// Makes everything appended so far durable (log, queues, index) and checkpoints.
    pub fn flush(&self) -> Result<()> {
        self.inner.checkpoint(false)
    }

    /// Flushes and writes a clean checkpoint; later appends fail with `Closed`.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let r = self.inner.checkpoint(true);
        self.shutdown_threads();
        // A closed store may be reopened (by this process or another) right away.
        self.inner.lock.lock().take();
        r
    }

    /// Truncates the commit log to global `position` (an entry boundary; replication uses
    /// it), dropping every entry at or after it from consume queues and indexes.
    pub fn truncate_to(&self, position: u64) -> Result<()> {
        self.inner.truncate_to(position)
    }

    /// Runs one retention pass now (also run periodically in the background).
    pub fn enforce_retention(&self) -> Result<()> {
        self.inner.enforce_retention()
    }

    /// Damaged batches met while serving since the store opened (each logged once).
    pub fn damage(&self) -> Vec<DamagedBatch> {
        self.inner.damage.list()
    }

    /// Offset ranges given up by repairs (reads skip them): (partition, first, last).
    pub fn lost_ranges(&self) -> Vec<(PartitionId, Offset, Offset)> {
        self.inner.lost.list()
    }

    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        let segs = inner.log.segments();
        let clean = inner.cleaner.totals();
        StoreStats {
            partitions: inner.parts.read().len(),
            segments: segs.len(),
            bytes_on_disk: segs.iter().map(|s| s.allocated_bytes()).sum(),
            fsync_count: inner.fsync_count.load(Ordering::Relaxed),
            fsync_total_micros: inner.fsync_micros.load(Ordering::Relaxed),
            open_queue_files: inner.files.cache.open_count(),
            write_position: inner.log.lock_writer().pos,
            synced_position: inner.log.synced(),
            hash_index_files: inner.hindex.file_count(),
            damaged_batches: inner.damage.count(),
            clean_passes: clean.passes,
            clean_bytes_punched: clean.bytes_punched,
            clean_bytes_freed: clean.bytes_freed,
        }
    }

    /// Test hook: while `on`, every commit-log write fails with ENOSPC.
    #[doc(hidden)]
    pub fn inject_disk_full(&self, on: bool) {
        self.inner.log.inject_enospc.store(on, Ordering::Release);
    }

    /// Resolves once everything appended so far is durable: joins the next group commit,
    /// as a `Flush::Sync` append does (an acknowledgement that depends on earlier appends,
    /// e.g. a producer's retried batch, waits on this).
    pub async fn synced(&self) -> Result<()> {
        let end = self.inner.log.lock_writer().pos;
        let rx = self.inner.group.register(end)?;
        let done = rx.await.map_err(|_| StorageError::Closed)?;
        done.map_err(|msg| {
            StorageError::io(
                "group commit",
                &self.inner.log.dir,
                std::io::Error::other(msg),
            )
        })
    }

    /// Test hook: the next compaction passes stop (as a kill would) before queueing copy
    /// number `copies` (from 1), or with `u64::MAX` after switching but before the
    /// checkpoint that commits the switch; `0` turns it off.
    #[doc(hidden)]
    pub fn inject_compaction_fault(&self, copies: u64) {
        self.inner.compaction_fault.store(copies, Ordering::Release);
    }

    /// Test hook: every group commit (`Flush::Sync`) waits `ms` more before its fdatasync,
    /// as a slow disk would.
    #[doc(hidden)]
    pub fn inject_slow_sync(&self, ms: u64) {
        self.inner
            .group
            .inject_delay_ms
            .store(ms, Ordering::Release);
    }

    fn shutdown_threads(&self) {
        self.stop.stop();
        self.inner.group.shutdown();
        self.inner.hindex.shutdown();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown_threads();
    }
}

/// The first record of `batch` at or after `log_start` with timestamp `>= ts`.
fn exact_record(
    batch: &[u8],
    ts: TimestampMs,
    log_start: Offset,
    cap: usize,
) -> Option<(Offset, TimestampMs)> {
    let h = BatchHeader::parse(batch).ok()?;
    let data = records::records_bytes(&h, cap).ok()?;
    let mut found = None;
    records::for_each_record(&h, &data, |r| {
        let off = h.base_offset() + r.offset_delta as i64;
        if found.is_none() && r.timestamp >= ts && off >= log_start {
            found = Some((off, r.timestamp));
        }
    })
    .ok()?;
    found
}
