"""The DDPM world model (DIAMOND Section 5.1's baseline, the ddpm branch): schedule, forward process, target,
sampler (step for step against diffusers' DDPMScheduler, which the branch uses), interface."""

import math

import pytest
import torch
from torch import nn

from diamond_lite.ddpm import (
    DDPM_CHECKPOINT_FORMAT,
    DDPMConfig,
    DDPMWorldModel,
    alphas_cumprod,
    ddpm_loss,
    ddpm_sample,
    leading_timesteps,
    linear_betas,
    q_sample,
    timestep_c_noise,
)
from diamond_lite.world_model import CHECKPOINT_FORMAT, WorldModel, WorldModelConfig
from world_model_helpers import TINY, batch, conditioning, randomize_output_layer

diffusers = pytest.importorskip("diffusers")  # a dev dependency: the ddpm branch's own scheduler, to compare with

AC = alphas_cumprod(linear_betas())


def tiny(num_actions=4, ddpm=None, **kw):
    torch.manual_seed(0)
    cfg = WorldModelConfig(num_actions=num_actions, unet=TINY)
    return DDPMWorldModel(cfg, autocast=False, channels_last=False, ddpm=ddpm, **kw)


def scheduler(**kw):
    """The ddpm branch's scheduler: ``DDPMScheduler(num_train_timesteps=1000)``, diffusers' defaults."""
    return diffusers.DDPMScheduler(num_train_timesteps=1000, **kw)


# -- schedule and forward process --------------------------------------------------------------------


def test_schedule_is_the_schedulers_bit_for_bit():
    betas = linear_betas()
    assert betas.shape == (1000,) and betas.dtype == torch.float32
    assert torch.equal(betas, scheduler().betas) and torch.equal(AC, scheduler().alphas_cumprod)
    assert AC[0].item() == pytest.approx(1 - 1e-4)
    assert (AC.diff() < 0).all() and AC[-1].item() < 1e-4  # ~4e-5: pure noise at t = 999
    with pytest.raises(ValueError):
        linear_betas(10, 0.1, 0.01)


def test_q_sample_is_the_schedulers_add_noise():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 1, 500, 999])
    torch.testing.assert_close(q_sample(x0, t, noise, AC), scheduler().add_noise(x0, noise, t), rtol=0, atol=1e-6)
    a = AC[500].item()
    torch.testing.assert_close(q_sample(x0, 500, noise, AC), math.sqrt(a) * x0 + math.sqrt(1 - a) * noise)
    with pytest.raises(ValueError, match="0..999"):
        q_sample(x0, torch.tensor([0, 1, 2, 1000]), noise, AC)  # timesteps are 0-based


def test_time_embedding_is_the_branchs():
    assert torch.equal(timestep_c_noise(torch.tensor([0, 499, 999]), 1000), torch.tensor([0.001, 0.5, 1.0]))


# -- training target ---------------------------------------------------------------------------------


class Recorder(nn.Module):
    """An eps network that returns zeros and keeps what it was given."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def forward(self, x_t, c_noise, *, obs, act):
        self.seen = dict(x_t=x_t.clone(), c_noise=c_noise.clone(), obs=obs.clone())
        return torch.zeros_like(x_t)


def test_loss_is_the_branchs_compute_loss_by_hand():
    """Draw order offset, noise, t; the target is the noise with its offset; c_noise = (t + 1) / T; x_t and the
    conditioning frames reach the network unscaled."""
    model = tiny()
    recorder = Recorder()
    model.eps_net.forward = recorder.forward  # the real module keeps its frame_scale; only the call is recorded
    data = batch(3, length=5)
    loss = model.loss(data, generator=torch.Generator().manual_seed(4))[0]
    g = torch.Generator().manual_seed(4)
    x0 = data["obs"][:, 4]
    noise = 0.3 * torch.randn(3, 3, 1, 1, generator=g) + torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    x_t = scheduler().add_noise(x0, noise, t)
    torch.testing.assert_close(recorder.seen["x_t"], x_t)
    torch.testing.assert_close(recorder.seen["c_noise"], (t + 1).float() / 1000)
    torch.testing.assert_close(loss, (noise**2).mean())  # the network said zero
    assert model.eps_net.frame_scale == 1.0
    with torch.no_grad():  # FrameStackNet with frame_scale 1 stacks the frames as they are
        net = model.eps_net
        x_in, c = torch.randn(3, 3, 16, 16), torch.rand(3)
        unscaled = torch.nn.functional.conv2d(torch.cat([data["obs"][:, :4].flatten(1, 2), x_in], 1), net.conv_in.weight, net.conv_in.bias, padding=1)
        seen = []
        hook = net.conv_in.register_forward_hook(lambda m, args, out: seen.append(out))
        type(net).forward(net, x_in, c, obs=data["obs"][:, :4], act=data["act"][:, :4])
        hook.remove()
        torch.testing.assert_close(seen[0], unscaled)


class EpsOracle(nn.Module):
    """Recovers the true noise from x_t, the known target x0 and the timestep encoded in c_noise."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x_t, c_noise, *, obs, act):
        a = AC[(c_noise * 1000).round().long() - 1].reshape(-1, 1, 1, 1)
        return (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()


def test_loss_of_an_oracle_noise_predictor_is_zero():
    model = tiny()
    data = batch(4, length=5)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    fresh = model.loss(data, generator=g())[0].item()
    assert 0.9 < fresh < 1.4  # the fresh network predicts zero (zero output conv): loss ~ E[noise^2] = 1 + 0.3^2
    model.eps_net = EpsOracle(data["obs"][:, 4])
    assert model.loss(data, generator=g())[0].item() < 1e-4
    model.eps_net = EpsOracle(data["obs"][:, 3])  # the wrong frame as x0: no longer the true noise
    assert model.loss(data, generator=g())[0].item() > 1e-2


def test_timesteps_cover_0_to_T_minus_1():
    seen = []
    ddpm_loss(lambda x_t, t: seen.append(t) or torch.zeros_like(x_t), torch.zeros(4000, 1, 1, 1), AC,
              generator=torch.Generator().manual_seed(0))
    assert seen[0].min() == 0 and seen[0].max() == 999


def test_masked_targets_do_not_count():
    model = tiny()
    randomize_output_layer(model)
    data = batch(4, length=5)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    full = model.loss(data, generator=g())[0]
    masked = dict(data, mask=data["mask"].clone())
    masked["mask"][0, 4] = False
    changed = dict(masked, obs=masked["obs"].clone())
    changed["obs"][0, 4] = 0.77
    assert torch.allclose(model.loss(masked, generator=g())[0], model.loss(changed, generator=g())[0])
    assert not torch.allclose(full, model.loss(masked, generator=g())[0])
    none = dict(data, mask=torch.zeros_like(data["mask"]))
    zero = model.loss(none, generator=g())[0]
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="n \\+ 1 = 5, got 6"):
        model.loss(batch(4))


# -- sampler -----------------------------------------------------------------------------------------


def test_leading_timesteps_are_the_schedulers():
    for n in (2, 3, 5, 7, 10, 1000):
        s = scheduler()
        s.set_timesteps(n)
        assert leading_timesteps(1000, n) == s.timesteps.tolist()
    assert leading_timesteps(1000, 3) == [666, 333, 0]
    with pytest.raises(ValueError):
        leading_timesteps(1000, 0)


def smooth_eps(x, t):
    """A deterministic noise predictor that depends on x and t, to drive both samplers alike."""
    return torch.tanh(x * (1 + t.float()[:, None, None, None] / 1000)) * 0.8


@pytest.mark.parametrize("num_steps", [2, 3, 10])
def test_sampler_is_the_branchs_step_for_step(num_steps):
    """The ddpm branch's DDPMSampler: scheduler.set_timesteps(n), then scheduler.step at each timestep."""
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = ddpm_sample(smooth_eps, x_T, AC, num_steps, torch.Generator().manual_seed(1))
    s, x, g = scheduler(), x_T.clone(), torch.Generator().manual_seed(1)
    s.set_timesteps(num_steps)
    for t in s.timesteps:
        x = s.step(smooth_eps(x, torch.full((4,), int(t))), t, x, generator=g).prev_sample
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


def test_one_step_is_the_clean_estimate_at_half_T():
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    seen = []
    out = ddpm_sample(lambda x, t: seen.append(t) or smooth_eps(x, t), x_T, AC, 1)
    assert seen[0].tolist() == [500] * 4
    a = AC[500]
    torch.testing.assert_close(out, ((x_T - (1 - a).sqrt() * smooth_eps(x_T, seen[0])) / a.sqrt()).clamp(-1, 1))


MU, S = 0.3, 0.2


def gaussian_eps(x, t):
    """The ideal noise predictor for data x0 ~ N(MU, S^2): E[eps | x_t]."""
    a = AC[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def exact_output_moments(num_steps):
    """Mean and std of the sampler's output with gaussian_eps, by propagating moments through the (linear)
    ancestral steps: an independent derivation of what ddpm_sample must produce (no clamping at these values)."""
    ac, steps = AC.double().tolist(), leading_timesteps(1000, num_steps)
    k_step = 1000 // num_steps
    m, v = 0.0, 1.0
    for t in steps:
        a, ap = ac[t], (ac[t - k_step] if t - k_step >= 0 else 1.0)
        k = math.sqrt(a) * S**2 / (a * S**2 + 1 - a)  # E[x0 | x_t] = MU + k (x_t - sqrt(a) MU)
        if t == 0:
            return MU + k * (m - math.sqrt(a) * MU), k * math.sqrt(v)
        beta = 1 - a / ap
        c0, c1 = math.sqrt(ap) * beta / (1 - a), math.sqrt(1 - beta) * (1 - ap) / (1 - a)
        m, v = (c0 * k + c1) * m + c0 * MU * (1 - k * math.sqrt(a)), (c0 * k + c1) ** 2 * v + beta * (1 - ap) / (1 - a)


@pytest.mark.parametrize("num_steps", [1000, 10])
def test_sampler_on_gaussian_data(num_steps):
    g = torch.Generator().manual_seed(0)
    n = 20_000
    x = ddpm_sample(gaussian_eps, torch.randn(n, 1, generator=g), AC, num_steps, g)
    mean, std = exact_output_moments(num_steps)
    tol = 4 * S / math.sqrt(n)
    assert x.mean().item() == pytest.approx(mean, abs=tol)
    assert x.std().item() == pytest.approx(std, abs=tol)
    if num_steps == 1000:  # full DDPM recovers the data distribution
        assert x.mean().item() == pytest.approx(MU, abs=0.01)
        assert x.std().item() == pytest.approx(S, abs=0.01)
    else:  # 10 steps of eps-prediction: right mean, far too little spread
        assert x.std().item() < 0.6 * S


def test_sampler_clamps_the_x0_estimate_and_is_reproducible():
    x_T = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    far = lambda x, t: -torch.ones_like(x)  # noqa: E731  eps = -1 everywhere: x0 estimates far above 1
    assert (ddpm_sample(far, x_T, AC, 5) <= 1).all()
    assert ddpm_sample(far, x_T, AC, 5, clip_x0=False).max() > 1
    a = ddpm_sample(gaussian_eps, x_T, AC, 20, torch.Generator().manual_seed(1))
    b = ddpm_sample(gaussian_eps, x_T, AC, 20, torch.Generator().manual_seed(1))
    c = ddpm_sample(gaussian_eps, x_T, AC, 20, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- the shared interface ----------------------------------------------------------------------------


def test_same_network_and_interface_as_the_edm_world_model():
    model = tiny()
    torch.manual_seed(0)
    edm = WorldModel(model.cfg, autocast=False, channels_last=False)
    assert model.n == edm.n == 4
    assert model.num_parameters() == edm.num_parameters()
    assert not hasattr(model, "denoiser")  # no EDM denoiser to be used by mistake
    assert model.ddpm == DDPMConfig() and model.ddpm.T == 1000 and model.ddpm.num_steps == 3
    opt = model.optimizer.param_groups[0]
    assert isinstance(model.optimizer, torch.optim.AdamW)
    assert opt["weight_decay"] == 1e-2 and opt["eps"] == 1e-8 and opt["initial_lr"] == 1e-4
    held = sum(p.numel() for group in model.optimizer.param_groups for p in group["params"])
    assert held == model.num_parameters()  # the optimiser holds eps_net


@pytest.mark.parametrize("b", [1, 3])
def test_shapes_of_predict_next_and_rollout(b):
    model = tiny()
    randomize_output_layer(model)
    data = batch(b, length=5)
    assert model.loss(data)[0].shape == ()
    nxt = model.predict_next(data["obs"][:, :4], data["act"][:, :4], num_steps=3)
    assert nxt.shape == (b, 3, 16, 16)
    levels = (nxt + 1) / 2 * 255
    assert (levels - levels.round()).abs().max() < 1e-3  # on the 8-bit grid
    dream = model.rollout(data["obs"][:, :4], torch.randint(0, 4, (b, 4 + 3 - 1)), num_steps=2)
    assert dream.shape == (b, 3, 3, 16, 16)
    assert dream.min() >= -1 and dream.max() <= 1
    with pytest.raises(ValueError):
        model.predict_next(data["obs"][:, :4], data["act"][:, :4], sampler=object())


def test_predict_next_is_deterministic_with_a_generator():
    model = tiny()
    randomize_output_layer(model)
    args = conditioning()
    a = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    b = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    c = model.predict_next(*args, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_train_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = WorldModelConfig(num_actions=4, unet=TINY, lr=1e-3, lr_warmup_steps=10)
    model = DDPMWorldModel(cfg, autocast=False, channels_last=False)
    data = batch(4, length=5)

    def fixed_loss():
        with torch.no_grad():
            return float(model.loss(data, generator=torch.Generator().manual_seed(1))[0])

    before = fixed_loss()
    for _ in range(40):
        model.train_step(data, generator=torch.Generator().manual_seed(1))
    assert fixed_loss() < 0.8 * before
    assert model.num_updates == 40


def test_checkpoint_round_trip_and_edm_ddpm_refuse_each_other(tmp_path):
    ddpm_cfg = DDPMConfig(T=500, beta_T=0.03, num_steps=4)
    model = tiny(ddpm=ddpm_cfg, game="Breakout")
    randomize_output_layer(model)
    model.train_step(batch(2, length=5))
    data = batch(2)
    path = tmp_path / "ddpm.pt"
    model.save(path, with_optimizer=True)
    loaded = DDPMWorldModel.load(path, game="Breakout", config=model.cfg, autocast=False, channels_last=False)
    assert loaded.ddpm == ddpm_cfg and loaded.num_updates == 1 and loaded.game == "Breakout"
    assert torch.equal(loaded.alphas_cumprod, model.alphas_cumprod)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    args = (data["obs"][:, :4], data["act"][:, :4])
    assert torch.equal(model.predict_next(*args, generator=g()), loaded.predict_next(*args, generator=g()))
    with pytest.raises(ValueError, match="'Breakout', not of 'Pong'"):
        DDPMWorldModel.load(path, game="Pong")
    with pytest.raises(ValueError, match="num_actions is 4 in the checkpoint, 6 expected"):
        DDPMWorldModel.load(path, config=WorldModelConfig(num_actions=6, unet=TINY))

    torch.manual_seed(0)
    edm = WorldModel(model.cfg, autocast=False, channels_last=False)
    edm_path = tmp_path / "edm.pt"
    edm.save(edm_path)
    with pytest.raises(ValueError, match=DDPM_CHECKPOINT_FORMAT):
        DDPMWorldModel.load(edm_path)
    with pytest.raises(ValueError, match=CHECKPOINT_FORMAT):
        WorldModel.load(path)
