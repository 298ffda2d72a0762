//! Exchanges and bindings: the door's routing table, shared by every connection. Saved as
//! broker extension entries and loaded when the door starts:
//! - `amqp.exchange`: name → `{"type", "durable", "auto_delete"?, "internal"?,
//!   "alternate-exchange"?}`;
//! - `amqp.binding`: `["exchange","queue","key"(,args)]` → `{}` (queue bindings);
//! - `amqp.exchange_binding`: `["source","destination","key"(,args)]` → `{}`
//!   (exchange-to-exchange bindings);
//! - `amqp.exclusive_queue`: name → `{}` (durable exclusive queues, deleted at start).
//!
//! Names are internal names (`vhost.rs`: `vhost.<v>.<name>` outside `/`). In every vhost
//! the default exchange `""` (every queue of the vhost by its name) and `amq.direct`,
//! `amq.fanout`, `amq.topic`, `amq.headers` always exist and are never saved. How a message walks the
//! table is `routing.rs`.
//!
//! Invariants: a binding names a source exchange and a destination that exist; deleting an
//! exchange or a queue removes its bindings, and an auto-delete exchange goes with its last
//! binding as a source (RabbitMQ's rule, cascading through exchange-to-exchange bindings).
//! Each change is saved before the in-memory one, so a restart sees no binding the clients
//! were told is gone. Changes are serialized by one lock; routing reads a consistent view.

use std::collections::{BTreeMap, BTreeSet};

use broker::Broker;
use parking_lot::{Mutex, RwLock};
use serde_json::json;

use crate::errors::{ACCESS_REFUSED, AmqpError, NOT_FOUND};
use crate::errors::{PRECONDITION_FAILED, from_broker};
pub use crate::routing::{Binding, Destination, Exchange, ExchangeKind};
use crate::vhost::{Vhost, describe, split};

const NS_EXCHANGE: &str = "amqp.exchange";
const NS_BINDING: &str = "amqp.binding";
const NS_EXCHANGE_BINDING: &str = "amqp.exchange_binding";
/// Durable exclusive queues (name → `{}`): deleted at the next start, as their connection
/// cannot outlive the broker (a clean shutdown deletes them with their connections; this
/// covers a crash).
const NS_EXCLUSIVE_QUEUE: &str = "amqp.exclusive_queue";

impl Binding {
    fn namespace(&self) -> &'static str {
        match self.destination {
            Destination::Queue(_) => NS_BINDING,
            Destination::Exchange(_) => NS_EXCHANGE_BINDING,
        }
    }

    fn saved_key(&self) -> String {
        let (source, dest) = (&self.exchange, self.destination.name());
        if self.args.is_empty() {
            json!([source, dest, self.key]).to_string()
        } else {
            json!([source, dest, self.key, self.args]).to_string()
        }
    }

    /// A saved key back (three elements, or four with arguments).
    fn from_saved(key: &str, to_exchange: bool) -> Option<Binding> {
        let v: Vec<serde_json::Value> = serde_json::from_str(key).ok()?;
        let text = |i: usize| v.get(i).and_then(|x| x.as_str()).map(str::to_string);
        let args = match v.get(3) {
            Some(a) => serde_json::from_value(a.clone()).ok()?,
            None => Vec::new(),
        };
        (v.len() == 3 || v.len() == 4).then_some(())?;
        let destination = if to_exchange {
            Destination::Exchange(text(1)?)
        } else {
            Destination::Queue(text(1)?)
        };
        Some(Binding {
            exchange: text(0)?,
            destination,
            key: text(2)?,
            args,
        })
    }
}

impl Exchange {
    fn saved_value(&self) -> serde_json::Value {
        let mut v = json!({"type": self.kind.name(), "durable": self.durable});
        if self.auto_delete {
            v["auto_delete"] = json!(true);
        }
        if self.internal {
            v["internal"] = json!(true);
        }
        if let Some(ae) = &self.alternate {
            v["alternate-exchange"] = json!(ae);
        }
        if self.delayed {
            v["delayed"] = json!(true);
        }
        v
    }

    fn from_saved(v: &serde_json::Value) -> Option<Exchange> {
        Some(Exchange {
            kind: ExchangeKind::parse(v["type"].as_str()?).ok()?,
            durable: v["durable"].as_bool().unwrap_or(true),
            auto_delete: v["auto_delete"].as_bool().unwrap_or(false),
            internal: v["internal"].as_bool().unwrap_or(false),
            alternate: v["alternate-exchange"].as_str().map(str::to_string),
            delayed: v["delayed"].as_bool().unwrap_or(false),
        })
    }

    /// The first property a redeclare differs in, as RabbitMQ names it, with the received
    /// and current values.
    fn inequivalence(&self, other: &Exchange) -> Option<(&'static str, String, String)> {
        let opt = |a: &Option<String>| a.as_deref().map_or("none", |n| split(n).1).to_string();
        let kind = |x: &Exchange| match x.delayed {
            true => format!("{} ({})", crate::queue_methods::DELAYED_TYPE, x.kind.name()),
            false => x.kind.name().to_string(),
        };
        [
            ("type", kind(other), kind(self)),
            (
                "durable",
                other.durable.to_string(),
                self.durable.to_string(),
            ),
            (
                "auto_delete",
                other.auto_delete.to_string(),
                self.auto_delete.to_string(),
            ),
            (
                "internal",
                other.internal.to_string(),
                self.internal.to_string(),
            ),
            (
                "alternate-exchange",
                opt(&other.alternate),
                opt(&self.alternate),
            ),
        ]
        .into_iter()
        .find(|(_, received, current)| received != current)
    }
}

/// The door's exchanges and bindings.
pub struct Topology {
    exchanges: RwLock<BTreeMap<String, Exchange>>,
    bindings: RwLock<BTreeSet<Binding>>,
    /// Held by every change: a change reads, saves, then updates, and must not interleave
    /// with another (two connections unbinding an auto-delete exchange's last bindings).
    changing: Mutex<()>,
    /// The durable exclusive queues saved in `amqp.exclusive_queue`.
    exclusive_saved: Mutex<BTreeSet<String>>,
}

/// Removes a saved entry at start (its exchange or queue is gone); a failure is logged and
/// the cleanup is tried again at the next start.
fn forget(broker: &Broker, namespace: &str, key: &str) {
    if let Err(e) = broker.persist_extension(namespace, key, None, true) {
        tracing::warn!(namespace, key, error = %e, "could not remove a transient AMQP entry");
    }
}

/// Deletes the queues declared with durable=false through this door (with the topics their
/// declare created), and the exclusive ones a crash left behind (their connection is gone).
fn drop_transient_queues(broker: &Broker) {
    for name in broker.list_queues() {
        let transient = broker.queue_settings(&name).is_some_and(|s| {
            s.get(crate::queue_methods::DURABLE_SETTING)
                .map(String::as_str)
                == Some("false")
        });
        if transient && let Err(e) = broker.delete_queue(&name, true) {
            tracing::warn!(queue = %name, error = %e, "could not delete a transient queue at start");
        }
    }
    for (name, _) in broker.extension_entries(NS_EXCLUSIVE_QUEUE) {
        match broker.delete_queue(&name, true) {
            Ok(()) | Err(broker::BrokerError::UnknownTopicOrPartition) => {
                forget(broker, NS_EXCLUSIVE_QUEUE, &name)
            }
            Err(e) => {
                tracing::warn!(queue = %name, error = %e, "could not delete an exclusive queue at start")
            }
        }
    }
}

fn builtin() -> [(&'static str, ExchangeKind); 5] {
    [
        ("", ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
    ]
}

fn not_found(name: &str) -> AmqpError {
    AmqpError::channel(NOT_FOUND, format!("no exchange {}", describe(name)))
}

/// Whether (internal) `name` is a built-in exchange of its vhost.
pub(crate) fn is_builtin(name: &str) -> bool {
    let local = split(name).1;
    builtin().iter().any(|(n, _)| *n == local)
}

impl Topology {
    /// The built-in exchanges plus what `broker` has saved. Transient (non-durable) queues,
    /// exchanges and the bindings that name them do not outlive the broker, as in RabbitMQ:
    /// a start deletes them (saved first, so a crash halfway repeats the cleanup).
    pub fn open(broker: &Broker, vhosts: &[String]) -> Topology {
        drop_transient_queues(broker);
        let mut exchanges: BTreeMap<String, Exchange> = BTreeMap::new();
        for vhost in vhosts {
            let vhost = Vhost(vhost.clone());
            for (n, kind) in builtin() {
                let x = Exchange {
                    delayed: false,
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    alternate: None,
                };
                exchanges.insert(vhost.internal(n), x);
            }
        }
        for (name, v) in broker.extension_entries(NS_EXCHANGE) {
            match Exchange::from_saved(&v) {
                Some(x) if !x.durable => forget(broker, NS_EXCHANGE, &name),
                Some(x) => {
                    exchanges.insert(name, x);
                }
                None => {
                    tracing::warn!(exchange = %name, entry = %v, "saved exchange unreadable; skipped")
                }
            }
        }
        let mut bindings = BTreeSet::new();
        for (namespace, to_exchange) in [(NS_BINDING, false), (NS_EXCHANGE_BINDING, true)] {
            for (key, _) in broker.extension_entries(namespace) {
                let Some(b) = Binding::from_saved(&key, to_exchange) else {
                    tracing::warn!(binding = %key, "saved binding unreadable; skipped");
                    continue;
                };
                let dest_exists = match &b.destination {
                    Destination::Queue(q) => broker.queue_exists(q),
                    Destination::Exchange(x) => exchanges.contains_key(x),
                };
                if exchanges.contains_key(&b.exchange) && dest_exists {
                    bindings.insert(b);
                } else {
                    forget(broker, namespace, &key);
                }
            }
        }
        Topology {
            exchanges: RwLock::new(exchanges),
            bindings: RwLock::new(bindings),
            changing: Mutex::new(()),
            exclusive_saved: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn exchange(&self, name: &str) -> Option<Exchange> {
        self.exchanges.read().get(name).cloned()
    }

    /// Whether `name` is an `x-delayed-message` exchange (no copy of it: every publish asks).
    pub fn is_delayed(&self, name: &str) -> bool {
        self.exchanges.read().get(name).is_some_and(|x| x.delayed)
    }

    /// Every exchange (built-in ones included) by internal name, in name order.
    pub fn exchanges(&self) -> Vec<(String, Exchange)> {
        self.exchanges
            .read()
            .iter()
            .map(|(n, x)| (n.clone(), x.clone()))
            .collect()
    }

    /// Every binding, in the set's order (by source exchange).
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().iter().cloned().collect()
    }

    pub fn exchange_or_404(&self, name: &str) -> Result<Exchange, AmqpError> {
        self.exchange(name).ok_or_else(|| not_found(name))
    }

    /// exchange.declare: creates it (true), or checks an existing one is declared alike
    /// (false; 406 PRECONDITION_FAILED naming the first difference, as RabbitMQ).
    pub fn declare_exchange(
        &self,
        broker: &Broker,
        name: &str,
        wanted: Exchange,
        passive: bool,
    ) -> Result<bool, AmqpError> {
        if passive {
            return self.exchange_or_404(name).map(|_| false);
        }
        let _changing = self.changing.lock();
        if let Some(existing) = self.exchange(name) {
            if let Some((arg, received, current)) = existing.inequivalence(&wanted) {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    format!(
                        "inequivalent arg '{arg}' for exchange {}: received '{received}' but current is '{current}'",
                        describe(name)
                    ),
                ));
            }
            return Ok(false);
        }
        if split(name).1.starts_with("amq.") {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                format!(
                    "exchange name '{}' contains reserved prefix 'amq.*'",
                    split(name).1
                ),
            ));
        }
        broker
            .persist_extension(NS_EXCHANGE, name, Some(wanted.saved_value()), true)
            .map_err(|e| from_broker(&e))?;
        self.exchanges.write().insert(name.to_string(), wanted);
        Ok(true)
    }

    /// exchange.delete with its bindings (as source and as destination); `if_unused`:
    /// refused while it is the source of a binding.
    pub fn delete_exchange(
        &self,
        broker: &Broker,
        name: &str,
        if_unused: bool,
    ) -> Result<(), AmqpError> {
        if is_builtin(name) {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                format!(
                    "operation not permitted on the built-in exchange {}",
                    describe(name)
                ),
            ));
        }
        let _changing = self.changing.lock();
        if self.exchange(name).is_none() {
            // Deleting what is not there succeeds (RabbitMQ 3.x): cleanup code relies on it.
            return Ok(());
        }
        let in_use = crate::routing::bindings_from(&self.bindings.read(), name)
            .next()
            .is_some();
        if if_unused && in_use {
            return Err(AmqpError::channel(
                PRECONDITION_FAILED,
                format!("exchange {} in use", describe(name)),
            ));
        }
        let sources = self.remove_exchange(broker, name)?;
        self.auto_delete(broker, sources)
    }

    /// Removes exchange `name` and every binding naming it; returns the other exchanges
    /// that lost a binding as a source (auto-delete candidates).
    fn remove_exchange(&self, broker: &Broker, name: &str) -> Result<Vec<String>, AmqpError> {
        let gone: Vec<Binding> = self
            .bindings
            .read()
            .iter()
            .filter(|b| {
                b.exchange == name || b.destination == Destination::Exchange(name.to_string())
            })
            .cloned()
            .collect();
        self.remove_bindings(broker, &gone)?;
        broker
            .persist_extension(NS_EXCHANGE, name, None, true)
            .map_err(|e| from_broker(&e))?;
        self.exchanges.write().remove(name);
        Ok(gone
            .into_iter()
            .map(|b| b.exchange)
            .filter(|s| s != name)
            .collect())
    }

    /// Deletes each auto-delete exchange of `candidates` left without bindings as a source,
    /// and in turn the ones that leaves bare.
    fn auto_delete(&self, broker: &Broker, mut candidates: Vec<String>) -> Result<(), AmqpError> {
        while let Some(name) = candidates.pop() {
            let bare = self.exchange(&name).is_some_and(|x| x.auto_delete)
                && crate::routing::bindings_from(&self.bindings.read(), &name)
                    .next()
                    .is_none();
            if bare {
                tracing::debug!(exchange = %name, "auto-delete exchange lost its last binding");
                candidates.extend(self.remove_exchange(broker, &name)?);
            }
        }
        Ok(())
    }

    /// Saves the removal of `gone`, then forgets them.
    fn remove_bindings(&self, broker: &Broker, gone: &[Binding]) -> Result<(), AmqpError> {
        for b in gone {
            broker
                .persist_extension(b.namespace(), &b.saved_key(), None, true)
                .map_err(|e| from_broker(&e))?;
            self.bindings.write().remove(b);
        }
        Ok(())
    }

    /// queue.bind or exchange.bind (a queue destination's existence is the caller's
    /// check; an exchange destination must exist). True when the binding is new.
    pub fn bind(&self, broker: &Broker, binding: Binding) -> Result<bool, AmqpError> {
        let default = |n: &str| split(n).1.is_empty();
        if default(&binding.exchange)
            || matches!(&binding.destination, Destination::Exchange(d) if default(d))
        {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                "operation not permitted on the default exchange",
            ));
        }
        let _changing = self.changing.lock();
        self.exchange_or_404(&binding.exchange)?;
        if let Destination::Exchange(d) = &binding.destination {
            self.exchange_or_404(d)?;
        }
        if self.bindings.read().contains(&binding) {
            return Ok(false);
        }
        broker
            .persist_extension(
                binding.namespace(),
                &binding.saved_key(),
                Some(json!({})),
                true,
            )
            .map_err(|e| from_broker(&e))?;
        self.bindings.write().insert(binding);
        Ok(true)
    }

    /// queue.unbind or exchange.unbind; unbinding what is not bound is not an error. The
    /// source goes if it is auto-delete and this was its last binding.
    pub fn unbind(&self, broker: &Broker, binding: &Binding) -> Result<(), AmqpError> {
        let _changing = self.changing.lock();
        if !self.bindings.read().contains(binding) {
            return Ok(());
        }
        self.remove_bindings(broker, std::slice::from_ref(binding))?;
        self.auto_delete(broker, vec![binding.exchange.clone()])
    }

    /// Removes every binding of a deleted queue (and the auto-delete exchanges that leaves
    /// bare).
    pub fn drop_queue(&self, broker: &Broker, queue: &str) -> Result<(), AmqpError> {
        let _changing = self.changing.lock();
        let dest = Destination::Queue(queue.to_string());
        let gone: Vec<Binding> = self
            .bindings
            .read()
            .iter()
            .filter(|b| b.destination == dest)
            .cloned()
            .collect();
        self.remove_bindings(broker, &gone)?;
        self.auto_delete(broker, gone.into_iter().map(|b| b.exchange).collect())
    }

    /// Saves that durable queue `queue` is exclusive, so a crash does not leave it behind.
    pub fn save_exclusive(&self, broker: &Broker, queue: &str) -> Result<(), AmqpError> {
        broker
            .persist_extension(NS_EXCLUSIVE_QUEUE, queue, Some(json!({})), true)
            .map_err(|e| from_broker(&e))?;
        self.exclusive_saved.lock().insert(queue.to_string());
        Ok(())
    }

    /// Forgets a deleted queue's exclusive entry, if it has one.
    pub fn forget_exclusive(&self, broker: &Broker, queue: &str) -> Result<(), AmqpError> {
        if !self.exclusive_saved.lock().contains(queue) {
            return Ok(());
        }
        broker
            .persist_extension(NS_EXCLUSIVE_QUEUE, queue, None, true)
            .map_err(|e| from_broker(&e))?;
        self.exclusive_saved.lock().remove(queue);
        Ok(())
    }

    /// The queues a message published to `exchange` with `routing_key` (and `headers`, as
    /// (name, value text)) goes to, each once: through exchange-to-exchange bindings and
    /// alternate exchanges (`routing::route`). 404 for an unknown exchange, 403 for an
    /// internal one.
    pub fn route(
        &self,
        broker: &Broker,
        exchange: &str,
        routing_key: &str,
        headers: &[(String, String)],
    ) -> Result<Vec<String>, AmqpError> {
        self.check_publishable(exchange)?;
        Ok(self.route_from_server(broker, exchange, routing_key, headers))
    }

    /// As [`Topology::route`] for a message the broker itself publishes (dead letters): an
    /// internal exchange takes it, a missing one routes nowhere.
    pub fn route_from_server(
        &self,
        broker: &Broker,
        exchange: &str,
        routing_key: &str,
        headers: &[(String, String)],
    ) -> Vec<String> {
        let (vhost, local) = split(exchange);
        if local.is_empty() {
            let queue = Vhost(vhost.to_string()).internal(routing_key);
            return if broker.queue_exists(&queue) {
                vec![queue]
            } else {
                Vec::new()
            };
        }
        let exchanges = self.exchanges.read();
        let bindings = self.bindings.read();
        let queues = crate::routing::route(&exchanges, &bindings, exchange, routing_key, headers);
        queues.into_iter().collect()
    }

    /// A client may publish to `exchange`: it exists (404) and is not internal (403).
    pub fn check_publishable(&self, exchange: &str) -> Result<(), AmqpError> {
        if split(exchange).1.is_empty() {
            return Ok(());
        }
        if self.exchange_or_404(exchange)?.internal {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                format!("cannot publish to internal exchange {}", describe(exchange)),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_bindings_read_back_with_their_arguments() {
        let b = Binding {
            exchange: "x".into(),
            destination: Destination::Queue("q".into()),
            key: "".into(),
            args: vec![("format".into(), "pdf".into())],
        };
        assert_eq!(Binding::from_saved(&b.saved_key(), false), Some(b.clone()));
        let plain = Binding {
            args: Vec::new(),
            ..b
        };
        assert_eq!(
            Binding::from_saved(&plain.saved_key(), false),
            Some(plain.clone())
        );
        let e2e = Binding {
            destination: Destination::Exchange("y".into()),
            ..plain
        };
        assert_eq!(e2e.namespace(), NS_EXCHANGE_BINDING);
        assert_eq!(Binding::from_saved(&e2e.saved_key(), true), Some(e2e));
    }

    #[test]
    fn saved_exchanges_read_back_and_old_entries_still_load() {
        let x = Exchange {
            delayed: false,
            kind: ExchangeKind::Topic,
            durable: true,
            auto_delete: true,
            internal: true,
            alternate: Some("ae".into()),
        };
        assert_eq!(Exchange::from_saved(&x.saved_value()), Some(x));
        let old = json!({"type": "fanout", "durable": true});
        let loaded = Exchange::from_saved(&old).unwrap();
        assert!(!loaded.auto_delete && !loaded.internal && loaded.alternate.is_none());
    }

    #[test]
    fn a_redeclare_names_the_first_difference() {
        let x = Exchange {
            delayed: false,
            kind: ExchangeKind::Direct,
            durable: true,
            auto_delete: false,
            internal: false,
            alternate: None,
        };
        assert_eq!(x.inequivalence(&x.clone()), None);
        let other = Exchange {
            delayed: false,
            alternate: Some("ae".into()),
            ..x.clone()
        };
        let (arg, received, current) = x.inequivalence(&other).unwrap();
        assert_eq!(
            (arg, received.as_str(), current.as_str()),
            ("alternate-exchange", "ae", "none")
        );
    }
}
