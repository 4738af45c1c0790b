"""Atari 100k reference scores and the statistics used to compare agents on them.

The Atari 100k benchmark (Kaiser et al., 2020) scores an agent on 26 games after 100k agent steps. A raw
score means little across games, so each one is put on the human-normalized scale

    HNS = (score - random) / (human - random),

0 for a uniformly random policy and 1 for the human reference player. DIAMOND (Alonso et al., 2024) reports
a mean HNS of 1.46 over the 26 games, five seeds each.

Aggregates follow Agarwal et al. (2021), "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021), as implemented in their `rliable` library and used by the DIAMOND and IRIS papers:

* mean and median are taken over the 26 per-game means over seeds;
* the interquartile mean (IQM) is the mean of the middle 50% of all (run, game) scores;
* confidence intervals come from a stratified bootstrap: runs are resampled with replacement within each
  game, so every game keeps its weight in every resample.

The numbers live in ``data/atari100k_scores.json`` at the repository root, which names the source of every
block. ``load_reference()`` finds it relative to this file, so it works from a source checkout or an
editable install (``pip install -e .``); a non-editable install does not ship the ``data/`` folder, so pass
``path=`` explicitly there.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .atari import GAMES as _ATARI_GAMES
from .atari import check_game as _check_game

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "data" / "atari100k_scores.json"

# The 26 games, in the order of the papers' tables (the same list the environment accepts).
GAMES: tuple[str, ...] = tuple(_ATARI_GAMES)


# --------------------------------------------------------------------------------------------------------
# The reference file
# --------------------------------------------------------------------------------------------------------

def load_reference(path: str | Path | None = None) -> dict:
    """Read the reference JSON (default: the repository's ``data/atari100k_scores.json``)."""
    path = DEFAULT_PATH if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Atari 100k reference file not found at {path}. It ships in the repository's data/ folder; "
            "with a non-editable install, pass load_reference(path=...)."
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def _reference() -> dict:
    # Read once for the helpers below; load_reference() itself always reads the file afresh.
    return load_reference()


def _closest(name: str, valid: list[str] | tuple[str, ...]) -> str | None:
    lowered = {v.lower(): v for v in valid}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.0)
    return lowered[match[0]] if match else None



# --------------------------------------------------------------------------------------------------------
# Human-normalized score
# --------------------------------------------------------------------------------------------------------

def human_normalized_score(game: str, score):
    """HNS = (score - random) / (human - random) for one game; ``score`` may be a float or an array."""
    ref = _reference()
    game = _check_game(game)
    random, human = ref["random"]["scores"][game], ref["human"]["scores"][game]
    hns = (np.asarray(score, dtype=float) - random) / (human - random)
    return float(hns) if hns.ndim == 0 else hns


# --------------------------------------------------------------------------------------------------------
# Aggregates over a 1-D array of HNS (one value per game, or per (run, game) pair)
# --------------------------------------------------------------------------------------------------------

def _as_1d(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of scores, got shape {x.shape}")
    return x


def mean(values) -> float:
    return float(np.mean(_as_1d(values)))


def median(values) -> float:
    return float(np.median(_as_1d(values)))


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% of the values (Agarwal et al., 2021).

    Same as ``scipy.stats.trim_mean(values, 0.25)``, which ``rliable`` uses: sort, drop ``int(0.25 n)``
    values from each end, average the rest. When ``n`` is not a multiple of 4 this keeps slightly more than
    half of the values (26 games: drop 6 + 6, keep 14); no fractional weights.
    """
    x = np.sort(_as_1d(values))
    cut = int(0.25 * x.size)
    return float(np.mean(x[cut: x.size - cut]))


def aggregate(values) -> dict[str, float]:
    """Mean, median and IQM of a 1-D array of HNS."""
    return {"mean": mean(values), "median": median(values), "iqm": iqm(values)}


# --------------------------------------------------------------------------------------------------------
# Statistics over a (runs, games) matrix, as in rliable, and the stratified bootstrap
# --------------------------------------------------------------------------------------------------------

def _matrix(scores) -> np.ndarray:
    m = np.asarray(scores, dtype=float)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"expected a (runs, games) array, got shape {m.shape}")
    return m


# Agarwal et al.: mean and median over the per-game means across runs; IQM over every (run, game) score.
MATRIX_STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda m: mean(m.mean(axis=0)),
    "median": lambda m: median(m.mean(axis=0)),
    "iqm": lambda m: iqm(m.ravel()),
}


def _matrix_statistic(statistic) -> Callable[[np.ndarray], float]:
    if isinstance(statistic, str):
        if statistic not in MATRIX_STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r}; choose from {', '.join(MATRIX_STATISTICS)}")
        return MATRIX_STATISTICS[statistic]
    for name, function in (("mean", mean), ("median", median), ("iqm", iqm)):
        if statistic is function:  # this module's 1-D aggregate: use its (runs, games) form
            return MATRIX_STATISTICS[name]
    return statistic


def point_estimate(scores_per_game_per_run, statistic) -> float:
    """The statistic on the full (runs, games) matrix; ``statistic`` as in :func:`bootstrap_ci`."""
    return float(_matrix_statistic(statistic)(_matrix(scores_per_game_per_run)))


def bootstrap_ci(
    scores_per_game_per_run,
    statistic,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` by stratified bootstrap (Agarwal et al., 2021).

    ``scores_per_game_per_run`` is an array of shape (runs, games), usually HNS. Each resample draws, for
    every game independently, ``runs`` runs with replacement from that game's column, then applies the
    statistic to the resampled matrix.

    ``statistic`` is ``"mean"``, ``"median"``, ``"iqm"``, one of this module's functions ``mean``,
    ``median``, ``iqm`` (both mean the rliable aggregates in ``MATRIX_STATISTICS``), or any callable taking
    a (runs, games) array and returning a float.
    """
    m = _matrix(scores_per_game_per_run)
    stat = _matrix_statistic(statistic)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    runs, games = m.shape
    rng = np.random.default_rng(seed)
    columns = np.arange(games)
    samples = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(0, runs, size=(runs, games))  # resample runs within each game (stratified)
        samples[b] = stat(m[rows, columns])
    alpha = 1.0 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def difference_ci(a, b, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """``mean(a) - mean(b)`` with a percentile bootstrap interval, resampling each group with replacement: how an
    agent's test returns ``a`` compare with a random policy's ``b`` played in the same conditions (notebook 07).

    Returns ``difference``, ``low``, ``high`` and ``share_at_or_below_zero`` (the fraction of resampled differences
    <= 0). The margin is clear when ``low`` > 0: the interval leaves zero out."""
    a, b = _as_1d(a), _as_1d(b)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    diffs = np.array([rng.choice(a, len(a)).mean() - rng.choice(b, len(b)).mean() for _ in range(n_boot)])
    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return {"difference": float(a.mean() - b.mean()), "low": float(low), "high": float(high),
            "share_at_or_below_zero": float(np.mean(diffs <= 0))}


# --------------------------------------------------------------------------------------------------------
# Published per-seed results
# --------------------------------------------------------------------------------------------------------

def methods() -> tuple[str, ...]:
    """Methods with per-seed results in the reference file (DIAMOND, IRIS, TWM, STORM)."""
    return tuple(k for k, v in _reference().items() if isinstance(v, dict) and "per_seed" in v)


def _check_method(method: str) -> str:
    available = methods()
    for name in available:
        if name.lower() == method.lower():
            return name
    closest = _closest(method, available)
    raise ValueError(f"no per-seed results for {method!r}; did you mean {closest!r}? Available: {', '.join(available)}")


def published(method: str) -> dict[str, np.ndarray]:
    """Per-game arrays of the per-seed final scores published for ``method`` (e.g. "DIAMOND", "IRIS")."""
    per_seed = _reference()[_check_method(method)]["per_seed"]
    return {game: np.array(per_seed[game], dtype=float) for game in GAMES}


def published_hns_matrix(method: str) -> np.ndarray:
    """HNS of every published run, shape (seeds, games) with games in ``GAMES`` order: the bootstrap's input."""
    scores = published(method)
    return np.stack([human_normalized_score(game, scores[game]) for game in GAMES], axis=1)


def published_hns(method: str) -> dict[str, float]:
    """HNS of each game's mean score over seeds (equal to the mean of per-seed HNS: HNS is affine)."""
    return {game: human_normalized_score(game, s.mean()) for game, s in published(method).items()}


def method_aggregates(method: str) -> dict[str, float]:
    """Mean, median and IQM over the 26 per-game mean HNS of ``method``.

    Mean and median are the papers' numbers (DIAMOND 1.459 and 0.373). The papers' IQM is taken over all
    (run, game) scores instead: ``point_estimate(published_hns_matrix(method), "iqm")`` (DIAMOND 0.641).
    """
    return aggregate(list(published_hns(method).values()))
