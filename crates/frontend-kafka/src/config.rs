//! Settings of the Kafka listener, and the configuration keys that set them
//! ([`CONFIG_KEYS`], gathered by the server with every other crate's).

use common::config::{I32_MAX, KeySpec, Kind, MIB, Settings};

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
    /// Incremental fetch sessions kept at once (Kafka's
    /// `max.incremental.fetch.session.cache.slots`); the least recently used makes room.
    pub max_fetch_sessions: usize,
    /// How often clients push their metrics (KIP-714 telemetry).
    pub telemetry_push_interval_ms: u64,
    /// Kafka's coordinators (groups, producer ids).
    pub coordinator: kafka_coord::CoordConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: 9092,
            max_frame_bytes: common::limits::MAX_FRAME_BYTES,
            max_inflight_bytes_per_connection: 64 * 1024 * 1024,
            // What `sluice server` has always run with (the key `limits.max_in_flight_requests_per_connection`).
            max_inflight_responses_per_connection: 16,
            max_inflight_request_bytes: MAX_INFLIGHT_REQUEST_BYTES,
            max_connections: 10_000,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            max_partitions_per_request: MAX_PARTITIONS_PER_REQUEST,
            idle_timeout_ms: 600_000,
            frame_read_timeout_ms: FRAME_READ_TIMEOUT_MS,
            max_fetch_response_bytes: 64 * 1024 * 1024,
            max_fetch_wait_ms: 30_000,
            shutdown_grace_ms: 10_000,
            max_fetch_sessions: 1_000,
            telemetry_push_interval_ms: 30_000,
            coordinator: kafka_coord::CoordConfig::default(),
        }
    }
}

/// The Kafka door's configuration keys (`kafka.*` listener keys and its `limits.*`).
pub const CONFIG_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "kafka.listener",
        kind: Kind::Addr,
        default: "\"0.0.0.0:9092\"",
        kafka_name: None,
        doc: "Address the Kafka protocol listener binds to.",
    },
    KeySpec {
        key: "kafka.advertised_host",
        kind: Kind::Str,
        default: "\"\"",
        kafka_name: Some("advertised.host.name"),
        doc: "Host given to clients in metadata. Empty: the listener's host, or 127.0.0.1 when that is 0.0.0.0/::.",
    },
    KeySpec {
        key: "kafka.advertised_port",
        kind: Kind::Int { min: 0, max: 65535 },
        default: "0",
        kafka_name: Some("advertised.port"),
        doc: "Port given to clients in metadata. 0: the listener's (bound) port.",
    },
    KeySpec {
        key: "kafka.idle_timeout_ms",
        kind: Kind::Int {
            min: 1000,
            max: i32::MAX as i64,
        },
        default: "600000",
        kafka_name: Some("connections.max.idle.ms"),
        doc: "Close a client connection idle for this long.",
    },
    KeySpec {
        key: "kafka.frame_read_timeout_ms",
        kind: Kind::Int {
            min: 100,
            max: i32::MAX as i64,
        },
        default: "30000",
        kafka_name: None,
        doc: "Once a request's length has arrived, close the connection if the rest does not arrive within this long.",
    },
    KeySpec {
        key: "limits.max_frame_bytes",
        kind: Kind::Int {
            min: 1024,
            max: I32_MAX,
        },
        default: "104857600",
        kafka_name: Some("socket.request.max.bytes"),
        doc: "Largest request frame accepted; a larger one closes the connection.",
    },
    KeySpec {
        key: "limits.max_connections",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "10000",
        kafka_name: Some("max.connections"),
        doc: "Most client connections served at once; further ones are refused.",
    },
    KeySpec {
        key: "limits.max_connections_per_ip",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "1000",
        kafka_name: Some("max.connections.per.ip"),
        doc: "Most connections served at once from one client IP address; further ones from it are refused (logged).",
    },
    KeySpec {
        key: "limits.max_inflight_request_bytes",
        kind: Kind::Int {
            min: MIB,
            max: I32_MAX,
        },
        default: "268435456",
        kafka_name: Some("queued.max.request.bytes"),
        doc: "Request bytes read and being handled across all connections; when used up, reads wait (backpressure on producers faster than the disk).",
    },
    KeySpec {
        key: "limits.max_partitions_per_request",
        kind: Kind::Int {
            min: 1,
            max: 10_000_000,
        },
        default: "10000",
        kafka_name: None,
        doc: "Partitions served per Produce or Fetch request; the rest get POLICY_VIOLATION.",
    },
    KeySpec {
        key: "limits.max_in_flight_requests_per_connection",
        kind: Kind::Int { min: 1, max: 1024 },
        default: "16",
        kafka_name: Some("queued.max.requests"),
        doc: "Requests read ahead on one connection before backpressure.",
    },
    KeySpec {
        key: "limits.max_inflight_bytes_per_connection",
        kind: Kind::Int {
            min: 1024,
            max: I32_MAX,
        },
        default: "67108864",
        kafka_name: None,
        doc: "Response bytes queued for one connection before its reads pause (backpressure).",
    },
    KeySpec {
        key: "limits.max_fetch_response_bytes",
        kind: Kind::Int {
            min: 1024,
            max: I32_MAX,
        },
        default: "67108864",
        kafka_name: Some("fetch.max.bytes"),
        doc: "Upper bound on one Fetch response, whatever the client asks.",
    },
    KeySpec {
        key: "limits.max_fetch_wait_ms",
        kind: Kind::Int {
            min: 0,
            max: 300_000,
        },
        default: "30000",
        kafka_name: None,
        doc: "Upper bound on how long a Fetch may wait for data.",
    },
    KeySpec {
        key: "limits.max_fetch_sessions",
        kind: Kind::Int {
            min: 0,
            max: 1_000_000,
        },
        default: "1000",
        kafka_name: Some("max.incremental.fetch.session.cache.slots"),
        doc: "Incremental fetch sessions (KIP-227) kept at once; the least recently used makes room. 0: every fetch is sessionless.",
    },
    KeySpec {
        key: "kafka.telemetry_push_interval_ms",
        kind: Kind::Int {
            min: 100,
            max: 3_600_000,
        },
        default: "30000",
        kafka_name: None,
        doc: "How often Kafka clients that support KIP-714 push their metrics; /metrics shows each client's latest values (sluice_kafka_client_metric).",
    },
];

/// Where the Kafka door listens and what it tells clients (`kafka.listener`,
/// `kafka.advertised_host`, `kafka.advertised_port`).
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaListener {
    pub listener: String,
    /// `None`: the bound host (loopback for a wildcard listener).
    pub advertised_host: Option<String>,
    /// `None`: the bound port.
    pub advertised_port: Option<u16>,
}

impl KafkaListener {
    pub fn from_settings(s: &dyn Settings) -> KafkaListener {
        KafkaListener {
            listener: s.str("kafka.listener"),
            advertised_host: Some(s.str("kafka.advertised_host")).filter(|h| !h.is_empty()),
            advertised_port: match s.int("kafka.advertised_port") {
                0 => None,
                p => u16::try_from(p).ok(),
            },
        }
    }
}

impl KafkaConfig {
    /// The settings [`CONFIG_KEYS`] hold; the advertised address and shutdown grace are
    /// left at their defaults (the server fills them once the listener is bound).
    pub fn from_settings(s: &dyn Settings) -> KafkaConfig {
        let size = |k: &str| usize::try_from(s.int(k)).unwrap_or(usize::MAX);
        let ms = |k: &str| u64::try_from(s.int(k)).unwrap_or(0);
        KafkaConfig {
            max_frame_bytes: size("limits.max_frame_bytes"),
            max_connections: size("limits.max_connections"),
            max_connections_per_ip: size("limits.max_connections_per_ip"),
            max_inflight_request_bytes: size("limits.max_inflight_request_bytes"),
            max_partitions_per_request: size("limits.max_partitions_per_request"),
            max_inflight_responses_per_connection: size(
                "limits.max_in_flight_requests_per_connection",
            ),
            idle_timeout_ms: ms("kafka.idle_timeout_ms"),
            frame_read_timeout_ms: ms("kafka.frame_read_timeout_ms"),
            max_inflight_bytes_per_connection: size("limits.max_inflight_bytes_per_connection"),
            max_fetch_response_bytes: size("limits.max_fetch_response_bytes"),
            max_fetch_wait_ms: ms("limits.max_fetch_wait_ms"),
            max_fetch_sessions: size("limits.max_fetch_sessions"),
            telemetry_push_interval_ms: ms("kafka.telemetry_push_interval_ms"),
            coordinator: kafka_coord::CoordConfig::from_settings(s),
            ..KafkaConfig::default()
        }
    }
}

#[cfg(test)]
mod config_key_tests {
    use super::*;
    use common::config::Defaults;

    /// One default per setting: the keys' built-in defaults are `KafkaConfig::default()`.
    #[test]
    fn key_defaults_are_the_struct_defaults() {
        let keys = [CONFIG_KEYS, kafka_coord::CONFIG_KEYS].concat();
        let from_keys = KafkaConfig::from_settings(&Defaults(&keys));
        assert_eq!(
            format!("{from_keys:?}"),
            format!("{:?}", KafkaConfig::default())
        );
        let listener = KafkaListener::from_settings(&Defaults(CONFIG_KEYS));
        assert_eq!(listener.advertised_host, None);
        assert_eq!(listener.advertised_port, None);
    }
}
