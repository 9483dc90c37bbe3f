"""Cluster mode (issue 15) with real clients: three voters (and a broker-only fourth) as real processes on loopback.

Every topic has replication factor 1: replication does not exist yet, so a partition lives on its leader only, and
a broker that is down leaves its partitions offline until it returns. The clients are confluent-kafka (librdkafka
2.16), kafka-python 3.0 and kcat (Debian's librdkafka 2.0.2). A librdkafka AdminClient remembers the controller id,
so every admin write after a failure uses a fresh AdminClient with the surviving brokers as bootstrap.

Measured times (controller failover, a metadata write without a quorum, recovery of the quorum) are printed and,
when CLUSTER_FIGURES names a file, written to it as JSON.
"""

import collections
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic as KafkaPythonNewTopic

from cluster_util import SESSION_TIMEOUT_MS, Cluster, node_config
from conftest import BINARY, free_port
from confluent_util import produce_all, producer
from workload import _request, _string

TIMEOUT_S = 60
# Each partition gets this many keyed messages from each client.
MESSAGES_PER_PARTITION = 500
# Kafka's NOT_LEADER_OR_FOLLOWER.
NOT_LEADER_OR_FOLLOWER = 6
KCAT = shutil.which("kcat")
FIGURES = {}
# One CreateTopics attempt of a retry loop: librdkafka waits this long for a controller it was told of.
ATTEMPT_TIMEOUT_S = 5


@pytest.fixture
def cluster(tmp_path):
    """Three voters (nodes 1, 2, 3), each with two shards; stopped with SIGTERM and exit 0 asserted at the end."""
    nodes = Cluster(tmp_path, voter_count=3)
    try:
        nodes.start()
        yield nodes
        nodes.close()
    finally:
        nodes.kill_all()


def record_figure(name, value):
    """Prints a measured figure and keeps it in the CLUSTER_FIGURES file (JSON), if one is named."""
    print(f"\n[cluster figure] {name} = {value}")
    FIGURES[name] = value
    path = os.environ.get("CLUSTER_FIGURES")
    if path:
        with open(path, "w") as output:
            json.dump(FIGURES, output, indent=2, sort_keys=True)


class Steps:
    """Prints each step of a test with the seconds since the test began (the -s output shows where time goes)."""

    def __init__(self):
        self.started = time.monotonic()

    def __call__(self, text):
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}")


def message(partition, index):
    return b"key-%d-%d" % (partition, index), b"value-%d-%d" % (partition, index)


def keyed_items(partitions, count=MESSAGES_PER_PARTITION, first=0):
    """(partition, key, value, headers, timestamp) for confluent_util.produce_all, partitions interleaved;
    messages first..first+count-1 of each partition."""
    for index in range(first, first + count):
        for partition in partitions:
            key, value = message(partition, index)
            yield partition, key, value, None, 0


def check_exactly_once(records, partitions, count=MESSAGES_PER_PARTITION):
    """`records` is [(partition, offset, key, value)]: every produced message exactly once, per-partition offsets
    0..count-1 with no gap or repeat, and message i of a partition at offset i."""
    seen = collections.Counter((partition, key) for partition, _, key, _ in records)
    repeated = [item for item, times in seen.items() if times > 1]
    assert not repeated, f"{len(repeated)} messages consumed more than once, e.g. {repeated[:3]}"
    assert len(records) == len(partitions) * count, f"consumed {len(records)}, produced {len(partitions) * count}"
    by_partition = collections.defaultdict(list)
    for partition, offset, key, value in records:
        by_partition[partition].append((offset, key, value))
    assert sorted(by_partition) == sorted(partitions)
    for partition, items in by_partition.items():
        items.sort()
        offsets = [offset for offset, _, _ in items]
        assert offsets == list(range(count)), f"partition {partition}: offsets are not 0..{count - 1}"
        for offset, key, value in items:
            assert (key, value) == message(partition, offset), f"partition {partition} offset {offset}: {key!r}"


def leaders(views):
    """{partition: leader} from one node's view, checking that a leader is also the whole replica set and ISR."""
    result = {}
    for partition, view in views.items():
        assert view.error == 0, f"partition {partition}: error {view.error}"
        assert view.replicas == [view.leader] and view.isr == [view.leader], (partition, view)
        result[partition] = view.leader
    return result


def create_topic(cluster, name, partitions, via):
    """CreateTopics through the brokers `via` (a fresh AdminClient), then waits until every live node knows it."""
    client = cluster.admin(via)
    futures = client.create_topics([NewTopic(name, partitions, 1)], request_timeout=30)
    futures[name].result(timeout=TIMEOUT_S)
    return cluster.wait_for_topic(name, partitions)


def create_topic_until_success(cluster, name, partitions, via, deadline_s=60):
    """Tries CreateTopics with a fresh AdminClient per attempt until it succeeds or `deadline_s` passes; returns
    (elapsed seconds, attempts, errors seen). TOPIC_ALREADY_EXISTS counts as success: an attempt the client gave
    up on may have committed."""
    started = time.monotonic()
    errors = []
    while True:
        client = cluster.admin(via, **{"socket.connection.setup.timeout.ms": 2000})
        # A short attempt: a fresh client asks again for the controller, so the figure has a resolution of ~5 s.
        futures = client.create_topics([NewTopic(name, partitions, 1)], request_timeout=ATTEMPT_TIMEOUT_S)
        try:
            futures[name].result(timeout=ATTEMPT_TIMEOUT_S + 5)
            return time.monotonic() - started, len(errors) + 1, errors
        except KafkaException as error:
            if error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return time.monotonic() - started, len(errors) + 1, errors
            errors.append(str(error))
        except Exception as error:  # noqa: BLE001 - a client-side timeout of the future: try again
            errors.append(repr(error))
        elapsed = time.monotonic() - started
        assert elapsed < deadline_s, f"CreateTopics {name} failed for {elapsed:.1f} s: {errors[-5:]}\n" + (
            cluster.log_tails()
        )
        time.sleep(0.5)


def group_consume(bootstrap, topic, expected_count, group):
    """A confluent-kafka group consumer (subscribe, from the earliest offset) until `expected_count` records;
    returns [(partition, offset, key, value)]."""
    client = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    })
    records = []
    try:
        client.subscribe([topic])
        deadline = time.monotonic() + TIMEOUT_S
        while len(records) < expected_count and time.monotonic() < deadline:
            for record in client.consume(num_messages=10000, timeout=0.5):
                assert record.error() is None, f"consume error: {record.error()}"
                records.append((record.partition(), record.offset(), record.key(), record.value()))
        # A little longer: a duplicate delivered after the count was reached must still be caught.
        for record in client.consume(num_messages=10000, timeout=1.0):
            if record.error() is None:
                records.append((record.partition(), record.offset(), record.key(), record.value()))
    finally:
        client.close()
    assert len(records) >= expected_count, f"group consumer got {len(records)} of {expected_count} in {TIMEOUT_S} s"
    return records


def assign_consume(bootstrap, topic, partitions, expected):
    """Reads `partitions` from the beginning until each has `expected[p]` records; [(partition, offset, k, v)]."""
    client = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-cluster-unused",  # assign() only: no group traffic
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    })
    counts = collections.Counter()
    records = []
    try:
        client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + TIMEOUT_S
        while any(counts[p] < expected[p] for p in partitions) and time.monotonic() < deadline:
            for record in client.consume(num_messages=10000, timeout=0.5):
                assert record.error() is None, f"consume error: {record.error()}"
                counts[record.partition()] += 1
                records.append((record.partition(), record.offset(), record.key(), record.value()))
    finally:
        client.close()
    assert all(counts[p] >= expected[p] for p in partitions), f"read {dict(counts)}, expected {expected}"
    return records


def fetch_error(address, topic, partition):
    """Fetch v4 of one partition from offset 0 on a raw connection; returns the partition's error code."""
    body = struct.pack(">iiiib", -1, 100, 1, 1 << 20, 0)
    body += struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, 0, 1 << 20)
    response = _request(address, 1, 4, body)
    position = 4 + 4  # throttle_time_ms, topic count
    (name_size,) = struct.unpack_from(">h", response, position)
    position += 2 + name_size + 4
    _index, error = struct.unpack_from(">ih", response, position)
    return error


# --- 1. Three nodes, every client, every partition. ---

def test_three_nodes_serve_every_client_from_any_bootstrap(cluster):
    """A 12-partition topic created through node 1 is described alike by all three, each leads 4 partitions, and
    confluent-kafka, kafka-python and kcat produce and consume every partition through any broker."""
    views = create_topic(cluster, "cluster-confluent", 12, via=[1])
    first = leaders(views[1])
    for node_id in (2, 3):
        assert leaders(views[node_id]) == first, f"node {node_id} disagrees with node 1"
    controllers = {cluster.metadata(node_id).controller for node_id in (1, 2, 3)}
    assert len(controllers) == 1 and controllers <= {1, 2, 3}, controllers
    assert collections.Counter(first.values()) == {1: 4, 2: 4, 3: 4}, first

    # A broker that does not lead a partition says so.
    for partition, leader in first.items():
        other = next(node_id for node_id in (1, 2, 3) if node_id != leader)
        assert fetch_error(cluster.nodes[other].bootstrap, "cluster-confluent", partition) == NOT_LEADER_OR_FOLLOWER
        assert fetch_error(cluster.nodes[leader].bootstrap, "cluster-confluent", partition) == 0

    # confluent-kafka: produce through node 2, consume as a group through node 3.
    partitions = list(range(12))
    client = producer(cluster.nodes[2], **{"enable.idempotence": True})
    assert produce_all(client, "cluster-confluent", keyed_items(partitions)) == []
    records = group_consume(cluster.nodes[3].bootstrap, "cluster-confluent", 12 * MESSAGES_PER_PARTITION,
                            "cluster-confluent-group")
    check_exactly_once(records, partitions)

    # kafka-python: create through node 3, produce through node 1, consume as a group through node 2.
    admin = KafkaAdminClient(bootstrap_servers=cluster.nodes[3].bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics([KafkaPythonNewTopic("cluster-kafka-python", 12, 1)])
    finally:
        admin.close()
    cluster.wait_for_topic("cluster-kafka-python", 12)
    sender = KafkaProducer(bootstrap_servers=cluster.nodes[1].bootstrap, acks="all", linger_ms=20,
                           request_timeout_ms=30000)
    futures = [sender.send("cluster-kafka-python", key=key, value=value, partition=partition)
               for partition, key, value, _, _ in keyed_items(partitions)]
    sender.flush(timeout=TIMEOUT_S)
    sender.close(timeout=TIMEOUT_S)
    failed = [future.exception for future in futures if not future.succeeded()]
    assert not failed, failed[:3]
    reader = KafkaConsumer("cluster-kafka-python", bootstrap_servers=cluster.nodes[2].bootstrap,
                           group_id="cluster-kafka-python-group", auto_offset_reset="earliest",
                           enable_auto_commit=False, fetch_max_wait_ms=100)
    records = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while len(records) < 12 * MESSAGES_PER_PARTITION and time.monotonic() < deadline:
            for tp, batch in reader.poll(timeout_ms=500, max_records=10000).items():
                records.extend((tp.partition, r.offset, r.key, r.value) for r in batch)
        for tp, batch in reader.poll(timeout_ms=1000).items():
            records.extend((tp.partition, r.offset, r.key, r.value) for r in batch)
    finally:
        reader.close()
    check_exactly_once(records, partitions)

    # kcat: one producer per partition, each through a different broker in turn; one consumer through node 1.
    if KCAT is None:
        pytest.skip("kcat is not installed")
    create_topic(cluster, "cluster-kcat", 12, via=[2])
    count = 50
    for partition in partitions:
        node = cluster.nodes[1 + partition % 3]
        lines = b"".join(b"%s:%s\n" % message(partition, index) for index in range(count))
        result = subprocess.run(
            [KCAT, "-b", node.bootstrap, "-P", "-t", "cluster-kcat", "-p", str(partition), "-K", ":",
             "-X", "acks=all"],
            input=lines, capture_output=True, timeout=TIMEOUT_S,
        )
        assert result.returncode == 0, f"kcat -P partition {partition}: {result.stderr[-2000:]!r}"
        assert b"Delivery failed" not in result.stderr, result.stderr[-2000:]
    result = subprocess.run(
        [KCAT, "-b", cluster.nodes[1].bootstrap, "-C", "-t", "cluster-kcat", "-o", "beginning", "-e", "-J",
         "-X", "fetch.wait.max.ms=100"],
        capture_output=True, timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, f"kcat -C: {result.stderr[-2000:]!r}"
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    check_exactly_once(
        [(r["partition"], r["offset"], r["key"].encode(), r["payload"].encode()) for r in records], partitions, count
    )


# --- 2. The active controller dies. ---

def test_controller_failover_and_rejoin(cluster):
    """kill -9 of the active controller: a survivor becomes controller and CreateTopics succeeds again; the killed
    node's partitions go offline after the session timeout, and after a restart it leads them again with its data."""
    step = Steps()
    views = create_topic(cluster, "cluster-before-failover", 6, via=[1])
    before = leaders(views[1])
    partitions = list(range(6))
    assert produce_all(producer(cluster.nodes[1]), "cluster-before-failover", keyed_items(partitions, 100)) == []

    controller = cluster.metadata(1).controller
    assert controller in (1, 2, 3), controller
    survivors = [node_id for node_id in (1, 2, 3) if node_id != controller]
    owned = [partition for partition, leader in before.items() if leader == controller]
    assert owned, f"controller {controller} leads none of {before}"
    killed_at = time.monotonic()
    cluster.kill(controller)
    step(f"killed the controller, node {controller}")

    elapsed, attempts, errors = create_topic_until_success(cluster, "cluster-after-failover", 4, via=survivors)
    record_figure("failover_create_topic_s", round(elapsed, 2))
    record_figure("failover_create_topic_attempts", attempts)
    step(f"CreateTopics succeeded; errors before: {errors}")
    # The new controller may still place leaders on the killed node: it is fenced only once its session expires
    # (as in Kafka, a new active controller gives every registered broker a fresh session).
    views = cluster.wait_for_topic("cluster-after-failover", 4, via=survivors, led=False)
    placed_after = leaders(views[survivors[0]]) if all(v.leader > 0 for v in views[survivors[0]].values()) else None
    step(f"cluster-after-failover placed on {placed_after or views[survivors[0]]}")

    def new_controller():
        found = {cluster.metadata(node_id).controller for node_id in survivors}
        return found if len(found) == 1 and found <= set(survivors) else None

    found = cluster.wait_for("a survivor is the controller on both survivors", new_controller, 30)
    assert controller not in found

    # Fenced after broker.session.timeout.ms: its partitions have no leader (LEADER_NOT_AVAILABLE, 5).
    def offline():
        view = cluster.metadata(survivors[0]).topics["cluster-before-failover"]
        return all(view[p].leader == -1 and view[p].error == 5 for p in owned)

    cluster.wait_for(f"node {controller}'s partitions offline", offline, SESSION_TIMEOUT_MS / 1000 + 30)
    record_figure("failover_partitions_offline_s", round(time.monotonic() - killed_at, 2))

    step(f"node {controller}'s partitions {owned} are offline")
    restarted_at = time.monotonic()
    cluster.restart(controller)
    cluster.wait_for_brokers([1, 2, 3], timeout_s=60)
    views = cluster.wait_for_topic("cluster-before-failover", 6, timeout_s=60)
    for node_id, view in views.items():
        assert leaders(view) == before, f"node {node_id} after the rejoin: {leaders(view)}, before: {before}"
    record_figure("rejoin_leading_again_s", round(time.monotonic() - restarted_at, 2))
    step(f"node {controller} rejoined and leads {owned} again")
    views = cluster.wait_for_topic("cluster-after-failover", 4, timeout_s=30)
    assert set(leaders(views[controller]).values()) <= {1, 2, 3}
    bootstrap = cluster.nodes[controller].bootstrap
    records = assign_consume(bootstrap, "cluster-before-failover", partitions, {p: 100 for p in partitions})
    check_exactly_once(records, partitions, 100)


# --- 3. Two of three voters down. ---

def test_no_quorum_fails_metadata_writes_but_serves_own_partitions(cluster):
    """With two of three voters killed, CreateTopics fails within ~30 s naming the controller or a timeout, while
    the survivor keeps serving produce and consume for the partitions it leads; one voter back restores writes."""
    step = Steps()
    views = create_topic(cluster, "cluster-before-loss", 6, via=[2])
    before = leaders(views[2])
    keep = cluster.metadata(1).controller  # the active controller stays; it must stop acting as one
    lost = [node_id for node_id in (1, 2, 3) if node_id != keep]
    owned = [partition for partition, leader in before.items() if leader == keep]
    assert owned, before
    # The cluster has served a group before, so __consumer_offsets exists: without it every FindCoordinator of the
    # consumer below waits 15 s for the controller to create it, and holds up the requests behind it on the same
    # connection (test_find_coordinator_without_quorum_answers_promptly).
    assert produce_all(producer(cluster.nodes[keep]), "cluster-before-loss", keyed_items(owned, 1)) == []
    group_consume(cluster.bootstrap(), "cluster-before-loss", len(owned), "cluster-before-loss-group")
    cluster.wait_for_topic("__consumer_offsets", 50, led=False)
    step("__consumer_offsets exists")
    for node_id in lost:
        cluster.kill(node_id)
    step(f"killed nodes {lost}; node {keep} (the controller) survives")

    started = time.monotonic()
    client = cluster.admin([keep])
    futures = client.create_topics([NewTopic("cluster-no-quorum", 2, 1)], request_timeout=60)
    with pytest.raises(KafkaException) as refused:
        futures["cluster-no-quorum"].result(timeout=70)
    elapsed = time.monotonic() - started
    record_figure("no_quorum_create_topic_error_s", round(elapsed, 2))
    error = refused.value.args[0]
    step(f"CreateTopics without a quorum: {error}")
    assert elapsed < 35, f"the error took {elapsed:.1f} s"
    text = str(error).lower()
    assert "controller" in text or "timed out" in text, str(error)
    assert error.code() in (KafkaError.REQUEST_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.NOT_CONTROLLER), error

    # The survivor's own partitions: produce and read back through it alone.
    client = producer(cluster.nodes[keep], **{"message.timeout.ms": 30000})
    assert produce_all(client, "cluster-before-loss", keyed_items(owned, 200, first=1)) == []
    step(f"produced to partitions {owned} through node {keep}")
    records = assign_consume(cluster.nodes[keep].bootstrap, "cluster-before-loss", owned, {p: 201 for p in owned})
    check_exactly_once(records, owned, 201)
    step(f"consumed partitions {owned} through node {keep}")

    cluster.restart(lost[0])
    step(f"restarted node {lost[0]}")
    elapsed, attempts, errors = create_topic_until_success(cluster, "cluster-quorum-back", 2,
                                                           via=[keep, lost[0]])
    record_figure("quorum_back_create_topic_s", round(elapsed, 2))
    step(f"CreateTopics succeeded; errors before: {errors}")
    cluster.wait_for_topic("cluster-quorum-back", 2, via=[keep, lost[0]], led=False)


def find_coordinator_v1(address, group, timeout_s):
    """FindCoordinator v1 for a group on a raw connection; (error code, error message, node id)."""
    host, port = address.split(":")
    frame = struct.pack(">hhi", 10, 1, 11) + _string("sluice-tests") + _string(group) + struct.pack(">b", 0)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
        connection.sendall(struct.pack(">i", len(frame)) + frame)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = connection.recv(65536)
            assert chunk, "the broker closed the connection"
            data += chunk
    position = 4 + 4 + 4  # size, correlation id, throttle_time_ms
    (error,) = struct.unpack_from(">h", data, position)
    (size,) = struct.unpack_from(">h", data, position + 2)
    message = data[position + 4:position + 4 + size].decode() if size >= 0 else None
    (node,) = struct.unpack_from(">i", data, position + 4 + max(size, 0))
    return error, message, node


def test_find_coordinator_without_quorum_answers_promptly(cluster):
    """Without a quorum and before any group existed, FindCoordinator answers at once (Kafka starts creating
    __consumer_offsets in the background and says COORDINATOR_NOT_AVAILABLE), so that the requests pipelined
    behind it on the connection (ListOffsets, Fetch) are not held up."""
    keep = cluster.metadata(1).controller
    for node_id in (1, 2, 3):
        if node_id != keep:
            cluster.kill(node_id)
    started = time.monotonic()
    error, message, node = find_coordinator_v1(cluster.nodes[keep].bootstrap, "no-quorum-group", 60)
    elapsed = time.monotonic() - started
    record_figure("no_quorum_find_coordinator_s", round(elapsed, 2))
    print(f"FindCoordinator without a quorum: error {error} ({message}), node {node}, after {elapsed:.1f} s")
    assert elapsed < 5, f"FindCoordinator took {elapsed:.1f} s: error {error} ({message})"
    assert error == 15, f"error {error} ({message}), not COORDINATOR_NOT_AVAILABLE"


# --- 4. A broker-only node joins. ---

def test_broker_only_node_joins_and_leads(cluster):
    """Node 4, not a voter, joins the running cluster: every node lists four brokers, a new topic places leaders on
    it, and clients bootstrapped on node 4 alone produce and consume."""
    cluster.add_broker(4)  # waits until nodes 1-4 all list brokers 1-4
    views = create_topic(cluster, "cluster-four", 8, via=[4])
    placed = leaders(views[4])
    for node_id in (1, 2, 3):
        assert leaders(views[node_id]) == placed, f"node {node_id} disagrees with node 4"
    spread = collections.Counter(placed.values())
    print(f"leaders per broker: {dict(spread)}")
    assert spread[4] >= 1, placed
    assert set(spread) <= {1, 2, 3, 4}

    partitions = list(range(8))
    node4 = cluster.nodes[4]
    assert produce_all(producer(node4), "cluster-four", keyed_items(partitions, 200)) == []
    records = assign_consume(node4.bootstrap, "cluster-four", partitions, {p: 200 for p in partitions})
    check_exactly_once(records, partitions, 200)
    for partition in (p for p, leader in placed.items() if leader == 4):
        assert fetch_error(node4.bootstrap, "cluster-four", partition) == 0
    # The controller is one of the voters, never the broker-only node.
    assert cluster.metadata(4).controller in (1, 2, 3)


# --- 5. Configuration errors. ---

def run_node(tmp_path, node_id, voters_text, timeout_s=30):
    directory = tmp_path / f"node{node_id}"
    config = tmp_path / f"node{node_id}.toml"
    config.write_text(node_config(node_id, f"127.0.0.1:{free_port()}", directory, voters_text))
    return subprocess.run([str(BINARY), "start", "--config", str(config)], capture_output=True, timeout=timeout_s)


@pytest.mark.parametrize("voters, problem", [
    ("1@127.0.0.1", 'entry "1@127.0.0.1" is not of the form id@host:port'),
    ("1@127.0.0.1:19093,1@127.0.0.1:29093", "voter id 1 is listed twice"),
])
def test_malformed_quorum_voters_is_one_line(tmp_path, voters, problem):
    """A malformed controller.quorum.voters exits non-zero with one stderr line naming the key and the entry."""
    result = run_node(tmp_path, 1, voters)
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert "controller.quorum.voters" in lines[0] and problem in lines[0], lines[0]


def test_quorum_address_in_use_is_refused(tmp_path):
    """A voter whose quorum address another socket holds exits non-zero with a line naming that address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        voters = f"1@127.0.0.1:{port},2@127.0.0.1:{free_port()},3@127.0.0.1:{free_port()}"
        result = run_node(tmp_path, 1, voters)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode != 0, stderr
    named = [line for line in stderr.splitlines() if f"127.0.0.1:{port}" in line]
    assert named, stderr
    assert "error" in named[-1].lower(), named


def test_simultaneous_shutdowns_are_each_fenced(cluster):
    """Two brokers stopping at once (SIGTERM) both ask the controller to fence them, and both fences touch the same
    partitions (replication factor 3): the controller plans each against the image the other produced, so neither
    is refused (it once planned both against the same image, and the second failed its partition-epoch check)."""
    admin = cluster.admin()
    admin.create_topics([NewTopic("everywhere", 6, 3)])["everywhere"].result(timeout=30)
    cluster.wait_for_topic("everywhere", 6)
    controller = cluster.metadata(1).controller
    stopping = [node for node in (1, 2, 3) if node != controller]
    for node in stopping:
        cluster.nodes[node].process.send_signal(signal.SIGTERM)
    for node in stopping:
        cluster.nodes[node].wait_exit_zero()
    for node in stopping:
        log = cluster.nodes[node].log_text()
        assert "fenced by the controller for shutdown" in log, cluster.nodes[node].log_tail()
        assert "shutdown: the controller answered" not in log, cluster.nodes[node].log_tail()
    # The survivor leads every partition (it was in every ISR).
    survivor = cluster.metadata(controller)
    assert sorted(survivor.brokers) == [controller], survivor.brokers


def test_create_partitions_honours_an_assignment_over_brokers(cluster):
    """CreatePartitions with replica lists naming other brokers (librdkafka's 0081_admin does this): honoured as
    given; an assignment naming an unknown broker is refused with INVALID_REPLICA_ASSIGNMENT."""
    from confluent_kafka.admin import NewPartitions

    admin = cluster.admin()
    admin.create_topics([NewTopic("grown", 2, 1)])["grown"].result(timeout=30)
    cluster.wait_for_topic("grown", 2)
    admin.create_partitions([NewPartitions("grown", 4, replica_assignment=[[3], [2]])])["grown"].result(timeout=30)
    cluster.wait_for_topic("grown", 4)
    partitions = cluster.metadata(1).topics["grown"]
    assert (partitions[2].leader, partitions[3].leader) == (3, 2), partitions
    refused = admin.create_partitions([NewPartitions("grown", 5, replica_assignment=[[9]])])["grown"]
    with pytest.raises(KafkaException) as error:
        refused.result(timeout=30)
    assert error.value.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, error.value
