"""The records every compatibility scenario produces, and the check every consumer runs on what it read back.

Record `index` of a topic is a pure function of the index: a key (absent for every 11th unless the value is null
too: kafka-python refuses a record with neither), a value (null for every 7th: a tombstone), two headers (one with a null value), a CreateTime timestamp `BASE_TIMESTAMP_MS + index * STEP_MS`,
and a partition `index % partitions`. A consumer proves byte-exact round trips, per-partition order and dense
offsets without keeping what was sent.
"""

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
RECORD_COUNT = 300
# A fixed past time (2026-01-01T00:00:00Z), so timestamps are exact and ListOffsets by time is predictable.
BASE_TIMESTAMP_MS = 1_767_225_600_000
STEP_MS = 1000
FILLER = b"sluice-compat-"


def record(index, partitions, null_header=True):
    key = None if index % 11 == 0 and index % 7 != 0 else b"key-%d" % index
    value = None if index % 7 == 0 else b"value-%d|" % index + FILLER * (index % 13) + bytes([index % 256, 0, 255])
    # A header with a null value, except for clients that cannot send one (kafka-python): there an empty one.
    headers = [("index", b"%d" % index), ("null-header", None if null_header else b"")]
    return {"partition": index % partitions, "key": key, "value": value, "headers": headers,
            "timestamp": BASE_TIMESTAMP_MS + index * STEP_MS}


def records(partitions, count=RECORD_COUNT, null_header=True):
    return [record(index, partitions, null_header) for index in range(count)]


def expected_by_partition(partitions, count=RECORD_COUNT, null_header=True):
    """{partition: [record, ...]} in produce order: what a consumer of each partition must see, offsets 0, 1, ..."""
    grouped = {partition: [] for partition in range(partitions)}
    for item in records(partitions, count, null_header):
        grouped[item["partition"]].append(item)
    return grouped


def check_consumed(consumed, partitions, count=RECORD_COUNT, null_header=True):
    """`consumed` is {partition: [(offset, key, value, headers, timestamp), ...]} in read order.

    `headers` is a list of (str, bytes-or-None). Asserts every partition holds exactly its records at offsets
    0, 1, 2, ... with byte-exact keys, values, headers and timestamps.
    """
    expected = expected_by_partition(partitions, count, null_header)
    for partition in range(partitions):
        got = consumed.get(partition, [])
        want = expected[partition]
        assert len(got) == len(want), f"partition {partition}: read {len(got)} records, produced {len(want)}"
        for position, ((offset, key, value, headers, timestamp), item) in enumerate(zip(got, want)):
            assert offset == position, f"partition {partition}: record {position} has offset {offset}"
            assert key == item["key"], f"partition {partition} offset {offset}: key {key!r} != {item['key']!r}"
            assert value == item["value"], f"partition {partition} offset {offset}: value {value!r} != {item['value']!r}"
            assert timestamp == item["timestamp"], (
                f"partition {partition} offset {offset}: timestamp {timestamp} != {item['timestamp']}")
            assert list(headers) == item["headers"], (
                f"partition {partition} offset {offset}: headers {headers!r} != {item['headers']!r}")
