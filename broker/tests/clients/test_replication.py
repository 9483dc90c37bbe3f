"""Replication (issue 16) on real processes: three brokers on loopback, topics of replication factor 3 with
min.insync.replicas=2, and faults — a leader SIGKILLed, a follower SIGSTOPped past replica.lag.time.max.ms, a broker's
Kafka link cut through proxies, all three SIGKILLed at once, two of three stopped.

Most scenarios run `NumberedLoad` — one idempotent acks=all confluent-kafka producer writing numbered messages to
every partition from a background thread, keeping every delivery report — and end with `check_log`: a consumer
reads every partition from offset 0 to its high watermark, and every acknowledged message must be there exactly
once at the offset its delivery report gave, offsets contiguous, each partition's messages in the order produced;
`check_replicas_agree` then compares the record batches of every replica's segment files on disk.

Waits poll with generous deadlines (the machine is shared); none is a sleep standing in for a check. The long runs
are for SLUICE_LONG=1 (scripts/test.sh --long): 20 leader kills instead of 3 (SLUICE_REPL_KILLS overrides either),
and more power cuts.
"""

import collections
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster_util import Cluster, produce_v3
from fault_proxy import LinkProxy

LONG = os.environ.get("SLUICE_LONG") == "1"
KILLS = int(os.environ.get("SLUICE_REPL_KILLS", "20" if LONG else "3"))
POWER_CUTS = 5 if LONG else 1
PARTITION_COUNT = 6
REPLICATION_FACTOR = 3
MIN_INSYNC = 2
TOPIC_CONFIG = {"min.insync.replicas": str(MIN_INSYNC)}
# Short enough that a test waits seconds for an ISR shrink, long enough that a loaded machine's scheduling pauses
# (hundreds of milliseconds) do not shrink it by themselves.
LAG_TIME_MS = 3000
# Every wait for the cluster to act (an election, an ISR change, acknowledgements resuming). Generous: a session
# timeout (9 s) plus an election is the normal case; the rest is room for a loaded machine.
WAIT_S = 90
# The producer's budget for one message: longer than any fault a test injects, so no message may time out.
MESSAGE_TIMEOUT_MS = 240_000
NOT_ENOUGH_REPLICAS = 19
NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
KCAT = shutil.which("kcat")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


class Steps:
    """Prints each step with the seconds since the test began (pytest -s shows where the time goes)."""

    def __init__(self):
        self.started = time.monotonic()

    def __call__(self, text):
        print(f"[{time.monotonic() - self.started:6.1f} s] {text}", flush=True)


@pytest.fixture
def make_cluster(tmp_path):
    """Starts a three-voter cluster with `extra_config` on every node; with `proxied`, every node advertises a
    LinkProxy in front of its Kafka port (clients and the other brokers go through it; the test's own Metadata
    requests do not). Every cluster is stopped with SIGTERM (exit 0 asserted) and every proxy stopped at the end."""
    clusters = []
    proxies = []

    def make(extra_config=None, proxied=False):
        directory = tmp_path / f"cluster{len(clusters)}"
        directory.mkdir()
        cluster = Cluster(directory, voter_count=3, extra_config=extra_config)
        cluster.proxies = {}
        if proxied:
            for node_id, node in cluster.nodes.items():
                proxy = LinkProxy(node.kafka_port)
                proxies.append(proxy)
                cluster.proxies[node_id] = proxy
                cluster.advertise(node_id, proxy.address)
        clusters.append(cluster)
        cluster.start()
        return cluster

    try:
        yield make
        for cluster in clusters:
            cluster.close()
    finally:
        for cluster in clusters:
            cluster.kill_all()
        for proxy in proxies:
            proxy.stop()


# --- Topics and what the brokers say of them ---

def create_topic(cluster, name, partitions=PARTITION_COUNT, config=TOPIC_CONFIG, assignment=None):
    """CreateTopics (replication factor 3, or `assignment`: a replica list per partition, leader first), then waits
    until every live node lists every replica of every partition in its ISR."""
    if assignment is None:
        topic = NewTopic(name, partitions, REPLICATION_FACTOR, config=config)
    else:
        # librdkafka wants the partition count with an assignment (-1 would mean the broker's default count).
        topic = NewTopic(name, len(assignment), replication_factor=-1, replica_assignment=assignment, config=config)
    client = cluster.admin()  # kept alive until the future resolves: a destroyed handle fails its requests
    client.create_topics([topic], request_timeout=30)[name].result(timeout=60)
    return wait_full_isr(cluster, name, partitions)


def views_of(cluster, topic, via=None):
    """{node_id: {partition: PartitionView}} of each node in `via` (default: every live node), asked directly."""
    return {node_id: cluster.metadata(node_id).topics.get(topic) for node_id in (via or cluster.live())}


def isr_text(views):
    return "; ".join(
        f"node {node_id}: " + (" ".join(f"p{p}:L{v.leader}/isr{sorted(v.isr)}" for p, v in sorted(parts.items()))
                               if parts else "no topic")
        for node_id, parts in views.items()
    )


def wait_isr(cluster, topic, partitions, want, what, via=None, timeout_s=WAIT_S):
    """Until every node of `via` shows, for every partition, a leader and an ISR for which `want(partition, view)`
    holds; returns the last views."""
    asked = via or cluster.live()
    last = {}

    def holds():
        views = views_of(cluster, topic, asked)
        last.clear()
        last.update(views)
        for parts in views.values():
            if parts is None or len(parts) != partitions:
                return False
            for partition, view in parts.items():
                if view.error != 0 or view.leader < 0 or not want(partition, view):
                    return False
        return views

    try:
        return cluster.wait_for(what, holds, timeout_s)
    except AssertionError as error:
        raise AssertionError(f"{error}\nlast ISR views: {isr_text(last)}") from None


def wait_full_isr(cluster, topic, partitions=PARTITION_COUNT, via=None, timeout_s=WAIT_S):
    return wait_isr(
        cluster, topic, partitions,
        lambda _, view: len(view.replicas) == REPLICATION_FACTOR and sorted(view.isr) == sorted(view.replicas),
        f"every replica of {topic} in its ISR", via, timeout_s,
    )


def leader_of(cluster, topic, partition):
    """The leader of `partition` as the first live node sees it."""
    return views_of(cluster, topic, cluster.live()[:1]).popitem()[1][partition].leader


# --- The load: numbered messages from one idempotent acks=all producer ---

class LoadFailed(Exception):
    """The load's producer failed (a fatal librdkafka error): raised through wait_for, which waits out only
    assertion errors."""


class NumberedLoad:
    """One idempotent acks=all confluent-kafka producer in a background thread writing, round-robin over the
    partitions, message n of partition p as value b"p:n" at about `rate_per_s` messages a second. Every delivery
    report is kept: `acknowledged[p][n]` is the offset of an acknowledged message, `errors` the failed ones."""

    def __init__(self, bootstrap, topic, partitions=PARTITION_COUNT, rate_per_s=1500, **settings):
        self.config = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 5,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
            "queue.buffering.max.messages": 500_000,
            "topic.metadata.refresh.interval.ms": 5000,
            **settings,
        }
        self.topic = topic
        self.partitions = partitions
        self.rate_per_s = rate_per_s
        self.lock = threading.Lock()
        self.sent = [0] * partitions
        self.acknowledged = [dict() for _ in range(partitions)]
        self.errors = []  # (partition, number, error code, text)
        self.remaining = None
        self.failure = None
        # How long the thread flushes when it stops: a message's whole budget, or nothing when a test aborts.
        self.flush_timeout_s = MESSAGE_TIMEOUT_MS / 1000 + 30
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="numbered-load", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _delivered(self, error, message):
        partition, number = (int(part) for part in message.value().split(b":"))
        with self.lock:
            if error is not None:
                self.errors.append((partition, number, error.code(), str(error)))
            else:
                self.acknowledged[partition][number] = message.offset()

    def _run(self):
        try:
            client = Producer(self.config)
            interval = 1.0 / self.rate_per_s
            next_at = time.monotonic()
            index = 0
            while not self.stopping.is_set():
                partition = index % self.partitions
                number = self.sent[partition]
                value = b"%d:%d" % (partition, number)
                try:
                    client.produce(self.topic, value=value, partition=partition, on_delivery=self._delivered)
                except BufferError:
                    client.poll(0.05)
                    continue
                with self.lock:
                    self.sent[partition] += 1
                index += 1
                now = time.monotonic()
                next_at = max(next_at + interval, now - 1.0)  # no burst to catch up after a stall
                client.poll(max(0.0, next_at - now))
            self.remaining = client.flush(self.flush_timeout_s)
            if self.remaining:
                client.purge()
                client.flush(5)
        except Exception as error:  # noqa: BLE001 - reported by the test thread
            self.failure = error

    def counts(self):
        with self.lock:
            return [len(numbers) for numbers in self.acknowledged]

    def wait_progress(self, cluster, partitions, count, what, timeout_s=WAIT_S):
        """Until each partition of `partitions` has `count` more acknowledgements than now; returns the seconds."""
        started = time.monotonic()
        before = self.counts()

        def advanced():
            if self.failure is not None or not self.thread.is_alive():
                raise LoadFailed(f"the load failed: {self.failure!r}; {self.summary()}")
            now = self.counts()
            return all(now[p] >= before[p] + count for p in partitions)

        try:
            cluster.wait_for(what, advanced, timeout_s)
        except AssertionError as error:
            raise AssertionError(f"{error}\nacknowledged then {before}, now {self.counts()}, sent {self.sent}, "
                                 f"errors {self.errors[:5]}") from None
        return time.monotonic() - started

    def stop(self):
        """Stops producing and waits for every message in flight (bounded by the message timeout)."""
        self.stopping.set()
        self.thread.join(timeout=MESSAGE_TIMEOUT_MS / 1000 + 60)
        assert not self.thread.is_alive(), "the load did not finish flushing"
        assert self.failure is None, f"the load failed: {self.failure!r}"

    def abort(self):
        """A failed test's way out: stops producing without waiting for what is in flight (a no-op once stopped)."""
        if self.thread.is_alive():
            self.flush_timeout_s = 0
            self.stopping.set()
            self.thread.join(timeout=60)

    def summary(self):
        return (f"sent {sum(self.sent)}, acknowledged {sum(self.counts())}, delivery errors {len(self.errors)}, "
                f"undelivered at the end {self.remaining}")


# --- The checks ---

def read_log(bootstrap, topic, partitions=PARTITION_COUNT, timeout_s=WAIT_S):
    """Every record of every partition from offset 0 to its high watermark (asked once, first): returns
    ({partition: high watermark}, {partition: [(offset, value)]})."""
    client = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "replication-check-unused",  # assign() only
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
        "isolation.level": "read_uncommitted",
    })
    try:
        marks = {}
        deadline = time.monotonic() + timeout_s
        for partition in range(partitions):
            while True:  # a client that has not yet seen the topic's metadata knows no partition of it
                try:
                    low, high = client.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                    break
                except KafkaException as error:
                    assert time.monotonic() < deadline, f"partition {partition}: no watermarks: {error}"
                    time.sleep(0.2)
            assert low == 0, f"partition {partition}: log start {low}, not 0"
            marks[partition] = high
        records = {partition: [] for partition in range(partitions)}
        client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(len(records[p]) >= marks[p] for p in range(partitions)):
                break
            for record in client.consume(num_messages=10000, timeout=0.5):
                assert record.error() is None, f"consume error: {record.error()}"
                if record.offset() < marks[record.partition()]:
                    records[record.partition()].append((record.offset(), record.value()))
        short = {p: (len(records[p]), marks[p]) for p in range(partitions) if len(records[p]) < marks[p]}
        assert not short, f"read (records, high watermark) {short} within {timeout_s} s"
        return marks, records
    finally:
        client.close()


def check_log(load, bootstrap, expect_no_errors=True):
    """What the consumer reads against what the producer was told: every acknowledged message present exactly once
    at its acknowledged offset, below the high watermark; offsets contiguous from 0; no message twice; each
    partition's messages in the order produced (idempotence keeps it); nothing that was never sent. Returns a
    one-line summary."""
    if expect_no_errors:
        assert not load.errors, f"{len(load.errors)} delivery errors, e.g. {load.errors[:5]}"
        assert load.remaining == 0, f"{load.remaining} messages undelivered at the end; {load.summary()}"
    marks, records = read_log(bootstrap, load.topic, load.partitions)
    unacknowledged_present = 0
    for partition in range(load.partitions):
        items = records[partition]
        offsets = [offset for offset, _ in items]
        assert offsets == list(range(len(items))), f"partition {partition}: offsets not contiguous from 0: " + (
            f"first break at {next(i for i, o in enumerate(offsets) if o != i)}")
        numbers = []
        for offset, value in items:
            owner, number = (int(part) for part in value.split(b":"))
            assert owner == partition, f"partition {partition} offset {offset} holds {value!r}"
            numbers.append(number)
        repeated = [number for number, times in collections.Counter(numbers).items() if times > 1]
        assert not repeated, f"partition {partition}: {len(repeated)} messages twice, e.g. {repeated[:5]}"
        disorder = [(numbers[i], numbers[i + 1]) for i in range(len(numbers) - 1) if numbers[i + 1] <= numbers[i]]
        assert not disorder, f"partition {partition}: out of production order, e.g. {disorder[:5]}"
        assert not numbers or numbers[-1] < load.sent[partition], f"partition {partition}: unsent {numbers[-1]}"
        where = {number: offset for offset, number in zip(offsets, numbers)}
        acknowledged = load.acknowledged[partition]
        no_offset = [number for number, offset in acknowledged.items() if offset < 0]
        assert not no_offset, f"partition {partition}: {len(no_offset)} acknowledged without an offset"
        lost = [number for number in acknowledged if number not in where]
        assert not lost, (f"partition {partition}: {len(lost)} acknowledged messages missing, e.g. "
                          f"{[(n, acknowledged[n]) for n in sorted(lost)[:5]]}; high watermark {marks[partition]}")
        moved = [(number, offset, where[number]) for number, offset in acknowledged.items() if where[number] != offset]
        assert not moved, f"partition {partition}: (message, acknowledged offset, found at) {moved[:5]}"
        unacknowledged_present += len(numbers) - len(acknowledged)
    return (f"{sum(len(items) for items in records.values())} records read, {sum(load.counts())} acknowledged, "
            f"{unacknowledged_present} present but never acknowledged; {load.summary()}")


def replica_batches(node, topic, partition):
    """[(base offset, last offset delta, CRC)] of the v2 batches in a replica's segment files, in offset order;
    stops at the first incomplete or zero batch (the unwritten tail of an active segment)."""
    directory = node.data_dir / f"{topic}-{partition}"
    batches = []
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        position = 0
        while position + 61 <= len(data):
            base_offset, length = struct.unpack_from(">qi", data, position)
            if length <= 0 or position + 12 + length > len(data):
                break
            last_delta = struct.unpack_from(">i", data, position + 23)[0]
            crc = struct.unpack_from(">I", data, position + 17)[0]
            batches.append((base_offset, last_delta, crc))
            position += 12 + length
    return batches


def check_replicas_agree(cluster, topic, partitions=PARTITION_COUNT, timeout_s=WAIT_S):
    """Once production has stopped, every replica's segment files come to hold the same batches (base offset, last
    offset delta, CRC), contiguous from offset 0: followers copy the leader's log byte for byte."""
    def agree():
        differences = []
        for partition in range(partitions):
            logs = {node_id: replica_batches(node, topic, partition) for node_id, node in cluster.nodes.items()}
            distinct = {tuple(batches) for batches in logs.values()}
            if len(distinct) != 1:
                ends = {node_id: (batches[-1][0] + batches[-1][1] + 1 if batches else 0)
                        for node_id, batches in logs.items()}
                differences.append(f"p{partition}: batch counts {[(n, len(b)) for n, b in logs.items()]}, ends {ends}")
                continue
            batches = distinct.pop()
            expected = 0
            for base_offset, last_delta, _ in batches:
                assert base_offset == expected, f"partition {partition}: batch at {base_offset}, expected {expected}"
                expected = base_offset + last_delta + 1
        assert not differences, "; ".join(differences)  # "not yet" to wait_for, and its last word at the deadline
        return True

    cluster.wait_for(f"every replica of {topic} holds the same batches", agree, timeout_s)


# --- a. A leader killed with SIGKILL, K times ---

def test_leader_sigkill_loses_nothing_acknowledged(make_cluster):
    """KILLS times: SIGKILL the leader of one partition (a different partition each time) while the producer goes
    on; a survivor from the ISR takes over and acknowledgements resume; the killed broker restarts and rejoins every
    ISR before the next kill. Nothing acknowledged is lost, moved or duplicated, and the replicas agree."""
    step = Steps()
    cluster = make_cluster()
    topic = "repl-leader-kill"
    create_topic(cluster, topic)
    step(f"topic {topic}: {PARTITION_COUNT} partitions, RF {REPLICATION_FACTOR}, min.insync {MIN_INSYNC}")
    load = NumberedLoad(cluster.bootstrap(), topic).start()
    try:
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "first acknowledgements")
        for kill in range(KILLS):
            partition = kill % PARTITION_COUNT
            leader = leader_of(cluster, topic, partition)
            cluster.kill(leader)
            step(f"kill {kill + 1}/{KILLS}: SIGKILL node {leader}, leader of partition {partition}")
            wait_isr(cluster, topic, PARTITION_COUNT, lambda _, view, gone=leader: view.leader != gone,
                     f"every partition led by a survivor of node {leader}")
            elapsed = load.wait_progress(cluster, range(PARTITION_COUNT), 50, "acknowledgements after the kill")
            step(f"  new leaders elected; every partition acknowledging again (+{elapsed:.1f} s)")
            cluster.restart(leader)
            wait_full_isr(cluster, topic)
            step(f"  node {leader} restarted and back in every ISR; {load.summary()}")
        load.stop()
    finally:
        load.abort()
    step(f"load stopped: {load.summary()}")
    step(check_log(load, cluster.bootstrap()))
    check_replicas_agree(cluster, topic)
    step("replicas agree")


# --- a'. A leader that hangs (SIGSTOP) past the session timeout ---

def test_hung_leader_is_fenced_and_rejoins(make_cluster):
    """SIGSTOP of a broker that leads partitions (and is not the active controller): its process still holds its
    sockets, so nothing refuses a connection and only the session timeout (9 s) can fence it. The survivors take
    over from the ISR and acknowledge again; after SIGCONT the old leader finds itself fenced, follows, drops
    whatever it had appended that the new leaders do not have, and rejoins every ISR. Nothing acknowledged is lost
    and the replicas agree."""
    step = Steps()
    cluster = make_cluster()
    topic = "repl-hung-leader"
    views = create_topic(cluster, topic)
    controller = cluster.metadata(1).controller
    hung = next(node_id for node_id in cluster.nodes if node_id != controller)
    led = [partition for partition, view in views[controller].items() if view.leader == hung]
    assert led, f"node {hung} leads nothing: {isr_text(views)}"
    load = NumberedLoad(cluster.bootstrap(), topic).start()
    try:
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "first acknowledgements")
        cluster.pause(hung)
        paused_at = time.monotonic()
        step(f"SIGSTOP node {hung}, leader of partitions {led} (controller {controller})")
        survivors = [node_id for node_id in cluster.nodes if node_id != hung]
        wait_isr(cluster, topic, PARTITION_COUNT, lambda _, view: view.leader != hung and hung not in view.isr,
                 f"node {hung} fenced and out of every ISR", via=survivors)
        step(f"node {hung} fenced, new leaders elected {time.monotonic() - paused_at:.1f} s after the pause")
        elapsed = load.wait_progress(cluster, range(PARTITION_COUNT), 100, "acknowledgements after the fence")
        step(f"every partition acknowledging again (+{elapsed:.1f} s)")
        cluster.resume(hung)
        step(f"SIGCONT node {hung}")
        wait_full_isr(cluster, topic)
        step(f"node {hung} back in every ISR")
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "acknowledgements with three in the ISR")
        load.stop()
    finally:
        if cluster.nodes[hung].paused:
            cluster.resume(hung)
        load.abort()
    step(check_log(load, cluster.bootstrap()))
    check_replicas_agree(cluster, topic)
    step("replicas agree")


# --- a''. The active controller hangs, with short (tuned) timeouts ---

# failover_figures.py's tuned timeouts: a session of 2 s, heartbeats every 0.5 s, elections after 0.3 s.
TUNED_TIMEOUTS = {"broker.session.timeout.ms": 2000, "broker.heartbeat.interval.ms": 500,
                  "controller.quorum.election.timeout.ms": 300}


@pytest.mark.parametrize("timeouts", [{}, TUNED_TIMEOUTS], ids=["default-timeouts", "tuned-timeouts"])
def test_hung_controller_is_the_only_broker_fenced(make_cluster, timeouts):
    """With Kafka's timeouts and with tuned ones (session 2 s), SIGSTOP of the active controller, which also leads
    partitions: a survivor
    becomes controller and fences the hung broker — and only it. The live brokers' heartbeats must reach the new
    controller within their session, so no live broker is fenced (a fence of every broker in turn would shrink every
    ISR to one member). Writes go on, the hung node rejoins after SIGCONT, nothing acknowledged is lost. The
    controllers' "missed its session" lines name every broker they fenced for silence.

    On the wiring commit the tuned case always fails, and the default one fails when the hung controller is the
    first voter listed (node 1): a heartbeat that knows no leader starts at the first voter, and one attempt on a
    hung voter blocks for its 5 s read timeout, past the heartbeat's own deadline."""
    step = Steps()
    cluster = make_cluster(timeouts)
    topic = "repl-hung-controller"
    create_topic(cluster, topic)
    hung = cluster.metadata(1).controller
    survivors = [node_id for node_id in cluster.nodes if node_id != hung]
    load = NumberedLoad(cluster.bootstrap(), topic).start()
    try:
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "first acknowledgements")
        cluster.pause(hung)
        step(f"SIGSTOP node {hung}, the active controller")
        wait_isr(cluster, topic, PARTITION_COUNT, lambda _, view: view.leader != hung and hung not in view.isr,
                 f"node {hung} fenced and out of every ISR", via=survivors)
        def new_controller():
            seen = {cluster.metadata(node_id).controller for node_id in survivors}
            return seen.pop() if len(seen) == 1 and seen <= set(survivors) else None

        controller = cluster.wait_for("both survivors name the same new controller", new_controller, WAIT_S)
        step(f"node {hung} fenced; node {controller} is the controller")
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "acknowledgements after the fence")
        cluster.resume(hung)
        step(f"SIGCONT node {hung}")
        wait_full_isr(cluster, topic)
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "acknowledgements with three in the ISR")
        load.stop()
    finally:
        if cluster.nodes[hung].paused:
            cluster.resume(hung)
        load.abort()
    fenced = collections.defaultdict(list)
    for node_id in survivors:
        for line in cluster.nodes[node_id].log_text().splitlines():
            found = re.search(r"broker (\d+) missed its session", line)
            if found:
                fenced[int(found.group(1))].append(f"node {node_id}: {line.strip()}")
    step(f"fenced for silence: {dict(fenced)}")
    wrongly = {broker: lines for broker, lines in fenced.items() if broker != hung}
    assert not wrongly, f"live brokers fenced for a missed session: {wrongly}"
    step(check_log(load, cluster.bootstrap()))
    check_replicas_agree(cluster, topic)


# --- b. A follower stopped (SIGSTOP) for longer than replica.lag.time.max.ms ---

def paused_cluster(make_cluster, topic, step):
    """Shared by (b) and (f): a cluster with a short replica.lag.time.max.ms and a session timeout (60 s) long
    enough that the paused node is not fenced meanwhile, so only lag can take it out of an ISR; and a topic that
    node follows but leads nowhere (nor is it the active controller). Returns (cluster, paused, the other two)."""
    cluster = make_cluster({"replica.lag.time.max.ms": LAG_TIME_MS, "broker.session.timeout.ms": 60_000})
    controller = cluster.metadata(1).controller
    paused = max(node_id for node_id in cluster.nodes if node_id != controller)
    leaders = [node_id for node_id in cluster.nodes if node_id != paused]
    # Leaders alternate between the other two; the paused node is the last replica of every partition.
    assignment = [[leaders[p % 2], leaders[(p + 1) % 2], paused] for p in range(PARTITION_COUNT)]
    create_topic(cluster, topic, assignment=assignment)
    step(f"topic {topic} with replicas {assignment}; controller {controller}; node {paused} will be paused")
    return cluster, paused, leaders


def test_paused_follower_leaves_and_rejoins_the_isr(make_cluster):
    """A follower stopped with SIGSTOP past replica.lag.time.max.ms (3 s) leaves every ISR while still registered
    (its session timeout is 60 s), acks=all writes go on with min.insync=2, and after SIGCONT it catches up and
    rejoins every ISR. Nothing acknowledged is lost."""
    step = Steps()
    topic = "repl-paused-follower"
    cluster, paused, leaders = paused_cluster(make_cluster, topic, step)
    load = NumberedLoad(cluster.bootstrap(leaders), topic).start()
    try:
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "first acknowledgements")
        cluster.pause(paused)
        paused_at = time.monotonic()
        step(f"SIGSTOP node {paused}")
        wait_isr(cluster, topic, PARTITION_COUNT, lambda _, view: sorted(view.isr) == sorted(leaders),
                 f"node {paused} out of every ISR", via=leaders, timeout_s=45)
        shrunk_after = time.monotonic() - paused_at
        for node_id in leaders:
            brokers = cluster.metadata(node_id).brokers
            assert paused in brokers, f"node {paused} was fenced (not lag): node {node_id} lists {sorted(brokers)}"
        step(f"ISR {sorted(leaders)} on both live nodes {shrunk_after:.1f} s after the pause; node {paused} "
             f"still registered")
        elapsed = load.wait_progress(cluster, range(PARTITION_COUNT), 200, "acks=all with two in the ISR")
        step(f"acks=all goes on with ISR of 2 (200 more per partition in {elapsed:.1f} s)")
        cluster.resume(paused)
        step(f"SIGCONT node {paused}")
        wait_full_isr(cluster, topic)
        step(f"node {paused} back in every ISR (seen by all three)")
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "acks=all with three in the ISR")
        load.stop()
    finally:
        if cluster.nodes[paused].paused:
            cluster.resume(paused)
        load.abort()
    step(check_log(load, cluster.bootstrap()))
    check_replicas_agree(cluster, topic)
    step("replicas agree")


# --- c. A broker's Kafka link cut (its proxy silent, its own fetches through the others' proxies silent) ---

def test_link_cut_broker_rejoins_the_isr(make_cluster):
    """Every broker advertises a LinkProxy. Cutting one broker's Kafka link — its proxy silent, and its own
    connections through the other proxies silent — for longer than replica.lag.time.max.ms: it leaves the ISR of
    every partition it follows (their leaders keep taking writes it cannot fetch) while it stays registered (the
    quorum port is not cut), and acks=all goes on for those partitions with two in the ISR. The partitions it leads
    take no writes meanwhile (no client reaches it), so, as in Kafka, their followers count as caught up and may
    stay in the ISR; those writes wait in the producer. After the link heals every ISR is whole again and every
    partition acknowledges. Nothing acknowledged is lost."""
    step = Steps()
    cluster = make_cluster({"replica.lag.time.max.ms": LAG_TIME_MS}, proxied=True)
    topic = "repl-link-cut"
    views = create_topic(cluster, topic)
    cut = 3
    others = [node_id for node_id in cluster.nodes if node_id != cut]
    leaders = {partition: view.leader for partition, view in views[others[0]].items()}
    led_by_cut = [p for p, leader in leaders.items() if leader == cut]
    led_by_others = [p for p, leader in leaders.items() if leader != cut]
    step(f"topic {topic}: leaders {leaders}; node {cut}'s link will be cut")
    load = NumberedLoad(cluster.bootstrap(others), topic).start()
    try:
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "first acknowledgements")
        pid = cluster.nodes[cut].pid
        cluster.proxies[cut].cut()
        for node_id in others:
            cluster.proxies[node_id].cut(origins={pid})
        step(f"cut node {cut}'s Kafka link")

        def isolated(partition, view):
            if leaders[partition] == cut:
                return view.leader == cut
            return view.leader == leaders[partition] and cut not in view.isr and len(view.isr) == 2

        views = wait_isr(cluster, topic, PARTITION_COUNT, isolated, f"node {cut} out of the ISRs it follows",
                         timeout_s=60)
        for node_id in cluster.nodes:
            assert cut in cluster.metadata(node_id).brokers, f"node {cut} was fenced; the quorum port was not cut"
        step(f"node {cut} out of the ISR of partitions {led_by_others}, still registered; {isr_text(views)}")
        if led_by_others:
            elapsed = load.wait_progress(cluster, led_by_others, 200, "acks=all on the partitions the others lead")
            step(f"acks=all goes on for partitions {led_by_others} ({elapsed:.1f} s for 200 more each)")
        cut_counts = {node_id: proxy.cut_count for node_id, proxy in cluster.proxies.items()}
        for proxy in cluster.proxies.values():
            proxy.heal()
        step(f"healed (connections stopped by the cut, per proxy: {cut_counts})")
        wait_full_isr(cluster, topic)
        step("every ISR whole again")
        load.wait_progress(cluster, range(PARTITION_COUNT), 100, "acks=all on every partition after the heal")
        load.stop()
    finally:
        for proxy in cluster.proxies.values():
            proxy.heal()
        load.abort()
    step(check_log(load, cluster.bootstrap()))
    check_replicas_agree(cluster, topic)
    step("replicas agree")


# --- d. A power cut: all three SIGKILLed at once ---

def test_power_cut_keeps_everything_acknowledged(make_cluster):
    """POWER_CUTS times: SIGKILL all three brokers at once mid-production and start them again together. Under the
    default flush policy (fsync: acks=all waits for fdatasync on every ISR member the high watermark counted),
    everything acknowledged before the cut is there afterwards, at its offset, once."""
    step = Steps()
    cluster = make_cluster()
    topic = "repl-power-cut"
    create_topic(cluster, topic)
    load = NumberedLoad(cluster.bootstrap(), topic).start()
    try:
        load.wait_progress(cluster, range(PARTITION_COUNT), 200, "first acknowledgements")
        for cut in range(POWER_CUTS):
            killed = cluster.power_cut()
            step(f"power cut {cut + 1}/{POWER_CUTS}: SIGKILL {killed} at once; acknowledged {sum(load.counts())}")
            cluster.restart_many(killed)
            cluster.wait_for_brokers(killed)
            step("all three restarted and registered")
            elapsed = load.wait_progress(cluster, range(PARTITION_COUNT), 100, "acknowledgements after the cut",
                                         timeout_s=120)
            step(f"acknowledging again ({elapsed:.1f} s)")
            wait_full_isr(cluster, topic)
            step("every ISR whole")
        load.stop()
    finally:
        load.abort()
    step(check_log(load, cluster.bootstrap()))
    check_replicas_agree(cluster, topic)
    step("replicas agree")


# --- e. min.insync.replicas with two of three brokers stopped ---

def confluent_produce_once(bootstrap, topic, partition, acks):
    """One message through confluent-kafka without retries; returns (error code or None, offset)."""
    client = Producer({"bootstrap.servers": bootstrap, "acks": acks, "retries": 0, "message.timeout.ms": 30000,
                       "enable.idempotence": False})
    outcome = []
    client.produce(topic, value=b"once-%s" % acks.encode(), partition=partition,
                   on_delivery=lambda error, message: outcome.append(
                       (error.code() if error is not None else None, message.offset())))
    assert client.flush(60) == 0, "not delivered within 60 s"
    return outcome[0]


def test_min_insync_refuses_acks_all_with_one_replica(make_cluster):
    """With two of three brokers stopped (SIGTERM: each is fenced by the controller, which still has a quorum, and
    leaves every ISR), the survivor leads every partition with an ISR of one: acks=all is refused with
    NOT_ENOUGH_REPLICAS (19) or NOT_ENOUGH_REPLICAS_AFTER_APPEND (20), Kafka's answers, while acks=1 is accepted.
    After both return and rejoin, acks=all is accepted again and the acks=1 writes are still there."""
    step = Steps()
    cluster = make_cluster()
    topic = "repl-min-insync"
    partitions = 3
    create_topic(cluster, topic, partitions)
    for partition in range(partitions):
        leader = leader_of(cluster, topic, partition)
        error, _ = produce_v3(cluster.nodes[leader].bootstrap, topic, partition, [b"before"], acks=-1)
        assert error == 0, f"partition {partition}: acks=all with a full ISR answered {error}"
    step("acks=all accepted with three in the ISR")
    keep = cluster.metadata(1).controller
    stopped = [node_id for node_id in cluster.nodes if node_id != keep]
    for node_id in stopped:
        cluster.terminate(node_id)
        step(f"SIGTERM node {node_id}: exited 0")
    views = wait_isr(cluster, topic, partitions, lambda _, view: view.leader == keep and view.isr == [keep],
                     f"node {keep} alone in every ISR", via=[keep])
    step(f"node {keep} leads every partition alone: {isr_text(views)}")
    survivor = cluster.nodes[keep].bootstrap
    for partition in range(partitions):
        error, _ = produce_v3(survivor, topic, partition, [b"refused"], acks=-1)
        assert error in (NOT_ENOUGH_REPLICAS, NOT_ENOUGH_REPLICAS_AFTER_APPEND), (
            f"partition {partition}: acks=all with an ISR of 1 < min.insync {MIN_INSYNC} answered {error}")
        error, offset = produce_v3(survivor, topic, partition, [b"acks-1"], acks=1)
        assert error == 0 and offset >= 1, f"partition {partition}: acks=1 answered {error} (offset {offset})"
    step("raw Produce: acks=all refused (19/20), acks=1 accepted, on every partition")
    error, _ = confluent_produce_once(survivor, topic, 0, "all")
    assert error in (KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND), error
    error, offset = confluent_produce_once(survivor, topic, 0, "1")
    assert error is None and offset >= 0, (error, offset)
    step(f"confluent-kafka: acks=all fails with {KafkaError.NOT_ENOUGH_REPLICAS}/20, acks=1 delivered")
    cluster.restart_many(stopped)
    wait_full_isr(cluster, topic, partitions)
    step("both restarted and back in every ISR")
    for partition in range(partitions):
        leader = leader_of(cluster, topic, partition)
        error, _ = produce_v3(cluster.nodes[leader].bootstrap, topic, partition, [b"after"], acks=-1)
        assert error == 0, f"partition {partition}: acks=all after the return answered {error}"
    marks, records = read_log(cluster.bootstrap(), topic, partitions)
    for partition in range(partitions):
        values = [value for _, value in records[partition]]
        expected = [b"before", b"acks-1"] + ([b"once-1"] if partition == 0 else []) + [b"after"]
        assert values == expected, f"partition {partition}: {values}"
    step("the log holds the acks=1 writes and nothing refused")
    check_replicas_agree(cluster, topic, partitions)


# --- e'. A consumer group's committed offsets outlive its coordinator's broker ---

def test_committed_offsets_outlive_the_coordinator(make_cluster):
    """A group commits offsets; the broker coordinating it is SIGKILLed and stays down. As in Kafka (whose
    __consumer_offsets has offsets.topic.replication.factor=3), a survivor becomes the coordinator and the same
    offsets are read back."""
    step = Steps()
    cluster = make_cluster()
    topic = "repl-offsets"
    group = "repl-offsets-group"
    partitions = 3
    create_topic(cluster, topic, partitions)
    committed = [TopicPartition(topic, partition, 10 + partition) for partition in range(partitions)]
    client = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": group, "enable.auto.commit": False})
    try:
        client.assign([TopicPartition(topic, partition, 0) for partition in range(partitions)])
        deadline = time.monotonic() + WAIT_S
        while True:  # the first commit creates __consumer_offsets; COORDINATOR_NOT_AVAILABLE meanwhile
            try:
                client.commit(offsets=committed, asynchronous=False)
                break
            except KafkaException as error:
                assert time.monotonic() < deadline, f"no commit within {WAIT_S} s: {error}"
                time.sleep(0.5)
    finally:
        client.close()
    admin = cluster.admin()
    coordinator = admin.describe_consumer_groups([group])[group].result(timeout=30).coordinator.id
    offsets_topic = cluster.metadata(coordinator).topics["__consumer_offsets"]
    step(f"offsets committed; coordinator node {coordinator}; __consumer_offsets replication factors "
         f"{sorted(collections.Counter(len(view.replicas) for view in offsets_topic.values()).items())}")
    cluster.kill(coordinator)
    step(f"SIGKILL node {coordinator}")
    survivors = cluster.live()
    reader = Consumer({"bootstrap.servers": cluster.bootstrap(survivors), "group.id": group,
                       "enable.auto.commit": False})
    try:
        def read_back():
            try:
                offsets = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
            except KafkaException as error:  # not yet: no coordinator answered
                raise AssertionError(str(error)) from None
            return [(tp.partition, tp.offset) for tp in offsets] == [(tp.partition, tp.offset) for tp in committed]

        cluster.wait_for(f"group {group}'s offsets from a survivor of node {coordinator}", read_back, WAIT_S)
    finally:
        reader.close()
    step("the offsets read back through a new coordinator")


# --- f. kcat -L shows the ISR shrink and grow ---

KCAT_PARTITION = re.compile(r"partition (\d+), leader (-?\d+), replicas: ([\d,]*), isrs: ([\d,]*)")


def kcat_isrs(bootstrap, topic):
    """{partition: (leader, [replicas], [isr])} from `kcat -L -t topic`."""
    result = subprocess.run([KCAT, "-L", "-b", bootstrap, "-t", topic, "-m", "10"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = {}
    for match in KCAT_PARTITION.finditer(result.stdout):
        partition, leader, replicas, isr = match.groups()
        parsed[int(partition)] = (int(leader), [int(n) for n in replicas.split(",") if n],
                                  [int(n) for n in isr.split(",") if n])
    return parsed


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
def test_kcat_shows_isr_shrink_and_grow(make_cluster):
    """kcat -L (librdkafka 2.0.2's Metadata) shows the ISR of every partition without the paused follower while it
    is stopped past replica.lag.time.max.ms under load, and with it again after SIGCONT."""
    step = Steps()
    topic = "repl-kcat-isr"
    cluster, paused, leaders = paused_cluster(make_cluster, topic, step)
    load = NumberedLoad(cluster.bootstrap(leaders), topic, rate_per_s=300).start()
    try:
        load.wait_progress(cluster, range(PARTITION_COUNT), 20, "first acknowledgements")
        full = kcat_isrs(cluster.nodes[leaders[0]].bootstrap, topic)
        assert len(full) == PARTITION_COUNT and all(sorted(isr) == [1, 2, 3] for _, _, isr in full.values()), full
        cluster.pause(paused)
        step(f"SIGSTOP node {paused}; kcat -L before: {full}")
        for node_id in leaders:
            shrunk = cluster.wait_for(
                f"kcat -L via node {node_id} shows node {paused} out of every ISR",
                lambda via=node_id: (lambda view: len(view) == PARTITION_COUNT and all(
                    sorted(isr) == sorted(leaders) for _, _, isr in view.values()) and view)(
                    kcat_isrs(cluster.nodes[via].bootstrap, topic)),
                45)
            step(f"kcat -L via node {node_id}: {shrunk}")
        cluster.resume(paused)
        step(f"SIGCONT node {paused}")
        for node_id in cluster.nodes:
            grown = cluster.wait_for(
                f"kcat -L via node {node_id} shows every ISR whole",
                lambda via=node_id: (lambda view: len(view) == PARTITION_COUNT and all(
                    sorted(isr) == [1, 2, 3] for _, _, isr in view.values()) and view)(
                    kcat_isrs(cluster.nodes[via].bootstrap, topic)),
                WAIT_S)
            step(f"kcat -L via node {node_id}: {grown}")
        load.stop()
    finally:
        if cluster.nodes[paused].paused:
            cluster.resume(paused)
        load.abort()
    step(check_log(load, cluster.bootstrap()))


# --- g. Real clients across a leader kill ---

def test_kafka_python_clients_ride_a_leader_kill(make_cluster):
    """kafka-python 3.0: an idempotent acks=all producer and a consumer-group member keep going while the leader of
    a partition is SIGKILLed and later restarted. Every send succeeds (the client retries retriable errors itself),
    every exception poll() raised is retriable, the group member receives every acknowledged message, and the log
    holds each exactly once at its acknowledged offset."""
    from kafka import KafkaConsumer, KafkaProducer

    step = Steps()
    cluster = make_cluster()
    topic = "repl-kafka-python"
    partitions = 3
    create_topic(cluster, topic, partitions)
    bootstrap = cluster.bootstrap().split(",")
    sender = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                           retries=2**31 - 1, delivery_timeout_ms=MESSAGE_TIMEOUT_MS, request_timeout_ms=30000,
                           retry_backoff_ms=100, max_in_flight_requests_per_connection=5, metadata_max_age_ms=5000)
    acknowledged = collections.defaultdict(dict)
    send_failures = []
    consumed = collections.defaultdict(list)
    poll_errors = []
    stopping = threading.Event()
    lock = threading.Lock()

    def on_sent(partition, number):
        def record(metadata):
            with lock:
                acknowledged[partition][number] = metadata.offset
        return record

    def on_failed(partition, number):
        def record(error):
            with lock:
                send_failures.append((partition, number, repr(error)))
        return record

    def consume():
        reader = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="repl-kafka-python-group",
                               auto_offset_reset="earliest", enable_auto_commit=True, fetch_max_wait_ms=100,
                               metadata_max_age_ms=5000, request_timeout_ms=40000)
        try:
            while not stopping.is_set():
                try:
                    for tp, batch in reader.poll(timeout_ms=200).items():
                        with lock:
                            consumed[tp.partition].extend((r.offset, int(r.value.split(b":")[1])) for r in batch)
                except Exception as error:  # noqa: BLE001 - classified by the test
                    poll_errors.append((type(error).__name__, getattr(error, "retriable", False), str(error)))
                    time.sleep(0.2)
        finally:
            reader.close()

    reader_thread = threading.Thread(target=consume, daemon=True)
    reader_thread.start()
    sent = [0] * partitions
    futures = []

    def send_for(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for partition in range(partitions):
                number = sent[partition]
                future = sender.send(topic, value=b"%d:%d" % (partition, number), partition=partition)
                future.add_callback(on_sent(partition, number))
                future.add_errback(on_failed(partition, number))
                futures.append(future)
                sent[partition] += 1
            time.sleep(0.005)

    try:
        send_for(3)
        leader = leader_of(cluster, topic, 0)
        cluster.kill(leader)
        step(f"SIGKILL node {leader}, leader of partition 0; sent {sum(sent)}")
        send_for(20)
        wait_isr(cluster, topic, partitions, lambda _, view: view.leader != leader, f"survivors lead after {leader}")
        send_for(3)
        cluster.restart(leader)
        wait_full_isr(cluster, topic, partitions)
        step(f"node {leader} back in every ISR")
        send_for(3)
        sender.flush(timeout=MESSAGE_TIMEOUT_MS / 1000 + 30)
        assert all(future.is_done for future in futures), "sends still pending after the flush"
        step(f"sent {sum(sent)}, acknowledged {sum(len(a) for a in acknowledged.values())}, failed "
             f"{len(send_failures)}")
        assert not send_failures, f"{len(send_failures)} sends failed, e.g. {send_failures[:5]}"

        def received_all():
            with lock:
                return all(set(acknowledged[p]) <= {number for _, number in consumed[p]} for p in range(partitions))

        cluster.wait_for("the group member received every acknowledged message", received_all, WAIT_S)
    finally:
        stopping.set()
        reader_thread.join(timeout=60)
        sender.close(timeout=30)
    step(f"consumed {sum(len(c) for c in consumed.values())}; poll() raised {len(poll_errors)}: {poll_errors[:5]}")
    not_retriable = [error for error in poll_errors if not error[1]]
    assert not not_retriable, f"poll() raised errors that are not retriable: {not_retriable[:5]}"
    for partition in range(partitions):
        got = dict((number, offset) for offset, number in consumed[partition])
        moved = [(n, o, got[n]) for n, o in acknowledged[partition].items() if got[n] != o]
        assert not moved, f"partition {partition}: (message, acknowledged offset, consumed at) {moved[:5]}"
    marks, records = read_log(cluster.bootstrap(), topic, partitions)
    for partition in range(partitions):
        numbers = [int(value.split(b":")[1]) for _, value in records[partition]]
        assert len(numbers) == len(set(numbers)), f"partition {partition}: a message twice in the log"
        where = {number: offset for (offset, _), number in zip(records[partition], numbers)}
        lost = [n for n, o in acknowledged[partition].items() if where.get(n) != o]
        assert not lost, f"partition {partition}: acknowledged but missing or moved {lost[:5]}"
    step("every acknowledged message in the log once, at its offset")


def kafkajs_modules():
    """node_modules holding kafkajs (scripts/compat.sh installs it into target/compat/node), or None."""
    common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                            capture_output=True, text=True)
    candidates = [REPO / "target" / "compat" / "node" / "node_modules"]
    if common.returncode == 0:
        candidates.append(Path(common.stdout.strip()).parent / "target" / "compat" / "node" / "node_modules")
    for candidate in candidates:
        if (candidate / "kafkajs" / "package.json").exists():
            return candidate
    return None


@pytest.mark.skipif(shutil.which("node") is None or kafkajs_modules() is None,
                    reason="KafkaJS is not installed (scripts/compat.sh kafkajs installs it)")
def test_kafkajs_clients_ride_a_leader_kill(make_cluster):
    """KafkaJS 2.2.4: an idempotent acks=all producer and a consumer-group member (kafkajs_failover.js) keep going
    while a partition's leader is SIGKILLed and restarted: every send resolves, every acknowledged message is
    consumed, and the log holds each exactly once at its acknowledged offset."""
    step = Steps()
    cluster = make_cluster()
    topic = "repl-kafkajs"
    partitions = 3
    create_topic(cluster, topic, partitions)
    environment = dict(os.environ, NODE_PATH=str(kafkajs_modules()))
    script = HERE / "kafkajs_failover.js"
    process = subprocess.Popen(["node", str(script), cluster.bootstrap(), topic, str(partitions)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment)
    lines = []  # what the script printed, read on a thread so that waits can poll it
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()

    def acknowledged_count():
        progress = [int(line.split()[1]) for line in list(lines) if line.startswith("progress ")]
        return progress[-1] if progress else 0

    def wait_progress(count, what):
        before = acknowledged_count()

        def advanced():
            if process.poll() is not None:
                raise LoadFailed(f"kafkajs_failover.js ended: {lines[-5:]}")
            return acknowledged_count() >= before + count

        cluster.wait_for(what, advanced, WAIT_S)

    try:
        cluster.wait_for("kafkajs_failover.js ready", lambda: "ready\n" in lines or process.poll() is not None, 60)
        assert process.poll() is None, f"kafkajs_failover.js ended: {lines[-5:]} {process.stderr.read()[-2000:]}"
        leader = leader_of(cluster, topic, 0)
        cluster.kill(leader)
        step(f"SIGKILL node {leader}, leader of partition 0; KafkaJS acknowledged {acknowledged_count()}")
        wait_isr(cluster, topic, partitions, lambda _, view: view.leader != leader, f"survivors lead after {leader}")
        wait_progress(100, "KafkaJS acknowledging after the kill")
        step(f"KafkaJS acknowledging again: {acknowledged_count()}")
        cluster.restart(leader)
        wait_full_isr(cluster, topic, partitions)
        wait_progress(100, "KafkaJS acknowledging after the restart")
        step(f"node {leader} back in every ISR; KafkaJS acknowledged {acknowledged_count()}")
        process.stdin.write("stop\n")
        process.stdin.flush()
        process.wait(timeout=MESSAGE_TIMEOUT_MS / 1000 + 60)
        reader.join(timeout=30)
        errors = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    output = "".join(lines)
    assert process.returncode == 0, f"kafkajs_failover.js exited {process.returncode}: {errors[-3000:]}"
    report = json.loads(output.strip().splitlines()[-1])
    step(f"KafkaJS: sent {report['sent']}, acknowledged {len(report['acknowledged'])}, failed "
         f"{len(report['failed'])}, consumed {len(report['consumed'])}, errors {report['errors'][:3]}")
    assert not report["failed"], f"sends failed: {report['failed'][:5]}"
    acknowledged = {(p, n): o for p, n, o in report["acknowledged"]}
    consumed = {(p, n) for p, n, _ in report["consumed"]}
    missing = [key for key in acknowledged if key not in consumed]
    assert not missing, f"{len(missing)} acknowledged messages never consumed, e.g. {missing[:5]}"
    marks, records = read_log(cluster.bootstrap(), topic, partitions)
    where = {}
    for partition in range(partitions):
        for offset, value in records[partition]:
            key = (partition, int(value.split(b":")[1]))
            assert key not in where, f"{key} twice in the log"
            where[key] = offset
    moved = [(key, offset, where.get(key)) for key, offset in acknowledged.items() if where.get(key) != offset]
    assert not moved, f"(message, acknowledged offset, log offset) {moved[:5]}"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
