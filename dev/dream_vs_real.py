"""Does the dream pay each action preference what the real game pays it, from the same states?

An actor-critic trained in imagination can beat a random policy only if the dream ranks its choices the way the
game does. This measures that ranking directly, paired:

1. a uniformly random policy plays the real game (train split, as the replay data was collected); every
   ``--every``-th step, where the episode has 4 frames of history, the emulator is cloned: a start state, with
   its last 4 frames and the 3 actions between them;
2. each policy (uniform random, and "prefer action X": X with probability ``--p``, a uniform action otherwise)
   draws one sequence of ``--horizon`` actions per start, from random numbers shared by all policies;
3. **real**: from the cloned emulator, the sequence is played and its reward events counted, up to the end of the
   episode (a life loss, in the train split);
4. **dream**: from the same 4 frames, the world model dreams the same actions (the same sampling noise for every
   policy) and the reward/end model, burned in on the 3 context transitions as in ``ImaginationEnv``, gives each
   step's probability of a non-zero reward and of an end. The dream's expected reward events of a window are
   ``sum_t S_t p_t``, ``S_t`` the probability that the dreamed episode has not ended before step ``t``: the mean of
   what ``ImaginationEnv`` would sample, without the sampling noise.

    python dev/dream_vs_real.py runs/KFM-c20 --starts 256 --prefer DOWNLEFTFIRE LEFTFIRE NOOP RIGHTFIRE
    python dev/dream_vs_real.py runs/KFM-c20 --checkpoint runs/KFM-c20/checkpoints/epoch_00001.pt

A third column, the reward/end model on the *real* frames of each window (teacher forcing), tells the two models'
parts apart: where it follows the game and the dream does not, the world model is what loses the reward. Prints per
policy the three (with 95% bootstrap intervals over the start states, and each column's correlation with the real
events over the start states), and the rank correlations with the real game across policies. Measured on KungFuMaster
2026-12-04 (docs/journal/imagination_vs_real.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from real_short_horizon import restore, snapshot  # noqa: E402

from diamond_lite.atari import make_env  # noqa: E402
from diamond_lite.rew_end import HORIZON  # noqa: E402
from diamond_lite.run_folder import load_run  # noqa: E402
from diamond_lite.viz import to_image  # noqa: E402
from diamond_lite.world_model import WorldModel  # noqa: E402


def collect_starts(env, count: int, every: int, seed: int, n: int = 4) -> list[dict]:
    """``count`` start states of a uniformly random walk: emulator snapshot, last ``n`` frames, the actions between."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames, actions, starts, step = [obs], [], [], 0
    while len(starts) < count:
        a = int(rng.integers(env.action_space.n))
        obs, _, end, trunc, _ = env.step(a)
        frames, actions = (frames + [obs])[-n:], (actions + [a])[-(n - 1):]
        step += 1
        if end or trunc:
            obs, _ = env.reset()
            frames, actions = [obs], []
        elif step % every == 0 and len(frames) == n:
            starts.append({"snap": snapshot(env), "frames": np.stack(frames), "actions": np.array(actions)})
    return starts


def action_sequences(num_actions: int, preferred: int | None, p: float, starts: int, horizon: int, seed: int) -> np.ndarray:
    """``(starts, horizon)`` actions; every policy consumes the same random numbers (common random numbers)."""
    seqs = np.empty((starts, horizon), np.int64)
    for s in range(starts):
        rng = np.random.default_rng([seed, s])
        use, uniform = rng.random(horizon) < p, rng.integers(num_actions, size=horizon)
        seqs[s] = np.where(use, preferred, uniform) if preferred is not None else uniform
    return seqs


def real_events(env, starts: list[dict], seqs: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Reward events of each start's window in the real game, and the frames it played (the start's last first)."""
    out, played = np.zeros(len(starts)), []
    for i, (start, seq) in enumerate(zip(starts, seqs)):
        restore(env, start["snap"])
        frames = [start["frames"][-1]]
        for a in seq:
            obs, reward, end, trunc, _ = env.step(int(a))
            frames.append(obs)
            out[i] += reward != 0
            if end or trunc:
                break
        played.append(np.stack(frames))
    return out, played


def to_torch(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1)


@torch.no_grad()
def judge_on_real(rem, starts: list[dict], played: list[np.ndarray], seqs: np.ndarray) -> np.ndarray:
    """The reward/end model's expected reward events on the real frames of each window (teacher forcing): what the
    dream's column would read if the world model drew the real frames."""
    out = np.zeros(len(starts))
    for i, (start, frames, seq) in enumerate(zip(starts, played, seqs)):
        ctx = to_torch(start["frames"])[None]
        _, _, state = rem(ctx[:, :-1], torch.from_numpy(start["actions"])[None], ctx[:, 1:])
        real = to_torch(frames)[None]
        steps = real.shape[1] - 1
        logits_rew, _, _ = rem(real[:, :-1], torch.from_numpy(seq[:steps])[None], real[:, 1:], state)
        out[i] = float((1 - logits_rew[0].softmax(-1)[:, 1]).sum())
    return out


@torch.no_grad()
def dream_events(wm, rem, starts: list[dict], seqs: np.ndarray, seed: int, batch: int = 64, keep: bool = False,
                 num_steps: int | None = None):
    """The dream's expected reward events of each start's window; with ``keep``, also its frames ``(B, T, C, H, W)``
    and each step's probability of a non-zero reward ``(B, T)``."""
    out, frames, p_rews = [], [], []
    for lo in range(0, len(starts), batch):
        part = starts[lo : lo + batch]
        obs = torch.stack([to_torch(s["frames"]) for s in part])
        ctx_act = torch.from_numpy(np.stack([s["actions"] for s in part]))
        seq = torch.from_numpy(seqs[lo : lo + batch])
        _, _, state = rem(obs[:, :-1], ctx_act, obs[:, 1:])  # burn-in on the context, as ImaginationEnv does
        act = torch.cat([ctx_act, seq[:, :1]], dim=1)
        generator = torch.Generator().manual_seed(seed + lo)  # the same noise for every policy
        alive, expected, dreamed, paid = torch.ones(len(part)), torch.zeros(len(part)), [], []
        for t in range(seq.shape[1]):
            act[:, -1] = seq[:, t]
            nxt = wm.predict_next(obs, act, num_steps=num_steps, generator=generator)
            logits_rew, logits_end, state = rem(obs[:, -1:], act[:, -1:], nxt[:, None], state)
            p_rew = 1 - logits_rew[:, 0].softmax(-1)[:, 1]
            p_end = logits_end[:, 0].softmax(-1)[:, 1]
            expected += alive * p_rew
            alive = alive * (1 - p_end)
            obs = torch.cat([obs[:, 1:], nxt[:, None]], dim=1)
            act = torch.cat([act[:, 1:], act[:, :1]], dim=1)
            if keep:
                dreamed.append(nxt)
                paid.append(p_rew)
        out.append(expected.numpy())
        if keep:
            frames.append(torch.stack(dreamed, 1))
            p_rews.append(torch.stack(paid, 1))
    if keep:
        return np.concatenate(out), torch.cat(frames), torch.cat(p_rews)
    return np.concatenate(out)


def save_strip(path: Path, policy: str, played: list[np.ndarray], frames, p_rews, rows: int = 6) -> None:
    """The ``rows`` windows whose dream the reward/end model pays most: at the paid step, the real frames before and
    after it (same start, same actions) beside the dreamed ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = p_rews.max(1).values.argsort(descending=True)[:rows].tolist()
    fig, axes = plt.subplots(rows, 4, figsize=(6.4, 1.7 * rows), squeeze=False)
    for r, i in enumerate(best):
        t = int(p_rews[i].argmax())
        prev_dream = frames[i, t - 1] if t > 0 else None
        real = played[i]
        cells = [
            (real[t] if t < len(real) else None, f"real t={t}"),
            (real[t + 1] if t + 1 < len(real) else None, f"real t={t + 1}"),
            (prev_dream, f"dream t={t}"),
            (frames[i, t], f"dream t={t + 1}, p={float(p_rews[i, t]):.2f}"),
        ]
        for c, (img, title) in enumerate(cells):
            ax = axes[r, c]
            ax.axis("off")
            ax.set_title(title, fontsize=7)
            if img is None:
                continue
            ax.imshow(to_image(img), interpolation="nearest")
    fig.suptitle(f"where the dream pays most under {policy}: real game (left) and dream (right), same start and actions",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bootstrap(x: np.ndarray, rng: np.random.Generator) -> list[float]:
    means = x[rng.integers(len(x), size=(10_000, len(x)))].mean(1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the run's newest")
    parser.add_argument("--world-model", type=Path, default=None, help="a world model saved apart (world_model_budget.py --save)")
    parser.add_argument("--starts", type=int, default=256)
    parser.add_argument("--every", type=int, default=37)
    parser.add_argument("--horizon", type=int, default=HORIZON, help=f"steps per window (default: imagination's {HORIZON})")
    parser.add_argument("--p", type=float, default=0.6)
    parser.add_argument("--prefer", nargs="+", default=None, metavar="ACTION", help="action names; default: every action")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--denoising-steps", type=int, default=None,
                        help="Euler steps per dreamed frame; default: the run's num_denoising_steps (DIAMOND: 3)")
    parser.add_argument("--jsonl", type=Path, default=None, help="append the result as one JSON line")
    parser.add_argument("--strip", type=Path, default=None, help="save the windows the dream pays most, real beside dream")
    parser.add_argument("--strip-policy", default="random", help="whose windows --strip shows (random or prefer_ACTION)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    run = load_run(args.run, args.checkpoint)
    cfg, wm, rem, epoch = run.cfg, run.world_model, run.rew_end_model, run.epoch
    steps = args.denoising_steps or cfg.num_denoising_steps  # what the run's imagination samples with
    if args.world_model:
        wm = WorldModel.load(args.world_model, game=cfg.game)
    env = make_env(cfg.game, split="train", seed=10_000 + args.seed)  # a seed no run collects with
    names = env.action_names
    for a in args.prefer or []:
        if a not in names:
            parser.error(f"--prefer {a}: {cfg.game} has the actions {', '.join(names)}")
    policies = {"random": None} | {f"prefer_{a}": names.index(a) for a in (args.prefer or names)}
    if args.strip and args.strip_policy not in policies:
        parser.error(f"--strip-policy {args.strip_policy}: this check plays {', '.join(policies)}")
    t0 = time.perf_counter()
    starts = collect_starts(env, args.starts, args.every, args.seed)
    boot = np.random.default_rng(args.seed + 1)
    out = {"run": str(args.run), "epoch": epoch, "world_model": str(args.world_model or ""), "world_model_updates": wm.num_updates,
           "denoising_steps": steps,
           "starts": args.starts, "horizon": args.horizon, "p": args.p, "policies": {}}
    for name, action in policies.items():
        seqs = action_sequences(env.action_space.n, action, args.p, len(starts), args.horizon, args.seed)
        real, played = real_events(env, starts, seqs)
        judged = judge_on_real(rem, starts, played, seqs)
        if args.strip and name == args.strip_policy:
            dream, frames, p_rews = dream_events(wm, rem, starts, seqs, args.seed, keep=True, num_steps=steps)
            save_strip(args.strip, name, played, frames, p_rews)
        else:
            dream = dream_events(wm, rem, starts, seqs, args.seed, num_steps=steps)
        with np.errstate(invalid="ignore", divide="ignore"):  # no real reward at all: no correlation (nan)
            corr, corr_judge = float(np.corrcoef(real, dream)[0, 1]), float(np.corrcoef(real, judged)[0, 1])
        r = out["policies"][name] = {
            "real": float(real.mean()), "real_ci95": bootstrap(real, boot),
            "judge_on_real": float(judged.mean()), "judge_on_real_ci95": bootstrap(judged, boot), "judge_corr": corr_judge,
            "dream": float(dream.mean()), "dream_ci95": bootstrap(dream, boot), "dream_corr": corr,
        }
        print(f"{name:22} real {r['real']:.4f} [{r['real_ci95'][0]:.4f}, {r['real_ci95'][1]:.4f}]   "
              f"judge on real frames {r['judge_on_real']:.4f} (per-start correlation {corr_judge:+.2f})   "
              f"dream {r['dream']:.4f} [{r['dream_ci95'][0]:.4f}, {r['dream_ci95'][1]:.4f}] "
              f"(per-start correlation {corr:+.2f})", flush=True)
    column = {k: [v[k] for v in out["policies"].values()] for k in ("real", "judge_on_real", "dream")}
    out["rank_correlation"] = spearman(column["real"], column["dream"])
    out["rank_correlation_judge"] = spearman(column["real"], column["judge_on_real"])
    out["seconds"] = time.perf_counter() - t0
    print(f"rank correlation with the real game across policies (Spearman): dream {out['rank_correlation']:+.2f}, "
          f"judge on real frames {out['rank_correlation_judge']:+.2f}; {out['seconds']:.0f} s")
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
