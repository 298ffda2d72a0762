#!/usr/bin/env python3
"""RabbitMQ's way to delay without the delayed-message plugin (not packaged in Debian):
per-message TTL into a dead-letter exchange. Issue 16's peer figure for `sluice bench delay`.

Starts Debian's rabbitmq-server on loopback (as scripts/amqp-bench.py does), declares a
holding queue with `x-dead-letter-exchange` pointing at a fan-out exchange bound to a target
queue, publishes `--count` messages (pika, 64-byte bodies) whose `expiration` makes them all
due at the same whole second, then polls the target queue's message count every ~2 ms and
prints how long after the due time each share of the messages was visible there — the same
measure `sluice bench delay` prints for Sluice's x-delayed-message exchange.

Not part of scripts/test.sh or CI. Usage: scripts/delay-peer-bench.py [--count 200000]
"""
import argparse
import importlib.util
import os
import tempfile
import time

import pika

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("amqp_bench", os.path.join(HERE, "amqp-bench.py"))
amqp_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(amqp_bench)


def percentile(sorted_ms, q):
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--due-in-secs", type=int, default=60)
    args = ap.parse_args()
    rabbit = amqp_bench.Rabbit(tempfile.mkdtemp())
    try:
        params = pika.ConnectionParameters("127.0.0.1", rabbit.port,
                                           credentials=pika.PlainCredentials("guest", "guest"))
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.exchange_declare("delay_dlx", exchange_type="fanout")
        ch.queue_declare("delay_target")
        ch.queue_bind("delay_target", "delay_dlx")
        ch.queue_declare("delay_hold", arguments={"x-dead-letter-exchange": "delay_dlx"})
        due = (int(time.time() * 1000) + args.due_in_secs * 1000) // 1000 * 1000
        body = b"x" * 64
        started = time.time()
        for _ in range(args.count):
            ttl = max(0, due - int(time.time() * 1000))
            ch.basic_publish("", "delay_hold", body, pika.BasicProperties(expiration=str(ttl)))
        publish_s = time.time() - started
        if time.time() * 1000 >= due:
            raise SystemExit(f"publishing took {publish_s:.1f} s, past the due time")
        while time.time() * 1000 < due - 20:
            time.sleep(0.005)
        early = ch.queue_declare("delay_target", passive=True).method.message_count
        seen, lateness = 0, []
        deadline = due + 300_000
        while seen < args.count and time.time() * 1000 < deadline:
            n = ch.queue_declare("delay_target", passive=True).method.message_count
            late = max(0, int(time.time() * 1000) - due)
            lateness.extend([late] * (n - seen))
            seen = max(seen, n)
            time.sleep(0.002)
        conn.close()
        lateness.sort()
        print(f"RabbitMQ {rabbit.version}, per-message TTL + DLX, {args.count:,} messages due "
              f"at one instant; published at {args.count / publish_s:,.0f} msgs/s")
        print(f"ready 20 ms before the due time: {early}")
        if seen < args.count:
            print(f"only {seen:,} visible 300 s after the due time")
        if lateness:
            print(f"visible after due: p50 {percentile(lateness, 0.5)} ms, p99 "
                  f"{percentile(lateness, 0.99)} ms, max {lateness[-1]} ms")
    finally:
        rabbit.stop()


if __name__ == "__main__":
    main()
