#!/usr/bin/env bash
# A cluster of local brokers on one machine, for trying cluster mode by hand (issue 15).
#
#   scripts/cluster.sh start [N] [--fresh]   start N brokers (default 3) of one cluster; --fresh wipes their
#                                            files (node*/, node*.toml, node*.log) in the base directory first
#   scripts/cluster.sh stop                  SIGTERM the recorded brokers, SIGKILL any left after 30 s
#   scripts/cluster.sh status                which recorded brokers are alive
#
# Node i (1..N) gets node.id = i, its own nodeI.toml, data in nodeI/data and output in nodeI.log, all under
# CLUSTER_DIR (default ./cluster-data). The first three nodes are the metadata quorum's voters, each with a quorum
# port of its own; nodes past the third are broker-only (learners of the metadata log).
#
# Environment: SLUICE_BIN (default target/release/sluice, built if missing), CLUSTER_DIR, CLUSTER_BASE_PORT (node i
# gets Kafka port BASE+2(i-1) and quorum port BASE+2(i-1)+1; default: free ports picked on 127.0.0.1),
# CLUSTER_SHARDS (shards per broker, default 1), CLUSTER_EXTRA_CONFIG (a file of TOML lines appended to every node's
# file, e.g. `"num.partitions" = 4`; scripts/compat.sh --cluster passes its broker settings this way).
#
# The PIDs of the brokers started are recorded in CLUSTER_DIR/pids; stop and status act on those PIDs only, and
# only while each still runs its own --config file (a PID reused by another process is left alone).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-./cluster-data}
VOTER_COUNT_MAX=3
WAIT_SECONDS=30

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '4,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The base directory as an absolute path (created if needed), so the node files name their data dirs absolutely.
cluster_dir() {
    mkdir -p "$CLUSTER_DIR"
    (cd "$CLUSTER_DIR" && pwd)
}

# Whether PID still runs the broker of node I of this cluster: alive and not a zombie, and (where /proc shows it)
# either this script's own child (it may not have reached exec yet) or a process with that node's config file on
# its command line, so that a PID since reused by another process is never signalled.
node_alive() {
    local index=$1 pid=$2 dir=$3 stat rest state ppid
    kill -0 "$pid" 2>/dev/null || return 1
    [ -r "/proc/$pid/stat" ] || return 0
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    state=${rest%% *}
    rest=${rest#* }
    ppid=${rest%% *}
    [ "$state" != Z ] || return 1
    [ "$ppid" != "$$" ] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config $dir/node$index.toml "
}

# N free TCP ports on 127.0.0.1, one a line: all bound at once so they differ, then released for the brokers.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
sockets = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
for s in sockets:
    print(s.getsockname()[1])
EOF
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# SIGTERM each recorded broker still alive, wait up to WAIT_SECONDS for all to exit, SIGKILL the rest.
stop_pids() {
    local dir=$1 pid_file=$1/pids
    local index pid alive
    [ -f "$pid_file" ] || return 0
    while read -r index pid; do
        if node_alive "$index" "$pid" "$dir"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done <"$pid_file"
    local deadline=$((SECONDS + WAIT_SECONDS))
    while :; do
        alive=0
        while read -r index pid; do
            if node_alive "$index" "$pid" "$dir"; then alive=1; fi
        done <"$pid_file"
        [ "$alive" = 0 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            while read -r index pid; do
                if node_alive "$index" "$pid" "$dir"; then
                    echo "node $index  pid $pid did not stop within ${WAIT_SECONDS}s: SIGKILL" >&2
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            done <"$pid_file"
            break
        fi
        sleep 0.2
    done
    rm -f "$pid_file"
}

# Node I exited while the cluster started: show why, stop the others, fail.
start_failed() {
    local index=$1 dir=$2
    echo "cluster.sh: node $index exited during start; the end of $dir/node$index.log:" >&2
    tail -n 5 "$dir/node$index.log" >&2
    stop_pids "$dir"
    exit 1
}

start() {
    local count=3 fresh=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --fresh) fresh=1 ;;
            '' | *[!0-9]*) usage ;;
            *) count=$1 ;;
        esac
        shift
    done
    [ "$count" -ge 1 ] || die "start needs at least 1 node, not $count"
    local extra_config=${CLUSTER_EXTRA_CONFIG:-}
    [ -z "$extra_config" ] || [ -r "$extra_config" ] || die "CLUSTER_EXTRA_CONFIG=$extra_config is not a readable file"
    local dir
    dir=$(cluster_dir)
    local pid_file=$dir/pids
    if [ -f "$pid_file" ]; then
        local index pid
        while read -r index pid; do
            if node_alive "$index" "$pid" "$dir"; then
                die "node $index (pid $pid) of $dir is running; run 'scripts/cluster.sh stop' first"
            fi
        done <"$pid_file"
        rm -f "$pid_file"
    fi
    if [ "$fresh" = 1 ]; then
        # Only what this script writes, so a CLUSTER_DIR pointed at the wrong place loses nothing else.
        rm -rf "$dir"/node[0-9]* "$dir"/pids
    fi

    local bin=${SLUICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
    if [ ! -x "$bin" ]; then
        [ -z "${SLUICE_BIN:-}" ] || die "SLUICE_BIN=$SLUICE_BIN is not an executable file"
        echo "building $bin" >&2
        (cd "$ROOT" && cargo build --release -p sluice-broker)
    fi

    local voter_count=$((count < VOTER_COUNT_MAX ? count : VOTER_COUNT_MAX))
    local -a kafka_ports quorum_ports
    local i port
    if [ -n "${CLUSTER_BASE_PORT:-}" ]; then
        for ((i = 1; i <= count; i++)); do
            kafka_ports[i]=$((CLUSTER_BASE_PORT + 2 * (i - 1)))
            quorum_ports[i]=$((CLUSTER_BASE_PORT + 2 * (i - 1) + 1))
        done
    else
        local -a ports
        mapfile -t ports < <(free_ports $((count + voter_count)))
        for ((i = 1; i <= count; i++)); do
            kafka_ports[i]=${ports[i - 1]}
        done
        for ((i = 1; i <= voter_count; i++)); do
            quorum_ports[i]=${ports[count + i - 1]}
        done
    fi

    # Another process listening on a port would answer for a broker that failed to bind it.
    for ((i = 1; i <= count; i++)); do
        for port in "${kafka_ports[i]}" "${quorum_ports[i]:-}"; do
            if [ -n "$port" ] && port_open "$port"; then
                die "port 127.0.0.1:$port (node $i) is already in use"
            fi
        done
    done

    local voters=""
    for ((i = 1; i <= voter_count; i++)); do
        voters+="${voters:+,}$i@127.0.0.1:${quorum_ports[i]}"
    done

    local -a pids
    : >"$pid_file"
    for ((i = 1; i <= count; i++)); do
        mkdir -p "$dir/node$i/data"
        cat >"$dir/node$i.toml" <<EOF
# Written by scripts/cluster.sh: node $i of a $count-node cluster.
"node.id" = $i
listeners = "PLAINTEXT://127.0.0.1:${kafka_ports[i]}"
"advertised.listeners" = "PLAINTEXT://127.0.0.1:${kafka_ports[i]}"
"log.dirs" = "$dir/node$i/data"
"controller.quorum.voters" = "$voters"
shards = ${CLUSTER_SHARDS:-1}
EOF
        if [ -n "$extra_config" ]; then
            { echo "# From CLUSTER_EXTRA_CONFIG ($extra_config):"; cat "$extra_config"; } >>"$dir/node$i.toml"
        fi
        nohup "$bin" start --config "$dir/node$i.toml" >"$dir/node$i.log" 2>&1 &
        pids[i]=$!
        echo "$i ${pids[i]}" >>"$pid_file"
    done

    # Every Kafka port accepts a connection, within WAIT_SECONDS in all; a broker that exits or a timeout stops
    # the whole cluster again, so a failed start leaves nothing running.
    local deadline=$((SECONDS + WAIT_SECONDS))
    for ((i = 1; i <= count; i++)); do
        until port_open "${kafka_ports[i]}" && node_alive "$i" "${pids[i]}" "$dir"; do
            node_alive "$i" "${pids[i]}" "$dir" || start_failed "$i" "$dir"
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "cluster.sh: node $i not listening on 127.0.0.1:${kafka_ports[i]} after ${WAIT_SECONDS}s" >&2
                stop_pids "$dir"
                exit 1
            fi
            sleep 0.1
        done
    done

    for ((i = 1; i <= count; i++)); do
        node_alive "$i" "${pids[i]}" "$dir" || start_failed "$i" "$dir"
    done

    local bootstrap="" quorum
    for ((i = 1; i <= count; i++)); do
        if [ "$i" -le "$voter_count" ]; then
            quorum="127.0.0.1:${quorum_ports[i]}"
        else
            quorum="- (broker only)"
        fi
        echo "node $i  kafka 127.0.0.1:${kafka_ports[i]}  quorum $quorum  pid ${pids[i]}  log $dir/node$i.log"
        bootstrap+="${bootstrap:+,}127.0.0.1:${kafka_ports[i]}"
    done
    echo "bootstrap: $bootstrap"
}

stop() {
    local dir
    dir=$(cluster_dir)
    if [ ! -f "$dir/pids" ]; then
        echo "no brokers recorded in $dir/pids"
        return 0
    fi
    stop_pids "$dir"
    echo "stopped the brokers recorded in $dir"
}

status() {
    local dir
    dir=$(cluster_dir)
    [ -f "$dir/pids" ] || die "no brokers recorded in $dir/pids"
    local index pid all_alive=0
    while read -r index pid; do
        if node_alive "$index" "$pid" "$dir"; then
            echo "node $index  pid $pid  running"
        else
            echo "node $index  pid $pid  not running"
            all_alive=1
        fi
    done <"$dir/pids"
    return "$all_alive"
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
    start) start "$@" ;;
    stop) [ $# -eq 0 ] || usage; stop ;;
    status) [ $# -eq 0 ] || usage; status ;;
    *) usage ;;
esac
