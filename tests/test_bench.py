"""The benchmark runs and reports what it promises (at a tiny size: its correctness, never its speed)."""

import json

import pytest
import torch

from diamond_lite import bench


def test_bench_world_model_reports_both_paths_and_their_ratio():
    results = bench.bench_world_model("smoke", batch_size=2, device=torch.device("cpu"), repeats=1, size=16, num_actions=4)
    opt, plain = results["optimised"], results["plain_fp32"]
    assert plain["autocast_bf16"] is False and plain["channels_last"] is False
    for entry in (opt, plain):
        assert entry["train_step_s"] > 0 and entry["sample_1_step_fps"] > 0 and entry["sample_3_step_fps"] > 0
    assert results["speedup_train_step"] == plain["train_step_s"] / opt["train_step_s"]
    assert results["train_step_gflop"] > 0 and 0 < results["train_step_fraction_of_peak"]
    assert results["peak_matmul_gflops"]["float32"] > 0 and plain["train_step_fraction_of_fp32_peak"] > 0
    convs = results["convolutions"]  # nearly all of a U-Net's work is in its convolutions, counted apart here
    assert 0.5 * results["train_step_gflop"] < convs["gflop"] <= results["train_step_gflop"] * (1 + 1e-6)
    assert convs["seconds"] > 0 and convs["over_floor"] == convs["seconds"] / results["train_step_floor_s"]


def test_convolution_seconds_replays_every_convolution_of_a_step_forward_and_backward():
    from diamond_lite.world_model import WorldModel, world_model_config

    model = WorldModel(world_model_config("smoke", 4), autocast=False, channels_last=False)
    data = bench.fake_batch(2, model, 16, torch.device("cpu"))
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.denoiser.modules())
    calls = []
    original = torch.nn.Conv2d.forward
    torch.nn.Conv2d.forward = lambda self, x: calls.append(x.requires_grad) or original(self, x)
    try:
        seconds, flops = bench.convolution_seconds(model, data, torch.device("cpu"), repeats=1)
    finally:
        torch.nn.Conv2d.forward = original
    # one capturing loss, then the FLOP count, a warm-up and one timed round: each replays every convolution of the
    # loss's two terms (DIAMOND's autoregressive step); only conv_in, on the frames, needs no input gradient
    per_loss = 2 * convs
    assert len(calls) == 4 * per_loss
    assert calls[per_loss] is False and all(calls[per_loss + 1 : per_loss + convs])
    assert calls[per_loss + convs] is False and all(calls[per_loss + convs + 1 : 2 * per_loss])
    total = bench.train_step_flops(model, data)  # beside the convolutions: attention and the conditioning's linears
    assert 0.9 * total < flops < total and seconds > 0
    assert all(p.grad is None for p in model.parameters())  # the replay leaves no gradient behind


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--profile", "smoke", "--batch-size", "2", "--size", "16", "--repeats", "1", "--no-compile", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["world_model"]["parameters"] > 0 and "cpu" in written["device"] and written["peak_memory_mb"] > 0
    assert {"rew_end_model", "actor_critic"} <= set(written)
    assert "optimised_compiled" not in written["world_model"]
    assert json.loads(capsys.readouterr().out) == written


def test_bench_refuses_to_overwrite_a_recorded_result(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text("{}")
    with pytest.raises(SystemExit):
        bench.main(["--profile", "smoke", "--batch-size", "2", "--size", "16", "--repeats", "1", "--no-compile", "--json", str(out)])
    assert out.read_text() == "{}" and "--overwrite" in capsys.readouterr().err


def test_bench_rew_end_and_actor_critic_report_both_paths():
    cpu = torch.device("cpu")
    rew_end = bench.bench_rew_end("smoke", batch_size=2, device=cpu, repeats=1, size=16, num_actions=4, horizon=3)
    agent = bench.bench_actor_critic("smoke", batch_size=2, device=cpu, repeats=1, size=16, num_actions=4, horizon=3, num_denoising_steps=1)
    for results in (rew_end, agent):
        assert results["optimised"]["train_step_s"] > 0 and results["plain_fp32"]["train_step_s"] > 0
        assert results["speedup_train_step"] == results["plain_fp32"]["train_step_s"] / results["optimised"]["train_step_s"]
    assert agent["optimised"]["imagined_frames_per_s"] == 2 * 3 / agent["optimised"]["train_step_s"]


def test_bench_measures_compiled_sampling_beside_the_eager_paths(monkeypatch):
    # torch.compile itself is tested in test_world_model; here an identity stands in, to keep this test fast
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    cpu = torch.device("cpu")
    wm = bench.bench_world_model("smoke", batch_size=2, device=cpu, repeats=1, size=16, num_actions=4, compile=True)
    compiled = wm["optimised_compiled"]
    assert compiled["compiled"] is True and compiled["compile_s"] > 0 and compiled["sample_3_step_fps"] > 0
    assert compiled["train_compiled"] is True and compiled["train_compile_s"] > 0
    assert wm["speedup_train_step_compiled"] == wm["plain_fp32"]["train_step_s"] / compiled["train_step_s"]
    assert wm["speedup_sample_3_step_compiled"] == compiled["sample_3_step_fps"] / wm["plain_fp32"]["sample_3_step_fps"]
    agent = bench.bench_actor_critic("smoke", batch_size=2, device=cpu, repeats=1, size=16, num_actions=4, horizon=3,
                                     num_denoising_steps=1, compile=True)  # fmt: skip
    assert agent["speedup_train_step_compiled"] == agent["plain_fp32"]["train_step_s"] / agent["optimised_compiled"]["train_step_s"]


def test_variants_are_timed_in_turns_so_that_a_drifting_machine_treats_them_alike():
    calls = []
    medians = bench.interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                        torch.device("cpu"), repeats=2, warmup=1)  # fmt: skip
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert set(medians) == {"a", "b"} and all(seconds >= 0 for seconds in medians.values())
