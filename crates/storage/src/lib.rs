//! Sluice storage engine: one commit log shared by every partition, a consume queue per
//! partition, a key/time index, group commit, crash recovery and retention. The byte-level
//! formats are in `docs/storage-format.md`; the shape is `shared/DESIGN.md` §Storage.
//!
//! Reading order:
//! - [`Store`] (`store.rs`): the public API. `append` validates Kafka v2 batches
//!   (`batch.rs`), assigns offsets in place, writes them to the commit log
//!   (`commit_log.rs` over `segment.rs` files, each batch behind an `entry.rs` header), and
//!   records a fixed-size slot in the partition's consume queue (`consume_queue.rs`,
//!   `partition.rs`) and, if the partition's index is on, per-record key / message-id
//!   entries in the store-wide hash index (`hash_index.rs`, records decoded by `records.rs` +
//!   `compression.rs`; an index-writer thread writes its tail). `read` finds the slot by
//!   binary search and returns zero-copy views of the mmap'd segment, checking CRCs (a
//!   batch's once per process: see `Segment::mark_verified`); a queue slot failing its CRC
//!   is rebuilt from the commit log.
//! - Lookups (`lookup.rs`): by key and message id through the hash index, confirmed by
//!   decoding; by time range through the consume queue.
//! - Durability (`flush.rs`): `Flush::Sync` appends wait for a group-committed fdatasync;
//!   a background thread flushes the rest, writes queue files back and checkpoints
//!   (`checkpoint.rs`).
//! - Opening (`recovery.rs`): checkpoint + replay of the commit-log tail; torn tails are
//!   truncated, nothing failing a CRC is served.
//! - Retention (`retention.rs`), the cleaner that frees dead entries inside segments
//!   retention must keep (`cleaner.rs`), and `truncate_to` (`truncate.rs`).
//!
//! Invariants worth knowing before changing anything:
//! - a partition's consume-queue slots are in offset order *and* in commit-log position
//!   order; offsets are dense (each slot starts where the previous ends);
//! - everything below the checkpoint's position is reflected in durable queue files;
//!   everything above is rebuilt from the commit log on open;
//! - nothing past the commit log's write position can look like a valid entry (failed
//!   writes and truncations are zeroed), so a scan never resurrects dead bytes;
//! - below the last durable checkpoint the commit log may hold padding entries (`entry.rs`)
//!   over runs of dead entries whose blocks the cleaner freed: every scan by headers skips
//!   them by length, and no consume-queue slot points at one (slots hold live entries only,
//!   and only entries dead by the *durable* checkpoint are ever covered).
//!
//! Semantics callers rely on (front doors: read this):
//! - `append` validates every batch before writing anything; one bad batch refuses the
//!   whole call and nothing is written. Framing, magic 2, CRC32C and codec (`batch.rs`),
//!   then the records against the header (`records::check_batch`): the records are decoded
//!   (decompressed up to `max_decompressed_batch_bytes`) and must number `recordCount`
//!   (at least one), with offset deltas 0, 1, … and `lastOffsetDelta = recordCount - 1`,
//!   each record exactly its declared length, nothing after the last, and a CreateTime
//!   `maxTimestamp` no older than any record. Nothing is allocated from a claimed count.
//!   With the index on, the same decoding yields the index keys. Who may write what
//!   (control batches, producer fields) is the broker's rule, not storage's.
//! - An append is readable as soon as it returns, for `Flush::Sync` too (before its fsync
//!   completes, like Kafka serving unflushed data); a `Sync` append *returns* only once
//!   durable. `DiskFull` (ENOSPC/EDQUOT) leaves the store consistent and appends work again
//!   when space is freed. After a failed fdatasync appends are refused until reopen.
//! - `read` returns whole batches as `Bytes` over the segment mmap (no copy); they stay
//!   valid after retention deletes the file. A batch failing its CRCs is never returned: the
//!   read stops before it, or fails with `CorruptData` if it is the first. The batch CRC is
//!   checked before an append writes it and, for bytes from before the store was opened,
//!   when read (each segment remembers the prefix already checked); the entry header CRC
//!   on every read.
//! - Offsets are dense per partition; `log_start` may fall inside a batch (after
//!   `delete_records`), reads then start with that whole batch, as Kafka does.
//! - `offset_for_timestamp` and `max_timestamp` return record offsets (the batch is decoded).
//!   `lookup_key` / `lookup_keys` / `lookup_message_id` cost O(index files + hash chain +
//!   matches) and are confirmed by decoding (a collision or a deleted, expired or truncated
//!   record is never returned); `lookup_time_range` binary-searches the consume queue and
//!   decodes only the matching region (exact while timestamp disorder stays within a batch
//!   and its neighbours, see `docs/storage-format.md`). All are empty for partitions whose index is off. A
//!   message's id is the value of its `StoreConfig::message_id_header` header (default
//!   `msg-id`), and it is always addressable by (partition, offset).
//! - Time retention is enforced at read time; segments are deleted by the retention pass
//!   once no partition has a live entry in them. A segment another partition still needs
//!   keeps its length, but the cleaner pass after each retention pass (or `clean`) frees
//!   the whole 4 KiB blocks of its dead entries (deleted partitions, offsets below a log
//!   start) in runs of at least `clean_min_run_bytes`, once a checkpoint records them dead:
//!   disk use follows live data, up to a block or two per live batch between dead runs
//!   and the active segment (`docs/storage-format.md` §Cleaner).
//!
//! Scale: no file descriptor or memory per idle partition beyond its ~250-byte state; queue
//! files are opened through a bounded LRU (`file_cache.rs`, `fixed_files.rs`); the hash
//! index is store-wide (one in-memory slot table, one fd per kept file).

pub mod batch;
pub mod batch_builder;
mod check;
mod checkpoint;
mod cleaner;
mod commit_log;
mod compaction;
mod compression;
mod config;
mod consume_queue;
mod damage;
mod entry;
mod error;
mod file_cache;
mod fixed_files;
mod flush;
mod hash_index;
mod lookup;
mod partition;
pub mod records;
mod recovery;
mod retention;
mod segment;
mod store;
mod truncate;

pub use check::CheckReport;
pub use cleaner::CleanPass;
pub use compaction::CompactPass;
pub use config::{
    CONFIG_KEYS, Compaction, DEFAULT_CLEAN_BYTES_PER_PASS, DEFAULT_CLEAN_MIN_RUN_BYTES,
    DEFAULT_COMPACTION_BYTES_PER_SEC, DEFAULT_MESSAGE_ID_HEADER, DEFAULT_RETENTION_MS, Flush,
    OpenMode, PartitionConfig, StoreConfig,
};
pub use damage::{DamagedBatch, Finding};
/// The header of a padding entry of a given span (for the fuzz targets; format in
/// `docs/storage-format.md` §Commit log).
#[doc(hidden)]
pub use entry::encode_padding as padding_entry_header;
pub use error::{Result, StorageError};
pub use store::{Appended, PartitionOffsets, PendingAppend, ReadResult, Store, StoreStats};

pub use common::{Offset, PartitionId, TimestampMs};
