"""Does a run's imagination reward what the real game rewards? (issue 8 diagnosis; docs/agent.md)

Loads a run's newest checkpoint and measures, on its own replay data:

* the real reward rate (non-zero rewards per step) of the dataset;
* the reward/end model's sampled reward rate on real transitions (teacher forcing: real next frames);
* the imagined reward rate over ``horizon``-step imagined episodes, for a uniformly random policy, for
  policies that prefer one action 60% of the time, and for the run's agent;
* the time each part of one imagined step takes.

    python dev/diagnose_imagination.py runs/Qbert-course [--envs 32] [--updates 8] [--strip docs/img/x.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diamond_lite.actor_critic import ActorCritic, EnvLoop
from diamond_lite.component import read_checkpoint
from diamond_lite.data import Dataset, SegmentSampler
from diamond_lite.imagination import ImaginationEnv
from diamond_lite.rew_end import RewEndModel
from diamond_lite.train import STATE_FORMAT, RunConfig
from diamond_lite.world_model import WorldModel


def load_run(run_dir: Path):
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    path = sorted(run_dir.glob("checkpoints/epoch_*.pt"))[-1]
    state = read_checkpoint(path, STATE_FORMAT, "training run")
    wm = WorldModel(cfg.world_model, game=cfg.game)
    rem = RewEndModel(cfg.rew_end_model, game=cfg.game)
    ac = ActorCritic(cfg.actor_critic, game=cfg.game)
    for model, name in ((wm, "world_model"), (rem, "rew_end_model"), (ac, "actor_critic")):
        model.load_state_dict(state["models"][name])
        model.eval()
    return cfg, wm, rem, ac, Dataset(run_dir / "dataset" / "train"), state["epoch"]


def real_reward_rate(dataset: Dataset) -> float:
    rews = np.concatenate([ep.rew for ep in dataset])
    return float((rews != 0).mean())


@torch.no_grad()
def teacher_forced_rate(rem: RewEndModel, dataset: Dataset, batches: int, seed: int) -> tuple[float, float]:
    """Reward rate the reward/end model samples on real transitions, and the real rate on the same ones."""
    sampler = SegmentSampler(dataset, 4 + 15, 32, [0.1, 0.1, 0.1, 0.7], seed=seed, can_sample_beyond_end=True)
    g = torch.Generator().manual_seed(seed)
    predicted, real = [], []
    for _ in range(batches):
        b = sampler.sample().to_torch("cpu")
        logits_rew, _, _ = rem(b["obs"][:, :-1], b["act"][:, :-1], b["obs"][:, 1:])
        probs = logits_rew.softmax(-1)
        draw = torch.multinomial(probs.flatten(0, 1), 1, generator=g).view(probs.shape[:2])
        mask = b["mask"][:, :-1]
        predicted.append((draw != 1)[mask].float())
        real.append((b["rew"][:, :-1] != 0)[mask].float())
    return torch.cat(predicted).mean().item(), torch.cat(real).mean().item()


class FixedPreference(torch.nn.Module):
    """Uniform except one action, taken with probability ``p``; stands in for the agent in ``EnvLoop``."""

    def __init__(self, num_actions: int, action: int | None, p: float = 0.6) -> None:
        super().__init__()
        probs = torch.full((num_actions,), 1 / num_actions)
        if action is not None:
            probs = torch.full((num_actions,), (1 - p) / (num_actions - 1))
            probs[action] = p
        self.logits = probs.log()

    def __call__(self, obs, state=None):
        b = obs.shape[0]
        return self.logits.expand(b, -1), torch.zeros(b), (torch.zeros(b, 1), torch.zeros(b, 1))

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, 1), torch.zeros(batch_size, 1)

    def burn_in(self, frames, state=None):
        return self.initial_state(frames.shape[0])


@torch.no_grad()
def imagined_rate(wm, rem, dataset, policy, envs: int, updates: int, seed: int, horizon: int) -> float:
    sampler = SegmentSampler(dataset, 4, envs, [0.1, 0.1, 0.1, 0.7], seed=seed)
    env = ImaginationEnv(wm, rem, sampler, num_envs=envs, horizon=horizon, generator=torch.Generator().manual_seed(seed))
    loop = EnvLoop(env, policy, generator=torch.Generator().manual_seed(seed + 1))
    rews = [loop.run(horizon)["rew"] for _ in range(updates)]
    return (torch.cat(rews) != 0).float().mean().item()


@torch.no_grad()
def step_timing(wm, rem, dataset, envs: int, seed: int) -> dict[str, float]:
    sampler = SegmentSampler(dataset, 4, envs, [0.1, 0.1, 0.1, 0.7], seed=seed)
    env = ImaginationEnv(wm, rem, sampler, num_envs=envs, horizon=15)
    env.reset()
    act = torch.zeros(envs, dtype=torch.long)
    t0 = time.perf_counter()
    for _ in range(5):
        nxt = wm.predict_next(env.obs_buffer, env.act_buffer)
    t1 = time.perf_counter()
    for _ in range(5):
        rem.sample(env.obs_buffer[:, -1], act, nxt, env.rew_end_state)
    t2 = time.perf_counter()
    return {"world_model_step_s": (t1 - t0) / 5, "rew_end_step_s": (t2 - t1) / 5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    cfg, wm, rem, ac, dataset, epoch = load_run(args.run)
    out = {"run": str(args.run), "epoch": epoch, "real_steps": dataset.num_steps, "real_reward_rate": real_reward_rate(dataset)}
    out["teacher_forced_reward_rate"], out["same_transitions_real_rate"] = teacher_forced_rate(rem, dataset, 8, args.seed)
    n = cfg.world_model.num_actions
    policies = {"random": FixedPreference(n, None), "agent": ac}
    policies.update({f"prefer_{a}": FixedPreference(n, a) for a in range(n)})
    for name, policy in policies.items():
        out[f"imagined_rate_{name}"] = imagined_rate(wm, rem, dataset, policy, args.envs, args.updates, args.seed, cfg.horizon)
        print(name, out[f"imagined_rate_{name}"], flush=True)
    out.update(step_timing(wm, rem, dataset, cfg.training_actor_critic.batch_size, args.seed))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
