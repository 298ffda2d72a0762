//! Decompression of Kafka record-batch payloads, always bounded by a cap so a small hostile
//! batch cannot make us allocate gigabytes; and compression, for the batches log compaction
//! rewrites (`compaction.rs`) in their producer's codec.

use std::io::Read;

use crate::batch::Compression;
use crate::error::{Result, StorageError};

/// Kafka's snappy framing (xerial snappy-java): 8-byte magic, two i32 versions, then
/// blocks of `i32 compressed length | raw snappy block`.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn too_big(cap: usize) -> StorageError {
    StorageError::InvalidBatch(format!("records decompress to more than {cap} bytes"))
}

fn bad(codec: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::InvalidBatch(format!("{codec} payload does not decompress: {e}"))
}

fn read_capped(r: impl Read, cap: usize, codec: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(codec, e))?;
    if out.len() > cap {
        return Err(too_big(cap));
    }
    Ok(out)
}

/// Decompresses `data` compressed with `codec`, refusing output larger than `cap` bytes.
pub fn decompress(codec: Compression, data: &[u8], cap: usize) -> Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(data), cap, "gzip"),
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(data), cap, "lz4"),
        Compression::Zstd => {
            let d = zstd::stream::read::Decoder::new(data).map_err(|e| bad("zstd", e))?;
            read_capped(d, cap, "zstd")
        }
        Compression::Snappy => snappy(data, cap),
    }
}

/// Compresses `data` with `codec` as Kafka producers do (snappy in xerial framing, lz4 as
/// an lz4 frame).
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let failed = |codec: &str, e: std::io::Error| {
        StorageError::InvalidBatch(format!("{codec} compression failed: {e}"))
    };
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data)
                .and_then(|()| enc.finish())
                .map_err(|e| failed("gzip", e))
        }
        Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(data).map_err(|e| failed("lz4", e))?;
            enc.finish()
                .map_err(|e| failed("lz4", std::io::Error::other(e)))
        }
        Compression::Zstd => zstd::bulk::compress(data, 3).map_err(|e| failed("zstd", e)),
        Compression::Snappy => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
            let mut enc = snap::raw::Encoder::new();
            for block in data.chunks(32 << 10) {
                let c = enc
                    .compress_vec(block)
                    .map_err(|e| failed("snappy", std::io::Error::other(e)))?;
                out.extend_from_slice(&(c.len() as i32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
    }
}

fn snappy(data: &[u8], cap: usize) -> Result<Vec<u8>> {
    if data.len() >= 16 && data[..8] == XERIAL_MAGIC {
        let mut out = Vec::new();
        let mut at = 16;
        while at < data.len() {
            let len_bytes: [u8; 4] = data
                .get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| bad("snappy", "truncated xerial block header"))?;
            let len = u32::from_be_bytes(len_bytes) as usize;
            at += 4;
            let block = data
                .get(at..at + len)
                .ok_or_else(|| bad("snappy", "truncated xerial block"))?;
            at += len;
            raw_snappy(block, cap - out.len(), &mut out)?;
        }
        Ok(out)
    } else {
        let mut out = Vec::new();
        raw_snappy(data, cap, &mut out)?;
        Ok(out)
    }
}

fn raw_snappy(block: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<()> {
    let n = snap::raw::decompress_len(block).map_err(|e| bad("snappy", e))?;
    if n > cap {
        return Err(too_big(cap));
    }
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| bad("snappy", e))?;
    Ok(())
}
