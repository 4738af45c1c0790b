"""Devices: `--device auto` and clear refusals; a run restored onto its own device whatever device wrote the checkpoint;
the GPU's random stream saved and restored. No GPU is needed: the restore path is checked with torch's `meta` device
and a stand-in for the CUDA random-state functions."""

import torch
import pytest

from diamond_lite import component, config, run_folder, train


def test_auto_picks_what_the_machine_has_and_a_missing_device_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert component.resolve_device("auto") == torch.device("cpu")
    assert component.resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda: this torch was built without CUDA, or sees no GPU; devices here: auto, cpu"):
        component.resolve_device("cuda")
    with pytest.raises(ValueError, match="--device mps: this machine has no Apple GPU"):
        component.resolve_device("mps")
    with pytest.raises(ValueError, match="unknown device 'tpu'; accepted: auto, cpu, cuda, mps"):
        component.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert component.resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ValueError, match="this machine has 1 GPU"):
        component.resolve_device("cuda:1")


def test_the_commands_refuse_a_missing_device_in_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert train.main(["--game", "Breakout", "--profile", "smoke", "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda:") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any file was written
    from diamond_lite import bench

    assert bench.main(["--profile", "smoke", "--device", "cuda"]) == 2


def test_precision_picks_the_autocast_and_a_bad_one_is_refused():
    assert component.autocast_for("bf16") is True and component.autocast_for("fp32") is False
    assert component.autocast_for("auto") is None
    assert component.fast_defaults(torch.device("cuda")) == (False, True)  # a GPU trains in fp32 (TF32), as DIAMOND
    cfg = config.run_config("Breakout", "smoke")
    assert cfg.precision == "auto" and config.run_config("Breakout", "paper").precision == "auto"
    assert config.apply_overrides(cfg, ["precision=bf16"]).precision == "bf16"
    with pytest.raises(ValueError, match="precision 'fp16' is not one of auto, fp32, bf16"):
        config.apply_overrides(cfg, ["precision=fp16"])


def test_a_run_with_precision_fp32_builds_its_models_without_autocast(tmp_path):
    cfg = config.apply_overrides(config.run_config("Breakout", "smoke"), ["precision=fp32"])
    run = train.Run(cfg, tmp_path / "run", progress=False)
    assert not any(m.use_autocast for m in (run.world_model, run.rew_end_model, run.actor_critic))
    cfg = config.apply_overrides(config.run_config("Breakout", "smoke"), ["precision=bf16"])
    run = train.Run(cfg, tmp_path / "bf16", progress=False)
    assert all(m.use_autocast for m in (run.world_model, run.rew_end_model, run.actor_critic))


def test_every_tensor_of_a_checkpoint_goes_to_the_runs_device():
    """What a partial checkpoint holds of the epoch under way (losses, confusion counts, lists of metrics), read onto the
    CPU, must join the run's device, or the reward/end step would add a CPU tensor to a GPU one."""
    in_epoch = {"epoch": 3, "losses": torch.ones(4), "means": {"world_model": 0.5},
                "extra": {"confusion_rew": torch.ones(3, 3, dtype=torch.long), "return": [torch.tensor(1.0), torch.tensor(2.0)]},
                "current": "rew_end_model", "current_seconds": 12.0}  # fmt: skip
    moved = run_folder.to_device(in_epoch, torch.device("meta"))
    assert moved["losses"].device.type == "meta" and moved["extra"]["confusion_rew"].device.type == "meta"
    assert all(t.device.type == "meta" for t in moved["extra"]["return"]) and isinstance(moved["extra"]["return"], list)
    assert moved["means"] == {"world_model": 0.5} and moved["current"] == "rew_end_model"
    assert run_folder.to_device(None, torch.device("meta")) is None


def test_a_resumed_runs_partial_epoch_lives_on_the_runs_device(tmp_path, monkeypatch):
    cfg = config.apply_overrides(config.run_config("Breakout", "smoke"), ["checkpoint_every_minutes=0.0"])
    run = train.Run(cfg, tmp_path / "run", progress=False)
    run.first_collection()
    run.epoch = 1
    run.train_models()  # writes partial checkpoints after every update
    seen = []
    monkeypatch.setattr(train, "to_device", lambda value, device: seen.append(device) or value)
    resumed = train.Run.resume(tmp_path / "run", progress=False)
    assert resumed._in_epoch is not None and seen == [resumed.device]


def test_the_gpus_random_stream_is_saved_and_restored(tmp_path, monkeypatch):
    cfg = config.run_config("Breakout", "smoke")
    run = train.Run(cfg, tmp_path / "run", progress=False)
    streams = (run.samplers, run.policy, run.collector.env.action_space)
    assert "cuda" not in run_folder.rng_state(*streams, torch.device("cpu"))
    saved, restored = torch.tensor([1, 2, 3], dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    state = run_folder.rng_state(*streams, torch.device("cuda:0"))
    assert torch.equal(state["cuda"], saved)
    run_folder.set_rng_state(state, *streams, torch.device("cuda:0"))
    assert len(restored) == 1 and torch.equal(restored[0][0], saved) and restored[0][1] == torch.device("cuda:0")
