//! basic.publish: the method, then a content header, then body frames until the announced
//! size; the complete message is routed through the topology and produced to every queue it
//! reaches. Unroutable with `mandatory`: basic.return (312 NO_ROUTE). In confirm mode each
//! publish is acked with its sequence number once every produce is durable (for
//! `flush = sync`; at once otherwise), or nacked if one failed (`confirm.rs`: the wait does
//! not stop the connection reading more publishes, and the publishes of one read are acked
//! by one basic.ack with `multiple`). On a transactional channel the message waits for
//! tx.commit (`tx.rs`).
//!
//! A message routed to N queues is written to the commit log once, with an entry in each
//! queue's partition (`Broker::queue_publish`, storage's shared entries).
//!
//! The write is done on the connection's task: a publisher waits for its own appends
//! (backpressure through TCP), and publishes stay in order.

use amq_protocol::protocol::{AMQPClass, BasicProperties, basic};

use crate::channel::{Channel, PendingPublish};
use crate::connection::Session;
use crate::errors::{AmqpError, NO_ROUTE, PRECONDITION_FAILED, UNEXPECTED_FRAME, truncate};
use crate::message::Message;

/// The longest delay an `x-delay` header may ask for: one year (longer is cut to it).
pub const MAX_DELAY_MS: i64 = 365 * 24 * 3_600_000;

/// A message's `x-delay` header (milliseconds; any integer type, or a decimal string), when
/// it asks for a delay (> 0). Used on `x-delayed-message` exchanges.
pub fn delay_ms(properties: &BasicProperties) -> Option<i64> {
    use amq_protocol::types::AMQPValue as V;
    let v = properties
        .headers()
        .as_ref()?
        .inner()
        .get("x-delay")?
        .clone();
    let ms = match v {
        V::ShortShortInt(n) => i64::from(n),
        V::ShortShortUInt(n) => i64::from(n),
        V::ShortInt(n) => i64::from(n),
        V::ShortUInt(n) => i64::from(n),
        V::LongInt(n) => i64::from(n),
        V::LongUInt(n) => i64::from(n),
        V::LongLongInt(n) => n,
        V::LongString(s) => s.to_string().trim().parse().ok()?,
        V::ShortString(s) => s.as_str().trim().parse().ok()?,
        _ => return None,
    };
    (ms > 0).then(|| ms.min(MAX_DELAY_MS))
}

/// What [`Session::route_and_store`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Every queue it was routed to holds it (or it was routed nowhere).
    All,
    /// A full `reject-publish(-dlx)` queue refused it (a confirm nack; the others hold it).
    Refused,
    /// A store failed (logged).
    Failed,
}

impl Session {
    pub fn publish_start(
        &mut self,
        chan: &mut Channel,
        p: basic::Publish,
    ) -> Result<(), AmqpError> {
        if chan.publish.is_some() {
            return Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                "basic.publish before the previous message's content",
            ));
        }
        self.publisher = true;
        chan.publish = Some(PendingPublish {
            exchange: p.exchange.to_string(),
            routing_key: p.routing_key.to_string(),
            mandatory: p.mandatory,
            header: None,
            body: Vec::new(),
        });
        Ok(())
    }

    pub async fn content_header(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        body_size: u64,
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        let Some(pending) = chan.publish.as_mut().filter(|p| p.header.is_none()) else {
            return Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                "content header without basic.publish",
            ));
        };
        let max = self.door.config.max_message_bytes;
        if body_size > max {
            chan.publish = None;
            return Err(AmqpError::channel(
                PRECONDITION_FAILED,
                format!("message size {body_size} is larger than the configured max size {max}"),
            )
            .at(60, 40));
        }
        pending.header = Some((body_size, properties));
        if body_size == 0 {
            return self.publish_complete(ch, chan).await;
        }
        Ok(())
    }

    pub async fn content_body(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        body: Vec<u8>,
    ) -> Result<(), AmqpError> {
        let Some((pending, size)) = chan
            .publish
            .as_mut()
            .and_then(|p| p.header.as_ref().map(|h| h.0).map(|s| (p, s)))
        else {
            return Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                "content body without a content header",
            ));
        };
        // Grows with what arrived, never with what was announced.
        pending.body.extend_from_slice(&body);
        let have = pending.body.len() as u64;
        if have > size {
            return Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                format!("content body of {have} bytes, announced {size}"),
            ));
        }
        if have == size {
            return self.publish_complete(ch, chan).await;
        }
        Ok(())
    }

    async fn publish_complete(&mut self, ch: u16, chan: &mut Channel) -> Result<(), AmqpError> {
        let Some(PendingPublish {
            exchange,
            routing_key,
            mandatory,
            header: Some((_, properties)),
            body,
        }) = chan.publish.take()
        else {
            return Ok(());
        };
        let msg = Message {
            exchange,
            routing_key,
            properties,
            body,
        };
        crate::message::check_expiration(&msg.properties).map_err(|e| e.at(60, 40))?;
        if let Some(tx) = chan.tx.as_mut() {
            let at_publish = |e: AmqpError| e.at(60, 40);
            let exchange = self.name(&msg.exchange).map_err(at_publish)?;
            self.door
                .topology
                .check_publishable(&exchange)
                .map_err(at_publish)?;
            return tx.publish(msg, mandatory).map_err(at_publish);
        }
        let seq = if chan.confirm {
            chan.published += 1;
            Some(chan.published)
        } else {
            None
        };
        let (stored, pending) = self.route_and_store(ch, &msg, mandatory).await?;
        if let Some(seq) = seq {
            self.confirm_later(ch, chan, seq, stored == Stored::All, pending);
        }
        Ok(())
    }

    /// Routes `msg` (basic.return when `mandatory` and no queue takes it) and stores it in
    /// every queue it reaches that has room; with the stores' acknowledgements (durable
    /// once they resolve).
    pub async fn route_and_store(
        &mut self,
        ch: u16,
        msg: &Message,
        mandatory: bool,
    ) -> Result<(Stored, Vec<broker::PendingProduce>), AmqpError> {
        let headers = msg
            .properties
            .headers()
            .as_ref()
            .map(crate::queue_methods::table_text)
            .unwrap_or_default();
        let exchange = self.name(&msg.exchange).map_err(|e| e.at(60, 40))?;
        let queues = self
            .door
            .topology
            .route(&self.door.broker, &exchange, &msg.routing_key, &headers)
            .map_err(|e| e.at(60, 40))?;
        if queues.is_empty() && mandatory {
            self.basic_return(ch, msg);
        }
        let due_ms = Some(&exchange)
            .filter(|x| self.door.topology.is_delayed(x))
            .and_then(|_| delay_ms(&msg.properties))
            .map(|delay| self.door.broker.now_ms().saturating_add(delay));
        let crate::dead_letter::Stores {
            refused,
            ok,
            pending,
        } = self.door.store(&queues, msg, due_ms).await;
        // A full queue with reject-publish(-dlx) refuses it: the confirm is a nack, the
        // other queues keep it (RabbitMQ), and reject-publish-dlx dead-letters it.
        for (queue, dead_letter) in &refused {
            let policy = self.door.broker.queue_policy(queue);
            if let Some(exchange) = policy
                .as_ref()
                .filter(|_| *dead_letter)
                .and_then(|p| p.dead_letter_exchange.as_deref())
            {
                let rk = policy
                    .as_ref()
                    .and_then(|p| p.dead_letter_routing_key.as_deref());
                let now = self.door.broker.now_ms();
                self.door
                    .dead_letter(queue, msg, "maxlen", exchange, rk, now)
                    .await;
            }
        }
        let stored = match (ok, refused.is_empty()) {
            (false, _) => Stored::Failed,
            (true, false) => Stored::Refused,
            (true, true) => Stored::All,
        };
        Ok((stored, pending))
    }

    fn basic_return(&mut self, ch: u16, msg: &Message) {
        let ret = basic::Return {
            reply_code: NO_ROUTE,
            reply_text: "NO_ROUTE".into(),
            exchange: truncate(&msg.exchange, 255).into(),
            routing_key: truncate(&msg.routing_key, 255).into(),
        };
        self.out
            .method(ch, AMQPClass::Basic(basic::AMQPMethod::Return(ret)));
        self.out.content(ch, &msg.properties, &msg.body);
    }

    /// Records the outcome of publish `seq`: a stored one is acked by the next
    /// [`Session::send_confirm`] (with those stored before it: one ack, `multiple`); a
    /// failed one is nacked now, after the acks owed before it.
    pub(crate) fn confirm(&mut self, ch: u16, chan: &mut Channel, seq: u64, stored: bool) {
        if stored {
            chan.confirm_ready = seq;
            return;
        }
        self.send_confirm(ch, chan);
        let nack = basic::Nack {
            delivery_tag: seq,
            multiple: false,
            requeue: false,
        };
        self.out
            .method(ch, AMQPClass::Basic(basic::AMQPMethod::Nack(nack)));
        (chan.confirm_ready, chan.confirm_sent) = (seq, seq);
    }

    /// Sends the ack owed for publishes stored since the last one (one frame however many:
    /// the connection calls this once it has handled every frame it read).
    pub fn send_confirm(&mut self, ch: u16, chan: &mut Channel) {
        if let Some((delivery_tag, multiple)) = chan.take_confirm() {
            let ack = basic::Ack {
                delivery_tag,
                multiple,
            };
            self.out
                .method(ch, AMQPClass::Basic(basic::AMQPMethod::Ack(ack)));
        }
    }
}
