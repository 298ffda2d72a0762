//! Store-wide and per-partition configuration.

use std::path::PathBuf;
use std::sync::Arc;

use common::limits;
use common::{Clock, SystemClock};

/// Store-wide settings. Build with [`StoreConfig::new`] and adjust fields.
#[derive(Clone)]
pub struct StoreConfig {
    /// Directory holding every file of the store (created if absent).
    pub dir: PathBuf,
    /// Size of one commit-log segment file. Changing it for an existing store only affects
    /// new segments (each segment's size is its file length).
    pub segment_bytes: u64,
    /// Interval of the background flush: fdatasync of the commit log for `Flush::Async`
    /// partitions, consume-queue/index write-back and checkpoint.
    pub flush_interval_ms: u64,
    /// Cap on the decompressed size of one batch when the index decodes it.
    pub max_decompressed_batch_bytes: usize,
    /// Interval between checkpoints (consume queues/indexes made durable, replay start
    /// advanced). Bounds the commit-log tail replayed after a crash.
    pub checkpoint_interval_ms: u64,
    /// Entries per consume-queue file (each entry is 40 bytes).
    pub cq_entries_per_file: u64,
    /// Consume-queue / index files kept open at once (LRU); bounds fds however many
    /// partitions exist.
    pub max_open_files: usize,
    /// Interval of the retention pass (time/size retention, segment deletion).
    pub retention_check_interval_ms: u64,
    /// Clock for retention decisions (tests inject a `ManualClock`).
    pub clock: Arc<dyn Clock>,
    /// Run the background flush/retention threads. Tests may turn this off and call
    /// [`crate::Store::flush`] / [`crate::Store::enforce_retention`] themselves.
    pub background: bool,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            segment_bytes: limits::SEGMENT_BYTES,
            flush_interval_ms: limits::FLUSH_INTERVAL_MS,
            max_decompressed_batch_bytes: limits::MAX_DECOMPRESSED_BATCH_BYTES,
            checkpoint_interval_ms: 10_000,
            cq_entries_per_file: 256 * 1024,
            max_open_files: 256,
            retention_check_interval_ms: 60_000,
            clock: Arc::new(SystemClock),
            background: true,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("dir", &self.dir)
            .field("segment_bytes", &self.segment_bytes)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field(
                "max_decompressed_batch_bytes",
                &self.max_decompressed_batch_bytes,
            )
            .field("cq_entries_per_file", &self.cq_entries_per_file)
            .field("max_open_files", &self.max_open_files)
            .finish_non_exhaustive()
    }
}

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Flush {
    /// In the page cache; the background flush makes it durable within `flush_interval_ms`.
    #[default]
    Async,
    /// After an fdatasync covering it (group commit).
    Sync,
}

/// Per-partition policy (set by the broker from topic configs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionConfig {
    pub flush: Flush,
    /// Entries whose max timestamp is older than this are dropped (and not served).
    pub retention_ms: Option<i64>,
    /// Oldest batches are dropped while the partition holds more than this.
    pub retention_bytes: Option<u64>,
    /// Build the key/time index at append (decodes records). Off: appends do not decode.
    pub index: bool,
}

/// Kafka's default `retention.ms`: 7 days.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig {
            flush: Flush::Async,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            index: true,
        }
    }
}
