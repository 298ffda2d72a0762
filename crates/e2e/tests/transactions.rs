//! Issue 6, transactions, with librdkafka (the `rdkafka` crate) against the real binary:
//! committed and aborted transactions interleaved on three partitions (read_committed sees
//! exactly the committed records, read_uncommitted all of them), zombie fencing, and
//! consume-transform-produce with `send_offsets_to_transaction` surviving SIGKILLs of the
//! processor (`out` holds every input record exactly once).
//!
//! The processor runs as a child process: this test binary re-executed with
//! `TXN_PROCESSOR_BOOTSTRAP` set, running only the `processor_child` test.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use testkit::Server;

const TIMEOUT: Duration = Duration::from_secs(30);
const PROCESSOR_ENV: &str = "TXN_PROCESSOR_BOOTSTRAP";

fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
        .expect("create_topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
}

fn txn_producer(bootstrap: &str, transactional_id: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "30000")
        .set("linger.ms", "5")
        .create()
        .expect("transactional producer")
}

/// Reads every partition of `topic` from the start at an isolation level until nothing
/// new arrives for `quiet` (after at least `expect_at_least` records). Returns values.
fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    expect_at_least: usize,
    quiet: Duration,
) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("reader-{topic}-{isolation}-{}", nanos()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_new = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
                last_new = Instant::now();
            }
            Some(Err(e)) => panic!("consume {topic}: {e}"),
            None => {
                if out.len() >= expect_at_least && last_new.elapsed() >= quiet {
                    break;
                }
            }
        }
    }
    out
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[test]
fn read_committed_sees_only_committed_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    create_topics(&bootstrap, &[("txn", 3)]);
    let producer = txn_producer(&bootstrap, "tx-interleaved");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    let (mut committed, mut aborted) = (HashSet::new(), HashSet::new());
    for txn in 0..30 {
        let abort = txn % 3 == 2; // 10 aborted, 20 committed, interleaved
        producer.begin_transaction().expect("begin");
        for p in 0..3 {
            for j in 0..3 {
                let value = format!("t{txn}-p{p}-{j}");
                producer
                    .send(
                        BaseRecord::<(), str>::to("txn")
                            .partition(p)
                            .payload(&value),
                    )
                    .expect("send");
                if abort {
                    aborted.insert(value);
                } else {
                    committed.insert(value);
                }
            }
        }
        if abort {
            producer.flush(TIMEOUT).expect("flush");
            producer.abort_transaction(TIMEOUT).expect("abort");
        } else {
            producer.commit_transaction(TIMEOUT).expect("commit");
        }
    }
    // A transaction left open: invisible to read_committed, and it holds back the LSO.
    producer.begin_transaction().expect("begin open");
    producer
        .send(
            BaseRecord::<(), str>::to("txn")
                .partition(0)
                .payload("open"),
        )
        .expect("send open");
    producer.flush(TIMEOUT).expect("flush open");

    let rc = read_all(
        &bootstrap,
        "txn",
        3,
        "read_committed",
        180,
        Duration::from_secs(2),
    );
    let rc_set: HashSet<String> = rc.iter().cloned().collect();
    assert_eq!(rc.len(), 180, "read_committed count");
    assert_eq!(
        rc_set, committed,
        "read_committed sees exactly the committed records"
    );
    let ru = read_all(
        &bootstrap,
        "txn",
        3,
        "read_uncommitted",
        271,
        Duration::from_secs(2),
    );
    let ru_set: HashSet<String> = ru.iter().cloned().collect();
    assert_eq!(
        ru.len(),
        271,
        "read_uncommitted sees all, including the open one"
    );
    assert!(ru_set.is_superset(&committed) && ru_set.is_superset(&aborted));
    assert!(ru_set.contains("open"));

    // Committing the open transaction makes it visible.
    producer.commit_transaction(TIMEOUT).expect("commit open");
    let rc = read_all(
        &bootstrap,
        "txn",
        3,
        "read_committed",
        181,
        Duration::from_secs(1),
    );
    assert_eq!(rc.len(), 181);
    assert!(rc.iter().any(|v| v == "open"));
}

#[test]
fn a_new_producer_fences_the_zombie() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    create_topics(&bootstrap, &[("fence", 1)]);
    let zombie = txn_producer(&bootstrap, "tx-fence");
    zombie.init_transactions(TIMEOUT).expect("init zombie");
    zombie.begin_transaction().expect("begin zombie");
    zombie
        .send(BaseRecord::<(), str>::to("fence").payload("zombie"))
        .expect("send zombie");
    zombie.flush(TIMEOUT).expect("flush zombie");

    let fresh = txn_producer(&bootstrap, "tx-fence");
    fresh.init_transactions(TIMEOUT).expect("init fresh");
    let err = zombie
        .commit_transaction(TIMEOUT)
        .expect_err("the zombie's commit must fail");
    let code = match &err {
        KafkaError::Transaction(e) => e.code(),
        other => panic!("unexpected error {other:?}"),
    };
    assert!(
        matches!(
            code,
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        ),
        "fencing error expected, got {code:?} ({err})"
    );

    fresh.begin_transaction().expect("begin fresh");
    fresh
        .send(BaseRecord::<(), str>::to("fence").payload("fresh"))
        .expect("send fresh");
    fresh.commit_transaction(TIMEOUT).expect("commit fresh");
    let rc = read_all(
        &bootstrap,
        "fence",
        1,
        "read_committed",
        1,
        Duration::from_secs(1),
    );
    assert_eq!(rc, vec!["fresh".to_string()]);
}

/// The processor child: consume `in` in a group, produce `out` transactionally with the
/// consumed offsets in the same transaction. Any error ends the process (the parent
/// restarts it); a no-op when not started as a child.
#[test]
fn processor_child() {
    let Ok(bootstrap) = std::env::var(PROCESSOR_ENV) else {
        return;
    };
    let producer = txn_producer(&bootstrap, "tx-ctp");
    producer
        .init_transactions(TIMEOUT)
        .expect("init_transactions");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "ctp")
        .set("group.instance.id", "ctp-0")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("consumer");
    consumer.subscribe(&["in"]).expect("subscribe");
    loop {
        let mut batch = Vec::new();
        let until = Instant::now() + Duration::from_millis(100);
        while batch.len() < 50 && Instant::now() < until {
            match consumer.poll(Duration::from_millis(20)) {
                Some(Ok(m)) => batch.push((
                    m.partition(),
                    m.offset(),
                    m.payload().unwrap_or_default().to_vec(),
                )),
                Some(Err(e)) => panic!("consume: {e}"),
                None => {}
            }
        }
        if batch.is_empty() {
            continue;
        }
        producer.begin_transaction().expect("begin");
        let mut next: HashMap<i32, i64> = HashMap::new();
        for (partition, offset, payload) in &batch {
            let value = format!("out:{}", String::from_utf8_lossy(payload));
            producer
                .send(BaseRecord::<(), str>::to("out").payload(&value))
                .expect("send");
            next.insert(*partition, offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (p, o) in next {
            offsets
                .add_partition_offset("in", p, Offset::Offset(o))
                .expect("offset");
        }
        let meta = consumer.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&offsets, &meta, TIMEOUT)
            .expect("send_offsets_to_transaction");
        producer.commit_transaction(TIMEOUT).expect("commit");
    }
}

fn spawn_processor(bootstrap: &str, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("processor log");
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "processor_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROCESSOR_ENV, bootstrap)
        .stdout(Stdio::from(log.try_clone().expect("dup")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn processor")
}

#[test]
fn consume_transform_produce_survives_sigkill_exactly_once() {
    const INPUT: usize = 3_000;
    const KILLS: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    create_topics(&bootstrap, &[("in", 3), ("out", 3)]);
    // Input trickles in (about 200 records/s) while the processor is being killed, so
    // every incarnation has work in flight when it dies.
    let feeder = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            let input: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .create()
                .expect("input producer");
            for i in 0..INPUT {
                let value = format!("r{i}");
                let key = format!("k{}", i % 17);
                while input
                    .send(BaseRecord::to("in").key(&key).payload(&value))
                    .is_err()
                {
                    input.poll(Duration::from_millis(10));
                }
                if i % 20 == 19 {
                    input.poll(Duration::from_millis(100));
                }
            }
            input.flush(TIMEOUT).expect("flush input");
        })
    };

    let log = dir.path().join("processor.log");
    let mut seed = nanos() as u64 | 1;
    for kill in 0..KILLS {
        let mut child = spawn_processor(&bootstrap, &log);
        // xorshift: a kill point between 1.5 and 4.5 s into the run.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(1_500 + seed % 3_000);
        std::thread::sleep(after);
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "processor exited on its own ({status}) before kill {kill}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        child.kill().expect("SIGKILL processor");
        let _ = child.wait();
    }
    // The last incarnation runs to the end.
    let mut child = spawn_processor(&bootstrap, &log);
    feeder.join().expect("feeder");
    let out = read_all(
        &bootstrap,
        "out",
        3,
        "read_committed",
        INPUT,
        Duration::from_secs(5),
    );
    let _ = child.kill();
    let _ = child.wait();

    let mut seen = HashMap::new();
    for v in &out {
        *seen.entry(v.clone()).or_insert(0usize) += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicates in out: {dups:?}");
    let missing: Vec<usize> = (0..INPUT)
        .filter(|i| !seen.contains_key(&format!("out:r{i}")))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "missing from out: {missing:?}");
    assert_eq!(out.len(), INPUT);
    // Uncommitted leftovers of the killed incarnations are there for read_uncommitted only.
    let all = read_all(
        &bootstrap,
        "out",
        3,
        "read_uncommitted",
        INPUT,
        Duration::from_secs(2),
    );
    eprintln!(
        "out: {} committed, {} including aborted leftovers of {KILLS} kills",
        out.len(),
        all.len()
    );
}

#[test]
fn transaction_state_survives_a_broker_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"));
    let bootstrap = server.bootstrap();
    create_topics(&bootstrap, &[("crash", 1)]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", "tx-crash")
        .set("transaction.timeout.ms", "10000")
        .create()
        .expect("producer");
    producer.init_transactions(TIMEOUT).expect("init");
    for (value, commit) in [("c1", true), ("a1", false)] {
        producer.begin_transaction().expect("begin");
        producer
            .send(BaseRecord::<(), str>::to("crash").payload(value))
            .expect("send");
        producer.flush(TIMEOUT).expect("flush");
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    }
    producer.begin_transaction().expect("begin open");
    producer
        .send(BaseRecord::<(), str>::to("crash").payload("open"))
        .expect("send open");
    producer.flush(TIMEOUT).expect("flush open");
    let plain: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("plain producer");
    plain
        .send(BaseRecord::<(), str>::to("crash").payload("plain"))
        .expect("send plain");
    plain.flush(TIMEOUT).expect("flush plain");
    drop(plain);

    server.kill9();
    // The client must not end its transaction: the broker's timeout has to.
    std::mem::forget(producer);
    server.restart();

    // Rebuilt from the log: the aborted record stays hidden, the open transaction still
    // holds back the last stable offset (so "plain", after it, is not visible yet).
    let rc = read_all(
        &bootstrap,
        "crash",
        1,
        "read_committed",
        1,
        Duration::from_secs(1),
    );
    assert_eq!(rc, vec!["c1".to_string()]);
    let ru = read_all(
        &bootstrap,
        "crash",
        1,
        "read_uncommitted",
        4,
        Duration::from_secs(1),
    );
    assert_eq!(ru, ["c1", "a1", "open", "plain"].map(String::from).to_vec());
    // The restored coordinator times the open transaction out and aborts it.
    let rc = read_all(
        &bootstrap,
        "crash",
        1,
        "read_committed",
        2,
        Duration::from_secs(1),
    );
    assert_eq!(rc, vec!["c1".to_string(), "plain".to_string()]);
}
