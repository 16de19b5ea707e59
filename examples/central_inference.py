"""Central inference over rlink: actors step environments, the learner picks actions.

    python examples/central_inference.py --actors 4 --steps 200

Actors hold no model. Each step an actor sends its observation with
``actor.request({"obs": ...})`` and blocks for the reply; the learner takes
every request already waiting (``receive_requests``), runs the PyTorch policy
once on the whole batch and answers each with ``request.reply``. This is the
shape to use when the model is too big to copy to every actor, or lives on
the learner's accelerator.

The policy here is untrained (returns near 20 are expected): the example is
about the request/reply pattern, see cartpole.py for training.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import sys
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import rlink

REQUEST_TIMEOUT = 30.0   # an actor gives up when the learner does not answer this long
MAX_BATCH = 64
EXIT_TIMEOUT = 30.0      # how long finished actors get to exit


def actor_main(index: int, address: str, steps: int, seed: int) -> None:
    """Step one CartPole for ``steps`` steps, asking the learner for every action."""
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=seed + index)
    returns, running = [], 0.0
    try:
        with rlink.ActorNode(address, connect_timeout=REQUEST_TIMEOUT) as actor:
            for _ in range(steps):
                reply = actor.request({"obs": obs}, timeout=REQUEST_TIMEOUT)
                obs, reward, terminated, truncated, _ = env.step(int(reply["action"]))
                running += float(reward)
                if terminated or truncated:
                    returns.append(running)
                    running = 0.0
                    obs, _ = env.reset()
    except rlink.RLinkError as e:   # the learner stopped early (Ctrl-C) or fell silent
        sys.exit(f"actor {index}: stopping: {e}")
    finally:
        env.close()
    mean = f"mean return {np.mean(returns):.1f}" if returns else "no episode finished"
    print(f"actor {index}: {steps} steps, {len(returns)} episodes, {mean}", flush=True)


def waiting_requests(learner: rlink.LearnerNode, timeout: float) -> list[rlink.Request]:
    """The next request (waiting up to ``timeout``) plus every one already queued."""
    return learner.receive_requests(MAX_BATCH, timeout=timeout)


def serve(learner: rlink.LearnerNode, policy: nn.Module, total: int,
          procs: list[mp.Process]) -> tuple[list[int], float]:
    """Answer ``total`` requests; returns the size of every batch and the
    seconds from the first request to the last reply."""
    sizes: list[int] = []
    start = None
    while sum(sizes) < total:
        try:
            batch = waiting_requests(learner, timeout=1.0)
        except rlink.TimeoutError:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("an actor failed; see its error above") from None
            continue
        start = start or time.monotonic()
        obs = torch.from_numpy(np.stack([request.data["obs"] for request in batch]))
        with torch.no_grad():
            actions = torch.distributions.Categorical(logits=policy(obs)).sample().numpy()
        for request, action in zip(batch, actions, strict=True):
            request.reply({"action": action})
        sizes.append(len(batch))
    return sizes, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--actors", type=int, default=4)
    p.add_argument("--steps", type=int, default=200, help="environment steps per actor")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    policy = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))
    with rlink.LearnerNode(port=0) as learner:
        procs = start_actors(args, learner.address)
        served = False
        try:
            sizes, seconds = serve(learner, policy, args.actors * args.steps, procs)
            served = True
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            # After a normal run every actor has had all its replies and is
            # exiting. After Ctrl-C or an error, closing the learner makes an
            # actor waiting for a reply fail at once; one still starting up
            # would retry connecting until its connect_timeout, so actors get
            # only a short grace before they are terminated.
            learner.close()
            join_actors(procs, grace=EXIT_TIMEOUT if served else 3.0)
    print(f"served {sum(sizes)} requests from {args.actors} actors in {len(sizes)} batches "
          f"(mean batch {np.mean(sizes):.1f}, largest {max(sizes)}), {sum(sizes) / seconds:,.0f} requests/s")
    return 0 if all(proc.exitcode == 0 for proc in procs) else 1


def start_actors(args: argparse.Namespace, address: str) -> list[mp.Process]:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=actor_main, args=(i, address, args.steps, args.seed), daemon=True)
             for i in range(args.actors)]
    # Started with SIGINT ignored, which the children keep: Ctrl-C reaches
    # only the learner, whose closing then stops the actors.
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for proc in procs:
            proc.start()
    finally:
        signal.signal(signal.SIGINT, handler)
    return procs


def join_actors(procs: list[mp.Process], grace: float) -> None:
    """Join every actor; any still running after ``grace`` seconds is terminated."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.terminate()
            proc.join()


if __name__ == "__main__":
    sys.exit(main())
