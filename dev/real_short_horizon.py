"""What the real game pays each action preference over imagination's horizon, from the states a replay holds.

``dev/diagnose_imagination.py`` measures what the dream pays a policy in windows of 15 imagined steps, each started
from a segment of random-play data. The per-action sweep of whole games (docs/journal/imagination_vs_real.md,
2026-12-04) measured whole games instead, where a preference also changes which states the game reaches. This is the
real counterpart of the dream's measurement: a uniformly random policy plays the real game (train split, as the replay
was collected); at every ``--every``-th step the emulator is cloned, and from that same state each policy plays
``--horizon`` steps, with the same random numbers for every policy (common random numbers, as in the dream's
measurement). A window stops where the episode ends (a life loss, in the train split), as an imagined episode does.

    python dev/real_short_horizon.py KungFuMaster --starts 400 --prefer DOWNLEFTFIRE LEFTFIRE NOOP RIGHTFIRE

Prints, per policy, the reward events per step and per window, with a 95% bootstrap interval over start states.
Measured on KungFuMaster 2026-12-04 (docs/journal/imagination_vs_real.md).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from diamond_lite.atari import make_env
from diamond_lite.rew_end import HORIZON


def snapshot(env) -> tuple:
    """Everything ``AtariEnv.step`` reads: the emulator and the wrapper's own bookkeeping."""
    return env.ale.cloneState(), env._lives, env._game_over, [p.copy() for p in env._pool], env._last_obs.copy()


def restore(env, snap: tuple) -> None:
    state, env._lives, env._game_over, pool, last = snap
    env.ale.restoreState(state)
    for mine, saved in zip(env._pool, pool):
        mine[:] = saved
    env._last_obs = last.copy()


def window(env, preferred: int | None, p: float, horizon: int, rng: np.random.Generator) -> int:
    """Reward events of one window of ``horizon`` steps from the env's current state."""
    n = env.action_space.n
    events = 0
    for _ in range(horizon):
        # draw both numbers every step so that all policies use the same stream
        use, uniform = rng.random() < p, int(rng.integers(n))
        action = preferred if (preferred is not None and use) else uniform
        _, reward, end, trunc, _ = env.step(action)
        events += reward != 0
        if end or trunc:
            break
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("game")
    parser.add_argument("--starts", type=int, default=400, help="start states (windows per policy)")
    parser.add_argument("--every", type=int, default=37, help="random steps between start states")
    parser.add_argument("--horizon", type=int, default=HORIZON, help=f"steps per window (default: imagination's {HORIZON})")
    parser.add_argument("--p", type=float, default=0.6, help="probability of the preferred action")
    parser.add_argument("--prefer", nargs="+", default=None, metavar="ACTION", help="action names; default: every action")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = make_env(args.game, split="train", seed=args.seed)
    names = env.action_names
    for a in args.prefer or []:
        if a not in names:
            parser.error(f"--prefer {a}: {args.game} has the actions {', '.join(names)}")
    policies = {"random": None} | {f"prefer_{a}": names.index(a) for a in (args.prefer or names)}
    events = {k: [] for k in policies}
    walk = np.random.default_rng(args.seed)
    env.reset(seed=args.seed)
    for s in range(args.starts):
        for _ in range(args.every):  # the random walk that supplies the start states
            _, _, end, trunc, _ = env.step(int(walk.integers(env.action_space.n)))
            if end or trunc:
                env.reset()
        snap = snapshot(env)
        for name, action in policies.items():
            restore(env, snap)
            events[name].append(window(env, action, args.p, args.horizon, np.random.default_rng([args.seed, s])))
        restore(env, snap)
    boot = np.random.default_rng(args.seed + 1)
    out = {"game": args.game, "starts": args.starts, "horizon": args.horizon, "p": args.p}
    for name, ev in events.items():
        ev = np.array(ev, float)
        means = ev[boot.integers(len(ev), size=(10_000, len(ev)))].mean(1)
        out[name] = {"events_per_window": ev.mean(), "events_per_step_approx": ev.mean() / args.horizon,
                     "ci95": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]}
        print(f"{name:24} {ev.mean():.4f} reward events per window ({ev.mean() / args.horizon:.4f} per step), "
              f"95% [{out[name]['ci95'][0]:.4f}, {out[name]['ci95'][1]:.4f}]", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
