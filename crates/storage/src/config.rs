//! Store-wide and per-partition configuration, and the configuration keys that set the
//! store-wide settings ([`CONFIG_KEYS`]).

use std::path::PathBuf;
use std::sync::Arc;

use common::config::{GIB, I32_MAX, KeySpec, Kind, MIB, Settings};
use common::limits;
use common::{Clock, SystemClock};

/// The default message-id header name (`StoreConfig::message_id_header`).
pub const DEFAULT_MESSAGE_ID_HEADER: &[u8] = b"msg-id";

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
    /// Name of the record header whose value is the message id (indexed for
    /// [`crate::Store::lookup_message_id`] in partitions whose index is on); `None`: ids are
    /// not indexed.
    pub message_id_header: Option<Vec<u8>>,
    /// Slots of each new hash-index file (4 bytes each; the active file's table is held in
    /// memory, once for the whole store).
    pub hash_index_slots: u32,
    /// Entries (40 bytes each) of each new hash-index file.
    pub hash_index_entries_per_file: u32,
    /// Hash-index files kept; the oldest are deleted beyond this (their records are then no
    /// longer found by key or id).
    pub hash_index_files_max: usize,
    /// How opening treats damage a crash cannot explain (see [`OpenMode`]).
    pub open_mode: OpenMode,
    /// Run the background flush/retention threads. Tests may turn this off and call
    /// [`crate::Store::flush`] / [`crate::Store::enforce_retention`] themselves.
    pub background: bool,
    /// I/O budget of one cleaner pass (run after each retention pass, `cleaner.rs`): the
    /// bytes of commit-log entries it may walk over; 0 turns the cleaner off.
    pub clean_bytes_per_pass: u64,
    /// Log compaction reads at most this many bytes per second (0: unlimited), so a pass
    /// leaves appends their share of the disk and CPU (`compaction.rs`).
    pub compaction_bytes_per_sec: u64,
    /// Smallest run of consecutive dead entries the cleaner turns into a padding entry and
    /// frees (only whole blocks inside a run are freed, and each run costs a header write).
    pub clean_min_run_bytes: u64,
}

/// Default [`StoreConfig::clean_bytes_per_pass`]: with the default 60 s retention interval,
/// at most ~4 MiB/s of background reading, and only while something died since the walk.
pub const DEFAULT_CLEAN_BYTES_PER_PASS: u64 = 256 << 20;
/// Default [`StoreConfig::clean_min_run_bytes`].
pub const DEFAULT_CLEAN_MIN_RUN_BYTES: u64 = 64 << 10;

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
            message_id_header: Some(DEFAULT_MESSAGE_ID_HEADER.to_vec()),
            hash_index_slots: 1 << 20,
            hash_index_entries_per_file: 4 << 20,
            hash_index_files_max: 32,
            background: true,
            open_mode: OpenMode::Normal,
            clean_bytes_per_pass: DEFAULT_CLEAN_BYTES_PER_PASS,
            clean_min_run_bytes: DEFAULT_CLEAN_MIN_RUN_BYTES,
            compaction_bytes_per_sec: DEFAULT_COMPACTION_BYTES_PER_SEC,
        }
    }
}

/// Default [`StoreConfig::compaction_bytes_per_sec`] (docs/benchmarks.md: appends to other
/// partitions during a pass keep most of their rate at this pace).
pub const DEFAULT_COMPACTION_BYTES_PER_SEC: u64 = 64 << 20;

/// How [`crate::Store::open`] treats damage a crash cannot explain (a truncated or missing
/// segment, a missing consume-queue file: `check.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OpenMode {
    /// Refuse to open, naming the files and the way out.
    #[default]
    Normal,
    /// Open anyway for [`crate::Store::check`], writing nothing: no tail truncation, no
    /// checkpoint. Do not append to a store opened this way.
    Check,
    /// Open anyway for [`crate::Store::repair`].
    Repair,
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
            .field("hash_index_slots", &self.hash_index_slots)
            .field(
                "hash_index_entries_per_file",
                &self.hash_index_entries_per_file,
            )
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
    /// Index records at append (decodes them: key and message-id entries in the hash index;
    /// needed by the key, id and time-range lookups). Off: appends do not decode.
    pub index: bool,
    /// Log compaction (Kafka's `cleanup.policy=compact`): keep the latest record per key
    /// (`compaction.rs`). Retention still applies when set (`compact,delete`).
    pub compaction: Option<Compaction>,
}

/// How a compacted partition is cleaned (Kafka's topic configs of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// `min.compaction.lag.ms`: records newer than this are not compacted yet.
    pub min_lag_ms: i64,
    /// `max.compaction.lag.ms`: a partition whose oldest uncompacted record is older than
    /// this is compacted whatever its dirty ratio.
    pub max_lag_ms: i64,
    /// `delete.retention.ms`: how long tombstones (null values) and transaction markers
    /// are kept after the pass that first found them removable.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`, in millionths: compact when the uncompacted share of
    /// the partition's bytes reaches it.
    pub min_dirty_ppm: u32,
}

impl Default for Compaction {
    /// Kafka's defaults.
    fn default() -> Self {
        Compaction {
            min_lag_ms: 0,
            max_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_dirty_ppm: 500_000,
        }
    }
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
            compaction: None,
        }
    }
}

/// The `config` file in a partition's directory (format in `docs/storage-format.md`):
/// written whenever `configure_partition` changes the policy, so a restart before the next
/// checkpoint keeps it.
/// The `config` file of earlier builds (no compaction settings).
pub(crate) const PARTITION_CONFIG_V1_BYTES: usize = 24;
pub(crate) const PARTITION_CONFIG_BYTES: usize = 56;

impl PartitionConfig {
    /// Version 2: the 24 bytes of version 1 (whose CRC slot is reserved now) followed by
    /// the compaction settings; a CRC over everything before it ends the file.
    pub(crate) fn encode(&self) -> [u8; PARTITION_CONFIG_BYTES] {
        let mut b = [0u8; PARTITION_CONFIG_BYTES];
        b[0] = 2; // version
        b[1] = self.flags();
        b[4..12].copy_from_slice(&self.retention_ms.unwrap_or(0).to_le_bytes());
        b[12..20].copy_from_slice(&self.retention_bytes.unwrap_or(0).to_le_bytes());
        let c = self.compaction.unwrap_or_default();
        b[24..32].copy_from_slice(&c.min_lag_ms.to_le_bytes());
        b[32..40].copy_from_slice(&c.max_lag_ms.to_le_bytes());
        b[40..48].copy_from_slice(&c.delete_retention_ms.to_le_bytes());
        b[48..52].copy_from_slice(&c.min_dirty_ppm.to_le_bytes());
        let crc = crc_fast::crc32_iscsi(&b[..52]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<PartitionConfig> {
        let i64_at = |at: usize| Some(i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let (ok, compaction) = match (b.len(), b.first()) {
            (PARTITION_CONFIG_V1_BYTES, Some(1)) => (
                crc_fast::crc32_iscsi(&b[..20]).to_le_bytes() == b[20..24],
                None,
            ),
            (PARTITION_CONFIG_BYTES, Some(2)) => (
                crc_fast::crc32_iscsi(&b[..52]).to_le_bytes() == b[52..56],
                Some(Compaction {
                    min_lag_ms: i64_at(24)?,
                    max_lag_ms: i64_at(32)?,
                    delete_retention_ms: i64_at(40)?,
                    min_dirty_ppm: u32::from_le_bytes(b[48..52].try_into().ok()?),
                }),
            ),
            _ => return None,
        };
        if !ok {
            return None;
        }
        let mut cfg = Self::from_flags(b[1], i64_at(4)?, i64_at(12)? as u64);
        if cfg.compaction.is_some() {
            cfg.compaction = compaction;
        }
        Some(cfg)
    }

    /// bit 0 flush=sync, bit 1 index, bit 2 retention_ms set, bit 3 retention_bytes set.
    pub(crate) fn flags(&self) -> u8 {
        let mut f = 0;
        if self.flush == Flush::Sync {
            f |= 1;
        }
        if self.index {
            f |= 2;
        }
        if self.retention_ms.is_some() {
            f |= 4;
        }
        if self.retention_bytes.is_some() {
            f |= 8;
        }
        if self.compaction.is_some() {
            f |= 16;
        }
        f
    }

    pub(crate) fn from_flags(f: u8, retention_ms: i64, retention_bytes: u64) -> PartitionConfig {
        PartitionConfig {
            flush: if f & 1 != 0 {
                Flush::Sync
            } else {
                Flush::Async
            },
            index: f & 2 != 0,
            retention_ms: (f & 4 != 0).then_some(retention_ms),
            retention_bytes: (f & 8 != 0).then_some(retention_bytes),
            // The flags alone carry no settings: Kafka's defaults until the `config` file
            // (or the broker) gives them.
            compaction: (f & 16 != 0).then(Compaction::default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_config_file_round_trip() {
        for cfg in [
            PartitionConfig::default(),
            PartitionConfig {
                flush: Flush::Sync,
                retention_ms: None,
                retention_bytes: Some(5),
                index: false,
                compaction: None,
            },
            PartitionConfig {
                compaction: Some(Compaction {
                    min_lag_ms: 5,
                    max_lag_ms: 6,
                    delete_retention_ms: 7,
                    min_dirty_ppm: 8,
                }),
                ..PartitionConfig::default()
            },
        ] {
            let b = cfg.encode();
            assert_eq!(PartitionConfig::decode(&b), Some(cfg));
            for i in [5, 30, 50] {
                let mut bad = b;
                bad[i] ^= 1;
                assert_eq!(PartitionConfig::decode(&bad), None, "byte {i}");
            }
        }
        // A version-1 file of an earlier build still reads.
        let mut v1 = [0u8; PARTITION_CONFIG_V1_BYTES];
        v1[0] = 1;
        v1[1] = 1 | 2 | 4;
        v1[4..12].copy_from_slice(&99i64.to_le_bytes());
        let crc = crc_fast::crc32_iscsi(&v1[..20]);
        v1[20..24].copy_from_slice(&crc.to_le_bytes());
        let cfg = PartitionConfig::decode(&v1).unwrap();
        assert_eq!(
            (cfg.flush, cfg.retention_ms, cfg.compaction),
            (Flush::Sync, Some(99), None)
        );
    }
}

/// The storage engine's configuration keys.
pub const CONFIG_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "storage.segment_bytes",
        kind: Kind::Int {
            min: MIB,
            max: 4 * GIB,
        },
        default: "1073741824",
        kafka_name: Some("log.segment.bytes"),
        doc: "Size of one commit-log segment file.",
    },
    KeySpec {
        key: "storage.flush_interval_ms",
        kind: Kind::Int {
            min: 1,
            max: 3_600_000,
        },
        default: "1000",
        kafka_name: Some("log.flush.interval.ms"),
        doc: "Background fsync interval when flush = \"async\".",
    },
    KeySpec {
        key: "storage.retention_check_interval_ms",
        kind: Kind::Int {
            min: 10,
            max: 3_600_000,
        },
        default: "60000",
        kafka_name: Some("log.retention.check.interval.ms"),
        doc: "Interval of the retention pass (time/size retention, whole-segment deletion), each followed by a cleaner pass. Checked on the background flush's cadence, so never more often than storage.flush_interval_ms.",
    },
    KeySpec {
        key: "storage.clean_bytes_per_pass",
        kind: Kind::Int {
            min: 0,
            max: 1 << 40,
        },
        default: "268435456",
        kafka_name: None,
        doc: "I/O budget of one cleaner pass: bytes of commit-log entries it may walk to free the blocks of dead entries in place (hole punching). 0 turns the cleaner off.",
    },
    KeySpec {
        key: "storage.compaction_bytes_per_sec",
        kind: Kind::Int {
            min: 0,
            max: 1 << 40,
        },
        default: "67108864",
        kafka_name: Some("log.cleaner.io.max.bytes.per.second"),
        doc: "Log compaction reads at most this many bytes per second (0: unlimited), so appends keep their share of the disk and CPU while a pass runs.",
    },
    KeySpec {
        key: "limits.max_decompressed_batch_bytes",
        kind: Kind::Int {
            min: 1024,
            max: I32_MAX,
        },
        default: "67108864",
        kafka_name: None,
        doc: "Largest decompressed size of one record batch the broker will decode (indexing, recovery); a larger one is refused.",
    },
];

impl StoreConfig {
    /// A store in `dir` with the settings [`CONFIG_KEYS`] hold; the rest at their defaults.
    pub fn from_settings(s: &dyn Settings, dir: PathBuf) -> StoreConfig {
        let mut c = StoreConfig::new(dir);
        c.segment_bytes = u64::try_from(s.int("storage.segment_bytes")).unwrap_or(c.segment_bytes);
        c.flush_interval_ms = u64::try_from(s.int("storage.flush_interval_ms")).unwrap_or(0);
        c.retention_check_interval_ms =
            u64::try_from(s.int("storage.retention_check_interval_ms")).unwrap_or(0);
        c.clean_bytes_per_pass = u64::try_from(s.int("storage.clean_bytes_per_pass")).unwrap_or(0);
        c.compaction_bytes_per_sec =
            u64::try_from(s.int("storage.compaction_bytes_per_sec")).unwrap_or(0);
        c.max_decompressed_batch_bytes =
            usize::try_from(s.int("limits.max_decompressed_batch_bytes")).unwrap_or(usize::MAX);
        c
    }
}

#[cfg(test)]
mod config_key_tests {
    use super::*;
    use common::config::Defaults;

    /// One default per setting: the keys' built-in defaults are `StoreConfig::new`'s.
    #[test]
    fn key_defaults_are_the_struct_defaults() {
        let d = StoreConfig::new(PathBuf::from("x"));
        let k = StoreConfig::from_settings(&Defaults(CONFIG_KEYS), PathBuf::from("x"));
        assert_eq!(k.segment_bytes, d.segment_bytes);
        assert_eq!(k.flush_interval_ms, d.flush_interval_ms);
        assert_eq!(k.retention_check_interval_ms, d.retention_check_interval_ms);
        assert_eq!(k.clean_bytes_per_pass, d.clean_bytes_per_pass);
        assert_eq!(k.compaction_bytes_per_sec, d.compaction_bytes_per_sec);
        assert_eq!(
            k.max_decompressed_batch_bytes,
            d.max_decompressed_batch_bytes
        );
    }
}
