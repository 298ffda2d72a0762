//! Shared entries (issue 15, "one stored copy for many queues"): a batch appended to N
//! partitions at once is written to the commit log once, and each partition serves it at
//! its own offsets — after a clean reopen, after a crash without the checkpoint, and while
//! the cleaner frees what no partition holds any more.
mod kit;

use std::path::Path;

use kit::*;
use sluice_storage::{PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

const SEGMENT: u64 = 1 << 20;

fn cfg(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = SEGMENT;
    c.background = false;
    c
}

fn parts(n: u32) -> Vec<PartitionId> {
    (0..n).map(PartitionId).collect()
}

fn open(dir: &Path, n: u32) -> Store {
    let s = Store::open(cfg(dir)).unwrap();
    for p in parts(n) {
        s.configure_partition(
            p,
            PartitionConfig {
                retention_ms: None,
                ..Default::default()
            },
        )
        .unwrap();
    }
    s
}

/// The value of message `i` (1 KiB, distinct per message).
fn value(i: usize) -> Vec<u8> {
    (0..1024).map(|k| (i * 7 + k) as u8).collect()
}

fn message(i: usize) -> Vec<u8> {
    let key = format!("m-{i}");
    batch_with(NONE, &[(Some(key.as_bytes()), &value(i), 1_000 + i as i64)])
}

/// Every record of `p` as (offset, value), checking each batch's CRC as a client would.
fn records(s: &Store, p: PartitionId) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for b in read_all(s, p) {
        let h = sluice_storage::batch::BatchHeader::parse(&b).unwrap();
        assert_eq!(h.computed_crc(), h.crc(), "a served batch passes its CRC");
        let data = sluice_storage::records::records_bytes(&h, 1 << 20).unwrap();
        sluice_storage::records::for_each_record(&h, &data, |r| {
            out.push((
                h.base_offset() + i64::from(r.offset_delta),
                r.value.unwrap().to_vec(),
            ));
        })
        .unwrap();
    }
    out
}

/// What partition `p` must hold: messages `range` from offset `first`.
fn expected(first: i64, range: std::ops::Range<usize>) -> Vec<(i64, Vec<u8>)> {
    range
        .enumerate()
        .map(|(k, i)| (first + k as i64, value(i)))
        .collect()
}

#[tokio::test]
async fn a_batch_shared_by_ten_partitions_is_stored_once_and_read_at_each_ones_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 10);
    // Partition 3 already has 5 records of its own: its offsets differ from the others'.
    for i in 0..5 {
        s.append(PartitionId(3), bm(&message(1000 + i)))
            .await
            .unwrap();
    }
    let before = s.stats().write_position;
    let one = message(0).len() as u64 + 16;
    for i in 0..200 {
        let (appended, pending) = s.append_shared_begin(&parts(10), bm(&message(i))).unwrap();
        pending.durable().await.unwrap();
        assert_eq!(appended.len(), 10);
        assert_eq!(appended[0].base_offset, i as i64);
        assert_eq!(appended[3].base_offset, 5 + i as i64);
    }
    let grown = s.stats().write_position - before;
    let ratio = grown as f64 / (200 * one) as f64;
    assert!(
        ratio <= 1.1,
        "200 messages to 10 partitions grew the log {grown} bytes, {ratio:.3}× one copy"
    );
    // The first 200 records of each partition (partition 1 gets one more below).
    let check = |s: &Store| {
        for p in parts(10) {
            let mut got = records(s, p);
            got.truncate(if p == PartitionId(3) { 205 } else { 200 });
            let want = if p == PartitionId(3) {
                let mut want = (0..5)
                    .map(|k| (k as i64, value(1000 + k)))
                    .collect::<Vec<_>>();
                want.extend(expected(5, 0..200));
                want
            } else {
                expected(0, 0..200)
            };
            let offsets = |v: &[(i64, Vec<u8>)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
            assert_eq!(offsets(&got), offsets(&want), "partition {p}");
            assert!(got == want, "partition {p}: values differ");
            // Keys are indexed in every partition, at that partition's offsets.
            let first = if p == PartitionId(3) { 5 } else { 0 };
            assert_eq!(s.lookup_key(p, b"m-7").unwrap(), vec![first + 7]);
        }
    };
    check(&s);
    // Appends go on after a shared one, in the owner and in the others.
    s.append(PartitionId(1), bm(&message(500))).await.unwrap();
    assert_eq!(records(&s, PartitionId(1)).last().unwrap().0, 200);

    // Clean reopen (checkpoint), then a replay from the start of the log (no checkpoint:
    // as after a crash before the first one).
    s.close().unwrap();
    drop(s);
    let s = open(dir.path(), 10);
    check(&s);
    assert_eq!(records(&s, PartitionId(1)).last().unwrap().0, 200);
    drop(s);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let s = open(dir.path(), 10);
    check(&s);
    assert_eq!(records(&s, PartitionId(1)).len(), 201);
    let (appended, _) = s
        .append_shared_begin(&[PartitionId(1), PartitionId(3)], bm(&message(9)))
        .unwrap();
    assert_eq!(
        (appended[0].base_offset, appended[1].base_offset),
        (201, 205)
    );
}

#[tokio::test]
async fn a_shared_append_is_refused_whole_and_checked_like_any_append() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 3);
    let dup = s.append_shared_begin(&[PartitionId(0), PartitionId(0)], bm(&message(0)));
    assert!(matches!(dup, Err(StorageError::InvalidBatch(_))), "{dup:?}");
    let one = s.append_shared_begin(&[PartitionId(0)], bm(&message(0)));
    assert!(matches!(one, Err(StorageError::InvalidBatch(_))), "{one:?}");
    let two_batches = [message(0), message(1)].concat();
    let r = s.append_shared_begin(&parts(2), bm(&two_batches));
    assert!(matches!(r, Err(StorageError::InvalidBatch(_))), "{r:?}");
    let mut bad = message(0);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(s.append_shared_begin(&parts(2), bm(&bad)).is_err());
    s.delete_partition(PartitionId(2)).unwrap();
    let gone = s.append_shared_begin(&parts(3), bm(&message(0)));
    assert!(
        matches!(gone, Err(StorageError::UnknownPartition(_))),
        "{gone:?}"
    );
    // Nothing of the refused calls was written to any partition.
    for p in parts(2) {
        assert_eq!(s.offsets(p).unwrap().log_end, 0, "partition {p}");
    }
}

#[tokio::test]
async fn a_shared_entry_stays_until_no_partition_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 2);
    // 3 MiB shared by both partitions, then only partition 1 lets go of it.
    for i in 0..3000 {
        let (_, p) = s.append_shared_begin(&parts(2), bm(&message(i))).unwrap();
        drop(p);
    }
    s.delete_records(PartitionId(1), 3000).unwrap();
    s.flush().unwrap();
    while s.clean().unwrap().more {}
    // Partition 0 still reads every byte.
    assert!(records(&s, PartitionId(0)) == expected(0, 0..3000));
    let held = s.stats().bytes_on_disk;
    // Once partition 0 lets go too, the cleaner frees them.
    s.append(PartitionId(0), bm(&message(9999))).await.unwrap();
    s.delete_records(PartitionId(0), 3000).unwrap();
    s.flush().unwrap();
    while s.clean().unwrap().more {}
    s.enforce_retention().unwrap();
    let freed = s.stats().bytes_on_disk;
    assert!(
        freed < held / 2,
        "{held} bytes on disk while held, {freed} after both let go"
    );
    assert_eq!(records(&s, PartitionId(0)), vec![(3000, value(9999))]);
}

#[tokio::test]
async fn a_damaged_trailer_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 2);
    let (_, p) = s.append_shared_begin(&parts(2), bm(&message(0))).unwrap();
    p.durable().await.unwrap();
    s.close().unwrap();
    drop(s);
    // The trailer is the entry's last 12 bytes: flip one byte of the other partition's
    // offset there.
    let (_, seg) = segment_files(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = 16 + message(0).len() + 12;
    bytes[end - 1] ^= 0x40;
    std::fs::write(&seg, bytes).unwrap();
    let s = open(dir.path(), 2);
    for p in parts(2) {
        let r = s.read(p, 0, 1 << 20);
        assert!(
            matches!(r, Err(StorageError::CorruptData { .. })),
            "partition {p}: {r:?}"
        );
    }
}

#[tokio::test]
async fn an_older_store_is_marked_format_4_before_its_first_shared_entry() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 2));
    // A version-3 store (as the previous build wrote it) opens as is and stays 3 while
    // only plain entries are written: that build can still read it.
    let format = dir.path().join("FORMAT");
    let mut v3 = b"SLUICEST\x03\x00\x00\x00".to_vec();
    let crc = crc32c::crc32c(&v3);
    v3.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&format, &v3).unwrap();
    let s = open(dir.path(), 2);
    s.append(PartitionId(0), bm(&message(0))).await.unwrap();
    assert_eq!(std::fs::read(&format).unwrap(), v3);
    let (_, p) = s.append_shared_begin(&parts(2), bm(&message(1))).unwrap();
    p.durable().await.unwrap();
    assert_eq!(
        std::fs::read(&format).unwrap()[8],
        4,
        "marked before the write"
    );
}
