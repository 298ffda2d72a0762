//! Dead-lettering as RabbitMQ does it (docs/protocol-mapping.md §Queue policies), and the
//! door's policy task.
//!
//! The broker's queue layer decides *that* a message dies (rejected, expired, maxlen,
//! delivery_limit) and hands it over with the queue's `x-dead-letter-exchange` and
//! `x-dead-letter-routing-key`; this module republishes it: the `expiration` property
//! removed (kept as the `x-death` entry's `original-expiration`), the `x-death` header
//! updated (one entry per {queue, reason}, its `count` bumped and moved to the front),
//! `x-first-death-*` set once and `x-last-death-*` every time, then routed from the
//! dead-letter exchange with the dead-letter routing key or the message's own. A missing
//! exchange routes nowhere: the message is dropped, as in RabbitMQ. A message that would
//! reach a queue it already died in with no rejection on the way (a cycle) is not stored
//! there (RabbitMQ's cycle rule). Dead-lettering is at-most-once, RabbitMQ's default: a
//! crash between the death and the republish loses the message, and a full target queue
//! with `reject-publish` drops it.
//!
//! The policy task ([`Door::run_policies`]) republishes what the broker's dead-letter box
//! holds, makes due delayed and retrying messages deliverable (waking consumers), sweeps
//! expired messages off queue heads every [`SWEEP_EVERY`], deletes queues unused for their
//! `x-expires`, and checks the resource alarms (`alarm.rs`).

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use broker::queue::DeadLettered;
use tokio::sync::watch;

use crate::door::Door;
use crate::message::Message;
use crate::vhost::{Vhost, split};

/// How often queue heads are swept for expired messages and `x-expires` is checked.
pub const SWEEP_EVERY: Duration = Duration::from_millis(25);

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// `p` without `expiration` and with `headers` (the generated type has no setters to clear a
/// property, so the rest is copied).
fn rebuilt(p: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut out = BasicProperties::default().with_headers(headers);
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

/// One death of a message, as `x-death` records it.
pub struct Death<'a> {
    /// The queue it died in (the client's name, without the vhost).
    pub queue: &'a str,
    pub reason: &'a str,
    /// Seconds since the epoch.
    pub time_s: u64,
}

/// `msg` as RabbitMQ republishes it after `death` (see the module doc). The routing and the
/// exchange it goes to are the caller's.
pub fn dead_lettered(msg: &Message, death: &Death<'_>) -> Message {
    let old = msg.properties.headers().clone().unwrap_or_default();
    let mut headers: std::collections::BTreeMap<ShortString, AMQPValue> = old.inner().clone();
    let mut routing_keys = vec![long_string(&msg.routing_key)];
    if let Some(AMQPValue::FieldArray(cc)) = headers.get("CC") {
        routing_keys.extend(cc.as_slice().iter().cloned());
    }
    let mut deaths: Vec<AMQPValue> = match headers.get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            text(t.inner().get("queue")).as_deref() == Some(death.queue)
                && text(t.inner().get("reason")).as_deref() == Some(death.reason)
        }
        _ => false,
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(i) else {
                unreachable!("`same` matched a table")
            };
            let count = match t.inner().get("count") {
                Some(AMQPValue::LongLongInt(n)) => *n,
                Some(AMQPValue::LongInt(n)) => i64::from(*n),
                _ => 0,
            };
            t.insert("count".into(), AMQPValue::LongLongInt(count + 1));
            t.insert("time".into(), AMQPValue::Timestamp(death.time_s));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long_string(death.reason));
            t.insert("queue".into(), long_string(death.queue));
            t.insert("time".into(), AMQPValue::Timestamp(death.time_s));
            t.insert("exchange".into(), long_string(&msg.exchange));
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(routing_keys)),
            );
            if let Some(exp) = msg.properties.expiration() {
                t.insert("original-expiration".into(), long_string(exp.as_str()));
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    for (which, value) in [
        ("reason", death.reason),
        ("queue", death.queue),
        ("exchange", msg.exchange.as_str()),
    ] {
        let first: ShortString = format!("x-first-death-{which}").into();
        headers.entry(first).or_insert_with(|| long_string(value));
        headers.insert(format!("x-last-death-{which}").into(), long_string(value));
    }
    Message {
        exchange: msg.exchange.clone(),
        routing_key: msg.routing_key.clone(),
        properties: rebuilt(&msg.properties, FieldTable::from(headers)),
        body: msg.body.clone(),
    }
}

/// Whether storing `msg` (already carrying its new `x-death`) in `queue` closes a cycle with
/// no rejection in it (RabbitMQ drops the message for that queue).
pub fn is_cycle(msg: &Message, queue: &str) -> bool {
    let Some(AMQPValue::FieldArray(deaths)) = msg
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return false;
    };
    let tables = deaths.as_slice().iter().filter_map(|v| match v {
        AMQPValue::FieldTable(t) => Some(t),
        _ => None,
    });
    let mut seen = false;
    for t in tables {
        if text(t.inner().get("reason")).as_deref() == Some("rejected") {
            return false;
        }
        seen |= text(t.inner().get("queue")).as_deref() == Some(queue);
    }
    seen
}

impl Door {
    /// The policy task: dead letters, TTL sweeps, queue expiry, until `shutdown`.
    pub async fn run_policies(self: Arc<Door>, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(SWEEP_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resources = tokio::time::interval(crate::alarm::CHECK_EVERY);
        resources.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                return;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                () = self.broker.dead_letters_ready() => {}
                _ = resources.tick() => self.check_resources(),
                _ = ticks.tick() => {
                    // Delayed and retrying messages that are due come back: wake consumers.
                    match self.broker.queue_release_due() {
                        Ok(true) => self.wake_consumers(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "releasing due messages failed"),
                    }
                    if let Err(e) = self.broker.queue_sweep().await {
                        tracing::warn!(error = %e, "sweeping expired messages failed");
                    }
                    self.expire_unused_queues();
                }
            }
            for letter in self.broker.take_dead_letters() {
                self.republish(letter).await;
            }
        }
    }

    /// Deletes the queues unused for their `x-expires` (a queue with consumers is in use).
    fn expire_unused_queues(&self) {
        for name in self.broker.queues_unused() {
            if self.consumer_count(&name) > 0 {
                self.broker.queue_touch(&name);
                continue;
            }
            tracing::debug!(queue = %name, "queue unused for its x-expires: deleted");
            if let Err(e) = self.delete_queue(&name) {
                tracing::warn!(queue = %name, reason = %e.reply_text(), "deleting an expired queue failed");
            }
        }
    }

    /// Republishes one dead letter from the broker.
    async fn republish(&self, letter: DeadLettered) {
        let local = split(&letter.queue).1.to_string();
        let msg = Message::from_record(&letter.record, &local);
        self.dead_letter(
            &letter.queue,
            &msg,
            letter.reason.name(),
            &letter.exchange,
            letter.routing_key.as_deref(),
            letter.time_ms,
        )
        .await;
    }

    /// Dead-letters `msg`, which died in `queue` (internal name) for `reason`, to exchange
    /// `exchange` (a name in the queue's vhost) with `routing_key` or its own.
    pub async fn dead_letter(
        &self,
        queue: &str,
        msg: &Message,
        reason: &str,
        exchange: &str,
        routing_key: Option<&str>,
        time_ms: i64,
    ) {
        let (vhost, local) = split(queue);
        let death = Death {
            queue: local,
            reason,
            time_s: u64::try_from(time_ms / 1000).unwrap_or(0),
        };
        let mut out = dead_lettered(msg, &death);
        out.exchange = exchange.to_string();
        if let Some(rk) = routing_key {
            out.routing_key = rk.to_string();
        }
        let internal = Vhost(vhost.to_string()).internal(exchange);
        let headers = out
            .properties
            .headers()
            .as_ref()
            .map(crate::queue_methods::table_text)
            .unwrap_or_default();
        let targets: Vec<String> = self
            .topology
            .route_from_server(&self.broker, &internal, &out.routing_key, &headers)
            .into_iter()
            .filter(|q| !is_cycle(&out, split(q).1))
            .collect();
        if targets.is_empty() {
            tracing::debug!(queue, exchange, "dead letter routed nowhere: dropped");
        }
        self.store(&targets, &out, None).await;
    }

    /// Stores `msg` in each of `queues` under their limits; says which queues refused it
    /// (`reject-publish`) with whether they dead-letter it, and whether every store worked.
    /// The message is written when this returns; [`Stores::pending`] resolves once it is
    /// durable (`flush = sync`).
    /// `due_ms`: a delayed message (an `x-delayed-message` exchange) stays invisible in
    /// the queues until then.
    pub async fn store(&self, queues: &[String], msg: &Message, due_ms: Option<i64>) -> Stores {
        let mut out = Stores {
            refused: Vec::new(),
            ok: true,
            pending: Vec::new(),
        };
        if queues.is_empty() {
            return out;
        }
        let batch = msg.to_batch(self.broker.now_ms(), due_ms);
        match self
            .broker
            .queue_publish(queues, batch, msg.body.len() as u64, due_ms)
            .await
        {
            Ok(routed) => {
                out.refused = routed.refused;
                out.pending.extend(routed.pending);
            }
            Err(e) => {
                tracing::warn!(queues = ?queues, error = %e, "AMQP message not stored");
                out.ok = false;
            }
        }
        out
    }
}

/// What [`Door::store`] did with a message.
pub struct Stores {
    /// Queues that refused it (`reject-publish`), and whether they dead-letter it.
    pub refused: Vec<(String, bool)>,
    /// No store failed.
    pub ok: bool,
    /// The stores' acknowledgements (durable for `flush = sync`).
    pub pending: Vec<broker::PendingProduce>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(msg: &Message, i: usize) -> FieldTable {
        let h = msg.properties.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(a)) = h.inner().get("x-death") else {
            panic!("no x-death")
        };
        match &a.as_slice()[i] {
            AMQPValue::FieldTable(t) => t.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn header(msg: &Message, name: &str) -> Option<String> {
        text(msg.properties.headers().as_ref()?.inner().get(name))
    }

    #[test]
    fn a_first_death_writes_x_death_and_the_first_and_last_headers() {
        let msg = Message {
            exchange: "orders".into(),
            routing_key: "eu".into(),
            properties: BasicProperties::default()
                .with_expiration("200".into())
                .with_priority(3)
                .with_message_id("m-1".into()),
            body: b"x".to_vec(),
        };
        let out = dead_lettered(
            &msg,
            &Death {
                queue: "work",
                reason: "expired",
                time_s: 1_700_000_000,
            },
        );
        assert_eq!(out.properties.expiration(), &None, "expiration removed");
        assert_eq!(out.properties.priority(), &Some(3), "the rest is kept");
        assert_eq!(out.properties.message_id(), &Some("m-1".into()));
        let e = entry(&out, 0);
        assert_eq!(e.inner()["count"], AMQPValue::LongLongInt(1));
        assert_eq!(text(e.inner().get("reason")).unwrap(), "expired");
        assert_eq!(text(e.inner().get("queue")).unwrap(), "work");
        assert_eq!(text(e.inner().get("exchange")).unwrap(), "orders");
        assert_eq!(text(e.inner().get("original-expiration")).unwrap(), "200");
        assert_eq!(e.inner()["time"], AMQPValue::Timestamp(1_700_000_000));
        assert_eq!(
            e.inner()["routing-keys"],
            AMQPValue::FieldArray(vec![long_string("eu")].into())
        );
        assert_eq!(header(&out, "x-first-death-reason").unwrap(), "expired");
        assert_eq!(header(&out, "x-first-death-queue").unwrap(), "work");
        assert_eq!(header(&out, "x-first-death-exchange").unwrap(), "orders");
        assert_eq!(header(&out, "x-last-death-reason").unwrap(), "expired");
    }

    #[test]
    fn a_second_death_counts_up_or_adds_an_entry_in_front() {
        let msg = Message {
            exchange: "".into(),
            routing_key: "work".into(),
            ..Message::default()
        };
        let d = |queue, reason| Death {
            queue,
            reason,
            time_s: 1,
        };
        let once = dead_lettered(&msg, &d("work", "rejected"));
        let twice = dead_lettered(&once, &d("work", "rejected"));
        assert_eq!(entry(&twice, 0).inner()["count"], AMQPValue::LongLongInt(2));
        let other = dead_lettered(&twice, &d("dlq", "expired"));
        assert_eq!(text(entry(&other, 0).inner().get("queue")).unwrap(), "dlq");
        assert_eq!(text(entry(&other, 1).inner().get("queue")).unwrap(), "work");
        assert_eq!(header(&other, "x-first-death-reason").unwrap(), "rejected");
        assert_eq!(header(&other, "x-last-death-reason").unwrap(), "expired");
        assert_eq!(header(&other, "x-last-death-queue").unwrap(), "dlq");
        assert!(
            !is_cycle(&other, "work"),
            "a rejection breaks the cycle rule"
        );
        let expired = dead_lettered(&msg, &d("work", "expired"));
        assert!(
            is_cycle(&expired, "work"),
            "expired back into itself: a cycle"
        );
        assert!(!is_cycle(&expired, "dlq"));
    }
}
