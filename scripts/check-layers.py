#!/usr/bin/env python3
"""The crate graph points one way (shared/DESIGN.md, docs/architecture.md):

    common <- storage <- broker <- kafka-coord <- frontend-kafka <- sluice
                                 <- frontend-* / admin
    common <- kafka-client <- sluice (the CLI's Kafka client)

A crate's normal dependencies may name only the workspace crates listed for it below (no
crate skips a layer: a front door talks to the broker, never to storage), and the Kafka
codec (`kafka-protocol`) is a normal dependency only of the Kafka front door, the Kafka client
crate and the CLI (`sluice`), and the test kit. Dev-dependencies (tests, benches) may use
anything.

Run by .ci/run. `--self-test` checks the checker on a graph with deliberate violations.
"""
import json
import subprocess
import sys

# Workspace crate -> the workspace crates its normal dependencies may name.
ALLOWED = {
    "sluice-common": set(),
    "sluice-storage": {"sluice-common"},
    # The protocol-neutral queue engine: a pure state machine beside storage, used by the broker.
    "sluice-queues": {"sluice-common"},
    "sluice-broker": {"sluice-storage", "sluice-queues", "sluice-common"},
    # Kafka's own semantics (groups, idempotence, transactions) above the core.
    "sluice-kafka-coord": {"sluice-broker", "sluice-common"},
    "sluice-frontend-kafka": {"sluice-kafka-coord", "sluice-broker", "sluice-common"},
    # The AMQP 0-9-1 door: the core's queue API; no storage (record batches via broker::batch).
    "sluice-frontend-amqp": {"sluice-broker", "sluice-common"},
    "sluice-admin": {"sluice-broker", "sluice-common"},
    # The CLI's Kafka client speaks only the protocol: no broker, no storage.
    "sluice-kafka-client": {"sluice-common"},
    "sluice": {
        "sluice-common",
        "sluice-storage",
        "sluice-queues",
        "sluice-broker",
        "sluice-kafka-coord",
        "sluice-frontend-kafka",
        "sluice-frontend-amqp",
        "sluice-admin",
        "sluice-kafka-client",
    },
    # The load generator and the end-to-end tests drive the binary from outside.
    "sluice-bench": set(),
    "sluice-e2e": set(),
    # Test support (a dev-dependency of the crates whose tests use it, never of the binary):
    # storage for the shared record-batch builder it re-exports, the Kafka client for the
    # framing its raw wire client shares with the CLI.
    "sluice-testkit": {"sluice-storage", "sluice-kafka-client"},
}
# Crates that may depend on the Kafka codec outside their tests.
KAFKA_CODEC = "kafka-protocol"
KAFKA_CODEC_USERS = {
    "sluice-frontend-kafka",
    "sluice-kafka-client",
    "sluice",
    # The raw wire client of the tests encodes typed requests.
    "sluice-testkit",
}


def violations(packages):
    """`packages`: [{"name", "dependencies": [{"name", "kind"}]}] (cargo metadata shape)."""
    members = {p["name"] for p in packages}
    out = []
    for p in packages:
        name = p["name"]
        if name not in ALLOWED:
            out.append(f"{name}: not in scripts/check-layers.py's table; add it to a layer")
            continue
        for d in p["dependencies"]:
            if d.get("kind") not in (None, "normal"):
                continue
            dep = d["name"]
            if dep in members and dep not in ALLOWED[name]:
                out.append(f"{name} depends on {dep}: not allowed by the layering")
            if dep == KAFKA_CODEC and name not in KAFKA_CODEC_USERS:
                out.append(f"{name} depends on {KAFKA_CODEC}: only the Kafka door, the client and tests may")
    return out


def self_test():
    def pkg(name, *deps, kind=None):
        return {"name": name, "dependencies": [{"name": d, "kind": kind} for d in deps]}

    good = [
        pkg("sluice-common"),
        pkg("sluice-storage", "sluice-common", "libc"),
        pkg("sluice-broker", "sluice-storage", "sluice-common"),
        pkg("sluice-frontend-kafka", "sluice-broker", KAFKA_CODEC),
        pkg("sluice-admin", "sluice-broker"),
    ]
    assert violations(good) == [], violations(good)
    # A dev-dependency may skip layers.
    assert violations(good + [pkg("sluice-e2e", "sluice-storage", kind="dev")]) == []
    bad = good + [
        pkg("sluice-storage", "sluice-broker"),  # upwards
        pkg("sluice-admin", "sluice-storage"),  # skips the broker
        pkg("sluice-broker", KAFKA_CODEC),  # Kafka in the core
        pkg("sluice-newdoor"),  # unknown crate
    ]
    found = violations(bad)
    assert len(found) == 4, found
    print("check-layers self-test: ok (4 deliberate violations caught)")


def main():
    if "--self-test" in sys.argv:
        self_test()
        return 0
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    found = violations(meta["packages"])
    for v in found:
        print(f"layering violation: {v}", file=sys.stderr)
    if found:
        return 1
    print(f"check-layers: {len(meta['packages'])} crates, the graph points one way")
    return 0


if __name__ == "__main__":
    sys.exit(main())
