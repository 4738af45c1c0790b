"""Tests for diamond_lite.edm: Karras Table 1 preconditioning (DIAMOND variant), training sigmas, Denoiser."""

import math

import pytest
import torch
from torch import nn

from diamond_lite.edm import (
    Denoiser,
    DenoiserConfig,
    Preconditioning,
    precondition,
    quantize_8bit,
    sample_training_sigma,
)

# ---------------------------------------------------------------------------------------------
# precondition: hand-computed values
# ---------------------------------------------------------------------------------------------


def test_precondition_at_sigma_equal_sigma_data():
    # sigma = sigma_data: the noisy input is half signal, half noise by variance.
    sd = 0.5
    cs = precondition(0.5, sigma_data=sd)
    assert isinstance(cs, Preconditioning)
    assert cs.c_skip == pytest.approx(0.5)
    assert cs.c_out == pytest.approx(sd / math.sqrt(2))
    assert cs.c_in == pytest.approx(1 / (sd * math.sqrt(2)))
    assert cs.c_noise == pytest.approx(math.log(0.5) / 4)


def test_precondition_hand_values_without_offset():
    # sigma = 1.2, sigma_data = 0.5: sigma^2 + sigma_data^2 = 1.44 + 0.25 = 1.69 = 1.3^2.
    cs = precondition(1.2, sigma_data=0.5)
    assert cs.c_in == pytest.approx(1 / 1.3)
    assert cs.c_skip == pytest.approx(0.25 / 1.69)
    assert cs.c_out == pytest.approx(0.6 / 1.3)
    assert cs.c_noise == pytest.approx(0.0455803891, abs=1e-9)  # ln(1.2) / 4


def test_precondition_hand_values_with_offset_noise():
    # sigma = 0.4 with offset 0.3 -> sigma_eff = 0.5; with sigma_data = 1.2 the total is again 1.3^2.
    cs = precondition(0.4, sigma_data=1.2, sigma_offset_noise=0.3)
    assert cs.c_in == pytest.approx(1 / 1.3)
    assert cs.c_skip == pytest.approx(1.44 / 1.69)
    assert cs.c_out == pytest.approx(0.5 * 1.2 / 1.3)
    # DIAMOND feeds ln(sigma_eff)/4 to the network, not ln(sigma)/4 = -0.2291.
    assert cs.c_noise == pytest.approx(-0.1732867951, abs=1e-9)  # ln(0.5) / 4


def test_offset_noise_changes_every_coefficient():
    plain = precondition(0.4, sigma_data=0.5)
    offset = precondition(0.4, sigma_data=0.5, sigma_offset_noise=0.3)
    for name in ("c_in", "c_out", "c_skip", "c_noise"):
        assert getattr(plain, name) != pytest.approx(getattr(offset, name)), name


def test_precondition_extremes():
    sd = 0.5
    tiny, huge = precondition(1e-6, sd), precondition(1e6, sd)
    # Tiny noise: D is almost the identity; huge noise: D ignores x and trusts the network.
    assert tiny.c_skip == pytest.approx(1.0, abs=1e-9) and tiny.c_out == pytest.approx(1e-6, rel=1e-6)
    assert huge.c_skip == pytest.approx(0.0, abs=1e-9) and huge.c_out == pytest.approx(sd, rel=1e-6)


@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_precondition_identities(offset):
    sd = 0.5
    sigma = torch.logspace(-3, 2, 41, dtype=torch.float64)
    cs = precondition(sigma, sigma_data=sd, sigma_offset_noise=offset)
    s2 = sigma**2 + offset**2
    one = torch.ones_like(sigma)
    torch.testing.assert_close(cs.c_skip + cs.c_out**2 / sd**2, one)
    torch.testing.assert_close(cs.c_in**2 * (s2 + sd**2), one)
    torch.testing.assert_close(cs.c_out, s2.sqrt() * cs.c_skip.sqrt())
    # Karras App. B.6: the effective target's variance, (1-c_skip)^2 sd^2 + c_skip^2 sigma^2, equals c_out^2.
    torch.testing.assert_close((1 - cs.c_skip) ** 2 * sd**2 + cs.c_skip**2 * s2, cs.c_out**2)
    torch.testing.assert_close(cs.c_noise, s2.log() / 8)


@pytest.mark.parametrize("sigma", [2e-3, 0.1, 1.0, 20.0])
@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_network_input_and_target_have_unit_variance(sigma, offset):
    # Monte Carlo with Gaussian data of std sigma_data (per-pixel noise plus DIAMOND's per-channel offset).
    sd, n = 0.5, 200_000
    g = torch.Generator().manual_seed(0)
    x0 = sd * torch.randn(n, generator=g, dtype=torch.float64)
    noise = offset * torch.randn(n, generator=g, dtype=torch.float64) + sigma * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    x_noisy = x0 + noise
    cs = precondition(torch.tensor(sigma, dtype=torch.float64), sd, offset)
    target = (x0 - cs.c_skip * x_noisy) / cs.c_out
    assert (cs.c_in * x_noisy).var().item() == pytest.approx(1.0, abs=0.02)
    assert target.var().item() == pytest.approx(1.0, abs=0.02)
    assert target.mean().item() == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("sigma", [2e-3, 0.5, 5.0, 20.0])
def test_loss_of_zero_network_is_one_for_data_of_std_sigma_data(sigma):
    # With F = 0 the loss is E[target^2], which preconditioning makes 1 at every sigma -- this goes
    # through Denoiser.apply_noise, so DIAMOND's (B, C, 1, 1) offset noise is included.
    den = Denoiser(ZeroNet(), DenoiserConfig(sigma_data=0.5, sigma_offset_noise=0.3))
    g = torch.Generator().manual_seed(1)
    x0 = 0.5 * torch.randn(4096, 2, 4, 4, generator=g)
    loss = den.loss(x0, sigma=torch.full((4096,), sigma), generator=g)
    assert loss.item() == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------------------------------------
# precondition: dtype and shape handling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 1, 1)])
@pytest.mark.parametrize("offset", [0.0, 0.3])
def test_precondition_keeps_shape_and_dtype(dtype, shape, offset):
    g = torch.Generator().manual_seed(0)
    sigma64 = torch.rand(shape, generator=g, dtype=torch.float64) * 10 + 1e-2
    sigma = sigma64.to(dtype)
    cs = precondition(sigma, 0.5, offset)
    ref = precondition(sigma.to(torch.float64), 0.5, offset)
    tol = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    for name in ("c_in", "c_out", "c_skip", "c_noise"):
        c = getattr(cs, name)
        assert isinstance(c, torch.Tensor) and c.dtype == dtype and c.shape == torch.Size(shape), name
        assert c.device == sigma.device
        torch.testing.assert_close(c.double(), getattr(ref, name), rtol=tol, atol=tol)


def test_precondition_python_float_gives_floats_matching_tensors():
    cs = precondition(0.7, 0.5, 0.3)
    ct = precondition(torch.tensor(0.7, dtype=torch.float64), 0.5, 0.3)
    for name in ("c_in", "c_out", "c_skip", "c_noise"):
        value = getattr(cs, name)
        assert type(value) is float, name
        assert value == pytest.approx(getattr(ct, name).item(), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# sample_training_sigma
# ---------------------------------------------------------------------------------------------


def test_training_sigma_shape_dtype():
    s = sample_training_sigma(17, generator=torch.Generator().manual_seed(0))
    assert s.shape == (17,) and s.dtype == torch.float32


def test_training_sigma_is_clipped_at_both_ends():
    # A very wide log-normal so that both tails are clipped; the clip makes point masses at the bounds.
    s = sample_training_sigma(10_000, loc=0.0, scale=5.0, sigma_min=0.01, sigma_max=10.0,
                              generator=torch.Generator().manual_seed(0))
    assert s.min().item() == pytest.approx(0.01) and s.max().item() == pytest.approx(10.0)
    assert (s == s.min()).sum() > 100 and (s == s.max()).sum() > 100


def test_training_sigma_log_moments():
    s = sample_training_sigma(200_000, loc=-0.4, scale=1.2, sigma_min=1e-8, sigma_max=1e8,
                              generator=torch.Generator().manual_seed(0))
    log_s = s.double().log()
    assert log_s.mean().item() == pytest.approx(-0.4, abs=0.01)
    assert log_s.std().item() == pytest.approx(1.2, abs=0.01)


def test_training_sigma_defaults_are_diamonds():
    s = sample_training_sigma(200_000, generator=torch.Generator().manual_seed(0))
    assert s.min().item() >= 2e-3 and s.max().item() == pytest.approx(20.0)
    # Clipping at 20 only touches the top ~0.2% (ln 20 is 2.8 std above -0.4).
    assert s.log().median().item() == pytest.approx(-0.4, abs=0.02)


def test_training_sigma_deterministic_with_generator():
    a = sample_training_sigma(64, generator=torch.Generator().manual_seed(3))
    b = sample_training_sigma(64, generator=torch.Generator().manual_seed(3))
    c = sample_training_sigma(64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------
# Denoiser
# ---------------------------------------------------------------------------------------------


class ZeroNet(nn.Module):
    def forward(self, x_in, c_noise, **conditioning):
        return torch.zeros_like(x_in)


class RecordingNet(nn.Module):
    """Returns a fixed function of its inputs and remembers what it was given."""

    def forward(self, x_in, c_noise, **conditioning):
        self.seen = dict(x_in=x_in, c_noise=c_noise, **conditioning)
        return torch.tanh(x_in) + c_noise.reshape(-1, 1, 1, 1)


class ChannelAffine(nn.Module):
    """A tiny net: per-channel scale and bias, each a small MLP of c_noise."""

    def __init__(self, channels: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, 2 * channels))

    def forward(self, x_in, c_noise, **conditioning):
        scale, bias = self.mlp(c_noise[:, None]).reshape(-1, 2, self.channels, 1, 1).unbind(1)
        return scale * x_in + bias


def test_denoiser_with_zero_network_is_skip_only():
    den = Denoiser(ZeroNet(), DenoiserConfig(sigma_data=0.5, sigma_offset_noise=0.3))
    x = torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.01, 1.0, 10.0])
    c_skip = precondition(sigma, 0.5, 0.3).c_skip
    torch.testing.assert_close(den(x, sigma), c_skip.reshape(3, 1, 1, 1) * x)


def test_denoiser_formula_and_what_the_inner_net_receives():
    inner = RecordingNet()
    den = Denoiser(inner, DenoiserConfig(sigma_data=0.5, sigma_offset_noise=0.3))
    x = torch.randn(2, 3, 4, 4)
    sigma = torch.tensor([0.2, 3.0])
    cond = torch.randn(2, 5)
    out = den(x, sigma, obs=cond)
    cs = precondition(sigma, 0.5, 0.3)
    expected_in = cs.c_in.reshape(2, 1, 1, 1) * x
    torch.testing.assert_close(inner.seen["x_in"], expected_in)
    torch.testing.assert_close(inner.seen["c_noise"], cs.c_noise)
    assert inner.seen["c_noise"].shape == (2,)
    assert inner.seen["obs"] is cond
    f = torch.tanh(expected_in) + cs.c_noise.reshape(2, 1, 1, 1)
    torch.testing.assert_close(out, cs.c_skip.reshape(2, 1, 1, 1) * x + cs.c_out.reshape(2, 1, 1, 1) * f)


def test_denoiser_broadcasts_scalar_sigma():
    den = Denoiser(RecordingNet())
    x = torch.randn(4, 1, 3, 3)
    torch.testing.assert_close(den(x, 0.7), den(x, torch.full((4,), 0.7)))
    with pytest.raises(ValueError):
        den(x, torch.ones(3))


def test_denoise_is_clamped_and_on_the_8bit_grid():
    den = Denoiser(RecordingNet())
    x = 3 * torch.randn(8, 3, 5, 5)  # large enough that some estimates leave [-1, 1]
    y = den.denoise(x, torch.full((8,), 0.05))
    assert not y.requires_grad
    assert y.min() >= -1 and y.max() <= 1
    levels = (y + 1) / 2 * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert (y == -1).any() and (y == 1).any()
    # Quantising moves the float estimate down by less than one level (truncation, as in DIAMOND).
    d = den(x, torch.full((8,), 0.05)).detach().clamp(-1, 1)
    assert ((d - y) >= -1e-6).all() and ((d - y) < 2 / 255 + 1e-6).all()


def test_quantize_8bit_hand_values():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 5.0])
    # 0 -> 127.5 -> level 127 -> 127/127.5 - 1; 0.999 -> 254.87 -> level 254.
    expected = torch.tensor([-1.0, -1.0, 127 / 127.5 - 1, 254 / 127.5 - 1, 1.0, 1.0])
    torch.testing.assert_close(quantize_8bit(x), expected)


def test_loss_is_finite_scalar_and_backprops():
    torch.manual_seed(0)
    inner = ChannelAffine()
    den = Denoiser(inner)
    x0 = 0.5 * torch.randn(6, 2, 4, 4)
    loss = den.loss(x0, generator=torch.Generator().manual_seed(0))
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for name, p in inner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_loss_matches_the_target_form_by_hand():
    # Replay the noise (sigma given, so the generator draws eps_offset then eps) and compute eq. 8 by hand.
    den = Denoiser(RecordingNet(), DenoiserConfig(sigma_data=0.5, sigma_offset_noise=0.3))
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    sigma = torch.tensor([0.05, 0.8, 7.0])
    loss = den.loss(x0, sigma, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    offset = torch.randn(3, 2, 1, 1, generator=g)
    eps = torch.randn(3, 2, 4, 4, generator=g)
    x_noisy = x0 + 0.3 * offset + sigma.reshape(3, 1, 1, 1) * eps
    cs = precondition(sigma, 0.5, 0.3)
    c = {k: getattr(cs, k).reshape(-1, 1, 1, 1) for k in ("c_in", "c_out", "c_skip")}
    target = (x0 - c["c_skip"] * x_noisy) / c["c_out"]
    f = torch.tanh(c["c_in"] * x_noisy) + cs.c_noise.reshape(-1, 1, 1, 1)
    torch.testing.assert_close(loss, ((f - target) ** 2).mean())


def test_offset_noise_is_shared_by_all_pixels_of_a_channel():
    den = Denoiser(ZeroNet(), DenoiserConfig(sigma_offset_noise=0.3))
    x0 = torch.zeros(64, 3, 8, 8)
    # sigma ~ 0: only the offset noise remains, constant over H and W, varying over B and C.
    x_noisy = den.apply_noise(x0, 1e-9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x_noisy, x_noisy[:, :, :1, :1].expand_as(x_noisy))
    assert x_noisy[:, :, 0, 0].std().item() == pytest.approx(0.3, rel=0.15)


def test_loss_deterministic_given_generator():
    den = Denoiser(ChannelAffine())
    x0 = 0.5 * torch.randn(5, 2, 4, 4)
    a = den.loss(x0, generator=torch.Generator().manual_seed(9))
    b = den.loss(x0, generator=torch.Generator().manual_seed(9))
    c = den.loss(x0, generator=torch.Generator().manual_seed(10))
    assert a.item() == b.item() and a.item() != c.item()


def test_mask_equals_loss_on_the_kept_samples_with_the_same_noise():
    torch.manual_seed(0)
    den = Denoiser(ChannelAffine(), DenoiserConfig(sigma_data=0.5, sigma_offset_noise=0.3))
    x0 = 0.5 * torch.randn(6, 2, 4, 4)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 4.0, 8.0])
    mask = torch.tensor([True, False, True, True, False, False])
    masked = den.loss(x0, sigma, generator=torch.Generator().manual_seed(2), mask=mask)

    x_noisy = den.apply_noise(x0, sigma, generator=torch.Generator().manual_seed(2))
    keep = mask.nonzero().flatten()
    cs = precondition(sigma[keep], 0.5, 0.3)
    c = {k: getattr(cs, k).reshape(-1, 1, 1, 1) for k in ("c_in", "c_out", "c_skip")}
    target = (x0[keep] - c["c_skip"] * x_noisy[keep]) / c["c_out"]
    out = den.inner(c["c_in"] * x_noisy[keep], cs.c_noise)
    torch.testing.assert_close(masked, torch.nn.functional.mse_loss(out, target))
    unmasked = den.loss(x0, sigma, generator=torch.Generator().manual_seed(2))
    assert masked.item() != pytest.approx(unmasked.item())


def test_masked_out_samples_do_not_matter():
    den = Denoiser(ChannelAffine())
    x0 = 0.5 * torch.randn(4, 2, 4, 4)
    mask = torch.tensor([True, True, False, False])
    garbage = x0.clone()
    garbage[2:] = 100.0
    a = den.loss(x0, generator=torch.Generator().manual_seed(1), mask=mask)
    b = den.loss(garbage, generator=torch.Generator().manual_seed(1), mask=mask)
    assert a.item() == pytest.approx(b.item())
    kept_changed = x0.clone()
    kept_changed[0] = 100.0
    c = den.loss(kept_changed, generator=torch.Generator().manual_seed(1), mask=mask)
    assert c.item() != pytest.approx(a.item())


def test_all_false_mask_gives_zero_that_backprops():
    den = Denoiser(ChannelAffine())
    loss = den.loss(torch.randn(3, 2, 4, 4), mask=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()


def test_training_a_tiny_network_lowers_the_loss():
    # Gaussian "frames" with per-channel mean and std that differ from sigma_data: there is something
    # to learn (the optimal F is affine in its input with sigma-dependent coefficients).
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor([0.4, -0.3]).reshape(1, 2, 1, 1)
    std = torch.tensor([0.2, 0.6]).reshape(1, 2, 1, 1)
    den = Denoiser(ChannelAffine(), DenoiserConfig(sigma_data=0.5, sigma_offset_noise=0.3))
    opt = torch.optim.Adam(den.parameters(), lr=1e-2)

    def batch_loss():
        x0 = mean + std * torch.randn(64, 2, 4, 4, generator=g)
        return den.loss(x0, generator=g)

    with torch.no_grad():
        before = sum(batch_loss().item() for _ in range(20)) / 20
    for _ in range(300):
        opt.zero_grad()
        batch_loss().backward()
        opt.step()
    with torch.no_grad():
        after = sum(batch_loss().item() for _ in range(20)) / 20
    assert after < 0.8 * before


def test_quantisation_keeps_real_frames_unchanged():
    """Every uint8 level, as frames are scaled (u / 127.5 - 1), is a fixed point; snapping is idempotent."""
    from diamond_lite.edm import quantize_8bit

    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    assert torch.equal(quantize_8bit(levels), quantize_8bit(quantize_8bit(levels)))
    assert torch.allclose(quantize_8bit(levels), levels, atol=1e-6)
    assert torch.equal(((quantize_8bit(levels) + 1) * 127.5).round(), torch.arange(256, dtype=torch.float32))
