"""How many world-model updates until imagination rewards as often as the real game? (issue 8, step (b) in
docs/agent.md)

Loads a run's newest checkpoint (models, optimisers and schedules), keeps its reward/end model and agent fixed, and
trains only the world model further on the run's own data, exactly as the run's epochs do (same segments, batch size
and recency weights). Every ``--every`` updates it checks whether the world model draws the real rewarding events one
step ahead (``diagnose_imagination.one_step_at_rewards``: the reward/end model's p(reward) on the predicted next frame
against the real one; seconds), and with ``--imagine`` also the reward rate of whole imagined episodes for a uniformly
random policy and the run's agent (minutes). One JSON line per measurement goes to stdout and, with ``--jsonl``, is
appended to that file, so a stopped study keeps what it measured; ``--strip`` saves the last measurement's frames.

``--fresh-channels C`` instead trains a new world model from scratch on the same data (the run's configuration with
the U-Net's channels set to C at every level, a fresh optimiser and warm-up): with the run's reward/end model as the
judge, it compares world-model sizes on the same data and the same number of updates.

    python dev/world_model_budget.py runs/Seaquest-course --updates 3000 --every 300 --jsonl docs/x.jsonl
    python dev/world_model_budget.py runs/KungFuMaster-course --fresh-channels 64 --updates 1800 --every 300
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

from diamond_lite.component import read_checkpoint  # noqa: E402
from diamond_lite.data import SegmentSampler  # noqa: E402
from diamond_lite.train import STATE_FORMAT  # noqa: E402
from diamond_lite.world_model import WorldModel  # noqa: E402


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
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cfg, wm, rem, ac, dataset, epoch = diag.load_run(args.run)
    if args.start:
        wm = WorldModel.load(args.start, game=cfg.game)  # with its optimiser and learning-rate schedule
    elif args.fresh_channels:
        unet = dataclasses.replace(cfg.world_model.unet, channels=[args.fresh_channels] * len(cfg.world_model.unet.channels))
        wm = WorldModel(dataclasses.replace(cfg.world_model, unet=unet), game=cfg.game)
    else:
        state = read_checkpoint(sorted(args.run.glob("checkpoints/epoch_*.pt"))[-1], STATE_FORMAT, "training run")
        # continue the run's own optimiser and learning-rate schedule, not a fresh warm-up
        wm.optimizer.load_state_dict(state["optimizers"]["world_model"])
        wm.scheduler.load_state_dict(state["schedulers"]["world_model"])
        wm.num_updates = state["num_updates"]["world_model"]
    t = cfg.training_world_model
    sampler = SegmentSampler(dataset, cfg.world_model.num_steps_conditioning + 1, t.batch_size, t.sample_weights, seed=args.seed)
    real = diag.real_reward_rate(dataset)
    n = cfg.world_model.num_actions

    def measure(done: int, losses: list[float], seconds: float) -> None:
        wm.eval()
        row = {"run": str(args.run), "epoch": epoch, "channels": wm.cfg.unet.channels, "extra_updates": done,
               "world_model_updates": wm.num_updates, "real_reward_rate": real,
               "loss": sum(losses) / len(losses) if losses else None,
               "seconds_per_update": seconds / len(losses) if losses else None}  # fmt: skip
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            wm.save(args.save / f"world_model_{wm.num_updates:05d}.pt", with_optimizer=True)
        one_step = diag.one_step_at_rewards(wm, rem, dataset)
        frames = one_step.pop("frames", None)
        row.update(one_step)
        if args.strip and frames is not None:
            diag.save_strip(frames, args.strip)
        if args.imagine:
            for name, policy in (("random", diag.FixedPreference(n, None)), ("agent", ac)):
                row[f"imagined_rate_{name}"] = diag.imagined_rate(wm, rem, dataset, policy, args.envs, args.rounds, args.seed, cfg.horizon)
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")

    measure(0, [], 0.0)
    losses, started = [], time.perf_counter()
    for done in range(1, args.updates + 1):
        losses.append(float(wm.train_step(sampler.sample().to_torch(wm.device))))
        if done % args.every == 0:
            measure(done, losses, time.perf_counter() - started)
            losses, started = [], time.perf_counter()


if __name__ == "__main__":
    main()
