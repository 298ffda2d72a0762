//! Group membership across a broker restart, with librdkafka: two consumers share a topic;
//! the broker restarts; they carry on with the same partitions and no rebalance. Classic
//! groups keep their static members (KIP-345, `group.instance.id`) with the group; KIP-848
//! consumer groups (`group.protocol=consumer`) keep every member with its assignment.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::Server;

const TOPIC: &str = "static";
const PARTITIONS: i32 = 4;

/// Counts the rebalances (assignments handed to this consumer).
struct Counting(Arc<AtomicUsize>);

impl ClientContext for Counting {}

impl ConsumerContext for Counting {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if matches!(r, Rebalance::Assign(_)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The group protocol under test.
#[derive(Clone, Copy)]
enum Protocol {
    /// Classic, with `group.instance.id`.
    ClassicStatic,
    /// KIP-848 `group.protocol=consumer`.
    Consumer,
    /// KIP-848 with `group.instance.id`.
    ConsumerStatic,
}

fn consumer(
    bootstrap: &str,
    protocol: Protocol,
    instance: &str,
    n: Arc<AtomicUsize>,
) -> BaseConsumer<Counting> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    match protocol {
        Protocol::ClassicStatic => cfg
            .set("group.id", "statics")
            .set("group.instance.id", instance)
            .set("session.timeout.ms", "30000")
            .set("heartbeat.interval.ms", "500"),
        Protocol::Consumer => cfg
            .set("group.id", "kip848")
            .set("group.protocol", "consumer"),
        Protocol::ConsumerStatic => cfg
            .set("group.id", "kip848-static")
            .set("group.protocol", "consumer")
            .set("group.instance.id", instance),
    };
    let c: BaseConsumer<Counting> = cfg.create_with_context(Counting(n)).expect("consumer");
    c.subscribe(&[TOPIC]).expect("subscribe");
    c
}

fn assigned(c: &BaseConsumer<Counting>) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls both consumers for `d`; returns the partitions of the records they received.
fn poll_both(
    a: &BaseConsumer<Counting>,
    b: &BaseConsumer<Counting>,
    d: Duration,
) -> [BTreeSet<i32>; 2] {
    let mut got = [BTreeSet::new(), BTreeSet::new()];
    let end = Instant::now() + d;
    while Instant::now() < end {
        for (k, c) in [a, b].into_iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                got[k].insert(m.partition());
            }
        }
    }
    got
}

fn produce_to_every_partition(bootstrap: &str, rt: &tokio::runtime::Runtime) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    rt.block_on(async {
        for part in 0..PARTITIONS {
            let r = FutureRecord::to(TOPIC)
                .partition(part)
                .key("k")
                .payload("v");
            p.send(r, Duration::from_secs(30)).await.expect("produce");
        }
    });
}

/// A server for these tests (no initial rebalance delay: both members join one generation
/// quickly; consumer-group heartbeats every 500 ms, so each reconciliation step is quick),
/// the topic created, and a runtime for the async clients.
fn server_with_topic(dir: &std::path::Path) -> (Server, tokio::runtime::Runtime) {
    let server = Server::start_with(
        dir,
        &[
            "--set",
            "groups.initial_rebalance_delay_ms=0",
            "--set",
            "groups.consumer_heartbeat_interval_ms=500",
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .create()
        .unwrap();
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1));
    let r = rt.block_on(admin.create_topics([&topic], &AdminOptions::new()));
    assert!(r.unwrap().into_iter().all(|x| x.is_ok()));
    (server, rt)
}

/// Polls until the two members split the partitions, then a little longer (no rebalance
/// still under way); returns their partitions.
fn stable_split(
    a: &BaseConsumer<Counting>,
    b: &BaseConsumer<Counting>,
) -> (BTreeSet<i32>, BTreeSet<i32>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        poll_both(a, b, Duration::from_millis(200));
        let (pa, pb) = (assigned(a), assigned(b));
        if !pa.is_empty() && !pb.is_empty() && pa.len() + pb.len() == PARTITIONS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stable split: {pa:?} / {pb:?}"
        );
    }
    poll_both(a, b, Duration::from_secs(2));
    (assigned(a), assigned(b))
}

#[test]
fn static_members_keep_their_partitions_across_a_broker_restart() {
    members_keep_their_partitions_across_a_broker_restart(Protocol::ClassicStatic);
}

#[test]
fn consumer_protocol_members_keep_their_partitions_across_a_broker_restart() {
    members_keep_their_partitions_across_a_broker_restart(Protocol::Consumer);
}

fn members_keep_their_partitions_across_a_broker_restart(protocol: Protocol) {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, rt) = server_with_topic(dir.path());
    let bootstrap = server.bootstrap();
    let (na, nb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = consumer(&bootstrap, protocol, "instance-a", na.clone());
    let b = consumer(&bootstrap, protocol, "instance-b", nb.clone());
    let (pa, pb) = stable_split(&a, &b);
    let rebalances = (na.load(Ordering::SeqCst), nb.load(Ordering::SeqCst));

    server.restart();
    // Heartbeats go on against the restarted broker for several intervals.
    poll_both(&a, &b, Duration::from_secs(5));
    produce_to_every_partition(&bootstrap, &rt);
    let got = poll_both(&a, &b, Duration::from_secs(10));

    assert_eq!(
        (na.load(Ordering::SeqCst), nb.load(Ordering::SeqCst)),
        rebalances,
        "a rebalance after the restart"
    );
    assert_eq!((assigned(&a), assigned(&b)), (pa.clone(), pb.clone()));
    assert_eq!(
        got,
        [pa, pb],
        "each consumer reads its own partitions after the restart"
    );
}

/// KIP-848 static membership: a member restarting with its `group.instance.id` within its
/// session gets its partitions back, and the other member sees no rebalance.
#[test]
fn a_restarted_static_consumer_protocol_member_gets_its_partitions_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _rt) = server_with_topic(dir.path());
    let bootstrap = server.bootstrap();
    let (na, nb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = consumer(
        &bootstrap,
        Protocol::ConsumerStatic,
        "instance-a",
        na.clone(),
    );
    let b = consumer(
        &bootstrap,
        Protocol::ConsumerStatic,
        "instance-b",
        nb.clone(),
    );
    let (pa, pb) = stable_split(&a, &b);
    let a_rebalances = na.load(Ordering::SeqCst);
    drop(b); // leaves as a static member: its partitions stay reserved
    // Several heartbeats of a while b is away: b's partitions are not handed to a.
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let _ = a.poll(Duration::from_millis(100));
    }
    assert_eq!(
        assigned(&a),
        pa,
        "a static member's partitions went to another while it restarted"
    );
    let nb2 = Arc::new(AtomicUsize::new(0));
    let b2 = consumer(
        &bootstrap,
        Protocol::ConsumerStatic,
        "instance-b",
        nb2.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while assigned(&b2).is_empty() && Instant::now() < deadline {
        poll_both(&a, &b2, Duration::from_millis(200));
    }
    poll_both(&a, &b2, Duration::from_secs(3));
    assert_eq!(
        assigned(&b2),
        pb,
        "the new incarnation got other partitions"
    );
    assert_eq!(assigned(&a), pa);
    assert_eq!(
        na.load(Ordering::SeqCst),
        a_rebalances,
        "the other member rebalanced"
    );
}
