//! Functional tests of the public API.
mod kit;

use std::sync::Arc;

use kit::*;
use sluice_storage::{Flush, PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

const P0: PartitionId = PartitionId(0);
const P1: PartitionId = PartitionId(1);

fn cfg(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = 32 * 1024;
    c.background = false;
    c
}

fn no_retention() -> PartitionConfig {
    PartitionConfig {
        retention_ms: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_crc_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    let good = batch(2, 5, 1000);
    let mut bad = batch(2, 5, 1000);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let mut both = good.clone();
    both.extend_from_slice(&bad);
    let err = s.append(P0, bm(&both)).await.unwrap_err();
    assert!(
        matches!(err, StorageError::CorruptBatch { batch_index: 1, .. }),
        "{err}"
    );
    let mut magic = good.clone();
    magic[16] = 1;
    assert!(matches!(
        s.append(P0, bm(&magic)).await,
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(matches!(
        s.append(P0, bm(&good[..40])).await,
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(matches!(
        s.append(P0, bm(&[])).await,
        Err(StorageError::InvalidBatch(_))
    ));
    assert_eq!(s.offsets(P0).unwrap().log_end, 0);
    assert_eq!(s.stats().write_position, 0);
    assert!(matches!(
        s.append(PartitionId(9), bm(&good)).await,
        Err(StorageError::UnknownPartition(_))
    ));
}

#[tokio::test]
async fn multi_batch_append_and_roll_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    s.configure_partition(P1, no_retention()).unwrap();
    let mut expect = [0i64, 0];
    for i in 0..200 {
        let p = if i % 3 == 0 { P1 } else { P0 };
        let mut req = batch(1 + i % 4, 300, 1000 + i as i64);
        req.extend_from_slice(&batch(2, 100, 1000 + i as i64));
        let a = s.append(p, bm(&req)).await.unwrap();
        let n = (1 + i % 4 + 2) as i64;
        assert_eq!(a.base_offset, expect[p.0 as usize]);
        assert_eq!(a.last_offset, a.base_offset + n - 1);
        expect[p.0 as usize] += n;
    }
    assert!(s.stats().segments > 3);
    let check = |s: &Store| {
        for (k, p) in [P0, P1].into_iter().enumerate() {
            let mut off = 0;
            while off < expect[k] {
                let r = s.read(p, off, 4096).unwrap();
                assert!(!r.chunks.is_empty());
                for c in &r.chunks {
                    assert_eq!(base_offset(c), off);
                    let h = sluice_storage::batch::BatchHeader::parse(c).unwrap();
                    h.verify_crc(0).unwrap();
                    off = h.last_offset() + 1;
                }
            }
            assert_eq!(off, expect[k]);
        }
    };
    check(&s);
    drop(s); // no close: recovery replays from the open-time checkpoint
    let s = Store::open(cfg(dir.path())).unwrap();
    check(&s);
    s.close().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    check(&s);
}

#[tokio::test]
async fn index_decodes_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    let mut off = 0;
    for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
        let recs: Vec<Rec<'_>> = vec![
            (
                Some(b"alpha".as_slice()),
                b"x".as_slice(),
                100 + codec as i64 * 10,
            ),
            (None, b"y".as_slice(), 101 + codec as i64 * 10),
            (
                Some(b"beta".as_slice()),
                b"z".as_slice(),
                102 + codec as i64 * 10,
            ),
        ];
        let a = s.append(P0, bm(&batch_with(codec, &recs))).await.unwrap();
        assert_eq!(a.base_offset, off);
        off += 3;
    }
    assert_eq!(s.lookup_key(P0, b"alpha").unwrap(), vec![0, 3, 6, 9, 12]);
    assert_eq!(s.lookup_key(P0, b"beta").unwrap(), vec![2, 5, 8, 11, 14]);
    assert!(s.lookup_key(P0, b"gamma").unwrap().is_empty());
    // codec k's records have timestamps 100+10k .. 102+10k
    assert_eq!(s.lookup_time_range(P0, 121, 130).unwrap(), vec![7, 8, 9]);
    // exact record for a timestamp inside a compressed batch
    assert_eq!(s.offset_for_timestamp(P0, 131).unwrap(), Some((10, 131)));
    assert_eq!(s.offset_for_timestamp(P0, 0).unwrap(), Some((0, 100)));
    assert_eq!(s.offset_for_timestamp(P0, 1000).unwrap(), None);
    assert_eq!(
        s.max_timestamp(P0).unwrap(),
        Some((14, 142)),
        "the record, not its batch"
    );
    s.flush().unwrap();
    drop(s);
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(s.lookup_key(P0, b"alpha").unwrap(), vec![0, 3, 6, 9, 12]);
}

#[tokio::test]
async fn records_are_checked_whether_the_index_is_on_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(
        P0,
        PartitionConfig {
            index: false,
            ..no_retention()
        },
    )
    .unwrap();
    // A batch whose records section is garbage but whose CRC is right is refused, index
    // on or off, and nothing is written.
    let mut b = batch(1, 10, 5);
    let n = b.len();
    b[61..n].fill(0xff);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    for index in [false, true] {
        s.configure_partition(
            P0,
            PartitionConfig {
                index,
                ..no_retention()
            },
        )
        .unwrap();
        assert!(matches!(
            s.append(P0, bm(&b)).await,
            Err(StorageError::InvalidBatch(_))
        ));
        assert_eq!(s.offsets(P0).unwrap().log_end, 0);
    }
    // With the index off a valid batch is stored but not indexed.
    s.configure_partition(
        P0,
        PartitionConfig {
            index: false,
            ..no_retention()
        },
    )
    .unwrap();
    s.append(P0, bm(&batch(1, 10, 5))).await.unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_end, 1);
    assert!(s.lookup_key(P0, b"k0").unwrap().is_empty());
}

#[tokio::test]
async fn decompression_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_decompressed_batch_bytes = 64 * 1024;
    let s = Store::open(c).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    let big = vec![0u8; 256 * 1024];
    for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
        let b = batch_with(codec, &[(None, big.as_slice(), 1)]);
        assert!(b.len() < 64 * 1024);
        let e = s.append(P0, bm(&b)).await.unwrap_err();
        assert!(
            matches!(e, StorageError::InvalidBatch(ref m) if m.contains("decompress")),
            "{e}"
        );
    }
}

#[tokio::test]
async fn delete_records_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    for _ in 0..10 {
        s.append(P0, bm(&batch(5, 10, 1))).await.unwrap();
    }
    assert_eq!(s.delete_records(P0, 12).unwrap(), 12);
    assert_eq!(s.delete_records(P0, 3).unwrap(), 12);
    assert!(matches!(
        s.delete_records(P0, 51),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        s.read(P0, 11, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let r = s.read(P0, 12, 1).unwrap();
    assert_eq!(
        base_offset(&r.chunks[0]),
        10,
        "the batch holding the log start"
    );
    assert_eq!(r.log_start_offset, 12);
    assert_eq!(
        s.lookup_key(P0, b"k1").unwrap(),
        vec![16, 21, 26, 31, 36, 41, 46]
    );
    drop(s);
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_start, 12);
    assert_eq!(s.delete_records(P0, 50).unwrap(), 50);
    assert!(s.read(P0, 50, 100).unwrap().chunks.is_empty());
    assert_eq!(s.max_timestamp(P0).unwrap(), None);
    assert_eq!(
        s.append(P0, bm(&batch(1, 1, 1))).await.unwrap().base_offset,
        50
    );
}

#[tokio::test]
async fn time_retention_hides_then_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common_clock();
    let mut c = cfg(dir.path());
    c.clock = Arc::new(clock.clone());
    let s = Store::open(c).unwrap();
    let short = PartitionConfig {
        retention_ms: Some(1000),
        ..Default::default()
    };
    s.configure_partition(P0, short.clone()).unwrap();
    s.configure_partition(P1, short).unwrap();
    let t0 = 1_000_000;
    for i in 0..100 {
        let p = if i % 2 == 0 { P0 } else { P1 };
        s.append(p, bm(&batch(1, 1000, t0 + i))).await.unwrap();
    }
    let segs = s.stats().segments;
    assert!(segs >= 3, "{segs}");
    // Not expired yet.
    assert_eq!(s.offsets(P0).unwrap().log_start, 0);
    clock.advance_ms(1000 + 25);
    // Entries with max ts < now-1000 = t0+25 are gone at read time already.
    let o = s.offsets(P0).unwrap();
    assert_eq!(o.log_start, 13, "P0 holds ts t0+0,2,..; first kept t0+26");
    assert!(matches!(
        s.read(P0, 0, 10),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        s.stats().segments,
        segs,
        "segments deleted only by the retention pass"
    );
    clock.advance_ms(1000);
    s.enforce_retention().unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_start, 50);
    assert_eq!(s.offsets(P1).unwrap().log_start, 50);
    assert!(s.stats().segments < segs);
    // Positions keep growing after every segment is gone.
    s.append(P0, bm(&batch(1, 10, t0 + 5000))).await.unwrap();
    drop(s);
    let mut c = cfg(dir.path());
    c.clock = Arc::new(clock.clone());
    let s = Store::open(c).unwrap();
    assert_eq!(
        s.offsets(P0).unwrap(),
        sluice_storage::PartitionOffsets {
            log_start: 50,
            log_end: 51
        }
    );
    assert_eq!(base_offset(&s.read(P0, 50, 10).unwrap().chunks[0]), 50);
}

/// Issue 14: records whose timestamps are old (a backfill) or missing (-1) are kept at least
/// the retention after they were appended, and while their segment is still being written
/// (the shared log's version of Kafka deleting a segment only after it rolled); before, an
/// acknowledged backfill vanished in the next retention pass.
#[tokio::test]
async fn old_or_missing_timestamps_live_a_retention_after_their_append() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common_clock();
    let mut c = cfg(dir.path());
    c.clock = Arc::new(clock.clone());
    let s = Store::open(c).unwrap();
    let short = PartitionConfig {
        retention_ms: Some(1000),
        ..Default::default()
    };
    s.configure_partition(P0, short.clone()).unwrap();
    s.configure_partition(P1, short).unwrap();
    s.append(P0, bm(&batch(2, 100, 5))).await.unwrap();
    s.append(P0, bm(&batch(1, 100, -1))).await.unwrap();
    s.enforce_retention().unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_start, 0, "dropped at once");
    assert_eq!(s.read(P0, 0, 1 << 20).unwrap().chunks.len(), 2);
    clock.advance_ms(900);
    // Another partition writes into the same segment: it is still being written.
    s.append(P1, bm(&batch(1, 100, 5))).await.unwrap();
    clock.advance_ms(500);
    s.enforce_retention().unwrap();
    assert_eq!(
        s.offsets(P0).unwrap().log_start,
        0,
        "expired while its segment was written 500 ms ago"
    );
    clock.advance_ms(501);
    s.enforce_retention().unwrap();
    let o = s.offsets(P0).unwrap();
    assert_eq!((o.log_start, o.log_end), (3, 3), "kept past the retention");
    assert_eq!(s.offsets(P1).unwrap().log_start, 1);
}

#[tokio::test]
async fn a_long_retention_partition_pins_segments_but_short_one_is_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common_clock();
    let mut c = cfg(dir.path());
    c.clock = Arc::new(clock.clone());
    let s = Store::open(c).unwrap();
    s.configure_partition(
        P0,
        PartitionConfig {
            retention_ms: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    s.configure_partition(P1, no_retention()).unwrap();
    for i in 0..40 {
        s.append(
            if i % 2 == 0 { P0 } else { P1 },
            bm(&batch(1, 500, 1_000_000)),
        )
        .await
        .unwrap();
    }
    clock.advance_ms(1000);
    s.enforce_retention().unwrap();
    let o = s.offsets(P0).unwrap();
    assert_eq!((o.log_start, o.log_end), (20, 20));
    assert_eq!(s.offsets(P1).unwrap().log_start, 0);
    assert_eq!(s.read(P1, 0, 1 << 20).unwrap().chunks.len(), 20);
}

#[tokio::test]
async fn size_retention() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(
        P0,
        PartitionConfig {
            retention_bytes: Some(10_000),
            ..no_retention()
        },
    )
    .unwrap();
    for _ in 0..100 {
        s.append(P0, bm(&batch(1, 1000, 1))).await.unwrap();
    }
    s.enforce_retention().unwrap();
    let o = s.offsets(P0).unwrap();
    let kept: usize = s.read(P0, o.log_start, usize::MAX).unwrap().total_bytes();
    assert!(kept <= 10_000 && kept > 8_000, "{kept}");
    assert_eq!(o.log_end, 100);
}

#[tokio::test]
async fn truncate_to_position() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    s.configure_partition(P1, no_retention()).unwrap();
    let mut marks = Vec::new();
    for i in 0..60 {
        marks.push(s.stats().write_position);
        s.append(if i % 2 == 0 { P0 } else { P1 }, bm(&batch(2, 400, i)))
            .await
            .unwrap();
    }
    s.flush().unwrap();
    // Cut at entry 31 (P1's 15th batch, offset 30).
    s.truncate_to(marks[31]).unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_end, 32);
    assert_eq!(s.offsets(P1).unwrap().log_end, 30);
    assert_eq!(s.lookup_key(P1, b"k0").unwrap().len(), 15);
    assert_eq!(s.stats().write_position, marks[31]);
    let a = s.append(P1, bm(&batch(1, 10, 99))).await.unwrap();
    assert_eq!(a.base_offset, 30);
    drop(s);
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_end, 32);
    assert_eq!(s.offsets(P1).unwrap().log_end, 31);
    let r = s.read(P1, 28, usize::MAX).unwrap();
    assert_eq!(r.chunks.len(), 2);
    assert_eq!(base_offset(&r.chunks[1]), 30);
}

#[tokio::test]
async fn delete_partition_and_recreate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    s.configure_partition(P1, no_retention()).unwrap();
    for _ in 0..5 {
        s.append(P0, bm(&batch(1, 10, 1))).await.unwrap();
        s.append(P1, bm(&batch(1, 10, 1))).await.unwrap();
    }
    s.delete_partition(P0).unwrap();
    assert_eq!(s.partitions(), vec![P1]);
    assert!(matches!(
        s.read(P0, 0, 1),
        Err(StorageError::UnknownPartition(_))
    ));
    drop(s);
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(s.partitions(), vec![P1]);
    s.configure_partition(P0, no_retention()).unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_end, 0);
    s.append(P0, bm(&batch(1, 10, 1))).await.unwrap();
    drop(s);
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_end, 1);
    assert_eq!(s.offsets(P1).unwrap().log_end, 5);
}

#[tokio::test]
async fn delete_partition_after_its_queue_files_were_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.background = true;
    c.flush_interval_ms = 5;
    c.checkpoint_interval_ms = 1_000_000;
    let s = Store::open(c).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    s.configure_partition(P1, no_retention()).unwrap();
    for _ in 0..300 {
        s.append(P0, bm(&batch(1, 10, 1))).await.unwrap();
    }
    // Let the background write the queue back (not yet synced: no checkpoint).
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    s.delete_partition(P0).unwrap();
    s.flush().unwrap();
    assert_eq!(s.partitions(), vec![P1]);
}

#[test]
fn a_store_is_opened_by_one_owner_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    let e = Store::open(cfg(dir.path()))
        .err()
        .expect("second open must fail");
    assert!(e.to_string().contains("lock"), "{e}");
    drop(s);
    Store::open(cfg(dir.path())).unwrap();
}

#[tokio::test]
async fn subscribe_sees_appends() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(cfg(dir.path())).unwrap());
    s.configure_partition(P0, no_retention()).unwrap();
    let mut rx = s.subscribe_appends();
    let before = *rx.borrow_and_update();
    let s2 = s.clone();
    let t = tokio::spawn(async move { s2.append(P0, bm(&batch(1, 1, 1))).await.unwrap() });
    rx.changed().await.unwrap();
    assert!(*rx.borrow() > before);
    t.await.unwrap();
    assert_eq!(s.read(P0, 0, 100).unwrap().chunks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_appends_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Store::open(cfg(dir.path())).unwrap());
    s.configure_partition(
        P0,
        PartitionConfig {
            flush: Flush::Sync,
            ..no_retention()
        },
    )
    .unwrap();
    let before = s.stats().fsync_count;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.append(P0, bm(&batch(1, 100, 1))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = s.stats();
    assert_eq!(s.offsets(P0).unwrap().log_end, 320);
    assert!(st.synced_position >= st.write_position);
    assert!(
        st.fsync_count - before < 320,
        "group commit batches fsyncs: {}",
        st.fsync_count - before
    );
}

#[tokio::test]
async fn append_begin_pipelines_writes_ahead_of_durability() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(
        P0,
        PartitionConfig {
            flush: Flush::Sync,
            ..no_retention()
        },
    )
    .unwrap();
    let pending: Vec<_> = (0..10)
        .map(|_| s.append_begin(P0, bm(&batch(2, 50, 1))).unwrap())
        .collect();
    // Written and readable before anyone waited for durability.
    assert_eq!(s.offsets(P0).unwrap().log_end, 20);
    for (k, p) in pending.into_iter().enumerate() {
        let a = p.durable().await.unwrap();
        assert_eq!(a.base_offset, 2 * k as i64);
    }
    let st = s.stats();
    assert!(st.synced_position >= st.write_position);
}

#[tokio::test]
async fn disk_full_injected_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(P0, no_retention()).unwrap();
    s.append(P0, bm(&batch(1, 100, 1))).await.unwrap();
    s.inject_disk_full(true);
    let e = s.append(P0, bm(&batch(1, 100, 1))).await.unwrap_err();
    assert!(matches!(e, StorageError::DiskFull { .. }), "{e}");
    assert!(e.is_storage_error());
    assert_eq!(s.offsets(P0).unwrap().log_end, 1);
    assert_eq!(s.read(P0, 0, 1000).unwrap().chunks.len(), 1);
    s.inject_disk_full(false);
    assert_eq!(
        s.append(P0, bm(&batch(1, 100, 1)))
            .await
            .unwrap()
            .base_offset,
        1
    );
    drop(s);
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(s.offsets(P0).unwrap().log_end, 2);
}

#[tokio::test]
async fn queue_files_do_not_hold_fds_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_open_files = 16;
    c.segment_bytes = 1 << 20;
    let s = Store::open(c).unwrap();
    for p in 0..500 {
        s.configure_partition(PartitionId(p), no_retention())
            .unwrap();
        s.append(PartitionId(p), bm(&batch(1, 10, 1)))
            .await
            .unwrap();
    }
    s.flush().unwrap();
    for p in 0..500 {
        assert_eq!(s.read(PartitionId(p), 0, 100).unwrap().chunks.len(), 1);
    }
    assert!(s.stats().open_queue_files <= 16);
}

fn common_clock() -> ::common::ManualClock {
    ::common::ManualClock::new(1_000_000)
}
