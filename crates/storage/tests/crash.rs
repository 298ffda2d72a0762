//! Crash tests: a child process (this test binary re-executed) appends with `Flush::Sync` and
//! prints each acknowledgement; the parent SIGKILLs it at random moments, reopens the store
//! and checks every acknowledged batch is present, byte for byte, with dense offsets, and
//! found by its key through the hash index (rebuilt from the commit-log tail on open).
mod kit;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kit::*;
use sluice_storage::{Flush, PartitionConfig, PartitionId, StorageError, Store, StoreConfig};

const ENV_DIR: &str = "SLUICE_CRASH_CHILD_DIR";
const ENV_SEED: &str = "SLUICE_CRASH_CHILD_SEED";
const ENV_RETENTION: &str = "SLUICE_CRASH_CHILD_RETENTION";
const PARTITIONS: u32 = 4; // 0..3 sync, 3 async

fn store_config(dir: &str) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.segment_bytes = 128 * 1024;
    c.flush_interval_ms = 20;
    c.checkpoint_interval_ms = 60;
    c.cq_entries_per_file = 64;
    c.retention_check_interval_ms = 40;
    c
}

/// The child: not a test on its own (returns at once without the env var).
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let seed: u64 = std::env::var(ENV_SEED).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let retention = std::env::var(ENV_RETENTION).is_ok();
    rt.block_on(async move {
        let store = Arc::new(Store::open(store_config(&dir)).unwrap());
        for p in 0..PARTITIONS {
            let flush = if p < 3 { Flush::Sync } else { Flush::Async };
            let cfg = PartitionConfig {
                flush,
                retention_ms: None,
                // With retention, whole segments are deleted while the child runs and dies.
                retention_bytes: retention.then_some(if p < 3 { 384 * 1024 } else { 32 * 1024 }),
                ..Default::default()
            };
            store.configure_partition(PartitionId(p), cfg).unwrap();
        }
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let (store, counter) = (store.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng(seed * 31 + t + 1);
                loop {
                    let seq = seed * 1_000_000 + counter.fetch_add(1, Ordering::Relaxed);
                    let p = rng.below(PARTITIONS as u64) as u32;
                    let a = store
                        .append(PartitionId(p), bm(&batch_for_seq(seq)))
                        .await
                        .unwrap();
                    if p < 3 {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {p} {seq} {}", a.base_offset).unwrap();
                        out.flush().unwrap();
                    }
                }
            }));
        }
        // The tasks loop until the parent kills this process.
        futures_join(tasks).await;
    });
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_sync_append() {
    crash_loop(false, 60, Duration::from_secs(100));
}

/// Same, while size retention deletes whole segments under the appenders: an acknowledged
/// append is either intact or below its partition's log start, never damaged or half-gone.
#[test]
fn sigkill_during_retention_keeps_the_log_consistent() {
    crash_loop(true, 25, Duration::from_secs(60));
}

fn crash_loop(retention: bool, max_kills: u32, bound: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5eed);
    let mut acked: Vec<(u32, u64, i64)> = Vec::new();
    let started = Instant::now();
    let mut kills = 0;
    while kills < max_kills && started.elapsed() < bound {
        let mut cmd = Command::new(&exe);
        if retention {
            cmd.env(ENV_RETENTION, "1");
        }
        let mut child = cmd
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(ENV_DIR, &dir_s)
            .env(ENV_SEED, (kills + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() == 4 && f[0] == "ACK" {
                    acks.push((
                        f[1].parse().unwrap(),
                        f[2].parse().unwrap(),
                        f[3].parse().unwrap(),
                    ));
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let new = reader.join().unwrap();
        let fresh_from = acked.len();
        acked.extend(new);

        let t_open = Instant::now();
        // The verifying store runs no background thread: with them, its first retention
        // pass (40 ms after open) could advance a log start between `offsets` and
        // `lookup_key` below, and a batch just read intact would then (rightly) not be found.
        // Its retention runs once the checks are done instead.
        let mut verify_cfg = store_config(&dir_s);
        verify_cfg.background = false;
        let store = Store::open(verify_cfg).unwrap();
        let open_ms = t_open.elapsed().as_millis();
        let t_verify = Instant::now();
        // Every acknowledgement of this round, plus a sample of older ones (all of them are
        // checked on the last round).
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
            let r = match store.read(PartitionId(p), base, 1) {
                Ok(r) => r,
                // Size retention may legitimately have dropped it.
                Err(StorageError::OffsetOutOfRange { log_start, .. })
                    if retention && base < log_start =>
                {
                    continue;
                }
                Err(e) => panic!("kill {kills}: acked p{p} seq {seq} base {base}: {e}"),
            };
            let want = with_base(batch_for_seq(seq), base);
            assert_eq!(&r.chunks[0][..], &want[..], "kill {kills}: p{p} seq {seq}");
            // Every record of batch `seq` has key `s{seq}`.
            let log_start = store.offsets(PartitionId(p)).unwrap().log_start;
            let n = 1 + (seq % 5) as i64;
            let want: Vec<i64> = (base..base + n).filter(|o| *o >= log_start).collect();
            let key = format!("s{seq}");
            let got = store.lookup_key(PartitionId(p), key.as_bytes()).unwrap();
            assert_eq!(got, want, "kill {kills}: lookup {key} in p{p}");
        }
        if last_round || kills % 10 == 0 {
            for p in 0..PARTITIONS {
                read_all(&store, PartitionId(p));
            }
        }
        // Retention in the verifying store too, as before, so the next child opens a store
        // whose log starts were moved by its predecessor.
        store.enforce_retention().unwrap();
        if std::env::var("SLUICE_CRASH_VERBOSE").is_ok() {
            eprintln!(
                "kill {kills}: open {open_ms} ms, verify {} ms, {} acked, {:?}",
                t_verify.elapsed().as_millis(),
                acked.len(),
                store.stats()
            );
        }
    }
    assert!(
        kills >= max_kills.min(50) * 4 / 5,
        "only {kills} kills in the time bound"
    );
    assert!(
        acked.len() > 100,
        "children acknowledged only {}",
        acked.len()
    );
    eprintln!(
        "{kills} kills, {} acknowledged sync appends verified",
        acked.len()
    );
}
