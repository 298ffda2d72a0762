#!/usr/bin/env python3
"""A/B of two broker binaries on the produce and consume paths: rounds alternate A and B on
fresh data directories, so both meet the same machine state (this 2-core machine is shared
and drifts), and each figure is reported as medians and the B/A ratio of the medians.

Usage: scripts/ab-broker.py A_BIN B_BIN [rounds=5]
  e.g. build the old commit into another target dir, then
  scripts/ab-broker.py /work/old-target/release/sluice target/release/sluice 5
The load generator is this tree's `target/release/sluice bench` (the same client for both).
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(ROOT, "target/release/sluice")


def bench(*args):
    out = subprocess.run([CLIENT, "bench", "--output", "json", *args], check=True,
                         capture_output=True, text=True).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    return {k: v["value"] for k, v in doc["figures"].items()}


def wait_banner(proc):
    """The Kafka address from the server's startup banner (the OS picked the port)."""
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("kafka "):
            return line.split()[1]
    raise RuntimeError("the broker exited before its banner")


def run(binary, work):
    d = tempfile.mkdtemp(dir=work)
    proc = subprocess.Popen(
        [binary, "server", "--data-dir", f"{d}/data", "--kafka-listener", "127.0.0.1:0",
         "--amqp-listener", "127.0.0.1:0", "--admin-listener", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        addr = wait_banner(proc)
        common = ["--bootstrap", addr, "--broker-pid", str(proc.pid)]
        p = bench("produce", *common, "--topic", "p1k", "--partitions", "8", "--size", "1024",
                  "--count", "2000000", "--acks", "1")
        c = bench("consume", *common, "--topic", "p1k")
        small = bench("produce", *common, "--topic", "p100", "--partitions", "8", "--size",
                      "100", "--count", "3000000", "--acks", "1")
        return {
            "produce 100B records/s": small["throughput records"],
            "produce 100B broker CPU s/GB": small.get("broker cpu per GB", float("nan")),
            "produce 1KiB MB/s": p["throughput MB"],
            "produce 1KiB broker CPU s/GB": p.get("broker cpu per GB", float("nan")),
            "consume 1KiB MB/s": c["throughput MB"],
            "consume broker CPU s/GB": c.get("broker cpu per GB", float("nan")),
        }
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(d, ignore_errors=True)


def main():
    a_bin, b_bin = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    work = tempfile.mkdtemp(prefix="sluice-ab-")
    results = {"A": [], "B": []}
    try:
        for i in range(rounds):
            # Alternate which goes first, so neither always meets a warmer machine.
            order = [("A", a_bin), ("B", b_bin)] if i % 2 == 0 else [("B", b_bin), ("A", a_bin)]
            for name, binary in order:
                r = run(binary, work)
                results[name].append(r)
                print(f"round {i + 1} {name}: {json.dumps(r)}", file=sys.stderr)
                time.sleep(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| figure | A median | B median | B / A |")
    print("|---|---|---|---|")
    for key in results["A"][0]:
        a = statistics.median(r[key] for r in results["A"])
        b = statistics.median(r[key] for r in results["B"])
        print(f"| {key} | {a:,.2f} | {b:,.2f} | {b / a:.0%} |")


if __name__ == "__main__":
    main()
