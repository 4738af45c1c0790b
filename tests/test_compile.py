"""torch.compile for the world model: compiled sampling and training agree with eager, follow the weights as training
changes them, and fall back to eager with a warning when compiling fails. Its own module so that the test workers
(pytest-xdist, one module each) can run these slow compilations beside the rest of the world model's tests."""

import math

import pytest
import torch

from diamond_lite.speedups import compile_sampling, compile_training
from diamond_lite.world_model import WorldModel
from world_model_helpers import batch, conditioning, randomize_output_layer, tiny


def test_compiled_sampling_matches_eager_and_follows_the_weights():
    model = tiny()
    randomize_output_layer(model)
    args = conditioning()
    eager = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    compile_sampling(model)
    compiled = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    assert model.speedups.sampling_is_compiled  # it did compile, and did not fall back
    assert (compiled - eager).abs().max() <= 2 / 255 + 1e-6  # fused kernels may round one 8-bit step apart
    with torch.no_grad():  # the compiled function reads the current weights, as training changes them
        model.denoiser.inner.conv_out.bias.add_(0.5)
    moved = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    assert (moved - compiled).abs().mean() > 0.05


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    model = tiny()
    args = conditioning()
    eager = model.predict_next(*args, generator=torch.Generator().manual_seed(0))

    def broken_compile(fn, **kwargs):
        def compiled(*a, **k):
            raise RuntimeError("no C++ compiler here")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    compile_sampling(model)
    with pytest.warns(UserWarning, match="no C.. compiler here"):
        fallback = model.predict_next(*args, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fallback, eager) and not model.speedups.sampling_is_compiled


def test_compiled_training_matches_eager_and_keeps_the_state_dict():
    eager = tiny()
    randomize_output_layer(eager)
    compiled = WorldModel(eager.cfg, autocast=False, channels_last=False)
    compiled.load_state_dict(eager.state_dict())
    compile_training(compiled)
    assert set(compiled.state_dict()) == set(eager.state_dict())  # the compiled function is not a second module
    data, g = batch(3), lambda: torch.Generator().manual_seed(1)  # noqa: E731
    for _ in range(3):  # the compiled step reads the weights each step changes, and its gradients move them alike
        (loss_eager, _), (loss_compiled, _) = eager.train_step(data, generator=g()), compiled.train_step(data, generator=g())
        assert abs(float(loss_eager) - float(loss_compiled)) <= 0.02 * float(loss_eager)
    assert compiled.speedups.training_network is not None  # it did compile, and did not fall back
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        if a.is_floating_point():
            assert (a - b).abs().max() <= 0.02 * a.abs().max() + 1e-4, name


class _FailingBackward(torch.autograd.Function):
    """Passes its input through, and fails in the backward pass, as a compiler failing on the backward graph would."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("no C++ compiler for the backward pass")


def _fails_when_called(fn, **kwargs):
    def compiled(*a, **k):
        raise RuntimeError("no C++ compiler here")

    return compiled


def _fails_in_backward(fn, **kwargs):
    return lambda *a, **k: _FailingBackward.apply(fn(*a, **k))


@pytest.mark.parametrize("broken_compile", [_fails_when_called, _fails_in_backward])
def test_training_compile_failure_falls_back_to_one_eager_step(monkeypatch, broken_compile):
    model = tiny()
    monkeypatch.setattr(torch, "compile", broken_compile)
    compile_training(model)
    with pytest.warns(UserWarning, match="no C.. compiler"):
        loss, _ = model.train_step(batch(3), generator=torch.Generator().manual_seed(1))
    assert math.isfinite(loss) and model.speedups.training_network is None and model.num_updates == 1
    # the failed attempt took no optimiser step: AdamW counts exactly one
    assert all(int(state["step"]) == 1 for state in model.optimizer.state.values())
    model.train_step(batch(3))  # and training goes on, eagerly
    assert model.num_updates == 2
