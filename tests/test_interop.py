"""Arrays from other libraries go into messages as they are: anything with
``__dlpack__`` or the array interface (PyTorch CPU tensors included) is
encoded from its own memory, with no copy made by rlink."""
from __future__ import annotations

import numpy as np
import pytest

import rlink
from rlink import _core

T = 10.0


class DLPackOnly:
    """Exposes an ndarray through DLPack only (no __array__, no buffer)."""

    def __init__(self, a: np.ndarray):
        self._a = a
        self.exports = 0

    def __dlpack__(self, **kwargs):
        self.exports += 1
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


class InterfaceOnly:
    """Exposes an ndarray through __array_interface__ only."""

    def __init__(self, a: np.ndarray):
        self._a = a

    @property
    def __array_interface__(self):
        return self._a.__array_interface__


def _roundtrip(obj):
    kind, ref, value = _core.decode_frame(_core.encode_frame(obj))
    return value


@pytest.mark.parametrize("wrap", [DLPackOnly, InterfaceOnly])
@pytest.mark.parametrize("a", [np.arange(12, dtype=np.float32).reshape(3, 4),
                               np.arange(5, dtype=np.int64),
                               np.zeros((2, 0), dtype=np.uint8),
                               np.array(3.5)],
                         ids=["f32-2d", "i64", "empty", "0d"])
def test_foreign_arrays_roundtrip(wrap, a):
    got = _roundtrip({"x": wrap(a)})["x"]
    assert isinstance(got, np.ndarray)
    assert got.dtype == a.dtype and got.shape == a.shape and np.array_equal(got, a)


def test_dlpack_object_is_exported_not_copied_via_python():
    w = DLPackOnly(np.arange(6.0))
    _core.encode_frame({"x": w, "y": [w, w]})
    assert w.exports == 3


def test_foreign_arrays_over_a_live_pair(learner, actor):
    a = np.arange(1000, dtype=np.float64)
    actor.send_trajectory({"x": DLPackOnly(a), "y": InterfaceOnly(a[::-1].copy())}, timeout=T)
    got = learner.receive(timeout=T)
    assert np.array_equal(got["x"], a) and np.array_equal(got["y"], a[::-1])


def test_unsupported_foreign_dtype_is_a_type_error():
    with pytest.raises(TypeError, match=r"message\['x'\]"):
        _core.encode_frame({"x": InterfaceOnly(np.zeros(2, dtype="V3"))})


def _torch():
    return pytest.importorskip("torch")


def test_torch_tensors_roundtrip(learner, actor):
    torch = _torch()
    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    tensors = {
        "t": t,
        "strided": t.transpose(0, 2),          # non-contiguous: sent in its logical order
        "i64": torch.tensor([1, 2, 3]),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(7.0),
    }
    actor.send_trajectory(tensors, timeout=T)
    got = learner.receive(timeout=T)
    for k, v in tensors.items():
        assert np.array_equal(got[k], v.numpy()), k
        assert got[k].shape == tuple(v.shape)


def test_torch_tensor_requiring_grad_says_what_to_do():
    torch = _torch()
    t = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match="detach"):
        _core.encode_frame({"w": t})
    assert np.array_equal(_roundtrip({"w": t.detach()})["w"], np.ones(3, dtype=np.float32))


def test_import_rlink_does_not_import_torch(tmp_path):
    import subprocess
    import sys
    code = "import sys, rlink; print('torch' in sys.modules)"
    # cwd: not the repository root, whose rlink/ is the uncompiled source
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_as_torch_shares_memory(learner, actor):
    torch = _torch()
    actor.send_trajectory({"obs": np.arange(6, dtype=np.float32).reshape(2, 3),
                           "nested": [np.ones(2, np.int64), (np.zeros(1, np.uint8), "tag")],
                           "step": 3, "scalar": np.float32(0.5)}, timeout=T)
    got = learner.receive(timeout=T)
    t = rlink.as_torch(got)
    assert isinstance(t["obs"], torch.Tensor) and t["obs"].dtype == torch.float32
    assert t["obs"].shape == (2, 3) and t["obs"][1, 2].item() == 5.0
    t["obs"][0, 0] = 42.0                       # the same memory as the array
    assert got["obs"][0, 0] == 42.0
    assert isinstance(t["nested"][0], torch.Tensor) and t["nested"][1][1] == "tag"
    assert isinstance(t["nested"][1], tuple) and isinstance(t["nested"][1][0], torch.Tensor)
    assert t["step"] == 3 and t["scalar"] == np.float32(0.5)
