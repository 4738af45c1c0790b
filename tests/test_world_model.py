"""The frame-stacked U-Net world model: shapes, size, conditioning, training, checkpoints, determinism."""

import pickle

import pytest
import torch

from diamond_lite.unet import AdaGroupNorm, FourierFeatures, ResBlock, UNet, UNetConfig
from diamond_lite.edm import precondition, quantize_8bit, sample_training_sigma
from diamond_lite.world_model import WorldModel, WorldModelConfig, world_model_config
from world_model_helpers import TINY, batch, conditioning, randomize_output_layer, tiny



def test_paper_configuration_has_4_4M_parameters():
    model = WorldModel(WorldModelConfig(num_actions=18), autocast=False, channels_last=False)
    count = model.num_parameters()
    assert abs(count - 4.4e6) / 4.4e6 < 0.02
    assert count == 4_406_851  # DIAMOND's released model for an 18-action game
    assert world_model_config("paper", 18) == WorldModelConfig(num_actions=18)


def test_blocks_shapes_and_identity_at_init():
    x, cond = torch.randn(2, 32, 8, 8), torch.randn(2, 64)
    assert FourierFeatures(64)(torch.randn(2)).shape == (2, 64)
    assert AdaGroupNorm(32, 64)(x, cond).shape == x.shape
    block = ResBlock(32, 32, 64)
    # conv2's weights start at zero: a fresh residual block adds only conv2's bias to its input.
    assert torch.allclose(block(x, cond) - x, block.conv2.bias[None, :, None, None].expand_as(x), atol=1e-6)
    unet = UNet(UNetConfig(cond_channels=64, depths=[1, 2], channels=[32, 64], attn_depths=[False, False]))
    assert unet(x, cond).shape == x.shape
    assert unet(torch.randn(2, 32, 10, 6), cond).shape == (2, 32, 10, 6)  # sizes that need padding


@pytest.mark.parametrize("b", [1, 2, 5])
def test_shapes_for_any_batch(b):
    model = tiny()
    data = batch(b)
    assert model.loss(data)[0].shape == ()
    nxt = model.predict_next(data["obs"][:, :4], data["act"][:, :4])
    assert nxt.shape == (b, 3, 16, 16)
    dream = model.rollout(data["obs"][:, :4], torch.randint(0, 4, (b, 4 + 6 - 1)))
    assert dream.shape == (b, 6, 3, 16, 16)
    assert dream.min() >= -1 and dream.max() <= 1


def test_actions_and_noise_level_change_the_output():
    model = tiny()
    randomize_output_layer(model)
    data = batch(2)
    x, obs, act = torch.randn(2, 3, 16, 16), data["obs"][:, :4], data["act"][:, :4]
    d = model.denoiser
    with torch.no_grad():
        base = d(x, 1.0, obs=obs, act=act)
        other_actions = d(x, 1.0, obs=obs, act=(act + 1) % 4)
        other_sigma = d(x, 0.3, obs=obs, act=act)
        other_frames = d(x, 1.0, obs=obs.flip(1), act=act)
    assert (base - other_actions).abs().max() > 1e-4
    assert (base - other_sigma).abs().max() > 1e-4
    assert (base - other_frames).abs().max() > 1e-4


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    # A larger learning rate than DIAMOND's 1e-4 so that 60 steps are enough to see the loss fall.
    cfg = WorldModelConfig(num_actions=4, unet=TINY, lr=1e-3, lr_warmup_steps=10)
    model = WorldModel(cfg, autocast=False, channels_last=False)
    data = batch(4)

    def fixed_loss():
        with torch.no_grad():
            return float(model.loss(data, generator=torch.Generator().manual_seed(1))[0])

    before = fixed_loss()
    lrs = []
    for _ in range(60):
        model.train_step(data, generator=torch.Generator().manual_seed(1))
        lrs.append(model.optimizer.param_groups[0]["lr"])
    assert fixed_loss() < 0.8 * before
    assert model.num_updates == 60
    # Linear warm-up from 0 (DIAMOND's get_lr_sched): after k updates the learning rate is min(1, k/10) of its value.
    assert lrs[3] == pytest.approx(1e-3 * 4 / 10) and lrs[20] == pytest.approx(1e-3)


def test_the_rate_steps_down_after_its_updates_and_a_reload_keeps_the_step(tmp_path):
    cfg = WorldModelConfig(num_actions=4, unet=TINY, lr=1e-3, lr_warmup_steps=1, lr_step_after=3, lr_step_factor=0.1)
    model = WorldModel(cfg, autocast=False, channels_last=False)
    data = batch(2)
    rates = []
    for _ in range(5):
        rates.append(model.optimizer.param_groups[0]["lr"])
        model.train_step(data)
    assert rates == pytest.approx([0.0, 1e-3, 1e-3, 1e-4, 1e-4])
    model.save(tmp_path / "wm.pt", with_optimizer=True)
    again = WorldModel.load(tmp_path / "wm.pt", autocast=False, channels_last=False)
    assert again.cfg.lr_step_after == 3
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    again.train_step(data)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_masked_targets_do_not_count():
    model = tiny()
    randomize_output_layer(model)
    data = batch(4)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    full = model.loss(data, generator=g())[0]
    masked = dict(data, mask=data["mask"].clone())
    masked["mask"][0, 5] = False
    changed = dict(masked, obs=masked["obs"].clone())
    changed["obs"][0, 5] = 0.77  # the masked target may be anything
    assert torch.allclose(model.loss(masked, generator=g())[0], model.loss(changed, generator=g())[0])
    assert not torch.allclose(full, model.loss(masked, generator=g())[0])
    # A padded target of term 0 does not count in term 0, but its denoised estimate still conditions term 1, as in
    # DIAMOND (where padded frames are zeros)
    masked = dict(data, mask=data["mask"].clone())
    masked["mask"][0, 4] = False
    changed = dict(masked, obs=masked["obs"].clone())
    changed["obs"][0, 4] = 0.77
    assert not torch.allclose(model.loss(masked, generator=g())[0], model.loss(changed, generator=g())[0])


class Recording(torch.nn.Module):
    """Wraps a FrameStackNet and keeps every call's arguments, so a test can redo each loss term by hand."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x_in, c_noise, *, obs, act):
        self.calls.append(dict(obs=obs.clone(), act=act.clone()))
        return self.net(x_in, c_noise, obs=obs, act=act)


def test_the_loss_is_the_mean_of_diamonds_two_terms_by_hand():
    """DIAMOND's Denoiser.forward with num_autoregressive_steps = 1: term 0 predicts frame 4 from the real frames
    0-3; term 1 predicts frame 5 from the real frames 1-3 and term 0's quantised denoised estimate of frame 4."""
    model = tiny()
    randomize_output_layer(model)
    assert model.cfg.num_autoregressive_steps == 1 and model.segment_length == 6
    net = model.denoiser.inner
    model.denoiser.inner = recording = Recording(net)
    data = batch(3)
    data["mask"][1, 4] = False  # a padded target in term 0 only
    loss, metrics = model.loss(data, generator=torch.Generator().manual_seed(11))

    g = torch.Generator().manual_seed(11)
    cfg = model.cfg.denoiser
    obs, act, frames, terms = data["obs"], data["act"], data["obs"].clone(), []
    for i in range(2):
        x0 = obs[:, 4 + i]
        sigma = sample_training_sigma(3, generator=g)
        x_noisy = x0 + cfg.sigma_offset_noise * torch.randn(3, 3, 1, 1, generator=g) + sigma.reshape(3, 1, 1, 1) * torch.randn(x0.shape, generator=g)
        cs = precondition(sigma, cfg.sigma_data, cfg.sigma_offset_noise)
        c_in, c_out, c_skip = (getattr(cs, k).reshape(3, 1, 1, 1) for k in ("c_in", "c_out", "c_skip"))
        with torch.no_grad():
            out = net(c_in * x_noisy, cs.c_noise, obs=frames[:, i : 4 + i], act=act[:, i : 4 + i])
        target = (x0 - c_skip * x_noisy) / c_out
        keep = data["mask"][:, 4 + i]
        terms.append(((out - target) ** 2)[keep].mean())
        denoised = quantize_8bit(c_skip * x_noisy + c_out * out)
        torch.testing.assert_close(recording.calls[i]["obs"], frames[:, i : 4 + i])
        frames[:, 4 + i] = denoised
    torch.testing.assert_close(loss, (terms[0] + terms[1]) / 2)
    torch.testing.assert_close(metrics["loss_autoregressive"], terms[1])
    # the conditioning of term 1: three real frames, then the model's own 8-bit estimate of frame 4
    seen = recording.calls[1]["obs"]
    torch.testing.assert_close(seen[:, :3], obs[:, 1:4])
    torch.testing.assert_close(seen[:, 3], frames[:, 4])
    assert not torch.equal(seen[:, 3], obs[:, 4])
    levels = (seen[:, 3] + 1) / 2 * 255
    assert (levels - levels.round()).abs().max() < 1e-3  # on the 8-bit grid
    assert torch.equal(data["obs"], obs)  # the batch itself is left as it came


def test_the_autoregressive_term_trains_through_its_own_target_only():
    model = tiny()
    randomize_output_layer(model)
    data = batch(2)
    loss = model.loss(data, generator=torch.Generator().manual_seed(0))[0]
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # no autoregressive step: one term on segments of 5 frames, and a segment of the wrong length is refused
    single = WorldModel(WorldModelConfig(num_actions=4, unet=TINY, num_autoregressive_steps=0), autocast=False, channels_last=False)
    assert single.segment_length == 5
    single.loss(batch(2, length=5))
    with pytest.raises(ValueError, match="n \\+ 1 \\+ num_autoregressive_steps = 5, got 6"):
        single.loss(batch(2))
    with pytest.raises(ValueError, match="num_autoregressive_steps must be >= 0"):
        WorldModelConfig(num_actions=4, num_autoregressive_steps=-1)


def test_every_profile_trains_with_diamonds_autoregressive_step():
    for name in ("smoke", "course", "paper"):
        assert world_model_config(name, 6).num_autoregressive_steps == 1


def test_optimizer_settings_are_diamonds():
    model = tiny()
    decayed, not_decayed = model.optimizer.param_groups
    assert isinstance(model.optimizer, torch.optim.AdamW)
    assert decayed["weight_decay"] == 1e-2 and not_decayed["weight_decay"] == 0.0
    assert decayed["eps"] == 1e-8 and decayed["initial_lr"] == 1e-4
    assert model.optimizer.param_groups[0]["lr"] == 0.0  # the first update has lr 0, as in DIAMOND
    # Weight decay on linear and conv weights only: not on biases, group norms or the action embedding.
    ids = {id(p) for p in decayed["params"]}
    inner = model.denoiser.inner
    assert id(inner.conv_in.weight) in ids and id(inner.cond_proj[0].weight) in ids
    assert id(inner.conv_in.bias) not in ids and id(inner.act_emb.weight) not in ids and id(inner.norm_out.weight) not in ids
    assert len(ids) + len(not_decayed["params"]) == len(list(model.parameters()))
    assert model.cfg.max_grad_norm == 1.0 and model.cfg.lr_warmup_steps == 100
    assert model.cfg.denoiser.sigma_offset_noise == 0.3 and model.cfg.sampler.num_steps == 3


def test_checkpoint_round_trip_and_rejection(tmp_path):
    model = tiny(game="Breakout")
    randomize_output_layer(model)
    data = batch(2)
    path = tmp_path / "wm.pt"
    model.save(path)
    loaded = WorldModel.load(path, game="Breakout", config=model.cfg, autocast=False, channels_last=False)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    args = (data["obs"][:, :4], data["act"][:, :4])
    assert torch.equal(model.predict_next(*args, generator=g()), loaded.predict_next(*args, generator=g()))

    with pytest.raises(ValueError, match="'Breakout', not of 'Pong'"):
        WorldModel.load(path, game="Pong")
    other = WorldModelConfig(num_actions=6, unet=TINY)
    with pytest.raises(ValueError, match="num_actions is 4 in the checkpoint, 6 expected"):
        WorldModel.load(path, config=other)

    half = tmp_path / "half.pt"
    model.save(half, half=True)
    assert half.stat().st_size < path.stat().st_size
    restored = WorldModel.load(half, autocast=False, channels_last=False)
    diff = (restored.predict_next(*args, generator=g()) - model.predict_next(*args, generator=g())).abs().max()
    assert diff <= 2 / 255 + 1e-6  # at most a quantisation level or so


def test_a_pickled_payload_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "diamond_lite.world_model/1", "payload": Evil()}, f)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        WorldModel.load(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        WorldModel.load(tmp_path / "junk.pt")


def test_sampling_is_deterministic_with_a_generator():
    model = tiny()
    randomize_output_layer(model)
    args = conditioning()
    a = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    b = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    c = model.predict_next(*args, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    m1 = WorldModel(WorldModelConfig(num_actions=4, unet=TINY), autocast=False, channels_last=False)
    torch.manual_seed(0)
    m2 = WorldModel(WorldModelConfig(num_actions=4, unet=TINY), autocast=False, channels_last=False)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_fast_path_matches_plain_fp32_within_bf16_tolerance():
    plain = tiny()
    randomize_output_layer(plain)
    fast = WorldModel(plain.cfg, autocast=True, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    data = batch(3)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    loss_plain, loss_fast = plain.loss(data, generator=g())[0], fast.loss(data, generator=g())[0]
    assert abs(float(loss_plain) - float(loss_fast)) < 0.05 * float(loss_plain)
    x = torch.randn(3, 3, 16, 16, generator=g())
    with torch.no_grad():
        d_plain = plain.denoiser(x, 0.5, obs=data["obs"][:, :4], act=data["act"][:, :4])
        with fast._autocast():
            d_fast = fast.denoiser(x.contiguous(memory_format=torch.channels_last), 0.5, obs=data["obs"][:, :4], act=data["act"][:, :4])
    assert (d_plain - d_fast.float()).abs().max() < 0.05


def test_bf16_sampling_copy_stays_close_to_fp32_and_follows_the_weights():
    """With autocast on, sampling runs a bf16 copy of the U-Net: within bf16 rounding of plain fp32 sampling,
    never part of the state, and remade whenever a weight changes (a step, a loaded state, an in-place edit)."""
    plain = tiny()
    randomize_output_layer(plain)
    fast = WorldModel(plain.cfg, autocast=True, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    args, g = conditioning(), lambda: torch.Generator().manual_seed(0)  # noqa: E731
    ours, reference = fast.predict_next(*args, generator=g()), plain.predict_next(*args, generator=g())
    assert fast.speedups.sampling_denoiser() is not fast.denoiser
    assert next(fast.speedups.sampling_denoiser().inner.unet.parameters()).dtype == torch.bfloat16
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    levels = (ours - reference).abs() * 127.5
    assert levels.mean() < 0.5 and levels.max() <= 4  # bf16 rounds; an 8-bit level or a few at the most
    assert set(fast.state_dict()) == set(plain.state_dict())  # the copy is not saved with the model
    copy_before = fast.speedups.sampling_denoiser()
    assert fast.speedups.sampling_denoiser() is copy_before  # unchanged weights: the same copy, not a new one per call
    with torch.no_grad():
        fast.denoiser.inner.conv_out.bias.add_(0.5)
    moved = fast.predict_next(*args, generator=g())
    assert (moved - ours).abs().mean() > 0.05
    after_edit = fast.speedups.sampling_denoiser()
    for group in fast.optimizer.param_groups:
        group["lr"] = 1e-2  # past the warm-up's 1e-6, so that one step moves the frame by far more than bf16 rounding
    fast.train_step(batch(3))  # the fused AdamW step does not bump the weights' version counters
    after_step = fast.speedups.sampling_denoiser()
    assert after_step is not after_edit
    stepped = WorldModel(plain.cfg, autocast=False, channels_last=True)
    stepped.load_state_dict(fast.state_dict())  # the trained weights, sampled in fp32 without a copy
    levels = (fast.predict_next(*args, generator=g()) - stepped.predict_next(*args, generator=g())).abs() * 127.5
    assert levels.mean() < 0.5 and levels.max() <= 4  # the weights after the step (a stale copy is ~50 levels off)
    fast.load_state_dict(plain.state_dict())
    assert fast.speedups.sampling_denoiser() is not after_step
    assert torch.equal(fast.predict_next(*args, generator=g()), ours)  # the same weights again: the same frame


def test_numpy_action_count_still_saves_a_safe_checkpoint(tmp_path):
    import numpy as np

    model = WorldModel(WorldModelConfig(num_actions=np.int64(4), unet=TINY), autocast=False, channels_last=False)
    model.save(tmp_path / "wm.pt")
    assert WorldModel.load(tmp_path / "wm.pt").cfg.num_actions == 4


def test_shipped_checkpoints_load_safely():
    from diamond_lite.atari import GAMES
    from diamond_lite.pretrain import KINDS, checkpoint_path
    from diamond_lite.profiles import PROFILES

    # the kinds pretrain ships, and the world model trained without its second term (notebook 02's comparison)
    kinds = dict(KINDS, world_model_one_term=KINDS["world_model"])
    found = 0
    for game in GAMES:
        for kind, cls in kinds.items():
            for profile in PROFILES:
                path = checkpoint_path(game, profile, kind)
                if path.exists():
                    assert path.stat().st_size < 10 * 2**20
                    model = cls.load(path, game=game)  # weights_only=True inside
                    assert model.num_updates > 0
                    if kind == "world_model_one_term":
                        assert model.cfg.num_autoregressive_steps == 0
                    found += 1
    shipped = [p for p in checkpoint_path("x", "y").parent.glob("*.pt") if "engine" not in p.name]  # the engine's: test_engine
    assert found == len(shipped), "every shipped .pt is named as pretrain names it"


def test_a_non_finite_loss_changes_nothing_and_check_finite_names_it():
    """The fused AdamW skips the step on the device (GradScaler's mechanism); finite steps are bit for bit those of a
    plain update, and check_finite raises with the first bad update's number and loss."""
    a, b = tiny(), tiny()
    data = batch(2)
    for _ in range(2):  # finite losses: the skip flag (0) changes nothing
        a.train_step(data, generator=torch.Generator().manual_seed(0))
        loss = b.loss(data, generator=torch.Generator().manual_seed(0))[0]
        b.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(b.parameters(), 1.0)
        b.optimizer.step()
        b.scheduler.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    a.check_finite()
    before = {k: v.clone() for k, v in a.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in a.optimizer.state.values()]
    weight = next(a.parameters())
    a.update((weight * float("nan")).sum())  # a NaN loss with gradients through the weights
    a.update(weight.sum() * 0 + float("inf"))
    for k, v in a.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(a.optimizer.state.values(), moments))
    with pytest.raises(FloatingPointError, match="WorldModel loss is nan at update 2"):
        a.check_finite()
