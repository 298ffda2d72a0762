//! Sluice storage engine (see `docs/storage-format.md` and `shared/DESIGN.md` §Storage).
//!
//! PUBLIC API CONTRACT (front doors and the broker code against exactly this; the
//! implementation behind it is free). Bodies are being filled in.
//!
//! - `Store::open(StoreConfig) -> Result<Store>`: opens or creates the store in `config.dir`,
//!   running recovery (torn tail truncation, consume queue / index rebuild).
//! - `Store` is `Send + Sync`; share it as `Arc<Store>`.
//! - `store.configure_partition(PartitionId, PartitionConfig)`: creates the partition if
//!   absent (idempotent) and sets its policies (flush, retention, index on/off).
//! - `store.append(PartitionId, BytesMut) -> Result<Appended>` (async): the bytes are one
//!   or more Kafka v2 record batches; CRC is verified, offsets assigned in place, written.
//!   Resolves after the write is in the page cache (`Flush::Async`) or durable (`Flush::Sync`).
//! - `store.read(PartitionId, Offset, max_bytes) -> Result<ReadResult>`: whole batches from
//!   the one holding `offset`, as `Bytes` chunks borrowed from the segment files (mmap;
//!   no copy in user space). Always returns at least one batch if one exists at or after
//!   `offset`, even if larger than `max_bytes` (Kafka semantics).
//! - `store.offsets(PartitionId) -> Result<PartitionOffsets>`: log start / end (next) offset.
//! - `store.offset_for_timestamp(PartitionId, TimestampMs) -> Result<Option<(Offset, TimestampMs)>>`
//! - `store.max_timestamp(PartitionId) -> Result<Option<(Offset, TimestampMs)>>`
//! - `store.delete_records(PartitionId, before: Offset) -> Result<Offset>` (new log start)
//! - `store.delete_partition(PartitionId) -> Result<()>`
//! - `store.subscribe_appends() -> tokio::sync::watch::Receiver<u64>`: bumps on every append
//!   (long-polling fetch waits on it instead of a timer loop).
//! - `store.lookup_key(PartitionId, key: &[u8]) -> Result<Vec<Offset>>`,
//!   `store.lookup_time_range(PartitionId, from, to) -> Result<Vec<Offset>>`
//! - `store.flush() -> Result<()>`; `store.close()` flushes and writes checkpoints.
//! - `store.truncate_to(position: u64) -> Result<()>`
//! - `store.stats() -> StoreStats` for metrics (segments, bytes on disk, fsync count/latency).
