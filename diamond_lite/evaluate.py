"""Score finished runs against the published Atari 100k results (notebook 07).

    python -m diamond_lite.evaluate runs/breakout-0 runs/breakout-1 [--plot scores.png] [--json scores.json]
    python -m diamond_lite.evaluate runs/Seaquest-course --curves curves.png     # and its learning curves
    python -m diamond_lite.evaluate runs/KungFuMaster-course --fresh 100          # 100 new episodes, and random's

For each run: the mean and standard deviation of its final test returns (``results.json``: 100 episodes in the
paper profile, actions sampled from the policy with ε = 0, as DIAMOND evaluates) and its human-normalised score
(HNS). A run that has not finished is scored from its newest checkpoint over ``--episodes`` new test episodes.
Across runs and games: mean, median and interquartile mean of the HNS with stratified-bootstrap 95% confidence
intervals (Agarwal et al. 2021), and a table and plot beside DIAMOND's and IRIS's published per-game scores
(``data/atari100k_scores.json``; DreamerV3's per-game scores are not in it, only its headline mean).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import memory, scores
from .run_folder import read_log

COMPARED = ("DIAMOND", "IRIS")


def run_result(run_dir: str | Path, episodes: int = 10, progress: bool = True) -> dict:
    """The final results of a run, or a fresh evaluation of its newest checkpoint when it has none."""
    run_dir = Path(run_dir)
    results = run_dir / "results.json"
    if results.exists():
        return json.loads(results.read_text())
    return fresh_result(run_dir, episodes, with_random=False, progress=progress, seed_offset=20_000)


def fresh_result(run_dir: str | Path, episodes: int, *, with_random: bool = True, with_blind: bool = False,
                 progress: bool = True, seed_offset: int = 30_000) -> dict:
    """``episodes`` new test episodes of the run's newest checkpoint (ε = the run's test ε, the run's step cap), and
    with ``with_random`` as many of a uniformly random policy in the same conditions: a larger evaluation than the
    run's final one, on other seeds (``cfg.seed + seed_offset`` and up; the final evaluation used 10,000 + epoch and
    20,000), to narrow the interval of the difference without reusing its episodes.

    ``with_blind`` also plays the agent's *blind twin* (``actor_critic.BlindPolicy``) as many episodes: a policy that
    draws each action from the agent's own action frequencies in those episodes, never looking at the frame. The
    question DIAMOND's paper is about, whether the agent uses what it sees, is whether it beats its twin."""
    from .actor_critic import BlindPolicy, CountingPolicy, Policy, RandomPolicy, evaluate_policy
    from .atari import make_env
    from .run_folder import load_run

    loaded = load_run(run_dir)
    cfg, agent = loaded.cfg, loaded.actor_critic
    max_steps = cfg.collection.test_max_steps or None
    env = make_env(cfg.game, split="test", seed=cfg.seed + seed_offset)
    policy = CountingPolicy(Policy(agent, epsilon=cfg.collection.test_epsilon, seed=cfg.seed + seed_offset), env.action_space.n)
    returns = evaluate_policy(policy, env, episodes, max_steps=max_steps, progress=progress, desc="agent")
    out = {"game": cfg.game, "profile": cfg.profile, "seed": cfg.seed, "epochs": loaded.epoch, "env_steps": loaded.env_steps,
           "returns": returns, "mean": float(np.mean(returns)), "std": float(np.std(returns)),
           "hns": scores.human_normalized_score(cfg.game, float(np.mean(returns)))}  # fmt: skip
    if not (run_dir / "results.json").exists():
        out["unfinished"] = True
    if with_random:
        env = make_env(cfg.game, split="test", seed=cfg.seed + seed_offset + 1)
        baseline = evaluate_policy(RandomPolicy(env, cfg.seed + seed_offset + 1), env, episodes, max_steps=max_steps,
                                   progress=progress, desc="random policy")  # fmt: skip
        out.update(random_returns=baseline, random_mean=float(np.mean(baseline)), random_std=float(np.std(baseline)))
    if with_blind:
        frequencies = policy.counts / policy.counts.sum()
        env = make_env(cfg.game, split="test", seed=cfg.seed + seed_offset + 2)
        blind = evaluate_policy(BlindPolicy(frequencies, cfg.seed + seed_offset + 2), env, episodes, max_steps=max_steps,
                                progress=progress, desc="blind twin")  # fmt: skip
        out.update(action_frequencies=dict(zip(env.action_names, frequencies.round(4).tolist())), blind_returns=blind,
                   blind_mean=float(np.mean(blind)), blind_std=float(np.std(blind)))  # fmt: skip
    return out


def versus_random(result: dict) -> dict | None:
    """The run's test returns against the random policy's in the same conditions (its final evaluation plays both):
    the difference of the means with a 95% bootstrap interval (``scores.difference_ci``); ``None`` when the run has
    no random baseline (an unfinished run)."""
    if not result.get("random_returns"):
        return None
    return scores.difference_ci(result["returns"], result["random_returns"])


def versus_blind(result: dict) -> dict | None:
    """The agent's returns against its blind twin's (``fresh_result(with_blind=True)``), as :func:`versus_random`."""
    if not result.get("blind_returns"):
        return None
    return scores.difference_ci(result["returns"], result["blind_returns"])


def format_versus_random(result: dict, d: dict, other: str = "random") -> str:
    verdict = "a clear margin" if d["low"] > 0 else ("clearly worse" if d["high"] < 0 else "no clear difference")
    label = {"random": "random", "blind": "its blind twin"}[other]
    return (f"{result['game']} seed {result.get('seed', 0)}: agent {np.mean(result['returns']):.1f} against {label} "
            f"{np.mean(result[f'{other}_returns']):.1f} over {len(result['returns'])} and {len(result[f'{other}_returns'])} "
            f"episodes, difference {d['difference']:+.1f}, 95% bootstrap interval [{d['low']:+.1f}, {d['high']:+.1f}] "
            f"({100 * d['share_at_or_below_zero']:.0f}% of draws <= 0): {verdict}")


def summarize(results: list[dict], n_boot: int = 2000) -> dict:
    """Per game (runs pooled) and across games: HNS aggregates with bootstrap CIs where runs are balanced."""
    by_game: dict[str, list[dict]] = {}
    for r in results:
        by_game.setdefault(r["game"], []).append(r)
    ref = scores.load_reference()
    games = {}
    for game, runs in sorted(by_game.items()):
        means = [r["mean"] for r in runs]
        games[game] = {
            "runs": len(runs),
            "return_mean": float(np.mean(means)),
            "return_std_over_episodes": float(np.mean([r["std"] for r in runs])),
            "return_std_over_runs": float(np.std(means)),
            "hns": float(scores.human_normalized_score(game, float(np.mean(means)))),
            "random": ref["random"]["scores"][game],
            "human": ref["human"]["scores"][game],
            **{m: float(scores.published(m)[game].mean()) for m in COMPARED},
        }
    out = {"games": games}
    counts = {g["runs"] for g in games.values()}
    if len(counts) == 1:  # a (runs, games) matrix: the rliable aggregates and their CIs
        matrix = np.array([[scores.human_normalized_score(game, r["mean"]) for r in runs] for game, runs in sorted(by_game.items())]).T
        out["aggregates"] = {
            stat: {"value": scores.point_estimate(matrix, stat), "ci95": list(scores.bootstrap_ci(matrix, stat, n_boot=n_boot))}
            for stat in ("mean", "median", "iqm")
        }
    return out


def table(summary: dict) -> str:
    header = "| game | runs | return (mean ± std) | HNS | " + " | ".join(COMPARED) + " | random | human |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for game, g in summary["games"].items():
        lines.append(f"| {game} | {g['runs']} | {g['return_mean']:.1f} ± {g['return_std_over_episodes']:.1f} | {g['hns']:.3f} | "
                     + " | ".join(f"{g[m]:.1f}" for m in COMPARED) + f" | {g['random']:.1f} | {g['human']:.1f} |")  # fmt: skip
    if "aggregates" in summary:
        lines.append("")
        for stat, a in summary["aggregates"].items():
            lines.append(f"HNS {stat}: {a['value']:.3f} (95% CI {a['ci95'][0]:.3f} to {a['ci95'][1]:.3f})")
    dreamer = scores.load_reference()["headline_mean_hns"]["DreamerV3 (2023)"]
    lines.append("Published over the 26 games (mean HNS): " + ", ".join(f"{m} {scores.method_aggregates(m)['mean']:.3f}" for m in COMPARED)
                 + f"; DreamerV3 {dreamer} (headline only: its per-game scores are not in data/)")  # fmt: skip
    return "\n".join(lines)


def plot(summary: dict, path: str | Path | None = None):
    """Per-game HNS: ours beside DIAMOND's and IRIS's published means."""
    import matplotlib.pyplot as plt

    games = list(summary["games"])
    x = np.arange(len(games))
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(games) + 2), 3))
    width = 0.8 / (1 + len(COMPARED))
    ours = [summary["games"][g]["hns"] for g in games]
    ax.bar(x, ours, width, label="this run" if len(games) == 1 else "ours", color="C0")
    for i, m in enumerate(COMPARED, start=1):
        ax.bar(x + i * width, [scores.human_normalized_score(g, summary["games"][g][m]) for g in games], width, label=m, color=f"C{i}")
    ax.axhline(0, color="k", lw=0.5)
    ax.axhline(1, color="k", lw=0.5, ls="--")
    ax.set_xticks(x + width * len(COMPARED) / 2, games)
    ax.set_ylabel("human-normalised score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig


CURVES = (("train_world_model", "loss", "world-model loss"), ("train_rew_end_model", "loss", "reward/end loss"),
          ("train_actor_critic", "return", "λ-return in imagination"), ("train_actor_critic", "entropy", "policy entropy"),
          ("evaluate", "mean", "real test return"))  # fmt: skip


def plot_curves(log: list[dict], path: str | Path | None = None, title: str | None = None):
    """A run's learning curves from its events: each model's loss, the λ-return the agent expects in
    imagination and its policy entropy per epoch, the real test returns, and the return of every training
    episode against real steps (train split: a life loss ends an episode) with a running mean."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 5.6))
    axes = axes.ravel()
    for ax, (event, key, name) in zip(axes, CURVES):
        chosen = [e for e in log if e["event"] == event and key in e]
        ax.plot([e["epoch"] for e in chosen], [e[key] for e in chosen], "o-" if event == "evaluate" else "-", ms=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    # The end of a finished run: its final evaluation and, for scale, the random policy's in the same conditions.
    ax = axes[4]
    final = next((e for e in log if e["event"] == "final_evaluation"), None)
    if final is not None:
        ax.errorbar([final["epoch"]], [final["mean"]], [final["std"]], fmt="s", color="C0", ms=5, capsize=3,
                    label=f"final, {len(final['returns'])} episodes")
    baseline = next((e for e in log if e["event"] == "random_baseline"), None)
    if baseline is not None:
        ax.axhline(baseline["mean"], color="C3", ls="--", lw=1, label=f"random policy, {len(baseline['returns'])} episodes")
    if final is not None or baseline is not None:
        ax.legend(fontsize=7)
    steps, returns = [], []
    for e in log:
        if e["event"] in ("first_collection", "collect"):
            steps += [e["env_steps"]] * len(e["returns"])
            returns += e["returns"]
    ax = axes[5]
    ax.plot(steps, returns, ".", ms=3, alpha=0.4, label="episode")
    if len(returns) >= 10:
        k = max(5, len(returns) // 15)
        ax.plot(steps[k - 1 :], np.convolve(returns, np.ones(k) / k, mode="valid"), "C1", label=f"mean of {k}")
    # where the random first collection ends and the agent starts to play
    ax.axvline(next((e["env_steps"] for e in log if e["event"] == "collect"), 0), color="gray", ls=":", lw=1)
    ax.set_title("training episodes (random, then the agent)", fontsize=10)
    ax.set_xlabel("real steps")
    ax.xaxis.set_major_locator(plt.MaxNLocator(5))  # a 20,000-step first collection leaves long labels
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by python -m diamond_lite.train")
    parser.add_argument("--episodes", type=int, default=10, help="test episodes for a run that has not finished")
    parser.add_argument("--fresh", type=int, default=None, metavar="N",
                        help="score each run over N new test episodes of its newest checkpoint and N of a random policy "
                             "in the same conditions (other seeds than its final evaluation), instead of its results.json")
    parser.add_argument("--blind", action="store_true",
                        help="with --fresh: also N episodes of the agent's blind twin, a policy that draws actions from the "
                             "agent's own frequencies without looking at the frame (does the agent use what it sees?)")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    parser.add_argument("--plot", type=Path, default=None, help="save the per-game plot here (PNG)")
    parser.add_argument("--curves", type=Path, default=None, metavar="PNG",
                        help="save the learning curves of the (first) run here")
    parser.add_argument("--time", nargs="?", const="", default=None, metavar="PROFILE",
                        help="project how long the (first) run takes in all, or a run of PROFILE on the same game "
                             "(the same models and batches: a short measuring run projects the paper run)")
    args = parser.parse_args(argv)
    memory.keep_freed_memory()  # freed memory stays in the process: faster steps on a CPU (diamond_lite.memory)
    if args.time is not None:
        return _print_projection(args.runs[0], args.time)
    try:
        if args.fresh is not None and args.fresh < 1:
            raise ValueError(f"--fresh takes a number of episodes >= 1, not {args.fresh}")
        if args.blind and not args.fresh:
            raise ValueError("--blind plays new episodes: give their number with --fresh N")
        results = [fresh_result(r, args.fresh, with_blind=args.blind) if args.fresh else run_result(r, args.episodes)
                   for r in args.runs]  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = summarize(results)
    print(table(summary))
    versus = [versus_random(r) for r in results]
    blind = [versus_blind(r) for r in results]
    for r, d, b in zip(results, versus, blind):
        if d is not None:
            print(format_versus_random(r, d))
        if b is not None:
            print(format_versus_random(r, b, "blind"), "| its most frequent actions:",
                  ", ".join(f"{name} {p:.0%}" for name, p in sorted(r["action_frequencies"].items(), key=lambda kv: -kv[1])[:3]))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "versus_random": versus, "versus_blind": blind, **summary}, indent=1) + "\n")
    if args.plot or args.curves:
        import matplotlib

        matplotlib.use("Agg")
    if args.plot:
        plot(summary, args.plot)
    if args.curves:
        plot_curves(read_log(args.runs[0]), args.curves, title=f"{results[0]['game']} ({results[0]['profile']} profile)")
    return 0


def _print_projection(run_dir: Path, profile: str) -> int:
    from .bench import MODELS, format_projection, time_projection
    from .config import RunConfig, run_config

    try:
        cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        schedule = run_config(cfg.game, profile) if profile else cfg
        if profile and [(getattr(schedule, f"training_{m}").batch_size) for m in MODELS] != [
                getattr(cfg, f"training_{m}").batch_size for m in MODELS]:  # fmt: skip
            raise ValueError(f"the {profile} profile trains with other batch sizes than {run_dir}: its costs do not carry over")
        if profile and (schedule.world_model, schedule.rew_end_model, schedule.actor_critic) != (
                cfg.world_model, cfg.rew_end_model, cfg.actor_critic):  # fmt: skip
            raise ValueError(f"the {profile} profile's models differ from those of {run_dir}: its costs do not carry over")
        projection = time_projection(read_log(run_dir), schedule)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{cfg.game}, {schedule.profile} schedule, costs measured by {run_dir}:")
    print(format_projection(projection))
    print(json.dumps(projection))
    return 0


if __name__ == "__main__":
    sys.exit(main())
