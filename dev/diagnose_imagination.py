"""Does a run's imagination reward what the real game rewards? (docs/journal/imagination_vs_real.md)

Loads a run's newest checkpoint (``diamond_lite.run_folder.load_run``) and measures, on its own replay data:

* the real reward rate (non-zero rewards per step) of the dataset;
* the reward/end model's sampled reward rate on real transitions (teacher forcing: real next frames);
* the imagined reward rate over ``horizon``-step imagined episodes, for a uniformly random policy, for
  policies that prefer one action 60% of the time, and for the run's agent;
* the time each part of one imagined step takes.

    python dev/diagnose_imagination.py runs/Qbert-course [--envs 32] [--updates 8] [--teacher-batches 8]
    python dev/diagnose_imagination.py runs/Seaquest-course --at-rewards [--strip docs/img/x.png]

``--at-rewards`` checks only whether the world model draws the real rewarding events one step ahead (the reward/end
model's p(reward) on the real next frame against the predicted one), with the reward/end model's reward rate on real
transitions; ``--ahead`` whether it still draws them when it dreams 1, 2, 4, 8 or 15 steps from real frames with the
real actions (``--world-model`` takes one saved apart). ``--dataset DIR`` measures on other episodes than the run's,
such as held-out ones: whether the models carry over to play they never trained on. Random-policy episodes no model
trained on are one call away: ``diamond_lite.pretrain.collect_random(GAME, Path(DIR), STEPS, SEED, split="test")``,
with a seed no run collects with (a run's own collection is seeded with its ``seed``, 0 by default). The one-step
and k-ahead checks are those of docs/journal/world_model_on_course_budgets.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diamond_lite.actor_critic import EnvLoop
from diamond_lite.atari import make_env
from diamond_lite.data import Dataset, SegmentSampler
from diamond_lite.imagination import ImaginationEnv
from diamond_lite.rew_end import HORIZON, RewEndModel
from diamond_lite.run_folder import load_run
from diamond_lite.world_model import WorldModel


def real_reward_rate(dataset: Dataset) -> float:
    rews = np.concatenate([ep.rew for ep in dataset])
    return float((rews != 0).mean())


@torch.no_grad()
def teacher_forced_rate(rem: RewEndModel, dataset: Dataset, batches: int, seed: int) -> tuple[float, float]:
    """Reward rate the reward/end model samples on real transitions, and the real rate on the same ones."""
    sampler = SegmentSampler(dataset, 4 + HORIZON, 32, [0.1, 0.1, 0.1, 0.7], seed=seed, can_sample_beyond_end=True)
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


def rewarding_segments(dataset: Dataset, before: int, max_events: int) -> tuple[Tensor, Tensor] | None:
    """The newest ``max_events`` real rewarding steps ``t`` with ``before`` steps of history: frames ``x_{t-before}`` to
    ``x_{t+1}`` in [-1, 1], ``(B, before + 2, C, H, W)``, and the actions taken at ``x_{t-before}`` to ``x_t``."""
    segments = []
    for ep in dataset:
        for t in np.flatnonzero(ep.rew != 0):
            if t >= before and t + 1 < len(ep.obs):
                segments.append((ep.obs[t - before : t + 2], ep.act[t - before : t + 1]))
    segments = segments[-max_events:]
    if not segments:
        return None
    frames = torch.from_numpy(np.stack([f for f, _ in segments])).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1)
    return frames, torch.from_numpy(np.stack([a for _, a in segments])).long()


@torch.no_grad()
def one_step_at_rewards(wm, rem, dataset: Dataset, history: int = 15, max_events: int = 32) -> dict:
    """Does the world model draw a rewarding event one step ahead? At each real step ``t`` that earned a reward
    (with ``history`` real steps before it), the reward/end model reads the real history, then either the real
    next frame or the world model's prediction of it (from the 4 real frames and actions up to ``t``); returns
    the mean p(reward) of both, and the frames (``x_t``, real and predicted ``x_{t+1}``) for a strip. The same
    p(reward) with ``x_t`` repeated as the next frame is the floor: what the history alone tells the reward/end model,
    so a world model whose prediction scores no higher draws nothing of the event."""
    n = wm.n
    found = rewarding_segments(dataset, max(history, n - 1), max_events)
    if found is None:
        return {"events": 0}
    frames, act = found
    predicted = wm.predict_next(frames[:, -n - 1 : -1], act[:, -n:]).float().clamp(-1, 1)
    p = {}
    for name, last in (("real", frames[:, -1]), ("predicted", predicted), ("repeated", frames[:, -2])):
        next_obs = torch.cat([frames[:, 1:-1], last[:, None]], dim=1)
        logits_rew, _, _ = rem(frames[:, :-1], act, next_obs)
        p[name] = (1 - logits_rew[:, -1].float().softmax(-1)[:, 1]).mean().item()  # class 1: no reward
    return {"events": frames.shape[0], "p_reward_real_next": p["real"], "p_reward_predicted_next": p["predicted"],
            "p_reward_repeated_frame": p["repeated"], "frames": (frames[:, -2], frames[:, -1], predicted)}  # fmt: skip


@torch.no_grad()
def ahead_at_rewards(
    wm, rem, dataset: Dataset, leads=(1, 2, 4, 8, 15), history: int = 15, max_events: int = 32, seed: int = 0
) -> dict:
    """Does the world model carry a rewarding event ``k`` steps ahead? At each real rewarding step ``t`` the world model
    dreams ``k`` frames from the 4 real frames up to ``s = t + 1 - k``, with the real actions (``k = 1`` is the one-step
    check), and the reward/end model, having read ``history`` real steps up to ``s``, reads the dreamed transitions;
    returns its mean p(reward) at the last one (``x_t -> x_{t+1}``) per lead, with the real frames (the ceiling) and with
    ``x_s`` frozen in place of every dreamed frame (the floor: the history alone), and the frames for a strip.
    Imagination in training dreams up to 15 steps (the horizon) from a real start: a hit it cannot carry some steps
    ahead never pays there, however well it is drawn one step ahead."""
    n, longest = wm.n, max(leads)
    found = rewarding_segments(dataset, longest + history - 1, max_events)
    if found is None:
        return {"events": 0}
    frames, act = found
    last = frames.shape[1] - 1  # index of x_{t+1}; transition i goes from frame i to frame i + 1 with act[:, i]

    def p_reward(seq: Tensor, first: int) -> float:
        # the reward/end model reads `history` transitions before frame `first`, then on to x_{t+1}
        logits_rew, _, _ = rem(seq[:, first - history : last], act[:, first - history : last], seq[:, first - history + 1 : last + 1])
        return (1 - logits_rew[:, -1].float().softmax(-1)[:, 1]).mean().item()  # class 1: no reward

    generator = torch.Generator().manual_seed(seed)
    out = {"events": frames.shape[0], "p_reward_real": p_reward(frames, last - longest)}
    predicted = {}
    for k in leads:
        s = last - k  # the last real frame
        dreamed = wm.rollout(frames[:, s - n + 1 : s + 1], act[:, s - n + 1 : last], generator=generator).float().clamp(-1, 1)
        predicted[k] = dreamed[:, -1]
        seq = frames.clone()
        seq[:, s + 1 :] = dreamed
        out[f"p_reward_ahead_{k}"] = p_reward(seq, s)
        frozen = frames.clone()
        frozen[:, s + 1 :] = frames[:, s : s + 1]
        out[f"p_reward_frozen_{k}"] = p_reward(frozen, s)
    out["frames"] = (frames[:, -1], predicted)
    return out


def save_ahead_strip(frames: tuple, path: Path, rows: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, predicted = frames
    r = min(rows, real.shape[0])
    columns = [("real x_t+1", real)] + [(f"dreamed {k} ahead", x) for k, x in predicted.items()]
    fig, axes = plt.subplots(r, len(columns), figsize=(1.4 * len(columns), 1.45 * r + 0.4), squeeze=False)
    for c, (label, batch) in enumerate(columns):
        for i in range(r):
            axes[i, c].imshow(batch[-1 - i].permute(1, 2, 0).add(1).div(2).clamp(0, 1).numpy(), interpolation="nearest")
            axes[i, c].set_xticks([]), axes[i, c].set_yticks([])
        axes[0, c].set_title(label, fontsize=7)
    fig.suptitle("rewarding steps, real and dreamed k steps ahead", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def save_strip(frames: tuple, path: Path, columns: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ("x_t (real)", "x_t+1 real", "x_t+1 world model")
    k = min(columns, frames[0].shape[0])
    fig, axes = plt.subplots(3, k, figsize=(1.4 * k, 4.4), squeeze=False)
    for r, (label, batch) in enumerate(zip(rows, frames)):
        for c in range(k):
            axes[r, c].imshow(batch[c].permute(1, 2, 0).add(1).div(2).clamp(0, 1).numpy(), interpolation="nearest")
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle("rewarding steps: the real next frame and the world model's one-step prediction", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


@torch.no_grad()
def step_timing(wm, rem, dataset, envs: int, seed: int) -> dict[str, float]:
    sampler = SegmentSampler(dataset, 4, envs, [0.1, 0.1, 0.1, 0.7], seed=seed)
    env = ImaginationEnv(wm, rem, sampler, num_envs=envs, horizon=HORIZON)
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
    parser.add_argument("--envs", type=int, default=32, help="imagined episodes played side by side")
    parser.add_argument("--updates", type=int, default=8, help="windows of the run's horizon per policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-batches", type=int, default=8,
                        help="batches of 32 real segments for the reward/end model's rate on real transitions")
    parser.add_argument("--at-rewards", action="store_true", help="only the one-step check at the real rewarding steps")
    parser.add_argument("--strip", type=Path, default=None, help="with --at-rewards or --ahead: save their frames to this image")
    parser.add_argument("--ahead", action="store_true", help="only the k-steps-ahead check at the real rewarding steps")
    parser.add_argument("--world-model", type=Path, default=None, help="a world model saved apart (world_model_budget.py --save)")
    parser.add_argument("--dataset", type=Path, default=None,
                        help="measure on these episodes instead of the run's own (world_model_budget.py --held-out keeps some "
                             "in RUN/held_out; diamond_lite.pretrain.collect_random plays more): whether the models carry "
                             "over to play they never trained on")
    parser.add_argument("--prefer", nargs="+", default=None, metavar="ACTION",
                        help="imagined rates for these preferences only (action names such as DOWNLEFTFIRE), with the "
                             "random policy and the agent; default: every action")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    run = load_run(args.run)
    cfg, wm, rem, ac, dataset, epoch = run.cfg, run.world_model, run.rew_end_model, run.actor_critic, run.dataset, run.epoch
    if args.world_model:
        wm = WorldModel.load(args.world_model, game=cfg.game)
    if args.dataset:
        dataset = Dataset(args.dataset)
        if not len(dataset):
            parser.error(f"{args.dataset} holds no episodes")
    where = str(args.dataset or args.run / "dataset" / "train")
    if args.ahead:
        result = ahead_at_rewards(wm, rem, dataset, seed=args.seed)
        frames = result.pop("frames", None)
        if args.strip and frames is not None:
            save_ahead_strip(frames, args.strip)
        print(json.dumps({"run": str(args.run), "epoch": epoch, "dataset": where, "world_model_updates": wm.num_updates, **result}))
        return
    if args.at_rewards:
        result = one_step_at_rewards(wm, rem, dataset)
        # how often the reward/end model pays on these real transitions, against how often they paid: with the
        # "real" p(reward) at the rewarding steps, whether it knows this play or only the run's own
        result["teacher_forced_reward_rate"], result["same_transitions_real_rate"] = teacher_forced_rate(rem, dataset, args.teacher_batches, args.seed)
        frames = result.pop("frames", None)
        if args.strip and frames is not None:
            save_strip(frames, args.strip)
        print(json.dumps({"run": str(args.run), "epoch": epoch, "dataset": where, **result}, indent=1))
        return
    out = {"run": str(args.run), "epoch": epoch, "dataset": where, "real_steps": dataset.num_steps, "real_reward_rate": real_reward_rate(dataset)}
    out["teacher_forced_reward_rate"], out["same_transitions_real_rate"] = teacher_forced_rate(rem, dataset, args.teacher_batches, args.seed)
    n = cfg.world_model.num_actions
    policies = {"random": FixedPreference(n, None), "agent": ac}
    names = make_env(cfg.game).action_names
    for a in args.prefer or []:
        if a not in names:
            parser.error(f"--prefer {a}: {cfg.game} has the actions {', '.join(names)}")
    chosen = range(n) if args.prefer is None else [names.index(a) for a in args.prefer]
    policies.update({f"prefer_{names[a]}": FixedPreference(n, a) for a in chosen})
    for name, policy in policies.items():
        out[f"imagined_rate_{name}"] = imagined_rate(wm, rem, dataset, policy, args.envs, args.updates, args.seed, cfg.horizon)
        print(name, out[f"imagined_rate_{name}"], flush=True)
    out.update(step_timing(wm, rem, dataset, cfg.training_actor_critic.batch_size, args.seed))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
