//! Frames waiting to be written to one connection: methods, and content (header + body
//! frames cut to the negotiated frame_max). The connection writes them out after each
//! batch of work, so a slow reader slows the connection (TCP backpressure), not memory.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{AMQPClass, BasicProperties};

use crate::codec::{FRAME_OVERHEAD, encode_frame};

/// basic's class id, on content headers.
const BASIC_CLASS: u16 = 60;

/// Encoded frames not yet written.
pub struct Outbox {
    pub buf: Vec<u8>,
    /// Negotiated frame_max: bodies are cut to fit.
    pub frame_max: usize,
}

impl Outbox {
    pub fn new(frame_max: usize) -> Outbox {
        Outbox {
            buf: Vec::with_capacity(4096),
            frame_max,
        }
    }

    pub fn frame(&mut self, frame: &AMQPFrame) {
        encode_frame(frame, &mut self.buf);
    }

    pub fn method(&mut self, channel: u16, method: AMQPClass) {
        self.frame(&AMQPFrame::Method(channel, method));
    }

    /// A content header and the body frames after a basic.deliver/get-ok/return.
    pub fn content(&mut self, channel: u16, properties: &BasicProperties, body: &[u8]) {
        self.frame(&AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: BASIC_CLASS,
                body_size: body.len() as u64,
                properties: properties.clone(),
            },
        ));
        let chunk = self.frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
        for part in body.chunks(chunk) {
            // Body frames are written by hand: the codec's frame owns a Vec, and a copy per
            // chunk is what that would cost.
            self.buf.push(3);
            self.buf.extend_from_slice(&channel.to_be_bytes());
            self.buf
                .extend_from_slice(&(part.len() as u32).to_be_bytes());
            self.buf.extend_from_slice(part);
            self.buf.push(crate::codec::FRAME_END);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}
