"""Replay data: episodes on disk, crash safety, DIAMOND's segment sampler and recency weights."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import torch
import pytest

from diamond_lite.data import Collector, Dataset, Episode, SegmentSampler, episode_probabilities, make_segment


def fake_episode(length, seed=0, size=8, finished=True):
    rng = np.random.default_rng(seed)
    end = np.zeros(length, bool)
    end[-1] = finished
    return Episode(
        obs=rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8),
        act=rng.integers(0, 4, length),
        rew=rng.choice([-1.0, 0.0, 1.0], length, p=[0.05, 0.9, 0.05]),
        end=end,
        trunc=np.zeros(length, bool),
    )


def assert_same(a, b):
    for field in ("obs", "act", "rew", "end", "trunc"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and np.array_equal(x, y), field


def test_episode_round_trip_keeps_values_and_dtypes(tmp_path):
    episode = fake_episode(50, seed=1)
    episode.save(tmp_path / "e.npz")
    assert_same(Episode.load(tmp_path / "e.npz"), episode)
    assert Episode.load(tmp_path / "e.npz").final_obs is None
    episode.final_obs = np.full((8, 8, 3), 9, np.uint8)
    episode.save(tmp_path / "f.npz")
    assert np.array_equal(Episode.load(tmp_path / "f.npz").final_obs, episode.final_obs)
    assert len(episode) == 50 and episode.is_finished
    assert episode.score == pytest.approx(episode.rew.sum())
    assert_same(episode, fake_episode(50, seed=1))
    with pytest.raises(ValueError, match="length"):
        Episode(episode.obs, episode.act[:-1], episode.rew, episode.end, episode.trunc)


def test_dataset_grows_reloads_and_updates(tmp_path):
    ds = Dataset(tmp_path)
    ids = [ds.add(fake_episode(10 + i, seed=i)) for i in range(5)]
    assert ids == [0, 1, 2, 3, 4] and ds.num_steps == sum(range(10, 15))
    ds.update(4, fake_episode(30, seed=99))
    again = Dataset(tmp_path)
    assert list(again.ids) == ids
    assert_same(again[4], fake_episode(30, seed=99))
    assert_same(again[0], fake_episode(10, seed=0))
    assert again.statistics()["steps"] == 10 + 11 + 12 + 13 + 30
    with pytest.raises(KeyError):
        ds.update(7, fake_episode(3))


def test_corrupt_episode_file_is_skipped_with_a_warning(tmp_path):
    ds = Dataset(tmp_path)
    for i in range(3):
        ds.add(fake_episode(5, seed=i))
    ds.path(1).write_bytes(ds.path(1).read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="000001.npz"):
        again = Dataset(tmp_path)
    assert list(again.ids) == [0, 2]
    assert again.add(fake_episode(4)) == 3  # new ids never reuse an old one's file


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from diamond_lite.data import Dataset, Episode
    ds = Dataset(sys.argv[1])
    i = len(ds)
    while True:
        rng = np.random.default_rng(i)
        n = 400  # large, incompressible episodes: each write takes a while, so kills land mid-write
        episode = Episode(rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), rng.integers(0, 4, n),
                          np.zeros(n, np.float32), np.r_[np.zeros(n - 1, bool), True], np.zeros(n, bool))
        print(ds.add(episode), flush=True)
        i += 1
    """
)


def test_writer_killed_mid_write_loses_no_finished_episode(tmp_path):
    """SIGKILL a writing process at random moments; every episode it reported written must load,
    intact, and nothing half-written may appear."""
    rng = np.random.default_rng(0)
    reported: list[int] = []
    killed_mid_write = 0
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # at least one episode per round
        reported.append(int(first))
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
        reported += [int(line) for line in rest.split()]
        killed_mid_write += bool(list(tmp_path.glob(".*.tmp")))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a half-written file would warn when skipped
            ds = Dataset(tmp_path)
        assert set(reported) <= set(ds.ids.tolist()), f"round {round_}: lost episodes"
        assert list(ds.ids) == list(range(len(ds))), "ids must stay contiguous"
        for episode_id in ds.ids:
            rng_i = np.random.default_rng(int(episode_id))
            assert np.array_equal(ds[episode_id].obs, rng_i.integers(0, 256, (400, 64, 64, 3), dtype=np.uint8))
        assert not list(tmp_path.glob(".*.tmp")), "temporary files are cleaned when the dataset is opened"
    assert len(reported) >= 4
    assert killed_mid_write > 0, "no kill landed during a write; the test proved nothing"


def test_make_segment_pads_on_the_left_with_a_mask():
    episode = fake_episode(6, seed=3)
    seg = make_segment(episode, -3, 4)
    assert seg["mask"].tolist() == [False] * 3 + [True] * 4
    assert np.array_equal(seg["obs"][3:], episode.obs[:4]) and not seg["obs"][:3].any()
    assert np.array_equal(seg["act"][3:], episode.act[:4]) and not seg["act"][:3].any()
    inside = make_segment(episode, 1, 5)
    assert inside["mask"].all() and np.array_equal(inside["rew"], episode.rew[1:5])
    with pytest.raises(ValueError):
        make_segment(episode, 6, 9)


def test_sampled_segments_match_the_episodes_and_pad_only_on_the_left(tmp_path):
    ds = Dataset(tmp_path)
    for i, n in enumerate([3, 5, 20, 40, 7]):
        ds.add(fake_episode(n, seed=i))
    sampler = SegmentSampler(ds, seq_length=10, batch_size=256, seed=0)
    batch = sampler.sample()
    assert batch.obs.shape == (256, 10, 8, 8, 3) and batch.mask.shape == (256, 10)
    padded = 0
    for b in range(256):
        mask, start, stop = batch.mask[b], batch.start[b], batch.stop[b]
        episode = ds[batch.episode_id[b]]
        assert stop - start == 10 and 0 < stop <= len(episode)
        n_pad = int((~mask).sum())
        assert n_pad == max(0, -start)
        assert mask.tolist() == [False] * n_pad + [True] * (10 - n_pad)  # left only, contiguous
        assert np.array_equal(batch.obs[b, n_pad:], episode.obs[max(start, 0) : stop])
        padded += n_pad > 0
    assert padded > 0  # short episodes must produce padding


def test_sampling_beyond_the_end_pads_both_sides_and_shows_the_final_frame(tmp_path):
    ds = Dataset(tmp_path)
    finished = fake_episode(6, seed=1)
    finished.final_obs = np.full((8, 8, 3), 200, np.uint8)
    ds.add(finished)
    ds.add(fake_episode(30, seed=2))  # unfinished: no final frame
    batch = SegmentSampler(ds, seq_length=8, batch_size=512, seed=0, can_sample_beyond_end=True).sample()
    right_padded = shown_final = 0
    for b in range(512):
        episode, start, stop = ds[batch.episode_id[b]], batch.start[b], batch.stop[b]
        assert stop - start == 8 and start < len(episode) and stop > 0
        inside = np.arange(start, stop)
        assert batch.mask[b].tolist() == ((inside >= 0) & (inside < len(episode))).tolist()
        lo, hi = max(start, 0), min(stop, len(episode))
        assert np.array_equal(batch.obs[b][batch.mask[b]], episode.obs[lo:hi])
        extra = batch.obs_mask[b] & ~batch.mask[b]
        if stop > len(episode) and episode.final_obs is not None:
            assert extra.tolist() == (inside == len(episode)).tolist()
            assert (batch.obs[b][extra] == 200).all()
            shown_final += 1
        else:
            assert not extra.any()
        right_padded += stop > len(episode)
    assert right_padded > 0 and shown_final > 0
    tensors = batch.to_torch()
    final_slots = torch.from_numpy(batch.obs_mask & ~batch.mask)
    assert torch.allclose(tensors["obs"][final_slots], torch.tensor(200 / 127.5 - 1))
    assert (tensors["obs"][~torch.from_numpy(batch.obs_mask)] == 0).all()


def test_default_sampling_never_passes_the_end(tmp_path):
    ds = Dataset(tmp_path)
    episode = fake_episode(5, seed=1)
    episode.final_obs = np.full((8, 8, 3), 200, np.uint8)
    ds.add(episode)
    batch = SegmentSampler(ds, seq_length=8, batch_size=256, seed=0).sample()
    assert (batch.stop <= 5).all() and np.array_equal(batch.obs_mask, batch.mask)


def test_recency_weights_follow_diamond():
    lengths = np.full(10, 5)
    probs = episode_probabilities(lengths, [0.1, 0.1, 0.1, 0.7])
    # 10 episodes in 4 groups: 2, 2, 2 and 4 (the newest takes the remainder).
    assert np.allclose(probs, [0.05] * 6 + [0.175] * 4)
    # Fewer episodes than groups: every step equally likely.
    assert np.allclose(episode_probabilities([1, 3], [0.1, 0.1, 0.1, 0.7]), [0.25, 0.75])
    assert np.allclose(episode_probabilities([2, 6, 2], None), [0.2, 0.6, 0.2])
    with pytest.raises(ValueError, match="sum to 1"):
        episode_probabilities(lengths, [0.5, 0.6])


def test_sampler_draws_episodes_with_those_weights(tmp_path):
    ds = Dataset(tmp_path)
    for i in range(8):
        ds.add(fake_episode(4, seed=i, size=2))
    sampler = SegmentSampler(ds, seq_length=2, batch_size=20_000, sample_weights=[0.1, 0.1, 0.1, 0.7], seed=1)
    counts = np.bincount(sampler.sample_ids()[0], minlength=8) / 20_000
    assert np.allclose(counts, [0.05] * 6 + [0.35] * 2, atol=0.01)


def test_sampler_is_reproducible_with_a_seed(tmp_path):
    ds = Dataset(tmp_path)
    for i in range(6):
        ds.add(fake_episode(12, seed=i))
    a = SegmentSampler(ds, 5, 16, seed=3).sample_ids()
    b = SegmentSampler(ds, 5, 16, seed=3).sample_ids()
    c = SegmentSampler(ds, 5, 16, seed=4).sample_ids()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_segment_to_torch_scales_frames_and_zeroes_padding(tmp_path):
    ds = Dataset(tmp_path)
    ds.add(fake_episode(2, seed=0))
    batch = SegmentSampler(ds, seq_length=4, batch_size=3, seed=0).sample()
    tensors = batch.to_torch()
    obs = tensors["obs"]
    assert tuple(obs.shape) == (3, 4, 3, 8, 8)
    assert obs.min() >= -1 and obs.max() <= 1
    assert (obs[~tensors["mask"]] == 0).all()
    real = obs[tensors["mask"]]
    assert real.abs().max() > 0.5


class ScriptedEnv:
    """A tiny env whose episodes last 7 steps, to test the collector without an emulator."""

    class Space:
        def sample(self):
            return 1

        def seed(self, seed):
            pass

    action_space = Space()

    def __init__(self):
        self.t = 0

    def reset(self, seed=None):
        self.t = 0
        return np.zeros((4, 4, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full((4, 4, 3), self.t, np.uint8), float(self.t == 7), self.t == 7, False, {}


def test_collector_saves_unfinished_episode_and_extends_it(tmp_path):
    ds = Dataset(tmp_path)
    collector = Collector(ScriptedEnv(), ds)
    finished = collector.collect(num_steps=10, progress=False)
    assert [f["length"] for f in finished] == [7]
    assert ds.lengths.tolist() == [7, 3] and not ds[1].is_finished  # the unfinished one is saved
    collector.collect(num_steps=4, progress=False)
    assert ds.lengths.tolist() == [7, 7] and ds[1].is_finished  # ...and extended in place
    assert Dataset(tmp_path).lengths.tolist() == [7, 7]
    collector.collect(num_episodes=2, progress=False)
    assert ds.lengths.tolist() == [7, 7, 7, 7] and ds.num_steps == collector.total_steps
    # obs[t] is the frame seen before acting: the first is the reset frame.
    assert ds[0].obs[0].max() == 0 and ds[0].obs[6].max() == 6
    # A finished episode keeps the frame after its last step; an unfinished one has none yet.
    assert ds[0].final_obs is not None and ds[0].final_obs.max() == 7
    collector.collect(num_steps=2, progress=False)
    assert ds[4].final_obs is None and Dataset(tmp_path)[0].final_obs.max() == 7
