//! The cleaner (issue 13, item 5: disk space follows live data): dead entries in segments
//! that other partitions' live entries keep alive are freed in place. Each test interleaves
//! a live partition with one whose entries die (deleted, `delete_records`, time retention),
//! then checks what a user notices: the blocks the segment files hold drop to about the
//! live bytes, and every live record still reads back byte for byte, by offset and by key,
//! also after reopening (with the checkpoint, without it, without the hash index).
mod kit;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use kit::*;
use sluice_storage::{PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

const KEEP: PartitionId = PartitionId(0);
const DIE: PartitionId = PartitionId(1);
const SEGMENT: u64 = 1 << 20;
const BLOCK: u64 = 4096;

fn cfg(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = SEGMENT;
    c.background = false;
    c
}

fn no_retention() -> PartitionConfig {
    PartitionConfig {
        retention_ms: None,
        ..Default::default()
    }
}

/// Blocks allocated by the commit-log segment files, from the filesystem (st_blocks), not
/// from the store's own counters.
fn segment_blocks_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().unwrap().blocks() * 512)
        .sum()
}

/// One record with a unique key and a value of `len` bytes derived from `i`.
fn keyed(prefix: &str, i: usize, len: usize, ts: i64) -> (String, Vec<u8>) {
    let key = format!("{prefix}-{i}");
    let val: Vec<u8> = (0..len)
        .map(|k| (i as u8).wrapping_mul(31) ^ k as u8)
        .collect();
    let b = batch_with(NONE, &[(Some(key.as_bytes()), &val, ts)]);
    (key, b)
}

/// What was appended to the live partition: (key, batch with its assigned base offset).
type Kept = Vec<(String, Vec<u8>)>;

/// Appends `n` rounds of one `keep_len` record to KEEP and `per_round` records of
/// `die_len` to DIE (runs of dead entries of `per_round * die_len` once DIE's die).
async fn interleave(
    s: &Store,
    n: usize,
    keep_len: usize,
    per_round: usize,
    die_len: usize,
    ts: i64,
) -> Kept {
    let mut kept = Vec::new();
    for i in 0..n {
        let (key, b) = keyed("keep", i, keep_len, ts);
        let a = s.append(KEEP, bm(&b)).await.unwrap();
        kept.push((key, with_base(b, a.base_offset)));
        for j in 0..per_round {
            let (_, b) = keyed("die", i * per_round + j, die_len, ts);
            s.append(DIE, bm(&b)).await.unwrap();
        }
    }
    kept
}

/// Every kept batch reads back byte for byte and is found by its key.
fn assert_kept(s: &Store, kept: &Kept) {
    let got = read_all(s, KEEP);
    assert_eq!(got.len(), kept.len());
    for (g, (key, want)) in got.iter().zip(kept) {
        assert_eq!(&g[..], &want[..], "{key}");
        let off = base_offset(want);
        assert_eq!(
            s.lookup_key(KEEP, key.as_bytes()).unwrap(),
            vec![off],
            "{key}"
        );
    }
}

/// Cleans until a pass reports nothing left within its budget; returns the passes' sums.
fn clean_all(s: &Store) -> sluice_storage::CleanPass {
    let mut sum = sluice_storage::CleanPass::default();
    loop {
        let p = s.clean().unwrap();
        sum.bytes_walked += p.bytes_walked;
        sum.bytes_punched += p.bytes_punched;
        sum.bytes_freed += p.bytes_freed;
        sum.paddings_written += p.paddings_written;
        sum.segments_busy += p.segments_busy;
        if !p.more {
            return sum;
        }
    }
}

/// The most a cleaned commit log may hold: the live bytes, plus per live entry the blocks
/// it shares with the runs on either side (the block holding the next run's padding header,
/// the partial block at a run's end, one for a header straddling a sector), plus the active
/// segment, which is never cleaned.
fn bound(live_bytes: u64, live_entries: u64) -> u64 {
    live_bytes + live_entries * 3 * BLOCK + SEGMENT
}

fn reopen(dir: &Path, s: Store) -> Store {
    s.close().unwrap();
    drop(s);
    Store::open(cfg(dir)).unwrap()
}

#[tokio::test]
async fn deleting_a_partition_frees_its_blocks_in_shared_segments() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    // 8 KiB kept, 8 × 32 KiB (256 KiB) to die, ten times per MiB segment.
    let kept = interleave(&s, 40, 8 << 10, 8, 32 << 10, 1_000).await;
    let before = segment_blocks_bytes(dir.path());
    assert!(before > 10 * SEGMENT, "{before}");

    s.delete_partition(DIE).unwrap();
    // Retention cannot free it: KEEP's first entry is in the first segment.
    s.enforce_retention().unwrap();
    assert_eq!(segment_blocks_bytes(dir.path()), before);
    s.flush().unwrap();
    let pass = clean_all(&s);
    let after = segment_blocks_bytes(dir.path());
    let live: u64 = kept.iter().map(|(_, b)| b.len() as u64 + 16).sum();
    eprintln!("before {before}, after {after}, live {live}, {pass:?}");
    assert!(
        after <= bound(live, kept.len() as u64),
        "after {after} > bound {} (live {live})",
        bound(live, kept.len() as u64)
    );
    assert!(pass.paddings_written > 0 && pass.bytes_freed > before / 2);
    // The store's own counters agree with the filesystem.
    let st = s.stats();
    assert_eq!(st.bytes_on_disk, after);
    assert_eq!(st.clean_bytes_freed, pass.bytes_freed);
    assert!(st.clean_bytes_punched >= pass.bytes_freed);
    assert_kept(&s, &kept);

    // Nothing changed since: the next pass walks nothing (bounded I/O per pass).
    let again = s.clean().unwrap();
    assert_eq!((again.bytes_walked, again.paddings_written), (0, 0));

    let s = reopen(dir.path(), s);
    assert_kept(&s, &kept);
    // Appends go on, and the next clean after reopen finds nothing new to free.
    let (_, b) = keyed("keep", 1000, 100, 2_000);
    s.append(KEEP, bm(&b)).await.unwrap();
    s.flush().unwrap();
    let p = clean_all(&s);
    assert_eq!((p.paddings_written, p.bytes_freed), (0, 0), "{p:?}");
    assert_eq!(segment_blocks_bytes(dir.path()), after);
}

#[tokio::test]
async fn recovery_without_checkpoint_or_hash_index_replays_across_padding() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    let mut kept = interleave(&s, 30, 2 << 10, 6, 24 << 10, 1_000).await;
    // DIE's first 120 records die; its last 60 stay live and must survive too.
    let die_start = s.delete_records(DIE, 120).unwrap();
    let die_live = read_all(&s, DIE);
    s.flush().unwrap();
    let pass = clean_all(&s);
    assert!(pass.paddings_written > 10, "{pass:?}");
    let (_, b) = keyed("keep", 99, 100, 2_000);
    let a = s.append(KEEP, bm(&b)).await.unwrap();
    kept.push(("keep-99".into(), with_base(b, a.base_offset)));
    s.close().unwrap();
    drop(s);

    // Lost checkpoint: everything is replayed from the log start, across padding entries
    // (DIE's offsets jump where its dead entries were freed).
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    std::fs::remove_dir_all(dir.path().join("hindex")).unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_kept(&s, &kept);
    let o = s.offsets(DIE).unwrap();
    assert!(o.log_start <= die_start && o.log_end == 180, "{o:?}");
    let got = read_all(&s, DIE);
    let live_now = &got[got.len() - die_live.len()..];
    assert_eq!(live_now, &die_live[..]);

    // A lost hash index alone is rebuilt from the log start across padding entries too.
    let s = reopen(dir.path(), s);
    std::fs::remove_dir_all(dir.path().join("hindex")).unwrap();
    drop(s);
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_kept(&s, &kept);
}

#[tokio::test]
async fn delete_records_frees_the_trimmed_prefix_and_lookups_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    let kept = interleave(&s, 40, 4 << 10, 8, 32 << 10, 1_000).await;
    let before = segment_blocks_bytes(dir.path());
    // All but DIE's last 8 records (the last round, in the active segment).
    s.delete_records(DIE, 312).unwrap();
    let die_live = read_all(&s, DIE);
    s.flush().unwrap();
    let pass = clean_all(&s);
    let after = segment_blocks_bytes(dir.path());
    let live: u64 = kept.iter().map(|(_, b)| b.len() as u64 + 16).sum::<u64>()
        + die_live.iter().map(|b| b.len() as u64 + 16).sum::<u64>();
    eprintln!("before {before}, after {after}, live {live}, {pass:?}");
    assert!(after <= bound(live, kept.len() as u64 + 8), "after {after}");
    assert_kept(&s, &kept);
    assert_eq!(read_all(&s, DIE), die_live);
    // A key of a trimmed record: not found, and no error (its entry is never loaded).
    assert_eq!(s.lookup_key(DIE, b"die-3").unwrap(), Vec::<i64>::new());
    assert_eq!(s.lookup_key(DIE, b"die-315").unwrap(), vec![315]);
    assert!(matches!(
        s.read(DIE, 3, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    let s = reopen(dir.path(), s);
    assert_kept(&s, &kept);
    assert_eq!(read_all(&s, DIE), die_live);
}

#[tokio::test]
async fn time_retention_next_to_a_partition_without_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ::common::ManualClock::new(1_000_000);
    let mut c = cfg(dir.path());
    c.clock = Arc::new(clock.clone());
    let s = Store::open(c.clone()).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(
        DIE,
        PartitionConfig {
            retention_ms: Some(10_000),
            ..Default::default()
        },
    )
    .unwrap();
    let kept = interleave(&s, 40, 4 << 10, 8, 32 << 10, 1_000_000).await;
    let before = segment_blocks_bytes(dir.path());
    clock.advance_ms(20_000);
    // The retention pass moves DIE's log start and checkpoints; KEEP pins every segment.
    s.enforce_retention().unwrap();
    let o = s.offsets(DIE).unwrap();
    assert_eq!((o.log_start, o.log_end), (320, 320));
    assert_eq!(segment_blocks_bytes(dir.path()), before);
    let pass = clean_all(&s);
    let after = segment_blocks_bytes(dir.path());
    let live: u64 = kept.iter().map(|(_, b)| b.len() as u64 + 16).sum();
    eprintln!("before {before}, after {after}, live {live}, {pass:?}");
    assert!(after <= bound(live, kept.len() as u64), "after {after}");
    assert_kept(&s, &kept);
    drop(s);
    let s = Store::open(c).unwrap();
    assert_kept(&s, &kept);
}

#[tokio::test]
async fn a_wholly_dead_segment_that_cannot_be_deleted_is_punched_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    let (key, b) = keyed("keep", 0, 1000, 1);
    s.append(KEEP, bm(&b)).await.unwrap();
    // Three and a half segments of DIE only, then KEEP again.
    for i in 0..112 {
        let (_, b) = keyed("die", i, 32 << 10, 1);
        s.append(DIE, bm(&b)).await.unwrap();
    }
    let (key2, b2) = keyed("keep", 1, 1000, 1);
    s.append(KEEP, bm(&b2)).await.unwrap();
    s.delete_partition(DIE).unwrap();
    s.enforce_retention().unwrap();
    assert_eq!(s.stats().segments, 4, "KEEP's first entry pins them all");
    clean_all(&s);
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            (e.file_name().into_string().unwrap(), m.blocks() * 512)
        })
        .collect();
    sizes.sort();
    eprintln!("{sizes:?}");
    // The first holds KEEP's entry and a padding header; the middle ones only a padding
    // header's block each; the last is active (never cleaned).
    assert!(sizes[0].1 <= 2 * BLOCK, "{sizes:?}");
    assert!(sizes[1].1 <= BLOCK && sizes[2].1 <= BLOCK, "{sizes:?}");
    assert_eq!(s.lookup_key(KEEP, key.as_bytes()).unwrap(), vec![0]);
    assert_eq!(s.lookup_key(KEEP, key2.as_bytes()).unwrap(), vec![1]);
    assert_eq!(read_all(&s, KEEP).len(), 2);
}

#[tokio::test]
async fn a_damaged_queue_entry_is_rebuilt_across_padding() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.cq_entries_per_file = 1024;
    let s = Store::open(c.clone()).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    let kept = interleave(&s, 20, 1000, 4, 32 << 10, 1).await;
    s.delete_partition(DIE).unwrap();
    s.flush().unwrap();
    assert!(clean_all(&s).paddings_written > 0);
    s.close().unwrap();
    drop(s);
    // Damage KEEP's queue entry 5: its neighbours are 128 KiB of padding away.
    let cq = dir.path().join(format!("queues/0/{:020}.cq", 0));
    let mut bytes = std::fs::read(&cq).unwrap();
    bytes[5 * 40 + 3] ^= 0xff;
    std::fs::write(&cq, bytes).unwrap();
    let s = Store::open(c).unwrap();
    assert_kept(&s, &kept);
}

#[tokio::test]
async fn truncating_into_a_freed_run_keeps_later_appends_visible() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    // Round 0 is KEEP's entry 0, then DIE's entries 0..8.
    let kept = interleave(&s, 10, 1000, 8, 32 << 10, 1).await;
    s.delete_records(DIE, 80).unwrap();
    s.flush().unwrap();
    assert!(clean_all(&s).paddings_written > 0);
    // Cut at DIE's entry 2: inside the padding entry that now covers DIE's 0..8.
    let first_keep = kept[0].1.len() as u64 + 16;
    let die_len = keyed("die", 0, 32 << 10, 1).1.len() as u64 + 16;
    let cut = first_keep + 2 * die_len;
    s.truncate_to(cut).unwrap();
    assert_eq!(s.offsets(KEEP).unwrap().log_end, 1);
    let (key, b) = keyed("keep", 77, 500, 2);
    s.append(KEEP, bm(&b)).await.unwrap();
    s.close().unwrap();
    drop(s);
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    assert_eq!(
        s.offsets(KEEP).unwrap().log_end,
        2,
        "the append after the cut"
    );
    assert_eq!(s.lookup_key(KEEP, key.as_bytes()).unwrap(), vec![1]);
    assert_eq!(read_all(&s, KEEP)[0][..], kept[0].1[..]);
}

#[tokio::test]
async fn a_pass_stays_within_its_budget_and_the_next_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.clean_bytes_per_pass = 2 << 20;
    let s = Store::open(c).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    let kept = interleave(&s, 40, 1000, 8, 32 << 10, 1).await;
    s.delete_partition(DIE).unwrap();
    s.flush().unwrap();
    let mut passes = 0;
    let mut freed = 0;
    loop {
        let p = s.clean().unwrap();
        passes += 1;
        // One entry past the budget at most (the walk checks it between entries).
        assert!(p.bytes_walked <= (2 << 20) + (33 << 10), "{p:?}");
        freed += p.bytes_freed;
        if !p.more {
            break;
        }
    }
    assert!(
        passes >= 4,
        "{passes} passes over ~10 MiB with a 2 MiB budget"
    );
    assert!(freed > 8 * SEGMENT, "{freed}");
    assert_kept(&s, &kept);
}

#[tokio::test]
async fn an_old_format_store_is_marked_before_its_first_padding() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    let format = dir.path().join("FORMAT");
    assert_eq!(
        std::fs::read(&format).unwrap()[8],
        4,
        "new stores are version 4"
    );
    s.close().unwrap();
    drop(s);
    // A version-1 store (as earlier builds wrote it) opens as is.
    let mut v1 = b"SLUICEST\x01\x00\x00\x00".to_vec();
    let crc = crc32c::crc32c(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&format, &v1).unwrap();
    let s = Store::open(cfg(dir.path())).unwrap();
    s.configure_partition(KEEP, no_retention()).unwrap();
    s.configure_partition(DIE, no_retention()).unwrap();
    let kept = interleave(&s, 12, 1000, 8, 32 << 10, 1).await;
    assert_eq!(std::fs::read(&format).unwrap(), v1);
    s.delete_partition(DIE).unwrap();
    s.flush().unwrap();
    assert!(clean_all(&s).paddings_written > 0);
    let f = std::fs::read(&format).unwrap();
    assert_eq!((f.len(), f[8]), (16, 4));
    let s = reopen(dir.path(), s);
    assert_kept(&s, &kept);
}
