"""Connection limits against the real binary (issue 13): announced frame sizes do not buy memory, the request budget
(queued.max.request.bytes) holds connections back instead of failing them, max.connections and
max.connections.per.ip close connections past them, connections.max.idle.ms closes idle ones, and the start-up line
names the raised open-file limit.

Raw sockets only: what is tested is framing and accepting, below any client library.
"""

import contextlib
import resource
import socket
import struct
import time

from conftest import Broker

MIB = 1 << 20
# ApiVersions v0: api key 18, version 0, correlation id 1, client id "x".
API_VERSIONS_V0 = struct.pack(">hhih", 18, 0, 1, 1) + b"x"


@contextlib.contextmanager
def running_broker(tmp_path, config="", name="broker"):
    """A `sluice` process (two shards, as conftest starts it) with `config` as its --config file."""
    directory = tmp_path / name
    directory.mkdir()
    extra_args = []
    if config:
        path = directory / "sluice.toml"
        path.write_text(config)
        extra_args = ["--config", str(path)]
    broker = Broker(directory / "data", directory / "broker.log", extra_args)
    broker.start()
    try:
        yield broker
        assert broker.alive(), f"broker died during the test:\n{broker.log_tail()}"
        broker.stop()
    finally:
        broker.kill()


def address(broker):
    host, port = broker.bootstrap.split(":")
    return host, int(port)


def rss_mib(broker):
    """The broker's resident set size (VmRSS), in MiB."""
    with open(f"/proc/{broker.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def receive_exactly(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def api_versions(connection, timeout=5.0):
    """One ApiVersions v0 round trip on an open connection; raises if the broker closed it or did not answer."""
    connection.settimeout(timeout)
    connection.sendall(struct.pack(">i", len(API_VERSIONS_V0)) + API_VERSIONS_V0)
    (size,) = struct.unpack(">i", receive_exactly(connection, 4))
    body = receive_exactly(connection, size)
    (correlation_id, error) = struct.unpack_from(">ih", body, 0)
    assert (correlation_id, error) == (1, 0)


def connect(broker, source="127.0.0.1"):
    return socket.create_connection(address(broker), timeout=5, source_address=(source, 0))


def closed_by_broker(connection, timeout=5.0):
    """True if the broker closes `connection` within `timeout` (end of stream or reset), False if it stays open."""
    connection.settimeout(timeout)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def open_served(broker, source="127.0.0.1", timeout=5.0):
    """A connection the broker serves. Retries while it is refused: a connection closed a moment ago (conftest's
    start-up probe, a test's own) keeps its slot until the broker has noticed the close."""
    deadline = time.monotonic() + timeout
    while True:
        connection = connect(broker, source)
        try:
            api_versions(connection)
            return connection
        except (ConnectionError, OSError):
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_announced_frame_sizes_do_not_buy_memory(tmp_path):
    """Ten connections that each announce a 100 MiB frame and send nothing more leave RSS far below 10 x 100 MiB
    (before: 1.09 GB, kept after they closed), the broker keeps serving others, and RSS stays near its baseline."""
    count = 10
    with running_broker(tmp_path) as broker:
        probe = open_served(broker)
        baseline = rss_mib(broker)
        announcing = []
        for _ in range(count):
            connection = connect(broker)
            connection.sendall(struct.pack(">i", 100 * MIB))
            announcing.append(connection)
        time.sleep(2)
        during = rss_mib(broker)
        api_versions(probe)  # small requests still fit in what the waiting frames leave of the budget
        for connection in announcing:
            assert not closed_by_broker(connection, timeout=0.05), "a frame within socket.request.max.bytes was refused"
            connection.close()
        time.sleep(2)
        after = rss_mib(broker)
        api_versions(probe)
        probe.close()
        print(f"RSS MiB: baseline {baseline:.1f}, {count} connections announcing 100 MiB {during:.1f}, after {after:.1f}")
        assert during - baseline < 100, f"RSS grew {during - baseline:.0f} MiB for {count} announced 100 MiB frames"
        assert after - baseline < 50, f"RSS {after:.0f} MiB after the connections closed, baseline {baseline:.0f} MiB"


def test_request_budget_holds_connections_back_until_bytes_are_released(tmp_path):
    """With queued.max.request.bytes equal to one frame, a connection that announced such a frame and sent half of it
    holds the whole budget: other connections' requests wait (not refused, not closed) and are answered once it goes."""
    config = '"socket.request.max.bytes" = 2097152\n"queued.max.request.bytes" = 2097152\n'
    with running_broker(tmp_path, config) as broker:
        holder = connect(broker)
        holder.sendall(struct.pack(">i", 2 * MIB) + b"\0" * MIB)
        time.sleep(0.5)
        # Several connections, so that both shards have waiters (the budget is one count for the whole broker).
        waiting = [connect(broker) for _ in range(4)]
        for connection in waiting:
            connection.sendall(struct.pack(">i", len(API_VERSIONS_V0)) + API_VERSIONS_V0)
        for connection in waiting:
            connection.settimeout(1.0)
            try:
                data = connection.recv(4)
            except socket.timeout:
                continue
            raise AssertionError(f"answered while the budget was exhausted: {data!r}")
        holder.close()
        for connection in waiting:
            connection.settimeout(5)
            (size,) = struct.unpack(">i", receive_exactly(connection, 4))
            body = receive_exactly(connection, size)
            assert struct.unpack_from(">ih", body, 0) == (1, 0)
            api_versions(connection)
            connection.close()


def test_max_connections_closes_connections_past_the_limit(tmp_path):
    """max.connections = 3: a fourth connection is closed at once while three are open, and served after one closes."""
    with running_broker(tmp_path, '"max.connections" = 3\n') as broker:
        open_connections = [open_served(broker) for _ in range(3)]
        extra = connect(broker)
        assert closed_by_broker(extra), "a fourth connection was kept open under max.connections = 3"
        extra.close()
        open_connections.pop().close()
        replacement = open_served(broker)
        api_versions(replacement)
        for connection in [replacement, *open_connections]:
            connection.close()
        assert "max.connections is 3" in broker.log_path.read_text()


def test_max_connections_per_ip_counts_each_address(tmp_path):
    """max.connections.per.ip = 2: a third connection from 127.0.0.1 is closed, one from 127.0.0.2 is served, and
    127.0.0.1 is served again once one of its connections closes."""
    with running_broker(tmp_path, '"max.connections.per.ip" = 2\n') as broker:
        first = [open_served(broker, "127.0.0.1") for _ in range(2)]
        third = connect(broker, "127.0.0.1")
        assert closed_by_broker(third), "a third connection from 127.0.0.1 was kept open"
        third.close()
        other = open_served(broker, "127.0.0.2")
        first.pop().close()
        again = open_served(broker, "127.0.0.1")
        for connection in [other, again, *first]:
            api_versions(connection)
            connection.close()


def test_idle_connections_are_closed_and_busy_ones_are_not(tmp_path):
    """connections.max.idle.ms = 1000: a connection that sends nothing (between frames, or inside one) is closed
    after about a second; one that sends a request every 300 ms stays open."""
    with running_broker(tmp_path, '"connections.max.idle.ms" = 1000\n') as broker:
        idle = open_served(broker)
        stalled = connect(broker)
        stalled.sendall(struct.pack(">i", 1000) + b"\0" * 10)  # a frame that never finishes holds budget: bounded too
        busy = open_served(broker)
        started = time.monotonic()
        while time.monotonic() - started < 4:
            api_versions(busy)
            time.sleep(0.3)
        assert closed_by_broker(idle, timeout=0.1), "an idle connection outlived connections.max.idle.ms"
        assert closed_by_broker(stalled, timeout=0.1), "a stalled frame outlived connections.max.idle.ms"
        api_versions(busy)
        fresh = connect(broker)
        begun = time.monotonic()
        assert closed_by_broker(fresh, timeout=5)
        assert time.monotonic() - begun >= 0.8, "closed before connections.max.idle.ms passed"
        for connection in [idle, stalled, busy, fresh]:
            connection.close()


def test_start_raises_the_open_file_limit_and_says_so(tmp_path):
    """Started with a soft open-file limit of 1024, the broker raises it to the hard limit and its start-up line says
    so, with the max.connections that follows from it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        import pytest

        pytest.skip(f"the hard open-file limit is {hard}: nothing to raise")
    if hard == resource.RLIM_INFINITY:
        with open("/proc/sys/fs/nr_open") as nr_open:
            expected = int(nr_open.read())
    else:
        expected = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the broker inherits it
    try:
        manager = running_broker(tmp_path)
        broker = manager.__enter__()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        with open(f"/proc/{broker.process.pid}/limits") as limits:
            line = next(line for line in limits if line.startswith("Max open files"))
        assert line.split()[3] == str(expected), line
        deadline = time.monotonic() + 5
        while "sluice listening on" not in broker.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = broker.log_path.read_text()
        reserve = min(max(expected // 10, 1024), expected // 2)
        assert f"soft limit raised from 1024 to {expected} (the hard limit)" in log, log
        assert f"max.connections {expected - reserve}" in log, log
    finally:
        manager.__exit__(None, None, None)
