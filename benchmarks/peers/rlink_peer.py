"""rlink: LearnerNode / ActorNode with their documented calls and defaults.

One-way: actor.send_trajectory(d) / learner.receive_many(256).
Broadcast: learner.publish_parameters(d, version) / actor.wait_parameters().
Round trip: actor.request(d) / learner.receive_request().reply(d).
reliable=True makes the learner reliable (every session is; the actors learn
the mode in the handshake). copy=False: send_trajectory(d, copy=False), the
pooled payload rewritten only after its tracker is done.

"rlink" and "rlink-reliable": actors use local=False, TCP loopback, like every
other peer here. "rlink-local" (local=True): the actors keep rlink's defaults
on one host, an abstract AF_UNIX socket and, for trajectories whose arrays
total 64 KiB or more, a shared-memory region of the default shm_bytes
(PROTOCOL.md 2.2).

Every actor endpoint reports what it actually used (.info(): transport,
shared_memory, stream messages/bytes out); the harness records it per trial.
The transport is checked when the actor has connected and again by .info()
after the last send, unless the learner has already closed the connection
by then (it had everything: "end": "disconnected", the connect-time record
stands).
An actor that did not get the transport its peer stands for raises at once:
a TCP peer not on TCP, a local one not on unix, or a local trajectory sender
without its shared-memory region (run.py checks the records again)."""
from __future__ import annotations

import time

from .framing import answer, wait_version

CONNECT_TIMEOUT = 60.0


class RLink:
    library = "rlink"

    def __init__(self, reliable: bool = False, local: bool = False, copy: bool = True):
        self.reliable = reliable
        self.local = local
        self.copy = copy

    # ---------------------------------------------------------- one-way
    def oneway_receiver(self, kind: str, n_senders: int):
        return _Receiver(self.reliable)

    def oneway_sender(self, address: str, kind: str):
        return _Sender(address, self.local, need_shm=self.local and kind == "trajectory",
                       copy=self.copy)

    # -------------------------------------------------------- broadcast
    def bcast_publisher(self, n_subscribers: int):
        return _Publisher(self.reliable, n_subscribers)

    def bcast_subscriber(self, address: str):
        return _Subscriber(address, self.local)

    # ------------------------------------------------------- round trip
    def rr_server(self):
        return _Server(self.reliable)

    def rr_client(self, address: str):
        return _Client(address, self.local)


def _actor(address, local, need_shm=False):
    """-> (ActorNode, its checked connect-time info). local=False -> TCP;
    local=True -> rlink's own defaults (local=True, default shm_bytes:
    nothing passed). Raises unless it got the transport (and, if need_shm,
    the shared-memory region) asked for."""
    import rlink
    kw = {} if local else {"local": False}
    actor = rlink.ActorNode(learner_address=address, connect_timeout=CONNECT_TIMEOUT, **kw)
    try:
        info = _info(actor)
        _check(info, local, need_shm)
    except BaseException:
        actor.close(timeout=1.0)
        raise
    return actor, info


class _ActorEndpoint:
    local = need_shm = False
    actor = connected = None

    def info(self):
        end = _info(self.actor)
        if end["transport"] is None:   # the learner closed first: it had everything
            return dict(self.connected, end="disconnected")
        _check(end, self.local, self.need_shm)   # still on it at the end
        return dict(end, end="connected")


def _info(actor) -> dict:
    st = actor.stats()
    return {"transport": st.get("transport"), "shared_memory": st.get("shared_memory"),
            "messages_out": st.get("messages_out"), "bytes_out": st.get("bytes_out")}


def _check(info, local, need_shm):
    want = "unix" if local else "tcp"
    if info["transport"] != want:
        raise TransportMismatch(f"actor connected over {info['transport']!r}, expected {want!r} "
                                f"(local={local}); stats: {info}")
    if need_shm and not info["shared_memory"]:
        raise TransportMismatch(f"actor on {info['transport']!r} has no shared-memory region "
                                f"(shared_memory={info['shared_memory']!r}); stats: {info}")


class TransportMismatch(RuntimeError):
    pass


class _Receiver:
    def __init__(self, reliable):
        import rlink
        self._timeout_exc = rlink.TimeoutError
        self.learner = rlink.LearnerNode(port=0, reliable=reliable)
        self.address = self.learner.address

    def recv_batch(self, timeout):
        try:
            return [m.data for m in self.learner.receive_many(256, timeout=timeout)]
        except self._timeout_exc:
            return []

    def close(self):
        self.learner.close(timeout=1.0)


class _Sender(_ActorEndpoint):
    def __init__(self, address, local, need_shm, copy=True):
        self.local, self.need_shm = local, need_shm
        self.actor, self.connected = _actor(address, local, need_shm)
        if not copy:
            self.send = self._send_by_reference
            self.wait = self._wait_acked

    def send(self, payload):
        self.actor.send_trajectory(payload, timeout=30.0)
        return None   # the arrays may be reused as soon as send_trajectory returns

    def wait(self, token):
        pass

    # copy=False: the pooled payload is rewritten only once acknowledged,
    # as the zmq peer waits for its frames' trackers
    def _send_by_reference(self, payload):
        return self.actor.send_trajectory(payload, timeout=30.0, copy=False)

    def _wait_acked(self, tracker):
        tracker.wait(30.0)

    def close(self):
        # Reliable mode: close() discards un-acknowledged trajectories; the
        # harness only closes after the receiver has everything.
        self.actor.close(timeout=5.0)


class _Publisher:
    def __init__(self, reliable, n):
        import rlink
        self.learner = rlink.LearnerNode(port=0, reliable=reliable)
        self.address = self.learner.address
        self.n = n

    def wait_subscribers(self, timeout):
        deadline = time.monotonic() + timeout
        while len(self.learner.actors) < self.n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.learner.actors)} of {self.n} actors connected")
            time.sleep(0.01)

    def publish(self, version, params):
        self.learner.publish_parameters(params, version=version)

    def close(self):
        self.learner.close(timeout=1.0)


class _Subscriber(_ActorEndpoint):
    def __init__(self, address, local):
        self.local = local
        self.actor, self.connected = _actor(address, local)

    def wait(self, version, timeout):
        deadline = time.monotonic() + timeout

        def recv():
            p = self.actor.wait_parameters(newer_than=version - 1,
                                           timeout=max(0.0, deadline - time.monotonic()))
            return p.version, p.data
        return wait_version(recv, version)

    def close(self):
        self.actor.close(timeout=1.0)


class _Server:
    def __init__(self, reliable):
        import rlink
        self.learner = rlink.LearnerNode(port=0, reliable=reliable)
        self.address = self.learner.address

    def serve(self, count, timeout):
        recv = self.learner.receive_request
        for _ in range(count):
            req = recv(timeout=timeout)
            req.reply(answer(req.data))

    def close(self):
        self.learner.close(timeout=1.0)


class _Client(_ActorEndpoint):
    def __init__(self, address, local):
        self.local = local
        self.actor, self.connected = _actor(address, local)

    def request(self, d, timeout):
        return self.actor.request(d, timeout=timeout)

    def close(self):
        self.actor.close(timeout=1.0)
