//! The table of every configuration key `sluice server` understands: its section, type,
//! allowed range, built-in default, Kafka's name for it (when Kafka has one) and a one-line
//! description. Everything else (file parsing, env vars, flags, `--print-config`) is driven by
//! this table, so a key exists in exactly one place.

/// What values a key accepts.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A signed integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Any string (paths, hosts).
    Str,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// `host:port`.
    Addr,
}

impl Kind {
    /// The allowed values, as shown in error messages.
    pub fn describe(&self) -> String {
        match self {
            Kind::Int { min, max } => format!("an integer in {min}..={max}"),
            Kind::Bool => "true or false".to_string(),
            Kind::Str => "a string".to_string(),
            Kind::Enum(options) => format!("one of {}", options.join(", ")),
            Kind::Addr => "an address host:port (port 0..=65535)".to_string(),
        }
    }
}

/// One configuration key.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// `section.key`, as written in the TOML file and `--set`.
    pub key: &'static str,
    pub kind: Kind,
    /// Built-in default in TOML syntax.
    pub default: &'static str,
    /// Kafka's broker config name, accepted as an alias by `--set` and in the file's top level.
    pub kafka_name: Option<&'static str>,
    pub doc: &'static str,
}

impl KeySpec {
    /// `SLUICE_` + key upper-cased with `.` → `_`, e.g. `SLUICE_STORAGE_DIR`.
    pub fn env_var(&self) -> String {
        format!("SLUICE_{}", self.key.replace('.', "_").to_ascii_uppercase())
    }

    pub fn section(&self) -> &'static str {
        self.key.split_once('.').map(|(s, _)| s).unwrap_or("")
    }

    pub fn name(&self) -> &'static str {
        self.key.split_once('.').map(|(_, n)| n).unwrap_or(self.key)
    }
}

const MIB: i64 = 1024 * 1024;
const GIB: i64 = 1024 * MIB;
const I32_MAX: i64 = i32::MAX as i64;

/// Every key, in `--print-config` order.
pub const KEYS: &[KeySpec] = &[
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
        key: "kafka.node_id",
        kind: Kind::Int {
            min: 0,
            max: I32_MAX,
        },
        default: "0",
        kafka_name: Some("node.id"),
        doc: "This broker's id in metadata responses.",
    },
    KeySpec {
        key: "kafka.cluster_id",
        kind: Kind::Str,
        default: "\"sluice-cluster\"",
        kafka_name: Some("cluster.id"),
        doc: "Cluster id reported to clients in metadata.",
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
        key: "admin.enabled",
        kind: Kind::Bool,
        default: "true",
        kafka_name: None,
        doc: "Serve the admin HTTP endpoints (/metrics, /health).",
    },
    KeySpec {
        key: "admin.listener",
        kind: Kind::Addr,
        default: "\"0.0.0.0:8080\"",
        kafka_name: None,
        doc: "Address of the admin HTTP server (/metrics, /health).",
    },
    KeySpec {
        key: "storage.dir",
        kind: Kind::Str,
        default: "\"./sluice-data\"",
        kafka_name: Some("log.dirs"),
        doc: "Directory holding the commit log, consume queues, indexes and metadata.",
    },
    KeySpec {
        key: "storage.segment_bytes",
        kind: Kind::Int {
            min: MIB,
            max: 4 * GIB,
        },
        default: "1073741824",
        kafka_name: Some("log.segment.bytes"),
        doc: "Size of one commit-log segment file.",
    },
    KeySpec {
        key: "storage.flush",
        kind: Kind::Enum(&["async", "sync"]),
        default: "\"async\"",
        kafka_name: None,
        doc: "async: acknowledge after the page cache, fsync every flush_interval_ms. sync: acknowledge after fsync (group commit).",
    },
    KeySpec {
        key: "storage.flush_interval_ms",
        kind: Kind::Int {
            min: 1,
            max: 3_600_000,
        },
        default: "1000",
        kafka_name: Some("log.flush.interval.ms"),
        doc: "Background fsync interval when flush = \"async\".",
    },
    KeySpec {
        key: "storage.retention_check_interval_ms",
        kind: Kind::Int {
            min: 10,
            max: 3_600_000,
        },
        default: "60000",
        kafka_name: Some("log.retention.check.interval.ms"),
        doc: "Interval of the retention pass (time/size retention, whole-segment deletion), each followed by a cleaner pass. Checked on the background flush's cadence, so never more often than storage.flush_interval_ms.",
    },
    KeySpec {
        key: "storage.clean_bytes_per_pass",
        kind: Kind::Int {
            min: 0,
            max: 1 << 40,
        },
        default: "268435456",
        kafka_name: None,
        doc: "I/O budget of one cleaner pass: bytes of commit-log entries it may walk to free the blocks of dead entries in place (hole punching). 0 turns the cleaner off.",
    },
    KeySpec {
        key: "storage.index",
        kind: Kind::Bool,
        default: "true",
        kafka_name: None,
        doc: "Build the key/time index for new topics (per-topic config sluice.index overrides).",
    },
    KeySpec {
        key: "topics.auto_create_topics_enable",
        kind: Kind::Bool,
        default: "true",
        kafka_name: Some("auto.create.topics.enable"),
        doc: "Create a topic when a client produces to or asks metadata for an unknown one.",
    },
    KeySpec {
        key: "topics.num_partitions",
        kind: Kind::Int {
            min: 1,
            max: 10_000,
        },
        default: "1",
        kafka_name: Some("num.partitions"),
        doc: "Partitions of a topic created without an explicit count.",
    },
    KeySpec {
        key: "topics.log_retention_ms",
        kind: Kind::Int {
            min: -1,
            max: i64::MAX,
        },
        default: "604800000",
        kafka_name: Some("log.retention.ms"),
        doc: "Default time retention of a topic (-1: keep forever).",
    },
    KeySpec {
        key: "topics.log_retention_bytes",
        kind: Kind::Int {
            min: -1,
            max: i64::MAX,
        },
        default: "-1",
        kafka_name: Some("log.retention.bytes"),
        doc: "Default size retention per partition (-1: no limit).",
    },
    KeySpec {
        key: "limits.message_max_bytes",
        kind: Kind::Int {
            min: 1024,
            max: I32_MAX,
        },
        default: "1048588",
        kafka_name: Some("message.max.bytes"),
        doc: "Largest record batch a producer may send.",
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
        key: "limits.max_decompressed_batch_bytes",
        kind: Kind::Int {
            min: 1024,
            max: I32_MAX,
        },
        default: "67108864",
        kafka_name: None,
        doc: "Largest decompressed size of one record batch the broker will decode (indexing, recovery); a larger one is refused.",
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
        key: "limits.max_topics",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "10000",
        kafka_name: None,
        doc: "Most topics the broker will hold.",
    },
    KeySpec {
        key: "limits.max_partitions_per_topic",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "10000",
        kafka_name: None,
        doc: "Most partitions one topic may have.",
    },
    KeySpec {
        key: "limits.max_partitions",
        kind: Kind::Int {
            min: 1,
            max: 10_000_000,
        },
        default: "200000",
        kafka_name: None,
        doc: "Most partitions the broker will hold in total.",
    },
    KeySpec {
        key: "groups.max_session_timeout_ms",
        kind: Kind::Int {
            min: 1000,
            max: 3_600_000,
        },
        default: "1800000",
        kafka_name: Some("group.max.session.timeout.ms"),
        doc: "Largest consumer session timeout a member may ask for.",
    },
    KeySpec {
        key: "groups.initial_rebalance_delay_ms",
        kind: Kind::Int {
            min: 0,
            max: 300_000,
        },
        default: "0",
        kafka_name: Some("group.initial.rebalance.delay.ms"),
        doc: "Wait this long for more members before the first rebalance of an empty group.",
    },
    KeySpec {
        key: "groups.min_session_timeout_ms",
        kind: Kind::Int {
            min: 1,
            max: 3_600_000,
        },
        default: "6000",
        kafka_name: Some("group.min.session.timeout.ms"),
        doc: "Smallest consumer session timeout a member may ask for.",
    },
    KeySpec {
        key: "groups.max_size",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "1000",
        kafka_name: Some("group.max.size"),
        doc: "Most members in one consumer group.",
    },
    KeySpec {
        key: "groups.offsets_retention_ms",
        kind: Kind::Int {
            min: -1,
            max: i64::MAX,
        },
        default: "604800000",
        kafka_name: None,
        doc: "Committed offsets of an empty group are dropped after this long (-1: keep forever; Kafka: offsets.retention.minutes).",
    },
    KeySpec {
        key: "server.shutdown_timeout_ms",
        kind: Kind::Int {
            min: 0,
            max: 3_600_000,
        },
        default: "30000",
        kafka_name: None,
        doc: "On SIGINT/SIGTERM, how long in-flight requests may take before the broker stops anyway.",
    },
    KeySpec {
        key: "log.format",
        kind: Kind::Enum(&["human", "json"]),
        default: "\"human\"",
        kafka_name: None,
        doc: "Log line format on stderr.",
    },
    KeySpec {
        key: "log.level",
        kind: Kind::Str,
        default: "\"info\"",
        kafka_name: None,
        doc: "Log filter: a level (error, warn, info, debug, trace) or a tracing directive like \"info,sluice_storage=debug\". RUST_LOG overrides it.",
    },
];

/// The spec of `key`, accepting Kafka's dotted names as aliases.
pub fn find(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter()
        .find(|k| k.key == key)
        .or_else(|| KEYS.iter().find(|k| k.kafka_name == Some(key)))
}

/// Section names in order of first appearance.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in KEYS {
        if !out.contains(&k.section()) {
            out.push(k.section());
        }
    }
    out
}
