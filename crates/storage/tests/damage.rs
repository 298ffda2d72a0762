//! Issue 13, item 4: damage a crash cannot explain is loud, located and recoverable. For
//! each kind (flipped bytes, a truncated segment, a deleted segment, a deleted consume-queue
//! file) the outcome is one of: recovered with nothing lost, refused to open naming the
//! file, or a repair that reports exactly the lost offsets — never wrong bytes served,
//! never silence, and appends never land on a hole.
mod kit;

use std::path::{Path, PathBuf};

use kit::*;
use sluice_storage::{
    OpenMode, PartitionConfig, PartitionId, StorageError, Store, StoreConfig, batch::BatchHeader,
};

const P0: PartitionId = PartitionId(0);
const P1: PartitionId = PartitionId(1);

fn cfg(dir: &Path, mode: OpenMode) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = 64 * 1024;
    c.background = false;
    c.hash_index_slots = 64;
    c.hash_index_entries_per_file = 256;
    c.cq_entries_per_file = 64;
    c.open_mode = mode;
    c
}

fn keep_all() -> PartitionConfig {
    PartitionConfig {
        retention_ms: None,
        ..Default::default()
    }
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    v.sort();
    v
}

/// Two partitions written interleaved over several segments; returns, for P0, each batch's
/// (commit-log position, base offset, bytes as stored), and closes the store.
async fn write(dir: &Path, batches: u64) -> Vec<(u64, i64, Vec<u8>)> {
    let s = Store::open(cfg(dir, OpenMode::Normal)).unwrap();
    s.configure_partition(P0, keep_all()).unwrap();
    s.configure_partition(P1, keep_all()).unwrap();
    let mut out = Vec::new();
    for seq in 0..batches {
        let pos = s.stats().write_position;
        let a = s.append(P0, bm(&batch_for_seq(seq))).await.unwrap();
        let stored = s.read(P0, a.base_offset, 1).unwrap().chunks[0].to_vec();
        out.push((pos, a.base_offset, stored));
        s.append(P1, bm(&batch_for_seq(seq + 1000))).await.unwrap();
    }
    s.close().unwrap();
    out
}

/// Every batch P0 serves from its log start, as (base offset, bytes).
fn served(s: &Store) -> Vec<(i64, Vec<u8>)> {
    let o = s.offsets(P0).unwrap();
    let mut out = Vec::new();
    let mut at = o.log_start;
    while at < o.log_end {
        let r = s.read(P0, at, 1 << 20).unwrap();
        if r.chunks.is_empty() {
            break;
        }
        for c in r.chunks {
            let h = BatchHeader::parse(&c).unwrap();
            h.verify_crc(0).unwrap();
            at = h.last_offset() + 1;
            out.push((h.base_offset(), c.to_vec()));
        }
    }
    out
}

fn refused(dir: &Path, file_part: &str) -> String {
    match Store::open(cfg(dir, OpenMode::Normal)) {
        Err(StorageError::Damaged(msg)) => {
            assert!(
                msg.contains(file_part),
                "refusal should name {file_part}: {msg}"
            );
            assert!(msg.contains("sluice storage repair"), "{msg}");
            msg
        }
        Err(e) => panic!("expected a refusal naming {file_part}, got {e}"),
        Ok(_) => panic!("opened a store with {file_part} damaged"),
    }
}

#[tokio::test]
async fn flipped_bytes_are_reported_never_served_and_skipped_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), 40).await;
    // Damage the body of P0's batch 10 (below the checkpoint: an open does not see it).
    let (pos, base, _) = &written[10];
    let (seg_base, path) = segment_files(dir.path())
        .into_iter()
        .rev()
        .find(|(b, _)| b <= pos)
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(pos - seg_base) as usize + 16 + 70] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let s = Store::open(cfg(dir.path(), OpenMode::Normal)).unwrap();
    let err = s.read(P0, *base, 1 << 20).unwrap_err();
    assert!(matches!(err, StorageError::CorruptData { .. }), "{err}");
    // Reading from before it stops before it; the damage is listed with its offsets.
    let before = s.read(P0, written[9].1, 1 << 20).unwrap();
    assert_eq!(before.chunks.len(), 1);
    let damage = s.damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].first_offset, *base);
    assert_eq!(damage[0].file, path);
    assert_eq!(s.stats().damaged_batches, 1);
    // The check names exactly that batch; a repair without --skip-damaged changes nothing.
    let report = s.check().unwrap();
    let last = written[11].1 - 1;
    assert_eq!(report.lost, vec![(P0, *base, last)]);
    assert!(matches!(s.repair(false), Err(StorageError::Damaged(_))));
    assert!(s.read(P0, *base, 1).is_err());
    // Skipping: the lost range is recorded, reads continue past it, appends go on.
    let report = s.repair(true).unwrap();
    assert_eq!(report.lost, vec![(P0, *base, last)]);
    s.close().unwrap();
    drop(s);
    let s = Store::open(cfg(dir.path(), OpenMode::Normal)).unwrap();
    assert_eq!(s.lost_ranges(), vec![(P0, *base, last)]);
    let r = s.read(P0, *base, 1).unwrap();
    assert_eq!(
        BatchHeader::parse(&r.chunks[0]).unwrap().base_offset(),
        written[11].1
    );
    let want: Vec<(i64, Vec<u8>)> = written
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 10)
        .map(|(_, (_, b, bytes))| (*b, bytes.clone()))
        .collect();
    assert_eq!(served(&s), want);
    let end = s.offsets(P0).unwrap().log_end;
    let a = s.append(P0, bm(&batch_for_seq(99))).await.unwrap();
    assert_eq!(a.base_offset, end);
    assert!(s.check().unwrap().is_clean());
}

#[tokio::test]
async fn a_truncated_segment_is_refused_then_repaired_reporting_exact_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), 120).await;
    let segs = segment_files(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    // Cut the second segment in half.
    let (base, path) = &segs[1];
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refused(dir.path(), &path.file_name().unwrap().to_string_lossy());

    // The check (read-only) names exactly the P0 batches past the cut in that segment.
    let cut = base + len / 2;
    let next_base = segs[2].0;
    let gone: Vec<usize> = (0..written.len())
        .filter(|&i| {
            // (an entry that did not fit in segment 1 was written at the start of the next)
            let end = written[i].0 + 16 + written[i].2.len() as u64;
            end <= next_base && end > cut
        })
        .collect();
    assert!(!gone.is_empty());
    {
        let s = Store::open(cfg(dir.path(), OpenMode::Check)).unwrap();
        let report = s.check().unwrap();
        let lost_p0: Vec<(i64, i64)> = report
            .lost
            .iter()
            .filter(|(p, _, _)| *p == P0)
            .map(|(_, a, z)| (*a, *z))
            .collect();
        // The P0 batches past the cut are consecutive in P0: one range.
        let (first, last) = (gone[0], *gone.last().unwrap());
        assert_eq!(gone.len(), last - first + 1);
        assert_eq!(lost_p0, vec![(written[first].1, written[last + 1].1 - 1)]);
        assert!(!report.findings.is_empty());
    }
    // Repair gives them up, everything else is served byte-identical, appends continue
    // after the old end, and the next open is a normal one.
    let s = Store::open(cfg(dir.path(), OpenMode::Repair)).unwrap();
    s.repair(true).unwrap();
    s.close().unwrap();
    drop(s);
    let s = Store::open(cfg(dir.path(), OpenMode::Normal)).unwrap();
    let want: Vec<(i64, Vec<u8>)> = written
        .iter()
        .enumerate()
        .filter(|(i, _)| !gone.contains(i))
        .map(|(_, (_, b, bytes))| (*b, bytes.clone()))
        .collect();
    assert_eq!(served(&s), want);
    let end = s.offsets(P0).unwrap().log_end;
    let a = s.append(P0, bm(&batch_for_seq(500))).await.unwrap();
    assert_eq!(a.base_offset, end);
    assert_eq!(served(&s).len(), want.len() + 1);
    assert!(s.check().unwrap().is_clean());
}

#[tokio::test]
async fn a_deleted_consume_queue_file_is_refused_then_rebuilt_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), 150).await;
    let cq = dir.path().join("queues/0/00000000000000000064.cq");
    assert!(cq.exists());
    std::fs::remove_file(&cq).unwrap();
    refused(dir.path(), "00000000000000000064.cq");
    let s = Store::open(cfg(dir.path(), OpenMode::Repair)).unwrap();
    let report = s.repair(false).unwrap();
    assert!(report.lost.is_empty(), "{report:?}");
    assert_eq!(report.queues_to_rebuild, vec![(P0, 150)]);
    s.close().unwrap();
    drop(s);
    let s = Store::open(cfg(dir.path(), OpenMode::Normal)).unwrap();
    let want: Vec<(i64, Vec<u8>)> = written.iter().map(|(_, b, x)| (*b, x.clone())).collect();
    assert_eq!(served(&s), want);
    assert!(s.lookup_key(P0, b"s77").unwrap().len() == 1 + 77 % 5);
}

#[tokio::test]
async fn a_deleted_first_segment_loses_the_head_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let written = write(dir.path(), 120).await;
    let segs = segment_files(dir.path());
    std::fs::remove_file(&segs[0].1).unwrap();
    refused(dir.path(), "commitlog");
    let s = Store::open(cfg(dir.path(), OpenMode::Repair)).unwrap();
    assert!(matches!(s.repair(false), Err(StorageError::Damaged(_))));
    let report = s.repair(true).unwrap();
    let first_kept = written.iter().position(|w| w.0 >= segs[1].0).unwrap();
    assert!(
        report.lost.contains(&(P0, 0, written[first_kept].1 - 1)),
        "{report:?}"
    );
    s.close().unwrap();
    drop(s);
    let s = Store::open(cfg(dir.path(), OpenMode::Normal)).unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_start, written[first_kept].1);
    let want: Vec<(i64, Vec<u8>)> = written[first_kept..]
        .iter()
        .map(|(_, b, x)| (*b, x.clone()))
        .collect();
    assert_eq!(served(&s), want);
}
