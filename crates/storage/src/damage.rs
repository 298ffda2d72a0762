//! Damage a crash cannot explain: what the store reports, remembers and skips.
//!
//! - [`DamageLog`]: batches found failing their CRC at run time (a read, a lookup). Each is
//!   logged once (partition, offsets, file, position), counted, and listed by
//!   [`crate::Store::damage`] so `/metrics` and `/health` can show it. Such a batch is never
//!   served; a read starting at it fails with `CorruptData`.
//! - [`LostRanges`]: offset ranges an operator gave up with `sluice storage repair
//!   --skip-damaged`, persisted in the store's `lost` file. Reads skip them, so consumers
//!   continue past a damaged range instead of failing on it forever.
//! - [`Finding`]: what opening a store found wrong with its files (a segment shorter than
//!   the log around it, a consume-queue file missing next to live entries). A normal open
//!   refuses to start on any finding; `check.rs` explains and repairs them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use common::{Offset, PartitionId};
use parking_lot::{Mutex, RwLock};

use crate::error::{Result, StorageError};

/// Damaged batches remembered at most (the count goes on beyond it).
const DAMAGE_LOG_MAX: usize = 10_000;

/// One batch that failed its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedBatch {
    pub partition: PartitionId,
    pub first_offset: Offset,
    pub last_offset: Offset,
    /// Commit-log position of its entry.
    pub position: u64,
    /// The segment file holding it (empty when the segment is missing).
    pub file: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for DamagedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {} offsets {}..={} at commit-log position {} ({}): {}",
            self.partition.0,
            self.first_offset,
            self.last_offset,
            self.position,
            if self.file.as_os_str().is_empty() {
                "no segment file".to_string()
            } else {
                self.file.display().to_string()
            },
            self.reason
        )
    }
}

/// Damaged batches found while serving, each logged once.
#[derive(Default)]
pub struct DamageLog {
    found: Mutex<BTreeMap<(u32, Offset), DamagedBatch>>,
    total: std::sync::atomic::AtomicU64,
}

impl DamageLog {
    /// Remembers `d`; logs it the first time it is seen.
    pub fn note(&self, d: DamagedBatch) {
        let mut found = self.found.lock();
        let key = (d.partition.0, d.first_offset);
        if found.contains_key(&key) {
            return;
        }
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            partition = d.partition.0,
            first_offset = d.first_offset,
            last_offset = d.last_offset,
            position = d.position,
            file = %d.file.display(),
            reason = %d.reason,
            "damaged batch in the commit log: never served; `sluice storage check` lists \
             the damage, `sluice storage repair` rebuilds or skips it"
        );
        if found.len() < DAMAGE_LOG_MAX {
            found.insert(key, d);
        }
    }

    pub fn list(&self) -> Vec<DamagedBatch> {
        self.found.lock().values().cloned().collect()
    }

    /// Damaged batches seen since the store opened (also those beyond the list's cap).
    pub fn count(&self) -> u64 {
        self.total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Something wrong with the store's files that a crash cannot cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.what)
    }
}

const LOST_MAGIC: &[u8; 4] = b"SLLR";
const LOST_VERSION: u8 = 1;
const LOST_RECORD_BYTES: usize = 20;

/// Offset ranges given up by a repair, per partition (`lost` file; format in
/// `docs/storage-format.md` §Lost ranges).
pub struct LostRanges {
    path: PathBuf,
    ranges: RwLock<HashMap<PartitionId, Vec<(Offset, Offset)>>>,
}

impl LostRanges {
    pub fn load(dir: &Path) -> Result<LostRanges> {
        let path = dir.join("lost");
        let ranges = match std::fs::read(&path) {
            Ok(b) => decode(&b).ok_or_else(|| StorageError::Format {
                path: path.clone(),
                reason: "not a valid lost-ranges file".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(StorageError::io("reading", &path, e)),
        };
        Ok(LostRanges {
            path,
            ranges: RwLock::new(ranges),
        })
    }

    /// True when `[first, next)` lies inside a lost range of `p`.
    pub fn covers(&self, p: PartitionId, first: Offset, next: Offset) -> bool {
        let ranges = self.ranges.read();
        ranges.get(&p).is_some_and(|rs| {
            rs.iter()
                .any(|&(lo, hi_incl)| lo <= first && next - 1 <= hi_incl)
        })
    }

    /// True when the store has no lost ranges (the read path's fast check).
    pub fn is_empty(&self) -> bool {
        self.ranges.read().is_empty()
    }

    pub fn list(&self) -> Vec<(PartitionId, Offset, Offset)> {
        let ranges = self.ranges.read();
        let mut out: Vec<_> = ranges
            .iter()
            .flat_map(|(p, rs)| rs.iter().map(move |&(a, b)| (*p, a, b)))
            .collect();
        out.sort();
        out
    }

    /// Adds ranges (first, last inclusive) and writes the file durably (tmp, fsync,
    /// rename, fsync dir) before returning.
    pub fn add(&self, more: &[(PartitionId, Offset, Offset)]) -> Result<()> {
        let mut ranges = self.ranges.write();
        for &(p, a, b) in more {
            ranges.entry(p).or_default().push((a, b));
        }
        let bytes = encode(&ranges);
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| StorageError::io("writing", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            crate::commit_log::sync_dir(dir)?;
        }
        Ok(())
    }
}

fn encode(ranges: &HashMap<PartitionId, Vec<(Offset, Offset)>>) -> Vec<u8> {
    let mut all: Vec<(u32, i64, i64)> = ranges
        .iter()
        .flat_map(|(p, rs)| rs.iter().map(move |&(a, b)| (p.0, a, b)))
        .collect();
    all.sort();
    let mut b = Vec::with_capacity(12 + all.len() * LOST_RECORD_BYTES);
    b.extend_from_slice(LOST_MAGIC);
    b.extend_from_slice(&[LOST_VERSION, 0, 0, 0]);
    b.extend_from_slice(&(all.len() as u32).to_le_bytes());
    for (p, a, z) in all {
        b.extend_from_slice(&p.to_le_bytes());
        b.extend_from_slice(&a.to_le_bytes());
        b.extend_from_slice(&z.to_le_bytes());
    }
    let crc = crc_fast::crc32_iscsi(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<HashMap<PartitionId, Vec<(Offset, Offset)>>> {
    if b.len() < 16 || &b[0..4] != LOST_MAGIC || b[4] != LOST_VERSION {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc_fast::crc32_iscsi(body).to_le_bytes() != crc {
        return None;
    }
    let n = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
    let records = &body[12..];
    if records.len() != n.checked_mul(LOST_RECORD_BYTES)? {
        return None;
    }
    let mut out: HashMap<PartitionId, Vec<(Offset, Offset)>> = HashMap::new();
    for r in records.chunks_exact(LOST_RECORD_BYTES) {
        let p = u32::from_le_bytes(r[0..4].try_into().ok()?);
        let a = i64::from_le_bytes(r[4..12].try_into().ok()?);
        let z = i64::from_le_bytes(r[12..20].try_into().ok()?);
        out.entry(PartitionId(p)).or_default().push((a, z));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_ranges_round_trip_and_cover() {
        let dir = tempfile::tempdir().unwrap();
        let l = LostRanges::load(dir.path()).unwrap();
        assert!(l.is_empty());
        l.add(&[(PartitionId(3), 10, 19), (PartitionId(1), 0, 0)])
            .unwrap();
        let l = LostRanges::load(dir.path()).unwrap();
        assert_eq!(
            l.list(),
            vec![(PartitionId(1), 0, 0), (PartitionId(3), 10, 19)]
        );
        assert!(l.covers(PartitionId(3), 10, 20));
        assert!(l.covers(PartitionId(3), 12, 15));
        assert!(!l.covers(PartitionId(3), 15, 21));
        assert!(!l.covers(PartitionId(2), 10, 11));
        // A damaged file is an error, not an empty list.
        let path = dir.path().join("lost");
        let mut b = std::fs::read(&path).unwrap();
        b[14] ^= 1;
        std::fs::write(&path, b).unwrap();
        assert!(LostRanges::load(dir.path()).is_err());
    }

    #[test]
    fn damage_is_remembered_once() {
        let log = DamageLog::default();
        let d = DamagedBatch {
            partition: PartitionId(1),
            first_offset: 5,
            last_offset: 9,
            position: 100,
            file: PathBuf::from("x.log"),
            reason: "batch CRC mismatch".into(),
        };
        log.note(d.clone());
        log.note(d.clone());
        assert_eq!(log.count(), 1);
        assert_eq!(log.list(), vec![d]);
    }
}
