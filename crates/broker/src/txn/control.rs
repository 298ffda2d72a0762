//! Transaction markers: the control batches that end a transaction in each partition it
//! wrote to. A marker is a v2 batch with the control and transactional attribute bits, the
//! producer id/epoch of the transaction and one record: key `[version i16 = 0, type i16]`
//! (0 abort, 1 commit), value `[version i16 = 0, coordinator_epoch i32]`.

use bytes::{BufMut, BytesMut};
use storage::batch::{BatchHeader, HEADER_BYTES, LOG_OVERHEAD};

/// Attribute bits of a marker batch: transactional (0x10) | control (0x20).
const MARKER_ATTRIBUTES: i16 = 0x30;
const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;
/// Bytes of a marker record's key and value.
const KEY_BYTES: usize = 4;
const VALUE_BYTES: usize = 6;

/// Encodes a commit (`commit = true`) or abort marker batch (base offset 0: storage
/// assigns it).
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> BytesMut {
    // Record body: attributes, timestampDelta, offsetDelta, keyLen, key, valueLen, value,
    // headerCount. Every varint here is a single byte (zigzag of 0, 4, 6).
    let body_len = 1 + 1 + 1 + 1 + KEY_BYTES + 1 + VALUE_BYTES + 1;
    let total = HEADER_BYTES + 1 + body_len;
    let mut b = BytesMut::with_capacity(total);
    b.put_i64(0); // baseOffset
    b.put_i32((total - LOG_OVERHEAD) as i32); // batchLength
    b.put_i32(-1); // partitionLeaderEpoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, filled below
    b.put_i16(MARKER_ATTRIBUTES);
    b.put_i32(0); // lastOffsetDelta
    b.put_i64(timestamp_ms);
    b.put_i64(timestamp_ms);
    b.put_i64(producer_id);
    b.put_i16(producer_epoch);
    b.put_i32(-1); // baseSequence: markers carry none
    b.put_i32(1); // recordCount
    b.put_u8(zigzag(body_len as i64));
    b.put_i8(0); // record attributes
    b.put_u8(zigzag(0)); // timestampDelta
    b.put_u8(zigzag(0)); // offsetDelta
    b.put_u8(zigzag(KEY_BYTES as i64));
    b.put_i16(0); // key version
    b.put_i16(if commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    });
    b.put_u8(zigzag(VALUE_BYTES as i64));
    b.put_i16(0); // value version
    b.put_i32(coordinator_epoch);
    b.put_u8(zigzag(0)); // headers
    debug_assert_eq!(b.len(), total);
    if let Ok(h) = BatchHeader::parse(&b) {
        let crc = h.computed_crc();
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    b
}

/// Single-byte zigzag varint (values in -64..64).
fn zigzag(v: i64) -> u8 {
    debug_assert!((-64..64).contains(&v));
    ((v << 1) ^ (v >> 63)) as u8
}

/// What a control batch says: `Some(true)` commit, `Some(false)` abort, `None` anything
/// else (unknown control type, undecodable).
pub fn marker_kind(header: &BatchHeader<'_>) -> Option<bool> {
    if !header.is_control() {
        return None;
    }
    let data = storage::records::records_bytes(header, 1 << 20).ok()?;
    let mut kind = None;
    storage::records::for_each_record(header, &data, |r| {
        if let Some(key) = r.key
            && key.len() >= KEY_BYTES
        {
            match i16::from_be_bytes([key[2], key[3]]) {
                CONTROL_TYPE_COMMIT => kind = Some(true),
                CONTROL_TYPE_ABORT => kind = Some(false),
                _ => {}
            }
        }
    })
    .ok()?;
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_pass_batch_validation() {
        for commit in [true, false] {
            let b = marker_batch(42, 3, commit, 0, 1_700_000_000_000);
            let spans = storage::batch::validate_batches(&b).unwrap();
            assert_eq!(spans.len(), 1);
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(h.producer_id(), 42);
            assert_eq!(h.producer_epoch(), 3);
            assert_eq!(h.record_count(), 1);
            assert_eq!(marker_kind(&h), Some(commit));
        }
    }
}
