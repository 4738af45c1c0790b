"""Tests for diamond_lite.sampler: Karras eq. 5 schedule and the Euler / Heun / churn sampler.

The sampler is checked against a case with an exact answer: per-dimension Gaussian data
x0 ~ N(mu, s^2). Its ideal denoiser is D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2), the
probability-flow ODE is then linear, and its exact solution from sigma_max to 0 is
x(0) = mu + (x(sigma_max) - mu) * s / sqrt(s^2 + sigma_max^2).
"""

import math
import re

import pytest
import torch

from diamond_lite.sampler import (
    SamplerConfig,
    count_evaluations,
    initial_noise,
    karras_sigmas,
    sample,
)

MU = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
S = torch.tensor([0.5, 0.3, 1.0, 2.0], dtype=torch.float64)
# Samples per dimension: N * 4 stays under torch's intra-op parallel grain (32768 elements), so the
# elementwise ops run single-threaded, which is much faster than thread hand-offs on a busy 2-core CPU.
N = 8_000
MEAN_TOL = 4 / math.sqrt(N)  # 4 standard errors of a sample mean, in units of s


def gaussian_denoiser(x, sigma):
    sigma2 = sigma.reshape(-1, 1) ** 2
    return (S**2 * x + sigma2 * MU) / (S**2 + sigma2)


def exact_flow(x_start, sigma_max):
    return MU + (x_start - MU) * S / torch.sqrt(S**2 + sigma_max**2)


def start(n, sigma_max, seed=0):
    g = torch.Generator().manual_seed(seed)
    return initial_noise((n, 4), sigma_max, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# karras_sigmas
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 10, 50])
def test_karras_sigmas_shape_endpoints_and_order(n):
    sig = karras_sigmas(n, sigma_min=2e-3, sigma_max=5.0)
    assert sig.dtype == torch.float32 and sig.shape == (n + 1,)
    assert sig[0].item() == pytest.approx(5.0)
    assert sig[-1].item() == 0.0
    if n > 1:
        assert sig[-2].item() == pytest.approx(2e-3)
    assert (sig[1:] < sig[:-1]).all()


def test_karras_sigmas_eq5_middle_value():
    # sigma_max = 2^7, sigma_min = 1, rho = 7: sigma^(1/7) goes 2 -> 1.5 -> 1, so the middle is 1.5^7.
    sig = karras_sigmas(3, sigma_min=1.0, sigma_max=128.0, rho=7)
    torch.testing.assert_close(sig, torch.tensor([128.0, 1.5**7, 1.0, 0.0]))


def test_karras_sigmas_eq5_general_step():
    n, lo, hi, rho = 10, 2e-3, 80.0, 7
    sig = karras_sigmas(n, lo, hi, rho)
    i = 4
    expected = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    assert sig[i].item() == pytest.approx(expected, rel=1e-6)


def test_karras_sigmas_one_step_is_sigma_max_then_zero():
    # As DIAMOND: linspace(0, 1, 1) == [0], so the single level is sigma_max.
    torch.testing.assert_close(karras_sigmas(1, 2e-3, 5.0), torch.tensor([5.0, 0.0]))


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_karras_sigmas_rejects_bad_num_steps(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        karras_sigmas(bad)


def test_sampler_config_defaults_are_diamonds():
    cfg = SamplerConfig()
    got = (cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, cfg.order, cfg.s_churn)
    assert got == (3, 2e-3, 5.0, 7, 1, 0.0)


# ---------------------------------------------------------------------------------------------
# initial_noise and count_evaluations
# ---------------------------------------------------------------------------------------------


def test_initial_noise_scale_shape_and_determinism():
    a = initial_noise((20_000, 3), 5.0, generator=torch.Generator().manual_seed(0))
    b = initial_noise((20_000, 3), 5.0, generator=torch.Generator().manual_seed(0))
    assert a.shape == (20_000, 3) and a.dtype == torch.float32 and torch.equal(a, b)
    assert a.std().item() == pytest.approx(5.0, rel=0.02)
    assert a.mean().item() == pytest.approx(0.0, abs=0.05)
    assert initial_noise((2, 2), 1.0, dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("order", [1, 2])
def test_count_evaluations_matches_the_sampler(n, order):
    calls = []

    def counting(x, sigma):
        calls.append(sigma[0].item())
        return gaussian_denoiser(x, sigma)

    sample(counting, start(3, 5.0), karras_sigmas(n).double(), order=order)
    assert len(calls) == count_evaluations(n, order) == (n if order == 1 else 2 * n - 1)
    assert 0.0 not in calls  # D is never asked about sigma = 0


# ---------------------------------------------------------------------------------------------
# sample: exact Gaussian case
# ---------------------------------------------------------------------------------------------


def test_one_step_returns_the_denoised_estimate():
    x = start(8, 5.0)
    out = sample(gaussian_denoiser, x, karras_sigmas(1, sigma_max=5.0).double())
    torch.testing.assert_close(out, gaussian_denoiser(x, torch.full((8,), 5.0, dtype=torch.float64)))


def test_many_euler_steps_follow_the_exact_flow_and_recover_the_data():
    sigma_max = 80.0
    x = start(N, sigma_max)
    out = sample(gaussian_denoiser, x, karras_sigmas(200, sigma_min=2e-3, sigma_max=sigma_max).double())
    exact = exact_flow(x, sigma_max)
    # Per-sample: Euler's O(1/n) error on the flow map, relative to the spread of each dimension.
    assert ((out - exact).abs() / S).max().item() < 0.1
    # Distribution: mean and std of the data (the start N(0, 80^2) also shifts the mean by mu*s/80 <= 0.05).
    assert ((out.mean(0) - MU).abs() < MEAN_TOL * S + 0.05).all()
    torch.testing.assert_close(out.std(0), S, rtol=0.03, atol=0)


def test_heun_is_more_accurate_than_euler_at_equal_steps():
    sigma_max, n = 80.0, 10
    x = start(N, sigma_max)
    exact_std = exact_flow(x, sigma_max).std(0)
    sigmas = karras_sigmas(n, sigma_min=2e-3, sigma_max=sigma_max).double()
    err = {
        order: (sample(gaussian_denoiser, x, sigmas, order=order).std(0) / exact_std - 1).abs().max().item()
        for order in (1, 2)
    }
    assert err[2] < 0.9 * err[1]


def test_convergence_orders():
    # Halving the step should cut Euler's error by ~2 (first order) and Heun's by ~4 (second order).
    sigma_max = 80.0
    x = start(16, sigma_max)
    exact = exact_flow(x, sigma_max)

    def error(n, order):
        sigmas = karras_sigmas(n, sigma_min=2e-3, sigma_max=sigma_max).double()
        return (sample(gaussian_denoiser, x, sigmas, order=order) - exact).abs().max().item()

    euler_ratio = error(40, 1) / error(80, 1)
    heun_ratio = error(40, 2) / error(80, 2)
    assert 1.6 < euler_ratio < 2.5
    assert heun_ratio > 3.0


# Euler needs more steps: each churned step jumps up by gamma*sigma and Euler's error on that jump only
# vanishes as gamma = s_churn / num_steps shrinks (at 100 Euler steps the std is still ~7% low).
@pytest.mark.parametrize("order, num_steps", [(1, 400), (2, 100)])
def test_churn_keeps_the_target_distribution(order, num_steps):
    # Start from the exact marginal at sigma_max, N(mu, s^2 + sigma_max^2); churn re-noises and denoises
    # along the way but must still land on N(mu, s^2).
    sigma_max = 80.0
    g = torch.Generator().manual_seed(1)
    x = MU + torch.sqrt(S**2 + sigma_max**2) * torch.randn(N, 4, generator=g, dtype=torch.float64)
    sigmas = karras_sigmas(num_steps, sigma_min=2e-3, sigma_max=sigma_max).double()
    plain = sample(gaussian_denoiser, x, sigmas, order=order)
    out = sample(gaussian_denoiser, x, sigmas, order=order, s_churn=20.0, generator=g)
    assert not torch.allclose(out, plain)  # churn did inject noise
    assert ((out.mean(0) - MU).abs() < MEAN_TOL * S).all()
    torch.testing.assert_close(out.std(0), S, rtol=0.05, atol=0)


def test_churn_outside_the_tmin_tmax_window_does_nothing():
    x = start(16, 5.0)
    sigmas = karras_sigmas(8).double()
    plain = sample(gaussian_denoiser, x, sigmas)
    # s_tmin above every sigma: no step is churned, and no noise is drawn.
    windowed = sample(gaussian_denoiser, x, sigmas, s_churn=5.0, s_tmin=100.0, generator=torch.Generator())
    torch.testing.assert_close(windowed, plain)


def test_churn_gamma_uses_karras_formula():
    # One step from sigma = 1 to 0 with a denoiser returning 0: x_out = 0 whatever happens, so instead
    # look at the sigma D receives: sigma_hat = (1 + gamma) sigma, gamma = min(s_churn / N, sqrt 2 - 1).
    seen = []

    def record(x, sigma):
        seen.append(sigma[0].item())
        return torch.zeros_like(x)

    sigmas = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    x = torch.zeros(2, 3, dtype=torch.float64)
    sample(record, x, sigmas, s_churn=0.2, generator=torch.Generator().manual_seed(0))
    assert seen == pytest.approx([1.1, 0.55])  # gamma = 0.2 / 2 = 0.1
    seen.clear()
    sample(record, x, sigmas, s_churn=10.0, generator=torch.Generator().manual_seed(0))
    assert seen == pytest.approx([math.sqrt(2), 0.5 * math.sqrt(2)])  # capped at sqrt(2) - 1


def test_sampling_is_deterministic_given_a_generator():
    x = start(64, 5.0)
    sigmas = karras_sigmas(6).double()
    run = lambda seed: sample(gaussian_denoiser, x, sigmas, order=2, s_churn=2.0,
                              generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))
    # Without churn the sampler is a deterministic ODE solver.
    assert torch.equal(sample(gaussian_denoiser, x, sigmas), sample(gaussian_denoiser, x, sigmas))


def test_invalid_order_is_rejected():
    with pytest.raises(ValueError, match=r"1.*2.*got 3"):
        sample(gaussian_denoiser, start(2, 5.0), karras_sigmas(3).double(), order=3)
    with pytest.raises(ValueError, match="got 3"):
        count_evaluations(4, 3)


def test_sample_rejects_a_schedule_with_no_step():
    with pytest.raises(ValueError, match="at least 2"):
        sample(gaussian_denoiser, start(2, 5.0), torch.tensor([5.0]))


def test_last_step_to_zero_returns_the_quantised_estimate_exactly():
    from diamond_lite.edm import quantize_8bit

    def denoise(x, sigma):
        return quantize_8bit(0.3 * x)

    g = torch.Generator().manual_seed(0)
    x = initial_noise((4, 3, 8, 8), 5.0, generator=g)
    for order in (1, 2):
        out = sample(denoise, x, karras_sigmas(3), order=order)
        levels = (out + 1) / 2 * 255
        assert (levels - levels.round()).abs().max() < 1e-4 and out.min() >= -1 and out.max() <= 1
