"""Helpers shared by the hand-written peers (mp.connection, raw socket)."""
from __future__ import annotations

import numpy as np

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
