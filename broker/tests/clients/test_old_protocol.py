"""Clients of the versions Kafka 4.0 removed (KIP-896), on the raw protocol: no ApiVersions first, as old clients did.

CreateTopics v0 creates a topic, Produce v2 (and v0) send message sets of format v1 (and v0) — uncompressed and in
a gzip wrapper — which the broker converts to v2 batches; Fetch v2 (and v0) read them back converted down, and
confluent-kafka (a modern client, Fetch v4+) reads the same records from the same log. Message sets are built here
from the format description (offset, size, CRC-32, magic, attributes, timestamp, key, value).
"""

import gzip
import socket
import struct
import zlib

from confluent_util import consume_all

TOPIC = "old-protocol"
CREATE_TOPICS, PRODUCE, FETCH = 19, 0, 1


class RawClient:
    """One connection speaking request header v1 and response header v0 (every version here predates flexible ones)."""

    def __init__(self, bootstrap):
        host, port = bootstrap.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.correlation_id = 0

    def call(self, api_key, version, body):
        self.correlation_id += 1
        client_id = b"old-client"
        header = struct.pack(">hhih", api_key, version, self.correlation_id, len(client_id)) + client_id
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self.read(4))[0]
        response = self.read(size)
        assert struct.unpack(">i", response[:4])[0] == self.correlation_id
        return Reader(response[4:])

    def read(self, size):
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "broker closed the connection"
            data += chunk
        return data

    def close(self):
        self.sock.close()


class Reader:
    def __init__(self, data):
        self.data, self.position = data, 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.position)
        self.position += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self):
        length = self.take(">h")
        value = self.data[self.position:self.position + length]
        self.position += length
        return value.decode()

    def blob(self):
        length = self.take(">i")
        if length < 0:
            return None
        value = self.data[self.position:self.position + length]
        self.position += length
        return value

    def done(self):
        assert self.position == len(self.data), f"{len(self.data) - self.position} bytes left over"


def string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def blob(data):
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data


def message(offset, magic, key, value, timestamp=None, attributes=0):
    body = struct.pack(">bb", magic, attributes)
    if magic == 1:
        body += struct.pack(">q", timestamp)
    body += blob(key) + blob(value)
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return struct.pack(">qiI", offset, len(body) + 4, crc) + body


def parse_message_set(data, magic):
    """[(absolute offset, timestamp, key, value)], gzip wrappers unwrapped (inner offsets relative in magic 1)."""
    messages, reader = [], Reader(data)
    while reader.position < len(data):
        offset, size = reader.take(">qi")
        body = data[reader.position:reader.position + size]
        reader.position += size
        assert struct.unpack(">I", body[:4])[0] == zlib.crc32(body[4:]) & 0xFFFFFFFF, "CRC-32"
        inner = Reader(body[4:])
        got_magic, attributes = inner.take(">bb")
        assert got_magic == magic
        timestamp = inner.take(">q") if magic == 1 else None
        key, value = inner.blob(), inner.blob()
        codec = attributes & 7
        if codec == 0:
            messages.append((offset, timestamp, key, value))
            continue
        assert codec == 1, f"codec {codec}"
        unwrapped = parse_message_set(gzip.decompress(value), magic)
        last = unwrapped[-1][0]
        for inner_offset, inner_timestamp, inner_key, inner_value in unwrapped:
            absolute = offset - last + inner_offset if magic == 1 else inner_offset
            messages.append((absolute, inner_timestamp, inner_key, inner_value))
    return messages


def produce(client, version, partition, message_set):
    body = struct.pack(">hi", -1, 10000) + struct.pack(">i", 1) + string(TOPIC)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + blob(message_set)
    reply = client.call(PRODUCE, version, body)
    assert reply.take(">i") == 1 and reply.string() == TOPIC and reply.take(">i") == 1
    index, error, base_offset = reply.take(">ihq")
    assert index == partition
    if version >= 2:
        reply.take(">q")  # log_append_time
    if version >= 1:
        reply.take(">i")  # throttle_time
    reply.done()
    return error, base_offset


def fetch(client, version, partitions):
    body = struct.pack(">iii", -1, 100, 1) + struct.pack(">i", 1) + string(TOPIC) + struct.pack(">i", len(partitions))
    for partition in partitions:
        body += struct.pack(">iqi", partition, 0, 1 << 20)
    reply = client.call(FETCH, version, body)
    if version >= 1:
        reply.take(">i")  # throttle_time
    assert reply.take(">i") == 1 and reply.string() == TOPIC
    answers = {}
    for _ in range(reply.take(">i")):
        partition, error, high_watermark = reply.take(">ihq")
        assert error == 0, f"partition {partition}: error {error}"
        answers[partition] = (high_watermark, parse_message_set(reply.blob() or b"", 1 if version >= 2 else 0))
    reply.done()
    return answers


PARTITION_0 = [(b"k0", b"v0", 1_600_000_000_000), (None, b"v1", 1_600_000_000_001), (b"k2", None, 1_600_000_000_002)]
PARTITION_1 = [(b"a", b"gzip-0", 1_600_000_000_010), (b"b", b"gzip-1", 1_600_000_000_011)]


def test_a_client_of_removed_versions_creates_produces_and_fetches(broker):
    # Proves CreateTopics v0, Produce v0/v2 with magic 0/1 message sets (plain and gzip) and Fetch v0/v2 work
    # without ApiVersions, and that a modern client reads the same records.
    client = RawClient(broker.bootstrap)
    try:
        topic = string(TOPIC) + struct.pack(">ihii", 2, 1, 0, 0)
        reply = client.call(CREATE_TOPICS, 0, struct.pack(">i", 1) + topic + struct.pack(">i", 10000))
        assert reply.take(">i") == 1 and reply.string() == TOPIC and reply.take(">h") == 0
        reply.done()

        plain = b"".join(message(i, 1, key, value, ts) for i, (key, value, ts) in enumerate(PARTITION_0))
        assert produce(client, 2, 0, plain) == (0, 0)
        inner = b"".join(message(i, 1, key, value, ts) for i, (key, value, ts) in enumerate(PARTITION_1))
        wrapper = message(1, 1, None, gzip.compress(inner), PARTITION_1[-1][2], attributes=1)
        assert produce(client, 2, 1, wrapper) == (0, 0)
        assert produce(client, 0, 1, message(0, 0, b"c", b"magic-0")) == (0, 2)
        corrupt = bytearray(message(0, 1, b"k", b"v", 0))
        corrupt[-1] ^= 1
        assert produce(client, 2, 0, bytes(corrupt))[0] == 2  # CORRUPT_MESSAGE

        answers = fetch(client, 2, [0, 1])
        assert answers[0] == (3, [(i, ts, key, value) for i, (key, value, ts) in enumerate(PARTITION_0)])
        high_watermark, records = answers[1]
        assert high_watermark == 3
        assert [(offset, key, value) for offset, _, key, value in records] == [
            (0, b"a", b"gzip-0"), (1, b"b", b"gzip-1"), (2, b"c", b"magic-0")]
        assert [timestamp for _, timestamp, _, _ in records[:2]] == [ts for _, _, ts in PARTITION_1]
        answers = fetch(client, 0, [0])
        assert [(offset, key, value) for offset, _, key, value in answers[0][1]] == [
            (i, key, value) for i, (key, value, _) in enumerate(PARTITION_0)]
    finally:
        client.close()

    consumed = consume_all(broker, TOPIC, partitions=2, expected={0: 3, 1: 3})
    assert [(offset, key, value) for offset, key, value, _ in consumed[0]] == [
        (i, key, value) for i, (key, value, _) in enumerate(PARTITION_0)]
    assert [(offset, key, value) for offset, key, value, _ in consumed[1]] == [
        (0, b"a", b"gzip-0"), (1, b"b", b"gzip-1"), (2, b"c", b"magic-0")]


LIST_OFFSETS, OFFSET_COMMIT, OFFSET_FETCH, DELETE_TOPICS = 2, 8, 9, 20
OFFSET_FOR_LEADER_EPOCH, DESCRIBE_CONFIGS, DESCRIBE_LOG_DIRS = 23, 32, 35


def test_every_other_removed_version_answers_in_its_layout(broker):
    # Proves ListOffsets v0, OffsetCommit v0–1, OffsetFetch v0, OffsetForLeaderEpoch v0–1, DescribeConfigs v0,
    # DescribeLogDirs v0, CreateTopics v1 and DeleteTopics v0 decode and answer exactly their old layouts.
    client = RawClient(broker.bootstrap)
    try:
        name = "old-protocol-admin"
        topic = string(name) + struct.pack(">ihii", 1, 1, 0, 0)
        reply = client.call(CREATE_TOPICS, 1, struct.pack(">i", 1) + topic + struct.pack(">i", 10000) + b"\x00")
        assert reply.take(">i") == 1 and reply.string() == name and reply.take(">h") == 0
        assert reply.take(">h") in (-1, 0)  # error_message: null as Kafka sends it (empty until issue 14's sweep)
        reply.done()
        assert produce_to(client, name, message(0, 1, b"k", b"v", 5)) == 0

        reply = client.call(LIST_OFFSETS, 0, struct.pack(">ii", -1, 1) + string(name) + struct.pack(">iiqi", 1, 0, -1, 1))
        assert reply.take(">i") == 1 and reply.string() == name and reply.take(">i") == 1
        assert reply.take(">ih") == (0, 0) and reply.take(">i") == 1 and reply.take(">q") == 1
        reply.done()

        group = string("old-group")
        for version, offset in ((0, 1), (1, 1)):
            partition = struct.pack(">iq", 0, offset) + (struct.pack(">q", -1) if version == 1 else b"") + string("meta")
            body = group + (struct.pack(">i", -1) + string("") if version == 1 else b"")
            body += struct.pack(">i", 1) + string(name) + struct.pack(">i", 1) + partition
            reply = client.call(OFFSET_COMMIT, version, body)
            assert reply.take(">i") == 1 and reply.string() == name and reply.take(">i") == 1
            assert reply.take(">ih") == (0, 0), f"OffsetCommit v{version}"
            reply.done()
        reply = client.call(OFFSET_FETCH, 0, group + struct.pack(">i", 1) + string(name) + struct.pack(">ii", 1, 0))
        assert reply.take(">i") == 1 and reply.string() == name and reply.take(">i") == 1
        assert reply.take(">iq") == (0, 1) and reply.string() == "meta" and reply.take(">h") == 0
        reply.done()

        for version in (0, 1):
            body = struct.pack(">i", 1) + string(name) + struct.pack(">iii", 1, 0, 0)
            reply = client.call(OFFSET_FOR_LEADER_EPOCH, version, body)
            assert reply.take(">i") == 1 and reply.string() == name and reply.take(">i") == 1
            assert reply.take(">hi") == (0, 0)
            if version == 1:
                reply.take(">i")  # leader_epoch
            assert reply.take(">q") == 1, f"OffsetForLeaderEpoch v{version}"
            reply.done()

        reply = client.call(DESCRIBE_CONFIGS, 0, struct.pack(">ib", 1, 2) + string(name) + struct.pack(">i", -1))
        reply.take(">i")  # throttle
        assert reply.take(">i") == 1 and reply.take(">h") == 0
        reply.take(">h")  # error_message (null or empty)
        assert reply.take(">b") == 2 and reply.string() == name
        configs = {}
        for _ in range(reply.take(">i")):
            key = reply.string()
            length = reply.take(">h")
            value = reply.data[reply.position:reply.position + max(length, 0)].decode()
            reply.position += max(length, 0)
            read_only, is_default, sensitive = reply.take(">???")
            configs[key] = (value, is_default)
        reply.done()
        assert "retention.ms" in configs, sorted(configs)

        reply = client.call(DESCRIBE_LOG_DIRS, 0, struct.pack(">i", -1))
        reply.take(">i")  # throttle
        directories = reply.take(">i")
        assert directories >= 1
        for _ in range(directories):
            assert reply.take(">h") == 0
            reply.string()
            for _ in range(reply.take(">i")):
                reply.string()
                for _ in range(reply.take(">i")):
                    reply.take(">iqq?")
        reply.done()

        reply = client.call(DELETE_TOPICS, 0, struct.pack(">i", 1) + string(name) + struct.pack(">i", 10000))
        assert reply.take(">i") == 1 and reply.string() == name and reply.take(">h") == 0
        reply.done()
    finally:
        client.close()


def produce_to(client, name, message_set):
    body = struct.pack(">hi", -1, 10000) + struct.pack(">i", 1) + string(name)
    body += struct.pack(">ii", 1, 0) + blob(message_set)
    reply = client.call(PRODUCE, 1, body)
    assert reply.take(">i") == 1 and reply.string() == name and reply.take(">i") == 1
    _, error, _ = reply.take(">ihq")
    reply.take(">i")
    reply.done()
    return error
