"""The optimiser set-up: decay groups, warm-up, and the fused AdamW kernel doing the same arithmetic."""

import pytest
import torch
from torch import nn

from diamond_lite.optim import make_optimizer, parameter_groups, warmup_schedule


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def test_only_linear_and_conv_weights_are_decayed():
    net = _net()
    decay, no_decay = parameter_groups(net, 0.01)
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 4  # two biases, the norm's weight and bias


def test_fused_kernel_is_picked_on_cpu_and_matches_the_plain_one():
    nets = {fused: _net() for fused in (True, False)}
    opts = {fused: make_optimizer(net, 1e-3, 0.01, 1e-8, fused=fused) for fused, net in nets.items()}
    assert make_optimizer(_net(), 1e-3, 0.01, 1e-8).defaults["fused"] is True
    assert opts[False].defaults["fused"] is False
    x = torch.randn(5, 3, 8, 8)
    for _ in range(5):
        for fused, net in nets.items():
            opts[fused].zero_grad()
            net(x).square().mean().backward()
            opts[fused].step()
    for p, q in zip(nets[True].parameters(), nets[False].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[True][0].weight, _net()[0].weight)  # and the weights did move


def test_warmup_starts_at_zero_and_reaches_the_base_rate():
    opt = make_optimizer(_net(), 1e-3, 0.0, 1e-8)
    sched = warmup_schedule(opt, 4)
    rates = []
    for _ in range(6):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == [0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3]


def test_the_rate_steps_down_once_after_its_updates():
    opt = make_optimizer(_net(), 1e-3, 0.0, 1e-8)
    sched = warmup_schedule(opt, 2, step_after=4, step_factor=0.1)
    rates = []
    for _ in range(7):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([0.0, 5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4])


def test_a_bad_step_is_refused():
    opt = make_optimizer(_net(), 1e-3, 0.0, 1e-8)
    with pytest.raises(ValueError, match="step_factor"):
        warmup_schedule(opt, 2, step_after=4, step_factor=0.0)
    with pytest.raises(ValueError, match="step_after"):
        warmup_schedule(opt, 2, step_after=-1)
