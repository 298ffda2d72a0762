//! Durability: group commit for `Flush::Sync` appends, and the background flush for the rest.
//!
//! Group commit: a sync append writes, then registers `(end position, waker)` and waits. One
//! syncer thread loops: take every waiter registered so far, fdatasync the dirty segments
//! (the writer lock is *not* held during the fsync, so appends keep arriving), then wake them
//! all. Appends arriving during an fsync are covered by the next one. One fdatasync thus
//! covers every append that arrived while the previous one ran.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::error::{Result, StorageError};
use crate::store::Inner;

type Waiter = (u64, oneshot::Sender<Result<(), String>>);

/// The periodic flush writes a partition's queue entries back once it has this many (about
/// a page); smaller tails wait for the checkpoint. With 10,000 partitions appended
/// round-robin, writing every partition's two entries each second would cost 10,000 file
/// opens per second for nothing; the checkpoint interval bounds how long they wait.
const WRITE_BACK_MIN_ENTRIES: usize = 100;

#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<GroupState>,
    cv: Condvar,
    /// Test hook: extra time each group commit takes before its fdatasync (milliseconds).
    pub(crate) inject_delay_ms: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct GroupState {
    waiters: Vec<Waiter>,
    shutdown: bool,
}

impl GroupCommit {
    /// Registers a waiter for durability of everything below `end`.
    pub fn register(&self, end: u64) -> Result<oneshot::Receiver<Result<(), String>>> {
        let (tx, rx) = oneshot::channel();
        let mut g = self.state.lock();
        if g.shutdown {
            return Err(StorageError::Closed);
        }
        g.waiters.push((end, tx));
        self.cv.notify_one();
        Ok(rx)
    }

    pub fn shutdown(&self) {
        self.state.lock().shutdown = true;
        self.cv.notify_all();
    }

    /// The syncer thread body.
    pub fn run(&self, inner: &Inner) {
        loop {
            let batch = {
                let mut g = self.state.lock();
                while g.waiters.is_empty() && !g.shutdown {
                    self.cv.wait(&mut g);
                }
                if g.waiters.is_empty() && g.shutdown {
                    return;
                }
                std::mem::take(&mut g.waiters)
            };
            let delay = self.inject_delay_ms.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            let r = inner.sync_log();
            for (end, tx) in batch {
                let res = match &r {
                    Ok(synced) if *synced >= end => Ok(()),
                    Ok(synced) => Err(format!("synced to {synced}, needed {end}")),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(res);
            }
        }
    }
}

/// Stop signal for the background threads.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    pub fn stop(&self) {
        *self.stopped.lock() = true;
        self.cv.notify_all();
    }
    /// Sleeps up to `d`; true if stopped.
    pub fn wait(&self, d: Duration) -> bool {
        let mut g = self.stopped.lock();
        if !*g {
            self.cv.wait_for(&mut g, d);
        }
        *g
    }
}

/// Background flush/checkpoint/retention loop.
pub fn background(inner: Arc<Inner>, stop: Arc<Stop>) {
    let flush_every = Duration::from_millis(inner.cfg.flush_interval_ms.max(1));
    let ckpt_every = Duration::from_millis(inner.cfg.checkpoint_interval_ms.max(1));
    let retention_every = Duration::from_millis(inner.cfg.retention_check_interval_ms.max(1));
    let mut last_ckpt = Instant::now();
    let mut last_retention = Instant::now();
    while !stop.wait(flush_every) {
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let r = (|| -> Result<()> {
            inner.sync_log()?;
            inner.write_back(WRITE_BACK_MIN_ENTRIES)?;
            inner.hindex.write_tail()?;
            if last_ckpt.elapsed() >= ckpt_every {
                last_ckpt = Instant::now();
                inner.checkpoint_if_changed()?;
            }
            if last_retention.elapsed() >= retention_every {
                last_retention = Instant::now();
                inner.enforce_retention()?;
                inner.clean()?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            tracing::warn!(error = %e, "background flush failed; will retry");
        }
    }
}

impl Inner {
    /// fdatasync whatever of the commit log is dirty (and the queues directory, so that new
    /// partitions survive power loss); returns the durable position.
    pub fn sync_log(&self) -> Result<u64> {
        let t = Instant::now();
        if self.queues_dir_dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = crate::commit_log::sync_dir(&self.files.root)
        {
            self.queues_dir_dirty.store(true, Ordering::Release);
            return Err(e);
        }
        let (pos, fsyncs) = self.log.sync_counted()?;
        if fsyncs > 0 {
            self.fsync_count.fetch_add(fsyncs as u64, Ordering::Relaxed);
            self.fsync_micros
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Ok(pos)
    }

    /// Writes in-memory consume-queue/index entries to their files (page cache only;
    /// [`Inner::checkpoint`] makes them durable) for every partition holding at least
    /// `min_entries` of them (0: every partition with any).
    pub fn write_back(&self, min_entries: usize) -> Result<()> {
        let parts: Vec<_> = self
            .parts
            .read()
            .iter()
            .filter(|(_, p)| {
                let g = p.lock();
                let n = g.cq_pending.len();
                n > 0 && n >= min_entries
            })
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        let mut touched = HashSet::new();
        for (id, p) in parts {
            match self.files.write_back(id, &p) {
                Ok(t) => touched.extend(t),
                // Deleted while we were writing: its files are gone on purpose.
                Err(_) if p.lock().deleted => {}
                Err(e) => return Err(e),
            }
        }
        self.unsynced_files.lock().extend(touched);
        Ok(())
    }

    /// Makes written-back queue files durable: fdatasync each when few, one `syncfs` when
    /// many (10,000 active partitions would otherwise cost 10,000 fsyncs).
    pub fn finish_queue_sync(&self) -> Result<()> {
        let files: Vec<PathBuf> = self.unsynced_files.lock().drain().collect();
        if files.len() > 64 {
            let root = std::fs::File::open(&self.files.root)
                .map_err(|e| StorageError::io("opening", &self.files.root, e))?;
            if let Err(e) = rustix::fs::syncfs(&root) {
                return Err(StorageError::io("syncfs", &self.files.root, e.into()));
            }
            return Ok(());
        }
        let mut dirs = HashSet::new();
        for path in files {
            if let Some(f) = self.files.cache.get(&path, false)? {
                f.sync_data()
                    .map_err(|e| StorageError::io("fdatasync", &path, e))?;
            }
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in dirs {
            match crate::commit_log::sync_dir(&d) {
                // The partition was deleted since its files were written: nothing to keep.
                Err(StorageError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// Writes a checkpoint: a consistent cut of every partition's state at the current
    /// commit-log end, after the log up to there and all queue files are durable.
    pub fn checkpoint(&self, clean: bool) -> Result<()> {
        self.checkpoint_if(clean, true)
    }

    /// A checkpoint only if something changed since the last one (the periodic one: with
    /// 100,000 partitions a checkpoint is ~10 MB).
    pub fn checkpoint_if_changed(&self) -> Result<()> {
        self.checkpoint_if(false, false)
    }

    fn checkpoint_if(&self, clean: bool, always: bool) -> Result<()> {
        let _one_at_a_time = self.ckpt_lock.lock();
        let version = self.state_version.load(Ordering::Acquire);
        let cut = {
            let w = self.log.lock_writer();
            if !always && *self.last_checkpoint.lock() == Some((w.pos, version)) {
                return Ok(());
            }
            self.cut(w.pos)
        };
        let position = cut.position;
        self.finish_checkpoint(cut, clean)?;
        *self.last_checkpoint.lock() = Some((position, version));
        Ok(())
    }

    /// The cut: partition records as of commit-log position `pos` (caller holds the writer
    /// lock, so no append is in flight).
    pub fn cut(&self, pos: u64) -> crate::checkpoint::Checkpoint {
        let parts = self.parts.read();
        let mut partitions: Vec<_> = parts
            .iter()
            .map(|(id, p)| crate::checkpoint::PartitionRecord::of(*id, &p.lock()))
            .collect();
        partitions.sort_by_key(|r| r.id);
        crate::checkpoint::Checkpoint {
            clean: false,
            position: pos,
            partitions,
        }
    }

    pub fn finish_checkpoint(
        &self,
        mut cut: crate::checkpoint::Checkpoint,
        clean: bool,
    ) -> Result<()> {
        let synced = self.sync_log()?;
        debug_assert!(synced >= cut.position);
        self.write_back(0)?;
        self.finish_queue_sync()?;
        self.hindex.sync()?;
        cut.clean = clean;
        cut.write(&self.cfg.dir)?;
        self.cleaner.record_checkpoint(&cut);
        Ok(())
    }
}
