"""Would the course actor-critic beat random if its world model were better? (docs/journal/imagination_vs_real.md)

Loads a run's data and reward/end model, a world model saved apart (``dev/world_model_budget.py --save``), and trains
a *fresh* actor-critic of the run's configuration in imagination only: the same ``ImaginationEnv`` and ``EnvLoop``
as the run, the same batch, horizon and denoising steps, the run's segments and recency weights; the world model and
the reward/end model stay fixed and no new real data is collected. Every ``--every`` updates it logs the imagined
reward per step and the policy's entropy; at the end it plays ``--episodes`` test episodes of the real game, and as
many with a uniformly random policy in the same conditions as the run's final evaluation.

It separates the two things a course run needs: a world model whose imagination pays, and an actor-critic that learns
from it. The model-free check (``train --model-free``) gives the second a perfect simulator; this gives it a chosen
world model. Measured on KungFuMaster 2026-11-22 with a world model of 20,000 updates.

    python dev/train_in_imagination.py runs/KungFuMaster-course --world-model runs/wm/world_model_20000.pt \\
        --updates 900 --every 100 --episodes 20 --jsonl docs/x.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diamond_lite.actor_critic import ActorCritic, EnvLoop, Policy, RandomPolicy, evaluate_policy
from diamond_lite.atari import make_env
from diamond_lite.data import SegmentSampler
from diamond_lite.imagination import ImaginationEnv
from diamond_lite.run_folder import load_run
from diamond_lite.world_model import WorldModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--world-model", type=Path, default=None, help="a saved world model (default: the run's own)")
    parser.add_argument("--updates", type=int, default=900)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=20, help="real test episodes at the end, agent and random each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jsonl", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None, help="where to save the trained actor-critic (with its optimiser)")
    parser.add_argument("--from", dest="start", type=Path, default=None, help="go on from an actor-critic --save wrote")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    run = load_run(args.run)
    cfg, wm, rem, dataset, epoch = run.cfg, run.world_model, run.rew_end_model, run.dataset, run.epoch
    if args.world_model:
        wm = WorldModel.load(args.world_model, game=cfg.game)
    wm.eval()
    ac = ActorCritic.load(args.start, game=cfg.game) if args.start else ActorCritic(cfg.actor_critic, game=cfg.game)
    t = cfg.training_actor_critic
    sampler = SegmentSampler(dataset, cfg.world_model.num_steps_conditioning, t.batch_size, t.sample_weights, seed=args.seed + 2)
    env = ImaginationEnv(wm, rem, sampler, num_envs=t.batch_size, horizon=cfg.horizon, num_denoising_steps=cfg.num_denoising_steps)
    loop = EnvLoop(env, ac)

    def write(row: dict) -> None:
        row = {"run": str(args.run), "epoch": epoch, "world_model": str(args.world_model or "run"),
               "world_model_updates": wm.num_updates, "seed": args.seed,
               "actor_critic_from": str(args.start) if args.start else None, **row}  # fmt: skip
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")

    rewards, entropies, started = [], [], time.perf_counter()
    for done in tqdm(range(1, args.updates + 1), desc="actor-critic in imagination", unit="update"):
        _, metrics = ac.train_step(loop)
        rewards.append(metrics["reward"])
        entropies.append(metrics["entropy"])
        if done % args.every == 0:
            write({"actor_critic_updates": done, "imagined_reward_per_step": torch.stack(rewards).mean().item(),
                   "entropy": torch.stack(entropies).mean().item(),
                   "seconds_per_update": (time.perf_counter() - started) / len(rewards)})  # fmt: skip
            rewards, entropies, started = [], [], time.perf_counter()
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        ac.save(args.save, with_optimizer=True)

    c = cfg.collection
    max_steps = c.test_max_steps or None
    ac.eval()
    # seeds as in diamond_lite.train.Run: the random baseline's are those of every run's final evaluation, so its
    # returns are the same numbers; the agent's follow Run.evaluate with the update count in place of the epoch
    test_env = make_env(cfg.game, split="test", seed=cfg.seed + 10_000 + args.updates)
    agent = evaluate_policy(Policy(ac, epsilon=c.test_epsilon, seed=cfg.seed + args.updates), test_env, args.episodes,
                            max_steps=max_steps, desc="agent, real test episodes")  # fmt: skip
    random_env = make_env(cfg.game, split="test", seed=cfg.seed + 20_000)
    random = evaluate_policy(RandomPolicy(random_env, cfg.seed + 20_000), random_env, args.episodes, max_steps=max_steps,
                             desc="random policy, same conditions")  # fmt: skip
    write({"actor_critic_updates": args.updates, "test_returns": agent, "test_mean": float(np.mean(agent)),
           "test_std": float(np.std(agent)), "random_returns": random, "random_mean": float(np.mean(random)),
           "random_std": float(np.std(random))})  # fmt: skip


if __name__ == "__main__":
    main()
