#!/usr/bin/env python
"""W2 trajectories 1 -> 1 on one host, with a learner that reads every
64-byte cache line of every `obs` it receives (the suite's receiver reads a
few bytes per message, so with shared memory it measures how fast
trajectories reach the learner, not what a learner that trains on them
pays for the memory traffic).

    python -m benchmarks.read_all [--n 2000] [--reliable] [--shm-bytes BYTES]

`--shm-bytes 0` sends over the AF_UNIX socket instead of shared memory.
Prints GB/s at the learner (array bytes over the time to receive and read
n trajectories after 50 of warm-up), and checks every byte it read.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import rlink

from .workloads import make_trajectory, payload_bytes

WARMUP = 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--reliable", action="store_true")
    ap.add_argument("--shm-bytes", type=int, default=64 << 20)
    a = ap.parse_args()
    traj = make_trajectory()
    traj["obs"][:] = 1
    with rlink.LearnerNode(port=0, reliable=a.reliable) as learner:
        pid = os.fork()
        if pid == 0:   # the actor
            code = 1
            try:
                with rlink.ActorNode(learner.address, connect_timeout=10, shm_bytes=a.shm_bytes) as actor:
                    for _ in range(a.n + WARMUP):
                        actor.send_trajectory(traj, timeout=60)
                    # until the learner has taken them all (a reliable
                    # actor's close would otherwise wait for the last acks)
                    deadline = time.monotonic() + 60
                    while a.reliable and actor.stats()["acked"] < a.n + WARMUP \
                            and time.monotonic() < deadline:
                        time.sleep(0.01)
                code = 0
            finally:
                os._exit(code)
        for _ in range(WARMUP):
            learner.receive(timeout=60)
        lines = traj["obs"].size // 64
        t0 = time.perf_counter()
        for _ in range(a.n):
            obs = learner.receive(timeout=60)["obs"]
            # one byte of every cache line, all of them ones
            if int(obs.reshape(-1, 64)[:, 0].sum(dtype=np.int64)) != lines:
                raise SystemExit("a trajectory arrived corrupted")
        dt = time.perf_counter() - t0
        _, status = os.waitpid(pid, 0)
        if status:
            raise SystemExit(f"the actor failed (status {status})")
        how = "shared memory" if a.shm_bytes else "AF_UNIX socket"
        print(f"{'reliable' if a.reliable else 'unreliable'}, {how}: "
              f"{a.n * payload_bytes(traj) / dt / 1e9:.2f} GB/s, every cache line read")


if __name__ == "__main__":
    main()
