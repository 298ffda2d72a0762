//! Settings of the AMQP listener, and the configuration keys that set them
//! ([`CONFIG_KEYS`], gathered by the server with every other crate's).

use common::config::{KeySpec, Kind, Settings};

/// AMQP front door settings. `Default` suits a local broker on 5672.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpConfig {
    /// Address the listener binds to.
    pub listener: String,
    /// Largest frame (header and end octet included) offered in connection.tune; a client
    /// may lower it. A frame announcing more closes the connection before any allocation.
    pub frame_max: u32,
    /// Most channels per connection offered in connection.tune.
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune, in seconds (0: none).
    pub heartbeat_s: u16,
    /// Largest message body accepted (checked on the content header, before the body).
    pub max_message_bytes: u64,
    /// How long a consumer may hold a delivered message without acking it before it goes
    /// back to the queue (RabbitMQ's `consumer_timeout`).
    pub consumer_timeout_ms: i64,
    /// Connections served at once; further ones are closed right away.
    pub max_connections: usize,
    /// How long `serve` waits for connections to close after shutdown starts.
    pub shutdown_grace_ms: u64,
    /// Virtual hosts served besides `/`, comma-separated (`vhost.rs`).
    pub vhosts: String,
    /// Users besides the built-in guest: comma-separated `name:password` or
    /// `name:password:vhost|vhost…` (`vhost.rs`).
    pub users: String,
    /// Publishing connections are blocked while the data directory's filesystem has fewer
    /// free bytes than this (`alarm.rs`; 0: never).
    pub disk_free_limit_bytes: u64,
    /// Publishing connections are blocked while the broker's resident memory is above
    /// this (`alarm.rs`; 0: 40 % of physical memory, RabbitMQ's default).
    pub memory_high_watermark_bytes: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            listener: "0.0.0.0:5672".to_string(),
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat_s: 60,
            max_message_bytes: 16 * 1024 * 1024,
            consumer_timeout_ms: 1_800_000,
            max_connections: 10_000,
            shutdown_grace_ms: 10_000,
            vhosts: "/".to_string(),
            users: String::new(),
            disk_free_limit_bytes: 50_000_000,
            memory_high_watermark_bytes: 0,
        }
    }
}

/// The AMQP door's configuration keys (`amqp.*`).
pub const CONFIG_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "amqp.listener",
        kind: Kind::Addr,
        default: "\"0.0.0.0:5672\"",
        kafka_name: None,
        doc: "Address the AMQP 0-9-1 listener binds to.",
    },
    KeySpec {
        key: "amqp.frame_max",
        kind: Kind::Int {
            min: 4096,
            max: 16 * 1024 * 1024,
        },
        default: "131072",
        kafka_name: None,
        doc: "Largest AMQP frame in bytes offered to clients (connection.tune frame_max).",
    },
    KeySpec {
        key: "amqp.channel_max",
        kind: Kind::Int { min: 1, max: 65535 },
        default: "2047",
        kafka_name: None,
        doc: "Most channels per AMQP connection (connection.tune channel_max).",
    },
    KeySpec {
        key: "amqp.heartbeat_s",
        kind: Kind::Int { min: 0, max: 3600 },
        default: "60",
        kafka_name: None,
        doc: "Heartbeat interval in seconds offered to AMQP clients; 0 turns heartbeats off.",
    },
    KeySpec {
        key: "amqp.max_message_bytes",
        kind: Kind::Int {
            min: 1024,
            max: 512 * 1024 * 1024,
        },
        default: "16777216",
        kafka_name: None,
        doc: "Largest AMQP message body accepted; a larger one closes the channel (406).",
    },
    KeySpec {
        key: "amqp.consumer_timeout_ms",
        kind: Kind::Int {
            min: 1000,
            max: i32::MAX as i64,
        },
        default: "1800000",
        kafka_name: None,
        doc: "A delivered message not acked within this long goes back to its queue.",
    },
    KeySpec {
        key: "amqp.max_connections",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "10000",
        kafka_name: None,
        doc: "Most AMQP connections served at once; further ones are refused.",
    },
    KeySpec {
        key: "amqp.vhosts",
        kind: Kind::Str,
        default: "\"/\"",
        kafka_name: None,
        doc: "AMQP virtual hosts served, comma-separated (\"/\" always is); names of letters, digits, '_' and '-'.",
    },
    KeySpec {
        key: "amqp.users",
        kind: Kind::Str,
        default: "\"\"",
        kafka_name: None,
        doc: "AMQP users besides guest (guest/guest, loopback only), comma-separated name:password or name:password:vhost|vhost (the vhosts it may open; all when absent). Passwords are plain text: keep the file private.",
    },
    KeySpec {
        key: "amqp.disk_free_limit_bytes",
        kind: Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        default: "50000000",
        kafka_name: None,
        doc: "Publishing AMQP connections are blocked (connection.blocked, not read from) while the data directory's filesystem has fewer free bytes than this (RabbitMQ's disk_free_limit); 0 turns the check off.",
    },
    KeySpec {
        key: "amqp.memory_high_watermark_bytes",
        kind: Kind::Int {
            min: 0,
            max: i64::MAX,
        },
        default: "0",
        kafka_name: None,
        doc: "Publishing AMQP connections are blocked while the broker's resident memory is above this many bytes; 0 means 40% of physical memory (RabbitMQ's vm_memory_high_watermark).",
    },
];

impl AmqpConfig {
    /// The settings [`CONFIG_KEYS`] hold; the shutdown grace is left at its default (the
    /// server sets it from its own key).
    pub fn from_settings(s: &dyn Settings) -> AmqpConfig {
        let int = |k: &str| s.int(k);
        AmqpConfig {
            listener: s.str("amqp.listener"),
            frame_max: u32::try_from(int("amqp.frame_max")).unwrap_or(131_072),
            channel_max: u16::try_from(int("amqp.channel_max")).unwrap_or(2047),
            heartbeat_s: u16::try_from(int("amqp.heartbeat_s")).unwrap_or(60),
            max_message_bytes: u64::try_from(int("amqp.max_message_bytes")).unwrap_or(0),
            consumer_timeout_ms: int("amqp.consumer_timeout_ms"),
            max_connections: usize::try_from(int("amqp.max_connections")).unwrap_or(1),
            vhosts: s.str("amqp.vhosts"),
            users: s.str("amqp.users"),
            disk_free_limit_bytes: u64::try_from(int("amqp.disk_free_limit_bytes")).unwrap_or(0),
            memory_high_watermark_bytes: u64::try_from(int("amqp.memory_high_watermark_bytes"))
                .unwrap_or(0),
            ..AmqpConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_defaults_build_the_default_config() {
        let from_keys = AmqpConfig::from_settings(&common::config::Defaults(CONFIG_KEYS));
        assert_eq!(from_keys, AmqpConfig::default());
    }
}
