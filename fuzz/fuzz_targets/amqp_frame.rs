//! AMQP 0-9-1 framing and decoding: arbitrary bytes as they would arrive on a socket, after
//! the protocol header. A frame over the limit must be refused from its header (before
//! its payload is buffered); anything that does not decode is an error, never a panic; a
//! frame that decodes encodes back within the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice_frontend_amqp::{FrameError, decode_frame, decode_protocol_header, encode_frame};

/// Small, so the fuzzer explores "too large" as well as real frames.
const MAX_FRAME: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // Half the inputs start with a valid protocol header, so frames get explored too.
    if data.first().is_some_and(|b| b & 1 == 0) {
        let mut with_header = BytesMut::from(&b"AMQP\x00\x00\x09\x01"[..]);
        with_header.extend_from_slice(&data[1..]);
        buf = with_header;
    }
    match decode_protocol_header(&mut buf) {
        Ok(Some(())) => {}
        Ok(None) | Err(_) => return,
    }
    loop {
        match decode_frame(&mut buf, MAX_FRAME) {
            Ok(Some(frame)) => {
                let mut out = Vec::new();
                encode_frame(&frame, &mut out);
                assert!(out.len() <= MAX_FRAME, "{} bytes re-encoded", out.len());
            }
            Ok(None) => return,
            Err(FrameError::TooLarge { size, max }) => {
                assert!(size > max);
                return;
            }
            Err(_) => return,
        }
    }
});
