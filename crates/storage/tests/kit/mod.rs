//! Test helpers: building Kafka v2 record batches (plain and compressed).
#![allow(dead_code)]

use bytes::BytesMut;
use std::io::Write;

use sluice_storage::batch_builder::put_varint;

pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// One record: (key, value, timestamp).
pub type Rec<'a> = (Option<&'a [u8]>, &'a [u8], i64);

pub fn records_section(recs: &[Rec<'_>], base_ts: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (k, v, ts)) in recs.iter().enumerate() {
        push_record(&mut out, i, *k, v, ts - base_ts, &[]);
    }
    out
}

/// Appends one length-prefixed v2 record.
fn push_record(
    out: &mut Vec<u8>,
    index: usize,
    key: Option<&[u8]>,
    value: &[u8],
    ts_delta: i64,
    headers: &[(&[u8], Option<&[u8]>)],
) {
    fn bytes_or_null(r: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                put_varint(r, b.len() as i64);
                r.extend_from_slice(b);
            }
            None => put_varint(r, -1),
        }
    }
    let mut r = vec![0u8];
    put_varint(&mut r, ts_delta);
    put_varint(&mut r, index as i64);
    bytes_or_null(&mut r, key);
    bytes_or_null(&mut r, Some(value));
    put_varint(&mut r, headers.len() as i64);
    for (name, value) in headers {
        bytes_or_null(&mut r, Some(name));
        bytes_or_null(&mut r, *value);
    }
    put_varint(out, r.len() as i64);
    out.extend_from_slice(&r);
}

pub fn compress(codec: i16, data: &[u8]) -> Vec<u8> {
    match codec {
        NONE => data.to_vec(),
        GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        SNAPPY => {
            // xerial framing, as the Java client writes it
            let mut out = vec![
                0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
            ];
            for chunk in data.chunks(32 * 1024) {
                let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                out.extend_from_slice(&(c.len() as u32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            out
        }
        LZ4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        ZSTD => zstd::encode_all(data, 1).unwrap(),
        _ => panic!("codec"),
    }
}

/// A complete v2 batch with base offset 0.
pub fn batch_with(codec: i16, recs: &[Rec<'_>]) -> Vec<u8> {
    let base_ts = recs.iter().map(|r| r.2).min().unwrap_or(0);
    let max_ts = recs.iter().map(|r| r.2).max().unwrap_or(0);
    let section = records_section(recs, base_ts);
    assemble(codec, recs.len(), base_ts, max_ts, &section)
}

/// Wraps a records section in a v2 batch header (base offset 0, no producer) with its CRC.
fn assemble(codec: i16, count: usize, base_ts: i64, max_ts: i64, section: &[u8]) -> Vec<u8> {
    let payload = compress(codec, section);
    let mut b = Vec::with_capacity(61 + payload.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((49 + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2);
    b.extend_from_slice(&[0; 4]); // crc
    b.extend_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(&((count as i32 - 1).max(0)).to_be_bytes());
    b.extend_from_slice(&base_ts.to_be_bytes());
    b.extend_from_slice(&max_ts.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&(count as i32).to_be_bytes());
    b.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// `n` records with values `value_len` bytes, keys `k{i}`, timestamp `ts`.
pub fn batch(n: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("k{i}").into_bytes()).collect();
    let val = vec![b'v'; value_len];
    let recs: Vec<Rec<'_>> = keys
        .iter()
        .map(|k| (Some(k.as_slice()), val.as_slice(), ts))
        .collect();
    batch_with(NONE, &recs)
}

pub fn bm(b: &[u8]) -> BytesMut {
    BytesMut::from(b)
}

pub fn base_offset(b: &[u8]) -> i64 {
    i64::from_be_bytes(b[0..8].try_into().unwrap())
}

/// A deterministic batch for sequence number `seq` (base offset 0): 1..5 records with
/// key `s{seq}`, values of varying length, timestamp `seq`.
pub fn batch_for_seq(seq: u64) -> Vec<u8> {
    let n = 1 + (seq % 5) as usize;
    let key = format!("s{seq}").into_bytes();
    let val: Vec<u8> = (0..(50 + seq % 300))
        .map(|i| (seq as u8).wrapping_add(i as u8))
        .collect();
    let recs: Vec<Rec<'_>> = (0..n)
        .map(|_| (Some(key.as_slice()), val.as_slice(), seq as i64))
        .collect();
    batch_with(NONE, &recs)
}

/// `b` with its base offset set to `base`.
pub fn with_base(mut b: Vec<u8>, base: i64) -> Vec<u8> {
    b[0..8].copy_from_slice(&base.to_be_bytes());
    b
}

/// A tiny deterministic RNG (xorshift64*), so failures reproduce from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Reads every batch of `p` from its log start; returns them (offsets checked dense).
pub fn read_all(s: &sluice_storage::Store, p: sluice_storage::PartitionId) -> Vec<bytes::Bytes> {
    let o = s.offsets(p).unwrap();
    let mut out = Vec::new();
    let mut off = o.log_start;
    while off < o.log_end {
        let r = s.read(p, off, 1 << 20).unwrap();
        assert!(!r.chunks.is_empty(), "nothing at {off} < {}", o.log_end);
        for c in r.chunks {
            let h = sluice_storage::batch::BatchHeader::parse(&c).unwrap();
            assert!(
                h.base_offset() <= off && off <= h.last_offset(),
                "offsets not dense at {off}"
            );
            h.verify_crc(0).unwrap();
            off = h.last_offset() + 1;
            out.push(c);
        }
    }
    assert_eq!(off, o.log_end);
    out
}

/// One record with headers: (key, value, timestamp, headers (name, value)).
pub type RecH<'a> = (
    Option<&'a [u8]>,
    &'a [u8],
    i64,
    Vec<(&'a [u8], Option<&'a [u8]>)>,
);

/// A complete v2 batch (base offset 0) whose records carry headers.
pub fn batch_with_headers(codec: i16, recs: &[RecH<'_>]) -> Vec<u8> {
    let base_ts = recs.iter().map(|r| r.2).min().unwrap_or(0);
    let max_ts = recs.iter().map(|r| r.2).max().unwrap_or(0);
    let mut section = Vec::new();
    for (i, (k, v, ts, headers)) in recs.iter().enumerate() {
        push_record(&mut section, i, *k, v, ts - base_ts, headers);
    }
    assemble(codec, recs.len(), base_ts, max_ts, &section)
}

/// The commit-log segment files of the store in `dir`, as (base position, path), in order.
pub fn segment_files(dir: &std::path::Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut v: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir.join("commitlog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    v.sort();
    v
}
