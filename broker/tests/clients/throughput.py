"""A first throughput figure (not a test; the full benchmark is bench/): confluent-kafka producing 1,000,000
100-byte messages to a 16-partition topic on a release broker with the default configuration (one shard per core,
log.flush.policy = fsync), with acks=1 and acks=all, three runs each; prints every run and the medians.

    python3 broker/tests/clients/throughput.py [--messages N] [--runs N]
    python3 broker/tests/clients/throughput.py --idempotence [--messages N] [--runs N]

`--idempotence` instead compares acks=all with `enable.idempotence` off and on, runs interleaved on one broker.

The producer is one Python process on the same two cores as the broker, so the figure is bounded by both.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Producer  # noqa: E402

from conftest import Broker  # noqa: E402
from confluent_util import create_topic  # noqa: E402

MESSAGE_SIZE = 100
FLUSH_TIMEOUT_S = 120
PARTITION_COUNT = 16


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(broker, topic, acks, count, idempotent=False):
    producer = Producer({
        "enable.idempotence": idempotent,
        "bootstrap.servers": broker.bootstrap,
        "acks": acks,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "compression.type": "none",
    })
    payload = b"x" * MESSAGE_SIZE
    failures = []

    def delivered(error, _message):
        if error is not None:
            failures.append(error)

    broker_cpu = cpu_s(broker.process.pid)
    started = time.monotonic()
    for number in range(count):
        while True:
            try:
                producer.produce(topic, payload, partition=number % PARTITION_COUNT, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        if number % 10000 == 0:
            producer.poll(0)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    elapsed = time.monotonic() - started
    broker_cpu = cpu_s(broker.process.pid) - broker_cpu
    assert remaining == 0 and not failures, (remaining, failures[:3])
    return count / elapsed, count * MESSAGE_SIZE / elapsed / 1e6, broker_cpu / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idempotence", action="store_true")
    arguments = parser.parse_args()
    if arguments.idempotence:
        compare_idempotence(arguments)
        return
    with tempfile.TemporaryDirectory() as directory:
        broker = Broker(Path(directory) / "data", Path(directory) / "broker.log", shard_count=None)
        broker.start()
        try:
            for acks in ("1", "all"):
                results = []
                for index in range(arguments.runs):
                    topic = f"throughput-acks{acks}-{index}"
                    create_topic(broker, topic, partitions=PARTITION_COUNT)
                    messages_per_s, megabytes_per_s, broker_cores = run(broker, topic, acks, arguments.messages)
                    results.append((messages_per_s, megabytes_per_s, broker_cores))
                    print(f"acks={acks} run {index + 1}: {messages_per_s:,.0f} msg/s, {megabytes_per_s:.1f} MB/s, "
                          f"broker {broker_cores:.2f} cores", flush=True)
                print(f"acks={acks} median: {statistics.median(r[0] for r in results):,.0f} msg/s, "
                      f"{statistics.median(r[1] for r in results):.1f} MB/s (payload), "
                      f"broker {statistics.median(r[2] for r in results):.2f} cores", flush=True)
        finally:
            broker.stop()


def compare_idempotence(arguments):
    with tempfile.TemporaryDirectory() as directory:
        broker = Broker(Path(directory) / "data", Path(directory) / "broker.log", shard_count=None)
        broker.start()
        try:
            results = {False: [], True: []}
            for index in range(arguments.runs):
                for idempotent in (False, True):
                    topic = f"throughput-idempotent{int(idempotent)}-{index}"
                    create_topic(broker, topic, partitions=PARTITION_COUNT)
                    result = run(broker, topic, "all", arguments.messages, idempotent)
                    results[idempotent].append(result)
                    print(f"idempotence={idempotent} run {index + 1}: {result[0]:,.0f} msg/s, "
                          f"broker {result[2]:.2f} cores", flush=True)
            off, on = (statistics.median(r[0] for r in results[key]) for key in (False, True))
            print(f"acks=all median: idempotence off {off:,.0f} msg/s, on {on:,.0f} msg/s "
                  f"({(on - off) / off * 100:+.1f}%)", flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
