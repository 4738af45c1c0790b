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

from . import scores

COMPARED = ("DIAMOND", "IRIS")


def run_result(run_dir: str | Path, episodes: int = 10, progress: bool = True) -> dict:
    """The final results of a run, or a fresh evaluation of its newest checkpoint when it has none."""
    run_dir = Path(run_dir)
    results = run_dir / "results.json"
    if results.exists():
        return json.loads(results.read_text())
    return fresh_result(run_dir, episodes, with_random=False, progress=progress, seed_offset=20_000)


def fresh_result(run_dir: str | Path, episodes: int, *, with_random: bool = True, progress: bool = True,
                 seed_offset: int = 30_000) -> dict:
    """``episodes`` new test episodes of the run's newest checkpoint (ε = the run's test ε, the run's step cap), and
    with ``with_random`` as many of a uniformly random policy in the same conditions: a larger evaluation than the
    run's final one, on other seeds (``cfg.seed + seed_offset`` and up; the final evaluation used 10,000 + epoch and
    20,000), to narrow the interval of the difference without reusing its episodes."""
    from .actor_critic import ActorCritic, Policy, evaluate_policy
    from .atari import make_env
    from .component import read_checkpoint
    from .train import STATE_FORMAT, RunConfig, _RandomPolicy

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json)")
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    checkpoints = sorted(run_dir.glob("checkpoints/epoch_*.pt"))
    if not checkpoints:
        raise ValueError(f"{run_dir} has neither results.json nor a checkpoint")
    state = read_checkpoint(checkpoints[-1], STATE_FORMAT, "training run")
    agent = ActorCritic(cfg.actor_critic, game=cfg.game)
    agent.load_state_dict(state["models"]["actor_critic"])
    max_steps = cfg.collection.test_max_steps or None
    env = make_env(cfg.game, split="test", seed=cfg.seed + seed_offset)
    returns = evaluate_policy(Policy(agent, epsilon=cfg.collection.test_epsilon, seed=cfg.seed + seed_offset), env, episodes,
                              max_steps=max_steps, progress=progress, desc="agent")  # fmt: skip
    out = {"game": cfg.game, "profile": cfg.profile, "seed": cfg.seed, "epochs": state["epoch"], "env_steps": state["env_steps"],
           "returns": returns, "mean": float(np.mean(returns)), "std": float(np.std(returns)),
           "hns": scores.human_normalized_score(cfg.game, float(np.mean(returns)))}  # fmt: skip
    if not (run_dir / "results.json").exists():
        out["unfinished"] = True
    if with_random:
        env = make_env(cfg.game, split="test", seed=cfg.seed + seed_offset + 1)
        baseline = evaluate_policy(_RandomPolicy(env, cfg.seed + seed_offset + 1), env, episodes, max_steps=max_steps,
                                   progress=progress, desc="random policy")  # fmt: skip
        out.update(random_returns=baseline, random_mean=float(np.mean(baseline)), random_std=float(np.std(baseline)))
    return out


def versus_random(result: dict) -> dict | None:
    """The run's test returns against the random policy's in the same conditions (its final evaluation plays both):
    the difference of the means with a 95% bootstrap interval (``scores.difference_ci``); ``None`` when the run has
    no random baseline (an unfinished run)."""
    if not result.get("random_returns"):
        return None
    return scores.difference_ci(result["returns"], result["random_returns"])


def format_versus_random(result: dict, d: dict) -> str:
    verdict = "a clear margin" if d["low"] > 0 else ("clearly worse" if d["high"] < 0 else "no clear difference")
    return (f"{result['game']} seed {result.get('seed', 0)}: agent {np.mean(result['returns']):.1f} against random "
            f"{np.mean(result['random_returns']):.1f} over {len(result['returns'])} and {len(result['random_returns'])} "
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


def read_log(run_dir: str | Path) -> list[dict]:
    """The events of a run, one per line of its ``metrics.jsonl``; a line cut short by a crash is skipped."""
    events = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


MODELS = ("world_model", "rew_end_model", "actor_critic")
IN_AN_EPOCH = ("collect", "evaluate") + tuple(f"train_{name}" for name in MODELS)


def time_projection(log: list[dict], schedule) -> dict:
    """How long a whole run of ``schedule`` (a ``train.RunConfig``) takes, from the costs a run measured.

    From ``log`` (a run's events): each model's seconds per update, over the epochs after the first when there are
    some (the first epoch's are the same updates, but a cold start and the machine's other work weigh more there);
    the seconds per real step of collection, with the random policy (first collection) and with the agent; the
    seconds per test episode; and what else an epoch spends (checkpoints, logging: the epoch's time less its parts).
    ``schedule`` may be another run's configuration with the same models and batch sizes: a short measuring run
    projects the paper profile's 1000 epochs. The first collection is the run's own where it fits the schedule, else
    ``first_epoch_min`` steps (a game whose random play rarely scores collects up to ``first_epoch_max``); a test
    episode takes the measured mean time, though a better agent plays longer games. Returns seconds per part and in
    all (``total_s``).
    """
    epochs = {e["epoch"]: e for e in log if e["event"] == "epoch"}
    if not epochs:
        raise ValueError("the log holds no finished epoch to measure")
    later = [k for k in epochs if k >= 2] or list(epochs)
    per_update = {}
    for name in MODELS:
        chosen = [e for e in log if e["event"] == f"train_{name}" and e["epoch"] in later and e.get("steps")]
        steps = sum(e["steps"] for e in chosen)
        per_update[name] = sum(e["seconds"] for e in chosen) / steps if steps else 0.0

    def rate(events: list[dict], unit: str) -> float | None:
        count = sum(len(e["returns"]) if unit == "episodes" else e["steps"] for e in events)
        return sum(e["seconds"] for e in events) / count if count and all("seconds" in e for e in events) else None

    random_step = rate([e for e in log if e["event"] == "first_collection"], "steps")
    agent_step = rate([e for e in log if e["event"] == "collect"], "steps")
    episode = rate([e for e in log if e["event"] in ("evaluate", "final_evaluation")], "episodes")
    rest = []
    for k in later:
        parts = [e.get("seconds", 0.0) for e in log if e["epoch"] == k and e["event"] in IN_AN_EPOCH]
        rest.append(max(0.0, epochs[k]["seconds"] - sum(parts)))
    other = float(np.median(rest))
    c, s = schedule.collection, schedule
    trainings = {name: getattr(s, f"training_{name}") for name in MODELS}
    collected = sum(e["steps"] for e in log if e["event"] == "first_collection")
    first_steps = collected if c.first_epoch_min <= collected <= c.first_epoch_max else min(c.first_epoch_min, c.num_steps_total)
    collecting = -(-max(0, c.num_steps_total - first_steps) // c.steps_per_epoch)
    num_epochs = collecting + s.num_final_epochs
    train_first = sum(trainings[m].steps_first_epoch * per_update[m] for m in MODELS)
    train_epoch = sum(trainings[m].steps_per_epoch * per_update[m] for m in MODELS)
    parts = {
        "first_collection_s": first_steps * (random_step or agent_step or 0.0),
        "first_epoch_training_s": train_first,
        "later_epochs_training_s": (num_epochs - 1) * train_epoch,
        "collection_s": collecting * c.steps_per_epoch * (agent_step or random_step or 0.0),
        "evaluations_s": ((num_epochs // s.evaluation_every) * c.test_episodes + 2 * c.final_test_episodes) * (episode or 0.0),
        "other_s": num_epochs * other,
    }
    return {"epochs": num_epochs, "seconds_per_update": per_update, "seconds_per_random_step": random_step,
            "seconds_per_agent_step": agent_step, "seconds_per_test_episode": episode, "other_s_per_epoch": other,
            "epoch_s": train_epoch + c.steps_per_epoch * (agent_step or 0.0) + other, **parts, "total_s": sum(parts.values()),
            "measured_epochs": sorted(later)}  # fmt: skip


def format_projection(p: dict) -> str:
    hours = lambda seconds: f"{seconds / 3600:.2f} h"  # noqa: E731
    per = ", ".join(f"{name} {seconds:.3g} s" for name, seconds in p["seconds_per_update"].items())
    lines = [f"measured over epochs {p['measured_epochs'][0]}-{p['measured_epochs'][-1]}: per update {per}",
             f"a later epoch: {p['epoch_s']:.1f} s; the first epoch's training: {hours(p['first_epoch_training_s'])}",
             f"{p['epochs']} epochs in all: {hours(p['total_s'])} (later epochs' training {hours(p['later_epochs_training_s'])}, "
             f"collection {hours(p['first_collection_s'] + p['collection_s'])}, evaluations {hours(p['evaluations_s'])}, "
             f"other {hours(p['other_s'])})"]  # fmt: skip
    return "\n".join(lines)


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
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    parser.add_argument("--plot", type=Path, default=None, help="save the per-game plot here (PNG)")
    parser.add_argument("--curves", type=Path, default=None, metavar="PNG",
                        help="save the learning curves of the (first) run here")
    parser.add_argument("--time", nargs="?", const="", default=None, metavar="PROFILE",
                        help="project how long the (first) run takes in all, or a run of PROFILE on the same game "
                             "(the same models and batches: a short measuring run projects the paper run)")
    args = parser.parse_args(argv)
    if args.time is not None:
        return _print_projection(args.runs[0], args.time)
    try:
        if args.fresh is not None and args.fresh < 1:
            raise ValueError(f"--fresh takes a number of episodes >= 1, not {args.fresh}")
        results = [fresh_result(r, args.fresh) if args.fresh else run_result(r, args.episodes) for r in args.runs]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = summarize(results)
    print(table(summary))
    versus = [versus_random(r) for r in results]
    for r, d in zip(results, versus):
        if d is not None:
            print(format_versus_random(r, d))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "versus_random": versus, **summary}, indent=1) + "\n")
    if args.plot or args.curves:
        import matplotlib

        matplotlib.use("Agg")
    if args.plot:
        plot(summary, args.plot)
    if args.curves:
        plot_curves(read_log(args.runs[0]), args.curves, title=f"{results[0]['game']} ({results[0]['profile']} profile)")
    return 0


def _print_projection(run_dir: Path, profile: str) -> int:
    from .train import RunConfig, run_config

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
