"""Hostile peers against a live learner.

Every case below opens raw TCP connections to a ``LearnerNode(port=0)`` and
misbehaves (bad hellos, bad headers, bad metas, wrong directions, slow or
silent peers, connection floods), while a well-behaved ``ActorNode`` streams
1,000 messages to the same learner. For each case the test checks that

(a) the good actor's 1,000 messages all arrive, in order and intact;
(b) the learner still serves: a fresh actor connects and round-trips;
(c) the learner closed the bad connection (EOF or reset on the raw socket,
    within a deadline) and logged the expected reason through
    ``logging.getLogger("rlink")`` ("... dropped a connection: <reason>" at
    WARNING for rejections, "... left: <reason>" at INFO for departures),
    ``stats()["rejected"]`` moved by exactly the expected count, and no frame
    of a hostile peer was ever delivered to the application.

Frames are built by hand from PROTOCOL.md (little-endian ``struct``), or taken
from ``rlink._core.encode_frame`` and mutated. Reason strings are those of
csrc/rl_node.c (``conn_read``, ``deliver``, ``finish_handshake``, the I/O
loop) and csrc/rl_frame.c (``rl_meta_validate``).

Adding a case is a one-function change: write a function taking the
``Hostile`` context and decorate it with ``@case(<expected reason>, ...)``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import hmac
import itertools
import logging
import os
import select
import socket
import struct
import threading
import time
from typing import Callable

import numpy as np
import pytest

import rlink
from rlink import _core

T = 10.0                    # bound on every wait: a bug fails, never hangs
N_GOOD = 1000               # messages the good actor streams during each case

# --------------------------------------------------------------------------
# the wire format, by hand (PROTOCOL.md sections 3-5)
# --------------------------------------------------------------------------
HELLO = struct.Struct("<4sHBBQQII")           # 32 bytes
HEADER = struct.Struct("<BBHIQQQQII")         # 48 bytes
assert HELLO.size == 32 and HEADER.size == 48

TRAJ, PARAMS, REQUEST, REPLY, PUSH, ACK, HEARTBEAT, BYE = range(1, 9)
CHECKSUM = 0x02
ROLE_ACTOR, ROLE_LEARNER = 1, 2
DT_FLOAT32 = 11
MAX_ITEMS = 1 << 20          # rl_limits_default
MAX_STR_BYTES = 1 << 26

_ids = itertools.count(0x0BAD_0000_0001)


def new_id() -> int:
    """A node id for a raw peer (the good actor's is random 63-bit: no clash)."""
    return next(_ids)


def hello(*, magic=b"RLNK", version=1, role=ROLE_ACTOR, flags=0, node_id=None,
          resume_seq=0, max_message=1024, retry_attempts=0) -> bytes:
    return HELLO.pack(magic, version, role, flags, new_id() if node_id is None else node_id,
                      resume_seq, max_message, retry_attempts)


def header(kind, meta_len, data_len=0, *, flags=0, reserved=0, seq=0, ack=0, ref=0,
           crc=0, hcrc=0) -> bytes:
    return HEADER.pack(kind, flags, reserved, meta_len, data_len, seq, ack, ref, crc, hcrc)


def frame(kind, meta, data=b"", **fields) -> bytes:
    """header + meta (+ zero padding to a multiple of 64 + data when data)."""
    pad = (-(48 + len(meta))) % 64 if data else 0
    return header(kind, len(meta), len(data), **fields) + meta + bytes(pad) + data


def u32(n) -> bytes:
    return struct.pack("<I", n)


def u64(n) -> bytes:
    return struct.pack("<Q", n)


def m_none() -> bytes:
    return b"\x00"


def m_int(v) -> bytes:
    return b"\x03" + struct.pack("<q", v)


def m_str(raw: bytes) -> bytes:
    return b"\x06" + u32(len(raw)) + raw


def m_list(*items) -> bytes:
    return b"\x08" + u32(len(items)) + b"".join(items)


def m_dict(*pairs) -> bytes:
    """pairs of (key bytes, encoded value)."""
    return b"\x0a" + u32(len(pairs)) + b"".join(u32(len(k)) + k + v for k, v in pairs)


def m_array(dtype, shape, offset, *, aflags=0, ndim=None) -> bytes:
    return (b"\x0b" + bytes([dtype, len(shape) if ndim is None else ndim, aflags])
            + b"".join(u64(d) for d in shape) + u64(offset))


def traj(value_meta: bytes, data=b"", **fields) -> bytes:
    """A TRAJ frame whose root dict holds ``value_meta`` under key "x"."""
    return frame(TRAJ, m_dict((b"x", value_meta)), data, **fields)


GOOD_META = m_dict((b"a", m_int(1)))           # PROTOCOL.md 10.2's {"a": 1}


# --------------------------------------------------------------------------
# sockets
# --------------------------------------------------------------------------
def recv_exactly(sock, n, timeout=T) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"peer closed after {len(out)} of {n} bytes"
        out += chunk
    return out


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def wait_until(wait_until):
    """conftest.py's, polling every 10 ms here."""
    return functools.partial(wait_until, interval=0.01)


class Hostile:
    """What a case gets: the learner, the good actor, and raw-socket helpers.
    Every socket opened through ``connect`` is closed when the test ends."""

    def __init__(self, learner, good, stack, received, wait_until, peer_closed, seal):
        self.learner = learner
        self.good = good
        self.wait_until = wait_until        # the fixtures (conftest.py), for the cases
        self.peer_closed = peer_closed
        self.seal = seal
        self.port = learner.port
        self._stack = stack
        self._received = received
        self.expected = {}      # node id -> expected message count (positive controls)

    def connect(self, rcvbuf=None) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._stack.callback(s.close)
        if rcvbuf is not None:      # before connect: also turns off receive autotuning
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(T)
        s.connect(("127.0.0.1", self.port))
        return s

    def handshake(self, sock, **hello_fields) -> bytes:
        """Send a hello, read and check the learner's 32-byte answer."""
        sock.sendall(hello(**hello_fields))
        reply = recv_exactly(sock, 32)
        magic, version, role, flags, node_id, _resume, _mm, _ra = HELLO.unpack(reply)
        assert (magic, version, role) == (b"RLNK", _core.PROTOCOL_VERSION, ROLE_LEARNER), reply
        assert node_id != 0
        if hello_fields.get("flags", 0) & 1:
            assert flags & 1, "the learner did not confirm reliable mode"
        return reply

    def expect_closed(self, sock, timeout=T) -> bytes:
        closed, head, _total = self.peer_closed(sock, timeout)
        assert closed, f"the learner did not close the connection within {timeout} s"
        return head

    def violate(self, payload: bytes, *, handshake=True, **hello_fields) -> bytes:
        """Connect, (hello,) send payload, and require the learner to close.
        Returns what the learner sent after its hello."""
        s = self.connect()
        if handshake:
            self.handshake(s, **hello_fields)
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass        # closed before we finished writing: checked below
        return self.expect_closed(s)

    def delivered_from(self, node_id) -> list:
        return [d for a, d in list(self._received) if a == node_id]

    def expect_delivery(self, node_id, count=1):
        self.expected[node_id] = count


# --------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[[Hostile], None]
    reason: str                     # phrase the logged reason must contain
    event: str = "rejected"         # "rejected" (WARNING, counted) or "left" (INFO)
    count: int = 1                  # rejections expected (event == "rejected")
    learner: dict = dataclasses.field(default_factory=dict)   # LearnerNode kwargs


CASES: dict[str, Case] = {}


def case(reason, *, event="rejected", count=1, **learner_kwargs):
    """Register the decorated function as a corpus case (its name is the id)."""
    assert event in ("rejected", "left")

    def register(fn):
        assert fn.__name__ not in CASES, fn.__name__
        CASES[fn.__name__] = Case(fn.__name__, fn, reason, event, count, learner_kwargs)
        return fn
    return register


BAD_HEADER = "malformed or corrupted frame header"
TOO_LARGE = "frame larger than max_message_bytes"
WRONG_DIRECTION = "unexpected frame kind for this direction"


# ---- the hello -----------------------------------------------------------
@case("peer closed the connection during the handshake")
def hello_truncated_then_close(ctx):
    s = ctx.connect()
    s.sendall(hello()[:10])
    s.shutdown(socket.SHUT_WR)
    assert ctx.expect_closed(s) == b""


@case("bad handshake: not an rlink peer (no RLNK magic)")
def garbage_hello(ctx):
    junk = b"GET / HTTP/1.1\r\nHost: rlink\r\n\r\n"
    assert ctx.violate(junk + b"x" * (32 - len(junk)), handshake=False) == b"", \
        "the learner answered a peer that is not rlink"


@case("bad handshake: not an rlink peer (no RLNK magic)")
def hello_wrong_magic(ctx):
    assert ctx.violate(hello(magic=b"RLNX"), handshake=False) == b""


@case(f"peer speaks rlink protocol version {0xBEEF}, this node speaks {_core.PROTOCOL_VERSION}")
def hello_wrong_version(ctx):
    got = ctx.violate(hello(version=0xBEEF), handshake=False)
    # PROTOCOL.md 3.2: the learner answers with its own hello, then closes
    assert len(got) == 32, got
    magic, version, role, _flags, node_id, *_ = HELLO.unpack(got)
    assert (magic, version, role) == (b"RLNK", _core.PROTOCOL_VERSION, ROLE_LEARNER)
    assert node_id != 0


@case("peer is not an actor")
def hello_role_learner(ctx):
    assert ctx.violate(hello(role=ROLE_LEARNER), handshake=False) == b""


@case("bad handshake: unknown role")
def hello_role_unknown(ctx):
    assert ctx.violate(hello(role=7), handshake=False) == b""


@case("bad handshake: node_id is 0")
def hello_node_id_zero(ctx):
    # rl_hello_decode forbids node_id 0 (PROTOCOL.md 3.1)
    assert ctx.violate(hello(node_id=0), handshake=False) == b""


@case("bad handshake: unknown flag bits")
def hello_reserved_flag_bits(ctx):
    assert ctx.violate(hello(flags=0x80), handshake=False) == b""


@case("handshake not completed in time", handshake_timeout=0.5)
def slowloris_hello(ctx):
    """One hello byte every 100 ms against a 0.5 s handshake timeout."""
    s = ctx.connect()
    data = hello()
    closed = False
    for i in range(len(data)):
        # pacing and the check for the learner's close in one: wait 100 ms
        readable, _, _ = select.select([s], [], [], 0.1)
        if readable:
            closed, head, _ = ctx.peer_closed(s, T)
            assert head == b""
            break
        try:
            s.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
    else:
        closed, _, _ = ctx.peer_closed(s, T)
    assert closed, "a trickled hello was never timed out"
    assert i < len(data) - 1, "the whole hello went out before the learner gave up"


@case("handshake not completed in time", handshake_timeout=0.5)
def silent_peer(ctx):
    s = ctx.connect()
    assert ctx.expect_closed(s) == b""


# ---- the frame header ------------------------------------------------------
@case("peer closed the connection in the middle of a frame", event="left")
def truncated_header_then_close(ctx):
    s = ctx.connect()
    ctx.handshake(s)
    s.sendall(frame(TRAJ, GOOD_META)[:20])
    s.shutdown(socket.SHUT_WR)
    ctx.expect_closed(s)


@case("peer closed the connection in the middle of a frame", event="left")
def truncated_body_then_close(ctx):
    s = ctx.connect()
    ctx.handshake(s)
    f = frame(TRAJ, GOOD_META)
    s.sendall(f[:-3])
    s.shutdown(socket.SHUT_WR)
    ctx.expect_closed(s)


@case(TOO_LARGE)
def data_len_2pow63(ctx):
    ctx.violate(header(TRAJ, len(GOOD_META), 1 << 63) + GOOD_META)


@case(TOO_LARGE)
def data_len_u64_max(ctx):
    ctx.violate(header(TRAJ, len(GOOD_META), (1 << 64) - 1) + GOOD_META)


@case(TOO_LARGE)
def meta_len_u32_max(ctx):
    ctx.violate(header(TRAJ, (1 << 32) - 1) + GOOD_META)


@case(TOO_LARGE, max_message_bytes=1 << 20)
def frame_one_byte_over_max_message_bytes(ctx):
    # frame_size = roundup(48 + meta_len, 64) + data_len = 2^20 + 1
    ctx.violate(header(TRAJ, len(GOOD_META), (1 << 20) + 1 - 128) + GOOD_META)


@case(BAD_HEADER)
def reserved_header_bytes_nonzero(ctx):
    ctx.violate(frame(TRAJ, GOOD_META, reserved=1))


@case(BAD_HEADER)
def unknown_frame_kind_11(ctx):
    ctx.violate(frame(11, GOOD_META))


@case(BAD_HEADER)
def shm_region_frame_with_a_body(ctx):
    ctx.violate(frame(9, GOOD_META))


@case(BAD_HEADER)
def frame_kind_0(ctx):
    ctx.violate(frame(0, GOOD_META))


@case(BAD_HEADER)
def unknown_header_flag_bits(ctx):
    ctx.violate(frame(TRAJ, GOOD_META, flags=0x08))


@case(BAD_HEADER)
def shared_memory_flag_without_data(ctx):
    ctx.violate(frame(TRAJ, GOOD_META, flags=0x04))


# PROTOCOL.md 2.2: shared memory needs a region offered (with a descriptor,
# over AF_UNIX) first. The data section is not on the stream: header + meta.
@case("shared-memory frame from a peer that offered no region")
def shared_memory_frame_without_a_region(ctx):
    meta = m_dict((b"x", m_array(DT_FLOAT32, [16], 0)))
    ctx.violate(header(TRAJ, len(meta), 64, flags=0x04, ack=0) + meta)


@case("shared-memory region offered without a file descriptor")
def shared_memory_region_without_a_descriptor(ctx):
    ctx.violate(header(9, 0, ref=1 << 20))


@case("shared-memory release of a slot this peer was not given")
def shared_memory_release_never_given(ctx):
    ctx.violate(header(10, 0, ref=0))


@case(BAD_HEADER)
def bye_with_body(ctx):
    ctx.violate(frame(BYE, GOOD_META))


@case(BAD_HEADER)
def heartbeat_with_data_len(ctx):
    ctx.violate(header(HEARTBEAT, 0, 64) + bytes(64))


@case(BAD_HEADER)
def checksum_flag_with_wrong_hcrc(ctx):
    f = bytearray(ctx.seal(frame(TRAJ, GOOD_META)))
    f[44] ^= 0x01
    ctx.violate(bytes(f))


@case(BAD_HEADER)
def crc_field_set_without_checksum_flag(ctx):
    ctx.violate(frame(TRAJ, GOOD_META, crc=0x12345678))


@case(BAD_HEADER)
def second_hello_after_handshake(ctx):
    ctx.violate(hello() + bytes(16))     # 'R' = 0x52 is no frame kind


@case("checksum mismatch: a frame was corrupted in transit")
def body_checksum_mismatch(ctx):
    f = frame(TRAJ, m_dict((b"a", m_int(1))))
    # header sealed (intact), body crc that of no body: the body differs
    ctx.violate(ctx.seal(f[:48]) + f[48:])


# ---- frame kinds, directions, sequence numbers -----------------------------
@case("unexpected acknowledgement")
def ack_from_actor(ctx):
    ctx.violate(header(ACK, 0, ack=5))


@case(WRONG_DIRECTION)
def params_from_actor(ctx):
    ctx.violate(ctx.seal(_core.encode_frame({"w": np.ones(3, np.float32)}, _core.KIND_PARAMS, 1)))


@case(WRONG_DIRECTION)
def reply_from_actor(ctx):
    ctx.violate(_core.encode_frame({"answer": 42}, _core.KIND_REPLY, 1))


@case(WRONG_DIRECTION)
def push_from_actor(ctx):
    ctx.violate(_core.encode_frame({"push": 1}, _core.KIND_PUSH, 0))


@case("unexpected sequence number")
def nonzero_seq_on_unreliable_connection(ctx):
    f = bytearray(_core.encode_frame({"a": 1}))
    f[16:24] = u64(1)
    ctx.violate(bytes(f))


@case("frame without a checksum on a reliable connection")
def reliable_frame_without_checksum(ctx):
    ctx.violate(frame(TRAJ, GOOD_META, seq=1), flags=1)


@case("unsequenced trajectory on a reliable connection")
def reliable_seq_zero(ctx):
    ctx.violate(ctx.seal(frame(TRAJ, GOOD_META)), flags=1)


@case("sequence gap in a reliable session")
def reliable_seq_gap(ctx):
    ctx.violate(ctx.seal(frame(TRAJ, GOOD_META, seq=2)), flags=1)


@case("frames were lost in transit (the actor sent more than arrived)")
def reliable_heartbeat_claims_unsent_frames(ctx):
    ctx.violate(ctx.seal(header(HEARTBEAT, 0, ref=5)), flags=1)


# ---- the meta: structure ---------------------------------------------------
@case("a length or count points past the end of the meta")
def empty_meta(ctx):
    ctx.violate(frame(TRAJ, b""))


@case("message root is not a dict")
def root_not_a_dict(ctx):
    ctx.violate(frame(TRAJ, m_list(m_int(1))))


@case("trailing bytes after the message")
def trailing_bytes_after_root(ctx):
    ctx.violate(frame(TRAJ, GOOD_META + b"\x00"))


@case("unknown value tag")
def unknown_tag_0x0d(ctx):
    ctx.violate(traj(b"\x0d"))


@case("a length or count points past the end of the meta")
def str_length_past_meta_end(ctx):
    ctx.violate(traj(b"\x06" + u32(1000) + b"abc"))


@case("a dict key's length points past the end of the meta")
def dict_key_length_past_meta_end(ctx):
    ctx.violate(frame(TRAJ, b"\x0a" + u32(1) + u32(1000) + b"k" + m_none()))


@case("a container's count is larger than the rest of the meta can hold")
def list_count_beyond_meta(ctx):
    ctx.violate(traj(b"\x08" + u32(1_000_000) + m_none()))


@case("BIGINT shorter than 9 bytes")
def bigint_shorter_than_9_bytes(ctx):
    ctx.violate(traj(b"\x04" + u32(8) + bytes(8)))


@case("nested deeper than max_depth")
def nesting_depth_100000(ctx):
    deep = b"\x08" + u32(1)
    ctx.violate(traj(deep * 99_999 + b"\x08" + u32(0)))


# ---- the meta: strings -----------------------------------------------------
@case("string is not valid UTF-8")
def str_invalid_utf8(ctx):
    ctx.violate(traj(m_str(b"ok\xff")))


@case("string is not valid UTF-8")
def str_utf8_surrogate(ctx):
    ctx.violate(traj(m_str(b"\xed\xa0\x80")))


@case("string is not valid UTF-8")
def str_utf8_overlong(ctx):
    ctx.violate(traj(m_str(b"\xc0\x80")))


@case("string is not valid UTF-8")
def str_utf8_above_u10ffff(ctx):
    ctx.violate(traj(m_str(b"\xf4\x90\x80\x80")))


@case("dict key is not valid UTF-8")
def dict_key_invalid_utf8(ctx):
    ctx.violate(frame(TRAJ, m_dict((b"k\xe2\x82", m_none()))))


@case("a str, bytes, int or key is longer than max_str_bytes")
def str_length_over_max_str_bytes(ctx):
    # the length is checked before the bytes: no need to send 64 MiB
    ctx.violate(traj(b"\x06" + u32(MAX_STR_BYTES + 1) + b"abc"))


# ---- the meta: counts ------------------------------------------------------
@case("a container holds more than max_items values")
def dict_2pow20_plus_1_keys_over_max_items(ctx):
    # 2^20 + 1 real entries, each an empty key (u32 0) and NONE: 5 zero bytes
    ctx.violate(frame(TRAJ, b"\x0a" + u32(MAX_ITEMS + 1) + bytes(5 * (MAX_ITEMS + 1))))


@case("more values in one message than max_items")
def dict_2pow20_keys_total_values_over_max_items(ctx):
    # the count is allowed, but the root plus 2^20 values is 2^20 + 1 values
    ctx.violate(frame(TRAJ, b"\x0a" + u32(MAX_ITEMS) + bytes(5 * MAX_ITEMS)))


# ---- the meta: arrays and scalars -----------------------------------------
@case("unknown dtype code in an array")
def array_unknown_dtype_15(ctx):
    ctx.violate(traj(m_array(15, [4], 0), bytes(64)))


@case("unknown dtype code in an array")
def array_dtype_0(ctx):
    ctx.violate(traj(m_array(0, [4], 0), bytes(64)))


@case("array flags have reserved bits set")
def array_reserved_aflags(ctx):
    ctx.violate(traj(m_array(DT_FLOAT32, [4], 0, aflags=0x02), bytes(64)))


@case("array has more dimensions than max_ndim")
def array_ndim_255(ctx):
    # ndim is a u8: 1,000 dimensions cannot be expressed; 255 is the most
    ctx.violate(traj(m_array(DT_FLOAT32, [1] * 255, 0), bytes(64)))


@case("array has more dimensions than max_ndim")
def array_ndim_33(ctx):
    ctx.violate(traj(m_array(DT_FLOAT32, [1] * 33, 0), bytes(64)))


@case("array shape overflows")
def array_negative_dimension(ctx):
    # -5 as an i64, read as the u64 2^64 - 5 (> 2^63)
    ctx.violate(traj(m_array(DT_FLOAT32, [(1 << 64) - 5], 0), bytes(64)))


@case("array shape overflows")
def array_dimension_2pow63(ctx):
    ctx.violate(traj(m_array(6, [1 << 63], 0), bytes(64)))


@case("array shape overflows")
def array_shape_product_overflows_u64(ctx):
    # 2^32 * 2^32 * 4 wraps to 0 in u64 arithmetic
    ctx.violate(traj(m_array(DT_FLOAT32, [1 << 32, 1 << 32], 0), bytes(64)))


@case("array shape overflows")
def array_empty_with_huge_dimension(ctx):
    ctx.violate(traj(m_array(DT_FLOAT32, [0, 1 << 62], 0), bytes(64)))


@case("array offset is not a multiple of 64")
def array_misaligned_offset(ctx):
    # PROTOCOL.md 5.3: offsets are multiples of 64
    ctx.violate(traj(m_array(DT_FLOAT32, [4], 8), bytes(128)))


@case("array lies outside the data section")
def array_past_data_len(ctx):
    ctx.violate(traj(m_array(DT_FLOAT32, [32], 0), bytes(64)))     # 128 bytes in 64


@case("array lies outside the data section")
def array_offset_past_data_len(ctx):
    ctx.violate(traj(m_array(DT_FLOAT32, [1], 128), bytes(64)))


@case("arrays overlap or are out of order in the data section")
def arrays_overlap(ctx):
    meta = m_dict((b"a", m_array(DT_FLOAT32, [32], 0)), (b"b", m_array(DT_FLOAT32, [4], 64)))
    ctx.violate(frame(TRAJ, meta, bytes(256)))


@case("unknown dtype code in a scalar")
def scalar_unknown_dtype(ctx):
    ctx.violate(traj(b"\x0c\x0f" + bytes(8)))


@case("a length or count points past the end of the meta")
def scalar_value_past_meta_end(ctx):
    ctx.violate(traj(b"\x0c" + bytes([12]) + bytes(3)))            # float64 needs 8


# ---- well-formed traffic, and traffic that is only abusive in volume -------
def _control_message():
    return {"control": "one byte at a time", "a": np.arange(10, dtype=np.int16),
            "f": np.float32(2.5), "nested": [1, (2.0, None), {"k": b"v"}]}


def _check_control(got):
    want = _control_message()
    assert list(got) == list(want)
    assert got["control"] == want["control"] and got["nested"] == want["nested"]
    assert got["a"].dtype == np.int16 and np.array_equal(got["a"], want["a"])
    assert type(got["f"]) is np.float32 and got["f"] == want["f"]


@case("the actor closed the connection", event="left")
def valid_frame_in_1_byte_writes(ctx):
    """Positive control: a valid hello and frame split into 1-byte writes are
    accepted and delivered; then a BYE (also byte by byte) closes cleanly."""
    nid = new_id()
    s = ctx.connect()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for b in hello(node_id=nid):
        s.sendall(bytes([b]))
    recv_exactly(s, 32)
    ctx.expect_delivery(nid)
    f = _core.encode_frame(_control_message())
    assert HEADER.unpack(f[:48])[3] > 0, "the control frame should carry a data section"
    for i in range(len(f)):
        s.sendall(f[i:i + 1])
        time.sleep(0.0002)      # pacing, so the learner sees partial headers and bodies
    assert ctx.wait_until(lambda: ctx.delivered_from(nid)), "the valid frame was not delivered"
    (got,) = ctx.delivered_from(nid)
    _check_control(got)
    for b in header(BYE, 0):
        s.sendall(bytes([b]))
    ctx.expect_closed(s)


@case(BAD_HEADER)
def valid_frame_then_garbage(ctx):
    """Frames complete and valid before a violation are delivered (6.5)."""
    nid = new_id()
    ctx.expect_delivery(nid)
    ctx.violate(_core.encode_frame({"before": "garbage"}) + b"\xee" * 48, node_id=nid)
    assert ctx.wait_until(lambda: ctx.delivered_from(nid))
    assert ctx.delivered_from(nid) == [{"before": "garbage"}]


@case("nothing received from the peer for 2000 ms (peer_timeout)", event="left",
      peer_timeout=2.0)
def never_reads_while_parameters_published(ctx):
    """A peer that completes the hello and then neither reads nor writes
    while the learner publishes 100 MiB of parameters: publish_parameters
    never blocks, the learner holds back at most one pending version for it
    (so what reaches that socket is bounded by buffers, not by the number of
    publications), the good actor ends up with the newest version, and the
    silent peer is dropped after peer_timeout."""
    nid = new_id()
    s = ctx.connect(rcvbuf=64 << 10)
    ctx.handshake(s, node_id=nid)
    assert nid in ctx.learner.actors
    n_pub, size = 100, 1 << 20
    w = np.zeros(size // 4, np.float32)
    errors = []

    def publish():
        try:
            for v in range(1, n_pub + 1):
                w[0] = v
                assert ctx.learner.publish_parameters({"w": w, "v": v}) == v
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    th = threading.Thread(target=publish, daemon=True)
    th.start()
    th.join(6 * T)      # a generous bound: returning at all is the property
    assert not th.is_alive(), "publish_parameters blocked behind a peer that does not read"
    assert not errors, errors

    def newest():
        p = ctx.good.latest_parameters()
        return p is not None and p.version == n_pub
    assert ctx.wait_until(newest), "the good actor did not get the newest parameters"
    p = ctx.good.latest_parameters()
    assert p.data["v"] == n_pub and p.data["w"][0] == n_pub
    closed, head, total = ctx.peer_closed(s, T)
    assert closed, "the silent peer was never dropped"
    while head[:1] == bytes([HEARTBEAT]):   # the learner's, if a second passed first
        head = head[48:]
    assert head[:4] == bytes([PARAMS, CHECKSUM, 0, 0]), "the first frame should be PARAMS"
    published = n_pub * size
    print(f"\nnever_reads_while_parameters_published: {published} bytes published, "
          f"{total} reached the silent peer's socket")
    assert total < 32 << 20, \
        f"{total} bytes queued to a peer that never reads ({published} published): not bounded"


@case("peer closed the connection during the handshake", count=10_000)
def ten_thousand_connections(ctx):
    """10,000 connections opened and half-closed in batches of 200; the
    learner closes every one, and its descriptors all go away."""
    before = fd_count()
    batch, total = 200, 10_000
    for _ in range(total // batch):
        socks = []
        try:
            for _ in range(batch):
                socks.append(socket.create_connection(("127.0.0.1", ctx.port), timeout=T))
            for s in socks:
                s.shutdown(socket.SHUT_WR)
            for s in socks:
                closed, head, _ = ctx.peer_closed(s, T)
                assert closed and head == b""
        finally:
            for s in socks:
                s.close()
    assert ctx.wait_until(lambda: fd_count() <= before), (before, fd_count())
    print(f"\nten_thousand_connections: fds {before} before, {fd_count()} after")


# ---- authentication and max_connections ------------------------------------
# With auth_key on the learner, the good and fresh actors get the same key
# (see test_hostile_peer); these raw peers do not hold it.
KEY = b"hostile-corpus-key-0123456789abcdef"
AUTH = 2
AUTH_DIFFERS = "authentication failed: the actor's auth_key differs from this learner's"
AUTH_LABELS = (b"rlink-auth-v1 learner\x00", b"rlink-auth-v1 actor\x00")


def _proof(key, label, transcript):
    return hmac.new(key, label + transcript, hashlib.sha256).digest()


@case("authentication failed: the actor has no auth_key and this learner requires one", auth_key=KEY)
def auth_peer_without_key(ctx):
    got = ctx.violate(hello(), handshake=False)
    # the learner's hello (AUTH set: "I need a key"), nothing else
    assert len(got) == 32 and HELLO.unpack(got)[3] & AUTH, got


@case(AUTH_DIFFERS, auth_key=KEY)
def auth_wrong_key(ctx):
    """The peer answers the challenge with a proof made from another key."""
    s = ctx.connect()
    h, nonce = hello(flags=AUTH), os.urandom(32)
    s.sendall(h + nonce)
    challenge = recv_exactly(s, 96)
    s.sendall(_proof(b"not the key", AUTH_LABELS[1], h + nonce + challenge[:64])
              + _core.encode_frame({"inject": 1}))
    assert ctx.expect_closed(s) == b""


@case(AUTH_DIFFERS, auth_key=KEY)
def auth_replayed_handshake(ctx):
    """A recorded, valid handshake replayed on a new connection: the
    learner's fresh nonce makes the old proof worthless."""
    h, nonce = hello(flags=AUTH), os.urandom(32)
    s = ctx.connect()
    s.sendall(h + nonce)
    challenge = recv_exactly(s, 96)
    assert hmac.compare_digest(challenge[64:], _proof(KEY, AUTH_LABELS[0], h + nonce + challenge[:64]))
    recorded = _proof(KEY, AUTH_LABELS[1], h + nonce + challenge[:64])
    s.sendall(recorded)
    recv_exactly(s, 32)                    # accepted: the learner's final hello
    s.close()                              # (an honest session that ends)
    r = ctx.connect()
    r.sendall(h + nonce)
    assert recv_exactly(r, 96)[32:64] != challenge[32:64], "the learner reused a nonce"
    r.sendall(recorded + _core.encode_frame({"replayed": 1}))
    assert ctx.expect_closed(r) == b""


@case(AUTH_DIFFERS, auth_key=KEY)
def auth_frame_instead_of_proof(ctx):
    s = ctx.connect()
    s.sendall(hello(flags=AUTH) + os.urandom(32))
    recv_exactly(s, 96)
    s.sendall(_core.encode_frame({"inject": 1}))
    assert ctx.expect_closed(s) == b""


@case("handshake not completed in time", auth_key=KEY, handshake_timeout=0.5)
def auth_challenge_never_answered(ctx):
    s = ctx.connect()
    s.sendall(hello(flags=AUTH) + os.urandom(32))
    assert len(recv_exactly(s, 96)) == 96
    assert ctx.expect_closed(s) == b""


@case("authentication failed: the actor has an auth_key and this learner has none")
def auth_offered_to_keyless_learner(ctx):
    got = ctx.violate(hello(flags=AUTH) + os.urandom(32), handshake=False)
    assert len(got) == 32 and not HELLO.unpack(got)[3] & AUTH, got


@case("refused a connection: 4 already open (max_connections)", count=3, max_connections=4)
def max_connections_exceeded(ctx):
    """Beyond the bound (the good actor holds 1 of 4), new connections are
    closed at once; the ones inside it still complete their handshake."""
    inside = [ctx.connect() for _ in range(3)]
    extra = [ctx.connect() for _ in range(3)]
    for s in extra:
        assert ctx.expect_closed(s) == b""
    for s in inside:
        ctx.handshake(s)
        s.close()


# --------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------
def good_message(i):
    return {"i": i, "obs": np.arange(8, dtype=np.float32) + i, "tag": f"good-{i}"}


def check_good_stream(got):
    assert len(got) == N_GOOD, f"{len(got)} of {N_GOOD} messages arrived"
    assert [d["i"] for d in got] == list(range(N_GOOD)), "out of order, missing or duplicated"
    for i, d in enumerate(got):
        assert set(d) == {"i", "obs", "tag"}, d
        assert d["obs"].dtype == np.float32 and d["obs"].shape == (8,), d
        assert np.array_equal(d["obs"], np.arange(8, dtype=np.float32) + i), (i, d["obs"])
        assert d["tag"] == f"good-{i}", d


def _records(caplog, phrase, level=None):
    return [r.getMessage() for r in caplog.records
            if r.name == "rlink" and phrase in r.getMessage()
            and (level is None or r.levelno == level)]


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_peer(name, caplog, wait_until, peer_closed, seal):
    spec = CASES[name]
    caplog.set_level(logging.INFO, logger="rlink")
    errors: list[BaseException] = []
    received: list[tuple[int, dict]] = []
    stop = threading.Event()
    started = threading.Event()
    threads = []
    with contextlib.ExitStack() as stack:
        learner = stack.enter_context(rlink.LearnerNode(port=0, **spec.learner))
        good = stack.enter_context(
            rlink.ActorNode(learner.address, connect_timeout=T, heartbeat_interval=0.2,
                            auth_key=spec.learner.get("auth_key")))
        good_id = good.actor_id

        def stop_threads():
            stop.set()
            for th in threads:
                th.join(T)
        stack.callback(stop_threads)

        def receive_loop():
            deadline = time.monotonic() + 30 * T
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    try:
                        batch = learner.receive_many(256, timeout=0.05)
                    except rlink.TimeoutError:
                        continue
                    received.extend((m.actor_id, m.data) for m in batch)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)

        def send_loop():
            try:
                for i in range(N_GOOD):
                    good.send_trajectory(good_message(i), timeout=T)
                    if i == 99:
                        started.set()
                    if i % 10 == 9:
                        time.sleep(0.001)   # pacing: spread the stream over the case
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
            finally:
                started.set()

        for target in (receive_loop, send_loop):
            threads.append(threading.Thread(target=target, daemon=True))
            threads[-1].start()
        assert started.wait(T)

        ctx = Hostile(learner, good, stack, received, wait_until, peer_closed, seal)
        spec.fn(ctx)                                     # (c): the case checks the close

        # (a) the good actor's stream, complete and intact
        threads[1].join(T)
        assert not threads[1].is_alive(), "the good actor's sends did not finish"
        assert wait_until(lambda: sum(1 for a, _ in list(received) if a == good_id) >= N_GOOD), \
            "the good actor's messages did not all arrive"
        stop_threads()
        assert not any(th.is_alive() for th in threads)
        assert not errors, errors
        check_good_stream([d for a, d in received if a == good_id])

        # (b) the learner still serves: a fresh actor round-trips
        with rlink.ActorNode(learner.address, connect_timeout=T,
                             auth_key=spec.learner.get("auth_key")) as fresh:
            fresh.send_trajectory({"fresh": name}, timeout=T)
            deadline = time.monotonic() + T
            while True:
                m = learner.receive_message(timeout=max(0.0, deadline - time.monotonic()))
                if m.actor_id == fresh.actor_id:
                    break
                received.append((m.actor_id, m.data))
            assert m.data == {"fresh": name}
            learner.send(fresh.actor_id, {"pong": name}, timeout=T)
            assert fresh.receive(timeout=T) == {"pong": name}

        # (c) the reason was logged (events are drained by receive calls)
        def drain():
            try:
                for m in learner.receive_many(64, timeout=0.02):
                    received.append((m.actor_id, m.data))
            except rlink.TimeoutError:
                pass

        if spec.event == "rejected":
            def logged():
                drain()
                return _records(caplog, f"dropped a connection: {spec.reason}", logging.WARNING)
        else:
            def logged():
                drain()
                return _records(caplog, f"left: {spec.reason}", logging.INFO)
        assert wait_until(logged), (
            f"no log record with {spec.reason!r}; rlink logged: "
            f"{[r.getMessage() for r in caplog.records if r.name == 'rlink']}")
        drops = _records(caplog, "dropped a connection: ")
        if spec.event == "rejected":
            # counted before the event is queued: once logged, the count is final
            assert learner.stats()["rejected"] == spec.count, learner.stats()
            assert all(spec.reason in r for r in drops), drops
        else:
            assert learner.stats()["rejected"] == 0, (learner.stats(), drops)
            assert not drops, drops
        assert not _records(caplog, f"peer {good_id:#x} left"), "the good actor was dropped"

        # nothing of a hostile peer was delivered, beyond the positive controls
        others: dict[int, int] = {}
        for a, _ in received:
            if a != good_id:
                others[a] = others.get(a, 0) + 1
        assert others == ctx.expected, f"delivered from raw peers: {others}, expected {ctx.expected}"

        # only the good actor is left connected
        assert wait_until(lambda: learner.actors == [good_id]), learner.actors
