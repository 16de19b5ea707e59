"""A hand-rolled TCP transport: pickle protocol 5 with out-of-band buffers.

Frame: u64 pickle length, u32 buffer count, u64 length per buffer, the
pickle bytes, then each buffer's raw bytes. The sender writes a frame with
one socket.sendmsg (gather I/O: array buffers go to the kernel straight
from the arrays' memory, no copy). The receiver reads through a 256 KiB
buffer (many small frames per recv_into), reads large buffers straight into
freshly allocated numpy memory with recv_into, and calls
pickle.loads(..., buffers=...), so received arrays are writable and own no
Python bytes copy. TCP_NODELAY on (W4 is latency-bound; the one-way
workloads write whole frames per call, so Nagle buys nothing).
Several senders: selectors over the connections.

Unpickling runs arbitrary code: this is a floor for "what Python can do over
a socket", not something to expose to a network."""
from __future__ import annotations

import pickle
import selectors
import socket
import struct

import numpy as np

from .framing import answer, wait_version

_HEAD = struct.Struct("<QI")
RBUF = 256 * 1024


def _listen():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, "127.0.0.1:%d" % s.getsockname()[1]


def _tune(s):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _connect(address):
    host, port = address.rsplit(":", 1)
    return _tune(socket.create_connection((host, int(port)), timeout=60))


def send_obj(sock, obj):
    bufs = []
    pkl = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    raws = [b.raw() for b in bufs]
    head = _HEAD.pack(len(pkl), len(raws)) + struct.pack(f"<{len(raws)}Q", *[r.nbytes for r in raws])
    parts = [head, pkl, *raws]
    total = sum(memoryview(p).nbytes for p in parts)
    sent = sock.sendmsg(parts)
    while sent < total:   # partial write: continue from where the kernel stopped
        rest, skip = [], sent
        for p in parts:
            m = memoryview(p).cast("B")
            if skip >= m.nbytes:
                skip -= m.nbytes
                continue
            rest.append(m[skip:])
            skip = 0
        parts, total = rest, total - sent
        sent = sock.sendmsg(parts)


class Reader:
    """Buffered frame reader for one blocking socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray(RBUF)
        self.mv = memoryview(self.buf)
        self.lo = self.hi = 0

    def buffered(self):
        return self.hi - self.lo

    def _fill(self, need):
        """Make at least `need` (<= RBUF) bytes available from lo."""
        if self.lo + need > RBUF:
            n = self.hi - self.lo
            self.buf[:n] = self.buf[self.lo:self.hi]
            self.lo, self.hi = 0, n
        while self.hi - self.lo < need:
            got = self.sock.recv_into(self.mv[self.hi:])
            if not got:
                raise ConnectionError("peer closed")
            self.hi += got

    def take(self, n):
        self._fill(n)
        out = self.mv[self.lo:self.lo + n]
        self.lo += n
        return out

    def read_into(self, dst):
        n = dst.nbytes
        have = min(n, self.hi - self.lo)
        dst[:have] = self.mv[self.lo:self.lo + have]
        self.lo += have
        pos = have
        while pos < n:
            got = self.sock.recv_into(dst[pos:])
            if not got:
                raise ConnectionError("peer closed")
            pos += got

    def read_obj(self):
        plen, nbuf = _HEAD.unpack(self.take(_HEAD.size))
        sizes = struct.unpack(f"<{nbuf}Q", self.take(8 * nbuf))
        if plen <= RBUF:
            pkl = bytes(self.take(plen))
        else:
            pkl = np.empty(plen, np.uint8)
            self.read_into(memoryview(pkl))
        bufs = []
        for n in sizes:
            a = np.empty(n, np.uint8)
            if n <= 4096:
                a[:] = np.frombuffer(self.take(n), np.uint8)
            else:
                self.read_into(memoryview(a))
            bufs.append(a)
        return pickle.loads(pkl, buffers=bufs)


class SocketPickle5:
    library = "socket+pickle5"

    def oneway_receiver(self, kind, n_senders):
        return _Receiver(n_senders)

    def oneway_sender(self, address, kind):
        return _Sender(address)

    def bcast_publisher(self, n):
        return _Publisher(n)

    def bcast_subscriber(self, address):
        return _Subscriber(address)

    def rr_server(self):
        return _RRServer()

    def rr_client(self, address):
        return _RRClient(address)


class _Receiver:
    def __init__(self, n):
        self.lsock, self.address = _listen()
        self.n, self.readers = n, []
        self.sel = selectors.DefaultSelector()

    def recv_batch(self, timeout):
        while len(self.readers) < self.n:
            self.lsock.settimeout(60)
            s, _ = self.lsock.accept()
            s.settimeout(None)
            r = Reader(_tune(s))
            self.readers.append(r)
            self.sel.register(s, selectors.EVENT_READ, r)
        if self.n == 1:
            r = self.readers[0]
            out = [r.read_obj()]
            while r.buffered() and len(out) < 256:
                out.append(r.read_obj())
            return out
        # Round robin: one message from every connection that has data, so a
        # connection whose buffer always holds the start of its next frame
        # cannot starve the others.
        ready = {key.data for key, _ in self.sel.select(0)}
        ready.update(r for r in self.readers if r.buffered())
        if not ready:
            ready = {key.data for key, _ in self.sel.select(timeout)}
        return [r.read_obj() for r in ready]

    def close(self):
        for r in self.readers:
            r.sock.close()
        self.lsock.close()


class _Sender:
    def __init__(self, address):
        self.sock = _connect(address)
        self.sock.settimeout(None)

    def send(self, payload):
        send_obj(self.sock, payload)   # returns once written: reusable

    def wait(self, token):
        pass

    def close(self):
        self.sock.close()


class _Publisher:
    def __init__(self, n):
        self.lsock, self.address = _listen()
        self.n, self.socks = n, []

    def wait_subscribers(self, timeout):
        self.lsock.settimeout(timeout)
        while len(self.socks) < self.n:
            s, _ = self.lsock.accept()
            s.settimeout(None)
            self.socks.append(_tune(s))

    def publish(self, version, params):
        for s in self.socks:
            send_obj(s, (version, params))

    def close(self):
        for s in self.socks:
            s.close()
        self.lsock.close()


class _Subscriber:
    def __init__(self, address):
        self.sock = _connect(address)
        self.sock.settimeout(None)
        self.reader = Reader(self.sock)

    def wait(self, version, timeout):
        return wait_version(self.reader.read_obj, version)

    def close(self):
        self.sock.close()


class _RRServer:
    def __init__(self):
        self.lsock, self.address = _listen()

    def serve(self, count, timeout):
        self.lsock.settimeout(60)
        s, _ = self.lsock.accept()
        s.settimeout(None)
        r = Reader(_tune(s))
        try:
            for _ in range(count):
                send_obj(s, answer(r.read_obj()))
        finally:
            s.close()

    def close(self):
        self.lsock.close()


class _RRClient:
    def __init__(self, address):
        self.sock = _connect(address)
        self.sock.settimeout(None)
        self.reader = Reader(self.sock)

    def request(self, d, timeout):
        send_obj(self.sock, d)
        return self.reader.read_obj()

    def close(self):
        self.sock.close()
