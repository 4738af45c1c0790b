"""What DIAMOND's three trained models share: the world model, the reward/termination model, the actor-critic.

Each is a ``Component``: an ``nn.Module`` with a dataclass configuration, a device, optional bf16 autocast and
channels-last memory layout (``fast_defaults``), its own AdamW with DIAMOND's warm-up (``diamond_lite.optim``),
an ``update(loss)`` that clips gradients and refuses a non-finite loss, and checkpoints that load with
``torch.load(weights_only=True)`` (no code can run) and refuse another game or configuration.

A subclass calls ``super().__init__(cfg, device, ...)`` first, builds its layers, then ``self._ready()`` to move
them to the device and create the optimiser.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .faults import crash_point
from .optim import make_optimizer, warmup_schedule


DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """The device a run asks for: ``auto`` is CUDA, else Apple's MPS, else the CPU; ``cuda:1`` picks a GPU.

    A device this torch build or machine lacks is refused with a ``ValueError`` that says so and names the devices
    this machine has, rather than failing later inside torch."""
    name = str(name).strip().lower()
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    available = ", ".join(["auto"] + [d for d in ("cuda", "mps", "cpu") if has[d]])
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    kind = name.split(":")[0]
    if kind not in has:
        raise ValueError(f"unknown device {name!r}; accepted: {', '.join(DEVICES)} (here: {available})")
    if not has[kind]:
        why = "this torch was built without CUDA, or sees no GPU" if kind == "cuda" else "this machine has no Apple GPU"
        raise ValueError(f"--device {name}: {why}; devices here: {available}")
    device = torch.device(name)
    if kind == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def prepare_device(name: str = "auto") -> torch.device:
    """:func:`resolve_device`, and on CUDA DIAMOND's arithmetic: fp32 with TF32 matrix products (its trainer sets
    ``torch.backends.cuda.matmul.allow_tf32``; TF32 convolutions are torch's default)."""
    device = resolve_device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    return device


def autocast_for(precision: str) -> bool | None:
    """The ``autocast`` argument of a model for a run's ``precision``: ``auto`` lets :func:`fast_defaults` decide."""
    return {"auto": None, "bf16": True, "fp32": False}[precision]


def fast_defaults(device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels-last) by default on ``device``. A GPU trains in fp32 (TF32 products), as DIAMOND
    does: bf16 there is a switch (``--set precision=bf16``) until its loss curves are shown equal (docs/performance.md).
    A CPU that computes bf16 natively trains under bf16 autocast, measured 2.8x faster at the paper size (a forward
    pass 2.6 s -> 0.94 s at batch 32), with the loss curves of both in docs/performance.md; other CPUs stay in fp32.
    Channels-last helps everywhere."""
    if device.type != "cpu":
        return False, True
    try:
        native_bf16 = torch.backends.cpu.get_cpu_capability() in ("AVX512", "AVX512_BF16", "AMX") and _cpu_has_bf16()
    except Exception:  # an old torch or an unknown CPU: stay in fp32
        native_bf16 = False
    return native_bf16, True


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Component(nn.Module):
    """Base of the trained models (module docstring). ``cfg`` needs ``lr``, ``weight_decay``, ``eps``,
    ``lr_warmup_steps``, ``lr_step_after``, ``lr_step_factor``, ``max_grad_norm``, ``to_dict()`` and a ``from_dict`` classmethod."""

    checkpoint_format: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(
        self,
        cfg: Any,
        device: str | torch.device = "cpu",
        *,
        autocast: bool | None = None,
        channels_last: bool | None = None,
        game: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.game = cfg, game
        self.device = torch.device(device)
        default_autocast, default_channels_last = fast_defaults(self.device)
        self.use_autocast = default_autocast if autocast is None else autocast
        self.channels_last = default_channels_last if channels_last is None else channels_last
        self.num_updates = 0

    def _ready(self) -> None:
        self.to(self.device)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self, self.cfg.lr, self.cfg.weight_decay, self.cfg.eps)
        # the first update whose loss was not finite, and that loss (-1 and 0 while there is none; update)
        self._first_bad_update = torch.full((), -1, dtype=torch.long, device=self.device)
        self._first_bad_loss = torch.zeros((), device=self.device)
        self.scheduler = warmup_schedule(self.optimizer, self.cfg.lr_warmup_steps,
                                         step_after=self.cfg.lr_step_after, step_factor=self.cfg.lr_step_factor)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _autocast(self):
        if not self.use_autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def update(self, loss: Tensor) -> Tensor:
        """One AdamW step on ``loss`` (clipped to ``cfg.max_grad_norm``); returns the loss, detached.

        A NaN or infinite loss changes no weight, and :meth:`check_finite` (called by training loops before they
        write a checkpoint and after each model's updates of an epoch) then raises ``FloatingPointError``: the last
        checkpoint and the model in memory stay good. With the fused AdamW kernel (CPU and CUDA) the bad step is
        skipped on the device, the way torch's ``GradScaler`` skips one, so no update waits for the device to say
        whether its loss was finite; other optimisers check at once.
        """
        finite = torch.isfinite(loss.detach())
        fused = self.optimizer.defaults.get("fused")
        if not fused and not finite:
            raise FloatingPointError(f"{type(self).__name__} loss is {loss.item()} at update {self.num_updates}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters(), self.cfg.max_grad_norm)
        if fused:
            self.optimizer.found_inf = (~finite).float()  # 1 skips the whole step, moments and step count included
            first_bad = ~finite & (self._first_bad_update < 0)
            self._first_bad_update = torch.where(first_bad, self.num_updates, self._first_bad_update)
            self._first_bad_loss = torch.where(first_bad, loss.detach().float(), self._first_bad_loss)
        self.optimizer.step()
        self.scheduler.step()
        self.num_updates += 1
        return loss.detach()

    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` if an update since the model was made had a NaN or infinite loss (it changed
        no weight). The one place training waits for the device to say so."""
        if self._first_bad_update.item() >= 0:
            raise FloatingPointError(f"{type(self).__name__} loss is {self._first_bad_loss.item()} at update "
                                     f"{self._first_bad_update.item()}")  # fmt: skip

    # -- checkpoints -------------------------------------------------------------------------------

    def save(self, path: str | Path, *, half: bool = False, with_optimizer: bool = False) -> None:
        """Write the weights with the configuration and game (atomically). ``half`` stores weights in
        float16 (half the size, for shipping trained models); the optimizer state is optional."""
        state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in self.state_dict().items()}
        payload = {"format": self.checkpoint_format, "config": self.cfg.to_dict(), "game": self.game, "model": state,
                   "num_updates": self.num_updates, **self._checkpoint_extra()}  # fmt: skip
        if with_optimizer:
            payload["optimizer"] = self.optimizer.state_dict()
            payload["scheduler"] = self.scheduler.state_dict()
        write_atomic(payload, path)

    def _checkpoint_extra(self) -> dict:
        """What a subclass stores beside the weights and configuration (DDPM: its schedule)."""
        return {}

    @classmethod
    def _init_kwargs_from_checkpoint(cls, payload: dict) -> dict:
        """Constructor arguments a subclass reads back from :meth:`_checkpoint_extra`'s entries."""
        return {}

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        game: str | None = None,
        config: Any = None,
        **kwargs,
    ):
        """Load a checkpoint written by :meth:`save`, safely (``weights_only=True``: no code runs).

        With ``game`` or ``config`` given, a checkpoint of another game or configuration is refused with a
        message that says what differs.
        """
        payload = read_checkpoint(path, cls.checkpoint_format, cls.__name__)
        saved_cfg = cls.config_class.from_dict(payload["config"])
        if game is not None and payload.get("game") != game:
            raise ValueError(f"{path} holds a {cls.__name__} of {payload.get('game')!r}, not of {game!r}")
        if config is not None and config != saved_cfg:
            raise ValueError(f"{path} was trained with another configuration: {config_diff(config.to_dict(), saved_cfg.to_dict())}")
        model = cls(saved_cfg, device, game=payload.get("game"), **cls._init_kwargs_from_checkpoint(payload), **kwargs)
        state = {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}
        model.load_state_dict(state)
        model.num_updates = payload.get("num_updates", 0)
        if "optimizer" in payload:
            model.optimizer.load_state_dict(payload["optimizer"])
            model.scheduler.load_state_dict(payload["scheduler"])
        return model


def write_atomic(payload: dict, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename it over ``path``: a crash leaves the old file or the new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())  # a power cut after the rename must not leave an empty file under the real name
        crash_point("checkpoint_write")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: leave no half-written file taking the space
        raise


def read_checkpoint(path: str | Path, expected_format: str, what: str) -> dict:
    """The payload of a checkpoint file, loaded with ``weights_only=True``; a clear error when the file is
    truncated, not a checkpoint, or one of another kind of model."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise ValueError(f"{path} is not a checkpoint of a {what} (expected format {expected_format!r}, found {found!r})")
    return payload


def config_diff(expected: dict, found: dict, prefix: str = "") -> str:
    """``"a.b is 1 in the checkpoint, 2 expected; ..."`` for every field that differs."""
    diffs = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = config_diff(a, b, f"{prefix}{key}.")
            if inner:
                diffs.append(inner)
        elif a != b:
            diffs.append(f"{prefix}{key} is {b!r} in the checkpoint, {a!r} expected")
    return "; ".join(diffs)


class PlainConfig:
    """``to_dict``/``from_dict`` for a dataclass configuration whose fields are plain values and lists."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**d)
