//! Issue 16's proof for the scheduler with lapin against the real binary: 100,000 messages
//! published with confirms to an `x-delayed-message` exchange (`flush = sync`), each due
//! 6–9 s after its publish; the broker is killed with SIGKILL once every publish is
//! confirmed and restarted. Then every message is delivered exactly once, none before its
//! due time (the due time travels in the body; a little slack for the two processes'
//! clocks being read at different moments), and nothing is left scheduled.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use testkit::Server;

const MESSAGES: u64 = 100_000;
/// Confirms in flight.
const WINDOW: usize = 2000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn connect(server: &Server) -> Connection {
    let uri = format!("amqp://guest:guest@{}/%2f", server.amqp_addr());
    Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {uri}: {e}; log:\n{}", server.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_survive_kill9_and_come_once_never_early() {
    tokio::time::timeout(Duration::from_secs(240), run())
        .await
        .expect("the test finishes within 240 s");
}

/// The `later` x-delayed-message exchange (routing as direct) and the durable `due` queue
/// bound to it with key `k`.
async fn declare(ch: &lapin::Channel) {
    let mut args = FieldTable::default();
    args.insert(
        "x-delayed-type".into(),
        AMQPValue::LongString("direct".into()),
    );
    ch.exchange_declare(
        "later".into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        args,
    )
    .await
    .unwrap();
    ch.queue_declare(
        "due".into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "due".into(),
        "later".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&dir.path().join("data"), &["--set", "storage.flush=sync"]);
    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(&ch).await;

    // Publish: message i is due 6–9 s after its publish; the body says when.
    let mut inflight = std::collections::VecDeque::new();
    for i in 0..MESSAGES {
        let delay = 6_000 + (i * 7919 % 3_000) as i64;
        let due = now_ms() + delay;
        let mut headers = FieldTable::default();
        headers.insert("x-delay".into(), AMQPValue::LongLongInt(delay));
        let confirm = ch
            .basic_publish(
                "later".into(),
                "k".into(),
                BasicPublishOptions::default(),
                format!("{i} {due}").as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .unwrap();
        inflight.push_back(confirm);
        if inflight.len() >= WINDOW {
            let c = inflight.pop_front().unwrap().await.unwrap();
            assert!(c.is_ack());
        }
    }
    for c in inflight {
        assert!(c.await.unwrap().is_ack());
    }
    let confirmed_at = now_ms();
    // Before anything is due: nothing is ready.
    let probe = conn.create_channel().await.unwrap();
    let q = probe
        .queue_declare(
            "due".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    eprintln!(
        "{MESSAGES} confirmed; ready at the kill: {}",
        q.message_count()
    );
    drop(conn);
    server.kill9();
    server.restart();

    let conn = connect(&server).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut deliveries = ch
        .basic_consume(
            "due".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut early = Vec::new();
    while (seen.len() as u64) < MESSAGES {
        let d = tokio::time::timeout(Duration::from_secs(30), deliveries.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {MESSAGES} delivered", seen.len()))
            .unwrap()
            .unwrap();
        let text = String::from_utf8(d.data.clone()).unwrap();
        let (id, due) = text.split_once(' ').unwrap();
        let (id, due): (u64, i64) = (id.parse().unwrap(), due.parse().unwrap());
        // The broker took its own clock at the publish, a moment after ours: 50 ms slack.
        if now_ms() + 50 < due {
            early.push((id, due - now_ms()));
        }
        assert!(seen.insert(id), "message {id} delivered twice");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert!(early.is_empty(), "delivered before their time: {early:?}");
    // Nothing more: no duplicates arrive after the last one.
    let extra = tokio::time::timeout(Duration::from_secs(2), deliveries.next()).await;
    assert!(extra.is_err(), "a message came twice: {extra:?}");
    eprintln!(
        "all {MESSAGES} delivered once, none early; the last {} ms after the last confirm",
        now_ms() - confirmed_at
    );
}
