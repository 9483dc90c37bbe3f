"""A cluster of real `sluice` processes on loopback, for the cluster-mode tests (test_cluster.py).

`Cluster` starts N nodes, each with its own TOML file (Kafka's key names), data directory and log file under the
test's tmp_path, on free loopback ports: a Kafka port per node and a quorum port per voter. Voters are the ids in
`controller.quorum.voters`; a node added with `add_broker` is a broker-only node (its id is not listed). Nodes can
be killed (SIGKILL), stopped (SIGTERM, exit 0 asserted) and restarted on the same files by id. Every wait is
bounded and polls; `close()` stops whatever still runs with SIGTERM and asserts a clean exit for every node the test
did not kill itself.

`metadata(node_id)` asks one broker directly (a raw Metadata v1 request, so the answer is that broker's view and
not whichever broker a client happened to ask).

For the replication tests (test_replication.py): `extra_config` adds keys to every node's file or overrides its
defaults (a short `replica.lag.time.max.ms`, a longer session timeout), `advertise(node_id, address)` makes a node advertise another address (a fault
proxy in front of its Kafka port) before it starts, `pause`/`resume` send SIGSTOP/SIGCONT, `power_cut` SIGKILLs
every node at once and `restart_many` starts several again together (voters need each other for a quorum).
`produce_v3` is one raw Produce request, so a test can see the exact error code a broker answers.
"""

import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from conftest import BINARY, free_port
from workload import _request, _string

# Generous: on a shared two-core machine with builds and other clusters running (load average 10-17), nodes have
# taken over 60 s to listen. Each start's time to listen is noted in the node's log.
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
# Kafka's defaults: a broker silent for 9 s is fenced; it heartbeats every 2 s.
SESSION_TIMEOUT_MS = 9000
HEARTBEAT_INTERVAL_MS = 2000


@dataclass
class PartitionView:
    error: int
    leader: int
    replicas: list
    isr: list


@dataclass
class MetadataView:
    """One broker's Metadata answer: {id: (host, port)}, the controller id, {topic: {partition: PartitionView}}."""

    brokers: dict
    controller: int
    topics: dict = field(default_factory=dict)
    topic_errors: dict = field(default_factory=dict)


class Node:
    """One `sluice start --config nodeN.toml` process."""

    def __init__(self, node_id, directory, voters_text, quorum_port, shard_count, extra_config=None):
        self.node_id = node_id
        self.directory = Path(directory)
        self.kafka_port = free_port()
        self.quorum_port = quorum_port  # None: a broker-only node
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        # What the node tells clients and other brokers to connect to (advertised.listeners); its listen address
        # unless a test puts a proxy in front of it.
        self.advertised = self.bootstrap
        self.config_path = self.directory / f"node{node_id}.toml"
        self.log_path = self.directory / f"node{node_id}.log"
        self.data_dir = self.directory / f"node{node_id}"
        self.voters_text = voters_text
        self.shard_count = shard_count
        self.extra_config = extra_config or {}
        self.write_config()
        self.process = None
        self.start_count = 0
        # Set when the test killed this node with SIGKILL and did not restart it: no clean exit to assert.
        self.killed = False
        # Set while the node is stopped with SIGSTOP.
        self.paused = False

    def write_config(self):
        extra = dict(self.extra_config)
        if self.advertised != self.bootstrap:
            extra["advertised.listeners"] = self.advertised
        self.config_path.write_text(
            node_config(self.node_id, self.bootstrap, self.data_dir, self.voters_text, self.shard_count, extra)
        )

    @property
    def pid(self):
        assert self.process is not None, f"node {self.node_id} not running"
        return self.process.pid

    def spawn(self):
        assert self.process is None, f"node {self.node_id} already running"
        assert BINARY.exists(), f"{BINARY} is missing: run cargo build --release -p sluice-broker"
        released_after_s = self.wait_ports_released()
        command = [str(BINARY), "start", "--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.start_count}: {' '.join(command)}\n".encode())
            if released_after_s >= 0.01:
                log.write(f"=== (waited {released_after_s:.3f} s for the previous process's sockets to close)\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.spawned_at = time.monotonic()
        self.start_count += 1
        self.killed = False
        self.paused = False

    def wait_ports_released(self, timeout_s=30):
        """Until no socket listens on this node's ports any more. A SIGKILLed broker's sockets can outlive its
        process for a moment (its io_uring rings are torn down by the kernel after the exit), and a restart at once
        then fails with "Address already in use"; a real power cut or crash-and-reboot has no such leftovers."""
        ports = {self.kafka_port} | ({self.quorum_port} if self.quorum_port else set())
        started = time.monotonic()
        while ports & listening_ports():
            assert time.monotonic() < started + timeout_s, f"node {self.node_id}: ports {ports} still listened on"
            time.sleep(0.02)
        return time.monotonic() - started if self.start_count else 0.0

    def wait_listening(self, deadline):
        if self.poll_listening(deadline):
            return
        # Still not listening: the stacks say where it waits. A start that then completes at once was stalled in a
        # way gdb's attach (ptrace stops and resumes every thread) ended; the message says so.
        stacks = self.stacks()
        dumped_at = time.monotonic()
        after = (f"it listened {time.monotonic() - dumped_at:.1f} s after the stack dump (a stall that gdb's attach "
                 f"ended)" if self.poll_listening(dumped_at + 10) else "nor within 10 s after the stack dump")
        raise AssertionError(
            f"node {self.node_id} did not listen within {START_TIMEOUT_S} s; {after}:\n{self.log_tail()}\n{stacks}"
        )

    def poll_listening(self, deadline):
        """True once the node accepts a connection on its Kafka port (noted in its log), False at `deadline`."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise AssertionError(f"node {self.node_id} exited with {code} during start-up:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.kafka_port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            with open(self.log_path, "ab") as log:
                log.write(f"=== (listening {time.monotonic() - self.spawned_at:.1f} s after the start)\n".encode())
            return True
        return False

    def stacks(self):
        """Every thread's stack of the running process (gdb, when installed), to tell a hang from a slow start."""
        gdb = shutil.which("gdb")
        if gdb is None or self.process is None:
            return "(no gdb: no stacks)"
        try:
            dump = subprocess.run(
                [gdb, "-p", str(self.process.pid), "-batch", "-ex", "thread apply all bt 16"],
                capture_output=True, text=True, timeout=60,
            )
        except subprocess.TimeoutExpired:
            return "(gdb timed out)"
        return "--- stacks\n" + dump.stdout[-60000:]

    def kill(self):
        """SIGKILL by PID: no controlled shutdown, the controller learns of it only by the session timeout."""
        assert self.process is not None, f"node {self.node_id} not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None
        self.killed = True
        self.paused = False

    def pause(self):
        """SIGSTOP by PID: the process holds its sockets and files but answers nothing until `resume`."""
        assert self.process is not None and not self.paused, f"node {self.node_id} not running or already paused"
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT by PID."""
        assert self.process is not None and self.paused, f"node {self.node_id} not paused"
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self):
        """SIGTERM by PID; the node must exit 0 within STOP_TIMEOUT_S."""
        assert self.process is not None, f"node {self.node_id} not running"
        self.process.send_signal(signal.SIGTERM)
        self.wait_exit_zero()

    def wait_exit_zero(self):
        process = self.process
        if self.paused:  # a stopped process cannot act on SIGTERM
            process.send_signal(signal.SIGCONT)
            self.paused = False
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            self.process = None
            raise AssertionError(
                f"node {self.node_id} did not stop within {STOP_TIMEOUT_S} s after SIGTERM:\n{self.log_tail()}"
            )
        self.process = None
        assert code == 0, f"node {self.node_id} exited with {code} after SIGTERM:\n{self.log_tail()}"

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, line_count=40):
        lines = self.log_text().splitlines()
        return f"--- {self.log_path} (last {line_count} lines)\n" + "\n".join(lines[-line_count:])


def listening_ports():
    """The loopback and wildcard IPv4 ports in the LISTEN state (/proc/net/tcp)."""
    ports = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


def node_config(node_id, bootstrap, data_dir, voters_text, shard_count=2, extra=None):
    """A node's TOML, in Kafka's key names; `extra` ({key: value}) adds keys or overrides the ones set here."""
    settings = {
        "node.id": node_id,
        "listen": bootstrap,
        "log.dirs": str(data_dir),
        "shards": shard_count,
        "controller.quorum.voters": voters_text,
        "broker.session.timeout.ms": SESSION_TIMEOUT_MS,
        "broker.heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
    }
    settings.update(extra or {})
    lines = []
    for key, value in settings.items():
        name = key if key.isidentifier() else f'"{key}"'
        if isinstance(value, bool):  # before int: a bool is an int in Python, and TOML spells it true/false
            lines.append(f'{name} = {"true" if value else "false"}\n')
        else:
            lines.append(f'{name} = {value}\n' if isinstance(value, int) else f'{name} = "{value}"\n')
    return "".join(lines)


class Cluster:
    """Voters 1..voter_count on loopback; broker-only nodes join with `add_broker`."""

    def __init__(self, directory, voter_count=3, shard_count=2, extra_config=None):
        """`extra_config`: {key: value} added to every node's file (or overriding node_config's keys)."""
        self.directory = Path(directory)
        self.shard_count = shard_count
        self.extra_config = extra_config
        quorum_ports = {node_id: free_port() for node_id in range(1, voter_count + 1)}
        self.voters_text = ",".join(f"{node_id}@127.0.0.1:{port}" for node_id, port in quorum_ports.items())
        self.nodes = {
            node_id: Node(node_id, self.directory, self.voters_text, port, shard_count, extra_config)
            for node_id, port in quorum_ports.items()
        }

    def advertise(self, node_id, address):
        """Node `node_id` advertises `address` (host:port) instead of its listen address; before it starts."""
        node = self.nodes[node_id]
        assert node.process is None, f"node {node_id} is running: advertise before start"
        node.advertised = address
        node.write_config()

    # --- lifecycle ---

    def start(self):
        """Starts every node at once (the voters need each other for a quorum) and waits for the cluster."""
        for node in self.nodes.values():
            node.spawn()
        deadline = time.monotonic() + START_TIMEOUT_S
        for node in self.nodes.values():
            node.wait_listening(deadline)
        self.wait_for_brokers(sorted(self.nodes), timeout_s=START_TIMEOUT_S)

    def add_broker(self, node_id):
        """A broker-only node (not in controller.quorum.voters) joins the running cluster."""
        assert node_id not in self.nodes
        node = Node(node_id, self.directory, self.voters_text, None, self.shard_count, self.extra_config)
        self.nodes[node_id] = node
        node.spawn()
        node.wait_listening(time.monotonic() + START_TIMEOUT_S)
        self.wait_for_brokers(sorted(self.nodes), timeout_s=START_TIMEOUT_S)
        return node

    def kill(self, node_id):
        self.nodes[node_id].kill()

    def terminate(self, node_id):
        self.nodes[node_id].terminate()

    def restart(self, node_id):
        """Starts a stopped or killed node again on its own config and data directory; waits until it listens."""
        node = self.nodes[node_id]
        if node.process is not None:
            node.terminate()
        node.spawn()
        node.wait_listening(time.monotonic() + START_TIMEOUT_S)

    def restart_many(self, node_ids):
        """Starts several stopped or killed nodes at once (after a power cut no voter can wait for a quorum alone)
        and waits until each listens."""
        for node_id in node_ids:
            assert self.nodes[node_id].process is None, f"node {node_id} is running"
        for node_id in node_ids:
            self.nodes[node_id].spawn()
        deadline = time.monotonic() + START_TIMEOUT_S
        for node_id in node_ids:
            self.nodes[node_id].wait_listening(deadline)

    def power_cut(self):
        """SIGKILL to every running node before waiting for any: none sees another go first."""
        running = [node for node in self.nodes.values() if node.process is not None]
        for node in running:
            node.process.send_signal(signal.SIGKILL)
        for node in running:
            node.process.wait(timeout=10)
            node.process = None
            node.killed = True
            node.paused = False
        return [node.node_id for node in running]

    def pause(self, node_id):
        self.nodes[node_id].pause()

    def resume(self, node_id):
        self.nodes[node_id].resume()

    def close(self):
        """SIGTERM to every running node at once, then a clean exit (0) asserted for each; SIGKILL as a fallback."""
        running = [node for node in self.nodes.values() if node.process is not None]
        for node in running:
            if node.paused:
                node.process.send_signal(signal.SIGCONT)
                node.paused = False
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        failures = []
        for node in running:
            try:
                node.wait_exit_zero()
            except AssertionError as error:
                failures.append(str(error))
        assert not failures, "\n\n".join(failures)

    def kill_all(self):
        """The teardown's fallback: SIGKILL whatever still runs (only our own processes, by PID), every node before
        waiting for any, so that one slow exit (a SIGKILLed broker once took over 10 s) leaves no other running."""
        running = [node for node in self.nodes.values() if node.process is not None]
        for node in running:
            node.process.kill()
        slow = []
        for node in running:
            try:
                node.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                slow.append(node.node_id)
            node.process = None
        assert not slow, f"nodes {slow} still ran 60 s after SIGKILL"

    # --- views ---

    def live(self):
        """Running nodes that are not paused."""
        return [node_id for node_id, node in sorted(self.nodes.items()) if node.alive() and not node.paused]

    def bootstrap(self, node_ids=None):
        return ",".join(self.nodes[node_id].advertised for node_id in (node_ids or self.live()))

    def admin(self, node_ids=None, **settings):
        return AdminClient({"bootstrap.servers": self.bootstrap(node_ids), **settings})

    def metadata(self, node_id):
        return metadata_v1(self.nodes[node_id].bootstrap)

    def log_tails(self, line_count=30):
        return "\n".join(node.log_tail(line_count) for node in self.nodes.values())

    def wait_for(self, what, check, timeout_s):
        """Polls `check()` (a truthy result, or an exception meaning "not yet") until it holds or time runs out."""
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            try:
                result = check()
                if result:
                    return result
                last = result
            except (OSError, AssertionError, ConnectionError, struct.error) as error:
                last = error
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})\n{self.log_tails()}")
            time.sleep(0.2)

    def wait_for_brokers(self, node_ids, timeout_s=START_TIMEOUT_S, via=None):
        """Until each of `via` (default: every live node) lists exactly `node_ids` as its brokers, with addresses
        that are theirs, and a librdkafka AdminClient's list_topics sees the same set."""
        want = sorted(node_ids)
        asked = via or self.live()

        def agreed():
            for node_id in asked:
                view = self.metadata(node_id)
                if sorted(view.brokers) != want:
                    return False
                for broker_id, (host, port) in view.brokers.items():
                    assert f"{host}:{port}" == self.nodes[broker_id].advertised, (broker_id, host, port)
            client_view = self.admin(asked).list_topics(timeout=10)
            return sorted(client_view.brokers) == want

        self.wait_for(f"brokers {want} listed by nodes {asked}", agreed, timeout_s)

    def wait_for_topic(self, topic, partition_count, timeout_s=30, via=None, led=True):
        """Until every node of `via` knows `topic` with all its partitions (and, if `led`, each with a leader);
        returns {node_id: {partition: PartitionView}}."""
        asked = via or self.live()

        def known():
            views = {}
            for node_id in asked:
                partitions = self.metadata(node_id).topics.get(topic)
                if partitions is None or len(partitions) != partition_count:
                    return False
                if led and any(view.leader < 0 for view in partitions.values()):
                    return False
                views[node_id] = partitions
            return views

        return self.wait_for(f"topic {topic} on nodes {asked}", known, timeout_s)


# --- Produce v3 over a raw connection: the exact error code one broker answers, no client retries. ---

def produce_v3(address, topic, partition, values, acks=-1, timeout_ms=10000):
    """One Produce v3 request carrying one uncompressed v2 batch of `values` (bytes) for one partition, without a
    producer id; returns (error code, base offset) of the partition's answer."""
    batch = record_batch(values)
    body = struct.pack(">h", -1)  # transactional_id: null
    body += struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch
    response = _request(address, 0, 3, body, timeout_s=timeout_ms / 1000 + 10)
    reader = _Reader(response)
    assert reader.int32() == 1
    assert reader.string() == topic
    assert reader.int32() == 1
    index, error = reader.int32(), reader.int16()
    assert index == partition
    (base_offset,) = struct.unpack_from(">q", response, reader.position)
    return error, base_offset


def record_batch(values, timestamp_ms=None):
    """A v2 record batch of `values` (no keys, no headers, no compression, no producer id), CRC-32C included."""
    timestamp_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    records = b""
    for delta, value in enumerate(values):
        record = b"\x00" + _varint(0) + _varint(delta) + _varint(-1) + _varint(len(value)) + value + _varint(0)
        records += _varint(len(record)) + record
    # From the attributes on: what the CRC covers.
    tail = struct.pack(">hiqqqhii", 0, len(values) - 1, timestamp_ms, timestamp_ms, -1, -1, -1, len(values))
    tail += records
    head = struct.pack(">ib", -1, 2)  # partitionLeaderEpoch, magic
    crc = struct.pack(">I", crc32c(tail))
    batch_length = len(head) + len(crc) + len(tail)
    return struct.pack(">qi", 0, batch_length) + head + crc + tail


def _varint(value):
    zigzag = (value << 1) ^ (value >> 63)
    out = b""
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), what v2 record batches carry; a table-driven loop, fine for the small test batches."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- Metadata v1 over a raw connection: one broker's own answer. ---

def metadata_v1(address):
    """Metadata v1 with a null topic list (all topics, no auto-creation)."""
    response = _request(address, 3, 1, struct.pack(">i", -1))
    reader = _Reader(response)
    brokers = {}
    for _ in range(reader.int32()):
        node_id = reader.int32()
        host = reader.string()
        port = reader.int32()
        reader.string()  # rack
        brokers[node_id] = (host, port)
    view = MetadataView(brokers=brokers, controller=reader.int32())
    for _ in range(reader.int32()):
        error = reader.int16()
        name = reader.string()
        reader.int8()  # is_internal
        partitions = {}
        for _ in range(reader.int32()):
            partition_error = reader.int16()
            index = reader.int32()
            leader = reader.int32()
            replicas = [reader.int32() for _ in range(reader.int32())]
            isr = [reader.int32() for _ in range(reader.int32())]
            partitions[index] = PartitionView(partition_error, leader, replicas, isr)
        view.topics[name] = partitions
        view.topic_errors[name] = error
    assert reader.position == len(response), f"{len(response) - reader.position} bytes left in Metadata v1"
    return view


class _Reader:
    def __init__(self, data):
        self.data = data
        self.position = 0

    def _take(self, layout):
        (value,) = struct.unpack_from(layout, self.data, self.position)
        self.position += struct.calcsize(layout)
        return value

    def int8(self):
        return self._take(">b")

    def int16(self):
        return self._take(">h")

    def int32(self):
        return self._take(">i")

    def string(self):
        size = self.int16()
        if size < 0:
            return None
        text = self.data[self.position:self.position + size].decode()
        self.position += size
        return text
