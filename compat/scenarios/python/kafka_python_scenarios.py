"""kafka-python (pure Python, its own protocol code) against Sluice: one scenario per feature of issue 5."""

import time

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import InvalidPartitionsError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

import model
from harness import main, scenario, unique_topic, wait_until

TIMEOUT_S = 30


def admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)


def create_topic(client, name, partitions, config=None):
    client.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])


def produce(bootstrap, topic, partitions, count=model.RECORD_COUNT, **settings):
    config = {"bootstrap_servers": bootstrap, "acks": "all", "linger_ms": 5}
    config.update(settings)
    producer = KafkaProducer(**config)
    futures = [producer.send(topic, value=item["value"], key=item["key"], headers=item["headers"],
                             partition=item["partition"], timestamp_ms=item["timestamp"])
               for item in model.records(partitions, count, null_header=False)]
    producer.flush(timeout=TIMEOUT_S)
    for future in futures:
        future.get(timeout=TIMEOUT_S)  # raises the delivery error, if any
    producer.close(timeout=TIMEOUT_S)


def consumer(bootstrap, **settings):
    config = {"bootstrap_servers": bootstrap, "group_id": None, "enable_auto_commit": False,
              "request_timeout_ms": TIMEOUT_S * 1000 + 5000}
    config.update(settings)
    return KafkaConsumer(**config)


def consume_partitions(bootstrap, topic, partitions, count=model.RECORD_COUNT, **settings):
    client = consumer(bootstrap, **settings)
    assigned = [TopicPartition(topic, partition) for partition in range(partitions)]
    client.assign(assigned)
    client.seek_to_beginning()
    ends = client.end_offsets(assigned)
    consumed = {partition: [] for partition in range(partitions)}
    deadline = time.monotonic() + TIMEOUT_S
    while any(len(consumed[p.partition]) < ends[p] for p in assigned) and time.monotonic() < deadline:
        for partition, messages in client.poll(timeout_ms=500).items():
            for message in messages:
                consumed[partition.partition].append(
                    (message.offset, message.key, message.value, message.headers, message.timestamp))
    client.close()
    return consumed


@scenario("metadata", basic=True)
def metadata(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("meta")
    create_topic(client, topic, 3)
    cluster = client.describe_cluster()
    # One broker per bootstrap address: one, or every node of a `compat.sh --cluster N` cluster.
    assert len(cluster["brokers"]) == len(bootstrap.split(",")), cluster
    broker_ids = {broker["broker_id"] for broker in cluster["brokers"]}
    assert cluster["controller_id"] in broker_ids, cluster
    reader = consumer(bootstrap)
    assert reader.partitions_for_topic(topic) == {0, 1, 2}, reader.partitions_for_topic(topic)
    assert topic in reader.topics()
    reader.close()
    (described,) = client.describe_topics([topic])
    assert described["error_code"] == 0 and len(described["partitions"]) == 3, described
    for partition in described["partitions"]:
        assert partition["leader_id"] in broker_ids, partition
        assert partition["replica_nodes"] == [partition["leader_id"]], partition
    client.close()


for codec in model.CODECS:
    @scenario(f"produce-consume-{codec}", basic=codec in ("none", "gzip"))
    def produce_consume(bootstrap, codec=codec):
        """Keys, null keys, null values, headers with null values and CreateTime timestamps, byte-exact."""
        topic = unique_topic(f"codec-{codec}")
        client = admin(bootstrap)
        create_topic(client, topic, 3)
        client.close()
        produce(bootstrap, topic, 3, compression_type=None if codec == "none" else codec)
        model.check_consumed(consume_partitions(bootstrap, topic, 3), 3, null_header=False)


@scenario("seek-and-list-offsets-by-time")
def seek_and_offsets_by_time(bootstrap):
    topic = unique_topic("time")
    client = admin(bootstrap)
    create_topic(client, topic, 2)
    client.close()
    produce(bootstrap, topic, 2)
    expected = model.expected_by_partition(2)
    target_ms = model.BASE_TIMESTAMP_MS + 151 * model.STEP_MS
    reader = consumer(bootstrap)
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    found = reader.offsets_for_times({p: target_ms for p in partitions})
    assert {p.partition: o.offset for p, o in found.items()} == {0: 76, 1: 75}, found
    assert found[partitions[1]].timestamp == target_ms, found
    late = reader.offsets_for_times({partitions[0]: model.BASE_TIMESTAMP_MS + 10**9})
    assert late[partitions[0]] is None, late
    assert reader.beginning_offsets(partitions) == {partitions[0]: 0, partitions[1]: 0}
    assert reader.end_offsets(partitions) == {p: len(expected[p.partition]) for p in partitions}
    reader.assign([partitions[1]])
    for offset in (75, 10):
        reader.seek(partitions[1], offset)
        batch = wait_until(lambda: reader.poll(timeout_ms=500, max_records=1), TIMEOUT_S, "a record after seek")
        (message,) = batch[partitions[1]]
        assert message.offset == offset and message.key == expected[1][offset]["key"], message
    reader.close()


@scenario("admin-topics")
def admin_topics(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("admin")
    create_topic(client, topic, 4, {"retention.ms": "3600000"})
    try:
        create_topic(client, topic, 4)
        raise AssertionError("creating an existing topic succeeded")
    except TopicAlreadyExistsError:
        pass
    assert topic in client.list_topics()
    client.delete_topics([topic])
    wait_until(lambda: topic not in client.list_topics(), TIMEOUT_S, "the topic to go")
    try:
        client.delete_topics([topic])
        raise AssertionError("deleting a deleted topic succeeded")
    except UnknownTopicOrPartitionError:
        pass
    client.close()


def topic_config(client, topic):
    """{name: value} of every configuration of `topic`, defaults included."""
    described = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    return {name: entry["value"] for name, entry in described["topic"][topic].items()}


@scenario("admin-configs")
def admin_configs(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("configs")
    create_topic(client, topic, 1, {"retention.ms": "3600000"})
    entries = topic_config(client, topic)
    assert entries["retention.ms"] == "3600000", entries.get("retention.ms")
    assert "segment.bytes" in entries and "cleanup.policy" in entries, sorted(entries)
    client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                         configs={"retention.ms": "7200000", "segment.bytes": "1048576"})])
    entries = topic_config(client, topic)
    assert entries["retention.ms"] == "7200000" and entries["segment.bytes"] == "1048576", entries
    client.close()


@scenario("admin-create-partitions")
def admin_create_partitions(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("partitions")
    create_topic(client, topic, 2)
    client.create_partitions({topic: NewPartitions(5)})
    reader = consumer(bootstrap)
    wait_until(lambda: reader.topics() is not None and reader.partitions_for_topic(topic) == {0, 1, 2, 3, 4},
               TIMEOUT_S, "5 partitions in Metadata")
    reader.close()
    produce(bootstrap, topic, 5, count=50)
    model.check_consumed(consume_partitions(bootstrap, topic, 5, count=50), 5, count=50, null_header=False)
    try:
        client.create_partitions({topic: NewPartitions(3)})
        raise AssertionError("shrinking partitions succeeded")
    except InvalidPartitionsError:
        pass
    client.close()


@scenario("admin-delete-records")
def admin_delete_records(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("delete-records")
    create_topic(client, topic, 1)
    produce(bootstrap, topic, 1, count=20)
    partition = TopicPartition(topic, 0)
    result = client.delete_records({partition: 5})
    assert result[partition]["low_watermark"] == 5, result
    reader = consumer(bootstrap)
    assert reader.beginning_offsets([partition]) == {partition: 5}
    reader.assign([partition])
    reader.seek_to_beginning()
    batch = wait_until(lambda: reader.poll(timeout_ms=500, max_records=1), TIMEOUT_S, "a record")
    assert batch[partition][0].offset == 5, batch
    reader.close()
    client.close()


@scenario("idempotent-producer")
def idempotent_producer(bootstrap):
    topic = unique_topic("idempotent")
    client = admin(bootstrap)
    create_topic(client, topic, 3)
    client.close()
    produce(bootstrap, topic, 3, enable_idempotence=True, max_in_flight_requests_per_connection=5,
            compression_type="lz4")
    model.check_consumed(consume_partitions(bootstrap, topic, 3), 3, null_header=False)


@scenario("consumer-group-commit")
def consumer_group_commit(bootstrap):
    topic = unique_topic("group")
    client = admin(bootstrap)
    create_topic(client, topic, 3)
    produce(bootstrap, topic, 3)
    group = unique_topic("group-id")
    member = consumer(bootstrap, group_id=group, auto_offset_reset="earliest")
    member.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + TIMEOUT_S
    while seen < model.RECORD_COUNT and time.monotonic() < deadline:
        seen += sum(len(messages) for messages in member.poll(timeout_ms=500).values())
    assert seen == model.RECORD_COUNT, f"the group member read {seen} of {model.RECORD_COUNT}"
    member.commit()
    expected = model.expected_by_partition(3)
    for partition in range(3):
        committed = member.committed(TopicPartition(topic, partition))
        assert committed == len(expected[partition]), (partition, committed)
    member.close()
    listed = client.list_groups()
    assert group in [entry["group_id"] if isinstance(entry, dict) else entry[0] for entry in listed], listed
    client.close()


# Clients pinned to an old protocol, as deployed applications are: kafka-python with `api_version` set skips
# ApiVersions and speaks that broker's versions. (0, 10, 1): Produce v2 and Fetch v3 with message format v1
# (timestamps), ListOffsets v1, Metadata v2. (0, 9): Produce v1 and Fetch v1 with format v0 (no timestamps),
# ListOffsets v0, Metadata v0 — and lz4 with old Kafka's frame header checksum. zstd needs format v2.
OLD_PROTOCOLS = {"0.10.1": (0, 10, 1), "0.9": (0, 9)}
OLD_RECORD_COUNT = 300

for label, pinned in OLD_PROTOCOLS.items():
    for codec in ("none", "gzip", "snappy", "lz4"):
        @scenario(f"old-protocol-{label}-{codec}", basic=codec == "gzip")
        def old_protocol(bootstrap, pinned=pinned, codec=codec):
            """Keys, null keys, null values, timestamps (format v1), byte-exact through the v2 log and back."""
            topic = unique_topic(f"old-{codec}")
            client = admin(bootstrap)
            create_topic(client, topic, 2)
            client.close()
            with_timestamps = pinned >= (0, 10)
            # Null keys and null values (tombstones), never both: kafka-python refuses a message with neither.
            items = [(index % 2, None if index % 5 == 1 else f"key-{index}".encode(),
                      None if index % 10 == 4 else f"value-{index}-".encode() * (index % 7 + 1),
                      model.BASE_TIMESTAMP_MS + index if with_timestamps else None)
                     for index in range(OLD_RECORD_COUNT)]
            producer = KafkaProducer(bootstrap_servers=bootstrap, api_version=pinned, acks="all", linger_ms=5,
                                     compression_type=None if codec == "none" else codec)
            futures = [producer.send(topic, key=key, value=value, partition=partition, timestamp_ms=timestamp)
                       for partition, key, value, timestamp in items]
            producer.flush(timeout=TIMEOUT_S)
            for future in futures:
                future.get(timeout=TIMEOUT_S)
            producer.close(timeout=TIMEOUT_S)
            consumed = consume_partitions(bootstrap, topic, 2, api_version=pinned)
            for partition in range(2):
                want = [(offset, key, value, timestamp) for offset, (_, key, value, timestamp)
                        in enumerate(item for item in items if item[0] == partition)]
                got = [(offset, key, value, timestamp if with_timestamps else None)
                       for offset, key, value, _, timestamp in consumed[partition]]
                assert got == want, f"partition {partition}: {len(got)} read, {len(want)} produced; first {got[:2]}"


@scenario("transactions", unsupported="transactions")
def transactions(bootstrap):
    raise AssertionError("not run")


if __name__ == "__main__":
    print(f"kafka-python {kafka.__version__}", flush=True)
    main("kafka-python")
