//! Named defaults for every limit the broker enforces. Each is overridable by configuration;
//! these are the built-in values `sluice server` uses with no config file.

/// Largest Kafka request frame accepted (Kafka's `socket.request.max.bytes`).
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;
/// Largest record batch accepted by produce (Kafka's `message.max.bytes`).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024 + 12;
/// Cap on the decompressed size of one batch when the index decodes it.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 * 1024 * 1024;
/// Default commit-log segment size.
pub const SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// Default interval of the background flush for `flush = async` topics.
pub const FLUSH_INTERVAL_MS: u64 = 1000;
