"""kafka-python (pure Python protocol code) against sluice: admin, keyed produce with gzip,
group consume, commit and resume, offsets by time, delete, transactions (committed/aborted,
offsets sent in a transaction, read_committed consume)."""
import os
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from checks import assert_per_key_order, check, finish

BOOT = os.environ["BOOTSTRAP"]
TOPIC = "kp-interop"
COUNT, KEYS = 5000, 10
admin = KafkaAdminClient(bootstrap_servers=BOOT)


def create():
    admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
    assert TOPIC in admin.list_topics()


def produce():
    p = KafkaProducer(bootstrap_servers=BOOT, compression_type="gzip", acks="all", linger_ms=5)
    seq = [0] * KEYS
    futures = []
    for i in range(COUNT):
        k = i % KEYS
        futures.append(p.send(TOPIC, key=f"k{k}".encode(), value=f"k{k}|{seq[k]}".encode()))
        seq[k] += 1
    p.flush(60)
    for f in futures:
        f.get(timeout=30)
    p.close()


def consume_group():
    c = KafkaConsumer(TOPIC, bootstrap_servers=BOOT, group_id="kp-group",
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=10000)
    got = []
    for m in c:
        got.append((m.key.decode(), m.value.decode()))
        if len(got) == COUNT:
            break
    c.commit()
    c.close()
    assert_per_key_order(got, COUNT, KEYS)


def resume():
    p = KafkaProducer(bootstrap_servers=BOOT)
    for i in range(5):
        p.send(TOPIC, value=f"late|{i}".encode())
    p.flush(30)
    p.close()
    c = KafkaConsumer(TOPIC, bootstrap_servers=BOOT, group_id="kp-group",
                      auto_offset_reset="earliest", consumer_timeout_ms=5000)
    got = [m.value.decode() for m in c]
    c.close()
    assert sorted(got) == [f"late|{i}" for i in range(5)], got


def offsets():
    c = KafkaConsumer(bootstrap_servers=BOOT)
    parts = [TopicPartition(TOPIC, p) for p in range(3)]
    end = c.end_offsets(parts)
    begin = c.beginning_offsets(parts)
    assert sum(end.values()) == COUNT + 5, end
    assert all(v == 0 for v in begin.values()), begin
    found = c.offsets_for_times({parts[0]: 0})
    assert found[parts[0]].offset == 0, found
    c.close()


def configs_and_delete():
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
    assert res, "describe_configs answered"
    groups = admin.list_groups()
    names = [g["group_id"] if isinstance(g, dict) else g[0] for g in groups]
    assert "kp-group" in names, groups
    admin.delete_topics([TOPIC])
    deadline = time.time() + 10
    while TOPIC in admin.list_topics() and time.time() < deadline:
        time.sleep(0.2)
    assert TOPIC not in admin.list_topics()


def transactions():
    topic = "kp-txn"
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    p = KafkaProducer(bootstrap_servers=BOOT, transactional_id="kp-txn-1")
    p.init_transactions()
    for t in range(4):
        p.begin_transaction()
        p.send(topic, value=f"t{t}a".encode(), partition=0)
        p.send(topic, value=f"t{t}b".encode(), partition=1)
        if t % 2 == 0:
            p.commit_transaction()
        else:
            p.abort_transaction()
    p.begin_transaction()
    p.send(topic, value=b"with-offsets", partition=0)
    p.send_offsets_to_transaction({TopicPartition(topic, 0): OffsetAndMetadata(3, "", -1)},
                                  "kp-txn-g")
    p.commit_transaction()
    p.close()
    c = KafkaConsumer(bootstrap_servers=BOOT, isolation_level="read_committed",
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    got = sorted(m.value.decode() for m in c)
    c.close()
    assert got == ["t0a", "t0b", "t2a", "t2b", "with-offsets"], got
    g = KafkaConsumer(bootstrap_servers=BOOT, group_id="kp-txn-g")
    committed = g.committed(TopicPartition(topic, 0))
    g.close()
    assert committed == 3, committed


def fetch_sessions():
    """kafka-python 3 uses incremental fetch sessions (KIP-227): a consumer of 200 partitions
    gets every record while the broker serves it incremental fetches."""
    import urllib.request

    def incremental():
        text = urllib.request.urlopen(os.environ["ADMIN_URL"] + "/metrics").read().decode()
        line = [l for l in text.splitlines()
                if l.startswith("sluice_kafka_fetch_incremental_total")]
        return float(line[0].split()[1]) if line else 0.0

    n = 200
    KafkaAdminClient(bootstrap_servers=BOOT).create_topics(
        [NewTopic("kp-sessions", num_partitions=n, replication_factor=1)])
    before = incremental()
    consumer = KafkaConsumer(bootstrap_servers=BOOT, group_id="kp-sessions",
                             auto_offset_reset="earliest", fetch_max_wait_ms=100)
    consumer.subscribe(["kp-sessions"])
    producer = KafkaProducer(bootstrap_servers=BOOT)
    want = {f"v{i}".encode() for i in range(2 * n)}
    got, sent = set(), 0
    deadline = time.time() + 60
    while time.time() < deadline and got != want:
        if sent < 2 * n and consumer.assignment():
            for _ in range(40):
                producer.send("kp-sessions", value=f"v{sent}".encode(), partition=sent % n)
                sent += 1
            producer.flush()
        for msgs in consumer.poll(200).values():
            got.update(m.value for m in msgs)
    consumer.close()
    producer.close()
    assert got == want, f"{len(got)} of {len(want)} records"
    assert incremental() > before, "no incremental fetch was served"


check("create topic", create)
check("produce 5000 keyed, gzip", produce)
check("consume in a group with per-key order", consume_group)
check("group resumes after committed offsets", resume)
check("beginning/end offsets and offsets_for_times", offsets)
check("describe configs, list groups, delete topic", configs_and_delete)
check("transactions: commit, abort, offsets, read_committed", transactions)
check("incremental fetch sessions over 200 partitions", fetch_sessions)
finish()
