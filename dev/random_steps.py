"""Play ``--steps`` random-policy steps of a game into a dataset folder: held-out episodes for the checks of
``diagnose_imagination.py --dataset`` (docs/agent.md, "Sessions 12–13").

    python dev/random_steps.py KungFuMaster runs/held_out_test --steps 6000 --split test --seed 10001

``--split train`` cuts episodes at every life loss, as a run's own data is cut; ``--split test`` plays whole games.
Choose a seed no run collects with (a run's own collection is seeded with its ``seed``, 0 by default), so the
episodes are new to every model. Adds to the folder up to ``--steps`` if it already holds some.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diamond_lite.atari import make_env  # noqa: E402
from diamond_lite.data import Collector, Dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("game")
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    if args.steps <= 0:
        parser.error(f"--steps must be positive, got {args.steps}")

    dataset = Dataset(args.out)
    missing = args.steps - dataset.num_steps
    if missing > 0:
        env = make_env(args.game, split=args.split, seed=args.seed)
        Collector(env, dataset, seed=args.seed).collect(num_steps=missing)
    rewards = sum(int((ep.rew != 0).sum()) for ep in dataset)
    print(f"{args.out}: {dataset.num_steps} steps in {len(dataset)} episodes, {rewards} rewarding steps")


if __name__ == "__main__":
    main()
