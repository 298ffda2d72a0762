"""A stateful stream-processing application from PyPI (quixstreams) on Sluice, run for longer
than its topics' retention allows: its state comes back from its compacted changelog topic.

Its own broker: topics keep records 3 s (`topics.log_retention_ms`), retention and
compaction passes every 250 ms. The app counts words (state in RocksDB, every change also
written to a changelog topic that quixstreams creates with cleanup.policy=compact):
1. 30 × "a" and 20 × "b": counts 30 and 20;
2. the input records expire (the input topic is empty), the changelog keeps each key's
   latest count;
3. the app's local state is deleted (a new machine), one more "a" arrives: the restored
   state makes it 31, not 1.

Env: SLUICE_BIN_PATH (the binary).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from quixstreams import Application

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
from checks import check, finish  # noqa: E402

BIN = os.environ["SLUICE_BIN_PATH"]
work = tempfile.mkdtemp()
log = open(os.path.join(work, "server.log"), "w")
server = subprocess.Popen(
    [BIN, "server", "--data-dir", os.path.join(work, "data"),
     "--kafka-listener", "127.0.0.1:0", "--amqp-listener", "127.0.0.1:0",
     "--admin-listener", "127.0.0.1:0",
     "--set", "topics.log_retention_ms=3000",
     "--set", "storage.retention_check_interval_ms=250"],
    stdout=subprocess.PIPE, stderr=log, text=True)
for line in server.stdout:
    if line.split()[:1] == ["kafka"]:
        BOOT = "127.0.0.1:" + line.split()[1].rsplit(":", 1)[1]
        break
STATE = os.path.join(work, "state")


def produce(words):
    p = Producer({"bootstrap.servers": BOOT})
    for w in words:
        p.produce("words", key=w, value=w)
    assert p.flush(30) == 0


def run_app(count):
    """Runs the counting app until it has processed `count` messages; returns the counts
    it emitted, in order."""
    app = Application(broker_address=BOOT, consumer_group="counter", state_dir=STATE,
                      auto_offset_reset="earliest", commit_interval=0.5, loglevel="WARNING")
    words = app.topic("words", key_deserializer="str", value_deserializer="str")
    counts = app.topic("counts", key_serializer="str", value_serializer="json")

    def count_word(word, state):
        n = state.get("count", 0) + 1
        state.set("count", n)
        return {"word": word, "count": n}

    app.dataframe(words).apply(count_word, stateful=True).to_topic(counts)
    return app.run(count=count, timeout=60)


def end_offset(topic):
    c = Consumer({"bootstrap.servers": BOOT, "group.id": "probe"})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    return low, high


def counts_then_restores_from_the_changelog():
    produce(["a"] * 30 + ["b"] * 20)
    out = run_app(50)
    last = {r["word"]: r["count"] for r in out}
    assert last == {"a": 30, "b": 20}, last
    # Retention empties the input topic; the compacted changelog keeps the counts.
    deadline = time.time() + 30
    while True:
        low, high = end_offset("words")
        if low == high == 50:
            break
        assert time.time() < deadline, f"words still holds [{low}, {high})"
        time.sleep(0.25)
    changelog = [t for t in Consumer({"bootstrap.servers": BOOT, "group.id": "probe"})
                 .list_topics(timeout=10).topics if t.startswith("changelog__")]
    assert changelog, "no changelog topic"
    shutil.rmtree(STATE)
    # One more "a", sent every second until the app (restoring its state first) takes
    # one: a record sent before it is ready may expire unread, which is retention's job.
    done = threading.Event()

    def keep_sending():
        while not done.is_set():
            produce(["a"])
            done.wait(1.0)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        out = run_app(1)
    finally:
        done.set()
        sender.join()
    assert [(r["word"], r["count"]) for r in out] == [("a", 31)], out


try:
    check("quixstreams: state restored from a compacted changelog after retention", counts_then_restores_from_the_changelog)
finally:
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(work, ignore_errors=True)
finish()
