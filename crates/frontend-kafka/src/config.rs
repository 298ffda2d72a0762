//! Settings of the Kafka listener.

/// Default of [`KafkaConfig::max_inflight_request_bytes`]: 256 MiB, room for two
/// maximum-size frames and many ordinary ones.
pub const MAX_INFLIGHT_REQUEST_BYTES: usize = 256 * 1024 * 1024;
/// Default of [`KafkaConfig::frame_read_timeout_ms`].
pub const FRAME_READ_TIMEOUT_MS: u64 = 30_000;
/// Default of [`KafkaConfig::max_connections_per_ip`].
pub const MAX_CONNECTIONS_PER_IP: usize = 1_000;
/// Default of [`KafkaConfig::max_partitions_per_request`].
pub const MAX_PARTITIONS_PER_REQUEST: usize = 10_000;

/// Kafka front door settings. `Default` suits a local broker on 9092.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Host clients are told to connect to (Metadata, FindCoordinator). Must be reachable
    /// by clients: an IPv4 loopback address when listening on loopback.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`); checked
    /// before any allocation.
    pub max_frame_bytes: usize,
    /// Response bytes queued for one connection before its reads pause (backpressure).
    pub max_inflight_bytes_per_connection: usize,
    /// Responses queued per connection before its reads pause.
    pub max_inflight_responses_per_connection: usize,
    /// Request bytes in flight across all connections: a frame's size is reserved from
    /// this budget after its length is read and before its body is allocated, and given
    /// back once its response is encoded (responses then count against the per-connection
    /// budget). Producers faster than the disk wait here instead of growing memory. An
    /// eighth is kept for frames of at most 64 KiB, so light clients do not queue behind
    /// a flood of large produces. A frame larger than its share reserves the whole share
    /// (it waits for the others to finish, but cannot deadlock). Kafka:
    /// `queued.max.request.bytes`.
    pub max_inflight_request_bytes: usize,
    /// Connections accepted at once; further ones are closed right away.
    pub max_connections: usize,
    /// Connections accepted at once from one client IP address; further ones from that
    /// address are closed right away (Kafka's `max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// Partitions one Produce or Fetch request may name. The first this many are served;
    /// the rest are answered with POLICY_VIOLATION (see `handlers/limits.rs`).
    pub max_partitions_per_request: usize,
    /// A connection with no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`).
    pub idle_timeout_ms: u64,
    /// Once a frame's length is read (and its size reserved from the request budget), its
    /// body must arrive within this long, or the connection is closed: a client that
    /// announces a large frame and stalls holds that share of the budget only this long.
    pub frame_read_timeout_ms: u64,
    /// Upper bound on one Fetch response, whatever the client asks.
    pub max_fetch_response_bytes: usize,
    /// Upper bound on Fetch `max_wait_ms`.
    pub max_fetch_wait_ms: u64,
    /// How long `serve` waits for connections to finish after shutdown starts.
    pub shutdown_grace_ms: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: 9092,
            max_frame_bytes: common::limits::MAX_FRAME_BYTES,
            max_inflight_bytes_per_connection: 64 * 1024 * 1024,
            max_inflight_responses_per_connection: 64,
            max_inflight_request_bytes: MAX_INFLIGHT_REQUEST_BYTES,
            max_connections: 10_000,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            max_partitions_per_request: MAX_PARTITIONS_PER_REQUEST,
            idle_timeout_ms: 600_000,
            frame_read_timeout_ms: FRAME_READ_TIMEOUT_MS,
            max_fetch_response_bytes: 64 * 1024 * 1024,
            max_fetch_wait_ms: 30_000,
            shutdown_grace_ms: 10_000,
        }
    }
}
