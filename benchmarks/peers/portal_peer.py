"""portal (danijar/portal, the RPC layer of embodied / DreamerV3).

portal is request/response only, so every pattern is built from
portal.Client.call / portal.Server.bind, the way embodied uses it:

One-way: client.call("put", payload) with up to MAXINFLIGHT calls in flight
(the Future completes when the server's worker has taken the message; a
payload is reused only after its Future completed, since portal sends arrays
zero-copy from the caller's memory). The server's worker thread hands each
message to the receiving thread through a queue.Queue. portal.pack sends
scalars as 0-d arrays, so the receiver's full check accepts 0-d arrays for
scalars.
Broadcast: each actor keeps one call("params", version) pending (long
poll); the server's worker returns the parameters as soon as that version is
published.
Round trip: client.call("act", request).result().

portal leaves TCP_NODELAY off (a TODO in its source) and offers no option
for it; we do not patch it. Logging is turned off."""
from __future__ import annotations

import queue
import socket
import threading
import time

from .framing import answer
from ..workloads import make_reply, DataError

# Calls in flight per client. 16 is portal's default; W1 measured faster at
# 64 than at 16 or 256 here (see benchmarks/README.md).
MAXINFLIGHT = {"step": 64, "trajectory": 16}
TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(workers=1):
    import portal
    port = _free_port()
    server = portal.Server(port, workers=workers, logging=False, host="127.0.0.1")
    return server, f"127.0.0.1:{port}"


def _client(address, maxinflight=16):
    import portal
    return portal.Client(address, maxinflight=maxinflight, logging=False)


class Portal:
    library = "portal"
    loose_scalars = True

    def oneway_receiver(self, kind, n_senders):
        return _Receiver()

    def oneway_sender(self, address, kind):
        return _Sender(address, MAXINFLIGHT[kind])

    def bcast_publisher(self, n):
        return _Publisher(n)

    def bcast_subscriber(self, address):
        return _Subscriber(address)

    def rr_server(self):
        return _RRServer()

    def rr_client(self, address):
        return _RRClient(address)


class _Receiver:
    def __init__(self):
        self.q = queue.Queue()
        self.server, self.address = _server()
        self.server.bind("put", self.q.put)
        self.server.start(block=False)

    def recv_batch(self, timeout):
        try:
            out = [self.q.get(timeout=timeout)]
        except queue.Empty:
            return []
        try:
            while len(out) < 256:
                out.append(self.q.get_nowait())
        except queue.Empty:
            pass
        return out

    def close(self):
        self.server.close(timeout=1.0)


class _Sender:
    def __init__(self, address, maxinflight):
        self.client = _client(address, maxinflight)

    def send(self, payload):
        return self.client.call("put", payload)

    def wait(self, token):
        if token is not None:
            token.result(TIMEOUT)

    def close(self):
        self.client.close(timeout=1.0)


class _Publisher:
    def __init__(self, n):
        self.n = n
        self.cond = threading.Condition()
        self.version, self.params = 0, None
        self.server, self.address = _server(workers=n)
        self.server.bind("params", self._get)
        self.server.start(block=False)

    def _get(self, version):
        version = int(version)
        with self.cond:
            if not self.cond.wait_for(lambda: self.version >= version, timeout=TIMEOUT):
                raise TimeoutError(f"version {version} not published")
            return self.version, self.params

    def wait_subscribers(self, timeout):
        deadline = time.monotonic() + timeout
        while len(self.server.connections) < self.n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.server.connections)} of {self.n} connected")
            time.sleep(0.01)

    def publish(self, version, params):
        with self.cond:
            self.version, self.params = version, params
            self.cond.notify_all()

    def close(self):
        self.server.close(timeout=1.0)


class _Subscriber:
    def __init__(self, address):
        self.client = _client(address)
        self.pending = {}

    def _ask(self, version):
        if version not in self.pending:
            self.pending[version] = self.client.call("params", version)

    def wait(self, version, timeout):
        self._ask(version)
        got, params = self.pending.pop(version).result(timeout)
        self._ask(version + 1)   # keep the next request waiting at the server
        if int(got) != version:
            raise DataError(f"version {int(got)} received, asked for {version}")
        return params

    def close(self):
        self.client.close(timeout=1.0)


class _RRServer:
    def __init__(self):
        self.server, self.address = _server()
        self.count = 0
        self.done = threading.Event()
        self.error = None
        self.server.bind("act", self._act)

    def _act(self, d):
        try:
            reply = answer(d)
        except DataError as e:   # raised by serve(): the client still gets its reply
            self.error, reply = e, make_reply(int(d["seq"]))
        self.count += 1
        if self.count >= self.target:
            self.done.set()
        return reply

    def serve(self, count, timeout):
        self.target = count
        self.server.start(block=False)
        # The client's last request completes the count; wait for it.
        if not self.done.wait(timeout * max(1, count / 100)):
            raise TimeoutError(f"{self.count} of {count} requests served")
        time.sleep(0.2)   # let the last reply go out before closing
        if self.error:
            raise self.error

    def close(self):
        self.server.close(timeout=1.0)


class _RRClient:
    def __init__(self, address):
        self.client = _client(address)

    def request(self, d, timeout):
        return self.client.call("act", d).result(timeout)

    def close(self):
        self.client.close(timeout=1.0)
