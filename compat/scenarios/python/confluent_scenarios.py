"""confluent-kafka (Python, on the librdkafka it bundles) against Sluice: one scenario per feature of issue 5."""

import time

import confluent_kafka
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicCollection,
                             TopicPartition, libversion)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                   NewTopic, OffsetSpec)

import model
from harness import main, scenario, unique_topic, wait_until

TIMEOUT_S = 30


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(client, name, partitions, config=None):
    futures = client.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=TIMEOUT_S)
    futures[name].result(timeout=TIMEOUT_S)


def produce(bootstrap, topic, partitions, count=model.RECORD_COUNT, **settings):
    config = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5}
    config.update(settings)
    producer = Producer(config)
    errors = []

    def delivered(error, _message):
        if error is not None:
            errors.append(error)

    for item in model.records(partitions, count):
        producer.produce(topic, value=item["value"], key=item["key"], headers=item["headers"],
                         partition=item["partition"], timestamp=item["timestamp"], on_delivery=delivered)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    assert remaining == 0, f"{remaining} records not delivered within {TIMEOUT_S} s"
    assert not errors, f"delivery errors: {errors[:3]}"


def consumer(bootstrap, **settings):
    config = {"bootstrap.servers": bootstrap, "group.id": "compat-unused", "enable.auto.commit": False,
              "enable.partition.eof": True}
    config.update(settings)
    return Consumer(config)


def poll_one(client, what):
    """The next message or error event (wait_until would skip a tombstone: a Message's len() is its value's)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        message = client.poll(0.5)
        if message is not None:
            return message
    raise AssertionError(f"no message within {TIMEOUT_S} s: {what}")


def consume_partitions(bootstrap, topic, partitions, count=model.RECORD_COUNT):
    """Reads every partition from the beginning to its end (no group: assign), as model.check_consumed wants."""
    client = consumer(bootstrap)
    client.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(partitions)])
    consumed = {partition: [] for partition in range(partitions)}
    at_end = set()
    deadline = time.monotonic() + TIMEOUT_S
    while len(at_end) < partitions and time.monotonic() < deadline:
        message = client.poll(0.5)
        if message is None:
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
                continue
            raise KafkaException(message.error())
        timestamp_type, timestamp = message.timestamp()
        consumed[message.partition()].append(
            (message.offset(), message.key(), message.value(), message.headers() or [], timestamp))
    client.close()
    assert len(at_end) == partitions, f"reached the end of {sorted(at_end)} of {partitions} partitions"
    return consumed


@scenario("metadata", basic=True)
def metadata(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("meta")
    create_topic(client, topic, 3)
    cluster = client.list_topics(timeout=TIMEOUT_S)
    # One broker per bootstrap address: one, or every node of a `compat.sh --cluster N` cluster.
    assert len(cluster.brokers) == len(bootstrap.split(",")), f"brokers: {cluster.brokers}"
    assert cluster.controller_id in cluster.brokers, f"controller {cluster.controller_id}, brokers {cluster.brokers}"
    described = cluster.topics[topic]
    assert described.error is None, described.error
    assert sorted(described.partitions) == [0, 1, 2], described.partitions
    for partition in described.partitions.values():
        assert partition.leader in cluster.brokers, partition
        assert partition.replicas == [partition.leader] and partition.isrs == [partition.leader], partition


for codec in model.CODECS:
    @scenario(f"produce-consume-{codec}", basic=codec in ("none", "zstd"))
    def produce_consume(bootstrap, codec=codec):
        """Keys, null keys, null values, headers with null values and CreateTime timestamps, byte-exact."""
        topic = unique_topic(f"codec-{codec}")
        create_topic(admin(bootstrap), topic, 3)
        produce(bootstrap, topic, 3, **{"compression.type": codec})
        model.check_consumed(consume_partitions(bootstrap, topic, 3), 3)


@scenario("seek-and-list-offsets-by-time")
def seek_and_offsets_by_time(bootstrap):
    topic = unique_topic("time")
    client = admin(bootstrap)
    create_topic(client, topic, 2)
    produce(bootstrap, topic, 2)
    expected = model.expected_by_partition(2)
    # The timestamp of record 151 (partition 1, its 75th record): partition 0's first record at or after it is
    # index 152 (its 76th), partition 1's is 151 itself.
    target_ms = model.BASE_TIMESTAMP_MS + 151 * model.STEP_MS
    reader = consumer(bootstrap)
    found = reader.offsets_for_times([TopicPartition(topic, p, target_ms) for p in range(2)], timeout=TIMEOUT_S)
    offsets = {item.partition: item.offset for item in found}
    assert offsets == {0: 76, 1: 75}, offsets
    # Past the last timestamp: end offset (-1 in the API, OFFSET_END).
    late = reader.offsets_for_times([TopicPartition(topic, 0, model.BASE_TIMESTAMP_MS + 10**9)], timeout=TIMEOUT_S)
    assert late[0].offset == -1, late[0].offset
    low, high = reader.get_watermark_offsets(TopicPartition(topic, 1), timeout=TIMEOUT_S)
    assert (low, high) == (0, len(expected[1])), (low, high)
    # Seek to the found offset: the first record read is record 151.
    reader.assign([TopicPartition(topic, 1, 75)])
    message = poll_one(reader, "a record after the seek")
    assert message.error() is None, message.error()
    assert message.offset() == 75 and message.key() == b"key-151", (message.offset(), message.key())
    reader.seek(TopicPartition(topic, 1, 10))
    message = poll_one(reader, "a record after seek()")
    assert message.offset() == 10 and message.key() == expected[1][10]["key"], (message.offset(), message.key())
    reader.close()
    # The admin ListOffsets: earliest, latest, max timestamp, by timestamp.
    partition = TopicPartition(topic, 0)
    for spec, want in ((OffsetSpec.earliest(), 0), (OffsetSpec.latest(), len(expected[0])),
                       (OffsetSpec.max_timestamp(), len(expected[0]) - 1), (OffsetSpec.for_timestamp(target_ms), 76)):
        result = client.list_offsets({partition: spec}, request_timeout=TIMEOUT_S)[partition].result(timeout=TIMEOUT_S)
        assert result.offset == want, f"{spec}: offset {result.offset}, want {want}"


@scenario("admin-topics")
def admin_topics(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("admin")
    create_topic(client, topic, 4, {"retention.ms": "3600000"})
    try:
        create_topic(client, topic, 4)
        raise AssertionError("creating an existing topic succeeded")
    except KafkaException as error:
        assert error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, error
    described = client.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    assert len(described.partitions) == 4, described
    assert topic in client.list_topics(timeout=TIMEOUT_S).topics
    client.delete_topics([topic], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    wait_until(lambda: topic not in client.list_topics(timeout=TIMEOUT_S).topics, TIMEOUT_S, "the topic to go")
    try:
        client.delete_topics([topic], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
        raise AssertionError("deleting a deleted topic succeeded")
    except KafkaException as error:
        assert error.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, error


@scenario("admin-configs")
def admin_configs(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("configs")
    create_topic(client, topic, 1, {"retention.ms": "3600000"})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = client.describe_configs([resource])[resource].result(TIMEOUT_S)
    assert entries["retention.ms"].value == "3600000", entries["retention.ms"]
    assert "segment.bytes" in entries and "cleanup.policy" in entries, sorted(entries)
    change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([change])[change].result(TIMEOUT_S)
    entries = client.describe_configs([resource])[resource].result(TIMEOUT_S)
    assert entries["retention.ms"].value == "7200000", entries["retention.ms"]
    broker_id = next(iter(client.list_topics(timeout=TIMEOUT_S).brokers))
    broker = ConfigResource(ConfigResource.Type.BROKER, str(broker_id))
    broker_entries = client.describe_configs([broker])[broker].result(TIMEOUT_S)
    assert "message.max.bytes" in broker_entries, sorted(broker_entries)[:20]


@scenario("admin-create-partitions")
def admin_create_partitions(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("partitions")
    create_topic(client, topic, 2)
    client.create_partitions([NewPartitions(topic, 5)], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    wait_until(lambda: len(client.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions) == 5,
               TIMEOUT_S, "5 partitions in Metadata")
    produce(bootstrap, topic, 5, count=50)
    model.check_consumed(consume_partitions(bootstrap, topic, 5, count=50), 5, count=50)
    try:
        client.create_partitions([NewPartitions(topic, 3)], operation_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
        raise AssertionError("shrinking partitions succeeded")
    except KafkaException as error:
        assert error.args[0].code() == KafkaError.INVALID_PARTITIONS, error


@scenario("admin-delete-records")
def admin_delete_records(bootstrap):
    client = admin(bootstrap)
    topic = unique_topic("delete-records")
    create_topic(client, topic, 1)
    produce(bootstrap, topic, 1, count=20)
    partition = TopicPartition(topic, 0, 5)
    result = client.delete_records([partition], request_timeout=TIMEOUT_S)[partition].result(TIMEOUT_S)
    assert result.low_watermark == 5, result
    reader = consumer(bootstrap)
    low, high = reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S)
    assert (low, high) == (5, 20), (low, high)
    reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    message = poll_one(reader, "a record after delete_records")
    assert message.error() is None and message.offset() == 5, (message.error(), message.offset())
    reader.close()


@scenario("admin-describe-cluster")
def admin_describe_cluster(bootstrap):
    client = admin(bootstrap)  # kept alive until the future resolves: a destroyed handle fails its requests
    cluster = client.describe_cluster(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    # One broker per bootstrap address: one, or every node of a `compat.sh --cluster N` cluster.
    assert len(cluster.nodes) == len(bootstrap.split(",")) and cluster.controller is not None, cluster.nodes
    assert cluster.controller.id in {node.id for node in cluster.nodes}, (cluster.controller, cluster.nodes)
    assert cluster.cluster_id, "empty cluster id"


@scenario("idempotent-producer")
def idempotent_producer(bootstrap):
    topic = unique_topic("idempotent")
    create_topic(admin(bootstrap), topic, 3)
    produce(bootstrap, topic, 3, **{"enable.idempotence": True, "max.in.flight.requests.per.connection": 5,
                                    "compression.type": "lz4"})
    model.check_consumed(consume_partitions(bootstrap, topic, 3), 3)


@scenario("consumer-group-commit")
def consumer_group_commit(bootstrap):
    topic = unique_topic("group")
    create_topic(admin(bootstrap), topic, 3)
    produce(bootstrap, topic, 3)
    group = unique_topic("group-id")
    member = consumer(bootstrap, **{"group.id": group, "auto.offset.reset": "earliest", "enable.partition.eof": False})
    member.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + TIMEOUT_S
    while seen < model.RECORD_COUNT and time.monotonic() < deadline:
        message = member.poll(0.5)
        if message is not None and message.error() is None:
            seen += 1
    assert seen == model.RECORD_COUNT, f"the group member read {seen} of {model.RECORD_COUNT}"
    member.commit(asynchronous=False)
    committed = member.committed([TopicPartition(topic, p) for p in range(3)], timeout=TIMEOUT_S)
    expected = model.expected_by_partition(3)
    assert {c.partition: c.offset for c in committed} == {p: len(expected[p]) for p in range(3)}, committed
    member.close()
    client = admin(bootstrap)
    groups = client.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    assert group in [g.group_id for g in groups.valid], groups.valid


@scenario("transactions", unsupported="transactions")
def transactions(bootstrap):
    raise AssertionError("not run")


if __name__ == "__main__":
    print(f"confluent-kafka {confluent_kafka.__version__} on librdkafka {libversion()[0]}", flush=True)
    main("confluent-kafka")
