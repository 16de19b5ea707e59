"""rlink: LearnerNode / ActorNode with their documented calls and defaults.

One-way: actor.send_trajectory(d) / learner.receive_many(256).
Broadcast: learner.publish_parameters(d, version) / actor.wait_parameters().
Round trip: actor.request(d) / learner.receive_request().reply(d).
reliable=True makes the learner reliable (every session is; the actors learn
the mode in the handshake). Actors use local=False: TCP loopback, like every
other peer here (rlink's default on one host is AF_UNIX)."""
from __future__ import annotations

import time

from .framing import answer, wait_version

CONNECT_TIMEOUT = 60.0


class RLink:
    library = "rlink"

    def __init__(self, reliable: bool = False):
        self.reliable = reliable

    # ---------------------------------------------------------- one-way
    def oneway_receiver(self, kind: str, n_senders: int):
        return _Receiver(self.reliable)

    def oneway_sender(self, address: str, kind: str):
        return _Sender(address)

    # -------------------------------------------------------- broadcast
    def bcast_publisher(self, n_subscribers: int):
        return _Publisher(self.reliable, n_subscribers)

    def bcast_subscriber(self, address: str):
        return _Subscriber(address)

    # ------------------------------------------------------- round trip
    def rr_server(self):
        return _Server(self.reliable)

    def rr_client(self, address: str):
        return _Client(address)


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


class _Sender:
    def __init__(self, address):
        import rlink
        self.actor = rlink.ActorNode(learner_address=address, connect_timeout=CONNECT_TIMEOUT, local=False)

    def send(self, payload):
        self.actor.send_trajectory(payload, timeout=30.0)
        return None   # the arrays may be reused as soon as send_trajectory returns

    def wait(self, token):
        pass

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


class _Subscriber:
    def __init__(self, address):
        import rlink
        self.actor = rlink.ActorNode(learner_address=address, connect_timeout=CONNECT_TIMEOUT, local=False)

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


class _Client:
    def __init__(self, address):
        import rlink
        self.actor = rlink.ActorNode(learner_address=address, connect_timeout=CONNECT_TIMEOUT, local=False)

    def request(self, d, timeout):
        return self.actor.request(d, timeout=timeout)

    def close(self):
        self.actor.close(timeout=1.0)
