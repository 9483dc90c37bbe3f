"""Idempotent producers (issue 7): exactly-once per partition across retries and a broker killed mid-stream.

confluent-kafka with `enable.idempotence=true` and 5 requests in flight produces numbered messages; half-way the
broker is killed with SIGKILL (no clean shutdown) and started again on the same data directory. The producer
retries whatever was in flight; the broker, having rebuilt each partition's producer state from the log's batch
headers, must drop the retries of batches it already wrote. Every partition must then hold exactly 0..n-1, in
order, once each.
"""

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from conftest import Broker, free_port
from confluent_util import TIMEOUT_S, consumer, create_topic, producer
from fault_proxy import FaultProxy

PARTITIONS = 4
PER_PARTITION = 25_000
WINDOW = 5_000


def read_values(broker, topic, partitions, expected):
    client = consumer(broker)
    try:
        client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        values = {p: [] for p in range(partitions)}
        at_end = set()
        deadline = time.monotonic() + TIMEOUT_S
        while len(at_end) < partitions and time.monotonic() < deadline:
            for record in client.consume(num_messages=10000, timeout=0.5):
                error = record.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, f"consume error: {error}"
                    if len(values[record.partition()]) >= expected:
                        at_end.add(record.partition())
                    continue
                values[record.partition()].append(int(record.value()))
        return values
    finally:
        client.close()


def test_idempotent_producer_survives_sigkill_without_duplicates(fresh_broker):
    broker = fresh_broker
    topic = "idempotent-sigkill"
    # Small segments: the log rolls every few hundred batches, and each roll snapshots the producer state, so the
    # restart after SIGKILL loads a snapshot written at a roll (there is no clean shutdown to write one).
    create_topic(broker, topic, partitions=PARTITIONS, config={"segment.bytes": "65536"})
    client = producer(
        broker,
        **{
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 2,
            "batch.num.messages": 200,
            "message.timeout.ms": 90000,
            "retry.backoff.ms": 100,
        },
    )
    errors = []
    delivered_count = [0]

    def delivered(error, _message):
        if error is not None:
            errors.append(error)
        else:
            delivered_count[0] += 1

    total = PARTITIONS * PER_PARTITION
    killed = False
    killed_at = None
    for index in range(total):
        partition, number = index % PARTITIONS, index // PARTITIONS
        while True:
            try:
                client.produce(topic, value=b"%d" % number, partition=partition, on_delivery=delivered)
                break
            except BufferError:
                client.poll(0.05)
        client.poll(0)
        # Keep the stream going for the whole test: at most WINDOW messages ahead of the acknowledgements.
        deadline = time.monotonic() + TIMEOUT_S
        while index + 1 - delivered_count[0] - len(errors) > WINDOW and time.monotonic() < deadline:
            client.poll(0.01)
        if not killed and delivered_count[0] >= total // 3:
            # Mid-stream: some batches acknowledged, more in flight. Kill without any chance to flush or close.
            killed_at = (index, delivered_count[0])
            broker.kill()
            killed = True
            snapshots = [broker.data_dir / f"{topic}-{p}" / "producer-state.snapshot" for p in range(PARTITIONS)]
            assert all(path.exists() for path in snapshots), "no producer snapshot was written at a segment roll"
            time.sleep(0.5)
            broker.start()
    remaining = client.flush(120)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert killed_at is not None and killed_at[0] < total - 1, f"the broker was not killed mid-stream: {killed_at}"
    assert broker.start_count == 2

    values = read_values(broker, topic, PARTITIONS, PER_PARTITION)
    for partition in range(PARTITIONS):
        got = values[partition]
        assert len(got) == PER_PARTITION and got == list(range(PER_PARTITION)), (
            f"partition {partition}: {len(got)} values, {len(got) - len(set(got))} duplicates, "
            f"first mismatch at {next((i for i, v in enumerate(got) if v != i), None)}"
        )


def test_init_producer_ids_are_unique_across_restarts(fresh_broker):
    """Two idempotent producers, one before and one after a restart, must not share a producer id: each
    writes sequence 0 again, which would be taken for a duplicate if the ids collided."""
    broker = fresh_broker
    topic = "idempotent-ids"
    create_topic(broker, topic, partitions=1)
    for round_number in range(2):
        client = producer(broker, **{"enable.idempotence": True})
        for number in range(10):
            client.produce(topic, value=b"%d" % (round_number * 10 + number), partition=0)
        assert client.flush(TIMEOUT_S) == 0
        if round_number == 0:
            broker.restart()
    values = read_values(broker, topic, 1, 20)
    assert values[0] == list(range(20))


class Through:
    """What the client helpers need of a broker (`bootstrap`), pointing at the proxy."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap


def produce_numbered(target, topic, settings, partitions, per_partition):
    """Produces per_partition numbered messages to each partition, streaming; returns the delivery errors."""
    client = producer(target, **settings)
    errors = []
    delivered_count = [0]

    def delivered(error, _message):
        if error is not None:
            errors.append(error)
        else:
            delivered_count[0] += 1

    total = partitions * per_partition
    for index in range(total):
        partition, number = index % partitions, index // partitions
        while True:
            try:
                client.produce(topic, value=b"%d" % number, partition=partition, on_delivery=delivered)
                break
            except BufferError:
                client.poll(0.05)
        client.poll(0)
        deadline = time.monotonic() + TIMEOUT_S
        while index + 1 - delivered_count[0] - len(errors) > WINDOW and time.monotonic() < deadline:
            client.poll(0.01)
    remaining = client.flush(120)
    assert remaining == 0, f"{remaining} messages not delivered"
    return errors


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "at-least-once"])
def test_exactly_once_through_a_proxy_that_cuts_connections(tmp_path, idempotent):
    """The proxy cuts connections after the broker has executed requests but before their responses arrive, so
    the producer retries batches already written. Idempotent: exactly 0..n-1 per partition. Idempotence off
    (acks=all, retries on): duplicates appear, which proves the check can see them."""
    proxy_port = free_port()
    broker = Broker(tmp_path / "data", tmp_path / "broker.log",
                    ["--advertised-listener", f"127.0.0.1:{proxy_port}"])
    broker.start()
    proxy = FaultProxy(broker.port, proxy_port, seed=11, cut_after=(60_000, 250_000), max_faults=12)
    try:
        through = Through(f"127.0.0.1:{proxy_port}")
        topic = "through-proxy"
        create_topic(broker, topic, partitions=PARTITIONS)
        settings = {
            "enable.idempotence": idempotent,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 2,
            "batch.num.messages": 200,
            "message.timeout.ms": 90000,
            "retry.backoff.ms": 50,
            "acks": "all",
        }
        per_partition = 50_000  # 200,000 messages in all, as the issue asks
        errors = produce_numbered(through, topic, settings, PARTITIONS, per_partition)
        assert not errors, f"delivery errors: {errors[:5]}"
        assert proxy.fault_count >= 3, f"only {proxy.fault_count} connections were cut"
        values = read_values(broker, topic, PARTITIONS, per_partition)
        duplicates = sum(len(got) - len(set(got)) for got in values.values())
        if idempotent:
            for partition in range(PARTITIONS):
                got = values[partition]
                assert got == list(range(per_partition)), (
                    f"partition {partition}: {len(got)} values, {len(got) - len(set(got))} duplicates"
                )
        else:
            assert duplicates > 0, "no duplicates without idempotence: the faults did not hit in-flight requests"
            for partition in range(PARTITIONS):
                assert set(values[partition]) == set(range(per_partition))
        assert broker.alive(), broker.log_tail()
        broker.stop()
    finally:
        proxy.stop()
        broker.kill()


def test_exactly_once_when_responses_are_dropped_and_delayed(tmp_path):
    """Some connections lose every response (the producer's request timeout ends them and it retries on a new
    connection) and responses are delayed: still exactly 0..n-1 per partition."""
    proxy_port = free_port()
    broker = Broker(tmp_path / "data", tmp_path / "broker.log",
                    ["--advertised-listener", f"127.0.0.1:{proxy_port}"])
    broker.start()
    proxy = FaultProxy(broker.port, proxy_port, seed=5, drop_responses=0.5, delay_s=(0.0, 0.005), max_faults=3)
    try:
        through = Through(f"127.0.0.1:{proxy_port}")
        topic = "dropped-responses"
        create_topic(broker, topic, partitions=PARTITIONS)
        settings = {
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 2,
            "batch.num.messages": 200,
            "request.timeout.ms": 2000,
            "socket.timeout.ms": 2000,
            "message.timeout.ms": 90000,
            "retry.backoff.ms": 50,
        }
        per_partition = 5_000
        errors = produce_numbered(through, topic, settings, PARTITIONS, per_partition)
        assert not errors, f"delivery errors: {errors[:5]}"
        assert proxy.fault_count >= 1, "no connection lost its responses"
        values = read_values(broker, topic, PARTITIONS, per_partition)
        for partition in range(PARTITIONS):
            got = values[partition]
            assert got == list(range(per_partition)), (
                f"partition {partition}: {len(got)} values, {len(got) - len(set(got))} duplicates"
            )
        assert broker.alive(), broker.log_tail()
        broker.stop()
    finally:
        proxy.stop()
        broker.kill()


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "at-least-once"])
def test_kafka_python_idempotent_producer_through_cut_connections(tmp_path, idempotent):
    """kafka-python's own idempotent producer (its protocol code, not librdkafka's) through the same proxy:
    exactly 0..n-1 per partition; with idempotence off (retries on) the same faults leave duplicates."""
    from kafka import KafkaProducer

    proxy_port = free_port()
    broker = Broker(tmp_path / "data", tmp_path / "broker.log",
                    ["--advertised-listener", f"127.0.0.1:{proxy_port}"])
    broker.start()
    proxy = FaultProxy(broker.port, proxy_port, seed=23, cut_after=(20_000, 80_000), max_faults=6)
    try:
        topic = "kafka-python-idempotent"
        create_topic(broker, topic, partitions=PARTITIONS)
        per_partition = 5_000
        client = KafkaProducer(
            bootstrap_servers=f"127.0.0.1:{proxy_port}",
            enable_idempotence=idempotent,
            acks="all",
            retries=100,
            max_in_flight_requests_per_connection=5,
            linger_ms=2,
            retry_backoff_ms=50,
            request_timeout_ms=5000,
        )
        futures = []
        for number in range(per_partition):
            for partition in range(PARTITIONS):
                futures.append(client.send(topic, value=b"%d" % number, partition=partition))
        client.flush(timeout=120)
        failures = [future.exception for future in futures if future.failed()]
        assert not failures, f"delivery errors: {failures[:5]}"
        assert all(future.succeeded() for future in futures)
        client.close(timeout=30)
        assert proxy.fault_count >= 1, "the proxy cut no connection"
        values = read_values(broker, topic, PARTITIONS, per_partition)
        if idempotent:
            for partition in range(PARTITIONS):
                got = values[partition]
                assert got == list(range(per_partition)), (
                    f"partition {partition}: {len(got)} values, {len(got) - len(set(got))} duplicates"
                )
        else:
            duplicates = sum(len(got) - len(set(got)) for got in values.values())
            assert duplicates > 0, "no duplicates without idempotence: the faults did not hit in-flight requests"
        assert broker.alive(), broker.log_tail()
        broker.stop()
    finally:
        proxy.stop()
        broker.kill()
