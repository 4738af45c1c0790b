"""How many world-model updates until imagination rewards as often as the real game?
(docs/journal/world_model_on_course_budgets.md)

Loads a run's newest checkpoint (models, optimisers and schedules), keeps its reward/end model and agent fixed, and
trains only the world model further on the run's own data, exactly as the run's epochs do (segments of the world
model's ``segment_length``, the run's batch size and recency weights). Every ``--every`` updates it checks whether the
world model draws the real rewarding events one step ahead (``diagnose_imagination.one_step_at_rewards``: the
reward/end model's p(reward) on the predicted next frame against the real one; seconds), and with ``--imagine`` also
the reward rate of whole imagined episodes for a uniformly random policy and the run's agent (minutes). One JSON line
per measurement goes to stdout and, with ``--jsonl``, is appended to that file, so a stopped study keeps what it
measured; ``--strip`` saves the last measurement's frames.

``--fresh-channels C`` instead trains a new world model from scratch on the same data (the run's configuration with
the U-Net's channels set to C at every level, a fresh optimiser and warm-up): with the run's reward/end model as the
judge, it compares world-model sizes on the same data and the same number of updates. ``--lr`` sets a fresh model's
learning rate (the run's otherwise); with ``--from``, it lowers (or raises) a saved model's rate from there on.

``--held-out STEPS`` also plays that many random-policy steps of the game's test split once (kept in
``RUN/held_out/``) and reports, at every measurement, the denoising loss on a fixed set of held-out segments and on a
fixed set of training segments, with the same noise each time (``loss_held_out``, ``loss_train_fixed``: how fast it
learns, and how far it overfits the run's data), and the mean squared error of its sampled one-step predictions on
held-out frames that moved, next to copying the last frame (``one_step_errors``). These need no judge, so a run whose
reward/end model is untrained (a folder made with ``--max-epochs 0``) can be studied with ``--no-judge``.

The journal's numbers (2026-11-22 to 2026-12-04) were measured with the one-term loss on segments of ``n + 1`` frames;
since 2026-12-06 the loss adds DIAMOND's autoregressive term (``segment_length`` frames), so its losses are not
comparable with them, while the one-step checks and one-step errors still are.

    python dev/world_model_budget.py runs/Seaquest-course --updates 3000 --every 300 --jsonl docs/x.jsonl
    python dev/world_model_budget.py runs/KungFuMaster-course --fresh-channels 64 --updates 1800 --every 300
    python dev/world_model_budget.py runs/KFM-data --fresh-channels 32 --lr 3e-4 --held-out 2000 --no-judge
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import diagnose_imagination as diag  # noqa: E402

from diamond_lite.atari import make_env  # noqa: E402
from diamond_lite.component import read_checkpoint  # noqa: E402
from diamond_lite.data import Collector, Dataset, SegmentSampler  # noqa: E402
from diamond_lite.run_folder import STATE_FORMAT, load_run  # noqa: E402
from diamond_lite.world_model import WorldModel, one_step_errors  # noqa: E402

HELD_OUT_SEED = 10_000  # a test-split game and action stream no run collects with


def held_out_dataset(run: Path, game: str, steps: int) -> Dataset:
    """``steps`` random-policy steps of the test split, played once and kept in ``run/held_out``."""
    dataset = Dataset(run / "held_out")
    if dataset.num_steps < steps:
        env = make_env(game, split="test", seed=HELD_OUT_SEED)
        Collector(env, dataset, seed=HELD_OUT_SEED).collect(num_steps=steps - dataset.num_steps, progress=False)
    return dataset


def fixed_batches(dataset: Dataset, seq_length: int, count: int, batch_size: int, seed: int) -> list[dict]:
    """``count`` batches of uniformly drawn segments, the same ones at every call with the same arguments."""
    sampler = SegmentSampler(dataset, seq_length, batch_size, sample_weights=None, seed=seed)
    return [sampler.sample().to_torch("cpu") for _ in range(count)]


@torch.no_grad()
def fixed_loss(wm: WorldModel, batches: list[dict], seed: int) -> float:
    """The denoising loss over ``batches`` with the same noise levels and noises at every call."""
    generator = torch.Generator(wm.device).manual_seed(seed)
    wm.eval()
    return sum(float(wm.loss(b, generator=generator)[0]) for b in batches) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--every", type=int, default=300)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="imagined episodes of horizon steps per env and measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--imagine", action="store_true", help="also measure imagined reward rates (slow)")
    parser.add_argument("--strip", type=Path, default=None)
    parser.add_argument("--fresh-channels", type=int, default=None, help="train a new world model of this width instead")
    parser.add_argument("--save", type=Path, default=None, help="a folder: the world model is saved there at every measurement")
    parser.add_argument("--from", dest="start", type=Path, default=None, help="go on from a world model --save wrote")
    parser.add_argument("--lr", type=float, default=None, help="a fresh world model's learning rate (default: the run's)")
    parser.add_argument("--held-out", type=int, default=0, help="random test-split steps for held-out losses and errors")
    parser.add_argument("--no-judge", action="store_true", help="skip the checks that need a trained reward/end model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (two studies side by side: 1 each)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lr is not None and args.fresh_channels is None and args.start is None:
        parser.error("--lr applies to a fresh world model (--fresh-channels) or one --from a saved file")
    torch.manual_seed(args.seed)
    run = load_run(args.run)
    cfg, wm, rem, ac, dataset, epoch = run.cfg, run.world_model, run.rew_end_model, run.actor_critic, run.dataset, run.epoch
    if args.start:
        wm = WorldModel.load(args.start, game=cfg.game)  # with its optimiser and learning-rate schedule
        if args.lr is not None:
            # a step down in the learning rate, AdamW's moments kept: does a lower rate sharpen what it learned?
            for group in wm.optimizer.param_groups:
                group["lr"] = group["initial_lr"] = args.lr
            wm.scheduler.base_lrs = [args.lr] * len(wm.optimizer.param_groups)
            wm.cfg = dataclasses.replace(wm.cfg, lr=args.lr)
    elif args.fresh_channels:
        unet = dataclasses.replace(cfg.world_model.unet, channels=[args.fresh_channels] * len(cfg.world_model.unet.channels))
        lr = cfg.world_model.lr if args.lr is None else args.lr
        wm = WorldModel(dataclasses.replace(cfg.world_model, unet=unet, lr=lr), game=cfg.game)
    else:
        state = read_checkpoint(run.checkpoint, STATE_FORMAT, "training run")
        # continue the run's own optimiser and learning-rate schedule, not a fresh warm-up
        wm.optimizer.load_state_dict(state["optimizers"]["world_model"])
        wm.scheduler.load_state_dict(state["schedulers"]["world_model"])
        wm.num_updates = state["num_updates"]["world_model"]
    t = cfg.training_world_model
    sampler = SegmentSampler(dataset, wm.segment_length, t.batch_size, t.sample_weights, seed=args.seed)
    real = diag.real_reward_rate(dataset)
    n = cfg.world_model.num_actions
    if args.held_out:
        held_out = held_out_dataset(args.run, cfg.game, args.held_out)
        length = wm.segment_length  # the loss's own segments: n frames of context, the target, one per autoregressive step
        fixed = {"held_out": fixed_batches(held_out, length, 32, 16, seed=1), "train_fixed": fixed_batches(dataset, length, 32, 16, seed=2)}

    def measure(done: int, losses: list[float], seconds: float) -> None:
        wm.eval()
        row = {"run": str(args.run), "epoch": epoch, "channels": wm.cfg.unet.channels, "extra_updates": done,
               "world_model_updates": wm.num_updates, "lr": wm.cfg.lr, "real_reward_rate": real,
               "loss": sum(losses) / len(losses) if losses else None,
               "seconds_per_update": seconds / len(losses) if losses else None}  # fmt: skip
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            wm.save(args.save / f"world_model_{wm.num_updates:05d}.pt", with_optimizer=True)
        if args.held_out:
            for name, batches in fixed.items():
                row[f"loss_{name}"] = fixed_loss(wm, batches, seed=3)
            row["held_out_one_step"] = one_step_errors(wm, held_out, num_samples=256, seed=4)
        if not args.no_judge:
            one_step = diag.one_step_at_rewards(wm, rem, dataset)
            frames = one_step.pop("frames", None)
            row.update(one_step)
            if args.strip and frames is not None:
                diag.save_strip(frames, args.strip)
        if args.imagine and not args.no_judge:
            for name, policy in (("random", diag.FixedPreference(n, None)), ("agent", ac)):
                row[f"imagined_rate_{name}"] = diag.imagined_rate(wm, rem, dataset, policy, args.envs, args.rounds, args.seed, cfg.horizon)
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")

    measure(0, [], 0.0)
    losses, started = [], time.perf_counter()
    for done in range(1, args.updates + 1):
        loss, _ = wm.train_step(sampler.sample().to_torch(wm.device))
        losses.append(float(loss))
        if done % args.every == 0:
            measure(done, losses, time.perf_counter() - started)
            losses, started = [], time.perf_counter()


if __name__ == "__main__":
    main()
