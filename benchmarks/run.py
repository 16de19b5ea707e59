#!/usr/bin/env python
"""rlink benchmark suite: rlink against pyzmq, portal, multiprocessing.connection
and a hand-rolled socket, with C floors, tables, JSON and plots.

    python -m benchmarks [--quick] [--repeats N] [--out DIR]
    python benchmarks/run.py ...            (the same)

Workloads are defined in benchmarks/workloads.py, the measurement method in
benchmarks/harness.py, each peer's configuration in benchmarks/peers/. See
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

# No peer uses BLAS; keep OpenBLAS from starting threads that compete for the
# cores (children inherit this environment).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

if __package__ in (None, ""):   # run as a script: benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "benchmarks"

from . import floors as F          # noqa: E402
from . import harness as H         # noqa: E402
from . import report as R          # noqa: E402
from . import workloads as W       # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_PEERS = ["rlink", "rlink-local", "rlink-reliable", "pyzmq", "portal", "mp.connection",
             "socket+pickle5"]
NO_RELIABLE = [p for p in ALL_PEERS if p != "rlink-reliable"]
# Run only when named in --peers: reliable mode on one host (W1, W2), to set
# beside rlink-local; reliable mode over TCP with send_trajectory(copy=False).
OPT_IN_PEERS = ["rlink-local-reliable", "rlink-reliable-nocopy"]
KNOWN_PEERS = ALL_PEERS + OPT_IN_PEERS
SCALING_PEERS = ["rlink", "rlink-local", "pyzmq"]
# rlink-local is rlink with its same-host defaults (AF_UNIX, shared memory);
# every other peer runs over TCP loopback. Its ratios to the C floor are to
# the AF_UNIX floors (report.PEER_FLOOR), which run only when it does.
LOCAL_PEER = "rlink-local"
SCALING_ACTORS = [1, 4, 16, 64]


def _n(default, **per_peer):
    """Message counts: a default and per-peer overrides (keyword: peer name
    with "-", "." and "+" written as "_")."""
    names = {p.replace("-", "_").replace(".", "_").replace("+", "_"): p for p in KNOWN_PEERS}
    return {"default": default, **{names[k]: v for k, v in per_peer.items()}}


# Each case's C floors run right before the case's peers, in every repeat, so
# that a ratio to the floor compares measurements a few seconds apart (the
# machine's speed drifts). These run once per repeat, as references only:
REFERENCE_FLOORS = ["unix_100B_write1", "unix_100B_writev64", "memcpy"]
STREAM_FLOORS = ["tcp_stream_1MiB_autobuf", "tcp_stream_1MiB_4MiBbuf"]
UNIX_STREAM_FLOORS = ["unix_stream_1MiB_autobuf", "unix_stream_1MiB_4MiBbuf"]
# floor name -> the runs it is the better of, in each repeat (derived in main)
BEST_OF = {"tcp_stream_1MiB": STREAM_FLOORS, "unix_stream_1MiB": UNIX_STREAM_FLOORS}
# what reliable mode's W2 work costs in C (report.RELIABLE_MODEL), run in W2
# when a reliable peer over TCP does
RELIABLE_FLOORS = ["tcp_w2_stream", "tcp_w2_stream_crc", "tcp_w2_stream_crc_copy"]
RELIABLE_TCP_PEERS = ["rlink-reliable", "rlink-reliable-nocopy"]

# Message counts are chosen so that every trial measures for roughly 0.5-3 s
# at the rates seen on a 2-core VM; --quick divides them (see quick_div).
CASES = {
    "W1": dict(title="W1 step messages, 1 → 1", metric="msg/s", higher=True, run="oneway",
               kind="step", senders=1, peers=KNOWN_PEERS, floor="tcp_100B_writev64",
               floors=["tcp_100B_write1", "tcp_100B_writev64"], local_floors=[],
               n=_n(200_000, pyzmq=100_000, portal=15_000, mp_connection=60_000,
                    socket_pickle5=60_000), warmup=2000, quick_div=5),
    "W2": dict(title="W2 trajectories, 1 → 1", metric="GB/s", higher=True, run="oneway",
               kind="trajectory", senders=1, peers=KNOWN_PEERS, floor="tcp_stream_1MiB",
               floors=STREAM_FLOORS, local_floors=UNIX_STREAM_FLOORS,
               reliable_floors=RELIABLE_FLOORS, n=_n(1000), warmup=20, quick_div=4),
    "W2x2": dict(title="W2 trajectories, 2 → 1", metric="GB/s", higher=True, run="oneway",
                 kind="trajectory", senders=2, peers=KNOWN_PEERS, floor="tcp_stream_1MiB",
                 floors=STREAM_FLOORS, local_floors=UNIX_STREAM_FLOORS,
                 n=_n(500), warmup=20, quick_div=4),
    "W3": dict(title="W3 parameters 64 MiB → 2 actors", metric="s", higher=False, run="broadcast",
               peers=NO_RELIABLE, floor="tcp_stream_1MiB", floors=STREAM_FLOORS,
               local_floors=UNIX_STREAM_FLOORS, subscribers=2,
               n=_n(8, portal=3), warmup=2, quick_div=2),
    "W4": dict(title="W4 round trip", metric="µs", higher=False, run="roundtrip",
               peers=NO_RELIABLE, floor="tcp_pingpong_64B", floors=["tcp_pingpong_64B", "tcp_pingpong_64B_spin"],
               local_floors=["unix_pingpong_64B"],
               n=_n(20_000), warmup=1000,
               quick_div=4),
}
for _k in SCALING_ACTORS[1:]:
    CASES[f"S{_k}"] = dict(title=f"W1 scaling, {_k} → 1", metric="msg/s", higher=True,
                           run="oneway", kind="step", senders=_k, peers=SCALING_PEERS,
                           floor="tcp_100B_writev64", floors=["tcp_100B_writev64"], local_floors=[],
                           n=_n(max(200_000 // _k, 500), pyzmq=max(100_000 // _k, 500)),
                           warmup=100, quick_div=4)
ORDER = ["W1", "W2", "W2x2", "W3", "W4"] + [f"S{k}" for k in SCALING_ACTORS[1:]]


def case_n(case: dict, peer: str, quick: bool) -> int:
    n = case["n"].get(peer, case["n"]["default"])
    return max(1, n // case["quick_div"]) if quick else n


# ----------------------------------------------------------- machine info

def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def _cpu_pressure():
    """/proc/pressure/cpu "some" line: share of time runnable tasks waited for a CPU."""
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return None


def machine_info(cc_note: str) -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numpy
    info = {
        "cpu": cpu, "nproc": os.cpu_count(),
        "nproc_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(), "os": platform.platform(),
        "python": platform.python_version(), "python_impl": platform.python_implementation(),
        "numpy": numpy.__version__,
        "pyzmq": _dist_version("pyzmq"), "msgpack": _dist_version("msgpack"),
        "portal": _dist_version("portal"), "matplotlib": _dist_version("matplotlib"),
        "cc": cc_note,
        "loadavg_start": os.getloadavg(),
        "cpu_pressure_start": _cpu_pressure(),
    }
    try:
        import rlink
        info["rlink"] = rlink.__version__
        info["rlink_path"] = os.path.dirname(rlink.__file__)
    except Exception as e:   # reported, and every rlink trial will fail
        info["rlink"] = f"import failed: {e}"
    try:
        import zmq
        info["libzmq"] = zmq.zmq_version()
    except Exception:
        pass
    try:
        info["git"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE,
                                     capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        pass
    return info


# ------------------------------------------------------------------ running

PEER_MODULES = {"rlink": ["rlink"], "rlink-local": ["rlink"], "rlink-reliable": ["rlink"],
                "rlink-local-reliable": ["rlink"], "rlink-reliable-nocopy": ["rlink"],
                "pyzmq": ["zmq", "msgpack"],
                "portal": ["portal", "msgpack"], "mp.connection": ["msgpack"], "socket+pickle5": []}


def _missing_modules(peer):
    import importlib.util
    out = []
    for m in PEER_MODULES[peer]:
        try:
            if importlib.util.find_spec(m) is None:
                out.append(m)
        except Exception:
            out.append(m)
    return out


def run_case(name: str, case: dict, peer: str, quick: bool, timeout: float) -> dict:
    n = case_n(case, peer, quick)
    warm = case["warmup"]
    if case["run"] == "oneway":
        r = H.oneway(peer, case["kind"], case["senders"], n, warm, timeout)
        scale = 1 if case["kind"] == "step" else 1e-9
        return dict(r, value=r["rate"] * scale, value_mid=r["rate_mid"] * scale,
                    rate=None, rate_mid=None)
    if case["run"] == "broadcast":
        r = H.broadcast(peer, case["subscribers"], n, warm, timeout)
        return dict(r, value=r["seconds"])
    if case["run"] == "roundtrip":
        r = H.roundtrip(peer, n, warm, timeout)
        return dict(r, value=r["p50_us"])
    raise ValueError(case["run"])


# What each rlink peer's actors must have used; a trial that did not is a
# failed trial, not a figure (the peers check too; this makes sure it was recorded).
EXPECTED_TRANSPORT = {"rlink": "tcp", "rlink-reliable": "tcp", LOCAL_PEER: "unix",
                      "rlink-local-reliable": "unix", "rlink-reliable-nocopy": "tcp"}


def check_transport(case: dict, peer: str, r: dict) -> str:
    """Raise TrialError unless every actor of an rlink trial recorded the
    transport its peer stands for (rlink-local trajectories: and a
    shared-memory region). -> a short note for the progress line."""
    want = EXPECTED_TRANSPORT.get(peer)
    if want is None:
        return ""
    infos = r.get("actor_transport")
    if not infos or any(not i for i in infos):
        raise H.TrialError(f"{peer}: the actors' transport was not recorded ({infos!r})")
    need_shm = EXPECTED_TRANSPORT[peer] == "unix" and case.get("kind") == "trajectory"
    for i in infos:
        if i.get("transport") != want:
            raise H.TrialError(f"{peer}: an actor used {i.get('transport')!r}, not {want!r}: {i}")
        if need_shm and not i.get("shared_memory"):
            raise H.TrialError(f"{peer}: an actor had no shared-memory region: {i}")
    note = want + ("+shm" if all(i.get("shared_memory") for i in infos) else "")
    if case.get("kind") == "trajectory":
        msgs = sum(i.get("messages_out") or 0 for i in infos)
        out = sum(i.get("bytes_out") or 0 for i in infos)
        if msgs and all(i.get("end") == "connected" for i in infos):
            # bytes the actors wrote to their sockets over the array bytes they
            # sent (warm-up included): ~1 over TCP; with shared memory, the
            # share of trajectories that fell back to the socket (region full)
            r["socket_share"] = out / (msgs * W.payload_bytes(W.make_trajectory()))
            note += f", {r['socket_share']:.1%} of the array bytes on the socket"
    return f" [{note}]"


class Progress:
    """One line per trial on stderr: position, elapsed, estimate of time left."""

    def __init__(self, total):
        self.total, self.done, self.t0 = total, 0, time.monotonic()
        self.cost = {}

    def line(self, key, label, text, seconds):
        self.done += 1
        self.cost.setdefault(key, []).append(seconds)
        el = time.monotonic() - self.t0
        avg = el / self.done
        left = max(0, self.total - self.done) * avg
        sys.stderr.write(f"[{self.done:3d}/{self.total}] {el / 60:4.1f} min, ~{left / 60:4.1f} left"
                         f" | {label:44s} {text}\n")
        sys.stderr.flush()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer messages per trial (W4: 5,000 round trips), no callgrind; < 3 min")
    ap.add_argument("--repeats", type=int, default=None,
                    help="repeats per case, peers interleaved within each (default 5; 3 with --quick)")
    ap.add_argument("--cases", default=",".join(ORDER),
                    help=f"comma-separated subset of {','.join(ORDER)}")
    ap.add_argument("--peers", default=",".join(ALL_PEERS), help="comma-separated subset")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="directory for results.json, results.md and the plots")
    ap.add_argument("--no-floors", action="store_true", help="skip the C floors")
    ap.add_argument("--no-callgrind", action="store_true",
                    help="skip the callgrind instruction counts (on by default without --quick)")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--trial-timeout", type=float, default=240.0, help="s per trial")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    cases = [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; choose from {ORDER}")
    peers = [p for p in args.peers.split(",") if p]
    bad = [p for p in peers if p not in KNOWN_PEERS]
    if bad:
        ap.error(f"unknown peer(s) {bad}; choose from {KNOWN_PEERS}")
    missing = {p: m for p in peers if (m := _missing_modules(p))}
    for p, m in missing.items():
        print(f"note: skipping {p}: {', '.join(m)} not installed "
              f"(pip install -r benchmarks/requirements.txt)", file=sys.stderr)
    peers = [p for p in peers if p not in missing]
    os.makedirs(args.out, exist_ok=True)
    ignore = os.path.join(args.out, ".gitignore")
    if not os.path.exists(ignore):   # generated output stays out of git status
        with open(ignore, "w") as f:
            f.write("# written by python -m benchmarks: its output is not source\n*\n")
    started = time.time()

    binary, cc_note = (None, "skipped (--no-floors)") if args.no_floors else F.build()
    info = machine_info(cc_note)
    load = info["loadavg_start"][0]
    print(f"rlink benchmarks: {info['cpu']}, {info['nproc']} cores, Linux {info['kernel']}, "
          f"Python {info['python']}; load average {load:.2f}", file=sys.stderr)
    if load > 0.5 * (info["nproc"] or 1):
        print(f"note: load average {load:.2f} on {info['nproc']} cores: other work is running; "
              f"absolute numbers will be noisy, read the ratios (peers are interleaved)",
              file=sys.stderr)
    if binary is None:
        print(f"note: {cc_note}", file=sys.stderr)

    fspecs = F.floor_specs(args.quick) if binary else {}
    plan = []   # (repeat, "floor", floor name, case or None) or (repeat, "case", case, peer)
    for rep in range(args.repeats):
        for fname in REFERENCE_FLOORS:
            if fname in fspecs:
                plan.append((rep, "floor", fname, None))
        for cname in cases:
            local = LOCAL_PEER in peers and LOCAL_PEER in CASES[cname]["peers"]
            reliable = any(p in peers for p in RELIABLE_TCP_PEERS)
            for fname in (CASES[cname]["floors"] + (CASES[cname]["local_floors"] if local else [])
                          + (CASES[cname].get("reliable_floors", []) if reliable else [])):
                if fname in fspecs:
                    plan.append((rep, "floor", fname, cname))
            cpeers = [p for p in CASES[cname]["peers"] if p in peers]
            k = rep % len(cpeers) if cpeers else 0
            for p in cpeers[k:] + cpeers[:k]:   # rotate the order from repeat to repeat
                plan.append((rep, "case", cname, p))
    prog = Progress(len(plan))
    runs, floor_runs, failures = [], [], []
    for rep, kind, name, peer in plan:
        t = time.monotonic()
        loadavg = os.getloadavg()[0]
        if kind == "floor":
            fcase = peer
            argv, key, unit, _ = fspecs[name]
            label = f"rep {rep + 1}/{args.repeats} C floor {name}" + (f" ({fcase})" if fcase else "")
            try:
                r = F.run_floor(binary, argv)
                floor_runs.append(dict(r, name=name, case=fcase, repeat=rep, value=r[key],
                                       unit=unit, loadavg=loadavg))
                text = f"{r[key]:.4g} {unit}"
            except Exception as e:
                failures.append({"floor": name, "case": fcase, "repeat": rep, "error": str(e)})
                text = "FAILED"
                print(f"FAILED {label}: {e}", file=sys.stderr)
            prog.line((kind, name), label, text, time.monotonic() - t)
            for derived, parts in BEST_OF.items():
                streams = [r for r in floor_runs if r["repeat"] == rep and r["case"] == fcase
                           and r["name"] in parts]
                if name == parts[-1] and streams:
                    best = max(streams, key=lambda r: r["value"])
                    floor_runs.append(dict(best, name=derived, best_of=best["name"]))
            continue
        case = CASES[name]
        label = f"rep {rep + 1}/{args.repeats} {name} {peer}"
        try:
            r = run_case(name, case, peer, args.quick, args.trial_timeout)
            r = {k: v for k, v in r.items() if v is not None}
            tnote = check_transport(case, peer, r)
            runs.append(dict(r, case=name, peer=peer, repeat=rep, metric=case["metric"],
                             loadavg=loadavg, wall_s=time.monotonic() - t))
            unit = case["metric"]
            text = R.fmt(r["value"], unit) + ("" if unit == "s" else f" {unit}")
            if case["run"] == "roundtrip":
                text += f" p50, p99 {r['p99_us']:.1f} µs"
            if case.get("senders", 1) == 2:
                text += f" (shares {', '.join(f'{s:.0%}' for s in r['shares'])})"
            text += tnote
        except H.TrialError as e:
            failures.append({"case": name, "peer": peer, "repeat": rep, "error": str(e)})
            text = "FAILED (see end)"
        prog.line((name, peer), label, text, time.monotonic() - t)

    info["loadavg_end"] = os.getloadavg()
    info["cpu_pressure_end"] = _cpu_pressure()
    callgrind = None
    if not args.quick and not args.no_callgrind:
        callgrind = run_callgrind(args.out)
    elapsed = time.time() - started
    results = R.build_results(info, vars(args), CASES, ORDER, cases, peers, runs, floor_runs,
                              fspecs, failures, callgrind, elapsed)
    results["skipped_peers"] = {p: f"{', '.join(m)} not installed" for p, m in missing.items()}
    paths = R.write_all(results, args.out, plots=not args.no_plots)
    print(R.markdown(results), flush=True)
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
    if failures:
        print(f"\n{len(failures)} trial(s) FAILED:", file=sys.stderr)
        for f in failures:
            print(f"--- {f.get('floor', '')} {f.get('case') or ''} {f.get('peer', '')} "
                  f"repeat {f['repeat']}:\n"
                  f"{f['error'][-3000:]}", file=sys.stderr)
        return 1
    return 0


def run_callgrind(out_dir: str):
    """benchmarks/callgrind_w1.py in a subprocess (it runs valgrind itself)."""
    from . import callgrind_w1
    sys.stderr.write("callgrind: instructions per W1 message (rlink and pyzmq, send and receive; "
                     "about 2-4 min) ...\n")
    t = time.monotonic()
    try:
        res = callgrind_w1.measure(peers=["rlink", "pyzmq"], n=2000, out_dir=out_dir)
    except Exception as e:   # valgrind missing or failed: reported, not fatal
        res = {"skipped": str(e)}
    res["wall_s"] = time.monotonic() - t
    sys.stderr.write(f"callgrind: done in {res['wall_s']:.0f} s\n")
    return res


if __name__ == "__main__":
    sys.exit(main())
