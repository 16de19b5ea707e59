"""A learner process for the fault tests (tests/test_reliable*.py).

Not a test module (pytest collects ``test_*.py`` only): the tests run it as a
subprocess, directly or under ``ip netns exec``. It receives numbered
trajectories (``{"seq": int, ...}``) and prints, one line per message and
right after ``receive_message()`` returned it (only that counts as delivered)::

    PORT <port>                    once listening
    M <seq> <redelivered 0|1> <actor_id>
    PAUSED                         after --kill-at in --kill-mode pause: stops receiving
    STATS <json>                   at a clean exit (stdin closed)

``--kill-at SEQ`` stops after recording that message: ``--kill-mode self``
SIGKILLs its own PID right there (acks still unsent), ``pause`` prints
PAUSED and stops calling receive() so the test can SIGKILL it by PID without
landing between receive() and the print. The process exits cleanly when its
stdin is closed, and in any case after ``--lifetime`` seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

import rlink


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--reliable", type=int, default=1)
    p.add_argument("--retry-attempts", type=int, default=20)
    p.add_argument("--work", type=float, default=0.0, help="seconds of simulated work per message")
    p.add_argument("--kill-at", type=int, default=-1)
    p.add_argument("--kill-mode", choices=["pause", "self"], default="pause")
    p.add_argument("--lifetime", type=float, default=900.0)
    args = p.parse_args()

    learner = rlink.LearnerNode(port=args.port, host=args.host, reliable=bool(args.reliable),
                                retry_attempts=args.retry_attempts)
    out = sys.stdout
    out.write(f"PORT {learner.port}\n")
    out.flush()

    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()          # returns at EOF: the test closed our stdin
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    deadline = time.monotonic() + args.lifetime
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            m = learner.receive_message(timeout=0.2)
        except rlink.TimeoutError:
            continue
        seq = int(m.data["seq"])
        out.write(f"M {seq} {int(m.redelivered)} {m.actor_id}\n")
        out.flush()
        if args.work:
            time.sleep(args.work)     # simulated training work, not synchronization
        if seq == args.kill_at:
            if args.kill_mode == "self":
                os.kill(os.getpid(), signal.SIGKILL)
            out.write("PAUSED\n")
            out.flush()
            stop.wait(max(0.0, deadline - time.monotonic()))
            break
    stats = learner.stats() if hasattr(learner, "stats") else {}
    learner.close()
    out.write(f"STATS {json.dumps(stats)}\n")
    out.flush()


if __name__ == "__main__":
    main()
