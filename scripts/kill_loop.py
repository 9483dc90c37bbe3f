#!/usr/bin/env python3
"""kill -9 loop (issue 13): the real broker under an idempotent acks=all producer load, killed with SIGKILL and
restarted on the same data directory CYCLES times; then a consumer reads every partition back and the script
reports what was acknowledged, what of it was lost, and what was duplicated. Exit status 1 if anything was lost or
duplicated. Takes about CYCLES × (run time + restart) seconds, so it is not in the default test run.

    cargo build --release -p sluice-broker
    python3 scripts/kill_loop.py --cycles 20        # SLUICE_BIN overrides the binary (default target/release)

Each message's value is its number within its partition; one idempotent producer keeps going across the kills
(librdkafka retries what was in flight), so every partition must end up holding 0..n-1 once each, in order.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker" / "tests" / "clients"))

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition  # noqa: E402

from conftest import Broker  # noqa: E402
from confluent_util import consumer, create_topic, producer  # noqa: E402

TOPIC = "kill-loop"


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--run-seconds", type=float, nargs=2, default=(1.5, 4.0), metavar=("MIN", "MAX"),
                        help="each cycle produces for a random time in this range before the kill")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


class Load:
    """One idempotent producer streaming numbered messages round-robin over the partitions."""

    def __init__(self, broker, partitions):
        self.client = producer(broker, **{
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 2,
            "batch.num.messages": 500,
            "message.timeout.ms": 300000,
            "retry.backoff.ms": 100,
            "queue.buffering.max.messages": 50000,
        })
        self.partitions = partitions
        self.sent = [0] * partitions
        self.acknowledged = [set() for _ in range(partitions)]
        self.errors = []
        self.index = 0

    def _delivered(self, error, message):
        if error is not None:
            self.errors.append(str(error))
        else:
            self.acknowledged[message.partition()].add(int(message.value()))

    def run_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            partition = self.index % self.partitions
            try:
                self.client.produce(TOPIC, value=b"%d" % self.sent[partition], partition=partition,
                                    on_delivery=self._delivered)
            except BufferError:
                self.client.poll(0.05)
                continue
            self.sent[partition] += 1
            self.index += 1
            self.client.poll(0)

    def acknowledged_count(self):
        return sum(len(numbers) for numbers in self.acknowledged)


def read_back(broker, partitions, expected):
    """Every value of every partition, in offset order (until each partition has reached its expected count and
    its end, or a minute without progress)."""
    client = consumer(broker, **{"enable.partition.eof": True})
    try:
        client.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(partitions)])
        values = {p: [] for p in range(partitions)}
        at_end = set()
        last_progress = time.monotonic()
        while len(at_end) < partitions and time.monotonic() - last_progress < 60:
            for record in client.consume(num_messages=10000, timeout=0.5):
                error = record.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, f"consume error: {error}"
                    if len(values[record.partition()]) >= expected[record.partition()]:
                        at_end.add(record.partition())
                    continue
                values[record.partition()].append(int(record.value()))
                last_progress = time.monotonic()
        return values
    finally:
        client.close()


def restart(broker, start_failures):
    """Starts the broker again; a start that does not listen within the fixture's timeout is recorded (with the
    log's last lines) and retried once, so that one slow start does not end the run unreported."""
    try:
        broker.start()
    except AssertionError as error:
        start_failures.append(str(error)[-2000:])
        print(f"start failed, retrying: {str(error)[-600:]}", flush=True)
        broker.kill()
        broker.start()


def main():
    arguments = parse_arguments()
    rng = random.Random(arguments.seed)
    work = Path(tempfile.mkdtemp(prefix="sluice-kill-loop-"))
    broker = Broker(work / "data", work / "broker.log")
    broker.start()
    started = time.monotonic()
    start_failures = []
    try:
        create_topic(broker, TOPIC, partitions=arguments.partitions, config={"segment.bytes": "1048576"})
        load = Load(broker, arguments.partitions)
        for cycle in range(arguments.cycles):
            load.run_for(rng.uniform(*arguments.run_seconds))
            broker.kill()  # SIGKILL: no flush, no close, no clean-shutdown marker
            time.sleep(rng.uniform(0.05, 0.5))
            restart(broker, start_failures)
            print(f"cycle {cycle + 1}/{arguments.cycles}: {load.index} sent, {load.acknowledged_count()} "
                  f"acknowledged", flush=True)
        load.run_for(1.0)
        remaining = load.client.flush(300)
        values = read_back(broker, arguments.partitions, load.sent)
        assert broker.alive(), broker.log_tail()
        broker.stop()
    finally:
        broker.kill()
    lost = 0
    duplicated = 0
    out_of_order = 0
    for partition in range(arguments.partitions):
        got = values[partition]
        seen = set(got)
        lost += len(load.acknowledged[partition] - seen)
        duplicated += len(got) - len(seen)
        out_of_order += sum(1 for before, after in zip(got, got[1:]) if after != before + 1)
    figures = {
        "cycles": arguments.cycles,
        "partitions": arguments.partitions,
        "seconds": round(time.monotonic() - started, 1),
        "sent": load.index,
        "acknowledged": load.acknowledged_count(),
        "delivery_errors": len(load.errors),
        "undelivered_at_end": remaining,
        "read_back": sum(len(got) for got in values.values()),
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "restarts": broker.start_count - 1,
        "start_failures": len(start_failures),
    }
    print(json.dumps(figures, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"broker log: {broker.log_path}")
    return 1 if lost or duplicated or load.errors else 0


if __name__ == "__main__":
    sys.exit(main())
