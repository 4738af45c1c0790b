"""Experiment (issue 11): which precision makes 3-step sampling fastest on this CPU, at the same numbers?

Times next-frame sampling at a profile's size in four ways, on the same weights, inputs and noise:

  plain      fp32 eager, NCHW (the benchmark's baseline): ``predict_next`` of a plain model
  autocast   bf16 autocast + channels-last, one autocast region per denoising step (the package before session 6)
  autocast1  the same, one autocast region around the whole sample (weights cast once per frame, not per step)
  package    ``predict_next`` as the package runs it: a bf16 copy of the U-Net, channels-last, no autocast;
             EDM's preconditioning and the noise/action embedding stay in fp32

Its models are fresh (no train step has run in the process), and in that state plain fp32 samples at about half
the speed it reaches after one train step, when the allocator has grown (docs/benchmarks.md, session 7): the
benchmark, whose train steps come first, is the figure of record. The variants take turns, one call each per
round, so that a machine whose speed drifts (this one does) treats them alike; it prints the median frames/s of each and the largest difference to ``plain`` in 8-bit levels.
``--profile-ops`` adds a ``torch.profiler`` table of the top operators for ``autocast1`` and ``package``.

    python dev/sampling_precision.py --profile paper --batch-size 32
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from diamond_lite.sampler import karras_sigmas, sample
from diamond_lite.world_model import WorldModel, world_model_config


def build(profile: str, num_actions: int, **options) -> WorldModel:
    torch.manual_seed(0)
    model = WorldModel(world_model_config(profile, num_actions), **options)
    # conv_out starts at zero (an untrained model predicts the skip path only); give it weights so that the
    # whole network shows up in the comparison of outputs
    torch.nn.init.normal_(model.denoiser.inner.conv_out.weight, std=0.02)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile-ops", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    b, n, a = args.batch_size, 4, 18
    g = torch.Generator().manual_seed(1)
    obs = torch.rand(b, n, 3, 64, 64, generator=g) * 2 - 1
    act = torch.randint(0, a, (b, n), generator=g)

    plain = build(args.profile, a, autocast=False, channels_last=False)
    fast = build(args.profile, a, autocast=True, channels_last=True)
    fast.load_state_dict(plain.state_dict())  # the same weights (construction may draw random numbers differently)
    cfg = fast.cfg.sampler
    sigmas = karras_sigmas(args.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
    noise = lambda: torch.Generator().manual_seed(2)  # noqa: E731

    @torch.no_grad()
    def by_hand(region_per_step: bool):
        def denoise(x, sigma):
            region = fast._autocast() if region_per_step else contextlib.nullcontext()
            with region:
                return fast.denoiser.denoise(fast._layout(x), sigma, obs=obs, act=act).float()

        x = torch.randn(b, 3, 64, 64, generator=noise())
        with contextlib.nullcontext() if region_per_step else fast._autocast():
            return sample(denoise, x, sigmas)

    variants = {
        "plain": lambda: plain.predict_next(obs, act, num_steps=args.steps, generator=noise()),
        "autocast": lambda: by_hand(region_per_step=True),
        "autocast1": lambda: by_hand(region_per_step=False),
        "package": lambda: fast.predict_next(obs, act, num_steps=args.steps, generator=noise()),
    }
    reference = variants["plain"]()
    times = {name: [] for name in variants}
    for name, fn in variants.items():
        fn()  # warm-up (the package variant makes its bf16 copy here)
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    print(f"{args.profile} profile, batch {b}, {args.steps} Euler steps, {torch.get_num_threads()} threads, {args.repeats} rounds")
    for name, fn in variants.items():
        fps = b / statistics.median(times[name])
        levels = ((fn() - reference).abs().max() * 127.5).item()
        print(f"  {name:10} {fps:7.1f} frames/s  ({fps * statistics.median(times['plain']) / b:.2f}x plain)"
              f"   max difference to plain: {levels:.0f} levels of 255")
    if args.profile_ops:
        from torch.profiler import ProfilerActivity, profile

        for name in ("autocast1", "package"):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                variants[name]()
            print(f"\n{name}:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
