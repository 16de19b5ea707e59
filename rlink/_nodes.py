"""LearnerNode and ActorNode: the public API over the compiled core.

Threads: every method of both nodes may be called from several threads at
once (for example one thread sending while another receives, or several
threads sending on one actor). Blocking calls release the GIL.
"""
from __future__ import annotations

import atexit
import collections
import ipaddress
import itertools
import logging
import os
import random
import threading
import time
import weakref
from typing import Any, NamedTuple

from rlink import _core, _errors

log = logging.getLogger("rlink")

_live: "weakref.WeakSet[_Node]" = weakref.WeakSet()


class Message(NamedTuple):
    """A message received by a learner, with the id of the actor that sent it,
    and the parameter version that actor's application held when it sent it
    (the last returned by ``latest_parameters``/``wait_parameters``; 0 = none):
    ``learner_version - params_version`` is the policy lag of this data."""
    actor_id: int
    data: dict
    redelivered: bool = False
    params_version: int = 0


class Event(NamedTuple):
    """Something that happened to a learner's connections: ``kind`` is
    ``"joined"``, ``"left"`` or ``"rejected"`` (a protocol or limit violation,
    or a failed authentication; ``actor_id`` is 0 when the peer never said who
    it was)."""
    kind: str
    actor_id: int
    reason: str
    time: float


class Parameters(NamedTuple):
    """A version of the parameters published by the learner."""
    version: int
    data: dict


class Request:
    """A request from an actor; answer it with :meth:`reply` (once)."""
    __slots__ = ("actor_id", "request_id", "data", "_learner")

    def __init__(self, learner: "LearnerNode", actor_id: int, request_id: int, data: dict):
        self._learner = learner
        self.actor_id = actor_id
        self.request_id = request_id
        self.data = data

    def reply(self, data: dict, timeout: float | None = None) -> None:
        """Send ``data`` back to the actor that made this request."""
        self._learner._core_or_raise().send(
            self.actor_id, _core.KIND_REPLY, self.request_id, data, timeout)

    def __repr__(self) -> str:
        return f"Request(actor_id={self.actor_id:#x}, request_id={self.request_id})"


class Tracker:
    """What ``send_trajectory(..., copy=False)`` returns: whether rlink still
    reads that trajectory's arrays (as pyzmq's ``MessageTracker``). They are
    free once the learner acknowledged the trajectory, or at once when
    nothing was held (unreliable mode, shared memory, small data)."""
    __slots__ = ("_core", "_seq")

    def __init__(self, core: Any, seq: int):
        self._core = core
        self._seq = seq

    @property
    def done(self) -> bool:
        """True once the arrays may be written again."""
        try:
            return self._seq == 0 or self._core.wait_acked(0, self._seq)
        except _errors.ClosedError:   # a closed actor reads nothing
            return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until :attr:`done`; :class:`rlink.TimeoutError` after
        ``timeout`` seconds, :class:`rlink.ConnectionLostError` once the actor
        gave up reconnecting (the trajectory stays retained)."""
        try:
            if self._seq == 0 or self._core.wait_acked(timeout, self._seq):
                return
        except _errors.ClosedError:
            return
        raise _errors.TimeoutError(
            f"trajectory {self._seq} still un-acknowledged after {timeout} s "
            f"(is the learner's application calling receive()?)")

    def __repr__(self) -> str:
        return f"Tracker(seq={self._seq}, done={self.done})"


_DONE = Tracker(None, 0)   # what every send that holds nothing returns: no allocation


def _parse_address(address: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'tcp://host:port' -> (host, port);
    'ipc:///path' -> (path, -1)."""
    if not isinstance(address, str):
        raise TypeError(f"learner_address must be a str like 'localhost:5555', not {type(address).__name__}")
    if address.startswith("ipc://"):
        path = address[len("ipc://"):]
        if not path or len(path.encode()) > 95:
            raise ValueError(f"learner_address {address!r}: an ipc:// address needs a socket file "
                             f"path of at most 95 bytes, e.g. 'ipc:///tmp/learner.sock'")
        return path, -1
    a = address[len("tcp://"):] if address.startswith("tcp://") else address
    if a.startswith("["):
        host, sep, rest = a[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = a.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"learner_address {address!r} is not of the form 'host:port' (IPv6: '[::1]:5555')")
    return host, int(port)


def _check_int(name: str, value: Any, minimum: int = 1, maximum: int = (1 << 62)) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, not {value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _check_seconds(name: str, value: Any, maximum: float = 86400.0 * 365) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 < value <= maximum:
        raise ValueError(f"{name} must be > 0 and <= {maximum:g} seconds, not {value!r}")
    return float(value)


AUTH_KEY_ENV = "RLINK_AUTH_KEY"
_MAX_EVENTS = 1024
# An actor's connection that lasted less than this counts as a failed
# attempt for the reconnection backoff (ActorNode._keep_connected).
_STABLE_S = 1.0
_EVENT_KINDS = {_core.EV_JOINED: "joined", _core.EV_LEFT: "left", _core.EV_REJECTED: "rejected"}


def _auth_key(value: Any) -> bytes:
    """auth_key= (str or bytes), else $RLINK_AUTH_KEY, else none (b"")."""
    if value is None:
        value = os.environ.get(AUTH_KEY_ENV, "")
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"auth_key must be str or bytes, not {type(value).__name__}")
    if value and len(value) < 16:
        log.warning("auth_key is only %d bytes: a captured handshake lets an attacker guess short "
                    "keys offline; use 32 random bytes, e.g. secrets.token_hex(32)", len(value))
    return bytes(value)


def _limits(max_arrays: Any, max_ndim: Any, max_depth: Any, max_items: Any,
            max_str_bytes: Any) -> dict:
    """What every received message is checked against (PROTOCOL.md 7)."""
    return {
        "max_arrays": _check_int("max_arrays", max_arrays, 0, (1 << 32) - 1),
        "max_ndim": _check_int("max_ndim", max_ndim, 0, _core.MAX_NDIM),
        "max_depth": _check_int("max_depth", max_depth, 1, _core.MAX_DEPTH),
        "max_items": _check_int("max_items", max_items, 1, (1 << 32) - 1),
        "max_str_bytes": _check_int("max_str_bytes", max_str_bytes, 0, (1 << 32) - 1),
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class _Node:
    """What learners and actors share: lifecycle, fork safety, event logging."""

    _core: Any = None
    # Set in a child process after fork() (see _after_fork_in_child): a flag
    # rather than comparing os.getpid() on every call, a system call per
    # message in the send and receive paths.
    _forked = False

    def _init_core(self, core: Any) -> None:
        self._core = core
        _live.add(self)

    def _core_or_raise(self) -> Any:
        core = self._core
        if core is None:
            raise _errors.ClosedError(f"{type(self).__name__} is closed; create a new one")
        if self._forked:
            raise _errors.ClosedError(
                f"{type(self).__name__} was created in another process and cannot be used after fork(); "
                f"create a new node in this process")
        return core

    _events: "collections.deque[Event] | None" = None
    _rates: "dict[int, tuple[float, tuple[int, int, int, int]]] | None" = None

    def _log_events(self, core: Any) -> None:
        for kind, peer, _code, reason in core.events():
            if kind == _core.EV_JOINED:
                log.info("%s: actor %#x joined", self, peer)
            elif kind == _core.EV_LEFT:
                log.info("%s: peer %#x left: %s", self, peer, reason)
            else:
                log.warning("%s: dropped a connection: %s", self, reason)
            if self._events is None:
                self._events = collections.deque(maxlen=_MAX_EVENTS)
            self._events.append(Event(_EVENT_KINDS[kind], peer, reason, time.time()))

    def _peer_stats(self, core: Any) -> dict:
        """Per-connection counters, with rates over the time since the
        previous call (since the connection opened, on the first)."""
        now = time.monotonic()
        peers = core.peer_stats()
        prev = self._rates or {}
        self._rates = {}
        for peer, st in peers.items():
            totals = (st["messages_in"], st["bytes_in"], st["messages_out"], st["bytes_out"])
            t0, before = prev.get(peer, (now - st["connected_s"], (0, 0, 0, 0)))
            dt = max(now - t0, 1e-3)
            for name, a, b in zip(("messages_in", "bytes_in", "messages_out", "bytes_out"), totals, before):
                st[name + "_per_s"] = (a - b) / dt
            self._rates[peer] = (now, totals)
        return peers

    def close(self, timeout: float = 1.0) -> None:
        """Close the node: flush queued messages for up to ``timeout`` seconds,
        close every connection and join the I/O thread. Calls blocked in other
        threads raise :class:`rlink.ClosedError`. Idempotent."""
        core = self._core
        if core is None:
            return
        if self._forked:
            self._core = None
            return
        core.close(float(timeout))
        self._log_events(core)
        self._core = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        self._forked = True
        core = self._core
        if core is not None:
            core.abandon()


@atexit.register
def _close_all_at_exit() -> None:
    for node in list(_live):
        try:
            node.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass


def _after_fork_in_child() -> None:
    for node in list(_live):
        node._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class LearnerNode(_Node):
    """The learner end: receives trajectories and requests from any number of
    actors, publishes parameters to all of them, and can push to one.

    ``host`` defaults to ``"127.0.0.1"``, reachable only from this machine;
    pass ``host="0.0.0.0"`` (or ``"::"``) to accept actors on other machines,
    and then give it and every actor the same ``auth_key`` (a shared secret;
    default ``$RLINK_AUTH_KEY``): actors that cannot prove they hold it are
    refused before they can send or receive anything.
    ``port=0`` picks a free port: read it back from :attr:`port`.

    Hostile-input limits, checked on every frame before anything is
    allocated for it (a peer that exceeds one is disconnected and logged):
    ``max_message_bytes``, ``max_arrays``, ``max_ndim``, ``max_depth``
    (container nesting), ``max_items`` (values of all kinds in one message),
    ``max_str_bytes`` (one str, bytes or dict key); ``max_connections``
    (open plus handshaking; more are closed at once) and
    ``handshake_timeout``. Thread-safe.

    Parameters whose arrays total ``shm_min_bytes`` (default 64 KiB) or more
    reach the actors on this machine through one shared-memory region: copied
    into it once, whatever the number of actors, each actor's arrays a
    private copy-on-write view. The region holds at least three versions
    (``shm_bytes``, default 64 MiB, or three times the parameters if more;
    memory used as it is filled); ``shm_bytes=0`` sends them over the socket.

    ``wait_spin_us``: a :meth:`receive_request` that finds no request spins
    this many microseconds for one before it sleeps (a sleeping thread can
    take tens of microseconds to wake, longer than a round trip on one
    host); 0 never spins and saves that CPU time.
    """

    def __init__(self, port: int = 5555, host: str = "127.0.0.1", *, reliable: bool = False,
                 retry_attempts: int = 3, max_queue_messages: int = 1024,
                 max_queue_bytes: int = 256 << 20, send_queue_bytes: int = 64 << 20,
                 max_message_bytes: int = 1 << 30, handshake_timeout: float = 5.0,
                 heartbeat_interval: float = 1.0, peer_timeout: float = 5.0,
                 max_connections: int = 1024, auth_key: str | bytes | None = None,
                 max_arrays: int = 65536, max_ndim: int = 32, max_depth: int = 64,
                 max_items: int = 1 << 20, max_str_bytes: int = 64 << 20,
                 local: bool = True, ipc_path: str | None = None, shm_bytes: int = 64 << 20,
                 shm_min_bytes: int = 64 << 10, wait_spin_us: int = 50):
        _check_int("port", port, 0, 65535)
        if not isinstance(host, str):
            raise TypeError(f"host must be a str such as '127.0.0.1' or '0.0.0.0', not {host!r}")
        if not isinstance(reliable, bool):
            raise TypeError(f"reliable must be True or False, not {reliable!r}")
        _check_int("retry_attempts", retry_attempts, 0, 1_000_000)
        key = _auth_key(auth_key)
        limits = _limits(max_arrays, max_ndim, max_depth, max_items, max_str_bytes)
        core = _core._Node(
            _core.ROLE_LEARNER, reliable, retry_attempts,
            _check_int("max_queue_messages", max_queue_messages),
            _check_int("max_queue_bytes", max_queue_bytes),
            _check_int("send_queue_bytes", send_queue_bytes),
            _check_int("max_message_bytes", max_message_bytes, 4096),
            max(1, int(_check_seconds("handshake_timeout", handshake_timeout, 3600.0) * 1000)),
            max(1, int(_check_seconds("heartbeat_interval", heartbeat_interval, 3600.0) * 1000)),
            max(1, int(_check_seconds("peer_timeout", peer_timeout, 86400.0) * 1000)),
            max_connections=_check_int("max_connections", max_connections, 1, 1 << 20),
            auth_key=key, limits=limits, local=_check_bool("local", local),
            shm_bytes=_check_int("shm_bytes", shm_bytes, 0),
            shm_min_bytes=_check_int("shm_min_bytes", shm_min_bytes, 1),
            wait_spin_us=_check_int("wait_spin_us", wait_spin_us, 0, 1_000_000))
        self.host = host
        self.reliable = reliable
        self.retry_attempts = retry_attempts
        self.port: int = core.listen(host, port)
        self.ipc_path = ipc_path
        if ipc_path is not None:
            if not isinstance(ipc_path, str) or not ipc_path:
                core.close(0)
                raise TypeError(f"ipc_path must be a socket file path (str), not {ipc_path!r}")
            try:
                core.listen_ipc(ipc_path)
            except BaseException:
                core.close(0)
                raise
        core.start()
        self._init_core(core)
        self._version = 0
        self._publish_lock = threading.Lock()   # versions are assigned and sent in order
        log.info("%s: listening%s", self, " (authenticating actors)" if key else "")
        if not key and not _is_loopback(host):
            log.warning("%s: listening on %r without auth_key: anyone who can reach this port can "
                        "send trajectories and read parameters; set auth_key= (or %s) on the "
                        "learner and every actor", self, host, AUTH_KEY_ENV)

    @property
    def address(self) -> str:
        """An address actors can pass as ``learner_address``."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"LearnerNode({self.address})"

    def stats(self) -> dict:
        """Counters: sent, received, dropped, redelivered, duplicates,
        rejected, peers, params_version (newest published), and ``actors``:
        per connected actor, messages and bytes in/out with rates, send queue
        bytes, the parameter version last sent to it, seconds since it was
        last heard from, and the kernel's RTT estimate (see the README).
        Cheap enough to call every training step."""
        core = self._core_or_raise()
        st = core.stats()
        st["actors"] = self._peer_stats(core)
        return st

    def events(self) -> list[Event]:
        """Joins, departures and rejected connections since the last call
        (the newest 1024 are kept). Each is also logged on the ``rlink``
        logger."""
        core = self._core_or_raise()
        self._log_events(core)
        out, self._events = list(self._events or ()), None
        return out

    @property
    def actors(self) -> list[int]:
        """Ids of the actors connected now."""
        return self._core_or_raise().peers()

    def receive(self, timeout: float | None = None) -> dict:
        """The next trajectory from any actor (per-actor order is kept).
        Blocks up to ``timeout`` seconds (None: forever), then raises
        :class:`rlink.TimeoutError`."""
        return self.receive_message(timeout).data

    def receive_message(self, timeout: float | None = None) -> Message:
        """Like :meth:`receive`, with the sending actor's id."""
        return self.receive_many(1, timeout)[0]

    def receive_many(self, max_count: int, timeout: float | None = None) -> list[Message]:
        """Up to ``max_count`` trajectories: waits up to ``timeout`` for the
        first, then takes whatever else is already queued."""
        core = self._core
        if core is None or self._forked:   # _core_or_raise, without a call per batch
            core = self._core_or_raise()
        try:
            return core.recv(_core.Q_TRAJ, max_count, timeout, Message)
        finally:
            self._log_events(core)

    def receive_request(self, timeout: float | None = None) -> Request:
        """The next request from any actor; answer with ``request.reply(dict)``."""
        return self.receive_requests(1, timeout)[0]

    def receive_requests(self, max_count: int, timeout: float | None = None) -> list[Request]:
        """Up to ``max_count`` requests: waits up to ``timeout`` for the
        first, then takes whatever else is already queued (for batched
        inference)."""
        core = self._core_or_raise()
        try:
            got = core.recv(_core.Q_REQUEST, max_count, timeout)
        finally:
            self._log_events(core)
        return [Request(self, peer, ref, value) for peer, ref, _flags, value in got]

    def publish_parameters(self, params: dict, version: int | None = None) -> int:
        """Send ``params`` to every connected actor and to actors that join
        later. The message is encoded once; an actor that is slow to read gets
        the newest version, never a backlog. Returns the version number
        (by default one more than the previous)."""
        core = self._core_or_raise()
        with self._publish_lock:
            if version is None:
                version = self._version + 1
            elif isinstance(version, bool) or not isinstance(version, int) or \
                    not self._version < version < (1 << 63):
                raise ValueError(f"version must be an int greater than the last published "
                                 f"({self._version}), not {version!r}")
            core.publish(version, params)
            self._version = version
        return version

    def send(self, actor_id: int, data: dict, timeout: float | None = None) -> None:
        """Push ``data`` to one actor (it reads it with ``ActorNode.receive``).
        Raises :class:`rlink.ConnectionLostError` if that actor is gone."""
        _check_int("actor_id", actor_id, 0, (1 << 64) - 1)
        self._core_or_raise().send(actor_id, _core.KIND_PUSH, 0, data, timeout)


class ActorNode(_Node):
    """The actor end: sends trajectories and requests to one learner and
    receives parameters and pushed messages from it. Thread-safe.

    Connecting retries (with backoff) until ``connect_timeout`` seconds have
    passed, so actors may start before the learner.

    Reliable mode (``LearnerNode(reliable=True)``, or ``reliable=True`` here)
    retains every trajectory until the learner's application has taken it
    and reconnects by itself after a fault: up to ``retry_attempts`` tries
    (default: what the learner announces); the first at once, then waiting
    ``retry_backoff`` seconds and doubling (with jitter) up to
    ``retry_backoff_max``; a connection lost within a second of being made
    counts as a failed attempt for that wait.
    Sends keep succeeding while disconnected until ``retain_bytes`` of
    un-acknowledged messages are held, then block. When the tries run out,
    calls raise :class:`rlink.ConnectionLostError`; :meth:`reconnect` resumes.

    On the learner's machine the actor connects over a Unix socket
    (``local=False``: always TCP), and hands trajectories whose arrays
    total ``shm_min_bytes`` (default 64 KiB) or more to the learner through
    a shared-memory region of ``shm_bytes`` (default 64 MiB, memory used as
    it is filled; 0: never): one copy, no socket transfer.
    When the region is full (the learner holds on to earlier ones), messages
    go over the socket.

    ``wait_spin_us``: :meth:`request` spins this many microseconds for the
    reply before it sleeps (see ``LearnerNode``); 0 never spins.
    """

    def __init__(self, learner_address: str = "localhost:5555", *, connect_timeout: float = 10.0,
                 reliable: bool | None = None, retry_attempts: int | None = None,
                 retry_backoff: float = 0.25, retry_backoff_max: float = 5.0,
                 retain_bytes: int = 256 << 20, heartbeat_interval: float = 1.0,
                 peer_timeout: float = 5.0, max_queue_messages: int = 1024,
                 max_queue_bytes: int = 256 << 20, send_queue_bytes: int = 64 << 20,
                 max_message_bytes: int = 1 << 30, auth_key: str | bytes | None = None,
                 max_arrays: int = 65536, max_ndim: int = 32, max_depth: int = 64,
                 max_items: int = 1 << 20, max_str_bytes: int = 64 << 20,
                 local: bool = True, shm_bytes: int = 64 << 20, shm_min_bytes: int = 64 << 10,
                 wait_spin_us: int = 50):
        self._host, self._port = _parse_address(learner_address)
        if reliable is not None and not isinstance(reliable, bool):
            raise TypeError(f"reliable must be None, True or False, not {reliable!r}")
        if retry_attempts is not None:
            _check_int("retry_attempts", retry_attempts, 0, 1_000_000)
        self._connect_timeout = _check_seconds("connect_timeout", connect_timeout)
        self._backoff = _check_seconds("retry_backoff", retry_backoff)
        self._backoff_max = _check_seconds("retry_backoff_max", retry_backoff_max)
        heartbeat_ms = int(_check_seconds("heartbeat_interval", heartbeat_interval, 3600.0) * 1000)
        peer_timeout_ms = int(_check_seconds("peer_timeout", peer_timeout, 86400.0) * 1000)
        core = _core._Node(
            _core.ROLE_ACTOR, bool(reliable), 0,
            _check_int("max_queue_messages", max_queue_messages),
            _check_int("max_queue_bytes", max_queue_bytes),
            _check_int("send_queue_bytes", send_queue_bytes),
            _check_int("max_message_bytes", max_message_bytes, 4096),
            5000, max(1, heartbeat_ms), max(1, peer_timeout_ms),
            _check_int("retain_bytes", retain_bytes, 4096),
            auth_key=_auth_key(auth_key),
            limits=_limits(max_arrays, max_ndim, max_depth, max_items, max_str_bytes),
            local=_check_bool("local", local), shm_bytes=_check_int("shm_bytes", shm_bytes, 0),
            shm_min_bytes=_check_int("shm_min_bytes", shm_min_bytes, 1),
            wait_spin_us=_check_int("wait_spin_us", wait_spin_us, 0, 1_000_000))
        self.learner_address = learner_address
        try:
            result = self._connect_until(core, time.monotonic() + self._connect_timeout, None)
        except BaseException:
            core.close(0)
            raise
        if result is None:
            core.close(0)
            raise _errors.ConnectError(
                f"could not connect to a learner at {learner_address} within {connect_timeout} s; "
                f"is the LearnerNode running and reachable?")
        self.learner_id, self.reliable, announced = result
        self.retry_attempts = announced if retry_attempts is None else retry_attempts
        core.start()
        self._init_core(core)
        self._request_ids = itertools.count(1)
        self._latest: Parameters | None = None
        self._returned = 0
        self._params_from = self.learner_id
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        if self.reliable:
            self._start_keeper(core)

    # ---- connection policy (reliable mode) --------------------------------
    def _connect_until(self, core: Any, deadline: float, attempts: int | None):
        """Try to connect until deadline (or `attempts` tries) with backoff.
        Returns the handshake result or None. Raises on errors retrying
        cannot fix (unresolvable host, not an rlink learner)."""
        delay = min(0.02, self._backoff) if attempts is None else self._backoff
        tries = 0
        while True:
            left = deadline - time.monotonic()
            attempt = max(min(left, self._connect_timeout), 0.001)
            result = (core.connect_ipc(self._host, attempt) if self._port < 0
                      else core.connect(self._host, self._port, attempt))
            if isinstance(result, tuple):
                return result
            if result == _core.E_INVAL:
                raise _errors.ConnectError(f"cannot resolve the learner host {self._host!r}")
            tries += 1
            if left <= 0 or (attempts is not None and tries >= attempts):
                return None
            wait = min(delay * (0.5 + random.random()), max(deadline - time.monotonic(), 0))
            if self._stop_requested(wait):
                return None
            delay = min(delay * 2, self._backoff_max if attempts is not None else 0.5)

    def _stop_requested(self, seconds: float) -> bool:
        stop = getattr(self, "_stop", None)
        if stop is None:
            time.sleep(seconds)    # still in __init__: nothing can ask us to stop
            return False
        return stop.wait(seconds)

    def _start_keeper(self, core: Any) -> None:
        self._keeper = threading.Thread(target=self._keep_connected, args=(core,),
                                        name=f"rlink-reconnect-{core.node_id:x}", daemon=True)
        self._keeper.start()

    def _keep_connected(self, core: Any) -> None:
        """Background policy: reconnect after every loss, give up after
        retry_attempts consecutive failures. A connection lost within
        _STABLE_S of being made (a learner that drops us right after the
        handshake, a link that keeps resetting) counts as a failure for the
        backoff, so the pair does not reconnect in a hot loop; it does not
        count towards giving up."""
        connected_at = time.monotonic()
        delay = 0.0
        while not self._stop.is_set():
            try:
                if not core.wait_lost(0.5):
                    continue
            except _errors.ClosedError:
                return
            lasted = time.monotonic() - connected_at
            if lasted < _STABLE_S:
                delay = min(max(delay * 2, self._backoff), self._backoff_max)
                wait = delay * (0.5 + random.random())
                log.warning("%s: connection lost (%s) %.3f s after it was made; reconnecting in "
                            "%.3f s (backoff %.3f s)", self, core.lost_reason(), lasted, wait, delay)
                if self._stop_requested(wait):
                    return
            else:
                delay = 0.0
                log.warning("%s: connection lost (%s); reconnecting", self, core.lost_reason())
            attempts = max(1, self.retry_attempts)
            try:
                result = self._connect_until(core, float("inf"), attempts)
            except _errors.RLinkError as e:
                result, reason = None, str(e)
            else:
                reason = f"gave up after {attempts} reconnection attempts"
            if self._stop.is_set():
                return
            if result is None:
                retained = core.stats()["retained"]
                core.fail(reason)
                log.error("%s: %s; %d messages retained, call reconnect() to resume", self, reason, retained)
                return
            connected_at = time.monotonic()
            log.info("%s: reconnected to learner %#x", self, result[0])

    def reconnect(self, timeout: float | None = None) -> None:
        """Connect again after the automatic attempts gave up (reliable
        mode): retained messages are then delivered. Retries until
        ``timeout`` (default ``connect_timeout``); raises
        :class:`rlink.ConnectError` if the learner is still unreachable."""
        core = self._core_or_raise()
        if self._keeper is not None and self._keeper.is_alive():
            return   # the background policy is still trying (or connected)
        if core.stats()["peers"]:
            return
        limit = self._connect_timeout if timeout is None else _check_seconds("timeout", timeout)
        result = self._connect_until(core, time.monotonic() + limit, None)
        if result is None:
            raise _errors.ConnectError(f"could not reconnect to {self.learner_address} within {limit} s")
        if self.reliable:
            self._start_keeper(core)

    def close(self, timeout: float = 1.0) -> None:
        """Close the actor. In reliable mode, first wait up to ``timeout``
        seconds for the learner to acknowledge every retained message; what
        is still un-acknowledged then is discarded and logged."""
        core = self._core
        if core is not None and not self._forked and getattr(self, "reliable", False):
            try:
                acked = core.wait_acked(float(timeout))
            except _errors.RLinkError:   # gave up reconnecting, or closed meanwhile
                acked = False
            if not acked:
                log.warning("%s: closing with %d un-acknowledged messages discarded",
                            self, core.stats()["retained"])
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        super().close(timeout)
        keeper = getattr(self, "_keeper", None)
        if keeper is not None and keeper is not threading.current_thread():
            keeper.join()

    # ---- the API ------------------------------------------------------------
    @property
    def actor_id(self) -> int:
        """The id the learner sees in ``Message.actor_id`` and ``Request.actor_id``."""
        return self._core_or_raise().node_id

    def __repr__(self) -> str:
        return f"ActorNode({self.learner_address})"

    def stats(self) -> dict:
        """Counters: sent, received, dropped, retained, retained_bytes, acked,
        reconnects, peers, reliable; ``params_version`` (held by the
        application) and ``params_newest`` (received); and, while connected,
        the connection's messages and bytes in/out with rates, send queue
        bytes, seconds since the learner was last heard from and the RTT
        estimate (see the README)."""
        core = self._core_or_raise()
        st = core.stats()
        st["params_newest"] = st["params_version"]
        st["params_version"] = self._returned
        for conn in self._peer_stats(core).values():
            del conn["params_sent"]
            st.update(conn)
        return st

    def send_trajectory(self, data: dict, timeout: float | None = None, *,
                        params_version: int | None = None, copy: bool = True) -> Tracker | None:
        """Send one trajectory (a dict) to the learner.

        Returns once the message is written to the socket or copied into the
        send queue (reliable mode: into the retained window): the caller may
        then reuse its arrays. A large message is written straight from the
        arrays; what the socket has not taken after about 100 ms is copied
        into the send queue. Blocks while the queue is full, up to
        ``timeout`` seconds, then raises :class:`rlink.TimeoutError` with
        nothing sent. The learner sees ``params_version`` as
        ``Message.params_version``: by default the version last returned by
        :meth:`latest_parameters` / :meth:`wait_parameters`; pass the version
        the data was actually generated with if the policy changed mid-way.

        ``copy=False`` (reliable mode over TCP, trajectories with 64 KiB of
        array data or more): the retained window keeps references to the
        arrays instead of a copy of them, saving one pass over the data. The
        arrays must then not be written until the learner has acknowledged
        the trajectory: the :class:`Tracker` returned says when
        (``tracker.done``, ``tracker.wait()``; :meth:`wait_acked` waits for
        every one). A resend after a reconnect reads them again. Elsewhere
        the tracker is done at once: an unreliable actor keeps no copy of
        what the socket took, and over shared memory the data is copied
        into the shared region anyway."""
        version = self._returned if params_version is None else \
            _check_int("params_version", params_version, 0, (1 << 63) - 1)
        core = self._core
        if core is None or self._forked:   # _core_or_raise, without a call per message
            core = self._core_or_raise()
        if copy:
            core.send(0, _core.KIND_TRAJ, version, data, timeout)
            return None
        seq = core.send(0, _core.KIND_TRAJ, version, data, timeout, False)
        return Tracker(core, seq) if seq else _DONE

    def wait_acked(self, timeout: float | None = None) -> None:
        """Block until the learner has acknowledged every trajectory sent so
        far (reliable mode; without it nothing is retained and this returns
        at once). Then arrays sent with ``copy=False`` may be written again.
        Raises :class:`rlink.TimeoutError` after ``timeout`` seconds,
        :class:`rlink.ConnectionLostError` once reconnecting was given up (the
        trajectories stay retained; :meth:`reconnect` resumes)."""
        core = self._core_or_raise()
        if not core.wait_acked(timeout):
            raise _errors.TimeoutError(
                f"{core.stats()['retained']} trajectories still un-acknowledged after {timeout} s "
                f"(is the learner's application calling receive()?)")

    def request(self, data: dict, timeout: float | None = None) -> dict:
        """Send a request and wait for the learner's reply to it. A request in
        flight when the connection breaks raises
        :class:`rlink.ConnectionLostError` (it is never answered twice; it may
        or may not have reached the learner)."""
        core = self._core_or_raise()
        request_id = next(self._request_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        gen = core.conn_gen()
        core.send(0, _core.KIND_REQUEST, request_id, data, timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return core.wait_reply(request_id, gen, left)

    def receive(self, timeout: float | None = None) -> dict:
        """The next message the learner pushed to this actor with ``LearnerNode.send``."""
        (_peer, _ref, _flags, value), = self._core_or_raise().recv(_core.Q_PUSH, 1, timeout)
        return value

    def _follow_learner(self, core: Any) -> None:
        """A restarted learner numbers parameter versions afresh."""
        learner = core.learner_id()
        if learner != self._params_from:
            self._params_from = learner
            self._latest = None
            self._returned = 0

    def latest_parameters(self) -> Parameters | None:
        """The newest parameters received so far, without blocking (None before the first)."""
        core = self._core_or_raise()
        self._follow_learner(core)
        held = self._latest.version if self._latest else 0
        try:
            self._latest = Parameters(*core.take_params(held, 0))
        except _errors.TimeoutError:
            pass
        if self._latest is not None:
            self._returned = self._latest.version
        return self._latest

    def wait_parameters(self, newer_than: int | None = None, timeout: float | None = None) -> Parameters:
        """Block until parameters newer than ``newer_than`` are held (default:
        newer than the version this actor last returned) and return the newest."""
        core = self._core_or_raise()
        self._follow_learner(core)
        floor = self._returned if newer_than is None else newer_than
        held = self._latest.version if self._latest else 0
        try:
            self._latest = Parameters(*core.take_params(held, 0))
        except _errors.TimeoutError:
            pass
        if self._latest is None or self._latest.version <= floor:
            self._latest = Parameters(*core.take_params(max(floor, held), timeout))
        self._returned = self._latest.version
        return self._latest
