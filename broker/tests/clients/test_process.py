"""The broker process around the clients: restarts while clients stay connected."""

import socket
import struct

from workload import _request


def api_versions_v0(address):
    """ApiVersions v0 over a raw connection: error code 0 and a non-empty key list."""
    response = _request(address, 18, 0, b"")
    error, count = struct.unpack_from(">hi", response, 0)
    return error, count


def test_restart_while_clients_stay_connected(fresh_broker):
    """Connections open across SIGTERM leave the port in TIME_WAIT on the broker's side; the restart still binds."""
    host, port = fresh_broker.bootstrap.split(":")
    idle = []
    for _ in range(4):
        connection = socket.create_connection((host, int(port)), timeout=10)
        frame = struct.pack(">hhih", 18, 0, 1, 1) + b"x"
        connection.sendall(struct.pack(">i", len(frame)) + frame)
        connection.recv(4096)
        idle.append(connection)
    try:
        fresh_broker.stop()
        for connection in idle:
            connection.recv(4096)  # the broker closed it first: its side of the connection is in TIME_WAIT
        fresh_broker.start()
        error, count = api_versions_v0(fresh_broker.bootstrap)
        assert error == 0 and count > 10
    finally:
        for connection in idle:
            connection.close()


def test_second_broker_on_the_same_port_is_refused(fresh_broker, tmp_path):
    """SO_REUSEPORT must not let a second broker share a live broker's port: it exits non-zero with one line."""
    import subprocess

    from conftest import BINARY

    result = subprocess.run(
        [str(BINARY), "--listen", fresh_broker.bootstrap, "--data-dir", str(tmp_path / "other"), "--shards", "1"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert b"cannot listen on" in result.stderr and b"in use" in result.stderr, result.stderr
    assert api_versions_v0(fresh_broker.bootstrap)[0] == 0
