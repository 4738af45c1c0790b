"""The neural game engine (notebook 09): recording, training from a fixed dataset and resuming it, bad data refused,
the upsampler's conditioning and loss, churn for the upsampler only, frames on the 8-bit grid, the player adapter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diamond_lite import engine, sampler as sampler_module
from diamond_lite.data import Dataset, Episode
from diamond_lite.engine import (EnginePlayer, EngineRun, OneStageEngine, TwoStageEngine, check_dataset,
                                 engine_config, main)  # fmt: skip
from diamond_lite.upsampler import Upsampler, UpsamplerNet, downsample, upsample_bicubic, upsampler_config
from diamond_lite.world_model import WorldModel

ROOT = Path(__file__).resolve().parent.parent


def on_grid(x: torch.Tensor) -> bool:
    levels = (x + 1) * 127.5
    return bool(((levels - levels.round()).abs() < 1e-3).all() and x.min() >= -1 and x.max() <= 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """200 recorded steps of the scripted Breakout player (and 120 held out)."""
    root = tmp_path_factory.mktemp("engine_data")
    train = engine.record("Breakout", root / "train", 200, seed=0, progress=False)
    test = engine.record("Breakout", root / "test", 120, seed=1, progress=False)
    return train, test


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cfg = engine_config("smoke", 4)
    return cfg, {"dynamics": WorldModel(cfg.dynamics, autocast=False, game="Breakout").eval(),
                 "upsampler": Upsampler(cfg.upsampler, autocast=False, game="Breakout").eval(),
                 "one_stage": WorldModel(cfg.one_stage, autocast=False, game="Breakout").eval()}  # fmt: skip


# -- the command line, end to end -----------------------------------------------------------------------------------


def cli(*args, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "diamond_lite.engine", *map(str, args)], capture_output=True, text=True, env=env)


def train_events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"train_' in line]


def test_record_train_kill_and_resume_on_the_command_line(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    recorded = cli("record", "--game", "Breakout", "--out", data, "--steps", 150)
    assert recorded.returncode == 0, recorded.stderr
    assert json.loads(recorded.stdout)["steps"] == 150 and len(list(data.glob("*.npz"))) >= 1
    train = ("train", "--data", data, "--out", run, "--profile", "smoke", "--one-stage")
    # killed (SIGKILL) while writing its third checkpoint: the second one stands
    killed = cli(*train, env={"DIAMOND_CRASH_AT": "checkpoint_write:3"})
    assert killed.returncode == -9
    before = train_events(run)
    assert [e["epoch"] for e in before] == [1, 2]  # a line logged after the last checkpoint
    resumed = cli(*train)  # the same command again continues the run
    assert resumed.returncode == 0, resumed.stderr
    assert "continuing the engine run" in resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["finished"] and [summary[s]["updates"] for s in engine.STAGES] == [4, 4, 8]
    events = train_events(run)
    assert [e["epoch"] for e in events] == list(range(1, len(events) + 1))  # nothing doubled, nothing missing
    assert [e["updates"] for e in events if e["event"] == "train_dynamics"] == [2, 4]
    assert sum(1 for line in (run / "metrics.jsonl").read_text().splitlines() if '"resume"' in line) == 1
    assert (run / "curves.png").exists()
    again = cli("train", "--resume", run)  # a finished run: nothing more to do
    assert again.returncode == 0 and json.loads(again.stdout)["finished"]
    other = cli("train", "--data", data, "--out", run, "--profile", "smoke")  # without --one-stage: other settings
    assert other.returncode == 2 and "train_one_stage is True in the checkpoint, False expected" in other.stderr


def test_resumed_training_continues_where_it_stopped(tmp_path, data):
    cfg = engine_config("smoke", 4)
    whole = EngineRun(cfg, data[0].directory, tmp_path / "whole", progress=False)
    assert whole.run()
    split = EngineRun(cfg, data[0].directory, tmp_path / "split", progress=False)
    assert not split.run(max_updates=3)
    assert split.models["dynamics"].num_updates == 3 and split.models["upsampler"].num_updates == 0
    split = EngineRun.resume(tmp_path / "split")
    split.progress = False
    assert split.models["dynamics"].num_updates == 3 and split.run()
    for stage in cfg.stages:  # the same updates on the same batches and noise as the run never stopped
        for a, b in zip(whole.models[stage].parameters(), split.models[stage].parameters()):
            torch.testing.assert_close(a, b)
    events = train_events(tmp_path / "split")  # stopped after 3 updates: a short line there, then the rest once
    assert [(e["event"], e["updates"]) for e in events] == [("train_dynamics", 2), ("train_dynamics", 3), ("train_dynamics", 4),
                                                            ("train_upsampler", 2), ("train_upsampler", 4)]
    assert [e["epoch"] for e in events] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("per_line", [False, True])  # True: the GPU's way, a log line's updates timed together
def test_a_pause_mid_update_does_not_count_as_training_time(tmp_path, data, per_line):
    run = EngineRun(engine_config("smoke", 4), data[0].directory, tmp_path / "run", progress=False)
    run.time_per_line = per_line
    model, calls = run.models["dynamics"], []
    clock = {"now": 0.0, "pause": 0.0}

    def fake_clock():  # every reading 0.1 s after the one before, plus a pause when one is due
        clock["now"] += 0.1 + clock["pause"]
        clock["pause"] = 0.0
        return clock["now"]

    def paused_once(batch, step=model.train_step):
        calls.append(1)
        if len(calls) == 3:
            clock["pause"] = 600.0  # as if the process were stopped, or the laptop closed, in the middle of an update
        return step(batch)

    run.clock, model.train_step = fake_clock, paused_once
    run.run(max_updates=4)
    # one update per reading: 4 x 0.1 s; per log line of 2 updates (smoke): one reading each, 2 x 0.1 s; the pause,
    # in the third update (the second line), counted as the mean either way
    assert model.num_updates == 4 and run.seconds["dynamics"] == pytest.approx(0.2 if per_line else 0.4)


# -- bad input --------------------------------------------------------------------------------------------------------


def write_episode(folder: Path, length: int, size: int = 64, act: int = 0) -> None:
    frames = np.zeros((length, size, size, 3), np.uint8)
    Dataset(folder).add(Episode(frames, np.full(length, act), np.zeros(length), np.zeros(length, bool), np.zeros(length, bool)))


@pytest.mark.parametrize("case", ["missing", "empty", "short", "size", "action"])
def test_bad_data_is_refused_in_one_line(tmp_path, capsys, case):
    folder = tmp_path / "data"
    if case != "missing":
        folder.mkdir()
    if case == "short":
        write_episode(folder, 3)
    elif case == "size":
        write_episode(folder, 20, size=48)
    elif case == "action":
        write_episode(folder, 20, act=7)
    expected = {"missing": "the folder does not exist", "empty": "holds no episode", "short": "the longest of 3 steps",
                "size": "frames of 48x48x3", "action": "4 actions"}[case]  # fmt: skip
    with pytest.raises(ValueError, match=expected) as error:
        check_dataset(folder, 64, 4, engine_config("smoke", 4).segment_length)
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {error.value}" and "\n" not in err  # the same message, one line, no traceback
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start


def test_a_bad_option_is_one_line_and_status_2():
    result = cli("train", "--data", "/nonexistent/folder", "--out", "/tmp/never", "--profile", "fast")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: unknown profile 'fast'; accepted profiles: smoke, course, paper"


def test_the_size_must_suit_the_upsampling_factor():
    with pytest.raises(ValueError, match="not a multiple of the upsampling factor 2"):
        engine_config("course", 4, size=63)


# -- the upsampler ----------------------------------------------------------------------------------------------------


def test_upsampler_conditioning_shapes():
    cfg = upsampler_config("smoke", factor=2)
    net = UpsamplerNet(cfg)
    assert net.conv_in.in_channels == (1 + 1 + 1) * 3  # previous frame, low-resolution frame, noisy frame
    up = Upsampler(cfg, autocast=False)
    low, prev = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 1, 3, 32, 32) * 2 - 1
    out = up.upsample(low, prev, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and on_grid(out)
    assert up.segment_length == 3 and "act" not in UpsamplerNet.forward.__code__.co_varnames  # no actions
    with pytest.raises(ValueError, match="the 1 previous frames at 32x32"):
        up.upsample(low, prev[:, :, :, :16, :16])


def test_downsampling_is_area_averaging_on_the_8_bit_grid():
    import cv2

    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    low = downsample(x, 2)
    area = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames])
    assert low.shape == (4, 3, 32, 32) and on_grid(low)
    assert ((low + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(int).__sub__(area.astype(int)).__abs__().max() <= 1
    assert upsample_bicubic(low, 2).shape == (4, 3, 64, 64)


def test_the_upsamplers_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = upsampler_config("smoke", factor=2)
    cfg.lr, cfg.lr_warmup_steps = 3e-3, 1
    up = Upsampler(cfg, autocast=False)
    frames = torch.zeros(4, 3, 3, 32, 32) - 1
    frames[:, :, 0, 8:12, 10:22] = 0.6  # a bar to draw, on a black screen
    batch = {"obs": frames, "mask": torch.ones(4, 3, dtype=torch.bool)}
    losses = [up.train_step(batch, generator=torch.Generator().manual_seed(1))[0].item() for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


# -- the engines ------------------------------------------------------------------------------------------------------


def test_churn_is_the_upsamplers_only(models, data, monkeypatch):
    cfg, m = models
    assert cfg.dynamics.sampler.s_churn == 0 and cfg.one_stage.sampler.s_churn == 0
    assert (cfg.upsampler.sampler.s_churn, cfg.upsampler.sampler.s_tmin, cfg.upsampler.sampler.s_tmax,
            cfg.upsampler.sampler.s_noise, cfg.upsampler.sampler.sigma_min) == (10.0, 1.0, 5.0, 0.9, 1.0)  # fmt: skip
    calls = []

    def spy(denoise, x, sigmas, **kwargs):
        calls.append((x.shape[-1], kwargs["s_churn"]))
        return sampler_module.sample(denoise, x, sigmas, **kwargs)

    monkeypatch.setattr("diamond_lite.world_model.sample", spy)
    monkeypatch.setattr("diamond_lite.upsampler.sample", spy)
    obs, act = engine.held_out_segments(data[1], 5, 2)
    two = TwoStageEngine(m["dynamics"], m["upsampler"])
    two.reset(obs[:, :4], act[:, :3])
    two.step(act[:, 3])
    assert calls == [(32, 0.0), (64, 10.0)]  # dynamics at 32x32 without churn, then the upsampler with it


def test_engines_draw_frames_of_the_right_size_on_the_8_bit_grid(models, data):
    _, m = models
    obs, act = engine.held_out_segments(data[1], 6, 3)
    for eng, size in ((TwoStageEngine(m["dynamics"], m["upsampler"]), 64), (OneStageEngine(m["one_stage"]), 64)):
        eng.reset(obs[:, :4], act[:, :3])
        frames = [eng.step(act[:, 3 + t]) for t in range(2)]
        assert all(f.shape == (3, 3, size, size) and on_grid(f) for f in frames)
        assert set(eng.seconds) == ({"dynamics", "upsampler"} if eng.name == "two-stage" else {"dynamics"})
    assert eng.context.shape == (3, 4, 3, 64, 64)
    two = TwoStageEngine(m["dynamics"], m["upsampler"])
    two.reset(obs[:, :4], act[:, :3])
    two.step(act[:, 3])
    assert two.low.shape == (3, 3, 32, 32) and on_grid(two.low) and two.low_context.shape == (3, 4, 3, 32, 32)
    with pytest.raises(ValueError, match="starts from 4 frames and the 3 actions"):
        two.reset(obs[:, :3], act[:, :3])


def test_the_measurements(models, data):
    _, m = models
    obs, act = engine.held_out_segments(data[1], 7, 2)
    scores = engine.dream_scores(TwoStageEngine(m["dynamics"], m["upsampler"]), obs, act)
    assert len(scores["mse"]) == len(scores["mse_low"]) == len(scores["sharpness"]) == 3 and scores["starts"] == 2
    ups = engine.upsampling_scores(m["upsampler"], obs[:, :3], {"churn": m["upsampler"].cfg.sampler})
    assert set(ups) == {"bicubic", "churn", "frames"} and ups["frames"] == 4
    speed = engine.play_speed(OneStageEngine(m["one_stage"]), obs, act, frames=2)
    assert speed["fps"] > 0 and speed["seconds_per_frame"] == pytest.approx(speed["dynamics_seconds"])
    blurred = torch.nn.functional.avg_pool2d(obs[:, 0], 3, 1, 1)
    assert (engine.high_frequency_energy(blurred) < engine.high_frequency_energy(obs[:, 0])).all()


class CopyLast:
    """An engine that repeats the last frame of its context: what it forgets is known exactly."""

    n, device, generator, name = 4, torch.device("cpu"), None, "copy-last"

    def reset(self, obs, past_act):
        self.last = obs[:, -1]

    def step(self, act):
        return self.last


def test_the_memory_probe_covers_the_context_only(data):
    obs, act = engine.held_out_segments(data[1], 7, 3)
    rows, cols = engine.breakout_wall(64)
    wall = obs[:, 4:, :, rows, cols]
    assert ((wall + 1) / 2).mean() > 0.2  # the region holds bricks: covering it is a change
    scores = engine.memory_scores(CopyLast(), obs, act, rows, cols, batch_size=2)  # two batches: 2 starts, then 1
    real = obs[:, 4:]
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[rows, cols] = True
    as_recorded = (obs[:, 3:4] - real).pow(2).mean(2)  # copying the last real frame
    assert scores["recorded"]["mse_covered"] == pytest.approx(as_recorded[..., inside].mean((0, 2)).tolist(), abs=1e-6)
    assert scores["recorded"]["mse_rest"] == pytest.approx(as_recorded[..., ~inside].mean((0, 2)).tolist(), abs=1e-6)
    # covered: the region stays black for good, the rest of the frame is untouched
    assert scores["covered"]["brightness"] == pytest.approx([0.0] * 3)
    assert scores["covered"]["mse_covered"] == pytest.approx((wall + 1).pow(2).mean((0, 2, 3, 4)).tolist(), abs=1e-6)
    assert scores["covered"]["mse_rest"] == pytest.approx(scores["recorded"]["mse_rest"], abs=1e-6)
    assert scores["real_brightness"] == pytest.approx(((wall + 1) / 2).mean((0, 2, 3, 4)).tolist(), abs=1e-6)
    assert torch.equal(obs, engine.held_out_segments(data[1], 7, 3)[0])  # the real frames were not painted over


def test_ship_measures_shipped_models_again_and_keeps_their_training_record(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "CHECKPOINTS", tmp_path / "checkpoints")
    measured, evaluate = [], engine.evaluate

    def measure_once(models, test, profile, **kwargs):  # the whole measurement once; the second time, what it was given
        measured.append({stage: model.num_updates for stage, model in models.items()})
        return evaluate(models, test, profile, **kwargs) if len(measured) == 1 else {"measured": True}

    monkeypatch.setattr(engine, "evaluate", measure_once)
    first = engine.ship("Breakout", "smoke", work_dir=tmp_path / "work", device="cpu", progress=False)
    assert all(engine.checkpoint_path("Breakout", "smoke", stage).exists() for stage in engine.STAGES)
    assert first["stages"]["dynamics"]["updates"] == 4 and set(first["memory"]) == {"two-stage", "one-stage"}
    assert first["data"]["train"]["directory"] == str(tmp_path / "work" / "Breakout" / "train_64")
    import shutil

    shutil.rmtree(tmp_path / "work" / "Breakout-smoke")  # the run folder is gone; the checkpoints stay
    again = engine.ship("Breakout", "smoke", work_dir=tmp_path / "work", device="cpu", progress=False)
    assert again["stages"] == first["stages"] and again["trained"] == first["trained"] and again["measured"]
    assert measured[1] == measured[0] == {"dynamics": 4, "upsampler": 4, "one_stage": 8}  # the shipped models, measured
    assert not (tmp_path / "work" / "Breakout-smoke").exists()  # nothing was trained
    on_disk = json.loads(engine.report_path("Breakout", "smoke").read_text())
    assert on_disk["stages"] == first["stages"] and on_disk["measured"]


def test_load_engine_trains_a_stand_in_without_shipped_checkpoints(data, capsys):
    cfg = engine_config("smoke", 4)  # no smoke checkpoints are shipped
    loaded = engine.load_engine(cfg, data[0], updates=2, stages=("dynamics", "upsampler"))
    assert [m.num_updates for m in loaded.values()] == [2, 2] and "stands in" in capsys.readouterr().out


# -- the player -------------------------------------------------------------------------------------------------------


def test_the_player_adapter_steps_every_engine(models, data, tmp_path):
    _, m = models
    engines = engine.engines_of(m)
    player = EnginePlayer(engines, data[0], "Breakout", horizon=3, record_dir=tmp_path)
    assert player.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"] and player.frame.shape == (64, 64, 3)
    assert player.press(2) and player.t == 1 and player.frame.dtype == np.uint8
    assert "FPS (dynamics" in player.status() and "upsampler" in player.status()
    player.set_controller("policy")
    assert not player.press(1) and player.tick() and player.t == 2
    player.step_once()
    assert player.done and player.saved[-1].parent.name == "two-stage-policy"  # the horizon ends it; recorded
    player.change_denoising_steps(-5)
    player.change_upsampling_steps(+2)
    assert player.num_denoising_steps == 1 and player.upsampling_steps == 5
    player.set_pipeline("one-stage")
    player.act(0)
    assert player.t == 1 and "one-stage engine" in player.status() and "upsampler" not in player.status()
    player.set_environment("real test")
    player.act(1)
    assert player.t == 1 and "real test" in player.status()
    with pytest.raises(ValueError, match="accepted: two-stage, one-stage"):
        player.set_pipeline("three-stage")
    widget = engine.engine_widget(player)
    widget.refresh()
    assert len(Dataset(player.saved[-1].parent)) == 1


def test_the_ball_tracker_plays_breakout_only():
    tracker = engine.BallTracker(["NOOP", "FIRE", "RIGHT", "LEFT"], epsilon=0.0)
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[57:59, 10:18] = 200  # the paddle on the left
    frame[40:42, 50] = 200  # the ball on the right
    assert tracker(frame) == 2  # RIGHT
    frame[40:42, 50] = 0
    assert tracker(frame) in (0, 1)  # no ball: serve (or wait)
    with pytest.raises(ValueError, match="plays Breakout"):
        engine.BallTracker(["NOOP", "UP", "DOWN"])
