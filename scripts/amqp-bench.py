#!/usr/bin/env python3
"""Sluice's AMQP door side by side with RabbitMQ (issue 15's proof): the same client
(`sluice bench amqp`, lapin), the same 1 KiB messages, the same machine, one run.

Starts Debian's rabbitmq-server on loopback only (its own node name `sluicebench@localhost`,
data, logs and cookie under a temporary directory, management plugin off, epmd and the
distribution port on 127.0.0.1) and, for every measured run, a fresh release Sluice on a
fresh data directory (scenario durable with `--set storage.flush=sync`, so a confirm means
fsynced as RabbitMQ's does for persistent messages; the others with the default async flush).
Each scenario runs `--rounds` times against each broker, alternating which goes first;
prints the medians and the ratio Sluice / RabbitMQ, then stops both.

Not part of scripts/test.sh or CI: it installs a system package and takes minutes.

Usage:
  cargo build --release --locked -p sluice -p sluice-bench
  scripts/amqp-bench.py [--rounds 3] [--scenarios durable,transient,fanout] [--install]
--install: apt-get install rabbitmq-server if it is missing (refused when CI is set unless
--allow-ci is given too). --json FILE writes every run's figures.
"""
import argparse
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
SLUICE = os.path.join(ROOT, "target/release/sluice")
RABBIT_BIN = "/usr/lib/rabbitmq/bin"
NODE = "sluicebench@localhost"

# Messages per run per scenario (publishing also stops after 60 s).
SCENARIOS = {
    "durable": {"count": 100_000, "args": []},
    "transient": {"count": 400_000, "args": []},
    "fanout": {"count": 60_000, "args": ["--queues", "10"]},
}
# Issue 15's bar: Sluice's messages/s at least this many times RabbitMQ's.
TARGET = {"durable": 5.0, "transient": 2.0, "fanout": 3.0}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not listening on {port} after {timeout} s")


def ensure_rabbitmq(install, allow_ci):
    if os.path.exists(os.path.join(RABBIT_BIN, "rabbitmq-server")):
        return
    if not install:
        sys.exit("rabbitmq-server is not installed: rerun with --install (apt-get)")
    if os.environ.get("CI") and not allow_ci:
        sys.exit("refusing to apt-get install in CI without --allow-ci")
    log("installing rabbitmq-server (Debian) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # The package's service would listen on every address: keep it from starting
    # (policy-rc.d 101) if the machine does not already forbid it.
    policy = "/usr/sbin/policy-rc.d"
    made_policy = not os.path.exists(policy)
    if made_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "rabbitmq-server"], check=True, env=env)
    finally:
        if made_policy:
            os.remove(policy)


def pids_named(name):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/comm") as f:
                    if f.read().strip() == name:
                        out.append(int(p))
            except OSError:
                pass
    return out


class Rabbit:
    def __init__(self, work):
        self.dir = os.path.join(work, "rabbitmq")
        os.makedirs(self.dir)
        self.port = free_port()
        dist = free_port()
        conf = os.path.join(self.dir, "rabbitmq.conf")
        with open(conf, "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                    f"distribution.listener.interface = 127.0.0.1\n"
                    f"distribution.listener.port_range.min = {dist}\n"
                    f"distribution.listener.port_range.max = {dist}\n"
                    "loopback_users.guest = true\n")
        plugins = os.path.join(self.dir, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[].\n")  # no management plugin
        self.env = dict(
            os.environ,
            HOME=self.dir,  # its own .erlang.cookie
            RABBITMQ_NODENAME=NODE,
            RABBITMQ_CONFIG_FILE=conf,
            RABBITMQ_ENABLED_PLUGINS_FILE=plugins,
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.dir, "advanced.config"),
            RABBITMQ_PID_FILE=os.path.join(self.dir, "rabbit.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        self.epmd_before = bool(pids_named("epmd"))
        self.out = open(os.path.join(self.dir, "stdout"), "w")
        self.proc = subprocess.Popen([os.path.join(RABBIT_BIN, "rabbitmq-server")], env=self.env,
                                     stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_port(self.port, self.proc, "rabbitmq-server")
        self.ctl("await_startup")
        self.pid = int(self.ctl("eval", "list_to_integer(os:getpid()).").strip())
        self.version = self.ctl("eval", "rabbit_misc:version().").strip().strip('"')
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"

    def ctl(self, *args):
        return subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), "-n", NODE, *args],
                              env=self.env, check=True, capture_output=True, text=True,
                              timeout=120).stdout

    def stop(self):
        try:
            self.ctl("shutdown")
        except Exception as e:  # noqa: BLE001 — stop it the hard way below
            log(f"rabbitmqctl shutdown: {e}")
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        if not self.epmd_before:
            # The epmd this run started (on 127.0.0.1) goes with it.
            subprocess.run(["epmd", "-kill"], env=self.env, capture_output=True)
        self.out.close()


class Sluice:
    def __init__(self, work, name, flush):
        self.data = os.path.join(work, f"sluice-{name}")
        args = [SLUICE, "server", "--data-dir", self.data, "--kafka-listener", "127.0.0.1:0",
                "--amqp-listener", "127.0.0.1:0", "--admin-listener", "127.0.0.1:0",
                "--set", f"storage.flush={flush}"]
        self.err = open(self.data + ".log", "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.pid = self.proc.pid
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("amqp "):
                self.url = f"amqp://guest:guest@{line.split()[1]}/%2f"
                break
        else:
            raise RuntimeError(f"sluice exited before its banner; see {self.data}.log")

    def stored_bytes(self, sub=""):
        """Bytes on disk under the data directory, or `sub` of it (blocks, not apparent
        size)."""
        out = subprocess.run(["du", "-s", "--block-size=1", os.path.join(self.data, sub)],
                             capture_output=True, text=True).stdout
        return int(out.split()[0]) if out else 0

    def commit_log_bytes(self):
        """Bytes written to the commit log (its write position: segment files are sparse
        and preallocated, so their blocks say little)."""
        total = 0
        d = os.path.join(self.data, "store", "commitlog")
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if name.endswith(".log"):
                # Sparse: count the blocks allocated.
                total += os.stat(os.path.join(d, name)).st_blocks * 512
        return total

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()
        shutil.rmtree(self.data, ignore_errors=True)


def bench(url, pid, scenario, count, extra, sample=0.0):
    """One `sluice bench amqp` run; with `sample` > 0, also the broker's and the client's
    per-thread CPU over `sample` seconds from 1 s into the run (a `top -H` in numbers)."""
    cmd = [SLUICE, "bench", "--output", "json", "amqp", "--url", url, "--scenario", scenario,
           "--count", str(count), "--duration-secs", "60", "--broker-pid", str(pid), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = None
    if sample > 0:
        time.sleep(1.0)
        client = [p for p in pids_named("sluice-bench")]
        try:
            samples = {"broker": top_sample(pid, sample, extra_pids=client)}
        except OSError:
            pass
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err}")
    doc = json.loads(out.strip().splitlines()[-1])
    figures = {k: v["value"] for k, v in doc["figures"].items()}
    if samples:
        figures["threads"] = samples["broker"]
    return figures


def top_sample(pid, seconds, extra_pids=()):
    """Per-thread CPU of `pid` (and `extra_pids`, labelled client:) over `seconds`:
    [(thread name, CPU s)], largest first."""
    def snap():
        ticks = {}
        for p, label in [(pid, ""), *[(e, "client:") for e in extra_pids]]:
            for t in os.listdir(f"/proc/{p}/task"):
                try:
                    with open(f"/proc/{p}/task/{t}/stat") as f:
                        s = f.read()
                    name = label + s[s.index("(") + 1:s.rindex(")")]
                    fields = s[s.rindex(")") + 2:].split()
                    ticks[(p, t, name)] = int(fields[11]) + int(fields[12])
                except (OSError, ValueError):
                    pass
        return ticks
    a = snap()
    time.sleep(seconds)
    b = snap()
    per = {}
    hz = os.sysconf("SC_CLK_TCK")
    for k, v in b.items():
        per[k[2]] = per.get(k[2], 0) + (v - a.get(k, 0)) / hz
    return sorted(((n, round(c, 2)) for n, c in per.items() if c > 0), key=lambda kv: -kv[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", default="durable,transient,fanout")
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--allow-ci", action="store_true")
    ap.add_argument("--json", help="write every run's figures here")
    ap.add_argument("--sample", type=float, default=0.0,
                    help="sample per-thread CPU of broker and client for this many seconds")
    ap.add_argument("--count-scale", type=float, default=1.0,
                    help="multiply each scenario's message count (e.g. 0.1 for a smoke run)")
    opts = ap.parse_args()
    if os.environ.get("CI") and not opts.allow_ci:
        sys.exit("scripts/amqp-bench.py is not a CI step (set --allow-ci to force)")
    if not os.path.exists(SLUICE) or not os.path.exists(SLUICE + "-bench"):
        sys.exit("build first: cargo build --release --locked -p sluice -p sluice-bench")
    ensure_rabbitmq(opts.install, opts.allow_ci)
    work = tempfile.mkdtemp(prefix="sluice-amqp-bench-")
    scenarios = opts.scenarios.split(",")
    runs = {s: {"sluice": [], "rabbitmq": []} for s in scenarios}
    rabbit = None
    try:
        rabbit = Rabbit(work)
        log(f"RabbitMQ {rabbit.version} on {rabbit.url} (pid {rabbit.pid})")
        for scenario in scenarios:
            spec = SCENARIOS[scenario]
            count = max(1000, int(spec["count"] * opts.count_scale))
            for i in range(opts.rounds):
                order = ["sluice", "rabbitmq"] if i % 2 == 0 else ["rabbitmq", "sluice"]
                for broker in order:
                    if broker == "rabbitmq":
                        r = bench(rabbit.url, rabbit.pid, scenario, count, spec["args"],
                                  opts.sample)
                    else:
                        flush = "sync" if scenario == "durable" else "async"
                        s = Sluice(work, f"{scenario}-{i}", flush)
                        try:
                            r = bench(s.url, s.pid, scenario, count, [*spec["args"], "--keep"],
                                      opts.sample)
                            r["stored bytes per message"] = s.stored_bytes() / r[
                                "messages published"]
                            r["commit-log bytes per message"] = s.commit_log_bytes() / r[
                                "messages published"]
                        finally:
                            s.stop()
                    runs[scenario][broker].append(r)
                    log(f"{scenario} round {i + 1} {broker}: "
                        f"{r['throughput messages']:,.0f} msgs/s, "
                        f"broker {r.get('broker cpu per GB', float('nan')):.1f} s/GB, "
                        f"client {r.get('client cpu', float('nan')):.1f} s CPU "
                        f"in {r['elapsed']:.1f} s")
                    if "threads" in r:
                        log(f"  threads (CPU s over {opts.sample} s): {r['threads'][:12]}")
                    time.sleep(1)
    finally:
        if rabbit:
            rabbit.stop()
        shutil.rmtree(work, ignore_errors=True)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(runs, f, indent=1)

    def med(scenario, broker, key):
        vals = [r[key] for r in runs[scenario][broker] if key in r]
        return statistics.median(vals) if vals else float("nan")

    print("| scenario | Sluice msgs/s | RabbitMQ msgs/s | Sluice / RabbitMQ | target | met |"
          " Sluice MB/s | RabbitMQ MB/s | broker CPU s/GB Sluice | RabbitMQ |"
          " client CPU s per 100k msgs Sluice | RabbitMQ |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scenario in scenarios:
        s = med(scenario, "sluice", "throughput messages")
        r = med(scenario, "rabbitmq", "throughput messages")
        ratio = s / r
        def client(b):
            return statistics.median(
                x["client cpu"] / x["messages published"] * 1e5 for x in runs[scenario][b])
        print(f"| {scenario} | {s:,.0f} | {r:,.0f} | {ratio:.2f}× | ≥ {TARGET[scenario]:g}× |"
              f" {'yes' if ratio >= TARGET[scenario] else 'no'} |"
              f" {med(scenario, 'sluice', 'throughput MB'):.1f} |"
              f" {med(scenario, 'rabbitmq', 'throughput MB'):.1f} |"
              f" {med(scenario, 'sluice', 'broker cpu per GB'):.1f} |"
              f" {med(scenario, 'rabbitmq', 'broker cpu per GB'):.1f} |"
              f" {client('sluice'):.2f} | {client('rabbitmq'):.2f} |")
    if "fanout" in runs and "transient" in runs:
        f = med("fanout", "sluice", "stored bytes per message")
        t = med("transient", "sluice", "stored bytes per message")
        print(f"\nSluice stored bytes per published message: one queue {t:,.0f},"
              f" fan-out to 10 queues {f:,.0f} ({f / t:.2f}× one queue)")
        f = med("fanout", "sluice", "commit-log bytes per message")
        t = med("transient", "sluice", "commit-log bytes per message")
        print(f"Sluice commit-log bytes per published message: one queue {t:,.0f},"
              f" fan-out to 10 queues {f:,.0f} ({f / t:.2f}× one queue; the rest is each"
              " queue's consume-queue slots and index entries)")


if __name__ == "__main__":
    main()
