#!/usr/bin/env bash
# kcat (Debian's, on librdkafka 2.0.2 — old enough to trip on tagged fields) against sluice.
set -uo pipefail
B=$BOOTSTRAP
passed=0; failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

if kcat -b "$B" -L -J -m 10 >/tmp/kcat-md.$$ 2>&1 && grep -q '"brokers"' /tmp/kcat-md.$$; then ok "metadata"; else bad "metadata" "$(cat /tmp/kcat-md.$$)"; fi

# Produce 1000 keyed lines (auto-creates the topic), with snappy.
seq 0 999 | awk '{print "k" ($1 % 10) ":" $1}' | kcat -b "$B" -P -t kcat-t -K: -z snappy -m 30 2>/tmp/kcat-p.$$
if [ $? -eq 0 ]; then ok "produce 1000 keyed (snappy, auto-create)"; else bad "produce" "$(cat /tmp/kcat-p.$$)"; fi

out=$(kcat -b "$B" -C -t kcat-t -o beginning -e -q -f '%k:%s\n' -m 30 2>/tmp/kcat-c.$$)
n=$(printf '%s\n' "$out" | grep -c . || true)
if [ "$n" = 1000 ]; then ok "consume all from beginning"; else bad "consume" "got $n lines: $(head -c 300 /tmp/kcat-c.$$)"; fi
sorted=$(printf '%s\n' "$out" | cut -d: -f2 | sort -n | uniq | wc -l)
if [ "$sorted" = 1000 ]; then ok "every value exactly once"; else bad "exactly once" "distinct=$sorted"; fi
inorder=$(printf '%s\n' "$out" | awk -F: '{ if ($2 < last[$1]) bad=1; last[$1]=$2 } END { print bad ? "no" : "yes" }')
if [ "$inorder" = yes ]; then ok "per-key order"; else bad "per-key order" "out of order"; fi

n=$(kcat -b "$B" -C -t kcat-t -p 0 -o -5 -e -q -m 30 2>/dev/null | grep -c . || true)
if [ "$n" = 5 ]; then ok "consume from relative offset (last 5)"; else bad "relative offset" "got $n, want 5"; fi

# Balanced consumer group.
n=$(timeout 60 kcat -b "$B" -G kcat-group kcat-t -o beginning -e -q -m 30 2>/dev/null | grep -c . || true)
if [ "$n" = 1000 ]; then ok "consumer group reads all"; else bad "consumer group" "got $n"; fi

rm -f /tmp/kcat-*.$$
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
