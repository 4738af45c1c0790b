"""The reward/termination model: DIAMOND's architecture, step-by-step = whole-sequence, masking, and learning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diamond_lite.data import Dataset, Episode, SegmentSampler
from diamond_lite.rew_end import (
    RewEndConfig,
    RewEndModel,
    confusion_matrix,
    evaluate,
    precision_recall,
    predict_episode,
    rew_end_config,
)
from diamond_lite.world_model import WorldModel, WorldModelConfig
from world_model_helpers import TINY

SMALL = dict(img_size=16, cond_channels=16, depths=[1, 1], channels=[8, 8], attn_depths=[False, False], lstm_dim=32)


def small_model(num_actions=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    return RewEndModel(RewEndConfig(num_actions=num_actions, **{**SMALL, **kwargs}), autocast=False, channels_last=False)


def random_batch(b=3, t=6, size=16, num_actions=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.rand(b, t, 3, size, size, generator=g) * 2 - 1,
        "act": torch.randint(0, num_actions, (b, t), generator=g),
        "rew": torch.randint(-1, 2, (b, t), generator=g).float(),
        "end": torch.rand(b, t, generator=g) < 0.2,
        "mask": torch.ones(b, t, dtype=torch.bool),
    }


def test_paper_configuration_has_diamonds_parameter_count():
    # DIAMOND's RewEndModel at 18 actions (config/agent/default.yaml) has 5,902,656 parameters.
    assert RewEndModel(RewEndConfig(num_actions=18), autocast=False).num_parameters() == 5_902_656
    assert rew_end_config("paper", 18) == RewEndConfig(num_actions=18)
    assert RewEndModel(rew_end_config("course", 4)).num_parameters() < RewEndModel(RewEndConfig(num_actions=4)).num_parameters() / 3


def test_shapes_and_state():
    model = small_model()
    batch = random_batch()
    logits_rew, logits_end, (h, c) = model(batch["obs"][:, :-1], batch["act"][:, :-1], batch["obs"][:, 1:])
    assert logits_rew.shape == (3, 5, 3) and logits_end.shape == (3, 5, 2)
    assert h.shape == c.shape == (1, 3, 32)
    with pytest.raises(ValueError, match="img_size"):
        RewEndConfig(num_actions=3, img_size=20, channels=[8] * 4, depths=[1] * 4, attn_depths=[False] * 4)


@pytest.mark.parametrize("autocast", [False, True])
def test_stepping_with_a_carried_state_equals_the_whole_sequence(autocast):
    model = small_model()
    model.use_autocast = autocast
    obs, act = random_batch(t=9)["obs"], random_batch(t=9)["act"]
    whole_rew, whole_end, whole_state = model(obs[:, :-1], act[:, :-1], obs[:, 1:])
    # burn in over 3 transitions at once, then one transition at a time, as imagination does
    rew, end, state = model(obs[:, :3], act[:, :3], obs[:, 1:4])
    steps_rew, steps_end = [rew], [end]
    for t in range(3, 8):
        rew, end, state = model(obs[:, t : t + 1], act[:, t : t + 1], obs[:, t + 1 : t + 2], state)
        steps_rew.append(rew)
        steps_end.append(end)
    tol = 1e-2 if autocast else 1e-5
    torch.testing.assert_close(torch.cat(steps_rew, 1), whole_rew, atol=tol, rtol=tol)
    torch.testing.assert_close(torch.cat(steps_end, 1), whole_end, atol=tol, rtol=tol)
    torch.testing.assert_close(state[0], whole_state[0], atol=tol, rtol=tol)


def test_padded_steps_do_not_count_in_the_loss():
    model = small_model()
    batch = random_batch(t=7)
    batch["mask"][0, :3] = False  # left padding
    batch["mask"][1, 5:] = False  # right padding, past the end
    loss, metrics = model.loss(batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["rew"][0, :3] = 1 - changed["rew"][0, :3]
    changed["end"][1, 5:] = ~changed["end"][1, 5:]
    # the targets at padded steps do not matter ...
    torch.testing.assert_close(model.loss(changed)[0], loss)
    # ... and only real steps are counted: 6 per row, minus 3 and 1 padded transitions
    assert int(metrics["confusion_rew"].sum()) == int(metrics["confusion_end"].sum()) == 3 * 6 - 3 - 1
    # a real step does matter
    changed["rew"][2, 0] = 1 - changed["rew"][2, 0] if changed["rew"][2, 0] != 0 else 1.0
    assert not torch.allclose(model.loss(changed)[0], loss)


def test_confusion_matrix_and_precision_recall():
    c = confusion_matrix(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 2, 0]), 3)
    assert c.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    pr = precision_recall(c)
    assert np.allclose(pr["recall"], [0.5, 1.0, 2 / 3]) and np.allclose(pr["precision"], [0.5, 0.5, 1.0])


def synthetic_dataset(directory, num_episodes=24, size=16, seed=0):
    """Noise frames; a reward +1 when the next frame shows a white square top left (8% of steps), -1 for one
    bottom right (4%), and the episode ends on a black frame: rare classes a model can see."""
    rng = np.random.default_rng(seed)
    ds = Dataset(directory)
    for _ in range(num_episodes):
        length = int(rng.integers(10, 25))
        frames = rng.integers(60, 190, (length + 1, size, size, 3), dtype=np.uint8)
        rew = rng.choice([1.0, -1.0, 0.0], size=length, p=[0.08, 0.04, 0.88])
        frames[1:][rew > 0, :5, :5] = 255
        frames[1:][rew < 0, -5:, -5:] = 255
        frames[-1] = 0
        end = np.zeros(length, bool)
        end[-1] = True
        ds.add(Episode(frames[:-1], rng.integers(0, 3, length), rew, end, np.zeros(length, bool), final_obs=frames[-1]))
    return ds


def test_training_finds_the_rare_rewards_and_the_ends(tmp_path):
    train = synthetic_dataset(tmp_path / "train", seed=0)
    test = synthetic_dataset(tmp_path / "test", num_episodes=8, seed=1)
    model = small_model(num_actions=3, lr_warmup_steps=10, lr=1e-3)
    sampler = SegmentSampler(train, seq_length=8, batch_size=16, seed=0, can_sample_beyond_end=True)
    losses = [model.train_step(sampler.sample().to_torch())[0].item() for _ in range(400)]
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    result = evaluate(model, list(test), burn_in=3, window=5)
    # every class, the rare ones included, is found far more often than chance (which is 0 for a model that
    # always predicts the majority class, and the class's share for one that guesses)
    assert (result["rew"]["recall"] > 0.6).all(), result["rew"]
    assert (result["end"]["recall"] > 0.6).all(), result["end"]
    assert result["confusion_rew"].sum() == sum(len(e) for e in test)


def test_predict_episode_covers_every_step(tmp_path):
    ds = synthetic_dataset(tmp_path, num_episodes=2)
    model = small_model(num_actions=3)
    episode = ds[0]
    pred = predict_episode(model, episode, burn_in=3, window=5)
    assert pred["probs_rew"].shape == (len(episode), 3) and pred["probs_end"].shape == (len(episode), 2)
    assert np.allclose(pred["probs_rew"].sum(-1), 1, atol=1e-5)
    assert pred["end"][-1] == 1 and pred["end"][:-1].sum() == 0
    unfinished = Episode(episode.obs, episode.act, episode.rew, np.zeros(len(episode), bool), episode.trunc)
    assert len(predict_episode(model, unfinished, window=5)["rew"]) == len(episode) - 1


def test_sampling_follows_the_logits():
    model = small_model()
    with torch.no_grad():  # a head that is sure: reward +1, no end
        model.head[-1].weight.zero_()
    bias = torch.tensor([-30.0, -30.0, 30.0, 30.0, -30.0])
    model.head.register_forward_hook(lambda module, inputs, out: out + bias)
    batch = random_batch(t=2)
    rew, end, state = model.sample(batch["obs"][:, 0], batch["act"][:, 0], batch["obs"][:, 1])
    assert rew.tolist() == [1.0, 1.0, 1.0] and not end.any() and state[0].shape == (1, 3, 32)
    rew, end, _ = model.sample(batch["obs"], batch["act"], batch["obs"])
    assert rew.shape == (3, 2) and (rew == 1).all()


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = small_model(num_actions=4)
    model.game = "Pong"
    model.train_step(random_batch(t=5))
    path = tmp_path / "rew_end.pt"
    model.save(path, with_optimizer=True)
    loaded = RewEndModel.load(path, game="Pong", config=model.cfg, autocast=False, channels_last=False)
    assert loaded.num_updates == 1
    batch = random_batch(t=5)
    args = (batch["obs"][:, :-1], batch["act"][:, :-1], batch["obs"][:, 1:])
    torch.testing.assert_close(loaded(*args)[0], model(*args)[0])
    with pytest.raises(ValueError, match="'Pong', not of 'Breakout'"):
        RewEndModel.load(path, game="Breakout")
    with pytest.raises(ValueError, match="lstm_dim is 32 in the checkpoint, 64 expected"):
        RewEndModel.load(path, config=RewEndConfig(num_actions=4, **{**SMALL, "lstm_dim": 64}))
    wm = tmp_path / "wm.pt"
    WorldModel(WorldModelConfig(num_actions=4, unet=TINY), autocast=False).save(wm)
    with pytest.raises(ValueError, match="not a checkpoint of a RewEndModel"):
        RewEndModel.load(wm)


def test_loss_and_confusion_equal_the_indexed_ones_on_the_real_steps():
    model = small_model()
    data = random_batch(4, 7)
    data["mask"][0, :3] = False  # padding before an episode's start and after its end
    data["mask"][2, 5:] = False
    loss, metrics = model.loss(data)
    logits_rew, logits_end, _ = model(data["obs"][:, :-1], data["act"][:, :-1], data["obs"][:, 1:])
    keep = data["mask"][:, :-1]
    target_rew = data["rew"][:, :-1][keep].sign().long() + 1
    target_end = data["end"][:, :-1][keep].long()
    expected = F.cross_entropy(logits_rew[keep], target_rew) + F.cross_entropy(logits_end[keep], target_end)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    predicted = logits_rew[keep].argmax(-1)
    assert torch.equal(metrics["confusion_rew"], torch.bincount(target_rew * 3 + predicted, minlength=9).reshape(3, 3))
    assert metrics["confusion_end"].sum() == keep.sum()
