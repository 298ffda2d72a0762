"""pika checks of RabbitMQ's queue policies on sluice (issue 16): TTL into a dead-letter queue
with RabbitMQ's x-death headers, per-message expiration at basic.get, rejection and delivery
limits into a DLQ, each x-overflow mode, max-length-bytes, priorities, x-expires, and that a
restart keeps all of them. Imported by pika_test.py (same server, same helpers)."""
import datetime
import subprocess
import time

import pika


def _declare_dlq(ch, exchange, queue, key):
    ch.exchange_declare(exchange, exchange_type="direct")
    ch.queue_declare(queue)
    ch.queue_bind(queue, exchange, routing_key=key)


def _get_all(ch, queue, want, timeout=5):
    """basic.get until `want` messages came (acking each) or `timeout` seconds passed."""
    got, deadline = [], time.time() + timeout
    while len(got) < want and time.time() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        got.append((method, props, body.decode()))
    return got


def _count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def _x_death(props):
    deaths = props.headers["x-death"]
    assert isinstance(deaths, list) and deaths, props.headers
    return deaths


def ttl_dead_letter_chain(connect):
    conn = connect()
    ch = conn.channel()
    _declare_dlq(ch, "pol_dlx", "pol_ttl_dlq", "expired-ones")
    ch.queue_declare("pol_ttl", arguments={
        "x-message-ttl": 200, "x-dead-letter-exchange": "pol_dlx",
        "x-dead-letter-routing-key": "expired-ones"})
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    ch.basic_publish("", "pol_ttl", b"queue-ttl", pika.BasicProperties(headers={"app": "a"}))
    ch.basic_publish("", "pol_ttl", b"own-ttl", pika.BasicProperties(expiration="100"))
    # Nobody consumes pol_ttl: both expire and move to the DLQ on their own.
    got = _get_all(ch, "pol_ttl_dlq", 2)
    assert sorted(g[2] for g in got) == ["own-ttl", "queue-ttl"], got
    assert _count(ch, "pol_ttl") == 0
    for method, props, body in got:
        assert method.exchange == "pol_dlx" and method.routing_key == "expired-ones", method
        death = _x_death(props)[0]
        assert death["count"] == 1 and death["reason"] == "expired", death
        assert death["queue"] == "pol_ttl" and death["exchange"] == "", death
        assert death["routing-keys"] == ["pol_ttl"], death
        assert isinstance(death["time"], datetime.datetime), death
        assert abs((death["time"] - before).total_seconds()) < 30, (death["time"], before)
        h = props.headers
        assert h["x-first-death-reason"] == "expired" and h["x-first-death-queue"] == "pol_ttl"
        assert h["x-first-death-exchange"] == "" and h["x-last-death-reason"] == "expired"
        assert h["x-last-death-queue"] == "pol_ttl", h
        assert props.expiration is None, "expiration is removed on dead-lettering"
        if body == "own-ttl":
            assert death["original-expiration"] == "100", death
        else:
            assert "original-expiration" not in death, death
            assert h["app"] == "a", "the message's own headers stay"
    conn.close()


def expired_message_is_never_delivered(connect):
    """A message with its own short expiration behind nothing: basic.get and a consumer
    never see it once its time is over; the live one behind it comes out."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("pol_msg_ttl")
    ch.basic_publish("", "pol_msg_ttl", b"short", pika.BasicProperties(expiration="50"))
    ch.basic_publish("", "pol_msg_ttl", b"long", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", "pol_msg_ttl", b"none")
    time.sleep(0.3)
    method, _props, body = ch.basic_get("pol_msg_ttl", auto_ack=True)
    assert body == b"long", body
    method, _props, body = ch.basic_get("pol_msg_ttl", auto_ack=True)
    assert body == b"none", body
    assert ch.basic_get("pol_msg_ttl")[0] is None
    # A bad expiration is refused as RabbitMQ does (406, channel closed).
    bad = conn.channel()
    try:
        bad.basic_publish("", "pol_msg_ttl", b"x", pika.BasicProperties(expiration="soon"))
        bad.queue_declare("pol_msg_ttl", passive=True)
        raise AssertionError("an expiration of 'soon' was accepted")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 406, e
    conn.close()


def rejected_to_dead_letter_queue(connect):
    conn = connect()
    ch = conn.channel()
    # No x-dead-letter-routing-key: the message keeps its routing key (the queue's name).
    _declare_dlq(ch, "pol_rej_dlx", "pol_rej_dlq", "pol_rej")
    ch.queue_declare("pol_rej", arguments={"x-dead-letter-exchange": "pol_rej_dlx"})
    ch.basic_publish("", "pol_rej", b"bad")
    ch.basic_publish("", "pol_rej", b"worse")
    method, _, _ = ch.basic_get("pol_rej")
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, _, _ = ch.basic_get("pol_rej")
    ch.basic_nack(method.delivery_tag, requeue=False)
    got = _get_all(ch, "pol_rej_dlq", 2)
    assert [g[2] for g in got] == ["bad", "worse"], got
    for method, props, _ in got:
        death = _x_death(props)[0]
        assert death["reason"] == "rejected" and death["queue"] == "pol_rej", death
        assert method.routing_key == "pol_rej", method
    assert _count(ch, "pol_rej") == 0
    conn.close()


def delivery_limit_to_dead_letter_queue(connect):
    conn = connect()
    ch = conn.channel()
    _declare_dlq(ch, "pol_lim_dlx", "pol_lim_dlq", "poison")
    ch.queue_declare("pol_lim", durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 2,
        "x-dead-letter-exchange": "pol_lim_dlx", "x-dead-letter-routing-key": "poison"})
    ch.basic_publish("", "pol_lim", b"poison")
    deliveries = 0
    while True:
        method, _, _ = ch.basic_get("pol_lim")
        if method is None:
            break
        deliveries += 1
        assert deliveries < 10, "redelivered forever"
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert deliveries == 3, f"limit 2: one delivery and two redeliveries, got {deliveries}"
    got = _get_all(ch, "pol_lim_dlq", 1)
    assert [g[2] for g in got] == ["poison"], got
    assert _x_death(got[0][1])[0]["reason"] == "delivery_limit"
    # Quorum queues default to a limit of 20 (RabbitMQ 4); classic ones to none.
    ch.queue_declare("pol_lim_default", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare("pol_lim_classic")
    for q in ("pol_lim_default", "pol_lim_classic"):
        ch.basic_publish("", q, b"m")
    counts = {}
    for q in ("pol_lim_default", "pol_lim_classic"):
        n = 0
        while n < 25:
            method, _, _ = ch.basic_get(q)
            if method is None:
                break
            n += 1
            ch.basic_nack(method.delivery_tag, requeue=True)
        counts[q] = n
    assert counts == {"pol_lim_default": 21, "pol_lim_classic": 25}, counts
    conn.close()


def max_length_drop_head(connect):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    _declare_dlq(ch, "pol_len_dlx", "pol_len_dlq", "pol_len")
    ch.queue_declare("pol_len", arguments={"x-max-length": 2,
                                           "x-dead-letter-exchange": "pol_len_dlx"})
    for i in range(5):
        ch.basic_publish("", "pol_len", f"m{i}".encode())  # all confirmed
    assert _count(ch, "pol_len") == 2
    got = _get_all(ch, "pol_len", 2)
    assert [g[2] for g in got] == ["m3", "m4"], got
    dead = _get_all(ch, "pol_len_dlq", 3)
    assert [g[2] for g in dead] == ["m0", "m1", "m2"], dead
    assert all(_x_death(g[1])[0]["reason"] == "maxlen" for g in dead)
    # Bytes: at most 10 body bytes ready; 4-byte messages keep the newest two.
    ch.queue_declare("pol_bytes", arguments={"x-max-length-bytes": 10})
    for i in range(4):
        ch.basic_publish("", "pol_bytes", f"b{i}xx".encode())
    got = _get_all(ch, "pol_bytes", 3, timeout=1)
    assert [g[2] for g in got] == ["b2xx", "b3xx"], got
    conn.close()


def max_length_reject_publish(connect):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("pol_rp", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.basic_publish("", "pol_rp", b"a")
    ch.basic_publish("", "pol_rp", b"b")
    try:
        ch.basic_publish("", "pol_rp", b"c")
        raise AssertionError("a publish into a full reject-publish queue was confirmed")
    except pika.exceptions.NackError:
        pass
    assert _count(ch, "pol_rp") == 2
    # Unacked messages do not count: take one (unacked), and there is room again.
    method, _, body = ch.basic_get("pol_rp")
    assert body == b"a"
    ch.basic_publish("", "pol_rp", b"d")
    ch.basic_ack(method.delivery_tag)
    got = _get_all(ch, "pol_rp", 2)
    assert [g[2] for g in got] == ["b", "d"], got
    # reject-publish-dlx: refused and dead-lettered (reason maxlen).
    _declare_dlq(ch, "pol_rpd_dlx", "pol_rpd_dlq", "full")
    ch.queue_declare("pol_rpd", arguments={
        "x-max-length": 1, "x-overflow": "reject-publish-dlx",
        "x-dead-letter-exchange": "pol_rpd_dlx", "x-dead-letter-routing-key": "full"})
    ch.basic_publish("", "pol_rpd", b"kept")
    try:
        ch.basic_publish("", "pol_rpd", b"refused")
        raise AssertionError("a publish into a full reject-publish-dlx queue was confirmed")
    except pika.exceptions.NackError:
        pass
    assert _count(ch, "pol_rpd") == 1
    dead = _get_all(ch, "pol_rpd_dlq", 1)
    assert [g[2] for g in dead] == ["refused"], dead
    death = _x_death(dead[0][1])[0]
    assert death["reason"] == "maxlen" and death["queue"] == "pol_rpd", death
    conn.close()


def priorities(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("pol_prio", arguments={"x-max-priority": 10})
    for body, prio in [("p1a", 1), ("p5a", 5), ("p1b", 1), ("p9", 9), ("p5b", 5),
                       ("none", None), ("p200", 200)]:
        ch.basic_publish("", "pol_prio", body.encode(), pika.BasicProperties(priority=prio))
    # 200 is above the maximum: it counts as 10.
    method, _, body = ch.basic_get("pol_prio")
    assert body == b"p200", body
    ch.basic_ack(method.delivery_tag)
    # A requeued message keeps its priority: out again first, marked redelivered.
    method, _, body = ch.basic_get("pol_prio")
    assert body == b"p9", body
    ch.basic_nack(method.delivery_tag, requeue=True)
    got = []
    ch.basic_qos(prefetch_count=1)
    for method, _, body in ch.consume("pol_prio", inactivity_timeout=3):
        if method is None:
            break
        got.append((body.decode(), method.redelivered))
        ch.basic_ack(method.delivery_tag)
        if len(got) == 6:
            break
    ch.cancel()
    assert got == [("p9", True), ("p5a", False), ("p5b", False), ("p1a", False),
                   ("p1b", False), ("none", False)], got
    bad = conn.channel()
    try:
        bad.queue_declare("pol_prio_bad", arguments={"x-max-priority": 256})
        raise AssertionError("x-max-priority 256 was accepted")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 406, e
    conn.close()


def queue_expires(connect):
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("pol_exp", arguments={"x-expires": 300})
    ch.queue_declare("pol_exp_used", arguments={"x-expires": 300})
    ch.basic_consume("pol_exp_used", lambda *a: None)
    deadline = time.time() + 5
    while time.time() < deadline:
        probe = conn.channel()
        try:
            probe.queue_declare("pol_exp", passive=True)
            probe.close()
            time.sleep(0.1)
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
            break
    else:
        raise AssertionError("an unused queue with x-expires 300 was still there after 5 s")
    # A queue with a consumer is in use: it stays.
    assert _count(ch, "pol_exp_used") == 0
    conn.close()


def policies_survive_restart(connect, restart):
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("pol_r_dlx", exchange_type="fanout", durable=True)
    ch.queue_declare("pol_r_dlq", durable=True)
    ch.queue_bind("pol_r_dlq", "pol_r_dlx")
    ch.queue_declare("pol_r_ttl", durable=True, arguments={
        "x-message-ttl": 1500, "x-dead-letter-exchange": "pol_r_dlx"})
    ch.queue_declare("pol_r_prio", durable=True, arguments={"x-max-priority": 5})
    ch.queue_declare("pol_r_full", durable=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", "pol_r_ttl", b"expires-later", pika.BasicProperties(delivery_mode=2))
    for body, prio in [("low", 1), ("high", 5), ("mid", 3)]:
        ch.basic_publish("", "pol_r_prio", body.encode(),
                         pika.BasicProperties(delivery_mode=2, priority=prio))
    ch.basic_publish("", "pol_r_full", b"only", pika.BasicProperties(delivery_mode=2))
    conn.close()
    subprocess.run(restart, shell=True, check=True, timeout=120)
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    got = _get_all(ch, "pol_r_prio", 3)
    assert [g[2] for g in got] == ["high", "mid", "low"], got
    try:
        ch.basic_publish("", "pol_r_full", b"more")
        raise AssertionError("the length limit was forgotten")
    except pika.exceptions.NackError:
        pass
    dead = _get_all(ch, "pol_r_dlq", 1, timeout=10)
    assert [g[2] for g in dead] == ["expires-later"], dead
    assert _x_death(dead[0][1])[0]["reason"] == "expired"
    conn.close()


def _wait(conn, cond, timeout=5):
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        conn.process_data_events(time_limit=0.05)
    return cond()


def single_active_consumer(connect):
    conn = connect()
    first, second, pub = conn.channel(), conn.channel(), conn.channel()
    first.queue_declare("pol_sac", arguments={"x-single-active-consumer": True})
    got = {"first": [], "second": []}

    def on(name):
        def cb(ch, method, _props, body):
            got[name].append(body.decode())
            ch.basic_ack(method.delivery_tag)
        return cb

    # Prefetch 1: without single active consumer the second would take what the first
    # has no room for.
    first.basic_qos(prefetch_count=1)
    second.basic_qos(prefetch_count=1)
    first.basic_consume("pol_sac", on("first"), consumer_tag="first")
    second.basic_consume("pol_sac", on("second"), consumer_tag="second")
    for i in range(10):
        pub.basic_publish("", "pol_sac", f"s{i}".encode())
    assert _wait(conn, lambda: len(got["first"]) + len(got["second"]) == 10), got
    assert got == {"first": [f"s{i}" for i in range(10)], "second": []}, got
    # The active consumer goes: the next one takes over.
    first.basic_cancel("first")
    for i in range(10, 15):
        pub.basic_publish("", "pol_sac", f"s{i}".encode())
    assert _wait(conn, lambda: len(got["second"]) == 5), got
    assert got["second"] == [f"s{i}" for i in range(10, 15)], got
    conn.close()


def consumer_priorities(connect):
    conn = connect()
    # The low-priority consumer's channel comes first: without priorities it would be
    # served first and take everything.
    low_ch, high_ch, pub = conn.channel(), conn.channel(), conn.channel()
    low_ch.queue_declare("pol_cprio")
    high_ch.basic_qos(prefetch_count=3)
    low, high = [], []
    low_ch.basic_consume("pol_cprio", lambda c, m, p, b: (low.append(b.decode()),
                                                           c.basic_ack(m.delivery_tag)))
    high_ch.basic_consume("pol_cprio", lambda c, m, p, b: high.append(b.decode()),
                          arguments={"x-priority": 10})  # never acks: full after 3
    for i in range(10):
        pub.basic_publish("", "pol_cprio", f"c{i}".encode())
    assert _wait(conn, lambda: len(low) + len(high) == 10), (low, high)
    assert high == ["c0", "c1", "c2"], (high, low)
    assert low == [f"c{i}" for i in range(3, 10)], (high, low)
    conn.close()


def delayed_exchange_in_due_order(connect, restart):
    """x-delayed-message (sluice's scheduler; RabbitMQ's plugin is not in Debian): a spread
    of x-delay values comes back in due order and never early, also across a restart with
    messages still waiting."""
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("pol_delayed", exchange_type="x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    ch.queue_declare("pol_delayed_q", durable=True)
    ch.queue_bind("pol_delayed_q", "pol_delayed", routing_key="k")
    start = time.time()
    delays = [2500, 400, 1500, 0, 3000, 800]
    for d in delays:
        ch.basic_publish("pol_delayed", "k", str(d).encode(), pika.BasicProperties(
            delivery_mode=2, headers={"x-delay": d}))
    # Waiting messages are not ready.
    assert _count(ch, "pol_delayed_q") <= 1, _count(ch, "pol_delayed_q")
    conn.close()
    # A restart while most wait: they keep their due times.
    subprocess.run(restart, shell=True, check=True, timeout=120)
    conn = connect()
    ch = conn.channel()
    got = []
    deadline = time.time() + 10
    while len(got) < len(delays) and time.time() < deadline:
        method, _props, body = ch.basic_get("pol_delayed_q", auto_ack=True)
        if method is None:
            time.sleep(0.02)
            continue
        got.append((int(body), (time.time() - start) * 1000))
    assert [g[0] for g in got] == sorted(delays), got
    for d, at in got:
        assert at >= d, f"delayed {d} ms, delivered after {at:.0f} ms"
    conn.close()


def retry_with_backoff(connect):
    """x-retry-backoff: a nacked message comes back after 300, 600 ms (±10 %), then after
    x-retry-max retries it is dead-lettered with reason delivery_limit."""
    conn = connect()
    ch = conn.channel()
    _declare_dlq(ch, "pol_retry_dlx", "pol_retry_dlq", "r")
    ch.queue_declare("pol_retry", arguments={
        "x-retry-backoff": "exponential:300ms,2,10s", "x-retry-max": 2,
        "x-dead-letter-exchange": "pol_retry_dlx", "x-dead-letter-routing-key": "r"})
    ch.basic_publish("", "pol_retry", b"flaky")
    times = []
    deadline = time.time() + 10
    while len(times) < 3 and time.time() < deadline:
        method, _props, _body = ch.basic_get("pol_retry")
        if method is None:
            time.sleep(0.005)
            continue
        times.append(time.time())
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert len(times) == 3, times
    gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
    for want, gap in zip([300, 600], gaps):
        assert abs(gap - want) <= want * 0.1 + 30, f"retry after {gap:.0f} ms, want {want}"
    dead = _get_all(ch, "pol_retry_dlq", 1)
    assert _x_death(dead[0][1])[0]["reason"] == "delivery_limit", dead[0][1].headers
    conn.close()
