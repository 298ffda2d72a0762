//! One client connection: the handshake (`handshake.rs`), then a loop that reads frames,
//! hands each to its channel's handler, pumps deliveries to consumers when messages may be
//! available (an append, a requeue anywhere, an ack here), sends heartbeats and writes what
//! the handlers queued. Everything a connection does happens on its own task, in order;
//! it shares only the [`Door`].
//!
//! On the way out — client close, error, malformed frame, missed heartbeats, shutdown —
//! every channel releases the messages it holds (they go back to their queues, marked
//! redelivered) and the connection's exclusive queues are deleted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::channel::Channel;
use crate::codec::decode_frame;
use crate::confirm::{ConfirmWait, MAX_WAITS, next_resolved};
use crate::door::Door;
use crate::errors::{
    AmqpError, CHANNEL_ERROR, COMMAND_INVALID, CONNECTION_FORCED, FRAME_ERROR, NOT_IMPLEMENTED,
    PRECONDITION_FAILED, Scope, UNEXPECTED_FRAME,
};
use crate::outbox::Outbox;

/// What a connection's handlers share (everything but its channels).
pub struct Session {
    pub door: Arc<Door>,
    pub out: Outbox,
    pub peer: SocketAddr,
    /// This connection's id in the door (owner of its exclusive queues).
    pub id: u64,
    /// The client announced the `consumer_cancel_notify` capability: it is told with a
    /// basic.cancel when the broker ends one of its consumers.
    pub cancel_notify: bool,
    /// The client announced the `connection.blocked` capability: it is told when a
    /// resource alarm blocks it (`alarm.rs`).
    pub blocked_notify: bool,
    /// The connection has published: a resource alarm blocks it.
    pub publisher: bool,
    /// The vhost opened (connection.open): names the client sends are local to it.
    pub vhost: crate::vhost::Vhost,
    /// Exclusive queues declared here: deleted when the connection ends.
    pub exclusive: Vec<String>,
    /// Consumers may have room or messages may be waiting: pump before sleeping.
    pub dirty: bool,
    /// Publishes of the read being handled whose confirms wait (`confirm.rs`).
    pub confirms: Vec<crate::confirm::PendingConfirm>,
    /// basic.acks of the read being handled, applied together (one state record per
    /// queue and consumer, not one per ack) before any other method and at the read's end.
    pub acks: crate::channel::Taken,
}

/// One connection.
pub struct Connection {
    pub(crate) reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    pub(crate) buf: BytesMut,
    pub(crate) session: Session,
    pub(crate) channels: HashMap<u16, Channel>,
    pub(crate) channel_max: u16,
    pub(crate) heartbeat_s: u16,
    last_received: Instant,
    /// Reads whose confirms wait for the disk, oldest first (`confirm.rs`).
    pub(crate) waits: VecDeque<ConfirmWait>,
    /// Channels opened so far (each channel's epoch).
    opened: u64,
    /// A resource alarm holds this publishing connection: not read from (`alarm.rs`).
    /// connection.blocked was sent while it is, if the client asked for it.
    blocked: bool,
}

/// What a frame asks of its channel.
enum Work {
    Header(u64, amq_protocol::protocol::BasicProperties),
    Body(Vec<u8>),
    Method(AMQPClass),
}

/// Why the frame loop stopped.
enum Stop {
    /// The client closed (connection.close or its close-ok).
    Closed,
    /// Anything else, with the reason logged.
    Failed(String),
}

/// Serves one accepted connection to the end.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    door: Arc<Door>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let frame_max = door.config.frame_max as usize;
    let (reader, writer) = stream.into_split();
    let mut conn = Connection {
        reader,
        writer,
        buf: BytesMut::with_capacity(8192),
        session: Session {
            id: door.next_connection_id(),
            cancel_notify: false,
            blocked_notify: false,
            publisher: false,
            vhost: crate::vhost::Vhost::default(),
            door,
            out: Outbox::new(frame_max),
            peer,
            exclusive: Vec::new(),
            dirty: false,
            confirms: Vec::new(),
            acks: Vec::new(),
        },
        channels: HashMap::new(),
        channel_max: 0,
        heartbeat_s: 0,
        last_received: Instant::now(),
        waits: VecDeque::new(),
        opened: 0,
        blocked: false,
    };
    let stop = match conn.handshake().await {
        Ok(()) => conn.serve(shutdown).await,
        Err(reason) => Stop::Failed(reason),
    };
    match stop {
        Stop::Closed => tracing::debug!(%peer, "AMQP connection closed by the client"),
        Stop::Failed(reason) => tracing::warn!(%peer, %reason, "AMQP connection closed"),
    }
    conn.cleanup().await;
}

impl Connection {
    pub(crate) fn writer_mut(&mut self) -> &mut OwnedWriteHalf {
        &mut self.writer
    }

    /// Writes what the handlers queued.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        if !self.session.out.is_empty() {
            self.writer.write_all(&self.session.out.buf).await?;
            self.session.out.buf.clear();
        }
        Ok(())
    }

    /// Sends connection.close for `e` and says why the connection ends.
    pub(crate) async fn close_with(&mut self, e: &AmqpError) -> String {
        let close = connection::Close {
            reply_code: e.code,
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        self.session.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
        );
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
        format!("{} {}", e.code, e.reply_text())
    }

    async fn serve(&mut self, mut shutdown: watch::Receiver<bool>) -> Stop {
        let mut appends = self.session.door.broker.subscribe_appends();
        let mut wake = self.session.door.subscribe_wake();
        let mut alarm = self.session.door.subscribe_alarm();
        let beat = match self.heartbeat_s {
            0 => Duration::from_secs(3600),
            s => Duration::from_secs(u64::from(s)) / 2,
        };
        let mut ticks = tokio::time::interval(beat);
        self.last_received = Instant::now();
        loop {
            if *shutdown.borrow() {
                let e = AmqpError::connection(CONNECTION_FORCED, "broker shutdown");
                return Stop::Failed(self.close_with(&e).await);
            }
            if std::mem::take(&mut self.session.dirty)
                && let Err(e) = self.pump().await
            {
                return Stop::Failed(self.close_with(&e).await);
            }
            self.follow_alarm(alarm.borrow_and_update().clone());
            if let Err(e) = self.flush().await {
                return Stop::Failed(format!("write failed: {e}"));
            }
            tokio::select! {
                _ = alarm.changed() => {}
                _ = shutdown.changed() => {}
                outcomes = next_resolved(&mut self.waits), if !self.waits.is_empty() => {
                    self.apply_confirms(outcomes);
                }
                // While too many confirms wait for the disk, or a resource alarm blocks this
                // publisher, the client waits for us.
                read = self.reader.read_buf(&mut self.buf),
                    if self.waits.len() < MAX_WAITS && !self.blocked => match read {
                    Ok(0) => return Stop::Failed("the client closed the socket".to_string()),
                    Ok(_) => {
                        self.last_received = Instant::now();
                        if let Some(stop) = self.handle_buffered().await {
                            return stop;
                        }
                    }
                    Err(e) => return Stop::Failed(format!("read failed: {e}")),
                },
                _ = appends.changed() => self.session.dirty = true,
                _ = wake.changed() => self.session.dirty = true,
                // More to deliver: look again after any event already waiting.
                () = std::future::ready(()), if self.session.dirty => {}
                _ = ticks.tick() => {
                    if let Some(stop) = self.heartbeat().await {
                        return stop;
                    }
                }
            }
        }
    }

    /// Blocks or unblocks this connection for a resource alarm (`alarm.rs`): a publisher
    /// is not read from while one is raised, and is told so if it asked to be.
    fn follow_alarm(&mut self, alarm: crate::alarm::Alarm) {
        let blocked = alarm.is_some() && self.session.publisher;
        if blocked == self.blocked {
            return;
        }
        self.blocked = blocked;
        if !blocked {
            // Its frames waited in the socket: the silence was ours.
            self.last_received = Instant::now();
        }
        if !self.session.blocked_notify {
            return;
        }
        let method = match alarm {
            Some(reason) => connection::AMQPMethod::Blocked(connection::Blocked {
                reason: crate::errors::truncate(&reason, 255).into(),
            }),
            None => connection::AMQPMethod::Unblocked(connection::Unblocked {}),
        };
        self.session.out.method(0, AMQPClass::Connection(method));
    }

    /// Sends a heartbeat; a client silent for two intervals is gone (not while a resource
    /// alarm keeps us from reading it).
    async fn heartbeat(&mut self) -> Option<Stop> {
        if self.heartbeat_s == 0 {
            return None;
        }
        if self.blocked {
            self.session.out.frame(&AMQPFrame::Heartbeat);
            return None;
        }
        let limit = Duration::from_secs(2 * u64::from(self.heartbeat_s));
        if self.last_received.elapsed() > limit {
            return Some(Stop::Failed(format!(
                "no frame from the client for {}s (missed heartbeats)",
                limit.as_secs()
            )));
        }
        self.session.out.frame(&AMQPFrame::Heartbeat);
        None
    }

    /// Handles every complete frame in the buffer.
    async fn handle_buffered(&mut self) -> Option<Stop> {
        loop {
            let frame = match decode_frame(&mut self.buf, self.session.out.frame_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if let Err(e) = self.session.flush_acks().await {
                        return Some(Stop::Failed(self.close_with(&e).await));
                    }
                    self.queue_confirms();
                    return None;
                }
                Err(e) => {
                    let err = AmqpError::connection(FRAME_ERROR, e.to_string());
                    return Some(Stop::Failed(self.close_with(&err).await));
                }
            };
            match self.handle_frame(frame).await {
                Ok(true) => {}
                Ok(false) => return Some(Stop::Closed),
                Err(e) => return Some(Stop::Failed(self.close_with(&e).await)),
            }
        }
    }

    /// One frame; `Ok(false)`: the client closed the connection.
    async fn handle_frame(&mut self, frame: AMQPFrame) -> Result<bool, AmqpError> {
        match frame {
            AMQPFrame::Heartbeat => Ok(true),
            AMQPFrame::Method(0, method) => {
                self.session.flush_acks().await?;
                self.connection_method(method).await
            }
            AMQPFrame::Method(ch, method) => {
                // Acks wait for the next other method: whatever it does sees them applied.
                if !matches!(method, AMQPClass::Basic(basic::AMQPMethod::Ack(_))) {
                    self.session.flush_acks().await?;
                }
                self.channel_method(ch, method).await.map(|()| true)
            }
            AMQPFrame::Header(ch, header) => {
                let work = Work::Header(header.body_size, header.properties);
                self.with_channel(ch, work).await.map(|()| true)
            }
            AMQPFrame::Body(ch, body) => {
                self.with_channel(ch, Work::Body(body)).await.map(|()| true)
            }
            AMQPFrame::InvalidHeartbeat(ch) => Err(AmqpError::connection(
                FRAME_ERROR,
                format!("heartbeat on channel {ch}"),
            )),
            AMQPFrame::ProtocolHeader(_) => Err(AmqpError::connection(
                FRAME_ERROR,
                "protocol header inside the connection",
            )),
        }
    }

    async fn connection_method(&mut self, method: AMQPClass) -> Result<bool, AmqpError> {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                self.session.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                let _ = self.flush().await;
                Ok(false)
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(false),
            other => Err(AmqpError::connection(
                COMMAND_INVALID,
                format!("unexpected {other:?} on channel 0"),
            )
            .at(other.get_amqp_class_id(), other.get_amqp_method_id())),
        }
    }

    /// Runs `work` on an open channel (frames for a closing channel are dropped); a
    /// channel error closes the channel.
    async fn with_channel(&mut self, ch: u16, work: Work) -> Result<(), AmqpError> {
        let Some(chan) = self.channels.get_mut(&ch) else {
            return Err(AmqpError::connection(
                CHANNEL_ERROR,
                format!("channel {ch} is not open"),
            ));
        };
        if chan.closing {
            return Ok(());
        }
        let result = match work {
            Work::Header(size, props) => self.session.content_header(ch, chan, size, props).await,
            Work::Body(body) => self.session.content_body(ch, chan, body).await,
            Work::Method(method) => {
                let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
                let api = crate::errors::method_name(ids);
                let started = Instant::now();
                let r = self.session.dispatch(ch, chan, method).await;
                let metrics = self.session.door.broker.metrics();
                metrics.observe_request(crate::PROTOCOL, api, started.elapsed().as_secs_f64());
                if let Err(e) = &r {
                    metrics.observe_error(crate::PROTOCOL, api, &e.code.to_string());
                }
                r.map_err(|e| e.at(ids.0, ids.1))
            }
        };
        match result {
            Err(e) if e.scope == Scope::Channel => self.close_channel(ch, &e).await,
            other => other,
        }
    }

    async fn channel_method(&mut self, ch: u16, method: AMQPClass) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => return self.open_channel(ch),
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                // Every confirm of what was published before the close goes first.
                self.drain_confirms().await;
                self.release_channel(ch).await;
                self.session.out.method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                return Ok(());
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                self.release_channel(ch).await;
                return Ok(());
            }
            _ => {}
        }
        self.with_channel(ch, Work::Method(method)).await
    }

    fn open_channel(&mut self, ch: u16) -> Result<(), AmqpError> {
        if ch > self.channel_max || self.channels.contains_key(&ch) {
            return Err(AmqpError::connection(
                CHANNEL_ERROR,
                format!(
                    "channel {ch} is open already or above channel_max {}",
                    self.channel_max
                ),
            ));
        }
        self.opened += 1;
        let chan = Channel {
            epoch: self.opened,
            ..Channel::default()
        };
        self.channels.insert(ch, chan);
        self.session.out.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        );
        Ok(())
    }

    /// A channel error: channel.close to the client, the channel's messages released; the
    /// channel stays until the client's close-ok.
    async fn close_channel(&mut self, ch: u16, e: &AmqpError) -> Result<(), AmqpError> {
        tracing::info!(peer = %self.session.peer, channel = ch, code = e.code, reason = %e.reply_text(), "AMQP channel closed");
        let close = channel::Close {
            reply_code: e.code,
            reply_text: e.reply_text().into(),
            class_id: e.class_id,
            method_id: e.method_id,
        };
        // Publishes stored before the failing method are confirmed before the close.
        self.drain_confirms().await;
        self.session
            .out
            .method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(close)));
        if let Some(chan) = self.channels.remove(&ch) {
            self.session.release(chan).await;
        }
        self.channels.insert(
            ch,
            Channel {
                closing: true,
                ..Channel::default()
            },
        );
        Ok(())
    }

    /// Forgets channel `ch`, releasing what its consumers held.
    async fn release_channel(&mut self, ch: u16) {
        if let Some(chan) = self.channels.remove(&ch) {
            self.session.release(chan).await;
        }
    }

    /// Delivers to every consumer with room, writing after each consumer's batch (one
    /// acquire reads at most the broker's read budget, so the outbox stays bounded).
    async fn pump(&mut self) -> Result<(), AmqpError> {
        let mut ids: Vec<u16> = self.channels.keys().copied().collect();
        ids.sort_unstable();
        for ch in ids {
            let tags: Vec<String> = match self.channels.get(&ch) {
                Some(chan) if !chan.closing => chan.consumers.keys().cloned().collect(),
                _ => continue,
            };
            for tag in tags {
                let Some(chan) = self.channels.get_mut(&ch) else {
                    break;
                };
                self.session.pump_consumer(ch, chan, &tag).await?;
                if let Err(e) = self.flush().await {
                    return Err(AmqpError::connection(
                        CONNECTION_FORCED,
                        format!("write failed: {e}"),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn cleanup(&mut self) {
        for (_, chan) in std::mem::take(&mut self.channels) {
            self.session.release(chan).await;
        }
        for queue in std::mem::take(&mut self.session.exclusive) {
            if let Err(e) = self.session.delete_queue_everywhere(&queue).await {
                tracing::warn!(queue = %queue, reason = %e.reply_text(), "deleting an exclusive queue failed");
            }
        }
    }
}

impl Session {
    /// Routes a channel method to its handler.
    async fn dispatch(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        method: AMQPClass,
    ) -> Result<(), AmqpError> {
        match method {
            AMQPClass::Queue(m) => self.queue_method(ch, chan, m).await,
            AMQPClass::Exchange(m) => self.exchange_method(ch, m),
            AMQPClass::Basic(m) => self.basic_method(ch, chan, m).await,
            AMQPClass::Confirm(amq_protocol::protocol::confirm::AMQPMethod::Select(s)) => {
                if chan.tx.is_some() {
                    return Err(AmqpError::channel(
                        PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                chan.confirm = true;
                if !s.nowait {
                    use amq_protocol::protocol::confirm;
                    self.out.method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                self.out.method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                );
                Ok(())
            }
            AMQPClass::Tx(m) => self.tx_method(ch, chan, m).await,
            AMQPClass::Access(_) => Err(AmqpError::connection(
                NOT_IMPLEMENTED,
                "this method is not implemented yet",
            )),
            other => Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                format!("unexpected {other:?}"),
            )),
        }
    }

    /// Applies the acks buffered by this read (see [`Session::acks`]).
    pub async fn flush_acks(&mut self) -> Result<(), AmqpError> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let acks = std::mem::take(&mut self.acks);
        self.apply_settle(&acks, None).await
    }

    /// Gives back everything a closed channel's consumers held and forgets its consumers.
    pub async fn release(&mut self, chan: Channel) {
        // What the client acked before is acked, not released.
        if let Err(e) = self.flush_acks().await {
            tracing::warn!(peer = %self.peer, reason = %e.reply_text(), "applying acks before a release failed");
        }
        for c in chan.consumers.values() {
            self.door
                .consumer_removed(&c.queue, c.generation, c.broker_id);
        }
        let mut released = false;
        for (queue, id) in &chan.holders {
            match self.door.broker.queue_release(queue, *id).await {
                Ok(_) => released = true,
                Err(broker::BrokerError::UnknownTopicOrPartition) => {}
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "releasing a closed channel's messages failed")
                }
            }
        }
        if released {
            self.door.wake_consumers();
        }
    }
}
