#!/usr/bin/env python3
"""A backlog costs no memory and no publish speed (issue 15's queue-engine proof).

Starts a fresh release `sluice server` (default flush = async) and measures, on one AMQP
queue:
  1. the AMQP publish rate (`sluice bench amqp --scenario transient --consumers 0`: one
     lapin publisher, 1 KiB bodies, no confirms) into an empty queue and into a queue that
     holds 1,000,000 ready messages, alternating, `--rounds` times each;
  2. the broker's resident memory (VmRSS) with the queue empty and with 10,000,000 ready
     messages in it (filled by a Kafka producer, `sluice bench produce`, into the queue's
     topic: the queue serves every record of its partition).
Prints the medians, the ratio of the publish rates and the RSS growth, and the queue's ready
count from `sluice queue describe -o json` to show the backlog is real.

Not part of scripts/test.sh or CI (minutes and ~2 GB of disk). Usage:
  cargo build --release --locked -p sluice -p sluice-bench
  scripts/queue-backlog-bench.py [--rounds 3] [--backlog 10000000]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target/release/sluice")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def rss_parts(pid):
    """Anonymous and file-backed resident bytes (smaps_rollup), for the log."""
    parts = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Anonymous", "Rss"):
                parts[k] = int(v.split()[0]) * 1024
    return f"rss {parts.get('Rss', 0) / 2**20:.1f} MiB, anonymous {parts.get('Anonymous', 0) / 2**20:.1f} MiB"


class Server:
    def __init__(self, work):
        self.data = os.path.join(work, "data")
        self.proc = subprocess.Popen(
            [SLUICE, "server", "--data-dir", self.data, "--kafka-listener", "127.0.0.1:0",
             "--amqp-listener", "127.0.0.1:0", "--admin-listener", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "server.log"), "w"), text=True)
        self.addr = {}
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) >= 2 and parts[0] in ("kafka", "amqp", "admin"):
                self.addr[parts[0]] = parts[1].replace("http://", "")
            if {"kafka", "amqp", "admin"} <= self.addr.keys():
                break
        self.amqp_url = f"amqp://guest:guest@{self.addr['amqp']}/%2f"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def amqp_publish_rate(srv, queue, count):
    out = subprocess.run(
        [SLUICE, "bench", "--output", "json", "amqp", "--url", srv.amqp_url, "--scenario",
         "transient", "--consumers", "0", "--count", str(count), "--name", queue, "--keep"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["figures"]["publish rate"]["value"]


def fill(srv, queue, count):
    subprocess.run(
        [SLUICE, "bench", "--output", "json", "produce", "--bootstrap", srv.addr["kafka"],
         "--topic", queue, "--partitions", "1", "--count", str(count), "--size", "100",
         "--acks", "1"],
        check=True, capture_output=True, text=True)


def ready(srv, queue):
    out = subprocess.run([SLUICE, "--admin", srv.addr["admin"], "queue", "describe", queue,
                          "-o", "json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["messages_ready"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--publishes", type=int, default=200_000)
    ap.add_argument("--backlog", type=int, default=10_000_000)
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    srv = Server(work)
    try:
        # Both queues exist (declared by the bench's first run) before anything is measured.
        amqp_publish_rate(srv, "empty", 1)
        amqp_publish_rate(srv, "backlog", 1)
        time.sleep(1)
        rss_empty = rss(srv.proc.pid)
        fill(srv, "backlog", 1_000_000)
        log(f"backlog queue: {ready(srv, 'backlog'):,} ready; {rss_parts(srv.proc.pid)}")
        rates = {"empty": [], "backlog": []}
        for r in range(args.rounds):
            for q in (["empty", "backlog"] if r % 2 == 0 else ["backlog", "empty"]):
                # Keep the empty queue empty: purge it before each run.
                subprocess.run([SLUICE, "--admin", srv.addr["admin"], "queue", "purge", q],
                               check=True, capture_output=True) if q == "empty" else None
                rate = amqp_publish_rate(srv, q, args.publishes)
                rates[q].append(rate)
                log(f"round {r + 1} {q}: {rate:,.0f} msgs/s; {rss_parts(srv.proc.pid)}")
        if args.backlog > 1_000_000:
            fill(srv, "backlog", args.backlog - 1_000_000 - args.rounds * args.publishes)
        time.sleep(1)
        log(f"filled: {rss_parts(srv.proc.pid)}")
        depth = ready(srv, "backlog")
        rss_full = rss(srv.proc.pid)
        e, b = statistics.median(rates["empty"]), statistics.median(rates["backlog"])
        print(f"publish into an empty queue: {e:,.0f} msgs/s (median of {args.rounds})")
        paired = statistics.median(x / y for x, y in zip(rates["backlog"], rates["empty"]))
        print(f"publish into a queue with >= 1,000,000 ready: {b:,.0f} msgs/s "
              f"({b / e:.3f}× the empty queue's median rate; median of the per-round "
              f"ratios {paired:.3f}×)")
        print(f"broker RSS with the queues empty: {rss_empty / 2**20:.1f} MiB; with {depth:,} "
              f"ready: {rss_full / 2**20:.1f} MiB (+{(rss_full - rss_empty) / 2**20:.1f} MiB)")
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
