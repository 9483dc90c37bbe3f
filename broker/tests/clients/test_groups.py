"""Consumer groups with real clients (confluent-kafka / librdkafka 2.16 and kafka-python): partition assignment,
members leaving, dying and restarting, exactly-once processing with commits, committed offsets across a broker
restart, independent groups, the admin APIs, rewinding, and static membership.

Members that must be stopped or killed run as separate processes (group_member.py); their output lines say what
they were assigned and what they processed. The broker runs with `group.initial.rebalance.delay.ms = 300` so that
the tests do not wait Kafka's default 3 s for each group's first rebalance.
"""

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient

from confluent_util import create_topic, produce_all, producer
from conftest import Broker

HERE = Path(__file__).resolve().parent
PARTITIONS = 12
TIMEOUT_S = 90


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("groups")
    config = directory / "sluice.toml"
    # Checkpoints of __consumer_offsets every 2,000 records, so that the tests below run across many of them.
    config.write_text('"group.initial.rebalance.delay.ms" = 300\n"offsets.checkpoint.records" = 2000\n')
    broker = Broker(directory / "data", directory / "broker.log", ["--config", str(config)])
    broker.start()
    try:
        yield broker
        assert broker.alive(), f"broker died during the tests:\n{broker.log_tail()}"
        broker.stop()
    finally:
        broker.kill()


def fill(broker, topic, count, partitions=PARTITIONS):
    """A new topic with `count` messages dealt round-robin; value = b"<partition>:<index>"."""
    create_topic(broker, topic, partitions)
    items = [(i % partitions, None, b"%d:%d" % (i % partitions, i // partitions), None, 0) for i in range(count)]
    errors = produce_all(producer(broker), topic, items)
    assert not errors, errors[:3]
    return [count // partitions + (1 if p < count % partitions else 0) for p in range(partitions)]


class Member:
    """A group_member.py process and what it printed: (time, kind, fields)."""

    def __init__(self, broker, topic, group, *extra):
        command = [sys.executable, str(HERE / "group_member.py"), broker.bootstrap, topic, group, *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            words = line.split()
            if words:
                with self.lock:
                    self.lines.append((time.monotonic(), words[0], words[1:]))

    def events(self, kind):
        with self.lock:
            return [(at, fields) for at, k, fields in self.lines if k == kind]

    def assignments(self):
        return [(at, parse_partitions(fields[0])) for at, fields in self.events("A")]

    def current(self):
        """The partitions owned now: assignments add, revocations remove (eager protocols revoke everything
        before each assignment; cooperative ones add and revoke only what moves). None before any assignment."""
        with self.lock:
            changes = [(kind, fields) for _, kind, fields in self.lines if kind in ("A", "R")]
        if not any(kind == "A" for kind, _ in changes):
            return None
        owned = set()
        for kind, fields in changes:
            partitions = parse_partitions(fields[0])
            owned = owned | partitions if kind == "A" else owned - partitions
        return owned

    def processed(self):
        return [(int(fields[0]), int(fields[1])) for _, fields in self.events("P")]

    def stop(self):
        """SIGTERM: close the consumer (LeaveGroup) and exit 0."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.output()
        self.reader.join(timeout=10)

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=10)
        self.reader.join(timeout=10)

    def output(self):
        with self.lock:
            return "\n".join(f"{kind} {' '.join(fields)}" for _, kind, fields in self.lines[-30:])


def parse_partitions(text):
    return set() if text == "-" else {int(p) for p in text.split(",")}


def wait_for(condition, what, timeout=TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stable_split(members):
    """Whether the members' current assignments are disjoint and cover every partition."""
    current = [member.current() for member in members]
    if any(assigned is None for assigned in current):
        return False
    union = set().union(*current)
    return union == set(range(PARTITIONS)) and sum(len(a) for a in current) == PARTITIONS


def end_members(members):
    for member in members:
        if member.process.poll() is None:
            member.kill()


def test_three_members_get_disjoint_partitions_covering_all(broker):
    counts = fill(broker, "split", 1200)
    members = [Member(broker, "split", "split-group") for _ in range(3)]
    try:
        wait_for(lambda: stable_split(members), "three disjoint assignments covering 12 partitions")
        wait_for(lambda: sum(len(m.processed()) for m in members) >= sum(counts), "every message processed")
        assignments = [member.current() for member in members]
        assert all(len(assigned) == 4 for assigned in assignments), assignments
        for member in members:
            for partition, _ in member.processed():
                assert partition in member.current(), "a member read a partition it was not assigned"
    finally:
        for member in members:
            member.stop()


def test_exactly_once_across_leave_join_and_kill(broker):
    """Committing after each message: a clean leave and a join lose and repeat nothing; a SIGKILLed member's
    partitions move once its session times out, repeating at most its one uncommitted message per partition."""
    counts = fill(broker, "exactly-once", 24_000)
    total = sum(counts)
    a, b, c = (Member(broker, "exactly-once", "eo-group") for _ in range(3))
    members = [a, b, c]
    try:
        wait_for(lambda: stable_split(members), "the first three-way split")
        wait_for(lambda: sum(len(m.processed()) for m in members) >= total // 6, "some progress")

        # A leaves cleanly: B and C take over all 12 partitions in one rebalance.
        left_at = time.monotonic()
        a.stop()
        wait_for(lambda: stable_split([b, c]) and all(m.assignments()[-1][0] > left_at for m in (b, c)),
                 "B and C to take over A's partitions")
        after_leave = [[assigned for at, assigned in m.assignments() if at > left_at] for m in (b, c)]
        assert all(len(list_) == 1 for list_ in after_leave), f"more than one rebalance after a leave: {after_leave}"

        # D joins.
        d = Member(broker, "exactly-once", "eo-group")
        members.append(d)
        wait_for(lambda: stable_split([b, c, d]), "a three-way split with D")
        wait_for(lambda: len(d.processed()) > 0, "D to process something")

        # B is killed: its partitions move to C and D only after its session (6 s) times out.
        owned_by_b = b.current()
        killed_at = time.monotonic()
        b.kill()
        wait_for(lambda: stable_split([c, d]) and all(m.assignments()[-1][0] > killed_at for m in (c, d)),
                 "C and D to take over B's partitions", timeout=60)
        moved_at = min(m.assignments()[-1][0] for m in (c, d))
        assert moved_at - killed_at >= 3, f"B's partitions moved {moved_at - killed_at:.1f} s after SIGKILL"

        wait_for(lambda: len({pair for m in members for pair in m.processed()}) >= total,
                 f"all {total} messages processed", timeout=120)
        seen = collections.Counter(pair for m in members for pair in m.processed())
        expected = {(p, o) for p in range(PARTITIONS) for o in range(counts[p])}
        assert set(seen) == expected, "messages missing or unexpected"
        duplicates = {pair: n for pair, n in seen.items() if n > 1}
        b_last = {}
        for partition, offset in b.processed():
            b_last[partition] = offset
        for (partition, offset), n in duplicates.items():
            assert n == 2, f"{(partition, offset)} processed {n} times"
            assert partition in owned_by_b and b_last.get(partition) == offset, (
                f"duplicate {(partition, offset)} is not B's last uncommitted message (B last: {b_last})"
            )
        assert len(duplicates) <= len(owned_by_b)
        for member in (a, c, d):
            assert not member.events("C"), f"commit failures: {member.events('C')[:3]}"
    finally:
        for member in members:
            if member is not b and member.process.poll() is None:
                member.stop()
        end_members(members)


def group_consumer(broker, group, **settings):
    config = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
    }
    config.update(settings)
    return Consumer(config)


def consume(client, count, timeout=TIMEOUT_S):
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        for message in client.consume(num_messages=count - len(messages), timeout=0.5):
            assert message.error() is None, message.error()
            messages.append(message)
    assert len(messages) == count, f"{len(messages)} of {count} messages in {timeout} s"
    return messages


def test_committed_offsets_survive_a_broker_restart(broker):
    counts = fill(broker, "restart", 1200)
    client = group_consumer(broker, "restart-group")
    client.subscribe(["restart"])
    first = consume(client, 600)
    client.commit(asynchronous=False)
    positions = {p.partition: p.offset for p in client.position(client.assignment())}
    client.close()
    committed_before = {p: positions[p] for p in positions}
    assert sum(max(offset, 0) for offset in committed_before.values()) == len(first)

    broker.restart()

    client = group_consumer(broker, "restart-group")
    partitions = [TopicPartition("restart", p) for p in range(PARTITIONS)]
    committed = {tp.partition: tp.offset for tp in client.committed(partitions, timeout=30)}
    assert committed == committed_before
    client.subscribe(["restart"])
    rest = consume(client, sum(counts) - len(first))
    for partition in range(PARTITIONS):
        offsets = [m.offset() for m in rest if m.partition() == partition]
        if offsets:
            # A partition never read has no commit (-1001): it starts from the beginning (auto.offset.reset).
            assert offsets[0] == max(committed[partition], 0), "did not resume at the committed offset"
    seen = {(m.partition(), m.offset()) for m in first + rest}
    assert len(seen) == sum(counts), "messages lost or repeated across the restart"
    client.close()


def java_hash(text):
    value = 0
    encoded = text.encode("utf-16-be")
    for index in range(0, len(encoded), 2):
        value = (value * 31 + int.from_bytes(encoded[index:index + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def test_offsets_log_is_checkpointed_and_survives_restart(broker):
    """Thousands of commits to one group: its __consumer_offsets partition keeps only about one checkpoint's
    worth of records (older ones deleted), and the newest commit survives a restart."""
    create_topic(broker, "checkpointed", 2)
    group = "checkpoint-group"
    client = group_consumer(broker, group)
    for value in range(1, 6001):
        client.commit(offsets=[TopicPartition("checkpointed", value % 2, value)], asynchronous=False)
    partition = abs(java_hash(group)) % 50
    low, high = client.get_watermark_offsets(TopicPartition("__consumer_offsets", partition), timeout=30)
    assert high >= 6000, (low, high)
    assert low > 0 and high - low <= 2000 + 10, f"the offsets log was not checkpointed: {(low, high)}"
    client.close()
    broker.restart()
    client = group_consumer(broker, group)
    committed = client.committed([TopicPartition("checkpointed", 0), TopicPartition("checkpointed", 1)], timeout=30)
    assert [tp.offset for tp in committed] == [6000, 5999]
    client.close()


def test_two_groups_each_get_everything_and_admin_sees_them(broker):
    counts = fill(broker, "fanout", 600)
    one = group_consumer(broker, "fanout-one")
    two = group_consumer(broker, "fanout-two")
    one.subscribe(["fanout"])
    two.subscribe(["fanout"])
    try:
        got_one = consume(one, sum(counts))
        got_two = consume(two, sum(counts))
        assert {(m.partition(), m.offset()) for m in got_one} == {(m.partition(), m.offset()) for m in got_two}
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert {"fanout-one", "fanout-two"} <= set(listed)
        assert listed["fanout-one"].state == ConsumerGroupState.STABLE
        stable_only = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(timeout=30).valid
        assert {"fanout-one", "fanout-two"} <= {g.group_id for g in stable_only}
        empty_only = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(timeout=30).valid
        assert not {"fanout-one", "fanout-two"} & {g.group_id for g in empty_only}
        described = admin.describe_consumer_groups(["fanout-one", "fanout-two"])
        for group_id, future in described.items():
            description = future.result(timeout=30)
            assert description.state == ConsumerGroupState.STABLE
            assert len(description.members) == 1
            member = description.members[0]
            assigned = {tp.partition for tp in member.assignment.topic_partitions if tp.topic == "fanout"}
            assert assigned == set(range(PARTITIONS)), f"{group_id}: {assigned}"
            assert member.host.startswith("/127.0.0.1")
    finally:
        one.close()
        two.close()
    # Once empty, a group can be deleted; an unknown one cannot.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_consumer_groups(["fanout-one"])["fanout-one"].result(timeout=30)
    with pytest.raises(Exception, match="GROUP_ID_NOT_FOUND"):
        admin.delete_consumer_groups(["no-such-group"])["no-such-group"].result(timeout=30)
    remaining = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
    assert "fanout-one" not in remaining and "fanout-two" in remaining


def test_seek_to_beginning_to_a_timestamp_and_committing_an_older_offset_rewind(broker):
    topic = "rewind"
    create_topic(broker, topic, 1)
    base = int(time.time() * 1000) - 100_000
    items = [(0, None, b"%d" % i, None, base + i * 10) for i in range(100)]
    assert not produce_all(producer(broker), topic, items)
    client = group_consumer(broker, "rewind-group")
    client.subscribe([topic])
    assert [m.offset() for m in consume(client, 100)] == list(range(100))
    partition = TopicPartition(topic, 0)
    client.seek(TopicPartition(topic, 0, OFFSET_BEGINNING))
    assert consume(client, 1)[0].offset() == 0
    # Seek to the first record at or after the timestamp of offset 40.
    found = client.offsets_for_times([TopicPartition(topic, 0, base + 400)], timeout=30)[0]
    assert found.offset == 40
    client.seek(found)
    assert consume(client, 1)[0].offset() == 40
    # Commit an older offset: a new member of the group starts there.
    client.commit(offsets=[TopicPartition(topic, 0, 25)], asynchronous=False)
    client.close()
    again = group_consumer(broker, "rewind-group")
    assert again.committed([partition], timeout=30)[0].offset == 25
    again.subscribe([topic])
    assert consume(again, 1)[0].offset() == 25
    again.close()


def test_static_member_restart_causes_no_rebalance(broker):
    fill(broker, "static", 240)
    settings = ["--session-ms", "10000"]
    first = Member(broker, "static", "static-group", "--instance", "static-1", *settings)
    second = Member(broker, "static", "static-group", "--instance", "static-2", *settings)
    replacement = None
    try:
        wait_for(lambda: stable_split([first, second]), "a stable two-way split")
        # Settled: no assignment change for 2 s (librdkafka may rejoin once as it learns the new topic's metadata).
        wait_for(lambda: time.monotonic() - max(at for m in (first, second) for at, _ in m.assignments()) > 2,
                 "the group to settle")
        owned = second.current()
        assignments_before = len(first.assignments())
        revocations_before = len(first.events("R"))
        # A static member's close does not leave the group (librdkafka sends no LeaveGroup for it).
        second.stop()
        replacement = Member(broker, "static", "static-group", "--instance", "static-2", *settings)
        wait_for(lambda: replacement.current() is not None, "the restarted member's assignment")
        assert replacement.current() == owned, f"other partitions:\n{replacement.output()}"
        time.sleep(3)
        assert len(first.assignments()) == assignments_before, f"the other member was rebalanced:\n{first.output()}"
        assert len(first.events("R")) == revocations_before, "the other member had partitions revoked"
    finally:
        for member in (first, second, replacement):
            if member is not None and member.process.poll() is None:
                member.stop()


def test_cooperative_rebalance_moves_only_what_it_must(broker):
    fill(broker, "cooperative", 240)
    settings = ["--assignor", "cooperative-sticky"]
    members = [Member(broker, "cooperative", "cooperative-group", *settings) for _ in range(2)]
    try:
        wait_for(lambda: stable_split(members), "a two-way cooperative split")
        before = [member.current() for member in members]
        joined_at = time.monotonic()
        members.append(Member(broker, "cooperative", "cooperative-group", *settings))
        wait_for(lambda: stable_split(members) and all(len(m.current()) == 4 for m in members),
                 "a three-way split after the third member joined")
        for member, owned_before in zip(members, before):
            revoked = set()
            for at, fields in member.events("R"):
                if at > joined_at:
                    revoked |= parse_partitions(fields[0])
            assert revoked and len(revoked) < len(owned_before), (
                f"cooperative rebalance revoked {sorted(revoked)} of {sorted(owned_before)}"
            )
            assert member.current() <= owned_before, "a member gained partitions it did not own"
    finally:
        for member in members:
            member.stop()


def test_kafka_python_group_members_split_partitions_and_commit(broker):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition

    counts = fill(broker, "kafka-python-group", 1200)
    seen = collections.Counter()
    assigned = [set(), set()]
    failures = []
    done = threading.Event()

    def run(index):
        member = KafkaConsumer(
            "kafka-python-group",
            bootstrap_servers=broker.bootstrap,
            group_id="kp-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        try:
            while not done.is_set():
                for partition_records in member.poll(timeout_ms=200).values():
                    for record in partition_records:
                        seen[(record.partition, record.offset)] += 1
                member.commit()
                assigned[index] = {tp.partition for tp in member.assignment()}
        except Exception as error:  # reported by the test thread
            failures.append(error)
        finally:
            member.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(seen) >= sum(counts) and assigned[0] and assigned[1]
                 and not assigned[0] & assigned[1] and len(assigned[0] | assigned[1]) == PARTITIONS,
                 "both kafka-python members to split the partitions and read everything")
        time.sleep(1)  # one more commit round from each
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures
    assert len(seen) == sum(counts)
    checker = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-group", enable_auto_commit=False)
    try:
        committed = {p: checker.committed(KafkaTopicPartition("kafka-python-group", p)) for p in range(PARTITIONS)}
    finally:
        checker.close()
    assert committed == {p: counts[p] for p in range(PARTITIONS)}


def test_offsets_of_an_empty_group_expire_after_the_retention(tmp_path):
    """offsets.retention.minutes = 1 (the smallest Kafka allows), checked every second: an empty group's committed
    offsets are gone a minute after the commit, and they stay gone after a restart (tombstones were written); an
    offset committed later is kept meanwhile."""
    config = tmp_path / "sluice.toml"
    config.write_text('"offsets.retention.minutes" = 1\n"offsets.retention.check.interval.ms" = 1000\n')
    broker = Broker(tmp_path / "data", tmp_path / "broker.log", ["--config", str(config)])
    broker.start()
    try:
        create_topic(broker, "expiring", 2)
        client = group_consumer(broker, "expiring-group")
        client.commit(offsets=[TopicPartition("expiring", 0, 5)], asynchronous=False)
        committed_at = time.monotonic()
        partitions = [TopicPartition("expiring", 0), TopicPartition("expiring", 1)]
        assert [tp.offset for tp in client.committed(partitions, timeout=30)] == [5, -1001]
        time.sleep(40)
        client.commit(offsets=[TopicPartition("expiring", 1, 7)], asynchronous=False)
        wait_for(lambda: client.committed(partitions, timeout=30)[0].offset < 0,
                 "the first offset to expire", timeout=60)
        expired_after = time.monotonic() - committed_at
        assert expired_after >= 59, f"expired after only {expired_after:.0f} s"
        assert [tp.offset for tp in client.committed(partitions, timeout=30)] == [-1001, 7]
        client.close()
        broker.restart()
        client = group_consumer(broker, "expiring-group")
        assert [tp.offset for tp in client.committed(partitions, timeout=30)] == [-1001, 7]
        client.close()
        broker.stop()
    finally:
        broker.kill()
