"""Process harness: every trial runs each side in its own process.

Processes are forked from the (library-free) runner, so start-up costs no
interpreter launch; peers import their library in the child. A trial has a
hard deadline: a process still running at its deadline is killed (SIGKILL
to that child's pid only) and the trial fails.

one-way   one receiver process and K sender processes. The receiver binds
          first and hands its address to the senders. Each sender sends
          WARMUP messages; when the receiver holds every sender's warm-up it
          starts its clock and writes one byte per sender into a "go" pipe;
          each sender then sends n messages. Figure: K * n / (time from go to
          the last message), at the receiver. Also recorded: the rate between
          the 10% and 90% marks of the K * n messages, and each sender's
          share of the messages received in that window (fairness; for
          K = 2 this is the per-actor share of W2 2 -> 1). On 2 cores, 16 or
          64 sender processes wake from "go" up to ~0.3 s apart (CPU
          scheduling), so for K >= 16 shares measure start-up skew as much as
          fairness. The receiver checks every message's sequence number and
          last byte (and a full check every 1024th). Payloads come from a
          pool; a pooled payload is overwritten only after the transport said
          it may (peer.wait(token)).
broadcast one publisher and 2 subscribers. For each version the publisher
          stamps the arrays, notes t0 and publishes; each subscriber notes
          the time it holds every array of that version (CLOCK_MONOTONIC is
          system-wide) and acknowledges over a multiprocessing queue, outside
          the measurement; the publisher publishes the next version only after
          both acknowledged. Figure: max(t_subscriber) - t0 per version.
roundtrip one server, one client; the client times each request() with
          perf_counter_ns and checks the reply belongs to its request.

Actor-side endpoints (senders, subscribers, the round-trip client) that have
an .info() method report it after their last message, outside the
measurement (rlink: the transport and whether a shared-memory region was
used); the trial's "actor_transport" lists one per actor.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import select
import shutil
import sys
import tempfile
import time
import traceback

import numpy as np

from . import workloads as W

CTX = mp.get_context("fork")
READY_TIMEOUT = 120.0    # s: connect / first message / go
STEP_TIMEOUT = 30.0      # s: any single receive or send
POOL = {"step": 256, "trajectory": 8}


class TrialError(RuntimeError):
    pass


def _peer(name):
    from .peers import get_peer
    return get_peer(name)


_CLEANUP: list = []
CLOSE_TIMEOUT = 10.0   # s for a peer's close() after the result is reported


def _at_exit(close):
    """Close a peer after the child has reported its result, with a time
    limit: a library whose close() hangs (portal's does when replies are still
    queued for a client that left) must not cost the measurement."""
    _CLEANUP.append(close)


def _run_cleanup():
    import threading
    for close in _CLEANUP:
        t = threading.Thread(target=close, daemon=True)
        t.start()
        t.join(CLOSE_TIMEOUT)
        if t.is_alive():
            print(f"close() did not return within {CLOSE_TIMEOUT:g} s; exiting anyway",
                  file=sys.stderr)
            break


def _child(fn, result_q, role, logdir, *args):
    """Run fn in a child; report exactly one result (or the traceback).
    The child's stdout/stderr go to logdir/ROLE.log (libraries chatter)."""
    fd = os.open(os.path.join(logdir, f"{role}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        res = fn(*args)
        result_q.put({"role": role, "ok": True, **(res or {})})
    except BaseException:
        result_q.put({"role": role, "ok": False, "error": traceback.format_exc()})
        sys.stderr.flush()
    finally:
        result_q.close()
        result_q.join_thread()   # the result is flushed to the pipe
        _run_cleanup()
        sys.stdout.flush()
        os._exit(0)   # skip atexit/finalizers and non-daemon threads of libraries


def run_procs(specs, timeout):
    """specs: list of (role, fn, args). Returns {role: result}. Kills overruns."""
    result_q = CTX.Queue()
    logdir = tempfile.mkdtemp(prefix="rlink-bench-")
    procs = [CTX.Process(target=_child, args=(fn, result_q, role, logdir, *args), name=role,
                         daemon=True)
             for role, fn, args in specs]
    deadline = time.monotonic() + timeout
    results, error = {}, None
    try:
        for p in procs:
            p.start()
        while len(results) < len(procs):
            left = deadline - time.monotonic()
            try:
                r = result_q.get(timeout=max(min(left, 1.0), 0.01))
            except queue.Empty:
                if left <= 0:
                    error = TrialError(f"no result within {timeout:g} s "
                                       f"(missing: {[p.name for p in procs if p.name not in results]})")
                    break
                dead = [p for p in procs if not p.is_alive() and p.name not in results]
                if dead:
                    # It may have exited right after putting its result.
                    try:
                        r = result_q.get(timeout=2.0)
                    except queue.Empty:
                        error = TrialError(", ".join(f"{p.name} died (exit {p.exitcode})"
                                                     for p in dead))
                        break
                else:
                    continue
            results[r["role"]] = r
            if not r["ok"]:
                error = TrialError(f"{r['role']} failed:\n{r['error']}")
                break
    finally:
        for p in procs:
            p.join(timeout=max(deadline - time.monotonic(), 0.1) if error is None else 3.0)
            if p.is_alive():
                p.kill()   # SIGKILL to this child only
                p.join(5.0)
        result_q.close()
        logs = _read_logs(logdir)
        shutil.rmtree(logdir, ignore_errors=True)
    if error:
        raise TrialError(f"{error}{logs}")
    return results


def _read_logs(logdir, tail=2000):
    out = []
    for name in sorted(os.listdir(logdir)):
        with open(os.path.join(logdir, name), errors="replace") as f:
            text = f.read().strip()
        if text:
            out.append(f"\n--- {name} (last {tail} chars) ---\n{text[-tail:]}")
    return "".join(out)


# ------------------------------------------------------------------ one-way

def _info(endpoint):
    """endpoint.info() if the peer has it (after the measurement), else None."""
    info = getattr(endpoint, "info", None)
    return info() if info else None


def _actor_infos(res, roles):
    infos = [res[r].get("info") for r in roles]
    return infos if any(i is not None for i in infos) else None


def _oneway_receiver(peer_name, kind, k, n, warmup, addr_q, go, go_time, done):
    peer = _peer(peer_name)
    loose = getattr(peer, "loose_scalars", False)
    last_byte = W.last_byte
    template = W.MAKERS[kind]()
    rx = peer.oneway_receiver(kind, k)
    try:
        for _ in range(k):
            addr_q.put(rx.address)
        expected = [0] * k
        total = k * (warmup + n)
        mark_lo, mark_hi = int(0.1 * k * n), int(0.9 * k * n)
        got = measured = 0
        warm_done = 0
        t0 = t_lo = t_hi = t_first = None
        counts_lo = counts_hi = counts_first = None
        timeout = READY_TIMEOUT
        while got < total:
            batch = rx.recv_batch(timeout)
            if not batch:
                raise TimeoutError(f"nothing for {timeout:g} s; received {got} of {total}")
            for d in batch:
                # Inlined W.check_message: sequence number, then last byte.
                seq = int(d["seq"])
                src = seq >> W.SEQ_BITS
                if not 0 <= src < k:
                    raise W.DataError(f"message from unknown sender {src}")
                i = expected[src]
                if seq & W.SEQ_MASK != i:
                    W.raise_seq(seq, (src << W.SEQ_BITS) | i)
                lb = last_byte(d["obs"])
                if lb != ((i * 131 + 7) & 0xFF):
                    W.raise_byte(lb, seq)
                if i % W.FULL_CHECK_EVERY == 0 or i == warmup + n - 1:
                    W.check_full(d, template, loose)
                expected[src] = i = i + 1
                got += 1
                if i <= warmup:
                    if i == warmup:
                        warm_done += 1
                        if warm_done == k:
                            go_time.value = time.monotonic()
                            os.write(go[1], b"g" * k)   # wakes every sender at once
                            t0 = time.perf_counter()
                            cpu0 = time.process_time()
                            timeout = STEP_TIMEOUT
                    continue
                measured += 1
                if measured == mark_lo:
                    t_lo = time.perf_counter()
                    counts_lo = [max(0, e - warmup) for e in expected]
                if measured == mark_hi:
                    t_hi = time.perf_counter()
                    counts_hi = [max(0, e - warmup) for e in expected]
                if i == warmup + n and t_first is None:
                    t_first = time.perf_counter()
                    counts_first = [max(0, e - warmup) for e in expected]
        t_all = time.perf_counter()
        cpu_s = time.process_time() - cpu0
        return {"all_s": t_all - t0, "cpu_s": cpu_s, "first_done_s": t_first - t0, "counts_first": counts_first,
                "mid_s": t_hi - t_lo, "mid_counts": [b - a for a, b in zip(counts_lo, counts_hi)]}
    finally:
        done.set()
        _at_exit(rx.close)


def _oneway_sender(peer_name, kind, idx, n, warmup, addr_q, go, go_time, done):
    peer = _peer(peer_name)
    pool = [W.Stamper(W.MAKERS[kind]()) for _ in range(POOL[kind])]
    tokens = [None] * len(pool)
    tx = peer.oneway_sender(addr_q.get(timeout=READY_TIMEOUT), kind)
    try:
        base = idx << W.SEQ_BITS
        send, wait = tx.send, tx.wait
        t_go = None
        npool = len(pool)
        for i in range(warmup + n):
            if i == warmup:
                if not select.select([go[0]], [], [], READY_TIMEOUT)[0]:
                    raise TimeoutError("no go from the receiver")
                os.read(go[0], 1)
                t_go = time.perf_counter()
                cpu0 = time.process_time()
                go_delay = time.monotonic() - go_time.value
            slot = i % npool
            if tokens[slot] is not None:
                wait(tokens[slot])
            tokens[slot] = send(pool[slot](base | i))
        sent_s = time.perf_counter() - t_go
        info = _info(tx)   # before the receiver can finish and close
        if not done.wait(READY_TIMEOUT + STEP_TIMEOUT):
            raise TimeoutError("receiver did not finish")
        # every thread's CPU time from "go" until the receiver has it all
        # (what is still written after the last send call included)
        cpu_s = time.process_time() - cpu0
        return {"send_s": sent_s, "go_delay_s": go_delay, "cpu_s": cpu_s, "info": info}
    finally:
        _at_exit(tx.close)


def oneway(peer, kind, k, n, warmup, timeout):
    # "go" is a pipe: the receiver writes one byte per sender. (A
    # multiprocessing.Event wakes its waiters one handshake at a time: with 64
    # senders on 2 cores the last one started ~0.4 s after the first.)
    addr_q, done = CTX.Queue(), CTX.Event()
    go = os.pipe()
    go_time = CTX.Value("d", 0.0, lock=False)
    specs = [("receiver", _oneway_receiver, (peer, kind, k, n, warmup, addr_q, go, go_time, done))]
    specs += [(f"sender{i}", _oneway_sender, (peer, kind, i, n, warmup, addr_q, go, go_time, done))
              for i in range(k)]
    try:
        res = run_procs(specs, timeout)
    finally:
        os.close(go[0])
        os.close(go[1])
    rx = res["receiver"]
    per_msg = 1 if kind == "step" else W.payload_bytes(W.make_trajectory())
    mid = rx["mid_counts"]
    return {"senders": k, "n_per_sender": n,
            # headline: every measured message, from "go" to the last one
            "rate": k * n * per_msg / rx["all_s"],
            # the receiver's rate between the 10% and 90% marks of the total
            "rate_mid": sum(mid) * per_msg / rx["mid_s"],
            "shares": [c / sum(mid) for c in mid],          # per sender, 10%-90% window
            "all_s": rx["all_s"], "mid_s": rx["mid_s"], "mid_counts": mid,
            "first_done_s": rx["first_done_s"], "counts_first": rx["counts_first"],
            "sender_send_s": [res[f"sender{i}"]["send_s"] for i in range(k)],
            "sender_go_delay_s": [res[f"sender{i}"]["go_delay_s"] for i in range(k)],
            # CPU time (all threads, user + system) per message in each process
            "sender_cpu_us": [res[f"sender{i}"]["cpu_s"] / n * 1e6 for i in range(k)],
            "receiver_cpu_us": rx["cpu_s"] / (k * n) * 1e6,
            "actor_transport": _actor_infos(res, [f"sender{i}" for i in range(k)])}


# ---------------------------------------------------------------- broadcast

def _bcast_publisher(peer_name, k, versions, warmup, addr_q, ack_q, done):
    peer = _peer(peer_name)
    pub = peer.bcast_publisher(k)
    try:
        for _ in range(k):
            addr_q.put(pub.address)
        pub.wait_subscribers(READY_TIMEOUT)
        params = W.make_params()
        times = []
        for v in range(1, warmup + versions + 1):
            W.stamp_params(params, v)
            t0 = time.monotonic()
            pub.publish(v, params)
            t_pub = time.monotonic() - t0
            acks = []
            while len(acks) < k:
                src, got_v, t = ack_q.get(timeout=STEP_TIMEOUT)
                if got_v != v:
                    raise W.DataError(f"subscriber {src} acknowledged {got_v}, expected {v}")
                acks.append(t)
            if v > warmup:
                times.append({"s": max(acks) - t0, "publish_call_s": t_pub,
                              "per_actor_s": [a - t0 for a in acks]})
        return {"broadcasts": times}
    finally:
        done.set()
        _at_exit(pub.close)


def _bcast_subscriber(peer_name, idx, versions, warmup, addr_q, ack_q, done):
    peer = _peer(peer_name)
    sub = peer.bcast_subscriber(addr_q.get(timeout=READY_TIMEOUT))
    try:
        for v in range(1, warmup + versions + 1):
            params = sub.wait(v, READY_TIMEOUT if v == 1 else STEP_TIMEOUT)
            t = time.monotonic()
            W.check_params(params, v)
            del params
            if v == warmup + versions:
                info = _info(sub)   # before the publisher can finish and close
            ack_q.put((idx, v, t))
        done.wait(STEP_TIMEOUT)
        return {"info": info}
    finally:
        _at_exit(sub.close)


def broadcast(peer, k, versions, warmup, timeout):
    addr_q, ack_q, done = CTX.Queue(), CTX.Queue(), CTX.Event()
    specs = [("publisher", _bcast_publisher, (peer, k, versions, warmup, addr_q, ack_q, done))]
    specs += [(f"subscriber{i}", _bcast_subscriber, (peer, i, versions, warmup, addr_q, ack_q, done))
              for i in range(k)]
    res = run_procs(specs, timeout)
    b = res["publisher"]["broadcasts"]
    secs = [x["s"] for x in b]
    return {"seconds": float(np.median(secs)), "broadcast_s": secs,
            "publish_call_s": [x["publish_call_s"] for x in b],
            "per_actor_s": [x["per_actor_s"] for x in b], "subscribers": k,
            "actor_transport": _actor_infos(res, [f"subscriber{i}" for i in range(k)])}


# --------------------------------------------------------------- round trip

QUANTILE_GRID = np.linspace(0, 1, 201)


def _rr_server(peer_name, n, warmup, addr_q, done):
    peer = _peer(peer_name)
    srv = peer.rr_server()
    try:
        addr_q.put(srv.address)
        srv.serve(warmup + n, READY_TIMEOUT)
        done.wait(STEP_TIMEOUT)
    finally:
        _at_exit(srv.close)


def _rr_client(peer_name, n, warmup, addr_q, done):
    peer = _peer(peer_name)
    cli = peer.rr_client(addr_q.get(timeout=READY_TIMEOUT))
    try:
        payload = W.make_step()
        lat = np.empty(n, dtype=np.int64)
        clock = time.perf_counter_ns
        request = cli.request
        stamp = W.Stamper(payload)
        for i in range(warmup + n):
            stamp(i)
            t = clock()
            reply = request(payload, STEP_TIMEOUT if i else READY_TIMEOUT)
            dt = clock() - t
            W.check_reply(reply, i)
            if i >= warmup:
                lat[i - warmup] = dt
        us = lat / 1e3
        return {"n": n, "p50_us": float(np.percentile(us, 50)),
                "p90_us": float(np.percentile(us, 90)),
                "p99_us": float(np.percentile(us, 99)),
                "p999_us": float(np.percentile(us, 99.9)),
                "mean_us": float(us.mean()),
                "quantiles_us": [round(float(x), 3) for x in np.quantile(us, QUANTILE_GRID)],
                "info": _info(cli)}
    finally:
        done.set()
        _at_exit(cli.close)


def roundtrip(peer, n, warmup, timeout):
    addr_q, done = CTX.Queue(), CTX.Event()
    res = run_procs([("server", _rr_server, (peer, n, warmup, addr_q, done)),
                     ("client", _rr_client, (peer, n, warmup, addr_q, done))], timeout)
    r = dict(res["client"])
    del r["role"], r["ok"], r["info"]
    r["actor_transport"] = _actor_infos(res, ["client"])
    return r
