# Shared by .ci/atheris.sh and .ci/sanitized_tests.sh, which source it (it is
# not a script of its own): the scratch directory and its exit trap, and the
# steps both take to build rlink with sanitizers from a scratch copy of the
# sources. Expects REPO and PYTHON to be set, and set -euo pipefail.

# ci_begin NAME TAG: SCRATCH, a new directory ${TMPDIR:-/tmp}/rlink-TAG.XXXXXX
# removed on exit, where the script then prints "=== NAME: exit RC after N s";
# T0 for phase's timing.
ci_begin() {
    CI_NAME=$1
    SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/rlink-$2.XXXXXX")
    T0=$SECONDS
    trap ci_on_exit EXIT
}
ci_on_exit() {
    local rc=$?
    rm -rf "$SCRATCH"
    echo "=== $CI_NAME: exit $rc after $((SECONDS - T0)) s"
    exit "$rc"
}
die() { echo "$CI_NAME: FAILED: $*" >&2; exit 1; }
phase() { echo "--- $1 (at $((SECONDS - T0)) s)"; }

# ci_venv "MESSAGE IF PIP FAILS" PIP-INSTALL-ARGS...: VENV, a fresh venv of
# $PYTHON in $SCRATCH with those packages; pip's output goes to
# $SCRATCH/pip.log and is shown only if it fails.
ci_venv() {
    local why=$1
    shift
    VENV=$SCRATCH/venv
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --progress-bar off "$@" >"$SCRATCH/pip.log" 2>&1 ||
        { cat "$SCRATCH/pip.log" >&2; die "$why"; }
}

# ci_copy_sources: SRC, $SCRATCH/src, holding the files to build rlink from:
# in a git work tree the tracked files as they are in the work tree
# (uncommitted edits included); elsewhere the package's sources, minus any
# build products. The repo itself is never written.
ci_copy_sources() {
    SRC=$SCRATCH/src
    mkdir -p "$SRC"
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$REPO" ls-files -z | (cd "$REPO" && xargs -0 cp --parents -t "$SRC")
    else
        cp -R "$REPO/setup.py" "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/LICENSE" \
            "$REPO/MANIFEST.in" "$REPO/rlink" "$REPO/csrc" "$SRC/"
        rm -f "$SRC"/rlink/*.so "$SRC/rlink/_core.c"
    fi
}

# ci_check_sanitized SO: fail unless the extension SO is ASan- and
# UBSan-instrumented. nm's output goes to $SCRATCH/nm.txt (for further checks):
# grep -q in a pipe would SIGPIPE nm under pipefail.
ci_check_sanitized() {
    nm -D "$1" >"$SCRATCH/nm.txt"
    grep -q ' U __asan_report' "$SCRATCH/nm.txt" || die "$1 is not ASan-instrumented"
    grep -q ' U __ubsan_handle' "$SCRATCH/nm.txt" || die "$1 is not UBSan-instrumented"
}

# ci_ubsan_suppressions FILE: the UBSan suppressions both scripts run with.
# Cython's generated argument parsing computes `args + nargs` with args == NULL
# and nargs == 0 in its vectorcall wrappers (__pyx_pw_*, inlined into
# __pyx_tp_new_* for __cinit__; UBSan matches the outer function): clang's
# UBSan (not gcc's) calls that "applying zero offset to null pointer".
# Cython's maintainers accept it (cython/cython#4872); it is not rlink's code,
# so it is suppressed there, and only there: the same report anywhere else
# fails.
ci_ubsan_suppressions() {
    printf '%s\n' 'pointer-overflow:__pyx_pw_' 'pointer-overflow:__pyx_tp_new_' >"$1"
}
