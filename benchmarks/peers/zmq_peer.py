"""pyzmq (+ msgpack), in the best configuration we found for each pattern.

Encoding, everywhere: send_multipart with a msgpack header frame (keys,
dtypes, shapes, scalar values) followed by one frame per array; arrays are
rebuilt with np.frombuffer + reshape (read-only views of the zmq frames, no
copy) and numpy scalars with their dtype.

One-way: PUSH/PULL, copy=False on both sides (frames >= zmq.COPY_THRESHOLD,
64 KiB, are sent zero-copy and tracked; smaller ones are copied by pyzmq
anyway). copy=False measured faster than copy=True on W1 here (see
benchmarks/README.md). HWM 1000 messages for W1, 100 for W2 (~180 MB a side).
Broadcast: XPUB/SUB (the learner sees both subscriptions before publishing,
so nothing is lost to the slow-joiner problem); zero-copy frames, shared by
libzmq between the two subscribers.
Round trip: REQ/REP, copy=True (small messages)."""
from __future__ import annotations

import numpy as np

from .framing import ARRAY, NPSCALAR, PYVALUE, join, answer, wait_version
from ..workloads import DataError

TIMEOUT_MS = 30_000


def encode(d: dict, zero_copy: bool, head=()):
    """-> (frames, frames to track). Frame 0: msgpack header; then one frame per array."""
    import msgpack
    import zmq
    header, frames, tracked = [], [None], []
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            header.append((k, ARRAY, v.dtype.str, v.shape))
            if zero_copy and v.nbytes >= zmq.COPY_THRESHOLD:
                v = zmq.Frame(v, copy=False, track=True)
                tracked.append(v)
            frames.append(v)
        elif isinstance(v, np.generic):
            header.append((k, NPSCALAR, v.dtype.str, v.item()))
        else:
            header.append((k, PYVALUE, None, v))
    frames[0] = msgpack.packb((*head, header))
    return frames, tracked


def decode(frames: list):
    """-> (head tuple, dict)."""
    import msgpack
    *head, header = msgpack.unpackb(frames[0], use_list=False)
    return head, join(header, frames[1:])


class PyZMQ:
    library = "pyzmq"

    def oneway_receiver(self, kind, n_senders):
        return _Pull(kind)

    def oneway_sender(self, address, kind):
        return _Push(address, kind)

    def bcast_publisher(self, n):
        return _Pub(n)

    def bcast_subscriber(self, address):
        return _Sub(address)

    def rr_server(self):
        return _Rep()

    def rr_client(self, address):
        return _Req(address)


def _hwm(kind):
    return 1000 if kind == "step" else 100


class _Base:
    def close(self):
        self.sock.close(linger=5000)
        self.ctx.term()


class _Pull(_Base):
    def __init__(self, kind):
        import zmq
        self._again = zmq.Again
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.RCVHWM, _hwm(kind))
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._timeout = None

    def recv_batch(self, timeout):
        import zmq
        if timeout != self._timeout:
            self.sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
            self._timeout = timeout
        try:
            return [decode(self.sock.recv_multipart(copy=False))[1]]
        except self._again:
            return []

    def close(self):
        self.sock.close(linger=0)
        self.ctx.term()


class _Push(_Base):
    def __init__(self, address, kind):
        import zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDHWM, _hwm(kind))
        self.sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        self.sock.connect(address)
        self._tracker = zmq.MessageTracker

    def send(self, payload):
        frames, tracked = encode(payload, True)
        self.sock.send_multipart(frames, copy=False)
        return self._tracker(*tracked) if tracked else None

    def wait(self, token):
        if token is not None:
            token.wait(TIMEOUT_MS / 1000)


class _Pub(_Base):
    def __init__(self, n):
        import zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.n = n

    def wait_subscribers(self, timeout):
        import zmq
        self.sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        for _ in range(self.n):
            msg = self.sock.recv()   # b"\x01" + topic: one per subscriber
            if msg[:1] != b"\x01":
                raise DataError(f"unexpected XPUB message {msg!r}")

    def publish(self, version, params):
        frames, _ = encode(params, True, head=(version,))
        self.sock.send_multipart(frames, copy=False)


class _Sub(_Base):
    def __init__(self, address):
        import zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(address)

    def wait(self, version, timeout):
        import zmq
        self.sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))

        def recv():
            (got,), params = decode(self.sock.recv_multipart(copy=False))
            return got, params
        return wait_version(recv, version)


class _Rep(_Base):
    def __init__(self):
        import zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.bind("tcp://127.0.0.1:*")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def serve(self, count, timeout):
        import zmq
        self.sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        recv, send = self.sock.recv_multipart, self.sock.send_multipart
        for _ in range(count):
            _, d = decode(recv())
            send(encode(answer(d), False)[0])


class _Req(_Base):
    def __init__(self, address):
        import zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.connect(address)
        self._timeout = None

    def request(self, d, timeout):
        import zmq
        if timeout != self._timeout:
            self.sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
            self._timeout = timeout
        self.sock.send_multipart(encode(d, False)[0])
        return decode(self.sock.recv_multipart())[1]
