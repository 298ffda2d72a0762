//! Connection start-up: protocol header, start/start-ok (PLAIN or AMQPLAIN; the users of
//! `amqp.users`, and guest/guest from loopback only, as RabbitMQ), tune/tune-ok
//! (channel_max, frame_max, heartbeat: the smaller of ours and the client's, 0 meaning "no
//! limit" for the first two), open/open-ok (a vhost of `amqp.vhosts` the user may open;
//! else 530). Each step must arrive within [`HANDSHAKE_TIMEOUT`]. Rules: `vhost.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::{AMQPValue, FieldTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::codec::{PROTOCOL_HEADER, decode_frame, decode_protocol_header};
use crate::connection::Connection;
use crate::errors::{ACCESS_REFUSED, AmqpError, COMMAND_INVALID, FRAME_ERROR, NOT_ALLOWED};
use crate::vhost::Access;

/// How long each handshake step may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The smallest frame_max the spec allows.
const MIN_FRAME_MAX: u32 = 4096;

impl Connection {
    /// Runs the handshake; `Err`: why the connection ends (already told to the client).
    pub(crate) async fn handshake(&mut self) -> Result<(), String> {
        self.read_protocol_header().await?;
        self.session.out.method(0, start_method());
        let start_ok = match self.expect_method().await? {
            AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => s,
            other => return Err(self.unexpected(other).await),
        };
        let user = match check_login(&self.session.door.access, &start_ok, self.session.peer) {
            Ok(user) => user,
            Err(e) => return Err(self.close_with(&e).await),
        };
        self.session.cancel_notify = has_capability(&start_ok, "consumer_cancel_notify");
        self.session.blocked_notify = has_capability(&start_ok, "connection.blocked");
        let ours = &self.session.door.config;
        let tune = connection::Tune {
            channel_max: ours.channel_max,
            frame_max: ours.frame_max,
            heartbeat: ours.heartbeat_s,
        };
        self.session
            .out
            .method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune)));
        let tune_ok = match self.expect_method().await? {
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) => t,
            other => return Err(self.unexpected(other).await),
        };
        self.apply_tune(&tune_ok).await?;
        let open = match self.expect_method().await? {
            AMQPClass::Connection(connection::AMQPMethod::Open(o)) => o,
            other => return Err(self.unexpected(other).await),
        };
        match self
            .session
            .door
            .access
            .open(&user, open.virtual_host.as_str())
        {
            Ok(vhost) => self.session.vhost = vhost,
            Err(e) => return Err(self.close_with(&e).await),
        }
        self.session.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        self.flush().await.map_err(|e| format!("write failed: {e}"))
    }

    async fn apply_tune(&mut self, t: &connection::TuneOk) -> Result<(), String> {
        let ours = self.session.door.config.clone();
        let pick = |theirs: u32, ours: u32| if theirs == 0 { ours } else { theirs.min(ours) };
        let frame_max = pick(t.frame_max, ours.frame_max);
        if frame_max < MIN_FRAME_MAX {
            let e = AmqpError::connection(
                NOT_ALLOWED,
                format!("frame_max {frame_max} is below the minimum {MIN_FRAME_MAX}"),
            );
            return Err(self.close_with(&e).await);
        }
        self.session.out.frame_max = frame_max as usize;
        self.channel_max = pick(u32::from(t.channel_max), u32::from(ours.channel_max)) as u16;
        self.heartbeat_s = t.heartbeat;
        Ok(())
    }

    async fn read_protocol_header(&mut self) -> Result<(), String> {
        loop {
            match decode_protocol_header(&mut self.buf) {
                Ok(Some(())) => return Ok(()),
                Ok(None) => self.read_some().await?,
                Err(e) => {
                    // The spec's answer to a wrong header: ours, then close.
                    let _ = self.writer_mut().write_all(PROTOCOL_HEADER).await;
                    return Err(e.to_string());
                }
            }
        }
    }

    /// Flushes, then waits for the next method frame on channel 0.
    async fn expect_method(&mut self) -> Result<AMQPClass, String> {
        self.flush()
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        loop {
            match decode_frame(&mut self.buf, self.session.out.frame_max) {
                Ok(Some(AMQPFrame::Method(0, m))) => return Ok(m),
                Ok(Some(AMQPFrame::Heartbeat)) => {}
                Ok(Some(other)) => {
                    let e = AmqpError::connection(
                        COMMAND_INVALID,
                        format!("unexpected frame during the handshake: {other}"),
                    );
                    return Err(self.close_with(&e).await);
                }
                Ok(None) => self.read_some().await?,
                Err(e) => {
                    let e = AmqpError::connection(FRAME_ERROR, e.to_string());
                    return Err(self.close_with(&e).await);
                }
            }
        }
    }

    async fn read_some(&mut self) -> Result<(), String> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.reader.read_buf(&mut self.buf)).await {
            Err(_) => Err("handshake timed out".to_string()),
            Ok(Ok(0)) => Err("the client closed the socket during the handshake".to_string()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("read failed: {e}")),
        }
    }

    async fn unexpected(&mut self, m: AMQPClass) -> String {
        let e = AmqpError::connection(
            COMMAND_INVALID,
            format!("unexpected {m:?} during the handshake"),
        );
        self.close_with(&e).await
    }
}

fn start_method() -> AMQPClass {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "connection.blocked",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("product".into(), AMQPValue::LongString("Sluice".into()));
    props.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: "PLAIN AMQPLAIN".into(),
        locales: "en_US".into(),
    }))
}

/// Whether the client's start-ok announces `capability` (client_properties.capabilities).
fn has_capability(s: &connection::StartOk, capability: &str) -> bool {
    match s.client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => {
            matches!(caps.inner().get(capability), Some(AMQPValue::Boolean(true)))
        }
        _ => false,
    }
}

/// Checks the credentials of start-ok; returns the user's name.
fn check_login(
    access: &Access,
    s: &connection::StartOk,
    peer: SocketAddr,
) -> Result<String, AmqpError> {
    let response = s.response.as_bytes();
    let creds = match s.mechanism.as_str() {
        "PLAIN" => plain(response),
        "AMQPLAIN" => amqplain(response),
        other => {
            return Err(AmqpError::connection(
                ACCESS_REFUSED,
                format!("unsupported mechanism {other}"),
            ));
        }
    };
    let (user, pass) = creds.ok_or_else(|| {
        AmqpError::connection(ACCESS_REFUSED, "login refused: malformed credentials")
    })?;
    access.login(&user, &pass, peer.ip())
}

/// PLAIN: `authzid \0 user \0 password`.
fn plain(response: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    Some((parts.next()?.to_vec(), parts.next()?.to_vec()))
}

/// AMQPLAIN: a field table without its length prefix, with LOGIN and PASSWORD.
fn amqplain(response: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut framed = (response.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    let text = |k: &str| match table.inner().get(k)? {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn guest_only() -> Access {
        Access {
            vhosts: vec!["/".into()],
            users: Vec::new(),
        }
    }

    fn start_ok(mechanism: &str, response: Vec<u8>) -> connection::StartOk {
        connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: mechanism.into(),
            response: LongString::from(response),
            locale: "en_US".into(),
        }
    }

    #[test]
    fn guest_logs_in_from_loopback_only() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let ok = start_ok("PLAIN", b"\0guest\0guest".to_vec());
        assert!(check_login(&guest_only(), &ok, local).is_ok());
        assert_eq!(
            check_login(&guest_only(), &ok, remote).unwrap_err().code,
            ACCESS_REFUSED
        );
        let wrong = start_ok("PLAIN", b"\0guest\0nope".to_vec());
        assert!(check_login(&guest_only(), &wrong, local).is_err());
    }

    #[test]
    fn capabilities_are_read_from_the_client_properties() {
        let mut caps = FieldTable::default();
        caps.insert("consumer_cancel_notify".into(), AMQPValue::Boolean(true));
        caps.insert("basic.nack".into(), AMQPValue::Boolean(false));
        let mut s = start_ok("PLAIN", Vec::new());
        assert!(!has_capability(&s, "consumer_cancel_notify"));
        s.client_properties
            .insert("capabilities".into(), AMQPValue::FieldTable(caps));
        assert!(has_capability(&s, "consumer_cancel_notify"));
        assert!(!has_capability(&s, "basic.nack"));
    }

    #[test]
    fn amqplain_reads_login_and_password() {
        use amq_protocol::frame::WriteContext;
        let mut t = FieldTable::default();
        t.insert("LOGIN".into(), AMQPValue::LongString("guest".into()));
        t.insert("PASSWORD".into(), AMQPValue::LongString("guest".into()));
        let encoded =
            amq_protocol::types::generation::gen_field_table(&t)(WriteContext::from(Vec::new()))
                .unwrap()
                .into_inner()
                .0;
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(
            check_login(
                &guest_only(),
                &start_ok("AMQPLAIN", encoded[4..].to_vec()),
                local
            )
            .is_ok()
        );
    }
}
