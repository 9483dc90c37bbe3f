"""A fault-injecting TCP proxy for the client tests (loopback only).

Every client connection is forwarded to the broker through two pump threads. Faults, all drawn from a seeded
`random.Random` so a failing run can be replayed:
- `cut_after`: (low, high) — each connection is cut after a random number of request bytes in that range have been
  forwarded to the broker; the cut waits `cut_delay_s` first, so the broker has processed what it received and only
  the responses are lost (the client must retry requests the broker already executed);
- `drop_responses`: probability that a connection silently stops forwarding responses (the client times out);
- `delay_s`: (low, high) extra delay before each chunk of responses is forwarded.
`max_faults` bounds the number of connections faulted, so a test always converges.
"""

import os
import random
import socket
import threading
import time


class FaultProxy:
    def __init__(self, target_port, listen_port, seed=7, cut_after=None, cut_delay_s=0.05, drop_responses=0.0,
                 delay_s=None, max_faults=20):
        self.target = ("127.0.0.1", target_port)
        self.random = random.Random(seed)
        self.cut_after = cut_after
        self.cut_delay_s = cut_delay_s
        self.drop_responses = drop_responses
        self.delay_s = delay_s
        self.faults_left = max_faults
        self.fault_count = 0
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.sockets = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _plan(self):
        """The faults of one new connection: (cut_after_bytes or None, drop_responses, delay range)."""
        with self.lock:
            if self.faults_left <= 0:
                return None, False, None
            cut = self.random.randint(*self.cut_after) if self.cut_after else None
            drop = self.random.random() < self.drop_responses
            if cut is not None or drop:
                self.faults_left -= 1
            return cut, drop, self.delay_s

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets += [client, upstream]
            cut, drop, delay = self._plan()
            closed = threading.Event()
            closed.cutting = False
            threading.Thread(target=self._pump, args=(client, upstream, cut, None, False, closed),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None, delay, drop, closed),
                             daemon=True).start()

    def _close(self, closed, *sockets):
        closed.set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def _pump(self, source, destination, cut_after, delay, drop, closed):
        forwarded = 0
        while not closed.is_set() and not self.stopped.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                break
            if not data:
                break
            if delay:
                time.sleep(self.random.uniform(*delay))
            if drop and forwarded == 0:
                forwarded = -1  # counted once per connection
                with self.lock:
                    self.fault_count += 1
            if drop or closed.cutting:
                continue  # the responses vanish; the client's request timeout (or the cut) ends the connection
            if cut_after is not None and forwarded + len(data) >= cut_after:
                closed.cutting = True  # from here no response reaches the client
                try:
                    destination.sendall(data)
                except OSError:
                    pass
                time.sleep(self.cut_delay_s)
                with self.lock:
                    self.fault_count += 1
                break
            try:
                destination.sendall(data)
            except OSError:
                break
            forwarded += len(data)
        self._close(closed, source, destination)

    def stop(self):
        self.stopped.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass
        self.thread.join(timeout=5)


class LinkProxy:
    """A forwarder in front of one broker's Kafka port (the broker advertises the proxy) whose link a test cuts and
    heals, as a network partition does.

    `cut()` stops every connection: nothing is forwarded either way, and connections opened meanwhile are accepted
    but carry nothing. What was in flight waits (in the pump and the kernel's buffers, as TCP retransmits through a
    real partition) and flows again at `heal()`. `cut(origins=pids)` stops only the connections that those processes
    opened (a broker's own fetches, through the other brokers' proxies), found through /proc: the inode of the
    connecting socket among the process's descriptors. `cut(reset=True)` instead closes the connections concerned
    and closes new ones at once (a refused link rather than a silent one).
    """

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.lock = threading.Lock()
        self.healed = threading.Condition(self.lock)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.stopped = threading.Event()
        self.links = []  # [Link]
        # None: the link is whole; otherwise (origins or None for all, reset).
        self.cutting = None
        self.cut_count = 0  # connections a cut has stopped or closed, for the test's report
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    class Link:
        def __init__(self, client, upstream, peer_port):
            self.client = client
            self.upstream = upstream
            self.peer_port = peer_port
            self.blocked = False
            self.closed = threading.Event()

    def cut(self, origins=None, reset=False):
        with self.lock:
            self.cutting = (set(origins) if origins is not None else None, reset)
            owned = self._owned_inodes()
            for link in self.links:
                if self._concerned(link, owned):
                    self._block(link)

    def heal(self):
        with self.lock:
            self.cutting = None
            for link in self.links:
                link.blocked = False
            self.healed.notify_all()

    def _owned_inodes(self):
        """{socket inode} of the cut's origin processes (None: the cut is for every connection)."""
        origins, _ = self.cutting
        if origins is None:
            return None
        inodes = set()
        for pid in origins:
            try:
                for descriptor in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
                    except OSError:
                        continue
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
            except OSError:
                continue
        return inodes

    def _concerned(self, link, owned):
        if owned is None:
            return True
        return _peer_socket_inode(link.peer_port, self.port) in owned

    def _block(self, link):
        """Under the lock: a silent link waits, a reset one is closed."""
        self.cut_count += 1
        if self.cutting[1]:
            _close_link(link)
        else:
            link.blocked = True

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, (_, peer_port) = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = LinkProxy.Link(client, upstream, peer_port)
            with self.lock:
                self.links = [existing for existing in self.links if not existing.closed.is_set()]
                self.links.append(link)
                if self.cutting is not None and self._concerned(link, self._owned_inodes()):
                    self._block(link)
            threading.Thread(target=self._pump, args=(link, client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(link, upstream, client), daemon=True).start()

    def _pump(self, link, source, destination):
        while not link.closed.is_set() and not self.stopped.is_set():
            try:
                data = source.recv(65536)
            except OSError:
                break
            if not data:
                break
            with self.lock:
                while link.blocked and not self.stopped.is_set():
                    self.healed.wait(timeout=0.2)
            try:
                destination.sendall(data)
            except OSError:
                break
        with self.lock:
            _close_link(link)

    def stop(self):
        self.stopped.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            for link in self.links:
                _close_link(link)
            self.healed.notify_all()
        self.thread.join(timeout=5)


def _close_link(link):
    link.closed.set()
    for sock in (link.client, link.upstream):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass


def _peer_socket_inode(peer_port, proxy_port):
    """The inode of the loopback socket 127.0.0.1:peer_port connected to 127.0.0.1:proxy_port (/proc/net/tcp), or
    None once it is gone."""
    local = f"0100007F:{peer_port:04X}"
    remote = f"0100007F:{proxy_port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                if fields[1] == local and fields[2] == remote:
                    return int(fields[9])
    except OSError:
        pass
    return None
