//! Stream queues (`x-queue-type = stream`): RabbitMQ's streams over AMQP 0-9-1, on the log
//! the queue already is. A stream queue's messages are never taken away: each consumer
//! reads the queue's partition from its own offset (`x-stream-offset` in basic.consume:
//! `first`, `last`, `next` — the default —, an offset, a timestamp, or an interval such as
//! `1h` back from now), and every delivery carries its offset in the `x-stream-offset`
//! header. An ack only makes room under the consumer's prefetch (which a stream consumer
//! must set, as in RabbitMQ: 406 otherwise); nack and reject change nothing. Declaring a stream queue with
//! the name of an existing Kafka topic reads that topic (partition 0), so an AMQP consumer
//! can replay what Kafka producers wrote.
//!
//! Declare rules as RabbitMQ's: durable, not exclusive, not auto-delete; `x-max-age`
//! (`7D`, `12h`, …) and `x-max-length-bytes` become the topic's `retention.ms` and
//! `retention.bytes` when the declare creates the topic; the classic/quorum policies (TTL,
//! dead letters, length limits, priorities) are refused. basic.get and automatic acks
//! close the connection (540 NOT_IMPLEMENTED), as RabbitMQ's do.

use std::collections::BTreeMap;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::AMQPValue;
use common::Offset;

use crate::channel::{Channel, Unacked};
use crate::connection::Session;
use crate::errors::{AmqpError, PRECONDITION_FAILED, from_broker, truncate};
use crate::message::Message;
use crate::vhost::split;

/// Most bytes one stream read takes.
const READ_BYTES: usize = 4 << 20;

/// Queue arguments a stream queue takes (besides the door's own settings).
const STREAM_ARGS: &[&str] = &[
    "x-queue-type",
    "x-max-age",
    "x-max-length-bytes",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// Whether queue settings declare a stream queue.
pub fn is_stream(settings: &BTreeMap<String, String>) -> bool {
    settings.get("x-queue-type").map(String::as_str) == Some("stream")
}

/// Checks a stream queue's declare (RabbitMQ's rules, see the module doc).
pub fn check_declare(
    settings: &BTreeMap<String, String>,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
) -> Result<(), AmqpError> {
    let refuse = |what: &str| {
        Err(AmqpError::channel(
            PRECONDITION_FAILED,
            format!("invalid property '{what}' for a stream queue"),
        ))
    };
    if !durable {
        return refuse("non-durable");
    }
    if exclusive {
        return refuse("exclusive");
    }
    if auto_delete {
        return refuse("auto-delete");
    }
    for k in settings.keys().filter(|k| k.starts_with("x-")) {
        if !STREAM_ARGS.contains(&k.as_str()) {
            return Err(AmqpError::channel(
                PRECONDITION_FAILED,
                format!("invalid arg '{k}' for a stream queue"),
            ));
        }
    }
    if let Some(age) = settings.get("x-max-age")
        && interval_ms(age).is_none()
    {
        return Err(AmqpError::channel(
            PRECONDITION_FAILED,
            format!("invalid arg 'x-max-age': '{age}' (expected a number and Y, M, D, h, m or s)"),
        ));
    }
    if let Some(n) = settings.get("x-max-length-bytes")
        && n.parse::<u64>().is_err()
    {
        return Err(AmqpError::channel(
            PRECONDITION_FAILED,
            format!("invalid arg 'x-max-length-bytes': '{n}'"),
        ));
    }
    Ok(())
}

/// The topic settings a stream queue's arguments ask for (Kafka config names).
pub fn retention_of(settings: &BTreeMap<String, String>) -> Vec<broker::ConfigOp> {
    let mut ops = Vec::new();
    if let Some(ms) = settings.get("x-max-age").and_then(|a| interval_ms(a)) {
        ops.push(broker::ConfigOp::Set("retention.ms".into(), ms.to_string()));
    }
    if let Some(n) = settings.get("x-max-length-bytes") {
        ops.push(broker::ConfigOp::Set("retention.bytes".into(), n.clone()));
    }
    ops
}

/// RabbitMQ's interval notation (`30s`, `10m`, `12h`, `7D`, `2M`, `1Y`) in milliseconds.
fn interval_ms(s: &str) -> Option<i64> {
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let ms = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'D' => 86_400_000,
        'M' => 30 * 86_400_000,
        'Y' => 365 * 86_400_000,
        _ => return None,
    };
    (n >= 0).then(|| n.saturating_mul(ms))
}

/// Where a consumer of stream queue `queue` (internal name: its topic) starts, from its
/// `x-stream-offset` argument.
pub fn start_offset(
    broker: &broker::Broker,
    queue: &str,
    arg: Option<&AMQPValue>,
) -> Result<Offset, AmqpError> {
    let marks = broker.watermarks(queue, 0).map_err(|e| from_broker(&e))?;
    let at_time = |ms: i64| -> Result<Offset, AmqpError> {
        Ok(broker
            .offset_for_timestamp(queue, 0, ms)
            .map_err(|e| from_broker(&e))?
            .map_or(marks.high_watermark, |(o, _)| o))
    };
    let bad = |v: &AMQPValue| {
        AmqpError::channel(
            PRECONDITION_FAILED,
            format!(
                "invalid arg 'x-stream-offset': {v:?} (expected first, last, next, an offset, a timestamp or an interval)"
            ),
        )
    };
    let offset = match arg {
        None => marks.high_watermark,
        Some(v) => match v {
            AMQPValue::LongString(s) => {
                text_offset(&s.to_string(), &marks, broker, at_time).ok_or_else(|| bad(v))??
            }
            AMQPValue::ShortString(s) => {
                text_offset(s.as_str(), &marks, broker, at_time).ok_or_else(|| bad(v))??
            }
            AMQPValue::Timestamp(secs) => at_time(i64::try_from(*secs).unwrap_or(i64::MAX) * 1000)?,
            AMQPValue::LongLongInt(n) => *n,
            AMQPValue::LongInt(n) => i64::from(*n),
            AMQPValue::LongUInt(n) => i64::from(*n),
            AMQPValue::ShortInt(n) => i64::from(*n),
            AMQPValue::ShortUInt(n) => i64::from(*n),
            AMQPValue::ShortShortInt(n) => i64::from(*n),
            AMQPValue::ShortShortUInt(n) => i64::from(*n),
            other => return Err(bad(other)),
        },
    };
    Ok(offset.clamp(marks.log_start, marks.high_watermark))
}

/// `first`, `last`, `next` or an interval back from now; `None`: none of them.
fn text_offset(
    s: &str,
    marks: &broker::Watermarks,
    broker: &broker::Broker,
    at_time: impl Fn(i64) -> Result<Offset, AmqpError>,
) -> Option<Result<Offset, AmqpError>> {
    Some(Ok(match s {
        "first" => marks.log_start,
        // RabbitMQ starts at the last chunk; a chunk here is one message.
        "last" => (marks.high_watermark - 1).max(marks.log_start),
        "next" => marks.high_watermark,
        interval => {
            let back = interval_ms(interval)?;
            return Some(at_time(broker.now_ms().saturating_sub(back)));
        }
    }))
}

impl Session {
    /// Delivers to stream consumer `tag` up to `room` messages from its offset.
    pub async fn pump_stream(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        tag: &str,
        room: u32,
    ) -> Result<(), AmqpError> {
        let Some(c) = chan.consumers.get(tag) else {
            return Ok(());
        };
        let (queue, id, Some(from)) = (c.queue.clone(), c.broker_id, c.stream) else {
            return Ok(());
        };
        let read = match self
            .door
            .broker
            .read_records(&queue, 0, from, room as usize, READ_BYTES)
        {
            Ok(read) => read,
            Err(broker::BrokerError::OffsetOutOfRange { log_start, .. }) => {
                // Retention went past the consumer: it goes on from the oldest message.
                if let Some(c) = chan.consumers.get_mut(tag) {
                    c.stream = Some(log_start);
                }
                self.dirty = true;
                return Ok(());
            }
            Err(e) => return Err(from_broker(&e)),
        };
        if read.records.len() as u32 >= room {
            self.dirty = true;
        }
        let local = split(&queue).1.to_string();
        for record in &read.records {
            chan.last_tag += 1;
            let delivery_tag = chan.last_tag;
            chan.unacked.insert(
                delivery_tag,
                Unacked {
                    queue: queue.clone(),
                    broker_id: id,
                    offset: record.offset,
                    consumer_tag: Some(tag.to_string()),
                    stream: true,
                },
            );
            let mut msg = Message::from_record(record, &local);
            let mut headers = msg.properties.headers().clone().unwrap_or_default();
            headers.insert(
                "x-stream-offset".into(),
                AMQPValue::LongLongInt(record.offset),
            );
            msg.properties = msg.properties.with_headers(headers);
            let deliver = basic::Deliver {
                consumer_tag: tag.into(),
                delivery_tag,
                redelivered: false,
                exchange: truncate(&msg.exchange, 255).into(),
                routing_key: truncate(&msg.routing_key, 255).into(),
            };
            self.out
                .method(ch, AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)));
            self.out.content(ch, &msg.properties, &msg.body);
        }
        if let Some(c) = chan.consumers.get_mut(tag) {
            c.unacked += read.records.len() as u32;
            c.stream = Some(read.next_offset.max(from));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_as_rabbitmq_writes_them() {
        assert_eq!(interval_ms("30s"), Some(30_000));
        assert_eq!(interval_ms("10m"), Some(600_000));
        assert_eq!(interval_ms("7D"), Some(7 * 86_400_000));
        assert_eq!(interval_ms("1Y"), Some(365 * 86_400_000));
        assert_eq!(interval_ms("7d"), None, "units are case-sensitive");
        assert_eq!(interval_ms("h"), None);
        assert_eq!(interval_ms("-1h"), None);
    }

    #[test]
    fn a_stream_declare_follows_rabbitmq_rules() {
        let s = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let stream = s(&[("x-queue-type", "stream"), ("x-max-age", "7D")]);
        assert!(check_declare(&stream, true, false, false).is_ok());
        assert!(check_declare(&stream, false, false, false).is_err());
        assert!(check_declare(&stream, true, true, false).is_err());
        assert!(check_declare(&stream, true, false, true).is_err());
        let ttl = s(&[("x-queue-type", "stream"), ("x-message-ttl", "10")]);
        assert_eq!(
            check_declare(&ttl, true, false, false).unwrap_err().code,
            PRECONDITION_FAILED
        );
        let age = s(&[("x-queue-type", "stream"), ("x-max-age", "soon")]);
        assert!(check_declare(&age, true, false, false).is_err());
        let ops = retention_of(&s(&[("x-max-age", "2h"), ("x-max-length-bytes", "1000")]));
        assert_eq!(ops.len(), 2);
    }
}
