"""How the full run's default course game was chosen (docs/agent.md, "Choosing the course game").

A two-hour CPU run makes a few hundred actor-critic updates where the paper makes 400,000. What such a run can learn
is mostly *which actions pay*. So, per game, this measures with a uniformly random policy:

* how often a step earns a reward (the reward/end model needs rewards to learn; rare ones cost it thousands of updates),
* the random policy's test return, and the best return of a policy that picks one fixed action 60% of the time and a
  random one otherwise (the head-room a state-blind preference already gives).

    python dev/choose_game.py Qbert Asterix Boxing --density-steps 5000 --episodes 10
    python dev/choose_game.py KungFuMaster --per-action --biased-episodes 6

``--per-action`` prints every preference's mean return and reward events per step, to set beside what a world model's
imagination pays each preference (``dev/diagnose_imagination.py``): whether the dream ranks the actions as the game does.
"""

from __future__ import annotations

import argparse

import numpy as np

from diamond_lite.atari import make_env


def reward_density(game: str, num_steps: int, seed: int = 0) -> tuple[float, float]:
    env, rng = make_env(game, split="train", seed=seed), np.random.default_rng(seed)
    env.reset(seed=seed)
    positive = negative = 0
    for _ in range(num_steps):
        _, reward, end, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        positive, negative = positive + (reward > 0), negative + (reward < 0)
        if end or trunc:
            env.reset()
    return positive / num_steps, negative / num_steps


def play(env, rng, preferred: int | None, p: float, max_steps: int, events: list | None = None) -> tuple[float, int]:
    env.reset(seed=int(rng.integers(2**30)))
    total, count = 0.0, 0
    for t in range(max_steps):
        use = preferred is not None and rng.random() < p
        _, reward, end, trunc, _ = env.step(preferred if use else int(rng.integers(env.action_space.n)))
        total, count = total + reward, count + (reward != 0)
        if end or trunc:
            break
    if events is not None:
        events.append(count)
    return total, t + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("games", nargs="+")
    parser.add_argument("--density-steps", type=int, default=5000)
    parser.add_argument("--episodes", type=int, default=10, help="random-policy test episodes")
    parser.add_argument("--biased-episodes", type=int, default=3, help="test episodes per preferred action")
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--per-action", action="store_true", help="print each preference's return and reward events per step")
    args = parser.parse_args()
    for game in args.games:
        pos, neg = reward_density(game, args.density_steps)
        env, rng = make_env(game, split="test", seed=0), np.random.default_rng(1)
        random_events = []
        random = [play(env, rng, None, 0.0, args.max_steps, random_events) for _ in range(args.episodes)]
        biased = []
        if args.per_action:
            steps = sum(n for _, n in random)
            print(f"  random            return {np.mean([r for r, _ in random]):8.1f}  reward events per step "
                  f"{sum(random_events) / steps:.4f} ({sum(random_events)} in {steps} steps)", flush=True)
        for a in range(env.action_space.n):
            events = []
            played = [play(env, rng, a, 0.6, args.max_steps, events) for _ in range(args.biased_episodes)]
            biased.append((np.mean([r for r, _ in played]), env.action_names[a]))
            if args.per_action:
                steps = sum(n for _, n in played)
                print(f"  prefer {a:2} {env.action_names[a]:14} return {biased[-1][0]:8.1f}  reward events per step "
                      f"{sum(events) / steps:.4f} ({sum(events)} in {steps} steps)", flush=True)
        best = max(biased)
        returns = [r for r, _ in random]
        print(f"{game:14} actions {env.action_space.n:2}  reward+ {pos:6.2%}  reward- {neg:6.2%}  random {np.mean(returns):8.1f} ± "
              f"{np.std(returns):6.1f} (episode {np.mean([n for _, n in random]):5.0f} steps)  best 60%-preference {best[1]} "
              f"{best[0]:.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
