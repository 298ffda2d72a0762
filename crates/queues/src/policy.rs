//! RabbitMQ's queue policies as values (issue 16): message TTL, length limits with their
//! overflow modes, priorities. Pure functions over numbers the caller reads from the
//! messages; the head-of-queue operations that apply them are in `head.rs`.
//!
//! - TTL: a message expires at its stored timestamp plus the smaller of the queue's TTL
//!   (`x-message-ttl`) and its own (`expiration`), as RabbitMQ chooses; no extra state, so a
//!   restart keeps every expiry time. An expired message is never delivered.
//! - Length limits (`x-max-length`, `x-max-length-bytes`) count *ready* messages only
//!   (unacknowledged ones do not count, as in RabbitMQ); bytes are body bytes.
//! - Priorities (`x-max-priority`, 1–255): a message's priority is clamped to the maximum;
//!   a message without one has priority 0.

use common::TimestampMs;

/// Highest `x-max-priority` RabbitMQ accepts.
pub const MAX_PRIORITY: u8 = 255;

/// When a message stored at `timestamp_ms` expires: the smaller of the queue's TTL and the
/// message's own (milliseconds, `>= 0`); `None` when neither is set. Saturating.
pub fn expires_at(
    timestamp_ms: TimestampMs,
    queue_ttl_ms: Option<i64>,
    message_ttl_ms: Option<i64>,
) -> Option<TimestampMs> {
    let ttl = match (queue_ttl_ms, message_ttl_ms) {
        (Some(a), Some(b)) => a.min(b),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return None,
    };
    Some(timestamp_ms.saturating_add(ttl.max(0)))
}

/// Whether a message expiring at `expires_at` is dead at `now_ms`. RabbitMQ: a message whose
/// TTL is over is dead; a TTL of 0 expires it at once unless a consumer takes it as it
/// arrives (the caller's acquire happens at publish time then).
pub fn is_expired(expires_at: Option<TimestampMs>, now_ms: TimestampMs) -> bool {
    expires_at.is_some_and(|t| t <= now_ms)
}

/// `x-overflow`: what a full queue does with one more message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter, reason `maxlen`) the oldest ready messages (the default).
    #[default]
    DropHead,
    /// Refuse the new message (a publisher-confirm nack); it is not enqueued.
    RejectPublish,
    /// As `RejectPublish`, and dead-letter the refused message (reason `maxlen`).
    RejectPublishDlx,
}

impl Overflow {
    /// RabbitMQ's names; `None` for anything else.
    pub fn parse(s: &str) -> Option<Overflow> {
        match s {
            "drop-head" => Some(Overflow::DropHead),
            "reject-publish" => Some(Overflow::RejectPublish),
            "reject-publish-dlx" => Some(Overflow::RejectPublishDlx),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// A queue's length limits. With both set, whichever is reached first applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
}

impl Limits {
    pub fn is_set(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }

    /// Whether a queue holding `ready` messages of `ready_bytes` body bytes has room for one
    /// more of `body_bytes` (the reject-publish check, made before the message is stored).
    pub fn admits(&self, ready: u64, ready_bytes: u64, body_bytes: u64) -> bool {
        self.max_length.is_none_or(|max| ready < max)
            && self
                .max_length_bytes
                .is_none_or(|max| ready_bytes.saturating_add(body_bytes) <= max)
    }

    /// How many of the oldest ready messages must go for a queue of `ready` messages and
    /// `ready_bytes` body bytes to be within its limits again (drop-head, after a message
    /// was stored). `head_sizes` are the body sizes of the oldest ready messages, oldest
    /// first; when they do not cover the bytes to drop, the answer is `head_sizes.len()` (or
    /// more by count) and the caller reads further and asks again.
    pub fn excess(&self, ready: u64, ready_bytes: u64, head_sizes: &[u64]) -> u64 {
        let mut drop = self.max_length.map_or(0, |max| ready.saturating_sub(max));
        if let Some(max) = self.max_length_bytes {
            let mut over = ready_bytes.saturating_sub(max);
            let mut n = 0u64;
            for &size in head_sizes {
                if over == 0 {
                    break;
                }
                over = over.saturating_sub(size);
                n += 1;
            }
            drop = drop.max(n);
        }
        drop.min(ready)
    }
}

/// A message's effective priority in a queue with `max_priority`: its own clamped to the
/// maximum (RabbitMQ), 0 when it has none.
pub fn effective_priority(message_priority: Option<u8>, max_priority: u8) -> u8 {
    message_priority.unwrap_or(0).min(max_priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_ttl_wins_and_none_means_never() {
        assert_eq!(expires_at(1_000, Some(200), None), Some(1_200));
        assert_eq!(expires_at(1_000, Some(200), Some(50)), Some(1_050));
        assert_eq!(expires_at(1_000, Some(50), Some(200)), Some(1_050));
        assert_eq!(expires_at(1_000, None, Some(0)), Some(1_000));
        assert_eq!(expires_at(1_000, None, None), None);
        assert_eq!(expires_at(i64::MAX - 1, Some(10), None), Some(i64::MAX));
        assert!(is_expired(Some(1_000), 1_000), "a TTL of 0 is over at once");
        assert!(!is_expired(Some(1_001), 1_000));
        assert!(!is_expired(None, i64::MAX));
    }

    #[test]
    fn limits_count_messages_and_body_bytes() {
        let by_count = Limits {
            max_length: Some(2),
            ..Limits::default()
        };
        assert!(by_count.admits(1, 0, 10));
        assert!(!by_count.admits(2, 0, 10));
        assert_eq!(by_count.excess(3, 0, &[]), 1);
        assert_eq!(by_count.excess(2, 0, &[]), 0);
        let by_bytes = Limits {
            max_length_bytes: Some(10),
            overflow: Overflow::RejectPublish,
            ..Limits::default()
        };
        assert!(by_bytes.admits(3, 6, 4));
        assert!(!by_bytes.admits(3, 6, 5));
        assert_eq!(
            by_bytes.excess(3, 12, &[4, 4, 4]),
            1,
            "12 bytes: drop one of 4"
        );
        assert_eq!(by_bytes.excess(3, 11, &[1, 1, 9]), 1);
        assert_eq!(by_bytes.excess(2, 10, &[5, 5]), 0);
        assert_eq!(
            by_bytes.excess(9, 30, &[4, 4]),
            2,
            "not covered: all read, read more"
        );
        let both = Limits {
            max_length: Some(5),
            max_length_bytes: Some(3),
            ..Limits::default()
        };
        assert_eq!(both.excess(2, 4, &[2, 2]), 1, "whichever is reached first");
        assert!(!Limits::default().is_set());
        assert!(Limits::default().admits(u64::MAX, u64::MAX, 1));
    }

    #[test]
    fn overflow_names_are_rabbitmqs() {
        for o in [
            Overflow::DropHead,
            Overflow::RejectPublish,
            Overflow::RejectPublishDlx,
        ] {
            assert_eq!(Overflow::parse(o.name()), Some(o));
        }
        assert_eq!(Overflow::parse("drop-tail"), None);
        assert_eq!(effective_priority(Some(9), 5), 5);
        assert_eq!(effective_priority(None, 5), 0);
    }
}
