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

/// What happened to the store after the damage (the three acceptable outcomes).
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Opened and serves every record, byte-identical.
    Recovered,
    /// Refused to open naming the file; a repair then reported exactly these lost offset
    /// ranges of P0 and everything else is served byte-identical.
    RefusedThenRepaired(Vec<(i64, i64)>),
    /// Opened (the damage is below what an open checks); reads refuse the damaged batches
    /// and the check reports exactly these offset ranges of P0.
    ReportedOnRead(Vec<(i64, i64)>),
}

/// (commit-log position, size) of each written P0 entry, correcting for rolls (an entry
/// that did not fit was written at the start of the next segment).
fn entry_spans(dir: &Path, written: &[(u64, i64, Vec<u8>)]) -> Vec<(u64, u64)> {
    let segs = segment_files(dir);
    written
        .iter()
        .map(|(pos, _, bytes)| {
            let size = 16 + bytes.len() as u64;
            let next = segs.iter().map(|(b, _)| *b).find(|b| b > pos);
            match next {
                Some(n) if pos + size > n => (n, size),
                _ => (*pos, size),
            }
        })
        .collect()
}

/// The P0 offset ranges (merged) of the batches whose entries overlap `[a, b)`.
fn lost_in(
    written: &[(u64, i64, Vec<u8>)],
    spans: &[(u64, u64)],
    a: u64,
    b: u64,
) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for (i, (pos, size)) in spans.iter().enumerate() {
        if *pos < b && pos + size > a {
            let first = written[i].1;
            let last = BatchHeader::parse(&written[i].2).unwrap().last_offset();
            match out.last_mut() {
                Some(l) if l.1 + 1 == first => l.1 = last,
                _ => out.push((first, last)),
            }
        }
    }
    out
}

/// Opens after the damage and classifies what happened, checking every served byte.
fn outcome(dir: &Path, written: &[(u64, i64, Vec<u8>)]) -> Outcome {
    let keep = |lost: &[(i64, i64)]| -> Vec<(i64, Vec<u8>)> {
        written
            .iter()
            .filter(|(_, b, _)| !lost.iter().any(|(a, z)| a <= b && b <= z))
            .map(|(_, b, x)| (*b, x.clone()))
            .collect()
    };
    let p0 = |lost: &[(PartitionId, i64, i64)]| -> Vec<(i64, i64)> {
        lost.iter()
            .filter(|l| l.0 == P0)
            .map(|l| (l.1, l.2))
            .collect()
    };
    match Store::open(cfg(dir, OpenMode::Normal)) {
        Ok(s) => {
            let report = s.check().unwrap();
            if report.lost.is_empty() {
                // Clean, or only a queue slot the read path rebuilds from the log.
                assert_eq!(served(&s), keep(&[]));
                return Outcome::Recovered;
            }
            let lost = p0(&report.lost);
            for (a, _) in &lost {
                assert!(s.read(P0, *a, 1).is_err(), "damaged offset {a} was served");
            }
            drop(s);
            let s = Store::open(cfg(dir, OpenMode::Repair)).unwrap();
            s.repair(true).unwrap();
            assert_eq!(served(&s), keep(&lost));
            Outcome::ReportedOnRead(lost)
        }
        Err(StorageError::Damaged(msg)) => {
            assert!(msg.contains("sluice storage repair"), "{msg}");
            let s = Store::open(cfg(dir, OpenMode::Repair)).unwrap();
            let report = s.repair(true).unwrap();
            let lost = p0(&report.lost);
            s.close().unwrap();
            drop(s);
            let s = Store::open(cfg(dir, OpenMode::Normal)).unwrap();
            assert_eq!(served(&s), keep(&lost));
            assert!(s.check().unwrap().is_clean());
            Outcome::RefusedThenRepaired(lost)
        }
        Err(e) => panic!("neither recovered, refused nor reported: {e}"),
    }
}

fn segment_holding(dir: &Path, pos: u64) -> (u64, PathBuf) {
    segment_files(dir)
        .into_iter()
        .rev()
        .find(|(b, _)| *b <= pos)
        .unwrap()
}

fn zero(dir: &Path, a: u64, len: u64) {
    let (base, path) = segment_holding(dir, a);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(a - base) as usize..(a - base + len) as usize].fill(0);
    std::fs::write(&path, bytes).unwrap();
}

/// The crash-and-damage matrix of issue 13: every kind of damage to every kind of file ends
/// in one of the three outcomes, with exactly the lost offsets reported — never wrong bytes
/// served, never silence.
#[tokio::test]
async fn damage_matrix() {
    type Damage = fn(&Path, &[(u64, i64, Vec<u8>)], &[(u64, u64)]) -> Outcome;
    let cases: Vec<(&str, Damage)> = vec![
        ("flipped bytes in a batch", |d, w, sp| {
            let (pos, size) = sp[30];
            zero(d, pos + size / 2, 1);
            Outcome::ReportedOnRead(lost_in(w, sp, pos + size / 2, pos + size / 2 + 1))
        }),
        ("4 KiB zeroed mid-log", |d, w, sp| {
            let at = sp[50].0 + 100;
            zero(d, at, 4096);
            Outcome::ReportedOnRead(lost_in(w, sp, at, at + 4096))
        }),
        ("segment truncated", |d, w, sp| {
            let (base, path) = segment_files(d)[1].clone();
            let len = std::fs::metadata(&path).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(len / 3)
                .unwrap();
            Outcome::RefusedThenRepaired(lost_in(w, sp, base + len / 3, base + len))
        }),
        ("last segment truncated", |d, w, sp| {
            let (base, path) = segment_files(d).last().unwrap().clone();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(100)
                .unwrap();
            Outcome::RefusedThenRepaired(lost_in(w, sp, base + 100, u64::MAX))
        }),
        ("middle segment deleted", |d, w, sp| {
            let segs = segment_files(d);
            std::fs::remove_file(&segs[1].1).unwrap();
            Outcome::RefusedThenRepaired(lost_in(w, sp, segs[1].0, segs[2].0))
        }),
        ("consume-queue file deleted", |d, _, _| {
            std::fs::remove_file(d.join("queues/0/00000000000000000064.cq")).unwrap();
            Outcome::RefusedThenRepaired(vec![])
        }),
        ("consume-queue file truncated", |d, _, _| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("queues/0/00000000000000000000.cq"))
                .unwrap();
            f.set_len(400).unwrap();
            Outcome::RefusedThenRepaired(vec![])
        }),
        ("consume-queue bytes flipped", |d, _, _| {
            let p = d.join("queues/0/00000000000000000000.cq");
            let mut b = std::fs::read(&p).unwrap();
            b[45] ^= 0xff;
            std::fs::write(&p, b).unwrap();
            Outcome::Recovered
        }),
        ("checkpoint deleted", |d, _, _| {
            std::fs::remove_file(d.join("checkpoint")).unwrap();
            Outcome::Recovered
        }),
        ("hash index deleted", |d, _, _| {
            std::fs::remove_dir_all(d.join("hindex")).unwrap();
            Outcome::Recovered
        }),
    ];
    for (name, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), 120).await;
        let spans = entry_spans(dir.path(), &written);
        let want = damage(dir.path(), &written, &spans);
        let got = outcome(dir.path(), &written);
        assert_eq!(got, want, "{name}");
        if let Outcome::ReportedOnRead(l) | Outcome::RefusedThenRepaired(l) = &got
            && !name.contains("consume-queue")
        {
            assert!(!l.is_empty(), "{name}: the damage touched no P0 batch");
        }
    }
}
