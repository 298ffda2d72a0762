//! queue.* and exchange.* methods. A queue is the broker's queue of the same name (partition
//! 0 of the topic of that name); its declare arguments (stringified) and its `durable` and
//! `auto_delete` flags are the broker queue's settings, so a redeclare with others is 406
//! PRECONDITION_FAILED. An exclusive queue belongs to the connection that declared it:
//! another connection's declare, bind, unbind, purge, delete, consume or get is 405
//! RESOURCE_LOCKED (`Door::check_owner`).

use std::collections::BTreeMap;

use amq_protocol::protocol::{AMQPClass, exchange, queue};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::channel::Channel;
use crate::connection::Session;
use crate::door::AUTO_DELETE_SETTING;
use crate::errors::{ACCESS_REFUSED, AmqpError, NOT_FOUND, PRECONDITION_FAILED, from_broker};
use crate::topology::{Binding, Destination, Exchange, ExchangeKind};
use crate::vhost::describe;

/// Setting recording the declare's `durable` flag.
pub(crate) const DURABLE_SETTING: &str = "amqp.durable";

/// Declare arguments as the broker's settings map, with the flags a redeclare must repeat.
fn settings_of(
    arguments: &FieldTable,
    durable: bool,
    auto_delete: bool,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = arguments
        .inner()
        .iter()
        .map(|(k, v)| (k.to_string(), value_text(v)))
        .collect();
    out.insert(DURABLE_SETTING.to_string(), durable.to_string());
    if auto_delete {
        out.insert(AUTO_DELETE_SETTING.to_string(), "true".to_string());
    }
    out
}

/// The exchange type of RabbitMQ's delayed-message plugin.
pub const DELAYED_TYPE: &str = "x-delayed-message";

/// exchange.declare's flags and arguments as the exchange wanted.
fn exchange_of(d: &exchange::Declare) -> Result<Exchange, AmqpError> {
    let delayed = d.kind.as_str() == DELAYED_TYPE;
    let kind = if delayed {
        // The delayed-message plugin's rule: the routing type is `x-delayed-type`.
        let routing = d.arguments.inner().get("x-delayed-type").map(value_text);
        match routing.as_deref().map(ExchangeKind::parse) {
            Some(Ok(kind)) => kind,
            _ => {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    "Invalid argument, 'x-delayed-type' must be an existing exchange type",
                ));
            }
        }
    } else {
        ExchangeKind::parse(d.kind.as_str())?
    };
    Ok(Exchange {
        delayed,
        kind,
        durable: d.durable,
        auto_delete: d.auto_delete,
        internal: d.internal,
        alternate: d
            .arguments
            .inner()
            .get("alternate-exchange")
            .map(value_text),
    })
}

/// A field table as sorted (name, value text) pairs (binding arguments, message headers).
pub(crate) fn table_text(t: &FieldTable) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = t
        .inner()
        .iter()
        .map(|(k, v)| (k.to_string(), value_text(v)))
        .collect();
    out.sort();
    out
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// Names a client may not use: `__…` are the broker's internal topics (Kafka's
/// `__consumer_offsets`, `__transaction_state`), which a queue over them would expose and
/// queue.delete would remove; `amq.…` is reserved for server-named queues (RabbitMQ's rule,
/// checked on a non-passive declare only).
pub(crate) fn check_queue_name(name: &str, declaring: bool) -> Result<(), AmqpError> {
    if name.starts_with("__") || (declaring && name.starts_with("amq.")) {
        return Err(AmqpError::channel(
            ACCESS_REFUSED,
            format!("queue name '{name}' contains a reserved prefix"),
        ));
    }
    Ok(())
}

fn saturating_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Session {
    pub async fn queue_method(
        &mut self,
        ch: u16,
        chan: &mut Channel,
        m: queue::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let _ = chan;
        match m {
            queue::AMQPMethod::Declare(d) => self.queue_declare(ch, d).await,
            queue::AMQPMethod::Bind(b) => {
                let queue = self.name(b.queue.as_str())?;
                self.require_queue(&queue)?;
                self.door.check_owner(&queue, self.id)?;
                let binding = Binding {
                    exchange: self.name(b.exchange.as_str())?,
                    destination: Destination::Queue(queue),
                    key: b.routing_key.to_string(),
                    args: table_text(&b.arguments),
                };
                self.door.topology.bind(&self.door.broker, binding)?;
                if !b.nowait {
                    self.out.method(
                        ch,
                        AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                    );
                }
                Ok(())
            }
            queue::AMQPMethod::Unbind(u) => {
                let queue = self.name(u.queue.as_str())?;
                self.door.check_owner(&queue, self.id)?;
                let binding = Binding {
                    exchange: self.name(u.exchange.as_str())?,
                    destination: Destination::Queue(queue),
                    key: u.routing_key.to_string(),
                    args: table_text(&u.arguments),
                };
                self.door.topology.unbind(&self.door.broker, &binding)?;
                self.out.method(
                    ch,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
                Ok(())
            }
            queue::AMQPMethod::Purge(p) => {
                let queue = self.name(p.queue.as_str())?;
                self.require_queue(&queue)?;
                self.door.check_owner(&queue, self.id)?;
                let n = self
                    .door
                    .broker
                    .queue_purge(&queue)
                    .await
                    .map_err(|e| from_broker(&e))?;
                if !p.nowait {
                    let ok = queue::PurgeOk {
                        message_count: saturating_u32(n),
                    };
                    self.out
                        .method(ch, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)));
                }
                Ok(())
            }
            queue::AMQPMethod::Delete(d) => self.queue_delete(ch, d).await,
            other => Err(AmqpError::connection(
                crate::errors::COMMAND_INVALID,
                format!("{other:?} is sent by servers, not clients"),
            )),
        }
    }

    /// The internal name (`vhost.rs`) of a queue or exchange name a client sent.
    pub fn name(&self, local: &str) -> Result<String, AmqpError> {
        self.vhost.check_local(local)?;
        Ok(self.vhost.internal(local))
    }

    /// 404 unless queue `name` (internal) exists.
    pub fn require_queue(&self, name: &str) -> Result<(), AmqpError> {
        if self.door.broker.queue_exists(name) {
            Ok(())
        } else {
            Err(AmqpError::channel(
                NOT_FOUND,
                format!("no queue {}", describe(name)),
            ))
        }
    }

    async fn queue_declare(&mut self, ch: u16, d: queue::Declare) -> Result<(), AmqpError> {
        let local = if d.queue.as_str().is_empty() {
            self.door.unique_name("amq.gen-")
        } else {
            check_queue_name(d.queue.as_str(), !d.passive)?;
            d.queue.to_string()
        };
        let name = self.name(&local)?;
        self.door.check_owner(&name, self.id)?;
        if d.passive {
            self.require_queue(&name)?;
        } else {
            let settings = settings_of(&d.arguments, d.durable, d.auto_delete);
            let stream = crate::stream::is_stream(&settings);
            if stream {
                crate::stream::check_declare(&settings, d.durable, d.exclusive, d.auto_delete)?;
            }
            let retention = crate::stream::retention_of(&settings);
            let created = self
                .door
                .broker
                .declare_queue(&name, settings)
                .map_err(|e| match e {
                    broker::BrokerError::InvalidConfig(text) if text.starts_with("invalid arg") => {
                        AmqpError::channel(
                            PRECONDITION_FAILED,
                            format!("{text} for queue {}", describe(&name)),
                        )
                    }
                    broker::BrokerError::InvalidConfig(text) => AmqpError::channel(
                        PRECONDITION_FAILED,
                        format!(
                            "inequivalent arguments for queue {}: {text}",
                            describe(&name)
                        ),
                    ),
                    other => from_broker(&other),
                })?;
            if created && stream && !retention.is_empty() {
                // The stream's retention is its topic's (only for a topic it created).
                if let Err(e) = self
                    .door
                    .broker
                    .alter_topic_configs(&name, &retention, true, false)
                {
                    tracing::warn!(queue = %name, error = %e, "setting a stream queue's retention failed");
                }
            }
            if created {
                self.door.queue_declared(&name);
            }
            if created && d.exclusive {
                if d.durable {
                    self.door
                        .topology
                        .save_exclusive(&self.door.broker, &name)?;
                }
                self.door.set_owner(&name, self.id);
                self.exclusive.push(name.clone());
            } else if !created && self.door.owner(&name) != d.exclusive.then_some(self.id) {
                // RabbitMQ's strict check: the exclusive flag must match the queue's (a
                // shared queue cannot become exclusive, nor the reverse).
                return Err(crate::door::locked(&name));
            }
        }
        if d.nowait {
            return Ok(());
        }
        let counts = self
            .door
            .broker
            .queue_counts(&name)
            .await
            .map_err(|e| from_broker(&e))?;
        let ok = queue::DeclareOk {
            queue: local.as_str().into(),
            message_count: saturating_u32(counts.ready),
            consumer_count: self.door.consumer_count(&name),
        };
        self.out
            .method(ch, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)));
        Ok(())
    }

    async fn queue_delete(&mut self, ch: u16, d: queue::Delete) -> Result<(), AmqpError> {
        check_queue_name(d.queue.as_str(), false)?;
        let internal = self.name(d.queue.as_str())?;
        let name = internal.as_str();
        self.door.check_owner(name, self.id)?;
        let mut message_count = 0;
        if self.door.broker.queue_exists(name) {
            let counts = self
                .door
                .broker
                .queue_counts(name)
                .await
                .map_err(|e| from_broker(&e))?;
            if d.if_unused && self.door.consumer_count(name) > 0 {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    format!("queue {} in use", describe(name)),
                ));
            }
            if d.if_empty && counts.ready + counts.unacked > 0 {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    format!("queue {} not empty", describe(name)),
                ));
            }
            message_count = saturating_u32(counts.ready);
            self.delete_queue_everywhere(name).await?;
        }
        if !d.nowait {
            let ok = queue::DeleteOk { message_count };
            self.out
                .method(ch, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)));
        }
        Ok(())
    }

    /// Deletes a queue everywhere (`Door::delete_queue`) and forgets it as this
    /// connection's exclusive queue.
    pub async fn delete_queue_everywhere(&mut self, name: &str) -> Result<(), AmqpError> {
        self.door.delete_queue(name)?;
        self.exclusive.retain(|q| q != name);
        Ok(())
    }

    pub fn exchange_method(&mut self, ch: u16, m: exchange::AMQPMethod) -> Result<(), AmqpError> {
        let topology = &self.door.topology;
        let broker = &self.door.broker;
        let (reply, nowait) = match m {
            exchange::AMQPMethod::Declare(d) if d.passive => {
                // Only whether it exists: the type and flags sent are not looked at (amqplib
                // sends an empty type), as RabbitMQ does.
                topology.exchange_or_404(&self.name(d.exchange.as_str())?)?;
                let ok = exchange::DeclareOk {};
                (exchange::AMQPMethod::DeclareOk(ok), d.nowait)
            }
            exchange::AMQPMethod::Declare(d) => {
                let mut wanted = exchange_of(&d)?;
                if let Some(ae) = wanted.alternate.take() {
                    wanted.alternate = Some(self.name(&ae)?);
                }
                let name = self.name(d.exchange.as_str())?;
                topology.declare_exchange(broker, &name, wanted, d.passive)?;
                let ok = exchange::DeclareOk {};
                (exchange::AMQPMethod::DeclareOk(ok), d.nowait)
            }
            exchange::AMQPMethod::Delete(d) => {
                topology.delete_exchange(broker, &self.name(d.exchange.as_str())?, d.if_unused)?;
                (
                    exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {}),
                    d.nowait,
                )
            }
            exchange::AMQPMethod::Bind(b) => {
                let binding = Binding {
                    exchange: self.name(b.source.as_str())?,
                    destination: Destination::Exchange(self.name(b.destination.as_str())?),
                    key: b.routing_key.to_string(),
                    args: table_text(&b.arguments),
                };
                topology.bind(broker, binding)?;
                (exchange::AMQPMethod::BindOk(exchange::BindOk {}), b.nowait)
            }
            exchange::AMQPMethod::Unbind(u) => {
                let binding = Binding {
                    exchange: self.name(u.source.as_str())?,
                    destination: Destination::Exchange(self.name(u.destination.as_str())?),
                    key: u.routing_key.to_string(),
                    args: table_text(&u.arguments),
                };
                topology.unbind(broker, &binding)?;
                (
                    exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}),
                    u.nowait,
                )
            }
            other => {
                return Err(AmqpError::connection(
                    crate::errors::COMMAND_INVALID,
                    format!("{other:?} is sent by servers, not clients"),
                ));
            }
        };
        if !nowait {
            self.out.method(ch, AMQPClass::Exchange(reply));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_topics_and_amq_names_are_refused() {
        assert_eq!(
            check_queue_name("__consumer_offsets", false)
                .unwrap_err()
                .code,
            ACCESS_REFUSED
        );
        assert_eq!(
            check_queue_name("amq.mine", true).unwrap_err().code,
            ACCESS_REFUSED
        );
        assert!(
            check_queue_name("amq.gen-1", false).is_ok(),
            "server-named queues can be deleted"
        );
        assert!(check_queue_name("orders", true).is_ok());
    }

    #[test]
    fn arguments_become_settings_with_the_durable_flag() {
        let mut args = FieldTable::default();
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(5));
        args.insert("x-queue-mode".into(), AMQPValue::LongString("lazy".into()));
        let s = settings_of(&args, true, false);
        assert_eq!(s["x-delivery-limit"], "5");
        assert_eq!(s["x-queue-mode"], "lazy");
        assert_eq!(s[DURABLE_SETTING], "true");
        assert!(
            !s.contains_key(AUTO_DELETE_SETTING),
            "queues saved before auto-delete existed keep their settings"
        );
        assert_eq!(settings_of(&args, true, true)[AUTO_DELETE_SETTING], "true");
    }
}
