"""Shared fixtures for the rlink test suite.

pytest runs in importlib mode (see pyproject.toml), so test modules cannot
import a helpers module from this directory; shared pieces live here as
fixtures. Every node is created with ``port=0`` and closed on teardown.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

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
# turned off) and "unix" (an actor on the learner's host, which moves to
# AF_UNIX by itself).
TRANSPORTS = ["tcp", "unix"] if sys.platform.startswith("linux") else ["tcp"]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


def _check_transport(node, transport):
    got = node.stats()["transport"]
    assert got == transport, f"the actor connected over {got}, not {transport}"


@pytest.fixture
def actor(learner, transport):
    with rlink.ActorNode(learner.address, connect_timeout=T, local=transport == "unix") as node:
        _check_transport(node, transport)
        yield node


@pytest.fixture
def make_actor(learner, transport):
    """Factory for extra actors connected to ``learner``; all closed on teardown."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("connect_timeout", T)
        kwargs.setdefault("local", transport == "unix")
        node = rlink.ActorNode(learner.address, **kwargs)
        made.append(node)
        if kwargs["local"] == (transport == "unix"):
            _check_transport(node, transport)
        return node

    yield make
    for node in reversed(made):
        node.close()
