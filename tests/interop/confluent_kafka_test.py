"""confluent-kafka (librdkafka 2.16 bundled) against sluice: admin, keyed produce with
compression, a consumer group of three, commit and resume, offsets by time, delete,
transactions (committed and aborted; read_committed vs read_uncommitted)."""
import os
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from checks import assert_per_key_order, check, finish

BOOT = os.environ["BOOTSTRAP"]
TOPIC = "cf-interop"
COUNT, KEYS = 20000, 20
admin = AdminClient({"bootstrap.servers": BOOT})


def create():
    futs = admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1,
                                         config={"retention.ms": "86400000"})])
    futs[TOPIC].result(30)
    md = admin.list_topics(timeout=10)
    assert len(md.topics[TOPIC].partitions) == 3


def produce(compression):
    p = Producer({"bootstrap.servers": BOOT, "compression.type": compression,
                  "enable.idempotence": True, "linger.ms": 5})
    errors = []
    seq = [0] * KEYS
    for i in range(COUNT):
        k = i % KEYS
        p.produce(TOPIC, key=f"k{k}", value=f"k{k}|{seq[k]}",
                  on_delivery=lambda err, msg: err and errors.append(err))
        seq[k] += 1
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "undelivered messages"
    assert not errors, errors


def consume_group_of_three():
    # `seen`: distinct (partition, offset) pairs; a record may be delivered twice around a
    # rebalance, so deliveries are not the count to stop at.
    got, seen, lock = [], set(), threading.Lock()
    deadline = time.time() + 120

    def commit_before_handover(consumer, _partitions):
        # What a member has read is committed before its partitions move, so the next
        # owner continues from there (and the final commits cover every partition).
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def member():
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "cf-group",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([TOPIC], on_revoke=commit_before_handover)
        mine = []
        while time.time() < deadline:
            with lock:
                if len(seen) >= COUNT:
                    break
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            with lock:
                got.append((m.partition(), m.offset(), m.key().decode(), m.value().decode()))
                seen.add((m.partition(), m.offset()))
            mine.append(m)
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:
            # A member that was assigned nothing has nothing to commit.
            if e.args[0].code() != KafkaError._NO_OFFSET:
                raise
        finally:
            c.close()

    threads = [threading.Thread(target=member) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Deduplicate by (partition, offset) and check each partition's records arrived in order.
    unique = {}
    for part, off, key, value in got:
        unique[(part, off)] = (key, value)
    ordered = [unique[k] for k in sorted(unique)]
    assert_per_key_order(ordered, COUNT, KEYS)


def resume_after_commit():
    p = Producer({"bootstrap.servers": BOOT})
    for i in range(10):
        p.produce(TOPIC, key="late", value=f"late|{i}")
    p.flush(30)
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "cf-group",
                  "auto.offset.reset": "earliest"})
    c.subscribe([TOPIC])
    got = []
    deadline = time.time() + 30
    while time.time() < deadline and len(got) < 10:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value().decode())
    extra = c.poll(2)
    c.close()
    assert sorted(got) == sorted(f"late|{i}" for i in range(10)), got
    assert extra is None or extra.error(), "a committed record was delivered again"


def offsets_and_watermarks():
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "cf-wm"})
    total = 0
    for part in range(3):
        low, high = c.get_watermark_offsets(TopicPartition(TOPIC, part), timeout=10)
        assert low == 0
        total += high
    assert total == COUNT + 10, total
    found = c.offsets_for_times([TopicPartition(TOPIC, 0, 0)], timeout=10)
    assert found[0].offset == 0, found
    c.close()


def configs_and_delete():
    res = ConfigResource(ConfigResource.Type.TOPIC, TOPIC)
    desc = admin.describe_configs([res])[res].result(30)
    assert desc["retention.ms"].value == "86400000", desc["retention.ms"].value
    admin.create_partitions([NewPartitions(TOPIC, 4)])[TOPIC].result(30)
    assert len(admin.list_topics(timeout=10).topics[TOPIC].partitions) == 4
    admin.delete_topics([TOPIC])[TOPIC].result(30)
    assert TOPIC not in admin.list_topics(timeout=10).topics


def transactions_read_committed():
    """Committed and aborted transactions: read_committed sees only the committed ones."""
    topic = "cf-txn"
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    p = Producer({"bootstrap.servers": BOOT, "transactional.id": "cf-txn-1", "linger.ms": 5})
    p.init_transactions(30)
    committed = set()
    for t in range(6):
        p.begin_transaction()
        for i in range(5):
            value = f"t{t}-{i}"
            p.produce(topic, value=value, partition=i % 2)
            if t % 2 == 0:
                committed.add(value)
        if t % 2 == 0:
            p.commit_transaction(30)
        else:
            p.flush(30)
            p.abort_transaction(30)

    def read(isolation, want):
        c = Consumer({"bootstrap.servers": BOOT, "group.id": f"cf-txn-{isolation}",
                      "auto.offset.reset": "earliest", "isolation.level": isolation,
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        got, deadline, quiet = [], time.time() + 30, None
        while time.time() < deadline:
            m = c.poll(0.2)
            if m is None:
                if len(got) >= want and quiet and time.time() - quiet > 1.5:
                    break
                continue
            if m.error():
                raise KafkaException(m.error())
            got.append(m.value().decode())
            quiet = time.time()
        c.close()
        return got

    rc = read("read_committed", 15)
    assert sorted(rc) == sorted(committed), rc
    ru = read("read_uncommitted", 30)
    assert len(ru) == 30, len(ru)


def cooperative_member_leaves():
    """cooperative-sticky (KIP-429): when one of two members unsubscribes, the other gets
    the freed partitions in one incremental assignment and loses none of its own."""
    futs = admin.create_topics([NewTopic("cf-coop", num_partitions=4, replication_factor=1)])
    for f in futs.values():
        f.result(30)
    events = {"a": [], "b": []}

    def member(name):
        c = Consumer({"bootstrap.servers": BOOT, "group.id": "cf-coop",
                      "partition.assignment.strategy": "cooperative-sticky",
                      "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        c.subscribe(["cf-coop"],
                    on_assign=lambda _, ps: events[name].append(
                        ("assign", sorted(p.partition for p in ps))),
                    on_revoke=lambda _, ps: events[name].append(
                        ("revoke", sorted(p.partition for p in ps))))
        return c

    a, b = member("a"), member("b")
    deadline = time.time() + 30
    while time.time() < deadline:
        a.poll(0.1)
        b.poll(0.1)
        held = {n: sorted({p for kind, ps in ev if kind == "assign" for p in ps}
                          - {p for kind, ps in ev if kind == "revoke" for p in ps})
                for n, ev in events.items()}
        if len(held["a"]) == 2 and len(held["b"]) == 2:
            break
    assert len(held["a"]) == 2 and len(held["b"]) == 2, events
    # The cooperative protocol's second round may still be calling back (an empty
    # incremental assign): let it settle before b leaves.
    settle = time.time() + 3
    while time.time() < settle:
        a.poll(0.1)
        b.poll(0.1)
    seen = len(events["a"])
    b.unsubscribe()
    deadline = time.time() + 20
    while time.time() < deadline and len(events["a"]) == seen:
        a.poll(0.1)
        b.poll(0.1)
    settle = time.time() + 3
    while time.time() < settle:
        a.poll(0.1)
    after = events["a"][seen:]
    assert after == [("assign", held["b"])], f"after b left, a saw {after}"
    a.close()
    b.close()


def telemetry_on_metrics():
    # librdkafka pushes its metrics (enable.metrics.push, on by default) every
    # kafka.telemetry_push_interval_ms (500 ms for this suite's broker).
    import urllib.request
    admin.create_topics([NewTopic("cf-telemetry", num_partitions=1, replication_factor=1)])[
        "cf-telemetry"].result(30)
    p = Producer({"bootstrap.servers": BOOT, "client.id": "telemetry-check", "linger.ms": 5})
    deadline = time.time() + 30
    found = []
    while time.time() < deadline and not found:
        p.produce("cf-telemetry", key="t", value="v")
        p.poll(0.2)
        text = urllib.request.urlopen(os.environ["ADMIN_URL"] + "/metrics").read().decode()
        found = [l for l in text.splitlines() if l.startswith("sluice_kafka_client_metric{")
                 and 'client_id="telemetry-check"' in l
                 and 'name="org.apache.kafka.producer.' in l]
    p.flush(10)
    assert found, "no pushed producer metric for client telemetry-check on /metrics"
    value = float(found[0].rsplit(" ", 1)[1])
    assert value == value, "a metric value that is not a number"


def consumer_protocol_group():
    topic, group = "cf-kip848", "kip848"
    admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(30)
    p = Producer({"bootstrap.servers": BOOT, "linger.ms": 5})

    def produce(n, tag):
        for i in range(n):
            p.produce(topic, key=f"k{i}", value=f"{tag}:{i}", partition=i % 4)
        assert p.flush(30) == 0

    def member():
        c = Consumer({"bootstrap.servers": BOOT, "group.id": group, "group.protocol": "consumer",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        return c

    def drain(consumers, want, seen, limit=60):
        deadline = time.time() + limit
        while time.time() < deadline and sum(len(s) for s in seen) < want:
            for c, s in zip(consumers, seen):
                m = c.poll(0.1)
                if m is not None and not m.error():
                    key = (m.partition(), m.offset())
                    assert all(key not in other for other in seen), f"{key} delivered twice"
                    s.add(key)
        return sum(len(s) for s in seen)

    produce(400, "a")
    c1, c2 = member(), member()
    seen = [set(), set()]
    got = drain([c1, c2], 400, seen)
    assert got == 400, f"consumed {got} of 400"
    parts = [{p for p, _ in s} for s in seen]
    assert parts[0] and parts[1] and not (parts[0] & parts[1]), f"partitions {parts}"
    for c in (c1, c2):
        c.commit(asynchronous=False)
    c2.close()  # leaves the group: c1 takes over every partition
    produce(40, "b")
    rest = [set()]
    got = drain([c1], 40, rest)
    assert got == 40 and {p for p, _ in rest[0]} == {0, 1, 2, 3}, f"{got}, {rest}"
    c1.commit(asynchronous=False)
    c1.close()
    c3 = member()
    produce(4, "c")
    last = [set()]
    assert drain([c3], 4, last) == 4 and all(o >= 110 for _, o in last[0]), last
    c3.close()


def share_group():
    from confluent_kafka import AcknowledgeType, ShareConsumer
    topic, group = "cf-share", "sharers"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

    def member():
        c = ShareConsumer({"bootstrap.servers": BOOT, "group.id": group,
                           "share.acknowledgement.mode": "explicit"})
        c.subscribe([topic])
        return c

    a, b = member(), member()
    try:
        share_group_checks(a, b, topic, AcknowledgeType)
    finally:
        a.close()
        b.close()


def share_group_checks(a, b, topic, AcknowledgeType):
    # Share groups start at the partition's end: both poll before anything is produced.
    for c in (a, b):
        c.poll(1.0)
    p = Producer({"bootstrap.servers": BOOT, "linger.ms": 5})

    def produce(values):
        for v in values:
            p.produce(topic, key="k", value=v)
        assert p.flush(30) == 0

    def poll_both(act, seconds):
        """Polls both members for `seconds` (each prefetches in the background, so either
        may get any record); `act(consumer, message)` returns the acknowledgement type."""
        end = time.time() + seconds
        while time.time() < end:
            for c in (a, b):
                for m in c.poll(0.2):
                    if not m.error():
                        c.acknowledge(m, act(c, m))
                c.commit_sync()

    # 200 records: each accepted once overall; one released on its first delivery comes back.
    produce([f"v{i}" for i in range(200)])
    accepted, deliveries, by = [], {}, {a: 0, b: 0}

    def first_release(c, m):
        deliveries[m.offset()] = deliveries.get(m.offset(), 0) + 1
        if m.offset() == 17 and deliveries[17] == 1:
            return AcknowledgeType.RELEASE
        accepted.append(m.offset())
        by[c] += 1
        return AcknowledgeType.ACCEPT

    deadline = time.time() + 60
    while time.time() < deadline and len(accepted) < 200:
        poll_both(first_release, 0.5)
    assert sorted(accepted) == list(range(200)), (len(accepted), len(set(accepted)))
    assert deliveries[17] == 2, "the released record was not delivered again"
    print(f"     accepted by the two members: {by[a]} / {by[b]}", flush=True)
    # A rejected record is archived: never delivered again.
    produce(["poison"])
    seen = []
    poll_both(lambda c, m: (seen.append(m.offset()), AcknowledgeType.REJECT)[1], 4)
    assert seen == [200], f"the rejected record was delivered {seen}"
    # A record released at every delivery is archived after the delivery-count limit (5).
    produce(["flaky"])
    seen = []
    poll_both(lambda c, m: (seen.append(m.offset()), AcknowledgeType.RELEASE)[1], 8)
    assert seen == [201] * 5, f"delivered {seen}"


def share_group_earliest():
    # Its own broker: the setting applies to every share group of a broker.
    import shutil
    import subprocess
    import tempfile
    from confluent_kafka import AcknowledgeType, ShareConsumer
    work = tempfile.mkdtemp()
    server = subprocess.Popen(
        [os.environ["SLUICE_BIN_PATH"], "server", "--data-dir", os.path.join(work, "data"),
         "--kafka-listener", "127.0.0.1:0", "--amqp-listener", "127.0.0.1:0",
         "--admin-listener", "127.0.0.1:0", "--set", "groups.share_auto_offset_reset=earliest"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    c = None
    try:
        boot = next("127.0.0.1:" + line.split()[1].rsplit(":", 1)[1]
                    for line in server.stdout if line.split()[:1] == ["kafka"])
        p = Producer({"bootstrap.servers": boot})
        for i in range(10):
            p.produce("early", value=f"e{i}")
        assert p.flush(30) == 0
        c = ShareConsumer({"bootstrap.servers": boot, "group.id": "late-joiners",
                           "share.acknowledgement.mode": "explicit"})
        c.subscribe(["early"])
        got = []
        deadline = time.time() + 30
        while time.time() < deadline and len(got) < 10:
            for m in c.poll(0.5):
                if not m.error():
                    got.append(m.offset())
                    c.acknowledge(m, AcknowledgeType.ACCEPT)
            c.commit_sync()
        assert sorted(got) == list(range(10)), got
    finally:
        if c is not None:
            c.close()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def groups_listed():
    groups = admin.list_consumer_groups().result(30)
    assert "cf-group" in [g.group_id for g in groups.valid], groups.valid


check("create topic with config", create)
check("produce 20000 keyed, lz4", lambda: produce("lz4"))
check("consume in a group of 3 with per-key order", consume_group_of_three)
check("group resumes after committed offsets", resume_after_commit)
check("watermarks and offsets_for_times", offsets_and_watermarks)
check("list consumer groups", groups_listed)
check("cooperative-sticky: one incremental assignment when a member leaves",
      cooperative_member_leaves)
check("transactions: read_committed sees only committed", transactions_read_committed)
check("describe configs, add partitions, delete topic", configs_and_delete)
check("client telemetry (KIP-714) pushed and shown on /metrics", telemetry_on_metrics)
check("group.protocol=consumer (KIP-848): split, a member leaves, resume from commits",
      consumer_protocol_group)
check("share groups (KIP-932): two ShareConsumers share one partition, release and reject",
      share_group)
check("share groups: groups.share_auto_offset_reset=earliest reads what was there before",
      share_group_earliest)
finish()
