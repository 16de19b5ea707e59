"""The three communication patterns: many-to-one (trajectories), one-to-many
(parameters) and bidirectional (request/reply and pushes)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import rlink
from rlink import _core

T = 10.0


# learner, actor and make_actor fixtures, and the wait_until helper, come from
# conftest.py.


def run_threads(targets):
    """Start each callable in a daemon thread; errors are collected (see join_all)."""
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for th in threads:
        th.start()
    return threads, errors


def join_all(threads, errors, timeout=60):
    """Join with a bound, fail if a thread hung, re-raise the first error."""
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    assert not any(th.is_alive() for th in threads), "a worker thread hung"
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------
# many-to-one
# --------------------------------------------------------------------------
def test_many_to_one_8_actors_x_1000(learner, make_actor, wait_until):
    n_actors, n_msgs = 8, 1000
    actors = [make_actor() for _ in range(n_actors)]
    ids = [a.actor_id for a in actors]
    assert len(set(ids)) == n_actors, "actor ids must be distinct"
    assert wait_until(lambda: set(ids) <= set(learner.actors))

    def sender(i):
        def run():
            a = actors[i]
            for n in range(n_msgs):
                a.send_trajectory({"actor": i, "seq": n, "x": np.arange(4) + n}, timeout=T)
        return run

    threads, errors = run_threads([sender(i) for i in range(n_actors)])
    next_seq = [0] * n_actors
    total = 0
    max_count = 37
    deadline = time.monotonic() + 60
    try:
        while total < n_actors * n_msgs:
            assert time.monotonic() < deadline, f"only {total} messages arrived"
            assert not errors, errors
            batch = learner.receive_many(max_count, timeout=T)
            assert isinstance(batch, list)
            assert 1 <= len(batch) <= max_count
            for m in batch:
                assert isinstance(m, rlink.Message)
                i, n = m.data["actor"], m.data["seq"]
                assert m.actor_id == ids[i], "Message.actor_id is not the sender's actor_id"
                assert n == next_seq[i], f"actor {i}: expected seq {next_seq[i]}, got {n}"
                assert np.array_equal(m.data["x"], np.arange(4) + n)
                next_seq[i] += 1
                total += 1
    finally:
        join_all(threads, errors)
    assert next_seq == [n_msgs] * n_actors
    # nothing extra (duplicates) is left behind
    with pytest.raises(rlink.TimeoutError):
        learner.receive(timeout=0.2)


def test_receive_many_respects_max_count_and_order(learner, actor):
    for n in range(50):
        actor.send_trajectory({"seq": n}, timeout=T)
    got = []
    sizes = []
    deadline = time.monotonic() + T
    while len(got) < 50 and time.monotonic() < deadline:
        batch = learner.receive_many(3, timeout=T)
        sizes.append(len(batch))
        got.extend(m.data["seq"] for m in batch)
    assert got == list(range(50))
    assert all(1 <= s <= 3 for s in sizes)


def test_receive_many_messages_are_whole_named_tuples(learner, actor):
    # built in C without calling Message: every field set, tuple behaviour intact
    actor.send_trajectory({"seq": 1}, timeout=T)
    (m,) = learner.receive_many(1, timeout=T)
    assert type(m) is rlink.Message and len(m) == 4
    actor_id, data, redelivered, version = m
    assert (actor_id, data, redelivered, version) == (m.actor_id, m.data, m.redelivered, m.params_version)
    assert actor_id == actor.actor_id and data == {"seq": 1} and redelivered is False
    assert m == rlink.Message(*m) and hash(m[0]) == hash(actor_id)
    assert m._replace(redelivered=True) == (actor_id, data, True, version)
    with pytest.raises(TypeError):   # the binding builds tuples only
        learner._core.recv(_core.Q_TRAJ, 1, 0.01, dict)


def test_receive_many_invalid_count(learner):
    with pytest.raises(ValueError):
        learner.receive_many(0, timeout=0.1)


def test_receive_and_receive_message(learner, actor):
    actor.send_trajectory({"a": 1}, timeout=T)
    actor.send_trajectory({"a": 2}, timeout=T)
    assert learner.receive(timeout=T) == {"a": 1}
    m = learner.receive_message(timeout=T)
    assert isinstance(m, rlink.Message)
    assert m.actor_id == actor.actor_id and m.data == {"a": 2}


# --------------------------------------------------------------------------
# one-to-many
# --------------------------------------------------------------------------
def test_publish_to_four_actors(learner, make_actor):
    actors = [make_actor() for _ in range(4)]
    for a in actors:
        assert a.latest_parameters() is None
    v1 = learner.publish_parameters({"w": np.full(8, 1.0), "tag": "one"})
    assert v1 == 1
    for a in actors:
        p = a.wait_parameters(timeout=T)
        assert isinstance(p, rlink.Parameters)
        assert p.version == 1 and p.data["tag"] == "one"
        assert np.array_equal(p.data["w"], np.full(8, 1.0))
    v2 = learner.publish_parameters({"w": np.full(8, 2.0), "tag": "two"})
    assert v2 == 2
    for a in actors:
        p = a.wait_parameters(timeout=T)          # default: newer than the last returned
        assert p.version == 2 and p.data["tag"] == "two"
        assert np.array_equal(p.data["w"], np.full(8, 2.0))
        assert a.latest_parameters().version == 2
    # nothing newer than 2: a bounded wait times out
    with pytest.raises(rlink.TimeoutError):
        actors[0].wait_parameters(timeout=0.2)


def test_explicit_versions(learner, actor):
    assert learner.publish_parameters({"p": 1}, version=10) == 10
    assert actor.wait_parameters(timeout=T).version == 10
    assert learner.publish_parameters({"p": 2}) == 11
    assert actor.wait_parameters(timeout=T).version == 11
    for bad in (11, 5, 0, -1, True, 12.0, "13"):
        with pytest.raises((ValueError, TypeError)):
            learner.publish_parameters({"p": 3}, version=bad)
    assert learner.publish_parameters({"p": 3}) == 12
    p = actor.wait_parameters(timeout=T)
    assert p.version == 12 and p.data == {"p": 3}


def test_late_joiner_gets_current_version(learner, make_actor):
    learner.publish_parameters({"v": 1})
    learner.publish_parameters({"v": 2})
    late = make_actor()
    p = late.wait_parameters(timeout=T)
    assert p.version == 2 and p.data == {"v": 2}


def test_wait_parameters_blocks_until_published(learner, actor):
    started = threading.Event()
    result = []

    def waiter():
        started.set()
        result.append(actor.wait_parameters(timeout=T))

    th = threading.Thread(target=waiter, daemon=True)
    th.start()
    assert started.wait(T)
    learner.publish_parameters({"x": np.arange(3)})
    th.join(T)
    assert not th.is_alive()
    assert result and result[0].version == 1
    assert np.array_equal(result[0].data["x"], np.arange(3))


def test_slow_actor_ends_with_newest(learner, make_actor, wait_until):
    fast = make_actor()
    slow_wait = make_actor()
    slow_poll = make_actor()
    n_versions = 50
    size = 32 * 1024                       # 256 KiB of float64 per version
    seen = []
    done = threading.Event()

    def fast_reader():
        deadline = time.monotonic() + 30
        while not seen or seen[-1][0] < n_versions:
            assert time.monotonic() < deadline
            p = fast.wait_parameters(timeout=T)
            seen.append((p.version, p.data["version"], float(p.data["w"][0]), float(p.data["w"][-1])))
        done.set()

    threads, errors = run_threads([fast_reader])
    for v in range(1, n_versions + 1):
        assert learner.publish_parameters({"version": v, "w": np.full(size, float(v))}) == v
    join_all(threads, errors)
    assert done.is_set()
    versions = [s[0] for s in seen]
    assert versions == sorted(set(versions)), f"not strictly increasing: {versions}"
    assert versions[-1] == n_versions
    for v, dv, first, last in seen:
        assert dv == v and first == v and last == v, "parameters data does not match its version"

    p = slow_wait.wait_parameters(newer_than=n_versions - 1, timeout=T)
    assert p.version == n_versions and p.data["version"] == n_versions
    assert (p.data["w"] == n_versions).all()
    assert slow_wait.latest_parameters().version == n_versions

    latest = wait_until(lambda: (slow_poll.latest_parameters() or rlink.Parameters(0, {})).version
                        == n_versions)
    assert latest, f"latest_parameters() never reached {n_versions}"
    p = slow_poll.latest_parameters()
    assert p.data["version"] == n_versions and (p.data["w"] == n_versions).all()


def test_wait_parameters_versions_monotonic_under_concurrent_publish(learner, actor):
    n = 200
    got = []

    def reader():
        last = 0
        deadline = time.monotonic() + 30
        while last < n:
            assert time.monotonic() < deadline
            p = actor.wait_parameters(timeout=T)
            assert p.version > last
            assert p.data["v"] == p.version
            last = p.version
            got.append(last)

    threads, errors = run_threads([reader])
    for v in range(1, n + 1):
        learner.publish_parameters({"v": v, "x": np.arange(100)})
    join_all(threads, errors)
    assert got[-1] == n
    assert all(a < b for a, b in zip(got, got[1:]))


def test_wait_parameters_newer_than_already_held_returns_at_once(learner, actor):
    learner.publish_parameters({"v": 1})
    learner.publish_parameters({"v": 2})
    assert actor.wait_parameters(newer_than=1, timeout=T).version == 2
    # asking again for something newer than 0 or 1 returns the held version 2 at once
    assert actor.wait_parameters(newer_than=0, timeout=T).version == 2
    assert actor.wait_parameters(newer_than=1, timeout=T).version == 2
    with pytest.raises(rlink.TimeoutError):
        actor.wait_parameters(newer_than=2, timeout=0.2)


# --------------------------------------------------------------------------
# bidirectional
# --------------------------------------------------------------------------
def test_request_reply_4_actors(learner, make_actor):
    n_actors, n_req = 4, 50
    actors = [make_actor() for _ in range(n_actors)]
    ids = [a.actor_id for a in actors]
    stop = threading.Event()
    served = []

    def server():
        while len(served) < n_actors * n_req and not stop.is_set():
            try:
                req = learner.receive_request(timeout=0.5)
            except rlink.TimeoutError:
                continue
            assert isinstance(req.request_id, int)
            assert req.actor_id == ids[req.data["actor"]]
            served.append((req.data["actor"], req.data["k"]))
            req.reply({"actor": req.data["actor"], "k": req.data["k"] * 2})

    answers = [[] for _ in range(n_actors)]

    def client(i):
        def run():
            for k in range(n_req):
                answers[i].append(actors[i].request({"actor": i, "k": k}, timeout=T))
        return run

    srv_threads, srv_errors = run_threads([server])
    threads, errors = run_threads([client(i) for i in range(n_actors)])
    try:
        join_all(threads, errors)
    finally:
        stop.set()
        join_all(srv_threads, srv_errors)
    for i in range(n_actors):
        assert answers[i] == [{"actor": i, "k": 2 * k} for k in range(n_req)]
    assert sorted(served) == sorted((i, k) for i in range(n_actors) for k in range(n_req))


def test_request_times_out_without_reply(learner, actor):
    with pytest.raises(rlink.TimeoutError):
        actor.request({"q": 1}, timeout=0.3)
    req = learner.receive_request(timeout=T)
    assert req.data == {"q": 1}
    assert req.actor_id == actor.actor_id


def test_push_to_one_actor(learner, make_actor):
    a, b = make_actor(), make_actor()
    learner.send(a.actor_id, {"to": "a"}, timeout=T)
    assert a.receive(timeout=T) == {"to": "a"}
    with pytest.raises(rlink.TimeoutError):
        b.receive(timeout=0.3)
    for n in range(20):
        learner.send(b.actor_id, {"n": n, "x": np.arange(n)}, timeout=T)
    for n in range(20):
        got = b.receive(timeout=T)
        assert got["n"] == n and np.array_equal(got["x"], np.arange(n))
    with pytest.raises(rlink.TimeoutError):
        a.receive(timeout=0.3)


def test_push_to_unknown_actor(learner, actor):
    unknown = actor.actor_id ^ 1
    with pytest.raises(rlink.ConnectionLostError):
        learner.send(unknown, {"x": 1}, timeout=T)
    with pytest.raises(rlink.ConnectionLostError):
        learner.send(12345, {"x": 1}, timeout=T)


def test_push_to_departed_actor(learner, make_actor, wait_until):
    a = make_actor()
    aid = a.actor_id
    assert aid in learner.actors
    a.close()
    assert wait_until(lambda: aid not in learner.actors), "closed actor still listed"

    def send_fails():
        try:
            learner.send(aid, {"x": 1}, timeout=T)
        except rlink.ConnectionLostError:
            return True
        return False

    assert wait_until(send_fails)


def test_learner_actors_lists_connected(learner, make_actor, wait_until):
    assert learner.actors == []
    actors = [make_actor() for _ in range(3)]
    ids = {a.actor_id for a in actors}
    assert wait_until(lambda: set(learner.actors) == ids)
    gone = actors[1].actor_id
    actors[1].close()
    assert wait_until(lambda: set(learner.actors) == ids - {gone})


def test_mixed_patterns_on_one_pair(learner, actor):
    """Trajectories, requests, pushes and parameters interleave without mixing queues."""
    actor.send_trajectory({"kind": "traj", "n": 0}, timeout=T)
    learner.publish_parameters({"kind": "params"})
    learner.send(actor.actor_id, {"kind": "push"}, timeout=T)
    actor.send_trajectory({"kind": "traj", "n": 1}, timeout=T)
    got = []

    def serve():
        req = learner.receive_request(timeout=T)
        got.append(req.data)
        req.reply({"kind": "reply"})

    threads, errors = run_threads([serve])
    assert actor.request({"kind": "request"}, timeout=T) == {"kind": "reply"}
    join_all(threads, errors)
    assert got == [{"kind": "request"}]
    assert learner.receive(timeout=T) == {"kind": "traj", "n": 0}
    assert learner.receive(timeout=T) == {"kind": "traj", "n": 1}
    assert actor.receive(timeout=T) == {"kind": "push"}
    assert actor.wait_parameters(timeout=T).data == {"kind": "params"}
    with pytest.raises(rlink.TimeoutError):
        learner.receive(timeout=0.2)
    with pytest.raises(rlink.TimeoutError):
        learner.receive_request(timeout=0.2)


def test_concurrent_requests_on_one_actor(learner, actor):
    """Several threads share one actor; each gets the reply to its own request."""
    n_threads, n_req = 4, 50
    stop = threading.Event()

    def server():
        while not stop.is_set():
            try:
                req = learner.receive_request(timeout=0.2)
            except rlink.TimeoutError:
                continue
            assert req.actor_id == actor.actor_id
            req.reply({"t": req.data["t"], "k": req.data["k"], "sq": req.data["k"] ** 2})

    answers = [[] for _ in range(n_threads)]

    def client(t):
        def run():
            for k in range(n_req):
                answers[t].append(actor.request({"t": t, "k": k}, timeout=T))
        return run

    srv, srv_errors = run_threads([server])
    threads, errors = run_threads([client(t) for t in range(n_threads)])
    try:
        join_all(threads, errors)
    finally:
        stop.set()
        join_all(srv, srv_errors)
    for t in range(n_threads):
        assert answers[t] == [{"t": t, "k": k, "sq": k * k} for k in range(n_req)]


def test_replies_out_of_order(learner, actor):
    """The learner may answer requests in any order; each waiter gets its own reply."""
    n = 8
    results = {}

    def client(k):
        def run():
            results[k] = actor.request({"k": k}, timeout=T)
        return run

    threads, errors = run_threads([client(k) for k in range(n)])
    reqs = [learner.receive_request(timeout=T) for _ in range(n)]
    for req in reversed(reqs):
        req.reply({"k": req.data["k"], "echo": True})
    join_all(threads, errors)
    assert results == {k: {"k": k, "echo": True} for k in range(n)}


def test_late_replies_do_not_clog_the_actor(learner):
    """Replies to requests that already timed out are discarded, so they cannot
    fill a small receive queue and starve pushes, parameters and later replies."""
    with rlink.ActorNode(learner.address, connect_timeout=T, max_queue_messages=4) as actor:
        for i in range(30):
            with pytest.raises(rlink.TimeoutError):
                actor.request({"i": i}, timeout=0.01)
            req = learner.receive_request(timeout=T)
            assert req.data == {"i": i}
            req.reply({"late": i})
        for k in range(10):
            learner.send(actor.actor_id, {"push": k}, timeout=T)
        for k in range(10):
            assert actor.receive(timeout=T) == {"push": k}
        learner.publish_parameters({"p": 1})
        assert actor.wait_parameters(timeout=T).data == {"p": 1}

        def serve():
            req = learner.receive_request(timeout=T)
            req.reply({"fresh": req.data["q"]})

        threads, errors = run_threads([serve])
        assert actor.request({"q": 5}, timeout=T) == {"fresh": 5}
        join_all(threads, errors)
        with pytest.raises(rlink.TimeoutError):
            actor.receive(timeout=0.2)


class _RendezvousCore:
    """Wraps a node's core so that two threads calling publish() meet inside it
    (up to 1 s) before publishing: this makes the race between concurrent
    publish_parameters calls happen every time instead of by chance. A
    thread-safe LearnerNode serialises the calls, the rendezvous times out, and
    the test passes."""

    def __init__(self, core):
        self._real = core
        self._barrier = threading.Barrier(2)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def publish(self, *args, **kwargs):
        try:
            self._barrier.wait(timeout=1.0)
        except threading.BrokenBarrierError:
            pass
        return self._real.publish(*args, **kwargs)


def test_concurrent_publish_gets_distinct_versions(learner, actor):
    if not hasattr(learner, "_core"):
        pytest.skip("LearnerNode internals changed; this test wraps learner._core")
    real = learner._core
    learner._core = _RendezvousCore(real)
    try:
        versions = []

        def publish(t):
            def run():
                versions.append(learner.publish_parameters({"t": t}))
            return run

        threads, errors = run_threads([publish(0), publish(1)])
        join_all(threads, errors, timeout=T)
    finally:
        learner._core = real
    assert sorted(versions) == [1, 2]
    assert learner.publish_parameters({"t": 2}) == 3
    p = actor.wait_parameters(newer_than=2, timeout=T)
    assert p.version == 3 and p.data == {"t": 2}


def test_push_to_actor_id_zero_is_unknown(learner, make_actor):
    a, b = make_actor(), make_actor()
    assert 0 not in (a.actor_id, b.actor_id)
    with pytest.raises(rlink.ConnectionLostError):
        learner.send(0, {"x": 0}, timeout=T)


def test_reply_to_departed_actor(learner, wait_until):
    actor = rlink.ActorNode(learner.address, connect_timeout=T)
    try:
        with pytest.raises(rlink.TimeoutError):
            actor.request({"q": 1}, timeout=0.05)
        req = learner.receive_request(timeout=T)
    finally:
        actor.close()
    aid = req.actor_id
    assert wait_until(lambda: aid not in learner.actors)
    with pytest.raises(rlink.ConnectionLostError):
        req.reply({"late": True}, timeout=T)


def test_receive_requests_takes_a_batch(learner, make_actor):
    actors = [make_actor() for _ in range(3)]
    replies: dict[int, dict] = {}

    def ask(a):
        replies[a.actor_id] = a.request({"from": a.actor_id}, timeout=T)

    threads = [threading.Thread(target=ask, args=(a,)) for a in actors]
    for th in threads:
        th.start()
    batch: list = []
    deadline = time.monotonic() + T
    while len(batch) < 3 and time.monotonic() < deadline:
        batch += learner.receive_requests(8, timeout=T)
    assert sorted(r.data["from"] for r in batch) == sorted(a.actor_id for a in actors)
    for r in batch:
        r.reply({"to": r.actor_id})
    for th in threads:
        th.join(T)
    assert replies == {a.actor_id: {"to": a.actor_id} for a in actors}


@pytest.mark.parametrize("learner_spin, actor_spin", [(0, 0), (50, 0), (0, 50), (2000, 2000)])
def test_request_reply_with_and_without_spinning(learner_spin, actor_spin):
    with rlink.LearnerNode(port=0, wait_spin_us=learner_spin) as learner, \
            rlink.ActorNode(learner.address, wait_spin_us=actor_spin, connect_timeout=T) as actor:
        def server():
            for _ in range(200):
                req = learner.receive_request(timeout=T)
                req.reply({"k": req.data["k"] + 1})

        threads, errors = run_threads([server])
        got = [actor.request({"k": k}, timeout=T)["k"] for k in range(200)]
        join_all(threads, errors)
        assert got == [k + 1 for k in range(200)]
        with pytest.raises(rlink.TimeoutError):   # nothing to answer: spin, then sleep, then time out
            learner.receive_request(timeout=0.05)


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_wait_spin_us_is_checked(bad, exc):
    with pytest.raises(exc):
        rlink.LearnerNode(port=0, wait_spin_us=bad)
