//! Zero-copy Fetch responses: kafka-protocol encodes the response into a `SegmentedBuf`;
//! each partition's `records` field is a placeholder, and where the encoder copies it the
//! buffer instead splices in the storage chunks (mmap'd `Bytes`) untouched. The socket
//! writer then sends the segments with vectored writes: record bytes are never copied in
//! user space.
#![allow(unsafe_code)] // see the SAFETY comments

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::OnceLock;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Largest records field that can be spliced; bigger ones are copied (never reached with
/// the default `max_fetch_response_bytes`).
pub const MAX_SPLICE_BYTES: usize = 128 * 1024 * 1024;

/// Placeholder memory: only its address and length are used, it is never read or written.
/// A zeroed heap allocation of this size is mapped lazily by the OS, so it costs address
/// space but no resident pages (a `static` array would put 128 MiB into the binary).
static PLACEHOLDER: OnceLock<&'static [u8]> = OnceLock::new();

fn placeholder_memory() -> &'static [u8] {
    PLACEHOLDER.get_or_init(|| Vec::leak(vec![0u8; MAX_SPLICE_BYTES]))
}

/// A placeholder `Bytes` of `len` bytes to put in a records field, or `None` if too long.
pub fn placeholder(len: usize) -> Option<Bytes> {
    (len > 0 && len <= MAX_SPLICE_BYTES).then(|| Bytes::from_static(&placeholder_memory()[..len]))
}

/// An encode target that holds inline bytes plus spliced chunk lists, in order.
#[derive(Default)]
pub struct SegmentedBuf {
    segments: Vec<Bytes>,
    head: BytesMut,
    /// Bytes in `segments` (the offset where `head` starts).
    base: usize,
    /// Chunk lists to splice, in the order the encoder meets their placeholders.
    splices: VecDeque<Vec<Bytes>>,
    /// Placeholders met without a splice (a bug in the caller; caught by `finish`).
    missing: usize,
}

impl SegmentedBuf {
    pub fn new(splices: Vec<Vec<Bytes>>) -> Self {
        Self {
            splices: splices.into(),
            ..Self::default()
        }
    }

    fn flush_head(&mut self) {
        if !self.head.is_empty() {
            let head = self.head.split();
            self.base += head.len();
            self.segments.push(head.freeze());
        }
    }

    /// The encoded segments; `Err` if placeholders and splices did not pair up.
    pub fn finish(mut self) -> Result<Vec<Bytes>, String> {
        if self.missing > 0 || !self.splices.is_empty() {
            return Err(format!(
                "{} placeholders without data, {} splices unused",
                self.missing,
                self.splices.len()
            ));
        }
        self.flush_head();
        Ok(self.segments)
    }

    pub fn len(&self) -> usize {
        self.base + self.head.len()
    }
}

fn is_placeholder(src: &[u8]) -> bool {
    let Some(memory) = PLACEHOLDER.get() else {
        return false;
    };
    let start = memory.as_ptr() as usize;
    let p = src.as_ptr() as usize;
    !src.is_empty() && p == start && src.len() <= MAX_SPLICE_BYTES
}

// SAFETY: every method forwards to `head`, a `BytesMut`, whose `BufMut` implementation
// upholds the trait's contract; `put_slice` only adds whole segments in between.
unsafe impl BufMut for SegmentedBuf {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `head`'s.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if is_placeholder(src) {
            match self.splices.pop_front() {
                Some(chunks) if chunks.iter().map(Bytes::len).sum::<usize>() == src.len() => {
                    self.flush_head();
                    for c in chunks {
                        self.base += c.len();
                        self.segments.push(c);
                    }
                    return;
                }
                _ => {
                    self.missing += 1;
                }
            }
        }
        self.head.extend_from_slice(src);
    }
}

impl ByteBufMut for SegmentedBuf {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        // Only within the inline tail (message encoding never seeks; records encoding,
        // which does, is not done into this buffer).
        if offset >= self.base {
            self.head.resize(offset - self.base, 0);
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start >= self.base && r.end >= r.start && r.end - self.base <= self.head.len() {
            &mut self.head[r.start - self.base..r.end - self.base]
        } else {
            &mut []
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_chunks_in_order() {
        let a = vec![Bytes::from_static(b"AB"), Bytes::from_static(b"C")];
        let b = vec![Bytes::from_static(b"XYZW")];
        let mut buf = SegmentedBuf::new(vec![a, b]);
        buf.put_i32(3);
        buf.put_slice(&placeholder(3).unwrap());
        buf.put_u8(9);
        buf.put_slice(&placeholder(4).unwrap());
        let segs = buf.finish().unwrap();
        let flat: Vec<u8> = segs.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(flat, b"\0\0\0\x03ABC\x09XYZW");
    }

    #[test]
    fn mismatched_splice_is_an_error() {
        let mut buf = SegmentedBuf::new(vec![vec![Bytes::from_static(b"A")]]);
        buf.put_slice(&placeholder(2).unwrap());
        assert!(buf.finish().is_err());
    }
}
