//! The table of every configuration key `sluice server` understands: its section, type,
//! allowed range, built-in default, Kafka's name for it (when Kafka has one) and a one-line
//! description. Each crate owns its keys (`CONFIG_KEYS` next to its config struct, see
//! `common::config`); this module adds the server's own and gathers them. Everything else
//! (file parsing, env vars, flags, `--print-config`) is driven by this table, so a key
//! exists in exactly one place.

use std::sync::LazyLock;

pub use common::config::{KeySpec, Kind};

/// The server's own keys (admin listener, data directory, shutdown, logging).
const SERVER_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "admin.enabled",
        kind: Kind::Bool,
        default: "true",
        kafka_name: None,
        doc: "Serve the admin HTTP endpoints (/metrics, /health, /api).",
    },
    KeySpec {
        key: "admin.listener",
        kind: Kind::Addr,
        default: "\"0.0.0.0:8080\"",
        kafka_name: None,
        doc: "Address of the admin HTTP server (/metrics, /health, /api).",
    },
    KeySpec {
        key: "storage.dir",
        kind: Kind::Str,
        default: "\"./sluice-data\"",
        kafka_name: Some("log.dirs"),
        doc: "Directory holding the commit log, consume queues, indexes and metadata.",
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

/// Every key, in `--print-config` order: the Kafka door's and its coordinators', the
/// broker's, the store's, then the server's.
static ALL: LazyLock<Vec<KeySpec>> = LazyLock::new(|| {
    [
        frontend_kafka::CONFIG_KEYS,
        kafka_coord::CONFIG_KEYS,
        frontend_amqp::CONFIG_KEYS,
        broker::CONFIG_KEYS,
        storage::CONFIG_KEYS,
        SERVER_KEYS,
    ]
    .concat()
});

/// Every key `sluice server` understands.
pub fn keys() -> &'static [KeySpec] {
    &ALL
}

/// The spec of `key`, accepting Kafka's dotted names as aliases.
pub fn find(key: &str) -> Option<&'static KeySpec> {
    keys()
        .iter()
        .find(|k| k.key == key)
        .or_else(|| keys().iter().find(|k| k.kafka_name == Some(key)))
}

/// Section names in order of first appearance.
pub fn sections() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in keys() {
        if !out.contains(&k.section()) {
            out.push(k.section());
        }
    }
    out
}
