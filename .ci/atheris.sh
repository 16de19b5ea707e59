#!/usr/bin/env bash
# Fuzz the Python-facing decoder with atheris: `bash .ci/atheris.sh` from anywhere.
#
#   1. a fresh venv (python3.11 -m venv) in a scratch dir, with atheris,
#      numpy, Cython and setuptools from PyPI;
#   2. a scratch copy of the sources (the repo is never written), where the
#      extension is built with clang, RLINK_SANITIZE=1 (ASan + UBSan, -g -O1)
#      and -fsanitize=fuzzer-no-link, so libFuzzer sees the C and Cython
#      code's coverage and comparisons;
#   3. tests/fuzz/atheris_decode.py run for ATHERIS_SECONDS against that
#      build, with atheris's asan_with_fuzzer.so preloaded (ASan runtime with
#      libFuzzer linked in), PYTHONMALLOC=malloc, leak detection off (CPython
#      leaks by design at exit), seeded with csrc/fuzz/corpus/frame/ plus a few
#      object-mode seeds, in a scratch corpus dir;
#   4. prints executions, cov/ft and the corpus size.
# Fails loudly, never skips: if python3.11, clang, atheris or its
# asan_with_fuzzer.so is missing, if the build lacks ASan or coverage
# instrumentation, or if the run crashes, raises an unexpected exception, or
# prints an ASan/UBSan report. A crash input is printed (base64) and, with
# FUZZ_ARTIFACT_DIR set, copied there.
#
# Past crash inputs in csrc/fuzz/regressions/atheris_decode/ are replayed
# first; any that fails again fails the script.
#
# Env: ATHERIS_SECONDS (default 60); PYTHON (default python3.11); CC (default
# clang); ATHERIS_EXTRA_SUPPRESSIONS (UBSan suppression lines, for local runs
# only); FUZZ_ARTIFACT_DIR; PIP_INDEX_URL etc. as usual for pip.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
ATHERIS_SECONDS=${ATHERIS_SECONDS:-60}
PYTHON=${PYTHON:-python3.11}
CC=${CC:-clang}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
[[ $ATHERIS_SECONDS =~ ^[0-9]+$ && $ATHERIS_SECONDS -ge 1 ]] ||
    { echo "ATHERIS_SECONDS must be a whole number of seconds >= 1" >&2; exit 2; }

# shellcheck source=lib.sh
source "$REPO/.ci/lib.sh"
ci_begin atheris.sh atheris

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (atheris >= 3 supports CPython 3.11+)"
command -v "$CC" >/dev/null 2>&1 ||
    die "$CC not found; on Debian 12: apt-get install -y clang libclang-rt-14-dev"
echo "python: $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)'); $("$CC" --version | head -n1)"

# ---- 1. venv ---------------------------------------------------------------------------------
phase "venv and pip install atheris numpy Cython setuptools"
# atheris from a wheel only: its source build needs a newer libFuzzer than
# Debian 12's clang 14 ships. The cp311 manylinux wheel (3.0.0 when this was
# written) carries its own libFuzzer and asan_with_fuzzer.so.
ci_venv "pip could not install atheris (a wheel for this Python)/numpy/Cython/setuptools (see above)" \
    --only-binary=atheris "atheris>=3.0,<4" "numpy>=2.0,<3" "Cython>=3.0.11,<4" "setuptools>=77"
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null |
    grep -iE '^(atheris|numpy|cython|setuptools)==' | tr '\n' ' '
echo
ATHERIS_DIR=$("$VENV/bin/python" -c 'import atheris; print(atheris.path())')
PRELOAD=$ATHERIS_DIR/asan_with_fuzzer.so
[[ -f $PRELOAD ]] || die "atheris installed without $PRELOAD; it is needed to fuzz a native extension"

# ---- 2. instrumented build in a scratch copy ------------------------------------------------
phase "build rlink._core with clang, ASan+UBSan, fuzzer-no-link"
ci_copy_sources
(
    cd "$SRC"
    env RLINK_SANITIZE=1 CC="$CC" LDSHARED="$CC -shared" \
        CFLAGS="-fsanitize=fuzzer-no-link" LDFLAGS="-fsanitize=fuzzer-no-link" \
        "$VENV/bin/python" setup.py -q build_ext --inplace -j2
) >"$SCRATCH/build.log" 2>&1 || { tail -n 60 "$SCRATCH/build.log" >&2; die "building the extension"; }
SO=$(echo "$SRC"/rlink/_core*.so)
[[ -f $SO ]] || die "no rlink/_core*.so built"
ci_check_sanitized "$SO"     # also writes $SCRATCH/nm.txt
grep -q ' U __sanitizer_cov' "$SCRATCH/nm.txt" || die "$SO has no libFuzzer coverage instrumentation"
echo "built $(basename "$SO") ($(($(stat -c %s "$SO") / 1024)) KiB)"

# ---- 3. run ----------------------------------------------------------------------------------------
CORPUS=$SCRATCH/corpus
ART=$SCRATCH/artifacts
mkdir -p "$CORPUS" "$ART"
cp -R csrc/fuzz/corpus/frame/. "$CORPUS/"
# object-mode seeds: first byte >= 0x80, the rest drives FuzzedDataProvider
"$VENV/bin/python" - "$CORPUS" <<'EOF'
import sys
from pathlib import Path
d = Path(sys.argv[1])
for i, body in enumerate([bytes(range(256)), bytes(range(255, -1, -1)), b"\x07" * 200,
                          bytes((i * 37) & 0xFF for i in range(600))]):
    (d / f"object_{i}").write_bytes(b"\x80" + body)
EOF
SEEDS=$(find "$CORPUS" -type f | wc -l)

# Cython's own NULL + 0 (cython/cython#4872): see ci_ubsan_suppressions in lib.sh.
ci_ubsan_suppressions "$SCRATCH/ubsan.supp"
# For local exploration while a known report is open (never in CI): more
# suppression lines, e.g. ATHERIS_EXTRA_SUPPRESSIONS='pointer-overflow:_Reader_value'.
if [[ -n ${ATHERIS_EXTRA_SUPPRESSIONS:-} ]]; then
    printf '%s\n' "$ATHERIS_EXTRA_SUPPRESSIONS" >>"$SCRATCH/ubsan.supp"
    echo "note: extra UBSan suppressions: $ATHERIS_EXTRA_SUPPRESSIONS"
fi
# PYTHONPATH: the instrumented build; cwd outside the repo, so nothing else is importable.
run_harness() {  # run_harness LOG libFuzzer-args...
    local log=$1
    shift
    (
        cd "$SCRATCH"
        env PYTHONPATH="$SRC" LD_PRELOAD="$PRELOAD" PYTHONMALLOC=malloc \
            ASAN_OPTIONS=detect_leaks=0 \
            UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$SCRATCH/ubsan.supp" \
            timeout --signal=KILL $((ATHERIS_SECONDS + 300)) \
            "$VENV/bin/python" "$REPO/tests/fuzz/atheris_decode.py" \
            -timeout=5 -rss_limit_mb=2048 -max_len=16384 -artifact_prefix="$ART/" "$@"
    ) >"$log" 2>&1
}

# Past crash inputs first, each run once: csrc/fuzz/regressions/atheris_decode/.
REG=$REPO/csrc/fuzz/regressions/atheris_decode
regs=()
if [[ -d $REG ]]; then mapfile -t regs < <(find "$REG" -maxdepth 1 -type f | LC_ALL=C sort); fi
if [[ ${#regs[@]} -gt 0 ]]; then
    phase "replay ${#regs[@]} regression inputs from $REG"
    if ! run_harness "$SCRATCH/replay.log" "${regs[@]}"; then
        grep -v '^INFO:' "$SCRATCH/replay.log" >"$SCRATCH/replay.report" || true
        grep -B2 -A25 -m1 -E 'ERROR: AddressSanitizer|runtime error:|Uncaught Python exception|ERROR: libFuzzer' \
            "$SCRATCH/replay.report" >&2 || tail -n 60 "$SCRATCH/replay.report" >&2
        die "a regression input in $REG fails again (see above)"
    fi
    echo "replayed ${#regs[@]} regression inputs: ok"
fi

phase "fuzz tests/fuzz/atheris_decode.py for $ATHERIS_SECONDS s ($SEEDS seeds)"
LOG=$SCRATCH/atheris.log
rc=0
run_harness "$LOG" -max_total_time="$ATHERIS_SECONDS" -print_final_stats=1 "$CORPUS" || rc=$?

grep -m1 '^rlink ' "$LOG" || true
stats=$(grep -E '^#[0-9]+' "$LOG" | grep -E 'cov: ' | tail -n1 || true)
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -n1)
[[ -n $execs ]] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$stats")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOG" | tail -n1)
echo "last stats line: ${stats:-none}"
echo "atheris: execs ${execs:-?} (${rate:-?}/s), cov $(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$stats")," \
    "ft $(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$stats"), corpus $SEEDS -> $(find "$CORPUS" -type f | wc -l) files"

bad=0
if [[ $rc -ne 0 ]]; then echo "!!! the fuzzer exited with status $rc" >&2; bad=1; fi
if grep -qE 'ERROR: AddressSanitizer|runtime error:|Uncaught Python exception|ERROR: libFuzzer' "$LOG"; then
    echo "!!! sanitizer report or uncaught exception:" >&2
    grep -v '^INFO:' "$LOG" >"$LOG.report" || true
    grep -A60 -m1 -E 'ERROR: AddressSanitizer|runtime error:|Uncaught Python exception|ERROR: libFuzzer' "$LOG.report" >&2 || true
    bad=1
fi
for a in "$ART"/*; do
    [[ -f $a ]] || continue
    bad=1
    echo "!!! input $(basename "$a") ($(stat -c %s "$a") bytes), base64: $(base64 -w0 "$a")" >&2
    if [[ -n ${FUZZ_ARTIFACT_DIR:-} ]]; then
        mkdir -p "$FUZZ_ARTIFACT_DIR/atheris"
        cp "$a" "$FUZZ_ARTIFACT_DIR/atheris/"
        echo "!!! copied to $FUZZ_ARTIFACT_DIR/atheris/$(basename "$a")" >&2
    fi
done
if [[ $bad -ne 0 ]]; then
    tail -n 30 "$LOG" >&2
    die "atheris found a problem"
fi
[[ -n ${execs:-} && $execs -gt 0 ]] || { tail -n 30 "$LOG" >&2; die "no executions counted"; }
echo "atheris: ok"
