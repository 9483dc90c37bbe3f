"""Unclean leader election on a cluster of real processes (issue 16): with `unclean.leader.election.enable = true`
a partition whose whole ISR is gone elects a live replica outside it, and exactly what only the lost ISR held is
lost — the old leader cuts that divergent tail when it returns, and says how much in its log."""

import re
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cluster_util import Cluster

TOPIC = "unclean"
TIMEOUT_S = 60


def produce(bootstrap, values, acks):
    errors = []
    client = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5})
    for value in values:
        client.produce(TOPIC, value=value, partition=0, on_delivery=lambda error, _m: error and errors.append(error))
    assert client.flush(TIMEOUT_S) == 0, "undelivered messages"
    assert errors == [], errors
    return len(values)


def consume_all(bootstrap):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    values, idle_until = [], time.monotonic() + 5
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < min(idle_until, deadline):
        record = consumer.poll(0.5)
        if record is None or record.error() is not None:
            continue
        values.append(record.value())
        idle_until = time.monotonic() + 3
    consumer.close()
    return values


def leader_and_isr(cluster, via):
    partition = cluster.metadata(via).topics[TOPIC][0]
    return partition.leader, sorted(partition.isr)


def test_unclean_election_loses_only_what_the_lost_isr_alone_held(tmp_path):
    # The replicas live on two broker-only nodes, so the metadata quorum (voters 1-3) outlives both.
    cluster = Cluster(tmp_path)
    cluster.start()
    try:
        cluster.add_broker(4)
        cluster.add_broker(5)
        topic = NewTopic(TOPIC, num_partitions=1, replica_assignment=[[4, 5]],
                         config={"unclean.leader.election.enable": "true", "min.insync.replicas": "1"})
        admin = cluster.admin()
        admin.create_topics([topic])[TOPIC].result(timeout=30)
        cluster.wait_for_topic(TOPIC, 1)
        shared = [b"shared-%d" % index for index in range(100)]
        produce(cluster.bootstrap(), shared, "all")
        cluster.wait_for("both replicas in sync", lambda: leader_and_isr(cluster, 3) == (4, [4, 5]), TIMEOUT_S)

        # The follower stops (a controlled shutdown fences it at once): the ISR is the leader alone, which then
        # takes records nobody else holds.
        cluster.terminate(5)
        cluster.wait_for("ISR shrunk to the leader", lambda: leader_and_isr(cluster, 3) == (4, [4]), TIMEOUT_S)
        alone = [b"alone-%d" % index for index in range(50)]
        produce(cluster.bootstrap([1, 2, 3, 4]), alone, "1")

        # The leader dies; the old follower returns: unclean election makes it leader, without the 50.
        cluster.kill(4)
        cluster.wait_for("partition offline", lambda: leader_and_isr(cluster, 3)[0] < 0, TIMEOUT_S)
        cluster.restart(5)
        cluster.wait_for("unclean leader elected", lambda: leader_and_isr(cluster, 3) == (5, [5]), TIMEOUT_S)
        after = [b"after-%d" % index for index in range(10)]
        produce(cluster.bootstrap([1, 2, 3, 5]), after, "all")

        # The old leader returns as a follower: it cuts its divergent tail (the 50 only it held) and copies again.
        cluster.restart(4)
        cluster.wait_for("old leader back in the ISR", lambda: leader_and_isr(cluster, 3) == (5, [4, 5]), TIMEOUT_S)
        cut = re.search(rf"{TOPIC}-0: divergent tail cut: log end (\d+) -> (\d+)", cluster.nodes[4].log_text())
        assert cut is not None, cluster.nodes[4].log_tail(60)
        before, end = int(cut.group(1)), int(cut.group(2))
        assert (before, end) == (150, 100), f"lost {before - end} offsets: {cut.group(0)}"
        assert consume_all(cluster.bootstrap()) == shared + after
    finally:
        cluster.kill_all()
