"""LearnerNode and ActorNode: the public API over the compiled core.

Threads: every method of both nodes may be called from several threads at
once (for example one thread sending while another receives, or several
threads sending on one actor). Blocking calls release the GIL.
"""
from __future__ import annotations

import atexit
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
    """A message received by a learner, with the id of the actor that sent it."""
    actor_id: int
    data: dict
    redelivered: bool = False


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


def _parse_address(address: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'tcp://host:port' -> (host, port)."""
    if not isinstance(address, str):
        raise TypeError(f"learner_address must be a str like 'localhost:5555', not {type(address).__name__}")
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


def _check_seconds(name: str, value: Any, maximum: float = 86400.0 * 365) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not 0 < value <= maximum:
        raise ValueError(f"{name} must be > 0 and <= {maximum:g} seconds, not {value!r}")
    return float(value)


class _Node:
    """What learners and actors share: lifecycle, fork safety, event logging."""

    _core: Any = None

    def _init_core(self, core: Any) -> None:
        self._core = core
        self._pid = os.getpid()
        _live.add(self)

    def _core_or_raise(self) -> Any:
        core = self._core
        if core is None:
            raise _errors.ClosedError(f"{type(self).__name__} is closed; create a new one")
        if self._pid != os.getpid():
            raise _errors.ClosedError(
                f"{type(self).__name__} was created in another process and cannot be used after fork(); "
                f"create a new node in this process")
        return core

    def _log_events(self, core: Any) -> None:
        for kind, peer, _code, reason in core.events():
            if kind == _core.EV_JOINED:
                log.info("%s: actor %#x joined", self, peer)
            elif kind == _core.EV_LEFT:
                log.info("%s: peer %#x left: %s", self, peer, reason)
            else:
                log.warning("%s: dropped a connection: %s", self, reason)

    def close(self, timeout: float = 1.0) -> None:
        """Close the node: flush queued messages for up to ``timeout`` seconds,
        close every connection and join the I/O thread. Calls blocked in other
        threads raise :class:`rlink.ClosedError`. Idempotent."""
        core = self._core
        if core is None:
            return
        if self._pid != os.getpid():
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
    pass ``host="0.0.0.0"`` (or ``"::"``) to accept actors on other machines.
    ``port=0`` picks a free port: read it back from :attr:`port`.
    Thread-safe.
    """

    def __init__(self, port: int = 5555, host: str = "127.0.0.1", *, reliable: bool = False,
                 retry_attempts: int = 3, max_queue_messages: int = 1024,
                 max_queue_bytes: int = 256 << 20, send_queue_bytes: int = 64 << 20,
                 max_message_bytes: int = 1 << 30, handshake_timeout: float = 5.0):
        _check_int("port", port, 0, 65535)
        if not isinstance(host, str):
            raise TypeError(f"host must be a str such as '127.0.0.1' or '0.0.0.0', not {host!r}")
        if not isinstance(reliable, bool):
            raise TypeError(f"reliable must be True or False, not {reliable!r}")
        _check_int("retry_attempts", retry_attempts, 0, 1_000_000)
        core = _core._Node(
            _core.ROLE_LEARNER, reliable, retry_attempts,
            _check_int("max_queue_messages", max_queue_messages),
            _check_int("max_queue_bytes", max_queue_bytes),
            _check_int("send_queue_bytes", send_queue_bytes),
            _check_int("max_message_bytes", max_message_bytes, 4096),
            max(1, int(_check_seconds("handshake_timeout", handshake_timeout, 3600.0) * 1000)))
        self.host = host
        self.reliable = reliable
        self.retry_attempts = retry_attempts
        self.port: int = core.listen(host, port)
        core.start()
        self._init_core(core)
        self._version = 0
        self._publish_lock = threading.Lock()   # versions are assigned and sent in order
        log.info("%s: listening", self)

    @property
    def address(self) -> str:
        """An address actors can pass as ``learner_address``."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def __repr__(self) -> str:
        return f"LearnerNode({self.address})"

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
        core = self._core_or_raise()
        try:
            got = core.recv(_core.Q_TRAJ, max_count, timeout)
        finally:
            self._log_events(core)
        return [Message(peer, value, bool(flags & _core.FLAG_REDELIVERED))
                for peer, _ref, flags, value in got]

    def receive_request(self, timeout: float | None = None) -> Request:
        """The next request from any actor; answer with ``request.reply(dict)``."""
        core = self._core_or_raise()
        try:
            (peer, ref, _flags, value), = core.recv(_core.Q_REQUEST, 1, timeout)
        finally:
            self._log_events(core)
        return Request(self, peer, ref, value)

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
    """

    def __init__(self, learner_address: str = "localhost:5555", *, connect_timeout: float = 10.0,
                 reliable: bool = False, max_queue_messages: int = 1024,
                 max_queue_bytes: int = 256 << 20, send_queue_bytes: int = 64 << 20,
                 max_message_bytes: int = 1 << 30):
        host, port = _parse_address(learner_address)
        if not isinstance(reliable, bool):
            raise TypeError(f"reliable must be True or False, not {reliable!r}")
        connect_timeout = _check_seconds("connect_timeout", connect_timeout)
        core = _core._Node(
            _core.ROLE_ACTOR, reliable, 0,
            _check_int("max_queue_messages", max_queue_messages),
            _check_int("max_queue_bytes", max_queue_bytes),
            _check_int("send_queue_bytes", send_queue_bytes),
            _check_int("max_message_bytes", max_message_bytes, 4096))
        self.learner_address = learner_address
        deadline = time.monotonic() + connect_timeout
        delay = 0.02
        while True:
            left = deadline - time.monotonic()
            result = core.connect(host, port, max(left, 0.001))
            if isinstance(result, tuple):
                break
            if result == _core.E_INVAL:
                core.close(0)
                raise _errors.ConnectError(f"cannot resolve the learner host {host!r}")
            if left <= 0:
                core.close(0)
                raise _errors.ConnectError(
                    f"could not connect to a learner at {learner_address} within {connect_timeout} s "
                    f"(last error: {'refused' if result == _core.E_CONNREFUSED else 'timed out'}); "
                    f"is the LearnerNode running and reachable?")
            time.sleep(min(delay * (0.5 + random.random()), max(left, 0)))
            delay = min(delay * 2, 0.5)
        self.learner_id, self.reliable = result
        core.start()
        self._init_core(core)
        self._request_ids = itertools.count(1)
        self._latest: Parameters | None = None
        self._returned = 0

    @property
    def actor_id(self) -> int:
        """The id the learner sees in ``Message.actor_id`` and ``Request.actor_id``."""
        return self._core_or_raise().node_id

    def __repr__(self) -> str:
        return f"ActorNode({self.learner_address})"

    def send_trajectory(self, data: dict, timeout: float | None = None) -> None:
        """Send one trajectory (a dict) to the learner.

        Returns once the message is written to the socket or copied into the
        send queue: the caller may then reuse its arrays. Blocks while the
        send queue is full, up to ``timeout`` seconds, then raises
        :class:`rlink.TimeoutError` with nothing sent."""
        self._core_or_raise().send(0, _core.KIND_TRAJ, 0, data, timeout)

    def request(self, data: dict, timeout: float | None = None) -> dict:
        """Send a request and wait for the learner's reply to it."""
        core = self._core_or_raise()
        request_id = next(self._request_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        core.send(0, _core.KIND_REQUEST, request_id, data, timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return core.wait_reply(request_id, left)

    def receive(self, timeout: float | None = None) -> dict:
        """The next message the learner pushed to this actor with ``LearnerNode.send``."""
        (_peer, _ref, _flags, value), = self._core_or_raise().recv(_core.Q_PUSH, 1, timeout)
        return value

    def latest_parameters(self) -> Parameters | None:
        """The newest parameters received so far, without blocking (None before the first)."""
        core = self._core_or_raise()
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
