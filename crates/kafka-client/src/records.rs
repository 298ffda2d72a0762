//! Record batches for the CLI: encode (with any Kafka codec; LZ4 through pure-Rust `lz4_flex`)
//! and decode fetched bytes, which may end with a partial batch the broker cut at max_bytes.

use std::io::{Read, Write};

use anyhow::{Context, Result as AnyResult};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor, Decompressor};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record,
    RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Cap on one decompressed LZ4 batch, so a hostile broker cannot make us allocate without bound.
const MAX_DECOMPRESSED_BYTES: u64 = 256 * 1024 * 1024;

/// A record as the CLI produces it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp_ms: i64,
}

/// Encodes `records` as one v2 record batch (base offset 0; the broker assigns offsets).
pub fn encode_batch(records: &[OutRecord], compression: Compression) -> AnyResult<Bytes> {
    let wire: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder groups records whose offset - sequence agree; this keeps them in
            // one batch with base sequence -1 (NO_SEQUENCE: not idempotent).
            sequence: NO_SEQUENCE.wrapping_add(i as i32),
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        wire.iter(),
        &options,
        Some(compress),
    )
    .context("cannot encode record batch")?;
    Ok(buf.freeze())
}

fn compress(records: &mut BytesMut, out: &mut BytesMut, c: Compression) -> AnyResult<()> {
    let fill = |tmp: &mut BytesMut| -> AnyResult<()> {
        tmp.put_slice(records);
        Ok(())
    };
    match c {
        Compression::None => out.put_slice(records),
        Compression::Gzip => codec::Gzip::compress(out, fill)?,
        Compression::Snappy => codec::Snappy::compress(out, fill)?,
        Compression::Zstd => codec::Zstd::compress(out, fill)?,
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(out.writer());
            enc.write_all(records)?;
            enc.finish().context("lz4 compression failed")?;
        }
    }
    Ok(())
}

fn decompress(data: &mut Bytes, c: Compression) -> AnyResult<Bytes> {
    let take = |b: &mut Bytes| -> AnyResult<Bytes> { Ok(b.copy_to_bytes(b.remaining())) };
    Ok(match c {
        Compression::None => data.copy_to_bytes(data.remaining()),
        Compression::Gzip => codec::Gzip::decompress(data, take)?,
        Compression::Snappy => codec::Snappy::decompress(data, take)?,
        Compression::Zstd => codec::Zstd::decompress(data, take)?,
        Compression::Lz4 => {
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(data.clone().reader())
                .take(MAX_DECOMPRESSED_BYTES)
                .read_to_end(&mut out)
                .context("lz4 decompression failed")?;
            Bytes::from(out)
        }
    })
}

/// Decodes the record batches in a fetch response, skipping control records and a trailing
/// partial batch.
pub fn decode_records(mut data: Bytes) -> AnyResult<Vec<Record>> {
    let mut out = Vec::new();
    while data.len() >= 17 {
        let batch_len = i32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        if batch_len < 0 {
            anyhow::bail!("negative batch length {batch_len}");
        }
        let total = 12 + batch_len as usize;
        if data.len() < total {
            break; // partial batch at the end of a fetch
        }
        let mut batch = data.split_to(total);
        if batch[16] != 2 {
            continue; // message sets v0/v1: not produced by anything we talk to
        }
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut batch, Some(decompress))
            .context("cannot decode a fetched record batch")?;
        out.extend(set.records.into_iter().filter(|r| !r.control));
    }
    Ok(out)
}

/// Kafka's murmur2 hash (as the Java client's default partitioner uses).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Vectors from Kafka's UtilsTest.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    fn sample() -> Vec<OutRecord> {
        (0..50)
            .map(|i| OutRecord {
                key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("value number {i} {}", "x".repeat(i)))),
                headers: vec![("h".to_string(), Some(Bytes::from_static(b"v")))],
                timestamp_ms: 1_700_000_000_000 + i as i64,
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let records = sample();
            let mut bytes = BytesMut::from(&encode_batch(&records, c).unwrap()[..]);
            // Two batches back to back plus a cut-off third.
            let again = encode_batch(&records, c).unwrap();
            bytes.extend_from_slice(&again);
            bytes.extend_from_slice(&again[..again.len() / 2]);
            let decoded = decode_records(bytes.freeze()).unwrap();
            assert_eq!(decoded.len(), 100, "{c:?}");
            for (r, d) in records.iter().zip(&decoded) {
                assert_eq!(r.key, d.key);
                assert_eq!(r.value, d.value);
                assert_eq!(r.timestamp_ms, d.timestamp);
                assert_eq!(d.headers.len(), 1);
            }
            assert_eq!(decoded[1].offset, 1);
        }
    }
}
