#!/usr/bin/env python
"""Quick side-by-side throughput benchmark: rlink vs pyzmq (+ msgpack).

    python benchmarks/quick.py [--repeats N] [--quick] [--json out.json]

Workloads (one sender process -> one receiver process, TCP loopback, one-way):

  W1  step messages  {"seq", "obs": float32[8], "action": int64 scalar,
                      "reward": float32 scalar, "done": bool}       -> msg/s
  W2  trajectories   {"seq", "obs": uint8[64,84,84,4], "actions": int64[64],
                      "rewards": float32[64], "dones": bool[64],
                      "logits": float32[64,18]}  (1,811,776 B)      -> GB/s

How it measures (the same for both peers):
  * Sender and receiver are separate processes (multiprocessing, "spawn").
    The receiver binds first (rlink: LearnerNode(port=0); pyzmq: PULL on
    tcp://127.0.0.1:*) and passes its address to the sender through a Queue.
  * The sender sends `warmup` messages, then `n` measured ones. The receiver
    starts its clock when it has received the last warm-up message and stops
    it at the last message, so process start-up and connection set-up are
    outside the window; the figure is n / window at the receiver.
  * Every message carries an int "seq"; the sender also writes a per-seq byte
    into the last byte of "obs". The receiver checks both on every message
    (and dtypes/shapes/scalar types on every 1024th) and fails loudly on
    loss, reordering or corruption.
  * The sender cycles through a pool of POOL payloads and waits, before
    reusing one, until the transport says it may (rlink: send_trajectory
    returned; pyzmq zero-copy: the MessageTracker is done).
  * Peers are interleaved within each repeat (rlink, pyzmq, rlink, ...);
    the table shows median [min-max] over the repeats.

pyzmq configuration (its best honest one): PUSH/PULL, send_multipart with a
msgpack header frame (keys, dtypes, shapes, scalar values) followed by one
frame per array; arrays rebuilt with np.frombuffer + reshape and scalars with
their dtype. Both workloads send and receive with copy=False (zero-copy;
pyzmq still copies frames below its 64 KiB copy_threshold). For W1, copy=True
on both sides (--zmq-w1-copy) measured slower here: median 109k vs 127k msg/s
over 6 alternating runs each. HWMs bound pyzmq's queues in memory: 1000 messages
for W1, 100 (~180 MB a side) for W2; rlink uses its defaults (256 MB receive
queue, 64 MB send queue). Note the received arrays differ: pyzmq's are
read-only views over zmq frames, rlink's are writable and 64-byte aligned.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import statistics
import subprocess
import sys
import time
import traceback

# Neither peer uses BLAS; keep OpenBLAS from starting spinning threads that
# compete for the cores (spawned children inherit this environment).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

POOL = 8                 # payloads the sender cycles through
RECV_TIMEOUT = 10.0      # s: any single receive / send
READY_TIMEOUT = 60.0     # s: receiver address / sender start-up
FULL_CHECK_EVERY = 1024  # full dtype/shape/type check every this many messages


# ---------------------------------------------------------------- workloads

def make_step() -> dict:
    return {"seq": 0,
            "obs": np.linspace(-1.0, 1.0, 8, dtype=np.float32),
            "action": np.int64(3),
            "reward": np.float32(0.25),
            "done": False}


def make_trajectory() -> dict:
    rng = np.random.default_rng(0)
    return {"seq": 0,
            "obs": rng.integers(0, 256, size=(64, 84, 84, 4), dtype=np.uint8),
            "actions": rng.integers(0, 18, size=64, dtype=np.int64),
            "rewards": rng.standard_normal(64).astype(np.float32),
            "dones": rng.random(64) < 0.05,
            "logits": rng.standard_normal((64, 18)).astype(np.float32)}


def payload_bytes(d: dict) -> int:
    return sum(v.nbytes for v in d.values() if isinstance(v, np.ndarray))


WORKLOADS = {
    "W1": dict(title="W1 step msgs 1→1", make=make_step, unit="msg/s",
               n=200_000, n_quick=20_000, warmup=5_000, zmq_hwm=1000),
    "W2": dict(title="W2 trajectories 1→1 (1.81 MB)", make=make_trajectory, unit="GB/s",
               n=2_000, n_quick=200, warmup=50, zmq_hwm=100),
}


def expected_byte(seq: int) -> int:
    return (seq * 131 + 7) & 0xFF


def last_byte(a: np.ndarray) -> int:
    return int(a.reshape(-1).view(np.uint8)[-1])


def stamp(payload: dict, seq: int) -> None:
    payload["seq"] = seq
    payload["obs"].reshape(-1).view(np.uint8)[-1] = expected_byte(seq)


class DataError(AssertionError):
    pass


def check_full(got: dict, template: dict) -> None:
    """Keys, types, dtypes and shapes as sent; constant fields equal."""
    if list(got) != list(template):
        raise DataError(f"keys {list(got)} != {list(template)}")
    for k, want in template.items():
        v = got[k]
        if type(v) is not type(want):
            raise DataError(f"{k}: type {type(v).__name__} != {type(want).__name__}")
        if isinstance(want, (np.ndarray, np.generic)):
            if v.dtype != want.dtype or v.shape != want.shape:
                raise DataError(f"{k}: {v.dtype}{v.shape} != {want.dtype}{want.shape}")
            if k != "obs" and not np.array_equal(v, want):
                raise DataError(f"{k}: values differ from what was sent")
        elif k != "seq" and v != want:
            raise DataError(f"{k}: {v!r} != {want!r}")


# -------------------------------------------------------------------- rlink

def rlink_receiver(wl: dict, reliable: bool = False):
    import rlink
    learner = rlink.LearnerNode(port=0, reliable=reliable)

    def recv_batch(timeout: float) -> list:
        try:
            return [m.data for m in learner.receive_many(256, timeout=timeout)]
        except rlink.TimeoutError:
            return []

    return learner.address, recv_batch, lambda: learner.close(timeout=1.0)


def rlink_sender(address: str, wl: dict, opts: dict):
    import rlink
    actor = rlink.ActorNode(learner_address=address, connect_timeout=READY_TIMEOUT, local=False)  # TCP, like pyzmq

    def send(payload: dict):
        actor.send_trajectory(payload, timeout=RECV_TIMEOUT)
        return None   # arrays are reusable once send_trajectory returns

    return send, lambda: actor.close(timeout=5.0)


# -------------------------------------------------------- pyzmq + msgpack

ARRAY, NPSCALAR, PYVALUE = 0, 1, 2
_dtypes: dict = {}


def _dtype(s: str) -> np.dtype:
    dt = _dtypes.get(s)
    if dt is None:
        dt = _dtypes[s] = np.dtype(s)
    return dt


def zmq_encode(d: dict, zero_copy: bool):
    """-> (frames, frames to track). Frame 0: msgpack header; then one frame per array."""
    import msgpack
    import zmq
    header, frames, tracked = [], [None], []
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            header.append((k, ARRAY, v.dtype.str, v.shape))
            if zero_copy and v.nbytes >= zmq.COPY_THRESHOLD:
                v = zmq.Frame(v, copy=False, track=True)
                tracked.append(v)
            frames.append(v)
        elif isinstance(v, np.generic):
            header.append((k, NPSCALAR, v.dtype.str, v.item()))
        else:
            header.append((k, PYVALUE, None, v))
    frames[0] = msgpack.packb(header)
    return frames, tracked


def zmq_decode(frames: list) -> dict:
    import msgpack
    out, i = {}, 1
    for k, kind, dt, v in msgpack.unpackb(frames[0], use_list=False):
        if kind == ARRAY:
            out[k] = np.frombuffer(frames[i], dtype=_dtype(dt)).reshape(v)
            i += 1
        elif kind == NPSCALAR:
            out[k] = _dtype(dt).type(v)
        else:
            out[k] = v
    return out


def zmq_zero_copy(wl: dict, opts: dict) -> bool:
    return wl["name"] == "W2" or not opts["zmq_w1_copy"]


def pyzmq_receiver(wl: dict, opts: dict):
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, wl["zmq_hwm"])
    sock.setsockopt(zmq.RCVTIMEO, int(RECV_TIMEOUT * 1000))
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    copy = not zmq_zero_copy(wl, opts)

    def recv_batch(timeout: float) -> list:
        try:
            return [zmq_decode(sock.recv_multipart(copy=copy))]
        except zmq.Again:
            return []

    def close():
        sock.close()
        ctx.term()

    return address, recv_batch, close


def pyzmq_sender(address: str, wl: dict, opts: dict):
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, wl["zmq_hwm"])
    sock.setsockopt(zmq.SNDTIMEO, int(RECV_TIMEOUT * 1000))
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(address)
    zero_copy = zmq_zero_copy(wl, opts)

    def send(payload: dict):
        frames, tracked = zmq_encode(payload, zero_copy)
        sock.send_multipart(frames, copy=not zero_copy)
        return zmq.MessageTracker(*tracked) if tracked else None

    def close():
        sock.close()
        ctx.term()

    return send, close


def wait_reusable(token) -> None:
    if token is not None:   # a zmq.MessageTracker
        token.wait(RECV_TIMEOUT)


# "rlink-reliable": the same with LearnerNode(reliable=True); the actor learns
# the mode in the handshake (sequence numbers, retained copies, acks, CRC32C).
def receiver_for(peer, wl, opts):
    if peer.startswith("rlink"):
        return rlink_receiver(wl, reliable=peer == "rlink-reliable")
    return pyzmq_receiver(wl, opts)


def sender_for(peer, address, wl, opts):
    if peer.startswith("rlink"):
        return rlink_sender(address, wl, opts)
    return pyzmq_sender(address, wl, opts)


# ------------------------------------------------------- process harness

def receiver_main(peer, wl_name, n, opts, addr_q, result_q, done_evt):
    close = None
    try:
        wl = dict(WORKLOADS[wl_name], name=wl_name)
        template = wl["make"]()
        address, recv_batch, close = receiver_for(peer, wl, opts)
        addr_q.put(address)
        warmup, total = wl["warmup"], wl["warmup"] + n
        expected, t0 = 0, None
        while expected < total:
            batch = recv_batch(RECV_TIMEOUT)
            if not batch:
                raise TimeoutError(f"no message for {RECV_TIMEOUT} s; expected seq {expected} of {total}")
            for d in batch:
                seq = d["seq"]
                if seq != expected:
                    raise DataError(f"seq {seq} received, expected {expected} (loss or reordering)")
                if last_byte(d["obs"]) != expected_byte(seq):
                    raise DataError(f"seq {seq}: last byte of obs is {last_byte(d['obs'])}, "
                                    f"expected {expected_byte(seq)} (corruption)")
                if seq % FULL_CHECK_EVERY == 0 or seq == total - 1:
                    check_full(d, template)
                expected += 1
                if expected == warmup:
                    t0 = time.perf_counter()
        elapsed = time.perf_counter() - t0
        result_q.put({"role": "receiver", "ok": True, "elapsed_s": elapsed, "n": n})
    except BaseException:
        result_q.put({"role": "receiver", "ok": False, "error": traceback.format_exc()})
    finally:
        done_evt.set()
        if close is not None:
            close()


def sender_main(peer, wl_name, n, opts, addr_q, result_q, done_evt):
    close = None
    try:
        wl = dict(WORKLOADS[wl_name], name=wl_name)
        pool = [wl["make"]() for _ in range(POOL)]
        tokens = [None] * POOL
        address = addr_q.get(timeout=READY_TIMEOUT)
        send, close = sender_for(peer, address, wl, opts)
        total = wl["warmup"] + n
        t0 = time.perf_counter()
        for seq in range(total):
            slot = seq % POOL
            wait_reusable(tokens[slot])
            payload = pool[slot]
            stamp(payload, seq)
            tokens[slot] = send(payload)
        send_elapsed = time.perf_counter() - t0
        # Keep the connection open until the receiver has everything.
        if not done_evt.wait(READY_TIMEOUT):
            raise TimeoutError("receiver did not finish")
        result_q.put({"role": "sender", "ok": True, "send_elapsed_s": send_elapsed})
    except BaseException:
        result_q.put({"role": "sender", "ok": False, "error": traceback.format_exc()})
    finally:
        if close is not None:
            close()


class TrialError(RuntimeError):
    pass


def run_trial(peer: str, wl_name: str, n: int, opts: dict, timeout: float) -> dict:
    """One sender/receiver pair; returns the receiver's measurement."""
    ctx = mp.get_context("spawn")
    addr_q, result_q, done_evt = ctx.Queue(), ctx.Queue(), ctx.Event()
    args = (peer, wl_name, n, opts, addr_q, result_q, done_evt)
    procs = [ctx.Process(target=receiver_main, args=args, name=f"{peer}-{wl_name}-receiver"),
             ctx.Process(target=sender_main, args=args, name=f"{peer}-{wl_name}-sender")]
    deadline = time.monotonic() + timeout
    results = {}
    try:
        for p in procs:
            p.start()
        while len(results) < 2:
            left = deadline - time.monotonic()
            try:
                r = result_q.get(timeout=max(left, 0.01))
            except queue.Empty:
                dead = [f"{p.name} (exit {p.exitcode})" for p in procs if not p.is_alive()]
                raise TrialError(f"{peer} {wl_name}: no result within {timeout:g} s"
                                 + (f"; dead: {', '.join(dead)}" if dead else "")) from None
            results[r["role"]] = r
            if not r["ok"]:
                raise TrialError(f"{peer} {wl_name} {r['role']} failed:\n{r['error']}")
    finally:
        for p in procs:
            p.join(timeout=max(deadline - time.monotonic(), 5.0))
            if p.is_alive():
                print(f"  killing {p.name} (pid {p.pid}): overran", file=sys.stderr)
                p.kill()   # SIGKILL to this child's pid only
                p.join(5.0)
    bad = [f"{p.name} exit {p.exitcode}" for p in procs if p.exitcode != 0]
    if bad:
        raise TrialError(f"{peer} {wl_name}: {', '.join(bad)}")
    rec = results["receiver"]
    wl = WORKLOADS[wl_name]
    if wl["unit"] == "msg/s":
        value = n / rec["elapsed_s"]
    else:
        value = n * payload_bytes(wl["make"]()) / rec["elapsed_s"] / 1e9
    return {"value": value, "elapsed_s": rec["elapsed_s"], "n": n,
            "sender_elapsed_s": results["sender"]["send_elapsed_s"]}


# ------------------------------------------------------------- reporting

def _version(mod_name: str) -> str | None:
    try:
        mod = __import__(mod_name)
        return getattr(mod, "__version__", "?")
    except Exception:
        return None


def machine_info() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "nproc": os.cpu_count(),
            "nproc_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "kernel": platform.release(), "python": platform.python_version(),
            "numpy": np.__version__, "rlink": _version("rlink"),
            "pyzmq": _version("zmq"), "msgpack": _version("msgpack"),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    try:
        import zmq
        info["libzmq"] = zmq.zmq_version()
    except Exception:
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        info["rlink_git"] = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=here, capture_output=True,
            text=True, timeout=10).stdout.strip() or None
    except Exception:
        pass
    return info


def fmt(value: float, unit: str) -> str:
    if unit == "GB/s":
        return f"{value:.2f}"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.0f}k"


def cell(values: list, unit: str) -> str:
    if not values:
        return "failed"
    return f"{fmt(statistics.median(values), unit)} [{fmt(min(values), unit)}–{fmt(max(values), unit)}]"


def print_report(results: dict, peers: list, workloads: list, info: dict, repeats: int) -> None:
    print()
    print(f"machine: {info['cpu']}, nproc {info['nproc']}, kernel {info['kernel']}, "
          f"Python {info['python']}, numpy {info['numpy']}, pyzmq {info['pyzmq']} "
          f"(libzmq {info.get('libzmq')}), msgpack {info['msgpack']}, "
          f"rlink {info['rlink']} ({info.get('rlink_git')})")
    print(f"median [min–max] of {repeats} repeats, peers interleaved\n")
    cols = " | ".join(f"{p} (median [min–max])" for p in peers)
    ratio = len(peers) == 2
    print(f"| workload | {cols} |" + (f" {peers[0]}/{peers[1]} |" if ratio else ""))
    print("|---" * (1 + len(peers) + ratio) + "|")
    for w in workloads:
        unit = WORKLOADS[w]["unit"]
        vals = {p: [r["value"] for r in results[w][p]] for p in peers}
        row = f"| {WORKLOADS[w]['title']} ({unit}) | " + " | ".join(cell(vals[p], unit) for p in peers) + " |"
        if ratio:
            a, b = vals[peers[0]], vals[peers[1]]
            row += f" {statistics.median(a) / statistics.median(b):.2f}× |" if a and b else " – |"
        print(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer messages per trial")
    ap.add_argument("--json", metavar="PATH", help="write every repeat and the versions here")
    ap.add_argument("--workloads", default="W1,W2")
    ap.add_argument("--peers", default="rlink,pyzmq")
    ap.add_argument("-n", type=int, help="override the message count of every workload")
    ap.add_argument("--trial-timeout", type=float, default=300.0, help="s per sender/receiver pair")
    ap.add_argument("--zmq-w1-copy", action="store_true",
                    help="pyzmq W1 with copy=True (default copy=False, measured faster)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    peers = args.peers.split(",")
    workloads = args.workloads.split(",")
    opts = {"zmq_w1_copy": args.zmq_w1_copy}
    info = machine_info()
    results = {w: {p: [] for p in peers} for w in workloads}
    runs, failures = [], []
    for w in workloads:
        wl = WORKLOADS[w]
        n = args.n or (wl["n_quick"] if args.quick else wl["n"])
        for rep in range(args.repeats):
            for peer in peers:
                try:
                    r = run_trial(peer, w, n, opts, args.trial_timeout)
                except TrialError as e:
                    print(f"FAILED {w} {peer} repeat {rep}: {e}", file=sys.stderr, flush=True)
                    failures.append({"workload": w, "peer": peer, "repeat": rep, "error": str(e)})
                    continue
                print(f"{w} {peer:6s} repeat {rep}: {fmt(r['value'], wl['unit'])} {wl['unit']} "
                      f"({r['n']} msgs in {r['elapsed_s']:.3f} s)", flush=True)
                results[w][peer].append(r)
                runs.append(dict(r, workload=w, peer=peer, repeat=rep, unit=wl["unit"]))
    print_report(results, peers, workloads, info, args.repeats)
    if args.json:
        summary = {w: {p: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                       for p in peers if (v := [r["value"] for r in results[w][p]])}
                   for w in workloads}
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "runs": runs,
                       "summary": summary, "failures": failures}, f, indent=2)
    if failures:
        print(f"\n{len(failures)} trial(s) FAILED (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
