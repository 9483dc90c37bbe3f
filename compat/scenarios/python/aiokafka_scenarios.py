"""aiokafka (asyncio, its own protocol code) against Sluice: one scenario per feature of issue 5."""

import asyncio
import time

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidPartitionsError, TopicAlreadyExistsError
from aiokafka.admin.records_to_delete import RecordsToDelete

import model
from harness import main, scenario, unique_topic

TIMEOUT_S = 30


async def admin(bootstrap):
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_S * 1000)
    await client.start()
    return client


async def create_topic(client, name, partitions, config=None):
    response = await client.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
    errors = [(topic[0], topic[1]) for topic in response.topic_errors if topic[1] != 0]
    if errors and errors[0][1] == TopicAlreadyExistsError.errno:
        raise TopicAlreadyExistsError(errors)
    assert not errors, f"CreateTopics errors: {errors}"


async def produce(bootstrap, topic, partitions, count=model.RECORD_COUNT, **settings):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **settings)
    await producer.start()
    try:
        futures = []
        for item in model.records(partitions, count):
            futures.append(await producer.send(topic, value=item["value"], key=item["key"],
                                               headers=item["headers"], partition=item["partition"],
                                               timestamp_ms=item["timestamp"]))
        await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT_S)  # raises the first delivery error
    finally:
        await producer.stop()


async def consume_partitions(bootstrap, topic, partitions, count=model.RECORD_COUNT):
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await client.start()
    try:
        assigned = [TopicPartition(topic, partition) for partition in range(partitions)]
        client.assign(assigned)
        await client.seek_to_beginning()
        ends = await client.end_offsets(assigned)
        consumed = {partition: [] for partition in range(partitions)}
        deadline = time.monotonic() + TIMEOUT_S
        while any(len(consumed[p.partition]) < ends[p] for p in assigned) and time.monotonic() < deadline:
            for partition, messages in (await client.getmany(timeout_ms=500)).items():
                for message in messages:
                    consumed[partition.partition].append(
                        (message.offset, message.key, message.value, list(message.headers), message.timestamp))
        return consumed
    finally:
        await client.stop()


@scenario("metadata", basic=True)
async def metadata(bootstrap):
    client = await admin(bootstrap)
    try:
        topic = unique_topic("meta")
        await create_topic(client, topic, 3)
        cluster = await client.describe_cluster()
        # One broker per bootstrap address: one, or every node of a `compat.sh --cluster N` cluster.
        assert len(cluster["brokers"]) == len(bootstrap.split(",")), cluster
        broker_ids = {broker["node_id"] for broker in cluster["brokers"]}
        assert cluster["controller_id"] in broker_ids, cluster
        assert topic in await client.list_topics()
        (described,) = await client.describe_topics([topic])
        assert described["error_code"] == 0 and len(described["partitions"]) == 3, described
        for partition in described["partitions"]:
            assert partition["leader"] in broker_ids and partition["replicas"] == [partition["leader"]], partition
    finally:
        await client.close()


for codec in model.CODECS:
    @scenario(f"produce-consume-{codec}", basic=codec in ("none", "lz4"))
    async def produce_consume(bootstrap, codec=codec):
        """Keys, null keys, null values, headers with null values and CreateTime timestamps, byte-exact."""
        topic = unique_topic(f"codec-{codec}")
        client = await admin(bootstrap)
        try:
            await create_topic(client, topic, 3)
        finally:
            await client.close()
        await produce(bootstrap, topic, 3, compression_type=None if codec == "none" else codec)
        model.check_consumed(await consume_partitions(bootstrap, topic, 3), 3)


@scenario("seek-and-list-offsets-by-time")
async def seek_and_offsets_by_time(bootstrap):
    topic = unique_topic("time")
    client = await admin(bootstrap)
    try:
        await create_topic(client, topic, 2)
    finally:
        await client.close()
    await produce(bootstrap, topic, 2)
    expected = model.expected_by_partition(2)
    target_ms = model.BASE_TIMESTAMP_MS + 151 * model.STEP_MS
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        found = await reader.offsets_for_times({p: target_ms for p in partitions})
        assert {p.partition: o.offset for p, o in found.items()} == {0: 76, 1: 75}, found
        late = await reader.offsets_for_times({partitions[0]: model.BASE_TIMESTAMP_MS + 10**9})
        assert late[partitions[0]] is None, late
        assert await reader.beginning_offsets(partitions) == {partitions[0]: 0, partitions[1]: 0}
        assert await reader.end_offsets(partitions) == {p: len(expected[p.partition]) for p in partitions}
        reader.assign([partitions[1]])
        for offset in (75, 10):
            reader.seek(partitions[1], offset)
            message = await asyncio.wait_for(reader.getone(), TIMEOUT_S)
            assert message.offset == offset and message.key == expected[1][offset]["key"], message
    finally:
        await reader.stop()


@scenario("admin-topics")
async def admin_topics(bootstrap):
    client = await admin(bootstrap)
    try:
        topic = unique_topic("admin")
        await create_topic(client, topic, 4, {"retention.ms": "3600000"})
        try:
            await create_topic(client, topic, 4)
            raise AssertionError("creating an existing topic succeeded")
        except TopicAlreadyExistsError:
            pass
        assert topic in await client.list_topics()
        response = await client.delete_topics([topic])
        assert all(error == 0 for _, error, *_ in response.topic_error_codes), response
        deadline = time.monotonic() + TIMEOUT_S
        while topic in await client.list_topics():
            assert time.monotonic() < deadline, "the deleted topic is still listed"
            await asyncio.sleep(0.1)
    finally:
        await client.close()


@scenario("admin-configs")
async def admin_configs(bootstrap):
    client = await admin(bootstrap)
    try:
        topic = unique_topic("configs")
        await create_topic(client, topic, 1, {"retention.ms": "3600000"})

        async def configs():
            (response,) = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            (resource,) = response.resources
            assert resource[0] == 0, resource  # error code
            return {entry[0]: entry[1] for entry in resource[4]}

        entries = await configs()
        assert entries["retention.ms"] == "3600000", entries.get("retention.ms")
        assert "segment.bytes" in entries and "cleanup.policy" in entries, sorted(entries)
        await client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                   configs={"retention.ms": "7200000"})])
        assert (await configs())["retention.ms"] == "7200000"
    finally:
        await client.close()


@scenario("admin-create-partitions")
async def admin_create_partitions(bootstrap):
    client = await admin(bootstrap)
    topic = unique_topic("partitions")
    try:
        await create_topic(client, topic, 2)
        response = await client.create_partitions({topic: NewPartitions(5)})
        assert all(entry[1] == 0 for entry in response.topic_errors), response
        (described,) = await client.describe_topics([topic])
        assert len(described["partitions"]) == 5, described
        try:
            await client.create_partitions({topic: NewPartitions(3)})
            raise AssertionError("shrinking partitions succeeded")
        except InvalidPartitionsError:
            pass
    finally:
        await client.close()
    await produce(bootstrap, topic, 5, count=50)
    model.check_consumed(await consume_partitions(bootstrap, topic, 5, count=50), 5, count=50)


@scenario("admin-delete-records")
async def admin_delete_records(bootstrap):
    client = await admin(bootstrap)
    topic = unique_topic("delete-records")
    partition = TopicPartition(topic, 0)
    try:
        await create_topic(client, topic, 1)
        await produce(bootstrap, topic, 1, count=20)
        result = await client.delete_records({partition: RecordsToDelete(before_offset=5)})
        assert result[partition] == 5, result  # the new low watermark
    finally:
        await client.close()
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await reader.start()
    try:
        assert await reader.beginning_offsets([partition]) == {partition: 5}
        reader.assign([partition])
        await reader.seek_to_beginning(partition)
        message = await asyncio.wait_for(reader.getone(), TIMEOUT_S)
        assert message.offset == 5, message
    finally:
        await reader.stop()


@scenario("idempotent-producer")
async def idempotent_producer(bootstrap):
    topic = unique_topic("idempotent")
    client = await admin(bootstrap)
    try:
        await create_topic(client, topic, 3)
    finally:
        await client.close()
    await produce(bootstrap, topic, 3, enable_idempotence=True, compression_type="zstd")
    model.check_consumed(await consume_partitions(bootstrap, topic, 3), 3)


@scenario("consumer-group-commit")
async def consumer_group_commit(bootstrap):
    topic = unique_topic("group")
    client = await admin(bootstrap)
    try:
        await create_topic(client, topic, 3)
    finally:
        await client.close()
    await produce(bootstrap, topic, 3)
    group = unique_topic("group-id")
    member = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                              enable_auto_commit=False, request_timeout_ms=20000)
    await asyncio.wait_for(member.start(), TIMEOUT_S)
    try:
        seen = 0
        deadline = time.monotonic() + TIMEOUT_S
        while seen < model.RECORD_COUNT and time.monotonic() < deadline:
            seen += sum(len(batch) for batch in (await member.getmany(timeout_ms=500)).values())
        assert seen == model.RECORD_COUNT, f"the group member read {seen} of {model.RECORD_COUNT}"
        await member.commit()
        expected = model.expected_by_partition(3)
        for partition in range(3):
            committed = await member.committed(TopicPartition(topic, partition))
            assert committed == len(expected[partition]), (partition, committed)
    finally:
        await member.stop()


@scenario("transactions", unsupported="transactions")
def transactions(bootstrap):
    raise AssertionError("not run")


if __name__ == "__main__":
    print(f"aiokafka {aiokafka.__version__}", flush=True)
    main("aiokafka")
