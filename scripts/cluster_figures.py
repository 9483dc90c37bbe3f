#!/usr/bin/env python3
"""Figures of issue 15 (the cluster), measured on real processes on loopback; not a test (nothing here passes or
fails), a benchmark whose numbers go into docs/cluster.md.

  python3 scripts/cluster_figures.py [--kills 20] [--skip-startup] [--json out.json]

- controller failover: SIGKILL the active controller, then one CreateTopics sent straight to a survivor (brokers
  forward admin writes to the active controller and answer once it is committed): the time from the kill to that
  answer, over --kills kills (the killed node restarted and rejoined between kills), with the default timeouts and
  with tuned ones (controller.quorum.election.timeout.ms 200);
- time to create a topic of 1,000 partitions, and until every shard of every broker shows it (Metadata polled on
  several connections per broker: connections land on every shard);
- time for a metadata change (a topic of one partition) to reach every shard of every broker;
- start-up time of a broker holding 10,000 partitions (a one-voter cluster).
"""

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BINARY = Path(os.environ.get("SLUICE_BIN", REPO / "target" / "release" / "sluice"))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- A minimal Kafka client: just CreateTopics v1 and Metadata v1 ------------------------------------------------

def kafka_string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


class Connection:
    def __init__(self, address, timeout=30.0):
        host, port = address.rsplit(":", 1)
        self.socket = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation = 0

    def call(self, api_key, version, body):
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation) + kafka_string("figures")
        frame = header + body
        self.socket.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self.read(4))[0]
        response = self.read(size)
        assert struct.unpack(">i", response[:4])[0] == self.correlation
        return response[4:]

    def read(self, count):
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def close(self):
        self.socket.close()


def create_topic(address, name, partitions, timeout_ms=30000):
    """CreateTopics v1; returns the topic's error code."""
    body = struct.pack(">i", 1) + kafka_string(name) + struct.pack(">ihii", partitions, 1, 0, 0)
    body += struct.pack(">i?", timeout_ms, False)
    connection = Connection(address, timeout=timeout_ms / 1000 + 30)
    try:
        response = connection.call(19, 1, body)
    finally:
        connection.close()
    count = struct.unpack(">i", response[:4])[0]
    assert count == 1
    name_length = struct.unpack(">h", response[4:6])[0]
    return struct.unpack(">h", response[6 + name_length:8 + name_length])[0]


def create_until_ok(address, name, partitions, timeout_ms=30000, deadline_s=60):
    """CreateTopics, retried while the cluster is still forming (INVALID_REPLICATION_FACTOR: no unfenced broker
    yet; REQUEST_TIMED_OUT: no controller yet)."""
    deadline = time.monotonic() + deadline_s
    while True:
        code = create_topic(address, name, partitions, timeout_ms)
        if code == 0 or code not in (7, 38) or time.monotonic() > deadline:
            return code
        time.sleep(0.1)


def metadata_partitions(connection, topic):
    """Metadata v1 for one topic: its partition count with a leader (-1 when the topic is unknown)."""
    response = connection.call(3, 1, struct.pack(">i", 1) + kafka_string(topic))
    position = 0
    brokers = struct.unpack(">i", response[position:position + 4])[0]
    position += 4
    for _ in range(brokers):
        position += 4
        position += 2 + struct.unpack(">h", response[position:position + 2])[0]
        position += 4
        rack = struct.unpack(">h", response[position:position + 2])[0]
        position += 2 + max(rack, 0)
    position += 4  # controller id
    topics = struct.unpack(">i", response[position:position + 4])[0]
    position += 4
    assert topics == 1
    error = struct.unpack(">h", response[position:position + 2])[0]
    if error != 0:
        return -1
    position += 2
    position += 2 + struct.unpack(">h", response[position:position + 2])[0]
    position += 1  # is_internal
    partitions = struct.unpack(">i", response[position:position + 4])[0]
    position += 4
    led = 0
    for _ in range(partitions):
        _error, _index, leader = struct.unpack(">hii", response[position:position + 10])
        position += 10
        for _ in range(2):
            count = struct.unpack(">i", response[position:position + 4])[0]
            position += 4 + 4 * count
        led += leader >= 0
    return led


# --- A cluster of processes ---------------------------------------------------------------------------------------

class Cluster:
    def __init__(self, root, count, extra=""):
        self.root = Path(root)
        self.ids = list(range(1, count + 1))
        self.kafka = {node: free_port() for node in self.ids}
        self.quorum = {node: free_port() for node in self.ids}
        self.processes = {}
        voters = ",".join(f"{node}@127.0.0.1:{self.quorum[node]}" for node in self.ids)
        for node in self.ids:
            (self.root / f"node{node}.toml").write_text(
                f'"node.id" = {node}\nlisten = "127.0.0.1:{self.kafka[node]}"\n'
                f'"log.dirs" = "{self.root}/node{node}"\nshards = 2\n'
                f'"controller.quorum.voters" = "{voters}"\n{extra}\n')

    def address(self, node):
        return f"127.0.0.1:{self.kafka[node]}"

    def start(self, node, wait=True):
        log = open(self.root / f"node{node}.log", "ab")
        self.processes[node] = subprocess.Popen(
            [str(BINARY), "start", "--config", str(self.root / f"node{node}.toml")], stdout=log, stderr=log)
        log.close()
        started = time.monotonic()
        if wait:
            self.wait_serving(node)
        return started

    def wait_serving(self, node, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.processes[node].poll() is None, f"node {node} exited; see {self.root}/node{node}.log"
            try:
                socket.create_connection(("127.0.0.1", self.kafka[node]), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(f"node {node} did not listen within {timeout} s")

    def kill(self, node):
        self.processes[node].send_signal(signal.SIGKILL)
        self.processes[node].wait()
        del self.processes[node]

    def stop_all(self):
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()

    def controller(self, via):
        connection = Connection(self.address(via), timeout=5)
        try:
            response = connection.call(3, 1, struct.pack(">i", 0))
        finally:
            connection.close()
        position = 0
        brokers = struct.unpack(">i", response[:4])[0]
        position = 4
        live = []
        for _ in range(brokers):
            live.append(struct.unpack(">i", response[position:position + 4])[0])
            position += 4
            position += 2 + struct.unpack(">h", response[position:position + 2])[0]
            position += 4
            rack = struct.unpack(">h", response[position:position + 2])[0]
            position += 2 + max(rack, 0)
        return struct.unpack(">i", response[position:position + 4])[0], sorted(live)

    def wait_all_live(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                controller, live = self.controller(self.ids[0] if self.ids[0] in self.processes else min(self.processes))
                if live == sorted(self.ids) and controller in self.ids:
                    return controller
            except (OSError, ConnectionError, AssertionError, struct.error):
                pass
            time.sleep(0.05)
        raise TimeoutError("the cluster did not show every broker live")


def until_everywhere(cluster, topic, partitions, connections_per_broker=6, timeout=120):
    """Seconds until Metadata on every connection (all shards of all brokers) shows `partitions` led partitions."""
    connections = [Connection(cluster.address(node)) for node in cluster.processes for _ in range(connections_per_broker)]
    started = time.monotonic()
    pending = list(connections)
    try:
        while pending and time.monotonic() - started < timeout:
            pending = [c for c in pending if metadata_partitions(c, topic) < partitions]
        assert not pending, f"{topic} not seen everywhere within {timeout} s"
        return time.monotonic() - started
    finally:
        for connection in connections:
            connection.close()


def failover(root, kills, extra, label):
    cluster = Cluster(root, 3, extra)
    for node in cluster.ids:
        cluster.start(node, wait=False)
    for node in cluster.ids:
        cluster.wait_serving(node)
    times = []
    try:
        for kill in range(kills):
            controller = cluster.wait_all_live()
            survivor = next(node for node in cluster.ids if node != controller)
            cluster.kill(controller)
            killed_at = time.monotonic()
            code = create_topic(cluster.address(survivor), f"failover-{label}-{kill}", 1)
            elapsed = time.monotonic() - killed_at
            assert code == 0, f"CreateTopics after the kill answered error {code}"
            times.append(elapsed)
            print(f"  {label} kill {kill + 1}: controller {controller} killed, topic created via {survivor} "
                  f"after {elapsed * 1000:.0f} ms", flush=True)
            cluster.start(controller)
    finally:
        cluster.stop_all()
    return {"kills": len(times), "median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000,
            "min_ms": min(times) * 1000}


def creation(root):
    cluster = Cluster(root, 3)
    for node in cluster.ids:
        cluster.start(node, wait=False)
    for node in cluster.ids:
        cluster.wait_serving(node)
    try:
        cluster.wait_all_live()
        results = {}
        small = []
        for attempt in range(10):
            started = time.monotonic()
            assert create_until_ok(cluster.address(1), f"change-{attempt}", 1) == 0
            answered = time.monotonic() - started
            everywhere = until_everywhere(cluster, f"change-{attempt}", 1)
            small.append((answered, answered + everywhere))
        results["one_partition_answer_ms"] = statistics.median(a for a, _ in small) * 1000
        results["one_partition_everywhere_ms"] = statistics.median(b for _, b in small) * 1000
        results["one_partition_everywhere_max_ms"] = max(b for _, b in small) * 1000
        started = time.monotonic()
        assert create_topic(cluster.address(2), "thousand", 1000, timeout_ms=120000) == 0
        answered = time.monotonic() - started
        everywhere = until_everywhere(cluster, "thousand", 1000, connections_per_broker=4)
        results["thousand_partitions_answer_ms"] = answered * 1000
        results["thousand_partitions_everywhere_ms"] = (answered + everywhere) * 1000
        return results
    finally:
        cluster.stop_all()


def startup(root, partitions=10000):
    cluster = Cluster(root, 1)
    cluster.start(1)
    try:
        cluster.wait_all_live()
        for topic in range(partitions // 1000):
            assert create_until_ok(cluster.address(1), f"many-{topic}", 1000, timeout_ms=300000) == 0
        assert until_everywhere(cluster, f"many-{partitions // 1000 - 1}", 1000, connections_per_broker=2) >= 0
        stop_started = time.monotonic()
        cluster.stop_all()
        stopped = time.monotonic() - stop_started
        started_at = cluster.start(1)
        listening = time.monotonic() - started_at
        everywhere = until_everywhere(cluster, f"many-{partitions // 1000 - 1}", 1000, connections_per_broker=2)
        return {"partitions": partitions, "stop_s": stopped, "start_listening_s": listening,
                "start_serving_all_s": listening + everywhere}
    finally:
        cluster.stop_all()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    assert BINARY.exists(), f"{BINARY} is missing: cargo build --release -p sluice-broker"
    figures = {}
    with tempfile.TemporaryDirectory(prefix="sluice-figures-") as root:
        for label, extra in [("default", ""), ("tuned", '"controller.quorum.election.timeout.ms" = 200')]:
            directory = Path(root) / f"failover-{label}"
            directory.mkdir()
            figures[f"failover_{label}"] = failover(directory, args.kills, extra, label)
            print(label, figures[f"failover_{label}"], flush=True)
        (Path(root) / "creation").mkdir()
        figures["creation"] = creation(Path(root) / "creation")
        print(figures["creation"], flush=True)
        if not args.skip_startup:
            (Path(root) / "startup").mkdir()
            figures["startup"] = startup(Path(root) / "startup")
            print(figures["startup"], flush=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
