//! Frames on the wire: the protocol header, then frames of `type, channel, size, payload,
//! 0xCE`. The announced size is checked against the negotiated `frame_max` before anything
//! is allocated for the payload; the payload is decoded by `amq-protocol` (sans I/O).

use amq_protocol::frame::{AMQPFrame, WriteContext, gen_frame, parse_frame};
use bytes::BytesMut;

/// Type (1), channel (2) and payload size (4) before the payload.
pub const FRAME_HEADER_BYTES: usize = 7;
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Header and end octet: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_BYTES + 1;
/// The protocol header a client opens with (AMQP 0-9-1), and the server's answer to any
/// other.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// Why bytes from a client are not a frame; each closes the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("protocol header {0:?} is not AMQP 0-9-1")]
    BadProtocolHeader(Vec<u8>),
    #[error("frame of {size} bytes exceeds frame_max {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame does not end with 0xCE (got {0:#04x})")]
    BadFrameEnd(u8),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Takes the protocol header from `buf` once 8 bytes are there.
pub fn decode_protocol_header(buf: &mut BytesMut) -> Result<Option<()>, FrameError> {
    if buf.len() < PROTOCOL_HEADER.len() {
        // A prefix that already differs fails now, not after a stall.
        if !PROTOCOL_HEADER.starts_with(&buf[..]) {
            return Err(FrameError::BadProtocolHeader(buf.to_vec()));
        }
        return Ok(None);
    }
    let header = buf.split_to(PROTOCOL_HEADER.len());
    if &header[..] != PROTOCOL_HEADER {
        return Err(FrameError::BadProtocolHeader(header.to_vec()));
    }
    Ok(Some(()))
}

/// Takes one frame from `buf` when it is complete; `max_frame` bounds the whole frame.
pub fn decode_frame(buf: &mut BytesMut, max_frame: usize) -> Result<Option<AMQPFrame>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size.saturating_add(FRAME_OVERHEAD);
    if total > max_frame {
        return Err(FrameError::TooLarge {
            size: total,
            max: max_frame,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let frame = buf.split_to(total);
    if frame[total - 1] != FRAME_END {
        return Err(FrameError::BadFrameEnd(frame[total - 1]));
    }
    match parse_frame(&frame[..]) {
        Ok(([], AMQPFrame::ProtocolHeader(_))) => Err(FrameError::Malformed(
            "a protocol header inside the connection".to_string(),
        )),
        Ok(([], f)) => Ok(Some(f)),
        Ok((rest, _)) => Err(FrameError::Malformed(format!(
            "{} bytes left over after the frame",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Malformed(format!("{e:?}"))),
    }
}

/// Appends `frame`'s encoding to `out`.
pub fn encode_frame(frame: &AMQPFrame, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    match gen_frame(frame)(WriteContext::from(buf)) {
        Ok(ctx) => *out = ctx.into_inner().0,
        // Encoding into a Vec fails only on values the server itself built too large
        // (a short string over 255 bytes): a programming error, logged, frame dropped.
        Err(e) => tracing::error!(error = ?e, "encoding an AMQP frame failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::{AMQPClass, channel};

    fn encoded(frame: &AMQPFrame) -> BytesMut {
        let mut out = Vec::new();
        encode_frame(frame, &mut out);
        BytesMut::from(&out[..])
    }

    #[test]
    fn a_frame_round_trips_and_waits_for_its_last_byte() {
        let frame = AMQPFrame::Method(
            3,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        let full = encoded(&frame);
        let mut partial = BytesMut::from(&full[..full.len() - 1]);
        assert_eq!(decode_frame(&mut partial, 4096), Ok(None));
        let mut buf = full.clone();
        assert_eq!(decode_frame(&mut buf, 4096), Ok(Some(frame)));
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_announcement_fails_before_the_payload_arrives() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            decode_frame(&mut buf, 131_072),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_payloads_and_bad_frame_ends_are_errors_not_panics() {
        let mut bad_end = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0x00][..]);
        assert_eq!(
            decode_frame(&mut bad_end, 4096),
            Err(FrameError::BadFrameEnd(0))
        );
        let mut garbage = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xCE][..]);
        assert!(matches!(
            decode_frame(&mut garbage, 4096),
            Err(FrameError::Malformed(_))
        ));
        let mut header = BytesMut::from(&b"HTTP/1.1"[..]);
        assert!(decode_protocol_header(&mut header).is_err());
    }
}
