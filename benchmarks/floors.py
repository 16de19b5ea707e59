"""Compile benchmarks/floors.c with the C compiler on PATH and run its floors.

If no compiler is found (cc, gcc or clang, or $CC), the floors are skipped
with a note and every "ratio to the C floor" reads "n/a"."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "floors.c")
# the checked W2 streams use rlink's own CRC32C, compiled from the checkout
CSRC = os.path.join(os.path.dirname(HERE), "csrc")
SOURCES = [SOURCE, os.path.join(CSRC, "rl_crc.c")]


def find_cc() -> str | None:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def cc_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0] if out else "?"
    except Exception:
        return "?"


def build() -> tuple[str | None, str]:
    """-> (path to the binary or None, note)."""
    cc = find_cc()
    if cc is None:
        return None, "no C compiler on PATH (cc/gcc/clang/$CC): C floors skipped"
    h = hashlib.sha256()
    for path in SOURCES + [os.path.join(CSRC, "rl_crc.h"), os.path.join(CSRC, "rl_os.h")]:
        with open(path, "rb") as f:
            h.update(f.read())
    out = os.path.join(tempfile.gettempdir(), f"rlink-bench-floors-{h.hexdigest()[:12]}")
    if not os.path.exists(out):
        r = subprocess.run([cc, "-O2", "-I", CSRC, "-o", out + ".tmp", *SOURCES],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            return None, f"compiling floors.c with {cc} failed: C floors skipped\n{r.stderr[-2000:]}"
        os.replace(out + ".tmp", out)
    return out, f"{cc} ({cc_version(cc)}), -O2"


# name -> (argv after the binary, value key, unit, higher is better)
def floor_specs(quick: bool) -> dict:
    k = 4 if quick else 1
    return {
        "tcp_pingpong_64B": (["pingpong", str(20_000 // k), "1000"], "p50_us", "µs", False),
        "tcp_pingpong_64B_spin": (["pingpong", str(20_000 // k), "1000", "spin"], "p50_us", "µs",
                                  False),
        # Run with the kernel's buffer autotuning and with 4 MiB SO_SNDBUF/RCVBUF
        # (what rlink sets); "tcp_stream_1MiB" is the better of the two in each
        # repeat (derived in run.py), so the floor is the best C configuration.
        "tcp_stream_1MiB_autobuf": (["stream", str(2048 // k), "128", "0"], "GBps", "GB/s", True),
        "tcp_stream_1MiB_4MiBbuf": (["stream", str(2048 // k), "128", str(4 << 20)], "GBps", "GB/s",
                                    True),
        # The same over AF_UNIX: what rlink-local (same host) is compared with.
        # "autobuf" here is the kernel's default buffer (AF_UNIX has no autotuning).
        "unix_pingpong_64B": (["pingpong", str(20_000 // k), "1000", "unix"], "p50_us", "µs", False),
        "unix_stream_1MiB_autobuf": (["stream", str(2048 // k), "128", "0", "unix"], "GBps", "GB/s",
                                     True),
        "unix_stream_1MiB_4MiBbuf": (["stream", str(2048 // k), "128", str(4 << 20), "unix"], "GBps",
                                     "GB/s", True),
        "tcp_100B_write1": (["msgs", "tcp", "single", str(1_000_000 // k), "10000"], "msgps", "msg/s", True),
        "tcp_100B_writev64": (["msgs", "tcp", "writev", str(5_000_000 // k), "10000"], "msgps", "msg/s", True),
        "unix_100B_write1": (["msgs", "unix", "single", str(1_000_000 // k), "10000"], "msgps", "msg/s", True),
        "unix_100B_writev64": (["msgs", "unix", "writev", str(5_000_000 // k), "10000"], "msgps", "msg/s", True),
        "memcpy": (["memcpy", "64", "20"], "GBps", "GB/s", True),
        # What reliable mode adds to W2, in C (floors.c, checked_stream): the
        # same stream plain, with CRC32C at both ends, and with the sender's
        # retained copy too. They run in W2 when a reliable TCP peer does.
        "tcp_w2_stream": (["w2stream", str(1000 // k), "100", "plain"], "GBps", "GB/s", True),
        "tcp_w2_stream_crc": (["w2stream", str(1000 // k), "100", "crc"], "GBps", "GB/s", True),
        "tcp_w2_stream_crc_copy": (["w2stream", str(1000 // k), "100", "crc-copy"], "GBps", "GB/s",
                                   True),
    }


def run_floor(binary: str, argv: list, timeout: float = 120) -> dict:
    r = subprocess.run([binary, *argv], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"floor {' '.join(argv)} failed (exit {r.returncode}): {r.stderr[-1000:]}")
    return json.loads(r.stdout)
