//! Sluice's Kafka front door: sockets, framing and the mapping between Kafka wire types
//! (from `kafka-protocol`) and the domain APIs of the broker core and of Kafka's
//! coordinators (`kafka-coord`: groups, producer ids, transactions). Holds no business state.
//!
//! - [`serve`] (`server.rs`) — opens the coordinators over the core, then the accept loop,
//!   connection limits (total and per IP), the global in-flight request byte budget,
//!   graceful shutdown (the coordinators shut down after the last connection).
//! - `connection.rs` — one connection: frames in, responses out in request order.
//! - `framing.rs` — length-prefixed frames, size checked before allocation.
//! - `codec.rs` — request header parsing, response framing.
//! - `fetch_session.rs` — incremental fetch sessions (KIP-227), bounded, LRU eviction.
//! - `telemetry.rs` — client telemetry (KIP-714): subscriptions, pushed OTLP metrics on
//!   `/metrics`, bounded.
//! - `segmented.rs` — zero-copy Fetch encoding (storage chunks spliced, not copied).
//! - [`versions`] — the API versions implemented and advertised.
//! - `handlers/` — one module per API family; `errors.rs` maps domain errors to codes.
//! - `limits.rs` — limits shared by all connections: request byte budget, per-IP count.
//! - [`KafkaConfig`] (`config.rs`) — listener and coordinator settings and their config keys.
//!
//! See `docs/protocol-mapping.md` for the API-by-API mapping.

pub mod codec;
mod config;
mod connection;
mod context;
mod errors;
mod fetch_session;
pub mod framing;
mod handlers;
mod limits;
mod segmented;
mod server;
mod telemetry;
pub mod versions;

pub use config::{
    CONFIG_KEYS, FRAME_READ_TIMEOUT_MS, KafkaConfig, KafkaListener, MAX_CONNECTIONS_PER_IP,
    MAX_INFLIGHT_REQUEST_BYTES, MAX_PARTITIONS_PER_REQUEST,
};
pub use connection::CloseReason;
pub use framing::FrameError;
pub use server::serve;

/// This door's `protocol` label on request metrics.
pub const PROTOCOL: &str = "kafka";
