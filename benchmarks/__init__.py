"""rlink's benchmark suite (not part of the installed package): python -m benchmarks.

Run from a checkout. If the checkout's rlink/ is not built in place (no
compiled _core), the checkout's root is moved to the end of sys.path so that
an installed rlink (`pip install .`) is the one measured; results.json
records which rlink was imported (machine.rlink_path)."""
import glob as _glob
import os as _os
import sys as _sys


def _prefer_built_rlink() -> None:
    root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    src = _os.path.join(root, "rlink")
    if not _os.path.isdir(src) or _glob.glob(_os.path.join(src, "_core*.so")) \
            or _glob.glob(_os.path.join(src, "_core*.pyd")):
        return
    real = _os.path.realpath(root)
    rest = [p for p in _sys.path if _os.path.realpath(p or _os.getcwd()) != real]
    _sys.path[:] = rest + [root]


_prefer_built_rlink()
