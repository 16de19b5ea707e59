"""rlink: a fast transport between reinforcement-learning actors and learners.

    learner = rlink.LearnerNode(port=5555)
    actor = rlink.ActorNode(learner_address="localhost:5555")
    actor.send_trajectory({"obs": obs, "actions": actions, "rewards": rewards})
    data = learner.receive()
"""
from rlink._version import __version__

try:
    from rlink import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - only from an unbuilt source tree
    raise ImportError(
        "rlink's compiled core (rlink._core) is not available. Install the package "
        "(`pip install .`) and run Python outside the source tree, or build in place with "
        "`python setup.py build_ext --inplace`. Original error: " + str(e)) from e

from rlink._errors import (
    AddressInUseError, AuthenticationError, ClosedError, ConnectError, ConnectionLostError, MessageTooLargeError,
    ProtocolError, RLinkError, TimeoutError,
)
from rlink._nodes import ActorNode, Event, LearnerNode, Message, Parameters, Request, Tracker
from rlink._torch import as_torch

__all__ = [
    "__version__", "LearnerNode", "ActorNode", "Message", "Parameters", "Request", "Event", "Tracker",
    "as_torch",
    "RLinkError", "ConnectError", "ConnectionLostError", "TimeoutError", "ProtocolError",
    "MessageTooLargeError", "ClosedError", "AddressInUseError", "AuthenticationError",
]
