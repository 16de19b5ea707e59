# Stubs for the compiled module rlink._core (rlink/_core.pyx). Private API:
# use rlink.LearnerNode and rlink.ActorNode. Checked against the built module
# by `python -m mypy.stubtest rlink._core` (tests/test_typing.py).
from typing import Any, Final, TypeVar, overload

from typing_extensions import Buffer, Self, disjoint_base  # stubs only: never imported at run time

_T = TypeVar("_T")

PROTOCOL_VERSION: Final[int]

Q_TRAJ: Final[int]
Q_REQUEST: Final[int]
Q_PUSH: Final[int]
Q_REPLY: Final[int]
KIND_TRAJ: Final[int]
KIND_REQUEST: Final[int]
KIND_REPLY: Final[int]
KIND_PUSH: Final[int]
KIND_PARAMS: Final[int]
ROLE_ACTOR: Final[int]
ROLE_LEARNER: Final[int]
EV_JOINED: Final[int]
EV_LEFT: Final[int]
EV_REJECTED: Final[int]
FLAG_REDELIVERED: Final[int]
E_CONNREFUSED: Final[int]
E_TIMEDOUT: Final[int]
E_INVAL: Final[int]
MAX_NDIM: Final[int]
MAX_DEPTH: Final[int]
DEFAULT_LIMITS: Final[dict[str, int]]

def hmac_sha256(key: Buffer, msg: Buffer) -> bytes:
    """HMAC-SHA256 as the handshake computes it (for tests and other
    implementations to check against)."""

def encode_frame(obj: dict[str, Any], kind: int = ..., ref: int = 0) -> bytes:
    """Encode obj as one complete frame and return it as bytes."""

def decode_frame(frame: Buffer, max_message_bytes: int = ...) -> tuple[int, int, Any]:
    """Validate and decode one complete frame. Returns (kind, ref, value)."""

@disjoint_base
class _Node:
    """A C node. Thread-safe: methods may be called from several threads."""

    @property
    def role(self) -> int: ...
    @property
    def node_id(self) -> int: ...
    # The arguments go to __cinit__, i.e. to tp_new.
    def __new__(
        cls,
        role: int,
        reliable: bool = False,
        retry_attempts: int = 3,
        queue_max_msgs: int = 1024,
        queue_max_bytes: int = ...,
        sendq_max_bytes: int = ...,
        max_message_bytes: int = ...,
        handshake_timeout_ms: int = 5000,
        heartbeat_ms: int = 1000,
        peer_timeout_ms: int = 5000,
        retain_max_bytes: int = ...,
        *,
        max_connections: int = 0,
        auth_key: bytes = b"",
        limits: dict[str, int] | None = None,
        local: bool = True,
        shm_bytes: int = ...,
        shm_min_bytes: int = ...,
        wait_spin_us: int = 50,
    ) -> Self: ...
    @property
    def keyed(self) -> bool: ...
    def listen(self, host: str, port: int) -> int: ...
    def listen_ipc(self, path: str) -> None: ...
    def connect(self, host: str, port: int, timeout: float) -> tuple[int, bool, int] | int: ...
    def connect_ipc(self, path: str, timeout: float) -> tuple[int, bool, int] | int: ...
    def start(self) -> None: ...
    def send(self, peer_id: int, kind: int, ref: int, obj: dict[str, Any], timeout: float | None,
             copy: bool = True) -> int | None: ...
    def publish(self, version: int, obj: dict[str, Any]) -> None: ...
    @overload
    def recv(self, q: int, max_count: int, timeout: float | None,
             message: None = None) -> list[tuple[int, int, int, Any]]: ...
    @overload
    def recv(self, q: int, max_count: int, timeout: float | None, message: type[_T]) -> list[_T]: ...
    def wait_reply(self, request_id: int, gen: int, timeout: float | None) -> Any: ...
    def take_params(self, newer_than: int, timeout: float | None) -> tuple[int, Any]: ...
    def conn_gen(self) -> int: ...
    def learner_id(self) -> int: ...
    def wait_acked(self, timeout: float | None, upto: int = ...) -> bool: ...
    def wait_lost(self, timeout: float) -> bool: ...
    def fail(self, reason: str) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def peer_stats(self) -> dict[int, dict[str, Any]]: ...
    def peers(self) -> list[int]: ...
    def events(self) -> list[tuple[int, int, int, str]]: ...
    def lost_reason(self) -> str: ...
    def abandon(self) -> None: ...
    def close(self, timeout: float) -> None: ...
    def _raise(self, rc: int, what: str, timeout: float | None) -> None: ...
