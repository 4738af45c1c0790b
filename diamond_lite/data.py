"""Replay data: episodes, an on-disk dataset that grows during a run, and DIAMOND's segment sampler.

An episode stores, for each agent step t, the observation seen *before* acting (``obs[t]``), the
action taken (``act[t]``), the reward received (``rew[t]``), and whether the episode ended
(``end[t]``, a termination) or was cut (``trunc[t]``, the frame cap or the end of a collection) right
after it. The frame that follows the last step of a finished episode is kept as ``final_obs``: the
reward/termination model learns what an ending looks like from it (DIAMOND keeps it as
``info["final_observation"]``).

The dataset keeps one file per episode, ``<dir>/<id>.npz``: plain arrays, loaded with
``allow_pickle=False`` so a file can never run code. Every write goes to a temporary file that is
flushed to disk and then renamed over the target, an atomic step on POSIX file systems: a crash at
any moment leaves each episode either as it was or as it is now, never half written, and a
temporary file left by a crash is ignored (and removed) when the dataset is opened again.

Segments are drawn as DIAMOND's ``BatchSampler`` draws them (``src/data/batch_sampler.py``):
episodes with recency weights, a uniform time step inside the episode, and a segment of length
``L`` ending within ``L`` steps after it, padded on the left (with a mask) where it starts before
the episode does. The reward/termination model's sampler may also run past the episode's end
(``can_sample_beyond_end``), so it sees endings at every position of its segments; the first padded
slot after a finished episode then holds ``final_obs``, the frame that shows the ending.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .faults import crash_point

FIELDS = ("obs", "act", "rew", "end", "trunc")
DTYPES = {"obs": np.uint8, "act": np.int64, "rew": np.float32, "end": np.bool_, "trunc": np.bool_}


@dataclass
class Episode:
    """One episode (or the part of one collected so far); every field has the same length T."""

    obs: np.ndarray  # (T, H, W, 3) uint8
    act: np.ndarray  # (T,) int64
    rew: np.ndarray  # (T,) float32
    end: np.ndarray  # (T,) bool
    trunc: np.ndarray  # (T,) bool
    final_obs: np.ndarray | None = None  # (H, W, 3) uint8: the frame after the last step, once finished

    def __post_init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=DTYPES[name]))
        if self.final_obs is not None:
            self.final_obs = np.asarray(self.final_obs, dtype=np.uint8)
            if self.final_obs.shape != self.obs.shape[1:]:
                raise ValueError(f"final_obs must have shape {self.obs.shape[1:]}, got {self.final_obs.shape}")
        lengths = {name: len(getattr(self, name)) for name in FIELDS}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"episode fields differ in length: {lengths}")
        if self.obs.ndim != 4 or self.obs.shape[-1] != 3:
            raise ValueError(f"obs must have shape (T, H, W, 3), got {self.obs.shape}")

    def __len__(self) -> int:
        return len(self.act)

    def __add__(self, other: Episode) -> Episode:
        """The two parts of an episode one after the other (a collection resumed where it stopped)."""
        return Episode(*(np.concatenate([getattr(self, f), getattr(other, f)]) for f in FIELDS), final_obs=other.final_obs)

    @property
    def score(self) -> float:
        """The undiscounted return, the figure Atari scores report."""
        return float(self.rew.sum())

    @property
    def is_finished(self) -> bool:
        return len(self) > 0 and bool(self.end[-1] or self.trunc[-1])

    @classmethod
    def from_steps(cls, steps: Sequence[tuple], final_obs: np.ndarray | None = None) -> Episode:
        """Build from a list of ``(obs, act, rew, end, trunc)`` tuples, one per step."""
        if not steps:
            raise ValueError("an episode needs at least one step")
        return cls(*(np.stack([np.asarray(s[i]) for s in steps]) for i in range(len(FIELDS))), final_obs=final_obs)

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, then rename over ``path``."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                arrays = {name: getattr(self, name) for name in FIELDS}
                if self.final_obs is not None:
                    arrays["final_obs"] = self.final_obs
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            crash_point("episode_write")  # the new file is written, not yet renamed over the old
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)

    @classmethod
    def load(cls, path: str | Path) -> Episode:
        with np.load(path, allow_pickle=False) as arrays:
            final_obs = arrays["final_obs"] if "final_obs" in arrays.files else None
            return cls(*(arrays[name] for name in FIELDS), final_obs=final_obs)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable: without it a power cut could forget the new name.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_EPISODE_FILE = re.compile(r"^(\d+)\.npz$")


class Dataset:
    """Episodes on disk in ``directory``, all held in memory for fast sampling.

    ``add`` writes a new episode and returns its id (0, 1, 2, ... in the order of collection);
    ``update`` rewrites an episode that grew (DIAMOND stores the unfinished training episode at the
    end of each collection and extends it at the next). Opening a folder reloads what is there;
    an unreadable episode file is skipped with a warning and the rest kept.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.episodes: dict[int, Episode] = {}
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # left by a writer that was killed mid-write
        for path in sorted(self.directory.iterdir()):
            match = _EPISODE_FILE.match(path.name)
            if not match:
                continue
            try:
                self.episodes[int(match.group(1))] = Episode.load(path)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
                warnings.warn(f"skipping unreadable episode file {path}: {error}", stacklevel=2)
        self.episodes = dict(sorted(self.episodes.items()))

    # -- writing -----------------------------------------------------------------------------------

    def path(self, episode_id: int) -> Path:
        return self.directory / f"{episode_id:06d}.npz"

    def add(self, episode: Episode) -> int:
        episode_id = max(self.episodes, default=-1) + 1
        episode.save(self.path(episode_id))
        self.episodes[episode_id] = episode
        return episode_id

    def update(self, episode_id: int, episode: Episode) -> None:
        if episode_id not in self.episodes:
            raise KeyError(f"no episode {episode_id} in {self.directory}")
        episode.save(self.path(episode_id))
        self.episodes[episode_id] = episode

    # -- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, episode_id: int) -> Episode:
        return self.episodes[episode_id]

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes.values())

    @property
    def ids(self) -> np.ndarray:
        return np.fromiter(self.episodes.keys(), dtype=np.int64, count=len(self.episodes))

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(e) for e in self.episodes.values()), dtype=np.int64, count=len(self.episodes))

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def statistics(self) -> dict:
        """What a student needs later: sizes, returns, and the class balance of rewards and ends."""
        if not self.episodes:
            return {"episodes": 0, "steps": 0}
        rew_sign = np.concatenate([np.sign(e.rew) for e in self])
        end = np.concatenate([e.end for e in self])
        scores = np.array([e.score for e in self])
        lengths = self.lengths
        return {
            "episodes": len(self),
            "steps": int(lengths.sum()),
            "episode_length_mean": float(lengths.mean()),
            "episode_length_max": int(lengths.max()),
            "return_mean": float(scores.mean()),
            "return_max": float(scores.max()),
            "reward_sign_counts": {int(k): int((rew_sign == k).sum()) for k in (-1, 0, 1)},
            "end_counts": {0: int((~end).sum()), 1: int(end.sum())},
            "obs_shape": tuple(next(iter(self)).obs.shape[1:]),
        }


# -- segments ----------------------------------------------------------------------------------------


def episode_probabilities(lengths: np.ndarray, sample_weights: Sequence[float] | None) -> np.ndarray:
    """Probability of drawing each episode, oldest first (DIAMOND's recency weighting).

    The episodes are cut into ``len(sample_weights)`` groups in order of collection, each of
    ``n // k`` episodes, the last taking the remainder; group ``i`` gets total probability
    ``sample_weights[i]``, shared evenly among its episodes. With DIAMOND's [0.1, 0.1, 0.1, 0.7],
    the newest quarter of the data (collected by the newest policy) is drawn 70% of the time.
    With no weights, or fewer episodes than groups, episodes are drawn in proportion to their length
    (every step equally likely), as DIAMOND does.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    n = len(lengths)
    if n == 0:
        raise ValueError("cannot sample from an empty dataset")
    if sample_weights is None or n < len(sample_weights):
        return lengths / lengths.sum()
    weights = np.asarray(sample_weights, dtype=np.float64)
    if (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"sample_weights must be non-negative and sum to 1, got {list(sample_weights)}")
    k = len(weights)
    sizes = [n // k] * (k - 1) + [n // k + n % k]
    probs = np.concatenate([np.full(size, w / size) for w, size in zip(weights, sizes)])
    return probs / probs.sum()


@dataclass
class Segment:
    """A batch of B segments of length L. ``mask[b, t]`` is False where step t is padding (before the
    episode started or after it ended); padded steps hold zeros, except that ``obs`` holds the episode's
    ``final_obs`` in the first slot after its end, where ``obs_mask`` is True (a frame, but no step)."""

    obs: np.ndarray  # (B, L, H, W, 3) uint8
    act: np.ndarray  # (B, L) int64
    rew: np.ndarray  # (B, L) float32
    end: np.ndarray  # (B, L) bool
    trunc: np.ndarray  # (B, L) bool
    mask: np.ndarray  # (B, L) bool
    obs_mask: np.ndarray  # (B, L) bool: mask, plus the final frame's slot
    episode_id: np.ndarray  # (B,)
    start: np.ndarray  # (B,) may be negative: the number of padded steps is -start
    stop: np.ndarray  # (B,)

    @classmethod
    def stack(cls, parts: list[dict[str, np.ndarray]], episode_ids, starts, stops) -> Segment:
        """A batch from the outputs of :func:`make_segment`."""
        stacked = {name: np.stack([p[name] for p in parts]) for name in (*FIELDS, "mask", "obs_mask")}
        return cls(**stacked, episode_id=np.asarray(episode_ids), start=np.asarray(starts), stop=np.asarray(stops))

    def to_torch(self, device="cpu"):
        """Tensors for the models: frames as float in [-1, 1], channels first, ``(B, L, 3, H, W)``.

        Padded frames become 0 (mid-grey), as in DIAMOND, which pads after scaling to [-1, 1].
        """
        import torch

        mask = torch.from_numpy(self.mask).to(device)
        obs_mask = torch.from_numpy(self.obs_mask).to(device)
        obs = torch.from_numpy(self.obs).to(device).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1)
        obs = obs * obs_mask[:, :, None, None, None]
        return {
            "obs": obs,
            "act": torch.from_numpy(self.act).to(device),
            "rew": torch.from_numpy(self.rew).to(device),
            "end": torch.from_numpy(self.end).to(device),
            "trunc": torch.from_numpy(self.trunc).to(device),
            "mask": mask,
        }


def make_segment(episode: Episode, start: int, stop: int) -> dict[str, np.ndarray]:
    """Steps ``start:stop`` of ``episode``, zero-padded where they fall outside it, with the mask.

    Where the segment runs past a finished episode, the slot right after its last step gets the
    episode's ``final_obs`` (and ``obs_mask`` True there): the frame that follows the last action."""
    if stop <= start:
        raise ValueError(f"empty segment [{start}, {stop})")
    length = stop - start
    lo, hi = max(start, 0), min(stop, len(episode))
    if hi <= lo:
        raise ValueError(f"segment [{start}, {stop}) does not overlap the episode of length {len(episode)}")
    pad_left, pad_right = lo - start, stop - hi
    out = {}
    for name in FIELDS:
        x = getattr(episode, name)[lo:hi]
        widths = [(pad_left, pad_right)] + [(0, 0)] * (x.ndim - 1)
        out[name] = np.pad(x, widths)
    out["mask"] = np.zeros(length, dtype=bool)
    out["mask"][pad_left : pad_left + hi - lo] = True
    out["obs_mask"] = out["mask"].copy()
    after = pad_left + hi - lo  # the slot after the episode's last step, if the segment reaches it
    if hi == len(episode) and after < length and episode.final_obs is not None:
        out["obs"][after] = episode.final_obs
        out["obs_mask"][after] = True
    return out


class SegmentSampler:
    """Draws batches of segments the way DIAMOND's ``BatchSampler`` does (module docstring).

    ``sample_weights=None`` draws every step with equal probability; DIAMOND trains all three models
    with ``(0.1, 0.1, 0.1, 0.7)``. With ``can_sample_beyond_end`` (DIAMOND's reward/termination model)
    a segment starts 0..L-1 steps before the drawn step and may run past the episode's end.
    """

    def __init__(
        self,
        dataset: Dataset,
        seq_length: int,
        batch_size: int,
        sample_weights: Sequence[float] | None = (0.1, 0.1, 0.1, 0.7),
        seed: int | None = None,
        can_sample_beyond_end: bool = False,
    ) -> None:
        if seq_length < 1 or batch_size < 1:
            raise ValueError(f"seq_length and batch_size must be >= 1, got {seq_length} and {batch_size}")
        self.dataset = dataset
        self.seq_length = seq_length
        self.batch_size = batch_size
        self.sample_weights = sample_weights
        self.can_sample_beyond_end = can_sample_beyond_end
        self.rng = np.random.default_rng(seed)

    def sample_ids(self, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Episode ids, starts and stops of one batch (starts may be negative: left padding)."""
        batch_size = batch_size or self.batch_size
        ids, lengths = self.dataset.ids, self.dataset.lengths
        probs = episode_probabilities(lengths, self.sample_weights)
        which = self.rng.choice(len(ids), size=batch_size, replace=True, p=probs)
        lengths = lengths[which]
        t = self.rng.integers(0, lengths)
        offsets = self.rng.integers(0, self.seq_length, size=batch_size)
        if self.can_sample_beyond_end:  # starts 0..L-1 steps before t: padding on either side
            starts = t - offsets
            stops = starts + self.seq_length
        else:  # ends 1..L steps after t, never past the episode's end, so it contains t
            stops = np.minimum(lengths, t + 1 + offsets)
            starts = stops - self.seq_length
        return ids[which], starts, stops

    def sample(self, batch_size: int | None = None) -> Segment:
        """A batch of ``batch_size`` segments (default: the sampler's)."""
        episode_ids, starts, stops = self.sample_ids(batch_size)
        parts = [make_segment(self.dataset[i], s, e) for i, s, e in zip(episode_ids, starts, stops)]
        return Segment.stack(parts, episode_ids, starts, stops)


# -- collection --------------------------------------------------------------------------------------


class Collector:
    """Plays ``env`` with ``policy`` and writes what it sees into ``dataset``, as DIAMOND's collector.

    ``policy(obs) -> action`` is any callable (default: uniformly random actions); if it has a
    ``reset()`` method it is called at the start of every episode (a recurrent policy clears its
    state there). The collector keeps the game going between calls: at the end of ``collect`` the
    unfinished episode is saved as it stands, and the next call extends it in place, so stopping
    after any call loses nothing that was played.
    """

    def __init__(self, env, dataset: Dataset, policy=None, seed: int | None = None) -> None:
        self.env, self.dataset = env, dataset
        self.policy = policy if policy is not None else (lambda obs: env.action_space.sample())
        self.seed = seed
        self.obs = None
        self.steps: list[tuple] = []
        self.episode_id: int | None = None  # the id of the unfinished episode, once saved
        self.total_steps = 0

    def _start_episode(self) -> None:
        if self.obs is None:
            self.env.action_space.seed(self.seed)
            self.obs, _ = self.env.reset(seed=self.seed)
        else:
            self.obs, _ = self.env.reset()
        self.steps, self.episode_id = [], None
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def _save(self, final_obs: np.ndarray | None = None) -> int:
        # Only the steps since the last save are new, but the file holds the whole episode.
        episode = Episode.from_steps(self.steps, final_obs=final_obs)
        if self.episode_id is None:
            self.episode_id = self.dataset.add(episode)
        else:
            self.dataset.update(self.episode_id, episode)
        return self.episode_id

    def collect(self, num_steps: int | None = None, num_episodes: int | None = None, progress: bool = True) -> list[dict]:
        """Play ``num_steps`` agent steps or ``num_episodes`` whole episodes; return one dict per
        finished episode (its id, length and score)."""
        if (num_steps is None) == (num_episodes is None):
            raise ValueError("give exactly one of num_steps and num_episodes")
        from tqdm.auto import tqdm

        total = num_steps if num_steps is not None else num_episodes
        bar = tqdm(total=total, unit="step" if num_steps is not None else "episode", desc="collect", disable=not progress)
        finished: list[dict] = []
        n = 0
        if self.obs is None:
            self._start_episode()
        while n < total:
            action = self.policy(self.obs)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            self.steps.append((self.obs, action, reward, terminated, truncated))
            crash_point("collect_step")
            self.obs = next_obs
            self.total_steps += 1
            if num_steps is not None:
                n += 1
                bar.update(1)
            if terminated or truncated:
                episode_id = self._save(final_obs=next_obs)
                finished.append({"episode_id": episode_id, "length": len(self.steps), "score": float(sum(s[2] for s in self.steps))})
                if num_episodes is not None:
                    n += 1
                    bar.update(1)
                self._start_episode()
        if self.steps:
            self._save()
        bar.close()
        return finished
