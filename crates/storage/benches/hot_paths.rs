//! Criterion micro-benchmarks of the storage hot paths (issue 7): validating a produced batch
//! (header parse + CRC32C), appending it, looking up an offset through the consume queue and
//! reading whole batches back. Run: `cargo bench -p sluice-storage --bench hot_paths`.
//! Figures go to docs/benchmarks.md; these are for before/after comparisons of one change.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_storage::batch::validate_batches;
use sluice_storage::{Flush, PartitionConfig, PartitionId, Store, StoreConfig};

#[path = "../tests/kit/mod.rs"]
mod kit;

const P: PartitionId = PartitionId(0);

fn keep_all() -> PartitionConfig {
    PartitionConfig {
        flush: Flush::Async,
        retention_ms: None,
        retention_bytes: None,
        index: false,
        compaction: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn validate(c: &mut Criterion) {
    let batch = kit::batch(16, 1000, 1_700_000_000_000);
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("16 KiB batch: header + CRC32C", |b| {
        b.iter(|| validate_batches(black_box(&batch)).expect("valid"))
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    store.configure_partition(P, keep_all()).expect("configure");
    let rt = runtime();
    let batch = kit::batch(16, 1000, 1_700_000_000_000);
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("16 KiB batch, async flush, index off", |b| {
        b.iter(|| {
            rt.block_on(store.append(P, kit::bm(&batch)))
                .expect("append")
        })
    });
    g.finish();
}

fn lookup_and_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    store.configure_partition(P, keep_all()).expect("configure");
    let rt = runtime();
    // 20,000 batches of 10 records: offsets 0..200,000.
    let batch = kit::batch(10, 100, 1_700_000_000_000);
    for _ in 0..20_000 {
        rt.block_on(store.append(P, kit::bm(&batch)))
            .expect("append");
    }
    let mut g = c.benchmark_group("read");
    let mut offset = 0i64;
    g.bench_function("offset lookup + one batch (zero-copy Bytes)", |b| {
        b.iter(|| {
            offset = (offset + 7_919) % 200_000;
            let r = store.read(P, black_box(offset), 1).expect("read");
            assert_eq!(r.chunks.len(), 1);
            r
        })
    });
    g.bench_function("fetch assembly: 1 MiB of batches", |b| {
        b.iter(|| {
            offset = (offset + 7_919) % 150_000;
            store.read(P, black_box(offset), 1 << 20).expect("read")
        })
    });
    g.finish();
}

criterion_group!(benches, validate, append, lookup_and_read);
criterion_main!(benches);
