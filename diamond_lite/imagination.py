"""Imagination: the world model and the reward/termination model as a batched environment (notebook 06).

DIAMOND trains its agent only here (Alonso et al. 2024, Section 3, "Reinforcement learning in imagination";
``src/envs/world_model_env.py``). ``ImaginationEnv`` keeps ``num_envs`` imagined episodes going at once:

* **reset**: each episode starts from a real segment of ``n = 4`` frames and actions drawn from the replay
  data (recency-weighted, like every other sampler of DIAMOND). The reward/end model's LSTM is burned in on
  the 3 transitions inside it; the frames before the last are handed to the agent in ``info["burnin_obs"]``
  so it can burn in its own LSTM.
* **step(actions)**: the action joins the last 4 actions; the denoiser samples the next frame from the last
  4 frames (3 Euler steps in the paper); the reward/end model *samples* a reward sign and an end from its
  predicted distributions for the transition; an episode is truncated after ``horizon`` steps (15).
* An episode that ends or is truncated restarts at once from a new real segment, the way a gymnasium vector
  env with same-step autoreset does: ``step`` returns the first frame of the new episode, and
  ``info["final_obs"]`` holds the frame that ended the old one (the agent bootstraps its value there).

Everything is a batched tensor on the model's device; observations are ``(num_envs, 3, 64, 64)`` floats in
[-1, 1], rewards floats in {-1, 0, 1}, ends and truncations booleans. ``RealVectorEnv`` gives the real game
the same interface, so an agent can not tell which one it plays.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .data import SegmentSampler
from .rew_end import HORIZON, RewEndModel
from .world_model import WorldModel


class ImaginationEnv:
    """``num_envs`` imagined episodes of at most ``horizon`` steps, started from segments of ``sampler``."""

    def __init__(
        self,
        world_model: WorldModel,
        rew_end_model: RewEndModel,
        sampler: SegmentSampler,
        *,
        num_envs: int,
        horizon: int = HORIZON,
        num_denoising_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if sampler.seq_length != world_model.n:
            raise ValueError(f"initial segments must have the world model's {world_model.n} frames, got {sampler.seq_length}")
        if horizon < 1 or num_envs < 1:
            raise ValueError(f"horizon and num_envs must be >= 1, got {horizon} and {num_envs}")
        self.world_model, self.rew_end_model, self.sampler = world_model, rew_end_model, sampler
        self.num_envs, self.horizon = num_envs, horizon
        self.num_denoising_steps = num_denoising_steps
        self.num_actions = world_model.cfg.num_actions
        self.device = world_model.device
        self.generator = generator

    @torch.no_grad()
    def _initial_conditions(self, count: int) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """``count`` real segments of n frames and actions, with the reward/end model burned in on them."""
        seg = self.sampler.sample(count).to_torch(self.device)
        obs, act = seg["obs"], seg["act"]
        self.rew_end_model.eval()
        _, _, state = self.rew_end_model(obs[:, :-1], act[:, :-1], obs[:, 1:])
        return obs, act, state

    @torch.no_grad()
    def reset(self) -> tuple[Tensor, dict]:
        """Start every episode afresh; returns the last frame of each initial segment and the frames before it."""
        self.obs_buffer, self.act_buffer, self.rew_end_state = self._initial_conditions(self.num_envs)
        self.episode_length = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        return self.obs_buffer[:, -1], {"burnin_obs": self.obs_buffer[:, :-1]}

    @torch.no_grad()
    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
        """One imagined step of every episode: ``(obs, reward, end, truncated, info)`` as in a gymnasium vector
        env with same-step autoreset. ``info["final_obs"]`` and ``info["burnin_obs"]`` hold, for the episodes
        that finished (``info["done"]``), the frame that ended them and the burn-in frames of their successor."""
        action = torch.as_tensor(action, device=self.device).long()
        self.act_buffer[:, -1] = action
        next_obs = self.world_model.predict_next(
            self.obs_buffer, self.act_buffer, num_steps=self.num_denoising_steps, generator=self.generator
        )
        rew, end, self.rew_end_state = self.rew_end_model.sample(
            self.obs_buffer[:, -1], action, next_obs, self.rew_end_state, generator=self.generator
        )
        self.episode_length += 1
        trunc = (self.episode_length >= self.horizon) & ~end
        self.obs_buffer = torch.cat([self.obs_buffer[:, 1:], next_obs[:, None]], dim=1)
        self.act_buffer = torch.cat([self.act_buffer[:, 1:], torch.zeros_like(self.act_buffer[:, :1])], dim=1)

        done = end | trunc
        info = {"done": done, "final_obs": next_obs.clone(), "burnin_obs": torch.zeros_like(self.obs_buffer[:, :-1])}
        if done.any():
            obs, act, (h, c) = self._initial_conditions(int(done.sum()))
            self.obs_buffer[done], self.act_buffer[done] = obs, act
            self.rew_end_state[0][:, done], self.rew_end_state[1][:, done] = h, c
            self.episode_length[done] = 0
            info["burnin_obs"][done] = obs[:, :-1]
        return self.obs_buffer[:, -1], rew, end, trunc, info


class RealVectorEnv:
    """Real Atari games with :class:`ImaginationEnv`'s interface (torch tensors, same-step autoreset), for
    model-free training and to check that an agent behaves the same in both. No burn-in frames: a real
    episode starts at its first frame."""

    def __init__(self, envs, device: str | torch.device = "cpu") -> None:
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.num_actions = int(self.envs[0].action_space.n)
        self.device = torch.device(device)

    def _to_torch(self, frames) -> Tensor:
        x = torch.from_numpy(np.stack(frames)).to(self.device)
        return x.permute(0, 3, 1, 2).float().div(127.5).sub(1)

    def reset(self, seed: int | None = None) -> tuple[Tensor, dict]:
        frames = [env.reset(seed=None if seed is None else seed + i)[0] for i, env in enumerate(self.envs)]
        return self._to_torch(frames), {}

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
        frames, finals, rews, ends, truncs = [], [], [], [], []
        for env, a in zip(self.envs, torch.as_tensor(action).tolist()):
            obs, rew, end, trunc, _ = env.step(a)
            finals.append(obs)
            if end or trunc:
                obs, _ = env.reset()
            frames.append(obs)
            rews.append(rew)
            ends.append(end)
            truncs.append(trunc)
        end = torch.tensor(ends, device=self.device)
        trunc = torch.tensor(truncs, device=self.device)
        info = {"done": end | trunc, "final_obs": self._to_torch(finals)}
        return self._to_torch(frames), torch.tensor(rews, dtype=torch.float32, device=self.device), end, trunc, info
