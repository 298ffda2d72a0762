//! Zero-copy view of a Kafka v2 `RecordBatch` header, and the checks the produce path makes.
//!
//! Layout (big-endian, as on the Kafka wire):
//!
//! | offset | field                 | type  |
//! |--------|-----------------------|-------|
//! | 0      | baseOffset            | int64 |
//! | 8      | batchLength           | int32 | (bytes after this field)
//! | 12     | partitionLeaderEpoch  | int32 |
//! | 16     | magic (= 2)           | int8  |
//! | 17     | crc (CRC32C)          | uint32| covers bytes 21..end
//! | 21     | attributes            | int16 |
//! | 23     | lastOffsetDelta       | int32 |
//! | 27     | baseTimestamp         | int64 |
//! | 35     | maxTimestamp          | int64 |
//! | 43     | producerId            | int64 |
//! | 51     | producerEpoch         | int16 |
//! | 53     | baseSequence          | int32 |
//! | 57     | recordCount           | int32 |
//! | 61     | records...            |       |
//!
//! The CRC does not cover baseOffset, batchLength or partitionLeaderEpoch, so the broker can
//! assign offsets in place without recomputing it.

use crate::error::{Result, StorageError};

/// Bytes before the first record.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength`'s payload starts (baseOffset + batchLength).
pub const LOG_OVERHEAD: usize = 12;
/// Start of the CRC-covered region.
pub const CRC_START: usize = 21;
pub const MAGIC_V2: i8 = 2;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
/// Where the magic byte is (it tells the batch format before anything else is read).
pub const MAGIC_OFFSET: usize = OFF_MAGIC;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_BASE_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Compression codec from the low 3 bits of `attributes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// A borrowed, bounds-checked view of one batch header. Constructing it checks only that
/// the header fits and the length field is sane; call [`BatchHeader::verify_crc`] for the
/// checksum.
#[derive(Clone, Copy, Debug)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl<'a> BatchHeader<'a> {
    /// Parses the header at the start of `bytes`. `bytes` may hold more than this batch;
    /// [`BatchHeader::total_len`] says where it ends (always `<= bytes.len()` on success).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < HEADER_BYTES {
            return Err(StorageError::InvalidBatch(format!(
                "{} bytes left, a v2 batch header needs {HEADER_BYTES}",
                bytes.len()
            )));
        }
        let length = be_i32(bytes, OFF_LENGTH);
        let total = LOG_OVERHEAD as i64 + length as i64;
        if total < HEADER_BYTES as i64 || total > bytes.len() as i64 {
            return Err(StorageError::InvalidBatch(format!(
                "batchLength {length} does not fit the {} bytes given",
                bytes.len()
            )));
        }
        let magic = bytes[OFF_MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(StorageError::InvalidBatch(format!(
                "magic {magic}, only v2 record batches are accepted"
            )));
        }
        Ok(BatchHeader {
            bytes: &bytes[..total as usize],
        })
    }

    /// The whole batch (header and records).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Total bytes of the batch, `12 + batchLength`.
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }
    pub fn base_offset(&self) -> i64 {
        be_i64(self.bytes, OFF_BASE_OFFSET)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(self.bytes, OFF_LENGTH)
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(self.bytes, OFF_EPOCH)
    }
    pub fn magic(&self) -> i8 {
        self.bytes[OFF_MAGIC] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, OFF_CRC) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, OFF_ATTRIBUTES)
    }
    /// The codec, or `None` for the reserved values 5..7.
    pub fn compression(&self) -> Option<Compression> {
        match self.attributes() & ATTR_COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
    /// True when timestamps are LogAppendTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTR_TIMESTAMP_TYPE != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, OFF_LAST_OFFSET_DELTA)
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, OFF_BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, OFF_MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, OFF_PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, OFF_PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, OFF_BASE_SEQUENCE)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(self.bytes, OFF_RECORD_COUNT)
    }
    /// Last offset of the batch, `baseOffset + lastOffsetDelta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + self.last_offset_delta() as i64
    }
    /// The records section (compressed or not).
    pub fn records(&self) -> &'a [u8] {
        &self.bytes[HEADER_BYTES..]
    }
    /// CRC32C of `attributes..end`, as the batch's `crc` field should hold.
    pub fn computed_crc(&self) -> u32 {
        crc_fast::crc32_iscsi(&self.bytes[CRC_START..])
    }
    /// Checks the CRC; `batch_index` only labels the error.
    pub fn verify_crc(&self, batch_index: usize) -> Result<()> {
        let computed = self.computed_crc();
        if computed != self.crc() {
            return Err(StorageError::CorruptBatch {
                batch_index,
                stored: self.crc(),
                computed,
            });
        }
        Ok(())
    }
}

/// Writes `base_offset` into bytes 0..8 of the batch starting at `batch` (not CRC-covered).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes `partitionLeaderEpoch` into the batch in place (not CRC-covered).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[OFF_EPOCH..OFF_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch at the start of `batch` as LogAppendTime stamped `now_ms` (attributes
/// bit 3, `maxTimestamp`), as a broker with `message.timestamp.type=LogAppendTime` does,
/// and recomputes its CRC (both fields are CRC-covered). The batch must have been parsed.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, OFF_ATTRIBUTES) | ATTR_TIMESTAMP_TYPE;
    batch[OFF_ATTRIBUTES..OFF_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc_fast::crc32_iscsi(&batch[CRC_START..]);
    batch[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Splits a produce payload into batches, checking every header, length and CRC, and the
/// sanity of the header fields a log relies on. Returns `(start, len)` of each batch.
/// Nothing is accepted partially: one bad batch fails the whole payload.
pub fn validate_batches(bytes: &[u8]) -> Result<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = BatchHeader::parse(&bytes[at..])?;
        h.verify_crc(out.len())?;
        if h.last_offset_delta() < 0 {
            return Err(StorageError::InvalidBatch(format!(
                "lastOffsetDelta {} is negative",
                h.last_offset_delta()
            )));
        }
        if h.compression().is_none() {
            return Err(StorageError::InvalidBatch(format!(
                "unknown compression codec {}",
                h.attributes() & ATTR_COMPRESSION_MASK
            )));
        }
        if h.record_count() < 0 {
            return Err(StorageError::InvalidBatch("negative record count".into()));
        }
        out.push((at, h.total_len()));
        at += h.total_len();
    }
    if out.is_empty() {
        return Err(StorageError::InvalidBatch(
            "no record batch in the request".into(),
        ));
    }
    Ok(out)
}

/// Builders shared by the crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// One record: key, value, timestamp delta.
    pub type Rec<'a> = (Option<&'a [u8]>, &'a [u8], i64);

    /// Uncompressed records section.
    pub fn records(recs: &[Rec<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (k, v, ts)) in recs.iter().enumerate() {
            let mut r = vec![0u8];
            varint(&mut r, *ts);
            varint(&mut r, i as i64);
            match k {
                Some(k) => {
                    varint(&mut r, k.len() as i64);
                    r.extend_from_slice(k);
                }
                None => varint(&mut r, -1),
            }
            varint(&mut r, v.len() as i64);
            r.extend_from_slice(v);
            varint(&mut r, 0);
            varint(&mut out, r.len() as i64);
            out.extend_from_slice(&r);
        }
        out
    }

    /// A v2 batch around `payload` (already compressed with `codec`).
    pub fn batch(codec: i16, count: i32, base_ts: i64, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((49 + payload.len()) as i32).to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&codec.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&(base_ts + 9).to_be_bytes());
        b.extend_from_slice(&42i64.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&5i32.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(payload);
        let crc = crc_fast::crc32_iscsi(&b[super::CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn simple(n: i32) -> Vec<u8> {
        let recs: Vec<_> = (0..n)
            .map(|_| (Some(&b"key"[..]), &b"value"[..], 1))
            .collect();
        batch(0, n, 1000, &records(&recs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_in_place_offset() {
        let mut b = testing::simple(3);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.batch_length() as usize, b.len() - 12);
        assert_eq!(h.partition_leader_epoch(), 7);
        assert_eq!(h.magic(), 2);
        assert_eq!(h.compression(), Some(Compression::None));
        assert!(!h.is_transactional() && !h.is_control() && !h.is_log_append_time());
        assert_eq!(h.last_offset_delta(), 2);
        assert_eq!((h.base_timestamp(), h.max_timestamp()), (1000, 1009));
        assert_eq!(
            (h.producer_id(), h.producer_epoch(), h.base_sequence()),
            (42, 3, 5)
        );
        assert_eq!(h.record_count(), 3);
        h.verify_crc(0).unwrap();
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 9);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset(), h.last_offset()), (1234, 1236));
        h.verify_crc(0).unwrap(); // the CRC does not cover what we wrote
        set_log_append_time(&mut b, 77_000);
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!((h.max_timestamp(), h.base_timestamp()), (77_000, 1000));
        h.verify_crc(0).unwrap();
    }

    #[test]
    fn validation_refuses_whole_payload() {
        let a = testing::simple(1);
        let mut two = a.clone();
        two.extend_from_slice(&a);
        assert_eq!(
            validate_batches(&two).unwrap(),
            vec![(0, a.len()), (a.len(), a.len())]
        );
        let mut bad = two.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            validate_batches(&bad),
            Err(StorageError::CorruptBatch { batch_index: 1, .. })
        ));
        // batchLength claiming more than there is
        let mut long = a.clone();
        long[8..12].copy_from_slice(&(a.len() as i32).to_be_bytes());
        assert!(matches!(
            validate_batches(&long),
            Err(StorageError::InvalidBatch(_))
        ));
        // negative length
        let mut neg = a.clone();
        neg[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate_batches(&neg),
            Err(StorageError::InvalidBatch(_))
        ));
        // codec 7 (CRC recomputed so only the codec is wrong)
        let mut codec = a.clone();
        codec[22] = 7;
        let crc = crc_fast::crc32_iscsi(&codec[CRC_START..]);
        codec[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batches(&codec),
            Err(StorageError::InvalidBatch(_))
        ));
        assert!(validate_batches(&[]).is_err());
    }
}
