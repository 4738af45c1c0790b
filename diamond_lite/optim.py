"""The optimiser set-up shared by DIAMOND's three models (``src/utils.py`` of eloialonso/diamond).

* AdamW, with weight decay only on the weights of linear, convolution and LSTM layers: biases, norms and
  embeddings are not decayed (the minGPT convention DIAMOND adopts).
* The fused AdamW kernel (one pass over all parameters instead of a few kernels per tensor) where torch
  has one for the parameters' device: same arithmetic (tested), fewer passes over memory.
* A linear warm-up of the learning rate from 0 over the first ``warmup_steps`` updates, then constant
  (DIAMOND). Optionally one step down after ``step_after`` updates (``step_factor`` times the rate): the course
  profile's world model trains at 10x DIAMOND's rate for its first epoch, then at DIAMOND's (docs/journal/
  learning_rates.md, 2026-12-03: at a constant 1e-3 its held-out loss stalls; a step to 1e-4 cuts it by a quarter or
  more).
"""

from __future__ import annotations

import torch
from torch import nn

DECAYED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LSTM, nn.LSTMCell)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weights (linear, conv, LSTM) and everything else with no decay."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_weight = name == "weight" or name.startswith("weight_")
            (decay if is_weight and isinstance(module, DECAYED) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, eps: float, *, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW on :func:`parameter_groups`; ``fused=None`` picks the fused kernel where every parameter is a
    floating tensor on a CPU or CUDA device (torch >= 2.4 has it for both)."""
    if fused is None:
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in model.parameters())
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, eps=eps, fused=fused)


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, *, step_after: int = 0,
                    step_factor: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate ``min(1, step / warmup_steps)`` times its base value: 0 for the very first update, as in
    DIAMOND's ``get_lr_sched``. With ``step_after`` > 0, updates from number ``step_after`` on (counting from 0)
    run at ``step_factor`` times that; ``step_after`` 0 never steps (DIAMOND's constant rate)."""
    if step_after < 0 or step_factor <= 0:
        raise ValueError(f"step_after must be >= 0 (got {step_after}) and step_factor > 0 (got {step_factor})")

    def factor(step: int) -> float:
        stepped = step_factor if 0 < step_after <= step else 1.0
        return min(1.0, step / max(1, warmup_steps)) * stepped

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
