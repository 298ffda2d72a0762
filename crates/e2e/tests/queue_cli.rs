//! `sluice queue|exchange|binding` against the real server (issue 15, "CLI and metrics"):
//! an operator declares a queue, a topic exchange and a binding with the CLI, an AMQP
//! application (lapin) publishes and consumes, and what the operator then sees — `queue
//! describe` counts, `queue list`, `binding list`, `/metrics` per queue — matches what the
//! application did; purge and delete act on the application's queue (its consumer is
//! cancelled); names that do not exist are refused with a message and a non-zero exit.

use std::process::Output;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use testkit::Server;
use testkit::http::{metric_sum, parse_metrics};

/// The CLI's exit code when the server answered with an error.
const EXIT_BROKER_ERROR: i32 = 3;
/// The CLI's exit code when the server cannot be reached.
const EXIT_UNREACHABLE: i32 = 2;
/// The subscribed-consumers series of queue `orders` in `/`.
const SUBSCRIBED_ORDERS: &str = "sluice_queue_consumers_subscribed{queue=\"orders\"}";

/// What the application keeps open while the operator looks (a dropped consumer or channel
/// would hand its message back).
struct App {
    _publisher: Connection,
    consumer_conn: Connection,
    _channel: Channel,
    _consumer: lapin::Consumer,
}

async fn connect(server: &Server, vhost: &str) -> Connection {
    let uri = format!(
        "amqp://guest:guest@{}/{}",
        server.amqp_addr(),
        admin_segment(vhost)
    );
    Connection::connect(&uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {uri}: {e}; log:\n{}", server.log()))
}

fn admin_segment(vhost: &str) -> String {
    if vhost == "/" {
        "%2f".into()
    } else {
        vhost.into()
    }
}

/// A CLI call from async code (the CLI is a child process the test waits for).
fn run(server: &Server, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| server.cli(args))
}

/// A CLI call that must succeed; its stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    tokio::task::block_in_place(|| server.ok(args))
}

/// A CLI call with `-o json` that must succeed; its JSON.
fn json(server: &Server, args: &[&str]) -> Value {
    tokio::task::block_in_place(|| server.json(args))
}

/// Asserts the CLI failed with `code` and said `words` on stderr; returns stderr.
fn fails(out: &Output, code: i32, words: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(words), "stderr lacks `{words}`: {stderr}");
    stderr
}

/// `queue describe` as JSON, polled until `done` holds (deliveries and acks are
/// asynchronous to the CLI), or the last answer after 10 s.
async fn describe_until(
    server: &Server,
    queue: &str,
    vhost: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q = json(server, &["queue", "describe", queue, "--vhost", vhost]);
        if done(&q) || Instant::now() > deadline {
            return q;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counts(q: &Value) -> (u64, u64, u64) {
    (
        q["messages_ready"].as_u64().unwrap(),
        q["messages_unacknowledged"].as_u64().unwrap(),
        q["consumers"].as_u64().unwrap(),
    )
}

/// Publishes `body` to `exchange` with `routing_key`, confirmed.
async fn publish(channel: &Channel, exchange: &str, routing_key: &str, body: &str) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(
        confirm.is_ack(),
        "publish to {exchange}/{routing_key} nacked"
    );
}

fn metrics(server: &Server) -> Vec<(String, f64)> {
    let (status, body) = tokio::task::block_in_place(|| server.http_get("/metrics"));
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_queues_exchanges_and_bindings_an_application_uses() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&dir.path().join("data"), &["--set", "amqp.vhosts=dev"]);
    operator_declares_a_topology(&server);
    let app = counts_follow_what_the_application_does(&server).await;

    // Purge drops the ready messages; the held one stays with its consumer.
    let out = ok(&server, &["queue", "purge", "orders"]);
    assert_eq!(out.trim(), "purged 2 messages from queue orders");
    let q = json(&server, &["queue", "describe", "orders"]);
    assert_eq!(counts(&q), (0, 1, 1), "{q:#}");

    // With --if-unused, a queue that has consumers is not deleted.
    let refused = run(&server, &["queue", "delete", "orders", "--if-unused"]);
    fails(&refused, EXIT_BROKER_ERROR, "in use");
    let _ = app.consumer_conn.close(200, "bye".into()).await;
    drop(app);

    // The consumer goes (its message comes back), and a restart keeps what the CLI declared.
    tokio::task::block_in_place(|| server.restart());
    let q = describe_until(&server, "orders", "/", |q| counts(q) == (1, 0, 0)).await;
    assert_eq!(counts(&q), (1, 0, 0), "{q:#}");
    let bindings = json(&server, &["binding", "list", "--vhost", "/"]);
    assert_eq!(bindings.as_array().unwrap().len(), 1, "{bindings:#}");
    let exchanges = json(&server, &["exchange", "describe", "logs"]);
    assert_eq!(exchanges["type"], "topic");
    assert_eq!(exchanges["bindings_as_source"][0]["destination"], "orders");

    a_deleted_queue_cancels_its_consumers(&server).await;
}

/// The operator declares a queue (in `/` and in `dev`), a topic exchange and a binding.
fn operator_declares_a_topology(server: &Server) {
    let out = ok(
        server,
        &[
            "queue",
            "declare",
            "orders",
            "--arg",
            "x-message-ttl=600000",
        ],
    );
    assert_eq!(out.trim(), "declared queue orders");
    let out = ok(
        server,
        &[
            "queue",
            "declare",
            "orders",
            "--arg",
            "x-message-ttl=600000",
        ],
    );
    assert_eq!(out.trim(), "queue orders already exists", "declared alike");
    let differs = run(server, &["queue", "declare", "orders"]);
    fails(&differs, EXIT_BROKER_ERROR, "exists with other settings");
    let out = ok(server, &["exchange", "declare", "logs", "--type", "topic"]);
    assert_eq!(out.trim(), "declared topic exchange logs");
    let out = ok(
        server,
        &["binding", "add", "logs", "orders", "-k", "*.error"],
    );
    assert!(
        out.starts_with("bound queue orders to exchange logs"),
        "{out}"
    );
    // The same name in another vhost is another queue.
    ok(server, &["queue", "declare", "orders", "--vhost", "dev"]);

    let listed = json(server, &["queue", "list"]);
    let names: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let s = |k: &str| q[k].as_str().unwrap().to_string();
            (s("vhost"), s("name"))
        })
        .collect();
    assert_eq!(
        names,
        [
            ("/".to_string(), "orders".to_string()),
            ("dev".into(), "orders".into())
        ]
    );
    let table = ok(server, &["queue", "list", "--vhost", "/"]);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .starts_with("VHOST  QUEUE   READY  UNACKED  CONSUMERS"),
        "{table}"
    );
    assert!(!table.contains("dev"), "only / was asked for: {table}");
    let bindings = ok(server, &["binding", "list"]);
    assert!(
        bindings
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["/", "logs", "orders", "queue", "*.error"]),
        "{bindings}"
    );
}

/// An application publishes through the exchange and a prefetch-1 consumer holds one
/// message; `queue describe`, its table and `/metrics` show it. Returns what it keeps open.
async fn counts_follow_what_the_application_does(server: &Server) -> App {
    // The application publishes: three messages match the binding, two do not.
    let conn = connect(server, "/").await;
    let publisher = conn.create_channel().await.unwrap();
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (key, body) in [
        ("app.error", "e1"),
        ("app.info", "i1"),
        ("db.error", "e2"),
        ("app.info", "i2"),
        ("web.error", "e3"),
    ] {
        publish(&publisher, "logs", key, body).await;
    }
    let q = describe_until(server, "orders", "/", |q| counts(q) == (3, 0, 0)).await;
    assert_eq!(counts(&q), (3, 0, 0), "{q:#}");
    assert_eq!(q["message_stats"]["published"], 3, "{q:#}");
    let m = metrics(server);
    assert!(
        m.contains(&(SUBSCRIBED_ORDERS.to_string(), 0.0)),
        "a queue nobody consumes shows 0 consumers: {m:?}"
    );

    // A consumer with prefetch 1 holds one message and leaves two ready.
    let consumer_conn = connect(server, "/").await;
    let consumer_channel = consumer_conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(1, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            "orders".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("consumer open")
        .expect("delivery");
    assert_eq!(first.data, b"e1");
    let q = describe_until(server, "orders", "/", |q| counts(q) == (2, 1, 1)).await;
    assert_eq!(counts(&q), (2, 1, 1), "ready, unacked, consumers: {q:#}");
    assert_eq!(q["messages"], 3);
    assert_eq!(q["durable"], true);
    assert_eq!(q["arguments"]["x-message-ttl"], "600000");
    assert_eq!(q["effective_policy"]["message_ttl_ms"], 600_000, "{q:#}");
    assert_eq!(q["message_stats"]["delivered"], 1, "{q:#}");
    assert_eq!(q["bindings"][0]["source"], "logs", "{q:#}");
    assert_eq!(q["bindings"][0]["routing_key"], "*.error", "{q:#}");
    let other = json(server, &["queue", "describe", "orders", "--vhost", "dev"]);
    assert_eq!(counts(&other), (0, 0, 0), "dev's orders got nothing");
    let text = ok(server, &["queue", "describe", "orders"]);
    assert!(
        text.contains("ready: 2  unacked: 1  scheduled: 0  consumers: 1"),
        "{text}"
    );
    assert!(
        text.contains("message TTL") && text.contains("600000 ms"),
        "{text}"
    );

    // /metrics shows the same per queue.
    let m = metrics(server);
    let series = |name: &str| metric_sum(&m, name, &["queue=\"orders\""]);
    assert_eq!(series("sluice_queue_messages_ready"), 2.0);
    assert_eq!(series("sluice_queue_messages_unacked"), 1.0);
    assert_eq!(series("sluice_queue_consumers_subscribed"), 1.0);
    assert_eq!(series("sluice_queue_published_total"), 3.0);
    assert_eq!(series("sluice_queue_delivered_total"), 1.0);
    assert_eq!(series("sluice_queue_acked_total"), 0.0);

    App {
        _publisher: conn,
        consumer_conn,
        _channel: consumer_channel,
        _consumer: consumer,
    }
}

/// A consumer of a queue the operator deletes is cancelled; the queue and its bindings go.
async fn a_deleted_queue_cancels_its_consumers(server: &Server) {
    let conn = connect(server, "/").await;
    let channel = conn.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            "orders".into(),
            "late".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the returned message within 10 s")
        .expect("consumer open")
        .expect("delivery");
    assert!(back.redelivered, "it was delivered once before");
    let out = ok(server, &["queue", "delete", "orders"]);
    assert_eq!(out.trim(), "deleted queue orders");
    let ended = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the consumer hears of the delete within 10 s");
    assert!(ended.is_none(), "the consumer is cancelled: {ended:?}");
    let gone = run(server, &["queue", "describe", "orders"]);
    fails(&gone, EXIT_BROKER_ERROR, "no queue 'orders' in vhost '/'");
    let bindings = json(server, &["binding", "list", "--vhost", "/"]);
    assert_eq!(bindings, Value::Array(Vec::new()), "its binding went too");
    let get = channel
        .basic_get("orders".into(), BasicGetOptions::default())
        .await;
    assert!(get.is_err(), "AMQP clients see it gone too");
    let m = metrics(server);
    assert!(
        !m.iter().any(|(series, _)| series == SUBSCRIBED_ORDERS),
        "no consumer series for a deleted queue"
    );
    // dev's queue of the same name is untouched.
    json(server, &["queue", "describe", "orders", "--vhost", "dev"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_refused_with_a_message_and_an_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let refused = |args: &[&str], words: &str| {
        let out = run(&server, args);
        fails(&out, EXIT_BROKER_ERROR, words);
    };
    refused(
        &["queue", "describe", "nope"],
        "no queue 'nope' in vhost '/'",
    );
    refused(&["queue", "purge", "nope"], "no queue 'nope'");
    refused(&["queue", "delete", "nope"], "no queue 'nope'");
    refused(&["queue", "list", "--vhost", "nope"], "no vhost 'nope'");
    refused(&["exchange", "describe", "nope"], "no exchange 'nope'");
    refused(&["exchange", "delete", "nope"], "no exchange 'nope'");
    refused(
        &["exchange", "delete", "amq.topic"],
        "built-in exchange 'amq.topic'",
    );
    refused(&["binding", "add", "nope", "q"], "no exchange 'nope'");
    refused(&["binding", "add", "amq.direct", "q"], "no queue 'q'");
    refused(
        &["queue", "declare", "q", "--arg", "x-max-priority=1000"],
        "invalid arg 'x-max-priority'",
    );
    ok(&server, &["queue", "declare", "q"]);
    refused(
        &["binding", "remove", "amq.direct", "q", "-k", "k"],
        "no such binding",
    );
    // --if-exists makes a missing name fine.
    let out = ok(&server, &["queue", "delete", "nope", "--if-exists"]);
    assert_eq!(out.trim(), "queue nope does not exist");
    // A server that is not there: exit 2, with a hint.
    let out = tokio::task::block_in_place(|| {
        testkit::cli::cli(
            &server.bootstrap(),
            &["--admin", "127.0.0.1:1", "queue", "list"],
            None,
        )
    });
    fails(&out, EXIT_UNREACHABLE, "--admin HOST:PORT or SLUICE_ADMIN");
}
