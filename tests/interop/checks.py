"""Tiny check recorder shared by the Python interop scripts: each check prints its outcome,
and the script ends with "N passed, N failed" and a matching exit code."""
import sys
import traceback

passed = 0
failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok   {name}", flush=True)
    except Exception:  # noqa: BLE001 - report every failure, keep going
        failed += 1
        print(f"FAIL {name}", flush=True)
        traceback.print_exc()


def finish():
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed or not passed else 0)


def assert_per_key_order(records, count, keys):
    """records: list of (key, value) with value 'key|seq'. Each key's seqs must be 0..n."""
    assert len(records) == count, f"got {len(records)} records, want {count}"
    per_key = {}
    for key, value in records:
        k, seq = value.split("|")
        assert k == key, f"value {value!r} under key {key!r}"
        per_key.setdefault(key, []).append(int(seq))
    assert len(per_key) == keys, f"{len(per_key)} keys"
    for key, seqs in per_key.items():
        assert seqs == list(range(len(seqs))), f"order broken for {key}: {seqs[:10]}..."
