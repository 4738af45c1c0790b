"""A DDPM world model (Ho et al. 2020) on DIAMOND's network: the baseline of DIAMOND's Section 5.1.

DIAMOND's authors released this baseline on the ``ddpm`` branch of ``eloialonso/diamond``
(``src/models/diffusion/denoiser.py`` and ``diffusion_sampler.py``, built on the diffusers library's
``DDPMScheduler``, version 0.17). This module is that baseline, written out: every choice below is the branch's.

``DDPMWorldModel`` is a drop-in replacement for :class:`~diamond_lite.world_model.WorldModel`: same
configuration (``WorldModelConfig``), same U-Net and conditioning (``FrameStackNet``: 4 past frames stacked
on the channel axis, the 4 past actions and the noise level through adaptive group norm), same optimiser,
warm-up and gradient clipping (``train_step`` is inherited), same ``predict_next`` / ``rollout`` interface.
Only the diffusion *framework* changes, so a notebook can compare EDM and DDPM with everything else equal.

Forward process (Ho et al. eq. 4)
---------------------------------
A linear schedule ``beta_t`` from ``1e-4`` to ``0.02`` over ``T = 1000`` steps (Ho et al. Section 4; the
scheduler's defaults), ``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` in float32 as the scheduler keeps it, and
(:func:`q_sample`, the scheduler's ``add_noise``)::

    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise

Timesteps are 0-based, ``t in 0..T-1``, as in diffusers: ``alphas_cumprod[t]`` is the level of step ``t``.

Training (Ho et al. Algorithm 1, "L_simple", with offset noise)
---------------------------------------------------------------
``noise = sigma_offset_noise * eps_offset + eps`` with ``eps_offset`` of shape ``(B, C, 1, 1)`` (the branch keeps
EDM's offset noise, 0.3), ``t ~ Uniform{0..T-1}`` (drawn in that order: offset, eps, t), and the loss is the MSE
between ``noise`` (offset included) and the network output over the kept (unmasked) samples. ``x_t`` goes to the
network as it is, and so do the conditioning frames: unlike the EDM model, the branch does not divide them by
``sigma_data`` (``FrameStackNet.frame_scale`` is 1 here). No ``c_in``, ``c_skip`` or ``c_out``: that *is* the
difference DIAMOND's Section 5.1 is about (with eps-prediction, the network learns the identity when noise
dominates, so the first sampling steps get a poor estimate of the clean frame). The branch trains one term per
segment (``n + 1`` frames): the EDM model's autoregressive term (``WorldModelConfig.num_autoregressive_steps``)
does not exist there, so this model ignores that field.

Time embedding
--------------
The network is told ``c_noise = (t + 1) / T`` (:func:`timestep_c_noise`), in (0, 1], through the same Fourier
features as EDM's ``ln(sigma)/4``.

Sampling with ``n`` steps (:func:`ddpm_sample`)
-----------------------------------------------
Start from ``x ~ N(0, I)``.

* ``n = 1``: one network call at ``t = T // 2 = 500``, not at the top: "the network learnt the identity function
  when the timestep is set to high values", the branch says, and the middle worked best in its authors'
  experiments. The frame is the clean estimate ``x0 = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` (clamped).
* ``n > 1``: the scheduler's "leading" spacing, ``t = (n - 1) k, ..., k, 0`` with ``k = T // n`` (3 steps: 666,
  333, 0), and DDPM's ancestral step (Ho et al. Algorithm 2) from each ``t`` to ``t - k``: estimate ``x0``, clamp it
  to [-1, 1], take the posterior mean ``sqrt(alpha_bar_prev) beta' / (1 - alpha_bar) x0 + sqrt(1 - beta')
  (1 - alpha_bar_prev) / (1 - alpha_bar) x`` with ``beta' = 1 - alpha_bar / alpha_bar_prev`` and add noise of
  variance ``beta' (1 - alpha_bar_prev) / (1 - alpha_bar)`` ("fixed_small") except at ``t = 0``, where
  ``alpha_bar_prev = 1`` and the step returns the clamped ``x0`` estimate.

``predict_next`` snaps the result to the 8-bit grid (:func:`~diamond_lite.edm.quantize_8bit`), as the branch
does. Its default of ``n = 3`` steps is the branch's imagination setting; notebook 04 sweeps ``n = 1 .. 10``.

What DIAMOND's paper adds
-------------------------
Section 5.1 trains both models "with the same network architecture, on a shared static dataset of 100k frames
collected with an expert policy on the game Breakout", and shows imagined trajectories of 1000 steps "for
different numbers of denoising steps n <= 10" (Figure 3; Appendix K, Figure 8: "DDPM becomes more stable with
increasing number of denoising steps, but is less stable than 1-step EDM, even with 10 denoising steps").
``tests/test_ddpm.py`` checks the sampler step for step against diffusers' ``DDPMScheduler``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor

from .edm import masked_mse, quantize_8bit
from .world_model import FrameStackNet, WorldModel, WorldModelConfig

__all__ = [
    "DDPM_CHECKPOINT_FORMAT",
    "DDPMConfig",
    "DDPMWorldModel",
    "alphas_cumprod",
    "ddpm_loss",
    "ddpm_sample",
    "leading_timesteps",
    "linear_betas",
    "q_sample",
    "timestep_c_noise",
]

DDPM_CHECKPOINT_FORMAT = "diamond_lite.ddpm_world_model/2"


# -- schedule and forward process --------------------------------------------------------------------


def linear_betas(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """Ho et al.'s linear variance schedule: ``T`` values from ``beta_1`` to ``beta_T`` (float32, as diffusers)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if not 0 < beta_1 <= beta_T < 1:
        raise ValueError(f"need 0 < beta_1 <= beta_T < 1, got beta_1={beta_1}, beta_T={beta_T}")
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float32)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """``alpha_bar_t = prod_{s <= t} (1 - beta_s)`` for ``t = 0..T-1`` (float32)."""
    return torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float32), dim=0)


def _alpha_bar_at(t: Tensor | int, alphas_cumprod: Tensor, like: Tensor) -> Tensor:
    """``alpha_bar_t`` for 0-based ``t`` (an int or (B,)), shaped to broadcast over ``like`` (B, ...)."""
    T = alphas_cumprod.shape[0]
    t = torch.as_tensor(t, device=like.device)
    if t.is_floating_point():
        raise TypeError(f"timesteps must be integers in 0..{T - 1}")
    if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"timesteps must lie in 0..{T - 1}, got range {int(t.min())}..{int(t.max())}")
    a = alphas_cumprod.to(device=like.device)[t.long()]
    if a.ndim == 0:
        a = a.expand(like.shape[0])
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim)).to(like.dtype)


def q_sample(x0: Tensor, t: Tensor | int, noise: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """The forward process (Ho et al. eq. 4): ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise``, with
    ``t`` 0-based (an int or a (B,) integer tensor), as diffusers' ``DDPMScheduler.add_noise``."""
    a = _alpha_bar_at(t, alphas_cumprod, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def timestep_c_noise(t: Tensor, T: int) -> Tensor:
    """The network's noise-level input for 0-based timesteps ``t``: ``(t + 1) / T`` (the ddpm branch's
    ``DDPMDenoiser.forward``). Float32, shape of ``t``."""
    return (torch.as_tensor(t) + 1).float() / T


# -- training ----------------------------------------------------------------------------------------

EpsFn = Callable[[Tensor, Tensor], Tensor]  # eps_fn(x_t, t) -> predicted noise, t: (B,) long in 0..T-1


def ddpm_loss(
    eps_fn: EpsFn,
    x0: Tensor,
    alphas_cumprod: Tensor,
    *,
    sigma_offset_noise: float = 0.3,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """Ho et al.'s ``L_simple`` with offset noise (the ddpm branch's ``DDPMDenoiser.compute_loss``):
    ``|| noise - eps_fn(x_t, t) ||^2`` with ``noise = sigma_offset_noise * eps_offset + eps``, ``t ~ U{0..T-1}``
    and ``x_t`` from :func:`q_sample`.

    Draw order with ``generator`` (the branch's, and a contract tests replay): ``eps_offset`` (B, C, 1, 1), ``eps``,
    then ``t`` (unless given). ``mask`` (bool, (B,)) keeps the samples marked True (:func:`~diamond_lite.edm.masked_mse`);
    an all-False mask gives a zero that still backpropagates.
    """
    b, c = x0.shape[:2]
    draw = dict(generator=generator, device=x0.device, dtype=x0.dtype)
    offset = sigma_offset_noise * torch.randn(b, c, *([1] * (x0.ndim - 2)), **draw)
    noise = offset + torch.randn(x0.shape, **draw)
    if t is None:
        t = torch.randint(0, alphas_cumprod.shape[0], (b,), generator=generator, device=x0.device)
    out = eps_fn(q_sample(x0, t, noise, alphas_cumprod), t)
    return masked_mse(out.float(), noise.float(), mask)


# -- sampling ----------------------------------------------------------------------------------------


def leading_timesteps(T: int, num_steps: int) -> list[int]:
    """The ``num_steps`` timesteps of diffusers' "leading" spacing, descending: ``(n - 1) k, ..., k, 0`` with
    ``k = T // n`` (``DDPMScheduler.set_timesteps``; 3 steps of 1000: 666, 333, 0)."""
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must lie in 1..T = {T}, got {num_steps}")
    k = T // num_steps
    return [i * k for i in reversed(range(num_steps))]


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
    """The ddpm branch's ``DDPMSampler``: DDPM ancestral sampling (Ho et al. Algorithm 2) on the "leading"
    timesteps, or one clean estimate at ``t = T // 2`` when ``num_steps == 1`` (module docstring), from ``x_T``.

    ``eps_fn(x, t)`` predicts the noise, with ``t`` a (B,) long tensor of 0-based timesteps. Each step estimates
    ``x0`` (clamped to [-1, 1] when ``clip_x0``) and moves to the posterior of the previous timestep (variance
    "fixed_small", fresh noise from ``generator``); the last step, at ``t = 0``, returns the ``x0`` estimate.
    Every coefficient is a float32 tensor, as in diffusers, so the numbers are the scheduler's.
    """
    T, b = alphas_cumprod.shape[0], x_T.shape[0]
    ac = alphas_cumprod.to(device=x_T.device, dtype=torch.float32)
    one = torch.ones((), device=x_T.device)

    def timestep(t: int) -> Tensor:
        return torch.full((b,), t, dtype=torch.long, device=x_T.device)

    if num_steps == 1:
        a = ac[T // 2]
        x0 = (x_T - (1 - a) ** 0.5 * eps_fn(x_T, timestep(T // 2)).to(x_T.dtype)) / a**0.5
        return x0.clamp(-1, 1)
    x, k = x_T, T // num_steps
    for t in leading_timesteps(T, num_steps):
        a, a_prev = ac[t], (ac[t - k] if t - k >= 0 else one)
        alpha = a / a_prev  # the respaced step's own 1 - beta
        beta = 1 - alpha
        eps = eps_fn(x, timestep(t)).to(x.dtype)
        x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        mean = (a_prev**0.5 * beta / (1 - a)) * x0 + (alpha**0.5 * (1 - a_prev) / (1 - a)) * x
        if t > 0:
            variance = ((1 - a_prev) / (1 - a) * beta).clamp(min=1e-20)
            mean = mean + variance**0.5 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = mean
    return x


# -- the world model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DDPMConfig:
    """DDPM's own settings: the ddpm branch's schedule (diffusers' defaults) and imagination steps."""

    T: int = 1000
    beta_1: float = 1e-4
    beta_T: float = 0.02
    num_steps: int = 3  # the branch's world_model_env.ddpm_sampler.num_steps_denoising
    clip_x0: bool = True  # diffusers' clip_sample

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
    act=...)`` with ``c_noise`` from :func:`timestep_c_noise` and the conditioning frames as they are
    (``frame_scale`` 1). ``cfg.denoiser.sigma_offset_noise`` is the offset noise of its loss (the branch keeps EDM's
    0.3); ``cfg.denoiser``'s other settings, ``cfg.sampler`` and ``cfg.num_autoregressive_steps`` are EDM's and are
    not used. The model has no ``denoiser`` attribute (so EDM code cannot silently use an eps-predictor as an
    x0-denoiser).
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
        net.frame_scale = 1.0  # the branch stacks the frames in [-1, 1] unscaled
        self.eps_net: FrameStackNet = net
        self.ddpm = ddpm if ddpm is not None else DDPMConfig()
        self.alphas_cumprod = self.ddpm.alphas_cumprod().to(self.device)  # not a buffer: derived from ddpm

    def _eps_fn(self, obs: Tensor, act: Tensor) -> EpsFn:
        def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
            return self.eps_net(self._layout(x_t), timestep_c_noise(t, self.ddpm.T), obs=obs, act=act)

        return eps_fn

    # -- training ----------------------------------------------------------------------------------

    @property
    def segment_length(self) -> int:
        """``n + 1``: the branch trains one term per segment (no autoregressive term)."""
        return self.n + 1

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The branch's eps-prediction loss on segments of length ``n + 1``: the first ``n`` frames and actions
        condition, the last frame is ``x0``; padded targets are masked. Draw order: offset noise, noise, ``t``.
        No metrics beside the loss."""
        obs, act, mask = batch["obs"].to(self.device), batch["act"].to(self.device), batch["mask"].to(self.device)
        n = self.n
        if obs.shape[1] != n + 1:
            raise ValueError(f"DDPM world-model segments have length n + 1 = {n + 1}, got {obs.shape[1]}")
        with self._autocast():
            loss = ddpm_loss(
                self._eps_fn(obs[:, :n], act[:, :n]), obs[:, n], self.alphas_cumprod,
                sigma_offset_noise=self.cfg.denoiser.sigma_offset_noise, generator=generator, mask=mask[:, n],
            )  # fmt: skip
        return loss.float(), {}

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
        """The next frame ``(B, C, H, W)`` on the 8-bit grid in [-1, 1], with ``num_steps`` DDPM steps
        (:func:`ddpm_sample`; default ``ddpm.num_steps``). ``sampler`` exists for signature compatibility with
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

        num_steps = self.ddpm.num_steps if num_steps is None else num_steps
        return quantize_8bit(ddpm_sample(eps_fn, x_T, self.alphas_cumprod, num_steps, generator, clip_x0=self.ddpm.clip_x0))

    # rollout is inherited: it calls predict_next with num_steps, sampler=None and the generator.

    # -- checkpoints -------------------------------------------------------------------------------
    # WorldModel.save/load do the rest: they read the format tag from ``checkpoint_format`` (so an EDM and a
    # DDPM checkpoint refuse each other) and store the DDPM settings through these two hooks.

    def _checkpoint_extra(self) -> dict:
        return {"ddpm": asdict(self.ddpm)}

    @classmethod
    def _init_kwargs_from_checkpoint(cls, payload: dict) -> dict:
        return {"ddpm": DDPMConfig(**payload["ddpm"])}
