"""Damage in durable data costs only its own range (issue 13, item 1), also for what is rebuilt from a log at start:
the group coordinator's replay of __consumer_offsets goes on past a corrupt batch, so the commits written after it
are still there."""

import struct

from confluent_kafka import Consumer, TopicPartition

from confluent_util import create_topic
from conftest import Broker

GROUPS = ["before-damage", "damaged", "after-damage"]


def committer(broker, group):
    return Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
    })


def batches(data):
    """(position, size) of each v2 record batch in a segment file: base offset (8 bytes), then its length (4)."""
    position = 0
    found = []
    while position + 12 <= len(data):
        (length,) = struct.unpack_from(">i", data, position + 8)
        if length <= 0 or position + 12 + length > len(data):
            break
        found.append((position, 12 + length))
        position += 12 + length
    return found


def test_group_replay_goes_on_past_a_corrupt_batch(tmp_path):
    config = tmp_path / "sluice.toml"
    # One offsets partition: every group's commits go to the same log, one batch per commit.
    config.write_text('"offsets.topic.num.partitions" = 1\n')
    broker = Broker(tmp_path / "data", tmp_path / "broker.log", ["--config", str(config)])
    broker.start()
    try:
        create_topic(broker, "damaged-offsets", 1)
        for index, group in enumerate(GROUPS):
            client = committer(broker, group)
            client.commit(offsets=[TopicPartition("damaged-offsets", 0, 100 + index)], asynchronous=False)
            client.close()
        broker.stop()

        segment = tmp_path / "data" / "__consumer_offsets-0" / "00000000000000000000.log"
        data = bytearray(segment.read_bytes())
        found = batches(data)
        damaged = [(position, size) for position, size in found
                   if b"damaged" in data[position:position + size]
                   and b"after-damage" not in data[position:position + size]
                   and b"before-damage" not in data[position:position + size]]
        assert len(damaged) == 1, f"expected one batch with the middle group's commit among {found}"
        position, size = damaged[0]
        assert found[-1][0] > position, "the middle commit must not be the last batch"
        data[position + size - 1] ^= 0xFF  # the last byte of its records: the CRC-32C no longer matches
        segment.write_bytes(bytes(data))

        broker.start()
        committed = {}
        for group in GROUPS:
            client = committer(broker, group)
            committed[group] = client.committed([TopicPartition("damaged-offsets", 0)], timeout=30)[0].offset
            client.close()
        assert committed["before-damage"] == 100, committed
        assert committed["after-damage"] == 102, f"a commit after the damaged batch was lost: {committed}"
        assert committed["damaged"] in (101, -1001), committed
        log = broker.log_path.read_text(errors="replace")
        assert "corrupt" in log, "the damage was not reported"
        broker.stop()
    finally:
        broker.kill()
