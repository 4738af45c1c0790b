"""DIAMOND's world model: an EDM denoiser over the next frame, conditioned on 4 past frames and actions.

(Alonso et al. 2024, Section 3.) To predict frame ``x_{t+1}`` the world model denoises it from noise, with the
last ``n = 4`` frames and the last 4 actions as conditioning:

* the frames ``x_{t-3..t}`` (scaled by ``1 / sigma_data``) are stacked on the channel axis with the noisy next
  frame ``c_in · x_noisy``: the U-Net sees 15 input channels (``FrameStackNet``);
* the noise level ``c_noise`` (Fourier features) plus one learned embedding per past action (each
  ``cond_channels / 4`` wide, concatenated) go through a small MLP into the conditioning vector that drives
  every adaptive group norm of the U-Net;
* the output convolution starts at zero, so a fresh network predicts ``D = c_skip · x_noisy``.

``WorldModel`` wraps it with what training and imagination need: ``train_step`` on a batch of segments
(AdamW, lr 1e-4, weight decay 1e-2 on linear and conv weights, eps 1e-8, 100 linear warm-up steps from 0,
gradient clip 1.0, offset noise 0.3; ``diamond_lite.optim``) whose loss, as in DIAMOND's code, adds an
autoregressive term: the model also predicts the frame after next from a context holding its own estimate of the
next frame (``WorldModel.loss``),
``predict_next`` (3 Euler steps by default) and ``rollout`` (autoregressive, batched), and checkpoints that
load with ``torch.load(weights_only=True)``.

Sampling starts, like DIAMOND's ``DiffusionSampler``, from plain ``N(0, I)`` noise (not scaled by
``sigma_max``; see ``diamond_lite.sampler``), and every denoised estimate is snapped to the 8-bit grid.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .component import Component
from .edm import Denoiser, DenoiserConfig, TrainingSigmaConfig
from .sampler import SamplerConfig, karras_sigmas, sample
from .speedups import Speedups
from .unet import FourierFeatures, UNet, UNetConfig, num_groups

CHECKPOINT_FORMAT = "diamond_lite.world_model/1"


@dataclass
class WorldModelConfig:
    """Everything that defines a world model. The defaults are DIAMOND's Atari configuration."""

    num_actions: int
    img_channels: int = 3
    num_steps_conditioning: int = 4
    # Training terms beyond the first whose conditioning holds the model's own estimate of a frame (DIAMOND
    # config/trainer.yaml, denoiser.training.num_autoregressive_steps; ``WorldModel.loss``)
    num_autoregressive_steps: int = 1
    unet: UNetConfig = field(default_factory=UNetConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    # Optimisation (DIAMOND config/agent/default.yaml, denoiser)
    lr: float = 1e-4
    weight_decay: float = 1e-2
    eps: float = 1e-8
    lr_warmup_steps: int = 100
    lr_step_after: int = 0  # updates at lr, then lr * lr_step_factor; 0 = never (DIAMOND)
    lr_step_factor: float = 1.0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        # gymnasium's Discrete.n is a numpy integer; a checkpoint must hold plain Python values to load
        # with weights_only=True.
        self.num_actions = int(self.num_actions)
        if self.num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {self.num_actions}")
        if self.num_autoregressive_steps < 0:
            raise ValueError(f"num_autoregressive_steps must be >= 0, got {self.num_autoregressive_steps}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorldModelConfig:
        return cls(**rebuild_diffusion_configs(d))


def rebuild_diffusion_configs(d: dict) -> dict:
    """A diffusion model's configuration as ``asdict`` wrote it (``WorldModelConfig``, ``upsampler.UpsamplerConfig``),
    with its nested U-Net, denoiser (and training noise levels) and sampler made dataclasses again."""
    d = dict(d)
    d["unet"] = UNetConfig(**d["unet"])
    denoiser = dict(d["denoiser"])
    denoiser["training_sigma"] = TrainingSigmaConfig(**denoiser["training_sigma"])
    d["denoiser"] = DenoiserConfig(**denoiser)
    d["sampler"] = SamplerConfig(**d["sampler"])
    return d


class FrameStackNet(nn.Module):
    """The inner network ``F`` of the denoiser: ``F(c_in·x_noisy, c_noise, obs, act)``.

    ``obs`` is ``(B, n, C, H, W)`` in [-1, 1] and ``act`` is ``(B, n)`` (long).
    """

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        n, cond, ch0 = cfg.num_steps_conditioning, cfg.unet.cond_channels, cfg.unet.channels[0]
        if cond % n:
            raise ValueError(f"cond_channels ({cond}) must be divisible by num_steps_conditioning ({n})")
        self.frame_scale = cfg.denoiser.sigma_data  # the past frames enter divided by it (DIAMOND: by sigma_data)
        self.noise_emb = FourierFeatures(cond)
        self.act_emb = nn.Embedding(cfg.num_actions, cond // n)
        self.cond_proj = nn.Sequential(nn.Linear(cond, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.conv_in = nn.Conv2d((n + 1) * cfg.img_channels, ch0, 3, padding=1)
        self.unet = UNet(cfg.unet)
        self.norm_out = nn.GroupNorm(num_groups(ch0), ch0, eps=1e-5)
        self.conv_out = nn.Conv2d(ch0, cfg.img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)

    def conditioning(self, c_noise: Tensor, act: Tensor) -> Tensor:
        """The vector that drives every AdaGroupNorm: noise level and the 4 actions, through an MLP."""
        return self.cond_proj(self.noise_emb(c_noise) + self.act_emb(act).flatten(1))

    def forward(self, x_in: Tensor, c_noise: Tensor, *, obs: Tensor, act: Tensor) -> Tensor:
        cond = self.conditioning(c_noise, act)
        frames = obs.flatten(1, 2) / self.frame_scale  # (B, n*C, H, W): past frames stacked on channels
        x = torch.cat([frames, x_in], dim=1)
        low = self.conv_in.weight.dtype  # bf16 in sampling's copy (diamond_lite.speedups), else fp32
        if low != x_in.dtype:
            x, cond = x.to(low), cond.to(low)
        x = self.unet(self.conv_in(x), cond)
        out = self.conv_out(F.silu(self.norm_out(x)))
        return out.to(x_in.dtype) if low != x_in.dtype else out


class WorldModel(Component):
    """DIAMOND's diffusion world model, ready to train and to dream."""

    checkpoint_format: ClassVar[str] = CHECKPOINT_FORMAT
    config_class: ClassVar[type] = WorldModelConfig

    def __init__(
        self,
        cfg: WorldModelConfig,
        device: str | torch.device = "cpu",
        *,
        autocast: bool | None = None,
        channels_last: bool | None = None,
        game: str | None = None,
    ) -> None:
        super().__init__(cfg, device, autocast=autocast, channels_last=channels_last, game=game)
        self.denoiser = Denoiser(FrameStackNet(cfg), cfg.denoiser)
        self._ready()
        self.speedups = Speedups(self)  # compiled networks and the bf16 sampling copy (diamond_lite.speedups)

    @property
    def n(self) -> int:
        return self.cfg.num_steps_conditioning

    # -- training ----------------------------------------------------------------------------------

    @property
    def segment_length(self) -> int:
        """The length of a training segment: ``n`` conditioning frames, the target, and one more target per
        autoregressive step (DIAMOND's ``num_steps_conditioning + 1 + num_autoregressive_steps``: 6)."""
        return self.n + 1 + self.cfg.num_autoregressive_steps

    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The denoising loss of DIAMOND's ``Denoiser.forward`` on a batch of segments of ``segment_length`` frames
        (``Segment.to_torch``), the mean of ``1 + num_autoregressive_steps`` terms.

        Term ``i`` predicts frame ``n + i`` from frames ``i .. n + i - 1`` and their actions. In term 0 those frames are
        all real; in each later term the newest of them is the model's own denoised estimate from the term before
        (one denoising step from that term's noisy target, snapped to the 8-bit grid, no gradient): the model learns
        to predict from a context that holds its own mistakes, as it must when it dreams. Padded targets are masked.
        Draw order with ``generator``: for each term, sigma, the offset noise, then the noise. The metrics hold the
        mean of the autoregressive terms alone (``loss_autoregressive``), when there are any.
        """
        obs, act, mask = batch["obs"].to(self.device), batch["act"].to(self.device), batch["mask"].to(self.device)
        n, num_terms = self.n, 1 + self.cfg.num_autoregressive_steps
        if obs.shape[1] != self.segment_length:
            raise ValueError(f"world-model segments have length n + 1 + num_autoregressive_steps = {self.segment_length}, "
                             f"got {obs.shape[1]}")  # fmt: skip
        frames, terms = obs, []
        for i in range(num_terms):
            last = i == num_terms - 1
            with self._autocast():
                out = self.denoiser.loss(
                    self._layout(obs[:, n + i]), generator=generator, mask=mask[:, n + i], network=self.speedups.training_network,
                    return_denoised=not last, obs=frames[:, i : n + i], act=act[:, i : n + i],
                )  # fmt: skip
            term, denoised = (out, None) if last else out
            terms.append(term.float())
            if not last:
                frames = frames.clone() if i == 0 else frames  # the batch's own frames stay as they came
                frames[:, n + i] = denoised
        metrics = {"loss_autoregressive": torch.stack(terms[1:]).mean().detach()} if num_terms > 1 else {}
        return sum(terms) / num_terms, metrics

    def train_step(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One AdamW update on ``batch``: the loss before the update and the metrics of :meth:`loss`."""
        self.train()
        loss, metrics = self.loss(batch, generator)
        return self.update(loss), metrics

    # -- prediction --------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_next(
        self,
        obs: Tensor,
        act: Tensor,
        *,
        num_steps: int | None = None,
        sampler: SamplerConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The next frame ``(B, C, H, W)`` in [-1, 1] from ``obs`` ``(B, n, C, H, W)`` and ``act`` ``(B, n)``
        (``act[:, -1]`` is the action taken at the last frame), with ``num_steps`` denoising steps."""
        self.eval()
        cfg = sampler or self.cfg.sampler
        if num_steps is not None:
            cfg = dataclasses.replace(cfg, num_steps=num_steps)
        obs, act = obs.to(self.device), act.to(self.device)
        b, _, c, h, w = obs.shape
        x = torch.randn(b, c, h, w, generator=generator, device=self.device)  # DIAMOND: unit-variance start
        # on the host: the sampler reads the levels as numbers, which from a GPU would mean a wait per frame
        sigmas = karras_sigmas(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)

        net = self.speedups.sampling_denoiser()  # the denoiser or its bf16 copy, once per frame

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            return self.speedups.denoise(net, self._layout(x), sigma, obs, act).float()

        # The bf16 copy needs no autocast (which would send its group norms back to fp32). The model's own denoiser
        # keeps autocast, in one region around all the steps: autocast keeps the bf16 weights it cast until the
        # region ends, so they are cast once per frame rather than once per step (the same numbers).
        with self._autocast() if net is self.denoiser else contextlib.nullcontext():
            return sample(
                denoise, x, sigmas, order=cfg.order, s_churn=cfg.s_churn, s_tmin=cfg.s_tmin, s_tmax=cfg.s_tmax,
                s_noise=cfg.s_noise, generator=generator,
            )  # fmt: skip

    @torch.no_grad()
    def rollout(
        self,
        obs: Tensor,
        act: Tensor,
        *,
        num_steps: int | None = None,
        sampler: SamplerConfig | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Dream autoregressively: each predicted frame joins the context for the next.

        ``obs`` ``(B, n, C, H, W)`` holds the real context frames 0..n-1; ``act`` ``(B, n + T - 1)`` the action
        taken at every frame, context then generated (``act[:, i]`` is taken at frame ``i``). Returns the
        ``T`` generated frames ``(B, T, C, H, W)``.
        """
        n = self.n
        horizon = act.shape[1] - n + 1
        if obs.shape[1] != n or horizon < 1:
            raise ValueError(f"need obs with n = {n} frames and at least n actions, got {tuple(obs.shape)} and {tuple(act.shape)}")
        from tqdm.auto import tqdm

        window, frames = obs.to(self.device), []
        act = act.to(self.device)
        for t in tqdm(range(horizon), desc="dream", disable=not progress, leave=False):
            next_frame = self.predict_next(window, act[:, t : t + n], num_steps=num_steps, sampler=sampler, generator=generator)
            frames.append(next_frame)
            window = torch.cat([window[:, 1:], next_frame[:, None]], dim=1)
        return torch.stack(frames, dim=1)


def world_model_config(profile: str, num_actions: int) -> WorldModelConfig:
    """The world model of each profile: ``paper`` is DIAMOND's (4.4M parameters); ``course`` halves the
    channels (about 1.1M parameters, 3-4x faster on a CPU); ``smoke`` is a toy for CI. The algorithm,
    the optimiser and the sampler are the same in all three."""
    from .profiles import Profile

    unet = Profile(profile).pick(
        # three resolutions, not two: the middle blocks' attention (DIAMOND's U-Net always has it) then runs over
        # 16x16 = 256 positions instead of 1,024: a 3-step prediction 0.105 s instead of 0.178 s (docs/performance.md)
        smoke=UNetConfig(cond_channels=32, depths=[1, 1, 1], channels=[16, 16, 16], attn_depths=[False, False, False]),
        course=UNetConfig(cond_channels=128, depths=[2, 2, 2, 2], channels=[32, 32, 32, 32]),
        paper=UNetConfig(),
    )
    return WorldModelConfig(num_actions=num_actions, unet=unet)


@torch.no_grad()
def one_step_errors(
    model: WorldModel,
    dataset,
    *,
    num_samples: int = 256,
    num_steps: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    """Mean squared error (frames in [-1, 1]) of the model's next-frame predictions on segments of
    ``dataset``, next to the simplest baseline: copying the last frame. A model worth its compute beats it.

    Only segments whose target frame moved (differs from the last context frame) are scored, since on a
    frozen frame the copy is exact and says nothing.
    """
    from .data import SegmentSampler

    sampler = SegmentSampler(dataset, model.n + 1, batch_size, sample_weights=None, seed=seed)
    generator = torch.Generator(model.device).manual_seed(seed)
    sq_model, sq_copy, count = 0.0, 0.0, 0
    while count < num_samples:
        batch = sampler.sample().to_torch(model.device)
        obs, act, mask = batch["obs"], batch["act"], batch["mask"]
        target, last = obs[:, model.n], obs[:, model.n - 1]
        keep = mask.all(1) & (target != last).flatten(1).any(1)
        if not keep.any():
            continue
        pred = model.predict_next(obs[keep, : model.n], act[keep, : model.n], num_steps=num_steps, generator=generator)
        sq_model += (pred - target[keep]).pow(2).mean((1, 2, 3)).sum().item()
        sq_copy += (last[keep] - target[keep]).pow(2).mean((1, 2, 3)).sum().item()
        count += int(keep.sum())
    return {"mse_model": sq_model / count, "mse_copy_last": sq_copy / count, "samples": count}


@torch.no_grad()
def dream_errors(
    model: WorldModel,
    dataset,
    *,
    horizon: int,
    num_starts: int = 64,
    num_steps: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Mean squared error (frames in [-1, 1]) of ``horizon``-step dreams against the real frames, at every step.

    Each dream starts from ``n`` real frames of ``dataset`` (held out, for a fair score) and follows the real actions,
    feeding its own predictions back as context (:meth:`WorldModel.rollout`), so step 1 is the one-step error on
    every frame (moving or not) and step ``horizon`` is what the actor-critic sees at the end of an imagined
    trajectory (DIAMOND's horizon, ``rew_end.HORIZON``, is 15). ``copy_last`` scores the frozen last real frame at every step, the bar a
    model must clear. Starts lie wholly inside episodes.
    """
    from .data import SegmentSampler

    n = model.n
    sampler = SegmentSampler(dataset, n + horizon, batch_size, sample_weights=None, seed=seed)
    generator = torch.Generator(model.device).manual_seed(seed)
    sq_model, sq_copy, count, misses = torch.zeros(horizon), torch.zeros(horizon), 0, 0
    while count < num_starts:
        batch = sampler.sample().to_torch(model.device)
        keep = batch["mask"].all(1)
        obs, act = batch["obs"][keep][: num_starts - count], batch["act"][keep][: num_starts - count]
        if len(obs) == 0:
            misses += 1
            if misses == 100:
                raise ValueError(f"the dataset has hardly any episode longer than {n + horizon} steps: no room for a "
                                 f"{horizon}-step dream from {n} frames")  # fmt: skip
            continue
        dream = model.rollout(obs[:, :n], act[:, : n + horizon - 1], num_steps=num_steps, generator=generator)
        real = obs[:, n:]
        sq_model += (dream - real).pow(2).mean((2, 3, 4)).sum(0).cpu()
        sq_copy += (obs[:, n - 1 : n] - real).pow(2).mean((2, 3, 4)).sum(0).cpu()
        count += len(obs)
    return {"dream_mse": (sq_model / count).tolist(), "copy_last_mse": (sq_copy / count).tolist(), "starts": count}
