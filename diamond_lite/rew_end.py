"""DIAMOND's reward and termination model (Alonso et al. 2024, Section 3 and Appendix D; notebook 05).

The denoiser only draws frames; the agent also needs to know what it earns and when its imagined episode ends.
DIAMOND learns both with a separate model, ``R_psi``, over a *transition* ``(x_t, a_t, x_{t+1})``:

* an encoder reads the two frames stacked on channels (6 channels), through residual blocks whose adaptive
  group norms are driven by an embedding of the action (the same ``ResBlock`` as the world model's U-Net,
  here with the action instead of the noise level), downsampling 64 -> 8;
* an LSTM carries what happened earlier (a brick that broke three frames ago still pays now);
* a small head gives the logits of the reward sign (3 classes: -1, 0, +1) and of the end (2 classes).

Training: cross-entropy of both heads, summed, over every real step of segments of length ``horizon + 4``
drawn with padding allowed on both sides (the model must see endings at every position), starting from a
zero LSTM state. Padded steps are masked out; the frame after an episode's last step is the episode's
``final_obs``. Optimiser: AdamW lr 1e-4, weight decay 1e-2, eps 1e-8, 100 warm-up steps, gradient clip 100
(DIAMOND's ``config/agent/default.yaml``). No class weighting: rewards are rare and ends rarer, and DIAMOND
uses plain cross-entropy; the imagination samples from the predicted distributions.

Inside imagination the model steps one transition at a time with a carried state, after a burn-in over the
conditioning frames: the same computation as over a whole segment (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .component import Component, PlainConfig
from .unet import Downsample, ResBlock

# DIAMOND's imagination horizon H (config/trainer.yaml, world_model_env.horizon): an imagined episode lasts at most
# HORIZON steps, and the reward/end model trains on segments of HORIZON + 4 steps (the 4 conditioning frames first).
HORIZON = 15

CHECKPOINT_FORMAT = "diamond_lite.rew_end_model/1"
REWARD_CLASSES = (-1, 0, 1)


@dataclass
class RewEndConfig(PlainConfig):
    """DIAMOND's reward/termination model and its optimiser (defaults: the paper's, 5.9M parameters at 18 actions)."""

    num_actions: int
    img_channels: int = 3
    img_size: int = 64
    cond_channels: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    channels: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])
    lstm_dim: int = 512
    lr: float = 1e-4
    weight_decay: float = 1e-2
    eps: float = 1e-8
    lr_warmup_steps: int = 100
    lr_step_after: int = 0  # updates at lr, then lr * lr_step_factor; 0 = never (DIAMOND)
    lr_step_factor: float = 1.0
    max_grad_norm: float = 100.0

    def __post_init__(self) -> None:
        self.num_actions = int(self.num_actions)
        if not len(self.depths) == len(self.channels) == len(self.attn_depths):
            raise ValueError(f"depths, channels and attn_depths need one entry per level, got {self.depths}, {self.channels}, {self.attn_depths}")
        if self.img_size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"img_size {self.img_size} must be divisible by 2**{len(self.channels) - 1}")


class RewEndEncoder(nn.Module):
    """``conv_in``, then per level a downsampling (none at the first) and ``depths[i]`` action-conditioned
    residual blocks, then two residual blocks with self-attention at the lowest resolution."""

    def __init__(self, cfg: RewEndConfig) -> None:
        super().__init__()
        ch, cond = cfg.channels, cfg.cond_channels
        self.conv_in = nn.Conv2d(2 * cfg.img_channels, ch[0], 3, padding=1)
        self.levels = nn.ModuleList()
        for i, (depth, attention) in enumerate(zip(cfg.depths, cfg.attn_depths)):
            c_prev = ch[max(0, i - 1)]
            self.levels.append(nn.ModuleList([ResBlock(c_prev if j == 0 else ch[i], ch[i], cond, attention) for j in range(depth)]))
        self.levels.append(nn.ModuleList([ResBlock(ch[-1], ch[-1], cond, attention=True) for _ in range(2)]))
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in ch[:-1]] + [nn.Identity()])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = self.conv_in(x)
        for down, blocks in zip(self.downsamples, self.levels):
            x = down(x)
            for block in blocks:
                x = block(x, cond)
        return x


def init_lstm(lstm: nn.Module) -> None:
    """DIAMOND's LSTM initialisation: Xavier input weights, orthogonal recurrent weights, zero biases except
    a forget-gate bias of 1 (remember by default; Jozefowicz et al. 2015)."""
    for name, p in lstm.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(p)
        elif name.startswith("weight_hh"):
            nn.init.orthogonal_(p)
        elif name.startswith("bias"):
            nn.init.zeros_(p)
            if name.startswith("bias_ih"):
                n = p.shape[0] // 4
                nn.init.ones_(p[n : 2 * n])  # gates are ordered input, forget, cell, output


class RewEndModel(Component):
    """``R_psi(r_t, d_t | x_t, a_t, x_{t+1}, history)``: reward-sign and end logits for every transition."""

    checkpoint_format: ClassVar[str] = CHECKPOINT_FORMAT
    config_class: ClassVar[type] = RewEndConfig

    def __init__(
        self,
        cfg: RewEndConfig,
        device: str | torch.device = "cpu",
        *,
        autocast: bool | None = None,
        channels_last: bool | None = None,
        game: str | None = None,
    ) -> None:
        super().__init__(cfg, device, autocast=autocast, channels_last=channels_last, game=game)
        self.encoder = RewEndEncoder(cfg)
        self.act_emb = nn.Embedding(cfg.num_actions, cfg.cond_channels)
        lowest = cfg.img_size // 2 ** (len(cfg.channels) - 1)
        self.lstm = nn.LSTM(cfg.channels[-1] * lowest**2, cfg.lstm_dim, batch_first=True)
        self.head = nn.Sequential(nn.Linear(cfg.lstm_dim, cfg.lstm_dim), nn.SiLU(), nn.Linear(cfg.lstm_dim, 3 + 2, bias=False))
        init_lstm(self.lstm)
        self._ready()

    def forward(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Logits ``(B, T, 3)`` of the reward sign and ``(B, T, 2)`` of the end for ``T`` transitions
        (``obs``, ``next_obs``: ``(B, T, C, H, W)`` in [-1, 1]; ``act``: ``(B, T)``), and the LSTM state
        after them. ``state=None`` starts from zeros."""
        b, t = act.shape
        frames = torch.cat([obs, next_obs], dim=2).flatten(0, 1)  # (B*T, 2C, H, W)
        with self._autocast():
            x = self.encoder(self._layout(frames), self.act_emb(act.flatten()))
        x = x.float().flatten(1).reshape(b, t, -1)  # the LSTM and head run in fp32
        x, state = self.lstm(x, state)
        logits = self.head(x)
        return logits[..., :3], logits[..., 3:], state

    # -- training ----------------------------------------------------------------------------------

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of the reward sign plus that of the end, over the real steps of a batch of segments
        (``Segment.to_torch``; the last frame of each segment only serves as the next frame).

        Returns the loss and, for logging, both terms and the confusion matrices (rows: truth, columns:
        prediction), all on the device.
        """
        obs, act, mask = batch["obs"].to(self.device), batch["act"].to(self.device), batch["mask"].to(self.device)
        rew, end = batch["rew"].to(self.device), batch["end"].to(self.device)
        logits_rew, logits_end, _ = self(obs[:, :-1], act[:, :-1], obs[:, 1:])
        mask = mask[:, :-1]
        target_rew = rew[:, :-1].sign().long() + 1  # {-1, 0, +1} -> classes {0, 1, 2}
        target_end = end[:, :-1].long()
        # Padded steps are weighed out rather than indexed away: the same means, and nothing waits for the device
        # to count the real steps.
        loss_rew = masked_cross_entropy(logits_rew, target_rew, mask)
        loss_end = masked_cross_entropy(logits_end, target_end, mask)
        metrics = {
            "loss_rew": loss_rew.detach(),
            "loss_end": loss_end.detach(),
            "confusion_rew": confusion_matrix(target_rew, logits_rew.argmax(-1), 3, mask),
            "confusion_end": confusion_matrix(target_end, logits_end.argmax(-1), 2, mask),
        }
        return loss_rew + loss_end, metrics

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One AdamW update on ``batch``; returns the loss before the update and the metrics (on the device)."""
        self.train()
        loss, metrics = self.loss(batch)
        return self.update(loss), metrics

    # -- prediction --------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self, obs: Tensor, act: Tensor, next_obs: Tensor, state: tuple[Tensor, Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:  # fmt: skip
        """Rewards in {-1, 0, 1} and ends in {0, 1} *sampled* from the predicted distributions, as DIAMOND's
        imagination does, for one step ``(B, C, H, W)`` or a sequence ``(B, T, C, H, W)``; and the new state."""
        self.eval()
        one_step = act.ndim == 1
        if one_step:
            obs, act, next_obs = obs[:, None], act[:, None], next_obs[:, None]
        logits_rew, logits_end, state = self(obs, act, next_obs, state)
        rew = _sample_categorical(logits_rew, generator).float() - 1
        end = _sample_categorical(logits_end, generator).bool()
        if one_step:
            rew, end = rew[:, 0], end[:, 0]
        return rew, end, state


def _sample_categorical(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    probs = logits.float().softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def masked_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """The mean cross-entropy over the steps ``mask`` keeps: ``F.cross_entropy(logits[mask], target[mask])``
    without boolean indexing (``logits`` ``(B, T, K)``, ``target`` and ``mask`` ``(B, T)``)."""
    ce = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), reduction="none")
    keep = mask.flatten()
    return torch.where(keep, ce, 0.0).sum() / keep.sum().clamp(min=1)


def confusion_matrix(target: Tensor, predicted: Tensor, num_classes: int, mask: Tensor | None = None) -> Tensor:
    """``C[i, j]``: how many steps of true class ``i`` (and kept by ``mask``) were predicted as class ``j``. Counted
    on the device with a fixed-size sum (``bincount`` would first ask the device for the largest index)."""
    index = (target * num_classes + predicted).flatten()
    weight = torch.ones_like(index) if mask is None else mask.flatten().long()
    counts = torch.zeros(num_classes**2, dtype=torch.long, device=index.device).index_add_(0, index, weight)
    return counts.reshape(num_classes, num_classes)


def precision_recall(confusion: np.ndarray | Tensor) -> dict[str, np.ndarray]:
    """Per-class precision (of the steps predicted as a class, the share that is) and recall (of the steps of
    a class, the share found); NaN for a class never predicted or never present."""
    c = np.asarray(confusion, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"precision": np.diag(c) / c.sum(0), "recall": np.diag(c) / c.sum(1), "support": c.sum(1)}


def rew_end_config(profile: str, num_actions: int) -> RewEndConfig:
    """``paper`` is DIAMOND's; ``course`` keeps the architecture with fewer channels, one block per level
    and a smaller LSTM, to train in minutes on a laptop CPU; ``smoke`` is a toy for CI."""
    from .profiles import Profile

    sizes = Profile(profile).pick(
        smoke=dict(cond_channels=16, depths=[1, 1, 1, 1], channels=[8, 8, 8, 8], lstm_dim=32),
        course=dict(cond_channels=64, depths=[1, 1, 1, 1], channels=[16, 16, 16, 16], lstm_dim=256),
        paper={},
    )
    return RewEndConfig(num_actions=num_actions, **sizes)


# -- evaluation on held-out episodes ---------------------------------------------------------------


@torch.no_grad()
def predict_episode(model: RewEndModel, episode, *, burn_in: int = 3, window: int = HORIZON, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Predicted reward and end probabilities for every step of ``episode``, the way imagination uses the
    model: windows of ``window`` steps (the horizon), each after a burn-in over the ``burn_in`` transitions
    before it, from a zero state. Returns ``probs_rew`` ``(T, 3)``, ``probs_end`` ``(T, 2)`` and the truth.

    An unfinished episode (no ``final_obs``) loses its last step, whose next frame is unknown.
    """
    from .data import Segment, make_segment

    length = len(episode) if episode.final_obs is not None else len(episode) - 1
    starts = list(range(0, length, window))
    model.eval()
    probs_rew, probs_end = [], []
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        parts = [make_segment(episode, s - burn_in, s + window + 1) for s in chunk]
        seg = Segment.stack(parts, [0] * len(chunk), [s - burn_in for s in chunk], [s + window + 1 for s in chunk]).to_torch(model.device)
        logits_rew, logits_end, _ = model(seg["obs"][:, :-1], seg["act"][:, :-1], seg["obs"][:, 1:])
        probs_rew.append(logits_rew[:, burn_in:].float().softmax(-1).cpu())
        probs_end.append(logits_end[:, burn_in:].float().softmax(-1).cpu())
    probs_rew = torch.cat(probs_rew).reshape(-1, 3)[:length].numpy()
    probs_end = torch.cat(probs_end).reshape(-1, 2)[:length].numpy()
    return {
        "probs_rew": probs_rew,
        "probs_end": probs_end,
        "rew": np.sign(episode.rew[:length]).astype(np.int64),
        "end": episode.end[:length].astype(np.int64),
    }


def evaluate(model: RewEndModel, episodes, **kwargs) -> dict:
    """Confusion matrices, precision and recall of the most likely class, over every step of ``episodes``."""
    preds = [predict_episode(model, e, **kwargs) for e in episodes]
    rew_true = np.concatenate([p["rew"] for p in preds]) + 1
    end_true = np.concatenate([p["end"] for p in preds])
    rew_pred = np.concatenate([p["probs_rew"].argmax(-1) for p in preds])
    end_pred = np.concatenate([p["probs_end"].argmax(-1) for p in preds])
    conf_rew = confusion_matrix(torch.from_numpy(rew_true), torch.from_numpy(rew_pred), 3).numpy()
    conf_end = confusion_matrix(torch.from_numpy(end_true), torch.from_numpy(end_pred), 2).numpy()
    return {"confusion_rew": conf_rew, "confusion_end": conf_end, "rew": precision_recall(conf_rew), "end": precision_recall(conf_end)}
