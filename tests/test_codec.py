"""Round-trip fidelity of every supported value type, through the codec alone
(rlink._core.encode_frame / decode_frame) and through a live learner/actor
pair; properties of received arrays; rejection of unsupported values."""
from __future__ import annotations

import gc
import math
import random

import numpy as np
import pytest

import rlink
from rlink import _core

T = 10.0

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128"]


def sample(dtype, shape):
    """Deterministic, non-trivial values of ``dtype`` (extremes included for ints)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if dt.kind == "b":
        a = (np.arange(n) % 3 == 0)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        a = (np.arange(n, dtype=np.int64) * 37 % 101).astype(dt)
        if n >= 2:
            a[0], a[-1] = info.min, info.max
    elif dt.kind == "f":
        a = (np.arange(n) * 0.37 - 3.1).astype(dt)
        if n >= 3:
            a[0], a[1], a[2] = np.inf, -0.0, np.finfo(dt).max
    else:
        a = (np.arange(n) * 0.5 + 1j * (np.arange(n) - 2.25)).astype(dt)
    return a.reshape(shape)


def same_value(a, b):
    """Exact equality that also treats NaN == NaN and distinguishes -0.0 from 0.0."""
    if isinstance(a, float):
        return type(b) is float and (a == b or (math.isnan(a) and math.isnan(b))) and \
            math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------
# the two round-trip paths
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_pair():
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as actor:
        yield learner, actor


class _Live:
    """Sends each message wrapped with a sequence number, so a message left
    behind by an earlier failing test cannot be mistaken for this one's."""
    seq = 0

    def __init__(self, learner, actor):
        self.learner, self.actor = learner, actor

    def __call__(self, msg):
        _Live.seq += 1
        self.actor.send_trajectory({"n": _Live.seq, "m": msg}, timeout=T)
        while True:
            got = self.learner.receive_message(timeout=T)
            assert got.actor_id == self.actor.actor_id
            if got.data["n"] == _Live.seq:
                return got.data["m"]
            assert got.data["n"] < _Live.seq, "received a message from the future"


def _codec(msg):
    kind, ref, value = _core.decode_frame(_core.encode_frame(msg))
    assert kind == _core.KIND_TRAJ
    return value


@pytest.fixture(params=["codec", "live"])
def roundtrip(request):
    if request.param == "codec":
        return _codec
    return _Live(*request.getfixturevalue("live_pair"))


def rt1(roundtrip, value):
    """Round-trip one value under a key and return what came back."""
    got = roundtrip({"v": value})
    assert list(got) == ["v"]
    return got["v"]


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (1,), (7,), (3, 5), (2, 3, 4), (2, 1, 3, 1, 2)])
def test_array_every_dtype_and_shape(roundtrip, dtype, shape):
    a = sample(dtype, shape)
    b = rt1(roundtrip, a)
    assert type(b) is np.ndarray
    assert b.dtype == a.dtype
    assert b.shape == a.shape
    assert np.array_equal(a, b)
    assert b.flags.c_contiguous
    assert b.flags.writeable
    if b.size:
        assert b.ctypes.data % 64 == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_slices(roundtrip, dtype):
    base = sample(dtype, (6, 8))
    views = {
        "step": base[::2, ::3],
        "column": base[:, 1],
        "reversed": base[::-1],
        "both_reversed": base[::-2, ::-1],
    }
    for name, v in views.items():
        assert not v.flags.c_contiguous and not v.flags.f_contiguous, name
        got = rt1(roundtrip, v)
        assert got.dtype == v.dtype, name
        assert got.shape == v.shape, name
        assert np.array_equal(got, v), name
        assert got.flags.c_contiguous, name


@pytest.mark.parametrize("dtype", ["bool", "int16", "uint64", "float32", "float64", "complex128"])
def test_fortran_order_kept(roundtrip, dtype):
    for shape in [(3, 4), (2, 3, 5)]:
        f = np.asfortranarray(sample(dtype, shape))
        assert f.flags.f_contiguous and not f.flags.c_contiguous
        got = rt1(roundtrip, f)
        assert got.shape == f.shape and got.dtype == f.dtype
        assert np.array_equal(got, f)
        assert got.flags.f_contiguous
    t = sample(dtype, (4, 6)).T          # a transpose is Fortran-ordered too
    got = rt1(roundtrip, t)
    assert np.array_equal(got, t) and got.flags.f_contiguous


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i2", ">i8", ">u4", ">c8", ">c16", ">f2"])
def test_big_endian_arrays(roundtrip, dtype):
    a = sample(np.dtype(dtype).newbyteorder("="), (3, 4)).astype(dtype)
    assert not a.dtype.isnative
    got = rt1(roundtrip, a)
    assert got.shape == a.shape
    assert got.dtype.kind == a.dtype.kind and got.dtype.itemsize == a.dtype.itemsize
    assert np.array_equal(got, a)
    # the value the receiver computes with is the same number
    assert got.tolist() == a.tolist()


def test_many_arrays_in_one_message(roundtrip):
    msg = {f"a{i}": sample(DTYPES[i % len(DTYPES)], (i % 5 + 1, 3)) for i in range(40)}
    msg["empty"] = np.zeros((0, 3), np.float32)
    msg["scalar0d"] = np.array(3.5)
    got = roundtrip(msg)
    assert list(got) == list(msg)
    for k in msg:
        assert got[k].dtype == msg[k].dtype and np.array_equal(got[k], msg[k]), k


# --------------------------------------------------------------------------
# numpy scalars
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_scalars_keep_type(roundtrip, dtype):
    t = np.dtype(dtype).type
    values = [sample(dtype, (5,))[i] for i in range(5)]
    assert all(type(v) is t for v in values)
    got = rt1(roundtrip, values)
    assert isinstance(got, list) and len(got) == len(values)
    for v, g in zip(values, got):
        assert type(g) is t
        assert g == v or (np.isnan(g) and np.isnan(v))


# --------------------------------------------------------------------------
# Python scalars and containers
# --------------------------------------------------------------------------
INTS = [0, 1, -1, 255, -256, 2**31, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**64, -2**64,
        2**64 - 1, -2**200, 2**200 + 12345, 10**1000, -(10**1000)]


def test_none_and_bools(roundtrip):
    got = roundtrip({"n": None, "t": True, "f": False, "l": [True, False, None]})
    assert got["n"] is None
    assert got["t"] is True and got["f"] is False
    assert got["l"][0] is True and got["l"][1] is False and got["l"][2] is None


@pytest.mark.parametrize("value", INTS, ids=[str(i)[:24] for i in INTS])
def test_ints_any_size(roundtrip, value):
    got = rt1(roundtrip, value)
    assert type(got) is int and got == value


def test_floats(roundtrip):
    values = [0.0, -0.0, 1.5, -1e-308, 5e-324, 1.7976931348623157e308, math.inf, -math.inf,
              math.nan, math.pi]
    got = rt1(roundtrip, values)
    assert len(got) == len(values)
    for v, g in zip(values, got):
        assert same_value(v, g), (v, g)


def test_strings(roundtrip):
    values = ["", "ascii", "héllo wörld", "日本語", "emoji 🎉🚀", "nul\x00inside", "x" * 100_000,
              "\u2028\uffff"]
    got = rt1(roundtrip, values)
    assert got == values
    assert all(type(g) is str for g in got)


def test_bytes(roundtrip):
    values = [b"", b"\x00", bytes(range(256)), b"\xff" * 70_000, b"\x00abc\x00"]
    got = rt1(roundtrip, values)
    assert got == values
    assert all(type(g) is bytes for g in got)


def test_containers_keep_their_types(roundtrip):
    msg = {
        "tuple": (1, "a", None),
        "empty_tuple": (),
        "list": [1, "a", None],
        "empty_list": [],
        "empty_dict": {},
        "one_tuple": (5,),
        "mixed": [(1, [2, (3, [])]), {"x": (4,)}],
    }
    got = roundtrip(msg)
    assert got == msg
    assert type(got["tuple"]) is tuple and type(got["empty_tuple"]) is tuple
    assert type(got["list"]) is list and type(got["empty_list"]) is list
    assert type(got["one_tuple"]) is tuple
    m = got["mixed"]
    assert type(m) is list and type(m[0]) is tuple and type(m[0][1]) is list
    assert type(m[0][1][1]) is tuple and type(m[0][1][1][1]) is list and type(m[1]["x"]) is tuple


def test_dict_key_order_and_unicode_keys(roundtrip):
    keys = ["zeta", "alpha", "", "ключ", "🔑", "m", "a b", "0"]
    msg = {k: i for i, k in enumerate(keys)}
    msg["nested"] = {k: -i for i, k in enumerate(reversed(keys))}
    got = roundtrip(msg)
    assert list(got) == keys + ["nested"]
    assert list(got["nested"]) == list(reversed(keys))
    assert got == msg


def test_dict_keys_that_share_a_cache_slot_stay_apart(roundtrip):
    """The receiver reuses the str of a key it has seen, found by the key's
    length and first 8 bytes: keys alike in those (and keys longer than
    its 32-byte entries, and more distinct keys than its 256 slots) must
    still come back exactly as sent, message after message."""
    alike = [f"prefix__{c}" for c in "abcdefgh"] + ["prefix__é", "prefix__"]
    long = ["k" * 32, "k" * 33, "k" * 31 + "é", "x" * 200, "x" * 199 + "y"]
    many = [f"key{i:04d}" for i in range(600)]
    for _ in range(3):   # later rounds find the keys in the table
        for keys in (alike, long, many, list(reversed(alike))):
            msg = {k: i for i, k in enumerate(keys)}
            got = roundtrip(msg)
            assert list(got) == keys and got == msg


def deep_equal(a, b):
    """Equality that also checks container and scalar types and array dtypes."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and \
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(deep_equal, a, b))
    if isinstance(a, float):
        return same_value(a, b)
    return type(a) is type(b) and a == b


def nest(depth, leaf):
    """``depth`` containers cycling dict -> list -> tuple around ``leaf``."""
    v = leaf
    for level in range(depth):
        v = ({"d": v, "level": level} if level % 3 == 0 else
             [level, v] if level % 3 == 1 else (v, level))
    return v


def test_deep_nesting(roundtrip):
    msg = {"root": nest(30, np.arange(3)), "side": nest(20, "leaf")}
    got = roundtrip(msg)
    assert deep_equal(msg, got)
    # spot-check the innermost value survived at full depth
    v = got["root"]
    for level in reversed(range(30)):
        v = v["d"] if level % 3 == 0 else v[1] if level % 3 == 1 else v[0]
    assert np.array_equal(v, np.arange(3))


def test_nesting_limit_is_consistent():
    """Whatever depth the encoder accepts, the decoder accepts too."""
    def nested(depth):
        msg = {}
        node = msg
        for _ in range(depth - 1):
            node["k"] = {}
            node = node["k"]
        return msg

    accepted = 0
    for depth in range(1, 300):
        try:
            frame = _core.encode_frame(nested(depth))
        except ValueError:
            break
        accepted = depth
        _core.decode_frame(frame)          # must not raise ProtocolError
    assert accepted >= 30
    assert accepted < 299, "the encoder accepted unbounded nesting"


def test_everything_at_once(roundtrip):
    msg = {
        "obs": np.random.default_rng(0).random((16, 4)).astype(np.float32),
        "act": np.arange(16, dtype=np.int64),
        "done": np.zeros(16, dtype=bool),
        "info": [{"ep": i, "ret": float(i) / 3, "tag": f"ep{i}", "raw": bytes([i])} for i in range(5)],
        "meta": ("run", 7, None, True, np.float16(0.5), 2**100),
    }
    got = roundtrip(msg)
    assert list(got) == list(msg)
    for k in ("obs", "act", "done"):
        assert got[k].dtype == msg[k].dtype and np.array_equal(got[k], msg[k])
    assert got["info"] == msg["info"]
    assert got["meta"] == msg["meta"] and type(got["meta"]) is tuple
    assert type(got["meta"][4]) is np.float16


# --------------------------------------------------------------------------
# properties of received arrays
# --------------------------------------------------------------------------
def _arrays_in(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _arrays_in(v)


def test_received_arrays_writable_aligned_owned(roundtrip):
    msg = {
        "odd": np.arange(3, dtype=np.int8),
        "f64": np.arange(5, dtype=np.float64),
        "odd2": np.arange(7, dtype=np.uint8),
        "c": np.arange(3, dtype=np.complex128),
        "zero_d": np.array(7, dtype=np.int16),
        "nested": [np.ones(9, dtype=np.float16), {"deep": np.arange(33, dtype=np.int32)}],
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    }
    got = roundtrip(msg)
    arrays = list(_arrays_in(got))
    assert len(arrays) == 8
    for a in arrays:
        assert a.flags.writeable
        assert a.flags.aligned
        assert a.ctypes.data % 64 == 0, (a.dtype, a.shape, a.ctypes.data % 64)
        # memory is owned by the array or kept alive by its base chain
        assert a.flags.owndata or a.base is not None
        before = a.copy()
        a[...] = 0                       # writing must work
        a[...] = before
    # the data outlives the message dict it came in
    keep = got["nested"][1]["deep"]
    del got, arrays
    gc.collect()
    _ = [np.ones(1000) for _ in range(50)]   # churn the allocator
    assert np.array_equal(keep, np.arange(33, dtype=np.int32))


def test_arrays_within_one_message_do_not_alias(roundtrip):
    got = roundtrip({"a": np.zeros(100, np.int64), "b": np.zeros(100, np.int64),
                     "c": [np.zeros(100, np.int64)]})
    got["a"][:] = 1
    assert not got["b"].any() and not got["c"][0].any()
    got["c"][0][:] = 2
    assert (got["a"] == 1).all() and not got["b"].any()


def test_received_array_independent_of_later_messages(live_pair):
    learner, actor = live_pair
    for i in range(3):
        actor.send_trajectory({"i": i, "x": np.full(1000, i, dtype=np.int64)}, timeout=T)
    first = learner.receive(timeout=T)
    assert first["i"] == 0
    first["x"][:] = -7
    second = learner.receive(timeout=T)
    third = learner.receive(timeout=T)
    assert second["i"] == 1 and (second["x"] == 1).all()
    assert third["i"] == 2 and (third["x"] == 2).all()
    assert (first["x"] == -7).all()
    second["x"][:] = 99
    assert (third["x"] == 2).all()


@pytest.mark.parametrize("nbytes", [64, 1 << 16, 32 << 20])
def test_sender_may_reuse_array_after_send_returns(live_pair, nbytes):
    """send_trajectory returns once the data is written or copied, so the
    caller may overwrite its array. The large case exceeds the socket buffers
    (the learner is not reading), so part of it must be queued."""
    learner, actor = live_pair
    a = np.arange(nbytes // 8, dtype=np.int64)
    expect = a.copy()
    actor.send_trajectory({"x": a}, timeout=T)
    a[:] = -1
    del a
    gc.collect()
    got = learner.receive(timeout=T)
    assert np.array_equal(got["x"], expect)


def test_64mib_float32_live(live_pair):
    learner, actor = live_pair
    a = np.arange(16 << 20, dtype=np.float32)
    assert a.nbytes == 64 << 20
    a[::4097] = -np.pi
    actor.send_trajectory({"big": a, "tag": "big"}, timeout=30)
    got = learner.receive(timeout=30)
    assert got["tag"] == "big"
    assert got["big"].dtype == np.float32 and got["big"].shape == a.shape
    assert np.array_equal(got["big"], a)
    assert got["big"].ctypes.data % 64 == 0


# --------------------------------------------------------------------------
# unsupported values
# --------------------------------------------------------------------------
class Custom:
    pass


UNSUPPORTED = [
    ({"a": [1, {2}]}, "['a'][1]", "set"),
    ({"a": frozenset()}, "['a']", "frozenset"),
    ({"obs": {"x": [0, 1, {3}]}}, "['obs']['x'][2]", "set"),
    ({"x": {"y": (1, 2, Custom())}}, "['x']['y'][2]", "Custom"),
    ({"o": object()}, "['o']", "object"),
    ({"c": 1 + 2j}, "['c']", "complex"),
    ({"b": bytearray(b"ab")}, "['b']", "bytearray"),
    ({"m": memoryview(b"ab")}, "['m']", "memoryview"),
    ({"f": len}, "['f']", ""),
    ({"t": [[[], [type]]]}, "['t'][0][1][0]", "type"),
    ({"objarr": np.array([1, "a"], dtype=object)}, "['objarr']", "object"),
    ({"u": np.array(["abc"])}, "['u']", ""),
    ({"dt": np.array(["2020-01-01"], dtype="datetime64[D]")}, "['dt']", ""),
    ({"st": np.zeros(2, dtype=[("a", "i4"), ("b", "f8")])}, "['st']", ""),
    ({"l": [np.datetime64("2020-01-01")]}, "['l'][0]", ""),
    ({"a": {1: "x"}}, "['a']", "int"),
    ({"a": {"b": {None: 1}}}, "['a']['b']", "NoneType"),
    ({"a": {b"k": 1}}, "['a']", "bytes"),
    ({("t",): 1}, "", "tuple"),
]


@pytest.mark.parametrize("msg,path,typename", UNSUPPORTED,
                         ids=[f"{i}-{p or 'root'}" for i, (_, p, _) in enumerate(UNSUPPORTED)])
def test_unsupported_rejected_with_path_codec(msg, path, typename):
    with pytest.raises(TypeError) as ei:
        _core.encode_frame(msg)
    text = str(ei.value)
    assert path in text
    assert typename in text


@pytest.mark.parametrize("msg,path,typename", UNSUPPORTED,
                         ids=[f"{i}-{p or 'root'}" for i, (_, p, _) in enumerate(UNSUPPORTED)])
def test_unsupported_rejected_and_nothing_sent_live(live_pair, msg, path, typename):
    learner, actor = live_pair
    with pytest.raises(TypeError) as ei:
        actor.send_trajectory(msg, timeout=T)
    assert path in str(ei.value)
    # nothing was sent: the next message the learner gets is the sentinel
    actor.send_trajectory({"sentinel": path}, timeout=T)
    assert learner.receive(timeout=T) == {"sentinel": path}


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize == 8, reason="longdouble is float64 here")
def test_longdouble_rejected():
    with pytest.raises(TypeError, match=r"\['x'\]"):
        _core.encode_frame({"x": np.zeros(3, dtype=np.longdouble)})


@pytest.mark.parametrize("top", [[1, 2], (1,), "str", b"b", 5, None, np.arange(3), {1, 2}])
def test_top_level_must_be_dict(live_pair, top):
    learner, actor = live_pair
    with pytest.raises(TypeError):
        _core.encode_frame(top)
    with pytest.raises(TypeError):
        actor.send_trajectory(top, timeout=T)
    actor.send_trajectory({"sentinel": 1}, timeout=T)
    assert learner.receive(timeout=T) == {"sentinel": 1}


def test_rejection_on_every_send_path(live_pair):
    """publish_parameters, learner.send, request and reply validate too, and send nothing."""
    learner, actor = live_pair
    bad = {"a": [1, {2}]}
    with pytest.raises(TypeError, match=r"\['a'\]\[1\]"):
        learner.publish_parameters(bad)
    with pytest.raises(TypeError, match=r"\['a'\]\[1\]"):
        learner.send(actor.actor_id, bad, timeout=T)
    with pytest.raises(TypeError, match=r"\['a'\]\[1\]"):
        actor.request(bad, timeout=T)
    # nothing went out: the next push / parameters / request are the good ones
    learner.send(actor.actor_id, {"push": 1}, timeout=T)
    assert actor.receive(timeout=T) == {"push": 1}
    version = learner.publish_parameters({"p": 1})
    params = actor.wait_parameters(newer_than=version - 1, timeout=T)
    assert params.version == version and params.data == {"p": 1}

    import threading
    errors = []

    def serve():
        try:
            req = learner.receive_request(timeout=T)
            assert req.data == {"q": 1}
            with pytest.raises(TypeError, match=r"\['a'\]\[1\]"):
                req.reply(bad)
            req.reply({"r": 2})
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    th = threading.Thread(target=serve)
    th.start()
    try:
        assert actor.request({"q": 1}, timeout=T) == {"r": 2}
    finally:
        th.join(T)
    assert not th.is_alive()
    assert not errors, errors


def test_lone_surrogate_rejected_with_path():
    with pytest.raises((TypeError, ValueError)) as ei:
        _core.encode_frame({"s": ["ok", "bad\ud800"]})
    assert "['s'][1]" in str(ei.value)


def test_self_referencing_container_rejected():
    loop = []
    loop.append(loop)
    with pytest.raises((TypeError, ValueError)):
        _core.encode_frame({"loop": loop})


# --------------------------------------------------------------------------
# the frame format itself
# --------------------------------------------------------------------------
def test_kind_and_ref_carried():
    frame = _core.encode_frame({"x": 1}, _core.KIND_REQUEST, 77)
    assert _core.decode_frame(frame) == (_core.KIND_REQUEST, 77, {"x": 1})


def test_golden_frame_traj():
    """PROTOCOL.md 9.2: a TRAJ frame carrying {"a": 1}."""
    expect = bytes.fromhex(
        "01000000130000000000000000000000" "00000000000000000000000000000000"
        "00000000000000000000000000000000" "0a010000000100000061030100000000"
        "000000")
    assert _core.encode_frame({"a": 1}) == expect
    assert _core.decode_frame(expect) == (_core.KIND_TRAJ, 0, {"a": 1})


def test_golden_frame_params_with_array():
    """PROTOCOL.md 9.3: PARAMS version 7 with a float32 array and an int."""
    expect = bytes.fromhex(
        "020000002f0000000c00000000000000" "00000000000000000000000000000000"
        "07000000000000000000000000000000" "0a0200000001000000770b0b01000300"
        "00000000000000000000000000000400" "00007374657003070000000000000000"
        "00000000000000000000000000000000" "00000000000000000000000000000000"
        "0000803f0000004000004040")
    msg = {"w": np.array([1.0, 2.0, 3.0], dtype=np.float32), "step": 7}
    assert _core.encode_frame(msg, _core.KIND_PARAMS, 7) == expect
    kind, ref, value = _core.decode_frame(expect)
    assert (kind, ref) == (_core.KIND_PARAMS, 7)
    assert list(value) == ["w", "step"] and value["step"] == 7
    assert value["w"].dtype == np.float32 and value["w"].tolist() == [1.0, 2.0, 3.0]


def test_decode_rejects_truncated_and_padded_frames():
    frame = _core.encode_frame({"s": "héllo", "a": np.arange(10, dtype=np.int16), "b": 2**70,
                                "l": [1, 2.5, None, True, b"xy", (3,)], "sc": np.float32(1.5)})
    for n in range(len(frame)):
        with pytest.raises(rlink.ProtocolError):
            _core.decode_frame(frame[:n])
    with pytest.raises(rlink.ProtocolError):
        _core.decode_frame(frame + b"\x00")


def test_decode_survives_corruption():
    """Random byte corruption yields ProtocolError or some valid value, never a crash or another error."""
    msg = {"s": "héllo", "a": np.arange(10, dtype=np.int16), "b": 2**70,
           "l": [1, 2.5, None, True, b"xy", (3,)], "sc": np.float32(1.5), "d": {"k": "v"}}
    frame = _core.encode_frame(msg)
    rng = random.Random(1234)
    outcomes = {"ok": 0, "rejected": 0}
    for _ in range(3000):
        b = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            kind, ref, value = _core.decode_frame(bytes(b))
        except rlink.ProtocolError:
            outcomes["rejected"] += 1
        else:
            assert isinstance(value, dict)
            outcomes["ok"] += 1
    assert outcomes["rejected"] > 0


def test_decode_property_based():
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    hnp = pytest.importorskip("hypothesis.extra.numpy")

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | \
        st.text(max_size=20) | st.binary(max_size=20)
    arrays = hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                                   max_side=4))
    values = st.recursive(
        scalars | arrays,
        lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) |
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12)
    messages = st.dictionaries(st.text(max_size=8), values, max_size=5)

    @hypothesis.settings(max_examples=150, deadline=None, database=None)
    @hypothesis.given(messages)
    def check(msg):
        assert deep_equal(msg, _codec(msg))

    check()


# --------------------------------------------------------------------------
# the encoder and the receiver's default limits agree
# --------------------------------------------------------------------------
@pytest.mark.skipif(int(np.__version__.split(".")[0]) < 2,
                    reason="numpy 1.x cannot build arrays of more than 32 dimensions")
def test_too_many_dimensions_rejected():
    a = np.zeros((1,) * 33)
    with pytest.raises(ValueError, match=r"\['a'\]"):
        _core.encode_frame({"a": a})
    b = np.zeros((1,) * 32)
    got = _codec({"b": b})["b"]
    assert got.shape == b.shape


LIMIT_CASES = {
    "70000 arrays": lambda: {"a": [np.zeros(1)] * 70_000},
    "2**20+1 list items": lambda: {"l": [0] * (2**20 + 1)},
    "65 MiB bytes": lambda: {"b": b"x" * (65 << 20)},
    "65 MiB str": lambda: {"s": "x" * (65 << 20)},
}

@pytest.mark.parametrize("case", list(LIMIT_CASES))
def test_encoder_refuses_what_decoder_rejects(case):
    msg = LIMIT_CASES[case]()
    try:
        frame = _core.encode_frame(msg)
    except ValueError:              # refused before sending (MessageTooLargeError is a ValueError)
        return
    _core.decode_frame(frame)       # otherwise the receiver must accept it


def test_over_limit_message_refused_and_connection_kept():
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as actor:
        with pytest.raises(ValueError):
            actor.send_trajectory({"b": b"x" * (65 << 20)}, timeout=T)
        actor.send_trajectory({"sentinel": 1}, timeout=T)
        assert learner.receive(timeout=T) == {"sentinel": 1}


def test_decode_frame_checks_the_body_checksum(seal):
    """A checksummed frame (PROTOCOL.md 4.4) with one body byte changed is
    refused, not decoded."""
    frame = bytearray(seal(_core.encode_frame({"w": np.arange(100, dtype=np.float32)})))
    _, _, value = _core.decode_frame(bytes(frame))
    assert np.array_equal(value["w"], np.arange(100, dtype=np.float32))
    frame[-1] ^= 0x01
    with pytest.raises(rlink.ProtocolError, match="checksum"):
        _core.decode_frame(bytes(frame))
