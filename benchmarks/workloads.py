"""The workloads, exactly as measured, and the checks every receiver runs.

W1  step message   {"seq": int, "obs": float32[8], "action": np.int64,
                    "reward": np.float32, "done": bool}
                   one-way, actor -> learner; msg/s at the receiver, which
                   decodes every message back to numpy.
W2  trajectory     {"seq": int, "obs": uint8[64,84,84,4], "actions": int64[64],
                    "rewards": float32[64], "dones": bool[64],
                    "logits": float32[64,18]}: 1,811,776 payload bytes.
                   one-way, 1 -> 1 and 2 -> 1; GB/s (1e9 B/s of array payload)
                   at the receiver, and each actor's share for 2 -> 1.
W3  parameters     16 float32 arrays of 1024 x 1024 (4 MiB each, 64 MiB in all)
                   learner -> 2 actors; seconds from the start of a broadcast
                   until the last actor holds every array.
W4  round trip     a W1 message as request, {"action": np.int64} as reply;
                   latency percentiles over >= 20,000 round trips after warm-up.

"seq" is the only field added to the issue's definitions: it carries the
sender's index in its high bits and the message number in its low 40 bits.
The sender also writes a byte derived from the message number into the last
byte of "obs" (W1, W2, W4) or of every parameter array (W3); receivers check
both on every message, so a transport that drops, reorders, duplicates or
corrupts data fails the run.
"""
from __future__ import annotations

import numpy as np

SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1
FULL_CHECK_EVERY = 1024


class DataError(AssertionError):
    """A transport delivered something other than what was sent."""


def expected_byte(seq: int) -> int:
    return ((seq & SEQ_MASK) * 131 + 7) & 0xFF


def last_byte(a: np.ndarray) -> int:
    try:
        return a.data.cast("B")[-1]        # contiguous arrays: ~0.1 µs
    except (TypeError, ValueError):
        return int(a.reshape(-1).view(np.uint8)[-1])


class Stamper:
    """Writes seq and the derived last byte into a payload; caches a byte view
    of obs so the per-message cost is ~0.1 µs (the same for every peer)."""

    def __init__(self, payload: dict):
        self.payload = payload
        self.last = payload["obs"].reshape(-1).view(np.uint8)[-1:]

    def __call__(self, seq: int) -> dict:
        self.payload["seq"] = seq
        self.last[0] = ((seq & SEQ_MASK) * 131 + 7) & 0xFF
        return self.payload


def make_step() -> dict:
    return {"seq": 0,
            "obs": np.linspace(-1.0, 1.0, 8, dtype=np.float32),
            "action": np.int64(3),
            "reward": np.float32(0.25),
            "done": False}


def make_trajectory() -> dict:
    rng = np.random.default_rng(0)
    return {"seq": 0,
            "obs": rng.integers(0, 256, size=(64, 84, 84, 4), dtype=np.uint8),
            "actions": rng.integers(0, 18, size=64, dtype=np.int64),
            "rewards": rng.standard_normal(64).astype(np.float32),
            "dones": rng.random(64) < 0.05,
            "logits": rng.standard_normal((64, 18)).astype(np.float32)}


PARAM_ARRAYS = 16
PARAM_SHAPE = (1024, 1024)   # float32: 4 MiB each, 64 MiB in all


def make_params() -> dict:
    rng = np.random.default_rng(1)
    return {f"layer{i:02d}": rng.standard_normal(PARAM_SHAPE, dtype=np.float32)
            for i in range(PARAM_ARRAYS)}


def make_reply(seq: int) -> dict:
    return {"action": np.int64(seq & SEQ_MASK)}


def payload_bytes(d: dict) -> int:
    return sum(v.nbytes for v in d.values() if isinstance(v, np.ndarray))


def stamp(payload: dict, seq: int) -> None:
    payload["seq"] = seq
    payload["obs"].reshape(-1).view(np.uint8)[-1] = expected_byte(seq)


def stamp_params(params: dict, version: int) -> None:
    b = expected_byte(version)
    for a in params.values():
        a.reshape(-1).view(np.uint8)[-1] = b


def check_message(d: dict, seq: int) -> None:
    """Cheap per-message check: the sequence number and the last byte of obs."""
    got = int(d["seq"])
    if got != seq:
        raise_seq(got, seq)
    lb = last_byte(d["obs"])
    if lb != expected_byte(seq):
        raise_byte(lb, seq)


def raise_seq(got: int, seq: int):
    raise DataError(f"seq {got >> SEQ_BITS}:{got & SEQ_MASK} received, expected "
                    f"{seq >> SEQ_BITS}:{seq & SEQ_MASK} (loss, duplication or reordering)")


def raise_byte(lb: int, seq: int):
    raise DataError(f"seq {seq & SEQ_MASK}: last byte of obs is {lb}, expected "
                    f"{expected_byte(seq)} (corruption)")


def check_full(got: dict, template: dict, loose_scalars: bool = False) -> None:
    """Keys, types, dtypes and shapes as sent; fields other than seq/obs equal.

    loose_scalars: accept a 0-d array for a numpy or Python scalar (portal
    sends every scalar as a 0-d array; that is its documented behaviour)."""
    if list(got) != list(template):
        raise DataError(f"keys {list(got)} != {list(template)}")
    for k, want in template.items():
        v = got[k]
        if k == "seq":
            continue
        if loose_scalars and isinstance(v, np.ndarray) and v.ndim == 0 \
                and not isinstance(want, np.ndarray):
            if v.item() != (want.item() if isinstance(want, np.generic) else want):
                raise DataError(f"{k}: {v!r} != {want!r}")
            continue
        if type(v) is not type(want):
            raise DataError(f"{k}: type {type(v).__name__} != {type(want).__name__}")
        if isinstance(want, (np.ndarray, np.generic)):
            if v.dtype != want.dtype or v.shape != want.shape:
                raise DataError(f"{k}: {v.dtype}{v.shape} != {want.dtype}{want.shape}")
            if k != "obs" and not np.array_equal(v, want):
                raise DataError(f"{k}: values differ from what was sent")
        elif v != want:
            raise DataError(f"{k}: {v!r} != {want!r}")


def check_params(got: dict, version: int) -> None:
    if len(got) != PARAM_ARRAYS:
        raise DataError(f"{len(got)} parameter arrays received, expected {PARAM_ARRAYS}")
    want = expected_byte(version)
    for k, a in got.items():
        if a.dtype != np.float32 or a.shape != PARAM_SHAPE:
            raise DataError(f"parameter {k}: {a.dtype}{a.shape}")
        if last_byte(a) != want:
            raise DataError(f"parameter {k} version {version}: last byte {last_byte(a)}, "
                            f"expected {want} (stale or corrupt)")


def check_reply(reply: dict, seq: int) -> None:
    a = reply["action"]
    if int(a) != (seq & SEQ_MASK):
        raise DataError(f"reply action {int(a)} to request {seq & SEQ_MASK} (mismatched reply)")


MAKERS = {"step": make_step, "trajectory": make_trajectory}
