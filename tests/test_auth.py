"""Shared-key authentication (PROTOCOL.md 3.5), connection and message limits.

The handshake is also driven here by a hand-written client that follows
PROTOCOL.md with Python's own ``hmac`` module, so the C implementation is
checked against the document and against a vetted HMAC-SHA256.
"""
from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import os
import random
import socket
import struct
import sys
import time

import numpy as np
import pytest

import rlink
from rlink import _core
from rlink.testing import FaultProxy

T = 10.0
KEY = b"0123456789abcdef0123456789abcdef"
AUTH = 2          # hello flag bit 1
LEARNER_LABEL = b"rlink-auth-v1 learner\x00"
ACTOR_LABEL = b"rlink-auth-v1 actor\x00"

little_endian_only = pytest.mark.skipif(sys.byteorder != "little",
                                        reason="hand-built handshakes assume a little-endian host")


def _hello(flags: int, node_id: int, role: int = 1) -> bytes:
    return struct.pack("<4sHBBQQII", b"RLNK", _core.PROTOCOL_VERSION, role, flags, node_id, 0, 1024, 3)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def _reasons(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "dropped a connection" in r.getMessage()]


def _drain_events(learner: rlink.LearnerNode) -> None:
    """Rejections are logged when the application next calls receive*."""
    with pytest.raises(rlink.TimeoutError):
        learner.receive(timeout=0.05)


def _wait_for_reason(learner, caplog, text: str, timeout: float = T) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _drain_events(learner)
        if any(text in r for r in _reasons(caplog)):
            return True
    return False


# ---- the primitive ----------------------------------------------------------
def test_hmac_matches_python_hmac():
    rng = random.Random(1)
    lengths = [0, 1, 31, 32, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000]
    for key_len in [0, 1, 16, 32, 63, 64, 65, 131, 200]:
        for msg_len in lengths:
            key = rng.randbytes(key_len)
            msg = rng.randbytes(msg_len)
            assert _core.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest(), \
                (key_len, msg_len)


# ---- nodes ------------------------------------------------------------------
def test_same_key_connects_and_exchanges(caplog):
    caplog.set_level(logging.INFO, logger="rlink")
    with rlink.LearnerNode(port=0, auth_key=KEY) as learner, \
            rlink.ActorNode(learner.address, auth_key=KEY.decode(), connect_timeout=T) as actor:
        learner.publish_parameters({"w": np.arange(4.0)})
        actor.send_trajectory({"i": 1}, timeout=T)
        assert learner.receive(timeout=T) == {"i": 1}
        p = actor.wait_parameters(timeout=T)
        assert p.version == 1 and p.data["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert any("authenticating actors" in r.getMessage() for r in caplog.records)


def test_key_from_environment(monkeypatch):
    monkeypatch.setenv("RLINK_AUTH_KEY", KEY.decode())
    with rlink.LearnerNode(port=0) as learner:
        with rlink.ActorNode(learner.address, connect_timeout=T) as actor:
            actor.send_trajectory({"env": True}, timeout=T)
            assert learner.receive(timeout=T) == {"env": True}
        # an explicit key wins over the environment
        with pytest.raises(rlink.AuthenticationError, match="differs"):
            rlink.ActorNode(learner.address, auth_key=b"x" * 32, connect_timeout=T)


@pytest.mark.parametrize("learner_key, actor_key, message, reason", [
    (KEY, b"another key of thirty-two bytes!", "differs from this actor", "different auth_key"),
    (KEY, None, "requires authentication", "actor has no auth_key"),
    (None, KEY, "has no auth_key", "learner has none"),
], ids=["wrong-key", "actor-without-key", "learner-without-key"])
def test_mismatched_keys_refused_before_anything_flows(caplog, monkeypatch, learner_key, actor_key,
                                                       message, reason):
    monkeypatch.delenv("RLINK_AUTH_KEY", raising=False)
    caplog.set_level(logging.WARNING, logger="rlink")
    with rlink.LearnerNode(port=0, auth_key=learner_key) as learner:
        learner.publish_parameters({"secret": np.ones(3)})
        with pytest.raises(rlink.AuthenticationError, match=message) as info:
            rlink.ActorNode(learner.address, auth_key=actor_key, connect_timeout=T)
        assert isinstance(info.value, rlink.ConnectError)
        assert _wait_for_reason(learner, caplog, reason), _reasons(caplog)
        assert learner.actors == []
        assert learner.stats()["rejected"] >= 1
        assert learner.stats()["received"] == 0


@little_endian_only
def test_handshake_by_the_document_and_replay_refused(caplog, peer_closed):
    """A client written from PROTOCOL.md 3.5 with Python's hmac authenticates;
    replaying its bytes on a new connection does not."""
    caplog.set_level(logging.WARNING, logger="rlink")
    with rlink.LearnerNode(port=0, auth_key=KEY) as learner:
        learner.publish_parameters({"v": np.arange(3)})
        hello_a = _hello(AUTH, 0x5EED)
        nonce_a = os.urandom(32)
        with socket.create_connection(("127.0.0.1", learner.port), timeout=T) as s:
            s.sendall(hello_a + nonce_a)
            challenge = _recv_exact(s, 96)
            hello_l, nonce_l, proof_l = challenge[:32], challenge[32:64], challenge[64:]
            assert hello_l[:4] == b"RLNK" and hello_l[7] & AUTH
            transcript = hello_a + nonce_a + hello_l + nonce_l
            assert hmac.compare_digest(proof_l, hmac.new(KEY, LEARNER_LABEL + transcript, hashlib.sha256).digest())
            proof_a = hmac.new(KEY, ACTOR_LABEL + transcript, hashlib.sha256).digest()
            s.sendall(proof_a)
            final = _recv_exact(s, 32)
            assert final[:4] == b"RLNK" and final[7] & AUTH
            assert struct.unpack_from("<Q", final, 8) == struct.unpack_from("<Q", hello_l, 8)
            s.sendall(_core.encode_frame({"from": "python"}))
            m = learner.receive_message(timeout=T)
            assert m.data == {"from": "python"} and m.actor_id == 0x5EED
            # the current parameters follow the final hello
            kind, ref, value = _read_frame(s)
            assert kind == _core.KIND_PARAMS and ref == 1 and value["v"].tolist() == [0, 1, 2]

        # Replay: same hello, nonce and proof on a new connection.
        with socket.create_connection(("127.0.0.1", learner.port), timeout=T) as s:
            s.sendall(hello_a + nonce_a)
            challenge2 = _recv_exact(s, 96)
            assert challenge2[32:64] != nonce_l, "the learner reused its nonce"
            s.sendall(proof_a + _core.encode_frame({"from": "replay"}))
            assert peer_closed(s)
        assert _wait_for_reason(learner, caplog, "auth_key differs")
        with pytest.raises(rlink.TimeoutError):
            learner.receive(timeout=0.2)


def _read_frame(s: socket.socket):
    header = _recv_exact(s, 48)
    meta_len, data_len = struct.unpack_from("<IQ", header, 4)
    data_off = (48 + meta_len + 63) // 64 * 64 if data_len else 48 + meta_len
    frame = header + _recv_exact(s, data_off - 48 + data_len)
    return _core.decode_frame(frame)


@little_endian_only
@pytest.mark.parametrize("send", ["hello-only", "garbage-proof", "frame-instead-of-proof"])
def test_unauthenticated_peer_gets_nothing_and_injects_nothing(caplog, send):
    caplog.set_level(logging.WARNING, logger="rlink")
    with rlink.LearnerNode(port=0, auth_key=KEY, handshake_timeout=0.5) as learner, \
            rlink.ActorNode(learner.address, auth_key=KEY, connect_timeout=T) as good:
        learner.publish_parameters({"secret": np.arange(5)})
        with socket.create_connection(("127.0.0.1", learner.port), timeout=T) as s:
            s.sendall(_hello(AUTH, 0xBAD) + os.urandom(32))
            got = _recv_exact(s, 96)   # hello, nonce, proof: nothing else
            if send == "garbage-proof":
                s.sendall(os.urandom(32))
            elif send == "frame-instead-of-proof":
                s.sendall(_core.encode_frame({"inject": 1}))
            s.settimeout(T)
            rest = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    rest += chunk
            except ConnectionError:
                pass
            assert len(got) == 96 and rest == b"", "an unauthenticated peer was sent data"
        reason = "handshake not completed in time" if send == "hello-only" else "auth_key differs"
        assert _wait_for_reason(learner, caplog, reason)
        good.send_trajectory({"good": 1}, timeout=T)
        m = learner.receive_message(timeout=T)
        assert m.data == {"good": 1} and m.actor_id == good.actor_id
        assert learner.actors == [good.actor_id]


def test_reliable_reconnect_authenticates_again():
    with rlink.LearnerNode(port=0, reliable=True, auth_key=KEY) as learner, \
            FaultProxy(target=learner.address) as proxy, \
            rlink.ActorNode(proxy.address, auth_key=KEY, connect_timeout=T,
                            retry_backoff=0.05) as actor:
        for i in range(200):
            actor.send_trajectory({"i": i}, timeout=T)
            if i == 100:
                proxy.rst_after(0)
        got = [learner.receive(timeout=T)["i"] for _ in range(200)]
        assert got == list(range(200))
        assert actor.stats()["reconnects"] >= 1


def test_warning_when_listening_beyond_loopback_without_key(caplog, monkeypatch):
    monkeypatch.delenv("RLINK_AUTH_KEY", raising=False)
    caplog.set_level(logging.WARNING, logger="rlink")
    with rlink.LearnerNode(port=0, host="127.0.0.1"):
        pass
    assert not [r for r in caplog.records if "without auth_key" in r.getMessage()]
    with rlink.LearnerNode(port=0, host="0.0.0.0", auth_key=KEY):
        pass
    assert not [r for r in caplog.records if "without auth_key" in r.getMessage()]
    with rlink.LearnerNode(port=0, host="0.0.0.0"):
        pass
    assert [r for r in caplog.records if "without auth_key" in r.getMessage()]


def test_short_key_warns(caplog):
    caplog.set_level(logging.WARNING, logger="rlink")
    with rlink.LearnerNode(port=0, auth_key="short"):
        pass
    assert any("only 5 bytes" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [123, 1.5, ["k"]])
def test_auth_key_type(bad):
    with pytest.raises(TypeError, match="auth_key"):
        rlink.LearnerNode(port=0, auth_key=bad)


# ---- limits -----------------------------------------------------------------
def test_max_connections(caplog, peer_closed):
    caplog.set_level(logging.WARNING, logger="rlink")
    with rlink.LearnerNode(port=0, max_connections=2) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as a1, \
            rlink.ActorNode(learner.address, connect_timeout=T) as a2:
        with socket.create_connection(("127.0.0.1", learner.port), timeout=T) as extra:
            assert peer_closed(extra)
        assert _wait_for_reason(learner, caplog, "max_connections")
        for a in (a1, a2):
            a.send_trajectory({"id": a.actor_id}, timeout=T)
        assert sorted(learner.receive(timeout=T)["id"] for _ in range(2)) == sorted([a1.actor_id, a2.actor_id])
        a2.close()
        # a slot is free again once the learner has seen a2 leave
        deadline = time.monotonic() + T
        while learner.actors != [a1.actor_id] and time.monotonic() < deadline:
            _drain_events(learner)
        with rlink.ActorNode(learner.address, connect_timeout=T) as a3:
            a3.send_trajectory({"id": 3}, timeout=T)
            assert learner.receive(timeout=T) == {"id": 3}


def _nested(depth: int):
    v: object = 0
    for _ in range(depth):
        v = [v]
    return {"v": v}


# (limit, a tight value, a message over it), for the receiver's and the sender's side
LIMIT_CASES = [
    ("max_depth", 3, _nested(5)),
    ("max_ndim", 2, {"a": np.zeros((1, 1, 1))}),
    ("max_arrays", 2, {"a": [np.zeros(1)] * 3}),
    ("max_items", 10, {"a": list(range(20))}),
    ("max_str_bytes", 8, {"a": "x" * 9}),
]


@pytest.mark.parametrize("name, small, message", LIMIT_CASES)
def test_receiver_limits_drop_the_sender(caplog, name, small, message):
    """A learner with a tighter limit than its actor disconnects the actor when
    a message exceeds it, logs why, and keeps serving others."""
    caplog.set_level(logging.WARNING, logger="rlink")
    with rlink.LearnerNode(port=0, **{name: small}) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as bad, \
            rlink.ActorNode(learner.address, connect_timeout=T) as good:
        bad.send_trajectory(message, timeout=T)
        good.send_trajectory({"ok": 1}, timeout=T)
        assert learner.receive(timeout=T) == {"ok": 1}
        deadline = time.monotonic() + T
        while bad.actor_id in learner.actors and time.monotonic() < deadline:
            _drain_events(learner)
        assert learner.actors == [good.actor_id]
        assert learner.stats()["rejected"] == 1
        # the drop may have come after the last drain: its event waits for one more
        _drain_events(learner)
        assert _reasons(caplog), "no reason was logged"


@pytest.mark.parametrize("name, small, message", LIMIT_CASES)
def test_sender_limits_refuse_before_sending(learner, name, small, message):
    with rlink.ActorNode(learner.address, connect_timeout=T, **{name: small}) as actor:
        with pytest.raises((ValueError, rlink.RLinkError)):
            actor.send_trajectory(message, timeout=T)
        actor.send_trajectory({"after": 1}, timeout=T)
        assert learner.receive(timeout=T) == {"after": 1}
        assert actor.stats()["sent"] == 1


def test_limit_defaults_match_the_core():
    for cls in (rlink.LearnerNode, rlink.ActorNode):
        params = inspect.signature(cls.__init__).parameters
        for name, value in _core.DEFAULT_LIMITS.items():
            assert params[name].default == value, (cls.__name__, name)


@pytest.mark.parametrize("kwargs", [{"max_depth": 0}, {"max_depth": 10_000}, {"max_ndim": 33},
                                    {"max_items": 0}, {"max_connections": 0}, {"max_arrays": -1},
                                    {"max_str_bytes": 1 << 40}])
def test_limit_arguments_checked(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        rlink.LearnerNode(port=0, **kwargs)
