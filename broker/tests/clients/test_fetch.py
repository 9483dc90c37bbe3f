"""Fetch long polling as clients see it: an append wakes a parked fetch at once, and idle fetches cost no CPU."""

import os
import time

from confluent_kafka import OFFSET_END, KafkaError, TopicPartition

from confluent_util import consumer, create_topic, produce_all, producer

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
FETCH_WAIT_MS = 3000


def process_cpu_s(pid):
    """User + system CPU seconds the process has used so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def test_append_wakes_a_parked_fetch(broker):
    """A consumer parked in a 3 s fetch gets a new message well before the wait ends (woken by the append)."""
    topic = "fetch-wakeup"
    create_topic(broker, topic, partitions=2)
    reader = consumer(broker, **{"fetch.wait.max.ms": FETCH_WAIT_MS, "fetch.min.bytes": 1})
    writer = producer(broker, **{"linger.ms": 0})
    try:
        # librdkafka starts assigned partitions one by one, and one that becomes ready while a fetch is in flight
        # joins only the next fetch: wait for both partitions' end-of-partition before timing anything.
        assert produce_all(writer, topic, [(p, b"k", b"first", None, 0) for p in range(2)]) == []
        reader.assign([TopicPartition(topic, p, 1) for p in range(2)])
        at_end = set()
        deadline = time.monotonic() + 30
        while len(at_end) < 2 and time.monotonic() < deadline:
            record = reader.poll(0.2)
            if record is not None:
                assert record.error().code() == KafkaError._PARTITION_EOF
                at_end.add(record.partition())
        assert at_end == {0, 1}
        time.sleep(0.3)  # the fetch for both partitions is now parked in the broker
        latencies = []
        for round_index in range(5):
            sent = time.monotonic()
            assert produce_all(writer, topic, [(round_index % 2, b"k", b"wake-%d" % round_index, None, 0)]) == []
            received = None
            while time.monotonic() - sent < 8:
                record = reader.poll(0.05)
                if record is not None and not record.error():
                    received = time.monotonic()
                    assert record.value() == b"wake-%d" % round_index
                    break
            assert received is not None, f"round {round_index}: the message never arrived"
            latencies.append(received - sent)
        # A message delivered by the fetch timing out rather than by a wake-up would take at least ~2.7 s.
        assert max(latencies) < 1.0, latencies
    finally:
        reader.close()


def test_idle_long_polls_cost_no_cpu(broker):
    """Four consumers polling empty partitions with short waits keep the broker nearly idle (no busy polling)."""
    topic = "fetch-idle"
    create_topic(broker, topic, partitions=8)
    assert produce_all(producer(broker), topic, [(p, b"k", b"v", None, 0) for p in range(8)]) == []
    readers = [consumer(broker, **{"fetch.wait.max.ms": 100}) for _ in range(4)]
    try:
        for reader in readers:
            reader.assign([TopicPartition(topic, p, OFFSET_END) for p in range(8)])
        for reader in readers:
            reader.poll(0.5)
        before = process_cpu_s(broker.process.pid)
        start = time.monotonic()
        while time.monotonic() - start < 3:
            for reader in readers:
                reader.poll(0.05)
        used = process_cpu_s(broker.process.pid) - before
        elapsed = time.monotonic() - start
        # Each consumer's fetch is answered after its 100 ms wait: ~40 cheap requests a second in all. A broker
        # that polled instead of parking would burn a core per shard; 0.25 leaves room for a loaded machine.
        assert used / elapsed < 0.25, f"broker used {used:.2f} CPU s in {elapsed:.1f} s while idle"
    finally:
        for reader in readers:
            reader.close()
