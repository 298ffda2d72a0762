//! Sluice broker core: topics and partitions over the storage engine, classic consumer
//! groups and committed offsets, the durable metadata image, and metrics. Speaks domain
//! types only; front doors (Kafka, AMQP, MQTT) map their wire types to these.
//!
//! - [`Broker`] (`broker.rs`) — the handle front doors hold; open/shutdown, producer ids.
//!   Its API is spread over `data_path.rs` (produce, fetch, offsets), `topic_admin.rs`
//!   (topics, partitions, configs) and `groups.rs` (group coordination, offsets).
//! - [`BrokerConfig`] (`config.rs`) — broker-wide settings.
//! - [`group`] — the group coordinator state machine (clock-free, unit tested).
//! - `metadata_log.rs` — topics, configs, offsets persisted as JSON records + snapshot.
//! - [`topic_config`] — topic config keys, validation, effective values.
//! - [`metrics`] — Prometheus families.
//! - [`producer_state`] — idempotent producers: sequence checks, retries, snapshot + rebuild.
//! - `batch_walk.rs` — record batch header walking (sizes, counts) without decoding.
//! - [`txn`] — transactions: coordinator, last stable offset, markers, read_committed.

mod batch_walk;
mod broker;
mod config;
mod data_path;
mod error;
pub mod group;
mod groups;
mod log_scan;
pub mod metadata;
pub mod metrics;
pub mod producer_state;
mod topic_admin;
pub mod topic_config;
mod topics;
pub mod txn;

pub use broker::{Broker, GROUP_TICK_MS, HealthInfo};
pub use config::{BrokerConfig, CONFIG_KEYS};
pub use data_path::{Fetched, PendingProduce, Produced, Watermarks};
pub use error::{BrokerError, Result};
pub use groups::OffsetToCommit;
pub use metrics::BrokerMetrics;
pub use topic_admin::NewTopic;
pub use topic_config::{ConfigEntry, ConfigOp, TopicConfig};
pub use topics::{MAX_TOPIC_NAME_LEN, TopicInfo, validate_topic_name};
