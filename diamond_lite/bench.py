"""Speed of the world model, optimised and plain, measured in one run: ``python -m diamond_lite.bench``.

    python -m diamond_lite.bench --profile paper --batch-size 32 --json docs/bench_cpu.json

For the profile's world model at the given batch it measures a denoiser train step (forward, backward, AdamW)
and next-frame sampling at 1 and 3 Euler steps, each twice: with the speed-ups ``WorldModel`` picks for the device
(bf16 autocast, channels-last) and with every one of them off (plain fp32 eager). The ratio of the two is the
speed-up, measured on the same machine in the same run. It also counts the floating-point operations of a train
step (``torch.utils.flop_counter``) and compares the achieved rate with the machine's measured peak: a large
matrix product in the same dtype.

Timings are medians over ``--repeats`` runs after a warm-up. Tests run this at a tiny size to check that it works,
never how fast.
"""

from __future__ import annotations

import argparse
import json
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


def median_seconds(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` matrix product in ``dtype``: what this machine can do at best."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds


def fake_batch(batch_size: int, model: WorldModel, size: int, device: torch.device) -> dict:
    n = model.n
    return {
        "obs": torch.rand(batch_size, n + 1, 3, size, size, device=device) * 2 - 1,
        "act": torch.randint(0, model.cfg.num_actions, (batch_size, n + 1), device=device),
        "mask": torch.ones(batch_size, n + 1, dtype=torch.bool, device=device),
    }


def train_step_flops(model: WorldModel, batch: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.loss(batch).backward()
    model.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench_world_model(profile: str, batch_size: int, device: torch.device, repeats: int, size: int = 64, num_actions: int = 18) -> dict:
    results: dict = {}
    for label, options in [("optimised", {}), ("plain_fp32", {"autocast": False, "channels_last": False})]:
        torch.manual_seed(0)
        model = WorldModel(world_model_config(profile, num_actions), device, **options)
        batch = fake_batch(batch_size, model, size, device)
        obs, act = batch["obs"][:, : model.n], batch["act"][:, : model.n]
        entry = {
            "autocast_bf16": model.use_autocast,
            "channels_last": model.channels_last,
            "train_step_s": median_seconds(lambda: model.train_step(batch), device, repeats),
        }
        for steps in (1, 3):
            seconds = median_seconds(lambda: model.predict_next(obs, act, num_steps=steps), device, repeats)
            entry[f"sample_{steps}_step_fps"] = batch_size / seconds
        if device.type == "cuda":
            entry["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            torch.cuda.reset_peak_memory_stats(device)
        results[label] = entry
        if label == "optimised":
            results["parameters"] = model.num_parameters()
            results["train_step_gflop"] = train_step_flops(model, batch) / 1e9
    opt, plain = results["optimised"], results["plain_fp32"]
    results["speedup_train_step"] = plain["train_step_s"] / opt["train_step_s"]
    results["speedup_sample_3_step"] = opt["sample_3_step_fps"] / plain["sample_3_step_fps"]
    dtype = torch.bfloat16 if opt["autocast_bf16"] else torch.float32
    peak = matmul_peak(device, dtype)
    results["peak_matmul_gflops"] = {str(dtype).replace("torch.", ""): peak / 1e9}
    floor = results["train_step_gflop"] * 1e9 / peak
    results["train_step_floor_s"] = floor
    results["train_step_fraction_of_peak"] = floor / opt["train_step_s"]
    return results


def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}  # fmt: skip
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
    parser.add_argument("--json", type=str, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = {"machine": machine(), "profile": args.profile, "batch_size": args.batch_size, "device": str(device),
               "world_model": bench_world_model(args.profile, args.batch_size, device, args.repeats, args.size)}  # fmt: skip
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
