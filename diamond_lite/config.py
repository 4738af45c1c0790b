"""A run's configuration: DIAMOND's ``config/trainer.yaml`` and ``config/agent/default.yaml`` as small dataclasses,
the three profiles that fill them (``run_config``), and ``--set key=value`` overrides (``apply_overrides``).

``paper`` is DIAMOND's configuration unchanged (``data/diamond_hyperparameters.json`` is the table a test compares it
with). ``course`` and ``smoke`` change sizes and budgets, never the algorithm.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field

from .actor_critic import ActorCriticConfig, actor_critic_config
from .profiles import Profile
from .rew_end import HORIZON, RewEndConfig, rew_end_config
from .world_model import WorldModelConfig, world_model_config

PRECISIONS = ("auto", "fp32", "bf16")

# The Freeway trick. In Freeway a point needs a long run of mostly UP moves; a policy sampled at temperature 1 from
# near-uniform logits wanders and rarely scores, so the data hardly ever shows a reward. DIAMOND follows IRIS here
# (Micheli et al. 2023, Appendix; DIAMOND issue #34, where its authors confirm the trick is lowering the policy's
# sampling temperature): on Freeway only, real data is collected at a low temperature, so a slight preference for
# UP becomes a consistent one. We could not read the appendix's value from here; 0.01 is our choice (docs/results.md, "The Freeway trick").
FREEWAY_TEMPERATURE = 0.01


@dataclass
class ComponentTraining:
    """How much one model trains (DIAMOND ``config/trainer.yaml``, ``<model>.training``)."""

    steps_first_epoch: int
    steps_per_epoch: int = 400
    batch_size: int = 32
    sample_weights: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.1, 0.7])


@dataclass
class CollectionConfig:
    """Real-environment budgets (DIAMOND ``collection``): 100k agent steps, 100 per epoch."""

    num_steps_total: int = 100_000
    steps_per_epoch: int = 100
    first_epoch_min: int = 5_000
    first_epoch_max: int = 10_000
    first_epoch_threshold_rew: int = 10
    epsilon: float = 0.01
    test_epsilon: float = 0.0
    test_episodes: int = 4
    final_test_episodes: int = 100
    test_max_steps: int = 0  # 0: no cap but the game's own 108k-frame limit (the paper)
    # The policy's sampling temperature when collecting real data: 1 except on Freeway (FREEWAY_TEMPERATURE)
    temperature: float = 1.0


@dataclass
class RunConfig:
    """Everything a run depends on. ``run_config(game, profile)`` fills it; ``--set`` overrides any field."""

    game: str
    profile: str
    world_model: WorldModelConfig
    rew_end_model: RewEndConfig
    actor_critic: ActorCriticConfig
    training_world_model: ComponentTraining
    training_rew_end_model: ComponentTraining
    training_actor_critic: ComponentTraining
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    seed: int = 0
    model_free: bool = False
    horizon: int = HORIZON
    num_denoising_steps: int = 3
    num_final_epochs: int = 50
    evaluation_every: int = 10
    checkpoints_to_keep: int = 3
    # Arithmetic of the three models. "auto": DIAMOND's fp32 with TF32 matrix products on a GPU; on a CPU, bf16
    # autocast where the CPU computes bf16 natively (2.8x faster train steps there, docs/performance.md), else fp32.
    # "bf16": bf16 autocast on any device; "fp32": no autocast (TF32 products on a GPU, as DIAMOND's trainer sets).
    precision: str = "auto"
    # torch.compile the denoiser, for its train steps and for imagination (diamond_lite.speedups). Measured on 2-core
    # CPUs (docs/performance.md): at the paper size on an AMX Xeon the train step 1.12x and the actor-critic step 1.19x
    # faster, after 79 + 34 s of compiling; at the course size no faster. Off in every profile, since a notebook or a
    # short run would spend minutes compiling and no GPU has measured it; `--set compile=True` for a long run
    compile: bool = False
    # Inside an epoch, a checkpoint at most this often (a whole one is written after every epoch anyway): the first
    # epoch trains each model for its long first budget (half an hour in the course profile on a 2-core CPU, 25,000
    # updates in the paper's), which a crash must not take back. 0 writes one after every update (the tests).
    checkpoint_every_minutes: float = 10.0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        d["world_model"] = WorldModelConfig.from_dict(d["world_model"])
        d["rew_end_model"] = RewEndConfig.from_dict(d["rew_end_model"])
        d["actor_critic"] = ActorCriticConfig.from_dict(d["actor_critic"])
        for key in ("training_world_model", "training_rew_end_model", "training_actor_critic"):
            d[key] = ComponentTraining(**d[key])
        d["collection"] = CollectionConfig(**d["collection"])
        return cls(**d)


def run_config(game: str, profile: str, *, num_actions: int | None = None) -> RunConfig:
    """The run of each profile. ``paper`` is DIAMOND's, unchanged (``data/diamond_hyperparameters.json`` is the
    table a test compares it with). ``course`` shrinks the models and budgets to run on a 2-core CPU in about two
    hours with bf16 instructions (about four with AVX2 only, measured: docs/results.md); ``smoke`` runs end
    to end in seconds for CI. The algorithm is the same in all three.

    ``num_actions`` skips building the game to count its actions (and checking its name): a benchmark on a machine
    without the emulator times a run of a stand-in game with it."""
    p = Profile(profile)
    if num_actions is None:
        from .atari import check_game, make_env  # the emulator, only where the game is real

        game = check_game(game)
        num_actions = int(make_env(game).action_space.n)
    budgets = p.pick(
        smoke=dict(first=(4, 4, 4), per_epoch=(2, 2, 2), batch=(2, 2, 2)),
        # course: sized from measured CPU costs (world model 0.37 s, reward/end 0.68 s at batch 16; actor-critic with
        # imagination about 3 s at batch 8) to about two hours, giving the reward/end model enough updates to leave
        # its plateau (about 2,200 at batch 16, docs/journal/course_runs.md, 2026-12-03)
        course=dict(first=(1500, 1500, 100), per_epoch=(30, 30, 9), batch=(16, 16, 8)),
        paper=dict(first=(10_000, 10_000, 5_000), per_epoch=(400, 400, 400), batch=(32, 32, 32)),
    )
    trainings = [ComponentTraining(f, s, b) for f, s, b in zip(budgets["first"], budgets["per_epoch"], budgets["batch"])]
    collection = p.pick(
        smoke=CollectionConfig(num_steps_total=300, steps_per_epoch=50, first_epoch_min=200, first_epoch_max=250,
                               test_episodes=1, final_test_episodes=1, test_max_steps=200),
        # course: 20,000 random first steps, so the reward/end model sees enough hits to recognise new ones
        # (docs/journal/reward_end_model.md, 2026-12-02); they cost under a minute. 80 epochs of 100 steps follow, 28,000 in all.
        course=CollectionConfig(num_steps_total=28_000, steps_per_epoch=100, first_epoch_min=20_000, first_epoch_max=20_000,
                                test_episodes=4, final_test_episodes=20, test_max_steps=5_000),
        paper=CollectionConfig(),
    )  # fmt: skip
    if game == "Freeway":
        collection.temperature = FREEWAY_TEMPERATURE
    wm_cfg, rew_end_cfg = world_model_config(p.name, num_actions), rew_end_config(p.name, num_actions)
    if p.name == "course":
        # Ten times DIAMOND's learning rate: with the course's few thousand updates, both models are far from
        # converged at 1e-4 (docs/journal/learning_rates.md, 2026-12-02: the reward/end model stays on its plateau, the
        # world model's held-out loss after 500 updates is 6x higher); at 1e-3 a whole course run trained stably
        # (docs/journal/course_runs.md, 2026-12-03).
        wm_cfg.lr = rew_end_cfg.lr = 1e-3
    return RunConfig(
        game=game,
        profile=p.name,
        world_model=wm_cfg,
        rew_end_model=rew_end_cfg,
        actor_critic=actor_critic_config(p.name, num_actions),
        training_world_model=trainings[0],
        training_rew_end_model=trainings[1],
        training_actor_critic=trainings[2],
        collection=collection,
        num_final_epochs=p.pick(smoke=1, course=10, paper=50),
        evaluation_every=p.pick(smoke=2, course=10, paper=10),
    )


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """``key=value`` overrides of any field, by dotted path (``world_model.lr=3e-4``, ``seed=1``).

    The value is a Python literal of the field's type; an unknown key, or a value of another type, raises a
    ``ValueError`` that names the key and what it accepts.
    """
    d = cfg.to_dict()
    fields = dict(leaves(d))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key not in fields:
            close = [k for k in fields if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {', '.join(close)}?" if close else f"; accepted keys: {', '.join(sorted(fields))}"
            raise ValueError(f"unknown configuration key {key!r}{hint}")
        if key in ("game", "profile"):
            raise ValueError(f"{key!r} is set by --{key}, not by --set")
        current = fields[key]
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
            if isinstance(current, float) and value.lower() in ("inf", "-inf", "nan"):
                value = float(value)  # not Python literals, but floats a field may take (sampler.s_tmax = inf)
        value = _check_type(key, current, value)
        target = d
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
        fields[key] = value
    return RunConfig.from_dict(d)


def leaves(d: dict, prefix: str = ""):
    """Every field of a nested configuration dict as (dotted key, value): what `--set` can reach."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _type_name(value) -> str:
    if isinstance(value, list):
        inner = {_type_name(v) for v in value} or {"value"}
        return f"a list of {' or '.join(sorted(inner))}"
    return {bool: "a bool (True or False)", int: "an int", float: "a float", str: "a string"}.get(type(value), type(value).__name__)


def _conforms(current, value) -> bool:
    """Whether ``value`` may replace ``current``: the same type (an int where a float is expected is fine)."""
    if isinstance(current, bool):
        return isinstance(value, bool)
    if isinstance(current, (int, float, str)):
        accepted = {int: (int,), float: (int, float), str: (str,)}[type(current)]
        return isinstance(value, accepted) and not isinstance(value, bool)
    if isinstance(current, list):
        return isinstance(value, list) and (not current or all(_conforms(current[0], v) for v in value))
    return False


def _check_type(key: str, current, value):
    if not _conforms(current, value):
        raise ValueError(f"--set {key}={value!r}: {key} takes {_type_name(current)} (now {current!r})")
    if isinstance(current, float):
        return float(value)
    if isinstance(current, list) and current and isinstance(current[0], float):
        return [float(v) for v in value]
    return value
