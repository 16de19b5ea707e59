"""stats(): node and per-connection counters; events(); the parameter
version carried by every trajectory."""
from __future__ import annotations

import socket

import numpy as np
import pytest

import rlink

T = 10.0


def test_trajectories_carry_the_policy_version(learner, actor, wait_until):
    actor.send_trajectory({"i": 0}, timeout=T)
    assert learner.receive_message(timeout=T).params_version == 0     # no parameters yet
    learner.publish_parameters({"w": np.zeros(2)})
    assert actor.wait_parameters(timeout=T).version == 1
    actor.send_trajectory({"i": 1}, timeout=T)
    assert learner.receive_message(timeout=T).params_version == 1
    learner.publish_parameters({"w": np.ones(2)})
    # version 2 arrives, but the application has not taken it: still 1
    assert wait_until(lambda: actor.stats()["params_newest"] == 2)
    st = actor.stats()
    assert st["params_version"] == 1 and st["params_newest"] == 2
    actor.send_trajectory({"i": 2}, timeout=T)
    assert learner.receive_message(timeout=T).params_version == 1
    assert actor.latest_parameters().version == 2
    actor.send_trajectory({"i": 3}, timeout=T)
    m = learner.receive_message(timeout=T)
    assert m.params_version == 2 and learner.stats()["params_version"] - m.params_version == 0


@pytest.mark.parametrize("reliable", [False, True], ids=["unreliable", "reliable"])
def test_per_actor_counters(reliable):
    with rlink.LearnerNode(port=0, reliable=reliable) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as a, \
            rlink.ActorNode(learner.address, connect_timeout=T) as b:
        for i in range(30):
            a.send_trajectory({"x": np.zeros(100, np.float32)}, timeout=T)
        for i in range(10):
            b.send_trajectory({"x": np.zeros(10, np.float32)}, timeout=T)
        got = 0
        while got < 40:
            got += len(learner.receive_many(64, timeout=T))
        learner.publish_parameters({"w": np.arange(1000.0)})
        for actor in (a, b):
            assert actor.wait_parameters(timeout=T).version == 1
        learner.send(b.actor_id, {"push": 1}, timeout=T)
        assert b.receive(timeout=T) == {"push": 1}

        st = learner.stats()
        assert set(st["actors"]) == {a.actor_id, b.actor_id}
        sa, sb = st["actors"][a.actor_id], st["actors"][b.actor_id]
        assert sa["messages_in"] == 30 and sb["messages_in"] == 10
        assert sa["bytes_in"] > 30 * 400 and sb["bytes_in"] > 10 * 40
        assert sa["bytes_in"] > sb["bytes_in"]
        assert sa["messages_out"] == 1 and sb["messages_out"] == 2     # parameters (+ the push)
        assert sa["bytes_out"] > 8000
        assert sa["params_sent"] == sb["params_sent"] == 1
        for s in (sa, sb):
            assert s["send_queue_bytes"] >= 0
            assert s["last_seen_s"] >= 0 and s["connected_s"] >= 0
            assert s["rtt_ms"] is None or s["rtt_ms"] >= 0
            assert s["messages_in_per_s"] > 0

        sta = a.stats()
        assert sta["messages_out"] == 30 and sta["messages_in"] == 1
        assert sta["bytes_out"] == sa["bytes_in"] and sta["bytes_in"] == sa["bytes_out"]

        # rates cover the time since the previous call: nothing new -> 0
        again = learner.stats()["actors"][a.actor_id]
        assert again["messages_in"] == 30 and again["messages_in_per_s"] == 0


def test_stats_of_a_departed_actor_disappear(learner, make_actor, wait_until):
    a = make_actor()
    b = make_actor()
    assert wait_until(lambda: len(learner.stats()["actors"]) == 2)
    a.close()
    assert wait_until(lambda: set(learner.stats()["actors"]) == {b.actor_id})


def test_events(learner, make_actor, peer_closed, wait_until):
    a = make_actor()
    a_id = a.actor_id
    assert wait_until(lambda: a_id in learner.actors)
    with socket.create_connection(("127.0.0.1", learner.port), timeout=T) as junk:
        junk.sendall(b"not an rlink hello".ljust(32, b"."))
        assert peer_closed(junk) == (True, b"", 0)    # closed, having sent nothing
    a.close()
    seen: list[rlink.Event] = []
    assert wait_until(lambda: seen.extend(learner.events()) or
                      {e.kind for e in seen} >= {"joined", "left", "rejected"})
    joined = [e for e in seen if e.kind == "joined"]
    left = [e for e in seen if e.kind == "left"]
    rejected = [e for e in seen if e.kind == "rejected"]
    assert [e.actor_id for e in joined] == [a_id]
    assert [e.actor_id for e in left] == [a_id] and "closed" in left[0].reason
    assert rejected[0].actor_id == 0 and "handshake" in rejected[0].reason
    assert all(isinstance(e.time, float) for e in seen)
    assert learner.events() == []      # drained


def test_every_rejection_is_an_event(learner, peer_closed, wait_until):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", learner.port), timeout=T) as junk:
            junk.sendall(b"x" * 32)
            assert peer_closed(junk) == (True, b"", 0)    # closed, having sent nothing
    assert wait_until(lambda: learner.stats()["rejected"] == 3)
    events = learner.events()
    assert [e.kind for e in events] == ["rejected"] * 3


def test_explicit_params_version_overrides_the_default(learner, actor):
    learner.publish_parameters({"w": np.zeros(1)})
    learner.publish_parameters({"w": np.ones(1)})
    assert actor.wait_parameters(newer_than=1, timeout=T).version == 2
    actor.send_trajectory({"i": 0}, timeout=T, params_version=1)   # generated with version 1
    actor.send_trajectory({"i": 1}, timeout=T)
    assert [m.params_version for m in (learner.receive_message(timeout=T),
                                       learner.receive_message(timeout=T))] == [1, 2]
    with pytest.raises(ValueError, match="params_version"):
        actor.send_trajectory({"i": 2}, params_version=-1)
