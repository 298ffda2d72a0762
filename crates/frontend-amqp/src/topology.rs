//! Exchanges and bindings: which queues a published message goes to. Shared by every
//! connection of the door; saved as broker extension entries (`amqp.exchange`: name →
//! `{"type", "durable"}`; `amqp.binding`: `["exchange","queue","key"]` → `{}`) and loaded
//! when the door starts. The default exchange `""` (every queue by its name) and `amq.direct`,
//! `amq.fanout`, `amq.topic` always exist and are never saved.
//!
//! Invariant: a binding names an exchange that exists; deleting an exchange or a queue
//! removes its bindings (saved before the in-memory change, so a restart sees no binding the
//! clients were told is gone... or one they were told exists and is not).

use std::collections::{BTreeMap, BTreeSet};

use broker::Broker;
use parking_lot::RwLock;
use serde_json::json;

use crate::errors::{ACCESS_REFUSED, AmqpError, COMMAND_INVALID, NOT_FOUND};
use crate::errors::{PRECONDITION_FAILED, from_broker};

const NS_EXCHANGE: &str = "amqp.exchange";
const NS_BINDING: &str = "amqp.binding";

/// How an exchange matches routing keys against binding keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    /// Matches a message's headers against the binding's arguments (`x-match`).
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Result<ExchangeKind, AmqpError> {
        match s {
            "direct" => Ok(ExchangeKind::Direct),
            "fanout" => Ok(ExchangeKind::Fanout),
            "topic" => Ok(ExchangeKind::Topic),
            "headers" => Ok(ExchangeKind::Headers),
            other => Err(AmqpError::connection(
                COMMAND_INVALID,
                format!("unknown exchange type '{other}'"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }

    fn matches(self, binding: &Binding, routing_key: &str, headers: &[(String, String)]) -> bool {
        let binding_key = binding.key.as_str();
        match self {
            ExchangeKind::Headers => headers_match(&binding.args, headers),
            ExchangeKind::Direct => binding_key == routing_key,
            ExchangeKind::Fanout => true,
            ExchangeKind::Topic => {
                let pattern: Vec<&str> = binding_key.split('.').collect();
                let words: Vec<&str> = routing_key.split('.').collect();
                topic_matches(&pattern, &words)
            }
        }
    }
}

/// RabbitMQ's headers matching: `x-match` is `all` (the default: every argument present with
/// the same value), `any` (at least one), or `all-with-x` / `any-with-x` (arguments starting
/// with `x-` count too; otherwise they are ignored). Values compare as their text.
fn headers_match(args: &[(String, String)], headers: &[(String, String)]) -> bool {
    let mode = args
        .iter()
        .find(|(k, _)| k == "x-match")
        .map_or("all", |(_, v)| v.as_str());
    let with_x = mode.ends_with("-with-x");
    let mut wanted = args
        .iter()
        .filter(|(k, _)| k != "x-match" && (with_x || !k.starts_with("x-")))
        .peekable();
    if wanted.peek().is_none() {
        return mode.starts_with("all");
    }
    let present = |(k, v): &(String, String)| headers.iter().any(|(hk, hv)| hk == k && hv == v);
    if mode.starts_with("any") {
        wanted.any(&present)
    } else {
        wanted.all(present)
    }
}

/// AMQP topic matching: `*` is one word, `#` zero or more.
fn topic_matches(pattern: &[&str], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((&"#", rest)) => (0..=words.len()).any(|skip| topic_matches(rest, &words[skip..])),
        Some((p, rest)) => match words.split_first() {
            Some((w, more)) => (*p == "*" || p == w) && topic_matches(rest, more),
            None => false,
        },
    }
}

/// One exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub kind: ExchangeKind,
    pub durable: bool,
}

/// A queue bound to an exchange with a key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    pub exchange: String,
    pub queue: String,
    pub key: String,
    /// The binding's arguments as (name, value text), sorted (headers exchanges match on
    /// them); part of the binding's identity, as in RabbitMQ.
    pub args: Vec<(String, String)>,
}

impl Binding {
    fn saved_key(&self) -> String {
        if self.args.is_empty() {
            json!([self.exchange, self.queue, self.key]).to_string()
        } else {
            json!([self.exchange, self.queue, self.key, self.args]).to_string()
        }
    }

    /// A saved key back (three elements, or four with arguments).
    fn from_saved(key: &str) -> Option<Binding> {
        let v: Vec<serde_json::Value> = serde_json::from_str(key).ok()?;
        let text = |i: usize| v.get(i).and_then(|x| x.as_str()).map(str::to_string);
        let args = match v.get(3) {
            Some(a) => serde_json::from_value(a.clone()).ok()?,
            None => Vec::new(),
        };
        (v.len() == 3 || v.len() == 4).then_some(())?;
        Some(Binding {
            exchange: text(0)?,
            queue: text(1)?,
            key: text(2)?,
            args,
        })
    }
}

/// The door's exchanges and bindings.
pub struct Topology {
    exchanges: RwLock<BTreeMap<String, Exchange>>,
    bindings: RwLock<BTreeSet<Binding>>,
}

/// Removes a saved entry at start (its exchange or queue is gone); a failure is logged and
/// the cleanup is tried again at the next start.
fn forget(broker: &Broker, namespace: &str, key: &str) {
    if let Err(e) = broker.persist_extension(namespace, key, None, true) {
        tracing::warn!(namespace, key, error = %e, "could not remove a transient AMQP entry");
    }
}

/// Deletes the queues declared with durable=false through this door (with the topics their
/// declare created).
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
}

fn builtin() -> [(&'static str, ExchangeKind); 4] {
    [
        ("", ExchangeKind::Direct),
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
    ]
}

impl Topology {
    /// The built-in exchanges plus what `broker` has saved. Transient (non-durable) queues,
    /// exchanges and the bindings that name them do not outlive the broker, as in RabbitMQ:
    /// a start deletes them (saved first, so a crash halfway repeats the cleanup).
    pub fn open(broker: &Broker) -> Topology {
        drop_transient_queues(broker);
        let mut exchanges: BTreeMap<String, Exchange> = builtin()
            .into_iter()
            .map(|(n, kind)| {
                (
                    n.to_string(),
                    Exchange {
                        kind,
                        durable: true,
                    },
                )
            })
            .collect();
        for (name, v) in broker.extension_entries(NS_EXCHANGE) {
            let kind = v["type"].as_str().and_then(|k| ExchangeKind::parse(k).ok());
            match kind {
                Some(_) if v["durable"].as_bool() == Some(false) => {
                    forget(broker, NS_EXCHANGE, &name);
                }
                Some(kind) => {
                    exchanges.insert(
                        name,
                        Exchange {
                            kind,
                            durable: true,
                        },
                    );
                }
                None => {
                    tracing::warn!(exchange = %name, entry = %v, "saved exchange unreadable; skipped")
                }
            }
        }
        let mut bindings = BTreeSet::new();
        for (key, _) in broker.extension_entries(NS_BINDING) {
            match Binding::from_saved(&key) {
                Some(b)
                    if !exchanges.contains_key(&b.exchange) || !broker.queue_exists(&b.queue) =>
                {
                    forget(broker, NS_BINDING, &key);
                }
                Some(b) => {
                    bindings.insert(b);
                }
                None => tracing::warn!(binding = %key, "saved binding unreadable; skipped"),
            }
        }
        Topology {
            exchanges: RwLock::new(exchanges),
            bindings: RwLock::new(bindings),
        }
    }

    pub fn exchange(&self, name: &str) -> Option<Exchange> {
        self.exchanges.read().get(name).copied()
    }

    fn exchange_or_404(&self, name: &str) -> Result<Exchange, AmqpError> {
        self.exchange(name).ok_or_else(|| {
            AmqpError::channel(NOT_FOUND, format!("no exchange '{name}' in vhost '/'"))
        })
    }

    /// exchange.declare: creates it, or checks an existing one has the same type.
    pub fn declare_exchange(
        &self,
        broker: &Broker,
        name: &str,
        kind: &str,
        durable: bool,
        passive: bool,
    ) -> Result<(), AmqpError> {
        if passive {
            return self.exchange_or_404(name).map(|_| ());
        }
        let kind = ExchangeKind::parse(kind)?;
        if let Some(existing) = self.exchange(name) {
            if existing.kind != kind {
                return Err(AmqpError::channel(
                    PRECONDITION_FAILED,
                    format!(
                        "inequivalent arg 'type' for exchange '{name}': received '{}' but current is '{}'",
                        kind.name(),
                        existing.kind.name()
                    ),
                ));
            }
            return Ok(());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                format!("exchange name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let value = json!({"type": kind.name(), "durable": durable});
        broker
            .persist_extension(NS_EXCHANGE, name, Some(value), true)
            .map_err(|e| from_broker(&e))?;
        self.exchanges
            .write()
            .insert(name.to_string(), Exchange { kind, durable });
        Ok(())
    }

    /// exchange.delete with its bindings.
    pub fn delete_exchange(&self, broker: &Broker, name: &str) -> Result<(), AmqpError> {
        if builtin().iter().any(|(n, _)| *n == name) {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                format!("operation not permitted on the built-in exchange '{name}'"),
            ));
        }
        self.exchange_or_404(name)?;
        let gone: Vec<Binding> = self
            .bindings
            .read()
            .iter()
            .filter(|b| b.exchange == name)
            .cloned()
            .collect();
        for b in &gone {
            self.unbind(broker, b)?;
        }
        broker
            .persist_extension(NS_EXCHANGE, name, None, true)
            .map_err(|e| from_broker(&e))?;
        self.exchanges.write().remove(name);
        Ok(())
    }

    /// queue.bind (the queue's existence is the caller's check).
    pub fn bind(&self, broker: &Broker, binding: Binding) -> Result<(), AmqpError> {
        if binding.exchange.is_empty() {
            return Err(AmqpError::channel(
                ACCESS_REFUSED,
                "operation not permitted on the default exchange",
            ));
        }
        self.exchange_or_404(&binding.exchange)?;
        if self.bindings.read().contains(&binding) {
            return Ok(());
        }
        broker
            .persist_extension(NS_BINDING, &binding.saved_key(), Some(json!({})), true)
            .map_err(|e| from_broker(&e))?;
        self.bindings.write().insert(binding);
        Ok(())
    }

    /// queue.unbind; unbinding what is not bound is not an error.
    pub fn unbind(&self, broker: &Broker, binding: &Binding) -> Result<(), AmqpError> {
        if !self.bindings.read().contains(binding) {
            return Ok(());
        }
        broker
            .persist_extension(NS_BINDING, &binding.saved_key(), None, true)
            .map_err(|e| from_broker(&e))?;
        self.bindings.write().remove(binding);
        Ok(())
    }

    /// Removes every binding of a deleted queue.
    pub fn drop_queue(&self, broker: &Broker, queue: &str) -> Result<(), AmqpError> {
        let gone: Vec<Binding> = self
            .bindings
            .read()
            .iter()
            .filter(|b| b.queue == queue)
            .cloned()
            .collect();
        for b in &gone {
            self.unbind(broker, b)?;
        }
        Ok(())
    }

    /// The queues a message published to `exchange` with `routing_key` (and `headers`, as
    /// (name, value text)) goes to, each once.
    pub fn route(
        &self,
        broker: &Broker,
        exchange: &str,
        routing_key: &str,
        headers: &[(String, String)],
    ) -> Result<Vec<String>, AmqpError> {
        if exchange.is_empty() {
            return Ok(if broker.queue_exists(routing_key) {
                vec![routing_key.to_string()]
            } else {
                Vec::new()
            });
        }
        let kind = self.exchange_or_404(exchange)?.kind;
        let queues: BTreeSet<String> = self
            .bindings
            .read()
            .iter()
            .filter(|b| b.exchange == exchange && kind.matches(b, routing_key, headers))
            .map(|b| b.queue.clone())
            .collect();
        Ok(queues.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_bindings_match_as_rabbitmq_does() {
        let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let msg = kv(&[("format", "pdf"), ("type", "report")]);
        assert!(headers_match(
            &kv(&[("format", "pdf"), ("type", "report")]),
            &msg
        ));
        assert!(!headers_match(
            &kv(&[("format", "pdf"), ("type", "log")]),
            &msg
        ));
        let any = kv(&[("format", "zip"), ("type", "report"), ("x-match", "any")]);
        assert!(headers_match(&any, &msg));
        // x- arguments count only with -with-x.
        let xarg = kv(&[("format", "pdf"), ("x-tenant", "a")]);
        assert!(headers_match(&xarg, &msg));
        let with_x = kv(&[
            ("format", "pdf"),
            ("x-match", "all-with-x"),
            ("x-tenant", "a"),
        ]);
        assert!(!headers_match(&with_x, &msg));
        assert!(
            headers_match(&kv(&[]), &msg),
            "no arguments, all: every message"
        );
    }

    #[test]
    fn saved_bindings_read_back_with_their_arguments() {
        let b = Binding {
            exchange: "x".into(),
            queue: "q".into(),
            key: "".into(),
            args: vec![("format".into(), "pdf".into())],
        };
        assert_eq!(Binding::from_saved(&b.saved_key()), Some(b.clone()));
        let plain = Binding {
            args: Vec::new(),
            ..b
        };
        assert_eq!(Binding::from_saved(&plain.saved_key()), Some(plain));
    }

    #[test]
    fn topic_patterns_match_words() {
        let m = |p: &str, k: &str| {
            let b = Binding {
                exchange: "x".into(),
                queue: "q".into(),
                key: p.into(),
                args: Vec::new(),
            };
            ExchangeKind::Topic.matches(&b, k, &[])
        };
        assert!(m("*.orange.*", "quick.orange.rabbit"));
        assert!(!m("*.orange.*", "quick.orange.male.rabbit"));
        assert!(m("lazy.#", "lazy"));
        assert!(m("lazy.#", "lazy.pink.rabbit"));
        assert!(m("#.rabbit", "quick.orange.rabbit"));
        assert!(m("#", ""));
        assert!(!m("*.*.rabbit", "orange"));
    }
}
