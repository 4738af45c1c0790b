"""DIAMOND's agent: a CNN-LSTM actor-critic trained with λ-returns in imagination (Section 3; notebook 06).

The network (``src/models/actor_critic.py`` of DIAMOND): a 3x3 convolution, then per level a small residual
block (group norm, SiLU, 3x3 convolution) and a 2x2 max-pool (channels [32, 32, 64, 64]: 64 -> 4 pixels), an
LSTM cell of 512 units, and two linear heads that start at zero: the policy's logits (a uniform policy at
first) and the value.

The loss, on a window of ``H = 15`` imagined steps of a batch of episodes (Appendix and Eq. 7-9 of the paper):

* λ-returns (Sutton & Barto 2018, Section 12.1), bootstrapped from the value:
  ``G_t = r_t + γ (1 - d_t) [(1 - λ) V(x_{t+1}) + λ G_{t+1}]``, with ``G_{t+1}`` replaced by ``V(x_{t+1})``
  where the episode is truncated or the window ends; γ = 0.985, λ = 0.95. Rewards are clipped to their sign.
* the value regresses to the λ-returns, which are constants (no gradient flows into the targets);
* REINFORCE with the value as baseline: ``-log π(a_t | x_≤t) · (G_t - V(x_t))``, the advantage a constant;
* an entropy bonus of weight 0.001 keeps the policy exploring.

Optimiser: AdamW lr 1e-4, no weight decay, eps 1e-8, 100 warm-up steps, gradient clip 100. The agent keeps
its imagined episodes and LSTM states going from one update to the next (``EnvLoop``), as DIAMOND does.
In the real game it acts with ε-greedy sampling: ε = 0.01 when collecting, 0 when evaluating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from .component import Component, PlainConfig
from .rew_end import HORIZON, init_lstm
from .unet import GROUP_NORM_EPS, num_groups

CHECKPOINT_FORMAT = "diamond_lite.actor_critic/1"


@dataclass
class ActorCriticConfig(PlainConfig):
    """The network, the loss and the optimiser; defaults are DIAMOND's (3.2M parameters at 18 actions)."""

    num_actions: int
    img_channels: int = 3
    img_size: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    down: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    lstm_dim: int = 512
    # loss (DIAMOND config/agent/default.yaml and config/trainer.yaml, actor_critic)
    gamma: float = 0.985
    lambda_: float = 0.95
    weight_value_loss: float = 1.0
    weight_entropy_loss: float = 0.001
    backup_every: int = HORIZON  # DIAMOND's actor_critic_loss.backup_every: one update per imagined horizon
    # optimiser
    lr: float = 1e-4
    weight_decay: float = 0.0
    eps: float = 1e-8
    lr_warmup_steps: int = 100
    lr_step_after: int = 0  # updates at lr, then lr * lr_step_factor; 0 = never (DIAMOND)
    lr_step_factor: float = 1.0
    max_grad_norm: float = 100.0

    def __post_init__(self) -> None:
        self.num_actions = int(self.num_actions)
        if len(self.channels) != len(self.down):
            raise ValueError(f"channels and down need one entry per level, got {self.channels} and {self.down}")


class SmallResBlock(nn.Module):
    """``skip(x) + conv(silu(groupnorm(x)))``: the actor-critic's residual block (no conditioning)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(in_channels), in_channels, eps=GROUP_NORM_EPS)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.conv(F.silu(self.norm(x)))


class ActorCritic(Component):
    """``π(a_t | x_≤t)`` and ``V(x_≤t)`` from one frame at a time and a carried LSTM state."""

    checkpoint_format: ClassVar[str] = CHECKPOINT_FORMAT
    config_class: ClassVar[type] = ActorCriticConfig

    def __init__(
        self,
        cfg: ActorCriticConfig,
        device: str | torch.device = "cpu",
        *,
        autocast: bool | None = None,
        channels_last: bool | None = None,
        game: str | None = None,
    ) -> None:
        super().__init__(cfg, device, autocast=autocast, channels_last=channels_last, game=game)
        layers: list[nn.Module] = [nn.Conv2d(cfg.img_channels, cfg.channels[0], 3, padding=1)]
        for i, c in enumerate(cfg.channels):
            layers.append(SmallResBlock(cfg.channels[max(0, i - 1)], c))
            if cfg.down[i]:
                layers.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*layers)
        lowest = cfg.img_size // 2 ** sum(cfg.down)
        self.lstm = nn.LSTMCell(cfg.channels[-1] * lowest**2, cfg.lstm_dim)
        self.actor_linear = nn.Linear(cfg.lstm_dim, cfg.num_actions)
        self.critic_linear = nn.Linear(cfg.lstm_dim, 1)
        for layer in (self.actor_linear, self.critic_linear):  # a uniform policy and a zero value to start
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        init_lstm(self.lstm)
        self._ready()

    def initial_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        zeros = torch.zeros(batch_size, self.cfg.lstm_dim, device=self.device)
        return zeros, zeros.clone()

    def forward(self, obs: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Policy logits ``(B, A)``, value ``(B,)`` and the new state, from frames ``(B, C, H, W)`` in [-1, 1]."""
        if state is None:
            state = self.initial_state(obs.shape[0])
        with self._autocast():
            x = self.encoder(self._layout(obs.to(self.device)))
        h, c = self.lstm(x.float().flatten(1), state)
        return self.actor_linear(h), self.critic_linear(h)[:, 0], (h, c)

    def burn_in(self, frames: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The state after reading ``frames`` ``(B, T, C, H, W)`` one by one (the frames before an episode's
        first decision, when it starts from a real segment)."""
        for t in range(frames.shape[1]):
            _, _, state = self(frames[:, t], state)
        return state

    def train_step(self, loop: EnvLoop) -> tuple[Tensor, dict[str, Tensor]]:
        """Play ``backup_every`` steps in ``loop``'s environment and take one AdamW step on the loss."""
        self.train()
        trajectory = loop.run(self.cfg.backup_every)
        loss, metrics = actor_critic_loss(trajectory, self.cfg)
        return self.update(loss), metrics


@torch.no_grad()
def lambda_returns(rew: Tensor, end: Tensor, trunc: Tensor, val_bootstrap: Tensor, gamma: float, lambda_: float) -> Tensor:
    """λ-returns ``(B, T)`` of a window of ``T`` steps (module docstring), computed backwards in time.

    ``val_bootstrap[:, t]`` is ``V(x_{t+1})``: the value of the frame after step ``t`` (the final frame where
    the episode ended or was truncated there). The result carries no gradient.
    """
    rew = rew.sign()
    not_end = 1 - end.float()
    cut = (end | trunc).float()
    returns = torch.empty_like(val_bootstrap)
    next_return = val_bootstrap[:, -1]  # the window ends: bootstrap fully from the value
    for t in reversed(range(rew.shape[1])):
        # where the episode stops at t, the next step belongs to another episode: use V(x_{t+1}) alone
        mixed = (1 - lambda_) * val_bootstrap[:, t] + lambda_ * next_return
        target = cut[:, t] * val_bootstrap[:, t] + (1 - cut[:, t]) * mixed
        returns[:, t] = rew[:, t] + gamma * not_end[:, t] * target
        next_return = returns[:, t]
    return returns


def actor_critic_loss(trajectory: dict[str, Tensor], cfg: ActorCriticConfig) -> tuple[Tensor, dict[str, Tensor]]:
    """REINFORCE with a value baseline + value regression + entropy bonus (module docstring)."""
    returns = lambda_returns(
        trajectory["rew"], trajectory["end"], trajectory["trunc"], trajectory["val_bootstrap"], cfg.gamma, cfg.lambda_
    )
    dist = Categorical(logits=trajectory["logits"])
    entropy = dist.entropy().mean()
    advantage = (returns - trajectory["val"]).detach()
    loss_actions = -(dist.log_prob(trajectory["act"]) * advantage).mean()
    loss_values = cfg.weight_value_loss * F.mse_loss(trajectory["val"], returns)
    loss_entropy = -cfg.weight_entropy_loss * entropy
    loss = loss_actions + loss_values + loss_entropy
    metrics = {
        "loss_actions": loss_actions.detach(),
        "loss_values": loss_values.detach(),
        "entropy": entropy.detach(),
        "return": returns.mean(),
        "reward": trajectory["rew"].mean(),
        "end": trajectory["end"].float().mean(),
    }
    return loss, metrics


class EnvLoop:
    """Plays a batched environment (``ImaginationEnv`` or ``RealVectorEnv``) with the actor-critic, keeping the
    episodes and the LSTM states going from one call to the next (DIAMOND's ``make_env_loop``).

    ``run(T)`` returns the window of ``T`` steps the loss needs, each ``(B, T)``: ``obs`` (``(B, T, C, H, W)``),
    ``act``, ``rew``, ``end``, ``trunc``, the policy's ``logits`` (``(B, T, A)``) and ``val`` (with gradients),
    and ``val_bootstrap`` (no gradient). Between calls the state is detached: gradients flow back through at
    most one window.

    An imagined episode starts from real frames: the LSTM reads ``info["burnin_obs"]`` first. DIAMOND does this
    for every restarted episode but not at the very first reset of a run, where its states start at zero; we
    burn in there too, so every imagined episode starts the same way.
    """

    def __init__(self, env, model: ActorCritic, *, epsilon: float = 0.0, generator: torch.Generator | None = None) -> None:
        self.env, self.model, self.epsilon, self.generator = env, model, epsilon, generator
        self.obs: Tensor | None = None
        self.state: tuple[Tensor, Tensor] | None = None

    def _burn_in(self, info: dict, which: Tensor) -> None:
        """Let the LSTM of the episodes in ``which`` (a mask) read their real starting frames, if the env gives any."""
        if "burnin_obs" in info:
            h, c = self.model.burn_in(info["burnin_obs"][which], (self.state[0][which], self.state[1][which]))
            self.state = (self.state[0].index_put((which,), h), self.state[1].index_put((which,), c))

    def run(self, num_steps: int) -> dict[str, Tensor]:
        if self.obs is None:
            self.obs, info = self.env.reset()
            self.state = self.model.initial_state(self.env.num_envs)
            self._burn_in(info, torch.ones(self.env.num_envs, dtype=torch.bool, device=self.state[0].device))
        self.state = (self.state[0].detach(), self.state[1].detach())
        steps = []
        for _ in range(num_steps):
            logits, val, self.state = self.model(self.obs, self.state)
            act = epsilon_greedy(logits.detach(), self.epsilon, self.generator)
            next_obs, rew, end, trunc, info = self.env.step(act)
            done = info["done"]
            val_final = None
            if done.any():
                with torch.no_grad():  # the value of the frame that ended the episode, from the state that saw it
                    _, val_final, _ = self.model(info["final_obs"][done], (self.state[0][done], self.state[1][done]))
                keep = (~done).float()[:, None]  # a new episode starts from a zero state (then its burn-in)
                self.state = (self.state[0] * keep, self.state[1] * keep)
                self._burn_in(info, done)
            steps.append({"obs": self.obs, "act": act, "rew": rew, "end": end, "trunc": trunc,
                          "logits": logits, "val": val, "done": done, "val_final": val_final})  # fmt: skip
            self.obs = next_obs
        with torch.no_grad():
            _, val_next, _ = self.model(self.obs, self.state)  # the value after the window; the state is kept
        # V(x_{t+1}) of step t is the value computed at step t + 1, or the final frame's where the episode stopped
        for t, step in enumerate(steps):
            following = steps[t + 1]["val"].detach() if t + 1 < len(steps) else val_next
            if step["val_final"] is not None:
                following = following.index_put((step["done"],), step["val_final"])
            step["val_bootstrap"] = following
        keys = ("obs", "act", "rew", "end", "trunc", "logits", "val", "val_bootstrap")
        return {k: torch.stack([s[k] for s in steps], dim=1) for k in keys}


def epsilon_greedy(logits: Tensor, epsilon: float, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
    """Actions sampled from the policy at ``temperature`` (``softmax(logits / temperature)``), each replaced by a
    uniformly random one with probability ``epsilon`` (DIAMOND: 0.01 when collecting real data, 0 in evaluation
    and in imagination). A temperature below 1 sharpens the policy towards its preferred action: the Freeway
    setting (``CollectionConfig.temperature``)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float()
    if temperature != 1:  # imagination samples at 1 every step: skip the division there
        logits = logits / temperature
    probs = logits.softmax(-1)
    act = torch.multinomial(probs, 1, generator=generator)[:, 0]
    if epsilon > 0:
        b, n = probs.shape
        explore = torch.rand(b, generator=generator, device=probs.device) < epsilon
        random_act = torch.randint(0, n, (b,), generator=generator, device=probs.device)
        act = torch.where(explore, random_act, act)
    return act


class Policy:
    """The actor-critic as a policy for one real environment (``Collector``'s protocol): ``policy(frame)``
    takes a uint8 ``(H, W, 3)`` frame and returns an action; ``reset()`` at each new episode."""

    def __init__(self, model: ActorCritic, epsilon: float = 0.0, seed: int | None = None, temperature: float = 1.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model, self.epsilon, self.temperature = model, epsilon, temperature
        self.generator = torch.Generator(model.device).manual_seed(seed if seed is not None else 0)
        self.state = None

    def reset(self) -> None:
        self.state = None

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> int:
        self.model.eval()
        obs = torch.from_numpy(np.ascontiguousarray(frame)).to(self.model.device).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        logits, _, self.state = self.model(obs, self.state)
        return int(epsilon_greedy(logits, self.epsilon, self.generator, self.temperature)[0])


class RandomPolicy:
    """Uniformly random actions, from the environment's own action space (seeded): the first collection's policy,
    and the yardstick of every evaluation."""

    def __init__(self, env, seed: int) -> None:
        self.space = env.action_space
        self.space.seed(seed)

    def __call__(self, frame) -> int:
        return int(self.space.sample())


class CountingPolicy:
    """Wraps a policy and counts the actions it picks (``counts``)."""

    def __init__(self, policy, num_actions: int) -> None:
        self.policy, self.counts = policy, np.zeros(num_actions, dtype=np.int64)

    def reset(self) -> None:
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def __call__(self, frame) -> int:
        action = self.policy(frame)
        self.counts[action] += 1
        return action


class BlindPolicy:
    """A policy that never looks at the frame: each action drawn independently with fixed probabilities. With an
    agent's own action frequencies it is the agent's *blind twin*: what the agent scores above it, it owes to reading
    the frame rather than to preferring some actions."""

    def __init__(self, probs, seed: int) -> None:
        self.probs = np.asarray(probs, dtype=np.float64) / np.sum(probs)
        self.rng = np.random.default_rng(seed)

    def __call__(self, frame) -> int:
        return int(self.rng.choice(len(self.probs), p=self.probs))


def actor_critic_config(profile: str, num_actions: int) -> ActorCriticConfig:
    """``paper`` is DIAMOND's; ``course`` halves the channels and the LSTM; ``smoke`` is a toy for CI."""
    from .profiles import Profile

    sizes = Profile(profile).pick(
        smoke=dict(channels=[8, 8, 8, 8], lstm_dim=32),
        course=dict(channels=[16, 16, 32, 32], lstm_dim=256),
        paper={},
    )
    return ActorCriticConfig(num_actions=num_actions, **sizes)


def evaluate_policy(policy, env, num_episodes: int, *, max_steps: int | None = None, progress: bool = True,
                    desc: str = "evaluate", leave: bool = True) -> list[float]:
    """Undiscounted returns of ``num_episodes`` whole episodes of ``policy`` in the real ``env`` (test split:
    a game runs over all lives), with ``policy.reset()`` at each start if it has one.

    ``max_steps`` cuts an episode short (the paper has only the 108k-frame cap, 27k steps, which an agent that
    never serves the ball in Breakout reaches; smaller profiles cap it to bound their time)."""
    from tqdm.auto import tqdm

    returns = []
    for _ in tqdm(range(num_episodes), desc=desc, unit="episode", leave=leave, disable=not progress):
        obs, _ = env.reset()
        if hasattr(policy, "reset"):
            policy.reset()
        total, done, steps = 0.0, False, 0
        while not done:
            obs, rew, end, trunc, _ = env.step(policy(obs))
            total += float(rew)
            steps += 1
            done = end or trunc or (max_steps is not None and steps >= max_steps)
        returns.append(total)
    return returns
