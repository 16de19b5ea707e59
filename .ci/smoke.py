"""Smoke test for an installed rlink wheel: run as `python .ci/smoke.py`
(`--any-location` skips the installed-package checks, for an in-place build).

Checks that rlink comes from site-packages (not a source tree), that
rlink.__version__ matches the installed metadata, and round-trips every
supported dtype (arrays of several shapes and layouts, and numpy scalars) plus
every plain Python type through a live LearnerNode/ActorNode pair over
loopback, in all three patterns. Needs only numpy. Prints `N passed, 0 failed`.
"""
from __future__ import annotations

import importlib.metadata
import sys
import sysconfig
import threading
from pathlib import Path

import numpy as np

import rlink
from rlink import _core

T = 10.0  # seconds; every blocking call is bounded
DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64", "complex64", "complex128"]

checks = 0


def check(cond: bool, what: str) -> None:
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def sample(dtype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dtype == "bool":
        a = rng.integers(0, 2, n).astype(bool)
    elif dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        if n >= 2:
            a[0], a[-1] = info.min, info.max
    elif dtype.startswith("complex"):
        a = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
    else:
        a = rng.standard_normal(n).astype(dtype)
        if n >= 3:
            a[:3] = [np.inf, -0.0, np.finfo(dtype).max]
    return a.reshape(shape)


def same(a, b) -> bool:
    """Equal in type, dtype, shape and bytes (NaN-safe), recursively."""
    if isinstance(a, np.ndarray):  # tobytes() is C order whatever the layout: compares values
        return (type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())
    if isinstance(a, np.generic):
        return type(a) is type(b) and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def payloads() -> list[tuple[str, dict]]:
    out = []
    for i, dt in enumerate(DTYPES):
        msg = {
            "vector": sample(dt, (17,), i),
            "matrix": sample(dt, (5, 3), 100 + i),
            "fortran": np.asfortranarray(sample(dt, (4, 6), 200 + i)),
            "strided": sample(dt, (8, 8), 300 + i)[::2, 1::3],  # sent as a contiguous copy
            "cube": sample(dt, (2, 3, 4), 400 + i),
            "empty": np.zeros((0, 3), dtype=dt),
            "zero_d": sample(dt, (), 500 + i),
            "scalar": sample(dt, (1,), 600 + i)[0],
        }
        if np.dtype(dt).itemsize > 1:
            msg["swapped"] = sample(dt, (9,), 700 + i).astype(np.dtype(dt).newbyteorder())
        out.append((dt, msg))
    out.append(("python", {
        "int": -7, "big": 2**100 + 1, "float": 2.5, "true": True, "false": False, "none": None,
        "str": "héllo ✓", "bytes": b"\x00\xffraw", "list": [1, "a", [2.0]], "tuple": (1, (2, 3)),
        "nested": {"a": {"b": {"c": np.arange(3)}}}, "": "empty key",
    }))
    return out


def expect(sent: dict) -> dict:
    """What the receiver should see: native byte order, same values."""
    out = {}
    for k, v in sent.items():
        if isinstance(v, np.ndarray) and not v.dtype.isnative:
            v = v.astype(v.dtype.newbyteorder("="))
        out[k] = v
    return out


def check_install() -> None:
    where = Path(rlink.__file__).resolve()
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    if "--any-location" not in sys.argv:  # for trying this script on an in-place build
        check(any(s in where.parents for s in site), f"rlink imported from {where}, not site-packages {site}")
        meta = importlib.metadata.version("rlink")
        check(rlink.__version__ == meta, f"rlink.__version__ {rlink.__version__} != metadata {meta}")
    check(Path(_core.__file__).resolve().parent == where.parent, "rlink._core is not beside rlink")
    print(f"rlink {rlink.__version__} from {where.parent} (Python {sys.version.split()[0]}, "
          f"numpy {np.__version__}); core {Path(_core.__file__).name}")


def main() -> int:
    check_install()
    cases = payloads()
    with rlink.LearnerNode(port=0) as learner, rlink.ActorNode(learner.address, connect_timeout=T) as actor:
        # many-to-one
        for name, msg in cases:
            actor.send_trajectory(msg, timeout=T)
            got = learner.receive_message(timeout=T)
            check(got.actor_id == actor.actor_id, f"{name}: actor id")
            check(same(expect(msg), got.data), f"{name}: trajectory round trip differs")
        # one-to-many
        for name, msg in cases:
            version = learner.publish_parameters(msg)
            params = actor.wait_parameters(timeout=T)
            check(params.version == version and same(expect(msg), params.data), f"{name}: parameters differ")
        # bidirectional: request/reply echoes the message back; push to one actor
        def serve(n: int) -> None:
            for _ in range(n):
                req = learner.receive_request(timeout=T)
                req.reply(req.data, timeout=T)

        server = threading.Thread(target=serve, args=(len(cases),))
        server.start()
        try:
            for name, msg in cases:
                check(same(expect(msg), actor.request(msg, timeout=T)), f"{name}: request/reply differs")
        finally:
            server.join(T)
        check(not server.is_alive(), "request server did not finish")
        for name, msg in cases:
            learner.send(actor.actor_id, msg, timeout=T)
            check(same(expect(msg), actor.receive(timeout=T)), f"{name}: push differs")
    # the codec on its own, without sockets
    for name, msg in cases:
        kind, ref, value = _core.decode_frame(_core.encode_frame(msg))
        check(same(expect(msg), value), f"{name}: encode_frame/decode_frame differs")
    print(f"smoke: {len(DTYPES)} dtypes and plain Python types round-tripped in 4 patterns and the codec")
    print(f"{checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
