"""Transports under test. Each module defines one peer class with the same
methods; benchmarks/harness.py drives them from separate processes.

One-way (W1, W2, scaling):
    receiver = peer.oneway_receiver(kind, n_senders)
        .address, .recv_batch(timeout) -> list[dict], .close()
    sender = peer.oneway_sender(address, kind)
        .send(payload) -> token or None, .wait(token), .close()
        optional .info() -> dict (what the connection actually is, e.g.
        {"transport": "unix", "shared_memory": True}); also on broadcast
        subscribers and round-trip clients; recorded per trial
    A sender may overwrite a payload once .wait(token) has returned for the
    token its last send of that payload returned (None: at once).

Broadcast (W3):
    pub = peer.bcast_publisher(n_subscribers)
        .address, .wait_subscribers(timeout), .publish(version, params), .close()
    sub = peer.bcast_subscriber(address)
        .wait(version, timeout) -> dict (the parameters of that version), .close()

Round trip (W4):
    server = peer.rr_server()
        .address, .serve(count, timeout) (answer count requests), .close()
    client = peer.rr_client(address)
        .request(dict, timeout) -> dict, .close()

Peers import their library lazily (inside these methods) so that the
harness process never loads a library it does not run.
"""
from __future__ import annotations

import importlib

PEERS = {
    "rlink": ("rlink_peer", "RLink", {"reliable": False}),
    "rlink-local": ("rlink_peer", "RLink", {"reliable": False, "local": True}),
    "rlink-reliable": ("rlink_peer", "RLink", {"reliable": True}),
    "rlink-local-reliable": ("rlink_peer", "RLink", {"reliable": True, "local": True}),
    "rlink-reliable-nocopy": ("rlink_peer", "RLink", {"reliable": True, "copy": False}),
    "pyzmq": ("zmq_peer", "PyZMQ", {}),
    "portal": ("portal_peer", "Portal", {}),
    "mp.connection": ("mpconn_peer", "MPConnection", {}),
    "socket+pickle5": ("pickle5_peer", "SocketPickle5", {}),
}


def get_peer(name: str):
    mod, cls, kw = PEERS[name]
    module = importlib.import_module(f"{__name__}.{mod}")
    return getattr(module, cls)(**kw)
