//! The checkpoint file: the commit-log position up to which consume queues and indexes are
//! on disk (durably), plus each partition's persistent state. Written whole to
//! `checkpoint.tmp`, fsynced, renamed over `checkpoint`, directory fsynced: it is either the
//! old or the new one, never a mix. Format in `docs/storage-format.md` §Checkpoint.

use std::io::Write;
use std::path::Path;

use common::PartitionId;

use crate::config::PartitionConfig;
use crate::error::{Result, StorageError};
use crate::partition::Partition;

const MAGIC: &[u8; 4] = b"SLCK";
/// Version 2 keeps each partition's copy range end (log compaction) in the record's bytes
/// 56..64, which version 1 reserved (and builds before it used for another count: a
/// version-1 checkpoint's value there is ignored).
const VERSION: u8 = 2;
const FLAG_CLEAN: u8 = 1;
const HEADER_BYTES: usize = 24;
const RECORD_BYTES: usize = 96;

/// One partition's persistent fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRecord {
    pub id: PartitionId,
    pub cfg: PartitionConfig,
    pub log_start: i64,
    pub log_end: i64,
    pub cq_start: u64,
    pub cq_end: u64,
    pub max_ts: i64,
    pub max_ts_offset: i64,
    pub start_pos: u64,
    pub bytes: u64,
    /// End of the partition's copy range (log compaction), 0 when it has none.
    pub copy_hi: u64,
}

impl PartitionRecord {
    pub fn of(id: PartitionId, p: &Partition) -> PartitionRecord {
        PartitionRecord {
            id,
            cfg: p.cfg.clone(),
            log_start: p.log_start,
            log_end: p.log_end,
            cq_start: p.cq_start,
            cq_end: p.cq_end,
            max_ts: p.max_ts,
            max_ts_offset: p.max_ts_offset,
            start_pos: p.start_pos,
            bytes: p.bytes,
            copy_hi: p.copy_hi,
        }
    }

    /// The in-memory partition this record describes (all entries on disk).
    pub fn to_partition(&self) -> Partition {
        let mut p = Partition::new(self.cfg.clone());
        p.log_start = self.log_start;
        p.log_end = self.log_end;
        p.cq_start = self.cq_start;
        p.cq_end = self.cq_end;
        p.cq_flushed = self.cq_end;
        p.max_ts = self.max_ts;
        p.max_ts_offset = self.max_ts_offset;
        p.start_pos = self.start_pos;
        p.bytes = self.bytes;
        p.copy_hi = self.copy_hi;
        p
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Written by a clean `close()`: the commit log ends at `position`.
    pub clean: bool,
    /// Every commit-log entry below this position is reflected in the consume queues and
    /// indexes on disk; recovery replays from here.
    pub position: u64,
    pub partitions: Vec<PartitionRecord>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_BYTES + self.partitions.len() * RECORD_BYTES + 4);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(if self.clean { FLAG_CLEAN } else { 0 });
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.position.to_le_bytes());
        b.extend_from_slice(&(self.partitions.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        for r in &self.partitions {
            b.extend_from_slice(&r.id.0.to_le_bytes());
            b.extend_from_slice(&[r.cfg.flags(), 0, 0, 0]);
            b.extend_from_slice(&r.cfg.retention_ms.unwrap_or(0).to_le_bytes());
            b.extend_from_slice(&r.cfg.retention_bytes.unwrap_or(0).to_le_bytes());
            for v in [r.log_start, r.log_end] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for v in [r.cq_start, r.cq_end, r.copy_hi] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for v in [r.max_ts, r.max_ts_offset] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            for v in [r.start_pos, r.bytes] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        let crc = crc_fast::crc32_iscsi(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8], path: &Path) -> Result<Checkpoint> {
        let bad = |reason: &str| StorageError::Format {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if b.len() < HEADER_BYTES + 4 || &b[0..4] != MAGIC {
            return Err(bad("not a checkpoint file"));
        }
        if b[4] != VERSION && b[4] != 1 {
            return Err(bad(&format!("unsupported checkpoint version {}", b[4])));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc_fast::crc32_iscsi(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(bad("checkpoint CRC mismatch"));
        }
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
        let i64_at = |at: usize| u64_at(at) as i64;
        let count = u32::from_le_bytes(body[16..20].try_into().unwrap_or([0; 4])) as usize;
        if body.len() != HEADER_BYTES + count * RECORD_BYTES {
            return Err(bad("checkpoint length does not match its partition count"));
        }
        let mut partitions = Vec::with_capacity(count);
        for k in 0..count {
            let at = HEADER_BYTES + k * RECORD_BYTES;
            let id = u32::from_le_bytes(body[at..at + 4].try_into().unwrap_or([0; 4]));
            let flags = body[at + 4];
            let cfg = PartitionConfig::from_flags(flags, i64_at(at + 8), u64_at(at + 16));
            partitions.push(PartitionRecord {
                id: PartitionId(id),
                cfg,
                log_start: i64_at(at + 24),
                log_end: i64_at(at + 32),
                cq_start: u64_at(at + 40),
                cq_end: u64_at(at + 48),
                max_ts: i64_at(at + 64),
                max_ts_offset: i64_at(at + 72),
                start_pos: u64_at(at + 80),
                bytes: u64_at(at + 88),
                copy_hi: if b[4] == 1 { 0 } else { u64_at(at + 56) },
            });
        }
        Ok(Checkpoint {
            clean: body[5] & FLAG_CLEAN != 0,
            position: u64_at(8),
            partitions,
        })
    }

    /// Reads `dir/checkpoint`; `Ok(None)` if there is none.
    pub fn read(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join("checkpoint");
        match std::fs::read(&path) {
            Ok(b) => Self::decode(&b, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("reading", &path, e)),
        }
    }

    /// Atomically replaces `dir/checkpoint`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("checkpoint.tmp");
        let path = dir.join("checkpoint");
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| StorageError::io("creating", &tmp, e))?;
        f.write_all(&self.encode())
            .and_then(|_| f.sync_data())
            .map_err(|e| StorageError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("renaming", &tmp, e))?;
        crate::commit_log::sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flush;

    #[test]
    fn round_trip_and_damage() {
        let c = Checkpoint {
            clean: true,
            position: 123_456,
            partitions: vec![
                PartitionRecord {
                    id: PartitionId(3),
                    cfg: PartitionConfig {
                        flush: Flush::Sync,
                        retention_ms: Some(77),
                        retention_bytes: None,
                        index: false,
                        compaction: None,
                    },
                    log_start: 5,
                    log_end: 99,
                    cq_start: 2,
                    cq_end: 40,
                    max_ts: 1_700_000_000_000,
                    max_ts_offset: 90,
                    start_pos: 4096,
                    bytes: 1 << 20,
                    copy_hi: 1 << 30,
                },
                PartitionRecord::of(PartitionId(4), &Partition::new(PartitionConfig::default())),
            ],
        };
        let b = c.encode();
        assert_eq!(b.len(), 24 + 2 * 96 + 4);
        assert_eq!(Checkpoint::decode(&b, Path::new("x")).unwrap(), c);
        for i in [0, 4, 9, 30, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(
                Checkpoint::decode(&bad, Path::new("x")).is_err(),
                "byte {i}"
            );
        }
        assert!(Checkpoint::decode(&b[..b.len() - 1], Path::new("x")).is_err());
    }
}
