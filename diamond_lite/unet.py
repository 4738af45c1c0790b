"""The U-Net of DIAMOND's world model, block by block (notebook 02).

DIAMOND's denoiser is a standard 2-D U-Net (Ronneberger et al. 2015) in the style of the diffusion U-Nets of
Ho et al. (2020) and Karras et al. (2022), with one twist that makes it a *world model*: every residual block
is told the noise level **and the past actions** through **adaptive group normalisation** (Alonso et al. 2024,
Section 3 and Appendix D). The pieces, in the order notebook 02 builds them:

* ``FourierFeatures`` embeds the scalar noise level ``c_noise`` into a vector (random Fourier features,
  Tancik et al. 2020), so the network can tell sigma = 0.01 from sigma = 0.02 as easily as 1 from 2.
* ``AdaGroupNorm`` normalises a feature map with group norm, then scales and shifts every channel by amounts
  predicted from the conditioning vector: this is where noise level and actions enter every block.
* ``ResBlock``: two 3x3 convolutions, each after an ``AdaGroupNorm`` and a SiLU, around a skip connection;
  the second convolution starts at zero, so a fresh block is the identity and a deep net trains from step one.
* ``SelfAttention2d``, optional (DIAMOND's Atari model uses it only at the bottleneck, 8x8).
* ``Downsample`` (a strided 3x3 conv) and ``Upsample`` (nearest-neighbour x2, then a 3x3 conv).
* ``UNet``: per resolution, a stack of residual blocks on the way down and one more on the way up, each
  up-block concatenating the matching down-block's output (the skip connections that keep pixel detail).

Group norm uses groups of 32 channels (at least one group) and eps 1e-5; attention heads have 8 channels.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

GROUP_SIZE = 32
GROUP_NORM_EPS = 1e-5
ATTENTION_HEAD_DIM = 8


def num_groups(channels: int) -> int:
    return max(1, channels // GROUP_SIZE)


class FourierFeatures(nn.Module):
    """``[cos(2π·x·w), sin(2π·x·w)]`` for fixed random frequencies ``w ~ N(0, 1)`` (a buffer: not trained)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"FourierFeatures needs an even dimension, got {dim}")
        self.register_buffer("frequencies", torch.randn(1, dim // 2))

    def forward(self, x: Tensor) -> Tensor:
        angles = 2 * math.pi * x.reshape(-1, 1) @ self.frequencies.to(x.dtype)
        return torch.cat([angles.cos(), angles.sin()], dim=-1)


class AdaGroupNorm(nn.Module):
    """Group norm whose per-channel scale and shift are predicted from the conditioning vector.

    ``x * (1 + scale(cond)) + shift(cond)``: the "1 +" makes a zero-initialised predictor a plain group norm.
    """

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.groups = num_groups(channels)
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = F.group_norm(x, self.groups, eps=GROUP_NORM_EPS)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


def _attention_kernel(x: Tensor):
    """Training on a CPU: torch's plain attention kernel. Its flash-attention kernel, the default, takes 4x as long
    forward and backward on the 64 pixels of DIAMOND's bottleneck at batch 32, though it is the faster one forward
    alone (docs/performance.md, "Xeon AMX (2026-12-05)"). Both compute the same softmax(q k^T / sqrt(d)) v."""
    if x.device.type == "cpu" and torch.is_grad_enabled():
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, added to its input (output starts at 0)."""

    def __init__(self, channels: int, head_dim: int = ATTENTION_HEAD_DIM) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(num_groups(channels), channels, eps=GROUP_NORM_EPS)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.norm(x)  # as DIAMOND: the residual adds to the normalised input
        q, k, v = self.qkv(x).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        with _attention_kernel(x):
            y = F.scaled_dot_product_attention(q, k, v)  # (b, heads, h*w, c/heads)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class ResBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x, cond))), cond)))``, projecting the skip when channels change."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attention: bool = False) -> None:
        super().__init__()
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # a new block starts as (almost) the identity
        self.attention = SelfAttention2d(out_channels) if attention else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x, cond)))
        h = self.conv2(F.silu(self.norm2(h, cond)))
        return self.attention(self.skip(x) + h)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        nn.init.orthogonal_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass
class UNetConfig:
    """DIAMOND's Atari U-Net: 4 resolutions (64, 32, 16, 8) of 64 channels, 2 blocks each, no attention
    except at the bottleneck, a 256-dimensional conditioning vector."""

    cond_channels: int = 256
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    attn_depths: list[bool] = field(default_factory=lambda: [False, False, False, False])

    def __post_init__(self) -> None:
        if not len(self.depths) == len(self.channels) == len(self.attn_depths):
            raise ValueError(
                f"depths, channels and attn_depths need one entry per resolution, got {self.depths}, "
                f"{self.channels}, {self.attn_depths}"
            )


class UNet(nn.Module):
    """Maps a ``(B, channels[0], H, W)`` feature map and a conditioning vector to a feature map of the same shape.

    Level ``i`` works at resolution ``H / 2**i`` with ``channels[i]`` channels. Going down, level ``i`` has
    ``depths[i]`` residual blocks; going up, ``depths[i] + 1``, each fed the concatenation of the running
    feature map and one saved down-path output (the input to the level and each block's output, last first).
    Two residual blocks with self-attention sit at the bottom.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        ch, cond = cfg.channels, cfg.cond_channels
        self.num_down = len(ch) - 1
        self.down_blocks, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for i, (depth, attention) in enumerate(zip(cfg.depths, cfg.attn_depths)):
            c_prev, c = ch[max(0, i - 1)], ch[i]
            self.down_blocks.append(
                nn.ModuleList([ResBlock(c_prev if j == 0 else c, c, cond, attention) for j in range(depth)])
            )
            # The last up-block of a level takes the level's input as its skip and returns to c_prev channels.
            ups = [ResBlock(2 * c, c, cond, attention) for _ in range(depth)] + [ResBlock(c + c_prev, c_prev, cond, attention)]
            self.up_blocks.insert(0, nn.ModuleList(ups))
        self.mid_blocks = nn.ModuleList([ResBlock(ch[-1], ch[-1], cond, attention=True) for _ in range(2)])
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in ch[:-1]])
        self.upsamples = nn.ModuleList([nn.Identity()] + [Upsample(c) for c in reversed(ch[:-1])])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        multiple = 2**self.num_down  # pad so every downsampling halves an even size
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple))

        skips = []
        for down, blocks in zip(self.downsamples, self.down_blocks):
            x = down(x)
            level = [x]
            for block in blocks:
                x = block(x, cond)
                level.append(x)
            skips.append(level)

        for block in self.mid_blocks:
            x = block(x, cond)

        for up, blocks, level in zip(self.upsamples, self.up_blocks, reversed(skips)):
            x = up(x)
            for block, skip in zip(blocks, reversed(level)):
                x = block(torch.cat([x, skip], dim=1), cond)

        return x[..., :h, :w]
