"""The Gymnasium/PyTorch examples run end to end, briefly.

Each example runs in a fresh interpreter (it starts its own actor
processes), bounded by a subprocess timeout. Nothing here asserts a reward:
only that the data went where it should. Skipped without torch or gymnasium
(``pip install '.[examples]'``).
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("gymnasium")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 180   # seconds; each run needs far less, most of it starting interpreters


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = EXAMPLES / name
    if not script.is_file():
        pytest.skip(f"{script} is not next to the tests (installed-package run)")
    try:
        proc = subprocess.run([sys.executable, str(script), *args], cwd=cwd, capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{name} did not finish within {TIMEOUT} s; output so far:\n{e.stdout}\n{e.stderr}")
    assert proc.returncode == 0, f"{name} failed:\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


def test_cartpole_smoke(tmp_path):
    iterations = 3
    summary_path, plot_path = tmp_path / "summary.json", tmp_path / "curve.png"
    plot = ["--plot", str(plot_path)] if importlib.util.find_spec("matplotlib") else []
    run_example("cartpole.py", "--actors", "2", "--iterations", str(iterations), "--max-seconds", "120",
                "--summary", str(summary_path), *plot, cwd=tmp_path)
    summary = json.loads(summary_path.read_text())

    assert summary["updates"] == iterations
    assert len(summary["losses"]) == iterations
    assert all(math.isfinite(loss) for loss in summary["losses"])

    # Every update takes one rollout from each actor, so both actors sent
    # one per update, and each took new parameters along the way: its
    # rollouts carry (Message.params_version) non-decreasing versions, from
    # the initial version 1 to a newer one.
    actors = summary["actors"]
    assert len(actors) == 2
    for actor_id, actor in actors.items():
        versions = actor["versions"]
        assert actor["rollouts"] == iterations, actor_id
        assert versions == sorted(versions), (actor_id, versions)
        assert versions[0] == 1 and versions[-1] > 1, (actor_id, versions)
    assert summary["parameters_version"] == iterations + 1
    assert summary["env_steps"] > 0
    if plot:
        assert plot_path.stat().st_size > 0


def test_central_inference_smoke(tmp_path):
    actors, steps = 2, 20
    proc = run_example("central_inference.py", "--actors", str(actors), "--steps", str(steps), cwd=tmp_path)
    served = re.search(r"served (\d+) requests from (\d+) actors", proc.stdout)
    assert served, proc.stdout
    assert (int(served.group(1)), int(served.group(2))) == (actors * steps, actors)
    for index in range(actors):
        assert f"actor {index}: {steps} steps" in proc.stdout
