#!/usr/bin/env bash
# The whole pytest suite against an ASan+UBSan build of rlink:
# `bash .ci/sanitized_tests.sh [extra pytest args]` from anywhere.
#
#   1. a scratch venv (python3.11 -m venv) with the build requirements and the
#      test extras (pytest, hypothesis, mypy);
#   2. a scratch copy of the tracked sources, installed into that venv with
#      RLINK_SANITIZE=1 (setup.py: -fsanitize=address,undefined -g -O1, with
#      the compiler Python was built with, gcc here) -- the repo is never
#      written;
#   3. a check that `import rlink` in that venv loads the sanitized _core
#      (ASan symbols present) from the venv, not from the source tree;
#   4. `pytest tests -q -s -p no:cacheprovider` from the repo root (importlib
#      mode, as .ci/run runs it), CI=true so tests/conftest.py refuses a
#      source-tree import, with LD_PRELOAD of the compiler's libasan,
#      PYTHONMALLOC=malloc, ASAN_OPTIONS=detect_leaks=0 (CPython leaks by
#      design at exit), -s so that pytest does not swallow reports written by
#      subprocesses or at exit.
# Fails if pytest fails (exit 5, no tests, included) or if any line
# "ERROR: AddressSanitizer" or "runtime error:" (UBSan) appears in the output;
# those lines are printed again at the end.
#
# Env: PYTHON (default python3.11); SANITIZED_CC (default: the compiler
# Python was built with, gcc here; clang adds UBSan's pointer-overflow checks
# on NULL, which gcc lacks); SANITIZED_PYTEST_ARGS (extra pytest
# arguments, e.g. "--deselect tests/test_x.py::test_y"; also taken from the
# command line). Prints its own timing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
PYTHON=${PYTHON:-python3.11}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# This script chooses the build knobs itself.
unset RLINK_SANITIZE RLINK_DEBUG RLINK_ANNOTATE

# shellcheck source=lib.sh
source "$REPO/.ci/lib.sh"
ci_begin sanitized_tests.sh sanitized

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
# The compiler: SANITIZED_CC, else the one Python was built with (gcc here).
BUILD_ENV=()
if [[ -n ${SANITIZED_CC:-} ]]; then
    CCNAME=$SANITIZED_CC
    BUILD_ENV=(CC="$CCNAME" LDSHARED="$CCNAME -shared")
else
    CCNAME=$("$PYTHON" -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')
fi
command -v "$CCNAME" >/dev/null 2>&1 || die "compiler $CCNAME not found"
if [[ $("$CCNAME" --version 2>/dev/null) == *clang* ]]; then
    LIBASAN=$("$CCNAME" -print-file-name=libclang_rt.asan-$(uname -m).so 2>/dev/null || true)
    HINT="apt-get install -y clang libclang-rt-$("$CCNAME" -dumpversion | cut -d. -f1)-dev"
else
    LIBASAN=$("$CCNAME" -print-file-name=libasan.so 2>/dev/null || true)
    HINT="apt-get install -y gcc (its libasan comes with it)"
fi
[[ -f $LIBASAN ]] || die "no ASan runtime for $CCNAME; on Debian 12: $HINT"
echo "python: $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)'); compiler: $CCNAME; ASan runtime: $LIBASAN"

# ---- 1. venv ---------------------------------------------------------------------------------
phase "venv with the build requirements and the test extras"
ci_venv "pip install of the build and test requirements" "setuptools>=77" "Cython>=3.0.11,<4" \
    "numpy>=2.0,<3" "pytest>=7" "hypothesis>=6" "mypy>=1.18"

# ---- 2. sanitized build from a scratch copy -------------------------------------------------
phase "build and install rlink with RLINK_SANITIZE=1"
ci_copy_sources
env "${BUILD_ENV[@]}" RLINK_SANITIZE=1 "$VENV/bin/python" -m pip install -q --progress-bar off --no-deps \
    --no-build-isolation --no-cache-dir "$SRC" >"$SCRATCH/build.log" 2>&1 ||
    { tail -n 60 "$SCRATCH/build.log" >&2; die "building rlink with RLINK_SANITIZE=1"; }

# ---- 3. is it the sanitized build that gets imported? -------------------------------------------
# clang's UBSan (not gcc's) also reports Cython's own NULL + 0 in its
# argument-parsing wrappers (cython/cython#4872): suppressed there only.
ci_ubsan_suppressions "$SCRATCH/ubsan.supp"
SAN_ENV=(LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0
         UBSAN_OPTIONS="print_stacktrace=1:suppressions=$SCRATCH/ubsan.supp" CI=true
         PATH="$VENV/bin:$PATH"
         HYPOTHESIS_STORAGE_DIRECTORY="$SCRATCH/hypothesis"   # not .hypothesis/ in the repo
         PYTHONDONTWRITEBYTECODE=1)                           # nor __pycache__/
# With SANITIZED_CC=clang, tests/test_csrc.py::test_c_core_sanitized skips:
# its probe program runs with this LD_PRELOAD, and clang links its own static
# ASan runtime into executables, so the two collide (gcc's shared libasan does
# not). .ci/run's stage 2 runs those C tests under clang anyway.
SO=$(cd "$SCRATCH" && env "${SAN_ENV[@]}" python -c 'import rlink._core as c; print(c.__file__)')
case $SO in
    "$VENV"/*) ;;
    *) die "rlink._core was imported from $SO, not from the venv" ;;
esac
ci_check_sanitized "$SO"
echo "sanitized extension: $SO"

# ---- 4. the suite ------------------------------------------------------------------------------
# The pytest script, not `python -m pytest`: -m would put the cwd, the repo
# root, on sys.path and import the unbuilt source tree.
read -r -a EXTRA <<<"${SANITIZED_PYTEST_ARGS:-}"
phase "pytest tests -q -s under ASan+UBSan ${EXTRA[*]} $*"
LOG=$SCRATCH/pytest.log
rc=0
# --default-signal=INT: a shell that starts this script in the background
# (nohup, `&`) leaves SIGINT ignored, Python then installs no KeyboardInterrupt
# handler, and tests/test_lifecycle.py::test_blocking_calls_interruptible_by_ctrl_c
# [learner.receive_forever] waits forever for a Ctrl-C that never comes.
env --default-signal=INT "${SAN_ENV[@]}" pytest tests -q -s -p no:cacheprovider \
    --basetemp="$SCRATCH/pytest-tmp" "${EXTRA[@]}" "$@" 2>&1 | tee "$LOG" || rc=${PIPESTATUS[0]}
# (tee's status is 0; PIPESTATUS[0] is pytest's, read before anything else runs)

echo
phase "verdict"
reports=$(grep -nE 'ERROR: AddressSanitizer|runtime error:' "$LOG" || true)
if [[ -n $reports ]]; then
    echo "!!! sanitizer reports in the output:" >&2
    echo "$reports" >&2
fi
if [[ $rc -eq 5 ]]; then echo "!!! pytest collected no tests" >&2; fi
if [[ $rc -ne 0 || -n $reports ]]; then
    die "pytest exit $rc, $(grep -cE 'ERROR: AddressSanitizer|runtime error:' "$LOG" || true) sanitizer report line(s)"
fi
echo "sanitized suite: pytest ok, no ASan/UBSan report"
