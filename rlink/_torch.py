"""Received arrays as PyTorch tensors, without a copy. torch is imported only
when this is called: ``import rlink`` never imports it."""
from __future__ import annotations

import importlib
from typing import Any

import numpy as np


def as_torch(value: Any) -> Any:
    """``value`` (a received message, or any part of one) with every numpy
    array replaced by a tensor sharing its memory (``torch.from_numpy``);
    dicts, lists and tuples are rebuilt around them, everything else is
    returned as it is. Received arrays are writable and 64-byte aligned, so
    the tensors are too."""
    # deferred, and untyped here: torch is an optional dependency
    torch = importlib.import_module("torch")

    def convert(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return torch.from_numpy(v)
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, tuple):
            return tuple(convert(x) for x in v)
        return v

    return convert(value)
