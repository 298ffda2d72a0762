//! Decompression of Kafka record-batch payloads, always bounded by a cap so a small hostile
//! batch cannot make us allocate gigabytes.

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
