"""A single-node data directory becomes a cluster of one (issue 15): the same topics (ids kept), their data and
the groups' committed offsets, with `controller.quorum.voters` naming only this node; restarting it again writes
nothing twice. And producer ids come from controller blocks: no two brokers hand out the same one."""

import socket
import struct
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port

TOPIC = "migrated"
MESSAGES = 30


def topic_ids(bootstrap):
    """Metadata v12 over a raw socket is more than this test needs: ids are compared through DescribeTopics."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    from confluent_kafka import TopicCollection

    described = admin.describe_topics(TopicCollection([TOPIC]))[TOPIC].result(timeout=30)
    return str(described.topic_id), len(described.partitions)


def consume_all(bootstrap, group, expected):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    values = []
    deadline = time.monotonic() + 60
    while len(values) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.commit(asynchronous=False)
    consumer.close()
    return values


def test_single_node_directory_joins_as_a_cluster_of_one(tmp_path):
    broker = Broker(tmp_path / "data", tmp_path / "broker.log")
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 3, 1)])[TOPIC].result(timeout=30)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
        for index in range(MESSAGES):
            producer.produce(TOPIC, value=b"m%d" % index, partition=index % 3)
        assert producer.flush(30) == 0
        assert len(consume_all(broker.bootstrap, "before", MESSAGES)) == MESSAGES
        id_before, partitions_before = topic_ids(broker.bootstrap)
        broker.stop()

        config = tmp_path / "cluster.toml"
        config.write_text(f'"controller.quorum.voters" = "0@127.0.0.1:{free_port()}"\n')
        broker.extra_args = ["--config", str(config)]
        for restart in range(2):
            broker.start()
            deadline = time.monotonic() + 60
            while True:
                try:
                    id_after, partitions_after = topic_ids(broker.bootstrap)
                    break
                except Exception:  # the topic joins the metadata log once this node leads: retry until then
                    assert time.monotonic() < deadline, broker.log_tail()
                    time.sleep(0.2)
            assert (id_after, partitions_after) == (id_before, partitions_before), f"restart {restart}"
            values = consume_all(broker.bootstrap, f"after-{restart}", MESSAGES)
            assert sorted(values) == sorted(b"m%d" % index for index in range(MESSAGES))
            # The group's offsets committed on the single node survive the move.
            consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "before"})
            committed = consumer.committed([TopicPartition(TOPIC, p) for p in range(3)], timeout=30)
            consumer.close()
            assert sum(partition.offset for partition in committed) == MESSAGES
            assert "writing the topics of topics.toml" in broker.log_path.read_text() or restart == 1
            broker.stop()
        assert broker.log_path.read_text().count("writing the topics of topics.toml") == 1
    finally:
        broker.kill()


def init_producer_id(bootstrap):
    """InitProducerId v0 over a raw socket: (error code, producer id)."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        client = b"migration-test"
        body = struct.pack(">hi", -1, 60000)
        frame = struct.pack(">hhih", 22, 0, 7, len(client)) + client + body
        connection.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", connection.recv(4, socket.MSG_WAITALL))[0]
        response = connection.recv(size, socket.MSG_WAITALL)
    _correlation, _throttle, error, producer_id, _epoch = struct.unpack(">iihqh", response[:20])
    return error, producer_id


def test_producer_ids_never_repeat_across_brokers(tmp_path):
    quorum = [free_port() for _ in range(3)]
    voters = ",".join(f"{node}@127.0.0.1:{quorum[node - 1]}" for node in (1, 2, 3))
    brokers = []
    try:
        for node in (1, 2, 3):
            config = tmp_path / f"node{node}.toml"
            config.write_text(f'"node.id" = {node}\n"controller.quorum.voters" = "{voters}"\n')
            broker = Broker(tmp_path / f"data{node}", tmp_path / f"node{node}.log", ["--config", str(config)])
            brokers.append(broker)
            broker.start()
        seen = {}
        deadline = time.monotonic() + 60
        for round_number in range(20):
            for broker in brokers:
                while True:
                    error, producer_id = init_producer_id(broker.bootstrap)
                    if error == 0:
                        break
                    # Until the broker registered (its epoch) and the controller is elected: retriable.
                    assert time.monotonic() < deadline, f"InitProducerId error {error}:\n{broker.log_tail()}"
                    time.sleep(0.2)
                assert producer_id not in seen, f"{producer_id} given by {broker.bootstrap} and {seen[producer_id]}"
                seen[producer_id] = broker.bootstrap
        assert len(seen) == 60
        for broker in brokers:
            broker.stop()
    finally:
        for broker in brokers:
            broker.kill()
