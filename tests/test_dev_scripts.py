"""The research scripts of dev/ still run against the package: each answers --help, and each that can take one tiny
real step does, on a smoke-size run folder made once for the module (dev/README.md says what each one measures)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEPT = ("diagnose_imagination", "dream_vs_real", "real_short_horizon", "train_in_imagination", "world_model_budget")


def run(*args: str, timeout: float = 300) -> str:
    """``python ARGS`` from the repository root on one thread; its stdout, or a failure that shows both streams."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def script(name: str) -> str:
    return str(ROOT / "dev" / f"{name}.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One epoch of a smoke-profile Breakout run: a config, a checkpoint and a few hundred random steps."""
    out = tmp_path_factory.mktemp("dev_scripts") / "run"
    run("-m", "diamond_lite.train", "--game", "Breakout", "--profile", "smoke", "--out", str(out), "--max-epochs", "1")
    assert list(out.glob("checkpoints/epoch_*.pt")), "the smoke run wrote no checkpoint"
    return out


@pytest.mark.parametrize("name", KEPT)
def test_help(name):
    assert "usage:" in run(script(name), "--help")


def test_diagnose_imagination(run_dir):
    out = run(script("diagnose_imagination"), str(run_dir), "--envs", "2", "--updates", "1", "--prefer", "FIRE",
              "--teacher-batches", "1")  # fmt: skip
    result = json.loads(out[out.index("{") :])
    for key in ("imagined_rate_random", "imagined_rate_agent", "imagined_rate_prefer_FIRE", "teacher_forced_reward_rate",
                "world_model_step_s", "rew_end_step_s"):  # fmt: skip
        assert key in result, key
    assert result["epoch"] == 1 and result["real_steps"] > 0


def test_world_model_budget_then_the_saved_world_model(run_dir, tmp_path):
    """Two world-model updates that go on with the run's optimiser, measured by the judge and saved; then the saved
    world model in the k-ahead check, and a fresh actor-critic's update in its imagination and one real episode."""
    saved = tmp_path / "wm"
    out = run(script("world_model_budget"), str(run_dir), "--updates", "2", "--every", "2", "--save", str(saved))
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["extra_updates"] for r in rows] == [0, 2]
    assert rows[1]["world_model_updates"] == rows[0]["world_model_updates"] + 2
    assert rows[1]["loss"] > 0 and "events" in rows[1]
    newest = saved / f"world_model_{rows[1]['world_model_updates']:05d}.pt"
    assert newest.exists()

    out = run(script("diagnose_imagination"), str(run_dir), "--ahead", "--world-model", str(newest))
    result = json.loads(out[out.index("{") :])
    assert result["world_model_updates"] == rows[1]["world_model_updates"] and "events" in result

    out = run(script("train_in_imagination"), str(run_dir), "--world-model", str(newest), "--updates", "1", "--every", "1",
              "--episodes", "1")  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert rows[0]["actor_critic_updates"] == 1 and "imagined_reward_per_step" in rows[0]
    assert len(rows[-1]["test_returns"]) == len(rows[-1]["random_returns"]) == 1


def test_world_model_budget_held_out_loss(run_dir):
    """``--held-out``'s fixed losses, in process: a whole measurement of them takes 18 s even at the smoke size."""
    from diamond_lite.run_folder import load_run

    spec = importlib.util.spec_from_file_location("world_model_budget", script("world_model_budget"))
    budget = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(budget)
    loaded = load_run(run_dir)
    wm = loaded.world_model
    batches = budget.fixed_batches(loaded.dataset, wm.segment_length, 2, 4, seed=1)
    assert batches[0]["obs"].shape[1] == wm.segment_length
    first, again = budget.fixed_loss(wm, batches, seed=3), budget.fixed_loss(wm, batches, seed=3)
    assert first == again and first > 0  # the same noise at every call


def test_dream_vs_real(run_dir):
    out = run(script("dream_vs_real"), str(run_dir), "--starts", "2", "--every", "3", "--horizon", "2", "--prefer", "FIRE")
    assert "prefer_FIRE" in out and "rank correlation with the real game" in out


def test_real_short_horizon():
    out = run(script("real_short_horizon"), "Breakout", "--starts", "2", "--every", "3", "--horizon", "2", "--prefer", "FIRE")
    result = json.loads(out.splitlines()[-1])
    assert result["starts"] == 2 and set(result) >= {"random", "prefer_FIRE"}
