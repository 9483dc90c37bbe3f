#!/usr/bin/env bash
# Other people's clients and other people's tests against Sluice (issue 5).
#
# Usage: scripts/compat.sh [--fast | --full] [--cluster N] [SUITE ...]
#   --fast       (CI) each client's basic scenarios and librdkafka's smoke set
#   --full       every scenario (pending ones included, reported as skipped while they fail) and librdkafka's whole
#                quick broker suite; its result goes in docs/compatibility.md
#   --cluster N  each suite against a fresh N-node cluster (scripts/cluster.sh, issue 15) instead of one broker
#   SUITE        any of: librdkafka librdkafka-2.0.2 confluent-kafka kafka-python aiokafka kafkajs (default: all)
#
# Each suite gets a fresh broker ($SLUICE_BIN, default target/release/sluice) on a free loopback port with a
# temporary data directory, stopped with SIGTERM afterwards (it must exit 0). Each suite prints
# `SUITE: N passed, N failed, N skipped`; the run exits non-zero if any failure is not on compat/known-failures.txt
# (scenario scripts mark features not built yet as pending in the script itself). The kafka-python suite includes
# old clients: `old-protocol-0.10.1-*` and `old-protocol-0.9-*` pin kafka-python's `api_version`, so it skips
# ApiVersions and speaks Produce v1–2, Fetch v1–3 and message formats v0/v1 (Kafka 3.9's oldest versions, issue 14).
# Heavy artefacts (librdkafka
# builds, npm packages) are cached under target/compat/; logs go to target/compat/logs/.
#
# With --cluster N each suite gets a fresh cluster instead: scripts/cluster.sh starts N nodes (CLUSTER_DIR
# target/compat/logs/<run>/SUITE.cluster, free loopback ports, the same --shards 2 and broker settings as a single
# broker, through CLUSTER_EXTRA_CONFIG), compat/cluster_ready.py waits until every node lists all N brokers and a
# controller, the suite's bootstrap is the list of all N, and scripts/cluster.sh stop ends it (every node must log
# "sluice stopped"; node logs are kept, data directories removed after a clean stop). Failures are looked up in
# compat/known-failures-cluster.txt (failures of cluster mode only), then in compat/known-failures.txt.
#
# Every dependency is at a fixed version: the Node packages in compat/node/package-lock.json (installed with npm ci),
# the Debian and Python ones by scripts/install-test-deps.sh (broker/tests/clients/requirements.txt). Everything
# comes through the machine's own npm and apt configuration; nothing here names a host.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

MODE=fast
SUITES=()
CLUSTER_SIZE=
usage() {
  echo "usage: scripts/compat.sh [--fast|--full] [--cluster N] [librdkafka|librdkafka-2.0.2|confluent-kafka|kafka-python|aiokafka|kafkajs ...]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --fast) MODE=fast ;;
    --full) MODE=full ;;
    --cluster) [ $# -ge 2 ] || usage; CLUSTER_SIZE=$2; shift ;;
    --cluster=*) CLUSTER_SIZE=${1#--cluster=} ;;
    librdkafka|librdkafka-2.0.2|confluent-kafka|kafka-python|aiokafka|kafkajs) SUITES+=("$1") ;;
    *) usage ;;
  esac
  shift
done
case "$CLUSTER_SIZE" in '') ;; *[!0-9]*|0*) usage ;; esac
# On a cluster librdkafka's suite creates its topics with this replication factor (issue 16: RF=3 on 3 nodes).
if [ -n "$CLUSTER_SIZE" ]; then
  export TEST_REPLICATION_FACTOR=${TEST_REPLICATION_FACTOR:-$(( CLUSTER_SIZE < 3 ? CLUSTER_SIZE : 3 ))}
fi
[ ${#SUITES[@]} -gt 0 ] || SUITES=(librdkafka librdkafka-2.0.2 confluent-kafka kafka-python aiokafka kafkajs)

SLUICE_BIN=${SLUICE_BIN:-$REPO/target/release/sluice}
case "$SLUICE_BIN" in /*) ;; *) SLUICE_BIN=$REPO/$SLUICE_BIN ;; esac
CACHE=$REPO/target/compat
RUN_ID=$(date +%Y%m%d-%H%M%S)
LOGS=$CACHE/logs/$RUN_ID
mkdir -p "$LOGS"
# The Kafka version Sluice claims: its highest Produce (10+), Fetch (16) and DescribeCluster (1) versions arrived in
# Kafka 3.7 (KIP-951, KIP-919). librdkafka's suite skips tests whose minimum broker version is above this.
KAFKA_VERSION_CLAIMED=3.7.0
# librdkafka's source and test suite come from the deps/librdkafka of @confluentinc/kafka-javascript 1.10.1, pinned
# in compat/node/package-lock.json.
LIBRDKAFKA_VERSION=2.15.1
LIBRDKAFKA_DIR=$CACHE/librdkafka-$LIBRDKAFKA_VERSION
# Debian's librdkafka source for rdkafka_performance: the version of the librdkafka1 that install-test-deps.sh pins.
DEBIAN_LIBRDKAFKA_SOURCE=librdkafka=2.0.2-1
NODE_DIR=$CACHE/node
LIBRDKAFKA_SMOKE="0000 0001 0004 0012 0017 0022 0030 0039 0049 0087 0103"
# The broker settings every suite runs with, a single broker or each node of a cluster. librdkafka's tests expect
# what its reference clusters (trivup) run with: auto-created topics with 4 partitions.
BROKER_CONFIG='num.partitions = 4'
# A cluster run reads compat/known-failures-cluster.txt first, so that its reason wins for a test on both lists.
KNOWN_FAILURES=(compat/known-failures.txt)
[ -z "$CLUSTER_SIZE" ] || KNOWN_FAILURES=(compat/known-failures-cluster.txt compat/known-failures.txt)

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }
die() { echo "compat: $*" >&2; exit 1; }

[ -x "$SLUICE_BIN" ] || die "$SLUICE_BIN is missing: run cargo build --release -p sluice-broker, or set SLUICE_BIN"

# --- Artefacts, built once and cached under target/compat/ -----------------------------------------------------

# compat/node's packages, exactly as its package-lock.json says, in target/compat/node (npm ci, no install scripts:
# compat/node/.npmrc). Reinstalled when package.json, the lock file or .npmrc changes.
prepare_node() {
  if [ -d "$NODE_DIR/node_modules" ] && cmp -s compat/node/package.json "$NODE_DIR/package.json" \
     && cmp -s compat/node/package-lock.json "$NODE_DIR/package-lock.json" && cmp -s compat/node/.npmrc "$NODE_DIR/.npmrc"; then
    return 0
  fi
  step "npm ci (compat/node: KafkaJS and its codecs, librdkafka's source; once)"
  rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
  cp compat/node/package.json compat/node/package-lock.json compat/node/.npmrc "$NODE_DIR/" || die "cannot copy compat/node"
  (cd "$NODE_DIR" && timeout 300 npm ci --ignore-scripts --no-audit --no-fund >"$NODE_DIR/npm.log" 2>&1) \
    || { cat "$NODE_DIR/npm.log"; rm -rf "$NODE_DIR/node_modules"; die "npm ci in $NODE_DIR failed"; }
}

prepare_librdkafka() {
  [ -f "$LIBRDKAFKA_DIR/.built" ] && return 0
  prepare_node
  step "building librdkafka $LIBRDKAFKA_VERSION and its test suite (~100 s, once; log $CACHE/librdkafka-build.log)"
  rm -rf "$LIBRDKAFKA_DIR"
  cp -a "$NODE_DIR/node_modules/@confluentinc/kafka-javascript/deps/librdkafka" "$LIBRDKAFKA_DIR" \
    || die "@confluentinc/kafka-javascript (compat/node) holds no deps/librdkafka"
  grep -q "RD_KAFKA_VERSION  *0x020f01ff" "$LIBRDKAFKA_DIR/src/rdkafka.h" \
    || die "the npm package did not hold librdkafka $LIBRDKAFKA_VERSION"
  (cd "$LIBRDKAFKA_DIR" && timeout 300 ./configure && timeout 1200 make -j2 libs \
     && timeout 1200 make -C tests -j2 build) >"$CACHE/librdkafka-build.log" 2>&1 \
    || { tail -30 "$CACHE/librdkafka-build.log"; die "librdkafka build failed"; }
  grep -q "BUILT_WITH.*ZSTD" "$CACHE/librdkafka-build.log" \
    || die "librdkafka was configured without zstd: install libzstd-dev (scripts/install-test-deps.sh)"
  touch "$LIBRDKAFKA_DIR/.built"
}

# rdkafka_performance from Debian's librdkafka 2.0.2 source, linked against the system's librdkafka 2.0.2 (kcat's).
prepare_rdkafka_performance() {
  [ -x "$CACHE/debian-2.0.2/rdkafka_performance" ] && return 0
  step "building rdkafka_performance from Debian's librdkafka source (once)"
  local source_dir=$CACHE/debian-2.0.2
  rm -rf "$source_dir" && mkdir -p "$source_dir"
  (cd "$source_dir" && timeout 300 apt-get source --download-only "$DEBIAN_LIBRDKAFKA_SOURCE" >"$source_dir/apt.log" 2>&1) \
    || { cat "$source_dir/apt.log"; die "apt-get source $DEBIAN_LIBRDKAFKA_SOURCE failed (are the deb-src entries there? scripts/install-test-deps.sh)"; }
  tar -xzf "$source_dir"/librdkafka_*.orig.tar.gz -C "$source_dir"
  local tree
  tree=$(echo "$source_dir"/librdkafka-*/)
  (cd "$tree" && timeout 300 ./configure >"$source_dir/configure.log" 2>&1) \
    || { tail -20 "$source_dir/configure.log"; die "configure of Debian's librdkafka failed"; }
  timeout 300 gcc -O2 -I"$tree" -I"$tree/src" -o "$source_dir/rdkafka_performance.tmp" \
    "$tree/examples/rdkafka_performance.c" -l:librdkafka.so.1 -lpthread -lm -lz \
    || die "rdkafka_performance did not compile"
  mv "$source_dir/rdkafka_performance.tmp" "$source_dir/rdkafka_performance"
}

# --- The broker ---------------------------------------------------------------------------------------------

BROKER_PID=
BROKER_PORT=
BOOTSTRAP=
CLUSTER_RUNNING=
stop_broker_on_exit() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then kill -9 "$BROKER_PID" 2>/dev/null || true; fi
  if [ -n "$CLUSTER_RUNNING" ]; then CLUSTER_DIR=$CLUSTER_RUNNING scripts/cluster.sh stop >/dev/null 2>&1 || true; fi
}
trap stop_broker_on_exit EXIT

start_broker() {  # $1: suite name
  local suite=$1 directory
  directory=$(mktemp -d "${TMPDIR:-/tmp}/sluice-compat-$suite.XXXXXX")
  BROKER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "$BROKER_CONFIG" >"$directory/sluice.toml"
  "$SLUICE_BIN" --config "$directory/sluice.toml" --listen "127.0.0.1:$BROKER_PORT" --data-dir "$directory/data" \
    --shards 2 >"$LOGS/$suite.broker.log" 2>&1 &
  BROKER_PID=$!
  BROKER_DIR=$directory
  BOOTSTRAP=127.0.0.1:$BROKER_PORT
  # It listens within 0.2 s on an idle machine; 60 s leaves room for a machine busy with other builds.
  local deadline=$((SECONDS + 60))
  until (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null; do
    kill -0 "$BROKER_PID" 2>/dev/null || { tail -20 "$LOGS/$suite.broker.log"; die "the broker exited during start-up"; }
    if [ $SECONDS -ge $deadline ]; then
      echo "the broker did not listen on port $BROKER_PORT within 60 s; its threads (name, state, wait channel):"
      local task
      for task in /proc/"$BROKER_PID"/task/*; do
        printf '    %s %s %s\n' "$(cat "$task/comm" 2>/dev/null)" "$(awk '{print $3}' "$task/stat" 2>/dev/null)" \
          "$(cat "$task/wchan" 2>/dev/null)"
      done
      tail -20 "$LOGS/$suite.broker.log"
      kill -9 "$BROKER_PID"
      die "the broker did not listen within 60 s (data directory kept: $directory)"
    fi
    sleep 0.1
  done
}

stop_broker() {  # returns non-zero if the broker died or did not exit 0 on SIGTERM
  local suite=$1 code=0
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "FAIL $suite: the broker died during the suite; log tail:"; tail -20 "$LOGS/$suite.broker.log"
    BROKER_PID=; return 1
  fi
  kill -TERM "$BROKER_PID"
  local deadline=$((SECONDS + 30))
  while kill -0 "$BROKER_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    echo "FAIL $suite: the broker did not stop within 30 s of SIGTERM; its threads (name, state, wait channel):"
    local task
    for task in /proc/"$BROKER_PID"/task/*; do
      printf '    %s %s %s\n' "$(cat "$task/comm" 2>/dev/null)" "$(awk '{print $3}' "$task/stat" 2>/dev/null)" \
        "$(cat "$task/wchan" 2>/dev/null)"
    done
    if command -v gdb >/dev/null; then
      timeout -k 5 60 gdb -batch -p "$BROKER_PID" -ex "thread apply all bt 20" \
        >"$LOGS/$suite.broker-hang-backtraces.txt" 2>&1 || true
      echo "    backtraces of every thread: $LOGS/$suite.broker-hang-backtraces.txt"
    fi
    kill -9 "$BROKER_PID"; code=1
  fi
  wait "$BROKER_PID" || code=$?
  [ "$code" = 0 ] || { echo "FAIL $suite: the broker exited $code after SIGTERM"; tail -20 "$LOGS/$suite.broker.log"; }
  BROKER_PID=
  if [ "$code" = 0 ]; then rm -rf "$BROKER_DIR"; else echo "    its data directory is kept: $BROKER_DIR"; fi
  return "$code"
}

# --- The cluster (--cluster N) -----------------------------------------------------------------------------

start_cluster() {  # $1: suite name; sets BOOTSTRAP
  local directory=$LOGS/$1.cluster
  mkdir -p "$directory"
  printf '%s\n' "$BROKER_CONFIG" >"$directory/extra.toml"
  CLUSTER_RUNNING=$directory
  CLUSTER_DIR=$directory CLUSTER_SHARDS=2 CLUSTER_EXTRA_CONFIG=$directory/extra.toml SLUICE_BIN=$SLUICE_BIN \
    scripts/cluster.sh start "$CLUSTER_SIZE" --fresh >"$directory/start.log" 2>&1 \
    || { cat "$directory/start.log"; CLUSTER_RUNNING=; die "scripts/cluster.sh start $CLUSTER_SIZE failed"; }
  cat "$directory/start.log"
  BOOTSTRAP=$(sed -n 's/^bootstrap: //p' "$directory/start.log")
  [ -n "$BOOTSTRAP" ] || die "scripts/cluster.sh printed no bootstrap line"
  python3 compat/cluster_ready.py "$BOOTSTRAP" "$CLUSTER_SIZE" 60 \
    || { CLUSTER_DIR=$directory scripts/cluster.sh stop; CLUSTER_RUNNING=; die "the cluster did not come up (logs: $directory)"; }
}

stop_cluster() {  # returns non-zero if a node died during the suite or did not stop cleanly on SIGTERM
  local suite=$1 directory=$LOGS/$1.cluster code=0 log
  if ! CLUSTER_DIR=$directory scripts/cluster.sh status; then
    echo "FAIL $suite: a node of the cluster died during the suite"; code=1
  fi
  CLUSTER_DIR=$directory scripts/cluster.sh stop 2>&1 | tee "$directory/stop.log"
  CLUSTER_RUNNING=
  grep -q SIGKILL "$directory/stop.log" && { echo "FAIL $suite: a node did not stop within 30 s of SIGTERM"; code=1; }
  # The nodes are not this shell's children (cluster.sh starts them with nohup), so their exit status is not to be
  # had; a node that drained and closed every log logs "sluice stopped" last.
  for log in "$directory"/node[0-9]*.log; do
    if ! tail -n 1 "$log" | grep -q "sluice stopped"; then
      echo "FAIL $suite: $(basename "$log" .log) did not stop cleanly; log tail:"; tail -n 20 "$log"; code=1
    fi
    if grep -q "panicked" "$log"; then echo "FAIL $suite: $(basename "$log" .log) panicked:"; grep -m 3 -A 3 panicked "$log"; code=1; fi
    # A controlled shutdown the controller refused still ends in a clean stop; worth seeing, not a failure.
    grep "WARN .*shutdown: " "$log" | sed "s|^|NOTE $suite: $(basename "$log" .log): |" || true
  done
  if [ "$code" = 0 ]; then rm -rf "$directory"/node[0-9]*/; else echo "    its data directories are kept: $directory"; fi
  return "$code"
}

# --- Suites -------------------------------------------------------------------------------------------------

run_librdkafka() {
  local tests parallel=3 budget=900 known_arguments=() file
  if [ "$MODE" = fast ]; then tests=$LIBRDKAFKA_SMOKE; else tests=; budget=5400; fi
  for file in "${KNOWN_FAILURES[@]}"; do known_arguments+=(--known-failures "$file"); done
  printf 'metadata.broker.list=%s\n' "$BOOTSTRAP" >"$LOGS/librdkafka.test.conf"
  timeout -k 30 "$budget" python3 compat/librdkafka/run_suite.py --suite librdkafka \
    --tests-dir "$LIBRDKAFKA_DIR/tests" --test-conf "$LOGS/librdkafka.test.conf" \
    --kafka-version "$KAFKA_VERSION_CLAIMED" --work-dir "$LOGS/librdkafka" \
    "${known_arguments[@]}" --tests "$tests" --parallel "$parallel" --test-timeout 400
}

run_librdkafka_202() {
  COMPAT_MODE=$MODE RDKAFKA_PERFORMANCE=$CACHE/debian-2.0.2/rdkafka_performance \
    timeout -k 10 600 compat/librdkafka-2.0.2/scenarios.sh "$BOOTSTRAP"
}

run_python() {  # $1: suite, $2: script
  local fast_flag=
  [ "$MODE" = fast ] && fast_flag=--fast
  timeout -k 10 900 python3 "compat/scenarios/python/$2" --bootstrap "$BOOTSTRAP" $fast_flag
}

run_kafkajs() {
  local fast_flag=
  [ "$MODE" = fast ] && fast_flag=--fast
  NODE_PATH=$NODE_DIR/node_modules timeout -k 10 900 node compat/scenarios/kafkajs/scenarios.js \
    --bootstrap "$BOOTSTRAP" $fast_flag
}

SUMMARY=()
FAILED_SUITES=()
run_suite() {  # $1: suite name, rest: command
  local suite=$1; shift
  local code=0
  if [ -n "$CLUSTER_SIZE" ]; then
    step "$suite ($MODE, $CLUSTER_SIZE-node cluster)"
    start_cluster "$suite"
    "$@" 2>&1 | tee "$LOGS/$suite.log" || code=$?
    stop_cluster "$suite" > >(tee -a "$LOGS/$suite.log") 2>&1 || code=1
  else
    step "$suite ($MODE)"
    start_broker "$suite"
    "$@" 2>&1 | tee "$LOGS/$suite.log" || code=$?
    # Not in a pipeline: stop_broker must run in this shell to wait for its child and clear BROKER_PID.
    stop_broker "$suite" > >(tee -a "$LOGS/$suite.log") 2>&1 || code=1
  fi
  local line
  line=$(grep -E "^$suite: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$" "$LOGS/$suite.log" | tail -1 || true)
  [ -n "$line" ] || { line="$suite: no result line (see $LOGS/$suite.log)"; code=1; }
  SUMMARY+=("$line")
  [ "$code" = 0 ] || FAILED_SUITES+=("$suite")
}

if [ -n "$CLUSTER_SIZE" ]; then
  step "compat $MODE run $RUN_ID: $CLUSTER_SIZE-node clusters of $SLUICE_BIN, Kafka version claimed $KAFKA_VERSION_CLAIMED, logs $LOGS"
else
  step "compat $MODE run $RUN_ID: broker $SLUICE_BIN, Kafka version claimed $KAFKA_VERSION_CLAIMED, logs $LOGS"
fi
echo "broker: $("$SLUICE_BIN" --version) built $(date -u -r "$SLUICE_BIN" +%Y-%m-%dT%H:%M:%SZ); repository at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for suite in "${SUITES[@]}"; do
  case "$suite" in
    librdkafka) prepare_librdkafka && run_suite librdkafka run_librdkafka ;;
    librdkafka-2.0.2) prepare_rdkafka_performance && run_suite librdkafka-2.0.2 run_librdkafka_202 ;;
    confluent-kafka) run_suite confluent-kafka run_python confluent-kafka confluent_scenarios.py ;;
    kafka-python) run_suite kafka-python run_python kafka-python kafka_python_scenarios.py ;;
    aiokafka) run_suite aiokafka run_python aiokafka aiokafka_scenarios.py ;;
    kafkajs) prepare_node && run_suite kafkajs run_kafkajs ;;
  esac
done

step "compat $MODE summary"
printf '%s\n' "${SUMMARY[@]}"
if [ ${#FAILED_SUITES[@]} -gt 0 ]; then
  echo "compat: failures not on ${KNOWN_FAILURES[*]} in: ${FAILED_SUITES[*]} (logs: $LOGS)"
  exit 1
fi
echo "compat: every failure is a known one (${KNOWN_FAILURES[*]}) or a pending scenario"
