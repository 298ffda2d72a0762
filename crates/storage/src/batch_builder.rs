//! Building Kafka v2 record batches (uncompressed) from single messages: what a front door
//! that receives one message at a time (AMQP, MQTT, RocketMQ) stores, what the broker writes
//! as transaction markers, and what tests feed the produce path. The result always passes
//! [`crate::records::check_batch`]: offset deltas 0.., `lastOffsetDelta = count - 1`,
//! `maxTimestamp` = the largest record timestamp, a correct CRC.

use crate::batch::{CRC_START, HEADER_BYTES, MAGIC_V2};

const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// One record header: name and value (`None`: null).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// Accumulates records, then [`BatchBuilder::build`]s one batch with base offset 0 (storage
/// assigns the real one).
#[derive(Clone, Debug, Default)]
pub struct BatchBuilder {
    section: Vec<u8>,
    count: i32,
    /// Timestamp of the first record: the batch's `baseTimestamp`.
    base_ts: Option<i64>,
    max_ts: i64,
    attributes: i16,
    producer: Option<(i64, i16, i32)>,
}

/// Appends `v` as a zigzag varint, the encoding of every length and delta in a v2 record
/// (for callers that build records by hand, e.g. tests sending malformed ones).
pub fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes_or_null(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder {
            max_ts: i64::MIN,
            ..BatchBuilder::default()
        }
    }

    /// An idempotent producer's batch: id, epoch and the first record's sequence.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer = Some((id, epoch, base_sequence));
        self
    }

    /// Marks the batch transactional (needs [`BatchBuilder::producer`]).
    pub fn transactional(mut self) -> BatchBuilder {
        self.attributes |= ATTR_TRANSACTIONAL;
        self
    }

    /// Marks the batch as a control batch (transaction markers: only the broker writes
    /// them).
    pub fn control(mut self) -> BatchBuilder {
        self.attributes |= ATTR_CONTROL;
        self
    }

    /// Records added so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds a record.
    pub fn record(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: &[Header<'_>],
    ) -> &mut BatchBuilder {
        let base = *self.base_ts.get_or_insert(timestamp_ms);
        self.max_ts = self.max_ts.max(timestamp_ms);
        let mut r =
            Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        r.push(0); // record attributes (unused in v2)
        put_varint(&mut r, timestamp_ms.wrapping_sub(base));
        put_varint(&mut r, i64::from(self.count));
        bytes_or_null(&mut r, key);
        bytes_or_null(&mut r, value);
        put_varint(&mut r, headers.len() as i64);
        for (name, v) in headers {
            bytes_or_null(&mut r, Some(name));
            bytes_or_null(&mut r, *v);
        }
        put_varint(&mut self.section, r.len() as i64);
        self.section.extend_from_slice(&r);
        self.count += 1;
        self
    }

    /// The batch: header, records, CRC. Needs at least one record (a batch of none is
    /// refused by the produce path).
    pub fn build(&self) -> Vec<u8> {
        debug_assert!(self.count > 0, "a batch holds at least one record");
        let base_ts = self.base_ts.unwrap_or(-1);
        let max_ts = if self.count > 0 { self.max_ts } else { -1 };
        let (pid, epoch, seq) = self.producer.unwrap_or((-1, -1, -1));
        let mut b = Vec::with_capacity(HEADER_BYTES + self.section.len());
        b.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
        b.extend_from_slice(&((HEADER_BYTES - 12 + self.section.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&[0; 4]); // crc, below
        b.extend_from_slice(&self.attributes.to_be_bytes());
        b.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&self.count.to_be_bytes());
        b.extend_from_slice(&self.section);
        let crc = crc_fast::crc32_iscsi(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchHeader;
    use crate::records::{check_batch, for_each_record_with_id};

    #[test]
    fn built_batches_pass_the_validator_and_read_back() {
        let mut b = BatchBuilder::new().producer(7, 2, 40).transactional();
        b.record(Some(b"k1"), Some(b"v1"), 1_000, &[(b"msg-id", Some(b"a"))]);
        b.record(None, None, 1_500, &[]);
        b.record(Some(b"k3"), Some(&[9; 300]), 900, &[(b"h", None)]);
        let bytes = b.build();
        let h = BatchHeader::parse(&bytes).unwrap();
        h.verify_crc(0).unwrap();
        assert_eq!(h.record_count(), 3);
        assert_eq!((h.base_timestamp(), h.max_timestamp()), (1_000, 1_500));
        assert_eq!(
            (h.producer_id(), h.producer_epoch(), h.base_sequence()),
            (7, 2, 40)
        );
        assert!(h.is_transactional() && !h.is_control());
        check_batch(&h, 1 << 20, None, |_, _| {}).unwrap();
        let mut seen = Vec::new();
        for_each_record_with_id(&h, h.records(), Some(b"msg-id"), |r, id| {
            seen.push((
                r.offset_delta,
                r.timestamp,
                r.key.map(<[u8]>::to_vec),
                id.map(<[u8]>::to_vec),
            ))
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, 1_000, Some(b"k1".to_vec()), Some(b"a".to_vec())),
                (1, 1_500, None, None),
                (2, 900, Some(b"k3".to_vec()), None),
            ]
        );
    }
}
