"""The player's state machine, recording round trip, the dataset viewer, GIF export and the widgets' wiring."""

import numpy as np
import pytest
import torch

from diamond_lite.actor_critic import ActorCritic, actor_critic_config
from diamond_lite.data import Collector, Dataset
from diamond_lite.atari import make_env
from diamond_lite.player import DatasetViewer, Player, player_widget, save_gif, save_mp4, viewer_widget
from diamond_lite.rew_end import RewEndModel, rew_end_config
from diamond_lite.world_model import WorldModel, world_model_config


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    wm = WorldModel(world_model_config("smoke", 4), autocast=False, game="Breakout")
    re = RewEndModel(rew_end_config("smoke", 4), autocast=False, game="Breakout")
    with torch.no_grad():  # never end on its own: episodes stop at the horizon, so tests know when
        re.head[-1].weight.zero_()
    re.head.register_forward_hook(lambda m, i, out: out + torch.tensor([0.0, 0.0, 0.0, 30.0, -30.0]))
    agent = ActorCritic(actor_critic_config("smoke", 4), autocast=False, game="Breakout")
    return wm, re, agent


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    ds = Dataset(tmp_path_factory.mktemp("replay"))
    Collector(make_env("Breakout", seed=0), ds, seed=0).collect(num_steps=60, progress=False)
    return ds


def test_human_and_policy_controls(models, replay):
    player = Player(*models, replay, "Breakout", horizon=5, num_denoising_steps=1)
    assert player.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"] and player.frame.shape == (64, 64, 3)
    before = player.frame.copy()
    assert player.press(1) and player.t == 1 and player.steps[-1][1] == 1
    assert not np.array_equal(before, player.frame)
    assert not player.tick()  # the human is in control: the clock does nothing
    player.set_controller("policy")
    assert not player.press(2) and player.t == 1  # the policy is in control: buttons do nothing
    assert player.tick() and player.t == 2
    player.toggle_pause()
    assert not player.tick() and player.t == 2
    player.step_once()
    assert player.t == 3
    with pytest.raises(ValueError, match="accepted: human, policy"):
        player.set_controller("robot")
    with pytest.raises(ValueError, match="accepted: world model, real test, real train"):
        player.set_environment("moon")
    with pytest.raises(ValueError, match="not one of 4 actions"):
        player.act(7)


def test_horizon_and_denoising_controls(models, replay):
    player = Player(*models, replay, "Breakout", horizon=2, num_denoising_steps=1)
    player.press(0)
    player.press(0)
    assert player.done and player.t == 2 and player.final_frame is not None
    player.press(1)  # a finished episode restarts on the next step
    assert player.t == 1 and not player.done
    player.change_horizon(-5)
    player.change_denoising_steps(-3)
    assert player.horizon == 1 and player.num_denoising_steps == 1
    player.change_denoising_steps(100)
    assert player.num_denoising_steps == 10
    player.reset()
    assert player._dream.horizon == 1 and player._dream.num_denoising_steps == 10
    player.press(0)
    assert player.done


def test_real_environments(models, replay):
    player = Player(*models, replay, "Breakout")
    player.set_environment("real test")
    assert player.t == 0 and player.frame.dtype == np.uint8
    player.press(1)
    player.set_environment("real train")
    assert player.t == 0
    assert "real train" in player.status()


def test_recording_round_trip(models, replay, tmp_path):
    player = Player(*models, replay, "Breakout", horizon=3, num_denoising_steps=1, record_dir=tmp_path)
    for action in (1, 2, 3):
        player.press(action)
    assert player.done and len(player.saved) == 1
    saved = Dataset(tmp_path / "world_model-human")
    episode = saved[saved.ids[0]]
    assert episode.act.tolist() == [1, 2, 3] and episode.trunc[-1] and episode.final_obs is not None
    assert np.array_equal(episode.final_obs, player.final_frame)
    player.set_environment("real test")
    player.press(1)
    player.save_episode()  # an unfinished episode can be saved by hand
    assert len(Dataset(tmp_path / "real_test-human")) == 1


def test_dataset_viewer_and_gif(replay, tmp_path):
    viewer = DatasetViewer(replay, ["NOOP", "FIRE", "RIGHT", "LEFT"])
    viewer.step(10)
    assert viewer.t == min(10, len(viewer.episode) - 1)
    viewer.step(-100)
    assert viewer.t == 0
    viewer.step(10_000)
    assert viewer.t == len(viewer.episode) - 1
    viewer.first()
    viewer.previous_episode()
    assert viewer.index == 0
    for _ in range(len(replay) + 2):
        viewer.next_episode()
    assert viewer.index == len(replay) - 1 and viewer.t == 0
    assert "step 1/" in viewer.status()
    from PIL import Image

    episode = replay[replay.ids[0]]
    path = save_gif(episode, tmp_path / "e.gif", fps=10, scale=2)
    expected = len(episode) + (episode.final_obs is not None)
    with Image.open(path) as gif:  # identical consecutive frames are merged, their durations added
        total = 0
        for i in range(gif.n_frames):
            gif.seek(i)
            total += gif.info["duration"]
        assert total == expected * 100 and gif.size == (128, 128)
    import cv2

    video = cv2.VideoCapture(str(save_mp4(episode, tmp_path / "e.mp4", fps=10, scale=2)))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == expected and frames[0].shape == (128, 128, 3)
    # lossy, but the first frame is recognisably the episode's (mean error of a few grey levels)
    first = cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB).astype(float)
    assert np.abs(first - np.kron(episode.obs[0], np.ones((2, 2, 1)))).mean() < 8


def test_widgets_are_wired_to_the_player(models, replay):
    player = Player(*models, replay, "Breakout", horizon=5, num_denoising_steps=1)
    box = player_widget(player)
    image, status = box.children[0], box.children[1]
    before = image.value
    fire = next(b for b in box.children[2].children if b.description == "FIRE")
    fire.click()
    assert player.t == 1 and image.value != before and "t=1" in status.value
    keys = box.children[5].children[1]
    keys.value = "d"
    assert player.t == 2 and player.steps[-1][1] == 2 and keys.value == ""
    viewer = viewer_widget(DatasetViewer(replay))
    plus = next(b for b in viewer.children[2].children if b.description == "+10")
    plus.click()
    assert "step 11/" in viewer.children[1].value or "step" in viewer.children[1].value
