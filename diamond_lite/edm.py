"""EDM denoiser: preconditioning, training noise levels and the denoising loss.

DIAMOND's world model is a denoiser ``D(x_noisy, sigma)`` in the EDM framework of Karras et al. (2022),
"Elucidating the Design Space of Diffusion-Based Generative Models" (hereafter *Karras*). Data ``x0``
(frames scaled to [-1, 1]) are corrupted as ``x_noisy = x0 + sigma * eps`` and ``D`` predicts ``x0``.

Preconditioning (Karras Table 1, §5, Appendix B.6)
--------------------------------------------------
The raw network ``F`` is never asked for ``x0`` directly. It is wrapped as (Karras eq. 7)::

    D(x_noisy, sigma) = c_skip(sigma) * x_noisy + c_out(sigma) * F(c_in(sigma) * x_noisy, c_noise(sigma))

with, for data of standard deviation ``sigma_data``::

    c_in    = 1 / sqrt(sigma^2 + sigma_data^2)
    c_skip  = sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out   = sigma * sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_noise = ln(sigma) / 4

Why these numbers. ``Var(x_noisy) = sigma_data^2 + sigma^2``, so ``c_in`` gives the network an input of
unit variance at every noise level. Training ``D`` with an MSE on ``x0`` is the same as training ``F``
on the *effective target* ``(x0 - c_skip * x_noisy) / c_out`` with weight ``c_out^2`` (Karras eq. 8).
Karras choose ``c_skip`` to minimise that target's variance and ``c_out`` to make it exactly one
(Appendix B.6): ``Var[(1 - c_skip) x0 - c_skip n] = c_out^2``. So the network input *and* its target have
unit scale whether ``sigma`` is 0.002 or 20: at small ``sigma`` the skip path passes ``x_noisy`` through
and ``F`` predicts the (scaled) noise; at large ``sigma`` ``c_skip -> 0`` and ``F`` predicts ``x0``
itself. The loss is then taken directly on ``F`` (``lambda(sigma) c_out^2 = 1``, Karras Table 1).

DIAMOND's variant: offset noise
-------------------------------
DIAMOND (``src/models/diffusion/denoiser.py``) also adds *offset noise*: a second Gaussian term, one value
per sample and channel (shape ``(B, C, 1, 1)``), scaled by ``sigma_offset_noise = 0.3``::

    x_noisy = x0 + sigma_offset_noise * eps_offset + sigma * eps

Per pixel the total noise then has variance ``sigma^2 + sigma_offset_noise^2``, so DIAMOND computes every
coefficient from the effective level ``sigma_eff = sqrt(sigma^2 + sigma_offset_noise^2)`` -- and that
includes ``c_noise``: DIAMOND replaces ``sigma`` by ``sigma_eff`` *before* taking ``ln(.)/4``, so the
network is told ``ln(sigma_eff)/4``, not ``ln(sigma)/4``. We do the same. With
``sigma_offset_noise = 0`` everything reduces to plain Karras Table 1.

At sampling time DIAMOND's sampler adds no offset noise, yet still evaluates ``D`` with the same
``sigma_eff`` coefficients; we follow it (``Denoiser.denoise``).

Dtypes
------
:func:`precondition` accepts a python float (and returns python floats) or a tensor of any shape
(and returns tensors of that shape, dtype and device; low-precision inputs are computed in float32 and
cast back, so bfloat16 coefficients are the correctly rounded values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Preconditioning",
    "precondition",
    "TrainingSigmaConfig",
    "sample_training_sigma",
    "DenoiserConfig",
    "Denoiser",
    "quantize_8bit",
    "masked_mse",
]


@dataclass(frozen=True)
class Preconditioning:
    """The four coefficients of Karras Table 1 at one (or a batch of) noise level(s)."""

    c_in: Tensor | float
    c_out: Tensor | float
    c_skip: Tensor | float
    c_noise: Tensor | float


def precondition(
    sigma: Tensor | float, sigma_data: float = 0.5, sigma_offset_noise: float = 0.0
) -> Preconditioning:
    """EDM preconditioning (Karras Table 1), with DIAMOND's offset-noise correction.

    ``sigma_eff = sqrt(sigma^2 + sigma_offset_noise^2)`` is the total per-pixel noise std; then
    ``c_in = 1/sqrt(sigma_eff^2 + sigma_data^2)``, ``c_skip = sigma_data^2/(sigma_eff^2 + sigma_data^2)``,
    ``c_out = sigma_eff sigma_data/sqrt(sigma_eff^2 + sigma_data^2)`` and ``c_noise = ln(sigma_eff)/4``
    (DIAMOND feeds the effective level to the noise embedding too; see the module docstring).

    A python float gives python floats; a tensor gives tensors of the same shape, dtype and device.
    """
    if not isinstance(sigma, Tensor):
        sigma_eff = math.sqrt(sigma**2 + sigma_offset_noise**2)
        total = sigma_eff**2 + sigma_data**2
        return Preconditioning(
            c_in=1.0 / math.sqrt(total),
            c_out=sigma_eff * sigma_data / math.sqrt(total),
            c_skip=sigma_data**2 / total,
            c_noise=math.log(sigma_eff) / 4 if sigma_eff > 0 else -math.inf,
        )

    out_dtype = sigma.dtype if sigma.is_floating_point() else torch.get_default_dtype()
    # Half-precision arithmetic would round every intermediate; compute wide and round once at the end.
    work_dtype = torch.float64 if out_dtype == torch.float64 else torch.float32
    s = sigma.to(work_dtype)
    sigma_eff = torch.sqrt(s**2 + sigma_offset_noise**2)
    total = sigma_eff**2 + sigma_data**2
    coeffs = (
        torch.rsqrt(total),
        sigma_eff * sigma_data * torch.rsqrt(total),
        sigma_data**2 / total,
        torch.log(sigma_eff) / 4,
    )
    return Preconditioning(*(c.to(out_dtype) for c in coeffs))


@dataclass(frozen=True)
class TrainingSigmaConfig:
    """Log-normal training noise levels (Karras Table 1 "P_mean, P_std"), clipped as in DIAMOND.

    The defaults are DIAMOND's Atari values (paper, Appendix hyperparameters). DIAMOND's later CS:GO
    config uses ``loc=-1.2``.
    """

    loc: float = -0.4
    scale: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 20.0


def sample_training_sigma(
    n: int,
    loc: float = -0.4,
    scale: float = 1.2,
    sigma_min: float = 2e-3,
    sigma_max: float = 20.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``n`` training noise levels ``sigma = exp(loc + scale * N(0, 1))``, clipped to
    ``[sigma_min, sigma_max]`` (Karras Table 1, "ln(sigma) ~ N(P_mean, P_std^2)").

    DIAMOND clips *after* the exponential (``exp(.).clip(sigma_min, sigma_max)``), so the clipped tails
    pile up as point masses at exactly ``sigma_min`` and ``sigma_max`` rather than being redrawn. We do
    the same. Returns a 1-D float32 tensor; reproducible given ``generator``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if device is None and generator is not None:
        device = generator.device
    log_sigma = loc + scale * torch.randn(n, generator=generator, device=device, dtype=torch.float32)
    return log_sigma.exp().clamp(sigma_min, sigma_max)


def quantize_8bit(x: Tensor) -> Tensor:
    """Snap ``x`` to the 256 levels an 8-bit frame can take in [-1, 1].

    DIAMOND quantises every denoised estimate at sampling time, so that the world model's imagined
    frames are exactly representable as uint8 images, like the real ones. It truncates (a cast to
    ``uint8``), i.e. rounds *down* to the level below; we keep that rounding.
    """
    # The 1e-4 keeps every level a fixed point: without it float rounding puts some exact levels
    # (u / 127.5 - 1) a hair below themselves and the floor drops them one level.
    levels = torch.floor((x.clamp(-1, 1) + 1) / 2 * 255 + 1e-4)
    return levels / 255 * 2 - 1


@dataclass(frozen=True)
class DenoiserConfig:
    """Hyperparameters of :class:`Denoiser` (DIAMOND Atari defaults)."""

    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3
    training_sigma: TrainingSigmaConfig = field(default_factory=TrainingSigmaConfig)


def _expand_like(c: Tensor, x: Tensor) -> Tensor:
    """Give a per-sample coefficient of shape (B,) trailing singleton dims so it broadcasts over x."""
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


class Denoiser(nn.Module):
    """Turn any network ``inner(x_in, c_noise, **conditioning)`` into the EDM denoiser (Karras eq. 7)::

        D(x_noisy, sigma) = c_skip * x_noisy + c_out * inner(c_in * x_noisy, c_noise, **conditioning)

    ``inner`` must return a tensor shaped like ``x_in``; it receives ``c_noise`` with shape ``(B,)``.
    ``sigma`` may be a python float, a 0-d tensor or a ``(B,)`` tensor; it is broadcast over the batch
    and then over every non-batch dimension of ``x``. Conditioning is passed through untouched.
    """

    def __init__(self, inner: nn.Module, cfg: DenoiserConfig | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.cfg = cfg if cfg is not None else DenoiserConfig()

    def _batch_sigma(self, sigma: Tensor | float, x: Tensor) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim > 1:
            raise ValueError(f"sigma must be a scalar or have shape (B,), got shape {tuple(sigma.shape)}")
        if sigma.ndim == 1 and sigma.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"sigma has {sigma.shape[0]} values for a batch of {x.shape[0]}")
        return sigma.expand(x.shape[0])

    def _precondition(self, sigma: Tensor) -> Preconditioning:
        return precondition(sigma, self.cfg.sigma_data, self.cfg.sigma_offset_noise)

    def _network_output(self, x_noisy: Tensor, cs: Preconditioning, network=None, **conditioning) -> Tensor:
        return (network or self.inner)(_expand_like(cs.c_in, x_noisy) * x_noisy, cs.c_noise, **conditioning)

    def forward(self, x_noisy: Tensor, sigma: Tensor | float, **conditioning) -> Tensor:
        """The denoised estimate ``D(x_noisy, sigma)`` in full precision (training and analysis)."""
        sigma = self._batch_sigma(sigma, x_noisy)
        cs = self._precondition(sigma)
        out = self._network_output(x_noisy, cs, **conditioning)
        return _expand_like(cs.c_skip, x_noisy) * x_noisy + _expand_like(cs.c_out, x_noisy) * out

    @torch.no_grad()
    def denoise(self, x_noisy: Tensor, sigma: Tensor | float, **conditioning) -> Tensor:
        """``D(x_noisy, sigma)`` as the sampler uses it: clamped to [-1, 1] and snapped to the 8-bit grid
        (:func:`quantize_8bit`), as DIAMOND does, with no gradient."""
        return quantize_8bit(self(x_noisy, sigma, **conditioning))

    def apply_noise(
        self, x0: Tensor, sigma: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        """Corrupt ``x0`` (B, C, H, W) as DIAMOND does for training:
        ``x0 + sigma_offset_noise * eps_offset + sigma * eps``, with ``eps_offset`` of shape (B, C, 1, 1).

        Draw order with ``generator`` (part of the contract, so tests can replay it): ``eps_offset``
        first, then ``eps``.
        """
        if x0.ndim != 4:
            raise ValueError(f"x0 must have shape (B, C, H, W), got shape {tuple(x0.shape)}")
        b, c = x0.shape[:2]
        sigma = self._batch_sigma(sigma, x0)
        draw = dict(generator=generator, device=x0.device, dtype=x0.dtype)
        offset = self.cfg.sigma_offset_noise * torch.randn(b, c, 1, 1, **draw)
        eps = torch.randn(x0.shape, **draw)
        return x0 + offset + _expand_like(sigma, x0) * eps

    def loss(
        self,
        x0: Tensor,
        sigma: Tensor | float | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        network=None,
        return_denoised: bool = False,
        **conditioning,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Denoising score-matching loss on the network output (Karras eq. 2 rewritten as eq. 8).

        ``sigma`` (B,) is drawn with :func:`sample_training_sigma` when not given. ``x0`` is noised with
        :meth:`apply_noise` (DIAMOND's offset noise: one extra Gaussian value per sample and channel,
        times ``sigma_offset_noise``, shared by every pixel of that channel -- it teaches the model to
        shift a channel's overall brightness). The target is ``(x0 - c_skip x_noisy) / c_out`` with the
        coefficients of ``sigma_eff``, and the loss is its MSE with ``inner(c_in x_noisy, c_noise)``.

        ``mask`` (bool, (B,)) keeps only the samples marked True (padding is False); the mean is over the
        kept samples' elements, as in DIAMOND. An all-False mask gives a zero that still backpropagates.
        The mask weighs each sample's error rather than indexing the batch, so nothing waits for the
        device to say how many samples are kept.
        Draw order with ``generator``: sigma (if drawn), then the noises of :meth:`apply_noise`.
        ``network``, when given, runs in place of ``inner`` (the same module compiled: ``speedups.compile_training``).

        ``return_denoised`` also returns the denoised estimate ``D(x_noisy, sigma)`` of this very draw, clamped,
        snapped to the 8-bit grid and without gradient, as DIAMOND's ``Denoiser.forward`` keeps it to condition its
        next autoregressive term (``WorldModel.loss``).
        """
        b = x0.shape[0]
        if sigma is None:
            ts = self.cfg.training_sigma
            sigma = sample_training_sigma(
                b, ts.loc, ts.scale, ts.sigma_min, ts.sigma_max, generator=generator, device=x0.device
            )
        sigma = self._batch_sigma(sigma, x0)
        x_noisy = self.apply_noise(x0, sigma, generator=generator)
        cs = self._precondition(sigma)
        target = (x0 - _expand_like(cs.c_skip, x0) * x_noisy) / _expand_like(cs.c_out, x0)
        out = self._network_output(x_noisy, cs, network, **conditioning)
        loss = masked_mse(out, target, mask)
        if not return_denoised:
            return loss
        with torch.no_grad():
            denoised = _expand_like(cs.c_skip, x0) * x_noisy + _expand_like(cs.c_out, x0) * out.float()
        return loss, quantize_8bit(denoised)


def masked_mse(out: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """The MSE of ``out`` against ``target`` over the samples ``mask`` (bool, (B,)) keeps: the same number as
    ``F.mse_loss(out[mask], target[mask])`` (every sample has as many elements), computed without boolean indexing,
    which would wait for the device to count the kept samples. No sample kept gives a zero that backpropagates."""
    if mask is None:
        return F.mse_loss(out, target)
    b = out.shape[0]
    mask = torch.as_tensor(mask, dtype=torch.bool, device=out.device)
    if mask.shape != (b,):
        raise ValueError(f"mask must have shape ({b},), got shape {tuple(mask.shape)}")
    per_sample = (out - target).pow(2).flatten(1).mean(1)
    return torch.where(mask, per_sample, 0.0).sum() / mask.sum().clamp(min=1)
