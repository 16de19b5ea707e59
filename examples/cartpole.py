"""Distributed PPO on Gymnasium CartPole-v1 with PyTorch, carried by rlink.

    pip install ".[examples]"        # rlink with gymnasium, torch, matplotlib
    python examples/cartpole.py --actors 4 --plot cartpole_curve.png

Actor processes each step a vector of CartPole environments with the newest
policy they hold and send every rollout to the learner with
``send_trajectory``. The learner batches rollouts with ``receive_many``, runs
PPO on them, and broadcasts the new weights with ``publish_parameters``;
actors pick them up with ``latest_parameters`` / ``wait_parameters``.

Pipelining: each PPO update consumes exactly one rollout from every actor,
and an actor starts its k-th rollout only once it holds parameter version
k - 1 or newer (version 1 is the initial policy, update j publishes version
j + 1). So every actor collects its next rollout while the learner trains on
the previous one, and no rollout is ever more than one version stale. PPO's
importance ratio is taken against the log-probabilities the actor acted with,
so that one version of lag is corrected for, not ignored.

Exit status: 0 when the mean return over the last 100 episodes reaches
--target (or --iterations updates finish), 1 when --max-seconds runs out
first, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import multiprocessing as mp
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import rlink

ENV_ID = "CartPole-v1"
OBS_DIM, N_ACTIONS = 4, 2
EPISODE_WINDOW = 100          # the target is the mean return over this many episodes
PARAMS_TIMEOUT = 60.0         # an actor gives up when the learner is silent this long
SHUTDOWN_TIMEOUT = 10.0       # how long actors get to exit before they are terminated


@dataclass(frozen=True)
class PPO:
    """PPO hyperparameters: small-batch, many-epoch settings that suit
    CartPole (the README has the runs measured with them)."""
    lr: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 10
    minibatch: int = 256
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5


# ---- the model, shared by actors and learner --------------------------------

def mlp(out_dim: int, out_gain: float) -> nn.Sequential:
    layers = [nn.Linear(OBS_DIM, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out_dim)]
    for layer in layers[::2]:
        nn.init.orthogonal_(layer.weight, math.sqrt(2))
        nn.init.zeros_(layer.bias)
    nn.init.orthogonal_(layers[-1].weight, out_gain)
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Separate policy and value networks: on CartPole a shared trunk lets the
    value loss disturb the policy."""

    def __init__(self):
        super().__init__()
        # A small last-layer gain starts the policy near uniform.
        self.policy = mlp(N_ACTIONS, out_gain=0.01)
        self.value = mlp(1, out_gain=1.0)

    def log_probs(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.policy(obs), dim=-1)


def parameters_message(model: nn.Module) -> dict:
    """What the learner publishes: tensors go in as they are (rlink reads
    their memory; publish_parameters copies it once into the frame)."""
    return {name: tensor.detach() for name, tensor in model.state_dict().items()}


def load_parameters(model: nn.Module, data: dict) -> None:
    # torch.from_numpy shares the received buffer; load_state_dict copies it in.
    model.load_state_dict({name: torch.from_numpy(array) for name, array in data.items()})


# ---- actors -----------------------------------------------------------------

class EpisodeReturns:
    """Running returns of a vector of environments; finished ones are collected."""

    def __init__(self, n_envs: int):
        self.running = np.zeros(n_envs, dtype=np.float32)
        self.finished: list[float] = []

    def add(self, rewards: np.ndarray, done: np.ndarray) -> None:
        self.running += rewards
        self.finished.extend(self.running[done].tolist())
        self.running[done] = 0.0

    def take(self) -> np.ndarray:
        out, self.finished = np.array(self.finished, dtype=np.float32), []
        return out


class VectorRollout:
    """Steps a Gymnasium vector env with a policy and records fixed-length rollouts.

    Gymnasium 1.x vector envs reset a finished environment on the step
    *after* the one that ended it (autoreset "next step"): that step ignores
    the action, returns the first observation of the new episode and reward 0.
    Those steps are marked ``valid = False`` and left out of the loss; in
    exchange the observation after a truncated step is the real final one, so
    the learner can bootstrap from it."""

    def __init__(self, n_envs: int, seed: int):
        # CartPole's own numpy-vectorised implementation: no subprocesses.
        self.envs = gym.make_vec(ENV_ID, num_envs=n_envs, vectorization_mode="vector_entry_point")
        self.obs, _ = self.envs.reset(seed=seed)
        self.resetting = np.zeros(n_envs, dtype=bool)   # this step is an autoreset
        self.returns = EpisodeReturns(n_envs)

    def collect(self, policy: ActorCritic, steps: int) -> dict:
        n = self.envs.num_envs
        obs = np.empty((steps + 1, n, OBS_DIM), dtype=np.float32)
        actions = np.empty((steps, n), dtype=np.int64)
        log_probs = np.empty((steps, n), dtype=np.float32)
        rewards = np.empty((steps, n), dtype=np.float32)
        terminated = np.empty((steps, n), dtype=bool)
        truncated = np.empty((steps, n), dtype=bool)
        valid = np.empty((steps, n), dtype=bool)
        for t in range(steps):
            obs[t] = self.obs
            with torch.no_grad():
                logp = policy.log_probs(torch.from_numpy(self.obs))
                action = torch.multinomial(logp.exp(), 1).squeeze(1)
            actions[t] = action.numpy()
            log_probs[t] = logp.gather(1, action.unsqueeze(1)).squeeze(1).numpy()
            valid[t] = ~self.resetting
            self.obs, rewards[t], terminated[t], truncated[t], _ = self.envs.step(actions[t])
            self.resetting = terminated[t] | truncated[t]
            self.returns.add(rewards[t], self.resetting)
        obs[steps] = self.obs
        return {"obs": obs, "actions": actions, "log_probs": log_probs, "rewards": rewards,
                "terminated": terminated, "truncated": truncated, "valid": valid,
                "episode_returns": self.returns.take()}

    def close(self) -> None:
        self.envs.close()


def parameters_for_rollout(actor: rlink.ActorNode, k: int) -> rlink.Parameters:
    """The parameters to collect rollout ``k`` (1-based) with: the newest
    held, once it is at least version k - 1 (see the module docstring)."""
    params = actor.latest_parameters()
    needed = max(1, k - 1)
    if params is None or params.version < needed:
        params = actor.wait_parameters(newer_than=needed - 1, timeout=PARAMS_TIMEOUT)
    return params


def actor_main(index: int, address: str, args: argparse.Namespace) -> None:
    """One actor process: collect rollouts until the learner says stop."""
    torch.set_num_threads(1)
    seed = args.seed * 1000 + index * args.envs_per_actor
    torch.manual_seed(seed)
    policy = ActorCritic()
    rollouts = VectorRollout(args.envs_per_actor, seed)
    try:
        with rlink.ActorNode(address, connect_timeout=PARAMS_TIMEOUT) as actor:
            for k in itertools.count(1):   # until the learner says stop, or is silent too long
                params = parameters_for_rollout(actor, k)
                if params.data.get("stop"):
                    return
                load_parameters(policy, params.data)
                # rlink stamps the trajectory with params.version, the version
                # this actor last took (Message.params_version on the learner).
                actor.send_trajectory(rollouts.collect(policy, args.rollout_steps))
    except rlink.RLinkError as e:   # the learner went away or fell silent
        print(f"actor {index}: stopping: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        rollouts.close()


# ---- learner ----------------------------------------------------------------

class RolloutBatcher:
    """Rollouts received but not yet trained on, per actor. An update takes
    the oldest rollout of every actor, so each actor contributes equally and
    a fast actor's next rollout waits for the next update."""

    def __init__(self, n_actors: int):
        self.n_actors = n_actors
        self.pending: dict[int, collections.deque] = collections.defaultdict(collections.deque)

    def add(self, message: rlink.Message) -> None:
        self.pending[message.actor_id].append(message)

    def ready(self) -> bool:
        return sum(1 for queue in self.pending.values() if queue) >= self.n_actors

    def take(self) -> list[rlink.Message]:
        actors = [actor_id for actor_id, queue in self.pending.items() if queue][:self.n_actors]
        return [self.pending[actor_id].popleft() for actor_id in actors]


def check_actors(procs: list[mp.Process]) -> None:
    for i, proc in enumerate(procs):
        if proc.exitcode is not None:
            raise RuntimeError(f"actor {i} exited early (exit code {proc.exitcode})")


def next_batch(learner: rlink.LearnerNode, batcher: RolloutBatcher, procs: list[mp.Process],
               deadline: float) -> list[rlink.Message] | None:
    """One rollout from every actor, or None if the deadline passes first."""
    while not batcher.ready():
        check_actors(procs)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            for message in learner.receive_many(64, timeout=min(left, 0.5)):
                batcher.add(message)
        except rlink.TimeoutError:
            pass
    return batcher.take()


def stack(batch: list[rlink.Message], key: str) -> torch.Tensor:
    """Concatenate one field of every rollout along the environment axis
    (time stays first); from_numpy shares the received arrays."""
    return torch.cat([torch.from_numpy(m.data[key]) for m in batch], dim=1)


def advantages(values: torch.Tensor, rewards: torch.Tensor, terminated: torch.Tensor,
               done: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates, [T, envs]. ``values`` has T + 1 rows:
    the last is the value of the observation after the rollout. Terminated
    steps do not bootstrap; truncated ones bootstrap from the final
    observation; the sum never runs across an episode boundary."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        next_value = values[t + 1] * ~terminated[t]
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * ~done[t] * running
        adv[t] = running
    return adv


def ppo_update(model: ActorCritic, optimizer: torch.optim.Optimizer, batch: list[rlink.Message],
               cfg: PPO, rng: torch.Generator) -> float:
    """PPO epochs over the batch's valid steps; returns the mean loss."""
    obs = stack(batch, "obs")
    terminated, truncated = stack(batch, "terminated"), stack(batch, "truncated")
    with torch.no_grad():
        values = model.value(obs).squeeze(-1)
        adv = advantages(values, stack(batch, "rewards"), terminated, terminated | truncated,
                         cfg.gamma, cfg.gae_lambda)
    returns = adv + values[:-1]
    valid = stack(batch, "valid")
    samples = (obs[:-1][valid], stack(batch, "actions")[valid], stack(batch, "log_probs")[valid],
               adv[valid], returns[valid])
    losses = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(samples[0]), generator=rng)
        for start in range(0, len(order), cfg.minibatch):
            idx = order[start:start + cfg.minibatch]
            loss = ppo_loss(model, *(s[idx] for s in samples), cfg)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            losses.append(loss.item())
    return float(np.mean(losses))


def ppo_loss(model: ActorCritic, obs, actions, old_log_probs, adv, returns, cfg: PPO) -> torch.Tensor:
    log_probs = model.log_probs(obs)
    ratio = (log_probs.gather(1, actions.unsqueeze(1)).squeeze(1) - old_log_probs).exp()
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
    value_loss = 0.5 * (model.value(obs).squeeze(-1) - returns).pow(2).mean()
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    return policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy


def transport_line(stats: dict) -> str:
    """rlink's side of the live line, summed over the actors. Actors on the
    learner's machine connect over AF_UNIX ("unix"), which has no RTT figure."""
    actors = list(stats["actors"].values())
    transports = "/".join(sorted({a["transport"] for a in actors}))
    rtts = [a["rtt_ms"] for a in actors if a["rtt_ms"] is not None]
    rtt = f", rtt max {max(rtts):.2f} ms" if rtts else ""
    return (f"rlink {len(actors)} actors ({transports}): "
            f"in {sum(a['bytes_in_per_s'] for a in actors) / 1e6:.2f} MB/s "
            f"{sum(a['messages_in_per_s'] for a in actors):.0f} msg/s, "
            f"params out {sum(a['bytes_out_per_s'] for a in actors) / 1e6:.2f} MB/s{rtt}, "
            f"queued {sum(a['send_queue_bytes'] for a in actors):,} B, dropped {stats['dropped']}")


class Progress:
    """Everything the learner measures: the curve, per-actor versions, the live line."""

    def __init__(self, learner: rlink.LearnerNode, target: float):
        self.learner = learner
        self.target = target
        self.start = time.monotonic()
        self.first_update_s: float | None = None   # the time the actors took to start
        self.reached: tuple[float, int] | None = None   # (seconds, env steps) at the target
        self.env_steps = 0
        self.episodes = 0
        self.recent = collections.deque(maxlen=EPISODE_WINDOW)
        self.staleness: list[int] = []
        self.losses: list[float] = []
        self.versions: dict[int, list[int]] = collections.defaultdict(list)
        self.curve: list[tuple[float, int, float]] = []   # (seconds, env steps, mean return)
        self.last_print = (0.0, 0)      # (seconds, env steps) at the last live line
        self.version = 0                # the newest parameters version published
        self.transport: dict = {}       # learner.stats() at the last live line

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def mean_return(self) -> float:
        return float(np.mean(self.recent)) if self.recent else 0.0

    def reached_target(self) -> bool:
        return self.reached is not None

    def record(self, batch: list[rlink.Message], loss: float) -> None:
        """Account for one update, made from parameters ``self.version``."""
        for message in batch:
            self.env_steps += message.data["rewards"].size
            returns = message.data["episode_returns"]
            self.episodes += len(returns)
            self.recent.extend(returns.tolist())
            self.versions[message.actor_id].append(message.params_version)
        self.staleness = [self.version - m.params_version for m in batch]
        self.losses.append(loss)
        now = self.elapsed()
        if self.first_update_s is None:
            self.first_update_s = now
        self.curve.append((now, self.env_steps, self.mean_return()))
        if self.reached is None and len(self.recent) == EPISODE_WINDOW and self.mean_return() >= self.target:
            self.reached = (now, self.env_steps)

    def print_line(self, force: bool = False) -> None:
        """The live line, at most twice a second, after any actor joins or
        departures. Rates are over the time since the previous line. On a
        terminal it is rewritten in place, cut to the terminal's width."""
        now = self.elapsed()
        then, steps_then = self.last_print
        if not force and now - then < 0.5:
            return
        self.last_print = (now, self.env_steps)
        self.transport = self.learner.stats()
        rate = (self.env_steps - steps_then) / max(now - then, 1e-9)
        line = (f"{now:5.1f} s {self.env_steps:>9,} steps {rate:>6,.0f}/s  return {self.mean_return():5.1f}  "
                f"v{self.version} staleness {np.mean(self.staleness) if self.staleness else 0:.1f}  "
                f"loss {self.losses[-1] if self.losses else float('nan'):6.3f} | {transport_line(self.transport)}")
        events = [f"actor {e.actor_id:#x} {e.kind}" + (f": {e.reason}" if e.reason else "")
                  for e in self.learner.events()]
        if sys.stdout.isatty():
            width = shutil.get_terminal_size().columns - 1
            print("".join(f"\r{event}\x1b[K\n" for event in events) + "\r" + line[:width],
                  end="\x1b[K", flush=True)
        else:
            print("".join(f"{event}\n" for event in events) + line, flush=True)

    def end_line(self) -> None:
        """The final figures, on a line of their own."""
        self.print_line(force=True)
        if sys.stdout.isatty():
            print()

    def summary(self) -> dict:
        seconds, steps = self.reached or (None, None)
        return {
            "env_id": ENV_ID, "target": self.target, "reached_target": self.reached is not None,
            "seconds_to_target": seconds, "env_steps_to_target": steps,
            "seconds": round(self.elapsed(), 2), "actor_startup_seconds": self.first_update_s,
            "env_steps": self.env_steps, "updates": len(self.losses), "parameters_version": self.version,
            "episodes": self.episodes, "mean_return": self.mean_return(),
            "losses": self.losses,
            "actors": {f"{actor_id:#x}": {"rollouts": len(v), "versions": v}
                       for actor_id, v in self.versions.items()},
            "transport": self.transport,
        }

    def outcome(self) -> str:
        if self.reached:
            seconds, steps = self.reached
            return (f"mean return reached {self.target:g} after {seconds:.1f} s and {steps:,} env steps "
                    f"({self.first_update_s:.1f} s of it starting the actor processes)")
        return f"mean return {self.mean_return():.1f} after {self.elapsed():.1f} s and {self.env_steps:,} env steps"


def plot_curve(progress: Progress, path: str, title: str) -> None:
    """Mean return against wall-clock time, from launch (actor start-up shaded)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot (pip install matplotlib)", file=sys.stderr)
        return
    seconds, _steps, returns = zip(*progress.curve, strict=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.axvspan(0, progress.first_update_s, color="0.92", label="actor processes starting")
    ax.plot(seconds, returns, color="tab:blue", label=f"mean return, last {EPISODE_WINDOW} episodes")
    ax.axhline(progress.target, color="gray", linestyle="--", linewidth=1, label=f"target {progress.target:g}")
    ax.set_xlim(0, max(seconds) * 1.02)
    ax.set_ylim(0, 520)
    ax.set_xlabel("wall-clock seconds since launch")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def start_actors(args: argparse.Namespace, address: str) -> list[mp.Process]:
    ctx = mp.get_context("spawn")   # actors import torch and rlink themselves
    procs = [ctx.Process(target=actor_main, args=(i, address, args), name=f"actor-{i}", daemon=True)
             for i in range(args.actors)]
    # Ctrl-C reaches every process in the terminal's group. Children started
    # with SIGINT ignored keep ignoring it (Python installs its handler only
    # over the default), so only the learner sees it and stops the actors.
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for proc in procs:
            proc.start()
    finally:
        signal.signal(signal.SIGINT, handler)
    return procs


def stop_actors(learner: rlink.LearnerNode, procs: list[mp.Process]) -> None:
    """Tell every actor to stop (a parameters message, so even an actor that
    is waiting for parameters sees it at once), then join them all."""
    learner.publish_parameters({"stop": True})
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.is_alive():
            print(f"{proc.name} did not stop within {SHUTDOWN_TIMEOUT:g} s; terminating it", file=sys.stderr)
            proc.terminate()
            proc.join()


def train(args: argparse.Namespace, learner: rlink.LearnerNode, procs: list[mp.Process],
          model: ActorCritic, progress: Progress) -> bool:
    """Update until the target or the iteration count (True), or until the
    wall-clock budget runs out (False)."""
    cfg = PPO(lr=args.lr)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
    rng = torch.Generator().manual_seed(args.seed)
    batcher = RolloutBatcher(args.actors)
    deadline = progress.start + args.max_seconds   # the budget includes starting the actors
    progress.version = learner.publish_parameters(parameters_message(model))
    while time.monotonic() < deadline:
        batch = next_batch(learner, batcher, procs, deadline)
        if batch is None:
            break
        loss = ppo_update(model, optimizer, batch, cfg, rng)
        progress.record(batch, loss)
        progress.version = learner.publish_parameters(parameters_message(model))
        progress.print_line()
        if progress.reached_target() or len(progress.losses) == args.iterations:
            return True
    return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--actors", type=int, default=4, help="actor processes")
    p.add_argument("--envs-per-actor", type=int, default=8, help="CartPole copies in each actor's vector env")
    p.add_argument("--rollout-steps", type=int, default=32, help="vector-env steps per rollout")
    p.add_argument("--lr", type=float, default=PPO.lr, help="Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=475.0,
                   help=f"stop when the mean return over the last {EPISODE_WINDOW} episodes reaches this")
    p.add_argument("--max-seconds", type=float, default=300.0, help="wall-clock budget")
    p.add_argument("--iterations", type=int, default=None, help="stop after this many updates")
    p.add_argument("--port", type=int, default=0, help="learner port (0: any free port)")
    p.add_argument("--plot", metavar="PNG", help="write the learning curve here")
    p.add_argument("--summary", metavar="JSON", help="write a machine-readable summary here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)   # the actors need the other core more than a tiny MLP needs two
    model = ActorCritic()
    interrupted = finished = False
    with rlink.LearnerNode(port=args.port) as learner:
        progress = Progress(learner, args.target)
        print(f"learner at {learner.address}; starting {args.actors} actors x {args.envs_per_actor} envs")
        procs = start_actors(args, learner.address)
        try:
            finished = train(args, learner, procs, model, progress)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.end_line()
            stop_actors(learner, procs)
            write_outputs(args, progress)
    print(progress.outcome())
    if interrupted:
        print("interrupted", file=sys.stderr)
        return 130
    if not finished:
        print(f"did not reach {args.target:g} within --max-seconds {args.max_seconds:g}")
        return 1
    return 0


def write_outputs(args: argparse.Namespace, progress: Progress) -> None:
    if args.summary:
        Path(args.summary).write_text(json.dumps(progress.summary(), indent=1))
    if args.plot and progress.curve:
        seconds, steps = progress.reached or (progress.elapsed(), progress.env_steps)
        result = "reached" if progress.reached else "not reached"
        plot_curve(progress, args.plot, f"PPO on {ENV_ID} over rlink: {args.actors} actors x "
                                        f"{args.envs_per_actor} envs, seed {args.seed}\n"
                                        f"{args.target:g} {result} after {seconds:.1f} s, {steps:,} env steps")


if __name__ == "__main__":
    sys.exit(main())
