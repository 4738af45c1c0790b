"""The DDPM world model (DIAMOND Section 5.1's baseline): schedule, forward process, eps target, sampler, interface."""

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
    linear_betas,
    q_sample,
    respaced_timesteps,
    timestep_c_noise,
)
from diamond_lite.edm import precondition
from diamond_lite.world_model import CHECKPOINT_FORMAT, WorldModel, WorldModelConfig
from world_model_helpers import TINY, batch, conditioning, randomize_output_layer

AC = alphas_cumprod(linear_betas())


def tiny(num_actions=4, ddpm=None, **kw):
    torch.manual_seed(0)
    cfg = WorldModelConfig(num_actions=num_actions, unet=TINY)
    return DDPMWorldModel(cfg, autocast=False, channels_last=False, ddpm=ddpm, **kw)


# -- schedule and forward process --------------------------------------------------------------------


def test_linear_schedule_and_alphas_cumprod():
    betas = linear_betas()
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    steps = betas.diff()
    assert torch.allclose(steps, torch.full_like(steps, (0.02 - 1e-4) / 999))  # linear
    assert AC[0].item() == pytest.approx(1 - 1e-4)
    assert (AC.diff() < 0).all()  # strictly decreasing
    assert AC[-1].item() < 1e-4  # ~4e-5: x_T is pure noise for all practical purposes
    assert AC[-1].item() == pytest.approx(math.prod(1 - b for b in betas.tolist()), rel=1e-9)
    with pytest.raises(ValueError):
        linear_betas(10, 0.1, 0.01)


def test_q_sample_exact_formula():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(3, 2, 4, 4, generator=g) * 2 - 1, torch.randn(3, 2, 4, 4, generator=g)
    t = torch.tensor([1, 500, 1000])
    x_t = q_sample(x0, t, eps, AC)
    for i, ti in enumerate(t.tolist()):
        a = math.prod(1 - b for b in linear_betas().tolist()[:ti])
        assert torch.allclose(x_t[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i], atol=1e-6)
    # t = 1: almost clean (sqrt(1 - alpha_bar_1) = 0.01); an int t applies to the whole batch
    assert torch.equal(q_sample(x0, 1, eps, AC), q_sample(x0, torch.ones(3, dtype=torch.long), eps, AC))
    with pytest.raises(ValueError):
        q_sample(x0, torch.tensor([0, 1, 2]), eps, AC)  # timesteps are 1-based
    with pytest.raises(ValueError):
        q_sample(x0, 1001, eps, AC)


def test_q_sample_moments_by_monte_carlo():
    g = torch.Generator().manual_seed(1)
    n, x0_value = 200_000, 0.5
    for t in (10, 300, 1000):
        a = AC[t - 1].item()
        x_t = q_sample(torch.full((n, 1), x0_value), t, torch.randn(n, 1, generator=g), AC)
        assert x_t.mean().item() == pytest.approx(math.sqrt(a) * x0_value, abs=4 / math.sqrt(n))
        assert x_t.var().item() == pytest.approx(1 - a, rel=0.02, abs=1e-6)


def test_time_embedding_is_edms_c_noise_of_the_equivalent_sigma():
    t = torch.arange(1, 1001)
    c = timestep_c_noise(t, AC)
    assert (c.diff() > 0).all()  # monotone in t
    sigma = ((1 - AC) / AC).sqrt()
    assert torch.allclose(c, precondition(sigma.float()).c_noise, atol=1e-5)
    assert -1.2 < c[0].item() < -1.1 and 1.2 < c[-1].item() < 1.3  # the range EDM's embedding sees


# -- training target ---------------------------------------------------------------------------------


class EpsOracle(nn.Module):
    """Recovers the true eps from x_t, the known target x0 and the timestep encoded in c_noise."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x_t, c_noise, *, obs, act):
        a = 1 / (1 + torch.exp(8 * c_noise.double()))  # c_noise = ln(sigma)/4, alpha_bar = 1 / (1 + sigma^2)
        a = a[:, None, None, None]
        return ((x_t.double() - a.sqrt() * self.x0.double()) / (1 - a).sqrt()).float()


def test_loss_of_an_oracle_eps_predictor_is_zero():
    model = tiny()
    data = batch(4)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    fresh = model.loss(data, generator=g()).item()
    assert 0.8 < fresh < 1.2  # the fresh network predicts eps ~ 0 (zero output conv): loss ~ E[eps^2] = 1
    model.eps_net = EpsOracle(data["obs"][:, 4])
    assert model.loss(data, generator=g()).item() < 1e-6
    model.eps_net = EpsOracle(data["obs"][:, 3])  # the wrong frame as x0: no longer the true eps
    assert model.loss(data, generator=g()).item() > 1e-2


def test_loss_draw_order_t_then_eps():
    x0 = torch.rand(5, 3, 8, 8) * 2 - 1
    seen = {}

    def replay(x_t, t):  # returns the eps drawn with a replay of the generator: loss must be exactly 0
        g = torch.Generator().manual_seed(7)
        t_replay = torch.randint(1, 1001, (5,), generator=g)
        seen["t"] = (t, t_replay)
        return torch.randn(x0.shape, generator=g)

    assert ddpm_loss(replay, x0, AC, generator=torch.Generator().manual_seed(7)).item() == 0.0
    assert torch.equal(*seen["t"])
    ts = torch.cat([torch.randint(1, 1001, (1000,), generator=torch.Generator().manual_seed(s)) for s in range(3)])
    assert ts.min() == 1 and ts.max() == 1000  # t is uniform on 1..T, both ends included


def test_masked_targets_do_not_count():
    model = tiny()
    randomize_output_layer(model)
    data = batch(4)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    full = model.loss(data, generator=g())
    masked = dict(data, mask=data["mask"].clone())
    masked["mask"][0, 4] = False
    changed = dict(masked, obs=masked["obs"].clone())
    changed["obs"][0, 4] = 0.77
    assert torch.allclose(model.loss(masked, generator=g()), model.loss(changed, generator=g()))
    assert not torch.allclose(full, model.loss(masked, generator=g()))
    none = dict(data, mask=torch.zeros_like(data["mask"]))
    zero = model.loss(none, generator=g())
    assert zero.item() == 0.0 and zero.requires_grad


# -- sampler -----------------------------------------------------------------------------------------


def test_respaced_timesteps():
    assert respaced_timesteps(1000, 1000) == list(range(1, 1001))
    assert respaced_timesteps(1000, 10) == [1, 112, 223, 334, 445, 556, 667, 778, 889, 1000]
    assert respaced_timesteps(1000, 2) == [1, 1000]
    assert respaced_timesteps(1000, 1) == [1000]  # one step: from pure noise, at the top
    with pytest.raises(ValueError):
        respaced_timesteps(1000, 0)


MU, S = 0.3, 0.2


def gaussian_eps(x, t):
    """The ideal eps-predictor for data x0 ~ N(MU, S^2): E[eps | x_t]."""
    a = AC[t - 1].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return (1 - a).sqrt() * (x - a.sqrt() * MU) / (a * S**2 + 1 - a)


def exact_output_moments(num_steps):
    """Mean and std of the sampler's output with gaussian_eps, by propagating moments through the (linear)
    respaced ancestral steps: an independent derivation of what ddpm_sample must produce."""
    ac, steps = AC.tolist(), respaced_timesteps(1000, num_steps)
    m, v = 0.0, 1.0
    for i in reversed(range(len(steps))):
        a, ap = ac[steps[i] - 1], (ac[steps[i - 1] - 1] if i else 1.0)
        k = math.sqrt(a) * S**2 / (a * S**2 + 1 - a)  # E[x0 | x_t] = MU + k (x_t - sqrt(a) MU)
        if i == 0:
            return MU + k * (m - math.sqrt(a) * MU), k * math.sqrt(v)
        # posterior of the respaced process: mean = c0 x0 + c1 x_t, variance beta~
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
    if num_steps == 1000:  # full DDPM recovers the data distribution (beta~ is ~2% short on the std)
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
    assert model.ddpm == DDPMConfig() and model.ddpm.T == 1000 and model.ddpm.num_steps == 10
    opt = model.optimizer.param_groups[0]
    assert isinstance(model.optimizer, torch.optim.AdamW)
    assert opt["weight_decay"] == 1e-2 and opt["eps"] == 1e-8 and opt["initial_lr"] == 1e-4
    held = sum(p.numel() for group in model.optimizer.param_groups for p in group["params"])
    assert held == model.num_parameters()  # the optimiser holds eps_net


@pytest.mark.parametrize("b", [1, 3])
def test_shapes_of_predict_next_and_rollout(b):
    model = tiny()
    randomize_output_layer(model)
    data = batch(b)
    assert model.loss(data).shape == ()
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
    data = batch(4)

    def fixed_loss():
        with torch.no_grad():
            return float(model.loss(data, generator=torch.Generator().manual_seed(1)))

    before = fixed_loss()
    for _ in range(40):
        model.train_step(data, generator=torch.Generator().manual_seed(1))
    assert fixed_loss() < 0.8 * before
    assert model.num_updates == 40


def test_checkpoint_round_trip_and_edm_ddpm_refuse_each_other(tmp_path):
    ddpm_cfg = DDPMConfig(T=500, beta_T=0.03, num_steps=4)
    model = tiny(ddpm=ddpm_cfg, game="Breakout")
    randomize_output_layer(model)
    model.train_step(batch(2))
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
