"""Shared fixtures for the rlink test suite.

pytest runs in importlib mode (see pyproject.toml), so test modules cannot
import a helpers module from this directory; shared pieces live here as
fixtures. Every node is created with ``port=0`` and closed on teardown.
"""
from __future__ import annotations

import os
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


@pytest.fixture
def actor(learner):
    with rlink.ActorNode(learner.address, connect_timeout=T) as node:
        yield node


@pytest.fixture
def make_actor(learner):
    """Factory for extra actors connected to ``learner``; all closed on teardown."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("connect_timeout", T)
        node = rlink.ActorNode(learner.address, **kwargs)
        made.append(node)
        return node

    yield make
    for node in reversed(made):
        node.close()
