"""The full DIAMOND loop on one Atari game (Alonso et al. 2024, Algorithm 1; notebook 07).

    python -m diamond_lite.train --game Breakout --profile course --out runs/breakout
    python -m diamond_lite.train --resume runs/breakout

The schedule, as DIAMOND's ``src/trainer.py`` runs it:

1. **First collection**: a random policy plays until the data holds at least ``first_epoch_min`` steps and
   ``first_epoch_threshold_rew`` non-zero rewards of the rarer signs, or ``first_epoch_max`` steps.
   The remaining budget of real steps fixes the number of collecting epochs.
2. **Each epoch**: collect ``steps_per_epoch`` real steps with the current policy (ε = 0.01); train the world
   model, the reward/termination model and the actor-critic (in imagination) for their number of steps each
   (more in the first epoch); every ``evaluation_every`` epochs, play test episodes (ε = 0); save a checkpoint.
3. After the collecting epochs, ``num_final_epochs`` more epochs of training only; then a final evaluation over
   ``final_test_episodes`` test episodes (100 in the paper).

``--model-free`` trains the actor-critic on the real game only (batched real environments), DIAMOND's switch.

The run folder holds ``config.json``, ``dataset/`` (one file per episode, written as it is collected),
``checkpoints/`` (everything needed to resume, written atomically after each epoch, the newest few kept, and
inside a long epoch every ``checkpoint_every_minutes`` as ``epoch_N.partial.pt``),
``metrics.jsonl`` (one JSON line per event) and ``results.json`` (the final evaluation). ``--resume`` continues
after the last checkpoint: every collected episode kept (steps played after the checkpoint count toward the epoch
that played them, so the run's total of real steps does not change), models, optimisers, counters and random states
restored, and the metrics log cut back to that epoch so it continues without gaps or duplicates. The game itself
restarts: an episode cut by the crash stays in the data, unfinished, and a new one begins.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .actor_critic import ActorCritic, ActorCriticConfig, EnvLoop, Policy, actor_critic_config, evaluate_policy
from .atari import check_game, make_env
from .component import config_diff, read_checkpoint, write_atomic
from .data import Collector, Dataset, SegmentSampler
from .faults import crash_point
from .imagination import ImaginationEnv, RealVectorEnv
from .profiles import PROFILES, Profile
from .rew_end import RewEndConfig, RewEndModel, rew_end_config
from .scores import human_normalized_score
from .world_model import WorldModel, WorldModelConfig, world_model_config

STATE_FORMAT = "diamond_lite.train_state/1"
# Disk per real step in the dataset, generously: a compressed 64x64 frame takes 180 B in Breakout, 250 B in Qbert.
BYTES_PER_STEP = 2_000

# The Freeway trick. In Freeway a point needs a long run of mostly UP moves; a policy sampled at temperature 1 from
# near-uniform logits wanders and rarely scores, so the data hardly ever shows a reward. DIAMOND follows IRIS here
# (Micheli et al. 2023, Appendix; DIAMOND issue #34, where its authors confirm the trick is lowering the policy's
# sampling temperature): on Freeway only, real data is collected at a low temperature, so a slight preference for
# UP becomes a consistent one. We could not read the appendix's value from here; 0.01 is our choice (docs/agent.md).
FREEWAY_TEMPERATURE = 0.01


# -- configuration ---------------------------------------------------------------------------------


@dataclass
class ComponentTraining:
    """How much one model trains (DIAMOND ``config/trainer.yaml``, ``<model>.training``)."""

    steps_first_epoch: int
    steps_per_epoch: int = 400
    batch_size: int = 32
    sample_weights: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.1, 0.7])


@dataclass
class CollectionConfig:
    """Real-environment budgets (DIAMOND ``collection``): 100k agent steps, 100 per epoch."""

    num_steps_total: int = 100_000
    steps_per_epoch: int = 100
    first_epoch_min: int = 5_000
    first_epoch_max: int = 10_000
    first_epoch_threshold_rew: int = 10
    epsilon: float = 0.01
    test_epsilon: float = 0.0
    test_episodes: int = 4
    final_test_episodes: int = 100
    test_max_steps: int = 0  # 0: no cap but the game's own 108k-frame limit (the paper)
    # The policy's sampling temperature when collecting real data: 1 except on Freeway (FREEWAY_TEMPERATURE)
    temperature: float = 1.0


@dataclass
class RunConfig:
    """Everything a run depends on. ``run_config(game, profile)`` fills it; ``--set`` overrides any field."""

    game: str
    profile: str
    world_model: WorldModelConfig
    rew_end_model: RewEndConfig
    actor_critic: ActorCriticConfig
    training_world_model: ComponentTraining
    training_rew_end_model: ComponentTraining
    training_actor_critic: ComponentTraining
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    seed: int = 0
    model_free: bool = False
    horizon: int = 15
    num_denoising_steps: int = 3
    num_final_epochs: int = 50
    evaluation_every: int = 10
    checkpoints_to_keep: int = 3
    # torch.compile the denoiser, for its train steps and for imagination (WorldModel.compile_training and
    # compile_sampling). Measured on 2-core CPUs (docs/benchmarks.md): at the paper size on an AMX Xeon (session 23)
    # the train step 1.12x and the actor-critic step 1.19x faster, after 79 + 34 s of compiling; at the course size
    # on an EPYC (session 4) the actor-critic step no faster. Off in every profile, since a notebook or a short run
    # would spend minutes compiling and no GPU has measured it; `--set compile=True` for a long run
    compile: bool = False
    # Inside an epoch, a checkpoint at most this often (a whole one is written after every epoch anyway): the first
    # epoch trains each model for its long first budget (half an hour in the course profile on a 2-core CPU, 25,000
    # updates in the paper's), which a crash must not take back. 0 writes one after every update (the tests).
    checkpoint_every_minutes: float = 10.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        d["world_model"] = WorldModelConfig.from_dict(d["world_model"])
        d["rew_end_model"] = RewEndConfig.from_dict(d["rew_end_model"])
        d["actor_critic"] = ActorCriticConfig.from_dict(d["actor_critic"])
        for key in ("training_world_model", "training_rew_end_model", "training_actor_critic"):
            d[key] = ComponentTraining(**d[key])
        d["collection"] = CollectionConfig(**d["collection"])
        return cls(**d)


def run_config(game: str, profile: str) -> RunConfig:
    """The run of each profile. ``paper`` is DIAMOND's, unchanged (``data/diamond_hyperparameters.json`` is the
    table a test compares it with). ``course`` shrinks the models and budgets to run on a 2-core CPU in about two
    hours with bf16 instructions (about four with AVX2 only, measured: docs/agent.md, session 16); ``smoke`` runs end
    to end in seconds for CI. The algorithm is the same in all three."""
    game = check_game(game)
    p = Profile(profile)
    num_actions = int(make_env(game).action_space.n)
    budgets = p.pick(
        smoke=dict(first=(4, 4, 4), per_epoch=(2, 2, 2), batch=(2, 2, 2)),
        # course: sized from measured CPU costs (world model 0.37 s, reward/end 0.68 s at batch 16; actor-critic with
        # imagination about 3 s at batch 8) to about two hours, giving the reward/end model enough updates to leave
        # its plateau (about 2,200 at batch 16, docs/agent.md)
        course=dict(first=(1500, 1500, 100), per_epoch=(30, 30, 9), batch=(16, 16, 8)),
        paper=dict(first=(10_000, 10_000, 5_000), per_epoch=(400, 400, 400), batch=(32, 32, 32)),
    )
    trainings = [ComponentTraining(f, s, b) for f, s, b in zip(budgets["first"], budgets["per_epoch"], budgets["batch"])]
    collection = p.pick(
        smoke=CollectionConfig(num_steps_total=300, steps_per_epoch=50, first_epoch_min=200, first_epoch_max=250,
                               test_episodes=1, final_test_episodes=1, test_max_steps=200),
        # course: 20,000 random first steps, so the reward/end model sees enough hits to recognise new ones
        # (docs/agent.md, sessions 12-13); they cost under a minute. 80 epochs of 100 steps follow, 28,000 in all.
        course=CollectionConfig(num_steps_total=28_000, steps_per_epoch=100, first_epoch_min=20_000, first_epoch_max=20_000,
                                test_episodes=4, final_test_episodes=20, test_max_steps=5_000),
        paper=CollectionConfig(),
    )  # fmt: skip
    if game == "Freeway":
        collection.temperature = FREEWAY_TEMPERATURE
    wm_cfg, rew_end_cfg = world_model_config(p.name, num_actions), rew_end_config(p.name, num_actions)
    if p.name == "course":
        # Ten times DIAMOND's learning rate: with the course's few thousand updates, both models are far from
        # converged at 1e-4 (docs/agent.md, sessions 12-13: the reward/end model stays on its plateau, the world
        # model's held-out loss after 500 updates is 6x higher); at 1e-3 a whole course run trained stably (session 16).
        wm_cfg.lr = rew_end_cfg.lr = 1e-3
    return RunConfig(
        game=game,
        profile=p.name,
        world_model=wm_cfg,
        rew_end_model=rew_end_cfg,
        actor_critic=actor_critic_config(p.name, num_actions),
        training_world_model=trainings[0],
        training_rew_end_model=trainings[1],
        training_actor_critic=trainings[2],
        collection=collection,
        num_final_epochs=p.pick(smoke=1, course=10, paper=50),
        evaluation_every=p.pick(smoke=2, course=10, paper=10),
    )


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``key=value`` overrides of any field, by dotted path (``world_model.lr=3e-4``, ``seed=1``).

    The value is a Python literal of the field's type; an unknown key, or a value of another type, raises a
    ``ValueError`` that names the key and what it accepts.
    """
    d = cfg.to_dict()
    leaves = dict(_leaves(d))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key not in leaves:
            close = [k for k in leaves if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {', '.join(close)}?" if close else f"; accepted keys: {', '.join(sorted(leaves))}"
            raise ValueError(f"unknown configuration key {key!r}{hint}")
        if key in ("game", "profile"):
            raise ValueError(f"{key!r} is set by --{key}, not by --set")
        current = leaves[key]
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
            if isinstance(current, float) and value.lower() in ("inf", "-inf", "nan"):
                value = float(value)  # not Python literals, but floats a field may take (sampler.s_tmax = inf)
        value = _check_type(key, current, value)
        target = d
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
        leaves[key] = value
    return RunConfig.from_dict(d)


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _type_name(value) -> str:
    if isinstance(value, list):
        inner = {_type_name(v) for v in value} or {"value"}
        return f"a list of {' or '.join(sorted(inner))}"
    return {bool: "a bool (True or False)", int: "an int", float: "a float", str: "a string"}.get(type(value), type(value).__name__)


def _conforms(current, value) -> bool:
    """Whether ``value`` may replace ``current``: the same type (an int where a float is expected is fine)."""
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, (int, float, str)):
        accepted = {int: (int,), float: (int, float), str: (str,)}[type(current)]
        return isinstance(value, accepted) and not isinstance(value, bool)
    if isinstance(current, list):
        return isinstance(value, list) and (not current or all(_conforms(current[0], v) for v in value))
    return False


def _check_type(key: str, current, value):
    if not _conforms(current, value):
        raise ValueError(f"--set {key}={value!r}: {key} takes {_type_name(current)} (now {current!r})")
    if isinstance(current, float):
        return float(value)
    if isinstance(current, list) and current and isinstance(current[0], float):
        return [float(v) for v in value]
    return value


# -- the run ---------------------------------------------------------------------------------------


class Run:
    """One training run in its folder: models, data, samplers, imagination, counters, log (module docstring)."""

    def __init__(self, cfg: RunConfig, out: str | Path, device: str = "cpu", *, progress: bool = True) -> None:
        self.cfg, self.dir, self.progress = cfg, Path(out), progress
        self.device = torch.device(device)
        self._check_writable()
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stale in (self.dir / "checkpoints").glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # a checkpoint write cut short by a crash; the previous one stands
        config_path = self.dir / "config.json"
        if not config_path.exists():
            _write_text_atomic(config_path, json.dumps(cfg.to_dict(), indent=1) + "\n")
        _seed_everything(cfg.seed)
        self.dataset = Dataset(self.dir / "dataset" / "train")
        game, seed = cfg.game, cfg.seed
        self.world_model = WorldModel(cfg.world_model, self.device, game=game)
        if cfg.compile and not cfg.model_free:
            self.world_model.compile_training()
            self.world_model.compile_sampling()
        self.rew_end_model = RewEndModel(cfg.rew_end_model, self.device, game=game)
        self.actor_critic = ActorCritic(cfg.actor_critic, self.device, game=game)
        self.policy = Policy(self.actor_critic, epsilon=cfg.collection.epsilon, seed=seed, temperature=cfg.collection.temperature)
        self.collector = Collector(make_env(game, split="train", seed=seed), self.dataset, self.policy, seed=seed)
        t = cfg.training_world_model, cfg.training_rew_end_model, cfg.training_actor_critic
        n = cfg.world_model.num_steps_conditioning
        self.samplers = {
            "world_model": SegmentSampler(self.dataset, self.world_model.segment_length, t[0].batch_size, t[0].sample_weights, seed=seed),
            "rew_end_model": SegmentSampler(self.dataset, cfg.horizon + n, t[1].batch_size, t[1].sample_weights, seed=seed + 1,
                                            can_sample_beyond_end=True),  # fmt: skip
            "actor_critic": SegmentSampler(self.dataset, n, t[2].batch_size, t[2].sample_weights, seed=seed + 2),
        }
        if cfg.model_free:
            envs = [make_env(game, split="train", seed=seed + 1000 + i) for i in range(t[2].batch_size)]
            rl_env = RealVectorEnv(envs, self.device)
        else:
            rl_env = ImaginationEnv(self.world_model, self.rew_end_model, self.samplers["actor_critic"], num_envs=t[2].batch_size,
                                    horizon=cfg.horizon, num_denoising_steps=cfg.num_denoising_steps)  # fmt: skip
        self.env_loop = EnvLoop(rl_env, self.actor_critic)
        self._check_free_space()
        self.epoch = 0
        self.num_epochs_collect: int | None = None
        self.env_steps_at_checkpoint = self.dataset.num_steps
        self.test_returns: list[float] = []
        self._in_epoch: dict | None = None  # where a run resumed from inside an epoch stopped (``resume``)
        self._epoch_started = self._last_save = time.monotonic()
        if not any(self.dir.glob("checkpoints/epoch_*.pt")):
            self.save_checkpoint()  # so that a run killed during its first collection can resume too

    # -- the schedule ------------------------------------------------------------------------------

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
            resumed_seconds = self._in_epoch["seconds"] if self._in_epoch else 0.0
            self._epoch_started = time.monotonic() - resumed_seconds
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
                # The first epoch trains every model for its much longer first-epoch budget; left in, its time would
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
        random_policy = self.collector.policy
        self.collector.policy = _RandomPolicy(self.collector.env, self.cfg.seed)
        missing = c.first_epoch_min - self.dataset.num_steps
        if missing > 0:
            self.collect(missing, event="first_collection")
        while self.dataset.num_steps < c.first_epoch_max and _minority_rewards(self.dataset) < c.first_epoch_threshold_rew:
            self.collect(c.steps_per_epoch, event="first_collection")
        self.collector.policy = random_policy
        remaining = max(0, c.num_steps_total - self.dataset.num_steps)
        self.num_epochs_collect = -(-remaining // c.steps_per_epoch)

    def collect(self, num_steps: int, event: str = "collect") -> None:
        started = time.monotonic()
        with self._storage("an episode of the dataset"):
            finished = self.collector.collect(num_steps=num_steps, progress=False)
        returns = [e["score"] for e in finished]
        self.log(event, steps=num_steps, env_steps=self.dataset.num_steps, episodes=len(finished), returns=returns,
                 seconds=round(time.monotonic() - started, 2))  # fmt: skip

    def train_models(self) -> dict[str, float]:
        """Each model's steps for this epoch (the first epoch's budget in epoch 1); the mean losses.

        Every ``checkpoint_every_minutes`` it writes a checkpoint of the epoch so far (``save_checkpoint(in_epoch=...)``):
        the models that finished, and the one under way with its losses, so that a resumed run goes on from that update."""
        cfg, first = self.cfg, self.epoch == 1
        plan = [("actor_critic", cfg.training_actor_critic)] if cfg.model_free else [
            ("world_model", cfg.training_world_model), ("rew_end_model", cfg.training_rew_end_model),
            ("actor_critic", cfg.training_actor_critic)]  # fmt: skip
        resumed, self._in_epoch = self._in_epoch or {}, None
        means = dict(resumed.get("means", {}))
        every = cfg.checkpoint_every_minutes * 60
        for name, training in plan:
            if name in means:
                continue  # finished before the checkpoint this run resumed from; its log record is kept
            steps = training.steps_first_epoch if first else training.steps_per_epoch
            losses, extra, seconds_before = [], {}, 0.0
            if resumed.get("current") == name:
                losses, extra, seconds_before = list(resumed["losses"]), resumed["extra"], resumed["current_seconds"]
            started = time.monotonic() - seconds_before
            for _ in tqdm(range(len(losses), steps), initial=len(losses), total=steps, desc=f"epoch {self.epoch}: {name}",
                          unit="update", leave=False, disable=not self.progress):  # fmt: skip
                crash_point(f"train_{name}")
                if name == "world_model":
                    losses.append(self.world_model.train_step(self.samplers[name].sample().to_torch(self.device)))
                elif name == "rew_end_model":
                    loss, metrics = self.rew_end_model.train_step(self.samplers[name].sample().to_torch(self.device))
                    losses.append(loss)
                    for k in ("confusion_rew", "confusion_end"):
                        extra[k] = extra.get(k, 0) + metrics[k]
                else:
                    loss, metrics = self.actor_critic.train_step(self.env_loop)
                    losses.append(loss)
                    for k in ("return", "entropy", "loss_values", "reward"):
                        extra.setdefault(k, []).append(metrics[k])
                if time.monotonic() - self._last_save >= every:
                    self.save_checkpoint(in_epoch={"means": means, "current": name, "losses": torch.stack(losses),
                                                   "extra": extra, "current_seconds": time.monotonic() - started})  # fmt: skip
            if not losses:
                continue
            means[name] = torch.stack(losses).mean().item()  # one host sync per model per epoch
            summary = {k: (v.tolist() if k.startswith("confusion") else torch.stack(v).mean().item()) for k, v in extra.items()}
            self.log(f"train_{name}", steps=steps, loss=means[name], seconds=round(time.monotonic() - started, 2), **summary)
        return means

    def evaluate(self, num_episodes: int, event: str = "evaluate") -> list[float]:
        c = self.cfg.collection
        env = make_env(self.cfg.game, split="test", seed=self.cfg.seed + 10_000 + self.epoch)
        policy = Policy(self.actor_critic, epsilon=c.test_epsilon, seed=self.cfg.seed + self.epoch)
        started = time.monotonic()
        # a whole game per episode: minutes in the course profile, so it gets its own bar under the epoch's
        returns = evaluate_policy(policy, env, num_episodes, max_steps=c.test_max_steps or None, progress=self.progress,
                                  desc=f"epoch {self.epoch}: {event.replace('_', ' ')}", leave=False)
        self.test_returns = returns
        self.log(event, returns=returns, mean=float(np.mean(returns)), std=float(np.std(returns)),
                 seconds=round(time.monotonic() - started, 2))
        return returns

    def random_baseline(self, num_episodes: int) -> list[float]:
        """Returns of a uniformly random policy over the same number of test episodes, under the same step cap:
        the yardstick a short run must clear (the published random scores are over whole 108k-frame games)."""
        c = self.cfg.collection
        env = make_env(self.cfg.game, split="test", seed=self.cfg.seed + 20_000)
        started = time.monotonic()
        returns = evaluate_policy(_RandomPolicy(env, self.cfg.seed + 20_000), env, num_episodes, max_steps=c.test_max_steps or None,
                                  progress=self.progress, desc="random baseline", leave=False)  # fmt: skip
        self.log("random_baseline", returns=returns, mean=float(np.mean(returns)), std=float(np.std(returns)),
                 seconds=round(time.monotonic() - started, 2))
        return returns

    def final_evaluation(self) -> dict:
        if (self.dir / "results.json").exists():  # a finished run, resumed again
            return json.loads((self.dir / "results.json").read_text())
        returns = self.evaluate(self.cfg.collection.final_test_episodes, event="final_evaluation")
        baseline = self.random_baseline(self.cfg.collection.final_test_episodes)
        results = {"game": self.cfg.game, "profile": self.cfg.profile, "seed": self.cfg.seed, "epochs": self.epoch,
                   "env_steps": self.dataset.num_steps, "returns": returns, "mean": float(np.mean(returns)),
                   "std": float(np.std(returns)), "hns": float(human_normalized_score(self.cfg.game, float(np.mean(returns)))),
                   "random_returns": baseline, "random_mean": float(np.mean(baseline)), "random_std": float(np.std(baseline))}  # fmt: skip
        _write_text_atomic(self.dir / "results.json", json.dumps(results, indent=1) + "\n")
        return results

    # -- log, checkpoints, resume ------------------------------------------------------------------

    def log(self, event: str, *, at_epoch: int | None = None, **values: Any) -> None:
        record = {"event": event, "epoch": self.epoch if at_epoch is None else at_epoch, "time": round(time.time(), 2), **values}
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        writer = self._tensorboard()
        if writer is not None:
            for key, value in values.items():
                if key == "returns" and value:
                    writer.add_scalar(f"{event}/mean_return", float(np.mean(value)), self.epoch)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"{event}/{key}", value, self.epoch)
            writer.flush()

    def _tensorboard(self):
        """A TensorBoard writer into ``<run>/tensorboard`` when the ``tensorboard`` package is installed, else None
        (metrics.jsonl is the record either way)."""
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.dir / "tensorboard"))
            except ImportError:
                self._writer = None
        return self._writer

    def save_checkpoint(self, in_epoch: dict | None = None) -> Path:
        """Models, optimisers, counters and every random state, in one file written atomically.

        After an epoch: ``epoch_N.pt``, the newest ``checkpoints_to_keep`` kept. Inside epoch N (``in_epoch``, from
        ``train_models``): ``epoch_N.partial.pt``, which holds the last finished epoch's counters plus how far epoch N
        got (its collection is done, so the real steps are those of the epoch's start); the next whole one replaces it."""
        models = {name: getattr(self, name) for name in ("world_model", "rew_end_model", "actor_critic")}
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
            "rng": _rng_state(self),
        }
        if partial:
            log = self.dir / "metrics.jsonl"
            payload["in_epoch"] = {"epoch": self.epoch, "seconds": time.monotonic() - self._epoch_started,
                                   "log_lines": len(log.read_text().splitlines()) if log.exists() else 0, **in_epoch}  # fmt: skip
        path = self.dir / "checkpoints" / f"epoch_{self.epoch:05d}{'.partial' if partial else ''}.pt"
        with self._storage(f"the checkpoint {path.name}"):
            write_atomic(payload, path)
        self._last_save = time.monotonic()
        if not partial:
            self.env_steps_at_checkpoint = payload["env_steps"]
            for old in self.dir.glob("checkpoints/epoch_*.partial.pt"):
                old.unlink(missing_ok=True)
            for old in _whole_checkpoints(self.dir)[: -self.cfg.checkpoints_to_keep]:
                old.unlink(missing_ok=True)
        return path

    @classmethod
    def resume(cls, out: str | Path, device: str = "cpu", *, progress: bool = True) -> Run:
        """The run in ``out``, restored from its newest checkpoint that loads (one written inside an epoch included:
        the run then goes on from that update)."""
        out = Path(out)
        config_path = out / "config.json"
        if not config_path.exists():
            raise ValueError(f"{out} is not a run folder (no config.json)")
        cfg = RunConfig.from_dict(json.loads(config_path.read_text()))
        candidates = sorted(out.glob("checkpoints/epoch_*.pt"), reverse=True)
        if not candidates:
            raise ValueError(f"{out} has no checkpoint to resume from")
        payload, errors = None, []
        for path in candidates:
            try:
                payload = read_checkpoint(path, STATE_FORMAT, "training run")
                break
            except ValueError as error:
                errors.append(str(error))
                warnings.warn(f"skipping {path.name}: {error}; trying an older checkpoint", stacklevel=2)
        if payload is None:
            raise ValueError(f"no checkpoint of {out} loads: {'; '.join(errors)}")
        saved = RunConfig.from_dict(payload["config"])
        if saved != cfg:
            raise ValueError(f"{path} belongs to another configuration: {config_diff(cfg.to_dict(), saved.to_dict())}")
        run = cls(cfg, out, device, progress=progress)
        for name in ("world_model", "rew_end_model", "actor_critic"):
            model = getattr(run, name)
            model.load_state_dict(payload["models"][name])
            model.optimizer.load_state_dict(payload["optimizers"][name])
            model.scheduler.load_state_dict(payload["schedulers"][name])
            model.num_updates = payload["num_updates"][name]
        run.epoch, run.num_epochs_collect = payload["epoch"], payload["num_epochs_collect"]
        run.env_steps_at_checkpoint = payload["env_steps"]
        _set_rng_state(run, payload["rng"])
        run._in_epoch = payload.get("in_epoch")
        if not (out / "results.json").exists():  # a finished run only reads its results: its log stays as it is
            run._truncate_log(run._in_epoch["log_lines"] if run._in_epoch else None)
            run.log("resume", at_epoch=run._in_epoch["epoch"] if run._in_epoch else None, from_checkpoint=path.name,
                    env_steps=run.dataset.num_steps, env_steps_at_checkpoint=run.env_steps_at_checkpoint)  # fmt: skip
        return run

    def _truncate_log(self, num_lines: int | None = None) -> None:
        """Drop what was logged after the checkpoint: the records of later epochs, or after the first ``num_lines``
        for a checkpoint written inside an epoch. What follows runs again, so nothing is duplicated."""
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines()[:num_lines]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if num_lines is not None or record.get("epoch", 0) <= self.epoch:
                kept.append(line)
        _write_text_atomic(path, "".join(line + "\n" for line in kept))

    @contextlib.contextmanager
    def _storage(self, what: str):
        """A failed write (a full disk, a folder gone) stops the run with a message that says what stands."""
        try:
            yield
        except OSError as error:
            kept = sorted(self.dir.glob("checkpoints/epoch_*.pt"))
            stands = f"the last good checkpoint, {kept[-1].name}, stands" if kept else "no checkpoint was written yet"
            raise ValueError(f"could not write {what} in {self.dir}: {error.strerror or error}. Nothing written before is lost "
                             f"({stands}; every finished episode is on disk): free some space, then continue with "
                             f"--resume {self.dir}") from None  # fmt: skip

    def _check_free_space(self) -> None:
        """Refuse to start a run the disk cannot hold: the newest checkpoints plus the dataset still to come."""
        models = (self.world_model, self.rew_end_model, self.actor_critic)
        checkpoint = sum(p.numel() * p.element_size() * 3 for m in models for p in m.parameters())  # weights + 2 Adam moments
        steps_left = max(0, self.cfg.collection.num_steps_total - self.dataset.num_steps)
        needed = checkpoint * (self.cfg.checkpoints_to_keep + 1) + steps_left * BYTES_PER_STEP
        free = shutil.disk_usage(self.dir).free
        if free < needed:
            raise ValueError(f"not enough space for this run in {self.dir}: {free / 2**20:,.0f} MB free, about {needed / 2**20:,.0f} MB "
                             f"needed ({self.cfg.checkpoints_to_keep + 1} checkpoints of {checkpoint / 2**20:,.0f} MB and "
                             f"{steps_left:,} more real steps); free some space or choose another --out")  # fmt: skip

    def _check_writable(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write_test"
            probe.write_bytes(b"0" * 1024)
            probe.unlink()
        except OSError as error:
            raise ValueError(f"cannot write in the run folder {self.dir}: {error.strerror or error}") from None


def _whole_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints written after an epoch, oldest first (not those written inside one)."""
    return sorted(p for p in run_dir.glob("checkpoints/epoch_*.pt") if not p.name.endswith(".partial.pt"))


class _RandomPolicy:
    def __init__(self, env, seed: int) -> None:
        self.space = env.action_space
        self.space.seed(seed)

    def __call__(self, obs) -> int:
        return int(self.space.sample())


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(run: Run) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "samplers": {k: json.dumps(s.rng.bit_generator.state) for k, s in run.samplers.items()},
        "policy": run.policy.generator.get_state(),
        "action_space": json.dumps(run.collector.env.action_space.np_random.bit_generator.state),
    }


def _set_rng_state(run: Run, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    for k, s in run.samplers.items():
        s.rng.bit_generator.state = json.loads(state["samplers"][k])
    run.policy.generator.set_state(state["policy"])
    run.collector.env.action_space.np_random.bit_generator.state = json.loads(state["action_space"])


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", help="an Atari 100k game, e.g. Breakout")
    parser.add_argument("--profile", default="course", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--out", type=Path, help="the run folder (created)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration field, e.g. --set world_model.lr=3e-4 (repeatable)")
    parser.add_argument("--model-free", action="store_true", help="train the actor-critic on the real game only")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from its last checkpoint")
    parser.add_argument("--max-epochs", type=int, default=None, help="stop after this many epochs (resume later)")
    args = parser.parse_args(argv)
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
