"""A neural game engine trained on a fixed dataset: DIAMOND's two-stage pipeline (notebook 09).

    python -m diamond_lite.engine record --game Breakout --out runs/engine/Breakout/train --steps 30000
    python -m diamond_lite.engine train --data runs/engine/Breakout/train --out runs/engine/Breakout-course
    python -m diamond_lite.engine train --resume runs/engine/Breakout-course
    python -m diamond_lite.engine evaluate --run runs/engine/Breakout-course --data runs/engine/Breakout/test
    python -m diamond_lite.engine ship --game Breakout --profile course    # the checkpoints notebook 09 loads

DIAMOND's second system (Alonso et al. 2024, Section 6, and the appendix on CS:GO; the ``csgo`` branch of its code)
is the world model alone, as "an interactive neural game engine" trained on recorded play. Four things change from
the Atari agent of notebooks 00-08:

1. **No RL.** No collection and no agent: a dataset recorded once (``record``; or any folder of episodes, such as a
   course run's ``dataset/train`` or the player's recordings) and the world model trained on it alone (``train``).
2. **Two stages.** The dynamics model, notebook 02's ``WorldModel`` unchanged, predicts the next frame at a low
   resolution (32x32 in the course) from the last 4 low-resolution frames and actions. The upsampler
   (``diamond_lite.upsampler``), a second diffusion model, then draws the full-resolution frame (64x64) from it and
   from the previous full-resolution frame. The game's logic is learnt where pixels are few.
3. **Scale.** 4.4M parameters for Atari, 381M for CS:GO: 330M in the dynamics, 51M in the upsampler. The ``paper``
   profile has exactly those sizes (it is meant for a GPU); ``course`` keeps notebook 02's U-Net for the dynamics.
4. **Stochastic sampling for the upsampler only.** The dynamics keeps deterministic Euler (3 steps, as in Atari);
   the upsampler samples with churn (``s_churn`` 10 between sigma 5 and 1, ``s_noise`` 0.9), DIAMOND's setting.

Both stages keep the diffusion and optimisation settings of every model of the course (DIAMOND's Atari ones: offset
noise 0.3, training noise levels ``exp(-0.4 + 1.2 N)``, gradients clipped at 1, one autoregressive training term), in
every profile. DIAMOND's CS:GO models differ there (offset noise 0.1, levels ``exp(-1.2 + 1.2 N)``, clipping at 10,
four autoregressive terms for the dynamics, and noise on the dynamics' context frames, ``noise_previous_obs``); with
them the course's 15-minute dynamics drew neither ball nor paddle (docs/engine.md, "CS:GO's diffusion settings").

``train`` is resumable the way a course run is (``diamond_lite.run_folder``): a checkpoint of every model, optimiser,
counter and random stream after each stretch of updates, the metrics log cut back to it on ``--resume``. Each stage
trains for its own budget of updates (or of minutes), one after the other; with ``--one-stage`` a third model, the
same U-Net as the dynamics but at full resolution, trains for as long as the two stages together: the fair comparison.
A bad ``--data`` folder (missing, empty, frames of another size) is refused with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .data import Collector, Dataset, SegmentSampler
from .player import MAX_DENOISING_STEPS, Player
from .profiles import COURSE_GAME, PROFILES, Profile
from .run_folder import STATE_FORMAT, RunFolder, read_log, write_text_atomic
from .sampler import SamplerConfig
from .unet import UNetConfig
from .upsampler import Upsampler, UpsamplerConfig, downsample, upsampler_config
from .world_model import WorldModel, WorldModelConfig

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "data" / "checkpoints"
STAGES = ("dynamics", "upsampler", "one_stage")
POLICIES = ("tracker", "random")
PIPELINES = ("two-stage", "one-stage")

# -- configuration ---------------------------------------------------------------------------------------------------


@dataclass
class StageTraining:
    """How long one model trains: ``max_updates`` updates, or ``minutes`` of training (0: no limit), whichever ends
    first. The profiles count updates; a time budget is there for a student who has an hour, not a number of updates."""

    minutes: float
    max_updates: int
    batch_size: int


@dataclass
class EngineConfig:
    """The engine of one profile (``engine_config``): its frame size, one configuration per stage (each with its
    sampler), each stage's training budget, and how often a run logs and checkpoints."""

    game: str
    profile: str
    size: int  # the full-resolution frame's side; the dynamics works at size / upsampler.factor
    dynamics: WorldModelConfig
    upsampler: UpsamplerConfig
    one_stage: WorldModelConfig
    training_dynamics: StageTraining
    training_upsampler: StageTraining
    training_one_stage: StageTraining
    train_one_stage: bool = False  # the comparison model (notebook 09, docs/engine.md)
    seed: int = 0
    log_every: int = 50  # updates per line of the metrics log
    checkpoint_every_minutes: float = 5.0  # at most this long between checkpoints (0: after every log line)
    checkpoints_to_keep: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"the frame size must be an integer of at least 8 pixels, got {self.size!r}")
        if self.size % self.upsampler.factor:
            raise ValueError(f"the frame size {self.size} is not a multiple of the upsampling factor {self.upsampler.factor}")

    @property
    def low_size(self) -> int:
        return self.size // self.upsampler.factor

    @property
    def segment_length(self) -> int:
        """The longest training segment of the stages (``n + 1 + num_autoregressive_steps``): the shortest episode
        the dataset must hold."""
        return max(c.num_steps_conditioning + 1 + c.num_autoregressive_steps for c in (self.dynamics, self.upsampler, self.one_stage))

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES if self.train_one_stage else STAGES[:2]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EngineConfig:
        d = dict(d)
        for key in ("dynamics", "one_stage"):
            d[key] = WorldModelConfig.from_dict(d[key])
        d["upsampler"] = UpsamplerConfig.from_dict(d["upsampler"])
        for stage in STAGES:
            d[f"training_{stage}"] = StageTraining(**d[f"training_{stage}"])
        return cls(**d)


def engine_config(profile: str, num_actions: int, *, game: str = COURSE_GAME, size: int | None = None) -> EngineConfig:
    """The engine of each profile; the algorithm is the same in all three.

    * ``paper``: DIAMOND's CS:GO engine's sizes. The dynamics U-Net of ``config/agent/csgo.yaml`` (channels 128-1024,
      attention at the two lowest resolutions, a 2048-wide conditioning vector: 330M parameters), its upsampler (51M)
      with a factor of 5 (32x32 to 160x160 here; 56x30 to 280x150 there), batches of 128 and 32 (DIAMOND's 16 and 4
      times 8 accumulated gradients) and its budget (600 epochs of 400 updates). For a GPU.
    * ``course``: 64x64 frames, dynamics at 32x32 with notebook 02's course U-Net (1.1M parameters), an upsampler of
      0.32M, 2,000 updates each (29 and 21 minutes on one core of a 2-core Xeon without bf16); the one-stage model at 64x64 gets
      1,200, which take as long as the two stages' 4,000 together.
    * ``smoke``: toy sizes and a few updates, for CI.
    """
    p = Profile(profile)
    size = size or p.pick(smoke=64, course=64, paper=160)
    factor = p.pick(smoke=2, course=2, paper=5)
    unet = p.pick(
        smoke=UNetConfig(cond_channels=32, depths=[1, 1, 1], channels=[16, 16, 16], attn_depths=[False, False, False]),
        course=UNetConfig(cond_channels=128, depths=[2, 2, 2, 2], channels=[32, 32, 32, 32]),
        paper=UNetConfig(cond_channels=2048, depths=[2, 2, 2, 2], channels=[128, 256, 512, 1024], attn_depths=[False, False, True, True]),
    )

    def world_model(u: UNetConfig) -> WorldModelConfig:
        # notebook 02's world model; deterministic Euler in 3 steps, as DIAMOND samples its CS:GO dynamics
        # (world_model_env/higher_quality.yaml) and its Atari world model
        return WorldModelConfig(num_actions=num_actions, unet=u, sampler=SamplerConfig(num_steps=3))

    # Budgets in updates, so that a machine busy with other work trains the same models, only later. The course's take
    # 29 and 21 minutes on one core of a 2-core Xeon without bf16 (docs/engine.md); the one-stage model gets as many updates as
    # fit in the two stages' time together at its cost per update (3.2 times the dynamics', 4.3 times the upsampler's,
    # measured on one core: docs/engine.md): the comparison is at equal training compute.
    updates = p.pick(smoke=(4, 4, 8), course=(2_000, 2_000, 1_200), paper=(240_000, 240_000, 240_000))
    return EngineConfig(
        game=game,
        profile=p.name,
        size=size,
        dynamics=world_model(unet),
        upsampler=upsampler_config(p.name, factor),
        one_stage=world_model(dataclasses.replace(unet)),
        training_dynamics=StageTraining(0.0, updates[0], p.pick(smoke=2, course=16, paper=128)),
        training_upsampler=StageTraining(0.0, updates[1], p.pick(smoke=2, course=8, paper=32)),
        training_one_stage=StageTraining(0.0, updates[2], p.pick(smoke=2, course=16, paper=128)),
        log_every=p.pick(smoke=2, course=50, paper=400),
        checkpoint_every_minutes=p.pick(smoke=0.0, course=5.0, paper=30.0),
    )


# -- the dataset -----------------------------------------------------------------------------------------------------


def breakout_play_area(size: int) -> tuple[slice, slice]:
    """Rows and columns of a ``size`` x ``size`` Breakout frame between the bricks and the paddle and between the side
    walls: where the ball flies (measured on 64x64 frames: the bricks end at row 28, the paddle is on rows 57-58)."""
    return slice(round(0.45 * size), round(0.88 * size)), slice(round(0.07 * size), round(0.93 * size))


def breakout_wall(size: int) -> tuple[slice, slice]:
    """Rows and columns of a ``size`` x ``size`` Breakout frame that hold the left half of the wall of bricks (measured
    on 64x64 frames: the bricks fill rows 17-28 between the side walls): what ``memory_scores`` covers. Half, so that
    the engine still sees a wall, one with a gap, as the game draws after many bricks are broken."""
    left, right = round(0.07 * size), round(0.93 * size)
    return slice(round(0.265 * size), round(0.45 * size)), slice(left, (left + right) // 2)


class BallTracker:
    """A scripted Breakout player: it moves the paddle under the ball, serves when no ball is in play, and takes a
    random action on a fraction ``epsilon`` of steps, so that the data shows every action's effect. It keeps the ball
    in play about twice as long as random play and scores six times as much (docs/engine.md): richer data for a world
    model, with no agent trained.

    It reads the frame the way a person does, by brightness and position, at any square size: the ball is the bright
    pixels of the play area (``breakout_play_area``), the paddle the bright pixels of its rows."""

    def __init__(self, action_names: list[str], *, epsilon: float = 0.1, seed: int = 0) -> None:
        if not {"NOOP", "FIRE", "RIGHT", "LEFT"} <= set(action_names):
            raise ValueError(f"the ball tracker plays Breakout (NOOP, FIRE, RIGHT, LEFT); this game's actions are {action_names}")
        self.action = {name: action_names.index(name) for name in ("NOOP", "FIRE", "RIGHT", "LEFT")}
        self.num_actions, self.epsilon = len(action_names), epsilon
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def ball_position(frame: np.ndarray) -> tuple[float, float] | None:
        """(row, column) of the ball in a uint8 frame ``(H, W, 3)``, or None when no ball is in the play area."""
        rows, cols = breakout_play_area(frame.shape[0])
        bright = frame[rows, cols].astype(np.int32).sum(-1) > 150
        if not bright.any():
            return None
        y, x = np.nonzero(bright)
        return rows.start + y.mean(), cols.start + x.mean()

    def __call__(self, frame: np.ndarray) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.num_actions))
        size = frame.shape[0]
        ball = self.ball_position(frame)
        _, cols = breakout_play_area(size)
        paddle = frame[round(0.89 * size) : round(0.92 * size), cols].astype(np.int32).sum(-1) > 150
        if ball is None:
            return self.action["FIRE"] if self.rng.random() < 0.5 else self.action["NOOP"]
        if not paddle.any():
            return self.action["NOOP"]
        ball_x, paddle_x = ball[1], cols.start + np.nonzero(paddle)[1].mean()
        if ball_x > paddle_x + 1:
            return self.action["RIGHT"]
        if ball_x < paddle_x - 1:
            return self.action["LEFT"]
        return self.action["NOOP"]


def make_policy(name: str, env, seed: int):
    """The recording policy ``name``: ``tracker`` (Breakout's scripted player) or ``random``."""
    from .actor_critic import RandomPolicy

    if name == "tracker":
        return BallTracker(env.action_names, seed=seed)
    if name == "random":
        return RandomPolicy(env, seed)
    raise ValueError(f"unknown policy {name!r}; accepted: {', '.join(POLICIES)}")


def record(game: str, out: str | Path, num_steps: int, *, policy: str = "tracker", seed: int = 0, size: int = 64,
           split: str = "train", progress: bool = True) -> Dataset:  # fmt: skip
    """Record ``num_steps`` steps of ``game`` played by ``policy`` into the dataset folder ``out`` (one ``.npz`` per
    episode, ``data.Dataset``), frames of ``size`` x ``size``. A folder that already holds steps is topped up to
    ``num_steps``."""
    from .atari import check_game, make_env

    check_game(game)
    env = make_env(game, split=split, seed=seed, size=size)
    collector = Collector(env, Dataset(out), make_policy(policy, env, seed), seed=seed)
    missing = num_steps - collector.dataset.num_steps
    if missing > 0:
        collector.collect(num_steps=missing, progress=progress)
    return collector.dataset


def check_dataset(path: str | Path, size: int, num_actions: int, min_length: int, factor: int = 2) -> Dataset:
    """The dataset in ``path``, checked for what the engine needs; a ``ValueError`` that says what is wrong and what is
    accepted otherwise: no such folder, no episode in it, no episode of at least ``min_length`` steps (a training
    segment), frames other than ``size`` x ``size`` x 3, or actions outside ``0..num_actions - 1``. ``factor``, the
    upsampling factor, only shapes the advice on another frame size."""
    path = Path(path)
    hint = "record one with `python -m diamond_lite.engine record --out DIR`, or give a folder of episodes (*.npz)"
    if not path.is_dir():
        raise ValueError(f"no dataset at {path}: {'it is a file, not a folder' if path.exists() else 'the folder does not exist'}; {hint}")
    dataset = Dataset(path)
    if len(dataset) == 0:
        raise ValueError(f"the dataset {path} holds no episode (no readable NNNNNN.npz file); {hint}")
    longest = int(dataset.lengths.max())
    if longest < min_length:
        raise ValueError(f"the dataset {path} holds {len(dataset)} episode(s), the longest of {longest} steps; the engine trains on "
                         f"segments of {min_length} steps and needs episodes at least that long")  # fmt: skip
    for episode_id, episode in dataset.episodes.items():
        if episode.obs.shape[1:] != (size, size, 3):
            h, w, c = episode.obs.shape[1:]
            fits = h == w and c == 3 and h % factor == 0
            other = (f"or train with --size {h}" if fits
                     else f"frames of another size must be square, RGB, with sides a multiple of {factor}")  # fmt: skip
            raise ValueError(f"the dataset {path} holds frames of {h}x{w}x{c} ({dataset.path(episode_id).name}); this engine is "
                             f"configured for {size}x{size}x3 frames: record at that size (record --size {size}), {other}")  # fmt: skip
        if len(episode) and (episode.act.min() < 0 or episode.act.max() >= num_actions):
            raise ValueError(f"the dataset {path} holds action {int(episode.act.max())} ({dataset.path(episode_id).name}); "
                             f"the engine's game has {num_actions} actions (0..{num_actions - 1}): is --game right?")  # fmt: skip
    return dataset


def to_low_res(batch: dict[str, Tensor], factor: int) -> dict[str, Tensor]:
    """A batch of segments whose frames are shrunk ``factor`` times (``upsampler.downsample``): the dynamics' data."""
    return {**batch, "obs": downsample(batch["obs"], factor)}


# -- the engines -----------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_context(obs: Tensor, past_act: Tensor, n: int) -> None:
    """An engine starts from ``n`` frames ``(B, n, C, H, W)`` and the ``n - 1`` actions between them ``(B, n - 1)``."""
    if obs.shape[1] != n or past_act.shape[1] != n - 1:
        raise ValueError(f"the engine starts from {n} frames and the {n - 1} actions between them, got "
                         f"{tuple(obs.shape)} and {tuple(past_act.shape)}")


class TwoStageEngine:
    """DIAMOND's CS:GO engine (its ``WorldModelEnv`` with an upsampler): each step, the dynamics predicts the next
    low-resolution frame from the last ``n`` low-resolution frames and actions, and the upsampler draws the
    full-resolution frame from it and the previous full-resolution frame.

    ``reset(obs, past_act)`` starts from ``n`` real full-resolution frames ``(B, n, C, H, W)`` in [-1, 1] and the
    ``n - 1`` actions taken between them; ``step(act)`` returns the next full-resolution frames ``(B, C, H, W)``
    (``low`` keeps the low-resolution ones, ``seconds`` each stage's time for that step). Each stage samples with its
    own configuration: ``dynamics_sampler`` (deterministic Euler) and ``upsampler_sampler`` (churn), changeable live."""

    name = "two-stage"

    def __init__(self, dynamics: WorldModel, upsampler: Upsampler, *, dynamics_sampler: SamplerConfig | None = None,
                 upsampler_sampler: SamplerConfig | None = None, generator: torch.Generator | None = None) -> None:  # fmt: skip
        self.dynamics, self.upsampler, self.generator = dynamics.eval(), upsampler.eval(), generator
        self.dynamics_sampler = dynamics_sampler or dynamics.cfg.sampler
        self.upsampler_sampler = upsampler_sampler or upsampler.cfg.sampler
        self.n, self.factor, self.device = dynamics.n, upsampler.factor, dynamics.device
        self.seconds: dict[str, float] = {}

    def reset(self, obs: Tensor, past_act: Tensor) -> None:
        obs, past_act = obs.to(self.dynamics.device), past_act.to(self.dynamics.device)
        _check_context(obs, past_act, self.n)
        self.low_context, self.high_context = downsample(obs, self.factor), obs[:, -self.upsampler.n :]
        self.past_act = past_act
        self.low = self.low_context[:, -1]

    @torch.no_grad()
    def step(self, act: Tensor) -> Tensor:
        act = torch.cat([self.past_act, act.to(self.past_act.device).reshape(-1, 1)], dim=1)
        device = self.dynamics.device
        started = time.perf_counter()
        low = self.dynamics.predict_next(self.low_context, act, sampler=self.dynamics_sampler, generator=self.generator)
        _sync(device)
        middle = time.perf_counter()
        high = self.upsampler.upsample(low, self.high_context, sampler=self.upsampler_sampler, generator=self.generator)
        _sync(device)
        self.seconds = {"dynamics": middle - started, "upsampler": time.perf_counter() - middle}
        self.low_context = torch.cat([self.low_context[:, 1:], low[:, None]], dim=1)
        self.high_context = torch.cat([self.high_context[:, 1:], high[:, None]], dim=1)
        self.past_act, self.low = act[:, 1:], low
        return high


class OneStageEngine:
    """The same engine in one stage: a world model at full resolution (notebook 08's engine), with the interface of
    :class:`TwoStageEngine` (``reset``, ``step``, ``seconds``), for the comparison."""

    name = "one-stage"

    def __init__(self, world_model: WorldModel, *, sampler: SamplerConfig | None = None, generator: torch.Generator | None = None) -> None:
        self.world_model, self.generator = world_model.eval(), generator
        self.dynamics_sampler = sampler or world_model.cfg.sampler
        self.n, self.device = world_model.n, world_model.device
        self.seconds: dict[str, float] = {}

    def reset(self, obs: Tensor, past_act: Tensor) -> None:
        obs, past_act = obs.to(self.world_model.device), past_act.to(self.world_model.device)
        _check_context(obs, past_act, self.n)
        self.context, self.past_act = obs, past_act

    @torch.no_grad()
    def step(self, act: Tensor) -> Tensor:
        act = torch.cat([self.past_act, act.to(self.past_act.device).reshape(-1, 1)], dim=1)
        started = time.perf_counter()
        frame = self.world_model.predict_next(self.context, act, sampler=self.dynamics_sampler, generator=self.generator)
        _sync(self.world_model.device)
        self.seconds = {"dynamics": time.perf_counter() - started}
        self.context = torch.cat([self.context[:, 1:], frame[:, None]], dim=1)
        self.past_act = act[:, 1:]
        return frame


# -- training --------------------------------------------------------------------------------------------------------


class EngineRun:
    """Training an engine on a fixed dataset, in a run folder (``run_folder.RunFolder``): one stage after another
    (``cfg.stages``), each to its budget, a line in ``metrics.jsonl`` every ``log_every`` updates, a checkpoint at
    most ``checkpoint_every_minutes`` apart and at the end of each stage. ``EngineRun.resume(out)`` goes on from the
    newest checkpoint that loads (models, optimisers, update counts, each stage's seconds, every random stream), with
    the log cut back to it. The run folder numbers its checkpoints by "epoch"; here that is the log line they follow."""

    def __init__(self, cfg: EngineConfig, data: str | Path, out: str | Path, device: str | torch.device = "cpu", *,
                 progress: bool = True) -> None:  # fmt: skip
        from .component import prepare_device

        self.cfg, self.progress, self.data_dir = cfg, progress, Path(data)
        self.device = prepare_device(str(device))
        # the data first: a bad --data leaves no run folder behind
        self.dataset = check_dataset(self.data_dir, cfg.size, cfg.dynamics.num_actions, cfg.segment_length, cfg.upsampler.factor)
        settings = _settings(cfg, self.data_dir)
        _check_same_settings(Path(out), settings)
        self.folder = RunFolder(out)
        self.dir = self.folder.dir
        if not (self.dir / "config.json").exists():
            write_text_atomic(self.dir / "config.json", json.dumps(settings, indent=1) + "\n")
        torch.manual_seed(cfg.seed)
        self.models = {
            "dynamics": WorldModel(cfg.dynamics, self.device, game=cfg.game),
            "upsampler": Upsampler(cfg.upsampler, self.device, game=cfg.game),
            "one_stage": WorldModel(cfg.one_stage, self.device, game=cfg.game),
        }
        self.folder.check_free_space(list(self.models.values()), cfg.checkpoints_to_keep + 1, 0)
        self.samplers = {stage: SegmentSampler(self.dataset, self.models[stage].segment_length, self.training(stage).batch_size,
                                               sample_weights=None, seed=cfg.seed + k)
                         for k, stage in enumerate(STAGES)}  # fmt: skip  (DIAMOND's static dataset: no recency weights)
        self.seconds = {stage: 0.0 for stage in STAGES}  # training time of each stage, kept across resumes
        self.clock = time.monotonic  # what times the updates (a test replaces it)
        # A GPU runs an update after the host has queued it, so the host's clock around one update measures the
        # queueing. There a log line's updates are timed together, once its .item() has waited for all of them.
        self.time_per_line = self.device.type != "cpu"
        self.line = 0  # lines written to the metrics log
        self._saved_line = -1
        self._last_save = time.monotonic()
        if not self.folder.has_checkpoint():
            self.save_checkpoint()

    def training(self, stage: str) -> StageTraining:
        return getattr(self.cfg, f"training_{stage}")

    def inputs(self, stage: str) -> dict[str, Tensor]:
        """One batch of segments for ``stage``: full resolution, shrunk for the dynamics (the upsampler shrinks its own
        copy for its conditioning)."""
        batch = self.samplers[stage].sample().to_torch(self.device)
        return to_low_res(batch, self.cfg.upsampler.factor) if stage == "dynamics" else batch

    def stage_done(self, stage: str) -> bool:
        budget = self.training(stage)
        out_of_time = budget.minutes > 0 and self.seconds[stage] >= 60 * budget.minutes
        return self.models[stage].num_updates >= budget.max_updates or out_of_time

    @property
    def finished(self) -> bool:
        return all(self.stage_done(stage) for stage in self.cfg.stages)

    def run(self, max_updates: int | None = None) -> bool:
        """Train every stage to its budget, or for ``max_updates`` updates in this call (all stages together; the run
        resumes later from there). Returns whether the run is finished."""
        from tqdm.auto import tqdm

        done_here = 0

        def more() -> bool:
            return max_updates is None or done_here < max_updates

        for stage in self.cfg.stages:
            if self.stage_done(stage) or not more():
                continue
            model, budget = self.models[stage], self.training(stage)
            timed = budget.minutes > 0  # a bar in seconds of the time budget, else in updates
            bar = tqdm(total=round(60 * budget.minutes) if timed else budget.max_updates, unit="s" if timed else "update",
                       initial=round(self.seconds[stage]) if timed else model.num_updates, desc=f"train {stage}",
                       disable=not self.progress)  # fmt: skip
            typical = None  # the running mean of one update's time in this stage
            while not self.stage_done(stage) and more():
                losses, terms, chunk_seconds = [], [], 0.0
                tick = self.clock()
                while len(losses) < self.cfg.log_every and not self.stage_done(stage) and more():
                    loss, metrics = model.train_step(self.inputs(stage))
                    losses.append(loss)
                    terms.append(metrics.get("loss_autoregressive", loss))
                    done_here += 1
                    if not self.time_per_line:
                        seconds, typical = self._count_time(stage, self.clock() - tick, 1, typical)
                        chunk_seconds, tick = chunk_seconds + seconds, self.clock()
                        bar.update(round(self.seconds[stage]) - bar.n if timed else 1)
                model.check_finite()
                mean = torch.stack(losses).mean().item()  # one wait for the device per log line
                if self.time_per_line:
                    chunk_seconds, typical = self._count_time(stage, self.clock() - tick, len(losses), typical)
                    bar.update(round(self.seconds[stage]) - bar.n if timed else len(losses))
                self.line += 1
                self.log(f"train_{stage}", updates=model.num_updates, loss=mean, loss_autoregressive=torch.stack(terms).mean().item(),
                         seconds=round(self.seconds[stage], 2), seconds_per_update=round(chunk_seconds / len(losses), 4))  # fmt: skip
                bar.set_postfix(loss=f"{mean:.4f}", updates=model.num_updates)
                if self.stage_done(stage) or time.monotonic() - self._last_save >= 60 * self.cfg.checkpoint_every_minutes:
                    self.save_checkpoint()
            bar.close()
        if self._saved_line != self.line:
            self.save_checkpoint()  # stopped by max_updates between two checkpoints: keep what was done
        return self.finished

    def _count_time(self, stage: str, seconds: float, updates: int, typical: float | None) -> tuple[float, float]:
        """Add ``seconds`` spent on ``updates`` updates to the stage's training time, and return what was added and the
        new running mean of one update. An update that took over 10 times the running mean was paused in the middle
        (a closed laptop, a stopped process): the pause is not training time, and must not eat the stage's budget, so
        it counts as the mean."""
        per_update = seconds / updates
        if typical is not None and per_update > 10 * typical:
            per_update = typical
        typical = per_update if typical is None else 0.95 * typical + 0.05 * per_update
        self.seconds[stage] += per_update * updates
        return per_update * updates, typical

    # -- the log, checkpoints and resuming -----------------------------------------------------------

    def log(self, event: str, **values) -> None:
        self.folder.log({"event": event, "epoch": self.line, "time": round(time.time(), 2), **values}, step=self.line)

    def save_checkpoint(self) -> Path:
        """Every model, optimiser, counter and random stream, written atomically as ``checkpoints/epoch_<line>.pt``."""
        for model in self.models.values():
            model.check_finite()  # never a checkpoint after an update whose loss was not finite
        payload = {
            "format": STATE_FORMAT,
            "engine": self.cfg.to_dict(),
            "epoch": self.line,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: m.optimizer.state_dict() for k, m in self.models.items()},
            "schedulers": {k: m.scheduler.state_dict() for k, m in self.models.items()},
            "num_updates": {k: m.num_updates for k, m in self.models.items()},
            "seconds": dict(self.seconds),
            "rng": {"torch": torch.get_rng_state(),
                    "samplers": {k: json.dumps(s.rng.bit_generator.state) for k, s in self.samplers.items()}},
        }
        path = self.folder.write_checkpoint(payload, self.line, partial=False, keep=self.cfg.checkpoints_to_keep)
        self._last_save, self._saved_line = time.monotonic(), self.line
        return path

    @classmethod
    def resume(cls, out: str | Path, device: str | torch.device = "cpu", *, progress: bool = True) -> EngineRun:
        """The engine run in ``out``, from its newest checkpoint that loads, its log cut back to that checkpoint."""
        config_path = Path(out) / "config.json"
        if not config_path.exists():
            raise ValueError(f"{out} is not an engine run folder (no config.json); start one with train --data DIR --out {out}")
        settings = json.loads(config_path.read_text())
        if "engine" not in settings:
            raise ValueError(f"{out} holds a run of another kind (no engine in its config.json); engine runs are started by "
                             "python -m diamond_lite.engine train --data DIR --out DIR")  # fmt: skip
        cfg = EngineConfig.from_dict(settings["engine"])
        payload, path = RunFolder(out).newest_checkpoint()
        run = cls(cfg, settings["data"], out, device, progress=progress)
        for name, model in run.models.items():
            model.load_state_dict(payload["models"][name])
            model.optimizer.load_state_dict(payload["optimizers"][name])
            model.scheduler.load_state_dict(payload["schedulers"][name])
            model.num_updates = payload["num_updates"][name]
        run.line = run._saved_line = payload["epoch"]
        run.seconds = dict(payload["seconds"])
        torch.set_rng_state(payload["rng"]["torch"])
        for k, s in run.samplers.items():
            s.rng.bit_generator.state = json.loads(payload["rng"]["samplers"][k])
        run.folder.truncate_log(run.line)  # what was logged after the checkpoint runs again
        run.log("resume", from_checkpoint=path.name, num_updates=dict(payload["num_updates"]))
        return run

    def report(self) -> dict:
        """Per stage: updates, seconds, seconds per update (their mean, and the median over the log's lines, which a
        stretch of a busy machine does not move), batch size, parameters, the last loss and the learning curve
        (``[[updates, loss], ...]``)."""
        events = read_log(self.dir) if (self.dir / "metrics.jsonl").exists() else []
        report = {}
        for stage in self.cfg.stages:
            model, rows = self.models[stage], [e for e in events if e["event"] == f"train_{stage}"]
            # the median over the log's lines: the pace of the machine when other work leaves it alone
            median = float(np.median([r["seconds_per_update"] for r in rows])) if rows else None
            report[stage] = {"updates": model.num_updates, "seconds": round(self.seconds[stage], 1),
                             "seconds_per_update": round(self.seconds[stage] / max(1, model.num_updates), 4),
                             "median_seconds_per_update": median,
                             "batch_size": self.training(stage).batch_size, "parameters": model.num_parameters(),
                             "final_loss": rows[-1]["loss"] if rows else None,
                             "curve": [[r["updates"], round(r["loss"], 6)] for r in rows]}  # fmt: skip
        return report


def load_run(out: str | Path, device: str | torch.device = "cpu") -> tuple[EngineConfig, dict]:
    """The configuration of the engine run in ``out`` and the models of its newest checkpoint that loads (evaluation
    mode), its stages only; the run folder is only read."""
    from .run_folder import newest_checkpoint

    path = Path(out) / "config.json"
    if not path.exists() or "engine" not in json.loads(path.read_text()):
        raise ValueError(f"{out} is not an engine run folder (no config.json with an engine); engine runs are started by "
                         "python -m diamond_lite.engine train --data DIR --out DIR")  # fmt: skip
    cfg = EngineConfig.from_dict(json.loads(path.read_text())["engine"])
    payload, _ = newest_checkpoint(out)
    models = {}
    for stage in cfg.stages:
        model = _model_class(stage)(getattr(cfg, stage), device, game=cfg.game)
        model.load_state_dict(payload["models"][stage])
        model.num_updates = payload["num_updates"][stage]
        models[stage] = model.eval()
    return cfg, models


def _settings(cfg: EngineConfig, data: Path) -> dict:
    """What a run's ``config.json`` holds, as JSON reads it back: the data folder and the engine's configuration."""
    return json.loads(json.dumps({"data": str(data.resolve()), "engine": cfg.to_dict()}))


def _check_same_settings(out: Path, settings: dict) -> None:
    """Refuse to go on with a run folder started with other settings, naming what differs."""
    from .component import config_diff

    path = out / "config.json"
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    if saved != settings:
        diff = config_diff(settings["engine"], saved.get("engine", {})) or f"data is {saved.get('data')!r} there, not {settings['data']!r}"
        raise ValueError(f"{out} holds an engine run with other settings ({diff}); continue it with --resume {out}, "
                         "or choose another --out")  # fmt: skip


def plot_curves(report: dict, path: str | Path | None = None):
    """The learning curve of each stage (``EngineRun.report`` or a shipped report's ``stages``), one panel each; saved
    to ``path`` when given (the command line), else shown (a notebook)."""
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if s in report and report[s]["curve"]]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(4 * max(1, len(stages)), 2.8), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        x, y = np.array(report[stage]["curve"]).T
        ax.plot(x, y, color="C0")
        ax.set_yscale("log")
        r = report[stage]
        minutes = r["updates"] * (r.get("median_seconds_per_update") or r["seconds_per_update"]) / 60
        ax.set_title(f"{stage}: {r['updates']:,} updates, {minutes:.0f} min", fontsize=9)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("denoising loss")
    fig.tight_layout()
    if path is None:
        plt.show()
    else:
        fig.savefig(path, dpi=80)
        plt.close(fig)


# -- measuring: quality, sharpness, speed ----------------------------------------------------------------------------


def held_out_segments(dataset: Dataset, length: int, count: int, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``count`` segments of ``length`` steps lying wholly inside episodes of ``dataset`` (no padding): frames
    ``(count, length, C, H, W)`` in [-1, 1] and actions ``(count, length)``. The same ``seed`` gives the same ones."""
    sampler = SegmentSampler(dataset, length, max(count, 16), sample_weights=None, seed=seed)
    obs, act, misses = [], [], 0
    while sum(len(o) for o in obs) < count:
        batch = sampler.sample().to_torch()
        keep = batch["mask"].all(1)
        if not keep.any():
            misses += 1
            if misses == 100:
                raise ValueError(f"the dataset {dataset.directory} has hardly any episode of {length} steps or more")
            continue
        obs.append(batch["obs"][keep])
        act.append(batch["act"][keep])
    return torch.cat(obs)[:count], torch.cat(act)[:count]


def high_frequency_energy(frames: Tensor) -> Tensor:
    """The mean squared discrete Laplacian of each frame ``(..., C, H, W)``: how much of it is edges and fine detail.
    A blurred frame has less of it than the real one; its ratio to the real frames' is the sharpness number of
    notebook 09 (1: as sharp as the game)."""
    x = frames.float()
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return lap.pow(2).mean((-3, -2, -1))


@torch.no_grad()
def dream_scores(engine, obs: Tensor, act: Tensor, *, batch_size: int = 32, seed: int = 0, progress: bool = False) -> dict:
    """Score ``engine`` (either kind) on real segments ``obs`` ``(N, n + T, C, H, W)`` and ``act``: from the first ``n``
    frames it dreams ``T`` steps under the real actions, feeding its own frames back. Per step ahead (1..T): the mean
    squared error against the real frames (``mse``), the sharpness ratio (``sharpness``: high-frequency energy of the
    dream over the real frames'), and for a two-stage engine the error of its low-resolution frames against the real
    frames shrunk (``mse_low``). ``copy_last_mse`` (and ``copy_last_mse_low``) is the error of freezing the last real frame,
    the bar to clear."""
    from tqdm.auto import tqdm

    n, horizon = engine.n, obs.shape[1] - engine.n
    sq, sq_low, hf, hf_real, sq_copy, sq_copy_low = (torch.zeros(horizon) for _ in range(6))
    engine.generator = torch.Generator(engine.device).manual_seed(seed)
    for i in tqdm(range(0, len(obs), batch_size), desc=f"dreams ({engine.name})", disable=not progress, leave=False):
        o, a = obs[i : i + batch_size], act[i : i + batch_size]
        engine.reset(o[:, :n], a[:, : n - 1])
        for t in range(horizon):
            frame = engine.step(a[:, n - 1 + t]).cpu()
            real = o[:, n + t]
            sq[t] += (frame - real).pow(2).mean((1, 2, 3)).sum()
            hf[t] += high_frequency_energy(frame).sum()
            hf_real[t] += high_frequency_energy(real).sum()
            sq_copy[t] += (o[:, n - 1] - real).pow(2).mean((1, 2, 3)).sum()
            if hasattr(engine, "low"):
                real_low = downsample(real, engine.factor)
                sq_low[t] += (engine.low.cpu() - real_low).pow(2).mean((1, 2, 3)).sum()
                sq_copy_low[t] += (downsample(o[:, n - 1], engine.factor) - real_low).pow(2).mean((1, 2, 3)).sum()
    scores = {"mse": (sq / len(obs)).tolist(), "sharpness": (hf / hf_real).tolist(), "copy_last_mse": (sq_copy / len(obs)).tolist(),
              "starts": len(obs)}  # fmt: skip
    if hasattr(engine, "low"):
        scores["mse_low"], scores["copy_last_mse_low"] = (sq_low / len(obs)).tolist(), (sq_copy_low / len(obs)).tolist()
    return scores


def cover(frames: Tensor, rows: slice, cols: slice) -> Tensor:
    """``frames`` ``(..., C, H, W)`` with the rectangle ``rows`` x ``cols`` painted black, all else as it was."""
    out = frames.clone()
    out[..., rows, cols] = -1
    return out


@torch.no_grad()
def memory_scores(engine, obs: Tensor, act: Tensor, rows: slice, cols: slice, *, batch_size: int = 128, seed: int = 0) -> dict:
    """What frame stacking forgets (Alonso et al. 2024, the section on limitations: the model sees only its last ``n``
    frames). On real segments ``obs`` ``(N, n + T, C, H, W)`` the engine dreams ``T`` steps under the real actions twice:
    from the context as recorded, and from the same context with the rectangle ``rows`` x ``cols`` covered (painted
    black in all ``n`` frames, as if something had passed in front of it). The real game goes on unchanged. Per
    context and step ahead: the mean squared error inside the rectangle (``mse_covered``) and outside it
    (``mse_rest``) against the real frames, and the rectangle's mean brightness (``brightness``: 0 black, 1 white),
    beside the real frames' (``real_brightness``). An engine with a memory beyond its frames would bring back what was
    covered; a frame-stacked one cannot tell covered from gone. Dreams run ``batch_size`` starts at a time (the
    course's in one batch; the paper's sizes need several on a GPU)."""
    n, horizon = engine.n, obs.shape[1] - engine.n
    inside = torch.zeros(obs.shape[-2:], dtype=torch.bool)
    inside[rows, cols] = True

    def brightness(frames: Tensor) -> Tensor:  # (B, T, C, H, W) -> per step, summed over the batch
        return ((frames[..., rows, cols] + 1) / 2).mean((2, 3, 4)).sum(0)

    scores = {"real_brightness": (brightness(obs[:, n:]) / len(obs)).tolist(), "starts": len(obs),
              "rows": [rows.start, rows.stop], "cols": [cols.start, cols.stop]}  # fmt: skip
    for name in ("recorded", "covered"):
        sq_inside, sq_rest, light = torch.zeros(horizon), torch.zeros(horizon), torch.zeros(horizon)
        engine.generator = torch.Generator(engine.device).manual_seed(seed)
        for i in range(0, len(obs), batch_size):
            o, a = obs[i : i + batch_size], act[i : i + batch_size]
            engine.reset(cover(o[:, :n], rows, cols) if name == "covered" else o[:, :n], a[:, : n - 1])
            dream = torch.stack([engine.step(a[:, n - 1 + t]).cpu() for t in range(horizon)], 1)
            sq = (dream - o[:, n:]).pow(2).mean(2)  # (B, T, H, W)
            sq_inside += sq[..., inside].mean(2).sum(0)
            sq_rest += sq[..., ~inside].mean(2).sum(0)
            light += brightness(dream)
        scores[name] = {"mse_covered": (sq_inside / len(obs)).tolist(), "mse_rest": (sq_rest / len(obs)).tolist(),
                        "brightness": (light / len(obs)).tolist()}  # fmt: skip
    return scores


@torch.no_grad()
def upsampling_scores(upsampler: Upsampler, obs: Tensor, samplers: dict[str, SamplerConfig], *, batch_size: int = 64,
                      seed: int = 0) -> dict:  # fmt: skip
    """The upsampler alone, on real frames: for each real frame ``obs[:, k]`` (k >= 1) it draws the full-resolution
    frame from that frame shrunk and the real frame before it, once per sampler configuration of ``samplers``; and
    the bicubic upsampling alone, the conditioning it starts from. Per configuration: the mean squared error against
    the real frames (``mse``) and the sharpness ratio (``sharpness``, 1 = as sharp as the real frames)."""
    from .upsampler import upsample_bicubic

    prev, real = obs[:, :-1].flatten(0, 1)[:, None], obs[:, 1:].flatten(0, 1)
    low = downsample(real, upsampler.factor)
    real_hf = high_frequency_energy(real).mean()
    scores = {}

    def score(frames: Tensor) -> dict:
        return {"mse": (frames - real).pow(2).mean().item(), "sharpness": (high_frequency_energy(frames).mean() / real_hf).item()}

    scores["bicubic"] = score(upsample_bicubic(low, upsampler.factor).clamp(-1, 1))
    for name, cfg in samplers.items():
        generator = torch.Generator(upsampler.device).manual_seed(seed)
        drawn = torch.cat([upsampler.upsample(low[i : i + batch_size], prev[i : i + batch_size], sampler=cfg, generator=generator).cpu()
                           for i in range(0, len(real), batch_size)])  # fmt: skip
        scores[name] = score(drawn)
    scores["frames"] = len(real)
    return scores


@torch.no_grad()
def play_speed(engine, obs: Tensor, act: Tensor, *, frames: int = 20) -> dict:
    """Seconds per frame of ``engine`` when one person plays (batch 1): the median over ``frames`` steps after a first
    one (which warms caches), per stage, and frames per second."""
    n = engine.n
    engine.reset(obs[:1, :n], act[:1, : n - 1])
    engine.step(act[:1, n - 1])
    times: dict[str, list[float]] = {}
    for t in range(frames):
        engine.step(act[:1, (n - 1 + t) % act.shape[1]])
        for stage, seconds in engine.seconds.items():
            times.setdefault(stage, []).append(seconds)
    per_stage = {stage: float(np.median(v)) for stage, v in times.items()}
    total = float(np.median(np.sum([times[s] for s in times], axis=0)))
    return {"seconds_per_frame": total, "fps": 1 / total, **{f"{stage}_seconds": s for stage, s in per_stage.items()}}


@torch.no_grad()
def denoiser_cost(world_model: WorldModel, size: int, batch_size: int, *, repeats: int = 5) -> float:
    """Seconds of one denoiser evaluation of ``world_model`` on frames of ``size`` x ``size`` at ``batch_size`` (the
    median of ``repeats``, after one to warm up): what one denoising step costs at each resolution."""
    n, c = world_model.n, world_model.cfg.img_channels
    obs = torch.zeros(batch_size, n, c, size, size, device=world_model.device)
    act = torch.zeros(batch_size, n, dtype=torch.long, device=world_model.device)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        world_model.predict_next(obs, act, num_steps=1)
        _sync(world_model.device)
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def engines_of(models: dict, *, seed: int = 0) -> dict:
    """The engines notebook 09 compares, from trained ``models`` (``load_engine``): ``two-stage`` and, when there is
    the comparison model, ``one-stage``."""
    generator = torch.Generator(models["dynamics"].device).manual_seed(seed)
    engines = {"two-stage": TwoStageEngine(models["dynamics"], models["upsampler"], generator=generator)}
    if "one_stage" in models:
        engines["one-stage"] = OneStageEngine(models["one_stage"], generator=generator)
    return engines


def evaluate(models: dict, test: Dataset, profile: str, *, seed: int = 0, progress: bool = True) -> dict:
    """Everything docs/engine.md reports about an engine, on held-out episodes ``test``: quality 1 and 10 steps ahead
    (two-stage, two-stage without churn, dynamics with churn, one-stage), the upsampler alone with and without churn,
    play speed per stage, the cost of one denoising step at each resolution, and for Breakout what each engine forgets
    of a wall covered for its four context frames (``memory_scores``)."""
    p = Profile(profile)
    horizon, starts = p.pick(smoke=3, course=10, paper=10), p.pick(smoke=4, course=96, paper=512)
    dynamics, upsampler = models["dynamics"], models["upsampler"]
    obs, act = held_out_segments(test, dynamics.n + horizon, starts, seed=seed)
    base = engines_of(models, seed=seed)
    no_churn = dataclasses.replace(upsampler.cfg.sampler, s_churn=0.0)
    # churn at every one of the dynamics' levels (its range, 0.002 to 5, lies mostly below the upsampler's s_tmin of 1)
    churn = upsampler.cfg.sampler
    churned_dynamics = dataclasses.replace(dynamics.cfg.sampler, s_churn=churn.s_churn, s_noise=churn.s_noise)
    variants = {
        **base,
        "two-stage, upsampler without churn": TwoStageEngine(dynamics, upsampler, upsampler_sampler=no_churn),
        "two-stage, dynamics with churn": TwoStageEngine(dynamics, upsampler, dynamics_sampler=churned_dynamics),
    }
    quality = {name: dream_scores(engine, obs, act, seed=seed, progress=progress) for name, engine in variants.items()}
    frames = held_out_segments(test, 2, p.pick(smoke=8, course=512, paper=2048), seed=seed + 1)[0]
    upsampling = upsampling_scores(upsampler, frames, {"churn": upsampler.cfg.sampler, "no churn": no_churn}, seed=seed)
    speed = {name: play_speed(engine, obs, act, frames=p.pick(smoke=3, course=30, paper=100)) for name, engine in base.items()}
    size = obs.shape[-1]  # the dynamics' own U-Net at its resolution and at the full one
    cost = {f"{s}x{s}, batch {b}": denoiser_cost(dynamics, s, b) for s in (size // upsampler.factor, size) for b in (1, 16)}
    # the memory probe covers part of Breakout's wall; other games have no region chosen for it
    memory = ({name: memory_scores(engine, obs, act, *breakout_wall(size), seed=seed) for name, engine in base.items()}
              if dynamics.game == "Breakout" else None)  # fmt: skip
    return {"quality": quality, "upsampling": upsampling, "speed": speed, "denoiser_step_seconds": cost, "memory": memory,
            "settings": {"horizon": horizon, "starts": starts, "dynamics_sampler": asdict(dynamics.cfg.sampler),
                         "upsampler_sampler": asdict(upsampler.cfg.sampler), "threads": torch.get_num_threads()}}  # fmt: skip


# -- playing: the player of notebook 08 drives the engine ------------------------------------------------------------


class EnginePlayer(Player):
    """Notebook 08's ``player.Player`` with an engine for its world: the same environments (``world model`` is the
    engine; ``real test`` and ``real train`` the game), the same controllers (``human``, or ``policy``: the scripted
    Breakout player, or any ``policy(frame) -> action``), the same recording; only how an imagined step is made
    differs (one engine step, no reward/end model: the engine only draws).

    ``pipeline`` picks the engine the world model runs (``two-stage`` or ``one-stage``); ``num_denoising_steps`` is
    the dynamics' steps and ``upsampling_steps`` the upsampler's, both changeable while playing. ``status()`` shows
    the frames per second of the last step and each stage's share. An imagined episode starts from ``n`` real frames
    of ``replay`` and lasts ``horizon`` steps."""

    def __init__(self, engines: dict, replay: Dataset, game: str, *, policy=None, horizon: int = 200,
                 record_dir: str | Path | None = None, seed: int = 0) -> None:  # fmt: skip
        self.engines, self.pipeline = engines, next(iter(engines))
        self._set_up(replay, game, horizon=horizon, record_dir=record_dir, seed=seed, size=replay[replay.ids[0]].obs.shape[1])
        if policy is None:  # the scripted player, without its random actions; a random one in other games
            from .actor_critic import RandomPolicy

            tracks = {"NOOP", "FIRE", "RIGHT", "LEFT"} <= set(self.action_names)
            policy = BallTracker(self.action_names, epsilon=0.0, seed=seed) if tracks else RandomPolicy(self.real_envs["real test"], seed)
        self.policy = policy
        self._starts = SegmentSampler(replay, self.engine.n, 1, sample_weights=None, seed=seed)
        self.stage_seconds = {}  # each stage's share of the last imagined step
        self.reset()

    @property
    def engine(self):
        return self.engines[self.pipeline]

    @property
    def num_denoising_steps(self) -> int:
        return self.engine.dynamics_sampler.num_steps

    @property
    def upsampling_steps(self) -> int | None:
        return self.engine.upsampler_sampler.num_steps if hasattr(self.engine, "upsampler_sampler") else None

    # -- the engine's half of Player.reset and Player.act ------------------------------------------

    def _world_reset(self) -> np.ndarray:
        from .viz import to_image

        n = self.engine.n
        while True:  # a start wholly inside an episode
            segment = self._starts.sample()
            if segment.mask.all():
                break
        batch = segment.to_torch()
        self.engine.reset(batch["obs"][:, :n], batch["act"][:, : n - 1])
        return to_image(segment.obs[0, -1])

    def _world_step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        from .viz import to_image

        frame = to_image(self.engine.step(torch.tensor([action]))[0])
        self.stage_seconds = dict(self.engine.seconds)
        return frame, 0.0, False, self.t + 1 >= self.horizon  # no reward/end model: the engine only draws

    # -- the controls the engine adds --------------------------------------------------------------

    def set_pipeline(self, name: str) -> None:
        """Which engine the world model runs (a new episode starts)."""
        if name not in self.engines:
            raise ValueError(f"unknown engine {name!r}; accepted: {', '.join(self.engines)}")
        self.pipeline = name
        if self.environment == "world model":
            self.reset()

    def change_denoising_steps(self, delta: int) -> None:
        """The dynamics' denoising steps (1 to 10), in every engine."""
        for engine in self.engines.values():
            steps = min(MAX_DENOISING_STEPS, max(1, engine.dynamics_sampler.num_steps + delta))
            engine.dynamics_sampler = dataclasses.replace(engine.dynamics_sampler, num_steps=steps)

    def change_upsampling_steps(self, delta: int) -> None:
        """The upsampler's denoising steps (1 to 10)."""
        for engine in self.engines.values():
            if hasattr(engine, "upsampler_sampler"):
                steps = min(MAX_DENOISING_STEPS, max(1, engine.upsampler_sampler.num_steps + delta))
                engine.upsampler_sampler = dataclasses.replace(engine.upsampler_sampler, num_steps=steps)

    @property
    def dataset_name(self) -> str:
        """Recordings go to ``<engine or environment>-<controller>/``, datasets the engine can train on (``--data``)."""
        where = self.pipeline if self.environment == "world model" else self.environment.replace(" ", "_")
        return f"{where}-{self.controller}"

    def status(self) -> str:
        where = f"{self.pipeline} engine" if self.environment == "world model" else self.environment
        speed = ""
        if self.step_seconds > 0:
            shares = self.stage_seconds.items() if self.environment == "world model" else ()
            parts = " + ".join(f"{stage} {1000 * s:.0f} ms" for stage, s in shares)
            speed = f" · {1 / self.step_seconds:.1f} FPS" + (f" ({parts})" if parts else "")
        steps = ""
        if self.environment == "world model":
            steps = f" · {self.num_denoising_steps} dynamics steps"
            steps += f", {self.upsampling_steps} upsampling steps" if self.upsampling_steps else ""
        return (f"{where} · {self.controller}{' · paused' if self.paused else ''} · t={self.t}{speed}{steps}"
                + (" · episode over (next step restarts)" if self.done else ""))  # fmt: skip


def engine_widget(player: EnginePlayer, **kwargs):
    """Notebook 08's player widget (``player.player_widget``) over an ``EnginePlayer``, with a switch between the two
    engines and the upsampler's steps."""
    import ipywidgets as w

    from .player import player_widget

    box = player_widget(player, **kwargs)
    pipeline = w.ToggleButtons(options=list(player.engines), value=player.pipeline, description="engine")
    pipeline.observe(lambda change: (player.set_pipeline(change["new"]), box.refresh()), names="value")

    def control(description, delta):
        button = w.Button(description=description, layout=w.Layout(width="auto"))
        button.on_click(lambda _: (player.change_upsampling_steps(delta), box.refresh()))
        return button

    widget = w.VBox([w.HBox([pipeline, control("upsampling −", -1), control("upsampling +", 1)]), box])
    widget.refresh = box.refresh
    return widget


# -- shipped checkpoints ---------------------------------------------------------------------------------------------


def checkpoint_path(game: str, profile: str, stage: str) -> Path:
    return CHECKPOINTS / f"{game}_engine_{stage}_{profile}.pt"


def report_path(game: str, profile: str) -> Path:
    return CHECKPOINTS / f"{game}_engine_{profile}.json"


def _model_class(stage: str):
    return Upsampler if stage == "upsampler" else WorldModel


def load_engine(cfg: EngineConfig, data: Dataset | None = None, *, updates: int = 0, stages=STAGES) -> dict:
    """The models of ``stages`` that ``ship`` trained for ``cfg``'s game and profile (``data/checkpoints/``), checked
    against ``cfg``; where one is missing, a model of ``cfg`` trained for ``updates`` quick updates on ``data`` stands
    in: enough to run notebook 09, not to reproduce its numbers (it says which). Evaluation mode."""
    from tqdm.auto import tqdm

    models = {}
    for stage in stages:
        path, cls, model_cfg = checkpoint_path(cfg.game, cfg.profile, stage), _model_class(stage), getattr(cfg, stage)
        if path.exists():
            models[stage] = cls.load(path, game=cfg.game, config=model_cfg).eval()
            print(f"loaded {path.name}: {models[stage].num_updates:,} updates")
            continue
        torch.manual_seed(cfg.seed)
        model = cls(model_cfg, game=cfg.game)
        if updates and data is not None:
            batch_size = getattr(cfg, f"training_{stage}").batch_size
            sampler = SegmentSampler(data, model.segment_length, batch_size, sample_weights=None, seed=cfg.seed)
            for _ in tqdm(range(updates), desc=f"no {path.name}: a quick {stage}"):
                batch = sampler.sample().to_torch(model.device)
                model.train_step(to_low_res(batch, cfg.upsampler.factor) if stage == "dynamics" else batch)
        print(f"no {path.name}: the {stage} model trained for {model.num_updates} quick updates stands in")
        models[stage] = model.eval()
    return models


def ship(game: str = COURSE_GAME, profile: str = "course", *, work_dir: str | Path = ROOT / "runs" / "engine",
         train_steps: int | None = None, test_steps: int | None = None, device: str = "auto", progress: bool = True) -> dict:  # fmt: skip
    """Make the engine checkpoints notebook 09 loads, in one go: record the data (the scripted player, train and
    held-out), train the three models in a run folder (resumable: run it again after a kill), write them in float16 to
    ``data/checkpoints/<game>_engine_<stage>_<profile>.pt``, then load them back and measure them (``evaluate``) into the
    JSON report beside them. Each part already done is skipped: with the checkpoints and their report shipped and no
    run folder, it measures the shipped models again and keeps the report's record of their training (``stages``, and
    ``trained``: its date and machine). To train anew, delete the checkpoints and the report first."""
    from .atari import make_env
    from .bench import machine

    p = Profile(profile)
    work_dir = Path(work_dir)
    train_steps = train_steps or p.pick(smoke=300, course=30_000, paper=100_000)
    test_steps = test_steps or p.pick(smoke=200, course=3_000, paper=10_000)
    size = engine_config(p.name, 1, game=game).size
    train = record(game, work_dir / game / f"train_{size}", train_steps, seed=0, size=size, progress=progress)
    test = record(game, work_dir / game / f"test_{size}", test_steps, seed=1, size=size, progress=progress)
    cfg = engine_config(p.name, make_env(game).action_space.n, game=game)
    cfg.train_one_stage = True
    run_dir = work_dir / f"{game}-{p.name}"
    shipped = all(checkpoint_path(game, p.name, stage).exists() for stage in STAGES)
    old = report_path(game, p.name)
    if shipped and not (run_dir / "config.json").exists() and old.exists():
        # the models are shipped and their run folder is gone: measure them again, keep the record of their training
        previous = json.loads(old.read_text())
        stages, trained = previous["stages"], {"date": previous["date"], "machine": previous["machine"], **previous.get("trained", {})}
    else:
        if (run_dir / "config.json").exists():
            run = EngineRun.resume(run_dir, device, progress=progress)
        else:
            run = EngineRun(cfg, train.directory, run_dir, device, progress=progress)
        run.run()
        for stage, model in run.models.items():
            model.save(checkpoint_path(game, p.name, stage), half=True)  # float16 weights: a few MB each
        stages, trained = run.report(), {"date": time.strftime("%Y-%m-%d"), "machine": machine()}
        plot_curves(stages, run.dir / "curves.png")
    models = load_engine(cfg)
    report = {"game": game, "profile": p.name, "command": f"python -m diamond_lite.engine ship --game {game} --profile {p.name}",
              "date": time.strftime("%Y-%m-%d"), "trained": trained,
              "machine": machine(), "data": {"policy": "tracker", "train": _data_summary(train), "test": _data_summary(test)},
              "stages": stages, **evaluate(models, test, p.name, progress=progress)}  # fmt: skip
    write_text_atomic(report_path(game, p.name), json.dumps(report, indent=1) + "\n")
    return report


def _data_summary(dataset: Dataset) -> dict:
    stats = dataset.statistics()
    directory = Path(dataset.directory).resolve()
    directory = directory.relative_to(ROOT) if directory.is_relative_to(ROOT) else directory  # the report travels with the repository
    return {"directory": str(directory), "episodes": stats["episodes"], "steps": stats["steps"],
            "return_mean": round(stats["return_mean"], 2), "episode_length_mean": round(stats["episode_length_mean"], 1)}  # fmt: skip


# -- command line ----------------------------------------------------------------------------------------------------


def _num_actions(game: str) -> int:
    from .atari import check_game, make_env

    return int(make_env(check_game(game)).action_space.n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diamond_lite.engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="record play into a dataset folder")
    rec.add_argument("--game", default=COURSE_GAME)
    rec.add_argument("--out", type=Path, required=True, help="the dataset folder (created, or topped up)")
    rec.add_argument("--steps", type=int, required=True)
    rec.add_argument("--policy", default="tracker", help=f"one of {', '.join(POLICIES)} (tracker: Breakout's scripted player)")
    rec.add_argument("--size", type=int, default=64, help="frame side in pixels")
    rec.add_argument("--seed", type=int, default=0)
    tr = commands.add_parser("train", help="train an engine on a dataset folder (resumable)")
    tr.add_argument("--data", type=Path, help="a folder of episodes (NNNNNN.npz), e.g. one made by record")
    tr.add_argument("--out", type=Path, help="the run folder; run the same command again to continue it")
    tr.add_argument("--resume", type=Path, metavar="DIR", help="continue the engine run in DIR from its last checkpoint")
    tr.add_argument("--game", default=COURSE_GAME, help="the game the data was recorded from (its number of actions)")
    tr.add_argument("--profile", default="course", help=f"one of {', '.join(PROFILES)}")
    tr.add_argument("--size", type=int, default=None, help="the full-resolution frame side (default: the profile's, 64 in course)")
    tr.add_argument("--one-stage", action="store_true", help="also train the one-stage model, for the two stages' time together")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    tr.add_argument("--max-updates", type=int, default=None, help="stop after this many updates in this call (resume later)")
    ev = commands.add_parser("evaluate", help="measure a trained engine on held-out episodes")
    ev.add_argument("--run", type=Path, required=True, help="an engine run folder (its newest checkpoint)")
    ev.add_argument("--data", type=Path, required=True, help="held-out episodes, frames of the run's size")
    ev.add_argument("--json", type=Path, default=None, help="also write the scores here")
    sh = commands.add_parser("ship", help="record, train, measure and write the checkpoints notebook 09 loads")
    sh.add_argument("--game", default=COURSE_GAME)
    sh.add_argument("--profile", default="course", help=f"one of {', '.join(PROFILES)}")
    sh.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from . import memory

    memory.keep_freed_memory()  # freed memory stays in the process: faster steps on a CPU (diamond_lite.memory)
    try:
        if args.command == "record":
            if args.steps < 1:
                raise ValueError(f"--steps must be >= 1, got {args.steps}")
            dataset = record(args.game, args.out, args.steps, policy=args.policy, seed=args.seed, size=args.size)
            print(json.dumps(_data_summary(dataset), indent=1))
        elif args.command == "train":
            run = _train_run(args)
            finished = run.run(max_updates=args.max_updates)
            report = run.report()
            plot_curves(report, run.dir / "curves.png")
            summary = {stage: {k: v for k, v in r.items() if k != "curve"} for stage, r in report.items()}
            print(json.dumps({"finished": finished, **summary}, indent=1))
        elif args.command == "evaluate":
            cfg, models = load_run(args.run)
            test = check_dataset(args.data, cfg.size, cfg.dynamics.num_actions, cfg.dynamics.num_steps_conditioning + 10)
            scores = evaluate(models, test, cfg.profile)
            if args.json:
                write_text_atomic(args.json, json.dumps(scores, indent=1) + "\n")
            print(json.dumps(scores, indent=1))
        else:
            report = ship(args.game, args.profile, device=args.device)
            print(json.dumps({k: v for k, v in report.items() if k != "stages"}, indent=1))
    except (ValueError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _train_run(args) -> EngineRun:
    """The run ``train`` continues or starts: ``--resume DIR``, the same command again on its ``--out``, or a new one."""
    if args.resume:
        given = [name for name, value in (("--data", args.data), ("--out", args.out), ("--one-stage", args.one_stage),
                                          ("--size", args.size)) if value]  # fmt: skip
        if given:
            raise ValueError(f"--resume continues a run with its own settings; {', '.join(given)} cannot change them "
                             "(start a new --out for other settings)")  # fmt: skip
        return EngineRun.resume(args.resume, args.device)
    if not args.data or not args.out:
        raise ValueError("train needs --data DIR and --out DIR (or --resume DIR)")
    Profile(args.profile)  # an unknown profile is named before the game's emulator starts
    cfg = engine_config(args.profile, _num_actions(args.game), game=args.game, size=args.size)
    cfg.train_one_stage, cfg.seed = args.one_stage, args.seed
    if (args.out / "config.json").exists():
        check_dataset(args.data, cfg.size, cfg.dynamics.num_actions, cfg.segment_length, cfg.upsampler.factor)
        _check_same_settings(args.out, _settings(cfg, args.data))
        print(f"continuing the engine run in {args.out} from its last checkpoint", file=sys.stderr)
        return EngineRun.resume(args.out, args.device)
    return EngineRun(cfg, args.data, args.out, args.device)


if __name__ == "__main__":
    sys.exit(main())
