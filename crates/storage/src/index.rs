//! Key/time index entries: one fixed 32-byte entry per indexed record, in offset order.
//!
//! Entry (little-endian): `key_hash u64 | offset i64 | timestamp i64 | flags u32 | crc u32`,
//! `crc = crc32c(bytes[0..28])`, `flags` bit 0 = the record has a key (else `key_hash` = 0).
//! Lookups scan the partition's entries (page by page from the files, then the in-memory
//! tail); `key_hash` is FNV-1a 64 of the key bytes.

use crate::fixed_files::FixedFiles;

pub const INDEX_ENTRY_BYTES: usize = 32;
pub const FLAG_HAS_KEY: u32 = 1;

pub fn files(per_file: u64) -> FixedFiles {
    FixedFiles {
        ext: "idx",
        entry_size: INDEX_ENTRY_BYTES,
        per_file,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub key_hash: u64,
    pub offset: i64,
    pub timestamp: i64,
    pub flags: u32,
}

impl IndexEntry {
    pub fn has_key(&self) -> bool {
        self.flags & FLAG_HAS_KEY != 0
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.key_hash.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        let crc = crc_fast::crc32_iscsi(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Option<IndexEntry> {
        let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
        if crc_fast::crc32_iscsi(&b[..28]) != crc {
            return None;
        }
        Some(IndexEntry {
            key_hash: u64::from_le_bytes(b[0..8].try_into().ok()?),
            offset: i64::from_le_bytes(b[8..16].try_into().ok()?),
            timestamp: i64::from_le_bytes(b[16..24].try_into().ok()?),
            flags: u32::from_le_bytes(b[24..28].try_into().ok()?),
        })
    }
}

/// FNV-1a, 64 bit: tiny, stable across versions and platforms (it is stored on disk).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
