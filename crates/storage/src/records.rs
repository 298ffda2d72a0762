//! Decoding the records inside a v2 batch (only the index and `offset_for_timestamp` need
//! this; the produce/fetch path treats batches as opaque).
//!
//! Record: `length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint | key | valueLength varint | value | headerCount varint | headers...`
//! (varints are zigzag, as in protobuf).

use std::borrow::Cow;

use crate::batch::{BatchHeader, Compression};
use crate::compression;
use crate::error::{Result, StorageError};

/// What the index keeps of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta<'a> {
    pub offset_delta: i32,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's headers, still encoded ([`RecordMeta::headers`] walks them).
    pub headers_raw: &'a [u8],
    pub header_count: i32,
}

impl<'a> RecordMeta<'a> {
    /// The headers, (name, value) in order. The record was checked when it was decoded,
    /// so the walk cannot fail; it stops early only on bytes that changed since.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + use<'a> {
        let mut c = Cursor {
            b: self.headers_raw,
            at: 0,
        };
        let mut left = self.header_count.max(0);
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let hk = usize::try_from(c.varint().ok()?).ok()?;
            let name = c.take(hk).ok()?;
            let value = c.bytes().ok()?;
            Some((name, value))
        })
    }
}

fn bad(what: &str) -> StorageError {
    StorageError::InvalidBatch(format!("malformed record: {what}"))
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn varlong(&mut self) -> Result<i64> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.b.get(self.at).ok_or_else(|| bad("truncated varint"))?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err(bad("varint overflow"));
            }
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(bad("varint too long"))
    }
    fn varint(&mut self) -> Result<i32> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| bad("varint out of i32 range"))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| bad("field runs past the record"))?;
        self.at += n;
        Ok(s)
    }
    fn bytes(&mut self) -> Result<Option<&'a [u8]>> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }
}

/// The uncompressed records section of `batch` (decompressing with the `cap`); borrowed
/// when the batch is not compressed.
pub fn records_bytes<'a>(batch: &BatchHeader<'a>, cap: usize) -> Result<Cow<'a, [u8]>> {
    let codec = batch
        .compression()
        .ok_or_else(|| StorageError::InvalidBatch("unknown compression codec".into()))?;
    match codec {
        Compression::None => Ok(Cow::Borrowed(batch.records())),
        c => compression::decompress(c, batch.records(), cap).map(Cow::Owned),
    }
}

/// Calls `f` for each record of the (uncompressed) records section `data`.
pub fn for_each_record<'a>(
    batch: &BatchHeader<'_>,
    data: &'a [u8],
    mut f: impl FnMut(RecordMeta<'a>),
) -> Result<()> {
    for_each_record_with_id(batch, data, None, |r, _| f(r))
}

/// The fewest bytes one v2 record takes: its length, attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each. Bounds what a claimed
/// record count may reserve.
pub const MIN_RECORD_BYTES: usize = 7;

/// Like [`for_each_record`], also passing the value of the record's first header named
/// `id_header` (the message id; `None` when absent, null, or `id_header` is `None`).
///
/// Strict: the section must hold exactly `recordCount` records, each one's fields must fill
/// exactly its declared length, its offset deltas must increase from at least its index up
/// to at most `lastOffsetDelta` (0, 1, … as every client writes them, given
/// [`check_batch`]'s `lastOffsetDelta = count - 1`; a compacted batch has gaps) and its
/// header count must not be negative.
/// Anything else is an [`StorageError::InvalidBatch`] naming the record.
pub fn for_each_record_with_id<'a>(
    batch: &BatchHeader<'_>,
    data: &'a [u8],
    id_header: Option<&[u8]>,
    mut f: impl FnMut(RecordMeta<'a>, Option<&'a [u8]>),
) -> Result<()> {
    let count = batch.record_count();
    if count < 0 {
        return Err(bad("negative record count"));
    }
    let log_append = batch.is_log_append_time();
    let last_delta = batch.last_offset_delta();
    let mut prev_delta = -1;
    let mut c = Cursor { b: data, at: 0 };
    for index in 0..count {
        let len = c.varint()?;
        if len < 0 {
            return Err(bad("negative length"));
        }
        let body = c.take(len as usize)?;
        let mut r = Cursor { b: body, at: 0 };
        r.take(1)?; // attributes (unused in v2)
        let ts_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        // Deltas increase from 0 up to `lastOffsetDelta`; with `lastOffsetDelta = count - 1`
        // (checked by `check_batch` for produced batches) that means exactly 0, 1, …; a
        // compacted batch (`compaction.rs`) keeps its records' deltas, with gaps.
        if offset_delta < index || offset_delta <= prev_delta || offset_delta > last_delta {
            return Err(StorageError::InvalidBatch(format!(
                "record {index} has offset delta {offset_delta} (after {prev_delta}, at most {last_delta})"
            )));
        }
        prev_delta = offset_delta;
        let key = r.bytes()?;
        let value = r.bytes()?;
        let headers = r.varint()?;
        if headers < 0 {
            return Err(bad("negative header count"));
        }
        let headers_start = r.at;
        let mut id = None;
        let mut id_seen = false;
        for _ in 0..headers {
            let hk = r.varint()?;
            if hk < 0 {
                return Err(bad("null header key"));
            }
            let name = r.take(hk as usize)?;
            let value = r.bytes()?;
            if !id_seen && id_header == Some(name) {
                id_seen = true;
                id = value;
            }
        }
        if r.at != body.len() {
            return Err(StorageError::InvalidBatch(format!(
                "record {index} declares {len} bytes but its fields take {}",
                r.at
            )));
        }
        let timestamp = if log_append {
            batch.max_timestamp()
        } else {
            batch.base_timestamp().wrapping_add(ts_delta)
        };
        f(
            RecordMeta {
                offset_delta,
                timestamp,
                key,
                value,
                headers_raw: &body[headers_start..],
                header_count: headers,
            },
            id,
        );
    }
    if c.at != data.len() {
        return Err(StorageError::InvalidBatch(format!(
            "{} bytes follow the last of the {count} records the header declares",
            data.len() - c.at
        )));
    }
    Ok(())
}

/// Checks that a batch's records agree with its header, decoding them (decompressed within
/// `cap`): the declared record count is the number of records, `lastOffsetDelta` is the
/// last record's offset delta, and for CreateTime batches `maxTimestamp` is at least every
/// record's timestamp (a smaller one would let retention and time lookups skip records).
/// Calls `f` for each record on the way, so an indexer decodes once. The header fields are
/// checked before anything is decompressed or allocated from them.
pub fn check_batch<'a>(
    batch: &BatchHeader<'a>,
    cap: usize,
    id_header: Option<&[u8]>,
    mut f: impl FnMut(RecordMeta<'_>, Option<&[u8]>),
) -> Result<()> {
    let count = batch.record_count();
    if count <= 0 {
        return Err(StorageError::InvalidBatch(format!(
            "record count {count}: a batch holds at least one record"
        )));
    }
    if batch.last_offset_delta() != count - 1 {
        return Err(StorageError::InvalidBatch(format!(
            "lastOffsetDelta {} does not match the record count {count}",
            batch.last_offset_delta()
        )));
    }
    // Every record takes some bytes: a count the section cannot hold is refused before
    // decompressing it (the decompressed size is capped by `cap`).
    let room = match batch.compression() {
        Some(Compression::None) => batch.records().len(),
        _ => cap,
    };
    if count as usize > room / MIN_RECORD_BYTES {
        return Err(StorageError::InvalidBatch(format!(
            "record count {count} cannot fit in {room} bytes of records"
        )));
    }
    let data = records_bytes(batch, cap)?;
    let mut max_ts = i64::MIN;
    for_each_record_with_id(batch, &data, id_header, |r, id| {
        max_ts = max_ts.max(r.timestamp);
        f(r, id);
    })?;
    if !batch.is_log_append_time() && max_ts > batch.max_timestamp() {
        return Err(StorageError::InvalidBatch(format!(
            "maxTimestamp {} is older than a record's timestamp {max_ts}",
            batch.max_timestamp()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing;
    use std::io::Write;

    fn decode_all(b: &[u8]) -> Vec<(i32, i64, Option<Vec<u8>>)> {
        let h = BatchHeader::parse(b).unwrap();
        let data = records_bytes(&h, 1 << 20).unwrap();
        let mut out = Vec::new();
        for_each_record(&h, &data, |r| {
            out.push((r.offset_delta, r.timestamp, r.key.map(|k| k.to_vec())))
        })
        .unwrap();
        out
    }

    #[test]
    fn every_codec_decodes_the_same_records() {
        let recs = [
            (Some(&b"a"[..]), &b"1"[..], 0),
            (None, &b"22"[..], 5),
            (Some(&b"c"[..]), &[0u8; 3000][..], 9),
        ];
        let plain = testing::records(&recs);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let lz4 = {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let mut xerial = vec![
            0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
        ];
        xerial.extend_from_slice(&(raw_snappy.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw_snappy);
        let zstd = zstd::encode_all(&plain[..], 1).unwrap();
        let want = vec![
            (0, 1000, Some(b"a".to_vec())),
            (1, 1005, None),
            (2, 1009, Some(b"c".to_vec())),
        ];
        for (codec, payload) in [
            (0, &plain),
            (1, &gz),
            (2, &raw_snappy),
            (2, &xerial),
            (3, &lz4),
            (4, &zstd),
        ] {
            assert_eq!(
                decode_all(&testing::batch(codec, 3, 1000, payload)),
                want,
                "codec {codec}"
            );
        }
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let plain = testing::records(&[(Some(&b"key"[..]), &b"value"[..], 0)]);
        for cut in 0..plain.len() {
            let b = testing::batch(0, 1, 0, &plain[..cut]);
            let h = BatchHeader::parse(&b).unwrap();
            assert!(
                for_each_record(&h, h.records(), |_| {}).is_err(),
                "cut at {cut}"
            );
        }
        let garbage = testing::batch(0, 1, 0, &[0xff; 12]);
        let h = BatchHeader::parse(&garbage).unwrap();
        assert!(for_each_record(&h, h.records(), |_| {}).is_err());
        for codec in 1..=4 {
            let b = testing::batch(codec, 1, 0, b"definitely not compressed");
            let h = BatchHeader::parse(&b).unwrap();
            assert!(records_bytes(&h, 1 << 20).is_err(), "codec {codec}");
        }
    }

    /// `batch` with header bytes `at..at+len` replaced and the CRC recomputed.
    fn patched(mut b: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
        b[at..at + bytes.len()].copy_from_slice(bytes);
        let crc = crc_fast::crc32_iscsi(&b[crate::batch::CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn check(b: &[u8]) -> Result<usize> {
        let h = BatchHeader::parse(b).unwrap();
        let mut n = 0;
        check_batch(&h, 1 << 20, None, |_, _| n += 1).map(|()| n)
    }

    fn refused(b: &[u8], what: &str) {
        match check(b) {
            Err(StorageError::InvalidBatch(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("expected a refusal naming `{what}`, got {other:?}"),
        }
    }

    #[test]
    fn records_must_agree_with_the_header() {
        let three = [(Some(&b"k"[..]), &b"v"[..], 1); 3];
        let good = testing::batch(0, 3, 1000, &testing::records(&three));
        assert_eq!(check(&good).unwrap(), 3);
        // A count the bytes cannot hold is refused before anything is decoded.
        let one = testing::batch(0, 1, 1000, &testing::records(&three[..1]));
        let huge = patched(one.clone(), 57, &i32::MAX.to_be_bytes());
        refused(&huge, "lastOffsetDelta"); // the 69-byte request of issue 13
        refused(
            &patched(huge, 23, &(i32::MAX - 1).to_be_bytes()),
            "cannot fit",
        );
        // More (or fewer) records than declared.
        let fewer = patched(good.clone(), 57, &2i32.to_be_bytes());
        refused(&patched(fewer, 23, &1i32.to_be_bytes()), "follow the last");
        let two = patched(one.clone(), 57, &2i32.to_be_bytes());
        refused(&patched(two, 23, &1i32.to_be_bytes()), "cannot fit");
        refused(
            &patched(one.clone(), 57, &0i32.to_be_bytes()),
            "at least one",
        );
        // lastOffsetDelta must be count - 1 (0 would reuse offsets, 2^31-1 skip them).
        refused(
            &patched(good.clone(), 23, &0i32.to_be_bytes()),
            "lastOffsetDelta",
        );
        refused(
            &patched(one.clone(), 23, &i32::MAX.to_be_bytes()),
            "lastOffsetDelta",
        );
        // A record's offset delta must be its index: duplicate and negative deltas.
        let mut dup = testing::records(&three);
        let second = 1 + (dup[0] / 2) as usize; // zigzag length byte + first record
        dup[second + 3] = 0; // attributes, ts delta (1 byte), then the offset delta
        refused(&testing::batch(0, 3, 1000, &dup), "offset delta 0");
        dup[second + 3] = 1; // zigzag(-1)
        refused(&testing::batch(0, 3, 1000, &dup), "offset delta -1");
        // A record longer than its fields, and bytes after the last record.
        let mut padded = testing::records(&three[..1]);
        padded[0] += 2; // zigzag length + 1
        padded.push(0);
        refused(&testing::batch(0, 1, 1000, &padded), "declares");
        let mut trailing = testing::records(&three[..1]);
        trailing.push(0);
        refused(&testing::batch(0, 1, 1000, &trailing), "follow the last");
        // maxTimestamp below a record's timestamp (1001) would hide it from time lookups.
        refused(
            &patched(one.clone(), 35, &1000i64.to_be_bytes()),
            "maxTimestamp",
        );
        // The same rules inside a compressed batch.
        let z = zstd::encode_all(&testing::records(&three)[..], 1).unwrap();
        assert_eq!(check(&testing::batch(4, 3, 1000, &z)).unwrap(), 3);
        let zbad = patched(testing::batch(4, 3, 1000, &z), 57, &4i32.to_be_bytes());
        refused(&patched(zbad, 23, &3i32.to_be_bytes()), "truncated");
    }
}
