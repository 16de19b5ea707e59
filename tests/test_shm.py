"""Shared memory on the same host (PROTOCOL.md 2.2): large trajectories go
through the actor's memfd region, the learner's arrays are writable
views of it, slots come back when the arrays die, a full region falls back
to the socket, and nothing is left behind by a killed process."""
from __future__ import annotations

import mmap
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rlink

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="memfd_create and the abstract AF_UNIX namespace are Linux-only")
T = 10.0
BIG = 256 << 10           # bytes of array data per message: above the 64 KiB threshold


def _shm(learner, actor) -> bool:
    """Both ends agree on whether the connection has a region. Call it once
    a message has arrived: the learner maps the region when it reads the
    frame that offers it, which comes before any message."""
    mine = actor.stats()["shared_memory"]
    assert learner.stats()["actors"][actor.actor_id]["shared_memory"] == mine
    return mine


def _payload(i: int) -> dict:
    return {"i": i, "obs": np.full(BIG // 4, i, dtype=np.float32),
            "act": np.arange(64, dtype=np.int64) + i}


def _check(data: dict, i: int) -> None:
    assert data["i"] == i
    assert data["obs"].shape == (BIG // 4,) and (data["obs"] == i).all()
    assert np.array_equal(data["act"], np.arange(64, dtype=np.int64) + i)


def test_large_trajectories_use_the_region_small_ones_the_socket():
    with rlink.LearnerNode(port=0) as learner, rlink.ActorNode(learner.address, connect_timeout=T) as actor:
        assert actor.stats()["transport"] == "unix"
        for i in range(20):
            actor.send_trajectory(_payload(i), timeout=T)
            actor.send_trajectory({"small": i, "x": np.arange(8)}, timeout=T)
        for i in range(20):
            _check(learner.receive(timeout=T), i)
            small = learner.receive(timeout=T)
            assert small["small"] == i and np.array_equal(small["x"], np.arange(8))
        assert _shm(learner, actor)
        # the bulk of each large message never crossed the socket
        sent = learner.stats()["actors"][actor.actor_id]["bytes_in"]
        assert sent < 20 * BIG // 10


@pytest.mark.parametrize("reason, learner_kwargs, actor_kwargs", [
    ("shm_bytes=0", {}, {"shm_bytes": 0}),
    ("fast path off", {}, {"local": False}),
    ("fast path off, reliable", {"reliable": True}, {"local": False}),
])
def test_no_region_when_off_or_over_tcp(reason, learner_kwargs, actor_kwargs):
    with rlink.LearnerNode(port=0, **learner_kwargs) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T, **actor_kwargs) as actor:
        for i in range(5):
            actor.send_trajectory(_payload(i), timeout=T)
        for i in range(5):
            _check(learner.receive(timeout=T), i)
        assert not _shm(learner, actor), reason


def test_received_arrays_are_writable_and_slots_are_reused_clean():
    # A region of exactly 3 slots: every message reuses a slot an earlier one
    # had, after the learner scribbled over that earlier message's arrays:
    # the learner must read the actor's new data, never its own scribbles
    # (nor a slot the actor refilled while the learner still held it).
    slot = BIG + 4096
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, shm_bytes=3 * slot, connect_timeout=T) as actor:
        for i in range(60):
            actor.send_trajectory(_payload(i), timeout=T)
            data = learner.receive(timeout=T)
            _check(data, i)
            assert data["obs"].flags.writeable
            data["obs"][:] = -1.0           # ours until released; the next message in this slot overwrites it
            data["act"][:] = -1
            del data
        assert _shm(learner, actor)


def test_arrays_kept_stay_intact_while_later_messages_arrive():
    slot = BIG + 4096
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, shm_bytes=4 * slot, connect_timeout=T) as actor:
        kept = []
        for i in range(50):   # the region fills with kept messages; the rest go by socket
            actor.send_trajectory(_payload(i), timeout=T)
            data = learner.receive(timeout=T)
            _check(data, i)
            if i % 10 == 0:
                kept.append((i, data))
        for i, data in kept:
            _check(data, i)
        kept.clear()                      # releases the slots
        for i in range(50, 70):
            actor.send_trajectory(_payload(i), timeout=T)
            _check(learner.receive(timeout=T), i)


def test_arrays_outlive_the_connection_and_the_nodes():
    learner = rlink.LearnerNode(port=0)
    actor = rlink.ActorNode(learner.address, connect_timeout=T)
    actor.send_trajectory(_payload(7), timeout=T)
    data = learner.receive(timeout=T)
    actor.close()
    learner.close()
    _check(data, 7)                       # the mapping lives as long as the arrays
    data["obs"][:] = 1.0
    del data


def test_sigkilled_actor_leaves_nothing_and_the_learner_keeps_serving(tmp_path):
    before = set(os.listdir("/dev/shm"))
    with rlink.LearnerNode(port=0) as learner:
        code = textwrap.dedent(f"""
            import numpy as np, rlink, sys
            actor = rlink.ActorNode({learner.address!r}, connect_timeout=10)
            x = np.ones({BIG // 4}, dtype=np.float32)
            print(actor.actor_id, actor.stats()["shared_memory"], flush=True)
            while True:
                actor.send_trajectory({{"x": x}}, timeout=10)
        """)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                cwd=str(tmp_path))
        try:
            actor_id, used = proc.stdout.readline().split()
            assert used == "True"
            got = [learner.receive(timeout=T) for _ in range(20)]   # mid-stream
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=T)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        for data in got:
            assert (data["x"] == 1.0).all()
        del got
        with rlink.ActorNode(learner.address, connect_timeout=T) as actor:
            actor.send_trajectory(_payload(1), timeout=T)
            # whatever the dead actor's last messages were, this one arrives
            while True:
                data = learner.receive(timeout=T)
                if "i" in data:
                    break
            _check(data, 1)
            assert _shm(learner, actor)
    assert set(os.listdir("/dev/shm")) == before


# ---- a hostile peer on the same host ---------------------------------------
import struct  # noqa: E402

HELLO = struct.Struct("<4sHBBQQII")
HEADER = struct.Struct("<BBHIQQQQII")
SHM_REGION, SHM_RELEASE = 9, 10


def _raw_local_actor(learner, maps_regions=False) -> socket.socket:
    """An AF_UNIX connection to the learner's abstract endpoint, past the
    hello exchange, asking for nothing (or, maps_regions, saying with hello
    flag SHM that it maps a region the learner offers)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(T)
    s.connect(f"\0rlink/127.0.0.1:{learner.port}")
    s.sendall(HELLO.pack(b"RLNK", 1, 1, 0x04 if maps_regions else 0, int.from_bytes(os.urandom(8), "little") | 1, 0, 0, 0))
    got = b""
    while len(got) < HELLO.size:
        chunk = s.recv(HELLO.size - len(got))
        assert chunk, "the learner closed during the hello"
        got += chunk
    assert HELLO.unpack(got)[3] & 0x04, "the learner does not offer to map regions over AF_UNIX"
    return s


def _closed_with(learner, sock, reason, peer_closed, wait_until):
    """The learner closed sock and reported why (the event follows the close)."""
    assert peer_closed(sock)
    seen = []

    def rejected():
        seen.extend(e.reason for e in learner.events() if e.kind == "rejected")
        return any(reason in r for r in seen)
    assert wait_until(rejected), seen


def _memfd(size, seals=True):
    import fcntl
    fd = os.memfd_create("test", os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if seals else 0))
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    return fd


@pytest.mark.parametrize("what, make_fd, size, reason", [
    ("a pipe", lambda: os.pipe()[0], 1 << 20, "not a sealable memory file"),
    ("an unsealed memfd", lambda: _memfd(1 << 20, seals=False), 1 << 20, "not sealed against shrinking"),
    ("a memfd of another size", lambda: _memfd(1 << 20), 2 << 20, "size differs from the announced size"),
    ("a memfd of 32 GiB", lambda: _memfd(32 << 30), 32 << 30, "larger than 16 GiB"),
])
def test_bad_regions_are_refused_and_the_learner_keeps_serving(what, make_fd, size, reason,
                                                               peer_closed, wait_until):
    with rlink.LearnerNode(port=0) as learner:
        fd = make_fd()
        try:
            s = _raw_local_actor(learner)
            socket.send_fds(s, [HEADER.pack(SHM_REGION, 0, 0, 0, 0, 0, 0, size, 0, 0)], [fd])
            _closed_with(learner, s, reason, peer_closed, wait_until)
            s.close()
        finally:
            os.close(fd)
        with rlink.ActorNode(learner.address, connect_timeout=T) as actor:
            actor.send_trajectory(_payload(3), timeout=T)
            _check(learner.receive(timeout=T), 3)
            assert _shm(learner, actor), what


def test_descriptors_beyond_one_region_are_refused(peer_closed, wait_until):
    with rlink.LearnerNode(port=0) as learner:
        a, b = _memfd(1 << 20), _memfd(1 << 20)
        try:
            s = _raw_local_actor(learner)
            # two descriptors waiting for one SHM_REGION
            socket.send_fds(s, [HEADER.pack(7, 0, 0, 0, 0, 0, 0, 0, 0, 0)], [a])
            socket.send_fds(s, [HEADER.pack(7, 0, 0, 0, 0, 0, 0, 0, 0, 0)], [b])
            _closed_with(learner, s, "unexpected file descriptors from the peer", peer_closed, wait_until)
            s.close()
        finally:
            os.close(a)
            os.close(b)


def test_a_region_then_a_frame_outside_it(peer_closed, wait_until):
    with rlink.LearnerNode(port=0) as learner:
        fd = _memfd(1 << 20)
        try:
            s = _raw_local_actor(learner)
            socket.send_fds(s, [HEADER.pack(SHM_REGION, 0, 0, 0, 0, 0, 0, 1 << 20, 0, 0)], [fd])
            # {"x": float32[16]} whose data would sit past the end of the region
            meta = (b"\x0a" + struct.pack("<I", 1) + struct.pack("<I", 1) + b"x"
                    + b"\x0b" + bytes([11, 1, 0]) + struct.pack("<QQ", 16, 0))
            s.sendall(HEADER.pack(1, 0x04, 0, len(meta), 64, 0, (1 << 20), 0, 0, 0) + meta)
            _closed_with(learner, s, "shared-memory frame outside the peer's region", peer_closed, wait_until)
            s.close()
        finally:
            os.close(fd)


# ---- parameters: one region for every local actor --------------------------
PBIG = 1 << 20            # bytes of parameter data per version


def _params(v: int) -> dict:
    return {"w": np.full(PBIG // 8, v, dtype=np.float32),
            "b": np.arange(PBIG // 16, dtype=np.int64) + v, "step": v}


def _check_params(p, v: int) -> None:
    assert p.version == v and p.data["step"] == v
    assert (p.data["w"] == v).all()
    assert np.array_equal(p.data["b"], np.arange(PBIG // 16, dtype=np.int64) + v)


def _stream_bytes_in(actor) -> int:
    return actor.stats()["bytes_in"]


def test_parameters_reach_local_actors_through_one_region():
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as a, \
            rlink.ActorNode(learner.address, connect_timeout=T) as b, \
            rlink.ActorNode(learner.address, local=False, connect_timeout=T) as tcp:
        for v in range(1, 11):
            learner.publish_parameters(_params(v))
            pa, pb, pt = (x.wait_parameters(newer_than=v - 1, timeout=T) for x in (a, b, tcp))
            for p in (pa, pb, pt):
                _check_params(p, v)
            # an actor's arrays are writable and its own
            pa.data["w"][:] = -1
            pa.data["b"][::7] = -1
            _check_params(pb, v)
            _check_params(pt, v)
        # the data came by the region to the local actors, whole over TCP
        for x in (a, b):
            assert x.stats()["shared_memory"]
            assert _stream_bytes_in(x) < 10 * PBIG // 10
        assert not tcp.stats()["shared_memory"]
        assert _stream_bytes_in(tcp) > 10 * PBIG
        assert learner.stats()["actors"][a.actor_id]["shared_memory"]


def test_kept_parameters_stay_intact_while_later_versions_arrive():
    # a region of three versions, while the actor keeps five: the rest goes
    # whole over the socket, and nothing kept changes
    with rlink.LearnerNode(port=0, shm_bytes=4096) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as actor:
        kept = []
        for v in range(1, 13):
            learner.publish_parameters(_params(v))
            p = actor.wait_parameters(newer_than=v - 1, timeout=T)
            _check_params(p, v)
            if v <= 5:
                kept.append(p)
            for i, k in enumerate(kept):
                _check_params(k, i + 1)
        del kept
        for v in range(13, 20):   # slots came back: the region is used again
            before = _stream_bytes_in(actor)
            learner.publish_parameters(_params(v))
            _check_params(actor.wait_parameters(newer_than=v - 1, timeout=T), v)
        assert _stream_bytes_in(actor) - before < PBIG // 10


def test_an_actor_leaving_with_parameters_keeps_them_intact(wait_until):
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as stays:
        leaves = rlink.ActorNode(learner.address, connect_timeout=T)
        learner.publish_parameters(_params(1))
        held = leaves.wait_parameters(timeout=T)
        _check_params(stays.wait_parameters(timeout=T), 1)
        gone = leaves.actor_id
        leaves.close()
        assert wait_until(lambda: gone not in learner.actors)
        # the learner never writes the slots it gave that actor again
        for v in range(2, 10):
            learner.publish_parameters(_params(v))
            _check_params(stays.wait_parameters(newer_than=v - 1, timeout=T), v)
            _check_params(held, 1)
        assert stays.stats()["shared_memory"]
        # a newcomer gets the newest, from the region too
        with rlink.ActorNode(learner.address, connect_timeout=T) as late:
            _check_params(late.wait_parameters(timeout=T), 9)
            assert _stream_bytes_in(late) < PBIG // 10


def test_late_tcp_actor_gets_parameters_published_only_to_local_ones():
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as local:
        learner.publish_parameters(_params(1))
        _check_params(local.wait_parameters(timeout=T), 1)
        with rlink.ActorNode(learner.address, local=False, connect_timeout=T) as tcp:
            _check_params(tcp.wait_parameters(timeout=T), 1)
            learner.publish_parameters(_params(2))
            _check_params(tcp.wait_parameters(newer_than=1, timeout=T), 2)
            _check_params(local.wait_parameters(newer_than=1, timeout=T), 2)


@pytest.mark.parametrize("learner_kwargs, actor_kwargs", [
    ({"shm_bytes": 0}, {}), ({}, {"shm_bytes": 0}), ({"shm_min_bytes": 4 * PBIG}, {})])
def test_parameters_over_the_socket_when_shared_memory_is_off(learner_kwargs, actor_kwargs):
    with rlink.LearnerNode(port=0, **learner_kwargs) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T, **actor_kwargs) as actor:
        learner.publish_parameters(_params(1))
        _check_params(actor.wait_parameters(timeout=T), 1)
        assert _stream_bytes_in(actor) > PBIG


def _read_frame(s):
    """(header fields, body bytes, descriptors) of the next frame."""
    data, fds, _, _ = socket.recv_fds(s, HEADER.size, 4)
    while len(data) < HEADER.size:
        more = s.recv(HEADER.size - len(data))
        assert more, "the learner closed"
        data += more
    h = HEADER.unpack(data)
    body = b""
    while len(body) < h[3]:   # meta_len: SHM frames carry no data on the stream
        more = s.recv(h[3] - len(body))
        assert more, "the learner closed"
        body += more
    return h, body, fds


@pytest.mark.parametrize("what, release, reason", [
    ("an offset it was not given", lambda off, rid: (off + 4096, rid), "was not given"),
    ("the same slot twice", None, "was not given"),
    ("a region id never offered", lambda off, rid: (off, rid + 1), "was not given"),
    ("region id 0", lambda off, rid: (off, 0), "was not given"),
])
def test_bad_parameter_releases_are_refused(what, release, reason, peer_closed, wait_until):
    with rlink.LearnerNode(port=0) as learner:
        s = _raw_local_actor(learner, maps_regions=True)
        learner.publish_parameters(_params(1))
        (kind, _, _, _, _, seq, rid, size, _, _), _, fds = _read_frame(s)
        assert (kind, seq) == (SHM_REGION, 1) and rid > 0 and len(fds) == 1, "no shared region offered"
        os.close(fds[0])
        (kind, flags, _, _, _, _, off, version, _, _), _, _ = _read_frame(s)
        assert kind == 2 and flags & 0x04 and version == 1
        if release is None:   # a correct release, then the same again
            s.sendall(HEADER.pack(SHM_RELEASE, 0, 0, 0, 0, 0, rid, off, 0, 0) * 2)
        else:
            o, r = release(off, rid)
            s.sendall(HEADER.pack(SHM_RELEASE, 0, 0, 0, 0, 0, r, o, 0, 0))
        _closed_with(learner, s, reason, peer_closed, wait_until)
        s.close()
        # the learner keeps serving parameters to local actors, by the region
        with rlink.ActorNode(learner.address, connect_timeout=T) as actor:
            learner.publish_parameters(_params(2))
            _check_params(actor.wait_parameters(newer_than=1, timeout=T), 2)
            assert _stream_bytes_in(actor) < PBIG // 10, what

# ---- the suite's "shm" transport and slots of failed sends ------------------
@pytest.mark.parametrize("transport", ["unix", "shm"])
def test_the_shm_transport_sends_small_arrays_through_the_region(learner, actor, transport):
    """conftest's "shm" actor (shm_min_bytes=1) hands even small arrays over
    in its region, so the core tests run over it really exercise it: the
    stream carries headers and metas only. Under "unix" (the default 64 KiB
    threshold) the same messages cross the socket whole."""
    n, nbytes = 50, 4096
    before = actor.stats()["bytes_out"]
    for i in range(n):
        actor.send_trajectory({"i": i, "x": np.full(nbytes // 4, i, dtype=np.float32)}, timeout=T)
    for i in range(n):
        data = learner.receive(timeout=T)
        assert data["i"] == i and data["x"].shape == (nbytes // 4,) and (data["x"] == i).all()
    stream = actor.stats()["bytes_out"] - before
    assert _shm(learner, actor)         # the actor offers its region either way
    if transport == "shm":
        assert stream < n * nbytes // 10, f"{stream} bytes on the stream for {n * nbytes} of arrays"
    else:
        assert stream > n * nbytes


# ---- reliable sessions over shared memory ------------------------------------
def test_a_reliable_session_uses_the_region(wait_until):
    """In a reliable session the slot is the retained copy: the stream
    carries headers and metas only, and every message arrives once."""
    with rlink.LearnerNode(port=0, reliable=True) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as actor:
        st = actor.stats()
        assert st["reliable"] and st["transport"] == "unix" and st["shared_memory"]
        before = st["bytes_out"]
        for i in range(40):
            actor.send_trajectory(_payload(i), timeout=T)
        for i in range(40):
            _check(learner.receive(timeout=T), i)
        assert wait_until(lambda: actor.stats()["acked"] == 40)
        assert actor.stats()["bytes_out"] - before < 40 * BIG // 10
        assert _shm(learner, actor)


def test_a_reliable_session_over_the_region_survives_a_learner_restart(wait_until):
    """Messages the first learner had not handed out are retained in slots
    of the first link's region; after the restart they reach the new learner
    whole over the new link, intact and in order, while arrays the
    application kept from the first learner stay intact too. The region
    is small, so slots given back early (before the acknowledgement) would
    be reused under retained messages if the actor let them go."""
    learner = rlink.LearnerNode(port=0, reliable=True)
    port = learner.port
    kept = []
    try:
        with rlink.ActorNode(learner.address, connect_timeout=T, retry_backoff=0.05, retry_attempts=100,
                             shm_bytes=6 * BIG) as actor:
            assert actor.stats()["shared_memory"]
            got = []
            for i in range(30):
                if i == 20:
                    # the 20 taken are acknowledged: the slots given back are free, not
                    # waiting for an ack still in flight (a timing the test must not rely on)
                    actor.wait_acked(T)
                    before = actor.stats()["bytes_out"]
                actor.send_trajectory(_payload(i), timeout=T)
                if i < 20:   # taken (and mostly acknowledged); the rest wait in the learner's queue
                    data = learner.receive(timeout=T)
                    _check(data, i)
                    got.append(i)
                    if i == 19:   # (a kept slot stops reuse of those after it)
                        kept.append((i, data["obs"]))
            assert actor.stats()["bytes_out"] - before < 9 * BIG, "none of them is retained in a slot"
            learner.close()
            for i in range(30, 35):
                actor.send_trajectory(_payload(i), timeout=T)   # retained while no learner
            learner = rlink.LearnerNode(port=port, reliable=True)
            seen = set(got)
            for _ in range(100):   # 15 new ones and at most 20 again
                msg = learner.receive_message(timeout=T)
                i = msg.data["i"]
                _check(msg.data, i)
                if i in seen:
                    assert msg.redelivered, f"message {i} came twice without the redelivery flag"
                else:
                    seen.add(i)
                got.append(i)
                if len(seen) == 35:
                    break
            assert sorted(seen) == list(range(35))

            assert [i for i in got if i >= 20] == list(range(20, 35))
            for i, obs in kept:
                assert (obs == i).all(), f"an array kept from the first learner changed (message {i})"
            # and the new link has a region of its own
            for i in range(35, 40):
                actor.send_trajectory(_payload(i), timeout=T)
                _check(learner.receive(timeout=T), i)
            assert _shm(learner, actor)
    finally:
        learner.close()


def test_a_reliable_session_resumes_after_the_learner_is_sigkilled(tmp_path):
    """kill -9 of a reliable learner in the middle of a stream through the
    region: the actor resends what the dead one had not acknowledged (from
    its slots) to the learner that takes the port over, intact and in order,
    and nothing is left in /dev/shm."""
    before = set(os.listdir("/dev/shm"))
    code = textwrap.dedent("""
        import rlink
        learner = rlink.LearnerNode(port=0, reliable=True)
        print(learner.port, flush=True)
        for _ in range(10):
            learner.receive(timeout=60)
        print("took 10", flush=True)
        input()   # until killed
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        port = int(proc.stdout.readline())
        with rlink.ActorNode(f"127.0.0.1:{port}", connect_timeout=T, retry_backoff=0.05,
                             retry_attempts=100) as actor:
            assert actor.stats()["shared_memory"]
            for i in range(20):
                actor.send_trajectory(_payload(i), timeout=T)
            assert proc.stdout.readline().strip() == "took 10"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=T)
            with rlink.LearnerNode(port=port, reliable=True) as learner:
                seen = []
                while len(seen) < 20:
                    msg = learner.receive_message(timeout=T)
                    i = msg.data["i"]
                    _check(msg.data, i)
                    assert i >= 10 or msg.redelivered, f"message {i} came again unflagged"
                    seen.append(i)
                    if i == 19:
                        break
                new = [i for i in seen if i >= 10]
                assert new == list(range(10, 20))
                actor.send_trajectory(_payload(20), timeout=T)
                _check(learner.receive(timeout=T), 20)
                assert _shm(learner, actor)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert set(os.listdir("/dev/shm")) == before


def _mappings(size: int) -> list[tuple[int, str]]:
    """(address, permissions) of this process's maps of rlink regions of
    ``size`` bytes (actor and learner in one process: both ends' maps)."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if "memfd:rlink-shm" in line:
                span, perms = line.split()[:2]
                lo, hi = (int(x, 16) for x in span.split("-"))
                if hi - lo == size:
                    out.append((lo, perms))
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_what_a_reliable_learner_writes_stays_out_of_the_retained_slot():
    """In a reliable session a slot is the actor's retained copy until the
    acknowledgement: a learner that writes into its arrays (they are
    writable) must not change what a resend would carry. Its map of the
    region is private; the actor's (shared) map keeps the bytes as sent."""
    import ctypes
    size = 3 * BIG + 7 * mmap.PAGESIZE    # a size no other region here has
    marker = np.float32(-1.5).tobytes() * 4
    with rlink.LearnerNode(port=0, reliable=True) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T, shm_bytes=size) as actor:
        actor.send_trajectory(_payload(7), timeout=T)
        data = learner.receive(timeout=T)
        _check(data, 7)
        data["obs"][:] = -1.5
        maps = _mappings(size)
        for addr, perms in maps:
            seen = ctypes.string_at(addr, size)
            if perms[3] == "s":
                assert marker not in seen, "the learner's writes reached the actor's slot"
            else:
                assert marker in seen
        assert sorted(p[3] for _, p in maps) == ["p", "s"], maps   # the learner's, the actor's
        assert (data["obs"] == -1.5).all()


def test_a_slot_given_back_before_its_ack_stays_retained(seal):
    """A learner may give a slot back before its acknowledgement reaches the
    actor (the release goes when the arrays die, the ack when the queue runs
    dry). Until the ack the slot is the retained copy: the actor must not
    reuse it, or a resend after a fault would carry a later message's bytes.
    A raw learner gives every slot back at once and acknowledges nothing,
    then vanishes; the learner that takes over must get every message
    intact."""
    import threading
    tcp = socket.create_server(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(f"\0rlink/127.0.0.1:{port}")
    srv.listen(1)
    srv.settimeout(T)
    raw = {}

    def handshake():   # a reliable learner that maps regions
        s, _ = srv.accept()
        s.settimeout(T)
        got = b""
        while len(got) < HELLO.size:
            chunk = s.recv(HELLO.size - len(got))
            assert chunk
            got += chunk
        raw["flags"] = HELLO.unpack(got)[3]
        s.sendall(HELLO.pack(b"RLNK", 1, 2, 0x05, int.from_bytes(os.urandom(8), "little") | 1, 0, 0, 0))
        raw["s"] = s

    th = threading.Thread(target=handshake)
    th.start()
    learner = None
    try:
        with rlink.ActorNode(f"127.0.0.1:{port}", reliable=True, connect_timeout=T, shm_bytes=4 * BIG,
                             retry_backoff=0.05, retry_attempts=100) as actor:
            th.join(T)
            s = raw["s"]
            assert raw["flags"] & 0x05 == 0x05
            h, _, fds = _read_frame(s)
            assert h[0] == 9 and len(fds) == 1      # SHM_REGION
            for fd in fds:
                os.close(fd)
            in_slots = 0
            for i in range(8):
                actor.send_trajectory(_payload(i), timeout=T)
                h, _, _ = _read_frame(s)
                while h[0] == 7:                    # heartbeats
                    h, _, _ = _read_frame(s)
                assert h[0] == 1 and h[5] == i + 1  # TRAJ, seq
                if not h[1] & 0x04:
                    break   # whole on the stream (not read further): the region is full
                in_slots += 1
                # give the slot back at once, no ack; the push behind the
                # release shows the actor has handled it
                s.sendall(seal(HEADER.pack(SHM_RELEASE, 0, 0, 0, 0, 0, 0, h[6], 0, 0)) +
                          seal(rlink._core.encode_frame({"sync": i}, 5)))
                assert actor.receive(timeout=T) == {"sync": i}
            assert 0 < in_slots < 8, f"{in_slots} messages went through a 4-slot region: slots reused"
            s.close()
            srv.close()
            tcp.close()
            learner = rlink.LearnerNode(port=port, reliable=True)
            for i in range(in_slots + 1):           # resent whole, intact
                _check(learner.receive(timeout=T), i)
    finally:
        th.join(T)
        srv.close()
        tcp.close()
        if "s" in raw:
            raw["s"].close()
        if learner is not None:
            learner.close()


def test_a_send_that_times_out_gives_its_slot_back():
    """A trajectory that could not be sent (its send timed out under
    back-pressure) must free the slot it had taken: slots are reused in ring
    order, so one slot never given back stops all reuse, and after one lap
    of the region every message went over the socket. (Blocking sends were
    hit too: the binding retries rl_node_send in 100 ms slices, each of
    which took a slot.)"""
    page = mmap.PAGESIZE
    nbytes, slots = page, 4            # one page per message, a region of 4
    with rlink.LearnerNode(port=0, max_queue_messages=1) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T, shm_bytes=slots * page, shm_min_bytes=1,
                            send_queue_bytes=1 << 16) as actor:
        assert actor.stats()["shared_memory"]
        # The learner stops reading once one message waits in its queue:
        # fill the socket and the actor's send queue with array-less
        # messages (they never use the region) until a send is refused, the
        # last ones empty: then no frame fits.
        filler = 0
        for pad in (bytes(1 << 14), b""):
            while True:
                try:
                    actor.send_trajectory({"fill": filler, "b": pad}, timeout=0)
                except rlink.TimeoutError:
                    break
                filler += 1
        # These would take a slot each, then time out unsent.
        for _ in range(3):
            with pytest.raises(rlink.TimeoutError):
                actor.send_trajectory({"x": np.zeros(nbytes // 4, dtype=np.float32)}, timeout=0)
        for k in range(filler):
            assert learner.receive(timeout=T)["fill"] == k
        for i in range(4 * slots):
            before = actor.stats()["bytes_out"]
            actor.send_trajectory({"i": i, "x": np.full(nbytes // 4, i, dtype=np.float32)}, timeout=T)
            sent = actor.stats()["bytes_out"] - before
            msg = learner.receive_message(timeout=T)
            assert msg.data["i"] == i and (msg.data["x"] == i).all()
            assert sent < nbytes, f"message {i} crossed the socket ({sent} bytes): no free slot"
            del msg
            # The release the learner sends as the message dies precedes this
            # push on the stream: once it arrives, the actor has the slot back.
            learner.send(actor.actor_id, {"sync": i}, timeout=T)
            assert actor.receive(timeout=T) == {"sync": i}
        with pytest.raises(rlink.TimeoutError):
            learner.receive(timeout=0)      # the timed-out sends never arrived
