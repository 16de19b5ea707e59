"""rlink.testing.FaultProxy against a tiny TCP server written here (not rlink).

Each fault is checked at the byte level: what passes, where the stream is cut
and how each side sees the cut. Every blocking call has a bound (sockets time
out after T seconds), so a bug fails a test rather than hanging it.
"""
from __future__ import annotations

import gc
import os
import random
import socket
import threading
import time
from typing import Callable

import pytest

from rlink.testing import FaultProxy

T = 10.0
RESET = (ConnectionResetError, BrokenPipeError)   # what a reset looks like: read vs. write side


class _Record:
    """What the server saw on one connection."""

    def __init__(self, sock):
        self.sock = sock
        self.data = bytearray()
        self.error: BaseException | None = None   # None: the peer closed cleanly (EOF)
        self.done = threading.Event()


class Server:
    """A threaded TCP server on 127.0.0.1: ``mode`` is 'echo' (send back what
    arrives), 'sink' (keep what arrives) or 'source' (once one byte arrives,
    send ``payload``, then close gracefully). One thread per connection;
    :meth:`close` joins all."""

    def __init__(self, mode: str, payload: bytes = b""):
        self.mode = mode
        self.payload = payload
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.records: list[_Record] = []
        self.accepted = threading.Condition()
        self.threads: list[threading.Thread] = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self.acceptor.start()

    def _accept_loop(self):
        while True:
            sock, _ = self.lsock.accept()
            if self.stopping:
                sock.close()
                return
            sock.settimeout(T)
            rec = _Record(sock)
            th = threading.Thread(target=self._serve, args=(rec,), daemon=True)
            with self.accepted:
                self.records.append(rec)
                self.threads.append(th)
                self.accepted.notify_all()
            th.start()

    def _serve(self, rec: _Record):
        sock = rec.sock
        try:
            if self.mode == "source":
                rec.data += sock.recv(1)
                if rec.data:
                    sock.sendall(self.payload)
                sock.shutdown(socket.SHUT_WR)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    if self.mode != "source":
                        sock.shutdown(socket.SHUT_WR)
                    break
                rec.data += chunk
                if self.mode == "echo":
                    sock.sendall(chunk)
        except OSError as e:
            rec.error = e
        finally:
            rec.done.set()

    def connection(self, i: int, timeout: float = T) -> _Record:
        """The i-th connection's record, once that connection has ended."""
        deadline = time.monotonic() + timeout
        with self.accepted:
            while len(self.records) <= i:
                left = deadline - time.monotonic()
                assert left > 0, f"server: connection {i} never arrived"
                self.accepted.wait(left)
            rec = self.records[i]
        assert rec.done.wait(timeout), f"server: connection {i} did not end"
        return rec

    def close(self):
        self.stopping = True
        with socket.create_connection(("127.0.0.1", self.port), timeout=T):
            pass
        self.acceptor.join(T)
        self.lsock.close()
        for rec in self.records:
            try:
                rec.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for th in self.threads:
            th.join(T)
        for rec in self.records:
            rec.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(proxy) -> socket.socket:
    host, port = proxy.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=T)


def read_all(sock) -> tuple[bytes, BaseException | None]:
    """Read until EOF or an error; returns (bytes, error or None for EOF)."""
    got = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(got), None
            got += chunk
    except OSError as e:
        return bytes(got), e


def read_exactly(sock, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, f"EOF after {len(got)} of {n} bytes"
        got += chunk
    return bytes(got)


def connect_and_read_all(proxy, before_go: Callable[[], None] | None = None
                         ) -> tuple[bytes, BaseException | None]:
    """Connect, call ``before_go()``, send one byte (a 'source' server starts
    sending then) and read until EOF or an error. A reset can beat connect()
    back to user space (the proxy resets right after accepting): that counts
    as a connection that read nothing and then was reset."""
    try:
        c = connect(proxy)
    except ConnectionResetError as e:
        return b"", e
    with c:
        if before_go is not None:
            before_go()
        try:
            c.sendall(b"g")
        except OSError as e:
            return b"", e
        return read_all(c)


def send_in_thread(sock, data: bytes):
    """sendall in a thread (so a test can read concurrently); returns the thread and its errors."""
    errors: list[BaseException] = []

    def run():
        try:
            sock.sendall(data)
        except OSError as e:
            errors.append(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, errors


def echo_roundtrip(proxy, data: bytes) -> bytes:
    with connect(proxy) as c:
        th, errors = send_in_thread(c, data)
        got = read_exactly(c, len(data))
        th.join(T)
        assert not errors
        c.shutdown(socket.SHUT_WR)
        rest, err = read_all(c)
        assert rest == b"" and err is None
    return got


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def echo():
    with Server("echo") as s:
        yield s


# --------------------------------------------------------------------------
# plain forwarding
# --------------------------------------------------------------------------
def test_passes_data_intact(echo):
    data = payload(1 << 20)
    with FaultProxy(target=echo.address) as proxy:
        assert proxy.address == f"127.0.0.1:{proxy.port}"
        assert echo_roundtrip(proxy, data) == data
        assert echo.connection(0).data == data
        assert proxy.connections == 1
        assert proxy.bytes_up == len(data)
        assert proxy.wait_event("closed")
        assert proxy.bytes_down == len(data)
        assert proxy.bytes_dropped == 0


def test_several_connections_at_once(echo):
    with FaultProxy(target=echo.address) as proxy:
        socks = [connect(proxy) for _ in range(5)]
        try:
            for i, s in enumerate(socks):
                s.sendall(b"conn%d" % i)
            for i, s in enumerate(socks):
                assert read_exactly(s, 5) == b"conn%d" % i
            assert proxy.active == 5
        finally:
            for s in socks:
                s.close()
        assert proxy.connections == 5


def test_target_down_resets_client(free_port):
    port = free_port()   # nothing listens there
    with FaultProxy(target=f"127.0.0.1:{port}") as proxy:
        got, err = connect_and_read_all(proxy)
        assert got == b""
        assert isinstance(err, RESET)
        assert proxy.wait_event("peer-reset")


# --------------------------------------------------------------------------
# rst_after / fin_after at exact byte offsets
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 1000, 300_000])
def test_rst_after_up_exact(n):
    data = payload(n + 100_000)
    with Server("sink") as sink, FaultProxy(target=sink.address) as proxy:
        proxy.rst_after(n, direction="up")       # no connection yet: applies to the next one
        with connect(proxy) as c:
            th, _errors = send_in_thread(c, data)
            got, err = read_all(c)
            th.join(T)
            assert got == b""
            assert isinstance(err, ConnectionResetError)
        rec = sink.connection(0)
        assert len(rec.data) == n
        assert rec.data == data[:n]
        assert isinstance(rec.error, ConnectionResetError)
        assert proxy.wait_event("rst")
        assert proxy.bytes_up == n


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 300_000])
def test_rst_after_down_exact(n):
    data = payload(n + 100_000)
    with Server("source", data) as source, FaultProxy(target=source.address) as proxy:
        # armed once connected, so that connect() returns before any reset
        got, err = connect_and_read_all(proxy, lambda: proxy.rst_after(n, direction="down"))
        assert len(got) == n
        assert got == data[:n]
        assert isinstance(err, RESET)
        assert proxy.bytes_down == n


def test_rst_after_counts_from_now_on_the_current_connection(echo):
    with FaultProxy(target=echo.address) as proxy:
        with connect(proxy) as c:
            c.sendall(b"x" * 500)
            assert read_exactly(c, 500) == b"x" * 500
            proxy.rst_after(10, direction="up")
            c.sendall(payload(100))
            got, err = read_all(c)
        assert isinstance(err, ConnectionResetError)
        assert len(got) <= 10               # the echo of what passed may or may not beat the reset
        rec = echo.connection(0)
        assert len(rec.data) == 510
        assert proxy.bytes_up == 510


def test_fault_applies_to_one_connection_only(echo):
    with FaultProxy(target=echo.address) as proxy:
        proxy.rst_after(3)
        with connect(proxy) as c:
            c.sendall(b"abcdef")
            _got, err = read_all(c)
            assert isinstance(err, ConnectionResetError)
        assert proxy.wait_event("rst")
        assert echo_roundtrip(proxy, b"second connection") == b"second connection"
        assert echo.connection(0).data == b"abc"
        assert echo.connection(1).data == b"second connection"


@pytest.mark.parametrize("n", [1, 7, 1000, 300_000])
def test_fin_after_up_exact(n):
    data = payload(n + 100_000)
    with Server("sink") as sink, FaultProxy(target=sink.address) as proxy:
        proxy.fin_after(n, direction="up")
        with connect(proxy) as c:
            th, _errors = send_in_thread(c, data)
            got, err = read_all(c)
            assert got == b"" and err is None      # the client reads a clean end of stream
            c.shutdown(socket.SHUT_RDWR)
            th.join(T)
        rec = sink.connection(0)
        assert rec.data == data[:n]
        assert rec.error is None                   # the server too
        assert proxy.wait_event("fin")


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 300_000])
def test_fin_after_down_exact(n):
    data = payload(n + 100_000)
    with Server("source", data) as source, FaultProxy(target=source.address) as proxy:
        got, err = connect_and_read_all(proxy, lambda: proxy.fin_after(n, direction="down"))
        assert got == data[:n]
        assert err is None
        assert source.connection(0).error is None
        assert proxy.wait_event("closed")


# --------------------------------------------------------------------------
# fragment, delay, stall
# --------------------------------------------------------------------------
def test_fragment_preserves_the_stream(echo):
    data = payload(200_000)
    with FaultProxy(target=echo.address, seed=7) as proxy:
        proxy.fragment(1, 7)
        assert echo_roundtrip(proxy, data) == data
        proxy.clear()
        assert echo_roundtrip(proxy, data) == data
    assert echo.connection(0).data == data


def test_fragment_splits_writes():
    """One direction only, with a half-close: the stream arrives whole."""
    with Server("sink") as sink, FaultProxy(target=sink.address) as proxy:
        proxy.fragment(1, 7)
        with connect(proxy) as c:
            c.sendall(payload(5000))
            c.shutdown(socket.SHUT_WR)
            assert read_all(c) == (b"", None)
        assert sink.connection(0).data == payload(5000)


def test_delay_adds_latency_and_keeps_order(echo):
    data = payload(100_000)
    with FaultProxy(target=echo.address) as proxy:
        proxy.delay(0.05)
        t0 = time.monotonic()
        assert echo_roundtrip(proxy, data) == data
        assert time.monotonic() - t0 >= 0.1        # held 50 ms each way: a lower bound, never flaky
        proxy.clear()
        assert echo_roundtrip(proxy, data) == data


def test_stall_loses_nothing(echo):
    data = payload(2 << 20)
    with FaultProxy(target=echo.address) as proxy:
        with connect(proxy) as c:
            c.sendall(b"hi")
            assert read_exactly(c, 2) == b"hi"
            proxy.stall(0.3)
            th, errors = send_in_thread(c, data)
            assert read_exactly(c, len(data)) == data
            th.join(T)
            assert not errors
        kinds = [k for _, k in proxy.events]
        assert kinds.index("stall") < kinds.index("stall-end")
        assert proxy.bytes_dropped == 0


def test_reset_during_a_stall_happens_at_once(echo):
    with FaultProxy(target=echo.address) as proxy:
        with connect(proxy) as c:
            c.sendall(b"hi")
            assert read_exactly(c, 2) == b"hi"
            proxy.stall(3600)
            c.sendall(b"held" * 1000)               # waits in the kernel buffers
            proxy.rst_after(0)
            assert proxy.wait_event("rst")
            got, err = read_all(c)
        assert got == b""
        assert isinstance(err, ConnectionResetError)
        assert echo.connection(0).data == b"hi"


# --------------------------------------------------------------------------
# flip_byte, refuse_next, blackhole
# --------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("offset", [0, 1, 4999, 9999])
def test_flip_byte_flips_exactly_one_byte(echo, direction, offset):
    data = payload(10_000)
    with FaultProxy(target=echo.address) as proxy:
        with connect(proxy) as c:
            c.sendall(b"warm-up")                      # offsets count from the call, not the start
            assert read_exactly(c, 7) == b"warm-up"
            proxy.flip_byte(offset, direction=direction)
            th, _ = send_in_thread(c, data)
            got = read_exactly(c, len(data))
            th.join(T)
        diff = [i for i in range(len(data)) if got[i] != data[i]]
        assert diff == [offset]
        assert got[offset] == data[offset] ^ 0xFF
        assert proxy.wait_event("flip")


def test_flip_byte_on_next_connection(echo):
    with FaultProxy(target=echo.address) as proxy:
        proxy.flip_byte(2)
        assert echo_roundtrip(proxy, b"\x00" * 5) == b"\x00\x00\xff\x00\x00"
        assert echo_roundtrip(proxy, b"\x00" * 5) == b"\x00" * 5


def test_refuse_next(echo):
    with FaultProxy(target=echo.address) as proxy:
        proxy.refuse_next(2)
        for _ in range(2):
            got, err = connect_and_read_all(proxy)
            assert got == b""
            assert isinstance(err, RESET)
        assert echo_roundtrip(proxy, b"third") == b"third"
        assert proxy.connections == 3
        assert [k for _, k in proxy.events][:2] == ["refuse", "refuse"]
    assert len(echo.records) == 1


def test_blackhole_then_rst(echo):
    with FaultProxy(target=echo.address) as proxy:
        with connect(proxy) as c:
            c.sendall(b"hi")
            assert read_exactly(c, 2) == b"hi"
            proxy.blackhole(0.3, then="rst")
            c.sendall(b"x" * 1000)
            got, err = read_all(c)                     # nothing comes back; then the reset
        assert got == b""
        assert isinstance(err, ConnectionResetError)
        rec = echo.connection(0)
        assert rec.data == b"hi"
        assert isinstance(rec.error, ConnectionResetError)
        kinds = [k for _, k in proxy.events]
        assert kinds.index("blackhole") < kinds.index("blackhole-end") < kinds.index("rst")


def test_blackhole_then_recover_loses_what_was_sent_during_it(echo):
    with FaultProxy(target=echo.address) as proxy:
        with connect(proxy) as c:
            c.sendall(b"hi")
            assert read_exactly(c, 2) == b"hi"
            proxy.blackhole(2.0, then="recover")
            c.sendall(b"L" * 100)
            deadline = time.monotonic() + T
            while proxy.bytes_dropped < 100 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert proxy.bytes_dropped == 100
            assert proxy.wait_event("blackhole-end")
            c.sendall(b"kept")
            assert read_exactly(c, 4) == b"kept"
        rec = echo.connection(0)
        assert rec.data == b"hikept"
        assert "rst" not in [k for _, k in proxy.events]


# --------------------------------------------------------------------------
# lifecycle and hygiene
# --------------------------------------------------------------------------
def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_close_joins_threads_and_closes_sockets():
    gc.collect()                            # sockets other tests left to the collector
    threads0, fds0 = threading.active_count(), _fds()
    server = Server("echo")
    proxy = FaultProxy(target=server.address)
    assert echo_roundtrip(proxy, b"one") == b"one"
    proxy.refuse_next(1)
    assert connect_and_read_all(proxy)[0] == b""
    proxy.rst_after(1)
    with connect(proxy) as c:
        c.sendall(b"ab")
        read_all(c)
    proxy.fragment(1, 3)
    proxy.delay(0.01)
    open_conn = connect(proxy)              # still open when the proxy closes
    open_conn.sendall(b"zz")
    assert read_exactly(open_conn, 2) == b"zz"
    proxy.close()
    proxy.close()                           # idempotent
    assert read_all(open_conn)[0] == b""    # the client sees its connection end
    open_conn.close()
    server.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("FaultProxy")]
    assert threading.active_count() == threads0
    assert _fds() == fds0


def test_context_manager_and_use_after_close(echo):
    with FaultProxy(target=echo.address) as proxy:
        pass
    with pytest.raises(RuntimeError):
        proxy.rst_after(1)
    with pytest.raises(OSError):
        connect(proxy)


@pytest.mark.parametrize("call, exc", [
    (lambda p: p.rst_after(-1), ValueError),
    (lambda p: p.rst_after(1, direction="sideways"), ValueError),
    (lambda p: p.fin_after(1.5), TypeError),
    (lambda p: p.blackhole(1, then="explode"), ValueError),
    (lambda p: p.stall(-1), ValueError),
    (lambda p: p.fragment(0, 7), ValueError),
    (lambda p: p.fragment(5, 4), ValueError),
    (lambda p: p.flip_byte(-1), ValueError),
    (lambda p: p.refuse_next(-1), ValueError),
])
def test_invalid_arguments(echo, call, exc):
    with FaultProxy(target=echo.address) as proxy:
        with pytest.raises(exc):
            call(proxy)


@pytest.mark.parametrize("target", ["nohost", "host:", "host:99999", 5555])
def test_invalid_target(target):
    with pytest.raises((ValueError, TypeError)):
        FaultProxy(target=target)
