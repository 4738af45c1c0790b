"""Play inside the world model: an interactive player, a dataset viewer, recording and export (notebook 08).

DIAMOND's world model is also a neural game engine: its repository lets a person play inside it in a pygame window.
Here the same happens in JupyterLab. The logic lives in two plain classes that need no browser (tested on their own):

* ``Player``: one game at a time, in the **world model** (the diffusion model draws every frame, the reward/end
  model says what was earned) or the **real** game (test or train split), controlled by a **human** (one step per
  button press or key) or the **policy** (one step per timer tick, or per "step" click while paused). The horizon of
  an imagined episode and the number of denoising steps can be changed while playing: fewer steps are faster and
  blurrier. Every finished episode can be saved into a dataset named by environment and controller.
* ``DatasetViewer``: browse any dataset episode by episode and step by step (±1, ±10, back to the start).

``player_widget`` and ``viewer_widget`` put ipywidgets on top of them; ``save_gif`` and ``save_mp4`` export an episode.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from .data import Dataset, Episode, SegmentSampler
from .rew_end import HORIZON

ENVIRONMENTS = ("world model", "real test", "real train")
CONTROLLERS = ("human", "policy")
MAX_DENOISING_STEPS = 10


class Player:
    """What every control of the player does to the game (module docstring). ``frame`` is what is shown."""

    def __init__(
        self,
        world_model,
        rew_end_model,
        agent,
        replay: Dataset,
        game: str,
        *,
        horizon: int = HORIZON,
        num_denoising_steps: int = 3,
        record_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        from .actor_critic import Policy

        self.world_model, self.rew_end_model, self.agent = world_model, rew_end_model, agent
        self._set_up(replay, game, horizon=horizon, record_dir=record_dir, seed=seed)
        self.policy = Policy(agent, epsilon=0.0, seed=seed)
        self.num_denoising_steps = num_denoising_steps
        self._dream = None
        self.reset()

    def _set_up(self, replay: Dataset, game: str, *, horizon: int, record_dir: str | Path | None, seed: int, size: int = 64) -> None:
        """What every player holds whatever its world: the real game (test and train splits, frames of ``size``),
        the controls' state and the recordings. A subclass (``engine.EnginePlayer``) calls it too."""
        from .atari import make_env

        self.replay, self.game, self.seed = replay, game, seed
        self.record_dir = Path(record_dir) if record_dir is not None else None
        self.real_envs = {"real test": make_env(game, split="test", seed=seed, size=size),
                          "real train": make_env(game, split="train", seed=seed, size=size)}  # fmt: skip
        self.action_names: list[str] = self.real_envs["real test"].action_names
        self.environment, self.controller = "world model", "human"
        self.horizon, self.paused = horizon, False
        self.step_seconds = 0.0
        self.saved: list[Path] = []

    # -- the game ----------------------------------------------------------------------------------

    def _dream_env(self):
        from .imagination import ImaginationEnv

        if self._dream is None:
            sampler = SegmentSampler(self.replay, self.world_model.n, 1, sample_weights=None, seed=self.seed)
            self._dream = ImaginationEnv(self.world_model, self.rew_end_model, sampler, num_envs=1, horizon=self.horizon,
                                         num_denoising_steps=self.num_denoising_steps,
                                         generator=torch.Generator(self.world_model.device).manual_seed(self.seed))  # fmt: skip
        self._dream.horizon, self._dream.num_denoising_steps = self.horizon, self.num_denoising_steps
        return self._dream

    def _world_reset(self) -> np.ndarray:
        """A new imagined episode; its first frame. The world model's half of ``reset``: what a subclass with another
        world (``engine.EnginePlayer``) replaces, with ``_world_step``."""
        from .viz import to_image

        obs, info = self._dream_env().reset()
        for frame in info["burnin_obs"][0]:  # the policy reads the real frames before the first decision
            self.policy(to_image(frame))
        return to_image(obs[0])

    def _world_step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        """One imagined step: the next frame, the reward, and whether the episode ended or was cut at the horizon."""
        from .viz import to_image

        obs, rew, end, trunc, info = self._dream_env().step(torch.tensor([action]))
        reward, end, trunc = float(rew[0]), bool(end[0]), bool(trunc[0])
        return (to_image(info["final_obs"][0]) if (end or trunc) else to_image(obs[0])), reward, end, trunc

    def reset(self) -> None:
        """A new episode in the current environment (the world model starts from 4 real frames of the replay)."""
        if hasattr(self.policy, "reset"):
            self.policy.reset()
        if self.environment == "world model":
            self.frame = self._world_reset()
        else:
            self.frame, _ = self.real_envs[self.environment].reset()
        self.steps: list[tuple] = []
        self.last_reward, self.episode_return, self.t, self.done = 0.0, 0.0, 0, False
        self.final_frame = None

    def act(self, action: int | None = None) -> None:
        """One step: ``action`` from the human, or the policy's choice when it controls. A finished episode
        restarts on the next step. ``step_seconds`` is how long the step took."""
        if self.done:
            self.reset()
        if action is None:
            action = self.policy(self.frame) if self.controller == "policy" else 0  # NOOP
        if not 0 <= int(action) < len(self.action_names):
            raise ValueError(f"action {action} is not one of {len(self.action_names)} actions {self.action_names}")
        action = int(action)
        if self.controller == "human":
            self.policy(self.frame)  # keep the policy's memory in step, so taking over mid-episode works
        started = time.perf_counter()
        if self.environment == "world model":
            next_frame, reward, end, trunc = self._world_step(action)
        else:
            next_frame, reward, end, trunc, _ = self.real_envs[self.environment].step(action)
        self.step_seconds = time.perf_counter() - started
        self.steps.append((self.frame, action, reward, end, trunc))
        self.frame = next_frame
        self.last_reward, self.episode_return, self.t = reward, self.episode_return + reward, self.t + 1
        if end or trunc:
            self.done, self.final_frame = True, next_frame
            if self.record_dir is not None:
                self.save_episode()

    def press(self, action: int) -> bool:
        """A button or key: a step with that action when the human plays; ignored (False) when the policy does."""
        if self.controller != "human":
            return False
        self.act(action)
        return True

    def tick(self) -> bool:
        """The timer: the policy plays one step unless paused or the human is in control."""
        if self.paused or self.controller != "policy":
            return False
        self.act()
        return True

    def step_once(self) -> None:
        """One step while paused (the policy's action, or NOOP for the human)."""
        self.act()

    # -- the controls ------------------------------------------------------------------------------

    def set_environment(self, name: str) -> None:
        if name not in ENVIRONMENTS:
            raise ValueError(f"unknown environment {name!r}; accepted: {', '.join(ENVIRONMENTS)}")
        self.environment = name
        self.reset()

    def set_controller(self, name: str) -> None:
        if name not in CONTROLLERS:
            raise ValueError(f"unknown controller {name!r}; accepted: {', '.join(CONTROLLERS)}")
        self.controller = name

    def toggle_pause(self) -> None:
        self.paused = not self.paused

    def change_horizon(self, delta: int) -> None:
        self.horizon = max(1, self.horizon + delta)

    def change_denoising_steps(self, delta: int) -> None:
        self.num_denoising_steps = min(MAX_DENOISING_STEPS, max(1, self.num_denoising_steps + delta))

    # -- recording ---------------------------------------------------------------------------------

    @property
    def dataset_name(self) -> str:
        return f"{self.environment.replace(' ', '_')}-{self.controller}"

    def episode(self) -> Episode:
        """The episode played so far (with its final frame once finished)."""
        if not self.steps:
            raise ValueError("nothing played yet in this episode")
        return Episode.from_steps(self.steps, final_obs=self.final_frame)

    def save_episode(self, record_dir: str | Path | None = None) -> Path:
        """Add the current episode to ``<record_dir>/<environment>-<controller>/`` (a ``Dataset``)."""
        root = Path(record_dir) if record_dir is not None else self.record_dir
        if root is None:
            raise ValueError(f"no record_dir: give one here or when creating the {type(self).__name__}")
        dataset = Dataset(root / self.dataset_name)
        path = dataset.path(dataset.add(self.episode()))
        self.saved.append(path)
        return path

    def status(self) -> str:
        return (f"{self.environment} · {self.controller}{' · paused' if self.paused else ''} · t={self.t} · "
                f"reward {self.last_reward:+.0f} · return {self.episode_return:.0f}"
                + (f" · horizon {self.horizon} · {self.num_denoising_steps} denoising steps" if self.environment == "world model" else "")
                + (" · episode over (next step restarts)" if self.done else ""))  # fmt: skip


class DatasetViewer:
    """Browse a dataset: next/previous episode, steps of ±1 and ±10, back to the first step."""

    def __init__(self, dataset: Dataset, action_names: list[str] | None = None) -> None:
        if len(dataset) == 0:
            raise ValueError(f"the dataset in {dataset.directory} has no episode")
        self.dataset, self.action_names = dataset, action_names
        self.ids = list(dataset.ids)
        self.index, self.t = 0, 0

    @property
    def episode(self) -> Episode:
        return self.dataset[self.ids[self.index]]

    def next_episode(self) -> None:
        self.index, self.t = min(len(self.ids) - 1, self.index + 1), 0

    def previous_episode(self) -> None:
        self.index, self.t = max(0, self.index - 1), 0

    def step(self, delta: int) -> None:
        self.t = int(np.clip(self.t + delta, 0, len(self.episode) - 1))

    def first(self) -> None:
        self.t = 0

    @property
    def frame(self) -> np.ndarray:
        return self.episode.obs[self.t]

    def status(self) -> str:
        e, t = self.episode, self.t
        action = self.action_names[e.act[t]] if self.action_names else str(e.act[t])
        flags = (" · END" if e.end[t] else "") + (" · cut" if e.trunc[t] else "")
        return f"episode {self.ids[self.index]} ({self.index + 1}/{len(self.ids)}) · step {t + 1}/{len(e)} · action {action} · reward {e.rew[t]:+.0f}{flags}"


# -- export ------------------------------------------------------------------------------------------


def upscale(frame, scale: int = 5) -> np.ndarray:
    """Crisp pixels: every pixel becomes a ``scale`` x ``scale`` block."""
    from .viz import to_image

    return np.kron(to_image(frame), np.ones((scale, scale, 1), dtype=np.uint8))


def png_bytes(frame, scale: int = 5) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(upscale(frame, scale)).save(buffer, format="PNG")
    return buffer.getvalue()


def _frames_of(frames) -> list:
    if isinstance(frames, Episode):
        return list(frames.obs) + ([frames.final_obs] if frames.final_obs is not None else [])
    return list(frames)


def save_gif(frames, path: str | Path, *, fps: int = 15, scale: int = 4) -> Path:
    """An animated GIF of ``frames`` (an ``Episode``, or any sequence of frames), looping."""
    from PIL import Image

    images = [Image.fromarray(upscale(f, scale)) for f in _frames_of(frames)]
    if not images:
        raise ValueError("no frames to save")
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def save_mp4(frames, path: str | Path, *, fps: int = 15, scale: int = 4) -> Path:
    """An MP4 video of ``frames`` (an ``Episode``, or any sequence of frames), written by OpenCV (MPEG-4 part 2, which
    every player reads; no ffmpeg needed)."""
    import cv2

    images = [upscale(f, scale) for f in _frames_of(frames)]
    if not images:
        raise ValueError("no frames to save")
    path = Path(path)
    height, width = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write an MP4 video to {path}")
    try:
        for image in images:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# -- widgets -----------------------------------------------------------------------------------------

KEYS = {"w": "UP", "a": "LEFT", "s": "DOWN", "d": "RIGHT", " ": "FIRE", "f": "FIRE", "n": "NOOP"}


def player_widget(player: Player, *, scale: int = 5, fps: int = 8):
    """The player in ipywidgets: the frame, a button per action, the controls, and a key box (type w a s d,
    space or f for FIRE, n for NOOP, while it has the focus)."""
    import ipywidgets as w

    image = w.Image(value=png_bytes(player.frame, scale), format="png")
    status = w.Label(player.status())

    def refresh(*_):
        image.value = png_bytes(player.frame, scale)
        status.value = player.status()

    def on_action(index):
        def handler(_):
            player.press(index)
            refresh()

        return handler

    buttons = []
    for index, name in enumerate(player.action_names):
        button = w.Button(description=name, layout=w.Layout(width="auto"))
        button.on_click(on_action(index))
        buttons.append(button)
    environment = w.Dropdown(options=ENVIRONMENTS, value=player.environment, description="environment")
    controller = w.ToggleButtons(options=CONTROLLERS, value=player.controller, description="controller")
    environment.observe(lambda change: (player.set_environment(change["new"]), refresh()), names="value")
    controller.observe(lambda change: (player.set_controller(change["new"]), refresh()), names="value")

    def control(description, callback):
        button = w.Button(description=description, layout=w.Layout(width="auto"))
        button.on_click(lambda _: (callback(), refresh()))
        return button

    controls = [control("reset", player.reset), control("pause / play", player.toggle_pause), control("step", player.step_once),
                control("horizon −", lambda: player.change_horizon(-1)), control("horizon +", lambda: player.change_horizon(1)),
                control("denoising −", lambda: player.change_denoising_steps(-1)),
                control("denoising +", lambda: player.change_denoising_steps(1))]  # fmt: skip
    if player.record_dir is not None:
        controls.append(control("save episode", lambda: player.save_episode() if player.steps else None))
    timer = w.Play(interval=int(1000 / fps), max=10**9, description="policy clock")
    timer.observe(lambda change: player.tick() and refresh(), names="value")
    keys = w.Text(placeholder="keys: w a s d, space = FIRE", layout=w.Layout(width="16em"))

    def on_key(change):
        for ch in change["new"].lower():
            name = KEYS.get(ch)
            if name in player.action_names:
                player.press(player.action_names.index(name))
        if change["new"]:
            keys.value = ""
            refresh()

    keys.observe(on_key, names="value")
    box = w.VBox([image, status, w.HBox(buttons), w.HBox([environment, controller]), w.HBox(controls), w.HBox([timer, keys])])
    box.refresh = refresh  # for a notebook that drives the player from code
    return box


def viewer_widget(viewer: DatasetViewer, *, scale: int = 5):
    """The dataset viewer in ipywidgets."""
    import ipywidgets as w

    image = w.Image(value=png_bytes(viewer.frame, scale), format="png")
    status = w.Label(viewer.status())

    def refresh():
        image.value = png_bytes(viewer.frame, scale)
        status.value = viewer.status()

    def control(description, callback):
        button = w.Button(description=description, layout=w.Layout(width="auto"))
        button.on_click(lambda _: (callback(), refresh()))
        return button

    buttons = [control("⏮ episode", viewer.previous_episode), control("episode ⏭", viewer.next_episode), control("first", viewer.first),
               control("−10", lambda: viewer.step(-10)), control("−1", lambda: viewer.step(-1)), control("+1", lambda: viewer.step(1)),
               control("+10", lambda: viewer.step(10))]  # fmt: skip
    return w.VBox([image, status, w.HBox(buttons)])
