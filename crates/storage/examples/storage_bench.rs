//! Storage benchmarks (release mode; each prints the figures that go into
//! `docs/benchmarks.md`). Ratios are taken inside one run, because absolute disk figures on a
//! shared machine move by 10× (see research/limits.md).
//!
//! ```text
//! cargo run -p sluice-storage --release --example storage_bench -- <bench> [dir]
//!   append       16 KiB batches, one appender, vs plain sequential write() of the same bytes
//!   sync         64 concurrent Flush::Sync appenders vs 64 Flush::Async appenders
//!   partitions   10,000 partitions round-robin vs 8
//!   open         open time of a large store: clean stop, kill -9, no checkpoint at all
//!   memory       RSS per idle partition at 100,000 partitions
//!   clean        append throughput with the cleaner running vs off (a dying partition
//!                interleaved with one that keeps every segment)
//!   compact      log compaction's rewrite rate, and append throughput to another
//!                partition while a pass runs vs while none does
//! ```
//! Sizes are scaled by SLUICE_BENCH_MB (default per bench below).
#![allow(unsafe_code)] // see the SAFETY comments

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use sluice_storage::batch_builder::BatchBuilder;
use sluice_storage::{Flush, PartitionConfig, PartitionId, Store, StoreConfig};

fn env_mb(default: u64) -> u64 {
    std::env::var("SLUICE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A v2 batch of `n` records of `value_len` bytes each (uncompressed), base offset 0.
fn make_batch(n: usize, value_len: usize) -> Vec<u8> {
    let now = 1_700_000_000_000i64;
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let key = format!("key-{i}");
        let value: Vec<u8> = (0..value_len).map(|j| (i * 7 + j) as u8).collect();
        b.record(Some(key.as_bytes()), Some(&value), now, &[]);
    }
    b.build()
}

/// A ~16 KiB batch: 16 records of 1000 bytes.
fn batch_16k() -> Vec<u8> {
    make_batch(16, 1000)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rounds() -> usize {
    std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn keep(flush: Flush, index: bool) -> PartitionConfig {
    PartitionConfig {
        flush,
        retention_ms: None,
        retention_bytes: None,
        index,
        compaction: None,
    }
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Plain sequential write() of `total` bytes in `chunk`-sized writes, then fdatasync.
fn plain_write(path: &Path, chunk: &[u8], total: u64) -> (Duration, Duration) {
    let mut f = std::fs::File::create(path).unwrap();
    // One buffer per write, made before the clock starts, as the store's appends get them:
    // writing one cache-hot buffer over and over would compare memory bandwidth, not I/O.
    let bufs: Vec<Vec<u8>> = (0..total.div_ceil(chunk.len() as u64))
        .map(|_| chunk.to_vec())
        .collect();
    let t = Instant::now();
    for b in &bufs {
        f.write_all(b).unwrap();
    }
    let written = t.elapsed();
    f.sync_data().unwrap();
    (written, t.elapsed())
}

fn store_append(
    dir: &Path,
    batch: &[u8],
    total: u64,
    index: bool,
    flush_ms: u64,
) -> (Duration, Duration) {
    let mut cfg = StoreConfig::new(dir);
    cfg.flush_interval_ms = flush_ms;
    cfg.retention_check_interval_ms = 3_600_000;
    let store = Store::open(cfg).unwrap();
    store
        .configure_partition(PartitionId(0), keep(Flush::Async, index))
        .unwrap();
    let rt = rt(1);
    // The request buffers exist before the clock starts (they come from the network in the
    // broker); the plain write does not copy either.
    let bufs: Vec<BytesMut> = (0..total.div_ceil(batch.len() as u64))
        .map(|_| BytesMut::from(batch))
        .collect();
    let t = Instant::now();
    rt.block_on(async {
        for b in bufs {
            store.append(PartitionId(0), b).await.unwrap();
        }
    });
    let written = t.elapsed();
    store.flush().unwrap();
    let flushed = t.elapsed();
    store.close().unwrap();
    (written, flushed)
}

/// Lets the disk settle between runs: the filesystem is mounted with `discard`, so deleting a
/// just-written file costs the next run if it is not given time.
fn settle(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_secs(2));
}

fn bench_append(dir: &Path) {
    let total = env_mb(512) << 20;
    let b = batch_16k();
    println!(
        "## append: {} MiB in {}-byte batches, one appender, Flush::Async",
        total >> 20,
        b.len()
    );
    let d = dir.join("append");
    let mut rows = Vec::new();
    for round in 0..rounds() {
        settle(&d);
        std::fs::create_dir_all(&d).unwrap();
        let (pw, pf) = plain_write(&d.join("plain.dat"), &b, total);
        settle(&d);
        let (nw, nf) = store_append(&d.join("s"), &b, total, false, 3_600_000);
        settle(&d);
        let (sw, sf) = store_append(&d.join("s"), &b, total, false, 1000);
        settle(&d);
        let (iw, iff) = store_append(&d.join("s"), &b, total, true, 1000);
        println!(
            "round {round}: plain write() {:.0} MB/s, +final fdatasync {:.0} | store, no periodic flush {:.0}, +final flush {:.0} | store, 1 s flush {:.0}, +final {:.0} | store, 1 s flush, index on {:.0}, +final {:.0}",
            mbps(total, pw),
            mbps(total, pf),
            mbps(total, nw),
            mbps(total, nf),
            mbps(total, sw),
            mbps(total, sf),
            mbps(total, iw),
            mbps(total, iff)
        );
        rows.push([pw, pf, nw, nf, sw, sf, iw, iff]);
    }
    // Throughput ratio store/plain = plain time / store time.
    let pct = |plain: Duration, store: Duration| 100.0 * plain.as_secs_f64() / store.as_secs_f64();
    for r in &rows {
        println!(
            "store/plain: no periodic flush {:.0}% (page cache) {:.0}% (durable at end) | 1 s flush {:.0}% / {:.0}% | 1 s flush + index {:.0}% / {:.0}%",
            pct(r[0], r[2]),
            pct(r[1], r[3]),
            pct(r[0], r[4]),
            pct(r[1], r[5]),
            pct(r[0], r[6]),
            pct(r[1], r[7])
        );
    }
    let med = |i: usize, j: usize| median(rows.iter().map(|r| pct(r[i], r[j])).collect());
    println!(
        "MEDIAN store/plain: no periodic flush {:.0}% / {:.0}% durable | 1 s flush {:.0}% / {:.0}% durable | index on {:.0}% / {:.0}% durable",
        med(0, 2),
        med(1, 3),
        med(0, 4),
        med(1, 5),
        med(0, 6),
        med(1, 7)
    );
    settle(&d);
}

fn concurrent(dir: &Path, flush: Flush, appenders: usize, total: u64) -> (Duration, Duration, u64) {
    let mut cfg = StoreConfig::new(dir);
    cfg.retention_check_interval_ms = 3_600_000;
    let store = Arc::new(Store::open(cfg).unwrap());
    store
        .configure_partition(PartitionId(0), keep(flush, false))
        .unwrap();
    let b = batch_16k();
    let per = total / appenders as u64 / b.len() as u64;
    let rt = rt(2);
    let fs0 = store.stats().fsync_count;
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let (store, b) = (store.clone(), b.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..per {
                    store
                        .append(PartitionId(0), BytesMut::from(&b[..]))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let appended = t.elapsed();
    store.flush().unwrap();
    let durable = t.elapsed();
    let fsyncs = store.stats().fsync_count - fs0;
    store.close().unwrap();
    (appended, durable, fsyncs)
}

fn bench_sync(dir: &Path) {
    let total = env_mb(512) << 20;
    println!(
        "## sync vs async: 64 concurrent appenders, {} MiB of 16 KiB batches",
        total >> 20
    );
    let (mut r_cache, mut r_durable) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        let d = fresh(dir, "sync");
        let (aw, ad, _) = concurrent(&d.join("a"), Flush::Async, 64, total);
        let d = fresh(dir, "sync");
        let (sw, _, fsyncs) = concurrent(&d.join("s"), Flush::Sync, 64, total);
        println!(
            "round {round}: async {:.0} MB/s in page cache, {:.0} MB/s durable at the end | sync {:.0} MB/s ({} fdatasyncs, {:.1} batches each) | sync/async {:.0}% (page cache), {:.0}% (durable)",
            mbps(total, aw),
            mbps(total, ad),
            mbps(total, sw),
            fsyncs,
            (total / 16_600) as f64 / fsyncs.max(1) as f64,
            100.0 * aw.as_secs_f64() / sw.as_secs_f64(),
            100.0 * ad.as_secs_f64() / sw.as_secs_f64()
        );
        r_cache.push(100.0 * aw.as_secs_f64() / sw.as_secs_f64());
        r_durable.push(100.0 * ad.as_secs_f64() / sw.as_secs_f64());
    }
    println!(
        "MEDIAN sync/async: {:.0}% of async in page cache, {:.0}% of async durable at the end",
        median(r_cache),
        median(r_durable)
    );
    let _ = std::fs::remove_dir_all(dir.join("sync"));
}

fn round_robin(dir: &Path, partitions: u32, appends: u64, b: &[u8]) -> Duration {
    let mut cfg = StoreConfig::new(dir);
    cfg.retention_check_interval_ms = 3_600_000;
    let store = Store::open(cfg).unwrap();
    for p in 0..partitions {
        store
            .configure_partition(PartitionId(p), keep(Flush::Async, false))
            .unwrap();
    }
    let rt = rt(1);
    let t = Instant::now();
    rt.block_on(async {
        for i in 0..appends {
            let p = PartitionId((i % partitions as u64) as u32);
            store.append(p, BytesMut::from(b)).await.unwrap();
        }
    });
    let d = t.elapsed();
    store.close().unwrap();
    d
}

fn bench_partitions(dir: &Path) {
    let b = make_batch(4, 200); // ~1 KiB: per-append overhead dominates
    let appends = env_mb(256) * 1024;
    println!(
        "## round-robin appends of {}-byte batches: {appends} appends",
        b.len()
    );
    let mut ratios = Vec::new();
    for round in 0..rounds() {
        let d = fresh(dir, "parts");
        let t8 = round_robin(&d.join("p8"), 8, appends, &b);
        let d = fresh(dir, "parts");
        let t10k = round_robin(&d.join("p10k"), 10_000, appends, &b);
        let r8 = appends as f64 / t8.as_secs_f64();
        let r10k = appends as f64 / t10k.as_secs_f64();
        println!(
            "round {round}: 8 partitions {:.0} appends/s | 10,000 partitions {:.0} appends/s | ratio {:.0}%",
            r8,
            r10k,
            100.0 * r10k / r8
        );
        ratios.push(100.0 * r10k / r8);
    }
    println!("MEDIAN 10,000/8 partitions: {:.0}%", median(ratios));
    let _ = std::fs::remove_dir_all(dir.join("parts"));
}

/// Drops our own files from the page cache (clean pages only), for cold-open figures
/// without disturbing anyone else's cache.
fn evict(dir: &Path) {
    fn walk(p: &Path) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path);
            } else if let Ok(f) = std::fs::File::open(&path) {
                // SAFETY: plain syscall on an owned fd.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            }
        }
    }
    walk(dir);
}

/// Opens the store and reports the time. `cold`: our files are evicted from the page cache
/// first (as after a reboot). The open itself writes a checkpoint, so a second measurement
/// of the same scenario would measure something else: kill -9 scenarios are measured once.
fn timed_open(dir: &Path, label: &str, cold: bool) {
    if cold {
        evict(dir);
    }
    let t = Instant::now();
    let store = Store::open(StoreConfig::new(dir)).unwrap();
    let d = t.elapsed();
    let st = store.stats();
    println!(
        "open after {label} ({}): {:.2} s — {} partitions, {} segments, {:.2} GiB",
        if cold {
            "store files evicted from the page cache"
        } else {
            "warm page cache"
        },
        d.as_secs_f64(),
        st.partitions,
        st.segments,
        st.write_position as f64 / (1u64 << 30) as f64
    );
    // No close: drop only stops the threads.
    drop(store);
}

fn kill_child(exe: &Path, dir: &Path) {
    let st = std::process::Command::new(exe)
        .args(["open", dir.to_str().unwrap()])
        .env("SLUICE_BENCH_CHILD", "1")
        .status()
        .unwrap();
    println!("child opened the store, appended 256 MiB more and was killed: {st}");
}

fn bench_open(dir: &Path) {
    let gib = env_mb(10 * 1024) as f64 / 1024.0;
    let total = (gib * (1u64 << 30) as f64) as u64;
    let d = dir.join("open");
    let exe = std::env::current_exe().unwrap();
    if std::env::var("SLUICE_BENCH_CHILD").is_ok() {
        // Child: fill, then die by SIGKILL in the middle of appending.
        let store = Store::open(StoreConfig::new(&d)).unwrap();
        let b = batch_16k();
        let rt = rt(1);
        rt.block_on(async {
            for i in 0..(256u64 << 20) / b.len() as u64 {
                let p = PartitionId((i % 10_000) as u32);
                store.append(p, BytesMut::from(&b[..])).await.unwrap();
            }
        });
        // SAFETY: plain syscall.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!();
    }
    let _ = std::fs::remove_dir_all(&d);
    println!("## open time: {gib:.1} GiB, 10,000 partitions, 16 KiB batches round-robin");
    let t = Instant::now();
    {
        let store = Store::open(StoreConfig::new(&d)).unwrap();
        for p in 0..10_000 {
            store
                .configure_partition(PartitionId(p), keep(Flush::Async, true))
                .unwrap();
        }
        let b = batch_16k();
        let rt = rt(1);
        rt.block_on(async {
            for i in 0..total / b.len() as u64 {
                let p = PartitionId((i % 10_000) as u32);
                store.append(p, BytesMut::from(&b[..])).await.unwrap();
            }
        });
        store.close().unwrap();
    }
    println!("filled in {:.1} s", t.elapsed().as_secs_f64());
    timed_open(&d, "clean stop", true);
    timed_open(&d, "clean stop", false);
    kill_child(&exe, dir);
    timed_open(
        &d,
        "kill -9, 256 MiB appended since the last checkpoint",
        true,
    );
    kill_child(&exe, dir);
    timed_open(
        &d,
        "kill -9, 256 MiB appended since the last checkpoint",
        false,
    );
    std::fs::remove_file(d.join("checkpoint")).unwrap();
    timed_open(
        &d,
        "losing the checkpoint file (full replay of the whole log)",
        true,
    );
    if std::env::var("SLUICE_BENCH_KEEP").is_err() {
        let _ = std::fs::remove_dir_all(&d);
    }
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn bench_memory(dir: &Path) {
    let n = 100_000u32;
    let d = fresh(dir, "memory");
    println!("## memory of {n} idle partitions (one 1 KiB batch each)");
    let b = make_batch(4, 200);
    let base = rss_bytes();
    {
        let store = Store::open(StoreConfig::new(&d)).unwrap();
        let opened = rss_bytes();
        let t = Instant::now();
        for p in 0..n {
            store
                .configure_partition(PartitionId(p), keep(Flush::Async, true))
                .unwrap();
        }
        let rt = rt(1);
        rt.block_on(async {
            for p in 0..n {
                store
                    .append(PartitionId(p), BytesMut::from(&b[..]))
                    .await
                    .unwrap();
            }
        });
        store.flush().unwrap(); // write back queues: the partitions are now idle
        let made = rss_bytes();
        println!(
            "created + 1 append each + flush in {:.1} s: RSS {} -> {} MiB, {} bytes per partition; open queue files {}",
            t.elapsed().as_secs_f64(),
            opened >> 20,
            made >> 20,
            (made - opened) / n as u64,
            store.stats().open_queue_files
        );
        store.close().unwrap();
    }
    // A fresh process, so memory freed by the creation phase does not blur the figure.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["memory-open", d.to_str().unwrap()])
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_dir_all(&d);
    let _ = base;
}

fn bench_memory_open(d: &Path) {
    let before = rss_bytes();
    let t = Instant::now();
    let store = Store::open(StoreConfig::new(d)).unwrap();
    let opened = t.elapsed();
    let n = store.partitions().len() as u64;
    // Touch every partition the way a broker does at startup (offsets), then let it idle.
    for p in store.partitions() {
        store.offsets(p).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500)); // one background flush round
    let after = rss_bytes();
    println!(
        "fresh process: open in {:.2} s, RSS {:.1} -> {:.1} MiB: {} bytes per idle partition ({} partitions, {} open queue files)",
        opened.as_secs_f64(),
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
        (after - before) / n.max(1),
        n,
        store.stats().open_queue_files
    );
}

/// How the space of dead batches is freed in a `clean` run.
#[derive(Clone, Copy, PartialEq)]
enum Freeing {
    /// A forever partition pins every segment; the cleaner punches the dead batches.
    Cleaner,
    /// The same, the cleaner off: nothing is freed (disk use for reference).
    Nothing,
    /// Nothing pins segments (the small batches die too); retention deletes whole
    /// segments and the cleaner is off: the control, space freed the old way.
    Segments,
}

/// One `clean` run: 16 KiB batches to a partition holding at most 64 MiB (size retention),
/// every 64th append a small batch to a second partition. Retention (and the cleaner after
/// it) every 100 ms, a stress setting: the default is 60 s. Returns (append time, time with
/// the final flush, allocated bytes, bytes the cleaner freed).
fn clean_run(dir: &Path, total: u64, how: Freeing) -> (Duration, Duration, u64, u64) {
    let mut cfg = StoreConfig::new(dir);
    cfg.segment_bytes = 32 << 20;
    // The retention check runs on the background flush's cadence: both at 100 ms, so
    // passes run all through the timed appends.
    cfg.flush_interval_ms = 100;
    cfg.retention_check_interval_ms = 100;
    cfg.checkpoint_interval_ms = 1000;
    if how != Freeing::Cleaner {
        cfg.clean_bytes_per_pass = 0;
    }
    let store = Store::open(cfg).unwrap();
    let dying = PartitionConfig {
        retention_bytes: Some(64 << 20),
        ..keep(Flush::Async, false)
    };
    let second = match how {
        Freeing::Segments => PartitionConfig {
            retention_bytes: Some(1 << 10),
            ..keep(Flush::Async, false)
        },
        _ => keep(Flush::Async, false),
    };
    store.configure_partition(PartitionId(0), dying).unwrap();
    store.configure_partition(PartitionId(1), second).unwrap();
    let b = batch_16k();
    let small = make_batch(1, 100);
    let n = total.div_ceil(b.len() as u64);
    let bufs: Vec<(PartitionId, BytesMut)> = (0..n)
        .map(|i| match i % 64 {
            63 => (PartitionId(1), BytesMut::from(&small[..])),
            _ => (PartitionId(0), BytesMut::from(&b[..])),
        })
        .collect();
    let rt = rt(1);
    let t = Instant::now();
    rt.block_on(async {
        for (p, buf) in bufs {
            store.append(p, buf).await.unwrap();
        }
    });
    let written = t.elapsed();
    store.flush().unwrap();
    let flushed = t.elapsed();
    let stats = store.stats();
    store.close().unwrap();
    (
        written,
        flushed,
        stats.bytes_on_disk,
        stats.clean_bytes_freed,
    )
}

fn bench_clean(dir: &Path) {
    let total = env_mb(2048) << 20;
    println!(
        "## clean: {} MiB of 16 KiB batches to a 64 MiB-retention partition, 1 in 64 appends a small batch to a second one; retention every 100 ms",
        total >> 20
    );
    let d = dir.join("clean");
    let all = [Freeing::Cleaner, Freeing::Segments, Freeing::Nothing];
    let mut ratios = Vec::new();
    for round in 0..rounds() {
        // Rotate the order, so a disk slowing down mid-round favours none.
        let mut r = [None; 3];
        for k in 0..3 {
            let i = (round + k) % 3;
            settle(&d);
            r[i] = Some(clean_run(&d, total, all[i]));
        }
        let [c, s, n] = r.map(|x| x.unwrap());
        println!(
            "round {round}: cleaner {:.0} MB/s (+final flush {:.0}), {} MiB allocated at the end, {} MiB freed | segments deleted, cleaner off {:.0} MB/s (+final flush {:.0}), {} MiB allocated | pinned, cleaner off {:.0} MB/s (+final flush {:.0}), {} MiB allocated",
            mbps(total, c.0),
            mbps(total, c.1),
            c.2 >> 20,
            c.3 >> 20,
            mbps(total, s.0),
            mbps(total, s.1),
            s.2 >> 20,
            mbps(total, n.0),
            mbps(total, n.1),
            n.2 >> 20,
        );
        let pct = |a: Duration, b: Duration| 100.0 * b.as_secs_f64() / a.as_secs_f64();
        ratios.push([pct(c.0, s.0), pct(c.1, s.1), pct(c.0, n.0), pct(c.1, n.1)]);
    }
    let med = |i: usize| median(ratios.iter().map(|r| r[i]).collect());
    println!(
        "MEDIAN cleaner vs segments deleted: {:.0}% appending, {:.0}% with the final flush | cleaner vs pinned (nothing freed): {:.0}% / {:.0}%",
        med(0),
        med(1),
        med(2),
        med(3)
    );
    settle(&d);
}

/// Batches of 16 records of ~1000 bytes whose keys cycle over `keys` distinct keys.
fn keyed_batches(total: u64, keys: u64) -> Vec<BytesMut> {
    let now = 1_700_000_000_000i64;
    let value = vec![7u8; 1000];
    let mut out = Vec::new();
    let mut k = 0u64;
    let mut bytes = 0u64;
    while bytes < total {
        let mut b = BatchBuilder::new();
        for _ in 0..16 {
            let key = format!("key-{:08}", k % keys);
            b.record(Some(key.as_bytes()), Some(&value), now, &[]);
            k += 1;
        }
        let built = b.build();
        bytes += built.len() as u64;
        out.push(BytesMut::from(&built[..]));
    }
    out
}

/// Appends `total` bytes of 16 KiB batches to `p`; returns the time taken.
fn append_fixed(store: &Store, p: PartitionId, total: u64) -> Duration {
    let b = batch_16k();
    let n = total.div_ceil(b.len() as u64);
    let rt = rt(1);
    let t = Instant::now();
    rt.block_on(async {
        for _ in 0..n {
            store.append(p, BytesMut::from(&b[..])).await.unwrap();
        }
    });
    t.elapsed()
}

fn bench_compact(dir: &Path) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let total = env_mb(512) << 20;
    let keys = (total >> 10) / 5; // each key updated about 5 times
    // SLUICE_BENCH_COMPACT_MBPS: the pace (storage.compaction_bytes_per_sec; 0 unlimited).
    let pace = std::env::var("SLUICE_BENCH_COMPACT_MBPS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(sluice_storage::DEFAULT_COMPACTION_BYTES_PER_SEC, |m| {
            m << 20
        });
    println!(
        "## compact: a compacted partition of {} MiB (1 KiB records, {keys} keys, ~5 updates each), reads paced to {} MiB/s (0: unlimited); appends of 16 KiB batches to another partition during a pass vs during no pass",
        total >> 20,
        pace >> 20
    );
    let d = dir.join("compact");
    let (mut rates, mut ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        settle(&d);
        let mut cfg = StoreConfig::new(&d);
        cfg.background = false;
        cfg.compaction_bytes_per_sec = pace;
        let store = Store::open(cfg).unwrap();
        let compacted = PartitionConfig {
            compaction: Some(sluice_storage::Compaction {
                min_dirty_ppm: 0,
                ..Default::default()
            }),
            ..keep(Flush::Async, false)
        };
        store
            .configure_partition(PartitionId(0), compacted)
            .unwrap();
        store
            .configure_partition(PartitionId(1), keep(Flush::Async, false))
            .unwrap();
        let rt1 = rt(1);
        rt1.block_on(async {
            for b in keyed_batches(total, keys) {
                store.append(PartitionId(0), b).await.unwrap();
            }
        });
        store.flush().unwrap();
        // A pass alone: its rewrite rate.
        let t = Instant::now();
        let pass = store.compact().unwrap();
        let alone = t.elapsed();
        let rate = mbps(total, alone);
        rates.push(rate);
        // The same volume of appends to the other partition with passes running back to
        // back (each after re-dirtying the compacted partition) and with none; which goes
        // first alternates between rounds. Equal volumes: page-cache writeback weighs the
        // same on both.
        let appends = total * 2;
        let measure = |with_passes: bool| -> (Duration, u32) {
            let stop = AtomicBool::new(false);
            std::thread::scope(|sc| {
                let h = sc.spawn(|| {
                    let d = append_fixed(&store, PartitionId(1), appends);
                    stop.store(true, Ordering::Release);
                    d
                });
                let mut passes = 0;
                while with_passes && !stop.load(Ordering::Acquire) {
                    rt1.block_on(async {
                        for b in keyed_batches(1 << 20, keys) {
                            store.append(PartitionId(0), b).await.unwrap();
                        }
                    });
                    store.compact().unwrap();
                    passes += 1;
                }
                (h.join().unwrap(), passes)
            })
        };
        let (during, quiet) = if round % 2 == 0 {
            let d = measure(true);
            store.flush().unwrap();
            (d, measure(false))
        } else {
            let q = measure(false);
            store.flush().unwrap();
            (measure(true), q)
        };
        let (r_during, r_quiet) = (mbps(appends, during.0), mbps(appends, quiet.0));
        println!(
            "round {round}: pass over {} MiB in {:.2} s = {rate:.0} MB/s of log ({} MiB read, {} MiB written, {} records removed) | {} MiB of appends to another partition: {r_during:.0} MB/s with passes running ({} passes), {r_quiet:.0} MB/s without ({:.0}%)",
            total >> 20,
            alone.as_secs_f64(),
            pass.bytes_read >> 20,
            pass.bytes_written >> 20,
            pass.records_removed,
            appends >> 20,
            during.1,
            100.0 * r_during / r_quiet,
        );
        ratios.push(100.0 * r_during / r_quiet);
        store.close().unwrap();
    }
    println!(
        "MEDIAN compaction {:.0} MB/s of log; appends during a pass at {:.0}% of their rate without one",
        median(rates),
        median(ratios)
    );
    settle(&d);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("");
    let dir = PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "/tmp/sluice-storage-bench".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    match which {
        "append" => bench_append(&dir),
        "sync" => bench_sync(&dir),
        "partitions" => bench_partitions(&dir),
        "open" => bench_open(&dir),
        "memory" => bench_memory(&dir),
        "clean" => bench_clean(&dir),
        "compact" => bench_compact(&dir),
        "memory-open" => bench_memory_open(&dir),
        "append-store-only" => {
            // For profiling: only the store side of `append`.
            let total = env_mb(512) << 20;
            let d = fresh(&dir, "store-only");
            let (w, _) = store_append(&d, &batch_16k(), total, false, 3_600_000);
            println!("{:.0} MB/s", mbps(total, w));
            let _ = std::fs::remove_dir_all(&d);
        }
        "open-only" => {
            let t = Instant::now();
            let store = Store::open(StoreConfig::new(&dir)).unwrap();
            println!(
                "opened {:?} in {:.2} s: {:?}",
                dir,
                t.elapsed().as_secs_f64(),
                store.stats()
            );
        }
        _ => eprintln!("usage: storage_bench append|sync|partitions|open|memory|clean [dir]"),
    }
}
