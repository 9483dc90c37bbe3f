"""Waits until a freshly started cluster can serve a suite: every broker lists all of them and a controller.

scripts/cluster.sh returns once every node accepts connections, but a node listens before the metadata quorum has
elected a controller and before every broker has registered, and a suite that starts then sees a partial cluster
(fewer brokers in Metadata, admin requests with no controller to go to). So this asks each address of the bootstrap
list for Metadata v1 with no topics, over a plain socket (no client library, so that no suite's client is on trial
here), until every one answers with BROKERS brokers and a controller among them.

Usage: cluster_ready.py BOOTSTRAP BROKERS [TIMEOUT_S]; exit status 0 when ready, 1 (with what each said) on timeout.
"""

import socket
import struct
import sys
import time

METADATA_API_KEY = 3
METADATA_VERSION = 1  # the oldest with controller_id; Sluice answers Metadata v0-12


def metadata_v1(host, port):
    """(broker ids, controller id) as the broker at host:port sees the cluster."""
    client_id = b"compat-cluster-ready"
    # Request header v1 (api key, version, correlation id, client id) and a body of an empty topic array, which in
    # v1 means "no topics" (null would mean all of them).
    body = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, 1, len(client_id)) + client_id
    body += struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=5) as connection:
        connection.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", receive(connection, 4))[0]
        answer = receive(connection, size)
    position = 4  # correlation id
    (broker_count,) = struct.unpack_from(">i", answer, position)
    position += 4
    broker_ids = []
    for _ in range(broker_count):
        (node_id,) = struct.unpack_from(">i", answer, position)
        position += 4
        (host_size,) = struct.unpack_from(">h", answer, position)
        position += 2 + host_size + 4  # host, port
        (rack_size,) = struct.unpack_from(">h", answer, position)
        position += 2 + max(rack_size, 0)
        broker_ids.append(node_id)
    (controller_id,) = struct.unpack_from(">i", answer, position)
    return sorted(broker_ids), controller_id


def receive(connection, size):
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def main():
    bootstrap, broker_count = sys.argv[1], int(sys.argv[2])
    timeout_s = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    addresses = [address.rsplit(":", 1) for address in bootstrap.split(",")]
    started = time.monotonic()
    while True:
        seen = {}
        for host, port in addresses:
            try:
                seen[f"{host}:{port}"] = metadata_v1(host, int(port))
            except (OSError, struct.error) as error:
                seen[f"{host}:{port}"] = error
        ready = all(isinstance(answer, tuple) and len(answer[0]) == broker_count and answer[1] in answer[0]
                    for answer in seen.values())
        if ready:
            print(f"cluster ready after {time.monotonic() - started:.1f} s: brokers {seen[next(iter(seen))][0]}, "
                  f"controller {seen[next(iter(seen))][1]}")
            return 0
        if time.monotonic() - started > timeout_s:
            print(f"cluster not ready within {timeout_s:.0f} s; each broker's (brokers, controller):")
            for address, answer in seen.items():
                print(f"    {address}: {answer}")
            return 1
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
