"""atheris harness for the Python-facing decoder, rlink._core.decode_frame.

Run by .ci/atheris.sh, against an extension built with clang
-fsanitize=address,undefined,fuzzer-no-link and atheris's asan_with_fuzzer.so
preloaded (by hand: see that script). Arguments are libFuzzer's:

    python tests/fuzz/atheris_decode.py -max_total_time=60 CORPUS_DIR

(Not a pytest module: its name does not start with test_.)

Two kinds of input, told apart by the top bit of the first byte (a frame's
first byte is its kind, 1-8, so no frame worth decoding has it set):

* Top bit clear: the input is one whole frame off the wire. decode_frame
  either returns (kind, ref, value) or raises rlink.ProtocolError; any other
  exception is a bug, and so is a crash (ASan/UBSan abort the process). A
  frame that decodes must also be refused under a max_message_bytes one byte
  below its size, and its value, re-encoded with encode_frame and decoded
  again, must come back equal.
* Top bit set: the rest of the input drives atheris.FuzzedDataProvider to
  build a message (dicts, lists, tuples, str, bytes, ints of any size,
  floats, None, bools, numpy arrays of every supported dtype and layout, numpy
  scalars). encode_frame either encodes it or raises TypeError / ValueError /
  rlink.MessageTooLargeError; what it encodes must decode to an equal message.

"Equal" is strict: same types (list vs tuple, numpy scalar types), floats bit
for bit (NaN payloads, -0.0), arrays of the same native dtype and shape with
the same bytes.
"""
from __future__ import annotations

import math
import struct
import sys

import atheris

with atheris.instrument_imports(include=["rlink"]):
    import numpy as np
    import rlink
    from rlink import _core

KINDS_WITH_BODY = (1, 2, 3, 4, 5)
DTYPES = [np.dtype(n) for n in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128")]
MAX_DEPTH = 6


# ---- strict equality -----------------------------------------------------------------------
def _float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same(a, b, path="value") -> None:
    """Raise AssertionError unless b is what a decodes to after a round trip."""
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray, f"{path}: {type(b).__name__} is not an ndarray"
        want = a.dtype.newbyteorder("=")
        assert b.dtype == want, f"{path}: dtype {b.dtype} != {want}"
        assert b.shape == a.shape, f"{path}: shape {b.shape} != {a.shape}"
        av = np.ascontiguousarray(a.astype(want, copy=False))
        bv = np.ascontiguousarray(b)
        assert av.tobytes() == bv.tobytes(), f"{path}: array bytes differ"
        return
    if isinstance(a, np.generic):
        assert type(b) is type(a), f"{path}: {type(b).__name__} != {type(a).__name__}"
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{path}: scalar bytes differ"
        return
    assert type(a) is type(b), f"{path}: {type(b).__name__} != {type(a).__name__}"
    if isinstance(a, float):
        assert _float_bits(a) == _float_bits(b), f"{path}: {b!r} != {a!r}"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys differ"
        for k in a:
            same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(b)} != {len(a)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {b!r} != {a!r}"


# ---- wire -> value ---------------------------------------------------------------------------
def fuzz_frame(data: bytes) -> None:
    try:
        kind, ref, value = _core.decode_frame(data)
    except rlink.ProtocolError:
        return
    assert 1 <= kind <= 8, kind
    assert 0 <= ref < 2**64, ref
    # The frame is exactly its declared size; one byte less of limit refuses it.
    try:
        _core.decode_frame(data, len(data) - 1)
    except rlink.ProtocolError:
        pass
    else:
        raise AssertionError(f"a {len(data)}-byte frame passed max_message_bytes={len(data) - 1}")
    if kind in KINDS_WITH_BODY and type(value) is dict:
        again = _core.decode_frame(_core.encode_frame(value, kind, ref))
        assert again[:2] == (kind, ref), (again[:2], kind, ref)
        same(value, again[2])


# ---- value -> wire -> value ------------------------------------------------------------------
def make_array(fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    dt = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    ndim = fdp.ConsumeIntInRange(0, 4)
    shape = tuple(fdp.ConsumeIntInRange(0, 4) for _ in range(ndim))
    n = math.prod(shape)
    raw = fdp.ConsumeBytes(n * dt.itemsize)
    raw += bytes(n * dt.itemsize - len(raw))
    a = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    if dt == np.dtype("bool"):
        a = a.view(np.uint8).astype(bool)       # bool items must be 0 or 1
    layout = fdp.ConsumeIntInRange(0, 3)
    if layout == 1:
        a = np.asfortranarray(a)
    elif layout == 2 and a.ndim >= 1:
        a = a[::-1]                             # negative stride: not contiguous
    elif layout == 3 and a.dtype.itemsize > 1:
        a = a.astype(a.dtype.newbyteorder("S"))  # non-native byte order
    return a


def make_value(fdp: atheris.FuzzedDataProvider, depth: int):
    choice = fdp.ConsumeIntInRange(0, 14 if depth < MAX_DEPTH else 9)
    if choice == 0:
        return None
    if choice == 1:
        return fdp.ConsumeBool()
    if choice == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 8))
    if choice == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(9, 40))   # beyond i64 often
    if choice == 4:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else \
            struct.unpack("<d", fdp.ConsumeBytes(8).ljust(8, b"\0"))[0]   # any bit pattern
    if choice == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if choice == 6:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
    if choice == 7:
        return make_array(fdp)
    if choice == 8:
        dt = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
        raw = fdp.ConsumeBytes(dt.itemsize).ljust(dt.itemsize, b"\0")
        if dt == np.dtype("bool"):
            raw = bytes([raw[0] & 1])
        return np.frombuffer(raw, dtype=dt)[0]
    if choice == 9:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 8))  # may hold lone surrogates
    n = fdp.ConsumeIntInRange(0, 5)
    if choice in (10, 11):
        return [make_value(fdp, depth + 1) for _ in range(n)]
    if choice == 12:
        return tuple(make_value(fdp, depth + 1) for _ in range(n))
    return {fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12)): make_value(fdp, depth + 1)
            for _ in range(n)}


def fuzz_object(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    kind = KINDS_WITH_BODY[fdp.ConsumeIntInRange(0, 4)]
    ref = fdp.ConsumeIntInRange(0, 2**64 - 1)
    n = fdp.ConsumeIntInRange(0, 6)
    obj = {fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12)): make_value(fdp, 1)
           for _ in range(n)}
    try:
        frame = _core.encode_frame(obj, kind, ref)
    except (TypeError, ValueError, rlink.MessageTooLargeError):
        return   # e.g. a lone surrogate in a str, or nesting past max_depth
    got_kind, got_ref, value = _core.decode_frame(frame)
    assert (got_kind, got_ref) == (kind, ref), (got_kind, got_ref, kind, ref)
    same(obj, value)


def TestOneInput(data: bytes) -> None:
    if data[:1] and data[0] & 0x80:
        fuzz_object(data[1:])
    else:
        fuzz_frame(data)


def main() -> None:
    print(f"rlink {rlink.__version__} from {rlink.__file__}; numpy {np.__version__}", flush=True)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
