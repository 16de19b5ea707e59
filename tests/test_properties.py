"""Property tests of the codec (rlink._core.encode_frame / decode_frame).

(a) every supported payload round-trips exactly: types, values, bit patterns
    of floats (NaN payloads, -0.0, infinities), big ints, non-BMP strings,
    arrays of all 14 dtypes (0-d, empty, Fortran-order, non-contiguous,
    big-endian) compared by dtype, shape, layout and bytes, numpy scalars;
(b) every truncation of a valid frame is rejected with rlink.ProtocolError:
    of the frame itself, and of its meta or data section with the header
    made consistent again (so that the meta parser, not the size check,
    has to catch it);
(c) every single-byte mutation either is rejected with rlink.ProtocolError
    or decodes to a value that re-encodes and round-trips; never a crash,
    a hang or another exception. Hypothesis picks payloads, positions and
    values; one small frame is also mutated exhaustively, with exact
    expectations per region (header, padding, data).

This extends tests/test_codec.py::test_decode_property_based, whose strategy
(no NaN, no big ints beyond hypothesis' defaults, C-order native arrays only,
no numpy scalars) is a subset of the one below.
"""
from __future__ import annotations

import faulthandler
import math
import struct

import numpy as np
import pytest

import rlink
from rlink import _core

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
hnp = pytest.importorskip("hypothesis.extra.numpy")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128"]   # PROTOCOL.md 5.2
HEADER = struct.Struct("<BBHIQQQQII")

SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def hang_guard():
    """A decoder stuck in C cannot be interrupted from Python: if a test of
    this file runs for 5 minutes, dump every thread's stack and exit."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# --------------------------------------------------------------------------
# exact comparison
# --------------------------------------------------------------------------
def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same(a, b, path="v"):
    """Assert that decoded ``b`` is exactly what ``a`` should come back as."""
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray, (path, type(b))
        want = a.dtype.newbyteorder("=")             # big-endian arrives native
        assert b.dtype == want and b.dtype.isnative, (path, a.dtype, b.dtype)
        assert b.shape == a.shape, (path, a.shape, b.shape)
        assert b.tobytes() == a.astype(want).tobytes(), (path, a, b)   # bitwise: NaN-aware
        if a.ndim >= 2 and a.flags.f_contiguous and not a.flags.c_contiguous:
            assert b.flags.f_contiguous, (path, "Fortran order was not kept")
        else:
            assert b.flags.c_contiguous, (path, "expected a C-contiguous array")
        return
    assert type(b) is type(a), (path, type(a), type(b))
    if isinstance(a, np.generic):
        assert a.tobytes() == b.tobytes(), (path, a, b)
    elif type(a) is float:
        assert _float_bits(a) == _float_bits(b), (path, a, b)
    elif type(a) is dict:
        assert list(a) == list(b), (path, list(a), list(b))
        for k in a:
            same(a[k], b[k], f"{path}[{k!r}]")
    elif type(a) in (list, tuple):
        assert len(a) == len(b), (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def roundtrip(msg):
    frame = _core.encode_frame(msg)
    kind, ref, value = _core.decode_frame(frame)
    assert (kind, ref) == (_core.KIND_TRAJ, 0)
    return value


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | \
    st.sampled_from(["", "\x00", "é", "€", "\U0001F600", "\U00010000", "\U0010FFFF", "a\U0001D11Eb"])
keys = st.text(alphabet=st.characters(codec="utf-8"), max_size=6) | st.sampled_from(["", "\U0001F511"])
INT_EDGES = [0, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64 - 1, 2**64, -2**64,
             2**71, -(2**71) - 5, 2**200 + 1, -(2**300)]
ints = st.integers() | st.integers(min_value=-(2**400), max_value=2**400) | st.sampled_from(INT_EDGES)
NAN_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
NEG_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0]
floats = st.floats() | st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, NAN_PAYLOAD,
                                        NEG_NAN, 5e-324, 1.7976931348623157e308])


def _scalar(dtype):
    t = np.dtype(dtype).type
    return hnp.from_dtype(np.dtype(dtype)).map(lambda v: t(v))


np_scalars = st.sampled_from(DTYPES).flatmap(_scalar)


def _layout(a, how):
    """The same values (or a view of them) in another memory layout."""
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "transposed":
        return a.T
    if how == "strided" and a.ndim >= 1:
        return np.repeat(a, 2, axis=-1)[..., ::2]       # every other element: non-contiguous
    if how == "reversed" and a.ndim >= 1:
        return a[::-1]                                  # negative strides
    if how == "big-endian" and a.dtype.itemsize > 1:
        return a.astype(a.dtype.newbyteorder(">"))
    return a


def arrays_of(max_dims, max_side):
    base = st.sampled_from(DTYPES).flatmap(lambda d: hnp.arrays(
        np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)))
    how = st.sampled_from(["c", "fortran", "transposed", "strided", "reversed", "big-endian"])
    return st.builds(_layout, base, how)


def payloads(max_dims=4, max_side=4, max_leaves=16):
    leaves = (st.none() | st.booleans() | ints | floats | text | st.binary(max_size=24)
              | np_scalars | arrays_of(max_dims, max_side))
    values = st.recursive(
        leaves,
        lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                       | st.dictionaries(keys, inner, max_size=4)),
        max_leaves=max_leaves)
    return st.dictionaries(keys, values, max_size=5)


small_payloads = payloads(max_dims=3, max_side=3, max_leaves=8)


def parts(frame: bytes):
    """(header fields, meta, data) of an encoded frame."""
    kind, flags, _res, meta_len, data_len, seq, ack, ref, crc, hcrc = HEADER.unpack_from(frame)
    meta = frame[48:48 + meta_len]
    data = frame[len(frame) - data_len:] if data_len else b""
    return kind, ref, meta, data


def rebuild(kind, ref, meta: bytes, data: bytes) -> bytes:
    """A frame with a consistent header around meta and data (PROTOCOL.md 4.1)."""
    pad = (-(48 + len(meta))) % 64 if data else 0
    return HEADER.pack(kind, 0, 0, len(meta), len(data), 0, 0, ref, 0, 0) + meta + bytes(pad) + data


def decode_or_reject(buf):
    """decode_frame's only allowed outcomes: a value, or rlink.ProtocolError.
    A decoded value must itself re-encode and round-trip exactly."""
    try:
        kind, ref, value = _core.decode_frame(buf)
    except rlink.ProtocolError:
        return None
    assert 1 <= kind <= 8
    if isinstance(value, dict):
        same(value, roundtrip(value))
    return value


# --------------------------------------------------------------------------
# (a) round trip
# --------------------------------------------------------------------------
@settings(max_examples=1500, **SETTINGS)
@given(payloads())
@example({"zero_d": np.array(np.float32(np.nan)), "empty": np.zeros((0, 3), np.int64),
          "fortran": np.asfortranarray(np.arange(6, dtype=np.complex64).reshape(2, 3)),
          "strided": np.arange(10, dtype=np.uint16)[::3], "be": np.arange(4, dtype=">f8"),
          "scalars": [np.bool_(True), np.float16(-0.0), np.uint64(2**64 - 1), np.complex128(1j)],
          "f": [math.nan, -0.0, math.inf, NAN_PAYLOAD], "big": [2**63, -2**63 - 1, 2**1000],
          "s": "\U0001F600\x00é", "b": b"\x00\xff", "t": (None, False, (), [], {})})
def test_roundtrip_is_exact(msg):
    same(msg, roundtrip(msg))


# --------------------------------------------------------------------------
# (b) truncations
# --------------------------------------------------------------------------
@settings(max_examples=300, **SETTINGS)
@given(small_payloads)
def test_every_truncation_rejected(msg):
    frame = _core.encode_frame(msg)
    view = memoryview(frame)
    for n in range(len(frame)):
        with pytest.raises(rlink.ProtocolError):
            _core.decode_frame(view[:n])
    with pytest.raises(rlink.ProtocolError):
        _core.decode_frame(frame + b"\x00")


@settings(max_examples=300, **SETTINGS)
@given(small_payloads)
def test_every_meta_truncation_rejected_with_consistent_header(msg):
    """The meta encoding is self-delimiting: no proper prefix of it is a
    complete value, so every shortened meta must fail rl_meta_validate."""
    kind, ref, meta, data = parts(_core.encode_frame(msg))
    assert _core.decode_frame(rebuild(kind, ref, meta, data))[2] is not None  # rebuild is faithful
    for k in range(len(meta)):
        with pytest.raises(rlink.ProtocolError):
            _core.decode_frame(rebuild(kind, ref, meta[:k], data))


@settings(max_examples=300, **SETTINGS)
@given(st.builds(lambda m, a: {**m, "arr": a}, small_payloads,
                 st.sampled_from(DTYPES).flatmap(lambda d: hnp.arrays(
                     np.dtype(d), hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5)))),
       st.data())
def test_data_truncation_rejected_with_consistent_header(msg, data_strategy):
    """The sender's data_len is the end of the last array (PROTOCOL.md 5.5),
    so any shorter data section leaves an array outside it."""
    kind, ref, meta, data = parts(_core.encode_frame(msg))
    assert data
    for d in {0, len(data) - 1, data_strategy.draw(st.integers(0, len(data) - 1))}:
        with pytest.raises(rlink.ProtocolError):
            _core.decode_frame(rebuild(kind, ref, meta, data[:d]))


# --------------------------------------------------------------------------
# (c) single-byte mutations
# --------------------------------------------------------------------------
@settings(max_examples=3000, **SETTINGS)
@given(small_payloads, st.data())
def test_single_byte_mutation_rejected_or_decoded(msg, data_strategy):
    frame = bytearray(_core.encode_frame(msg))
    pos = data_strategy.draw(st.integers(0, len(frame) - 1), label="position")
    value = data_strategy.draw(st.integers(0, 255).filter(lambda v: v != frame[pos]), label="value")
    frame[pos] = value
    decode_or_reject(bytes(frame))


CONTROL = {"s": "héllo \U0001F600", "a": np.arange(10, dtype=np.int16), "b": 2**70,
           "l": [1, 2.5, None, True, b"xy", (3,)], "sc": np.float32(1.5), "d": {"k": "v"},
           "f": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)), "e": np.zeros(0)}


def test_every_byte_of_a_small_frame_mutated():
    """Each byte of one frame, flipped (^0xFF) and set to 0x00, 0x01, 0x80 and
    0xFF in turn, with the outcome each region of the frame must give."""
    frame = _core.encode_frame(CONTROL)
    _kind, _flags, _r, meta_len, data_len, *_ = HEADER.unpack_from(frame)
    meta_end = 48 + meta_len
    data_start = len(frame) - data_len
    assert data_start - meta_end > 0, "the control frame should have padding"
    outcomes = {"rejected": 0, "decoded": 0}
    for pos in range(len(frame)):
        for new in sorted({frame[pos] ^ 0xFF, 0x00, 0x01, 0x80, 0xFF} - {frame[pos]}):
            b = bytearray(frame)
            b[pos] = new
            try:
                kind, ref, value = _core.decode_frame(bytes(b))
            except rlink.ProtocolError:
                outcomes["rejected"] += 1
                assert not (16 <= pos < 40 or meta_end <= pos < data_start), \
                    f"byte {pos} = {new:#x} is not checked by receivers but was rejected"
                continue
            outcomes["decoded"] += 1
            if pos < 16 or 40 <= pos < 48:
                # only another body-carrying kind (1-5) or the REDELIVERED flag
                # leave a header valid; lengths, reserved bytes, unknown flags,
                # CHECKSUM without a matching hcrc, and crc/hcrc without
                # CHECKSUM are all rejected
                assert (pos == 0 and 1 <= new <= 5) or (pos == 1 and new == 0x01), \
                    f"header byte {pos} = {new:#x} was accepted"
                assert kind == b[0]
            if 16 <= pos < 40 or meta_end <= pos < data_start:
                # seq, ack, ref and padding are not interpreted by decode_frame
                same(CONTROL, value)
            elif pos >= data_start:
                assert list(value) == list(CONTROL)   # only array contents may change
            if isinstance(value, dict):
                same(value, roundtrip(value))
    assert outcomes["rejected"] and outcomes["decoded"], outcomes
