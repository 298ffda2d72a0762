//! Log compaction (Kafka's `cleanup.policy=compact`): a compacted partition keeps at least
//! the latest record of every key; older records of a key, aborted transactional data,
//! and tombstones and transaction markers past their delete horizon are removed. Offsets
//! never change: compaction leaves gaps, which reads, `find` and consumers step over.
//!
//! Every partition writes into the same commit-log segments, so nothing can be rewritten in
//! place. A pass copies the partition *forward*: its surviving batches are appended at the
//! head of the log as *copy entries* (`entry.rs`, flag `FLAG_COPY`), each batch rewritten
//! without its removed records (base offset, `lastOffsetDelta`, producer id and base
//! sequence kept, as Kafka's cleaner keeps them) or copied verbatim when nothing in it goes.
//! The partition's uncleanable tail (records newer than `min.compaction.lag.ms`,
//! transactions still open, its last batch) is copied verbatim after them, and so are the
//! appends that arrive meanwhile: the last few under the commit-log writer lock, then the
//! partition's consume queue switches to the copies in one step (new slots after the old
//! ones, the first live slot moved to the first copy). From then on the partition is:
//! copies in `[start_pos, copy_hi)`, appends from `copy_hi`. Everything it had below
//! `copy_hi` that is not a copy in that range is dead, and the cleaner (`cleaner.rs`) and
//! retention free it like any dead entry, once a checkpoint records the switch.
//!
//! Crash safety: the switch is in memory until the checkpoint after it (written at the end
//! of the pass) makes it durable; that checkpoint's replay position is past every copy. A
//! crash before it reopens the old checkpoint: the old slots and entries are intact (the
//! cleaner frees only what a durable checkpoint calls dead) and the replay ignores copy
//! entries, which are dead for the cleaner (outside any durable copy range). A crash after
//! it reopens the compacted partition. Nothing is lost or served twice at any point.
//!
//! Which records go (Kafka's rules):
//! - a record whose key has a later record in the cleanable range (the *offset map*, key →
//!   latest offset, built over that range; keyless records are kept);
//! - data of aborted transactions (decided by the markers in the partition);
//! - a tombstone (null value) that is its key's latest record, once its batch's delete
//!   horizon has passed: the first pass that keeps a tombstone sets the horizon to
//!   now + `delete.retention.ms` in the batch (KIP-534: attribute bit 6, the base timestamp
//!   holds the horizon, record timestamp deltas are rebased so every record keeps its
//!   timestamp);
//! - a transaction marker whose transaction has no data left, once `delete.retention.ms`
//!   has passed since it was written (its timestamp is the broker's clock).
//!
//! A batch left with no records is dropped, except the last batch of an idempotent producer,
//! kept empty so its sequence survives (as Kafka does).
//!
//! A partition is compacted when its uncompacted share of bytes reaches
//! `min.cleanable.dirty.ratio`, or its oldest uncompacted record is older than
//! `max.compaction.lag.ms`. Cost: a pass reads the partition twice (headers, then the
//! cleanable records) and writes what survives plus the tail, its reads paced to
//! `storage.compaction_bytes_per_sec`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{Offset, PartitionId};
use parking_lot::Mutex;

use crate::batch::{BatchHeader, CRC_START, Compression, HEADER_BYTES, LOG_OVERHEAD, MAGIC_V2};
use crate::batch_builder::put_varint;
use crate::commit_log::Writer;
use crate::config::Compaction;
use crate::consume_queue::CqEntry;
use crate::entry;
use crate::error::{Result, StorageError};
use crate::partition::Partition;
use crate::records::{self, RecordMeta};
use crate::store::{Inner, Store, index_batch};

/// Batch attribute bit: the base timestamp is the batch's delete horizon (KIP-534).
const ATTR_DELETE_HORIZON: i16 = 0x40;
const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Copies are appended in chunks of about this many bytes, one writer-lock hold each.
const CHUNK_BYTES: usize = 1 << 20;
/// Catch-up rounds copying appends that arrived during the pass, before the last ones are
/// copied under the writer lock.
const CATCH_UP_ROUNDS: usize = 8;
/// Appends left for the final copy under the writer lock (stalling every producer briefly).
const CATCH_UP_ENTRIES: u64 = 64;
/// Bound of the offset map (key bytes plus overhead): a partition with more distinct keys
/// is compacted in several passes, each over the prefix whose keys fit.
const MAP_BYTES: usize = 64 << 20;
/// Slots read per consume-queue page.
const PAGE: u64 = 1024;

/// What one compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactPass {
    /// Partitions compacted.
    pub partitions: usize,
    /// Bytes of batches read (both scans).
    pub bytes_read: u64,
    /// Bytes of copy entries written (rewritten, verbatim and tail).
    pub bytes_written: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Batches removed whole.
    pub batches_removed: u64,
}

/// What deciding a batch's fate needs: the scan, the offset map, the settings, the time,
/// and the cleanable entries kept with data so far.
type CleanCtx<'a> = (
    &'a Scan,
    &'a HashMap<Vec<u8>, Offset>,
    &'a Compaction,
    i64,
    &'a HashSet<u64>,
);

/// What the header scan found about a partition's entries `[a, m)`.
#[derive(Default)]
struct Scan {
    /// Entries `[a, end)` are cleanable.
    end: u64,
    /// Entries holding data of aborted transactions.
    aborted: HashSet<u64>,
    /// Each transaction marker's entry → the entries of its transaction's data.
    markers: HashMap<u64, Vec<u64>>,
    /// Each producer id's last entry.
    last_of_producer: HashMap<i64, u64>,
}

/// A batch on its way to the head of the log.
enum Out {
    Same(Bytes),
    New(Vec<u8>),
}

impl Out {
    fn bytes(&self) -> &[u8] {
        match self {
            Out::Same(b) => b,
            Out::New(v) => v,
        }
    }
}

/// Copies not yet written, and the slots of those written.
#[derive(Default)]
struct Copies {
    pending: Vec<Out>,
    pending_bytes: usize,
    written: Vec<CqEntry>,
}

/// A pass in progress: its figures and its pace.
struct Pass {
    stats: CompactPass,
    throttle: Throttle,
}

/// The earliest delete horizon among what a pass kept (`i64::MAX`: none).
struct Horizon(i64);

/// Paces a pass's reads to `StoreConfig::compaction_bytes_per_sec` (Kafka's
/// `log.cleaner.io.max.bytes.per.second`): sleeps whenever it is ahead. Never charged
/// with the writer lock held.
struct Throttle {
    start: std::time::Instant,
    limit: u64,
    bytes: u64,
}

impl Throttle {
    fn new(limit: u64) -> Throttle {
        Throttle {
            start: std::time::Instant::now(),
            limit,
            bytes: 0,
        }
    }

    fn charge(&mut self, n: usize) {
        if self.limit == 0 {
            return;
        }
        self.bytes += n as u64;
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / self.limit as f64);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// The compactor thread: a pass every `retention_check_interval_ms`.
pub(crate) fn background(inner: Arc<Inner>, stop: Arc<crate::flush::Stop>) {
    let every = std::time::Duration::from_millis(inner.cfg.retention_check_interval_ms.max(1));
    while !stop.wait(every) {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.compact() {
            tracing::warn!(error = %e, "compaction pass failed; will retry");
        }
    }
}

impl Store {
    /// Runs one compaction pass now over every compacted partition that is due (also run
    /// in the background after each retention pass).
    pub fn compact(&self) -> Result<CompactPass> {
        self.inner.compact()
    }
}

impl Inner {
    /// One compaction pass: every compacted partition whose dirty ratio or compaction lag
    /// says so; then a checkpoint, which commits the switches (module docs).
    pub fn compact(&self) -> Result<CompactPass> {
        let _admin = self.admin.lock();
        let mut parts: Vec<(PartitionId, Arc<Mutex<Partition>>)> = self
            .parts
            .read()
            .iter()
            .filter(|(_, v)| v.lock().cfg.compaction.is_some())
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        parts.sort_by_key(|(k, _)| *k);
        let mut pass = Pass {
            stats: CompactPass::default(),
            throttle: Throttle::new(self.cfg.compaction_bytes_per_sec),
        };
        for (p, part) in &parts {
            if self.closed.load(Ordering::Acquire) {
                return Err(StorageError::Closed);
            }
            match self.compact_partition(*p, part, &mut pass) {
                Ok(()) => {}
                Err(StorageError::Closed) => return Err(StorageError::Closed),
                // Damage or a race with deletion: this partition waits for the next pass.
                Err(e) => tracing::warn!(partition = %p, error = %e, "compaction skipped"),
            }
        }
        let pass = pass.stats;
        if pass.partitions > 0 && self.compaction_fault.load(Ordering::Acquire) != u64::MAX {
            self.checkpoint(false)?;
        }
        Ok(pass)
    }

    fn compact_partition(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        pass: &mut Pass,
    ) -> Result<()> {
        let (comp, a, m) = {
            let g = part.lock();
            let Some(comp) = g.cfg.compaction else {
                return Ok(());
            };
            (comp, g.cq_start, g.cq_end)
        };
        // The last batch always stays (so the log never ends in a gap a consumer waits in).
        if m < a + 2 || !self.due(p, part, &comp, a, m - 1)? {
            return Ok(());
        }
        let now = self.cfg.clock.now_ms();
        let Some(mut scan) = self.scan_headers(p, part, &comp, a, m, now, pass)? else {
            return Ok(());
        };
        let Some(map) = self.offset_map(p, part, &mut scan, a, pass)? else {
            return Ok(());
        };
        let index_on = part.lock().cfg.index;
        let mut copies = Copies::default();
        let mut kept_data: HashSet<u64> = HashSet::new();
        let mut horizon = Horizon(i64::MAX);
        let mut i = a;
        while i < m {
            let page = self.files.cq_entries(p, part, i, (m - i).min(PAGE))?;
            if page.is_empty() {
                return Ok(()); // expired or deleted meanwhile: nothing switched
            }
            for e in &page {
                let bytes = self.load_batch(p, e)?;
                pass.stats.bytes_read += bytes.len() as u64;
                pass.throttle.charge(bytes.len());
                let out = if i >= scan.end {
                    Some(Out::Same(bytes))
                } else {
                    let ctx = (&scan, &map, &comp, now, &kept_data);
                    self.clean_batch(i, bytes, ctx, &mut horizon, pass)?
                };
                if let Some(out) = out {
                    // A transaction marker stays while any data of its transaction does.
                    if BatchHeader::parse(out.bytes())?.record_count() > 0 {
                        kept_data.insert(i);
                    }
                    self.stage(p, &mut copies, out, index_on, pass)?;
                }
                i += 1;
            }
        }
        // Appends that arrived meanwhile: copied in rounds, the last few under the lock.
        let mut m = m;
        for _ in 0..CATCH_UP_ROUNDS {
            let now_end = part.lock().cq_end;
            if now_end <= m + CATCH_UP_ENTRIES {
                break;
            }
            m = self.copy_verbatim(p, part, m, now_end, &mut copies, index_on, pass)?;
        }
        self.flush_copies(p, &mut copies, index_on, pass)?;
        let clean_end = match scan.end {
            e if e > a => self
                .files
                .cq_entries(p, part, e - 1, 1)?
                .first()
                .map_or(0, CqEntry::next_offset),
            _ => 0,
        };
        let mut w = self.log.lock_writer();
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let mut g = part.lock();
        if g.deleted {
            return Ok(());
        }
        let from = m.max(g.cq_start);
        let rest = self.files.cq_entries_locked(p, &g, from, g.cq_end - from)?;
        for e in &rest {
            let bytes = self.load_batch(p, e)?;
            pass.stats.bytes_read += bytes.len() as u64;
            copies.pending.push(Out::Same(bytes));
        }
        self.write_copies(p, &mut w, &mut copies, index_on, pass)?;
        // The commit marker: lets a replay without a checkpoint adopt these copies.
        let copy_lo = copies.written.first().map_or(w.pos, |e| e.position);
        let marker = commit_marker(copy_lo);
        self.log
            .append(&mut w, &[(entry::encode_copy(p, &marker), &marker[..])])?;
        let copy_hi = w.pos;
        self.switch(&mut g, copies.written, copy_hi, clean_end);
        g.next_horizon = horizon.0;
        pass.stats.partitions += 1;
        Ok(())
    }

    /// Whether `p` needs compacting: its dirty share of bytes over `[a, end)` reaches the
    /// ratio, or its oldest dirty batch is older than the maximum lag.
    fn due(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        comp: &Compaction,
        a: u64,
        end: u64,
    ) -> Result<bool> {
        let (clean_end, total, next_horizon) = {
            let g = part.lock();
            (g.clean_end, g.bytes, g.next_horizon)
        };
        if next_horizon <= self.cfg.clock.now_ms() {
            return Ok(true); // tombstones or markers kept by the last pass may go now
        }
        let first_dirty = self.files.find(p, part, clean_end)?.unwrap_or(end).max(a);
        let mut dirty = 0u64;
        let mut oldest = i64::MAX;
        let mut i = first_dirty;
        while i < end {
            let page = self.files.cq_entries(p, part, i, (end - i).min(PAGE))?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                dirty += e.batch_len as u64;
                if e.max_timestamp >= 0 {
                    oldest = oldest.min(e.max_timestamp);
                }
            }
            i += page.len() as u64;
        }
        if dirty == 0 {
            return Ok(false);
        }
        let ratio_met = dirty as u128 * 1_000_000 >= comp.min_dirty_ppm as u128 * total as u128;
        let now = self.cfg.clock.now_ms();
        let lag_met = oldest != i64::MAX && now.saturating_sub(oldest) > comp.max_lag_ms;
        Ok(ratio_met || lag_met)
    }

    /// The header scan of `[a, m)`: the cleanable end (before the last batch, records newer
    /// than the minimum lag and transactions without a marker yet), aborted transactions'
    /// entries, markers and each producer's last entry. `None`: the partition changed under
    /// the scan (try again next pass).
    #[allow(clippy::too_many_arguments)]
    fn scan_headers(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        comp: &Compaction,
        a: u64,
        m: u64,
        now: i64,
        pass: &mut Pass,
    ) -> Result<Option<Scan>> {
        let mut scan = Scan {
            end: m - 1,
            ..Scan::default()
        };
        let young = now.saturating_sub(comp.min_lag_ms);
        let mut open: HashMap<i64, Vec<u64>> = HashMap::new();
        let mut i = a;
        while i < m {
            let page = self.files.cq_entries(p, part, i, (m - i).min(PAGE))?;
            if page.is_empty() {
                return Ok(None);
            }
            for e in &page {
                if comp.min_lag_ms > 0 && e.max_timestamp > young {
                    scan.end = scan.end.min(i);
                }
                let bytes = self.load_batch(p, e)?;
                pass.stats.bytes_read += crate::batch::HEADER_BYTES as u64;
                pass.throttle.charge(crate::batch::HEADER_BYTES);
                let h = BatchHeader::parse(&bytes)?;
                let pid = h.producer_id();
                if pid >= 0 {
                    scan.last_of_producer.insert(pid, i);
                }
                if h.is_control() {
                    let members = open.remove(&pid).unwrap_or_default();
                    if control_is_abort(&h, self.cfg.max_decompressed_batch_bytes) {
                        scan.aborted.extend(members.iter().copied());
                    }
                    scan.markers.insert(i, members);
                } else if h.is_transactional() {
                    open.entry(pid).or_default().push(i);
                }
                i += 1;
            }
        }
        // Data of a transaction without its marker yet is not decided: stop before it.
        if let Some(first_open) = open.values().filter_map(|v| v.first()).min() {
            scan.end = scan.end.min(*first_open);
        }
        Ok(Some(scan))
    }

    /// Key → offset of its latest record over the cleanable range (committed data only).
    /// Shortens the range where the map would outgrow its bound. `None`: the partition
    /// changed under the scan.
    fn offset_map(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        scan: &mut Scan,
        a: u64,
        pass: &mut Pass,
    ) -> Result<Option<HashMap<Vec<u8>, Offset>>> {
        let cap = self.cfg.max_decompressed_batch_bytes;
        let mut map: HashMap<Vec<u8>, Offset> = HashMap::new();
        let mut map_bytes = 0usize;
        let mut i = a;
        while i < scan.end {
            let page = self
                .files
                .cq_entries(p, part, i, (scan.end - i).min(PAGE))?;
            if page.is_empty() {
                return Ok(None);
            }
            for e in &page {
                if map_bytes > MAP_BYTES {
                    scan.end = i;
                    return Ok(Some(map));
                }
                i += 1;
                if scan.aborted.contains(&(i - 1)) {
                    continue;
                }
                let bytes = self.load_batch(p, e)?;
                pass.stats.bytes_read += bytes.len() as u64;
                pass.throttle.charge(bytes.len());
                let h = BatchHeader::parse(&bytes)?;
                if h.is_control() {
                    continue;
                }
                // Reads skip the batch CRC once an entry was checked; a pass does not: what
                // it decodes here decides what goes, and what it rewrites gets a new CRC, so
                // a byte damaged since must stop the pass, not be laundered into a copy.
                h.verify_crc(0).map_err(|_| StorageError::CorruptData {
                    partition: p,
                    offset: e.base_offset,
                    position: e.position,
                    reason: "batch CRC mismatch (compaction)",
                })?;
                let data = records::records_bytes(&h, cap)?;
                records::for_each_record(&h, &data, |r| {
                    if let Some(k) = r.key {
                        let off = h.base_offset() + r.offset_delta as i64;
                        if map.insert(k.to_vec(), off).is_none() {
                            map_bytes += k.len() + 48;
                        }
                    }
                })?;
            }
        }
        Ok(Some(map))
    }

    /// The cleaned form of cleanable entry `i`: `None` when it goes whole. Lowers
    /// `horizon` to the delete horizon of any tombstone or marker it keeps.
    fn clean_batch(
        &self,
        i: u64,
        bytes: Bytes,
        (scan, map, comp, now, kept_data): CleanCtx<'_>,
        horizon_out: &mut Horizon,
        pass: &mut Pass,
    ) -> Result<Option<Out>> {
        let h = BatchHeader::parse(&bytes)?;
        let count = h.record_count().max(0) as u64;
        if scan.aborted.contains(&i) {
            pass.stats.records_removed += count;
            pass.stats.batches_removed += 1;
            return Ok(None);
        }
        if h.is_control() {
            let has_data = scan
                .markers
                .get(&i)
                .is_some_and(|m| m.iter().any(|j| kept_data.contains(j)));
            let horizon = h.max_timestamp().saturating_add(comp.delete_retention_ms);
            if !has_data && horizon <= now {
                pass.stats.records_removed += count;
                pass.stats.batches_removed += 1;
                return Ok(None);
            }
            if !has_data {
                horizon_out.0 = horizon_out.0.min(horizon);
            }
            return Ok(Some(Out::Same(bytes)));
        }
        let horizon = (h.attributes() & ATTR_DELETE_HORIZON != 0).then(|| h.base_timestamp());
        let data = records::records_bytes(&h, self.cfg.max_decompressed_batch_bytes)?;
        let mut kept: Vec<RecordMeta<'_>> = Vec::new();
        let mut tombstones = false;
        records::for_each_record(&h, &data, |r| {
            let off = h.base_offset() + r.offset_delta as i64;
            let Some(k) = r.key else {
                kept.push(r); // no key: nothing supersedes it
                return;
            };
            if map.get(k).is_some_and(|&latest| latest > off) {
                return;
            }
            if r.value.is_none() {
                if horizon.is_some_and(|t| t <= now) {
                    return;
                }
                tombstones = true;
            }
            kept.push(r);
        })?;
        pass.stats.records_removed += count - kept.len() as u64;
        let set_horizon = tombstones && horizon.is_none();
        if tombstones {
            let at = horizon.unwrap_or_else(|| now.saturating_add(comp.delete_retention_ms));
            horizon_out.0 = horizon_out.0.min(at);
        }
        if kept.len() as u64 == count && !set_horizon {
            return Ok(Some(Out::Same(bytes)));
        }
        let pid = h.producer_id();
        if kept.is_empty() && !(pid >= 0 && scan.last_of_producer.get(&pid) == Some(&i)) {
            pass.stats.batches_removed += 1;
            return Ok(None);
        }
        let base_ts = if set_horizon {
            now.saturating_add(comp.delete_retention_ms)
        } else {
            h.base_timestamp()
        };
        Ok(Some(Out::New(rebuild(&h, &kept, base_ts, set_horizon)?)))
    }

    /// Copies entries `[from, to)` of `p` verbatim; returns where it stopped (`to`, or
    /// earlier when retention took entries meanwhile).
    #[allow(clippy::too_many_arguments)]
    fn copy_verbatim(
        &self,
        p: PartitionId,
        part: &Mutex<Partition>,
        from: u64,
        to: u64,
        copies: &mut Copies,
        index_on: bool,
        pass: &mut Pass,
    ) -> Result<u64> {
        let mut i = from;
        while i < to {
            let page = self.files.cq_entries(p, part, i, (to - i).min(PAGE))?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                let bytes = self.load_batch(p, e)?;
                pass.stats.bytes_read += bytes.len() as u64;
                pass.throttle.charge(bytes.len());
                self.stage(p, copies, Out::Same(bytes), index_on, pass)?;
            }
            i += page.len() as u64;
        }
        Ok(i)
    }

    /// Queues one copy; writes the queue when it reaches a chunk.
    fn stage(
        &self,
        p: PartitionId,
        copies: &mut Copies,
        out: Out,
        index_on: bool,
        pass: &mut Pass,
    ) -> Result<()> {
        let fault = self.compaction_fault.load(Ordering::Acquire);
        if fault != 0 && fault != u64::MAX {
            let queued = (copies.written.len() + copies.pending.len()) as u64;
            if queued + 1 >= fault {
                self.flush_copies(p, copies, index_on, pass)?;
                return Err(StorageError::io(
                    "compacting (injected stop)",
                    &self.cfg.dir,
                    std::io::Error::other("injected"),
                ));
            }
        }
        copies.pending_bytes += out.bytes().len();
        copies.pending.push(out);
        if copies.pending_bytes >= CHUNK_BYTES {
            self.flush_copies(p, copies, index_on, pass)?;
        }
        Ok(())
    }

    fn flush_copies(
        &self,
        p: PartitionId,
        copies: &mut Copies,
        index_on: bool,
        pass: &mut Pass,
    ) -> Result<()> {
        if copies.pending.is_empty() {
            return Ok(());
        }
        let mut w = self.log.lock_writer();
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        self.write_copies(p, &mut w, copies, index_on, pass)
    }

    /// Appends the queued copies as copy entries (with the writer lock held) and indexes
    /// them: key lookups confirm a record by its entry's position.
    fn write_copies(
        &self,
        p: PartitionId,
        w: &mut Writer,
        copies: &mut Copies,
        index_on: bool,
        pass: &mut Pass,
    ) -> Result<()> {
        if copies.pending.is_empty() {
            return Ok(());
        }
        self.allow_new_entry_kinds()?;
        let entries: Vec<([u8; entry::ENTRY_HEADER_BYTES], &[u8])> = copies
            .pending
            .iter()
            .map(|o| (entry::encode_copy(p, o.bytes()), o.bytes()))
            .collect();
        let positions = self.log.append(w, &entries)?;
        let cap = self.cfg.max_decompressed_batch_bytes;
        let id_header = self.cfg.message_id_header.as_deref();
        for (o, &position) in copies.pending.iter().zip(&positions) {
            let b = o.bytes();
            let h = BatchHeader::parse(b)?;
            copies.written.push(CqEntry {
                position,
                batch_len: b.len() as u32,
                offset_span: h.last_offset_delta().max(0) as u32 + 1,
                base_offset: h.base_offset(),
                max_timestamp: h.max_timestamp(),
                filter_bits: 0,
            });
            pass.stats.bytes_written += (entry::ENTRY_HEADER_BYTES + b.len()) as u64;
            if index_on
                && !h.is_control()
                && let Ok(keys) = index_batch(b, cap, id_header)
            {
                self.hindex.add(p, position, h.base_offset(), &keys);
            }
        }
        copies.pending.clear();
        copies.pending_bytes = 0;
        Ok(())
    }

    /// Switches the partition to its copies (writer and partition locks held): new slots
    /// after the old ones, the first live slot the first copy. Copies below a log start
    /// that moved meanwhile (retention of `compact,delete`) are left out.
    pub(crate) fn switch(
        &self,
        g: &mut Partition,
        written: Vec<CqEntry>,
        copy_hi: u64,
        clean_end: Offset,
    ) {
        self.changed();
        let keep = written
            .iter()
            .position(|e| e.next_offset() > g.log_start)
            .unwrap_or(written.len());
        let copies = &written[keep..];
        let first = g.cq_end;
        g.cq_pending.extend_from_slice(copies);
        g.cq_end += copies.len() as u64;
        g.cq_start = first;
        g.bytes = copies.iter().map(|e| e.batch_len as u64).sum();
        (g.start_pos, g.head_max_ts) = copies
            .first()
            .map_or((u64::MAX, i64::MIN), |e| (e.position, e.max_timestamp));
        (g.max_ts, g.max_ts_offset) = copies.iter().fold((-1, -1), |(t, o), e| {
            if e.max_timestamp > t {
                (e.max_timestamp, e.base_offset)
            } else {
                (t, o)
            }
        });
        g.copy_hi = copy_hi;
        g.clean_end = clean_end;
    }
}

/// Producer id of a commit marker's batch: no producer has it (ids are -1 or positive).
const MARKER_PRODUCER_ID: i64 = -2;

/// The batch of a compaction's *commit marker*, a copy entry appended right after the
/// copies of a pass, under the same writer-lock hold as the switch: a control batch with no
/// records, producer id [`MARKER_PRODUCER_ID`], `lastOffsetDelta` -1, whose base offset
/// holds the commit-log position of the pass's first copy. Never served (no consume-queue
/// slot points at it). A replay from the log's start (no checkpoint) adopts the copies of
/// `[that position, marker)` as the partition (`recovery.rs`).
pub(crate) fn commit_marker(copy_lo: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_BYTES);
    b.extend_from_slice(&(copy_lo as i64).to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&[0; 4]); // crc, below
    b.extend_from_slice(&0x20i16.to_be_bytes()); // control
    b.extend_from_slice(&(-1i32).to_be_bytes()); // lastOffsetDelta: no offsets
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&MARKER_PRODUCER_ID.to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // no records
    let crc = crc_fast::crc32_iscsi(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// The first-copy position a commit marker's batch names; `None` for any other batch.
pub(crate) fn commit_marker_of(batch: &[u8]) -> Option<u64> {
    let h = BatchHeader::parse(batch).ok()?;
    (h.is_control()
        && h.record_count() == 0
        && h.producer_id() == MARKER_PRODUCER_ID
        && h.last_offset_delta() == -1)
        .then(|| h.base_offset() as u64)
}

/// Whether a control batch is an ABORT marker (its record key: version i16, type i16 with
/// 0 = abort, 1 = commit).
fn control_is_abort(h: &BatchHeader<'_>, cap: usize) -> bool {
    let Ok(data) = records::records_bytes(h, cap) else {
        return false;
    };
    let mut abort = false;
    let _ = records::for_each_record(h, &data, |r| {
        if let Some(k) = r.key
            && k.len() >= 4
        {
            abort = i16::from_be_bytes([k[2], k[3]]) == 0;
        }
    });
    abort
}

/// The batch `h` holding only `kept` of its records: same base offset, `lastOffsetDelta`,
/// producer id, epoch and base sequence, codec (none when empty) and timestamps; the base
/// timestamp `base_ts` (with the delete-horizon bit when `horizon`), record timestamp
/// deltas rebased on it.
fn rebuild(
    h: &BatchHeader<'_>,
    kept: &[RecordMeta<'_>],
    base_ts: i64,
    horizon: bool,
) -> Result<Vec<u8>> {
    let mut section = Vec::new();
    let mut rec = Vec::new();
    for r in kept {
        rec.clear();
        rec.push(0); // record attributes (unused in v2)
        put_varint(&mut rec, r.timestamp.wrapping_sub(base_ts));
        put_varint(&mut rec, i64::from(r.offset_delta));
        for f in [r.key, r.value] {
            match f {
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        put_varint(&mut rec, i64::from(r.header_count));
        rec.extend_from_slice(r.headers_raw);
        put_varint(&mut section, rec.len() as i64);
        section.extend_from_slice(&rec);
    }
    let codec = match kept.is_empty() {
        true => Compression::None,
        false => h
            .compression()
            .ok_or_else(|| StorageError::InvalidBatch("unknown compression codec".into()))?,
    };
    let payload = crate::compression::compress(codec, &section)?;
    let mut attributes = h.attributes();
    if kept.is_empty() {
        attributes &= !ATTR_COMPRESSION_MASK;
    }
    if horizon {
        attributes |= ATTR_DELETE_HORIZON;
    }
    let max_ts = match (
        h.is_log_append_time(),
        kept.iter().map(|r| r.timestamp).max(),
    ) {
        (false, Some(t)) => t,
        _ => h.max_timestamp(),
    };
    let mut b = Vec::with_capacity(HEADER_BYTES + payload.len());
    b.extend_from_slice(&h.base_offset().to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&h.partition_leader_epoch().to_be_bytes());
    b.push(MAGIC_V2 as u8);
    b.extend_from_slice(&[0; 4]); // crc, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&h.last_offset_delta().to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&h.producer_id().to_be_bytes());
    b.extend_from_slice(&h.producer_epoch().to_be_bytes());
    b.extend_from_slice(&h.base_sequence().to_be_bytes());
    b.extend_from_slice(&(kept.len() as i32).to_be_bytes());
    b.extend_from_slice(&payload);
    let crc = crc_fast::crc32_iscsi(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b)
}
