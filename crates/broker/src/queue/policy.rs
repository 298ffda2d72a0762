//! A queue's policies (issue 16), read from the settings it was declared with (AMQP's
//! `x-…` arguments, stringified): TTL, queue expiry, dead-letter target, delivery limit,
//! length limits and priorities. The settings are saved with the queue, so the policies
//! survive a restart; per-message values (TTL, priority) travel in record headers a door
//! writes at publish time ([`HEADER_TTL_MS`], [`HEADER_PRIORITY`]).

use std::collections::BTreeMap;

use common::TimestampMs;
use queues::{Limits, MAX_PRIORITY, Overflow, QueueConfig, expires_at};

use crate::record_read::StoredRecord;

/// Record header: the message's own TTL in milliseconds (decimal; AMQP's `expiration`).
pub const HEADER_TTL_MS: &str = "queue.ttl_ms";
/// Record header: the message's priority, 0–255 (decimal; AMQP's `priority`).
pub const HEADER_PRIORITY: &str = "queue.priority";
/// Record header: when a delayed message becomes deliverable, in epoch milliseconds
/// (decimal; AMQP's `x-delay` on an `x-delayed-message` exchange). Kept with the message, so
/// a crash that loses its schedule record cannot deliver it early.
pub const HEADER_DUE_MS: &str = "queue.due_ms";

/// RabbitMQ 4's default delivery limit for quorum queues.
pub const QUORUM_DELIVERY_LIMIT: u32 = 20;

/// What a queue's settings ask for. Every field `None`/default: a plain queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueuePolicy {
    /// `x-message-ttl`.
    pub message_ttl_ms: Option<i64>,
    /// `x-expires`: deleted after this long unused.
    pub expires_ms: Option<i64>,
    /// `x-dead-letter-exchange` (a name in the door's namespace; the door routes).
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-delivery-limit` (default 20 with `x-queue-type = quorum`, else none).
    pub delivery_limit: Option<u32>,
    /// `x-max-length`, `x-max-length-bytes`, `x-overflow`.
    pub limits: Limits,
    /// `x-max-priority`.
    pub max_priority: Option<u8>,
    /// `x-retry-backoff`, `x-retry-max`: a message nacked with requeue comes back after
    /// the backoff's delay, not at once (`queues::RetryPolicy`).
    pub retry: Option<queues::RetryPolicy>,
}

fn invalid(arg: &str, value: &str, why: &str) -> String {
    format!("invalid arg '{arg}': {why} (got '{value}')")
}

fn non_negative(settings: &BTreeMap<String, String>, arg: &str) -> Result<Option<i64>, String> {
    let Some(v) = settings.get(arg) else {
        return Ok(None);
    };
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Some(n)),
        _ => Err(invalid(arg, v, "expected a non-negative integer")),
    }
}

impl QueuePolicy {
    /// The policy of `settings`; an argument RabbitMQ would refuse is an error naming it.
    pub fn parse(settings: &BTreeMap<String, String>) -> Result<QueuePolicy, String> {
        if settings.get("x-queue-type").map(String::as_str) == Some("stream") {
            // A stream keeps every message for its readers: its `x-max-length-bytes` and
            // `x-max-age` are its topic's retention (the AMQP door sets them), not limits.
            return Ok(QueuePolicy::default());
        }
        let mut p = QueuePolicy {
            message_ttl_ms: non_negative(settings, "x-message-ttl")?,
            dead_letter_exchange: settings.get("x-dead-letter-exchange").cloned(),
            dead_letter_routing_key: settings.get("x-dead-letter-routing-key").cloned(),
            ..QueuePolicy::default()
        };
        if let Some(v) = settings.get("x-expires") {
            match v.parse::<i64>() {
                Ok(n) if n > 0 => p.expires_ms = Some(n),
                _ => return Err(invalid("x-expires", v, "expected a positive integer")),
            }
        }
        p.limits.max_length = non_negative(settings, "x-max-length")?.map(|n| n as u64);
        p.limits.max_length_bytes = non_negative(settings, "x-max-length-bytes")?.map(|n| n as u64);
        if let Some(v) = settings.get("x-overflow") {
            p.limits.overflow = Overflow::parse(v).ok_or_else(|| {
                invalid(
                    "x-overflow",
                    v,
                    "expected drop-head, reject-publish or reject-publish-dlx",
                )
            })?;
        }
        if let Some(v) = settings.get("x-max-priority") {
            match v.parse::<i64>() {
                Ok(n) if (1..=i64::from(MAX_PRIORITY)).contains(&n) => {
                    p.max_priority = Some(n as u8)
                }
                _ => return Err(invalid("x-max-priority", v, "expected 1 to 255")),
            }
        }
        let quorum = settings.get("x-queue-type").map(String::as_str) == Some("quorum");
        p.delivery_limit = match settings.get("x-delivery-limit") {
            // RabbitMQ 4: a negative limit means none.
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n < 0 => None,
                Ok(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                Err(_) => return Err(invalid("x-delivery-limit", v, "expected an integer")),
            },
            None if quorum => Some(QUORUM_DELIVERY_LIMIT),
            None => None,
        };
        p.retry = queues::RetryPolicy::parse(
            settings.get("x-retry-backoff").map(String::as_str),
            settings.get("x-retry-max").map(String::as_str),
        )
        .map_err(|e| format!("invalid arg 'x-retry-backoff'/'x-retry-max': {e}"))?;
        Ok(p)
    }

    /// The engine's settings for this policy.
    pub fn engine_config(&self) -> QueueConfig {
        QueueConfig {
            delivery_limit: self.delivery_limit,
            ..QueueConfig::default()
        }
    }

    /// When `record` expires in this queue (`None`: never).
    pub fn expiry(&self, record: &StoredRecord) -> Option<TimestampMs> {
        expires_at(
            record.timestamp_ms,
            self.message_ttl_ms,
            header_number(record, HEADER_TTL_MS),
        )
    }

    /// When `record` (a delayed message) becomes deliverable, if it is delayed.
    pub fn due(&self, record: &StoredRecord) -> Option<TimestampMs> {
        header_number(record, HEADER_DUE_MS)
    }

    /// `record`'s priority in this queue (0 when the queue has none).
    pub fn priority(&self, record: &StoredRecord) -> u8 {
        match self.max_priority {
            None => 0,
            Some(max) => queues::effective_priority(
                header_number(record, HEADER_PRIORITY).map(|n| n.clamp(0, 255) as u8),
                max,
            ),
        }
    }
}

fn header_number(record: &StoredRecord, name: &str) -> Option<i64> {
    record
        .headers
        .iter()
        .find(|(k, _)| &k[..] == name.as_bytes())
        .and_then(|(_, v)| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn arguments_become_a_policy() {
        let p = QueuePolicy::parse(&settings(&[
            ("x-message-ttl", "200"),
            ("x-dead-letter-exchange", "dlx"),
            ("x-max-length", "3"),
            ("x-overflow", "reject-publish-dlx"),
            ("x-max-priority", "10"),
        ]))
        .unwrap();
        assert_eq!(p.message_ttl_ms, Some(200));
        assert_eq!(p.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(p.limits.max_length, Some(3));
        assert_eq!(p.limits.overflow, Overflow::RejectPublishDlx);
        assert_eq!(p.max_priority, Some(10));
        assert_eq!(
            p.delivery_limit, None,
            "classic queues: no limit by default"
        );
        let quorum = QueuePolicy::parse(&settings(&[("x-queue-type", "quorum")])).unwrap();
        assert_eq!(quorum.delivery_limit, Some(20));
        let unlimited = QueuePolicy::parse(&settings(&[
            ("x-queue-type", "quorum"),
            ("x-delivery-limit", "-1"),
        ]))
        .unwrap();
        assert_eq!(unlimited.delivery_limit, None);
        for bad in [
            ("x-max-priority", "256"),
            ("x-max-priority", "0"),
            ("x-overflow", "drop-tail"),
            ("x-message-ttl", "-1"),
            ("x-expires", "0"),
        ] {
            let e = QueuePolicy::parse(&settings(&[bad])).unwrap_err();
            assert!(e.contains(bad.0), "{e}");
        }
    }

    #[test]
    fn ttl_and_priority_come_from_the_record() {
        let p = QueuePolicy::parse(&settings(&[
            ("x-message-ttl", "500"),
            ("x-max-priority", "5"),
        ]))
        .unwrap();
        let record = StoredRecord {
            offset: 0,
            timestamp_ms: 1_000,
            key: None,
            value: None,
            headers: vec![
                (HEADER_TTL_MS.into(), Some("100".into())),
                (HEADER_PRIORITY.into(), Some("9".into())),
            ],
        };
        assert_eq!(p.expiry(&record), Some(1_100));
        assert_eq!(p.priority(&record), 5, "clamped to the queue's maximum");
        let plain = StoredRecord {
            headers: vec![],
            ..record
        };
        assert_eq!(p.expiry(&plain), Some(1_500));
        assert_eq!(p.priority(&plain), 0);
    }
}
