"""Log compaction end to end with confluent-kafka (librdkafka), against its own broker (a
short compaction interval; it is killed with SIGKILL on purpose).

1. 1,000,000 updates to 1,000 keys, then tombstones for 100 of them, shrink to one record
   per key; a consumer reading from the start sees every key's latest value and the
   tombstones.
2. Once delete.retention.ms has passed, the tombstones are gone too.
3. Another round of updates, the broker killed with SIGKILL while it compacts: after the
   restart every key's latest value is there, and compaction finishes the job.

Env: SLUICE_BIN_PATH (the binary), COMPACTION_UPDATES (default 1,000,000).
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from checks import check, finish

BIN = os.environ["SLUICE_BIN_PATH"]
UPDATES = int(os.environ.get("COMPACTION_UPDATES", "1000000"))
KEYS = 1000
DEAD = 100  # keys k0..k99 get tombstones
TOPIC = "compacted"
DELETE_RETENTION_MS = 8000


class Broker:
    def __init__(self):
        self.work = tempfile.mkdtemp()
        self.port = 0
        self.proc = None

    def start(self):
        log = open(os.path.join(self.work, "server.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "server", "--data-dir", os.path.join(self.work, "data"),
             "--kafka-listener", f"127.0.0.1:{self.port}",
             "--amqp-listener", "127.0.0.1:0", "--admin-listener", "127.0.0.1:0",
             "--set", "storage.retention_check_interval_ms=250"],
            stdout=subprocess.PIPE, stderr=log, text=True)
        for line in self.proc.stdout:
            parts = line.split()
            if parts[:1] == ["kafka"]:
                self.port = int(parts[1].rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError("broker printed no banner: " + open(log.name).read()[-2000:])
        self.bootstrap = f"127.0.0.1:{self.port}"

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)


broker = Broker()
broker.start()


def producer():
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                     "batch.num.messages": 10000, "queue.buffering.max.messages": 200000,
                     "compression.type": "lz4", "acks": "all"})


def send(p, key, value):
    while True:
        try:
            p.produce(TOPIC, key=key, value=value)
            return
        except BufferError:
            p.poll(0.05)


def produce_round(tag, count):
    """`count` updates over the keys, then one record alone in the last batch (the last
    batch of a partition is never compacted)."""
    p = producer()
    for i in range(count):
        send(p, f"k{i % KEYS}", f"{tag}:{i}")
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0


def sentinel():
    p = producer()
    send(p, "sentinel", str(time.time()))
    assert p.flush(30) == 0


def read_all():
    """Every record from the start: {key: value} in offset order, and the record count."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"reader-{time.time()}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    tp = TopicPartition(TOPIC, 0, OFFSET_BEGINNING)
    c.assign([tp])
    latest, count, last = {}, 0, -1
    deadline = time.time() + 120
    while time.time() < deadline:
        msgs = c.consume(num_messages=10000, timeout=1.0)
        done = False
        for m in msgs:
            if m.error():
                done = m.error().code() == KafkaError._PARTITION_EOF
                continue
            assert m.offset() > last, f"offset {m.offset()} after {last}"
            last = m.offset()
            count += 1
            v = m.value()
            latest[m.key().decode()] = None if v is None else v.decode()
        if done:
            break
    c.close()
    return latest, count


def wait_for(cond, what, limit=90):
    deadline = time.time() + limit
    while True:
        latest, count = read_all()
        if cond(latest, count):
            return latest, count
        assert time.time() < deadline, f"{what}: still {count} records after {limit}s"
        time.sleep(0.5)


def expect_round(latest, tag, count):
    for j in range(KEYS):
        want = f"{tag}:{j + (count - 1 - j) // KEYS * KEYS}"
        assert latest.get(f"k{j}") == want, f"k{j}: {latest.get(f'k{j}')!r}, want {want!r}"


def create_topic():
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    fs = a.create_topics([NewTopic(TOPIC, 1, 1, config={
        "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": str(DELETE_RETENTION_MS)})])
    fs[TOPIC].result(30)


def compacts_a_million_updates():
    create_topic()
    t0 = time.time()
    produce_round("0", UPDATES)
    p = producer()
    for j in range(DEAD):
        while True:
            try:
                p.produce(TOPIC, key=f"k{j}", value=None)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(30) == 0
    sentinel()
    produced = time.time() - t0
    t1 = time.time()
    latest, count = wait_for(lambda l, n: n <= KEYS + 1, "compaction")
    print(f"     {UPDATES} updates produced in {produced:.1f}s; compacted to {count} records "
          f"within {time.time() - t1:.1f}s", flush=True)
    assert count == KEYS + 1, count
    for j in range(DEAD):
        assert f"k{j}" in latest and latest[f"k{j}"] is None, f"k{j}'s tombstone: {latest.get(f'k{j}')!r}"
    for j in range(DEAD, KEYS):
        want = f"0:{j + (UPDATES - 1 - j) // KEYS * KEYS}"
        assert latest[f"k{j}"] == want, (j, latest[f"k{j}"], want)


def tombstones_go_after_delete_retention():
    latest, count = wait_for(lambda l, n: n <= KEYS - DEAD + 1, "tombstone removal",
                             limit=DELETE_RETENTION_MS / 1000 + 30)
    assert all(f"k{j}" not in latest for j in range(DEAD)), "a tombstone is still served"
    assert count == KEYS - DEAD + 1, count


def kill9_during_compaction_loses_nothing():
    n = max(KEYS, UPDATES // 2)
    produce_round("1", n)
    sentinel()
    # The broker compacts every 250 ms; kill it while the pass over half a million
    # updates runs, then again right after the restart's first pass has begun.
    time.sleep(0.4)
    broker.kill9()
    broker.start()
    time.sleep(0.3)
    broker.kill9()
    broker.start()
    latest, _ = read_all()
    expect_round(latest, "1", n)
    # The round's sentinel is the last batch, never compacted: the first one stays too.
    latest, count = wait_for(lambda l, c: c <= KEYS + 2, "compaction after the restart")
    expect_round(latest, "1", n)
    assert count == KEYS + 2, count


try:
    check("1M updates to 1,000 keys compact to one record per key", compacts_a_million_updates)
    check("tombstones removed after delete.retention.ms", tombstones_go_after_delete_retention)
    check("kill -9 during compaction loses nothing", kill9_during_compaction_loses_nothing)
finally:
    broker.stop()
finish()
