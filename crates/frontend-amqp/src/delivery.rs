//! Consuming: basic.consume/cancel/qos/get, the acks (ack, nack, reject, recover), and the
//! pump that pushes basic.deliver to consumers with room under their prefetch. Each consumer
//! is one broker consumer (a fresh id from the process-wide counter); a delivery tag maps to
//! (queue, broker consumer, offset) until it is settled.

use amq_protocol::protocol::{AMQPClass, basic};

use crate::channel::{Channel, Consumer, Unacked, by_holder};
use crate::connection::Session;
use crate::door::next_consumer_id;
use crate::errors::{AmqpError, NOT_ALLOWED, PRECONDITION_FAILED, from_broker, truncate};
use crate::message::Message;
use crate::vhost::{describe, split};

/// An `x-priority` consumer argument (any integer type) as a number.
fn consumer_priority(v: &amq_protocol::types::AMQPValue) -> Option<i32> {
    use amq_protocol::types::AMQPValue as V;
    match v {
        V::ShortShortInt(n) => Some(i32::from(*n)),
        V::ShortShortUInt(n) => Some(i32::from(*n)),
        V::ShortInt(n) => Some(i32::from(*n)),
        V::ShortUInt(n) => Some(i32::from(*n)),
        V::LongInt(n) => Some(*n),
        V::LongUInt(n) => i32::try_from(*n).ok(),
        V::LongLongInt(n) => i32::try_from(*n).ok(),
        _ => None,
    }
}

/// A quorum queue (`x-queue-type = quorum`): its redeliveries say how often the message
/// was delivered before.
fn is_quorum(settings: &std::collections::BTreeMap<String, String>) -> bool {
    settings.get("x-queue-type").map(String::as_str) == Some("quorum")
}

/// The AMQP message of delivery `d` from `queue`. A quorum queue's redelivery carries
/// `x-delivery-count`: the deliveries before this one (absent on the first), as RabbitMQ's
/// quorum queues write it.
fn delivered(d: &broker::queue::QueueDelivery, queue: &str, quorum: bool) -> Message {
    let mut msg = Message::from_record(&d.record, queue);
    if quorum && d.delivery_count > 1 {
        let mut headers = msg.properties.headers().clone().unwrap_or_default();
        let before = i32::try_from(d.delivery_count - 1).unwrap_or(i32::MAX);
        headers.insert(
            "x-delivery-count".into(),
            amq_protocol::types::AMQPValue::LongInt(before),
        );
        msg.properties = msg.properties.with_headers(headers);
    }
    msg
}

/// Most messages one consumer takes per pump when its prefetch does not limit it (no-ack,
/// prefetch 0): other consumers and the client's frames get their turn.
const PUMP_BATCH: u32 = 128;

impl Session {
    pub async fn basic_method(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        m: basic::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match m {
            basic::AMQPMethod::Publish(p) => self.publish_start(chan, p),
            basic::AMQPMethod::Qos(q) => {
                if q.global {
                    chan.prefetch_channel = q.prefetch_count;
                } else {
                    chan.prefetch_consumer = q.prefetch_count;
                }
                self.dirty = true;
                self.out.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                Ok(())
            }
            basic::AMQPMethod::Consume(c) => self.consume(ch, chan, c),
            basic::AMQPMethod::Cancel(c) => {
                if let Some(gone) = chan.consumers.remove(c.consumer_tag.as_str()) {
                    self.door
                        .consumer_removed(&gone.queue, gone.generation, gone.broker_id);
                }
                if !c.nowait {
                    let ok = basic::CancelOk {
                        consumer_tag: c.consumer_tag,
                    };
                    self.out
                        .method(ch, AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)));
                }
                Ok(())
            }
            basic::AMQPMethod::Get(g) => self.get(ch, chan, g).await,
            basic::AMQPMethod::Ack(a) => self.settle(chan, a.delivery_tag, a.multiple, None).await,
            basic::AMQPMethod::Nack(n) => {
                self.settle(chan, n.delivery_tag, n.multiple, Some(n.requeue))
                    .await
            }
            basic::AMQPMethod::Reject(r) => {
                self.settle(chan, r.delivery_tag, false, Some(r.requeue))
                    .await
            }
            basic::AMQPMethod::Recover(r) => {
                self.recover(chan).await?;
                let _ = r.requeue; // requeue=false (redeliver to the same consumer) is served as true
                self.out.method(
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
                Ok(())
            }
            basic::AMQPMethod::RecoverAsync(_) => self.recover(chan).await,
            other => Err(AmqpError::connection(
                crate::errors::COMMAND_INVALID,
                format!("{other:?} is sent by servers, not clients"),
            )),
        }
    }

    fn consume(&mut self, ch: u16, chan: &mut Channel, c: basic::Consume) -> Result<(), AmqpError> {
        let queue = self.name(c.queue.as_str())?;
        self.require_queue(&queue)?;
        self.door.check_owner(&queue, self.id)?;
        let tag = if c.consumer_tag.as_str().is_empty() {
            self.door.unique_name("amq.ctag-")
        } else {
            c.consumer_tag.to_string()
        };
        if chan.consumers.contains_key(&tag) {
            return Err(AmqpError::connection(
                NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => consumer_priority(v).ok_or_else(|| {
                AmqpError::channel(
                    PRECONDITION_FAILED,
                    format!("invalid arg 'x-priority' for consumer '{tag}': {v:?}"),
                )
            })?,
        };
        let settings = self.door.broker.queue_settings(&queue).unwrap_or_default();
        let single_active =
            settings.get("x-single-active-consumer").map(String::as_str) == Some("true");
        let counts_deliveries = is_quorum(&settings);
        let stream = if crate::stream::is_stream(&settings) {
            // RabbitMQ's rules for a stream consumer: manual acks, a prefetch.
            if c.no_ack {
                // RabbitMQ closes the connection for this (540).
                return Err(AmqpError::connection(
                    crate::errors::NOT_IMPLEMENTED,
                    format!(
                        "automatic acknowledgement not supported by stream queues ({})",
                        describe(&queue)
                    ),
                ));
            }
            if chan.prefetch_consumer == 0 && chan.prefetch_channel == 0 {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    format!(
                        "consumer prefetch count is not set for stream queue {}",
                        split(&queue).1
                    ),
                ));
            }
            Some(crate::stream::start_offset(
                &self.door.broker,
                &queue,
                c.arguments.inner().get("x-stream-offset"),
            )?)
        } else {
            None
        };
        let broker_id = next_consumer_id();
        let generation = self
            .door
            .consumer_added(&queue, c.exclusive, broker_id, priority)?;
        if stream.is_none() {
            chan.holders.insert((queue.clone(), broker_id));
        }
        chan.consumers.insert(
            tag.clone(),
            Consumer {
                queue,
                broker_id,
                no_ack: c.no_ack,
                prefetch: chan.prefetch_consumer,
                unacked: 0,
                generation,
                single_active,
                counts_deliveries,
                stream,
            },
        );
        if !c.nowait {
            let ok = basic::ConsumeOk {
                consumer_tag: tag.as_str().into(),
            };
            self.out
                .method(ch, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)));
        }
        self.dirty = true;
        Ok(())
    }

    /// ack (`requeue: None`), nack or reject of the deliveries a tag names; on a
    /// transactional channel it waits for tx.commit.
    async fn settle(
        &mut self,
        chan: &mut Channel,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> Result<(), AmqpError> {
        let Some(taken) = chan.take_unacked(tag, multiple) else {
            return Err(AmqpError::channel(
                PRECONDITION_FAILED,
                format!("unknown delivery tag {tag}"),
            ));
        };
        if let Some(tx) = chan.tx.as_mut() {
            return tx.settle(taken, requeue);
        }
        if requeue.is_none() {
            // Applied with the read's other acks (`Session::acks`).
            self.acks.extend(taken);
            self.dirty = true;
            return Ok(());
        }
        self.apply_settle(&taken, requeue).await
    }

    /// basic.recover: every unacked delivery goes back to its queue, now (not part of a
    /// transaction).
    async fn recover(&mut self, chan: &mut Channel) -> Result<(), AmqpError> {
        let taken = chan.take_unacked(0, true).unwrap_or_default();
        self.apply_settle(&taken, Some(true)).await
    }

    /// Tells the broker of an ack (`requeue: None`), nack or reject.
    pub async fn apply_settle(
        &mut self,
        taken: &[(u64, Unacked)],
        requeue: Option<bool>,
    ) -> Result<(), AmqpError> {
        for ((queue, id), offsets) in by_holder(taken) {
            let result = match requeue {
                None => self.door.broker.queue_ack(&queue, id, &offsets).await,
                Some(requeue) => self
                    .door
                    .broker
                    .queue_nack(&queue, id, &offsets, requeue)
                    .await
                    .map(|_dead| ()),
            };
            match result {
                Ok(()) | Err(broker::BrokerError::UnknownTopicOrPartition) => {}
                Err(e) => return Err(from_broker(&e)),
            }
        }
        if requeue == Some(true) && !taken.is_empty() {
            self.door.wake_consumers();
        }
        self.dirty = true;
        Ok(())
    }

    async fn get(&mut self, ch: u16, chan: &mut Channel, g: basic::Get) -> Result<(), AmqpError> {
        let queue = self.name(g.queue.as_str())?;
        self.door.check_owner(&queue, self.id)?;
        let settings = self.door.broker.queue_settings(&queue).unwrap_or_default();
        if crate::stream::is_stream(&settings) {
            // RabbitMQ closes the connection for this (540).
            return Err(AmqpError::connection(
                crate::errors::NOT_IMPLEMENTED,
                format!(
                    "basic.get not supported by stream queues ({})",
                    describe(&queue)
                ),
            ));
        }
        let id = *chan.get_id.get_or_insert_with(next_consumer_id);
        chan.holders.insert((queue.clone(), id));
        let lease = Some(self.door.config.consumer_timeout_ms);
        let got = self
            .door
            .broker
            .queue_acquire(&queue, id, 1, lease)
            .await
            .map_err(|e| from_broker(&e))?;
        let Some(d) = got.into_iter().next() else {
            let empty = basic::GetEmpty {};
            self.out
                .method(ch, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(empty)));
            return Ok(());
        };
        chan.last_tag += 1;
        let tag = chan.last_tag;
        if g.no_ack {
            self.door
                .broker
                .queue_ack(&queue, id, &[d.record.offset])
                .await
                .map_err(|e| from_broker(&e))?;
        } else {
            let unacked = Unacked {
                queue: queue.clone(),
                broker_id: id,
                offset: d.record.offset,
                consumer_tag: None,
                stream: false,
            };
            chan.unacked.insert(tag, unacked);
        }
        let counts = self
            .door
            .broker
            .queue_counts(&queue)
            .await
            .map_err(|e| from_broker(&e))?;
        let msg = delivered(&d, split(&queue).1, is_quorum(&settings));
        let ok = basic::GetOk {
            delivery_tag: tag,
            redelivered: d.redelivered,
            exchange: truncate(&msg.exchange, 255).into(),
            routing_key: truncate(&msg.routing_key, 255).into(),
            message_count: u32::try_from(counts.ready).unwrap_or(u32::MAX),
        };
        self.out
            .method(ch, AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)));
        self.out.content(ch, &msg.properties, &msg.body);
        Ok(())
    }

    /// Delivers to one consumer what its room allows.
    pub async fn pump_consumer(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        tag: &str,
    ) -> Result<(), AmqpError> {
        let Some(c) = chan.consumers.get(tag) else {
            return Ok(());
        };
        let (queue, id, no_ack) = (c.queue.clone(), c.broker_id, c.no_ack);
        let (single_active, quorum) = (c.single_active, c.counts_deliveries);
        let is_stream = c.stream.is_some();
        if !self.door.queue_alive(&queue, c.generation) {
            self.cancel_from_server(ch, chan, tag);
            return Ok(());
        }
        let room = if no_ack {
            PUMP_BATCH
        } else {
            let own = match c.prefetch {
                0 => PUMP_BATCH,
                n => u32::from(n).saturating_sub(c.unacked),
            };
            own.min(chan.channel_room()).min(PUMP_BATCH)
        };
        if is_stream {
            return if room > 0 {
                self.pump_stream(ch, chan, tag, room).await
            } else {
                Ok(())
            };
        }
        self.door.set_room(&queue, id, room > 0);
        if room == 0 || !self.door.may_deliver(&queue, id, single_active) {
            return Ok(());
        }
        let lease = Some(self.door.config.consumer_timeout_ms);
        let got = match self
            .door
            .broker
            .queue_acquire(&queue, id, room, lease)
            .await
        {
            Ok(got) => got,
            Err(broker::BrokerError::UnknownTopicOrPartition) => {
                self.cancel_from_server(ch, chan, tag);
                return Ok(());
            }
            Err(e) => return Err(from_broker(&e)),
        };
        if got.len() as u32 >= room {
            // A full batch: there may be more, and room for it (no-ack, prefetch 0).
            self.dirty = true;
        }
        let mut auto_acked = Vec::new();
        for d in got {
            chan.last_tag += 1;
            let delivery_tag = chan.last_tag;
            if no_ack {
                auto_acked.push(d.record.offset);
            } else {
                let u = Unacked {
                    queue: queue.clone(),
                    broker_id: id,
                    offset: d.record.offset,
                    consumer_tag: Some(tag.to_string()),
                    stream: false,
                };
                chan.unacked.insert(delivery_tag, u);
                if let Some(c) = chan.consumers.get_mut(tag) {
                    c.unacked += 1;
                }
            }
            let msg = delivered(&d, split(&queue).1, quorum);
            let deliver = basic::Deliver {
                consumer_tag: tag.into(),
                delivery_tag,
                redelivered: d.redelivered,
                exchange: truncate(&msg.exchange, 255).into(),
                routing_key: truncate(&msg.routing_key, 255).into(),
            };
            self.out
                .method(ch, AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)));
            self.out.content(ch, &msg.properties, &msg.body);
        }
        let full = chan.consumers.get(tag).is_some_and(|c| {
            !c.no_ack
                && ((c.prefetch != 0 && c.unacked >= u32::from(c.prefetch))
                    || chan.channel_room() == 0)
        });
        if full {
            // Consumers of a lower priority may take messages now.
            self.door.set_room(&queue, id, false);
        }
        if !auto_acked.is_empty() {
            self.door
                .broker
                .queue_ack(&queue, id, &auto_acked)
                .await
                .map_err(|e| from_broker(&e))?;
        }
        Ok(())
    }

    /// The queue is gone: the consumer ends, and a client that announced the
    /// `consumer_cancel_notify` capability is told with a basic.cancel (RabbitMQ's rule;
    /// others would take it for an error).
    fn cancel_from_server(&mut self, ch: u16, chan: &mut Channel, tag: &str) {
        if let Some(gone) = chan.consumers.remove(tag) {
            self.door
                .consumer_removed(&gone.queue, gone.generation, gone.broker_id);
        }
        if !self.cancel_notify {
            return;
        }
        let cancel = basic::Cancel {
            consumer_tag: tag.into(),
            nowait: true,
        };
        self.out
            .method(ch, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)));
    }
}
