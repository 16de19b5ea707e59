#!/usr/bin/env python
"""Instructions per W1 message under callgrind: a per-message cost that does
not depend on machine noise.

    python -m benchmarks.callgrind_w1 [--n 2000] [--peers rlink,pyzmq] [--out DIR]

For each peer and side, one process runs under `valgrind --tool=callgrind`
and its counterpart runs natively:

  send     the actor (sender) is measured: it sends 200 warm-up messages,
           waits until the receiver has them, zeroes the counters, sends N
           messages, waits (blocked in a read, executing nothing) until the
           receiver has all N, and dumps the counters. Its I/O thread's work
           (rlink's C thread, libzmq's I/O thread) is included.
  receive  the learner (receiver) is measured: it takes the warm-up, zeroes,
           lets the sender send N, receives and checks all N (the same
           sequence and last-byte checks as the suite), and dumps.

The figure is the dump's total instruction count (Ir, all threads, user
space only: system calls count as the instructions that issue them, not the
kernel's work) divided by N. The counters are zeroed and dumped with
callgrind client requests from a tiny C helper loaded with ctypes, so
interpreter start-up and imports are not counted (instrumentation starts
just before the warm-up). Valgrind serialises threads, so batching between
the application thread and the I/O thread can differ from a native run.
callgrind_annotate's inclusive top functions are written next to the
results (callgrind_<peer>_<side>.txt).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = 200
HELPER_C = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void cg_zero(void) { CALLGRIND_ZERO_STATS; }
void cg_dump(const char *s) { CALLGRIND_DUMP_STATS_AT(s); }
"""


def build_helper(tmp: str) -> str:
    from .floors import find_cc
    cc = find_cc()
    if cc is None:
        raise RuntimeError("no C compiler for the callgrind helper")
    src, so = os.path.join(tmp, "cg.c"), os.path.join(tmp, "cg.so")
    with open(src, "w") as f:
        f.write(HELPER_C)
    r = subprocess.run([cc, "-O1", "-shared", "-fPIC", "-o", so, src], capture_output=True,
                       text=True, timeout=60)
    if r.returncode:
        raise RuntimeError(f"callgrind helper did not compile (valgrind headers missing? "
                           f"apt-get install valgrind): {r.stderr[-500:]}")
    return so


# ------------------------------------------------------------- child roles

def _cg(helper):
    import ctypes
    if not helper:
        return None
    lib = ctypes.CDLL(helper)
    lib.cg_dump.argtypes = [ctypes.c_char_p]
    return lib


def _wait_line(f, want):
    line = f.readline()
    if line.strip() != want:
        raise RuntimeError(f"expected {want!r} from the controller, got {line!r}")


def role_sender(peer_name, address, n, helper):
    """Controller protocol on stdin/stdout (one line each). Every payload is
    built and stamped before the counters are zeroed, so the measured loop is
    the transport's send call alone."""
    from . import workloads as W
    from .peers import get_peer
    cg = _cg(helper)
    peer = get_peer(peer_name)
    payloads = []
    for i in range(WARMUP + n):
        payloads.append(W.Stamper(W.make_step())(i))
    tx = peer.oneway_sender(address, "step")
    send, wait = tx.send, tx.wait
    if cg:
        cg.cg_start()
    tokens = [send(d) for d in payloads[:WARMUP]]
    for t in tokens:
        wait(t)
    print("warm-sent", flush=True)
    _wait_line(sys.stdin, "go")        # the receiver has the warm-up (or is zeroed)
    if cg:
        cg.cg_zero()
    tokens = [send(d) for d in payloads[WARMUP:]]
    for t in tokens:
        if t is not None:
            wait(t)
    _wait_line(sys.stdin, "received")  # the receiver has all n: nothing left queued
    if cg:
        cg.cg_dump(b"measured")
    print("dumped", flush=True)
    _wait_line(sys.stdin, "close")
    tx.close()


def role_receiver(peer_name, n, helper):
    """Receives and decodes inside the measured region; the suite's checks
    (sequence, last byte, full check) run on every message after the dump."""
    from . import workloads as W
    from .peers import get_peer
    cg = _cg(helper)
    peer = get_peer(peer_name)
    template = W.make_step()
    rx = peer.oneway_receiver("step", 1)
    print(rx.address, flush=True)
    if cg:
        cg.cg_start()
    loose = getattr(peer, "loose_scalars", False)
    got = []
    while len(got) < WARMUP:
        got += rx.recv_batch(600.0)
    if len(got) != WARMUP:
        raise RuntimeError(f"{len(got)} warm-up messages, expected {WARMUP}")
    if cg:
        cg.cg_zero()
    print("warm-received", flush=True)
    recv = rx.recv_batch
    while len(got) < WARMUP + n:
        batch = recv(600.0)
        if not batch:
            break
        got += batch
    if cg:
        cg.cg_dump(b"measured")
    if len(got) != WARMUP + n:
        raise RuntimeError(f"received {len(got)} of {WARMUP + n}")
    for i, d in enumerate(got):
        W.check_message(d, i)
        W.check_full(d, template, loose)
    print("received", flush=True)
    _wait_line(sys.stdin, "close")
    rx.close()


# ------------------------------------------------------------- controller

def _spawn(args, valgrind_out=None, helper=None):
    cmd = [sys.executable, "-m", "benchmarks.callgrind_w1", *args]
    if helper:
        cmd += ["--helper", helper]
    if valgrind_out:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
               f"--callgrind-out-file={valgrind_out}", *cmd]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(HERE)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=os.path.dirname(HERE))


def _expect(proc, want, timeout):
    """Read one line from proc with a deadline (select on its stdout)."""
    import select
    end = time.monotonic() + timeout
    buf = ""
    fd = proc.stdout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waiting for {want!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            line = fd.readline()
            if not line:
                raise RuntimeError(f"process exited while waiting for {want!r}: "
                                   f"{proc.stderr.read()[-2000:]}")
            buf = line.strip()
            if want is None or buf == want:
                return buf
            # valgrind or libraries may print other lines; skip them


def _send(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _finish(procs, timeout=120):
    for p in procs:
        try:
            _send(p, "close")
        except Exception:
            pass
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()   # this child only
            p.wait(10)


def _total_ir(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _annotate(path, out_txt, top=25):
    """callgrind_annotate, inclusive and exclusive, into out_txt; returns the
    top functions of each (for the JSON)."""
    if not shutil.which("callgrind_annotate"):
        return {}
    res, text = {}, []
    for mode in ("inclusive", "exclusive"):
        r = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if mode == 'inclusive' else 'no'}",
                            "--threshold=99", path], capture_output=True, text=True, timeout=300)
        text.append(f"==================== {mode} ====================\n{r.stdout}")
        funcs = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)", line)
            if m and "PROGRAM TOTALS" not in line:
                funcs.append({"ir": int(m.group(1).replace(",", "")), "pct": float(m.group(2)),
                              "fn": m.group(3)[:160]})
            if len(funcs) >= top:
                break
        res[mode] = funcs
    with open(out_txt, "w") as f:
        f.write("\n".join(text))
    return res


def measure_one(peer, side, n, helper, tmp, out_dir, timeout=900):
    cg_out = os.path.join(tmp, f"callgrind.{peer}.{side}.out")
    procs = []
    try:
        if side == "send":
            rx = _spawn(["--role", "receiver", "--peer", peer, "--n", str(n)])
            procs.append(rx)
            address = _expect(rx, None, 120)
            tx = _spawn(["--role", "sender", "--peer", peer, "--n", str(n), "--address", address],
                        valgrind_out=cg_out, helper=helper)
            procs.append(tx)
            _expect(tx, "warm-sent", timeout)
            _expect(rx, "warm-received", timeout)
            _send(tx, "go")
            _expect(rx, "received", timeout)
            _send(tx, "received")
            _expect(tx, "dumped", timeout)
        else:
            rx = _spawn(["--role", "receiver", "--peer", peer, "--n", str(n)],
                        valgrind_out=cg_out, helper=helper)
            procs.append(rx)
            address = _expect(rx, None, timeout)
            tx = _spawn(["--role", "sender", "--peer", peer, "--n", str(n), "--address", address])
            procs.append(tx)
            _expect(tx, "warm-sent", 120)
            _expect(rx, "warm-received", timeout)   # zeroed after the warm-up
            _send(tx, "go")
            _expect(rx, "received", timeout)        # dumped
            _send(tx, "received")
            _expect(tx, "dumped", 120)
    finally:
        _finish(procs)
    dumps = sorted(glob.glob(cg_out + ".*"))
    dumps = [d for d in dumps if re.search(r"\.\d+$", d)] or dumps
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {peer} {side}")
    ir = _total_ir(dumps[0])
    base = os.path.join(out_dir, f"callgrind_{peer}_{side}")
    shutil.copyfile(dumps[0], base + ".out")   # for callgrind_annotate / kcachegrind
    top = _annotate(dumps[0], base + ".txt")
    return {"ir_total": ir, "per_message": ir / n, "dump": base + ".out",
            "annotate": base + ".txt", "top": top}


def measure(peers=("rlink", "pyzmq"), n=2000, out_dir=None, progress=True):
    if not shutil.which("valgrind"):
        raise RuntimeError("valgrind not on PATH (apt-get install valgrind)")
    out_dir = out_dir or os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    ver = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    res = {"valgrind": ver, "n": n, "warmup": WARMUP, "peers": {}}
    with tempfile.TemporaryDirectory(prefix="rlink-cg-") as tmp:
        helper = build_helper(tmp)
        for peer in peers:
            res["peers"][peer] = {}
            for side in ("send", "receive"):
                t = time.monotonic()
                r = measure_one(peer, side, n, helper, tmp, out_dir)
                res["peers"][peer][side] = r
                if progress:
                    print(f"callgrind {peer} {side}: {r['per_message']:,.0f} instructions/message "
                          f"({time.monotonic() - t:.0f} s)", file=sys.stderr, flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--peers", default="rlink,pyzmq")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--role", choices=["sender", "receiver"], help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--helper", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "sender":
        return role_sender(a.peer, a.address, a.n, a.helper) or 0
    if a.role == "receiver":
        return role_receiver(a.peer, a.n, a.helper) or 0
    res = measure(a.peers.split(","), a.n, a.out)
    path = os.path.join(a.out, "callgrind.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    for p, d in res["peers"].items():
        print(f"{p}: send {d['send']['per_message']:,.0f}, receive "
              f"{d['receive']['per_message']:,.0f} instructions per message")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
