mod kit;

use kit::*;
use sluice_storage::{Flush, PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

const P0: PartitionId = PartitionId(0);

fn open(dir: &std::path::Path) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.segment_bytes = 64 * 1024;
    Store::open(cfg).unwrap()
}

#[tokio::test]
async fn append_read_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .configure_partition(P0, PartitionConfig::default())
        .unwrap();
    let now = common_now();
    let a = store.append(P0, bm(&batch(3, 10, now))).await.unwrap();
    assert_eq!(
        (a.base_offset, a.last_offset, a.log_start_offset),
        (0, 2, 0)
    );
    let b = store.append(P0, bm(&batch(2, 10, now))).await.unwrap();
    assert_eq!((b.base_offset, b.last_offset), (3, 4));
    let o = store.offsets(P0).unwrap();
    assert_eq!((o.log_start, o.log_end), (0, 5));
    let r = store.read(P0, 0, 1 << 20).unwrap();
    assert_eq!(r.chunks.len(), 2);
    assert_eq!(base_offset(&r.chunks[1]), 3);
    assert_eq!(r.high_watermark, 5);
    let r = store.read(P0, 4, 1).unwrap();
    assert_eq!(r.chunks.len(), 1, "first batch always whole");
    assert_eq!(base_offset(&r.chunks[0]), 3);
    assert!(store.read(P0, 5, 100).unwrap().chunks.is_empty());
    assert!(matches!(
        store.read(P0, 6, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(store.lookup_key(P0, b"k1").unwrap(), vec![1, 4]);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.offsets(P0).unwrap().log_end, 5);
    assert_eq!(store.read(P0, 0, 1 << 20).unwrap().chunks.len(), 2);
    assert_eq!(store.lookup_key(P0, b"k1").unwrap(), vec![1, 4]);
    let c = store.append(P0, bm(&batch(1, 10, now))).await.unwrap();
    assert_eq!(c.base_offset, 5);
    store
        .configure_partition(
            P0,
            PartitionConfig {
                flush: Flush::Sync,
                ..Default::default()
            },
        )
        .unwrap();
    let d = store.append(P0, bm(&batch(1, 10, now))).await.unwrap();
    assert_eq!(d.base_offset, 6);
    store.close().unwrap();
}

fn common_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
