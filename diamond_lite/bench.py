"""Speed of DIAMOND's three models, optimised and plain, measured in one run: ``python -m diamond_lite.bench``.

    python -m diamond_lite.bench --profile paper --batch-size 32 --json docs/bench_cpu.json

For the profile's models at the given batch it measures a denoiser train step (forward, backward, AdamW),
next-frame sampling at 1 and 3 Euler steps, a reward/termination-model train step (segments of horizon + 4) and
an actor-critic train step including its imagination (horizon 15 with the world model and the reward/end model,
3 denoising steps), each twice: with the speed-ups the models pick for the device (bf16 autocast and channels-last;
for sampling, a bf16 copy of the U-Net) and with every one of them off (plain fp32 eager). The ratio of the two is
the speed-up, measured on the same machine in the same run. It also counts the floating-point operations of a
denoiser train step (``torch.utils.flop_counter``) and compares the achieved rate with the machine's measured peak:
a large matrix product in the same dtype, and with the step's convolutions alone, re-run forward and backward on
inputs of the shapes they saw (``convolution_seconds``): the bound this machine's convolution kernels set, which for
narrow convolutions lies well above the matrix product's floor. Peak memory: the GPU's allocator peak, or the
process's peak resident size on a CPU.

With ``torch.compile`` available, the world model's train step and sampling and the actor-critic step are measured
a third time with the denoiser compiled (``speedups.compile_training``, ``speedups.compile_sampling``);
``--no-compile`` skips that.

Timings are medians over ``--repeats`` rounds after a warm-up. In each round every variant of a measurement runs
once, in turn (optimised, plain, compiled), so that a machine whose speed drifts over minutes (shared 2-core
machines do, by up to 2x) slows all of them alike and their ratio stays fair. Tests run this at a tiny size to check
that it works, never how fast.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from . import memory
from .component import prepare_device
from .profiles import PROFILES
from .rew_end import HORIZON
from .speedups import compile_sampling, compile_training
from .train import MODELS
from .world_model import WorldModel, world_model_config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict, device: torch.device, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each callable in ``fns``, timed in rounds that run each of them once, in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def median_seconds(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    return interleaved_medians({"fn": fn}, device, repeats, warmup)["fn"]


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` matrix product in ``dtype``: what this machine can do at best."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds


def fake_batch(batch_size: int, model: WorldModel, size: int, device: torch.device) -> dict:
    """Random world-model segments of ``model.segment_length`` frames (6 in DIAMOND: two loss terms)."""
    length = model.segment_length
    return {
        "obs": torch.rand(batch_size, length, 3, size, size, device=device) * 2 - 1,
        "act": torch.randint(0, model.cfg.num_actions, (batch_size, length), device=device),
        "mask": torch.ones(batch_size, length, dtype=torch.bool, device=device),
    }


def train_step_flops(model: WorldModel, batch: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.loss(batch)[0].backward()
    model.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def convolution_seconds(model: WorldModel, batch: dict, device: torch.device, repeats: int) -> tuple[float, int]:
    """Seconds and FLOPs of a denoiser train step's convolutions alone: the machine's own bound for the step.

    A 2048x2048 matrix product is the best case; a 3x3 convolution of 64 channels is a product with only 576
    inputs and 64 outputs per pixel, and its backward pass (two more products, one of them a reduction over every
    pixel of the batch) runs slower still. This re-runs each of the step's ``Conv2d`` calls, forward and backward,
    on a fresh input of the shape, dtype and layout it saw in one loss, in the model's precision: the time the
    step would take if everything between the convolutions (norms, SiLUs, additions, the optimiser) cost nothing.
    """
    from torch.utils.flop_counter import FlopCounterMode

    seen: list = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((m, args[0].detach(), args[0].requires_grad)))
             for m in model.denoiser.modules() if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    try:
        model.loss(batch)
    finally:
        for hook in hooks:
            hook.remove()
    # An input that needed a gradient (all but the frames') makes the backward pass compute one for it too.
    calls = [(m, torch.randn_like(x).requires_grad_(needs_grad)) for m, x, needs_grad in seen]
    seen.clear()  # the recorded inputs are no longer needed

    def run() -> None:
        for m, x in calls:
            with model._autocast():
                y = m(x)
            y.backward(torch.ones_like(y))
        model.optimizer.zero_grad(set_to_none=True)
        for _, x in calls:
            x.grad = None

    with FlopCounterMode(display=False) as counter:
        run()
    return median_seconds(run, device, repeats), counter.get_total_flops()


OPTIONS = {"optimised": {}, "plain_fp32": {"autocast": False, "channels_last": False}}


def variants(device: torch.device) -> dict:
    """What each measurement compares: the models as a run builds them on ``device`` ("optimised": bf16 autocast on a
    CPU with native bf16, fp32 with TF32 products on a GPU; channels-last) and plain fp32; on a GPU also bf16 autocast,
    the ``precision=bf16`` switch."""
    return dict(OPTIONS, **({"bf16_autocast": {"autocast": True}} if device.type == "cuda" else {}))


def bench_world_model(profile: str, batch_size: int, device: torch.device, repeats: int, size: int = 64, num_actions: int = 18,
                      compile: bool = False) -> dict:  # fmt: skip
    """Denoiser train step and sampling, optimised and plain; with ``compile`` also both through ``torch.compile``
    (``optimised_compiled``: a third model, with the seconds its first step and first sampling call spent compiling)."""
    models = {}
    for label, options in variants(device).items():
        torch.manual_seed(0)
        models[label] = WorldModel(world_model_config(profile, num_actions), device, **options)
    torch.manual_seed(0)
    batch = fake_batch(batch_size, models["optimised"], size, device)
    n = models["optimised"].n
    obs, act = batch["obs"][:, :n], batch["act"][:, :n]
    results: dict = {label: {"autocast_bf16": m.use_autocast, "channels_last": m.channels_last} for label, m in models.items()}
    trainers = dict(models)
    if compile:
        torch.manual_seed(0)
        trainers["optimised_compiled"] = compiled = WorldModel(world_model_config(profile, num_actions), device)
        started = time.perf_counter()
        compile_training(compiled)
        compiled.train_step(batch)  # the first step compiles forward and backward
        _sync(device)
        results["optimised_compiled"] = {"train_compile_s": time.perf_counter() - started,
                                         "train_compiled": compiled.speedups.training_network is not None}  # fmt: skip
    train = interleaved_medians({label: (lambda m=m: m.train_step(batch)) for label, m in trainers.items()}, device, repeats)
    for label, seconds in train.items():
        results[label]["train_step_s"] = seconds
    if device.type == "cuda":
        results["train_peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    samplers = dict(trainers)
    if compile:
        started = time.perf_counter()
        compile_sampling(compiled)
        compiled.predict_next(obs, act, num_steps=1)  # the first call compiles
        _sync(device)
        results["optimised_compiled"].update(compile_s=time.perf_counter() - started, compiled=compiled.speedups.sampling_is_compiled)
    for steps in (1, 3):
        fns = {label: (lambda m=m: m.predict_next(obs, act, num_steps=steps)) for label, m in samplers.items()}
        for label, seconds in interleaved_medians(fns, device, repeats).items():
            results[label][f"sample_{steps}_step_fps"] = batch_size / seconds
    for label, m in models.items():
        results[label]["sampling_bf16_copy"] = m.speedups.sampling_denoiser() is not m.denoiser
    opt, plain = results["optimised"], results["plain_fp32"]
    results["parameters"] = models["optimised"].num_parameters()
    results["train_step_gflop"] = train_step_flops(models["optimised"], batch) / 1e9
    results["speedup_train_step"] = plain["train_step_s"] / opt["train_step_s"]
    results["speedup_sample_3_step"] = opt["sample_3_step_fps"] / plain["sample_3_step_fps"]
    if compile:
        results["speedup_sample_3_step_compiled"] = results["optimised_compiled"]["sample_3_step_fps"] / plain["sample_3_step_fps"]
        results["speedup_train_step_compiled"] = plain["train_step_s"] / results["optimised_compiled"]["train_step_s"]
    dtype = torch.bfloat16 if opt["autocast_bf16"] else torch.float32
    peak = matmul_peak(device, dtype)
    results["peak_matmul_gflops"] = {str(dtype).replace("torch.", ""): peak / 1e9}
    # plain fp32's own peak: a plain step already near it leaves the optimised path only the ratio of the two peaks
    fp32_peak = peak if dtype == torch.float32 else matmul_peak(device, torch.float32)
    results["peak_matmul_gflops"]["float32"] = fp32_peak / 1e9
    plain["train_step_fraction_of_fp32_peak"] = results["train_step_gflop"] * 1e9 / fp32_peak / plain["train_step_s"]
    floor = results["train_step_gflop"] * 1e9 / peak
    results["train_step_floor_s"] = floor
    results["train_step_fraction_of_peak"] = floor / opt["train_step_s"]
    if compile:
        results["train_step_compiled_fraction_of_peak"] = floor / results["optimised_compiled"]["train_step_s"]
    seconds, flops = convolution_seconds(models["optimised"], batch, device, repeats)
    results["convolutions"] = {"seconds": seconds, "gflop": flops / 1e9, "gflops_per_s": flops / seconds / 1e9,
                               "fraction_of_peak": flops / seconds / peak, "share_of_train_step": seconds / opt["train_step_s"],
                               "over_floor": seconds / floor}  # fmt: skip
    return results


def bench_rew_end(profile: str, batch_size: int, device: torch.device, repeats: int, size: int = 64, num_actions: int = 18,
                  horizon: int = HORIZON) -> dict:  # fmt: skip
    from .rew_end import RewEndModel, rew_end_config

    models = {}
    for label, options in variants(device).items():
        torch.manual_seed(0)
        cfg = rew_end_config(profile, num_actions)
        cfg.img_size = size
        models[label] = RewEndModel(cfg, device, **options)
    length = horizon + 4
    batch = {"obs": torch.rand(batch_size, length, 3, size, size, device=device) * 2 - 1,
             "act": torch.randint(0, num_actions, (batch_size, length), device=device),
             "rew": torch.zeros(batch_size, length, device=device), "end": torch.zeros(batch_size, length, dtype=torch.bool, device=device),
             "mask": torch.ones(batch_size, length, dtype=torch.bool, device=device)}  # fmt: skip
    seconds = interleaved_medians({label: (lambda m=m: m.train_step(batch)) for label, m in models.items()}, device, repeats)
    results: dict = {label: {"train_step_s": s} for label, s in seconds.items()}
    results["parameters"] = models["optimised"].num_parameters()
    results["speedup_train_step"] = results["plain_fp32"]["train_step_s"] / results["optimised"]["train_step_s"]
    return results


def bench_actor_critic(profile: str, batch_size: int, device: torch.device, repeats: int, size: int = 64, num_actions: int = 18,
                       horizon: int = HORIZON, num_denoising_steps: int = 3, compile: bool = False) -> dict:  # fmt: skip
    """An actor-critic update with its imagination: ``horizon`` imagined steps of ``batch_size`` episodes; with
    ``compile`` also with the world model's sampling compiled (``optimised_compiled``)."""
    import tempfile

    from .actor_critic import ActorCritic, EnvLoop, actor_critic_config
    from .data import Dataset, Episode, SegmentSampler
    from .imagination import ImaginationEnv
    from .rew_end import RewEndModel, rew_end_config

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        replay = Dataset(tmp)
        for _ in range(4):
            n = 50
            replay.add(Episode(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, num_actions, n),
                               np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)))  # fmt: skip
        steps = {}
        for label, options in dict(variants(device), **({"optimised_compiled": {}} if compile else {})).items():
            torch.manual_seed(0)
            wm = WorldModel(world_model_config(profile, num_actions), device, **options)
            if label == "optimised_compiled":
                compile_sampling(wm)
            re_cfg = rew_end_config(profile, num_actions)
            re_cfg.img_size = size
            ac_cfg = actor_critic_config(profile, num_actions)
            ac_cfg.img_size = size
            re, ac = RewEndModel(re_cfg, device, **options), ActorCritic(ac_cfg, device, **options)
            env = ImaginationEnv(wm, re, SegmentSampler(replay, wm.n, batch_size, seed=0), num_envs=batch_size, horizon=horizon,
                                 num_denoising_steps=num_denoising_steps)  # fmt: skip
            ac.cfg.backup_every = horizon
            steps[label] = lambda ac=ac, loop=EnvLoop(env, ac): ac.train_step(loop)
            results["parameters"] = ac.num_parameters()
        for label, seconds in interleaved_medians(steps, device, repeats).items():
            results[label] = {"train_step_s": seconds, "imagined_frames_per_s": batch_size * horizon / seconds}
    results["speedup_train_step"] = results["plain_fp32"]["train_step_s"] / results["optimised"]["train_step_s"]
    if compile:
        results["speedup_train_step_compiled"] = results["plain_fp32"]["train_step_s"] / results["optimised_compiled"]["train_step_s"]
    return results


# -- how long a whole run takes ---------------------------------------------------------------------

IN_AN_EPOCH = ("collect", "evaluate") + tuple(f"train_{name}" for name in MODELS)


def time_projection(log: list[dict], schedule) -> dict:
    """How long a whole run of ``schedule`` (a ``config.RunConfig``) takes, from the costs a run measured.

    From ``log`` (a run's events): each model's seconds per update, over the epochs after the first when there are
    some (the first epoch's are the same updates, but a cold start and the machine's other work weigh more there);
    the seconds per real step of collection, with the random policy (first collection) and with the agent; the
    seconds per test episode; and what else an epoch spends (checkpoints, logging: the epoch's time less its parts).
    ``schedule`` may be another run's configuration with the same models and batch sizes: a short measuring run
    projects the paper profile's 1000 epochs. The first collection is the run's own where it fits the schedule, else
    ``first_epoch_min`` steps (a game whose random play rarely scores collects up to ``first_epoch_max``); a test
    episode takes the measured mean time, though a better agent plays longer games. Returns seconds per part and in
    all (``total_s``).
    """
    epochs = {e["epoch"]: e for e in log if e["event"] == "epoch"}
    if not epochs:
        raise ValueError("the log holds no finished epoch to measure")
    later = [k for k in epochs if k >= 2] or list(epochs)
    per_update = {}
    for name in MODELS:
        chosen = [e for e in log if e["event"] == f"train_{name}" and e["epoch"] in later and e.get("steps")]
        steps = sum(e["steps"] for e in chosen)
        per_update[name] = sum(e["seconds"] for e in chosen) / steps if steps else 0.0

    def rate(events: list[dict], unit: str) -> float | None:
        count = sum(len(e["returns"]) if unit == "episodes" else e["steps"] for e in events)
        return sum(e["seconds"] for e in events) / count if count and all("seconds" in e for e in events) else None

    random_step = rate([e for e in log if e["event"] == "first_collection"], "steps")
    agent_step = rate([e for e in log if e["event"] == "collect"], "steps")
    episode = rate([e for e in log if e["event"] in ("evaluate", "final_evaluation")], "episodes")
    rest = []
    for k in later:
        parts = [e.get("seconds", 0.0) for e in log if e["epoch"] == k and e["event"] in IN_AN_EPOCH]
        rest.append(max(0.0, epochs[k]["seconds"] - sum(parts)))
    other = float(np.median(rest))
    c, s = schedule.collection, schedule
    trainings = {name: getattr(s, f"training_{name}") for name in MODELS}
    collected = sum(e["steps"] for e in log if e["event"] == "first_collection")
    first_steps = collected if c.first_epoch_min <= collected <= c.first_epoch_max else min(c.first_epoch_min, c.num_steps_total)
    collecting = -(-max(0, c.num_steps_total - first_steps) // c.steps_per_epoch)
    num_epochs = collecting + s.num_final_epochs
    train_first = sum(trainings[m].steps_first_epoch * per_update[m] for m in MODELS)
    train_epoch = sum(trainings[m].steps_per_epoch * per_update[m] for m in MODELS)
    parts = {
        "first_collection_s": first_steps * (random_step or agent_step or 0.0),
        "first_epoch_training_s": train_first,
        "later_epochs_training_s": (num_epochs - 1) * train_epoch,
        "collection_s": collecting * c.steps_per_epoch * (agent_step or random_step or 0.0),
        "evaluations_s": ((num_epochs // s.evaluation_every) * c.test_episodes + 2 * c.final_test_episodes) * (episode or 0.0),
        "other_s": num_epochs * other,
    }
    return {"epochs": num_epochs, "seconds_per_update": per_update, "seconds_per_random_step": random_step,
            "seconds_per_agent_step": agent_step, "seconds_per_test_episode": episode, "other_s_per_epoch": other,
            "epoch_s": train_epoch + c.steps_per_epoch * (agent_step or 0.0) + other, **parts, "total_s": sum(parts.values()),
            "measured_epochs": sorted(later)}  # fmt: skip


def format_projection(p: dict) -> str:
    hours = lambda seconds: "not counted" if seconds is None else f"{seconds / 3600:.2f} h"  # noqa: E731
    per = ", ".join(f"{name} {seconds:.3g} s" for name, seconds in p["seconds_per_update"].items())
    lines = [f"measured over epochs {p['measured_epochs'][0]}-{p['measured_epochs'][-1]}: per update {per}",
             f"a later epoch: {p['epoch_s']:.1f} s; the first epoch's training: {hours(p['first_epoch_training_s'])}",
             f"{p['epochs']} epochs in all: {hours(p['total_s'])} (later epochs' training {hours(p['later_epochs_training_s'])}, "
             f"collection {hours(p['first_collection_s'] + p['collection_s'])}, evaluations {hours(p['evaluations_s'])}, "
             f"other {hours(p['other_s'])})"]  # fmt: skip
    return "\n".join(lines)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # kB on Linux


def machine() -> dict:
    from .memory import is_kept

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "malloc_keeps_freed_memory": is_kept()}  # fmt: skip
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


class StandInGame:
    """A game for timing a run where no emulator is installed (a GPU machine's bare image has no ALE): random frames,
    a reward on about one step in ten, an episode end every ``episode_length`` steps, ``num_actions`` actions. The three
    models cost the same whatever the frames show; what the emulator costs is measured apart (:func:`emulator_seconds`)
    and added to the projection."""

    def __init__(self, num_actions: int = 18, size: int = 64, seed: int | None = None, episode_length: int = 200) -> None:
        self.rng = np.random.default_rng(seed)
        self.size, self.episode_length, self.t = size, episode_length, 0
        self.action_space = _Actions(num_actions)
        self.action_names = [f"action {i}" for i in range(num_actions)]

    def _frame(self):
        return self.rng.integers(0, 256, (self.size, self.size, 3), dtype="uint8")

    def reset(self, *, seed: int | None = None, options=None):
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        reward = float(self.rng.random() < 0.1)
        return self._frame(), reward, self.t >= self.episode_length, False, {"life_loss": False}


class _Actions:
    """``n`` discrete actions with the parts of a gymnasium ``Discrete`` space a run uses."""

    def __init__(self, n: int) -> None:
        self.n, self.np_random = n, np.random.default_rng(0)

    def seed(self, seed: int | None = None) -> None:
        self.np_random = np.random.default_rng(seed)

    def sample(self) -> int:
        return int(self.np_random.integers(self.n))


def emulator_seconds(game: str = "Breakout", steps: int = 2000) -> float | None:
    """Seconds per agent step of the real game with random actions (emulator and preprocessing: 4 frames, max-pool,
    resize), or None where the emulator is not installed."""
    try:
        from .atari import make_env
    except ImportError:
        return None
    env = make_env(game, seed=0)
    env.reset(seed=0)
    started = time.perf_counter()
    for _ in range(steps):
        _, _, end, trunc, _ = env.step(env.action_space.sample())
        if end or trunc:
            env.reset()
    return (time.perf_counter() - started) / steps


def bench_epochs(profile: str, device: torch.device, *, updates: int, epochs: int = 3, first_steps: int = 1000,
                 emulator_step_s: float | None = None, num_actions: int = 18, out: str | None = None) -> dict:  # fmt: skip
    """A short run of ``profile``'s models and batches, through the very loop ``train.Run`` runs, on a stand-in game:
    ``epochs`` epochs of ``updates`` updates of each model (the first epoch's too), after a first collection of
    ``first_steps`` random steps; then the profile's whole schedule (the paper's: 1000 epochs of 400 updates each)
    projected from the seconds per update it measured (:func:`time_projection`).

    Collection is the stand-in game's plus ``emulator_step_s`` per real step (what the Atari emulator costs on the
    machine that runs it: :func:`emulator_seconds` where it is installed). Test episodes are left out of the projection:
    how long they last depends on the game and on how well the agent plays."""
    import tempfile

    from .config import apply_overrides, run_config
    from .run_folder import read_log
    from .train import Run

    cfg = run_config("StandIn", profile, num_actions=num_actions)
    sets = [f"training_{m}.{k}={updates}" for m in MODELS for k in ("steps_first_epoch", "steps_per_epoch")]
    # enough real steps for more epochs than are run, so that the run stops before its final evaluation
    total = first_steps + (epochs + 1) * cfg.collection.steps_per_epoch
    sets += [f"collection.first_epoch_min={first_steps}", f"collection.first_epoch_max={first_steps}",
             f"collection.num_steps_total={total}", f"evaluation_every={epochs + 1}", "checkpoint_every_minutes=600.0"]  # fmt: skip
    cfg = apply_overrides(cfg, sets)
    with tempfile.TemporaryDirectory() as tmp:
        run = Run(cfg, out or f"{tmp}/run", device, make_env=lambda game, split="train", seed=None: StandInGame(num_actions, seed=seed))
        started = time.perf_counter()
        run.run(max_epochs=epochs)
        seconds = time.perf_counter() - started
        log = read_log(run.dir)
    emulated = [dict(e, seconds=e["seconds"] + e["steps"] * (emulator_step_s or 0.0)) if e["event"] in ("collect", "first_collection") else e
                for e in log]  # fmt: skip
    projection = time_projection(emulated, run_config("StandIn", profile, num_actions=num_actions))
    projection["evaluations_s"] = None  # the stand-in game's episodes say nothing of a real game's
    projection["total_s"] = sum(v for k, v in projection.items() if k.endswith("_s") and k not in ("epoch_s", "total_s") and v)
    return {"profile": profile, "updates_per_model_per_epoch": updates, "epochs": epochs, "seconds": seconds,
            "emulator_step_s": emulator_step_s, "projection": projection}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda or mps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="frame size (64 in DIAMOND)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=str, default=None, help="also write the results to this file (a new one)")
    parser.add_argument("--overwrite", action="store_true", help="let --json replace an existing file")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile'd sampling measurements (each costs a compile, about a minute on 2 cores)")
    parser.add_argument("--only", choices=("world_model", "rew_end_model", "actor_critic"), action="append",
                        help="measure only these (repeatable); default: all three")
    parser.add_argument("--epochs", type=int, default=0, metavar="E",
                        help="instead: time E epochs of a short run of the profile's models on a stand-in game (no emulator "
                             "needed) and project the profile's whole schedule from them")
    parser.add_argument("--updates", type=int, default=40, help="with --epochs: updates of each model per epoch")
    parser.add_argument("--emulator-step-s", type=float, default=None,
                        help="with --epochs: seconds per real game step to add to collection (default: measured here, "
                             "where the emulator is installed)")
    args = parser.parse_args(argv)
    memory.keep_freed_memory()  # freed memory stays in the process: faster steps on a CPU (diamond_lite.memory)
    if args.json and os.path.exists(args.json) and not args.overwrite:
        # checked before measuring: recorded results in docs/ are kept, and nothing is lost after an hour's run
        parser.error(f"--json {args.json} exists; choose a new file or pass --overwrite")
    try:
        device = prepare_device(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = {"machine": machine(), "profile": args.profile, "batch_size": args.batch_size, "device": str(device)}
    if args.epochs:
        step_s = args.emulator_step_s if args.emulator_step_s is not None else emulator_seconds()
        results = {"machine": machine(), "device": str(device),
                   **bench_epochs(args.profile, device, updates=args.updates, epochs=args.epochs, emulator_step_s=step_s)}  # fmt: skip
        print(format_projection(results["projection"]))
    else:
        benches = {"world_model": bench_world_model, "rew_end_model": bench_rew_end, "actor_critic": bench_actor_critic}
        for name in args.only or benches:
            options = {} if name == "rew_end_model" else {"compile": args.compile}
            results[name] = benches[name](args.profile, args.batch_size, device, args.repeats, args.size, **options)
    results["peak_memory_mb"] = peak_memory_mb(device)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
