"""A training run's folder, and everything that makes a run survive a crash (tooling beside ``train``).

    runs/krull/
        config.json          the RunConfig, written once
        dataset/train/       one file per episode, written as it is collected
        checkpoints/         epoch_N.pt after each epoch (the newest few kept), epoch_N.partial.pt inside a long one
        metrics.jsonl        one JSON line per event
        results.json         the final evaluation
        tensorboard/         the same numbers, when the tensorboard package is installed

``RunFolder`` writes all of it atomically (a crash leaves the old file or the new one), cuts the metrics log back to a
checkpoint on resume so that nothing is logged twice, refuses to start a run the disk cannot hold, and turns a failed
write into one message that says what stands. ``load_run`` gives a finished or running run's models to the tools
that study it (``evaluate``, the player, ``dev/``). ``rng_state`` and ``set_rng_state`` capture every random stream a
run draws from, so that a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .component import read_checkpoint, write_atomic
from .config import RunConfig

STATE_FORMAT = "diamond_lite.train_state/1"
# Disk per real step in the dataset, generously: a compressed 64x64 frame takes 180 B in Breakout, 250 B in Qbert.
BYTES_PER_STEP = 2_000


class RunFolder:
    """The files of one run (module docstring). Creating one makes the folder, or checks that it can be written."""

    def __init__(self, path: str | Path) -> None:
        self.dir = Path(path)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write_test"
            probe.write_bytes(b"0" * 1024)
            probe.unlink()
        except OSError as error:
            raise ValueError(f"cannot write in the run folder {self.dir}: {error.strerror or error}") from None
        (self.dir / "checkpoints").mkdir(exist_ok=True)
        for stale in (self.dir / "checkpoints").glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # a checkpoint write cut short by a crash; the previous one stands

    @property
    def dataset_dir(self) -> Path:
        return self.dir / "dataset" / "train"

    # -- configuration and results -------------------------------------------------------------

    def write_config(self, cfg: RunConfig) -> None:
        """``config.json``, once: a resumed run keeps the configuration it started with."""
        path = self.dir / "config.json"
        if not path.exists():
            write_text_atomic(path, json.dumps(cfg.to_dict(), indent=1) + "\n")

    def read_config(self) -> RunConfig:
        return read_config(self.dir)

    def write_results(self, results: dict) -> None:
        write_text_atomic(self.dir / "results.json", json.dumps(results, indent=1) + "\n")

    def read_results(self) -> dict | None:
        path = self.dir / "results.json"
        return json.loads(path.read_text()) if path.exists() else None

    # -- the metrics log -----------------------------------------------------------------------

    def log(self, record: dict, *, step: int) -> None:
        """Append ``record`` to ``metrics.jsonl`` (flushed to disk), and its numbers to TensorBoard at ``step``."""
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        writer = self._tensorboard()
        if writer is not None:
            event = record["event"]
            for key, value in record.items():
                if key in ("event", "epoch", "time"):
                    continue
                if key == "returns" and value:
                    writer.add_scalar(f"{event}/mean_return", float(np.mean(value)), step)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(f"{event}/{key}", value, step)
            writer.flush()

    def _tensorboard(self):
        """A TensorBoard writer into ``tensorboard/`` when the ``tensorboard`` package is installed, else None
        (metrics.jsonl is the record either way)."""
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.dir / "tensorboard"))
            except ImportError:
                self._writer = None
        return self._writer

    def log_lines(self) -> int:
        path = self.dir / "metrics.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def truncate_log(self, epoch: int, num_lines: int | None = None) -> None:
        """Drop what was logged after a checkpoint: the records of epochs after ``epoch``, or everything after the
        first ``num_lines`` for a checkpoint written inside an epoch. What follows runs again, so nothing is doubled."""
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines()[:num_lines]:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if num_lines is not None or record.get("epoch", 0) <= epoch:
                kept.append(line)
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    # -- checkpoints ---------------------------------------------------------------------------

    def write_checkpoint(self, payload: dict, epoch: int, *, partial: bool, keep: int) -> Path:
        """``epoch_N.pt`` (or ``epoch_N.partial.pt`` inside epoch N), written atomically. A whole one removes the
        partial ones and all but the newest ``keep`` whole ones."""
        path = self.dir / "checkpoints" / f"epoch_{epoch:05d}{'.partial' if partial else ''}.pt"
        with self.storage(f"the checkpoint {path.name}"):
            write_atomic(payload, path)
        if not partial:
            for old in self.dir.glob("checkpoints/epoch_*.partial.pt"):
                old.unlink(missing_ok=True)
            for old in self.whole_checkpoints()[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def whole_checkpoints(self) -> list[Path]:
        """The checkpoints written after an epoch, oldest first (not those written inside one)."""
        return sorted(p for p in self.dir.glob("checkpoints/epoch_*.pt") if not p.name.endswith(".partial.pt"))

    def has_checkpoint(self) -> bool:
        return any(self.dir.glob("checkpoints/epoch_*.pt"))

    def newest_checkpoint(self) -> tuple[dict, Path]:
        return newest_checkpoint(self.dir)

    # -- the disk ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def storage(self, what: str):
        """A failed write (a full disk, a folder gone) stops the run with a message that says what stands."""
        try:
            yield
        except OSError as error:
            kept = sorted(self.dir.glob("checkpoints/epoch_*.pt"))
            stands = f"the last good checkpoint, {kept[-1].name}, stands" if kept else "no checkpoint was written yet"
            raise ValueError(f"could not write {what} in {self.dir}: {error.strerror or error}. Nothing written before is lost "
                             f"({stands}; every finished episode is on disk): free some space, then continue with "
                             f"--resume {self.dir}") from None  # fmt: skip

    def check_free_space(self, models: list, checkpoints: int, steps_left: int) -> None:
        """Refuse to start a run the disk cannot hold: ``checkpoints`` checkpoints of ``models`` (their weights and AdamW's
        two moments) and the dataset still to come."""
        checkpoint_bytes = sum(p.numel() * p.element_size() * 3 for m in models for p in m.parameters())
        needed = checkpoint_bytes * checkpoints + steps_left * BYTES_PER_STEP
        free = shutil.disk_usage(self.dir).free
        if free < needed:
            raise ValueError(f"not enough space for this run in {self.dir}: {free / 2**20:,.0f} MB free, about {needed / 2**20:,.0f} MB "
                             f"needed ({checkpoints} checkpoints of {checkpoint_bytes / 2**20:,.0f} MB and "
                             f"{steps_left:,} more real steps); free some space or choose another --out")  # fmt: skip


def read_log(run_dir: str | Path) -> list[dict]:
    """The events of a run, one per line of its ``metrics.jsonl``; a line cut short by a crash is skipped."""
    events = []
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def newest_checkpoint(run_dir: str | Path) -> tuple[dict, Path]:
    """The payload of the newest checkpoint of a run that loads, and its path; a damaged one is skipped with a warning."""
    candidates = sorted(Path(run_dir).glob("checkpoints/epoch_*.pt"), reverse=True)
    if not candidates:
        raise ValueError(f"{run_dir} has no checkpoint to resume from")
    errors = []
    for path in candidates:
        try:
            return read_checkpoint(path, STATE_FORMAT, "training run"), path
        except ValueError as error:
            errors.append(str(error))
            warnings.warn(f"skipping {path.name}: {error}; trying an older checkpoint", stacklevel=2)
    raise ValueError(f"no checkpoint of {run_dir} loads: {'; '.join(errors)}")


def read_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"{run_dir} is not a run folder (no config.json)")
    return RunConfig.from_dict(json.loads(path.read_text()))


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (in dicts, lists, tuples) moved to ``device``: a checkpoint is read onto the
    CPU, and what it holds must join the run's tensors where they live."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


# -- random streams ------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device's generator, CUDA's included


def rng_state(samplers: dict, policy, action_space, device: torch.device) -> dict:
    """Every random stream a run draws from: torch's (and the GPU's, which imagination draws from on a GPU), Python's,
    each segment sampler's, the collecting policy's and the action space's (the random first collection)."""
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "samplers": {k: json.dumps(s.rng.bit_generator.state) for k, s in samplers.items()},
        "policy": policy.generator.get_state(),
        "action_space": json.dumps(action_space.np_random.bit_generator.state),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, samplers: dict, policy, action_space, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    for k, s in samplers.items():
        s.rng.bit_generator.state = json.loads(state["samplers"][k])
    policy.generator.set_state(state["policy"])
    action_space.np_random.bit_generator.state = json.loads(state["action_space"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- a run's models, for the tools that study it ------------------------------------------------


@dataclass
class LoadedRun:
    """A run's configuration, its three models (evaluation mode) from one checkpoint, its data and that epoch."""

    cfg: RunConfig
    world_model: Any
    rew_end_model: Any
    actor_critic: Any
    dataset: Any
    epoch: int
    env_steps: int
    checkpoint: Path


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedRun:
    """The models of ``checkpoint`` (default: the newest that loads) of the run in ``run_dir``."""
    from .actor_critic import ActorCritic
    from .data import Dataset
    from .rew_end import RewEndModel
    from .world_model import WorldModel

    cfg = read_config(run_dir)
    if checkpoint is None:
        state, checkpoint = newest_checkpoint(run_dir)
    else:
        state = read_checkpoint(checkpoint, STATE_FORMAT, "training run")
    models = {}
    for name, cls in (("world_model", WorldModel), ("rew_end_model", RewEndModel), ("actor_critic", ActorCritic)):
        model = cls(getattr(cfg, name), device, game=cfg.game)
        model.load_state_dict(state["models"][name])
        model.num_updates = state["num_updates"][name]
        models[name] = model.eval()
    return LoadedRun(cfg, **models, dataset=Dataset(Path(run_dir) / "dataset" / "train"), epoch=state["epoch"], env_steps=state["env_steps"],
                     checkpoint=Path(checkpoint))
