#!/usr/bin/env python3
"""Broker CPU per fetch with and without incremental fetch sessions (KIP-227): a kafka-python
consumer (which uses sessions when the broker offers them) assigned every partition of an
idle topic long-polls for DURATION seconds; the broker's CPU time (from /proc) is divided by
the Fetch requests it served (from /metrics). `limits.max_fetch_sessions=0` turns sessions
off, so every fetch names (and is answered with) every partition.

Usage: scripts/fetch-sessions-bench.py [SLUICE_BIN] [PARTITIONS=10000] [DURATION=20]
Needs tests/interop/.venv (scripts/setup.sh installs it).
"""
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests/interop"))
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/sluice")
PARTS = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
SECS = float(sys.argv[3]) if len(sys.argv) > 3 else 20
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def fetches(admin_url):
    text = urllib.request.urlopen(admin_url + "/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("sluice_requests_total") and 'api="Fetch"' in line:
            total += float(line.split()[-1])
    return total


def run(sessions):
    work = tempfile.mkdtemp(prefix="sluice-fs-")
    proc = subprocess.Popen(
        [BIN, "server", "--data-dir", f"{work}/data", "--kafka-listener", "127.0.0.1:0",
         "--admin-listener", "127.0.0.1:0", "--set", "limits.max_partitions_per_request=20000",
         "--set", f"limits.max_fetch_sessions={1000 if sessions else 0}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        kafka = admin = None
        for line in proc.stdout:
            words = line.split()
            if words and words[0] == "kafka":
                kafka = words[1]
            if words and words[0] == "admin":
                admin = words[1]
                break
        KafkaAdminClient(bootstrap_servers=kafka, request_timeout_ms=120000).create_topics(
            [NewTopic("idle", num_partitions=PARTS, replication_factor=1)], timeout_ms=120000)
        c = KafkaConsumer(bootstrap_servers=kafka, fetch_max_wait_ms=100,
                          max_partition_fetch_bytes=65536, request_timeout_ms=120000)
        c.assign([TopicPartition("idle", p) for p in range(PARTS)])
        c.seek_to_beginning()
        c.poll(1000)
        f0, c0, t0 = fetches(admin), cpu_seconds(proc.pid), time.time()
        while time.time() - t0 < SECS:
            c.poll(200)
        f1, c1 = fetches(admin), cpu_seconds(proc.pid)
        c.close()
        n = f1 - f0
        return n, (c1 - c0) / n * 1000 if n else float("nan")
    finally:
        proc.terminate()
        proc.wait(60)
        subprocess.run(["rm", "-rf", work])


for sessions in (False, True):
    n, ms = run(sessions)
    print(f"sessions {'on ' if sessions else 'off'}: {PARTS} partitions, {n:.0f} fetches in "
          f"{SECS:.0f} s, broker CPU {ms:.2f} ms per fetch", flush=True)
