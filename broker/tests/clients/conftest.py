"""Fixtures for the real-client tests: a real `sluice` process on a free loopback port with its own data directory.

The broker is started with `--shards 2` so that every test crosses the shard mesh (partitions are spread over both
shards). Stopping sends SIGTERM to the broker's PID and asserts exit code 0: a clean shutdown is part of what is
tested. `Broker.restart()` stops and starts it again on the same data directory and port.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("SLUICE_BIN", REPO / "target" / "release" / "sluice"))
START_TIMEOUT_S = 20
STOP_TIMEOUT_S = 30


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """One `sluice` process; `bootstrap` is what clients connect to."""

    def __init__(self, data_dir, log_path, extra_args=(), shard_count=2):
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.shard_count = shard_count  # None: the broker's default, one shard per core
        self.process = None
        self.start_count = 0

    def start(self):
        assert self.process is None, "broker already running"
        assert BINARY.exists(), f"{BINARY} is missing: run cargo build --release -p sluice-broker"
        command = [
            str(BINARY),
            "--listen", self.bootstrap,
            "--data-dir", str(self.data_dir),
            *(["--shards", str(self.shard_count)] if self.shard_count else []),
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")
        log.write(f"\n=== start {self.start_count}: {' '.join(command)}\n".encode())
        log.flush()
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.start_count += 1
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise AssertionError(f"broker exited with {code} during start-up:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError(f"broker did not listen within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self):
        """SIGTERM by PID; the broker must exit 0 (stop accepting, finish in-flight requests, close the logs)."""
        assert self.process is not None, "broker not running"
        process = self.process
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            self.process = None
            raise AssertionError(f"broker did not stop within {STOP_TIMEOUT_S} s after SIGTERM:\n{self.log_tail()}")
        self.process = None
        assert code == 0, f"broker exited with {code} after SIGTERM:\n{self.log_tail()}"

    def restart(self):
        self.stop()
        self.start()

    def kill(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, line_count=40):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-line_count:])


def _broker(tmp_path_factory, name, extra_args=()):
    directory = tmp_path_factory.mktemp(name)
    broker = Broker(directory / "data", directory / "broker.log", extra_args)
    broker.start()
    try:
        yield broker
        assert broker.alive(), f"broker died during the tests:\n{broker.log_tail()}"
        broker.stop()
    finally:
        broker.kill()


@pytest.fixture(scope="module")
def broker(tmp_path_factory, request):
    """A broker shared by one test module (its tests build on each other's topics, as a client session would)."""
    yield from _broker(tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture
def fresh_broker(tmp_path_factory, request):
    """A broker for one test."""
    yield from _broker(tmp_path_factory, request.node.name[:40])
