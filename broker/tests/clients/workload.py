"""The messages every client produces and the checks every client's consumer runs.

A message is a tuple (key, value, headers) of bytes, bytes-or-None, and a list of (str, bytes-or-None) headers.
Message `index` of partition `partition` is a pure function of both, so a consumer can check byte-exact content
and per-partition order without keeping what the producer sent.
"""

import socket
import struct

PARTITION_COUNT = 8
MESSAGE_COUNT = 100_000
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# Kafka's record-batch attribute bits 0-2.
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# Every NULL_VALUE_EVERY-th message is a tombstone (null value); the others carry a header with a null value too.
NULL_VALUE_EVERY = 997
# Text the values repeat, so that compression has something to work with and batches shrink measurably.
FILLER = b"sluice-streams-records-"


def message(codec, partition, index, binary=True):
    """Message `index` of `partition`. `binary` adds bytes outside printable ASCII (kcat's line input cannot)."""
    key = b"key-%d-%d" % (partition, index)
    if index % NULL_VALUE_EVERY == 0:
        value = None
    else:
        body = FILLER * (1 + index % 7)
        value = b"%s|%d|%d|" % (codec.encode(), partition, index) + body
        if binary:
            start = (index * 31) % 240
            value += bytes(range(start, start + 16)) + b"\n:\x00"
    headers = [("partition", b"%d" % partition), ("index", b"%d" % index)]
    return key, value, headers


def messages_per_partition(count=MESSAGE_COUNT, partitions=PARTITION_COUNT):
    """How many of `count` messages partition p gets when they are dealt round-robin."""
    return [count // partitions + (1 if p < count % partitions else 0) for p in range(partitions)]


def check_partitions(codec, consumed, binary=True, count=MESSAGE_COUNT, header_normalise=None):
    """`consumed[p]` is the list of (offset, key, value, headers) read from partition p, in read order.

    Proves: offsets are 0, 1, 2, ... with no gap or repeat (per-partition order), and every message is
    byte-for-byte the one produced at that position.
    """
    expected_counts = messages_per_partition(count)
    total = sum(len(records) for records in consumed.values())
    assert total == count, f"consumed {total} messages, produced {count}"
    for partition in range(PARTITION_COUNT):
        records = consumed.get(partition, [])
        assert len(records) == expected_counts[partition], (
            f"partition {partition}: {len(records)} messages, expected {expected_counts[partition]}"
        )
        for index, (offset, key, value, headers) in enumerate(records):
            assert offset == index, f"partition {partition}: message {index} has offset {offset}"
            want_key, want_value, want_headers = message(codec, partition, index, binary)
            if header_normalise is not None:
                want_headers = header_normalise(want_headers)
            got = (key, value, headers)
            want = (want_key, want_value, want_headers)
            assert got == want, f"partition {partition} offset {offset}: got {got!r}, want {want!r}"


# --- A few raw protocol calls, for facts no client exposes (the compression a stored batch carries). ---

def _string(text):
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _request(address, api_key, version, body, correlation_id=7, timeout_s=10):
    host, port = address.split(":")
    header = struct.pack(">hhi", api_key, version, correlation_id) + _string("sluice-tests")
    frame = header + body
    with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
        connection.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _receive(connection, 4))[0]
        response = _receive(connection, size)
    assert struct.unpack(">i", response[:4])[0] == correlation_id
    return response[4:]


def _receive(connection, size):
    chunks = []
    while size > 0:
        chunk = connection.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def stored_batch_codecs(address, topic, partition, max_bytes=1 << 20):
    """Fetch v4 from offset 0 and return the compression id of every batch in the answer."""
    body = struct.pack(">iiiib", -1, 100, 1, max_bytes, 0)
    body += struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, 0, max_bytes)
    response = _request(address, 1, 4, body)
    position = 4  # throttle_time_ms
    (topic_count,) = struct.unpack_from(">i", response, position)
    position += 4
    assert topic_count == 1
    (name_size,) = struct.unpack_from(">h", response, position)
    position += 2 + name_size
    (partition_count,) = struct.unpack_from(">i", response, position)
    position += 4
    assert partition_count == 1
    _index, error, _high_watermark, _last_stable = struct.unpack_from(">ihqq", response, position)
    position += 4 + 2 + 8 + 8
    assert error == 0, f"fetch error {error}"
    (aborted_count,) = struct.unpack_from(">i", response, position)
    position += 4 + max(aborted_count, 0) * 16
    (records_size,) = struct.unpack_from(">i", response, position)
    position += 4
    records = response[position:position + records_size]
    codecs = []
    cursor = 0
    while cursor + 61 <= len(records):
        (batch_length,) = struct.unpack_from(">i", records, cursor + 8)
        if cursor + 12 + batch_length > len(records):
            break  # a partial batch at the end of the answer
        (attributes,) = struct.unpack_from(">h", records, cursor + 21)
        codecs.append(attributes & 0x7)
        cursor += 12 + batch_length
    return codecs
