"""Every setting of the Atari 100k protocol (diamond_lite.atari), each checked so it could fail."""

import cv2
import gymnasium as gym
import numpy as np
import pytest

import ale_py
from diamond_lite.atari import FRAME_SKIP, GAMES, MAX_FRAMES_PER_EPISODE, NOOP_MAX, check_game, make_env

gym.register_envs(ale_py)


def play(env, actions):
    frames, rewards = [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        frames.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    return np.stack(frames), np.array(rewards)


@pytest.mark.parametrize("game", list(GAMES))
def test_every_game_matches_the_noframeskip_v4_registration(game):
    """The emulator settings are those of `<Game>NoFrameskip-v4`, which DIAMOND builds."""
    spec = gym.spec(f"{game}NoFrameskip-v4")
    env = make_env(game)
    assert spec.kwargs["game"] == GAMES[game]
    assert env.ale.getFloat("repeat_action_probability") == spec.kwargs["repeat_action_probability"] == 0.0
    assert env.ale.getInt("max_num_frames_per_episode") == spec.kwargs["max_num_frames_per_episode"] == MAX_FRAMES_PER_EPISODE
    assert env.ale_env._frameskip == spec.kwargs["frameskip"] == 1
    assert spec.kwargs["full_action_space"] is False
    # The minimal action set, not ALE's 18 actions.
    assert env.action_space.n == len(env.ale.getMinimalActionSet())
    assert env.action_names[0] == "NOOP"
    env.close()


def test_minimal_action_set_is_smaller_than_the_full_one():
    assert make_env("Breakout").action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert make_env("Pong").action_space.n == 6


def test_observation_shape_dtype_and_size():
    env = make_env("Breakout", seed=0)
    obs, _ = env.reset()
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    small = make_env("Breakout", size=32, seed=0)
    assert small.reset()[0].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="split"):
        make_env("Breakout", split="valid")


def test_action_repeat_is_four_emulator_frames():
    env = make_env("Pong", seed=0)
    env.reset()
    before = env.ale.getEpisodeFrameNumber()
    env.step(0)
    assert env.ale.getEpisodeFrameNumber() - before == FRAME_SKIP == 4


def test_observation_is_area_resized_max_of_last_two_frames():
    env = make_env("Breakout", seed=3, keep_raw_frames=True)
    env.reset()
    for action in [1, 2, 2, 3, 0, 1]:
        obs, _, _, _, info = env.step(action)
        raw = info["raw_frames"]
        assert len(raw) == 4
        pooled = np.maximum(raw[2], raw[3])
        assert np.array_equal(obs, cv2.resize(pooled, (64, 64), interpolation=cv2.INTER_AREA))
    # The check above can fail: the last frame alone, or nearest-neighbour resizing, differ somewhere.
    differs_nearest = not np.array_equal(obs, cv2.resize(pooled, (64, 64), interpolation=cv2.INTER_NEAREST))
    assert differs_nearest


def test_against_raw_ale_replay():
    """Replaying the same game on a bare ALE env by hand gives the same observations and rewards:
    4 frames per step, rewards summed, max over the last two frames, area resize."""
    actions = np.random.default_rng(0).integers(0, 6, size=300)
    env = make_env("Pong", split="test", seed=11)
    obs0, info = env.reset()
    frames, rewards = play(env, actions)

    raw = ale_py.env.AtariEnv(game="pong", frameskip=1, repeat_action_probability=0.0, max_num_frames_per_episode=108_000)
    # Same emulator seed and no-ops as the wrapped env drew from its RNG.
    rng = np.random.default_rng(11)  # gymnasium seeds np_random with PCG64(seed), as default_rng does
    raw.reset(seed=int(rng.integers(2**31 - 1)))
    noops = int(rng.integers(1, NOOP_MAX + 1))
    assert noops == info["noops"]
    for _ in range(noops):
        raw.step(0)
    last = raw.ale.getScreenRGB()
    assert np.array_equal(obs0, cv2.resize(last, (64, 64), interpolation=cv2.INTER_AREA))
    for t, a in enumerate(actions[: len(frames)]):
        total, screens = 0.0, []
        for _ in range(4):
            _, r, _, _, _ = raw.step(int(a))
            total += r
            screens.append(raw.ale.getScreenRGB())
        expected = cv2.resize(np.maximum(screens[2], screens[3]), (64, 64), interpolation=cv2.INTER_AREA)
        assert np.array_equal(frames[t], expected), f"frame {t} differs"
        assert rewards[t] == total
    assert (rewards != 0).any(), "Pong gives points within 300 random steps; the reward check needs some"


@pytest.mark.parametrize("split", ["train", "test"])
def test_noops_at_every_reset_uniform_in_1_to_30(split):
    env = make_env("Breakout", split=split, seed=0)
    counts = []
    for _ in range(60):
        _, info = env.reset(seed=int(np.random.default_rng(len(counts)).integers(1 << 30)))
        counts.append(info["noops"])
        assert env.ale.getEpisodeFrameNumber() == info["noops"]
    assert min(counts) >= 1 and max(counts) <= NOOP_MAX
    assert len(set(counts)) > 10  # drawn, not fixed


def test_train_split_ends_episode_on_life_loss_and_the_game_goes_on():
    env = make_env("Breakout", split="train", seed=0)
    obs, info = env.reset()
    lives = info["lives"]
    assert lives == 5
    for _ in range(2000):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated:
            break
    assert terminated and info["life_loss"] and not info["game_over"]
    assert info["lives"] == lives - 1
    frame = env.ale.getEpisodeFrameNumber()
    next_obs, info = env.reset()
    # Same game, same frame, same picture: no new no-ops after a life loss.
    assert not info["new_game"] and info["noops"] == 0
    assert env.ale.getEpisodeFrameNumber() == frame
    assert np.array_equal(next_obs, obs)


def test_test_split_plays_through_life_losses():
    env = make_env("Breakout", split="test", seed=0)
    env.reset()
    life_losses = 0
    for _ in range(5000):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        life_losses += info["life_loss"]
        if terminated or truncated:
            break
    assert terminated and info["game_over"]
    assert life_losses == 5  # the episode lasted through every life


def test_frame_cap_truncates(monkeypatch):
    """The cap is ALE's; a smaller one set the same way truncates (the 108k cap itself would take a
    27,000-step episode to see)."""
    env = make_env("Boxing", split="test")
    env.ale.setInt("max_num_frames_per_episode", 40)
    env.ale.loadROM(ale_py.roms.get_rom_path("boxing"))
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, truncated, _ = env.step(0)
        steps += 1
        if terminated or truncated:
            break
    assert truncated and not terminated
    assert env.ale.getEpisodeFrameNumber() <= 40 and steps <= 10


def test_same_seed_same_actions_same_frames():
    actions = np.random.default_rng(1).integers(0, 4, size=200)
    a = make_env("Breakout", split="test", seed=7)
    b = make_env("Breakout", split="test", seed=7)
    a.reset(), b.reset()
    fa, ra = play(a, actions)
    fb, rb = play(b, actions)
    assert np.array_equal(fa, fb) and np.array_equal(ra, rb)
    c = make_env("Breakout", split="test", seed=8)
    _, info_a = make_env("Breakout", seed=7).reset()
    _, info_c = c.reset()
    fc, _ = play(c, actions)
    assert info_a["noops"] != info_c["noops"] or not np.array_equal(fa[: len(fc)], fc[: len(fa)])


def test_unknown_game_names_the_valid_ones_and_the_closest():
    with pytest.raises(ValueError) as error:
        make_env("MsPacmn")
    message = str(error.value)
    assert "'MsPacmn'" in message and "Did you mean 'MsPacman'" in message
    assert all(game in message for game in GAMES)
    assert check_game("Qbert") == "Qbert"
    assert len(GAMES) == 26


def test_kungfumasters_opening_lasts_its_opening_steps():
    from diamond_lite.atari import OPENING_STEPS

    env = make_env("KungFuMaster", split="test", seed=3)
    first, _ = env.reset()
    rng = np.random.default_rng(0)
    changed = []
    for _ in range(OPENING_STEPS["KungFuMaster"] + 20):
        obs, *_ = env.step(int(rng.integers(env.action_space.n)))
        changed.append(np.abs(obs.astype(int) - first.astype(int))[20:56].sum() > 2000)  # the stage, below the score
    assert not any(changed[: OPENING_STEPS["KungFuMaster"] - 5]) and any(changed)
