"""confluent-kafka helpers shared by the test modules (kcat has no admin API, so its topics are created here)."""

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from workload import PARTITION_COUNT

TIMEOUT_S = 60


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(broker, name, partitions=PARTITION_COUNT, config=None):
    client = admin(broker)  # kept alive until the future resolves: a destroyed handle fails its requests
    futures = client.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    futures[name].result(timeout=TIMEOUT_S)


def producer(broker, **settings):
    config = {
        "bootstrap.servers": broker.bootstrap,
        "linger.ms": 50,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200000,
        "queue.buffering.max.kbytes": 1048576,
        "acks": "all",
    }
    config.update(settings)
    return Producer(config)


def produce_all(client, topic, items):
    """Produces (partition, key, value, headers, timestamp) items; returns the delivery errors."""
    errors = []

    def delivered(error, _message):
        if error is not None:
            errors.append(error)

    for partition, key, value, headers, timestamp in items:
        while True:
            try:
                client.produce(topic, value=value, key=key, headers=headers, partition=partition,
                               timestamp=timestamp, on_delivery=delivered)
                break
            except BufferError:
                client.poll(0.05)
        client.poll(0)
    remaining = client.flush(TIMEOUT_S)
    assert remaining == 0, f"{remaining} messages not delivered within {TIMEOUT_S} s"
    return errors


def consumer(broker, **settings):
    config = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": "sluice-tests-unused",  # required by the Python client; no subscribe(), so no group traffic
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
        "fetch.max.bytes": 52428800,
        "max.partition.fetch.bytes": 1048576,
    }
    config.update(settings)
    return Consumer(config)


def consume_all(broker, topic, partitions=PARTITION_COUNT, expected=None):
    """Reads every partition from the beginning to its end; returns {partition: [(offset, key, value, headers)]}."""
    client = consumer(broker)
    try:
        client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        consumed = {p: [] for p in range(partitions)}
        at_end = set()
        deadline = time.monotonic() + TIMEOUT_S
        while len(at_end) < partitions and time.monotonic() < deadline:
            for record in client.consume(num_messages=10000, timeout=0.5):
                error = record.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, f"consume error: {error}"
                    if expected is None or len(consumed[record.partition()]) >= expected[record.partition()]:
                        at_end.add(record.partition())
                    continue
                consumed[record.partition()].append(
                    (record.offset(), record.key(), record.value(), record.headers() or [])
                )
        assert len(at_end) == partitions, f"only partitions {sorted(at_end)} reached their end in {TIMEOUT_S} s"
        return consumed
    finally:
        client.close()
