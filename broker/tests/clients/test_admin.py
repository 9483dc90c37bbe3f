"""Admin APIs through confluent-kafka's AdminClient (librdkafka 2.16) and kafka-python's KafkaAdminClient."""

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from confluent_util import TIMEOUT_S, admin, consume_all, create_topic, produce_all, producer


def wait(futures):
    """Resolves a dict of futures; returns {key: result or the KafkaError}."""
    results = {}
    for key, future in futures.items():
        try:
            results[key] = future.result(timeout=TIMEOUT_S)
        except KafkaException as error:
            results[key] = error.args[0]
    return results


def topic_configs(client, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return wait(client.describe_configs([resource]))[resource]


def test_create_list_and_delete_topics(broker):
    """CreateTopics (with configs, validate-only, duplicates), Metadata and DeleteTopics, then re-creation."""
    client = admin(broker)
    results = wait(client.create_topics([
        NewTopic("admin-a", 3, 1, config={"retention.ms": "3600000"}),
        NewTopic("admin-b", 1, 1),
    ]))
    assert results == {"admin-a": None, "admin-b": None}
    duplicate = wait(client.create_topics([NewTopic("admin-a", 3, 1)]))["admin-a"]
    assert duplicate.code() == KafkaError.TOPIC_ALREADY_EXISTS
    bad = wait(client.create_topics([NewTopic("admin-bad", 1, 3)]))["admin-bad"]
    assert bad.code() == KafkaError.INVALID_REPLICATION_FACTOR
    bad = wait(client.create_topics([NewTopic("admin-bad", 1, 1, config={"no.such.config": "1"})]))["admin-bad"]
    assert bad.code() == KafkaError.INVALID_CONFIG
    validated = wait(client.create_topics([NewTopic("admin-dry", 2, 1)], validate_only=True))["admin-dry"]
    assert validated is None
    topics = client.list_topics(timeout=TIMEOUT_S).topics
    assert len(topics["admin-a"].partitions) == 3
    assert "admin-dry" not in topics and "admin-bad" not in topics
    assert all(p.leader == 0 and p.replicas == [0] and p.isrs == [0] for p in topics["admin-a"].partitions.values())

    assert produce_all(producer(broker), "admin-b", [(0, b"k", b"old", None, 0)]) == []
    assert wait(client.delete_topics(["admin-b"], operation_timeout=30)) == {"admin-b": None}
    missing = wait(client.delete_topics(["admin-b"], operation_timeout=30))["admin-b"]
    assert missing.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert "admin-b" not in client.list_topics(timeout=TIMEOUT_S).topics
    # Re-created under the same name, the topic starts empty.
    create_topic(broker, "admin-b", partitions=1)
    assert produce_all(producer(broker), "admin-b", [(0, b"k", b"new", None, 0)]) == []
    assert consume_all(broker, "admin-b", partitions=1)[0] == [(0, b"k", b"new", [])]


def test_describe_and_alter_configs(broker):
    """DescribeConfigs shows defaults and overrides; AlterConfigs replaces; IncrementalAlterConfigs sets/deletes."""
    client = admin(broker)
    create_topic(broker, "admin-configs", partitions=1, config={"retention.ms": "3600000"})
    configs = topic_configs(client, "admin-configs")
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["max.message.bytes"].is_default  # the built-in value: DEFAULT_CONFIG
    assert configs["cleanup.policy"].value == "delete"

    # AlterConfigs replaces the whole set: retention.ms goes back to its default.
    resource = ConfigResource(ResourceType.TOPIC, "admin-configs", set_config={"segment.bytes": "1048576"})
    assert wait(client.alter_configs([resource]))[resource] is None
    configs = topic_configs(client, "admin-configs")
    assert configs["segment.bytes"].value == "1048576"
    assert configs["retention.ms"].is_default

    # IncrementalAlterConfigs: SET one key, DELETE another, the rest stays.
    resource = ConfigResource(
        ResourceType.TOPIC,
        "admin-configs",
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    assert wait(client.incremental_alter_configs([resource]))[resource] is None
    configs = topic_configs(client, "admin-configs")
    assert configs["retention.ms"].value == "7200000" and not configs["retention.ms"].is_default
    assert configs["segment.bytes"].is_default

    bad = ConfigResource(ResourceType.TOPIC, "admin-configs", set_config={"retention.ms": "soon"})
    error = wait(client.alter_configs([bad]))[bad]
    assert error.code() == KafkaError.INVALID_CONFIG
    missing = ConfigResource(ResourceType.TOPIC, "admin-no-such-topic")
    error = wait(client.describe_configs([missing]))[missing]
    assert error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # The broker's own configuration.
    resource = ConfigResource(ResourceType.BROKER, "0")
    configs = wait(client.describe_configs([resource]))[resource]
    assert configs["message.max.bytes"].value == "1048588"

    # Configs survive a restart.
    broker.restart()
    client = admin(broker)
    configs = topic_configs(client, "admin-configs")
    assert configs["retention.ms"].value == "7200000"


def test_create_partitions(broker):
    """CreatePartitions grows a topic; the new partitions take writes; shrinking is refused."""
    client = admin(broker)
    create_topic(broker, "admin-grow", partitions=2)
    assert wait(client.create_partitions([NewPartitions("admin-grow", 5)])) == {"admin-grow": None}
    topics = client.list_topics(timeout=TIMEOUT_S).topics
    assert sorted(topics["admin-grow"].partitions) == [0, 1, 2, 3, 4]
    error = wait(client.create_partitions([NewPartitions("admin-grow", 3)]))["admin-grow"]
    assert error.code() == KafkaError.INVALID_PARTITIONS
    items = [(p, b"k%d" % p, b"v%d" % p, None, 0) for p in range(5)]
    assert produce_all(producer(broker), "admin-grow", items) == []
    consumed = consume_all(broker, "admin-grow", partitions=5)
    assert {p: [r[2] for r in records] for p, records in consumed.items()} == {p: [b"v%d" % p] for p in range(5)}


def test_delete_records_moves_the_log_start(broker):
    """DeleteRecords before offset 40: the low watermark is 40, and a consumer from the beginning starts there."""
    client = admin(broker)
    create_topic(broker, "admin-delete-records", partitions=2)
    items = [(p, b"k", b"v%d" % i, None, 0) for p in range(2) for i in range(100)]
    assert produce_all(producer(broker, **{"linger.ms": 0}), "admin-delete-records", items) == []
    requests = [TopicPartition("admin-delete-records", 0, 40), TopicPartition("admin-delete-records", 1, -1)]
    results = client.delete_records(requests, request_timeout=TIMEOUT_S)
    low = {tp.partition: future.result(timeout=TIMEOUT_S).low_watermark for tp, future in results.items()}
    assert low == {0: 40, 1: 100}
    consumed = consume_all(broker, "admin-delete-records", partitions=2)
    assert [r[0] for r in consumed[0]] == list(range(40, 100))
    assert consumed[1] == []
    # The new log start survives a restart.
    broker.restart()
    consumed = consume_all(broker, "admin-delete-records", partitions=2)
    assert consumed[0][0][0] == 40 and consumed[0][0][2] == b"v40"


def test_describe_cluster(broker):
    """DescribeCluster: one node, 0, which is also the controller, at the advertised address."""
    client = admin(broker)
    cluster = client.describe_cluster(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    assert [node.id for node in cluster.nodes] == [0]
    assert f"{cluster.nodes[0].host}:{cluster.nodes[0].port}" == broker.bootstrap
    assert cluster.controller.id == 0
    assert cluster.cluster_id


# --- kafka-python's KafkaAdminClient (3.0 API: dicts in, dicts out) -------------------------------------------

def test_kafka_python_admin(broker):
    """kafka-python's admin client: create, describe/alter configs, partitions, records, cluster, log dirs, delete."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType
    from kafka.admin import NewPartitions as KNewPartitions

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        spec = {"kp-admin": {"num_partitions": 2, "replication_factor": 1, "configs": {"retention.ms": "3600000"}}}
        created = client.create_topics(spec)["topics"][0]
        assert (created["name"], created["error_code"], created["num_partitions"]) == ("kp-admin", 0, 2)
        duplicate = client.create_topics({"kp-admin": {"num_partitions": 2}}, raise_errors=False)["topics"][0]
        assert duplicate["error_code"] == 36  # TOPIC_ALREADY_EXISTS
        assert "kp-admin" in client.list_topics()

        resource = KConfigResource(ConfigResourceType.TOPIC, "kp-admin")
        modified = client.describe_configs([resource])["topic"]["kp-admin"]
        assert {name: entry["value"] for name, entry in modified.items()} == {"retention.ms": "3600000"}
        every = client.describe_configs([resource], config_filter="all")["topic"]["kp-admin"]
        assert every["max.message.bytes"]["config_source"] == "DEFAULT_CONFIG"
        assert every["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"

        for incremental in (True, False):
            value = "7200000" if incremental else "10800000"
            changed = KConfigResource(ConfigResourceType.TOPIC, "kp-admin", configs={"retention.ms": value})
            assert client.alter_configs([changed], incremental=incremental) == {"topic": {"kp-admin": "OK"}}
            modified = client.describe_configs([resource])["topic"]["kp-admin"]
            assert modified["retention.ms"]["value"] == value, incremental

        result = client.create_partitions({"kp-admin": KNewPartitions(4)})
        assert [r.error_code for r in result.results] == [0]
        partitions = client.describe_topics(["kp-admin"])[0]["partitions"]
        assert sorted(p["partition_index"] for p in partitions) == [0, 1, 2, 3]
        assert all(p["leader_id"] == 0 and p["isr_nodes"] == [0] for p in partitions)

        assert produce_all(producer(broker), "kp-admin", [(3, b"k", b"v%d" % i, None, 0) for i in range(10)]) == []
        deleted = client.delete_records({KTopicPartition("kp-admin", 3): 4})
        assert deleted[KTopicPartition("kp-admin", 3)]["low_watermark"] == 4

        cluster = client.describe_cluster()
        assert [b["broker_id"] for b in cluster["brokers"]] == [0] and cluster["controller_id"] == 0

        directories = client.describe_log_dirs()
        topics = {t["name"]: t for d in directories for ld in d["log_dirs"] for t in ld["topics"]}
        sizes = {p["partition_index"]: p["partition_size"] for p in topics["kp-admin"]["partitions"]}
        assert sorted(sizes) == [0, 1, 2, 3] and sizes[3] > 0 and sizes[0] == 0

        assert client.delete_topics(["kp-admin"])["topics"][0]["error_code"] == 0
        assert "kp-admin" not in client.list_topics()
    finally:
        client.close()


def test_compatibility_topic_configs_and_replica_assignment(broker):
    """What librdkafka's admin and produce tests (0011, 0081, 0092) ask of a broker: a replica assignment that
    places every partition on this node, compression.type and message.format.version as topic configs,
    APPEND/SUBTRACT on cleanup.policy, and a compacted topic that refuses records without a key."""
    # confluent-kafka's Python wrapper refuses replica assignments client-side; kafka-python sends them.
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic as KafkaNewTopic
    from kafka.errors import InvalidReplicationAssignmentError

    kafka_python = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        kafka_python.create_topics([KafkaNewTopic("assigned", -1, -1, replica_assignments={0: [0], 1: [0], 2: [0]},
                                                  topic_configs={"compression.type": "lz4"})])
        with pytest.raises(InvalidReplicationAssignmentError):
            kafka_python.create_topics([KafkaNewTopic("assigned-elsewhere", -1, -1,
                                                      replica_assignments={0: [0], 1: [1]})])
    finally:
        kafka_python.close()
    client = admin(broker)
    assert len(client.list_topics(timeout=TIMEOUT_S).topics["assigned"].partitions) == 3
    assert topic_configs(client, "assigned")["compression.type"].value == "lz4"

    resource_alter = ConfigResource(
        ConfigResource.Type.TOPIC,
        "assigned",
        incremental_configs=[
            ConfigEntry("message.format.version", "0.10.0.0", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ],
    )
    assert wait(client.incremental_alter_configs([resource_alter]))[resource_alter] is None
    assert topic_configs(client, "assigned")["cleanup.policy"].value == "delete,compact"

    # Compacted: a batch with a keyless record fails as a whole with INVALID_RECORD; keyed records go in.
    client_producer = producer(broker, **{"linger.ms": 100})
    errors = produce_all(client_producer, "assigned",
                         [(0, b"k1", b"v", None, 0), (0, None, b"keyless", None, 0), (0, b"k2", b"v", None, 0)])
    assert errors and all(error.code() == KafkaError.INVALID_RECORD for error in errors), errors
    assert not produce_all(producer(broker), "assigned", [(1, b"key", b"value", None, 0)])

    subtract = ConfigResource(
        ConfigResource.Type.TOPIC,
        "assigned",
        incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SUBTRACT),
        ],
    )
    assert wait(client.incremental_alter_configs([subtract]))[subtract] is None
    assert topic_configs(client, "assigned")["cleanup.policy"].value == "delete"
    assert not produce_all(producer(broker), "assigned", [(2, None, b"keyless again", None, 0)])
