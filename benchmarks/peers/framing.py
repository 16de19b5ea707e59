"""Helpers shared by the peers: the header + buffers encoding of the
hand-written ones (mp.connection, raw socket, pyzmq's decoding), and what a
round-trip server or a broadcast subscriber does with what it receives."""
from __future__ import annotations

import numpy as np

from ..workloads import last_byte, expected_byte, make_reply, DataError

ARRAY, NPSCALAR, PYVALUE = 0, 1, 2
_dtypes: dict = {}


def dtype(s):
    dt = _dtypes.get(s)
    if dt is None:
        dt = _dtypes[s] = np.dtype(s)
    return dt


def split(d: dict):
    """-> (msgpack-able header, list of array buffers)."""
    header, bufs = [], []
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            header.append((k, ARRAY, v.dtype.str, v.shape))
            bufs.append(v)
        elif isinstance(v, np.generic):
            header.append((k, NPSCALAR, v.dtype.str, v.item()))
        else:
            header.append((k, PYVALUE, None, v))
    return header, bufs


def join(header, bufs) -> dict:
    out, i = {}, 0
    for k, kind, dt, v in header:
        if kind == ARRAY:
            out[k] = np.frombuffer(bufs[i], dtype=dtype(dt)).reshape(v)
            i += 1
        elif kind == NPSCALAR:
            out[k] = dtype(dt).type(v)
        else:
            out[k] = v
    return out


def answer(request: dict) -> dict:
    """A round-trip server's work on one request: check its obs against its
    seq (DataError if corrupt) and return the reply."""
    seq = int(request["seq"])
    if last_byte(request["obs"]) != expected_byte(seq):
        raise DataError(f"request {seq}: corrupt obs")
    return make_reply(seq)


def wait_version(recv, version):
    """A broadcast subscriber's wait: take (version, params) from recv()
    until ``version`` arrives and return its params. Older versions are
    skipped; a newer one is a DataError."""
    while True:
        got, params = recv()
        if got == version:
            return params
        if got > version:
            raise DataError(f"version {got} arrived while waiting for {version}")
