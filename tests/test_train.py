"""The full loop: a smoke run end to end, resume after kill -9, override validation, the paper profile."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diamond_lite import bench, config, run_folder, train
from diamond_lite.component import read_checkpoint
from diamond_lite.data import Dataset

ROOT = Path(__file__).resolve().parent.parent


def events(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(out)]) == 0
    shown = capsys.readouterr().err  # the evaluations' own bars: whole games take minutes in the course profile
    assert "final evaluation" in shown and "random baseline" in shown
    cfg = config.RunConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert cfg == config.run_config("Breakout", "smoke")
    results = json.loads((out / "results.json").read_text())
    assert results["env_steps"] >= cfg.collection.num_steps_total and len(results["returns"]) == cfg.collection.final_test_episodes
    log = events(out)
    epochs = [e["epoch"] for e in log if e["event"] == "epoch"]
    assert epochs == list(range(1, results["epochs"] + 1))
    for name in ("world_model", "rew_end_model", "actor_critic"):
        first = next(e for e in log if e["event"] == f"train_{name}")
        assert first["steps"] == getattr(cfg, f"training_{name}").steps_first_epoch
    assert {"first_collection", "collect", "evaluate", "final_evaluation", "random_baseline"} <= {e["event"] for e in log}
    assert len(results["random_returns"]) == len(results["returns"])
    timed = ("first_collection", "collect", "evaluate", "final_evaluation", "random_baseline", "epoch")
    assert all(e["seconds"] >= 0 for e in log if e["event"] in timed or e["event"].startswith("train_"))
    from diamond_lite.bench import time_projection

    assert time_projection(log, cfg)["epochs"] == results["epochs"]  # what it projects is the schedule the run ran
    assert results["random_mean"] == pytest.approx(np.mean(results["random_returns"]))
    checkpoints = sorted((out / "checkpoints").glob("epoch_*.pt"))
    assert 0 < len(checkpoints) <= cfg.checkpoints_to_keep
    state = read_checkpoint(checkpoints[-1], run_folder.STATE_FORMAT, "run")
    assert state["epoch"] == results["epochs"]
    # a second start in the same folder is refused; resuming a finished run returns its results
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(out)]) == 2
    before = (out / "metrics.jsonl").read_text()
    assert train.Run.resume(out, progress=False).run() == results
    assert (out / "metrics.jsonl").read_text() == before  # reading a finished run logs nothing


def test_model_free_switch_trains_only_the_actor_critic(tmp_path):
    out = tmp_path / "mf"
    args = ["--game", "Breakout", "--profile", "smoke", "--out", str(out), "--model-free", "--set", "num_final_epochs=0",
            "--set", "collection.num_steps_total=100"]  # fmt: skip
    assert train.main(args) == 0
    names = {e["event"] for e in events(out)}
    assert "train_actor_critic" in names and "train_world_model" not in names and "first_collection" not in names


def test_overrides_are_validated():
    cfg = config.run_config("Breakout", "smoke")
    changed = config.apply_overrides(cfg, ["world_model.lr=3e-4", "seed=7", "collection.epsilon=0", "actor_critic.channels=[4, 4, 4, 4]"])
    assert changed.world_model.lr == 3e-4 and changed.seed == 7 and changed.collection.epsilon == 0.0
    assert changed.actor_critic.channels == [4, 4, 4, 4] and isinstance(changed.collection.epsilon, float)
    with pytest.raises(ValueError, match="unknown configuration key 'world_model.learning_rate'.*accepted keys"):
        config.apply_overrides(cfg, ["world_model.learning_rate=1"])
    with pytest.raises(ValueError, match="did you mean world_model.lr"):
        config.apply_overrides(cfg, ["lr=1"])
    with pytest.raises(ValueError, match="seed takes an int"):
        config.apply_overrides(cfg, ["seed=1.5"])
    with pytest.raises(ValueError, match="model_free takes a bool"):
        config.apply_overrides(cfg, ["model_free=1"])
    with pytest.raises(ValueError, match="channels takes a list of an int"):
        config.apply_overrides(cfg, ["actor_critic.channels=[1.5]"])
    with pytest.raises(ValueError, match="key=value"):
        config.apply_overrides(cfg, ["seed"])
    finite = config.apply_overrides(cfg, ["world_model.sampler.s_tmax=2.5"])
    assert finite.world_model.sampler.s_tmax == 2.5
    assert config.apply_overrides(finite, ["world_model.sampler.s_tmax=inf"]).world_model.sampler.s_tmax == float("inf")
    with pytest.raises(ValueError, match="seed takes an int"):
        config.apply_overrides(cfg, ["seed=inf"])


def test_command_line_errors_are_one_clear_line(tmp_path, capsys):
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(tmp_path / "r"), "--set", "horizon=long"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set horizon='long': horizon takes an int") and "Traceback" not in err
    assert train.main(["--game", "Pacman", "--out", str(tmp_path / "r")]) == 2
    assert "Pacman" in capsys.readouterr().err
    assert train.main(["--game", "Breakout", "--profile", "fast", "--out", str(tmp_path / "r")]) == 2
    assert "accepted profiles" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "nothing"), "--set", "world_model.lr=1e-5"]) == 2
    assert "--set cannot change it" in capsys.readouterr().err


def test_freeway_alone_collects_at_a_low_temperature(tmp_path):
    for profile in ("smoke", "paper"):
        assert config.run_config("Freeway", profile).collection.temperature == config.FREEWAY_TEMPERATURE < 1
        assert config.run_config("Breakout", profile).collection.temperature == 1.0
    run = train.Run(config.run_config("Freeway", "smoke"), tmp_path / "run", progress=False)
    assert run.policy.temperature == config.FREEWAY_TEMPERATURE  # the collecting policy uses it


def test_compile_switch_compiles_the_world_models_training_and_sampling(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(fn) or fn)  # the real one: test_world_model
    cfg = config.run_config("Breakout", "smoke")
    assert cfg.compile is False and config.run_config("Breakout", "paper").compile is False
    assert train.Run(cfg, tmp_path / "plain", progress=False).world_model.speedups.compiled_denoise is None
    cfg = config.apply_overrides(cfg, ["compile=True"])
    run = train.Run(cfg, tmp_path / "compiled", progress=False)
    speedups = run.world_model.speedups
    assert speedups.compiled_denoise is not None and speedups.training_network is not None and len(compiled) == 2


def test_paper_profile_is_the_papers_table():
    table = json.loads((ROOT / "data" / "diamond_hyperparameters.json").read_text())
    cfg = config.run_config("Breakout", "paper")
    flat = dict(config.leaves(cfg.to_dict()))
    for key, expected in table["run_config"].items():
        assert flat[key] == expected, f"{key}: {flat[key]!r} in the paper profile, {expected!r} in the paper"
    # Profiles change sizes and budgets, never the algorithm
    for profile in ("smoke", "course"):
        other = dict(config.leaves(config.run_config("Breakout", profile).to_dict()))
        for key in ("world_model.num_autoregressive_steps", "world_model.denoiser.sigma_offset_noise", "actor_critic.gamma",
                    "actor_critic.lambda_", "actor_critic.weight_entropy_loss", "horizon", "num_denoising_steps"):
            assert other[key] == table["run_config"][key], f"{key} is {other[key]!r} in the {profile} profile"
    # Derived quantities the paper states
    c = cfg.collection
    assert (c.num_steps_total - c.first_epoch_min) // c.steps_per_epoch + cfg.num_final_epochs == table["derived"]["epochs"]


def run_in_background(args, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "diamond_lite.train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def test_kill_and_resume_keeps_everything(tmp_path):
    out = tmp_path / "run"
    args = ["--game", "Breakout", "--profile", "smoke", "--out", str(out), "--set", "collection.num_steps_total=500",
            "--set", "num_final_epochs=2", "--set", "evaluation_every=100"]  # fmt: skip
    proc = run_in_background(args, out)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # kill once an epoch is checkpointed and the next is under way
        if len(list((out / "checkpoints").glob("epoch_*.pt"))) >= 2 and "train_" in (out / "metrics.jsonl").read_text().splitlines()[-1]:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists(), "the run finished before the kill: the test proved nothing"
    steps_before = Dataset(out / "dataset" / "train").num_steps
    assert steps_before > 0
    run = train.Run.resume(out, progress=False)
    resumed_epoch = run.epoch
    assert run.dataset.num_steps == steps_before  # every collected step kept
    results = run.run()
    log = events(out)
    epochs = [e["epoch"] for e in log if e["event"] == "epoch"]
    assert epochs == list(range(1, results["epochs"] + 1)), "each epoch logged once, none missing"
    assert [e["epoch"] for e in log] == sorted(e["epoch"] for e in log)
    assert any(e["event"] == "resume" and e["epoch"] == resumed_epoch for e in log)
    for path in (out / "checkpoints").glob("epoch_*.pt"):
        read_checkpoint(path, run_folder.STATE_FORMAT, "run")
    for episode in Dataset(out / "dataset" / "train"):
        assert len(episode) > 0
    # the steps played between the checkpoint and the kill count toward their epoch: as many real steps as without a kill
    first = [e for e in log if e["event"] == "first_collection"][-1]["env_steps"]
    assert results["env_steps"] == first + run.num_epochs_collect * run.cfg.collection.steps_per_epoch


def test_evaluate_scores_runs_against_the_published_table(tmp_path, capsys):
    from diamond_lite import evaluate

    for seed, returns in ((0, [1.0, 3.0]), (1, [5.0, 7.0])):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"game": "Breakout", "profile": "smoke", "seed": seed, "returns": returns,
                                                      "mean": sum(returns) / 2, "std": 1.0}))  # fmt: skip
    assert evaluate.main([str(tmp_path / "run0"), str(tmp_path / "run1"), "--json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png")]) == 0
    text = capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    g = summary["games"]["Breakout"]
    assert g["runs"] == 2 and g["return_mean"] == 4.0 and abs(g["hns"] - (4.0 - 1.7) / (30.5 - 1.7)) < 1e-9
    low, high = summary["aggregates"]["mean"]["ci95"]
    assert low <= g["hns"] <= high and low < high  # two runs that differ: a real interval
    assert "| Breakout | 2 | 4.0 ± 1.0 |" in text and "DIAMOND 1.459" in text and (tmp_path / "s.png").stat().st_size > 0
    assert evaluate.main([str(tmp_path / "missing")]) == 2
    assert "random" not in text.split("Published")[1]  # no random baseline in these results: no verdict line


def test_evaluate_says_whether_the_agent_beats_its_random_baseline(tmp_path, capsys):
    from diamond_lite import evaluate

    run = tmp_path / "run"
    run.mkdir()
    agent, rand = [900.0, 1000.0, 1100.0, 950.0], [100.0, 200.0, 150.0, 50.0]
    (run / "results.json").write_text(json.dumps({"game": "KungFuMaster", "profile": "course", "seed": 0, "returns": agent,
                                                  "mean": 987.5, "std": 74.0, "random_returns": rand}))  # fmt: skip
    assert evaluate.main([str(run), "--json", str(tmp_path / "s.json")]) == 0
    text = capsys.readouterr().out
    assert "difference +862.5" in text and "a clear margin" in text
    d = json.loads((tmp_path / "s.json").read_text())["versus_random"][0]
    assert d["low"] > 0 and d["share_at_or_below_zero"] == 0.0
    (run / "results.json").write_text(json.dumps({"game": "KungFuMaster", "profile": "course", "seed": 0, "returns": rand,
                                                  "mean": 125.0, "std": 56.0, "random_returns": agent}))  # fmt: skip
    assert evaluate.main([str(run)]) == 0
    assert "clearly worse" in capsys.readouterr().out


def test_learning_curves_show_what_the_log_holds(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from diamond_lite import evaluate

    events = [
        {"event": "first_collection", "epoch": 0, "env_steps": 200, "returns": [1.0, 2.0]},
        {"event": "collect", "epoch": 1, "env_steps": 300, "returns": [3.0]},
        {"event": "train_world_model", "epoch": 1, "loss": 0.5}, {"event": "train_world_model", "epoch": 2, "loss": 0.3},
        {"event": "train_actor_critic", "epoch": 2, "return": 0.1, "entropy": 1.7},
        {"event": "evaluate", "epoch": 2, "mean": 4.0},
        {"event": "final_evaluation", "epoch": 2, "returns": [4.0, 6.0], "mean": 5.0, "std": 1.0},
        {"event": "random_baseline", "epoch": 2, "returns": [1.0, 2.0], "mean": 1.5, "std": 0.5},
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"event": "coll')  # cut by a crash
    (tmp_path / "results.json").write_text(json.dumps({"game": "Breakout", "profile": "smoke", "seed": 0, "returns": [4.0], "mean": 4.0, "std": 0.0}))
    log = evaluate.read_log(tmp_path)
    assert log == events
    axes = evaluate.plot_curves(log).axes
    assert list(axes[0].lines[0].get_ydata()) == [0.5, 0.3] and list(axes[4].lines[0].get_xdata()) == [2]
    assert list(axes[5].lines[0].get_xdata()) == [200, 200, 300] and list(axes[5].lines[0].get_ydata()) == [1.0, 2.0, 3.0]
    drawn = [list(line.get_ydata()) for line in axes[4].lines]
    assert [5.0] in drawn and [1.5, 1.5] in drawn  # the final evaluation and the random policy's mean
    assert len(axes[1].lines[0].get_xdata()) == 0  # no reward/end events: an empty panel, not an error
    assert evaluate.main([str(tmp_path), "--curves", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_time_projection_applies_the_measured_costs_to_a_schedule(tmp_path, capsys):
    from diamond_lite import evaluate

    log = [
        {"event": "first_collection", "epoch": 0, "steps": 200, "seconds": 2.0, "returns": []},
        # epoch 1: a cold start, twice as slow per update; not what later epochs cost
        {"event": "collect", "epoch": 1, "steps": 50, "seconds": 5.0, "returns": []},
        {"event": "train_world_model", "epoch": 1, "steps": 4, "seconds": 4.0},
        {"event": "train_rew_end_model", "epoch": 1, "steps": 4, "seconds": 8.0},
        {"event": "train_actor_critic", "epoch": 1, "steps": 4, "seconds": 16.0},
        {"event": "epoch", "epoch": 1, "seconds": 34.0},
        {"event": "collect", "epoch": 2, "steps": 50, "seconds": 5.0, "returns": [3.0]},
        {"event": "train_world_model", "epoch": 2, "steps": 2, "seconds": 1.0},
        {"event": "train_rew_end_model", "epoch": 2, "steps": 2, "seconds": 2.0},
        {"event": "train_actor_critic", "epoch": 2, "steps": 2, "seconds": 4.0},
        {"event": "evaluate", "epoch": 2, "returns": [1.0, 2.0], "seconds": 6.0},
        {"event": "epoch", "epoch": 2, "seconds": 19.0},  # 1 s beyond its parts: checkpoint and log
        {"event": "final_evaluation", "epoch": 2, "returns": [1.0], "seconds": 3.0},
    ]  # fmt: skip
    smoke = config.run_config("Breakout", "smoke")  # 200 first steps, 300 in all, 50 per epoch: 2 + 1 final epochs
    p = bench.time_projection(log, smoke)
    assert p["seconds_per_update"] == {"world_model": 0.5, "rew_end_model": 1.0, "actor_critic": 2.0}
    assert p["epochs"] == 3 and p["measured_epochs"] == [2] and p["other_s_per_epoch"] == pytest.approx(1.0)
    assert p["first_epoch_training_s"] == pytest.approx(4 * 0.5 + 4 * 1.0 + 4 * 2.0)
    assert p["later_epochs_training_s"] == pytest.approx(2 * (2 * 0.5 + 2 * 1.0 + 2 * 2.0))
    assert p["first_collection_s"] == pytest.approx(2.0) and p["collection_s"] == pytest.approx(2 * 50 * 0.1)
    assert p["seconds_per_test_episode"] == pytest.approx(9.0 / 3)
    assert p["evaluations_s"] == pytest.approx((1 + 2) * 3.0)  # one evaluation of 1 episode, the final one and random's
    assert p["total_s"] == pytest.approx(2 + 14 + 14 + 10 + 9 + 3) and p["epoch_s"] == pytest.approx(7 + 5 + 1)
    paper = bench.time_projection(log, config.run_config("Breakout", "paper"))
    assert paper["epochs"] == 1000 and paper["first_epoch_training_s"] == pytest.approx(10_000 * 0.5 + 10_000 * 1.0 + 5_000 * 2.0)
    with pytest.raises(ValueError, match="no finished epoch"):
        bench.time_projection(log[:5], smoke)

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(smoke.to_dict()))
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))
    assert evaluate.main([str(run), "--time"]) == 0
    shown = capsys.readouterr().out
    assert "3 epochs in all" in shown and json.loads(shown.splitlines()[-1])["total_s"] == pytest.approx(52.0)
    assert evaluate.main([str(run), "--time", "paper"]) == 2  # the paper's batches differ: smoke's costs do not carry over
    assert "other batch sizes" in capsys.readouterr().err


def test_evaluate_scores_an_unfinished_run_from_its_checkpoint(tmp_path):
    from diamond_lite import evaluate

    out = tmp_path / "run"
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(out), "--max-epochs", "0"]) == 0
    result = evaluate.run_result(out, episodes=1, progress=False)
    assert result["unfinished"] and len(result["returns"]) == 1 and "random_returns" not in result


def test_a_fresh_evaluation_plays_new_episodes_of_the_agent_and_of_random(tmp_path, capsys):
    from diamond_lite import evaluate

    out = tmp_path / "run"
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(out), "--max-epochs", "0"]) == 0
    assert evaluate.main([str(out), "--fresh", "2", "--json", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())["runs"][0]
    assert len(result["returns"]) == len(result["random_returns"]) == 2
    assert "Breakout seed 0: agent" in capsys.readouterr().out
    assert evaluate.main([str(out), "--fresh", "0"]) == 2
    assert "--fresh takes a number of episodes >= 1, not 0" in capsys.readouterr().err


def test_the_blind_twin_draws_the_agents_own_action_frequencies(tmp_path, capsys):
    from diamond_lite import actor_critic, evaluate

    out = tmp_path / "run"
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(out), "--max-epochs", "0"]) == 0
    assert evaluate.main([str(out), "--fresh", "2", "--blind", "--json", str(tmp_path / "s.json")]) == 0
    written = json.loads((tmp_path / "s.json").read_text())
    result = written["runs"][0]
    assert len(result["blind_returns"]) == 2 and written["versus_blind"][0]["difference"] == pytest.approx(
        np.mean(result["returns"]) - np.mean(result["blind_returns"]))
    assert sum(result["action_frequencies"].values()) == pytest.approx(1, abs=1e-3)
    assert "against its blind twin" in capsys.readouterr().out
    assert evaluate.main([str(out), "--blind"]) == 2
    assert "--blind plays new episodes" in capsys.readouterr().err
    # the twin: actions in the given proportions, whatever the frame
    twin = actor_critic.BlindPolicy([0.7, 0.1, 0.2, 0.0], seed=0)
    counts = np.bincount([twin(None) for _ in range(5000)], minlength=4) / 5000
    assert counts == pytest.approx([0.7, 0.1, 0.2, 0.0], abs=0.02)


def test_an_unwritable_run_folder_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write in the run folder" in err and "Traceback" not in err


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = config.apply_overrides(config.run_config("Breakout", "smoke"), ["num_final_epochs=3"])
    run = train.Run(cfg, tmp_path / "run", progress=False)
    run.run(max_epochs=1)
    good = {k: v.clone() for k, v in run.world_model.state_dict().items()}
    run.world_model.loss = lambda batch, generator=None: (torch.tensor(float("nan"), requires_grad=True), {})
    with pytest.raises(FloatingPointError, match="WorldModel loss is nan at update"):
        run.run()
    for k, v in run.world_model.state_dict().items():  # the skipped updates changed nothing in memory either
        torch.testing.assert_close(v, good[k])
    resumed = train.Run.resume(tmp_path / "run", progress=False)
    assert resumed.epoch == 1
    for k, v in resumed.world_model.state_dict().items():
        torch.testing.assert_close(v, good[k])


def test_tensorboard_gets_every_number_when_it_is_installed(tmp_path, monkeypatch):
    import types

    scalars = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is not a dependency)
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    cfg = config.apply_overrides(config.run_config("Breakout", "smoke"), ["num_final_epochs=2"])
    run = train.Run(cfg, tmp_path / "run", progress=False)
    run.run(max_epochs=1)
    tags = {tag for tag, _, _ in scalars}
    assert {"train_world_model/loss", "train_rew_end_model/loss", "train_actor_critic/entropy", "epoch/seconds",
            "first_collection/mean_return"} <= tags  # fmt: skip
    assert all(step in (0, 1) for _, _, step in scalars)


def test_the_epoch_bar_forgets_the_long_first_epoch():
    import io

    from tqdm.auto import tqdm

    bar = tqdm(total=90, file=io.StringIO(), mininterval=0)
    bar.start_t -= 3000.0  # as if epoch 1, with its first-epoch budgets, had taken 50 minutes
    bar.update(1)
    assert bar.format_dict["elapsed"] > 2999
    train._restart_rate(bar)
    assert bar.n == 1 and bar.total == 90
    assert bar.format_dict["elapsed"] < 60
    bar.start_t -= 120.0  # epoch 2 takes two minutes
    bar.last_print_t -= 120.0
    bar.update(1)
    d = bar.format_dict
    remaining = (d["total"] - d["n"]) / d["rate"]
    assert 88 * 110 < remaining < 88 * 130  # 88 more epochs of two minutes, not of the first epoch's 50
    bar.close()
