"""What makes the world model faster without changing what it computes (tooling beside notebook 02's model).

``WorldModel`` keeps one ``Speedups`` and asks it two things: which network a training step runs (the inner network,
or the same one compiled) and how a sampling step denoises (the denoiser, a bf16 copy of it, or the denoiser
compiled). Everything here is measured in ``docs/performance.md``:

* **A bf16 copy for sampling.** Under bf16 autocast every group norm returns fp32, so the additions, SiLUs and
  products between convolutions run in fp32 over twice the bytes, and each weight is cast again in every autocast
  region. Where the model uses autocast, sampling instead runs a copy whose U-Net holds its weights in bf16 (the noise
  and action embedding stays fp32, and EDM's preconditioning around the network too): 3-step sampling 7-11% faster
  on 2 CPU cores, within one 8-bit level of plain fp32 there (the tests allow a few).
* **torch.compile**, for training (:func:`compile_training`: forward and backward, the compiler fusing each group
  norm with its scale, shift and SiLU, and their gradients) and for sampling (:func:`compile_sampling`). Compiling
  costs a minute or more on 2 CPU cores for each new batch size, so a run turns it on with ``--set compile=True``.
  Where torch can not compile on a machine (no C++ compiler, an unsupported device), it warns once and stays eager.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor

from .edm import Denoiser


class Speedups:
    """A world model's compiled networks and its bf16 sampling copy (module docstring). Not an ``nn.Module``: nothing
    of it enters the model's state dict or checkpoints."""

    def __init__(self, model) -> None:
        self.model = model
        self.training_network = None  # the inner network compiled (compile_training), else None: the eager one
        self.compiled_denoise = None  # the denoiser's sampling call compiled (compile_sampling)
        self._bf16_copy: tuple[tuple, Denoiser] | None = None  # (the key of the weights it was made from, the copy)

    def sampling_denoiser(self) -> Denoiser:
        """The denoiser sampling runs: where the model uses bf16 autocast and is not compiled, the bf16 copy;
        otherwise the model's own.

        The copy is remade whenever a weight changes, which it tells by the number of optimiser steps and by the
        weights' version counters (a loaded state or an in-place edit bumps them). Both are needed: the fused AdamW
        step writes the weights without bumping their version counters (torch 2.13), and a copy that trusted them alone
        stayed at the weights of the first sampling call for the rest of a training run (docs/journal/
        world_model_on_course_budgets.md, 2026-11-22: a stale world model in imagination). The key is host bookkeeping (a tuple per frame), no wait on the device.
        """
        model = self.model
        if not model.use_autocast or self.compiled_denoise is not None:
            return model.denoiser
        key = (model.num_updates, model.device) + tuple((id(p), p._version) for p in model.denoiser.parameters())
        if self._bf16_copy is None or self._bf16_copy[0] != key:
            inner = copy.deepcopy(model.denoiser.inner).requires_grad_(False).eval()
            for p in inner.parameters():
                p.grad = None  # deepcopy copies gradients too; sampling needs none
            for part in (inner.conv_in, inner.unet, inner.norm_out, inner.conv_out):
                part.to(torch.bfloat16)  # keeps channels-last
            self._bf16_copy = (key, Denoiser(inner, model.denoiser.cfg))
        return self._bf16_copy[1]

    def denoise(self, net: Denoiser, x: Tensor, sigma: Tensor, obs: Tensor, act: Tensor) -> Tensor:
        """``net.denoise(x, sigma, obs, act)``, through the compiled call when there is one."""
        if self.compiled_denoise is not None:
            try:
                return self.compiled_denoise(x, sigma, obs=obs, act=act)
            except Exception as error:  # a compiler missing or failing: eager gives the same numbers (tested)
                warnings.warn(f"torch.compile failed, sampling stays eager: {type(error).__name__}: {error}"[:500], stacklevel=3)
                self.compiled_denoise = None
        return net.denoise(x, sigma, obs=obs, act=act)

    @property
    def sampling_is_compiled(self) -> bool:
        """Whether sampling runs compiled: after :func:`compile_sampling`, and until a compile failure fell back."""
        return self.compiled_denoise is not None


def compile_sampling(model) -> None:
    """Let ``model.predict_next`` run the denoiser through ``torch.compile`` (1.38x faster 3-step sampling at the
    course size on 2 CPU cores, no gain at the paper size there)."""
    model.speedups.compiled_denoise = torch.compile(model.denoiser.denoise, dynamic=False)


def compile_training(model) -> None:
    """Let ``model.train_step`` run the inner network through ``torch.compile``, forward and backward (at the paper
    size, batch 32, on 2 CPU cores with AMX: a train step 0.865 s against 0.965 s eager, after a first step of 79 s
    that compiles).

    The first step is where compiling the forward or the backward pass may fail. A failed attempt changed no weight
    (the optimiser steps after the backward pass), so that step is simply done again eagerly, with a warning, and
    training stays eager. The guard wraps the first call of ``model.train_step`` only.
    """
    # The bound method, not the module: a compiled module would join the state dict under a second name.
    model.speedups.training_network = torch.compile(model.denoiser.inner.forward, dynamic=False)
    eager_step = type(model).train_step.__get__(model)

    def first_step(batch, generator=None):
        del model.train_step  # later steps are the model's own
        try:
            return eager_step(batch, generator)
        except FloatingPointError:
            raise  # a bad loss, not a compiler: the eager step would refuse it too
        except Exception as error:  # a compiler missing or failing
            warnings.warn(f"torch.compile failed, training stays eager: {type(error).__name__}: {error}"[:500], stacklevel=2)
            model.speedups.training_network = None
            return eager_step(batch, generator)

    model.train_step = first_step
