"""Resource leaks over many node lifecycles.

1,000 cycles of: create a LearnerNode(port=0) and an ActorNode connected to
it, one message each way (actor -> learner, learner -> actor), close both.
Both nodes live in this process, so their sockets, epoll descriptors, I/O
threads and buffers all show up in this process' /proc entries.

* descriptors (/proc/self/fd) and threads (threading.active_count() and
  the kernel's count, /proc/self/status "Threads:") must come back exactly
  to what they were before the first cycle: every node closes what it
  opened and joins what it started;
* resident memory (/proc/self/statm) may grow by less than RSS_BOUND over
  the 1,000 cycles, measured after a short warm-up (first-use allocations:
  CRC tables, numpy, the allocator's arenas). This is a leak bound, not a
  performance threshold: each cycle allocates at least two 128 KiB receive
  buffers, two send rings and two threads' stacks, so leaking any of them
  would grow RSS by well over 256 MiB; 64 MiB leaves room for allocator
  fragmentation while still catching a leak of about 64 KiB per cycle.

Run with ``pytest -s`` to see the figures.
"""
from __future__ import annotations

import gc
import os
import sys
import threading

import numpy as np
import pytest

import rlink

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self (Linux)")

T = 10.0
CYCLES = 1000
WARMUP = 20
RSS_BOUND = 64 << 20


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def snapshot() -> dict:
    gc.collect()
    return {"fds": fd_count(), "threads": threading.active_count(),
            "os_threads": os_threads(), "rss": rss_bytes()}


def one_cycle(i: int, probe=None) -> None:
    with rlink.LearnerNode(port=0) as learner, \
            rlink.ActorNode(learner.address, connect_timeout=T) as actor:
        obs = np.arange(16, dtype=np.float32) + i
        actor.send_trajectory({"i": i, "obs": obs}, timeout=T)
        m = learner.receive_message(timeout=T)
        assert m.actor_id == actor.actor_id and m.data["i"] == i
        assert np.array_equal(m.data["obs"], obs)
        learner.send(actor.actor_id, {"back": i}, timeout=T)
        assert actor.receive(timeout=T) == {"back": i}
        if probe is not None:
            probe()


def test_create_close_cycles_do_not_leak():
    start = snapshot()
    during = []
    one_cycle(0, probe=lambda: during.append(snapshot()))
    # the measurement sees the nodes: two I/O threads, listening and
    # connected sockets, epoll descriptors
    assert during[0]["fds"] >= start["fds"] + 3 and during[0]["os_threads"] >= start["os_threads"] + 2, \
        (start, during)
    for i in range(1, WARMUP):
        one_cycle(i)
    warm = snapshot()
    for i in range(WARMUP, WARMUP + CYCLES):
        one_cycle(i)
    end = snapshot()
    growth = end["rss"] - warm["rss"]
    print(f"\n{CYCLES} learner/actor cycles (after {WARMUP} warm-up cycles):"
          f"\n  fds        {start['fds']} before, {end['fds']} after ({during[0]['fds']} while a pair was open)"
          f"\n  threads    {start['threads']} before, {end['threads']} after (threading.active_count)"
          f"\n  OS threads {start['os_threads']} before, {end['os_threads']} after (/proc/self/status; "
          f"{during[0]['os_threads']} while a pair was open)"
          f"\n  RSS        {start['rss'] / 2**20:.1f} MiB at start, {warm['rss'] / 2**20:.1f} MiB after "
          f"warm-up, {end['rss'] / 2**20:.1f} MiB after ({growth / 2**20:+.1f} MiB; bound "
          f"{RSS_BOUND >> 20} MiB)")
    assert end["fds"] == start["fds"], (start, end)
    assert end["threads"] == start["threads"], (start, end)
    assert end["os_threads"] == start["os_threads"], (start, end)
    # Under AddressSanitizer freed memory sits in its quarantine (256 MiB by
    # default) instead of returning to the allocator, so RSS says nothing about
    # leaks there; ASan's own leak checking is the tool in that build.
    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        assert growth < RSS_BOUND, (warm, end)
