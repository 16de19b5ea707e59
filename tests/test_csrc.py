"""Build and run the C core's own test runner (csrc/tests/), plain and under ASan+UBSan.

The runner prints `N passed, N failed` as its last line. These tests need the
repository's C sources and a C compiler; they skip (with the reason) when run
against an installed wheel without sources, or on a machine without `cc`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"
WARNINGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
SUMMARY = re.compile(r"^(\d+) passed, 0 failed$")
TIMEOUT = 600  # seconds; no pytest-timeout here, so bound each subprocess


def _compiler() -> list[str]:
    if sys.platform == "win32":
        # (csrc/ itself builds on Windows: .ci/run cross-builds this runner with
        # mingw-w64 and runs it under wine; the flags below are gcc/clang's.)
        pytest.skip("this test builds the C runner with gcc/clang flags, not MSVC")
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    pytest.skip("no C compiler (cc, gcc, clang) on PATH")


def _sources() -> list[str]:
    if not CSRC.is_dir():
        pytest.skip(f"C sources not present ({CSRC}); e.g. testing an installed wheel")
    core = sorted(CSRC.glob("*.c"))
    tests = sorted((CSRC / "tests").glob("*.c"))
    if not tests:
        pytest.skip(f"no C tests in {CSRC / 'tests'}")
    return [str(p) for p in core + tests]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)


def _build_and_run(tmp_path: Path, flags: list[str], env: dict[str, str] | None = None) -> None:
    cc = _compiler()
    sources = _sources()
    exe = tmp_path / "rl_ctest"
    build = _run([*cc, *WARNINGS, *flags, f"-I{CSRC}", *sources, "-lm", "-o", str(exe)])
    assert build.returncode == 0, (
        f"compiling the C tests failed:\n$ {shlex.join(build.args)}\n{build.stdout}{build.stderr}"
    )

    run = _run([str(exe)], cwd=tmp_path, env={**os.environ, **(env or {})})
    output = f"--- stdout\n{run.stdout}--- stderr\n{run.stderr}"
    assert run.returncode == 0, f"C tests exited with {run.returncode}\n{output}"
    lines = [line.strip() for line in run.stdout.splitlines() if line.strip()]
    assert lines, f"C test runner printed nothing\n{output}"
    match = SUMMARY.match(lines[-1])
    assert match, f"last line is not 'N passed, 0 failed': {lines[-1]!r}\n{output}"
    assert int(match.group(1)) > 0, f"no C tests ran\n{output}"


def _sanitizers_work(cc: list[str], tmp_path: Path) -> bool:
    """Can this compiler build and run a trivial program with ASan+UBSan?"""
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "probe"
    try:
        if _run([*cc, *SANITIZE, str(probe), "-o", str(exe)]).returncode != 0:
            return False
        return _run([str(exe)]).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_c_core(tmp_path: Path) -> None:
    _build_and_run(tmp_path, ["-O2"])


def test_c_core_sanitized(tmp_path: Path) -> None:
    cc = _compiler()
    _sources()  # skip early when there is nothing to build
    if not _sanitizers_work(cc, tmp_path):
        pytest.skip(f"{shlex.join(cc)} cannot build/run -fsanitize=address,undefined here")
    _build_and_run(
        tmp_path,
        ["-g", "-O1", *SANITIZE],
        # The runner is a fresh process: drop an inherited LD_PRELOAD (e.g. libasan for a
        # sanitized extension) so ASan initialises normally.
        env={"UBSAN_OPTIONS": "print_stacktrace=1", "LD_PRELOAD": ""},
    )
