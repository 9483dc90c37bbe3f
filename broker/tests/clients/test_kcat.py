"""kcat 1.7.1 on Debian's librdkafka 2.0.2 (an old parser of flexible versions) against a real broker.

kcat has no admin API, so topics are created through confluent-kafka's AdminClient. kcat reads messages as lines,
so its values are printable text (no newline); headers are fixed per kcat invocation (`-H`).
"""

import json
import shutil
import subprocess
import time

import pytest

from confluent_util import create_topic, produce_all, producer
from workload import CODEC_IDS, CODECS, MESSAGE_COUNT, PARTITION_COUNT, check_partitions, message, stored_batch_codecs

KCAT = shutil.which("kcat") or "kcat"
TIMEOUT_S = 120
PRODUCED = []

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")


def kcat(broker, *args, stdin=None, check=True):
    result = subprocess.run(
        [KCAT, "-b", broker.bootstrap, *args],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    if check:
        assert result.returncode == 0, f"kcat {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]!r}"
    return result


def kcat_headers(partition):
    return [("partition", b"%d" % partition)]


def expected_headers(headers):
    """kcat's -H headers are per invocation: the producer here sets only the partition header."""
    return headers[:1]


def produce_codec(broker, topic, codec):
    """Eight kcat producers, one per partition, each fed its partition's messages as `key:value` lines."""
    counts = [MESSAGE_COUNT // PARTITION_COUNT + (p < MESSAGE_COUNT % PARTITION_COUNT) for p in range(PARTITION_COUNT)]
    processes = []
    for partition in range(PARTITION_COUNT):
        lines = []
        for index in range(counts[partition]):
            key, value, _ = message(codec, partition, index, binary=False)
            lines.append(key + b":" + (value or b""))
        command = [
            KCAT, "-b", broker.bootstrap, "-P", "-t", topic, "-p", str(partition), "-K", ":", "-Z",
            "-z", codec, "-H", f"partition={partition}",
            "-X", "linger.ms=50", "-X", "batch.num.messages=10000", "-X", "queue.buffering.max.messages=200000",
            "-X", "acks=all",
        ]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        processes.append((process, b"\n".join(lines) + b"\n"))
    for process, data in processes:
        try:
            _, stderr = process.communicate(data, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        assert process.returncode == 0, f"kcat producer exited {process.returncode}: {stderr[-2000:]!r}"
        assert b"Delivery failed" not in stderr, stderr[-2000:]


def consume(broker, topic):
    """`kcat -C -o beginning -e -J`: every message of every partition, as JSON lines."""
    result = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-X", "fetch.wait.max.ms=100")
    consumed = {}
    for line in result.stdout.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        headers = record.get("headers") or []
        pairs = [
            (headers[i], None if headers[i + 1] is None else headers[i + 1].encode())
            for i in range(0, len(headers), 2)
        ]
        key = record["key"]
        value = record["payload"]
        consumed.setdefault(record["partition"], []).append(
            (record["offset"], None if key is None else key.encode(), None if value is None else value.encode(), pairs)
        )
    return consumed


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_round_trips_byte_exact(broker, codec):
    """100,000 keyed messages over 8 partitions, produced and consumed by kcat, come back exact and in order."""
    topic = f"kcat-{codec}"
    create_topic(broker, topic)
    produce_codec(broker, topic, codec)
    PRODUCED.append((topic, codec))
    check_partitions(codec, consume(broker, topic), binary=False, header_normalise=expected_headers)
    assert set(stored_batch_codecs(broker.bootstrap, topic, 3)) == {CODEC_IDS[codec]}


def test_restart_keeps_every_message(broker):
    """After SIGTERM and a restart every codec topic reads back the same through kcat."""
    assert [codec for _, codec in PRODUCED] == list(CODECS), "the codec tests must run first"
    broker.restart()
    for topic, codec in PRODUCED:
        check_partitions(codec, consume(broker, topic), binary=False, header_normalise=expected_headers)


def test_metadata_lists_topics_with_leader_zero(broker):
    """`kcat -L` lists every topic with all its partitions led by node 0, replicas and ISR [0]."""
    create_topic(broker, "kcat-metadata", partitions=5)
    listing = json.loads(kcat(broker, "-L", "-J").stdout)
    assert [b["id"] for b in listing["brokers"]] == [0]
    assert listing["brokers"][0]["name"] == broker.bootstrap
    topics = {topic["topic"]: topic for topic in listing["topics"]}
    assert "kcat-metadata" in topics
    for name, topic in topics.items():
        assert topic.get("error") is None, f"{name}: {topic.get('error')}"
        want = 5 if name == "kcat-metadata" else PARTITION_COUNT
        if name.startswith("kcat-"):
            assert len(topic["partitions"]) == want, name
        for partition in topic["partitions"]:
            assert partition["leader"] == 0, (name, partition)
            assert [r["id"] for r in partition["replicas"]] == [0], (name, partition)
            assert [r["id"] for r in partition["isrs"]] == [0], (name, partition)
    # The plain-text listing (what an operator reads) says the same.
    text = kcat(broker, "-L", "-t", "kcat-metadata").stdout.decode()
    assert "5 partitions" in text and text.count("leader 0") == 5, text


def test_query_offsets_by_timestamp(broker):
    """`kcat -Q -t topic:partition:timestamp` (ListOffsets from librdkafka 2.0.2) finds the right offsets."""
    topic = "kcat-times"
    create_topic(broker, topic, partitions=2)
    base = int(time.time() * 1000) - 3_600_000
    items = [(p, b"k", b"v%d" % i, None, base + 10 * i) for p in range(2) for i in range(50)]
    assert produce_all(producer(broker, **{"compression.type": "gzip"}), topic, items) == []
    for timestamp, want in ((base - 1, 0), (base + 55, 6), (base + 490, 49), (base + 491, -1)):
        output = kcat(broker, "-Q", "-t", f"{topic}:0:{timestamp}", "-t", f"{topic}:1:{timestamp}").stdout.decode()
        offsets = [int(line.rsplit("offset", 1)[1]) for line in output.splitlines() if "offset" in line]
        assert offsets == [want, want], f"timestamp {timestamp - base:+}: {output!r}"


def test_oversized_message_is_refused_and_broker_keeps_serving(broker):
    """kcat's 2 MiB message gets "Message size too large" from the broker; the next one is delivered."""
    topic = "kcat-oversized"
    create_topic(broker, topic, partitions=1)
    big = b"k:" + b"x" * (2 << 20) + b"\n"
    result = kcat(broker, "-P", "-t", topic, "-p", "0", "-K", ":", "-X", "message.max.bytes=10000000", stdin=big,
                  check=False)
    assert b"Message size too large" in result.stderr, result.stderr[-2000:]
    kcat(broker, "-P", "-t", topic, "-p", "0", "-K", ":", stdin=b"small:fits\n")
    consumed = consume(broker, topic)
    assert consumed == {0: [(0, b"small", b"fits", [])]}
