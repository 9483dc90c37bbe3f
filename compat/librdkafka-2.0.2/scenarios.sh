#!/usr/bin/env bash
# librdkafka 2.0.2, Debian's, through kcat 1.7.1 and rdkafka_performance (built from Debian's librdkafka source by
# scripts/compat.sh) against Sluice. This old client mis-parses some flexible-version responses that newer clients
# accept; it must work anyway.
#
# Usage: compat/librdkafka-2.0.2/scenarios.sh HOST:PORT
#   COMPAT_MODE=fast   only the basic scenarios (CI)
#   RDKAFKA_PERFORMANCE=path/to/rdkafka_performance
# Prints PASS/FAIL/SKIP lines and `librdkafka-2.0.2: N passed, N failed, N skipped`; exits 1 if a required
# scenario failed. Pending scenarios (waiting for an issue) run only in the full mode; their failure is a skip.
set -euo pipefail
BOOTSTRAP=${1:?usage: scenarios.sh HOST:PORT}
MODE=${COMPAT_MODE:-full}
PERF=${RDKAFKA_PERFORMANCE:-rdkafka_performance}
SUITE=librdkafka-2.0.2
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compat-202.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
COMMAND_TIMEOUT_S=60

passed=0 failed=0 skipped=0
topic() { echo "compat-202-$1-$RANDOM$RANDOM"; }
fail() { echo "$*" >&2; return 1; }
kcat_() { timeout -k 5 "$COMMAND_TIMEOUT_S" kcat -b "$BOOTSTRAP" "$@"; }

CHECK="python3 $(dirname "$0")/check.py"

# One kcat run reading stdin (a file argument would be one message): key and value split at ":" (-K:), an empty value sent as null (-Z), headers for the whole run (-H).
produce_records() {  # topic partition count codec [extra kcat args]
  local name=$1 partition=$2 count=$3 codec=$4; shift 4
  python3 -c '
import sys
count, codec = int(sys.argv[1]), sys.argv[2]
for index in range(count):
    value = "" if index % 7 == 0 else f"{codec}-value-{index}-" + "x" * (index % 50)
    print(f"key-{index}:{value}")
' "$count" "$codec" >"$WORK/records.txt"
  kcat_ -P -t "$name" -p "$partition" -K: -Z -z "$codec" -H "run=compat" -H "codec=$codec" "$@" <"$WORK/records.txt" \
    || fail "kcat -P failed"
}

scenario_metadata() {
  local name; name=$(topic meta)
  echo "k:v" | kcat_ -P -t "$name" -K: || fail "produce (auto-create) failed"
  kcat_ -L -J -t "$name" >"$WORK/metadata.json"
  python3 - "$WORK/metadata.json" "$name" "$BOOTSTRAP" <<'PY'
import json, sys
metadata = json.load(open(sys.argv[1]))
# One broker per bootstrap address: one, or every node of a `compat.sh --cluster N` cluster.
assert len(metadata["brokers"]) == len(sys.argv[3].split(",")), metadata["brokers"]
broker_ids = {broker["id"] for broker in metadata["brokers"]}
(topic,) = [t for t in metadata["topics"] if t["topic"] == sys.argv[2]]
assert "error" not in topic or not topic["error"], topic
assert len(topic["partitions"]) >= 1, topic
for partition in topic["partitions"]:
    assert partition["leader"] in broker_ids, partition
    assert [r["id"] for r in partition["replicas"]] == [partition["leader"]], partition
PY
}

scenario_produce_consume() {  # codec
  local codec=$1 name count=60; name=$(topic "codec-$codec")
  produce_records "$name" 0 "$count" "$codec"
  kcat_ -C -t "$name" -p 0 -o beginning -e -J -Z >"$WORK/consumed.json" || fail "kcat -C failed"
  $CHECK consumed "$count" "$codec" <"$WORK/consumed.json"
}

scenario_query_offsets_by_time() {
  local name split_ms; name=$(topic time)
  seq 1 10 | sed 's/^/early-/' | kcat_ -P -t "$name" -p 0
  sleep 0.05
  split_ms=$(($(date +%s%N) / 1000000))
  sleep 0.05
  seq 1 10 | sed 's/^/late-/' | kcat_ -P -t "$name" -p 0
  kcat_ -Q -t "$name:0:$split_ms" >"$WORK/query.txt"
  grep -q "partition 0.*offset 10" "$WORK/query.txt" || fail "ListOffsets by time: $(cat "$WORK/query.txt")"
  kcat_ -C -t "$name" -p 0 -o -3 -e -f '%o %s\n' >"$WORK/tail.txt"
  [ "$(cat "$WORK/tail.txt")" = "$(printf '17 late-8\n18 late-9\n19 late-10')" ] || fail "tail read: $(cat "$WORK/tail.txt")"
}

scenario_idempotent() {
  local name; name=$(topic idempotent)
  seq 1 500 | kcat_ -P -t "$name" -p 0 -z lz4 -X enable.idempotence=true || fail "idempotent produce failed"
  kcat_ -C -t "$name" -p 0 -o beginning -e -f '%s\n' >"$WORK/idempotent.txt"
  cmp -s "$WORK/idempotent.txt" <(seq 1 500) || fail "read back $(wc -l <"$WORK/idempotent.txt") lines, not 1..500"
}

scenario_rdkafka_performance() {  # codec
  local codec=$1 name count=20000; name=$(topic "perf-$codec")
  timeout -k 5 120 "$PERF" -P -t "$name" -p 0 -b "$BOOTSTRAP" -s 200 -c "$count" -z "$codec" \
    -X acks=all -X linger.ms=5 -u >"$WORK/perf-produce.txt" 2>&1 || { tail -5 "$WORK/perf-produce.txt"; fail "producer failed"; }
  $CHECK performance "$WORK/perf-produce.txt" "$count" dr dr_err tx_err
  timeout -k 5 120 "$PERF" -C -t "$name" -p 0 -b "$BOOTSTRAP" -o beginning -c "$count" -e -u \
    >"$WORK/perf-consume.txt" 2>&1 || { tail -5 "$WORK/perf-consume.txt"; fail "consumer failed"; }
  $CHECK performance "$WORK/perf-consume.txt" "$count" msgs rx_err
}

scenario_consumer_group() {
  local name group; name=$(topic group); group=$(topic group-id)
  seq 1 100 | kcat_ -P -t "$name" -p 0
  # -G: a balanced consumer in group $group; it stops at the end of the partition (-e) and commits on close.
  timeout -k 5 40 kcat -b "$BOOTSTRAP" -G "$group" -o beginning -e -f '%s\n' "$name" >"$WORK/group.txt" 2>"$WORK/group.err" \
    || fail "kcat -G failed: $(tail -2 "$WORK/group.err")"
  [ "$(wc -l <"$WORK/group.txt")" = 100 ] || fail "the group member read $(wc -l <"$WORK/group.txt") of 100"
}

run() {  # name basic|- pending-marker|- command...
  local name=$1 basic=$2 pending=$3; shift 3
  if [ "$MODE" = fast ] && [ "$basic" != basic ]; then return 0; fi
  local started=$SECONDS
  if ("$@") >"$WORK/scenario.log" 2>&1; then
    passed=$((passed + 1))
    local note=
    [ "$pending" != - ] && note=" (marked pending $pending but passes: delete the marker)"
    echo "PASS $SUITE $name ($((SECONDS - started)) s)$note"
  elif [ "$pending" != - ]; then
    skipped=$((skipped + 1))
    echo "SKIP $SUITE $name: pending $pending ($(tail -1 "$WORK/scenario.log"))"
  else
    failed=$((failed + 1))
    echo "FAIL $SUITE $name ($((SECONDS - started)) s):"
    sed 's/^/    /' "$WORK/scenario.log" | tail -20
  fi
}

echo "kcat $( (kcat -V 2>&1 || true) | grep -m1 -o 'Version [0-9.]*' | cut -d' ' -f2) on $( (kcat -V 2>&1 || true) | grep -m1 -o 'librdkafka [0-9.]*');" \
  "rdkafka_performance on $( ("$PERF" -h 2>&1 || true) | grep -m1 -o 'librdkafka version [0-9.]*')"
run metadata basic - scenario_metadata
for codec in none gzip snappy lz4 zstd; do
  basic=-; [ "$codec" = none ] || [ "$codec" = snappy ] && basic=basic
  run "produce-consume-$codec" "$basic" - scenario_produce_consume "$codec"
done
run query-offsets-by-time - - scenario_query_offsets_by_time
run idempotent-producer - - scenario_idempotent
run rdkafka_performance-lz4 basic - scenario_rdkafka_performance lz4
run rdkafka_performance-zstd - - scenario_rdkafka_performance zstd
run consumer-group - - scenario_consumer_group
echo "$SUITE: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
