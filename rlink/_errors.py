"""Exception classes raised by rlink. All derive from RLinkError."""
import builtins


class RLinkError(Exception):
    """Base class of every rlink error."""


class ConnectError(RLinkError, ConnectionError):
    """Could not connect to the learner within ``connect_timeout``."""


class AuthenticationError(ConnectError):
    """The two nodes do not hold the same ``auth_key`` (or only one has one)."""


class ConnectionLostError(RLinkError, ConnectionError):
    """The peer went away (closed, crashed, or the network failed)."""


class TimeoutError(RLinkError, builtins.TimeoutError):
    """A blocking call's ``timeout`` passed. Also a builtin ``TimeoutError``."""


class ProtocolError(RLinkError):
    """The peer is not an rlink node of a compatible version, or broke the protocol."""


class MessageTooLargeError(RLinkError, ValueError):
    """A message exceeds ``max_message_bytes``; nothing was sent."""


class ClosedError(RLinkError):
    """The node was closed (possibly by another thread), or is used in a forked child."""


class AddressInUseError(RLinkError, OSError):
    """The learner's port is already taken by another socket."""
