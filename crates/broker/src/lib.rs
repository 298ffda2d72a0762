//! Sluice broker core: topics and partitions over the storage engine, committed offsets,
//! the durable metadata store, and metrics. Knows no protocol: front doors map their wire
//! types to these domain types, and a protocol's own semantics (Kafka's groups,
//! idempotent producers and transactions: the `kafka-coord` crate) sit above it and follow
//! appends through [`PartitionHooks`].
//!
//! - [`Broker`] (`broker.rs`) — the handle front doors hold; open/shutdown, extension
//!   entries for layers above, append locks. Its API is spread over `data_path.rs`
//!   (produce, fetch, offsets queries), `record_read.rs` (committed records one by one,
//!   for doors that deliver single messages), `topic_admin.rs` (topics,
//!   partitions, configs) and `offsets.rs` (committed offsets of any protocol's groups).
//! - [`queue`] — queues: shared delivery (leases, acks, redelivery) over a topic's partition
//!   with the `sluice-queues` engine, its state saved in an internal partition.
//! - [`hooks`] — [`PartitionHooks`]: checks and follow-ups of producer batches under the
//!   partition's append lock, and where committed-only readers must stop.
//! - [`BrokerConfig`] (`config.rs`) — broker-wide settings and their config keys.
//! - [`metadata`] — the metadata state machine, the [`metadata::MetadataStore`] every
//!   change goes through, its local log, and the store conformance suite.
//! - [`topic_config`] — topic config keys, validation, effective values.
//! - [`metrics`] — Prometheus families.
//! - [`batch`] — the record-batch vocabulary (Kafka v2 batches are the stored format).
//! - `log_scan.rs` — batch header walking without decoding records.

mod broker;
mod config;
mod data_path;
mod error;
pub mod hooks;
mod log_scan;
pub mod metadata;
pub mod metrics;
mod offsets;
pub mod queue;
mod record_read;
mod topic_admin;
pub mod topic_config;
mod topics;

/// The stored record format (Kafka v2 record batches), for the layers above the core:
/// headers, records, and building batches of their own.
pub mod batch {
    pub use storage::batch::{BatchHeader, HEADER_BYTES, LOG_OVERHEAD, validate_batches};
    pub use storage::batch_builder::{BatchBuilder, put_varint};
    pub use storage::records::{RecordMeta, for_each_record, records_bytes};
}

pub use broker::{Broker, HealthInfo};
pub use config::{BrokerConfig, CONFIG_KEYS};
pub use data_path::{Fetched, PendingProduce, Produced, Watermarks};
pub use error::{BrokerError, Result};
pub use hooks::{Admit, PartitionHooks, PartitionRef};
pub use log_scan::{REBUILD_SCAN_WINDOW, headers};
pub use metrics::BrokerMetrics;
pub use offsets::{CommittedOffset, PartitionOffset};
pub use queue::{QueueCounts, QueueDelivery};
pub use record_read::{AbortedRange, RecordRead, StoredRecord};
pub use topic_admin::NewTopic;
pub use topic_config::{ConfigEntry, ConfigOp, TopicConfig};
pub use topics::{MAX_TOPIC_NAME_LEN, TopicInfo, validate_topic_name};
