"""Checks for scenarios.sh: what kcat -J consumed, and rdkafka_performance's -u tables."""

import json
import sys


def consumed(count, codec):
    """kcat -J lines on stdin are the `count` records produce_records() wrote, byte for byte, in offset order."""
    count = int(count)
    records = sorted((json.loads(line) for line in sys.stdin if line.startswith("{")), key=lambda r: r["offset"])
    assert len(records) == count, f"read {len(records)} records, produced {count}"
    for index, record in enumerate(records):
        assert record["offset"] == index, f"record {index} has offset {record['offset']}"
        assert record["key"] == f"key-{index}", f"offset {index}: key {record['key']!r}"
        want = None if index % 7 == 0 else f"{codec}-value-{index}-" + "x" * (index % 50)
        assert record["payload"] == want, f"offset {index}: payload {record['payload']!r} != {want!r}"
        assert record["headers"] == ["run", "compat", "codec", codec], f"offset {index}: headers {record['headers']!r}"
        assert record["tstype"] == "create" and record["ts"] > 0, record


def performance(path, count, count_column, *zero_columns):
    """The last row of rdkafka_performance's -u table has `count_column` == count and every `zero_columns` 0."""
    header, last = None, None
    for line in open(path):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == "elapsed":
            header = cells
        elif header and len(cells) == len(header) and cells[0].isdigit():
            last = dict(zip(header, cells))
    assert last is not None, f"no statistics table in {path}"
    assert int(last[count_column]) == int(count), f"{count_column} {last[count_column]}, want {count}: {last}"
    for column in zero_columns:
        assert int(last[column]) == 0, f"{column} {last[column]}: {last}"


if __name__ == "__main__":
    {"consumed": consumed, "performance": performance}[sys.argv[1]](*sys.argv[2:])
