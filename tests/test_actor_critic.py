"""The actor-critic, its λ-returns and loss, the imagination environment and the loop that plays it."""

import numpy as np
import pytest
import torch

from diamond_lite.actor_critic import (
    ActorCritic,
    ActorCriticConfig,
    EnvLoop,
    Policy,
    actor_critic_config,
    actor_critic_loss,
    epsilon_greedy,
    evaluate_policy,
    lambda_returns,
)
from diamond_lite.data import Dataset, Episode, SegmentSampler
from diamond_lite.imagination import ImaginationEnv, RealVectorEnv
from diamond_lite.rew_end import RewEndConfig, RewEndModel
from diamond_lite.world_model import WorldModel, WorldModelConfig
from world_model_helpers import TINY

SIZE = 16
SMALL = dict(img_size=SIZE, channels=[8, 8], down=[1, 1], lstm_dim=16)


def small_agent(num_actions=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    return ActorCritic(ActorCriticConfig(num_actions=num_actions, **{**SMALL, **kwargs}), autocast=False, channels_last=False)


def test_paper_configuration_has_diamonds_parameter_count():
    assert ActorCritic(ActorCriticConfig(num_actions=18), autocast=False).num_parameters() == 3_236_819
    assert actor_critic_config("paper", 18) == ActorCriticConfig(num_actions=18)
    cfg = ActorCriticConfig(num_actions=18)
    assert (cfg.gamma, cfg.lambda_, cfg.weight_entropy_loss, cfg.lr, cfg.weight_decay, cfg.max_grad_norm) == (0.985, 0.95, 0.001, 1e-4, 0.0, 100.0)


def naive_lambda_returns(rew, end, trunc, val_bootstrap, gamma, lam):
    """The λ-return as its definition: a (1-λ)λ^(n-1)-weighted mix of n-step returns, the last one taking the
    remaining weight, where the horizon N runs to the end of the episode or of the window."""
    b, t_max = rew.shape
    out = np.zeros((b, t_max))
    r = np.sign(rew)
    for i in range(b):
        for t in range(t_max):
            horizon = 1
            while t + horizon - 1 < t_max - 1 and not (end[i, t + horizon - 1] or trunc[i, t + horizon - 1]):
                horizon += 1

            def n_step(n):
                g = sum(gamma**k * r[i, t + k] for k in range(n))
                last = t + n - 1
                return g + (0.0 if end[i, last] else gamma**n * val_bootstrap[i, last])

            total = sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, horizon))
            out[i, t] = total + lam ** (horizon - 1) * n_step(horizon)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_lambda_returns_match_the_definition(seed):
    g = torch.Generator().manual_seed(seed)
    b, t = 5, 12
    rew = torch.randint(-3, 4, (b, t), generator=g).float()  # clipped to their sign inside
    end = torch.rand(b, t, generator=g) < 0.15
    trunc = (torch.rand(b, t, generator=g) < 0.1) & ~end
    val = torch.randn(b, t, generator=g)
    got = lambda_returns(rew, end, trunc, val, 0.985, 0.95)
    want = naive_lambda_returns(rew.numpy(), end.numpy(), trunc.numpy(), val.numpy(), 0.985, 0.95)
    assert end.any() and trunc.any()
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    # λ = 0 is the one-step TD target, whatever follows
    td = lambda_returns(rew, end, trunc, val, 0.9, 0.0)
    torch.testing.assert_close(td, rew.sign() + 0.9 * (~end).float() * val)


def test_loss_gradients_flow_only_where_they_should():
    g = torch.Generator().manual_seed(0)
    b, t, a = 4, 6, 3
    logits = torch.randn(b, t, a, generator=g, requires_grad=True)
    val = torch.randn(b, t, generator=g, requires_grad=True)
    val_bootstrap = torch.randn(b, t, generator=g, requires_grad=True)
    traj = {"logits": logits, "val": val, "val_bootstrap": val_bootstrap, "act": torch.randint(0, a, (b, t), generator=g),
            "rew": torch.randint(-1, 2, (b, t), generator=g).float(), "end": torch.rand(b, t, generator=g) < 0.2,
            "trunc": torch.zeros(b, t, dtype=torch.bool)}  # fmt: skip
    cfg = ActorCriticConfig(num_actions=a)
    loss, metrics = actor_critic_loss(traj, cfg)
    d_logits, d_val, d_boot = torch.autograd.grad(loss, [logits, val, val_bootstrap], allow_unused=True)
    # the returns are targets: nothing flows into the bootstrap values
    assert d_boot is None or (d_boot == 0).all()
    returns = lambda_returns(traj["rew"], traj["end"], traj["trunc"], val_bootstrap.detach(), cfg.gamma, cfg.lambda_)
    # the value gets only the regression's gradient (the advantage in the policy loss is a constant)
    torch.testing.assert_close(d_val, cfg.weight_value_loss * 2 * (val - returns).detach() / val.numel())
    # the policy gets REINFORCE with that constant advantage, plus the entropy bonus
    logits2 = logits.detach().requires_grad_()
    dist = torch.distributions.Categorical(logits=logits2)
    advantage = (returns - val).detach()
    expected = -(dist.log_prob(traj["act"]) * advantage).mean() - cfg.weight_entropy_loss * dist.entropy().mean()
    torch.testing.assert_close(d_logits, torch.autograd.grad(expected, logits2)[0])
    assert set(metrics) >= {"loss_actions", "loss_values", "entropy", "return"}


def test_epsilon_greedy():
    g = torch.Generator().manual_seed(0)
    sure = torch.tensor([[0.0, 50.0, 0.0, 0.0]]).repeat(20_000, 1)
    assert (epsilon_greedy(sure, 0.0, g) == 1).all()
    act = epsilon_greedy(sure, 0.2, g)
    assert abs((act != 1).float().mean().item() - 0.2 * 3 / 4) < 0.01  # a random action is the greedy one 1/4 of the time
    counts = torch.bincount(epsilon_greedy(sure, 1.0, g), minlength=4).float() / 20_000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.015)


def test_a_low_temperature_turns_a_slight_preference_into_a_consistent_one():
    g = torch.Generator().manual_seed(0)
    slight = torch.tensor([[0.0, 0.1, 0.0]]).repeat(20_000, 1)  # 36% for action 1 at temperature 1
    at_one = (epsilon_greedy(slight, 0.0, g) == 1).float().mean().item()
    at_low = (epsilon_greedy(slight, 0.0, g, temperature=0.01) == 1).float().mean().item()
    assert abs(at_one - 0.3559) < 0.015 and at_low > 0.99
    flat = torch.zeros(20_000, 3)  # a uniform policy stays uniform at any temperature
    counts = torch.bincount(epsilon_greedy(flat, 0.0, g, temperature=0.01), minlength=3).float() / 20_000
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.015)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        epsilon_greedy(slight, 0.0, g, temperature=0.0)


# -- imagination ----------------------------------------------------------------------------------


def tiny_world(tmp_path, num_actions=3, seed=0):
    rng = np.random.default_rng(seed)
    ds = Dataset(tmp_path / "data")
    for _ in range(3):
        n = 12
        ds.add(Episode(rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8), rng.integers(0, num_actions, n),
                       np.zeros(n), np.eye(n, dtype=bool)[-1], np.zeros(n, bool), final_obs=np.zeros((SIZE, SIZE, 3), np.uint8)))  # fmt: skip
    torch.manual_seed(seed)
    wm = WorldModel(WorldModelConfig(num_actions=num_actions, unet=TINY), autocast=False, channels_last=False)
    re = RewEndModel(RewEndConfig(num_actions=num_actions, img_size=SIZE, cond_channels=8, depths=[1, 1], channels=[8, 8],
                                  attn_depths=[False, False], lstm_dim=8), autocast=False, channels_last=False)  # fmt: skip
    return ds, wm, re


def force_head(rew_end_model, reward_class, end):
    """Make the reward/end model certain of one reward class and of ending or not."""
    bias = torch.full((5,), -40.0)
    bias[reward_class] = 40.0
    bias[4 if end else 3] = 40.0
    with torch.no_grad():
        rew_end_model.head[-1].weight.zero_()
    rew_end_model.head.register_forward_hook(lambda module, inputs, out: out + bias)


def test_imagination_env_shapes_truncation_and_autoreset(tmp_path):
    ds, wm, re = tiny_world(tmp_path)
    force_head(re, reward_class=2, end=False)
    env = ImaginationEnv(wm, re, SegmentSampler(ds, 4, 5, seed=0), num_envs=5, horizon=3, num_denoising_steps=1)
    obs, info = env.reset()
    assert obs.shape == (5, 3, SIZE, SIZE) and info["burnin_obs"].shape == (5, 3, 3, SIZE, SIZE)
    for step in range(1, 7):
        obs, rew, end, trunc, info = env.step(torch.tensor([0, 1, 2, 0, 1]))
        assert obs.shape == (5, 3, SIZE, SIZE) and rew.tolist() == [1.0] * 5 and not end.any()
        assert trunc.all() == (step % 3 == 0) and (info["done"] == trunc).all()
        if step % 3 == 0:  # restarted from real frames (the world model's dreams are not on the 8-bit grid of the data)
            real = ((obs + 1) * 127.5).round()
            assert torch.allclose((obs + 1) * 127.5, real, atol=1e-3)
            assert info["burnin_obs"].abs().sum() > 0
    with pytest.raises(ValueError, match="4 frames"):
        ImaginationEnv(wm, re, SegmentSampler(ds, 5, 5), num_envs=5)


def test_imagination_env_ends_and_reports_the_final_frame(tmp_path):
    ds, wm, re = tiny_world(tmp_path)
    force_head(re, reward_class=0, end=True)
    env = ImaginationEnv(wm, re, SegmentSampler(ds, 4, 4, seed=0), num_envs=4, horizon=15, num_denoising_steps=1,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    env.reset()
    before = env.obs_buffer.clone(), env.act_buffer.clone()
    obs, rew, end, trunc, info = env.step(torch.tensor([2, 2, 1, 0]))
    assert end.all() and not trunc.any() and rew.tolist() == [-1.0] * 4 and (env.episode_length == 0).all()
    act = before[1].clone()
    act[:, -1] = torch.tensor([2, 2, 1, 0])
    expected = wm.predict_next(before[0], act, num_steps=1, generator=torch.Generator().manual_seed(0))
    assert info["final_obs"].shape == expected.shape and not torch.equal(info["final_obs"], obs)


def test_env_loop_bootstraps_from_the_next_value_or_the_final_frame(tmp_path):
    ds, wm, re = tiny_world(tmp_path)
    force_head(re, reward_class=1, end=False)
    env = ImaginationEnv(wm, re, SegmentSampler(ds, 4, 6, seed=0), num_envs=6, horizon=4, num_denoising_steps=1)
    agent = small_agent()
    torch.nn.init.normal_(agent.critic_linear.weight)  # values that depend on what the agent sees
    loop = EnvLoop(env, agent, generator=torch.Generator().manual_seed(0))
    traj = loop.run(7)
    assert traj["obs"].shape == (6, 7, 3, SIZE, SIZE) and traj["logits"].shape == (6, 7, 3)
    assert traj["val"].requires_grad and not traj["val_bootstrap"].requires_grad
    done = traj["end"] | traj["trunc"]
    assert done[:, 3].all()  # horizon 4
    same = ~done[:, :-1]
    torch.testing.assert_close(traj["val_bootstrap"][:, :-1][same], traj["val"][:, 1:][same].detach())
    # where the episode stopped, the bootstrap is the final frame's value, not the next episode's first
    assert (traj["val_bootstrap"][:, 3] != traj["val"][:, 4].detach()).all()
    # a second call continues the same episodes (4 + 4 steps: the next truncation is at step 8, index 0 now)
    assert (loop.run(1)["trunc"] | loop.obs.new_zeros(6, 1, dtype=torch.bool)).all()


def test_actor_critic_learns_a_bandit_in_a_batched_env():
    """The whole update -- loop, λ-returns, loss, optimiser -- on an env where action 1 pays +1."""

    class Bandit:
        num_envs, num_actions = 16, 3

        def __init__(self):
            self.t = torch.zeros(16)

        def reset(self):
            return torch.zeros(16, 3, SIZE, SIZE), {}

        def step(self, act):
            self.t += 1
            trunc = self.t >= 5
            self.t[trunc] = 0
            return torch.zeros(16, 3, SIZE, SIZE), (act == 1).float(), torch.zeros(16, dtype=torch.bool), trunc, \
                {"done": trunc, "final_obs": torch.zeros(16, 3, SIZE, SIZE)}

    agent = small_agent(lr=3e-3, lr_warmup_steps=1, backup_every=5)
    loop = EnvLoop(Bandit(), agent, generator=torch.Generator().manual_seed(0))
    first = agent.train_step(loop)[1]["reward"].item()
    for _ in range(60):
        metrics = agent.train_step(loop)[1]
    assert first < 0.5 and metrics["reward"].item() > 0.9


def test_policy_in_the_real_game_and_the_real_vector_env():
    from diamond_lite.atari import make_env

    agent = ActorCritic(actor_critic_config("smoke", 4), autocast=False)
    env = make_env("Breakout", split="test", seed=0)
    policy = Policy(agent, epsilon=0.01, seed=0)
    obs, _ = env.reset(seed=0)
    actions = [policy(obs) for _ in range(5)]
    assert all(0 <= a < 4 for a in actions) and policy.state is not None
    policy.reset()
    assert policy.state is None
    vec = RealVectorEnv([make_env("Breakout", split="train", seed=i) for i in range(2)])
    loop = EnvLoop(vec, agent, epsilon=0.01)
    traj = loop.run(3)
    assert traj["obs"].shape == (2, 3, 3, 64, 64) and traj["rew"].dtype == torch.float32


def test_evaluate_policy_plays_whole_episodes():
    class Short:
        def __init__(self):
            self.t = 0

        def reset(self):
            self.t = 0
            return np.zeros((4, 4, 3), np.uint8), {}

        def step(self, action):
            self.t += 1
            return np.zeros((4, 4, 3), np.uint8), float(action), self.t >= 3, False, {}

    assert evaluate_policy(lambda obs: 2, Short(), 4, progress=False) == [6.0] * 4
    assert evaluate_policy(lambda obs: 2, Short(), 2, max_steps=2, progress=False) == [4.0] * 2


def test_checkpoint_round_trip(tmp_path):
    agent = small_agent()
    agent.game = "Pong"
    agent.save(tmp_path / "ac.pt", with_optimizer=True)
    loaded = ActorCritic.load(tmp_path / "ac.pt", game="Pong", config=agent.cfg, autocast=False, channels_last=False)
    obs = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    torch.testing.assert_close(loaded(obs)[0], agent(obs)[0])
    with pytest.raises(ValueError, match="not a checkpoint of a RewEndModel"):
        RewEndModel.load(tmp_path / "ac.pt")
