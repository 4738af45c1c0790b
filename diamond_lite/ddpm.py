"""A DDPM world model (Ho et al. 2020) on DIAMOND's network: the baseline of DIAMOND's Section 5.1.

``DDPMWorldModel`` is a drop-in replacement for :class:`~diamond_lite.world_model.WorldModel`: same
configuration (``WorldModelConfig``), same U-Net and conditioning (``FrameStackNet``: 4 past frames stacked
on the channel axis, the 4 past actions and the noise level through adaptive group norm), same optimiser,
warm-up and gradient clipping (``train_step`` is inherited), same ``predict_next`` / ``rollout`` interface.
Only the diffusion *framework* changes, so a notebook can compare EDM and DDPM with everything else equal.

Forward process (Ho et al. eq. 4)
---------------------------------
A linear schedule ``beta_t`` from ``beta_1 = 1e-4`` to ``beta_T = 0.02`` over ``T = 1000`` steps (Ho et al.
Section 4), ``alpha_bar_t = prod_{s<=t} (1 - beta_s)``, and (:func:`q_sample`)::

    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps,      t in 1..T,  eps ~ N(0, I)

Timesteps are 1-based, as in the paper: ``alphas_cumprod[t - 1]`` is ``alpha_bar_t``.

Training (Ho et al. Algorithm 1, "L_simple")
--------------------------------------------
``t ~ Uniform{1..T}``, ``eps ~ N(0, I)`` (drawn in that order from the generator), and the loss is the MSE
between ``eps`` and the network output ``eps_theta(x_t, t)`` over the kept (unmasked) samples, exactly as
the EDM loss masks padded targets. ``x_t`` is fed to the network as is: DDPM's ``x_t`` already has
roughly unit variance at every ``t`` (variance ``alpha_bar Var(x0) + 1 - alpha_bar``), which is what
EDM's ``c_in`` achieves for its own ``x_noisy``. No offset noise, no ``c_skip``/``c_out``: that *is* the
difference DIAMOND's Section 5.1 is about (with eps-prediction, the network learns the identity when
noise dominates, so the first sampling steps get a poor estimate of the clean frame).

Time embedding
--------------
The network is told ``c_noise = ln(sigma_t) / 4`` with ``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)``
(:func:`timestep_c_noise`). ``x_t / sqrt(alpha_bar_t) = x0 + sigma_t eps``, so ``sigma_t`` is the
equivalent EDM noise level of step ``t``, and ``ln(sigma)/4`` is exactly EDM's ``c_noise`` (Karras Table 1).
The same ``FourierFeatures`` (frequencies ``~ N(0, 1)``) then see inputs in the same range as in the EDM
world model (here from -1.15 at t = 1, sigma = 0.01, to +1.26 at t = T, sigma = 157), so the comparison
does not hinge on how the timestep is embedded. (``t / T`` would work too; it is just another monotone
reparametrisation of the same information.)

Sampling with ``n`` steps (:func:`ddpm_sample`)
-----------------------------------------------
Start from ``x_T ~ N(0, I)`` and run DDPM's ancestral sampler (Ho et al. Algorithm 2) on a *respaced*
schedule (Nichol & Dhariwal 2021, improved-diffusion ``space_timesteps`` / ``SpacedDiffusion``):

* the ``n`` timesteps ``t_1 < ... < t_n`` are evenly spaced over ``1..T`` with both ends included,
  ``t_i = 1 + round(i (T - 1) / (n - 1))`` (:func:`respaced_timesteps`; improved-diffusion's rule for one
  section). For ``n = 1`` improved-diffusion would take ``t = 1`` only, i.e. a single denoising step at the
  *lowest* noise level from pure noise; we take ``t = T`` instead, the only sensible one-step sampler;
* the respaced process has ``alpha_bar`` at those steps and betas ``beta'_i = 1 - alpha_bar_{t_i} /
  alpha_bar_{t_{i-1}}`` (``alpha_bar_{t_0} = 1``); the network still receives the original ``t_i``;
* each step estimates ``x0 = (x - sqrt(1 - alpha_bar) eps_theta) / sqrt(alpha_bar)``, clamps it to
  [-1, 1] (improved-diffusion's ``clip_denoised``) and draws from the posterior ``q(x_{t_{i-1}} | x_{t_i},
  x0)``: mean ``sqrt(alpha_bar_prev) beta' / (1 - alpha_bar) x0 + sqrt(1 - beta') (1 - alpha_bar_prev) /
  (1 - alpha_bar) x`` and variance ``beta~ = beta' (1 - alpha_bar_prev) / (1 - alpha_bar)`` (Ho's
  "sigma_t^2 = beta~_t", improved-diffusion's ``FIXED_SMALL``);
* the last step (to ``alpha_bar = 1``) has zero variance and its mean is the clamped ``x0`` estimate,
  which is returned; ``predict_next`` snaps it to the 8-bit grid (:func:`~diamond_lite.edm.quantize_8bit`)
  like the EDM world model's frames. With ``n = T`` this is exactly Ho et al.'s Algorithm 2 (with
  ``beta~``).

What DIAMOND did
----------------
DIAMOND's Section 5.1 ("Choice of diffusion framework") trains a DDPM and an EDM world model "with the same
network architecture, on a shared static dataset of 100k frames collected with an expert policy on the game
Breakout", and shows imagined trajectories of 1000 steps "for different numbers of denoising steps n <= 10"
(Figure 3; Appendix K, Figure 8: average pixel drift, "DDPM becomes more stable with increasing number of
denoising steps, but is less stable than 1-step EDM, even with 10 denoising steps"). The paper does not say
which beta schedule, how many training steps ``T``, how the timestep was embedded, or how the ``n``
sampling steps were chosen among the ``T`` (respacing, DDIM, ...), and the released code
(``eloialonso/diamond``, ``src/models/diffusion/``) contains only the EDM model. The choices above
(Ho et al.'s ``T = 1000`` linear schedule, eps-prediction with ``L_simple``, improved-diffusion respacing)
are therefore ours: the standard DDPM, not a reproduction of DIAMOND's exact baseline. The default of
``n = 10`` sampling steps is the largest ``n`` of DIAMOND's Figure 3.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .edm import quantize_8bit
from .world_model import FrameStackNet, WorldModel, WorldModelConfig

__all__ = [
    "DDPM_CHECKPOINT_FORMAT",
    "DDPMConfig",
    "DDPMWorldModel",
    "alphas_cumprod",
    "ddpm_loss",
    "ddpm_sample",
    "linear_betas",
    "q_sample",
    "respaced_timesteps",
    "timestep_c_noise",
]

DDPM_CHECKPOINT_FORMAT = "diamond_lite.ddpm_world_model/1"


# -- schedule and forward process --------------------------------------------------------------------


def linear_betas(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """Ho et al.'s linear variance schedule: ``T`` values from ``beta_1`` to ``beta_T`` (float64)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not 0 < beta_1 <= beta_T < 1:
        raise ValueError(f"need 0 < beta_1 <= beta_T < 1, got beta_1={beta_1}, beta_T={beta_T}")
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """``alpha_bar_t = prod_{s <= t} (1 - beta_s)``; element ``t - 1`` belongs to timestep ``t``."""
    return torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float64), dim=0)


def _alpha_bar_at(t: Tensor | int, alphas_cumprod: Tensor, like: Tensor) -> Tensor:
    """``alpha_bar_t`` for 1-based ``t`` (int or (B,)), shaped to broadcast over ``like`` (B, ...)."""
    T = alphas_cumprod.shape[0]
    t = torch.as_tensor(t, device=like.device)
    if t.is_floating_point():
        raise TypeError("timesteps must be integers in 1..T")
    if t.numel() and (int(t.min()) < 1 or int(t.max()) > T):
        raise ValueError(f"timesteps must lie in 1..{T}, got range {int(t.min())}..{int(t.max())}")
    a = alphas_cumprod.to(device=like.device, dtype=torch.float64)[t.long() - 1]
    if a.ndim == 0:
        a = a.expand(like.shape[0])
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def q_sample(x0: Tensor, t: Tensor | int, eps: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """The forward process (Ho et al. eq. 4): ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``.

    ``t`` is 1-based, an int or a (B,) integer tensor; coefficients are computed in float64 and applied in
    ``x0``'s dtype.
    """
    a = _alpha_bar_at(t, alphas_cumprod, x0)
    return a.sqrt().to(x0.dtype) * x0 + (1 - a).sqrt().to(x0.dtype) * eps


def timestep_c_noise(t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """The network's noise-level input for timestep ``t``: ``ln(sigma_t) / 4`` with the equivalent EDM level
    ``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` (see the module docstring). Float32, shape of ``t``."""
    t = torch.as_tensor(t)
    a = alphas_cumprod.to(device=t.device, dtype=torch.float64)[t.long() - 1]
    return (0.125 * torch.log((1 - a) / a)).float()


# -- training ----------------------------------------------------------------------------------------

EpsFn = Callable[[Tensor, Tensor], Tensor]  # eps_fn(x_t, t) -> predicted eps, t: (B,) long in 1..T


def ddpm_loss(
    eps_fn: EpsFn,
    x0: Tensor,
    alphas_cumprod: Tensor,
    *,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """Ho et al.'s ``L_simple``: ``|| eps - eps_fn(x_t, t) ||^2`` with ``t ~ U{1..T}`` and ``x_t`` from
    :func:`q_sample`.

    Draw order with ``generator`` (a contract, so tests can replay it): ``t`` (unless given), then ``eps``.
    ``mask`` (bool, (B,)) keeps the samples marked True, as :meth:`Denoiser.loss` does; an all-False mask
    gives a zero that still backpropagates.
    """
    b, T = x0.shape[0], alphas_cumprod.shape[0]
    if t is None:
        t = torch.randint(1, T + 1, (b,), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = q_sample(x0, t, eps, alphas_cumprod)
    out = eps_fn(x_t, t)
    if mask is None:
        return F.mse_loss(out.float(), eps.float())
    mask = torch.as_tensor(mask, dtype=torch.bool, device=x0.device)
    if mask.shape != (b,):
        raise ValueError(f"mask must have shape ({b},), got shape {tuple(mask.shape)}")
    if not mask.any():
        return out.sum() * 0.0
    return F.mse_loss(out[mask].float(), eps[mask].float())


# -- sampling ----------------------------------------------------------------------------------------


def respaced_timesteps(T: int, num_steps: int) -> list[int]:
    """``num_steps`` timesteps in ``1..T``, ascending, evenly spaced with both ends included (improved-diffusion's
    ``space_timesteps(T, [num_steps])``, shifted to 1-based), except that one step is ``[T]``."""
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must lie in 1..T = {T}, got {num_steps}")
    if num_steps == 1:
        return [T]
    stride = (T - 1) / (num_steps - 1)
    steps, cur = [], 0.0
    for _ in range(num_steps):  # improved-diffusion accumulates the float stride; we keep its rounding
        steps.append(1 + round(cur))
        cur += stride
    return steps


@torch.no_grad()
def ddpm_sample(
    eps_fn: EpsFn,
    x_T: Tensor,
    alphas_cumprod: Tensor,
    num_steps: int,
    generator: torch.Generator | None = None,
    *,
    clip_x0: bool = True,
) -> Tensor:
    """DDPM ancestral sampling (Ho et al. Algorithm 2) on ``num_steps`` respaced timesteps, from ``x_T``.

    ``eps_fn(x, t)`` predicts the noise, with ``t`` a (B,) long tensor of the *original* 1-based timesteps.
    Each step estimates ``x0`` (clamped to [-1, 1] when ``clip_x0``) and draws ``x_prev`` from the posterior
    ``q(x_prev | x, x0)`` of the respaced process (variance ``beta~``); the last step returns the ``x0``
    estimate itself (its posterior has zero variance). Fresh noise comes from ``generator``. See the module
    docstring for the exact schedule.
    """
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).tolist()
    steps = respaced_timesteps(len(ac), num_steps)
    x, b = x_T, x_T.shape[0]
    for i in reversed(range(len(steps))):
        t = steps[i]
        a = ac[t - 1]
        a_prev = ac[steps[i - 1] - 1] if i > 0 else 1.0
        eps = eps_fn(x, torch.full((b,), t, dtype=torch.long, device=x.device)).to(x.dtype)
        x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        if i == 0:
            return x0
        beta = 1 - a / a_prev
        mean = (math.sqrt(a_prev) * beta / (1 - a)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)) * x
        var = beta * (1 - a_prev) / (1 - a)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = mean + math.sqrt(var) * noise
    raise AssertionError("unreachable")


# -- the world model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DDPMConfig:
    """DDPM's own settings: Ho et al.'s schedule, and the default number of sampling steps."""

    T: int = 1000
    beta_1: float = 1e-4
    beta_T: float = 0.02
    num_steps: int = 10  # the largest n in DIAMOND's Figure 3 (DDPM needs many more steps than EDM)
    clip_x0: bool = True

    def __post_init__(self) -> None:
        linear_betas(self.T, self.beta_1, self.beta_T)  # validates
        if not 1 <= self.num_steps <= self.T:
            raise ValueError(f"num_steps must lie in 1..T = {self.T}, got {self.num_steps}")

    def alphas_cumprod(self) -> Tensor:
        return alphas_cumprod(linear_betas(self.T, self.beta_1, self.beta_T))


class DDPMWorldModel(WorldModel):
    """DIAMOND's world-model network trained and sampled as a DDPM (eps-prediction), same interface as
    :class:`WorldModel`.

    The inner network is ``FrameStackNet`` unchanged, used as ``eps_theta``: ``eps_net(x_t, c_noise, obs=...,
    act=...)`` with ``c_noise`` from :func:`timestep_c_noise`. ``cfg.denoiser.sigma_data`` still scales the
    conditioning frames inside ``FrameStackNet``; ``cfg.denoiser``'s training-sigma and offset-noise settings
    and ``cfg.sampler`` are EDM's and are not used. The model has no ``denoiser`` attribute (so EDM code
    cannot silently use an eps-predictor as an x0-denoiser).
    """

    checkpoint_format = DDPM_CHECKPOINT_FORMAT

    def __init__(
        self,
        cfg: WorldModelConfig,
        device: str | torch.device = "cpu",
        *,
        autocast: bool | None = None,
        channels_last: bool | None = None,
        game: str | None = None,
        ddpm: DDPMConfig | None = None,
    ) -> None:
        super().__init__(cfg, device, autocast=autocast, channels_last=channels_last, game=game)
        # The base class built Denoiser(FrameStackNet(cfg)) and an optimiser over its parameters; keep the
        # very same FrameStackNet (so the optimiser still holds its parameters) and drop the EDM wrapper.
        net = self.denoiser.inner
        del self.denoiser
        self.eps_net: FrameStackNet = net
        self.ddpm = ddpm if ddpm is not None else DDPMConfig()
        self.alphas_cumprod = self.ddpm.alphas_cumprod()  # float64, CPU; not a buffer (derived from ddpm)

    def c_noise(self, t: Tensor) -> Tensor:
        return timestep_c_noise(t, self.alphas_cumprod).to(t.device)

    def _eps_fn(self, obs: Tensor, act: Tensor) -> EpsFn:
        def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
            return self.eps_net(self._layout(x_t), self.c_noise(t), obs=obs, act=act)

        return eps_fn

    # -- training ----------------------------------------------------------------------------------

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Ho et al.'s eps-prediction loss on segments of length ``n + 1``: the first ``n`` frames and
        actions condition, the last frame is ``x0``; padded targets are masked. Draw order: ``t``, ``eps``."""
        obs, act, mask = batch["obs"].to(self.device), batch["act"].to(self.device), batch["mask"].to(self.device)
        n = self.n
        if obs.shape[1] != n + 1:
            raise ValueError(f"world-model segments have length n + 1 = {n + 1}, got {obs.shape[1]}")
        with self._autocast():
            return ddpm_loss(
                self._eps_fn(obs[:, :n], act[:, :n]), obs[:, n], self.alphas_cumprod, generator=generator, mask=mask[:, n]
            ).float()

    # -- prediction --------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_next(
        self,
        obs: Tensor,
        act: Tensor,
        *,
        num_steps: int | None = None,
        sampler=None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The next frame ``(B, C, H, W)`` on the 8-bit grid in [-1, 1], with ``num_steps`` respaced DDPM steps
        (default ``ddpm.num_steps``). ``sampler`` exists for signature compatibility with
        :meth:`WorldModel.predict_next` (``rollout`` passes it) and must be None."""
        if sampler is not None:
            raise ValueError("DDPMWorldModel has no EDM sampler settings; pass num_steps instead")
        self.eval()
        obs, act = obs.to(self.device), act.to(self.device)
        b, _, c, h, w = obs.shape
        x_T = torch.randn(b, c, h, w, generator=generator, device=self.device)
        base = self._eps_fn(obs, act)

        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            with self._autocast():
                return base(x, t).float()

        x0 = ddpm_sample(eps_fn, x_T, self.alphas_cumprod, self.ddpm.num_steps if num_steps is None else num_steps, generator, clip_x0=self.ddpm.clip_x0)
        return quantize_8bit(x0)

    # rollout is inherited: it calls predict_next with num_steps, sampler=None and the generator.

    # -- checkpoints -------------------------------------------------------------------------------
    # WorldModel.save/load do the rest: they read the format tag from ``checkpoint_format`` (so an EDM and a
    # DDPM checkpoint refuse each other) and store the DDPM settings through these two hooks.

    def _checkpoint_extra(self) -> dict:
        return {"ddpm": asdict(self.ddpm)}

    @classmethod
    def _init_kwargs_from_checkpoint(cls, payload: dict) -> dict:
        return {"ddpm": DDPMConfig(**payload["ddpm"])}
