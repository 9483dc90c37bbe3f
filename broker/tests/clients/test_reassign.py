"""`sluice reassign` and `sluice elect-leaders` against real processes: a cluster grows onto a new broker while a
producer writes, and nothing it was told was written is lost.

Three voters and a broker-only node 4 (cluster_util.Cluster) run with automatic leader rebalancing off, so that
every leader change the test sees is one it asked for. The producer is confluent-kafka (librdkafka), idempotent,
acks=all, running on a thread of its own from before the first move until after the last election.
"""

import collections
import json
import signal
import subprocess
import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster_util import Cluster
from conftest import BINARY, Broker

TOPIC = "moving"
PARTITION_COUNT = 6
REPLICATION_FACTOR = 2
NEW_BROKER = 4
TIMEOUT_S = 120
# The producer's pace after its first burst: about this many messages a second over all partitions.
PRODUCE_RATE = 500
# The producer first writes this many messages as fast as it can (about 1 KiB each, ~24 MiB in all), so that the
# new replicas have a real log to copy while the producer keeps writing.
BURST_COUNT = 24000
VALUE_PADDING = b"x" * 1000
# Every command the test runs is killed if it takes longer than this.
COMMAND_TIMEOUT_S = 180


@pytest.fixture
def cluster(tmp_path):
    """Voters 1-3 and broker-only node 4, leaders left where they are put; SIGTERM and exit 0 asserted at the end."""
    nodes = Cluster(tmp_path, voter_count=3, extra_config={"auto.leader.rebalance.enable": False})
    try:
        nodes.start()
        yield nodes
        nodes.close()
    finally:
        nodes.kill_all()


def sluice(*args, timeout_s=COMMAND_TIMEOUT_S):
    """Runs `sluice <args>`; returns (exit code, stdout, stderr) and prints them for the -s output."""
    started = time.monotonic()
    result = subprocess.run([str(BINARY), *map(str, args)], capture_output=True, text=True, timeout=timeout_s)
    print(f"$ sluice {' '.join(map(str, args))}  # exit {result.returncode} in {time.monotonic() - started:.1f} s")
    print(result.stdout, end="")
    print(result.stderr, end="")
    return result.returncode, result.stdout, result.stderr


def json_after(stdout, heading):
    """The reassignment JSON printed on the line after `heading`."""
    lines = stdout.splitlines()
    return json.loads(lines[lines.index(heading) + 1])


class BackgroundProducer:
    """Produces `partition:sequence:padding` values round-robin over the partitions on a thread of its own,
    BURST_COUNT at once and then PRODUCE_RATE a second; `acknowledged[p]` lists the sequences the brokers
    acknowledged, in acknowledgement order."""

    def __init__(self, bootstrap):
        self.client = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 60000,
        })
        self.acknowledged = collections.defaultdict(list)
        self.errors = []
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="producer", daemon=True)

    def delivered(self, error, message):
        if error is not None:
            self.errors.append(f"{message.partition()}: {error}")
            return
        partition, sequence, _ = message.value().split(b":")
        self.acknowledged[int(partition)].append(int(sequence))

    def run(self):
        sequences = [0] * PARTITION_COUNT
        started = time.monotonic()
        deadline = started + TIMEOUT_S * 3  # bounded even if the test never says stop
        while not self.stopping.is_set() and time.monotonic() < deadline:
            partition = self.sent % PARTITION_COUNT
            value = b"%d:%d:%s" % (partition, sequences[partition], VALUE_PADDING)
            try:
                self.client.produce(TOPIC, value=value, partition=partition, on_delivery=self.delivered)
            except BufferError:
                self.client.poll(0.05)
                continue
            sequences[partition] += 1
            self.sent += 1
            self.client.poll(0)
            if self.sent == BURST_COUNT:
                started = time.monotonic()
            if self.sent > BURST_COUNT:
                ahead = (self.sent - BURST_COUNT) / PRODUCE_RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the producer thread did not stop"
        remaining = self.client.flush(TIMEOUT_S)
        assert remaining == 0, f"{remaining} messages neither delivered nor failed within {TIMEOUT_S} s"


def consume_all(bootstrap, expected_counts):
    """Reads every partition from the beginning until each holds at least `expected_counts[p]` records, then a
    little longer (a duplicate past the count must still be seen); returns {partition: [sequence in offset order]}."""
    client = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-reassign-unused",  # assign() only: no group traffic
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    })
    read = collections.defaultdict(list)
    try:
        client.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITION_COUNT)])
        deadline = time.monotonic() + TIMEOUT_S
        settle_until = None
        while time.monotonic() < deadline:
            for record in client.consume(num_messages=10000, timeout=0.5):
                assert record.error() is None, f"consume error: {record.error()}"
                partition, sequence, padding = record.value().split(b":")
                assert int(partition) == record.partition() and padding == VALUE_PADDING, record.value()[:40]
                read[record.partition()].append(int(sequence))
            if settle_until is None and all(len(read[p]) >= expected_counts[p] for p in range(PARTITION_COUNT)):
                settle_until = time.monotonic() + 2
            if settle_until is not None and time.monotonic() >= settle_until:
                break
    finally:
        client.close()
    return read


def partition_views(cluster, node_id):
    return cluster.metadata(node_id).topics[TOPIC]


def test_reassign_onto_a_new_broker_under_load_loses_nothing(cluster):
    """`sluice reassign --to-broker 4 --wait` moves node 4's share of replicas onto it while an idempotent acks=all
    producer writes: every node's Metadata shows node 4 holding them and in their ISR; a reordered replica list
    and `sluice elect-leaders --election-type preferred --all-topic-partitions` make node 4 a leader; and every
    acknowledged message is read back exactly once, in order."""
    admin = cluster.admin()
    admin.create_topics([NewTopic(TOPIC, PARTITION_COUNT, REPLICATION_FACTOR)])[TOPIC].result(timeout=30)
    before = cluster.wait_for_topic(TOPIC, PARTITION_COUNT)[1]
    assert all(NEW_BROKER not in view.replicas for view in before.values()), before
    cluster.add_broker(NEW_BROKER)
    bootstrap = cluster.nodes[1].bootstrap

    producer = BackgroundProducer(cluster.bootstrap())
    producer.start()
    try:
        time.sleep(2)
        targets = reassign_onto_new_broker(cluster, bootstrap)
        time.sleep(1)
        elect_preferred_after_reorder(cluster, bootstrap, targets)
        time.sleep(2)
    finally:
        producer.stop()

    assert producer.errors == [], f"{len(producer.errors)} delivery errors, e.g. {producer.errors[:5]}"
    acknowledged_count = sum(len(sequences) for sequences in producer.acknowledged.values())
    print(f"produced {producer.sent}, acknowledged {acknowledged_count}")
    assert acknowledged_count >= BURST_COUNT, f"only {acknowledged_count} messages acknowledged"
    expected = {p: len(producer.acknowledged[p]) for p in range(PARTITION_COUNT)}
    read = consume_all(cluster.bootstrap(), expected)
    for partition in range(PARTITION_COUNT):
        sequences = read[partition]
        duplicates = [s for s, times in collections.Counter(sequences).items() if times > 1]
        assert not duplicates, f"partition {partition}: sequences read twice: {duplicates[:10]}"
        assert sequences == sorted(sequences), f"partition {partition}: out of order"
        lost = set(producer.acknowledged[partition]) - set(sequences)
        assert not lost, f"partition {partition}: {len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:10]}"
        # The idempotent producer sends each partition's sequences in order and acknowledges a prefix of them.
        assert sequences[:len(producer.acknowledged[partition])] == sorted(producer.acknowledged[partition])


def reassign_onto_new_broker(cluster, bootstrap):
    """Runs the move and checks it in every node's Metadata; returns {partition: target replicas}."""
    code, stdout, stderr = sluice("reassign", "--bootstrap-server", bootstrap, "--to-broker", NEW_BROKER, "--wait",
                                  "--timeout-s", TIMEOUT_S)
    assert code == 0, f"reassign exited {code}: {stderr}\n{cluster.log_tails()}"
    proposed = json_after(stdout, "Proposed partition reassignment:")
    current = json_after(stdout, "Current partition replica assignment (save it to roll back with --plan):")
    assert proposed["version"] == 1 and current["version"] == 1
    targets = {entry["partition"]: entry["replicas"] for entry in proposed["partitions"]}
    # Node 4's fair share: 12 replicas over 4 brokers, one replaced per moved partition.
    assert len(targets) == PARTITION_COUNT * REPLICATION_FACTOR // 4, targets
    for entry in current["partitions"]:
        target = targets[entry["partition"]]
        assert NEW_BROKER in target and NEW_BROKER not in entry["replicas"], (entry, target)
        assert len(target) == REPLICATION_FACTOR
        assert len(set(entry["replicas"]) - set(target)) == 1, (entry, target)
    for partition in targets:
        assert f"  {TOPIC}-{partition} " in stdout and "NONE (0)" in stdout, stdout
    assert "done: " in stdout, stdout

    def everywhere():
        for node_id in cluster.live():
            views = partition_views(cluster, node_id)
            for partition, target in targets.items():
                view = views[partition]
                if view.replicas != target or NEW_BROKER not in view.isr or view.leader not in view.isr:
                    return False
        return True

    cluster.wait_for("every node sees node 4 in the moved partitions' replicas and ISR", everywhere, TIMEOUT_S)
    return targets


def elect_preferred_after_reorder(cluster, bootstrap, targets, tmp_name="reorder.json"):
    """A moved partition whose preferred leader is not node 4 gets its replicas reordered so node 4 comes first
    (same replicas: the move completes at once and the leader stays); `elect-leaders --election-type preferred
    --all-topic-partitions` then elects node 4, and afterwards every partition is led by its first replica."""
    partition, target = next((p, t) for p, t in sorted(targets.items()) if t[0] != NEW_BROKER)
    reordered = [NEW_BROKER] + [node for node in target if node != NEW_BROKER]
    plan = cluster.directory / tmp_name
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": TOPIC, "partition": partition, "replicas": reordered}]}))
    code, stdout, stderr = sluice("reassign", "--bootstrap-server", bootstrap, "--plan", plan, "--wait",
                                  "--timeout-s", TIMEOUT_S)
    assert code == 0, f"reorder exited {code}: {stderr}\n{cluster.log_tails()}"
    view = partition_views(cluster, 1)[partition]
    assert view.replicas == reordered, view
    assert view.leader != NEW_BROKER, f"the leader moved without an election: {view}"

    code, stdout, stderr = sluice("elect-leaders", "--bootstrap-server", bootstrap, "--election-type", "preferred",
                                  "--all-topic-partitions")
    assert code == 0, f"elect-leaders exited {code}: {stderr}\n{cluster.log_tails()}"
    assert f"  {TOPIC}-{partition}: elected, NONE (0)" in stdout, stdout
    assert "0 failed" in stdout, stdout

    def led_by_preferred():
        for node_id in cluster.live():
            for index, view in partition_views(cluster, node_id).items():
                if view.leader != view.replicas[0]:
                    return False
        return True

    cluster.wait_for("every partition led by its preferred replica", led_by_preferred, TIMEOUT_S)
    # Nothing left to elect: a second run succeeds and elects nothing.
    code, stdout, stderr = sluice("elect-leaders", "--bootstrap-server", bootstrap, "--election-type", "preferred",
                                  "--all-topic-partitions")
    assert code == 0 and "0 elected" in stdout and "0 failed" in stdout, (code, stdout, stderr)


def test_a_move_that_cannot_finish_times_out_and_is_cancelled(cluster):
    """With node 4 paused (SIGSTOP) its new replicas cannot copy: `--wait --timeout-s 3` gives up with exit 1 and
    one line naming the partitions still moving, and `--cancel --topic T --wait` takes them back to their original
    replicas (as a set: Kafka's revert, like KRaft's, keeps the replicas' order minus the added ones)."""
    topic = "stuck"
    admin = cluster.admin()
    admin.create_topics([NewTopic(topic, 2, 2)])[topic].result(timeout=30)
    original = {p: view.replicas for p, view in cluster.wait_for_topic(topic, 2)[1].items()}
    cluster.add_broker(NEW_BROKER)
    bootstrap = cluster.nodes[1].bootstrap
    node4 = cluster.nodes[NEW_BROKER]
    node4.process.send_signal(signal.SIGSTOP)
    try:
        code, stdout, stderr = sluice("reassign", "--bootstrap-server", bootstrap, "--to-broker", NEW_BROKER,
                                      "--topic", topic, "--wait", "--timeout-s", 3)
        moved = json_after(stdout, "Proposed partition reassignment:")["partitions"]
        assert code == 1, (code, stdout, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and f"timed out after 3 s with {len(moved)} of {len(moved)} partitions still moving" \
            in lines[0], lines

        code, stdout, stderr = sluice("reassign", "--bootstrap-server", bootstrap, "--cancel", "--topic", topic,
                                      "--wait", "--timeout-s", 30)
        assert code == 0, (code, stdout, stderr)
        for entry in moved:
            assert f"  {topic}-{entry['partition']}: NONE (0)" in stdout, stdout

        def reverted():
            views = partition_views_of(cluster, 1, topic)
            return all(sorted(views[p].replicas) == sorted(replicas) for p, replicas in original.items())

        cluster.wait_for("the cancelled partitions back on their original replicas", reverted, TIMEOUT_S)
        code, stdout, stderr = sluice("reassign", "--bootstrap-server", bootstrap, "--cancel", "--topic", topic)
        assert code == 0 and "no reassignment in progress" in stdout, (code, stdout, stderr)
    finally:
        node4.process.send_signal(signal.SIGCONT)


def partition_views_of(cluster, node_id, topic):
    return cluster.metadata(node_id).topics[topic]


# --- Refusals: one stderr line, non-zero exit, nothing submitted. ---

@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One broker (node id 0) with a topic "present" of 2 partitions."""
    directory = tmp_path_factory.mktemp("reassign-single")
    broker = Broker(directory / "data", directory / "broker.log")
    broker.start()
    try:
        from confluent_util import create_topic

        create_topic(broker, "present", partitions=2)
        yield broker
        broker.stop()
    finally:
        broker.kill()


@pytest.mark.parametrize("args, code, line", [
    (["--to-broker", "9"], 2, "sluice reassign: error: broker 9 is not in the cluster (brokers: [0])"),
    (["--to-broker", "0", "--topic", "absent"], 2, 'sluice reassign: error: unknown topic "absent" (the cluster has'),
    (["--to-broker", "0", "--from-broker", "7"], 2, "sluice reassign: error: broker 7 is not in the cluster"),
    (["--plan", "{plan}"], 2, "sluice reassign: error: {plan}: present-0: broker 5 is not in the cluster"),
    (["--plan", "{missing}"], 2, "sluice reassign: error: {missing}: No such file"),
    ([], 2, "sluice reassign: error: say what to move"),
])
def test_reassign_refusals_are_one_line(single, tmp_path, args, code, line):
    """A plan naming an unknown broker, topic or file is refused before anything is sent: exit code 2 and one
    stderr line that names the problem."""
    plan = tmp_path / "plan.json"
    plan.write_text('{"version":1,"partitions":[{"topic":"present","partition":0,"replicas":[5]}]}')
    names = {"plan": plan, "missing": tmp_path / "missing.json"}
    args = [arg.format(**names) for arg in args]
    result, stdout, stderr = sluice("reassign", "--bootstrap-server", single.bootstrap, *args, timeout_s=60)
    lines = stderr.strip().splitlines()
    assert result == code, (result, stdout, stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith(line.format(**names)), lines[0]
    assert "Submitted" not in stdout, stdout


def test_unreachable_cluster_is_one_line(tmp_path):
    """No broker listening: exit code 1 within the connection timeout, one line naming the address."""
    from conftest import free_port

    address = f"127.0.0.1:{free_port()}"
    for command in (["reassign", "--to-broker", "1"], ["elect-leaders", "--election-type", "preferred",
                                                         "--all-topic-partitions"]):
        started = time.monotonic()
        code, _, stderr = sluice(command[0], "--bootstrap-server", address, *command[1:], timeout_s=60)
        assert code == 1, (code, stderr)
        assert time.monotonic() - started < 30
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and address in lines[0] and "refused" in lines[0].lower(), lines
