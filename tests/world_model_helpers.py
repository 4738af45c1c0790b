"""Small models and batches shared by the EDM and DDPM world-model tests."""

import torch

from diamond_lite.unet import ResBlock, UNetConfig
from diamond_lite.world_model import FrameStackNet, WorldModel, WorldModelConfig

TINY = UNetConfig(cond_channels=16, depths=[1, 1], channels=[8, 8], attn_depths=[False, True])


def batch(b=3, size=16, num_actions=4, seed=0, length=6):
    """A batch of world-model segments of random frames: 4 conditioning frames and the target, plus the target of
    the autoregressive term (DIAMOND's 6 frames; the DDPM baseline trains on 5)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.rand(b, length, 3, size, size, generator=g) * 2 - 1,
        "act": torch.randint(0, num_actions, (b, length), generator=g),
        "mask": torch.ones(b, length, dtype=torch.bool),
    }


def randomize_output_layer(model):
    """The output conv and every block's second conv start at zero (so a fresh network ignores its
    conditioning); give them weights, as training would, to see the conditioning at work."""
    for module in model.modules():
        if isinstance(module, FrameStackNet):
            torch.nn.init.normal_(module.conv_out.weight, std=0.1)
        if isinstance(module, ResBlock):
            torch.nn.init.normal_(module.conv2.weight, std=0.1)


def conditioning(b=2):
    """The last 4 frames and actions of a batch: the arguments of ``predict_next``."""
    data = batch(b)
    return data["obs"][:, :4], data["act"][:, :4]


def tiny(num_actions=4, **kw):
    """A world model with the ``TINY`` U-Net, the same weights every time, plain fp32."""
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(num_actions=num_actions, unet=TINY), autocast=False, channels_last=False, **kw)
