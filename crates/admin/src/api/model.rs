//! What `/api/…` reads and writes, as JSON (docs/http-api.md). Field names follow
//! RabbitMQ's management API where it has the same thing (`messages_ready`,
//! `messages_unacknowledged`, `destination_type`, `properties_key`, …), so its users find
//! their way. Argument values are shown as the text they are kept as (a declare's `60000`
//! and `"60000"` are the same setting).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// Declared exclusive by an AMQP connection that is still open.
    pub exclusive: bool,
    /// The declare arguments (`x-message-ttl`, …).
    pub arguments: BTreeMap<String, String>,
    /// What the arguments make of the queue; only what is set.
    pub effective_policy: QueuePolicyInfo,
    /// Ready plus unacknowledged.
    pub messages: u64,
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    /// Delayed or retrying messages not yet due (not counted in `messages`).
    #[serde(default)]
    pub messages_scheduled: u64,
    /// Consumers subscribed now, holding messages or not.
    pub consumers: u32,
    /// Counters since the broker started.
    pub message_stats: MessageStats,
}

/// A queue's policy as its arguments set it (RabbitMQ's queue arguments).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueuePolicyInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_ttl_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_exchange: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_routing_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length_bytes: Option<u64>,
    /// What a full queue does (drop-head, reject-publish, reject-publish-dlx); shown with a
    /// length limit only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_priority: Option<u8>,
    /// `x-retry-backoff`, in its own syntax (`exponential:1s,2,60s`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff: Option<String>,
    /// `x-retry-max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max: Option<u32>,
}

impl From<&broker::queue::QueuePolicy> for QueuePolicyInfo {
    fn from(p: &broker::queue::QueuePolicy) -> QueuePolicyInfo {
        let limited = p.limits.max_length.is_some() || p.limits.max_length_bytes.is_some();
        QueuePolicyInfo {
            message_ttl_ms: p.message_ttl_ms,
            expires_ms: p.expires_ms,
            dead_letter_exchange: p.dead_letter_exchange.clone(),
            dead_letter_routing_key: p.dead_letter_routing_key.clone(),
            delivery_limit: p.delivery_limit,
            max_length: p.limits.max_length,
            max_length_bytes: p.limits.max_length_bytes,
            overflow: limited.then(|| p.limits.overflow.name().to_string()),
            max_priority: p.max_priority,
            retry_backoff: p.retry.as_ref().map(|r| r.backoff.to_string()),
            retry_max: p.retry.as_ref().and_then(|r| r.max_retries),
        }
    }
}

/// A queue's counters since the broker started (`sluice_queue_*_total` on `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageStats {
    /// Messages stored in the queue by publishes.
    pub published: u64,
    /// Deliveries to consumers and gets, redeliveries included.
    pub delivered: u64,
    pub acked: u64,
    /// Handed back for redelivery (nack or reject with requeue, consumer gone).
    pub returned: u64,
    /// Settled dead: dead-lettered, or dropped without a dead-letter exchange.
    #[serde(default)]
    pub dead_lettered: u64,
}

/// What a queue declare asks for (`PUT /api/queues/{vhost}/{name}`; arguments already as
/// text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueSpec {
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: BTreeMap<String, String>,
}

/// One exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeInfo {
    pub vhost: String,
    /// `""` for the default exchange (`amq.default` in URLs).
    pub name: String,
    /// direct, fanout, topic or headers.
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    /// `alternate-exchange`, when set.
    pub arguments: BTreeMap<String, String>,
    /// The default exchange or one of `amq.*`: always there, cannot be deleted.
    pub builtin: bool,
}

/// What an exchange declare asks for (`PUT /api/exchanges/{vhost}/{name}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeSpec {
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub alternate: Option<String>,
}

/// One binding, shown or asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingInfo {
    pub vhost: String,
    /// The source exchange.
    pub source: String,
    pub destination: String,
    /// "queue" or "exchange".
    pub destination_type: String,
    pub routing_key: String,
    pub arguments: BTreeMap<String, String>,
    /// Names this binding among those between its source and destination, in the URL that
    /// deletes it (`routing_key`, `~` for an empty one; `~<hash>` appended with arguments).
    pub properties_key: String,
}

impl BindingInfo {
    pub fn to_exchange(&self) -> bool {
        self.destination_type == "exchange"
    }
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: how many ready messages went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    pub message_count: u64,
}

/// One vhost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostInfo {
    pub name: String,
}

/// Every error: `{"error": "…"}` with the HTTP status saying which kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
