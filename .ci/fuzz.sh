#!/usr/bin/env bash
# Build and run the libFuzzer targets of the C codec: `bash .ci/fuzz.sh [NAME...]`
# from anywhere (NAME = frame, hello, ...; default: every csrc/fuzz/fuzz_*.c).
#
# For each target csrc/fuzz/fuzz_NAME.c:
#   1. build it with clang -fsanitize=fuzzer,address,undefined
#      -fno-sanitize-recover=all (-Werror), linking the csrc/ files named on
#      its "FUZZ_SOURCES:" line (default rl_frame.c: the sans-IO codec only);
#   2. replay every file in csrc/fuzz/regressions/NAME/ (past crash inputs)
#      and every seed in csrc/fuzz/corpus/NAME/ once: any crash fails;
#   3. fuzz for FUZZ_SECONDS, starting from a scratch copy of the seeds
#      (nothing is written into the repo), with -timeout=5 -rss_limit_mb=2048
#      plus the flags on the target's "FUZZ_FLAGS:" line;
#   4. print executions, the final cov:/ft: of libFuzzer's last stats line,
#      and the corpus size before and after.
# A crash prints the stack, the input (hex and base64) and, if
# FUZZ_ARTIFACT_DIR is set, copies the input there: commit it to
# csrc/fuzz/regressions/NAME/ so that every later run replays it.
#
# Env: FUZZ_SECONDS (default 60) per target; FUZZ_ARTIFACT_DIR (default unset:
# crash inputs are only printed); CC (default clang). Installs nothing: needs
# clang and its libFuzzer/sanitizer runtimes (Debian: clang libclang-rt-14-dev).
# Exit status: 0 if every target built, replayed and fuzzed without a crash.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CC=${CC:-clang}
[[ $FUZZ_SECONDS =~ ^[0-9]+$ && $FUZZ_SECONDS -ge 1 ]] ||
    { echo "FUZZ_SECONDS must be a whole number of seconds >= 1, not '$FUZZ_SECONDS'" >&2; exit 2; }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/rlink-fuzz.XXXXXX")
T0=$SECONDS
on_exit() {
    local rc=$?
    rm -rf "$SCRATCH"
    echo "=== fuzz.sh: exit $rc after $((SECONDS - T0)) s"
    exit "$rc"
}
trap on_exit EXIT

# ---- toolchain: checked, never installed -------------------------------------------
CFLAGS=(-std=c11 -Wall -Wextra -Werror -g -O1 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all)
missing_toolchain() {
    local major=14   # Debian 12's clang
    if command -v "$CC" >/dev/null 2>&1 && [[ $("$CC" --version 2>/dev/null) == *clang* ]]; then
        major=$("$CC" -dumpversion 2>/dev/null | cut -d. -f1)
    fi
    echo "fuzz.sh: $1" >&2
    echo "fuzz.sh: install clang with its libFuzzer and sanitizer runtimes, on Debian 12:" >&2
    echo "    apt-get install -y clang libclang-rt-${major}-dev" >&2
    exit 1
}
command -v "$CC" >/dev/null 2>&1 || missing_toolchain "'$CC' not found"
cat >"$SCRATCH/probe.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }
EOF
if ! "$CC" "${CFLAGS[@]}" "$SCRATCH/probe.c" -o "$SCRATCH/probe" >"$SCRATCH/probe.log" 2>&1 ||
    ! "$SCRATCH/probe" -runs=1 >>"$SCRATCH/probe.log" 2>&1; then
    cat "$SCRATCH/probe.log" >&2
    missing_toolchain "'$CC' cannot build and run a -fsanitize=fuzzer,address,undefined program"
fi
echo "compiler: $("$CC" --version | head -n1); $FUZZ_SECONDS s per target"

# ---- targets -----------------------------------------------------------------------------
if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
else
    TARGETS=()
    for f in csrc/fuzz/fuzz_*.c; do
        [[ -e $f ]] || continue
        f=${f##*/fuzz_}
        TARGETS+=("${f%.c}")
    done
fi
[[ ${#TARGETS[@]} -gt 0 ]] || { echo "no csrc/fuzz/fuzz_*.c targets" >&2; exit 1; }

# "KEY: words" from the harness's leading comment.
harness_line() { sed -n "s/^ \* $1: *//p" "$2" | head -n1; }

files_in() { [[ -d $1 ]] || return 0; find "$1" -maxdepth 1 -type f 2>/dev/null | LC_ALL=C sort; }

show_crash() {  # show_crash NAME LOG ARTIFACT_DIR
    echo "!!! $1: crash; libFuzzer's report:"
    grep -v '^INFO:' "$2" >"$2.report" || true   # not piped: grep -m1 would SIGPIPE it
    grep -A60 -m1 -E '^==[0-9]+==|ERROR: libFuzzer|runtime error:|SUMMARY' "$2.report" || tail -n 60 "$2"
    local a
    for a in "$3"/*; do
        [[ -f $a ]] || continue
        echo "!!! input $(basename "$a") ($(stat -c %s "$a") bytes), base64: $(base64 -w0 "$a")"
        od -A d -t x1 "$a" | head -n 40
        if [[ -n ${FUZZ_ARTIFACT_DIR:-} ]]; then
            mkdir -p "$FUZZ_ARTIFACT_DIR/$1"
            cp "$a" "$FUZZ_ARTIFACT_DIR/$1/"
            echo "!!! copied to $FUZZ_ARTIFACT_DIR/$1/$(basename "$a"); commit it to csrc/fuzz/regressions/$1/"
        fi
    done
}

FAILED=()
SUMMARY=()
for name in "${TARGETS[@]}"; do
    src=csrc/fuzz/fuzz_$name.c
    [[ -f $src ]] || { echo "no such target: $src" >&2; exit 1; }
    t_start=$SECONDS
    echo
    echo "=== fuzz target '$name' ($src)"
    read -r -a srcs <<<"$(harness_line FUZZ_SOURCES "$src")"
    [[ ${#srcs[@]} -gt 0 ]] || srcs=(rl_frame.c)
    read -r -a flags <<<"$(harness_line FUZZ_FLAGS "$src")"
    exe=$SCRATCH/fuzz_$name
    "$CC" "${CFLAGS[@]}" -Icsrc "$src" "${srcs[@]/#/csrc/}" -o "$exe"
    echo "built with: ${srcs[*]}; flags: ${flags[*]:-none}"

    # regressions and seeds, each input once
    art=$SCRATCH/artifacts-$name
    mkdir -p "$art"
    mapfile -t replay < <(files_in "csrc/fuzz/regressions/$name"; files_in "csrc/fuzz/corpus/$name")
    nreg=$(files_in "csrc/fuzz/regressions/$name" | wc -l)
    if [[ ${#replay[@]} -gt 0 ]]; then
        if ! "$exe" "${flags[@]}" -timeout=5 -rss_limit_mb=2048 -artifact_prefix="$art/" \
            "${replay[@]}" >"$SCRATCH/replay-$name.log" 2>&1; then
            show_crash "$name" "$SCRATCH/replay-$name.log" "$art"
            FAILED+=("$name (replay)")
            SUMMARY+=("$(printf '%-8s %s' "$name" "REPLAY FAILED")")
            continue
        fi
    fi
    echo "replayed $nreg regression inputs and $((${#replay[@]} - nreg)) seeds: ok"

    # fuzzing
    corpus=$SCRATCH/corpus-$name
    mkdir -p "$corpus"
    if [[ -d csrc/fuzz/corpus/$name ]]; then cp -R "csrc/fuzz/corpus/$name/." "$corpus/"; fi
    seeds=$(files_in "$corpus" | wc -l)
    log=$SCRATCH/fuzz-$name.log
    rc=0
    # timeout(1) only as a backstop if libFuzzer ignores its own -max_total_time
    timeout --signal=KILL $((FUZZ_SECONDS + 120)) \
        "$exe" "${flags[@]}" -max_total_time="$FUZZ_SECONDS" -timeout=5 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art/" "$corpus" >"$log" 2>&1 || rc=$?
    stats=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -n1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    [[ -n $execs ]] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$stats")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$stats")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$stats")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$stats")
    final=$(files_in "$corpus" | wc -l)
    echo "last stats line: ${stats:-none}"
    line=$(printf '%-8s execs %-11s (%s/s)  cov %-5s ft %-6s corpus %s -> %s files (%s in memory)  %d s' \
        "$name" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$seeds" "$final" "${corp:-?}" \
        $((SECONDS - t_start)))
    if [[ $rc -ne 0 ]] || compgen -G "$art/*" >/dev/null; then
        show_crash "$name" "$log" "$art"
        FAILED+=("$name (exit $rc)")
        line+="  CRASH"
    else
        line+="  ok"
    fi
    echo "$line"
    SUMMARY+=("$line")
done

echo
echo "=== fuzz summary ($FUZZ_SECONDS s per target)"
printf '%s\n' "${SUMMARY[@]}"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "FAILED: ${FAILED[*]}" >&2
    exit 1
fi
