"""Fault injection for tests: a userspace TCP proxy that breaks connections on purpose.

:class:`FaultProxy` sits between an actor and a learner (or any TCP client and
server) and forwards bytes in both directions until you tell it to misbehave:
reset or close the connection at an exact byte offset, swallow traffic for a
while, stall, add latency, split writes into tiny pieces, refuse connections
or corrupt a byte. It needs no root and no kernel support (no ``tc netem``),
only the Python standard library, so it works in any test run::

    import rlink
    from rlink.testing import FaultProxy

    learner = rlink.LearnerNode(port=0, reliable=True)
    with FaultProxy(target=learner.address) as proxy:
        actor = rlink.ActorNode(proxy.address)     # the actor talks to the proxy
        for i in range(100):
            actor.send_trajectory({"seq": i})
        proxy.rst_after(10_000)                    # reset once 10 kB more have gone up
        for i in range(100, 200):
            actor.send_trajectory({"seq": i})      # reliable mode reconnects and resends

Directions: ``"up"`` is client -> server (actor -> learner), ``"down"`` is
server -> client. Byte offsets are counted per direction *from the moment of
the call* on the current connection (the newest one still forwarding), or
from the first byte of the next connection if none is open.

One-shot faults (:meth:`rst_after`, :meth:`fin_after`, :meth:`blackhole`,
:meth:`stall`, :meth:`flip_byte`) apply to one connection; persistent ones
(:meth:`delay`, :meth:`fragment`) apply to every connection until
:meth:`clear`. All the work happens in one background thread that
:meth:`close` joins; nothing in the proxy waits without a bound.

The proxy is a test tool, not a production relay: it is written for clarity
and exactness, not speed (a few hundred MB/s at most, much less when
fragmenting).
"""
from __future__ import annotations

import collections
import errno
import ipaddress
import random
import selectors
import socket
import struct
import threading
import time
from typing import Any, Callable

__all__ = ["FaultProxy"]

_CHUNK = 65536              # largest single read
_MAX_BUFFERED = 256 << 10   # per direction; beyond this the proxy stops reading (back-pressure)
_DRAIN_WAIT = 2.0           # before a cut, wait up to this long for the kernel to send what we wrote
_DRAIN_POLL = 0.002         # how often to look while waiting
_FIN_LINGER = 5.0           # after a FIN cut, read and discard for up to this long before closing
_FRAGMENT_BUDGET = 4096     # tiny writes per connection per loop turn (so one connection can't starve others)
_DIRECTIONS = ("up", "down")


def _split_address(address: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'tcp://host:port' -> (host, port)."""
    if not isinstance(address, str):
        raise TypeError(f"address must be a str like '127.0.0.1:5555', not {type(address).__name__}")
    a = address[len("tcp://"):] if address.startswith("tcp://") else address
    if a.startswith("["):
        host, _, rest = a[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = a.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not of the form 'host:port' (IPv6: '[::1]:5555')")
    return host, int(port)


_SIOCOUTQNSD = 0x894B          # Linux: bytes in the send queue not yet transmitted


def _unsent(sock: socket.socket, loopback: bool) -> int:
    """Bytes the kernel still holds for the peer (Linux; 0 if unknown). Over
    loopback a transmitted byte is already in the peer's receive queue, so
    only untransmitted bytes count there (waiting for the ACK could take a
    delayed-ACK timeout of ~40 ms); elsewhere, unacknowledged bytes count too."""
    try:
        import fcntl
        import termios
        request = _SIOCOUTQNSD if loopback else termios.TIOCOUTQ
        raw = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
        return struct.unpack("i", raw)[0]
    except (ImportError, AttributeError, OSError, ValueError):
        if loopback:
            return _unsent(sock, False)
        return 0


def _check_direction(direction: str) -> str:
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be 'up' (client->server) or 'down' (server->client), not {direction!r}")
    return direction


def _check_count(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    return value


def _check_seconds(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value <= 86400:
        raise ValueError(f"{name} must be between 0 and 86400 seconds, not {value!r}")
    return float(value)


class _Direction:
    """One direction of a proxied connection: bytes read from ``src``, written to ``dst``."""

    def __init__(self, name: str):
        self.name = name
        self.pos = 0                 # bytes read from src so far (stream offset of the next byte)
        self.out: collections.deque = collections.deque()  # [release_time, bytearray, offset]
        self.out_bytes = 0
        self.cut_at: int | None = None   # stream offset at which to cut the connection
        self.cut_kind = ""               # "rst" or "fin"
        self.flips: set[int] = set()     # stream offsets whose byte gets XOR 0xFF
        self.eof = False                 # src sent FIN
        self.shut = False                # we passed the FIN on to dst

    def drop_output(self) -> int:
        n = self.out_bytes
        self.out.clear()
        self.out_bytes = 0
        return n

    def released(self, now: float) -> bool:
        return bool(self.out) and self.out[0][0] <= now


class _Conn:
    """A proxied connection: client socket ``c`` (accepted) and server socket ``s`` (to the target)."""

    def __init__(self, number: int, c: socket.socket, s: socket.socket):
        self.number = number
        self.c = c
        self.s = s
        self.up = _Direction("up")       # c -> s
        self.down = _Direction("down")   # s -> c
        self.state = "connecting"        # connecting, open, cutting, fin, closed
        self.stall_until = 0.0
        self.blackhole_until = 0.0
        self.blackhole_then = ""
        self.cut_dir: _Direction | None = None
        self.cut_started = 0.0
        self.fin_deadline = 0.0
        self.masks: dict[socket.socket, int] = {}   # what each socket is registered for

    def direction(self, name: str) -> _Direction:
        return self.up if name == "up" else self.down

    def forwarding(self) -> bool:
        return self.state in ("connecting", "open")


class FaultProxy:
    """A TCP proxy from ``listen_host:listen_port`` to ``target`` that injects faults on request.

    Point the client at :attr:`address` instead of the server. The proxy
    forwards every connection to ``target`` unchanged until a fault method is
    called. It is a context manager; :meth:`close` stops it.

    ``seed`` seeds the random sizes of :meth:`fragment`, so a failing run can
    be repeated exactly.

    Counters: :attr:`connections` (connections accepted, refused ones
    included), :attr:`bytes_up` and :attr:`bytes_down` (bytes delivered to
    the server and to the client), :attr:`bytes_dropped` (bytes swallowed by
    :meth:`blackhole`). :attr:`events` lists what happened, as
    ``(connection_number, kind)`` pairs; :meth:`wait_event` waits for one.
    Event kinds: ``"accept"``, ``"refuse"``, ``"rst"``, ``"fin"``,
    ``"flip"``, ``"blackhole"``, ``"blackhole-end"``, ``"stall"``,
    ``"stall-end"``, ``"peer-reset"`` (a peer reset or the target refused;
    the proxy passed a reset on), ``"closed"`` (both sides closed normally).
    """

    def __init__(self, target: str, listen_host: str = "127.0.0.1", listen_port: int = 0, *,
                 seed: int = 0):
        host, port = _split_address(target)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"cannot resolve {target!r}")
        family, _, _, _, addr = infos[0]
        self._target_family: socket.AddressFamily = family
        self._target_addr: Any = addr
        try:
            self._loopback = ipaddress.ip_address(addr[0]).is_loopback
        except ValueError:
            self._loopback = False
        self.target = target
        self._seed = seed

        self._lsock = socket.socket(socket.AF_INET6 if ":" in listen_host else socket.AF_INET,
                                    socket.SOCK_STREAM)
        try:
            self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._lsock.bind((listen_host, _check_count("listen_port", listen_port)))
            self._lsock.listen(128)
            self._lsock.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self._lsock.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.listen_host = listen_host
        self.port: int = self._lsock.getsockname()[1]

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._lsock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._conns: list[_Conn] = []
        self._pending: list[Callable[[_Conn, float], None]] = []
        self._refuse = 0
        self._delay = 0.0
        self._fragment: tuple[int, int] | None = None
        self._rng = random.Random(seed)
        self._events: list[tuple[int, str]] = []
        self._closing = False
        self._closed = False
        self._error: BaseException | None = None
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.bytes_dropped = 0

        self._thread = threading.Thread(target=self._run, name=f"FaultProxy:{self.port}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    @property
    def address(self) -> str:
        """Where clients should connect, e.g. ``"127.0.0.1:40123"``."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.listen_host, self.listen_host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def events(self) -> list[tuple[int, str]]:
        """What happened so far, oldest first, as ``(connection_number, kind)``
        (connections are numbered from 1 in accept order)."""
        with self._lock:
            return list(self._events)

    @property
    def active(self) -> int:
        """Connections open now (not yet reset or closed)."""
        with self._lock:
            return sum(1 for c in self._conns if c.state != "closed")

    def wait_event(self, kind: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until at least ``count`` events of ``kind`` have happened (see
        the class docstring for kinds) or ``timeout`` seconds pass; returns
        whether they did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(1 for _, k in self._events if k == kind) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._changed.wait(left)
            return True

    def wait_connections(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until :attr:`connections` reaches ``count`` or ``timeout`` passes; returns whether it did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.connections < count:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._changed.wait(left)
            return True

    def rst_after(self, nbytes: int, direction: str = "up") -> None:
        """Reset the connection once exactly ``nbytes`` more bytes have gone
        ``direction``: they are delivered, the next byte is not, and both
        peers get a TCP RST (``ECONNRESET``), as when a host crashes or a
        firewall kills the connection. ``nbytes=0`` resets at once (on the
        current connection) or right after accepting (the next one).
        Use it to cut inside a frame header or payload."""
        self._cut_after(_check_count("nbytes", nbytes), _check_direction(direction), "rst")

    def fin_after(self, nbytes: int, direction: str = "up") -> None:
        """Like :meth:`rst_after`, but close both sides gracefully (FIN): each
        peer reads end-of-stream, after the ``nbytes`` in ``direction``."""
        self._cut_after(_check_count("nbytes", nbytes), _check_direction(direction), "fin")

    def blackhole(self, seconds: float, then: str = "rst") -> None:
        """Swallow the connection's traffic for ``seconds``: read and discard
        everything in both directions (bytes already read but not yet
        forwarded are discarded too), so senders see no error and no
        back-pressure, like a route that silently drops packets. Afterwards
        ``then="rst"`` resets both sides; ``then="recover"`` resumes
        forwarding, and since the discarded bytes are gone the streams are
        corrupt from then on, as through a broken middlebox; the endpoints
        must notice."""
        seconds = _check_seconds("seconds", seconds)
        if then not in ("rst", "recover"):
            raise ValueError(f"then must be 'rst' or 'recover', not {then!r}")

        def apply(conn: _Conn, now: float) -> None:
            conn.blackhole_until = now + seconds
            conn.blackhole_then = then
            self.bytes_dropped += conn.up.drop_output() + conn.down.drop_output()
            self._event(conn, "blackhole")
        self._arm(apply)

    def stall(self, seconds: float) -> None:
        """Stop forwarding for ``seconds``: the proxy neither reads nor writes,
        so the peers' buffers fill up and senders feel back-pressure; then
        everything resumes and nothing is lost. A reset or FIN that is due
        meanwhile (``rst_after(0)``) still happens at once."""
        seconds = _check_seconds("seconds", seconds)

        def apply(conn: _Conn, now: float) -> None:
            conn.stall_until = now + seconds
            self._event(conn, "stall")
        self._arm(apply)

    def delay(self, seconds: float) -> None:
        """Hold every chunk read for ``seconds`` before forwarding it (added
        one-way latency, order kept), on all connections until :meth:`clear`."""
        seconds = _check_seconds("seconds", seconds)
        with self._lock:
            self._delay = seconds
        self._wake()

    def fragment(self, min_size: int = 1, max_size: int = 7) -> None:
        """Forward in tiny writes of ``min_size``..``max_size`` bytes (sizes
        drawn from the proxy's seeded RNG), with ``TCP_NODELAY``, so the
        peers see data trickle in through partial reads; nothing is lost.
        Applies to all connections until :meth:`clear`. Slow: one system
        call per piece."""
        _check_count("min_size", min_size, 1)
        _check_count("max_size", max_size, min_size)
        with self._lock:
            self._fragment = (min_size, max_size)
        self._wake()

    def refuse_next(self, k: int = 1) -> None:
        """Accept the next ``k`` incoming connections and reset them at once
        (the client sees its connection reset before any data passes)."""
        k = _check_count("k", k)
        with self._lock:
            self._refuse += k

    def flip_byte(self, offset: int = 0, direction: str = "up") -> None:
        """Corrupt one byte: XOR 0xFF into the byte at stream offset
        ``offset`` in ``direction``, counted from now on the current
        connection (or from the start of the next one). Everything else
        passes unchanged."""
        offset = _check_count("offset", offset)
        direction = _check_direction(direction)

        def apply(conn: _Conn, now: float) -> None:
            d = conn.direction(direction)
            d.flips.add(d.pos + offset)
        self._arm(apply)

    def clear(self) -> None:
        """Remove the persistent faults (:meth:`delay`, :meth:`fragment`).
        One-shot faults already armed still happen."""
        with self._lock:
            self._delay = 0.0
            self._fragment = None
        self._wake()

    def close(self) -> None:
        """Stop the proxy: close the listening socket and every connection
        (both sides see the connection close) and join the proxy's thread.
        Idempotent. Raises ``RuntimeError`` if the proxy's thread had failed."""
        with self._lock:
            if self._closed:
                return
            self._closing = True
        self._wake()
        self._thread.join()
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._error is not None:
            raise RuntimeError("FaultProxy's thread failed") from self._error

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.address} -> {self.target})"

    # ------------------------------------------------------------------ internals
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already pending, or closed

    def _event(self, conn: _Conn | None, kind: str) -> None:
        """Record an event; caller holds the lock."""
        self._events.append((conn.number if conn else 0, kind))
        self._changed.notify_all()

    def _arm(self, apply: Callable[[_Conn, float], None]) -> None:
        with self._lock:
            if self._closing:
                raise RuntimeError("FaultProxy is closed")
            conn = self._current()
            if conn is None:
                self._pending.append(apply)
            else:
                apply(conn, time.monotonic())
        self._wake()

    def _cut_after(self, nbytes: int, direction: str, kind: str) -> None:
        def apply(conn: _Conn, now: float) -> None:
            d = conn.direction(direction)
            d.cut_at = d.pos + nbytes
            d.cut_kind = kind
        self._arm(apply)

    def _current(self) -> _Conn | None:
        for conn in reversed(self._conns):
            if conn.forwarding():
                return conn
        return None

    def _run(self) -> None:
        try:
            timeout: float | None = None
            while True:
                ready = self._sel.select(timeout)
                with self._lock:
                    if self._closing:
                        break
                    now = time.monotonic()
                    for key, events in ready:
                        self._on_ready(key, events, now)
                    now = time.monotonic()
                    deadline = None
                    for conn in list(self._conns):
                        t = self._pump(conn, now)
                        if t is not None and (deadline is None or t < deadline):
                            deadline = t
                        if conn.state == "closed":
                            self._conns.remove(conn)
                        else:
                            self._sync(conn, now)
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        except BaseException as e:  # pragma: no cover - surfaced by close()
            self._error = e
        finally:
            with self._lock:
                for conn in self._conns:
                    self._close_conn(conn, rst=False)
                self._conns.clear()
                self._sel.close()
                self._lsock.close()
                self._wake_r.close()
                self._wake_w.close()

    def _on_ready(self, key: selectors.SelectorKey, events: int, now: float) -> None:
        sock = key.fileobj
        if sock is self._wake_r:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            return
        if sock is self._lsock:
            self._accept(now)
            return
        conn: _Conn = key.data
        if conn.state == "closed":
            return
        if conn.state == "connecting":
            if sock is conn.s and events & selectors.EVENT_WRITE:
                err = conn.s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._abort(conn)
                else:
                    conn.state = "open"
            return
        # A stall may have begun after select() reported the socket readable.
        if events & selectors.EVENT_READ and not (conn.state == "open" and now < conn.stall_until):
            self._read(conn, conn.up if sock is conn.c else conn.down, now)
        # writes are attempted for every connection in _pump

    def _accept(self, now: float) -> None:
        for _ in range(64):
            try:
                c, _addr = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS):
                    return
                raise
            self.connections += 1
            number = self.connections
            if self._refuse > 0:
                self._refuse -= 1
                self._reset(c)
                self._events.append((number, "refuse"))
                self._changed.notify_all()
                continue
            c.setblocking(False)
            s = socket.socket(self._target_family, socket.SOCK_STREAM)
            s.setblocking(False)
            for sk in (c, s):
                try:
                    sk.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            conn = _Conn(number, c, s)
            self._conns.append(conn)
            self._event(conn, "accept")
            rc = s.connect_ex(self._target_addr)
            if rc == 0:
                conn.state = "open"
            elif rc not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                self._abort(conn)
                continue
            pending, self._pending = self._pending, []
            for apply in pending:
                apply(conn, now)

    def _read(self, conn: _Conn, d: _Direction, now: float) -> None:
        src = conn.c if d is conn.up else conn.s
        blackholed = now < conn.blackhole_until
        n = _CHUNK
        if conn.state == "open" and not blackholed and d.cut_at is not None:
            n = min(n, d.cut_at - d.pos)
            if n <= 0:
                return
        try:
            data = src.recv(n)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort(conn)
            return
        if not data:
            d.eof = True
            return
        if blackholed or conn.state == "fin":
            d.pos += len(data)
            if blackholed:
                self.bytes_dropped += len(data)
            return
        buf = bytearray(data)
        if d.flips:
            for off in [f for f in d.flips if d.pos <= f < d.pos + len(buf)]:
                buf[off - d.pos] ^= 0xFF
                d.flips.discard(off)
                self._event(conn, "flip")
        d.pos += len(buf)
        d.out.append([now + self._delay, buf, 0])
        d.out_bytes += len(buf)

    def _write(self, conn: _Conn, d: _Direction, now: float) -> None:
        dst = conn.s if d is conn.up else conn.c
        budget = _FRAGMENT_BUDGET
        while d.released(now) and budget > 0:
            entry = d.out[0]
            _, buf, off = entry
            size = len(buf) - off
            if self._fragment is not None:
                size = min(size, self._rng.randint(*self._fragment))
                budget -= 1
            try:
                sent = dst.send(memoryview(buf)[off:off + size])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._abort(conn)
                return
            entry[2] = off + sent
            d.out_bytes -= sent
            if d is conn.up:
                self.bytes_up += sent
            else:
                self.bytes_down += sent
            if entry[2] == len(buf):
                d.out.popleft()
            if sent < size:
                return

    def _pump(self, conn: _Conn, now: float) -> float | None:
        """Advance timers, writes and state changes; returns the next time this connection needs attention."""
        if conn.state in ("closed", "connecting"):
            return None
        if conn.state == "fin":
            if (conn.up.eof and conn.down.eof) or now >= conn.fin_deadline:
                self._close_conn(conn, rst=False)
                self._event(conn, "closed")
                return None
            return conn.fin_deadline
        if conn.state == "cutting":
            d = conn.cut_dir
            assert d is not None
            dst = conn.s if d is conn.up else conn.c
            if _unsent(dst, self._loopback) > 0 and now - conn.cut_started < _DRAIN_WAIT:
                return now + _DRAIN_POLL
            self._cut(conn, d.cut_kind, now)
            return conn.fin_deadline if conn.state == "fin" else None

        deadline: float | None = None

        def soon(t: float) -> None:
            nonlocal deadline
            if deadline is None or t < deadline:
                deadline = t

        if conn.stall_until:
            if now < conn.stall_until:
                for d in (conn.up, conn.down):   # a cut already due (rst_after(0)) does not wait
                    if d.cut_at is not None and d.pos >= d.cut_at and not d.out and not d.eof:
                        conn.state = "cutting"
                        conn.cut_dir = d
                        conn.cut_started = now
                        return self._pump(conn, now)
                soon(conn.stall_until)
                return deadline
            conn.stall_until = 0.0
            self._event(conn, "stall-end")
        if conn.blackhole_until:
            if now < conn.blackhole_until:
                soon(conn.blackhole_until)
                return deadline
            conn.blackhole_until = 0.0
            self._event(conn, "blackhole-end")
            if conn.blackhole_then == "rst":
                self._close_conn(conn, rst=True)
                self._event(conn, "rst")
                return None

        for d in (conn.up, conn.down):
            self._write(conn, d, now)
            if conn.state == "closed":
                return None
            if d.out and d.out[0][0] > now:
                soon(d.out[0][0])
            if d.cut_at is not None and d.pos >= d.cut_at and not d.out and not d.eof:
                conn.state = "cutting"
                conn.cut_dir = d
                conn.cut_started = now
                return self._pump(conn, now)
            if d.eof and not d.out and not d.shut:
                d.shut = True
                try:
                    (conn.s if d is conn.up else conn.c).shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if conn.up.shut and conn.down.shut:
            self._close_conn(conn, rst=False)
            self._event(conn, "closed")
            return None
        return deadline

    def _cut(self, conn: _Conn, kind: str, now: float) -> None:
        if kind == "rst":
            self._close_conn(conn, rst=True)
            self._event(conn, "rst")
            return
        for d, sock in ((conn.up, conn.s), (conn.down, conn.c)):
            d.drop_output()
            if not d.shut:
                d.shut = True
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        conn.state = "fin"
        conn.fin_deadline = now + _FIN_LINGER
        self._event(conn, "fin")

    def _abort(self, conn: _Conn) -> None:
        """A peer reset, or the target could not be reached: reset both sides."""
        self._close_conn(conn, rst=True)
        self._event(conn, "peer-reset")

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    def _close_conn(self, conn: _Conn, rst: bool) -> None:
        if conn.state == "closed":
            return
        conn.state = "closed"
        for sock in (conn.c, conn.s):
            if conn.masks.pop(sock, 0):
                self._sel.unregister(sock)
            if rst:
                self._reset(sock)
            else:
                sock.close()

    def _sync(self, conn: _Conn, now: float) -> None:
        """Register each socket for exactly the events the connection waits for."""
        want = {conn.c: 0, conn.s: 0}
        if conn.state == "connecting":
            want[conn.s] = selectors.EVENT_WRITE
        elif conn.state == "fin":
            for d, src in ((conn.up, conn.c), (conn.down, conn.s)):
                if not d.eof:
                    want[src] |= selectors.EVENT_READ
        elif conn.state == "open" and not (conn.stall_until and now < conn.stall_until):
            blackholed = conn.blackhole_until and now < conn.blackhole_until
            for d, src, dst in ((conn.up, conn.c, conn.s), (conn.down, conn.s, conn.c)):
                if not d.eof and (blackholed or (
                        d.out_bytes < _MAX_BUFFERED and (d.cut_at is None or d.pos < d.cut_at))):
                    want[src] |= selectors.EVENT_READ
                if not blackholed and d.released(now):
                    want[dst] |= selectors.EVENT_WRITE
        for sock, mask in want.items():
            old = conn.masks.get(sock, 0)
            if mask == old:
                continue
            if not old:
                self._sel.register(sock, mask, conn)
            elif not mask:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, mask, conn)
            conn.masks[sock] = mask
