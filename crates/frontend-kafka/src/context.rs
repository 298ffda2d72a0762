//! What every request handler gets: the broker core, the Kafka coordinators, settings,
//! and who is asking.

use std::net::SocketAddr;
use std::sync::Arc;

use broker::Broker;
use kafka_coord::KafkaCoord;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::KafkaConfig;

pub struct Ctx<'a> {
    pub broker: &'a Arc<Broker>,
    /// Kafka's groups, idempotent producers and transactions, above the core.
    pub coord: &'a Arc<KafkaCoord>,
    /// Incremental fetch sessions of this door (KIP-227).
    pub sessions: &'a crate::fetch_session::FetchSessions,
    /// Client telemetry (KIP-714) of this door.
    pub telemetry: &'a crate::telemetry::Telemetry,
    pub config: &'a KafkaConfig,
    pub client_id: &'a str,
    pub peer: SocketAddr,
    /// Flips to true when the server shuts down (long polls return early).
    pub shutdown: watch::Receiver<bool>,
    pub version: i16,
}

pub fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

pub fn topic_name(v: impl Into<String>) -> TopicName {
    TopicName(s(v))
}

pub fn uuid(id: u128) -> Uuid {
    Uuid::from_u128(id)
}
