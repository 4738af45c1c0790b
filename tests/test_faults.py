"""Reliability: a smoke run killed with SIGKILL at many moments resumes with nothing lost.

Each kill comes from ``diamond_lite.faults.crash_point`` (``DIAMOND_CRASH_AT=point:n``): the run's own process sends
itself SIGKILL at the ``n``-th pass through that point, so every moment is hit for sure, not by luck of timing.
``test_train.py::test_kill_and_resume_keeps_everything`` adds a kill from outside at a time-chosen moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diamond_lite import config, faults, run_folder, train
from diamond_lite.component import read_checkpoint
from diamond_lite.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--game", "Breakout", "--profile", "smoke", "--set", "collection.num_steps_total=300", "--set", "num_final_epochs=1",
         "--set", "evaluation_every=2"]  # fmt: skip


def train_cli(args, crash_at=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(faults.ENV_VAR, None)
    if crash_at:
        env[faults.ENV_VAR] = crash_at
    return subprocess.run([sys.executable, "-m", "diamond_lite.train", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def events(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def episodes(out):
    return {i: e for i, e in zip(Dataset(out / "dataset" / "train").ids, Dataset(out / "dataset" / "train"))}


def without_times(log):
    """The log with wall-clock fields dropped: what the same seed must reproduce exactly."""
    return [{k: v for k, v in e.items() if k not in ("time", "seconds")} for e in log if e["event"] != "resume"]


@pytest.mark.parametrize(
    "crash_at",
    ["collect_step:120", "collect_step:260", "train_world_model:6", "train_rew_end_model:5", "train_actor_critic:6",
     "checkpoint_write:3", "episode_write:3"],  # fmt: skip
)
def test_killed_at_any_moment_resumes_with_nothing_lost(tmp_path, crash_at):
    out = tmp_path / "run"
    killed = train_cli([*SMALL, "--out", str(out)], crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL, f"the crash point {crash_at} was not reached: {killed.stderr[-500:]}"
    assert not (out / "results.json").exists()
    before = episodes(out)
    checkpoints_before = sorted(p.name for p in (out / "checkpoints").glob("epoch_*.pt"))
    assert checkpoints_before, "the first checkpoint is written before any work"

    results = train.Run.resume(out, progress=False).run()
    assert results == json.loads((out / "results.json").read_text())

    after = episodes(out)
    for episode_id, episode in before.items():  # every step played before the kill is still there, unchanged
        assert episode_id in after
        for field in ("obs", "act", "rew", "end", "trunc"):
            np.testing.assert_array_equal(getattr(after[episode_id], field)[: len(episode)], getattr(episode, field))
    assert not list((out / "dataset" / "train").glob(".*.tmp")) and not list((out / "checkpoints").glob(".*.tmp"))
    for path in (out / "checkpoints").glob("epoch_*.pt"):
        read_checkpoint(path, run_folder.STATE_FORMAT, "training run")
    log = events(out)
    assert [e["epoch"] for e in log if e["event"] == "epoch"] == list(range(1, results["epochs"] + 1)), "each epoch once, no gap"
    assert [e["epoch"] for e in log] == sorted(e["epoch"] for e in log), "the log never goes back in time"
    assert sum(e["event"] == "resume" for e in log) == 1
    assert results["env_steps"] >= 300


def test_same_seed_same_metrics_and_a_resume_changes_nothing(tmp_path):
    """Two uninterrupted runs with one seed log the same numbers. A run killed during its last epoch (no real
    collection left, so nothing depends on the emulator's unsaved state) resumes to exactly the same result."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert train_cli([*SMALL, "--out", str(a)]).returncode == 0
    assert train_cli([*SMALL, "--out", str(b)]).returncode == 0
    log_a = without_times(events(a))
    assert log_a == without_times(events(b))
    assert json.loads((a / "results.json").read_text()) == json.loads((b / "results.json").read_text())

    cfg = config.RunConfig.from_dict(json.loads((a / "config.json").read_text()))
    num_epochs = sum(e["event"] == "epoch" for e in log_a)
    first, per_epoch = cfg.training_actor_critic.steps_first_epoch, cfg.training_actor_critic.steps_per_epoch
    in_last_epoch = first + per_epoch * (num_epochs - 2) + 1  # the last epoch's first actor-critic update
    killed = train_cli([*SMALL, "--out", str(c)], crash_at=f"train_actor_critic:{in_last_epoch}")
    assert killed.returncode == -signal.SIGKILL
    assert train_cli(["--resume", str(c)]).returncode == 0
    assert json.loads((c / "results.json").read_text()) == json.loads((a / "results.json").read_text())
    # The same events and numbers; the losses of the epoch run again after the reload agree to float rounding, not
    # bit for bit (the cause is not pinned down: a reloaded optimiser state sums in another order, most likely).
    log_c = without_times(events(c))
    assert [(e["event"], e["epoch"]) for e in log_c] == [(e["event"], e["epoch"]) for e in log_a]
    for got, expected in zip(log_c, log_a):
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-4) if isinstance(value, float) else value), (key, got, expected)


def test_a_long_epoch_resumes_from_inside_itself(tmp_path):
    """With checkpoints inside an epoch (``checkpoint_every_minutes``; 0 writes one after every update), a run killed
    in the middle of its first epoch's training goes on from the update it had reached: that epoch's records match
    an uninterrupted run's, no update is lost or made twice, and the partial file goes once the epoch is whole."""
    often = [*SMALL, "--set", "checkpoint_every_minutes=0.0"]
    a, c = tmp_path / "a", tmp_path / "c"
    assert train_cli([*often, "--out", str(a)]).returncode == 0
    killed = train_cli([*often, "--out", str(c)], crash_at="train_rew_end_model:3")  # the 3rd of 4 first-epoch updates
    assert killed.returncode == -signal.SIGKILL
    partial = read_checkpoint(c / "checkpoints" / "epoch_00001.partial.pt", run_folder.STATE_FORMAT, "training run")
    assert partial["epoch"] == 0 and partial["in_epoch"]["epoch"] == 1
    assert partial["in_epoch"]["current"] == "rew_end_model" and len(partial["in_epoch"]["losses"]) == 2
    assert partial["num_updates"] == {"world_model": 4, "rew_end_model": 2, "actor_critic": 0}
    assert partial["env_steps"] < Dataset(c / "dataset" / "train").num_steps  # epoch 1's collection: not played again

    assert train_cli(["--resume", str(c)]).returncode == 0
    assert not list((c / "checkpoints").glob("*.partial.pt"))
    log_a, log_c = events(a), events(c)
    resumes = [e for e in log_c if e["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["epoch"] == 1 and resumes[0]["from_checkpoint"] == "epoch_00001.partial.pt"
    assert [e["epoch"] for e in log_c] == sorted(e["epoch"] for e in log_c), "the log never goes back in time"
    first_a = [e for e in without_times(log_a) if e["epoch"] <= 1]
    first_c = [e for e in without_times(log_c) if e["epoch"] <= 1]
    assert [e["event"] for e in first_c] == [e["event"] for e in first_a], "each record of epoch 1 once"
    for got, expected in zip(first_c, first_a):  # float rounding after a reload, as in the test above
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-4) if isinstance(value, float) else value), (key, got, expected)
    # epoch 2 onwards may differ (the game restarts on resume); the number of updates may not
    newest = {d: read_checkpoint(sorted((d / "checkpoints").glob("epoch_*.pt"))[-1], run_folder.STATE_FORMAT, "run") for d in (a, c)}
    assert newest[a]["epoch"] == newest[c]["epoch"] and newest[a]["num_updates"] == newest[c]["num_updates"]


def test_an_unknown_crash_point_is_refused(monkeypatch):
    monkeypatch.setenv(faults.ENV_VAR, "nowhere:1")
    with pytest.raises(ValueError, match="unknown crash point 'nowhere'.*collect_step"):
        faults.crash_point("collect_step")


def _small_run(tmp_path, epochs=2):
    cfg = config.apply_overrides(config.run_config("Breakout", "smoke"), ["num_final_epochs=3"])
    run = train.Run(cfg, tmp_path / "run", progress=False)
    run.run(max_epochs=epochs)
    return run


def test_a_full_disk_stops_with_a_clear_error_and_loses_nothing(tmp_path, monkeypatch):
    import errno

    import torch

    run = _small_run(tmp_path, epochs=1)
    steps = run.dataset.num_steps

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(ValueError, match=r"could not write the checkpoint epoch_00002.pt .*No space left on device.*"
                                         r"epoch_00001.pt, stands.*--resume"):  # fmt: skip
        run.run(max_epochs=1)
    monkeypatch.undo()
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))
    resumed = train.Run.resume(tmp_path / "run", progress=False)
    assert resumed.epoch == 1 and resumed.dataset.num_steps >= steps
    # a disk too small for the run is refused before anything is collected
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10 * 2**20})())
    with pytest.raises(ValueError, match=r"not enough space for this run .* 10 MB free, about [\d,]+ MB needed"):
        train.Run(config.run_config("Breakout", "course"), tmp_path / "big", progress=False)
    assert not list((tmp_path / "big").glob("dataset/train/*.npz"))


def test_resume_skips_a_truncated_or_foreign_newest_checkpoint(tmp_path):
    run = _small_run(tmp_path)
    folder = run.dir
    newest = sorted(folder.glob("checkpoints/epoch_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a disk that filled mid-write outside our writer
    with pytest.warns(UserWarning, match=f"skipping {newest.name}: .*not a readable checkpoint"):
        resumed = train.Run.resume(folder, progress=False)
    assert resumed.epoch == 1
    # a checkpoint of another kind (a world model saved alone) under a run checkpoint's name is refused too
    run.world_model.save(newest)
    with pytest.warns(UserWarning, match="not a checkpoint of a training run"):
        assert train.Run.resume(folder, progress=False).epoch == 1
    for path in folder.glob("checkpoints/epoch_*.pt"):
        path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no checkpoint of .* loads"), pytest.warns(UserWarning):
        train.Run.resume(folder, progress=False)


def test_resume_refuses_a_folder_of_another_game_or_configuration(tmp_path, capsys):
    run = _small_run(tmp_path, epochs=1)
    config = json.loads((run.dir / "config.json").read_text())
    (run.dir / "config.json").write_text(json.dumps(dict(config, game="Pong")))
    assert train.main(["--resume", str(run.dir)]) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "game is 'Breakout' in the checkpoint" in err and "Traceback" not in err
