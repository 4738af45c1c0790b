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
a third time with the denoiser compiled (``WorldModel.compile_training``, ``WorldModel.compile_sampling``);
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

import torch

from .profiles import PROFILES
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
        model.loss(batch).backward()
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
    del seen

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


def bench_world_model(profile: str, batch_size: int, device: torch.device, repeats: int, size: int = 64, num_actions: int = 18,
                      compile: bool = False) -> dict:  # fmt: skip
    """Denoiser train step and sampling, optimised and plain; with ``compile`` also both through ``torch.compile``
    (``optimised_compiled``: a third model, with the seconds its first step and first sampling call spent compiling)."""
    models = {}
    for label, options in OPTIONS.items():
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
        compiled.compile_training()
        compiled.train_step(batch)  # the first step compiles forward and backward
        _sync(device)
        results["optimised_compiled"] = {"train_compile_s": time.perf_counter() - started,
                                         "train_compiled": compiled._compiled_inner is not None}  # fmt: skip
    train = interleaved_medians({label: (lambda m=m: m.train_step(batch)) for label, m in trainers.items()}, device, repeats)
    for label, seconds in train.items():
        results[label]["train_step_s"] = seconds
    if device.type == "cuda":
        results["train_peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    samplers = dict(trainers)
    if compile:
        started = time.perf_counter()
        compiled.compile_sampling()
        compiled.predict_next(obs, act, num_steps=1)  # the first call compiles
        _sync(device)
        results["optimised_compiled"].update(compile_s=time.perf_counter() - started, compiled=compiled.is_compiled)
    for steps in (1, 3):
        fns = {label: (lambda m=m: m.predict_next(obs, act, num_steps=steps)) for label, m in samplers.items()}
        for label, seconds in interleaved_medians(fns, device, repeats).items():
            results[label][f"sample_{steps}_step_fps"] = batch_size / seconds
    for label, m in models.items():
        results[label]["sampling_bf16_copy"] = m._sampling_denoiser() is not m.denoiser
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
                  horizon: int = 15) -> dict:  # fmt: skip
    from .rew_end import RewEndModel, rew_end_config

    models = {}
    for label, options in OPTIONS.items():
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
                       horizon: int = 15, num_denoising_steps: int = 3, compile: bool = False) -> dict:  # fmt: skip
    """An actor-critic update with its imagination: ``horizon`` imagined steps of ``batch_size`` episodes; with
    ``compile`` also with the world model's sampling compiled (``optimised_compiled``)."""
    import tempfile

    import numpy as np

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
        variants = dict(OPTIONS, **({"optimised_compiled": {}} if compile else {}))
        steps = {}
        for label, options in variants.items():
            torch.manual_seed(0)
            wm = WorldModel(world_model_config(profile, num_actions), device, **options)
            if label == "optimised_compiled":
                wm.compile_sampling()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="frame size (64 in DIAMOND)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=str, default=None, help="also write the results to this file (a new one)")
    parser.add_argument("--overwrite", action="store_true", help="let --json replace an existing file")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile'd sampling measurements (each costs a compile, about a minute on 2 cores)")
    parser.add_argument("--only", choices=("world_model", "rew_end_model", "actor_critic"), action="append",
                        help="measure only these (repeatable); default: all three")
    args = parser.parse_args(argv)
    if args.json and os.path.exists(args.json) and not args.overwrite:
        # checked before measuring: recorded results in docs/ are kept, and nothing is lost after an hour's run
        parser.error(f"--json {args.json} exists; choose a new file or pass --overwrite")
    device = torch.device(args.device)
    results = {"machine": machine(), "profile": args.profile, "batch_size": args.batch_size, "device": str(device)}
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
