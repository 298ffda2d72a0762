//! Opening a store: format check, checkpoint load, commit-log tail replay.
//!
//! 1. `FORMAT` names the store format version; an unknown version is refused.
//! 2. The checkpoint gives each partition's state and the commit-log position `P` below
//!    which consume queues and indexes are durable. Queue entries past a partition's
//!    checkpointed `cq_end` are ignored (and overwritten by the replay).
//! 3. From `P`, every entry is checked (header CRC, batch CRC) and dispatched to its
//!    partition's consume queue and index as an append would. The scan ends at the first
//!    position without a valid header (zeros or a torn write); an entry with a valid header
//!    but a failing body is kept only if a valid entry follows it (a damaged byte, which reads
//!    will refuse), otherwise it is the torn tail. A batch whose base offset does not continue
//!    its partition also ends the scan. Everything from the end on is zeroed.
//! 4. A fresh checkpoint is written, so a second crash replays less.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::{Offset, PartitionId};
use parking_lot::Mutex;

use crate::batch::BatchHeader;
use crate::checkpoint::Checkpoint;
use crate::commit_log::CommitLog;
use crate::config::{OpenMode, PartitionConfig, StoreConfig};
use crate::consume_queue::CqEntry;
use crate::damage::LostRanges;
use crate::entry::{self, ENTRY_HEADER_BYTES, EntryFault};
use crate::error::{Result, StorageError};
use crate::hash_index::{HashIndex, Limits};
use crate::partition::{Partition, QueueFiles};
use crate::store::{Inner, index_batch};

const FORMAT_MAGIC: &[u8; 8] = b"SLUICEST";
/// Version 2: the commit log may hold padding entries (`entry.rs`, written by the cleaner);
/// version 3: also copy entries (written by log compaction); version 4: also shared
/// entries (one batch in several partitions). New stores are created as 4; an older store
/// is opened as is and marked 4 before its first padding, copy or shared entry is written
/// ([`upgrade_format`]), so builds that do not know them refuse it rather than misread it.
pub const FORMAT_VERSION: u8 = 4;
const FORMAT_VERSION_OLDEST: u8 = 1;

fn format_bytes(version: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(FORMAT_MAGIC);
    b.extend_from_slice(&[version, 0, 0, 0]);
    let crc = crc_fast::crc32_iscsi(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn check_format(dir: &Path) -> Result<()> {
    let path = dir.join("FORMAT");
    match std::fs::read(&path) {
        Ok(b) => {
            let ok = b.len() == 16
                && &b[0..8] == FORMAT_MAGIC
                && crc_fast::crc32_iscsi(&b[0..12]).to_le_bytes() == b[12..16];
            if !ok {
                return Err(StorageError::Format {
                    path,
                    reason: "not a Sluice store FORMAT file".into(),
                });
            }
            if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&b[8]) {
                return Err(StorageError::Format {
                    path,
                    reason: format!(
                        "store format version {} (this build reads {FORMAT_VERSION_OLDEST} to {FORMAT_VERSION})",
                        b[8]
                    ),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format_bytes(FORMAT_VERSION))
                .map_err(|e| StorageError::io("writing", &path, e))?;
            crate::commit_log::sync_dir(dir)
        }
        Err(e) => Err(StorageError::io("reading", &path, e)),
    }
}

/// Marks the store `FORMAT_VERSION` if it is older. The 16 bytes are rewritten in place
/// (one sector, so never torn; no new block needed on a full disk) and fdatasynced.
pub(crate) fn upgrade_format(dir: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("FORMAT");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("opening", &path, e))?;
    let mut version = [0u8; 1];
    f.read_exact_at(&mut version, 8)
        .map_err(|e| StorageError::io("reading", &path, e))?;
    if version[0] >= FORMAT_VERSION {
        return Ok(());
    }
    f.write_all_at(&format_bytes(FORMAT_VERSION), 0)
        .and_then(|()| f.sync_data())
        .map_err(|e| StorageError::io("writing", &path, e))
}

/// Partition directories under `queues/` (numeric names); removes `*.deleted` leftovers.
fn partition_dirs(root: &Path) -> Result<Vec<PartitionId>> {
    std::fs::create_dir_all(root).map_err(|e| StorageError::io("creating dir", root, e))?;
    let mut out = Vec::new();
    let rd = std::fs::read_dir(root).map_err(|e| StorageError::io("listing", root, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| StorageError::io("listing", root, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".deleted") {
            let _ = std::fs::remove_dir_all(ent.path());
        } else if let Ok(id) = name.parse::<u32>() {
            out.push(PartitionId(id));
        }
    }
    Ok(out)
}

/// Takes an exclusive advisory lock on `dir/LOCK` for the life of the store: two processes
/// appending to one commit log would corrupt it.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("opening", &path, e))?;
    if let Err(e) = rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        let e = std::io::Error::from(e);
        return Err(StorageError::io(
            "locking the store (is another process using it?)",
            &path,
            e,
        ));
    }
    Ok(f)
}

pub fn open(cfg: StoreConfig) -> Result<Inner> {
    let dir = cfg.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("creating dir", &dir, e))?;
    let lock = lock_dir(&dir)?;
    check_format(&dir)?;
    let ckpt = match Checkpoint::read(&dir) {
        Ok(c) => c,
        Err(e @ StorageError::Format { .. }) => {
            // Cannot happen with atomic renames short of media damage; rebuild everything
            // from the commit log rather than refuse to start.
            tracing::error!(error = %e, "checkpoint unreadable; rebuilding from the commit log");
            None
        }
        Err(e) => return Err(e),
    };
    let log = Arc::new(CommitLog::open(
        &dir.join("commitlog"),
        cfg.segment_bytes,
        cfg.clock.clone(),
    )?);
    let files = QueueFiles::new(
        dir.join("queues"),
        cfg.cq_entries_per_file,
        cfg.max_open_files,
        log.clone(),
    );
    let on_disk = partition_dirs(&files.root)?;
    let mut parts: HashMap<PartitionId, Arc<Mutex<Partition>>> = HashMap::new();
    let ckpt = ckpt.unwrap_or_default();
    for r in &ckpt.partitions {
        parts.insert(r.id, Arc::new(Mutex::new(r.to_partition())));
    }
    // A checkpointed partition whose directory is gone was deleted.
    let present: std::collections::HashSet<PartitionId> = on_disk.iter().copied().collect();
    parts.retain(|id, _| present.contains(id));
    for id in on_disk {
        // After a crash the partition's own `config` file is the latest policy (the
        // checkpoint's copy may predate a change); after a clean close the checkpoint is
        // current, and skipping 100,000 small reads keeps the open fast.
        let read_file = !ckpt.clean || !parts.contains_key(&id);
        let cfg = read_file
            .then(|| std::fs::read(files.dir(id).join("config")).ok())
            .flatten()
            .and_then(|b| PartitionConfig::decode(&b));
        let part = parts
            .entry(id)
            .or_insert_with(|| Arc::new(Mutex::new(Partition::new(PartitionConfig::default()))));
        if let Some(cfg) = cfg {
            part.lock().cfg = cfg;
        }
    }
    let findings = crate::check::find_on_open(&ckpt, &log, &files);
    let mode = cfg.open_mode;
    if !findings.is_empty() && mode == OpenMode::Normal {
        return Err(crate::check::refusal(&dir, &findings));
    }
    for f in &findings {
        tracing::warn!(finding = %f, "damaged store opened for check/repair");
    }
    let lost = LostRanges::load(&dir)?;
    let start = ckpt.position.max(log.start());
    let lim = Limits {
        slots: cfg.hash_index_slots.max(1),
        capacity: cfg.hash_index_entries_per_file.max(1),
        files_max: cfg.hash_index_files_max.max(1),
    };
    let opened = HashIndex::open(&dir.join("hindex"), lim, start, log.start())?;
    let inner = Inner::new(cfg, log, files, opened.index, lost);
    *inner.findings.lock() = findings;
    *inner.lock.lock() = Some(lock);
    *inner.parts.write() = parts;
    if opened.rebuild_all && start > inner.log.start() {
        tracing::info!(to = start, "no hash index: re-indexing the commit log");
        inner.reindex_range(inner.log.start(), start, &mut |p, pos, base, keys| {
            inner.hindex.add(p, pos, base, keys)
        });
    }
    let end = replay(&inner, start)?;
    if end > start {
        tracing::info!(from = start, to = end, "replayed commit-log tail");
    }
    if mode == OpenMode::Check {
        // Read-only: the writer is only positioned, nothing is zeroed or checkpointed.
        inner.log.lock_writer().pos = end.max(ckpt.position);
        return Ok(inner);
    }
    inner.log.set_end(end.max(ckpt.position))?;
    inner.checkpoint(false)?;
    Ok(inner)
}

/// Scans and dispatches entries from `pos`; returns the end of the valid log.
fn replay(inner: &Inner, mut pos: u64) -> Result<u64> {
    let from = pos;
    let cap = inner.cfg.max_decompressed_batch_bytes;
    let id_header = inner.cfg.message_id_header.as_deref();
    // Copy entries seen, by partition: a commit marker adopts the ones of its pass.
    let mut copies: HashMap<PartitionId, Vec<CqEntry>> = HashMap::new();
    // End of the last padding entry crossed (see `cleaner::skip_cleaned_gap`).
    let mut padding_end = None;
    loop {
        let seg = match inner.log.segment_at(pos) {
            Some(s) => s,
            None => match inner.log.segment_from(pos) {
                // Between segments (the writer rolled): continue in the next one.
                Some(s) if entry::starts_entry(s.bytes()) => {
                    pos = s.base;
                    continue;
                }
                _ => return Ok(pos),
            },
        };
        let rel = (pos - seg.base) as usize;
        let bytes = &seg.bytes()[rel..];
        if let Some(span) = entry::padding_span(bytes) {
            // Dead entries the cleaner freed: skipped by length, nothing to check.
            pos += span;
            padding_end = Some(pos);
            continue;
        }
        let h = match entry::check_header(bytes) {
            Ok(h) => h,
            Err(_) => {
                // End of this segment's data. If a later segment holds valid entries the
                // writer rolled over; otherwise this is the end of the log.
                match inner.log.segment_from(seg.end()) {
                    Some(next) if entry::starts_entry(next.bytes()) => {
                        pos = next.base;
                        continue;
                    }
                    _ => return Ok(pos),
                }
            }
        };
        let size = h.span() as usize;
        if entry::check(bytes) == Err(EntryFault::BadBody) {
            // A torn last write, or a damaged byte in the middle of the log: only the
            // latter has a valid entry after it.
            let follows = bytes.get(size..).is_some_and(entry::starts_entry)
                || inner
                    .log
                    .segment_from(seg.end())
                    .is_some_and(|next| entry::starts_entry(next.bytes()));
            if !follows {
                return Ok(pos);
            }
            tracing::error!(
                position = pos,
                "commit-log entry fails its batch CRC; kept, never served"
            );
        }
        if h.copy {
            // A copy written by log compaction past the checkpoint: its pass was not
            // checkpointed. Kept aside; if its commit marker follows (the pass switched),
            // and the replay saw all its copies, the partition becomes them.
            let body = &bytes[ENTRY_HEADER_BYTES..size];
            let end = pos + size as u64;
            match crate::compaction::commit_marker_of(body) {
                Some(copy_lo) if copy_lo >= from => {
                    let mine = copies.remove(&h.partition).unwrap_or_default();
                    adopt(inner, h.partition, mine, copy_lo, end);
                }
                Some(_) => {
                    copies.remove(&h.partition);
                }
                None => {
                    if let Ok(b) = BatchHeader::parse(body) {
                        copies.entry(h.partition).or_default().push(CqEntry {
                            position: pos,
                            batch_len: h.batch_len,
                            offset_span: b.last_offset_delta().max(0) as u32 + 1,
                            base_offset: b.base_offset(),
                            max_timestamp: b.max_timestamp(),
                            filter_bits: 0,
                        });
                    }
                }
            }
            pos = end;
            continue;
        }
        if !dispatch(inner, &h, bytes, pos, cap, id_header, padding_end) {
            tracing::error!(position = pos, partition = %h.partition, "offset discontinuity; log ends here");
            return Ok(pos);
        }
        pos += size as u64;
    }
}

/// A compaction pass committed after the checkpoint (its marker replayed): partition `p`
/// becomes its copies from `copy_lo` on, as the pass's switch made it before the crash.
fn adopt(inner: &Inner, p: PartitionId, copies: Vec<CqEntry>, copy_lo: u64, copy_hi: u64) {
    let Some(part) = inner.parts.read().get(&p).cloned() else {
        return; // deleted since
    };
    let mine: Vec<CqEntry> = copies
        .into_iter()
        .filter(|e| e.position >= copy_lo)
        .collect();
    let mut g = part.lock();
    if let Some(last) = mine.last() {
        g.log_end = g.log_end.max(last.next_offset());
    }
    inner.switch(&mut g, mine, copy_hi, 0);
    tracing::info!(partition = %p, "replay adopted a compaction committed after the checkpoint");
}

/// Replays one batch entry into every partition holding it (a shared entry's too: all of
/// them or none). False when a partition's offsets do not continue (the log ends here).
#[allow(clippy::too_many_arguments)]
fn dispatch(
    inner: &Inner,
    h: &entry::EntryHeader,
    bytes: &[u8],
    pos: u64,
    cap: usize,
    id_header: Option<&[u8]>,
    padding_end: Option<u64>,
) -> bool {
    let body = &bytes[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + h.batch_len as usize];
    let Ok(b) = BatchHeader::parse(body) else {
        return false;
    };
    let mut holders = vec![(h.partition, b.base_offset())];
    holders.extend(h.others(bytes));
    let parts: Vec<(PartitionId, Offset, Arc<Mutex<Partition>>)> = {
        let all = inner.parts.read();
        holders
            .into_iter()
            // A deleted partition's leftovers are skipped.
            .filter_map(|(p, base)| all.get(&p).map(|part| (p, base, part.clone())))
            .collect()
    };
    for (_, base, part) in &parts {
        let g = part.lock();
        let fresh = g.cq_end == 0 && g.log_end == 0;
        if !fresh && *base != g.log_end && !crate::cleaner::cleaned_gap(&g, *base, padding_end) {
            return false;
        }
    }
    for (p, base, part) in parts {
        let mut g = part.lock();
        if g.cq_end == 0 && g.log_end == 0 {
            g.log_start = base;
            g.log_end = base;
        } else if base != g.log_end {
            crate::cleaner::skip_cleaned_gap(&mut g, base);
        }
        g.push(CqEntry {
            position: pos,
            batch_len: body.len() as u32,
            offset_span: b.last_offset_delta().max(0) as u32 + 1,
            base_offset: base,
            max_timestamp: b.max_timestamp(),
            filter_bits: 0,
        });
        let index_on = g.cfg.index;
        drop(g);
        if index_on && let Ok(keys) = index_batch(body, cap, id_header) {
            inner.hindex.add(p, pos, base, &keys);
        }
    }
    true
}
