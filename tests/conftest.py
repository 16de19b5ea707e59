"""Shared fixtures for the rlink test suite.

pytest runs in importlib mode (see pyproject.toml), so test modules cannot
import a helpers module from this directory (nor this file); shared pieces
live here as fixtures, and a shared helper function is a fixture that
returns the function: a test asks for ``wait_until``, ``peer_closed`` or
``free_port`` by name and calls what it gets. A module that needs different
defaults overrides the fixture, taking this one as its argument (see
test_hostile.py). Every node is created with ``port=0`` and closed on
teardown.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

import rlink

_REPO = Path(__file__).resolve().parents[1]
_WHERE = Path(rlink.__file__).resolve()
if os.environ.get("CI") and _REPO in _WHERE.parents:
    raise RuntimeError(
        f"rlink was imported from the source tree ({_WHERE}), not the installed package; "
        f"run pytest in importlib mode (see pyproject.toml) after `pip install .`")


def pytest_report_header(config):
    return f"rlink {rlink.__version__} from {_WHERE.parent}"

# Upper bound for every blocking call in the suite: a bug fails, never hangs.
T = 10.0


@pytest.fixture
def learner():
    with rlink.LearnerNode(port=0) as node:
        yield node


# Tests that take an actor from these fixtures run once per transport, as
# uvloop runs its suite against two loops: "tcp" (the same-host fast path
# turned off), "unix" (an actor on the learner's host, which moves to
# AF_UNIX by itself) and "shm" (AF_UNIX with the shared-memory threshold at
# one byte: every trajectory with any array data goes through the actor's
# region, PROTOCOL.md 2.2, not only those of 64 KiB and more).
TRANSPORTS = ["tcp", "unix", "shm"] if sys.platform.startswith("linux") else ["tcp"]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


def _actor_kwargs(transport):
    """The ActorNode keyword arguments that select ``transport``."""
    kwargs = {"local": transport != "tcp"}
    if transport == "shm":
        kwargs["shm_min_bytes"] = 1
    return kwargs


def _check_transport(node, transport):
    st = node.stats()
    want = "tcp" if transport == "tcp" else "unix"
    assert st["transport"] == want, f"the actor connected over {st['transport']}, not {want}"
    if transport == "shm":
        # reliable or not, the actor holds the region every trajectory will use
        assert st["shared_memory"], "the actor has no shared-memory region"


@pytest.fixture
def actor(learner, transport):
    with rlink.ActorNode(learner.address, connect_timeout=T, **_actor_kwargs(transport)) as node:
        _check_transport(node, transport)
        yield node


@pytest.fixture
def make_actor(learner, transport):
    """Factory for extra actors connected to ``learner``; all closed on
    teardown. The transport is checked unless the caller chose another
    ``local`` or ``shm_min_bytes`` than the fixture's, or a ``shm_bytes``."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("connect_timeout", T)
        defaults = _actor_kwargs(transport)
        own = "shm_bytes" in kwargs or any(kwargs.get(k, v) != v for k, v in defaults.items())
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        node = rlink.ActorNode(learner.address, **kwargs)
        made.append(node)
        if not own:
            _check_transport(node, transport)
        return node

    yield make
    for node in reversed(made):
        node.close()


# ---- helper functions, as fixtures -------------------------------------------
def _wait_until(cond, timeout=T, interval=0.005):
    """Poll ``cond`` until true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


@pytest.fixture
def wait_until():
    """``wait_until(cond, timeout=T, interval=0.005)``: poll ``cond`` until it
    is true or ``timeout`` passes; returns its last value."""
    return _wait_until


def _crc32c(data: bytes) -> int:
    """CRC32C as PROTOCOL.md 4.4 defines it, bit by bit (slow: small frames)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _seal(frame: bytes) -> bytes:
    b = bytearray(frame)
    b[1] |= 0x02                                                # CHECKSUM
    b[40:44] = _crc32c(bytes(b[48:])).to_bytes(4, "little")     # body
    b[44:48] = _crc32c(bytes(b[:44])).to_bytes(4, "little")     # header
    return bytes(b)


@pytest.fixture
def seal():
    """``seal(frame)``: the frame with flag CHECKSUM set and its body and
    header checksums filled in (PROTOCOL.md 4.4), as a reliable connection
    requires of every frame; for raw peers' small frames."""
    return _seal


class Closed(NamedTuple):
    """What ``peer_closed`` saw; true if and only if the peer closed."""
    closed: bool    # EOF or reset within the timeout
    head: bytes     # the first 4 KiB the peer sent before that
    total: int      # how many bytes it sent in all

    def __bool__(self) -> bool:
        return self.closed


def _peer_closed(sock, timeout=T) -> Closed:
    """Read (and discard) until the peer closes the socket (EOF or reset) or
    ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    head, total = bytearray(), 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Closed(False, bytes(head), total)
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionError:
            return Closed(True, bytes(head), total)
        except socket.timeout:
            return Closed(False, bytes(head), total)
        if not chunk:
            return Closed(True, bytes(head), total)
        total += len(chunk)
        if len(head) < 4096:
            head += chunk[:4096 - len(head)]


@pytest.fixture
def peer_closed():
    """``peer_closed(sock, timeout=T)``: read until the peer closes ``sock``
    (EOF or reset); returns a ``Closed(closed, head, total)``, true if it
    closed within ``timeout``."""
    return _peer_closed


def _free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port nothing listens on (bound, then released)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """``free_port(family=AF_INET, host="127.0.0.1")``: a port nothing listens
    on (bound, then released)."""
    return _free_port
