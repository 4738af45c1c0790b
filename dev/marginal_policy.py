"""Does a run's agent read the frame, or only prefer some actions? (issue 8; docs/agent.md, session 22)

Plays the agent of a run's newest checkpoint on test episodes (actions sampled, ε 0, as evaluation plays) and
counts its actions; then plays a *state-blind* policy that draws each action independently from those counts, on
the same number of episodes. If the agent scores no more than its own action frequencies played blind, what it
learned is which actions pay, not when.

    python dev/marginal_policy.py runs/Krull-course --episodes 40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from diagnose_imagination import load_run

from diamond_lite import actor_critic, atari, scores


class CountingPolicy:
    """Wraps a policy and counts the actions it picks."""

    def __init__(self, policy, num_actions: int) -> None:
        self.policy, self.counts = policy, np.zeros(num_actions, dtype=np.int64)

    def reset(self) -> None:
        self.policy.reset()

    def __call__(self, frame: np.ndarray) -> int:
        action = self.policy(frame)
        self.counts[action] += 1
        return action


class BlindPolicy:
    """Each action drawn independently of the frame, with fixed probabilities."""

    def __init__(self, probs: np.ndarray, seed: int) -> None:
        self.probs, self.rng = probs, np.random.default_rng(seed)

    def __call__(self, frame: np.ndarray) -> int:
        return int(self.rng.choice(len(self.probs), p=self.probs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=30_000, help="other seeds than the run's own evaluations")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cfg, _, _, model, _, epoch = load_run(args.run)
    max_steps = cfg.collection.test_max_steps or None

    env = atari.make_env(cfg.game, split="test", seed=args.seed)
    agent = CountingPolicy(actor_critic.Policy(model, epsilon=0.0, seed=args.seed), env.action_space.n)
    agent_returns = actor_critic.evaluate_policy(agent, env, args.episodes, max_steps=max_steps, desc="agent")
    probs = agent.counts / agent.counts.sum()

    env = atari.make_env(cfg.game, split="test", seed=args.seed + 1)
    blind_returns = actor_critic.evaluate_policy(BlindPolicy(probs, args.seed + 1), env, args.episodes,
                                                 max_steps=max_steps, desc="blind, same frequencies")
    d = scores.difference_ci(agent_returns, blind_returns)
    names = env.action_names
    top = sorted(zip(probs, names), reverse=True)[:3]
    print(f"{cfg.game}, epoch {epoch}: the agent's most frequent actions",
          ", ".join(f"{name} {p:.0%}" for p, name in top))
    print(f"agent {np.mean(agent_returns):.1f} ± {np.std(agent_returns):.1f}, blind with its frequencies "
          f"{np.mean(blind_returns):.1f} ± {np.std(blind_returns):.1f} over {args.episodes} episodes each: difference "
          f"{d['difference']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}], {d['share_at_or_below_zero']:.0%} of draws <= 0")
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "epoch": epoch, "episodes": args.episodes,
                                         "action_frequencies": dict(zip(names, probs.round(4).tolist())),
                                         "agent_returns": agent_returns, "blind_returns": blind_returns, **d}, indent=1))


if __name__ == "__main__":
    main()
