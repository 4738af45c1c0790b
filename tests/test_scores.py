"""Tests for diamond_lite.scores: the Atari 100k reference data and the Agarwal et al. (2021) statistics."""

import json
from pathlib import Path

import numpy as np
import pytest

from diamond_lite import scores

SHARED_REFERENCE = Path("/work/shared/reference/atari100k_scores.json")


# ---------------------------------------------------------------- the data file

def test_games_match_data_file():
    ref = scores.load_reference()
    assert len(scores.GAMES) == 26
    assert tuple(ref["games"]) == scores.GAMES
    for block in ("random", "human"):
        assert set(ref[block]["scores"]) == set(scores.GAMES)


def test_every_game_has_random_below_human():
    ref = scores.load_reference()
    for game in scores.GAMES:
        assert ref["random"]["scores"][game] < ref["human"]["scores"][game], game


@pytest.mark.parametrize("method", ["DIAMOND", "IRIS"])
def test_five_seeds_per_game(method):
    per_game = scores.published(method)
    assert list(per_game) == list(scores.GAMES)
    for game, runs in per_game.items():
        assert runs.shape == (5,), game
        assert np.all(np.isfinite(runs)), game


def test_every_block_names_its_source():
    ref = scores.load_reference()
    for key in ("random", "human", "DIAMOND", "IRIS", "TWM", "STORM", "headline_mean_hns", "paper_aggregates"):
        assert isinstance(ref[key]["source"], str) and ref[key]["source"], key
    assert ref["protocol_notes"]


def test_load_reference_explicit_path_and_missing_file(tmp_path):
    assert scores.load_reference(scores.DEFAULT_PATH) == scores.load_reference()
    with pytest.raises(FileNotFoundError):
        scores.load_reference(tmp_path / "absent.json")


def test_agrees_with_shared_reference():
    if not SHARED_REFERENCE.is_file():
        pytest.skip(f"shared reference file {SHARED_REFERENCE} absent")
    shared = json.loads(SHARED_REFERENCE.read_text())
    ours = scores.load_reference()
    assert ours["games"] == shared["games"]
    for block in ("random", "human"):
        assert ours[block]["scores"] == shared[block]["scores"], block
    for method in ("DIAMOND", "IRIS", "TWM", "STORM"):
        assert ours[method]["per_seed"] == shared[method]["per_seed"], method
    assert ours["headline_mean_hns"] == shared["headline_mean_hns"]
    assert ours["protocol_notes"] == shared["protocol_notes"]


# ---------------------------------------------------------------- human-normalized score

def test_hns_on_hand_values():
    # Breakout: random 1.7, human 30.5.
    assert scores.human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    assert scores.human_normalized_score("Breakout", 1.7) == pytest.approx(0.0)
    assert scores.human_normalized_score("Breakout", 16.1) == pytest.approx(0.5)
    # Pong has a negative random score: -20.7 -> 0, 14.6 -> 1, 21 -> 41.7 / 35.3.
    assert scores.human_normalized_score("Pong", 21.0) == pytest.approx(41.7 / 35.3)


def test_hns_on_arrays():
    out = scores.human_normalized_score("Breakout", np.array([1.7, 30.5, 59.3]))
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.0, 1.0, 2.0])
    assert isinstance(scores.human_normalized_score("Breakout", 30.5), float)


def test_unknown_game_names_closest_match():
    with pytest.raises(ValueError) as err:
        scores.human_normalized_score("Breakot", 10.0)
    message = str(err.value)
    assert "'Breakout'" in message
    assert "Atari 100k games are" in message and "UpNDown" in message
    with pytest.raises(ValueError, match="'MsPacman'"):
        scores.human_normalized_score("mspacman", 10.0)


def test_unknown_method_names_closest_match():
    with pytest.raises(ValueError, match="'DIAMOND'"):
        scores.published("DIAMOMD")
    assert scores.published("diamond")["Pong"][0] == 19.3  # case-insensitive


# ---------------------------------------------------------------- aggregates

def test_mean_and_median_by_hand():
    assert scores.mean([1, 2, 3, 10]) == 4.0
    assert scores.median([5, 1, 3]) == 3.0
    assert scores.median([4, 1, 3, 2]) == 2.5


def test_iqm_by_hand():
    # n = 8: drop 2 from each end, mean of the middle four.
    assert scores.iqm([100, 1, 2, 3, 4, 5, 6, -100]) == pytest.approx(3.5)
    # n = 4: drop 1 from each end.
    assert scores.iqm([0, 1, 2, 100]) == pytest.approx(1.5)
    # n = 10: int(2.5) = 2 dropped each end, middle six kept (scipy.stats.trim_mean's rule).
    assert scores.iqm(np.arange(10.0)) == pytest.approx(4.5)
    assert scores.iqm([0, 0, 0, 0, 0, 0, 0, 0, 0, 60]) == pytest.approx(0.0)
    # Fewer than 4 values: nothing is trimmed.
    assert scores.iqm([1, 2, 6]) == pytest.approx(3.0)


def test_iqm_is_robust_to_outliers_where_mean_is_not():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 50.0])
    assert scores.iqm(x) == pytest.approx(0.45)
    assert scores.mean(x) > 6


def test_aggregate_keys_and_values():
    out = scores.aggregate([0, 1, 2, 3])
    assert out == {"mean": 1.5, "median": 1.5, "iqm": 1.5}


def test_aggregates_reject_wrong_shapes():
    with pytest.raises(ValueError):
        scores.iqm(np.ones((2, 3)))
    with pytest.raises(ValueError):
        scores.mean([])


# ---------------------------------------------------------------- the papers' headline numbers

def test_diamond_mean_hns_is_146():
    # Per-game mean over seeds -> HNS -> mean over the 26 games.
    agg = scores.method_aggregates("DIAMOND")
    assert agg["mean"] == pytest.approx(1.46, abs=0.01)
    assert agg["mean"] == pytest.approx(1.459, abs=5e-4)
    assert agg["median"] == pytest.approx(0.373, abs=5e-4)


def test_iris_mean_hns_is_1046():
    agg = scores.method_aggregates("IRIS")
    assert agg["mean"] == pytest.approx(1.046, abs=5e-4)
    assert agg["median"] == pytest.approx(0.289, abs=5e-4)


@pytest.mark.parametrize("method", ["DIAMOND", "IRIS"])
def test_paper_aggregates_reproduced_from_per_seed_data(method):
    paper = scores.load_reference()["paper_aggregates"][method]
    m = scores.published_hns_matrix(method)
    assert m.shape == (5, 26)
    assert scores.point_estimate(m, "mean") == pytest.approx(paper["mean"], abs=5e-4)
    assert scores.point_estimate(m, "median") == pytest.approx(paper["median"], abs=5e-4)
    # The papers' IQM is over all 130 (run, game) scores, not over the 26 per-game means.
    assert scores.point_estimate(m, scores.iqm) == pytest.approx(paper["iqm"], abs=5e-4)
    assert scores.method_aggregates(method)["iqm"] != pytest.approx(paper["iqm"], abs=5e-3)
    optimality_gap = float(np.mean(np.maximum(1.0 - m, 0.0)))
    assert optimality_gap == pytest.approx(paper["optimality_gap"], abs=5e-4)


def test_hns_mean_over_seeds_equals_mean_of_per_seed_hns():
    per_game = scores.published_hns("DIAMOND")
    m = scores.published_hns_matrix("DIAMOND")
    np.testing.assert_allclose([per_game[g] for g in scores.GAMES], m.mean(axis=0))


def test_twm_recomputed_mean():
    assert scores.method_aggregates("TWM")["mean"] == pytest.approx(0.956, abs=5e-4)


def test_storm_public_file_falls_short_of_paper_because_of_freeway():
    # storm.json has Freeway = 0 for every seed; the paper's 1.267 used a non-zero Freeway score.
    assert np.all(scores.published("STORM")["Freeway"] == 0)
    assert scores.method_aggregates("STORM")["mean"] == pytest.approx(1.222, abs=5e-4)


# ---------------------------------------------------------------- stratified bootstrap

def test_bootstrap_ci_contains_point_estimate():
    m = scores.published_hns_matrix("DIAMOND")
    for statistic in ("mean", "median", "iqm", scores.iqm):
        low, high = scores.bootstrap_ci(m, statistic, n_boot=500)
        point = scores.point_estimate(m, statistic)
        assert low <= point <= high, statistic
        assert low < high


def test_bootstrap_ci_narrows_with_more_runs():
    rng = np.random.default_rng(1)
    game_means = rng.uniform(0.0, 2.0, size=26)
    few = game_means + rng.normal(0.0, 0.5, size=(5, 26))
    many = game_means + rng.normal(0.0, 0.5, size=(100, 26))
    for statistic in ("mean", "iqm"):
        low_few, high_few = scores.bootstrap_ci(few, statistic, n_boot=500)
        low_many, high_many = scores.bootstrap_ci(many, statistic, n_boot=500)
        assert high_many - low_many < 0.5 * (high_few - low_few), statistic


def test_bootstrap_is_stratified_per_game():
    # Each game's runs are equal, so resampling runs within a game changes nothing: zero-width interval.
    # (A bootstrap over games, or over pooled (run, game) cells, would not give this.)
    m = np.tile(np.linspace(0.0, 2.0, 26), (5, 1))
    low, high = scores.bootstrap_ci(m, "mean", n_boot=200)
    assert low == pytest.approx(high) == pytest.approx(1.0)
    # Every run has the same mean over games, so resampling whole runs jointly would also give zero width;
    # drawing runs independently per game does not.
    m = np.array([[0.0, 2.0] * 13, [2.0, 0.0] * 13])
    low, high = scores.bootstrap_ci(m, "mean", n_boot=200)
    assert high - low > 0.1


def test_bootstrap_reproducible_and_wider_with_more_confidence():
    m = scores.published_hns_matrix("IRIS")
    assert scores.bootstrap_ci(m, "iqm", n_boot=300, seed=3) == scores.bootstrap_ci(m, "iqm", n_boot=300, seed=3)
    low90, high90 = scores.bootstrap_ci(m, "iqm", n_boot=1000, confidence=0.90)
    low99, high99 = scores.bootstrap_ci(m, "iqm", n_boot=1000, confidence=0.99)
    assert low99 <= low90 and high90 <= high99


def test_bootstrap_accepts_custom_statistic_and_rejects_bad_input():
    m = scores.published_hns_matrix("DIAMOND")
    gap = lambda x: float(np.mean(np.maximum(1.0 - x, 0.0)))  # optimality gap
    low, high = scores.bootstrap_ci(m, gap, n_boot=300)
    assert low <= gap(m) <= high
    with pytest.raises(ValueError):
        scores.bootstrap_ci(m[0], "mean")
    with pytest.raises(ValueError):
        scores.bootstrap_ci(m, "mode")


def test_difference_interval_leaves_zero_out_only_when_the_groups_differ():
    rng = np.random.default_rng(0)
    better, base = rng.normal(600, 300, 20), rng.normal(300, 300, 20)
    clear = scores.difference_ci(better, base)
    assert clear["difference"] == pytest.approx(better.mean() - base.mean())
    assert 0 < clear["low"] < clear["difference"] < clear["high"] and clear["share_at_or_below_zero"] < 0.025
    same = scores.difference_ci(base, rng.permutation(base))
    assert same["low"] < 0 < same["high"] and 0.3 < same["share_at_or_below_zero"] < 0.7
    with pytest.raises(ValueError, match="confidence"):
        scores.difference_ci(better, base, confidence=1.5)
