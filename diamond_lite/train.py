"""The full DIAMOND loop on one Atari game (Alonso et al. 2024, Algorithm 1; notebook 07).

    python -m diamond_lite.train --game Krull --profile course --out runs/krull
    python -m diamond_lite.train --resume runs/krull

Algorithm 1 of the paper, as DIAMOND's ``src/trainer.py`` schedules it:

1. **First collection**: a random policy plays until the data holds at least ``first_epoch_min`` steps and
   ``first_epoch_threshold_rew`` non-zero rewards of the rarer signs, or ``first_epoch_max`` steps. The remaining
   budget of real steps fixes the number of collecting epochs.
2. **Each epoch**: collect ``steps_per_epoch`` real steps with the current policy (ε = 0.01); update the world model,
   then the reward/termination model, each on segments of the replay data, then the actor-critic in imagination
   (the first epoch gives each model a longer budget); every ``evaluation_every`` epochs, play test episodes (ε = 0).
3. After the collecting epochs, ``num_final_epochs`` more epochs of training only; then a final evaluation over
   ``final_test_episodes`` test episodes (100 in the paper), beside a random policy's.

``--model-free`` trains the actor-critic on the real game only (batched real environments), DIAMOND's switch.

The configuration is ``diamond_lite.config`` (profiles, ``--set``); the run's folder, checkpoints, metrics log and
random streams are ``diamond_lite.run_folder``. ``--resume`` continues after the last checkpoint, even one written
inside an epoch, with every collected episode kept (the real steps played after it count toward the epoch that
played them); the game itself restarts, and an episode cut by the crash stays in the data, unfinished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import memory
from .actor_critic import ActorCritic, EnvLoop, Policy, RandomPolicy, evaluate_policy
from .component import autocast_for, config_diff, prepare_device
from .config import PRECISIONS, RunConfig, apply_overrides, run_config
from .data import Collector, Dataset, SegmentSampler
from .faults import crash_point
from .imagination import ImaginationEnv, RealVectorEnv
from .profiles import PROFILES
from .rew_end import RewEndModel
from .run_folder import STATE_FORMAT, RunFolder, read_config, rng_state, seed_everything, set_rng_state, to_device
from .speedups import compile_sampling, compile_training
from .world_model import WorldModel

MODELS = ("world_model", "rew_end_model", "actor_critic")


class Run:
    """One training run: its models, data, samplers, imagination and counters, in its ``RunFolder``."""

    def __init__(self, cfg: RunConfig, out: str | Path, device: str | torch.device = "cpu", *, progress: bool = True,
                 make_env=None) -> None:  # fmt: skip
        """``make_env(game, split=..., seed=...)`` builds the real games (default: ``atari.make_env``; ``bench`` times a
        run on a stand-in game where no emulator is installed)."""
        if make_env is None:
            from .atari import make_env
        self.cfg, self.progress, self.make_env = cfg, progress, make_env
        self.device = prepare_device(str(device))  # before any file: a bad --device leaves no folder behind
        self.folder = RunFolder(out)
        self.dir = self.folder.dir
        self.folder.write_config(cfg)
        seed_everything(cfg.seed)
        game, seed, autocast = cfg.game, cfg.seed, autocast_for(cfg.precision)
        self.dataset = Dataset(self.folder.dataset_dir)

        # The three models of Algorithm 1
        self.world_model = WorldModel(cfg.world_model, self.device, game=game, autocast=autocast)
        self.rew_end_model = RewEndModel(cfg.rew_end_model, self.device, game=game, autocast=autocast)
        self.actor_critic = ActorCritic(cfg.actor_critic, self.device, game=game, autocast=autocast)
        if cfg.compile and not cfg.model_free:
            compile_training(self.world_model)
            compile_sampling(self.world_model)

        # Real data: the collecting policy plays the training game into the dataset
        self.policy = Policy(self.actor_critic, epsilon=cfg.collection.epsilon, seed=seed, temperature=cfg.collection.temperature)
        self.collector = Collector(self.make_env(game, split="train", seed=seed), self.dataset, self.policy, seed=seed)

        # What each model trains on: segments of the replay data, or the actor-critic's episodes in imagination
        n = cfg.world_model.num_steps_conditioning
        t = {name: getattr(cfg, f"training_{name}") for name in MODELS}
        lengths = {"world_model": self.world_model.segment_length, "rew_end_model": cfg.horizon + n, "actor_critic": n}
        self.samplers = {name: SegmentSampler(self.dataset, lengths[name], t[name].batch_size, t[name].sample_weights, seed=seed + i,
                                              can_sample_beyond_end=name == "rew_end_model")
                         for i, name in enumerate(MODELS)}  # fmt: skip
        if cfg.model_free:
            rl_env = RealVectorEnv([self.make_env(game, split="train", seed=seed + 1000 + i) for i in range(t["actor_critic"].batch_size)],
                                   self.device)  # fmt: skip
        else:
            rl_env = ImaginationEnv(self.world_model, self.rew_end_model, self.samplers["actor_critic"],
                                    num_envs=t["actor_critic"].batch_size, horizon=cfg.horizon,
                                    num_denoising_steps=cfg.num_denoising_steps)  # fmt: skip
        env_loop = EnvLoop(rl_env, self.actor_critic)
        # One contract for the three models: loss, metrics = model.train_step(inputs())
        self.inputs = {
            "world_model": lambda: self.samplers["world_model"].sample().to_torch(self.device),
            "rew_end_model": lambda: self.samplers["rew_end_model"].sample().to_torch(self.device),
            "actor_critic": lambda: env_loop,
        }
        self.trained = ("actor_critic",) if cfg.model_free else MODELS

        steps_left = max(0, cfg.collection.num_steps_total - self.dataset.num_steps)
        self.folder.check_free_space([getattr(self, name) for name in MODELS], cfg.checkpoints_to_keep + 1, steps_left)
        self.epoch = 0
        self.num_epochs_collect: int | None = None
        self.env_steps_at_checkpoint = self.dataset.num_steps
        self.test_returns: list[float] = []
        self._in_epoch: dict | None = None  # where a run resumed from inside an epoch stopped (``resume``)
        self._epoch_started = self._last_save = time.monotonic()
        if not self.folder.has_checkpoint():
            self.save_checkpoint()  # so that a run killed during its first collection can resume too

    # -- Algorithm 1 -------------------------------------------------------------------------------

    @property
    def num_epochs(self) -> int | None:
        return None if self.num_epochs_collect is None else self.num_epochs_collect + self.cfg.num_final_epochs

    def run(self, max_epochs: int | None = None) -> dict | None:
        """Run (or continue) the schedule; ``max_epochs`` stops early after that many epochs in this call.
        Returns the final results once the run is complete."""
        if self.num_epochs_collect is None:
            self.first_collection()
            self.save_checkpoint()
        bar = tqdm(total=self.num_epochs, initial=self.epoch, desc=f"{self.cfg.game} ({self.cfg.profile})", unit="epoch",
                   disable=not self.progress)  # fmt: skip
        done_here = 0
        while self.epoch < self.num_epochs and (max_epochs is None or done_here < max_epochs):
            self.epoch += 1
            self._epoch_started = time.monotonic() - (self._in_epoch["seconds"] if self._in_epoch else 0.0)
            if self.epoch <= self.num_epochs_collect and not self.cfg.model_free:
                # Steps saved after the last checkpoint (a run killed during this epoch, then resumed) count toward
                # this epoch's share: a resumed run plays as many real steps as an uninterrupted one.
                missing = self.env_steps_at_checkpoint + self.cfg.collection.steps_per_epoch - self.dataset.num_steps
                if missing > 0:
                    self.collect(missing)
            losses = self.train_models()
            if self.epoch % self.cfg.evaluation_every == 0:
                self.evaluate(self.cfg.collection.test_episodes)
            self.log("epoch", seconds=round(time.monotonic() - self._epoch_started, 2), env_steps=self.dataset.num_steps)
            self.save_checkpoint()
            done_here += 1
            bar.update(1)
            if self.epoch == 1:
                # The first epoch trains every model for its much longer first budget; left in, its time would
                # inflate tqdm's rate estimate, and the ETA, for the next dozen epochs.
                _restart_rate(bar)
            latest = f"{np.mean(self.test_returns):.1f}" if self.test_returns else "-"
            bar.set_postfix(steps=self.dataset.num_steps, **{k: f"{v:.3g}" for k, v in losses.items()}, test_return=latest)
        bar.close()
        if self.epoch >= self.num_epochs:
            return self.final_evaluation()
        return None

    def first_collection(self) -> None:
        """Random play until enough steps and rare rewards (DIAMOND's ``collect_initial_dataset``)."""
        c = self.cfg.collection
        if self.cfg.model_free:
            self.num_epochs_collect = max(1, c.num_steps_total // c.steps_per_epoch)
            return
        agent_policy = self.collector.policy
        self.collector.policy = RandomPolicy(self.collector.env, self.cfg.seed)
        missing = c.first_epoch_min - self.dataset.num_steps
        if missing > 0:
            self.collect(missing, event="first_collection")
        while self.dataset.num_steps < c.first_epoch_max and _minority_rewards(self.dataset) < c.first_epoch_threshold_rew:
            self.collect(c.steps_per_epoch, event="first_collection")
        self.collector.policy = agent_policy
        remaining = max(0, c.num_steps_total - self.dataset.num_steps)
        self.num_epochs_collect = -(-remaining // c.steps_per_epoch)

    def collect(self, num_steps: int, event: str = "collect") -> None:
        started = time.monotonic()
        with self.folder.storage("an episode of the dataset"):
            finished = self.collector.collect(num_steps=num_steps, progress=False)
        self.log(event, steps=num_steps, env_steps=self.dataset.num_steps, episodes=len(finished),
                 returns=[e["score"] for e in finished], seconds=round(time.monotonic() - started, 2))  # fmt: skip

    def train_models(self) -> dict[str, float]:
        """Each model's updates for this epoch (the first epoch's budget in epoch 1), in Algorithm 1's order; returns
        the mean losses.

        Every ``checkpoint_every_minutes`` it writes a checkpoint of the epoch so far (``save_checkpoint(in_epoch=...)``):
        the models that finished, and the one under way with its losses, so that a resumed run goes on from that update."""
        first, every = self.epoch == 1, self.cfg.checkpoint_every_minutes * 60
        resumed, self._in_epoch = self._in_epoch or {}, None
        means = dict(resumed.get("means", {}))
        for name in self.trained:
            if name in means:
                continue  # finished before the checkpoint this run resumed from; its log record is kept
            model, training = getattr(self, name), getattr(self.cfg, f"training_{name}")
            steps = training.steps_first_epoch if first else training.steps_per_epoch
            losses, metrics, seconds_before = [], {}, 0.0
            if resumed.get("current") == name:
                losses, metrics, seconds_before = list(resumed["losses"]), resumed["extra"], resumed["current_seconds"]
            started = time.monotonic() - seconds_before
            for _ in tqdm(range(len(losses), steps), initial=len(losses), total=steps, desc=f"epoch {self.epoch}: {name}",
                          unit="update", leave=False, disable=not self.progress):  # fmt: skip
                crash_point(f"train_{name}")
                loss, step_metrics = model.train_step(self.inputs[name]())
                losses.append(loss)
                _accumulate(metrics, step_metrics)
                if time.monotonic() - self._last_save >= every:
                    self.save_checkpoint(in_epoch={"means": means, "current": name, "losses": torch.stack(losses),
                                                   "extra": metrics, "current_seconds": time.monotonic() - started})  # fmt: skip
            if not losses:
                continue
            model.check_finite()
            means[name] = torch.stack(losses).mean().item()  # one wait for the device per model per epoch
            self.log(f"train_{name}", steps=steps, loss=means[name], seconds=round(time.monotonic() - started, 2),
                     **_summarize(metrics))  # fmt: skip
        return means

    def evaluate(self, num_episodes: int, event: str = "evaluate") -> list[float]:
        """Test episodes of the agent (ε = 0 in the paper); a whole game each, minutes in the course profile."""
        env = self.make_env(self.cfg.game, split="test", seed=self.cfg.seed + 10_000 + self.epoch)
        policy = Policy(self.actor_critic, epsilon=self.cfg.collection.test_epsilon, seed=self.cfg.seed + self.epoch)
        self.test_returns = self._play(policy, env, num_episodes, event, f"epoch {self.epoch}: {event.replace('_', ' ')}")
        return self.test_returns

    def random_baseline(self, num_episodes: int) -> list[float]:
        """Returns of a uniformly random policy over the same number of test episodes, under the same step cap:
        the yardstick a short run must clear (the published random scores are over whole 108k-frame games)."""
        env = self.make_env(self.cfg.game, split="test", seed=self.cfg.seed + 20_000)
        return self._play(RandomPolicy(env, self.cfg.seed + 20_000), env, num_episodes, "random_baseline", "random baseline")

    def _play(self, policy, env, num_episodes: int, event: str, desc: str) -> list[float]:
        started = time.monotonic()
        returns = evaluate_policy(policy, env, num_episodes, max_steps=self.cfg.collection.test_max_steps or None,
                                  progress=self.progress, desc=desc, leave=False)  # fmt: skip
        self.log(event, returns=returns, mean=float(np.mean(returns)), std=float(np.std(returns)),
                 seconds=round(time.monotonic() - started, 2))
        return returns

    def final_evaluation(self) -> dict:
        from .scores import human_normalized_score

        done = self.folder.read_results()
        if done is not None:  # a finished run, resumed again
            return done
        returns = self.evaluate(self.cfg.collection.final_test_episodes, event="final_evaluation")
        baseline = self.random_baseline(self.cfg.collection.final_test_episodes)
        results = {"game": self.cfg.game, "profile": self.cfg.profile, "seed": self.cfg.seed, "epochs": self.epoch,
                   "env_steps": self.dataset.num_steps, "returns": returns, "mean": float(np.mean(returns)),
                   "std": float(np.std(returns)), "hns": float(human_normalized_score(self.cfg.game, float(np.mean(returns)))),
                   "random_returns": baseline, "random_mean": float(np.mean(baseline)), "random_std": float(np.std(baseline))}  # fmt: skip
        self.folder.write_results(results)
        return results

    # -- the log, checkpoints and resuming (the files are diamond_lite.run_folder's) ----------------

    def log(self, event: str, *, at_epoch: int | None = None, **values: Any) -> None:
        epoch = self.epoch if at_epoch is None else at_epoch
        self.folder.log({"event": event, "epoch": epoch, "time": round(time.time(), 2), **values}, step=self.epoch)

    def _random_streams(self) -> tuple:
        return self.samplers, self.policy, self.collector.env.action_space, self.device

    def save_checkpoint(self, in_epoch: dict | None = None) -> Path:
        """Models, optimisers, counters and every random stream, in one file written atomically.

        After an epoch: ``epoch_N.pt``, the newest ``checkpoints_to_keep`` kept. Inside epoch N (``in_epoch``, from
        ``train_models``): ``epoch_N.partial.pt``, which holds the last finished epoch's counters plus how far epoch N
        got (its collection is done, so the real steps are those of the epoch's start); the next whole one replaces it."""
        models = {name: getattr(self, name) for name in MODELS}
        for model in models.values():
            model.check_finite()  # never a checkpoint after an update whose loss was not finite
        partial = in_epoch is not None
        payload = {
            "format": STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch - 1 if partial else self.epoch,
            "num_epochs_collect": self.num_epochs_collect,
            "env_steps": self.env_steps_at_checkpoint if partial else self.dataset.num_steps,
            "models": {k: m.state_dict() for k, m in models.items()},
            "optimizers": {k: m.optimizer.state_dict() for k, m in models.items()},
            "schedulers": {k: m.scheduler.state_dict() for k, m in models.items()},
            "num_updates": {k: m.num_updates for k, m in models.items()},
            "rng": rng_state(*self._random_streams()),
        }
        if partial:
            payload["in_epoch"] = {"epoch": self.epoch, "seconds": time.monotonic() - self._epoch_started,
                                   "log_lines": self.folder.log_lines(), **in_epoch}  # fmt: skip
        path = self.folder.write_checkpoint(payload, self.epoch, partial=partial, keep=self.cfg.checkpoints_to_keep)
        self._last_save = time.monotonic()
        if not partial:
            self.env_steps_at_checkpoint = payload["env_steps"]
        return path

    @classmethod
    def resume(cls, out: str | Path, device: str | torch.device = "cpu", *, progress: bool = True, make_env=None) -> Run:
        """The run in ``out``, restored from its newest checkpoint that loads (one written inside an epoch included:
        the run then goes on from that update), onto ``device``, whatever device wrote it."""
        cfg = read_config(out)
        payload, path = RunFolder(out).newest_checkpoint()
        saved = RunConfig.from_dict(payload["config"])
        if saved != cfg:
            raise ValueError(f"{path} belongs to another configuration: {config_diff(cfg.to_dict(), saved.to_dict())}")
        run = cls(cfg, out, device, progress=progress, make_env=make_env)
        for name in MODELS:
            model = getattr(run, name)
            model.load_state_dict(payload["models"][name])
            model.optimizer.load_state_dict(payload["optimizers"][name])
            model.scheduler.load_state_dict(payload["schedulers"][name])
            model.num_updates = payload["num_updates"][name]
        run.epoch, run.num_epochs_collect = payload["epoch"], payload["num_epochs_collect"]
        run.env_steps_at_checkpoint = payload["env_steps"]
        set_rng_state(payload["rng"], *run._random_streams())
        run._in_epoch = to_device(payload.get("in_epoch"), run.device)  # its losses and metrics join the device's
        if run.folder.read_results() is None:  # a finished run only reads its results: its log stays as it is
            run.folder.truncate_log(run.epoch, run._in_epoch["log_lines"] if run._in_epoch else None)
            run.log("resume", at_epoch=run._in_epoch["epoch"] if run._in_epoch else None, from_checkpoint=path.name,
                    env_steps=run.dataset.num_steps, env_steps_at_checkpoint=run.env_steps_at_checkpoint)  # fmt: skip
        return run


def _accumulate(totals: dict, metrics: dict) -> None:
    """Confusion matrices are counts and add up; every other metric is kept per update, for its mean."""
    for key, value in metrics.items():
        if key.startswith("confusion"):
            totals[key] = totals.get(key, 0) + value
        else:
            totals.setdefault(key, []).append(value)


def _summarize(totals: dict) -> dict:
    return {k: (v.tolist() if k.startswith("confusion") else torch.stack(v).mean().item()) for k, v in totals.items()}


def _restart_rate(bar) -> None:
    """Forget the time a progress bar has measured so far, keeping its count: its rate and ETA then come from the
    iterations that follow only."""
    n = bar.n
    bar.reset(total=bar.total)
    bar.initial = bar.n = bar.last_print_n = n
    bar.refresh()


def _minority_rewards(dataset: Dataset) -> int:
    """Rewards of the rarer signs (DIAMOND's ``total_minority_rew``: all counts but the largest)."""
    counts = dataset.statistics()["reward_sign_counts"] if len(dataset) else {}
    return int(sum(sorted(counts.values())[:-1])) if counts else 0


# -- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", help="an Atari 100k game, e.g. Breakout")
    parser.add_argument("--profile", default="course", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--out", type=Path, help="the run folder (created)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a configuration field, e.g. --set world_model.lr=3e-4 or --set precision=bf16 "
                             f"({', '.join(PRECISIONS)}) (repeatable)")  # fmt: skip
    parser.add_argument("--model-free", action="store_true", help="train the actor-critic on the real game only")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last checkpoint")
    parser.add_argument("--max-epochs", type=int, default=None, help="stop after this many epochs (resume later)")
    args = parser.parse_args(argv)
    memory.keep_freed_memory()
    try:
        if args.resume:
            given = [name for name, value in (("--set", args.overrides), ("--game", args.game), ("--out", args.out),
                                              ("--seed", args.seed), ("--model-free", args.model_free)) if value]  # fmt: skip
            if given:
                raise ValueError(f"--resume continues a run with its own configuration; {', '.join(given)} cannot change it "
                                 "(start a new run folder for other settings)")  # fmt: skip
            run = Run.resume(args.resume, args.device)
        else:
            if not args.game or not args.out:
                raise ValueError("a new run needs --game and --out (or --resume DIR)")
            cfg = run_config(args.game, args.profile)
            overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
            overrides += ["model_free=True"] if args.model_free else []
            cfg = apply_overrides(cfg, overrides)
            if (args.out / "config.json").exists():
                raise ValueError(f"{args.out} already holds a run; use --resume {args.out} to continue it")
            run = Run(cfg, args.out, args.device)
        results = run.run(max_epochs=args.max_epochs)
    except (ValueError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if results is not None:
        print(json.dumps({k: v for k, v in results.items() if k != "returns"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
