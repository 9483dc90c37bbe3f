"""confluent-kafka (librdkafka 2.16) against a real broker: every codec round trip, restart, ListOffsets, limits."""

import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, KafkaError, TopicPartition
from confluent_kafka.admin import OffsetSpec

from confluent_util import TIMEOUT_S, admin, consume_all, consumer, create_topic, produce_all, producer
from workload import (
    CODEC_IDS,
    CODECS,
    MESSAGE_COUNT,
    PARTITION_COUNT,
    check_partitions,
    message,
    stored_batch_codecs,
)

# The codec topics this module produced, so that the restart test reads them all again.
PRODUCED = []


def codec_items(codec):
    for number in range(MESSAGE_COUNT):
        partition = number % PARTITION_COUNT
        key, value, headers = message(codec, partition, number // PARTITION_COUNT)
        yield partition, key, value, headers, 0


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_byte_exact(broker, codec):
    """100,000 keyed messages with headers and tombstones over 8 partitions come back byte-exact and in order."""
    topic = f"confluent-{codec}"
    create_topic(broker, topic)
    errors = produce_all(producer(broker, **{"compression.type": codec}), topic, codec_items(codec))
    assert errors == []
    PRODUCED.append((topic, codec))
    check_partitions(codec, consume_all(broker, topic))
    # The batches are stored as sent: compressed with the codec the producer chose.
    codecs = set(stored_batch_codecs(broker.bootstrap, topic, 0))
    assert codecs == {CODEC_IDS[codec]}


def test_restart_keeps_every_message(broker):
    """After SIGTERM and a restart on the same data directory every codec topic reads back the same."""
    assert [codec for _, codec in PRODUCED] == list(CODECS), "the codec tests must run first"
    broker.restart()
    for topic, codec in PRODUCED:
        check_partitions(codec, consume_all(broker, topic))


def timestamp_items(base, partitions, count):
    """Timestamps base + 10*i, except message 20 which is far in the future (the max-timestamp record)."""
    for partition in range(partitions):
        for index in range(count):
            timestamp = base + 10 * index if index != 20 else base + 10_000
            yield partition, b"k%d" % index, b"v%d" % index, None, timestamp


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_list_offsets_by_timestamp(broker, codec):
    """offsets_for_times finds the first record at or after a time, inside compressed batches too."""
    topic = f"confluent-times-{codec}"
    create_topic(broker, topic, partitions=2)
    base = int(time.time() * 1000) - 3_600_000
    client = producer(broker, **{"compression.type": codec})
    assert produce_all(client, topic, timestamp_items(base, 2, 50)) == []
    reader = consumer(broker)
    try:
        cases = [
            (base - 1, 0),          # before everything: the first record
            (base, 0),              # exactly the first timestamp
            (base + 55, 6),         # between records 5 and 6
            (base + 60, 6),         # exactly record 6
            (base + 5_000, 20),     # only the outlier is later
            (base + 10_000, 20),    # exactly the outlier
            (base + 10_001, -1),    # after everything: no offset
        ]
        for timestamp, want in cases:
            query = [TopicPartition(topic, p, timestamp) for p in range(2)]
            found = reader.offsets_for_times(query, timeout=TIMEOUT_S)
            for result in found:
                assert result.error is None
                assert result.offset == want, f"timestamp {timestamp - base:+}: offset {result.offset}"
            for p in range(2):
                low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S)
                assert (low, high) == (0, 50)
    finally:
        reader.close()
    client = admin(broker)
    for spec, want in ((OffsetSpec.max_timestamp(), (20, base + 10_000)), (OffsetSpec.earliest(), (0, None)),
                       (OffsetSpec.latest(), (50, None))):
        results = client.list_offsets({TopicPartition(topic, 1): spec}, request_timeout=TIMEOUT_S)
        found = results[TopicPartition(topic, 1)].result(timeout=TIMEOUT_S)
        assert found.offset == want[0], f"{spec}: offset {found.offset}"
        if want[1] is not None:
            assert found.timestamp == want[1], f"{spec}: timestamp {found.timestamp}"


def test_log_append_time_topic(broker):
    """A LogAppendTime topic stamps the broker's time over the producer's, and ListOffsets searches that time."""
    topic = "confluent-append-time"
    create_topic(broker, topic, partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    items = [(0, b"k%d" % i, b"v%d" % i, None, 1000 + i) for i in range(10)]
    assert produce_all(producer(broker, **{"compression.type": "lz4"}), topic, items) == []
    after = int(time.time() * 1000)
    reader = consumer(broker)
    try:
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 10 and time.monotonic() < deadline:
            record = reader.poll(0.5)
            if record is None or record.error():
                continue
            got.append(record.timestamp())
        assert len(got) == 10
        for kind, stamp in got:
            assert kind == TIMESTAMP_LOG_APPEND_TIME
            assert before - 1000 <= stamp <= after + 1000, (before, stamp, after)
        found = reader.offsets_for_times([TopicPartition(topic, 0, before - 1000)], timeout=TIMEOUT_S)
        assert found[0].offset == 0
        found = reader.offsets_for_times([TopicPartition(topic, 0, 2000)], timeout=TIMEOUT_S)
        assert found[0].offset == 0  # the producer's 1000.. timestamps were replaced
    finally:
        reader.close()
    # A CreateTime topic keeps the producer's timestamp.
    create_topic(broker, "confluent-create-time", partitions=1)
    assert produce_all(producer(broker), "confluent-create-time", [(0, b"k", b"v", None, 1234)]) == []
    reader = consumer(broker)
    try:
        reader.assign([TopicPartition("confluent-create-time", 0, OFFSET_BEGINNING)])
        record = None
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            record = reader.poll(0.5)
            if record is not None and not record.error():
                break
        assert record is not None and record.timestamp() == (TIMESTAMP_CREATE_TIME, 1234)
    finally:
        reader.close()


def test_oversized_message_is_refused_and_broker_keeps_serving(broker):
    """A message over message.max.bytes gets MESSAGE_TOO_LARGE from the broker; the next produce succeeds."""
    topic = "confluent-oversized"
    create_topic(broker, topic, partitions=1)
    # The client's own limit is raised so that the broker, not librdkafka, is the one that refuses.
    client = producer(broker, **{"message.max.bytes": 10_000_000, "compression.type": "none"})
    errors = produce_all(client, topic, [(0, b"big", b"x" * (2 << 20), None, 0)])
    assert [error.code() for error in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    assert produce_all(client, topic, [(0, b"small", b"fits", [("h", None)], 0)]) == []
    consumed = consume_all(broker, topic, partitions=1)
    assert consumed[0] == [(0, b"small", b"fits", [("h", None)])]
    # A topic's own max.message.bytes is enforced too.
    create_topic(broker, "confluent-small-limit", partitions=1, config={"max.message.bytes": "10000"})
    errors = produce_all(client, "confluent-small-limit", [(0, None, b"y" * 20000, None, 0)])
    assert [error.code() for error in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    assert produce_all(client, "confluent-small-limit", [(0, None, b"y" * 100, None, 0)]) == []
