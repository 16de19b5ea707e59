"""The same-host fast path: AF_UNIX chosen automatically for an actor on the
learner's machine, explicit ipc:// socket files, and what is left behind."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rlink

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the abstract AF_UNIX namespace is Linux-only")
T = 10.0


def _roundtrip(learner, actor, tag):
    actor.send_trajectory({"tag": tag, "x": np.arange(1000, dtype=np.float32)}, timeout=T)
    m = learner.receive_message(timeout=T)
    assert m.actor_id == actor.actor_id and m.data["tag"] == tag
    assert np.array_equal(m.data["x"], np.arange(1000, dtype=np.float32))
    learner.send(actor.actor_id, {"back": tag}, timeout=T)
    assert actor.receive(timeout=T) == {"back": tag}


def _transport(learner, actor):
    mine = actor.stats()["transport"]
    theirs = learner.stats()["actors"][actor.actor_id]["transport"]
    assert mine == theirs
    return mine


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "localhost:{port}", "tcp://127.0.0.1:{port}"])
def test_same_host_actor_moves_to_unix_by_itself(address):
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(address.format(port=learner.port), connect_timeout=T) as actor:
        assert _transport(learner, actor) == "unix"
        _roundtrip(learner, actor, "auto")


def test_wildcard_learner_reached_over_unix():
    with rlink.LearnerNode(port=0, host="0.0.0.0", auth_key="k" * 32) as learner, \
            rlink.ActorNode(f"127.0.0.1:{learner.port}", auth_key="k" * 32, connect_timeout=T) as actor:
        assert _transport(learner, actor) == "unix"
        _roundtrip(learner, actor, "wildcard")


@pytest.mark.parametrize("learner_local, actor_local", [(False, True), (True, False)])
def test_fast_path_off_on_either_side_means_tcp(learner_local, actor_local):
    with rlink.LearnerNode(port=0, local=learner_local) as learner, \
            rlink.ActorNode(learner.address, local=actor_local, connect_timeout=T) as actor:
        assert _transport(learner, actor) == "tcp"
        _roundtrip(learner, actor, "tcp")


def test_explicit_ipc_path(tmp_path):
    path = str(tmp_path / "learner.sock")
    with rlink.LearnerNode(port=0, ipc_path=path) as learner:
        assert os.path.exists(path)
        with rlink.ActorNode(f"ipc://{path}", connect_timeout=T) as actor:
            assert _transport(learner, actor) == "unix"
            _roundtrip(learner, actor, "ipc")
            learner.publish_parameters({"w": np.ones(4)})
            assert actor.wait_parameters(timeout=T).data["w"].tolist() == [1.0] * 4
    assert not os.path.exists(path), "the learner left its socket file behind"


def test_stale_ipc_file_is_replaced_live_one_is_not(tmp_path):
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)          # a file nobody accepts on, as a SIGKILLed learner leaves
    dead.close()
    assert os.path.exists(path)
    with rlink.LearnerNode(port=0, ipc_path=path) as learner:
        with pytest.raises(rlink.AddressInUseError, match="ipc://"):
            rlink.LearnerNode(port=0, ipc_path=path)
        with rlink.ActorNode(f"ipc://{path}", connect_timeout=T) as actor:
            _roundtrip(learner, actor, "replaced")


def test_ipc_connect_errors(tmp_path):
    with pytest.raises(rlink.ConnectError):
        rlink.ActorNode(f"ipc://{tmp_path / 'nobody.sock'}", connect_timeout=0.3)
    with pytest.raises(ValueError, match="ipc://"):
        rlink.ActorNode("ipc://" + "x" * 200)
    with pytest.raises(TypeError, match="local"):
        rlink.LearnerNode(port=0, local=1)


def test_wrong_key_over_unix_is_refused_not_retried_over_tcp():
    with rlink.LearnerNode(port=0, auth_key="a" * 32) as learner:
        with pytest.raises(rlink.AuthenticationError, match="differs"):
            rlink.ActorNode(learner.address, auth_key="b" * 32, connect_timeout=T)


def test_reliable_session_survives_learner_restart_over_unix():
    learner = rlink.LearnerNode(port=0, reliable=True)
    port = learner.port
    with rlink.ActorNode(learner.address, connect_timeout=T, retry_backoff=0.05,
                         retry_attempts=100) as actor:
        assert _transport(learner, actor) == "unix"
        for i in range(50):
            actor.send_trajectory({"i": i}, timeout=T)
        got = [learner.receive(timeout=T)["i"] for _ in range(50)]
        actor.wait_acked(T)                  # acknowledged: nothing is redelivered
        assert actor.stats()["acked"] == 50
        learner.close()
        for i in range(50, 100):
            actor.send_trajectory({"i": i}, timeout=T)     # retained while no learner
        learner = rlink.LearnerNode(port=port, reliable=True)
        try:
            while len(got) < 100:
                got.append(learner.receive(timeout=T)["i"])
            assert got == list(range(100))
            # The restarted learner's AF_UNIX endpoint listens before its TCP
            # port does, so a reconnection in between cannot fall back to TCP.
            assert _transport(learner, actor) == "unix"
        finally:
            learner.close()


_KILLED_LEARNER = textwrap.dedent("""
    import sys, rlink
    learner = rlink.LearnerNode(port=0, ipc_path=sys.argv[1])
    print(learner.port, flush=True)
    learner.receive(timeout=60)
""")


def test_sigkilled_learner_leaves_nothing_that_blocks_the_next(tmp_path):
    """After kill -9 the abstract endpoint is gone with the process; the
    explicit socket file stays (the kernel cannot remove it) and the next
    learner takes it over. The actor sees a connection error."""
    path = str(tmp_path / "killed.sock")
    # cwd: not the repository root, whose rlink/ is the uncompiled source
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_LEARNER, path],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        port = int(proc.stdout.readline())
        actor = rlink.ActorNode(f"127.0.0.1:{port}", connect_timeout=T)
        assert actor.stats()["transport"] == "unix"
        proc.send_signal(signal.SIGKILL)
        proc.wait(T)
        with pytest.raises(rlink.ConnectionLostError):
            deadline = time.monotonic() + T
            while time.monotonic() < deadline:
                actor.send_trajectory({"x": np.zeros(1000)}, timeout=T)
        actor.close()
        with open("/proc/net/unix") as f:
            assert f"@rlink/127.0.0.1:{port}" not in f.read()
        with rlink.LearnerNode(port=port, ipc_path=path) as again, \
                rlink.ActorNode(again.address, connect_timeout=T) as a2:
            assert _transport(again, a2) == "unix"
            _roundtrip(again, a2, "after-kill")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(T)
        proc.stdout.close()
