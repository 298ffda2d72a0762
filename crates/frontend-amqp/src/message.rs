//! One AMQP message ↔ one stored record (docs/protocol-mapping.md §AMQP messages):
//! the routing key is the record key, the body the record value, and two record headers
//! carry the rest — `amqp.exchange` (the exchange it was published to) and
//! `amqp.properties` (the content header's property flags and values in AMQP's own
//! encoding, so all 14 properties and every field-table type round-trip exactly). Records
//! without them (a Kafka producer's) are delivered with no properties, from exchange "",
//! with the record key (or the queue name) as routing key.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::BasicProperties;
use amq_protocol::protocol::basic::{gen_properties, parse_properties};
use broker::StoredRecord;
use broker::batch::BatchBuilder;
use broker::queue::{HEADER_PRIORITY, HEADER_TTL_MS};
use bytes::BytesMut;

use crate::errors::{AmqpError, PRECONDITION_FAILED};

/// Record header naming the exchange a message was published to.
pub const HEADER_EXCHANGE: &str = "amqp.exchange";
/// Record header holding the message properties in AMQP's content-header encoding.
pub const HEADER_PROPERTIES: &str = "amqp.properties";

/// 406 PRECONDITION_FAILED for an `expiration` that is not a non-negative integer of
/// milliseconds (RabbitMQ refuses the publish).
pub fn check_expiration(p: &BasicProperties) -> Result<(), AmqpError> {
    match p.expiration() {
        Some(e) if e.as_str().parse::<u64>().is_err() => Err(AmqpError::channel(
            PRECONDITION_FAILED,
            format!("invalid expiration '{}'", e.as_str()),
        )),
        _ => Ok(()),
    }
}

/// A message as published or delivered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// The properties in AMQP's encoding (flags, then the values present).
pub fn encode_properties(p: &BasicProperties) -> Vec<u8> {
    match gen_properties(p)(WriteContext::from(Vec::new())) {
        Ok(ctx) => ctx.into_inner().0,
        Err(e) => {
            tracing::error!(error = ?e, "encoding AMQP properties failed");
            vec![0, 0]
        }
    }
}

impl Message {
    /// A one-record batch for the produce path, stamped `timestamp_ms`.
    /// `due_ms`: a delayed message's due time (the queue layer's `queue.due_ms` header).
    pub fn to_batch(&self, timestamp_ms: i64, due_ms: Option<i64>) -> BytesMut {
        let properties = encode_properties(&self.properties);
        let mut headers: Vec<(&[u8], Option<&[u8]>)> = vec![
            (HEADER_EXCHANGE.as_bytes(), Some(self.exchange.as_bytes())),
            (HEADER_PROPERTIES.as_bytes(), Some(&properties)),
        ];
        // What the queue layer reads for its policies: the message's TTL and priority.
        let ttl = self
            .properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse::<u64>().ok())
            .map(|n| n.min(i64::MAX as u64).to_string());
        if let Some(ttl) = &ttl {
            headers.push((HEADER_TTL_MS.as_bytes(), Some(ttl.as_bytes())));
        }
        let priority = self.properties.priority().map(|p| p.to_string());
        if let Some(priority) = &priority {
            headers.push((HEADER_PRIORITY.as_bytes(), Some(priority.as_bytes())));
        }
        let due = due_ms.map(|d| d.to_string());
        if let Some(due) = &due {
            headers.push((
                broker::queue::HEADER_DUE_MS.as_bytes(),
                Some(due.as_bytes()),
            ));
        }
        let mut b = BatchBuilder::new();
        b.record(
            Some(self.routing_key.as_bytes()),
            Some(&self.body),
            timestamp_ms,
            &headers,
        );
        BytesMut::from(&b.build()[..])
    }

    /// The message a stored record of queue `queue` holds.
    pub fn from_record(record: &StoredRecord, queue: &str) -> Message {
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| &k[..] == name.as_bytes())
                .and_then(|(_, v)| v.clone())
        };
        let properties = header(HEADER_PROPERTIES)
            .and_then(|raw| parse_properties(&raw[..]).ok().map(|(_, p)| p))
            .unwrap_or_default();
        let exchange = header(HEADER_EXCHANGE)
            .map(|e| String::from_utf8_lossy(&e).into_owned())
            .unwrap_or_default();
        let routing_key = record.key.as_ref().map_or_else(
            || queue.to_string(),
            |k| String::from_utf8_lossy(k).into_owned(),
        );
        Message {
            exchange,
            routing_key,
            properties,
            body: record
                .value
                .as_ref()
                .map(|v| v.to_vec())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, FieldTable, LongString};

    #[test]
    fn properties_and_nested_headers_survive_the_record() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(-7));
        let mut headers = FieldTable::default();
        headers.insert("s".into(), AMQPValue::LongString(LongString::from("v")));
        headers.insert("t".into(), AMQPValue::FieldTable(inner));
        let sent = Message {
            exchange: "amq.direct".into(),
            routing_key: "rk".into(),
            properties: BasicProperties::default()
                .with_content_type("text/plain".into())
                .with_delivery_mode(2)
                .with_correlation_id("c-1".into())
                .with_timestamp(1_700_000_000)
                .with_headers(headers),
            body: b"hello".to_vec(),
        };
        let encoded = encode_properties(&sent.properties);
        let (_, back) = parse_properties(&encoded[..]).unwrap();
        assert_eq!(back, sent.properties);
        let record = StoredRecord {
            offset: 0,
            timestamp_ms: 1,
            key: Some("rk".into()),
            value: Some(bytes::Bytes::from_static(b"hello")),
            headers: vec![
                (HEADER_EXCHANGE.into(), Some("amq.direct".into())),
                (HEADER_PROPERTIES.into(), Some(encoded.into())),
            ],
        };
        assert_eq!(Message::from_record(&record, "q"), sent);
    }
}
