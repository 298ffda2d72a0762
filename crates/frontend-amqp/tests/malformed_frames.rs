//! Hostile bytes against the real binary: a malformed frame or an oversized one closes that
//! connection (connection.close 501 FRAME_ERROR, then the socket) with a log line naming the
//! peer, and the server goes on serving other clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, channel, connection};
use amq_protocol::types::{FieldTable, LongString};
use bytes::BytesMut;
use sluice_frontend_amqp::{PROTOCOL_HEADER, decode_frame, encode_frame};
use testkit::Server;

/// A blocking raw AMQP client: frames in and out, nothing else.
struct Raw {
    sock: TcpStream,
    buf: BytesMut,
}

impl Raw {
    fn connect(server: &Server) -> Raw {
        let sock = TcpStream::connect(server.amqp_addr()).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            sock,
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, frame: &AMQPFrame) {
        let mut out = Vec::new();
        encode_frame(frame, &mut out);
        self.sock.write_all(&out).unwrap();
    }

    fn method(&mut self, ch: u16, m: AMQPClass) {
        self.send(&AMQPFrame::Method(ch, m));
    }

    /// The next frame; `None` when the server closed the socket.
    fn recv(&mut self) -> Option<AMQPFrame> {
        loop {
            if let Some(f) = decode_frame(&mut self.buf, 1 << 20).unwrap() {
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Protocol header through open-ok.
    fn handshake(server: &Server) -> Raw {
        let mut c = Raw::connect(server);
        c.sock.write_all(PROTOCOL_HEADER).unwrap();
        assert!(matches!(
            c.recv(),
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Start(_))
            ))
        ));
        c.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(b"\0guest\0guest".to_vec()),
                locale: "en_US".into(),
            })),
        );
        let Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t)))) =
            c.recv()
        else {
            panic!("no tune");
        };
        c.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: t.channel_max,
                frame_max: t.frame_max,
                heartbeat: 0,
            })),
        );
        c.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        );
        assert!(matches!(
            c.recv(),
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
            ))
        ));
        c
    }

    /// Expects connection.close with `code`, then the end of the stream.
    fn expect_closed_with(&mut self, code: u16) {
        match self.recv() {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                assert_eq!(c.reply_code, code, "{c:?}");
            }
            other => panic!("expected connection.close {code}, got {other:?}"),
        }
        assert_eq!(self.recv(), None, "the server must close the socket");
    }

    fn channel_opens(&mut self, ch: u16) {
        self.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        );
        assert!(matches!(
            self.recv(),
            Some(AMQPFrame::Method(c, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)))) if c == ch
        ));
    }
}

#[test]
fn a_malformed_frame_closes_only_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let mut bystander = Raw::handshake(&server);

    let mut hostile = Raw::handshake(&server);
    // A method frame whose payload is no method: class 0xffff, method 0xffff.
    hostile
        .sock
        .write_all(&[1, 0, 1, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0xCE])
        .unwrap();
    hostile.expect_closed_with(501);

    // A frame announcing 2 GiB: refused from its header, before any payload.
    let mut huge = Raw::handshake(&server);
    huge.sock
        .write_all(&[3, 0, 1, 0x7f, 0xff, 0xff, 0xff])
        .unwrap();
    huge.expect_closed_with(501);

    // A wrong frame-end octet.
    let mut bad_end = Raw::handshake(&server);
    bad_end
        .sock
        .write_all(&[8, 0, 0, 0, 0, 0, 0, 0x00])
        .unwrap();
    bad_end.expect_closed_with(501);

    // Not AMQP at all: the server answers with its protocol header and closes.
    let mut http = Raw::connect(&server);
    http.sock.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    http.sock.read_to_end(&mut answer).unwrap();
    assert_eq!(&answer[..], PROTOCOL_HEADER);

    // Everyone else is still served: the open connection and new ones.
    bystander.channel_opens(1);
    Raw::handshake(&server).channel_opens(7);
    let log = server.log();
    assert!(
        log.contains("AMQP connection closed")
            && log.contains("FRAME_ERROR")
            && log.contains("peer="),
        "the closes are logged with the peer and the reason:\n{log}"
    );
}
