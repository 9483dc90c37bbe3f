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
