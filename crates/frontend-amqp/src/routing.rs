//! Where a published message goes: exchange kinds and how each matches a binding, and the
//! walk RabbitMQ makes through exchange-to-exchange bindings and alternate exchanges. Pure
//! functions over a snapshot of the topology (`topology.rs` owns it), tested without sockets.
//!
//! The walk (RabbitMQ's `rabbit_exchange:route`): start at the exchange published to; each
//! exchange visited adds the queues its matching bindings name and visits the exchanges
//! they name; an exchange whose bindings match nothing sends the message on to its
//! alternate exchange, if it has one. Every exchange is visited at most once, so a cycle of
//! bindings (a → b → a) ends, and a message reaches each queue once however many paths
//! lead there.

use std::collections::{BTreeMap, BTreeSet};

use crate::errors::{AmqpError, COMMAND_INVALID};

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub kind: ExchangeKind,
    pub durable: bool,
    /// Deleted when its last binding (as a source) is removed.
    pub auto_delete: bool,
    /// Clients may not publish to it; only exchange-to-exchange bindings feed it.
    pub internal: bool,
    /// The `alternate-exchange` argument: where messages this exchange routes nowhere go.
    pub alternate: Option<String>,
    /// An `x-delayed-message` exchange (RabbitMQ's delayed-message plugin): routes as
    /// `kind` (its `x-delayed-type`), each message when its `x-delay` header says.
    pub delayed: bool,
}

/// What a binding delivers to. Queues order before exchanges, so the bindings of one
/// source exchange form one contiguous range of the sorted set (see [`bindings_from`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

impl Destination {
    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Exchange(n) => n,
        }
    }
}

/// A binding from a source exchange to a queue or another exchange, with a key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    /// The source exchange.
    pub exchange: String,
    pub destination: Destination,
    pub key: String,
    /// The binding's arguments as (name, value text), sorted (headers exchanges match on
    /// them); part of the binding's identity, as in RabbitMQ.
    pub args: Vec<(String, String)>,
}

/// The bindings whose source is `exchange`, read from the sorted set without a scan.
pub fn bindings_from<'a>(
    bindings: &'a BTreeSet<Binding>,
    exchange: &str,
) -> impl Iterator<Item = &'a Binding> + 'a {
    let first = Binding {
        exchange: exchange.to_string(),
        destination: Destination::Queue(String::new()),
        key: String::new(),
        args: Vec::new(),
    };
    let source = first.exchange.clone();
    bindings
        .range(first..)
        .take_while(move |b| b.exchange == source)
}

/// The queues a message published to `start` reaches (see the module doc for the walk).
/// Missing exchanges on the way (an alternate exchange never declared) are skipped, as
/// RabbitMQ does.
pub fn route(
    exchanges: &BTreeMap<String, Exchange>,
    bindings: &BTreeSet<Binding>,
    start: &str,
    routing_key: &str,
    headers: &[(String, String)],
) -> BTreeSet<String> {
    let mut queues = BTreeSet::new();
    let mut seen: BTreeSet<&str> = BTreeSet::from([start]);
    let mut work: Vec<&str> = vec![start];
    while let Some(name) = work.pop() {
        let Some(x) = exchanges.get(name) else {
            continue;
        };
        let mut matched = false;
        for b in bindings_from(bindings, name) {
            if !x.kind.matches(b, routing_key, headers) {
                continue;
            }
            matched = true;
            match &b.destination {
                Destination::Queue(q) => {
                    queues.insert(q.clone());
                }
                Destination::Exchange(e) => {
                    if seen.insert(e) {
                        work.push(e);
                    }
                }
            }
        }
        if !matched
            && let Some(ae) = &x.alternate
            && seen.insert(ae)
        {
            work.push(ae);
        }
    }
    queues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn exchange(kind: ExchangeKind, alternate: Option<&str>) -> Exchange {
        Exchange {
            delayed: false,
            kind,
            durable: false,
            auto_delete: false,
            internal: false,
            alternate: alternate.map(str::to_string),
        }
    }

    fn bind(source: &str, destination: Destination, key: &str) -> Binding {
        Binding {
            exchange: source.into(),
            destination,
            key: key.into(),
            args: Vec::new(),
        }
    }

    fn q(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    fn x(name: &str) -> Destination {
        Destination::Exchange(name.into())
    }

    #[test]
    fn headers_bindings_match_as_rabbitmq_does() {
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
    fn topic_patterns_match_words() {
        let m = |p: &str, k: &str| ExchangeKind::Topic.matches(&bind("x", q("q"), p), k, &[]);
        assert!(m("*.orange.*", "quick.orange.rabbit"));
        assert!(!m("*.orange.*", "quick.orange.male.rabbit"));
        assert!(m("lazy.#", "lazy"));
        assert!(m("lazy.#", "lazy.pink.rabbit"));
        assert!(m("#.rabbit", "quick.orange.rabbit"));
        assert!(m("#", ""));
        assert!(!m("*.*.rabbit", "orange"));
    }

    #[test]
    fn bindings_from_reads_one_source_only() {
        let set: BTreeSet<Binding> = [
            bind("a", x("b"), ""),
            bind("a", q("q1"), "k"),
            bind("ab", q("q2"), ""),
            bind("", q("q3"), ""),
        ]
        .into_iter()
        .collect();
        let from_a: Vec<&str> = bindings_from(&set, "a")
            .map(|b| b.destination.name())
            .collect();
        assert_eq!(from_a, ["q1", "b"]);
    }

    #[test]
    fn messages_follow_exchange_to_exchange_bindings_and_cycles_end() {
        let exchanges: BTreeMap<String, Exchange> = [
            ("front".to_string(), exchange(ExchangeKind::Topic, None)),
            ("mid".to_string(), exchange(ExchangeKind::Fanout, None)),
            ("back".to_string(), exchange(ExchangeKind::Direct, None)),
        ]
        .into_iter()
        .collect();
        let bindings: BTreeSet<Binding> = [
            bind("front", x("mid"), "orders.*"),
            bind("mid", q("audit"), ""),
            bind("mid", x("back"), ""),
            bind("back", q("eu"), "orders.eu"),
            bind("back", x("front"), "orders.eu"), // a cycle back to the start
            bind("back", x("mid"), "orders.eu"),   // and to a visited exchange
            bind("front", q("audit"), "#"),        // a second path to audit
        ]
        .into_iter()
        .collect();
        let to = |key: &str| -> Vec<String> {
            route(&exchanges, &bindings, "front", key, &[])
                .into_iter()
                .collect()
        };
        assert_eq!(to("orders.eu"), ["audit", "eu"]);
        assert_eq!(to("orders.us"), ["audit"]);
        assert_eq!(to("billing"), ["audit"]);
    }

    #[test]
    fn an_alternate_exchange_takes_what_its_exchange_routes_nowhere() {
        let exchanges: BTreeMap<String, Exchange> = [
            (
                "main".to_string(),
                exchange(ExchangeKind::Direct, Some("spare")),
            ),
            ("spare".to_string(), exchange(ExchangeKind::Fanout, None)),
            (
                "lonely".to_string(),
                exchange(ExchangeKind::Direct, Some("missing")),
            ),
            // Alternates of each other: a loop that must end.
            ("p".to_string(), exchange(ExchangeKind::Direct, Some("r"))),
            ("r".to_string(), exchange(ExchangeKind::Direct, Some("p"))),
        ]
        .into_iter()
        .collect();
        let bindings: BTreeSet<Binding> = [
            bind("main", q("known"), "k"),
            bind("spare", q("unrouted"), ""),
        ]
        .into_iter()
        .collect();
        let to = |start: &str, key: &str| -> Vec<String> {
            route(&exchanges, &bindings, start, key, &[])
                .into_iter()
                .collect()
        };
        assert_eq!(
            to("main", "k"),
            ["known"],
            "routed: the alternate is not used"
        );
        assert_eq!(to("main", "other"), ["unrouted"]);
        assert!(
            to("lonely", "k").is_empty(),
            "a missing alternate is skipped"
        );
        assert!(to("p", "k").is_empty());
    }
}
