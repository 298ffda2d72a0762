//! Crash test of the cleaner: a child process (this test binary re-executed) appends to
//! live partitions while others' entries die all the time (size retention, `delete_records`,
//! a partition deleted and re-created) and runs cleaner passes in a loop; the parent
//! SIGKILLs it at random moments, reopens the store and checks every acknowledged live
//! batch is present, byte for byte, and found by its key. The children report what their
//! passes freed, so the test fails if the cleaner never ran.
mod kit;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kit::*;
use sluice_storage::{Flush, PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

const ENV_DIR: &str = "SLUICE_CLEAN_CRASH_DIR";
const ENV_SEED: &str = "SLUICE_CLEAN_CRASH_SEED";
/// Sync, no retention: every acknowledged batch must survive.
const LIVE: PartitionId = PartitionId(0);
/// Sync; the child moves its log start forward: acknowledged batches below it may go.
const TRIMMED: PartitionId = PartitionId(1);
/// Async, size retention: dies all the time.
const CHURN: PartitionId = PartitionId(2);
/// Async; deleted and re-created by the child.
const RECREATED: PartitionId = PartitionId(3);

fn store_config(dir: &str) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = 256 * 1024;
    c.flush_interval_ms = 20;
    c.checkpoint_interval_ms = 60;
    c.cq_entries_per_file = 64;
    c.retention_check_interval_ms = 40;
    c.clean_min_run_bytes = 8 * 1024;
    c
}

fn partition_config(p: PartitionId) -> PartitionConfig {
    PartitionConfig {
        flush: if p == LIVE || p == TRIMMED {
            Flush::Sync
        } else {
            Flush::Async
        },
        retention_ms: None,
        retention_bytes: (p == CHURN).then_some(64 * 1024),
        ..Default::default()
    }
}

/// A batch to die: one record of 12 KiB.
fn churn_batch(seq: u64) -> Vec<u8> {
    let val = vec![(seq % 251) as u8; 12 * 1024];
    batch_with(NONE, &[(None, &val, seq as i64)])
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The child: not a test on its own (returns at once without the env var).
#[test]
fn clean_crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let seed: u64 = std::env::var(ENV_SEED).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(Store::open(store_config(&dir)).unwrap());
    for p in [LIVE, TRIMMED, CHURN, RECREATED] {
        store.configure_partition(p, partition_config(p)).unwrap();
    }
    // Cleaner passes in a loop, on top of the background ones after each retention pass.
    {
        let store = store.clone();
        std::thread::spawn(move || {
            loop {
                store.flush().unwrap();
                let pass = store.clean().unwrap();
                if pass.bytes_punched > 0 {
                    say(format!("CLEANED {}", pass.bytes_punched));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
    // Entries of TRIMMED and RECREATED die under the appenders.
    {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut round = 0u64;
            loop {
                std::thread::sleep(Duration::from_millis(15));
                round += 1;
                let end = store.offsets(TRIMMED).unwrap().log_end;
                store.delete_records(TRIMMED, (end - 3).max(0)).unwrap();
                if round.is_multiple_of(3) {
                    store.delete_partition(RECREATED).unwrap();
                    store
                        .configure_partition(RECREATED, partition_config(RECREATED))
                        .unwrap();
                }
            }
        });
    }
    rt.block_on(async move {
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..6u64 {
            let (store, counter) = (store.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(seed * 31 + t + 1);
                loop {
                    let seq = seed * 1_000_000 + counter.fetch_add(1, Ordering::Relaxed);
                    let (p, b) = match rng.below(6) {
                        0 => (LIVE, batch_for_seq(seq)),
                        1 => (TRIMMED, batch_for_seq(seq)),
                        2 => (RECREATED, churn_batch(seq)),
                        _ => (CHURN, churn_batch(seq)),
                    };
                    match store.append(p, bm(&b)).await {
                        Ok(a) if p == LIVE || p == TRIMMED => {
                            say(format!("ACK {} {seq} {}", p.0, a.base_offset));
                        }
                        Ok(_) => {}
                        // Deleted between its re-creations.
                        Err(StorageError::UnknownPartition(_)) if p == RECREATED => {}
                        Err(e) => panic!("append to {p}: {e}"),
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn sigkill_during_cleaning_loses_nothing_live() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0xc1ea);
    let mut acked: Vec<(u32, u64, i64)> = Vec::new();
    let mut punched = 0u64;
    let started = Instant::now();
    let (max_kills, bound) = (30, Duration::from_secs(60));
    let mut kills = 0;
    while kills < max_kills && started.elapsed() < bound {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "clean_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_DIR, &dir_s)
            .env(ENV_SEED, (kills + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut acks, mut punched) = (Vec::new(), 0u64);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    ["ACK", p, seq, base] => acks.push((
                        p.parse().unwrap(),
                        seq.parse().unwrap(),
                        base.parse().unwrap(),
                    )),
                    ["CLEANED", n] => punched += n.parse::<u64>().unwrap(),
                    _ => {}
                }
            }
            (acks, punched)
        });
        std::thread::sleep(Duration::from_millis(50 + rng.below(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let (new, n) = reader.join().unwrap();
        punched += n;
        let fresh_from = acked.len();
        acked.extend(new);

        let mut verify_cfg = store_config(&dir_s);
        verify_cfg.background = false;
        let store = Store::open(verify_cfg).unwrap();
        // Killed between deleting and re-creating it.
        store
            .configure_partition(RECREATED, partition_config(RECREATED))
            .unwrap();
        let last_round = kills >= max_kills || started.elapsed() >= bound * 9 / 10;
        let sample: Vec<(u32, u64, i64)> = if last_round {
            acked.clone()
        } else {
            let mut v = acked[fresh_from..].to_vec();
            for _ in 0..200.min(fresh_from) {
                v.push(acked[rng.below(fresh_from as u64) as usize]);
            }
            v
        };
        for &(p, seq, base) in &sample {
            let p = PartitionId(p);
            let r = match store.read(p, base, 1) {
                Ok(r) => r,
                Err(StorageError::OffsetOutOfRange { log_start, .. })
                    if p == TRIMMED && base < log_start =>
                {
                    continue;
                }
                Err(e) => panic!("kill {kills}: acked {p} seq {seq} base {base}: {e}"),
            };
            let want = with_base(batch_for_seq(seq), base);
            assert_eq!(&r.chunks[0][..], &want[..], "kill {kills}: {p} seq {seq}");
            let log_start = store.offsets(p).unwrap().log_start;
            let n = 1 + (seq % 5) as i64;
            let want: Vec<i64> = (base..base + n).filter(|o| *o >= log_start).collect();
            let key = format!("s{seq}");
            let got = store.lookup_key(p, key.as_bytes()).unwrap();
            assert_eq!(got, want, "kill {kills}: lookup {key} in {p}");
        }
        if last_round || kills % 5 == 0 {
            for p in [LIVE, TRIMMED, CHURN, RECREATED] {
                read_all(&store, p);
            }
        }
        // The verifying store cleans too, so the next child starts from its paddings.
        store.enforce_retention().unwrap();
        store.flush().unwrap();
        store.clean().unwrap();
        if std::env::var("SLUICE_CRASH_VERBOSE").is_ok() {
            let live: Vec<usize> = [LIVE, TRIMMED, CHURN, RECREATED]
                .iter()
                .map(|p| read_all(&store, *p).iter().map(|b| b.len() + 16).sum())
                .collect();
            eprintln!(
                "kill {kills}: {} acked, live {live:?}, {:?}",
                acked.len(),
                store.stats()
            );
        }
    }
    assert!(kills >= 20, "only {kills} kills in the time bound");
    assert!(
        acked.len() > 100,
        "children acknowledged only {}",
        acked.len()
    );
    assert!(
        punched > 1 << 20,
        "the children's cleaner passes punched only {punched} bytes"
    );
    eprintln!(
        "{kills} kills, {} acknowledged sync appends verified, {punched} bytes punched",
        acked.len()
    );
}
