"""kafka-python 3.0 (pure Python, its own protocol code) against a real broker: codecs, restart, offsets, limits.

Idempotence is turned off in the producer: the broker has no InitProducerId yet (see `producer`).
kafka-python compresses snappy, lz4 and zstd through optional packages (python-snappy, lz4, zstandard) that
scripts/install-test-deps.sh installs; a codec whose package is missing is skipped with the reason.
"""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.codec import has_lz4, has_snappy, has_zstd
from kafka.errors import MessageSizeTooLargeError

from workload import CODEC_IDS, CODECS, MESSAGE_COUNT, PARTITION_COUNT, check_partitions, message, stored_batch_codecs

TIMEOUT_S = 120
PRODUCED = []
CODEC_AVAILABLE = {
    "none": True,
    "gzip": True,
    "snappy": has_snappy(),
    "lz4": has_lz4(),
    "zstd": has_zstd(),
}


def admin(broker):
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)


def create_topic(broker, name, partitions=PARTITION_COUNT, config=None):
    client = admin(broker)
    try:
        result = client.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
        errors = [error for (_, error, *_rest) in getattr(result, "topic_errors", [])]
        assert all(error == 0 for error in errors), errors
    finally:
        client.close()


def producer(broker, **settings):
    config = dict(
        bootstrap_servers=broker.bootstrap,
        # kafka-python 3 enables idempotence by default (InitProducerId + sequence numbers): left on, so that
        # every test here also runs the broker's idempotent path.
        acks="all",
        linger_ms=50,
        batch_size=512 * 1024,
        max_in_flight_requests_per_connection=5,
        request_timeout_ms=30000,
    )
    config.update(settings)
    return KafkaProducer(**config)


def consumer(broker):
    return KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        fetch_max_bytes=50 << 20,
        max_partition_fetch_bytes=1 << 20,
        consumer_timeout_ms=1000,
    )


def consume_all(broker, topic, partitions=PARTITION_COUNT):
    """Assigns every partition, reads from the beginning to the end offsets; {partition: [(offset, k, v, headers)]}."""
    client = consumer(broker)
    try:
        assignment = [TopicPartition(topic, p) for p in range(partitions)]
        client.assign(assignment)
        client.seek_to_beginning()
        ends = client.end_offsets(assignment)
        consumed = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if all(client.position(tp) >= ends[tp] for tp in assignment):
                break
            for tp, records in client.poll(timeout_ms=500, max_records=50000).items():
                consumed[tp.partition].extend(
                    (record.offset, record.key, record.value, list(record.headers)) for record in records
                )
        else:
            raise AssertionError(f"not at the end offsets {ends} after {TIMEOUT_S} s")
        return consumed
    finally:
        client.close()


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_byte_exact(broker, codec):
    """100,000 keyed messages with headers and tombstones over 8 partitions come back byte-exact and in order."""
    if not CODEC_AVAILABLE[codec]:
        pytest.skip(f"kafka-python cannot {codec}: its optional compression package is not installed")
    topic = f"kafka-python-{codec}"
    create_topic(broker, topic)
    client = producer(broker, compression_type=None if codec == "none" else codec)
    futures = []
    for number in range(MESSAGE_COUNT):
        partition = number % PARTITION_COUNT
        key, value, headers = message(codec, partition, number // PARTITION_COUNT)
        futures.append(client.send(topic, value=value, key=key, headers=headers, partition=partition))
    client.flush(timeout=TIMEOUT_S)
    client.close(timeout=TIMEOUT_S)
    failed = [future.exception for future in futures if future.failed()]
    assert not failed, failed[:3]
    assert all(future.is_done for future in futures)
    PRODUCED.append((topic, codec))
    check_partitions(codec, consume_all(broker, topic))
    assert set(stored_batch_codecs(broker.bootstrap, topic, 5)) == {CODEC_IDS[codec]}


def test_restart_keeps_every_message(broker):
    """After SIGTERM and a restart every codec topic reads back the same through kafka-python."""
    assert [codec for _, codec in PRODUCED] == [c for c in CODECS if CODEC_AVAILABLE[c]], "codec tests run first"
    broker.restart()
    for topic, codec in PRODUCED:
        check_partitions(codec, consume_all(broker, topic))


def test_offsets_for_times_and_beginning_end(broker):
    """offsets_for_times, beginning_offsets and end_offsets (ListOffsets from kafka-python's own codec)."""
    topic = "kafka-python-times"
    create_topic(broker, topic, partitions=2)
    base = int(time.time() * 1000) - 3_600_000
    client = producer(broker, compression_type="gzip")
    for partition in range(2):
        for index in range(50):
            timestamp = base + 10 * index if index != 20 else base + 10_000
            client.send(topic, value=b"v%d" % index, partition=partition, timestamp_ms=timestamp)
    client.flush(timeout=TIMEOUT_S)
    client.close(timeout=TIMEOUT_S)
    reader = consumer(broker)
    try:
        partitions = [TopicPartition(topic, p) for p in range(2)]
        assert reader.beginning_offsets(partitions) == {tp: 0 for tp in partitions}
        assert reader.end_offsets(partitions) == {tp: 50 for tp in partitions}
        cases = [(base - 1, 0), (base + 55, 6), (base + 60, 6), (base + 5_000, 20), (base + 10_001, None)]
        for timestamp, want in cases:
            found = reader.offsets_for_times({tp: timestamp for tp in partitions})
            for tp in partitions:
                if want is None:
                    assert found[tp] is None, (timestamp - base, found[tp])
                else:
                    assert found[tp] is not None and found[tp].offset == want, (timestamp - base, found[tp])
        found = reader.offsets_for_times({partitions[0]: base + 5_000})[partitions[0]]
        assert found.timestamp == base + 10_000
    finally:
        reader.close()


def test_oversized_message_is_refused_and_broker_keeps_serving(broker):
    """A 2 MiB message gets MessageSizeTooLargeError (code 10) from the broker; the next send succeeds."""
    topic = "kafka-python-oversized"
    create_topic(broker, topic, partitions=1)
    # The client's own check is raised so that the broker, not kafka-python, refuses the message.
    client = producer(broker, max_request_size=10_000_000, linger_ms=0, retries=0)
    future = client.send(topic, value=b"x" * (2 << 20), partition=0)
    with pytest.raises(MessageSizeTooLargeError) as refused:
        future.get(timeout=TIMEOUT_S)
    assert refused.value.errno == 10
    client.send(topic, key=b"small", value=b"fits", partition=0).get(timeout=TIMEOUT_S)
    client.close(timeout=TIMEOUT_S)
    assert consume_all(broker, topic, partitions=1) == {0: [(0, b"small", b"fits", [])]}
