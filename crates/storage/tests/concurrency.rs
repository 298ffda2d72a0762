//! Readers racing appenders, write-back, checkpoints and retention: a reader never sees a
//! half-written entry, a gap, or bytes that differ from what was appended.
mod kit;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kit::*;
use sluice_storage::{Flush, PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

#[test]
fn readers_race_appends_flushes_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StoreConfig::new(dir.path());
    c.segment_bytes = 256 * 1024;
    c.flush_interval_ms = 5;
    c.checkpoint_interval_ms = 20;
    c.retention_check_interval_ms = 30;
    c.cq_entries_per_file = 32;
    let store = Arc::new(Store::open(c).unwrap());
    for p in 0..4 {
        let cfg = PartitionConfig {
            flush: if p == 0 { Flush::Sync } else { Flush::Async },
            retention_ms: None,
            // Partition 3 keeps only ~64 KiB: its log start moves under the readers.
            retention_bytes: (p == 3).then_some(64 * 1024),
            index: p != 2,
            compaction: None,
        };
        store.configure_partition(PartitionId(p), cfg).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..2u32 {
        let (store, stop) = (store.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut checked = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for p in 0..4 {
                    let p = PartitionId((p + r) % 4);
                    let o = store.offsets(p).unwrap();
                    let mut off = o.log_start;
                    while off < o.log_end {
                        let res = match store.read(p, off, 64 * 1024) {
                            Ok(res) => res,
                            // Retention moved the start past us: fine, start again.
                            Err(StorageError::OffsetOutOfRange { .. }) => break,
                            Err(e) => panic!("read {p} at {off}: {e}"),
                        };
                        for c in &res.chunks {
                            let h = sluice_storage::batch::BatchHeader::parse(c).unwrap();
                            h.verify_crc(0).unwrap();
                            assert!(
                                h.base_offset() <= off && off <= h.last_offset(),
                                "gap at {off}"
                            );
                            // Content check: the key names the sequence the batch was built from.
                            let seq = h.max_timestamp() as u64;
                            assert_eq!(&c[12..], &with_base(batch_for_seq(seq), 0)[12..]);
                            off = h.last_offset() + 1;
                            checked += 1;
                        }
                        if res.chunks.is_empty() {
                            break;
                        }
                    }
                }
            }
            checked
        }));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut seq = t * 1_000_000;
                while started.elapsed() < Duration::from_secs(3) {
                    seq += 1;
                    let p = PartitionId((seq % 4) as u32);
                    store.append(p, bm(&batch_for_seq(seq))).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    stop.store(true, Ordering::Relaxed);
    let checked: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checked > 1000, "readers checked only {checked} batches");
    assert!(
        store.offsets(PartitionId(3)).unwrap().log_start > 0,
        "size retention ran"
    );
    store.close().unwrap();
}
