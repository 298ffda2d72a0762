"""pika 1.3 against sluice's AMQP door: RabbitMQ's tutorial flows (hello world, work queue
with prefetch 1 and manual acks across two consumers, fanout, direct routing), nack with
requeue (redelivered), basic.get, publisher confirms with mandatory returns, exchange-to-
exchange bindings, alternate exchanges, auto-delete, exclusive queues and consumers,
server-sent consumer cancels, transactions, vhosts and users (on a second server), and
messages that survive a broker restart. Needs AMQP_PORT; the restart check needs SLUICE_RESTART (a
command that restarts the server on the same data directory and ports)."""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pika

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from checks import check, finish  # noqa: E402
import policies  # noqa: E402

PORT = int(os.environ["AMQP_PORT"])


def connect():
    params = pika.ConnectionParameters(host="127.0.0.1", port=PORT, heartbeat=30,
                                       credentials=pika.PlainCredentials("guest", "guest"))
    return pika.BlockingConnection(params)


def drain(ch, queue, want, timeout=20, ack=True):
    """Consumes until `want` messages arrived; returns (body, redelivered) pairs."""
    got = []
    for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
        if method is None:
            break
        got.append((body.decode(), method.redelivered, props))
        if ack:
            ch.basic_ack(method.delivery_tag)
        if len(got) == want:
            break
    ch.cancel()
    return got


def hello_world():
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("hello")
    ch.basic_publish("", "hello", b"Hello World!",
                     pika.BasicProperties(content_type="text/plain", headers={"n": 1, "s": "x"}))
    got = drain(ch, "hello", 1)
    assert [g[0] for g in got] == ["Hello World!"], got
    props = got[0][2]
    assert props.content_type == "text/plain", props
    assert props.headers == {"n": 1, "s": "x"}, props.headers
    conn.close()


def work_queue():
    """Two consumers, prefetch 1, manual acks: each message processed exactly once, and the
    slow consumer does not hold more than one at a time."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("task_queue", durable=True)
    count = 40
    for i in range(count):
        ch.basic_publish("", "task_queue", f"task {i}".encode(),
                         pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    conn.close()
    seen, lock, per_worker = [], threading.Lock(), {}

    def worker(name, delay):
        c = connect()
        wch = c.channel()
        wch.basic_qos(prefetch_count=1)
        per_worker[name] = 0
        for method, _props, body in wch.consume("task_queue", inactivity_timeout=3):
            if method is None:
                break
            time.sleep(delay)
            with lock:
                seen.append(body.decode())
                per_worker[name] += 1
            wch.basic_ack(method.delivery_tag)
        wch.cancel()
        c.close()

    threads = [threading.Thread(target=worker, args=(n, d)) for n, d in (("fast", 0.0), ("slow", 0.05))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(seen) == sorted(f"task {i}" for i in range(count)), (len(seen), seen[:5])
    assert len(set(seen)) == count, "a message was processed twice"
    assert per_worker["fast"] > 0 and per_worker["slow"] > 0, per_worker


def fanout():
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("logs", exchange_type="fanout")
    queues = []
    for _ in range(2):
        q = ch.queue_declare("", exclusive=True).method.queue
        assert q.startswith("amq.gen-"), q
        ch.queue_bind(q, "logs")
        queues.append(q)
    for i in range(3):
        ch.basic_publish("logs", "", f"log {i}".encode())
    for q in queues:
        got = drain(ch, q, 3)
        assert [g[0] for g in got] == ["log 0", "log 1", "log 2"], (q, got)
    conn.close()


def direct_routing():
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("direct_logs", exchange_type="direct")
    errors = ch.queue_declare("", exclusive=True).method.queue
    everything = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(errors, "direct_logs", routing_key="error")
    for sev in ("info", "warning", "error"):
        ch.queue_bind(everything, "direct_logs", routing_key=sev)
    for sev in ("info", "error", "warning", "debug"):
        ch.basic_publish("direct_logs", sev, sev.encode())
    assert [g[0] for g in drain(ch, errors, 1)] == ["error"]
    assert [g[0] for g in drain(ch, everything, 3)] == ["info", "error", "warning"]
    assert ch.queue_declare(errors, passive=True).method.message_count == 0
    conn.close()


def topics():
    """RabbitMQ tutorial 5: a topic exchange, `*` matches one word, `#` zero or more."""
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("topic_logs", exchange_type="topic")
    kern = ch.queue_declare("", exclusive=True).method.queue
    critical = ch.queue_declare("", exclusive=True).method.queue
    anything = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(kern, "topic_logs", routing_key="kern.*")
    ch.queue_bind(critical, "topic_logs", routing_key="*.critical")
    ch.queue_bind(anything, "topic_logs", routing_key="#")
    for key in ("kern.critical", "kern.info", "app.critical", "app.info.detail"):
        ch.basic_publish("topic_logs", key, key.encode())
    assert [g[0] for g in drain(ch, kern, 2)] == ["kern.critical", "kern.info"]
    assert [g[0] for g in drain(ch, critical, 2)] == ["kern.critical", "app.critical"]
    assert [g[0] for g in drain(ch, anything, 4)] == [
        "kern.critical", "kern.info", "app.critical", "app.info.detail"]
    conn.close()


def rpc():
    """RabbitMQ tutorial 6: a client sends requests with reply_to (its exclusive
    server-named queue) and correlation_id; a server answers each on its reply queue."""
    server_conn = connect()
    server = server_conn.channel()
    server.queue_declare("rpc_queue")
    client_conn = connect()
    client = client_conn.channel()
    reply_to = client.queue_declare("", exclusive=True).method.queue
    ids = [f"req-{i}" for i in range(3)]
    for n, cid in enumerate(ids):
        client.basic_publish("", "rpc_queue", str(n + 10).encode(),
                             pika.BasicProperties(reply_to=reply_to, correlation_id=cid))
    for method, props, body in server.consume("rpc_queue", inactivity_timeout=10):
        assert method is not None, "the server got no request"
        n = int(body)
        server.basic_publish("", props.reply_to, str(n * n).encode(),
                             pika.BasicProperties(correlation_id=props.correlation_id))
        server.basic_ack(method.delivery_tag)
        if method.delivery_tag == len(ids):
            break
    server.cancel()
    answers = {g[2].correlation_id: g[0] for g in drain(client, reply_to, 3)}
    assert answers == {"req-0": "100", "req-1": "121", "req-2": "144"}, answers
    client_conn.close()
    server_conn.close()


def headers_exchange():
    """A headers exchange: x-match=all needs every bound header, x-match=any one of them."""
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("docs", exchange_type="headers")
    reports = ch.queue_declare("", exclusive=True).method.queue
    pdf_or_log = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(reports, "docs", arguments={"x-match": "all", "format": "pdf", "type": "report"})
    ch.queue_bind(pdf_or_log, "docs", arguments={"x-match": "any", "format": "pdf", "type": "log"})
    for body, headers in [("a", {"format": "pdf", "type": "report"}),
                          ("b", {"format": "zip", "type": "log"}),
                          ("c", {"format": "pdf"}),
                          ("d", {"format": "zip", "type": "report"})]:
        ch.basic_publish("docs", "", body.encode(), pika.BasicProperties(headers=headers))
    assert [g[0] for g in drain(ch, reports, 1)] == ["a"]
    assert [g[0] for g in drain(ch, pdf_or_log, 3)] == ["a", "b", "c"]
    assert ch.queue_declare(reports, passive=True).method.message_count == 0
    conn.close()


def expect_close(code, fn, what):
    """Runs `fn` (which uses a channel); the broker must close that channel with `code`."""
    try:
        fn()
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == code, (what, e)
        return
    raise AssertionError(f"{what}: expected channel close {code}")


def queue_exists(conn, name):
    """A passive declare on a fresh channel: True, or False when the broker says 404."""
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False


def exchange_exists(conn, name):
    try:
        conn.channel().exchange_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False


def eventually(cond, what, timeout=10):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, what
        time.sleep(0.05)


def exchange_to_exchange_bindings():
    """exchange.bind: messages published to one exchange reach the queues behind the
    exchanges bound to it, once each even through a cycle; exchange.unbind stops them; an
    internal exchange is fed only by bindings."""
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("e2e_front", exchange_type="topic")
    ch.exchange_declare("e2e_mid", exchange_type="fanout", internal=True)
    ch.exchange_declare("e2e_back", exchange_type="direct")
    ch.exchange_bind(destination="e2e_mid", source="e2e_front", routing_key="orders.*")
    ch.exchange_bind(destination="e2e_back", source="e2e_mid")
    ch.exchange_bind(destination="e2e_front", source="e2e_back", routing_key="orders.eu")  # cycle
    audit = ch.queue_declare("", exclusive=True).method.queue
    eu = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(audit, "e2e_mid")
    ch.queue_bind(eu, "e2e_back", routing_key="orders.eu")
    for key in ("orders.eu", "orders.us", "billing.eu"):
        ch.basic_publish("e2e_front", key, key.encode())
    assert [g[0] for g in drain(ch, audit, 2)] == ["orders.eu", "orders.us"]
    assert [g[0] for g in drain(ch, eu, 1)] == ["orders.eu"]
    ch.exchange_unbind(destination="e2e_mid", source="e2e_front", routing_key="orders.*")
    ch.basic_publish("e2e_front", "orders.eu", b"after unbind")
    assert ch.queue_declare(audit, passive=True).method.message_count == 0
    assert ch.queue_declare(eu, passive=True).method.message_count == 0
    expect_close(404, lambda: conn.channel().exchange_bind("e2e_front", "no-such-exchange"),
                 "binding from a missing exchange")
    internal = conn.channel()
    internal.confirm_delivery()
    expect_close(403, lambda: internal.basic_publish("e2e_mid", "", b"direct"),
                 "publishing to an internal exchange")
    conn.close()


def alternate_exchange():
    """alternate-exchange: what the exchange routes nowhere goes there, so a mandatory
    publish is not returned; with no route through the alternate either, it is."""
    conn = connect()
    ch = conn.channel()
    ch.exchange_declare("ae_spare", exchange_type="fanout")
    ch.exchange_declare("ae_main", exchange_type="direct",
                        arguments={"alternate-exchange": "ae_spare"})
    known = ch.queue_declare("", exclusive=True).method.queue
    unrouted = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(known, "ae_main", routing_key="known")
    ch.queue_bind(unrouted, "ae_spare")
    ch.confirm_delivery()
    ch.basic_publish("ae_main", "known", b"routed", mandatory=True)
    ch.basic_publish("ae_main", "other", b"to the alternate", mandatory=True)
    assert [g[0] for g in drain(ch, known, 1)] == ["routed"]
    assert [g[0] for g in drain(ch, unrouted, 1)] == ["to the alternate"]
    ch.queue_unbind(unrouted, "ae_spare")
    try:
        ch.basic_publish("ae_main", "other", b"nowhere", mandatory=True)
        raise AssertionError("no route through the alternate either: must be returned")
    except pika.exceptions.UnroutableError:
        pass
    expect_close(406, lambda: conn.channel().exchange_declare("ae_main", exchange_type="direct"),
                 "redeclare without the alternate-exchange argument")
    conn.close()


def auto_delete():
    """An auto-delete queue goes when its last consumer cancels or its connection closes
    (not before it had one); an auto-delete exchange goes with its last binding."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("ad_cancel", auto_delete=True)
    ch.queue_declare("ad_close", auto_delete=True)
    assert queue_exists(conn, "ad_cancel"), "no consumer yet: the queue stays"
    tags = [ch.basic_consume("ad_cancel", lambda *a: None) for _ in range(2)]
    ch.basic_cancel(tags[0])
    assert queue_exists(conn, "ad_cancel"), "one consumer left"
    ch.basic_cancel(tags[1])
    assert not queue_exists(conn, "ad_cancel"), "the last consumer cancelled"
    other = connect()
    other.channel().basic_consume("ad_close", lambda *a: None)
    other.close()
    eventually(lambda: not queue_exists(conn, "ad_close"),
               "the consumer's connection closed: the queue must go")
    ch = conn.channel()
    ch.exchange_declare("ad_x", exchange_type="fanout", auto_delete=True)
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, "ad_x")
    ch.queue_bind(q2, "ad_x")
    ch.queue_unbind(q1, "ad_x")
    assert exchange_exists(conn, "ad_x"), "one binding left"
    ch.queue_delete(q2)  # the last binding goes with its queue
    assert not exchange_exists(conn, "ad_x"), "the last binding went: the exchange must go"
    conn.close()


def exclusive_queues():
    """An exclusive queue is its connection's: another connection's declare, consume, bind,
    purge, get or delete is 405 RESOURCE_LOCKED; publishing to it works; it goes with its
    connection."""
    owner = connect()
    och = owner.channel()
    och.queue_declare("excl_q", exclusive=True)
    other = connect()
    for what, op in [
        ("declare", lambda c: c.queue_declare("excl_q", exclusive=True)),
        ("passive declare", lambda c: c.queue_declare("excl_q", passive=True)),
        ("consume", lambda c: c.basic_consume("excl_q", lambda *a: None)),
        ("bind", lambda c: c.queue_bind("excl_q", "amq.fanout")),
        ("purge", lambda c: c.queue_purge("excl_q")),
        ("get", lambda c: c.basic_get("excl_q")),
        ("delete", lambda c: c.queue_delete("excl_q")),
    ]:
        ch = other.channel()
        expect_close(405, lambda: op(ch), what)
    other.channel().queue_declare("shared_q_x")
    expect_close(405, lambda: other.channel().queue_declare("shared_q_x", exclusive=True),
                 "an existing shared queue declared exclusive")
    expect_close(405, lambda: owner.channel().queue_declare("excl_q"),
                 "the owner redeclaring without exclusive (RabbitMQ: the flag must match)")
    other.channel().basic_publish("", "excl_q", b"from another connection")
    assert [g[0] for g in drain(och, "excl_q", 1)] == ["from another connection"]
    owner.close()
    eventually(lambda: not queue_exists(other, "excl_q"), "the owner closed: the queue must go")
    other.channel().queue_declare("excl_q", exclusive=True)  # free to take now
    other.close()


def exclusive_consumer():
    """basic.consume exclusive=true: the queue's only consumer; another consume is 403, and
    an exclusive consume where consumers exist is 403 too."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("xc_q")
    ch.queue_declare("xc_shared")
    tag = ch.basic_consume("xc_q", lambda *a: None, exclusive=True)
    other = connect()
    expect_close(403, lambda: other.channel().basic_consume("xc_q", lambda *a: None),
                 "a second consumer on an exclusively consumed queue")
    ch.basic_consume("xc_shared", lambda *a: None)
    expect_close(403, lambda: other.channel().basic_consume("xc_shared", lambda *a: None,
                                                           exclusive=True),
                 "an exclusive consume where a consumer exists")
    ch.basic_cancel(tag)
    other.channel().basic_consume("xc_q", lambda *a: None)  # free once cancelled
    other.close()
    conn.close()


def confirms_multiple():
    """A pipelining publisher (pika's async SelectConnection, 500 publishes without
    waiting): every sequence number is confirmed exactly once, some acks cover several with
    multiple=True, none is nacked, and all 500 are in the queue."""
    count = 500
    pending = set(range(1, count + 1))
    seen = {"multiple": 0, "nack": 0, "error": None}
    params = pika.ConnectionParameters(host="127.0.0.1", port=PORT,
                                       credentials=pika.PlainCredentials("guest", "guest"))

    def on_confirm(frame):
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            seen["nack"] += 1
        covered = {t for t in pending if t <= m.delivery_tag} if m.multiple else {m.delivery_tag}
        if not covered or not covered <= pending:
            seen["error"] = f"ack {m.delivery_tag} multiple={m.multiple} confirms nothing new"
        seen["multiple"] += bool(m.multiple)
        pending.difference_update(covered)
        if not pending or seen["error"]:
            conn.close()

    def publish(ch):
        for i in range(count):
            ch.basic_publish("", "multi_confirm_q", f"m{i}".encode())

    def on_channel(ch):
        ch.queue_declare("multi_confirm_q", callback=lambda _f: ch.confirm_delivery(
            on_confirm, callback=lambda _f: publish(ch)))

    conn = pika.SelectConnection(
        params, on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_open_error_callback=lambda c, e: c.ioloop.stop(),
        on_close_callback=lambda c, r: c.ioloop.stop())
    conn.ioloop.call_later(30, conn.close)
    conn.ioloop.start()
    assert seen["error"] is None, seen
    assert not pending, f"{len(pending)} publishes never confirmed, e.g. {sorted(pending)[:5]}"
    assert seen["nack"] == 0, seen
    assert seen["multiple"] > 0, "500 pipelined publishes: some acks should cover several"
    check_conn = connect()
    assert check_conn.channel().queue_declare("multi_confirm_q", passive=True) \
        .method.message_count == count
    check_conn.close()


def consumer_cancel_notify():
    """Deleting a queue cancels its consumers on other connections with a basic.cancel
    (pika announces consumer_cancel_notify), even a consumer whose prefetch is full and even
    when the queue is declared again at once; the consumer's channel stays open."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("cancel_q")
    ch.basic_publish("", "cancel_q", b"held")
    ch.basic_qos(prefetch_count=1)
    cancelled, held = [], []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume("cancel_q", lambda _c, _m, _p, body: held.append(body))
    deadline = time.time() + 10
    while not held and time.time() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert held == [b"held"], "the consumer holds one unacked message: its prefetch is full"
    other = connect()
    och = other.channel()
    och.queue_delete("cancel_q")
    och.queue_declare("cancel_q")  # a new queue of the same name: not the consumer's
    deadline = time.time() + 10
    while not cancelled and time.time() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert cancelled == [tag], cancelled
    och.basic_publish("", "cancel_q", b"for nobody yet")
    conn.process_data_events(time_limit=0.5)
    assert ch.queue_declare("cancel_q", passive=True).method.message_count == 1, \
        "the cancelled consumer must not take messages of the new queue"
    other.close()
    conn.close()


def transactions():
    """tx.select: publishes and acks wait for tx.commit; tx.rollback drops the publishes and
    makes acked messages unacked again; tx and confirm modes exclude each other (406)."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("tx_q")
    ch.tx_select()
    look = conn.channel()
    count = lambda: look.queue_declare("tx_q", passive=True).method.message_count  # noqa: E731
    for i in range(3):
        ch.basic_publish("", "tx_q", f"t{i}".encode())
    assert count() == 0, "uncommitted publishes are not in the queue"
    ch.tx_commit()
    assert count() == 3
    ch.basic_publish("", "tx_q", b"rolled back")
    ch.tx_rollback()
    ch.tx_commit()
    assert count() == 3, "a rolled-back publish never arrives"
    tags = []
    for _ in range(3):
        method, _props, _body = ch.basic_get("tx_q")
        tags.append(method.delivery_tag)
    ch.basic_ack(tags[-1], multiple=True)
    ch.tx_rollback()  # the acks are undone: the messages are unacked again
    ch.basic_ack(tags[0])  # so their tags are still valid
    ch.tx_commit()
    ch.close()  # t1, t2 unacked (their ack was rolled back): back to the queue
    ch = conn.channel()
    got = drain(ch, "tx_q", 2)
    assert [(g[0], g[1]) for g in got] == [("t1", True), ("t2", True)], got
    confirm_ch = conn.channel()
    confirm_ch.confirm_delivery()
    expect_close(406, confirm_ch.tx_select, "tx.select on a confirm channel")
    tx_ch = conn.channel()
    tx_ch.tx_select()
    expect_close(406, tx_ch.confirm_delivery, "confirm.select on a tx channel")
    expect_close(406, conn.channel().tx_commit, "tx.commit without tx.select")
    conn.close()


def queue_delete_conditions():
    """queue.delete if-empty with messages and if-unused with a consumer are 406; without
    them the queue goes. A redeclare with another durable flag is 406."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("del_q")
    ch.basic_publish("", "del_q", b"still here")
    expect_close(406, lambda: conn.channel().queue_delete("del_q", if_empty=True), "if-empty")
    consumer = conn.channel()
    tag = consumer.basic_consume("del_q", lambda *a: None, auto_ack=False)
    expect_close(406, lambda: conn.channel().queue_delete("del_q", if_unused=True), "if-unused")
    consumer.basic_cancel(tag)
    consumer.close()
    conn.channel().queue_purge("del_q")
    assert conn.channel().queue_delete("del_q", if_unused=True, if_empty=True) \
        .method.message_count == 0
    assert not queue_exists(conn, "del_q")
    conn.channel().queue_declare("dur_q", durable=True)
    expect_close(406, lambda: conn.channel().queue_declare("dur_q", durable=False),
                 "redeclare with another durable flag")
    conn.close()


def start_server(*settings):
    """A second sluice server (SLUICE_BIN_PATH) on its own data directory with `--set`
    settings, AMQP on every address (port chosen by the OS); returns (process, port)."""
    data = tempfile.mkdtemp(dir=os.environ.get("SLUICE_WORK"))
    log_path = os.path.join(data, "server.log")
    args = [os.environ["SLUICE_BIN_PATH"], "server", "--data-dir", os.path.join(data, "data"),
            "--kafka-listener", "127.0.0.1:0", "--amqp-listener", "0.0.0.0:0",
            "--admin-listener", "127.0.0.1:0"]
    for setting in settings:
        args += ["--set", setting]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log_path) as log:
            for line in log:
                if line.startswith("  amqp"):
                    return proc, int(line.split()[1].rsplit(":", 1)[1])
        assert proc.poll() is None, open(log_path).read()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the second server printed no banner")


def non_loopback_address():
    """This machine's address on its default route (not loopback), or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def vhosts_and_users():
    """A second server with amqp.vhosts=/,dev,ops and amqp.users: a vhost is a namespace (the
    same exchange and queue names in / and dev hold their own messages; amq.* exist in each);
    an unknown vhost, or one the user may not open, is 530 NOT_ALLOWED; a wrong password is
    403; guest logs in from loopback only, a configured user from any address."""
    proc, port = start_server("amqp.vhosts=/,dev,ops",
                              "amqp.users=alice:wonderland:dev,bob:builder")

    def open_conn(vhost="/", user="guest", password="guest", host="127.0.0.1"):
        return pika.BlockingConnection(pika.ConnectionParameters(
            host=host, port=port, virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password)))

    def refused(error, code, **how):
        try:
            open_conn(**how).close()
        except error as e:
            assert f"({code})" in str(e), (how, e)
            return
        raise AssertionError(f"{how}: the login or the vhost must be refused with {code}")

    try:
        root = open_conn()
        dev = open_conn("dev", "alice", "wonderland")
        for conn, body in ((root, "root"), (dev, "dev")):
            ch = conn.channel()
            ch.exchange_declare("shared_x", exchange_type="fanout")
            ch.queue_declare("shared_q")
            ch.queue_bind("shared_q", "shared_x")
            ch.basic_publish("shared_x", "", body.encode())
            ch.basic_publish("", "shared_q", f"{body} direct".encode())
        for conn in (root, dev):
            count = conn.channel().queue_declare("shared_q", passive=True).method.message_count
            assert count == 2, f"each vhost's shared_q holds its own 2 messages, not {count}"
        assert [g[0] for g in drain(root.channel(), "shared_q", 2)] == ["root", "root direct"]
        assert [g[0] for g in drain(dev.channel(), "shared_q", 2)] == ["dev", "dev direct"]
        ch = dev.channel()
        ch.queue_declare("only_in_dev")
        ch.queue_bind("only_in_dev", "amq.topic", routing_key="#")
        ch.basic_publish("amq.topic", "a.b", b"via dev's amq.topic")
        assert [g[0] for g in drain(ch, "only_in_dev", 1)] == ["via dev's amq.topic"]
        assert not queue_exists(root, "only_in_dev")
        expect_close(403, lambda: root.channel().queue_declare("vhost.dev.only_in_dev",
                                                               passive=True),
                     "/ reaching into dev by the broker's name for its queue")
        root.close()
        dev.close()
        refused(pika.exceptions.ProbableAccessDeniedError, 530, vhost="nope")
        refused(pika.exceptions.ProbableAccessDeniedError, 530, vhost="ops", user="alice",
                password="wonderland")
        open_conn("ops", "bob", "builder").close()
        refused(pika.exceptions.ProbableAuthenticationError, 403, user="alice",
                password="wrong")
        ip = non_loopback_address()
        if ip is None:
            print("     (no non-loopback address: the guest-from-elsewhere check is skipped)")
        else:
            refused(pika.exceptions.ProbableAuthenticationError, 403, host=ip)
            open_conn("dev", "alice", "wonderland", host=ip).close()
    finally:
        proc.terminate()
        proc.wait(30)


def nack_requeue():
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("requeue_q")
    ch.basic_publish("", "requeue_q", b"again")
    for method, _props, body in ch.consume("requeue_q", inactivity_timeout=10):
        assert method is not None and body == b"again"
        assert not method.redelivered
        ch.basic_nack(method.delivery_tag, requeue=True)
        break
    ch.cancel()
    got = drain(ch, "requeue_q", 1)
    assert got[0][0] == "again" and got[0][1] is True, got
    conn.close()


def basic_get():
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("get_q")
    method, _props, body = ch.basic_get("get_q")
    assert method is None and body is None, "get on an empty queue is get-empty"
    ch.basic_publish("", "get_q", b"one")
    ch.basic_publish("", "get_q", b"two")
    method, _props, body = ch.basic_get("get_q", auto_ack=False)
    assert body == b"one" and method.message_count == 1, (body, method)
    ch.basic_ack(method.delivery_tag)
    method, _props, body = ch.basic_get("get_q", auto_ack=True)
    assert body == b"two"
    assert ch.queue_declare("get_q", passive=True).method.message_count == 0
    conn.close()


def confirms():
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("confirm_q", durable=True)
    for i in range(20):
        ch.basic_publish("", "confirm_q", f"c{i}".encode(),
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    try:
        ch.basic_publish("", "no-such-queue", b"lost", mandatory=True)
        raise AssertionError("an unroutable mandatory publish must be returned")
    except pika.exceptions.UnroutableError:
        pass
    assert ch.queue_declare("confirm_q", durable=True, passive=True).method.message_count == 20
    conn.close()


def channel_errors():
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("args_q", arguments={"x-delivery-limit": 5})
    try:
        ch.queue_declare("args_q", arguments={"x-delivery-limit": 6})
        raise AssertionError("redeclare with other arguments must fail")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 406, e
    ch = conn.channel()
    try:
        ch.queue_declare("never-declared", passive=True)
        raise AssertionError("passive declare of a missing queue must fail")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
    ch = conn.channel()
    try:
        ch.queue_declare("__consumer_offsets")
        raise AssertionError("internal topics are not queues")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 403, e
    ch = conn.channel()
    ch.queue_declare("still-usable")
    conn.close()


def no_ack_backlog():
    """An auto-ack consumer drains a backlog larger than one delivery batch, in order."""
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("backlog_q")
    count = 1000
    for i in range(count):
        ch.basic_publish("", "backlog_q", str(i).encode())
    got = []
    for method, _props, body in ch.consume("backlog_q", auto_ack=True, inactivity_timeout=10):
        if method is None:
            break
        got.append(int(body))
        if len(got) == count:
            break
    ch.cancel()
    assert got == list(range(count)), (len(got), got[:3], got[-3:])
    assert ch.queue_declare("backlog_q", passive=True).method.message_count == 0
    conn.close()


def unacked_come_back_when_the_connection_closes():
    conn = connect()
    ch = conn.channel()
    ch.queue_declare("release_q")
    for i in range(3):
        ch.basic_publish("", "release_q", f"r{i}".encode())
    held = drain(ch, "release_q", 3, ack=False)
    assert [g[0] for g in held] == ["r0", "r1", "r2"]
    conn.close()  # unacked: back to the queue
    conn = connect()
    ch = conn.channel()
    got = drain(ch, "release_q", 3)
    assert [(g[0], g[1]) for g in got] == [("r0", True), ("r1", True), ("r2", True)], got
    conn.close()


def metrics_count_amqp_methods():
    admin = os.environ.get("ADMIN_ADDR")
    assert admin, "ADMIN_ADDR not set"
    import urllib.request
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    assert 'sluice_requests_total{protocol="amqp",api="basic.publish"}' in text, text[:2000]
    assert 'sluice_request_errors_total{protocol="amqp",api="queue.declare",error="406"}' in text


def survives_restart():
    restart = os.environ.get("SLUICE_RESTART")
    assert restart, "SLUICE_RESTART not set"
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("durable_q", durable=True)
    ch.exchange_declare("durable_x", exchange_type="direct", durable=True)
    ch.queue_bind("durable_q", "durable_x", routing_key="k")
    # An exchange-to-exchange binding and an alternate exchange are saved too.
    ch.exchange_declare("durable_src", exchange_type="fanout", durable=True)
    ch.exchange_bind(destination="durable_x", source="durable_src")
    ch.exchange_declare("durable_main", exchange_type="direct", durable=True,
                        arguments={"alternate-exchange": "durable_src"})
    for i in range(10):
        ch.basic_publish("durable_x", "k", f"d{i}".encode(), pika.BasicProperties(delivery_mode=2))
    got = drain(ch, "durable_q", 4)  # acked: must not come back
    assert [g[0] for g in got] == [f"d{i}" for i in range(4)], got
    # Transient ones do not outlive the broker, as in RabbitMQ.
    ch.queue_declare("transient_q", durable=False)
    ch.exchange_declare("transient_x", exchange_type="fanout", durable=False)
    ch.queue_bind("durable_q", "transient_x")
    ch.basic_publish("", "transient_q", b"gone")
    conn.close()
    subprocess.run(restart, shell=True, check=True, timeout=120)
    for declare in (lambda c: c.queue_declare("transient_q", passive=True),
                    lambda c: c.exchange_declare("transient_x", passive=True)):
        conn = connect()
        try:
            declare(conn.channel())
            raise AssertionError("a transient queue or exchange survived the restart")
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404, e
        conn.close()
    conn = connect()
    ch = conn.channel()
    assert ch.queue_declare("durable_q", durable=True, passive=True).method.message_count == 6
    ch.basic_publish("durable_x", "k", b"after")  # the binding survived too
    ch.basic_publish("durable_src", "k", b"via e2e")  # and the exchange-to-exchange one
    ch.basic_publish("durable_main", "k", b"via ae")  # and the alternate exchange
    got = drain(ch, "durable_q", 9, timeout=10)
    assert [g[0] for g in got] == [f"d{i}" for i in range(4, 10)] + [
        "after", "via e2e", "via ae"], got
    conn.close()


def survives_kill_9():
    """kill -9 under a confirmed publisher and a manual-ack consumer: every confirmed message
    is delivered after the restart, acked ones are not, and the ones in flight at the crash
    come back with redelivered=True."""
    restart = os.environ.get("SLUICE_RESTART")
    assert restart, "SLUICE_RESTART not set"
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("k9_q", durable=True)
    for i in range(200):
        ch.basic_publish("", "k9_q", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    ch.basic_qos(prefetch_count=10)
    acked, held = 0, []
    for method, _, body in ch.consume("k9_q", inactivity_timeout=10):
        assert method is not None, "consumer starved"
        if acked < 50:
            ch.basic_ack(method.delivery_tag)
            acked += 1
        else:
            held.append(body.decode())
            if len(held) == 10:
                break
    # A durable exclusive queue dies with its connection, even when a crash ends that.
    conn.channel().queue_declare("k9_exclusive", durable=True, exclusive=True)
    # The acks must have reached the broker before the crash: a round trip on the channel.
    ch.queue_declare("k9_q", durable=True, passive=True)
    subprocess.run(restart + " kill", shell=True, check=True, timeout=120)
    conn = connect()
    assert not queue_exists(conn, "k9_exclusive"), "an exclusive queue outlived its connection"
    ch = conn.channel()
    got = drain(ch, "k9_q", 150, timeout=10)
    bodies = [g[0] for g in got]
    assert sorted(bodies, key=lambda b: int(b[1:])) == [f"m{i}" for i in range(50, 200)], bodies
    redelivered = sorted(g[0] for g in got if g[1])
    assert redelivered == sorted(held), (redelivered, held)
    conn.close()


check("hello world (properties and headers round-trip)", hello_world)
check("work queue: prefetch 1, manual acks, 2 consumers, each message once", work_queue)
check("fanout to 2 server-named exclusive queues", fanout)
check("direct routing by severity", direct_routing)
check("topic exchange: * and # bindings", topics)
check("RPC: reply_to, correlation_id, exclusive server-named reply queue", rpc)
check("headers exchange: x-match all and any", headers_exchange)
check("nack with requeue is redelivered with redelivered=True", nack_requeue)
check("basic.get, get-empty, message_count", basic_get)
check("publisher confirms; mandatory unroutable is returned", confirms)
check("channel errors 406/404/403 close only the channel", channel_errors)
check("auto-ack consumer drains a 1000-message backlog in order", no_ack_backlog)
check("unacked messages come back redelivered when the connection closes",
      unacked_come_back_when_the_connection_closes)
check("exchange-to-exchange bindings: chains, a cycle, unbind, internal exchanges",
      exchange_to_exchange_bindings)
check("alternate exchange takes unroutable messages; mandatory returned only with no route",
      alternate_exchange)
check("auto-delete queues (last consumer) and exchanges (last binding)", auto_delete)
check("exclusive queues: other connections get 405 RESOURCE_LOCKED", exclusive_queues)
check("exclusive consumers: a second consumer gets 403 ACCESS_REFUSED", exclusive_consumer)
check("publisher confirms: 500 pipelined publishes, coalesced multiple acks, each tag once",
      confirms_multiple)
check("queue delete cancels consumers on other connections (basic.cancel)",
      consumer_cancel_notify)
check("transactions: commit, rollback of publishes and acks, tx/confirm exclusion", transactions)
check("queue.delete if-empty / if-unused and durable redeclare are 406", queue_delete_conditions)
check("vhosts namespace exchanges and queues; users from the config; 530 and 403 refusals",
      vhosts_and_users)
check("/metrics counts AMQP methods and their errors", metrics_count_amqp_methods)
check("TTL + DLX: expired messages reach the DLQ with RabbitMQ's x-death and x-*-death headers",
      lambda: policies.ttl_dead_letter_chain(connect))
check("per-message expiration: an expired message is never delivered; bad expiration is 406",
      lambda: policies.expired_message_is_never_delivered(connect))
check("reject/nack requeue=false dead-letters with the original routing key",
      lambda: policies.rejected_to_dead_letter_queue(connect))
check("x-delivery-limit: a poison message goes to the DLQ; quorum default 20, classic none",
      lambda: policies.delivery_limit_to_dead_letter_queue(connect))
check("x-max-length drop-head dead-letters the oldest; x-max-length-bytes keeps the newest",
      lambda: policies.max_length_drop_head(connect))
check("x-overflow reject-publish nacks the publish; reject-publish-dlx dead-letters it",
      lambda: policies.max_length_reject_publish(connect))
check("x-max-priority: higher first, FIFO within a priority, requeued keep theirs",
      lambda: policies.priorities(connect))
check("x-expires deletes an unused queue, not one with a consumer",
      lambda: policies.queue_expires(connect))
check("x-single-active-consumer: one consumer gets everything; the next takes over on cancel",
      lambda: policies.single_active_consumer(connect))
check("consumer priorities (x-priority): the higher one first, the lower one when it is full",
      lambda: policies.consumer_priorities(connect))
check("queue policies survive a restart (priority order, length limit, TTL into the DLQ)",
      lambda: policies.policies_survive_restart(connect, os.environ["SLUICE_RESTART"]))
check("x-delayed-message: due order, never early, across a restart",
      lambda: policies.delayed_exchange_in_due_order(connect, os.environ["SLUICE_RESTART"]))
check("x-retry-backoff: retries after 300 and 600 ms (±10%), then dead-lettered",
      lambda: policies.retry_with_backoff(connect))
check("kill -9: every confirmed message after the restart, acked ones never, in-flight ones "
      "redelivered; exclusive queues gone",
      survives_kill_9)
check("durable queue, exchanges, bindings (exchange-to-exchange, alternate) and messages "
      "survive a restart; acked ones do not come back",
      survives_restart)
finish()
