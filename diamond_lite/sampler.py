"""EDM sampling: the noise schedule and the Euler / Heun solvers of Karras et al. (2022).

A denoiser ``D(x, sigma)`` defines the probability-flow ODE (Karras eq. 1 with ``sigma(t) = t``,
``s(t) = 1``, and the score written through ``D``, eq. 3)::

    dx / dsigma = (x - D(x, sigma)) / sigma

Integrating it from a large ``sigma_max`` down to 0 carries a sample of ``N(0, sigma_max^2 I)`` (pure
noise, once ``sigma_max`` dwarfs the data) onto the data distribution. This module provides

* :func:`karras_sigmas` -- the discretisation of Karras eq. 5 (steps dense at small sigma, ``rho = 7``);
* :func:`sample` -- Euler (order 1) or Heun (order 2, Karras Algorithm 1) steps, with the optional
  "churn" of Karras Algorithm 2: before each step, fresh noise lifts ``sigma`` to ``sigma_hat``, which
  lets the sampler correct errors made in earlier steps;
* :func:`initial_noise` -- the starting sample ``sigma_max * N(0, I)`` (Algorithm 1, line 1).

What DIAMOND does (``src/models/diffusion/diffusion_sampler.py``)
------------------------------------------------------------------
* Its world model uses **3 Euler steps** (``order=1``), ``sigma_min = 2e-3``, ``sigma_max = 5``,
  ``rho = 7`` and no churn (``s_churn = 0``).
* **Starting noise.** DIAMOND starts from ``torch.randn(b, c, h, w)`` -- unit variance, *not* scaled by
  ``sigmas[0]``. In Karras's algorithms the starting sample at ``sigma_max = 5`` has standard deviation
  5. Since ``c_skip(5) ~ 0.01`` the first estimate barely depends on this, but every later state then
  carries less noise than its nominal sigma (by the factor ``1 / sigma_max``). :func:`initial_noise`
  follows Karras; a world model that wants to reproduce DIAMOND exactly calls it with
  ``sigma_max=1.0``.
* **One step.** Its schedule is built with ``linspace(0, 1, num_steps)``, which for one step is ``[0]``:
  the schedule is ``[sigma_max, 0]`` and the single step is ``x <- D(x, sigma_max)``. We match that.
* **Churn.** DIAMOND evaluates ``D`` at ``sigma`` rather than at the raised ``sigma_hat`` after adding
  churn noise (it then divides by ``sigma_hat``). Karras Algorithm 2 (and k-diffusion) evaluate at
  ``sigma_hat``; we follow Karras. The two agree whenever ``s_churn = 0``, DIAMOND's setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SamplerConfig", "karras_sigmas", "initial_noise", "sample", "count_evaluations"]

Denoise = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of :func:`karras_sigmas` and :func:`sample`; defaults are DIAMOND's world model."""

    num_steps: int = 3
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    order: int = 1
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0


def karras_sigmas(
    num_steps: int,
    sigma_min: float = 2e-3,
    sigma_max: float = 5.0,
    rho: float = 7,
    device: torch.device | str | None = None,
) -> Tensor:
    """Noise levels of Karras eq. 5, followed by a final 0 (``t_N = 0``)::

        sigma_i = (sigma_max^(1/rho) + i/(N-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i < N

    Interpolating linearly in ``sigma^(1/rho)`` puts most steps at small sigma, where the ODE's
    curvature (and the visible detail) is; ``rho = 7`` is Karras's choice.

    Returns a float32 tensor of ``num_steps + 1`` values. For ``num_steps == 1`` the ramp ``i/(N-1)`` is
    undefined; like DIAMOND (``linspace(0, 1, 1) == [0]``) we take the single level ``sigma_max``,
    giving ``[sigma_max, 0]``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    # Computed in float64 so the float32 result is the correctly rounded eq. 5 value.
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(device=device, dtype=torch.float32)


def initial_noise(
    shape: tuple[int, ...] | torch.Size,
    sigma_max: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The starting sample ``x ~ N(0, sigma_max^2 I)`` (Karras Algorithm 1/2, line 1).

    DIAMOND draws plain ``randn`` (i.e. ``sigma_max=1.0`` here); see the module docstring.
    """
    if device is None and generator is not None:
        device = generator.device
    return sigma_max * torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def count_evaluations(num_steps: int, order: int) -> int:
    """Calls to the denoiser made by :func:`sample`: ``n`` for Euler, ``2n - 1`` for Heun (the last step,
    to ``sigma = 0``, has no second evaluation since ``D`` is not defined there)."""
    _check_order(order)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
    return num_steps if order == 1 else 2 * num_steps - 1


def _check_order(order: int) -> None:
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (Euler) or 2 (Heun), got {order!r}")


def _churn_gamma(sigma: float, num_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """Karras Algorithm 2, line 4. The cap ``sqrt(2) - 1`` stops a step from more than doubling the
    noise variance (``sigma_hat^2 <= 2 sigma^2``), i.e. from adding more noise than is already there."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / num_steps, math.sqrt(2) - 1)


@torch.no_grad()
def sample(
    denoise: Denoise,
    x: Tensor,
    sigmas: Tensor,
    *,
    order: int = 1,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Integrate the probability-flow ODE ``dx/dsigma = (x - D(x, sigma))/sigma`` along ``sigmas``.

    ``order=2`` is Heun's method, Karras Algorithm 1; ``order=1`` drops its correction (Euler). With
    ``s_churn > 0`` each step whose ``sigma`` lies in ``[s_tmin, s_tmax]`` first adds noise of std
    ``s_noise * sqrt(sigma_hat^2 - sigma^2)`` to go up to ``sigma_hat = (1 + gamma) sigma``,
    ``gamma = min(s_churn / num_steps, sqrt(2) - 1)`` (Karras Algorithm 2), then steps from ``sigma_hat``.

    ``denoise(x, sigma)`` takes a batch and a ``(B,)`` tensor of noise levels and returns the clean
    estimate. ``x`` is the starting sample at ``sigmas[0]``, already scaled (see :func:`initial_noise`).
    ``sigmas`` is decreasing and normally ends with 0 (:func:`karras_sigmas`); the step to 0 is always
    an Euler step, since ``D`` and the slope are undefined at sigma = 0. Churn noise is drawn from
    ``generator`` when given. Returns the final ``x``.
    """
    _check_order(order)
    levels = [float(s) for s in torch.as_tensor(sigmas).flatten().tolist()]
    if len(levels) < 2:
        raise ValueError(f"sigmas needs at least 2 values (a start and an end), got {len(levels)}")
    num_steps = len(levels) - 1
    batch = x.shape[0]

    def at(level: float) -> Tensor:
        return torch.full((batch,), level, device=x.device, dtype=x.dtype)

    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        gamma = _churn_gamma(sigma, num_steps, s_churn, s_tmin, s_tmax)
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + s_noise * math.sqrt(sigma_hat**2 - sigma**2) * eps
        denoised = denoise(x, at(sigma_hat))
        if sigma_next == 0:
            # The Euler step to sigma = 0 lands exactly on D(x, sigma_hat); return it as is, so a
            # quantised denoiser's last estimate stays on its 8-bit grid (no rounding from x + slope*dt).
            x = denoised
            continue
        slope = (x - denoised) / sigma_hat
        dt = sigma_next - sigma_hat
        x_next = x + slope * dt
        if order == 2:
            # Heun: average the slope at both ends of the step (trapezoidal rule), second order in dt.
            slope_next = (x_next - denoise(x_next, at(sigma_next))) / sigma_next
            x_next = x + 0.5 * (slope + slope_next) * dt
        x = x_next
    return x
