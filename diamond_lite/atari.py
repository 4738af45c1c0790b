"""The Atari 100k protocol, as DIAMOND trains and evaluates on it.

Every setting below was checked against the paper (Alonso et al. 2024, Appendix) and its public code
(``src/envs/env.py`` and ``src/envs/atari_preprocessing.py`` of eloialonso/diamond, which build
``<Game>NoFrameskip-v4`` and wrap it):

========================  ====================================================================
emulator                  ALE (ale-py, which ships the ROMs), one emulator frame per ``ale.act``
sticky actions            off (``repeat_action_probability=0``, as the ``NoFrameskip-v4`` ids)
action set                the game's minimal action set
action repeat             4 emulator frames per agent step; the rewards of the 4 frames are summed
max-pool                  the observation is the pixel-wise max of the last two of those 4 frames
                          (it removes the flicker of sprites drawn on alternate frames)
no-ops at reset           a uniform number in 1..30 of NOOP frames after every real reset, in
                          both splits (``noop_max=30``)
observation               RGB, resized from 210x160 to ``size x size`` (64) by area interpolation,
                          ``uint8`` of shape ``(size, size, 3)``
episode cap               108,000 emulator frames (27,000 agent steps, 30 minutes of play):
                          ALE truncates the episode there, as the ``NoFrameskip-v4`` ids do
life loss                 ``info["life_loss"]`` is True on a step where a life was lost; in the
                          ``train`` split it also ends the episode (``terminated=True``), in
                          ``test`` it does not
========================  ====================================================================

One detail of the ``train`` split follows DIAMOND's ``DoneOnLifeLoss`` wrapper: a life loss ends the
*episode* but not the *game*. The next ``reset()`` (without a seed) continues the same game from the
frame where the life was lost, with no new no-ops, and the new episode's first observation is the
last one of the episode that ended. Only a real game over (or the frame cap, or a ``reset`` with a
seed) starts a new game.

One deliberate difference: when the game ends in the middle of an action repeat, DIAMOND returns the
pooled frame of the previous step; we return the frame where the game ended. That frame is never
trained on (an episode stores the observations *before* each action), so nothing learns from it.
"""

from __future__ import annotations

import difflib
from typing import Any

import ale_py
import cv2
import gymnasium as gym
import numpy as np

# The 26 games of Atari 100k (Kaiser et al. 2020), by the short names papers use, with ALE's ROM ids.
GAMES: dict[str, str] = {
    "Alien": "alien",
    "Amidar": "amidar",
    "Assault": "assault",
    "Asterix": "asterix",
    "BankHeist": "bank_heist",
    "BattleZone": "battle_zone",
    "Boxing": "boxing",
    "Breakout": "breakout",
    "ChopperCommand": "chopper_command",
    "CrazyClimber": "crazy_climber",
    "DemonAttack": "demon_attack",
    "Freeway": "freeway",
    "Frostbite": "frostbite",
    "Gopher": "gopher",
    "Hero": "hero",
    "Jamesbond": "jamesbond",
    "Kangaroo": "kangaroo",
    "Krull": "krull",
    "KungFuMaster": "kung_fu_master",
    "MsPacman": "ms_pacman",
    "Pong": "pong",
    "PrivateEye": "private_eye",
    "Qbert": "qbert",
    "RoadRunner": "road_runner",
    "Seaquest": "seaquest",
    "UpNDown": "up_n_down",
}

SPLITS = ("train", "test")
FRAME_SKIP = 4
NOOP_MAX = 30
MAX_FRAMES_PER_EPISODE = 108_000
# Agent steps at the start of a game in which nothing can happen yet (KungFuMaster's empty stage before the fighters
# walk on): where a notebook compares frames, it starts after them.
OPENING_STEPS: dict[str, int] = {"KungFuMaster": 70}


def check_game(game: str) -> str:
    """Return ``game`` if it is one of the 26 Atari 100k games; else raise a ``ValueError`` that lists
    them and names the closest match."""
    if game in GAMES:
        return game
    by_lower = {name.lower(): name for name in GAMES}
    close = difflib.get_close_matches(game.lower().replace("_", "").replace(" ", ""), list(by_lower), n=1, cutoff=0.0)
    hint = f" Did you mean {by_lower[close[0]]!r}?" if close else ""
    raise ValueError(f"unknown game {game!r}.{hint} The Atari 100k games are: {', '.join(GAMES)}.")


class AtariEnv(gym.Env):
    """One Atari 100k game under DIAMOND's protocol (see the module docstring).

    ``step`` returns ``(obs, reward, terminated, truncated, info)`` with ``info["life_loss"]`` and
    ``info["lives"]``. With ``keep_raw_frames=True``, ``info["raw_frames"]`` holds the emulator
    frames of the step (210x160 RGB), to show the action repeat and the max-pool at work.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        game: str,
        *,
        split: str = "train",
        size: int = 64,
        seed: int | None = None,
        keep_raw_frames: bool = False,
        render_mode: str | None = None,
    ) -> None:
        check_game(game)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; accepted splits: {', '.join(SPLITS)}")
        if not (isinstance(size, int) and size > 0):
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.game, self.split, self.size = game, split, size
        self.done_on_life_loss = split == "train"
        self.keep_raw_frames = keep_raw_frames
        self.render_mode = render_mode
        # Exactly the settings that gymnasium registers for "<Game>NoFrameskip-v4" (tests check this).
        self.ale_env = ale_py.env.AtariEnv(
            game=GAMES[game],
            obs_type="rgb",
            frameskip=1,
            repeat_action_probability=0.0,
            full_action_space=False,
            max_num_frames_per_episode=MAX_FRAMES_PER_EPISODE,
        )
        self.ale = self.ale_env.ale
        self.action_names: list[str] = self.ale_env.get_action_meanings()
        assert self.action_names[0] == "NOOP"
        self.action_space = gym.spaces.Discrete(len(self.action_names))
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        raw_shape = self.ale_env.observation_space.shape
        self._pool = [np.zeros(raw_shape, np.uint8), np.zeros(raw_shape, np.uint8)]
        self._lives = 0
        self._game_over = True
        self._last_obs: np.ndarray | None = None
        self._pending_seed = seed  # used by the first reset() that is given no seed

    # -- the protocol ------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._pending_seed is not None:
            seed = self._pending_seed
        self._pending_seed = None
        super().reset(seed=seed)
        continuing = seed is None and not self._game_over and self._last_obs is not None
        if continuing:
            # A life was lost in the train split: the game goes on (DIAMOND's DoneOnLifeLoss).
            return self._last_obs.copy(), {"life_loss": False, "lives": self._lives, "noops": 0, "new_game": False}

        # A seed reseeds the emulator too (from our RNG), so one seed fixes every game that follows.
        ale_seed = None if seed is None else int(self.np_random.integers(2**31 - 1))
        self.ale_env.reset(seed=ale_seed)
        noops = int(self.np_random.integers(1, NOOP_MAX + 1))
        for _ in range(noops):
            _, _, terminated, truncated, _ = self.ale_env.step(0)
            if terminated or truncated:  # only possible in a game that ends within 30 frames
                self.ale_env.reset()
        self._lives = self.ale.lives()
        self._game_over = False
        self.ale.getScreenRGB(self._pool[0])
        self._pool[1].fill(0)
        obs = self._observe()
        return obs, {"life_loss": False, "lives": self._lives, "noops": noops, "new_game": True}

    def step(self, action):
        if self._game_over:
            raise RuntimeError("step() called after the game ended; call reset() first")
        total_reward, terminated, truncated, life_loss = 0.0, False, False, False
        raw_frames = []
        for t in range(FRAME_SKIP):
            _, reward, terminated, truncated, _ = self.ale_env.step(int(action))
            total_reward += float(reward)
            if self.keep_raw_frames:
                raw_frames.append(self.ale.getScreenRGB())
            lives = self.ale.lives()
            if lives < self._lives:
                life_loss = True
            self._lives = lives
            if terminated or truncated:
                self.ale.getScreenRGB(self._pool[0])
                self._pool[1][:] = self._pool[0]
                break
            if t == FRAME_SKIP - 2:
                self.ale.getScreenRGB(self._pool[1])
            elif t == FRAME_SKIP - 1:
                self.ale.getScreenRGB(self._pool[0])

        self._game_over = terminated or truncated
        obs = self._observe()
        info = {"life_loss": life_loss, "lives": self._lives, "game_over": terminated}
        if self.keep_raw_frames:
            info["raw_frames"] = raw_frames
        if self.done_on_life_loss and life_loss:
            terminated = True
        return obs, total_reward, terminated, truncated, info

    def _observe(self) -> np.ndarray:
        pooled = np.maximum(self._pool[0], self._pool[1])
        obs = cv2.resize(pooled, (self.size, self.size), interpolation=cv2.INTER_AREA)
        self._last_obs = obs
        return obs.copy()

    # -- conveniences ------------------------------------------------------------------------------

    def render(self) -> np.ndarray:
        """The current emulator frame, 210x160 RGB, before pooling and resizing."""
        return self.ale.getScreenRGB()

    def close(self) -> None:
        self.ale_env.close()


def make_env(game: str, *, split: str = "train", seed: int | None = None, size: int = 64, **kwargs) -> AtariEnv:
    """An Atari 100k environment under DIAMOND's protocol (module docstring).

    ``split="train"`` ends an episode at every life loss, as DIAMOND trains; ``split="test"`` plays
    whole games, as it evaluates. ``seed`` seeds the first ``reset`` (and so the whole stream of
    episodes): the same seed and the same actions give the same frames.
    """
    return AtariEnv(game, split=split, size=size, seed=seed, **kwargs)
