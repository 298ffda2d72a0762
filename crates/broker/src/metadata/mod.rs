//! Broker metadata: topics, configs, committed offsets, and the entries layers above the
//! core keep in their own namespaces (the Kafka coordinator's group generations,
//! producer-id blocks and transactions).
//!
//! - `image.rs` — the state machine: [`MetaRecord`] applied to [`MetaImage`]; pure.
//! - `store.rs` — [`MetadataStore`], the one path a change takes (record → persist →
//!   apply), and its contract.
//! - `local_log.rs` — [`LocalMetadataLog`], the single-node store: JSON lines + snapshot.
//! - `conformance.rs` — the checks any store must pass (run on the local log here; the
//!   cluster's Raft-backed store runs the same).

pub mod conformance;
mod image;
mod local_log;
mod store;

pub use image::{
    KAFKA_GROUP_NS, KAFKA_PRODUCER_IDS_NS, KAFKA_TXN_NS, LegacyGroupRecord, MetaImage, MetaRecord,
    NEXT_PRODUCER_ID_KEY, QueueRecord, SNAPSHOT_VERSION, TopicRecord,
};
pub use local_log::LocalMetadataLog;
pub use store::MetadataStore;
