"""An actor process for the fault tests (tests/test_reliable_netns.py).

Not a test module (pytest collects ``test_*.py`` only): the tests run it as a
subprocess, usually under ``ip netns exec``. It sends ``--n`` numbered
trajectories (``{"seq": i, "pad": <--size bytes>}``) at ``--rate`` per second
to ``--address`` and talks to the test over stdin/stdout::

    READY                      connected
    AT <i>                     about to send seq i (one of --pause-at); waits for a line on stdin
    DONE <json stats>          all sent and (reliable mode) all acknowledged, or --drain-timeout passed
    ERROR <message>            a call raised; exit status 1

So the test injects each fault at a fixed message count, not at a wall-clock
time. The sleeps here pace the sender: they are the offered load.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import rlink


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--pause-at", default="", help="comma-separated seqs before which to wait for the test")
    p.add_argument("--retry-attempts", type=int, default=20)
    p.add_argument("--retry-backoff", type=float, default=0.05)
    p.add_argument("--retry-backoff-max", type=float, default=0.5)
    p.add_argument("--send-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=60.0)
    args = p.parse_args()
    pause_at = {int(x) for x in args.pause_at.split(",") if x}

    actor = rlink.ActorNode(args.address, connect_timeout=30.0, retry_attempts=args.retry_attempts,
                            retry_backoff=args.retry_backoff, retry_backoff_max=args.retry_backoff_max)
    try:
        say("READY")
        pad = np.zeros(args.size, np.uint8)
        t0 = time.monotonic()
        for i in range(args.n):
            if i in pause_at:
                say(f"AT {i}")
                if not sys.stdin.readline():
                    say("ERROR stdin closed")
                    return 1
                t0 = time.monotonic() - i / args.rate     # keep the offered rate from here on
            wait = t0 + i / args.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            actor.send_trajectory({"seq": i, "pad": pad}, timeout=args.send_timeout)
        try:   # until everything is acknowledged; the test reads what is left from the stats
            actor.wait_acked(args.drain_timeout)
        except rlink.RLinkError:
            pass
        say("DONE " + json.dumps(actor.stats()))
    except Exception as e:  # noqa: BLE001 - reported to the test
        say(f"ERROR {type(e).__name__}: {e}")
        return 1
    finally:
        actor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
