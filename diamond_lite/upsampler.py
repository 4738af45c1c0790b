"""DIAMOND's upsampler: a second diffusion model that draws the full-resolution frame (notebook 09).

DIAMOND's neural game engine of CS:GO (Alonso et al. 2024, Section 6 and its CS:GO appendix; the ``csgo`` branch of
its code, ``config/agent/csgo.yaml``, ``upsampler``) works in two stages: the dynamics model predicts the next frame
at low resolution, and an **upsampler**, itself an EDM denoiser, turns that frame into the full-resolution one. The
upsampler is conditioned on

* the **low-resolution frame**, upsampled bicubically to the full resolution (``F.interpolate(..., mode="bicubic")``
  in DIAMOND's ``Denoiser.forward``), so that it lines up pixel for pixel with what the upsampler draws;
* the **previous full-resolution frame** (``num_steps_conditioning: 1``), which tells it how the details it cannot see
  in the low-resolution frame looked a moment ago;
* the noise level, and nothing else: **no actions**. What happened was decided by the dynamics; the upsampler only
  draws it.

Both conditioning frames enter the network divided by ``sigma_data`` and stacked on the channel axis with the noisy
frame, as the world model's past frames do (``world_model.FrameStackNet``). Its training loss is DIAMOND's, with one
autoregressive term (``upsampler.training.num_autoregressive_steps: 1``): the second term is conditioned on the
upsampler's own estimate of the previous frame, as it will be when it runs after itself in play.

Low-resolution frames are made from the full-resolution ones by area averaging (the interpolation ``atari.make_env``
uses to shrink the emulator's frames), rounded to the 8-bit grid: what a recording at the low resolution would hold.

The upsampler is sampled **stochastically** (DIAMOND's ``world_model_env`` configurations: ``s_churn: 10``,
``s_tmin: 1``, ``s_tmax: 5``, ``s_noise: 0.9``, ``sigma_min: 1``): fresh noise at every step lets it commit to one
sharp detail where a deterministic sampler averages the possibilities into a blur. Notebook 09 measures it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .component import Component
from .edm import Denoiser, DenoiserConfig
from .sampler import SamplerConfig, karras_sigmas, sample
from .unet import FourierFeatures, UNet, UNetConfig, num_groups
from .world_model import rebuild_diffusion_configs

CHECKPOINT_FORMAT = "diamond_lite.upsampler/1"

# The upsampler's sampler in DIAMOND's world_model_env configurations: from sigma 5 down to 1 only, with churn.
CHURN_SAMPLER = SamplerConfig(num_steps=3, sigma_min=1.0, sigma_max=5.0, rho=7, order=1, s_churn=10.0, s_tmin=1.0, s_tmax=5.0,
                              s_noise=0.9)  # fmt: skip


@dataclass
class UpsamplerConfig:
    """Everything that defines an upsampler: DIAMOND's CS:GO upsampler but for the U-Net's size (``upsampler_config``
    picks it per profile), the factor (5 there, from 56x30 to 280x150) and the diffusion and optimisation settings,
    which are the course's (DIAMOND's Atari ones, those of every model of the course: docs/engine.md says why; CS:GO's
    are offset noise 0.1, training noise levels ``exp(-1.2 + 1.2 N)``, gradients clipped at 10)."""

    factor: int = 2
    img_channels: int = 3
    num_steps_conditioning: int = 1  # previous full-resolution frames (DIAMOND: 1)
    num_autoregressive_steps: int = 1  # DIAMOND config/trainer.yaml, upsampler.training
    unet: UNetConfig = field(default_factory=UNetConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    sampler: SamplerConfig = field(default_factory=lambda: CHURN_SAMPLER)
    # Optimisation (the world model's: DIAMOND config/agent/default.yaml, denoiser)
    lr: float = 1e-4
    weight_decay: float = 1e-2
    eps: float = 1e-8
    lr_warmup_steps: int = 100
    lr_step_after: int = 0
    lr_step_factor: float = 1.0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"the upsampling factor must be an integer >= 1, got {self.factor!r}")
        if self.num_steps_conditioning < 1:
            raise ValueError(f"num_steps_conditioning must be >= 1 (the previous frame), got {self.num_steps_conditioning}")
        if self.num_autoregressive_steps < 0:
            raise ValueError(f"num_autoregressive_steps must be >= 0, got {self.num_autoregressive_steps}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UpsamplerConfig:
        return cls(**rebuild_diffusion_configs(d))


def downsample(frames: Tensor, factor: int) -> Tensor:
    """Frames in [-1, 1] ``(..., C, H, W)`` shrunk ``factor`` times by area averaging, on the 8-bit grid (rounded).

    ``H`` and ``W`` must be multiples of ``factor``."""
    if factor == 1:
        return frames
    *lead, c, h, w = frames.shape
    if h % factor or w % factor:
        raise ValueError(f"frames of {h}x{w} cannot be shrunk {factor} times: the sides must be multiples of {factor}")
    low = F.avg_pool2d(frames.reshape(-1, c, h, w), factor)
    low = torch.round((low.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1  # what a uint8 recording at that size holds
    return low.reshape(*lead, c, h // factor, w // factor)


def upsample_bicubic(low: Tensor, factor: int) -> Tensor:
    """The low-resolution frames ``(B, C, h, w)`` brought to ``(B, C, factor*h, factor*w)`` bicubically: the conditioning
    the upsampler sees (DIAMOND: ``F.interpolate(..., scale_factor=upsampling_factor, mode="bicubic")``, not clamped)."""
    if factor == 1:
        return low
    return F.interpolate(low, scale_factor=factor, mode="bicubic", align_corners=False)


class UpsamplerNet(nn.Module):
    """The inner network ``F(c_in·x_noisy, c_noise, prev, low)`` of the upsampler (DIAMOND's ``InnerModel`` with
    ``is_upsampler``): ``prev`` ``(B, n, C, H, W)`` the previous full-resolution frames, ``low`` ``(B, C, H, W)`` the
    current low-resolution frame already upsampled bicubically. The conditioning vector holds the noise level only."""

    def __init__(self, cfg: UpsamplerConfig) -> None:
        super().__init__()
        cond, ch0 = cfg.unet.cond_channels, cfg.unet.channels[0]
        self.frame_scale = cfg.denoiser.sigma_data
        self.noise_emb = FourierFeatures(cond)
        self.cond_proj = nn.Sequential(nn.Linear(cond, cond), nn.SiLU(), nn.Linear(cond, cond))
        # previous frames, the low-resolution frame, the noisy frame: DIAMOND's (n + 1 + 1) * img_channels inputs
        self.conv_in = nn.Conv2d((cfg.num_steps_conditioning + 2) * cfg.img_channels, ch0, 3, padding=1)
        self.unet = UNet(cfg.unet)
        self.norm_out = nn.GroupNorm(num_groups(ch0), ch0, eps=1e-5)
        self.conv_out = nn.Conv2d(ch0, cfg.img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)

    def forward(self, x_in: Tensor, c_noise: Tensor, *, prev: Tensor, low: Tensor) -> Tensor:
        cond = self.cond_proj(self.noise_emb(c_noise))
        frames = torch.cat([prev.flatten(1, 2), low], dim=1) / self.frame_scale
        x = self.unet(self.conv_in(torch.cat([frames, x_in], dim=1)), cond)
        return self.conv_out(F.silu(self.norm_out(x)))


class Upsampler(Component):
    """DIAMOND's upsampler (module docstring): trains on full-resolution segments, draws a full-resolution frame from
    a low-resolution one."""

    checkpoint_format: ClassVar[str] = CHECKPOINT_FORMAT
    config_class: ClassVar[type] = UpsamplerConfig

    def __init__(self, cfg: UpsamplerConfig, device: str | torch.device = "cpu", *, autocast: bool | None = None,
                 channels_last: bool | None = None, game: str | None = None) -> None:  # fmt: skip
        super().__init__(cfg, device, autocast=autocast, channels_last=channels_last, game=game)
        self.denoiser = Denoiser(UpsamplerNet(cfg), cfg.denoiser)
        self._ready()

    @property
    def n(self) -> int:
        return self.cfg.num_steps_conditioning

    @property
    def factor(self) -> int:
        return self.cfg.factor

    @property
    def segment_length(self) -> int:
        """``n`` previous frames, the target, one more target per autoregressive term (DIAMOND: 1 + 1 + 1 = 3)."""
        return self.n + 1 + self.cfg.num_autoregressive_steps

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """DIAMOND's ``Denoiser.forward`` for an upsampler, on full-resolution segments ``batch["obs"]``
        ``(B, segment_length, C, H, W)``: the mean of ``1 + num_autoregressive_steps`` terms.

        Term ``i`` draws frame ``n + i`` from the low-resolution version of that same frame (made here by
        :func:`downsample`, then brought back up by :func:`upsample_bicubic`) and the ``n`` full-resolution frames
        before it; after the first term the newest of those is the upsampler's own 8-bit estimate from the term
        before (no gradient). Padded targets are masked. Draw order with ``generator``: for each term, sigma, the
        offset noise, then the noise."""
        obs, mask = batch["obs"].to(self.device), batch["mask"].to(self.device)
        n, num_terms = self.n, 1 + self.cfg.num_autoregressive_steps
        if obs.shape[1] != self.segment_length:
            raise ValueError(f"upsampler segments have length n + 1 + num_autoregressive_steps = {self.segment_length}, "
                             f"got {obs.shape[1]}")  # fmt: skip
        b, t, c, h, w = obs.shape
        low = upsample_bicubic(downsample(obs, self.factor).flatten(0, 1), self.factor).reshape(b, t, c, h, w)
        frames, terms = obs, []
        for i in range(num_terms):
            last = i == num_terms - 1
            with self._autocast():
                out = self.denoiser.loss(self._layout(obs[:, n + i]), generator=generator, mask=mask[:, n + i],
                                         return_denoised=not last, prev=frames[:, i : n + i], low=self._layout(low[:, n + i]))  # fmt: skip
            term, denoised = (out, None) if last else out
            terms.append(term.float())
            if not last:
                frames = frames.clone() if i == 0 else frames  # the batch's own frames stay as they came
                frames[:, n + i] = denoised
        metrics = {"loss_autoregressive": torch.stack(terms[1:]).mean().detach()} if num_terms > 1 else {}
        return sum(terms) / num_terms, metrics

    def train_step(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One AdamW update on ``batch``: the loss before the update and the metrics of :meth:`loss` (the contract of
        every trained model of the course)."""
        self.train()
        loss, metrics = self.loss(batch, generator)
        return self.update(loss), metrics

    @torch.no_grad()
    def upsample(
        self,
        low: Tensor,
        prev: Tensor,
        *,
        sampler: SamplerConfig | None = None,
        num_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The full-resolution frame ``(B, C, H, W)``, on the 8-bit grid, from the low-resolution frame ``low``
        ``(B, C, H / factor, W / factor)`` and the previous full-resolution frames ``prev`` ``(B, n, C, H, W)``, all in
        [-1, 1]. ``sampler`` defaults to the configuration's (DIAMOND's churn); like DIAMOND it starts from unit noise."""
        self.eval()
        cfg = sampler or self.cfg.sampler
        if num_steps is not None:
            cfg = dataclasses.replace(cfg, num_steps=num_steps)
        low, prev = low.to(self.device), prev.to(self.device)
        b, c, h, w = low.shape
        if prev.ndim != 5 or prev.shape[1] != self.n or prev.shape[-2:] != (h * self.factor, w * self.factor):
            raise ValueError(f"prev must hold the {self.n} previous frames at {h * self.factor}x{w * self.factor} "
                             f"(factor {self.factor} over a {h}x{w} low-resolution frame), got shape {tuple(prev.shape)}")  # fmt: skip
        cond = self._layout(upsample_bicubic(low, self.factor))
        x = torch.randn(b, c, h * self.factor, w * self.factor, generator=generator, device=self.device)
        sigmas = karras_sigmas(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            return self.denoiser.denoise(self._layout(x), sigma, prev=prev, low=cond).float()

        with self._autocast():
            return sample(denoise, x, sigmas, order=cfg.order, s_churn=cfg.s_churn, s_tmin=cfg.s_tmin, s_tmax=cfg.s_tmax,
                          s_noise=cfg.s_noise, generator=generator)  # fmt: skip


def upsampler_config(profile: str, factor: int = 2) -> UpsamplerConfig:
    """The upsampler of each profile. ``paper`` is DIAMOND's CS:GO upsampler (channels 64, 64, 128, 256, attention at
    the lowest resolution, a 2048-wide conditioning vector: about 51M parameters with its factor of 5). ``course`` is a
    three-level U-Net of 16, 32 and 32 channels (0.32M parameters, under a third of the course dynamics model's 1.1M;
    half its width at full resolution, as DIAMOND's upsampler is half its dynamics' width): drawing the
    details of a frame whose layout it is given is a local job. ``smoke`` is a toy for CI."""
    from .profiles import Profile

    unet = Profile(profile).pick(
        smoke=UNetConfig(cond_channels=32, depths=[1, 1, 1], channels=[16, 16, 16], attn_depths=[False, False, False]),
        course=UNetConfig(cond_channels=64, depths=[1, 1, 1], channels=[16, 32, 32], attn_depths=[False, False, False]),
        paper=UNetConfig(cond_channels=2048, depths=[2, 2, 2, 2], channels=[64, 64, 128, 256], attn_depths=[False, False, False, True]),
    )
    return UpsamplerConfig(factor=factor, unet=unet)
