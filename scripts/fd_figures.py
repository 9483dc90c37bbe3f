#!/usr/bin/env python3
"""Descriptor, memory and start-up figures of a broker holding many partitions (issue 13, item 3).

Starts the `sluice` binary on a fresh data directory, creates PARTITIONS partitions with CreateTopics (topics of
--per-topic partitions, through confluent-kafka's AdminClient), and reports descriptors (/proc/<pid>/fd), RSS
(VmRSS) and the size of topics.toml; then stops it with SIGTERM, restarts it and reports the time until it serves
(the port opens only once every shard has loaded; then a Metadata request for every topic is answered), and the same
counts again. With --read-back it first produces one record to each partition and, after the restart, times a
confluent-kafka consumer with librdkafka's defaults assigned to every partition until it has one record from each.

Not a test: it measures. Usage:
    scripts/fd_figures.py --partitions 10000 [--read-back] [--binary target/release/sluice] [--shards 2]
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Broker:
    def __init__(self, binary, data_dir, port, shards, log_path):
        self.binary, self.data_dir, self.port, self.shards, self.log_path = binary, data_dir, port, shards, log_path
        self.process = None

    def start(self):
        """Starts the broker; returns seconds until the port accepts connections."""
        started = time.monotonic()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [self.binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
             "--shards", str(self.shards)],
            stdout=log, stderr=log, env={**os.environ, "SLUICE_LOG": "warn"})
        while True:
            if self.process.poll() is not None:
                sys.exit(f"broker exited with {self.process.returncode}; see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return time.monotonic() - started
            except OSError:
                time.sleep(0.05)

    def stop(self):
        """SIGTERM; returns seconds until the process exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=600)
        return time.monotonic() - started

    def counts(self):
        pid = self.process.pid
        return descriptors(pid), rss_mib(pid)


def bootstrap(port):
    return f"127.0.0.1:{port}"


def create_partitions(port, topic_count, per_topic):
    admin = AdminClient({"bootstrap.servers": bootstrap(port)})
    names = [f"fd-{index:04d}" for index in range(topic_count)]
    # A few topics per request, so no single request runs into the client's timeout.
    for start in range(0, topic_count, 10):
        batch = [NewTopic(name, num_partitions=per_topic, replication_factor=1) for name in names[start:start + 10]]
        for name, future in admin.create_topics(batch, request_timeout=600, operation_timeout=600).items():
            future.result()
    return names


def wait_metadata(port, names):
    """Seconds until a Metadata request naming every topic is answered with all of them."""
    started = time.monotonic()
    admin = AdminClient({"bootstrap.servers": bootstrap(port)})
    metadata = admin.list_topics(timeout=600)
    missing = [name for name in names if name not in metadata.topics]
    if missing:
        sys.exit(f"{len(missing)} topics missing from metadata after restart")
    return time.monotonic() - started, sum(len(metadata.topics[name].partitions) for name in names)


def produce_everywhere(port, names, per_topic):
    producer = Producer({"bootstrap.servers": bootstrap(port), "acks": "all", "linger.ms": 50})
    for name in names:
        for partition in range(per_topic):
            while True:
                try:
                    producer.produce(name, value=b"x" * 100, partition=partition)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(600)
    if left:
        sys.exit(f"{left} records not delivered")


def read_back(port, names, per_topic):
    """Seconds until a consumer with librdkafka's defaults has one record from each partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap(port), "group.id": "fd-figures", "enable.auto.commit": False})
    partitions = [TopicPartition(name, index, 0) for name in names for index in range(per_topic)]
    started = time.monotonic()
    consumer.assign(partitions)
    seen = set()
    deadline = started + 1800
    while len(seen) < len(partitions) and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=10000, timeout=1.0):
            if message.error() is None:
                seen.add((message.topic(), message.partition()))
    elapsed = time.monotonic() - started
    consumer.close()
    return elapsed, len(seen), len(partitions)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=10000)
    parser.add_argument("--per-topic", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--binary", default=str(REPO / "target" / "release" / "sluice"))
    parser.add_argument("--data-dir", help="default: a fresh directory under the repository's target/")
    parser.add_argument("--read-back", action="store_true")
    args = parser.parse_args()
    topic_count = args.partitions // args.per_topic
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="fd-figures-", dir=REPO / "target"))
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    log_path = data_dir.with_suffix(".log")
    port = free_port()
    broker = Broker(args.binary, data_dir, port, args.shards, log_path)
    soft, hard = (subprocess.run(["sh", "-c", f"ulimit {flag}"], capture_output=True, text=True).stdout.strip()
                  for flag in ("-Sn", "-Hn"))
    print(f"limits: ulimit -Sn {soft}, ulimit -Hn {hard}, "
          f"fs.file-max {Path('/proc/sys/fs/file-max').read_text().strip()}, "
          f"vm.max_map_count {Path('/proc/sys/vm/max_map_count').read_text().strip()}")
    broker.start()
    fds, rss = broker.counts()
    print(f"empty broker: {fds} descriptors, RSS {rss:.0f} MiB")
    started = time.monotonic()
    names = create_partitions(port, topic_count, args.per_topic)
    created = time.monotonic() - started
    fds, rss = broker.counts()
    partitions = topic_count * args.per_topic
    print(f"created {partitions} partitions in {created:.1f} s: {fds} descriptors ({fds / partitions:.3f} per "
          f"partition), RSS {rss:.0f} MiB, topics.toml {(data_dir / 'topics.toml').stat().st_size / 1e6:.1f} MB")
    if args.read_back:
        started = time.monotonic()
        produce_everywhere(port, names, args.per_topic)
        fds, rss = broker.counts()
        print(f"one record in each partition in {time.monotonic() - started:.1f} s: {fds} descriptors, "
              f"RSS {rss:.0f} MiB")
    stopped = broker.stop()
    print(f"SIGTERM to exit: {stopped:.1f} s")
    listening = broker.start()
    answered, partition_count = wait_metadata(port, names)
    fds, rss = broker.counts()
    print(f"restart: port open after {listening:.1f} s, Metadata for all {partition_count} partitions answered "
          f"{answered:.1f} s later; {fds} descriptors ({fds / partitions:.3f} per partition), RSS {rss:.0f} MiB")
    if args.read_back:
        elapsed, seen, total = read_back(port, names, args.per_topic)
        fds, rss = broker.counts()
        print(f"read back one record from each of {seen}/{total} partitions (librdkafka defaults) in "
              f"{elapsed:.1f} s; then {fds} descriptors, RSS {rss:.0f} MiB")
    stopped = broker.stop()
    print(f"SIGTERM to exit: {stopped:.1f} s")
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
