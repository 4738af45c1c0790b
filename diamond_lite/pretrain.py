"""Train the course's world model once and ship it: ``make pretrain``.

    python -m diamond_lite.pretrain --game Breakout --profile course --minutes 30

Collects random-policy data with the project's own environment (nothing is downloaded), trains one model of
the profile on it for a time budget, measures it on held-out episodes, and writes
``data/checkpoints/<game>_<kind>_<profile>.pt`` (float16 weights, a few MB) with a JSON report beside it.
Kinds: ``world_model`` (DIAMOND's EDM denoiser; scored by its 3-step predictions against copying the last
frame, and by 15-step dreams under the real actions), ``ddpm_world_model`` (notebook 04's baseline) and ``rew_end_model`` (the reward/termination model;
scored by per-class precision and recall). Notebooks load them to show a trained model at once, and can always
train their own.

``--autoregressive-steps 0`` trains the EDM world model on one term only (no autoregressive term; notebook 02
compares the two), and ``--evaluate CHECKPOINT`` scores a world-model checkpoint on the held-out data without
training anything (how docs/ compares models trained before and after a change).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import memory
from .atari import check_game, make_env
from .bench import machine
from .component import autocast_for
from .config import PRECISIONS
from .data import Collector, Dataset, SegmentSampler
from .profiles import COURSE_GAME, PROFILES, Profile
from .ddpm import DDPMWorldModel
from .rew_end import HORIZON, RewEndModel, evaluate, rew_end_config
from .world_model import WorldModel, dream_errors, one_step_errors, world_model_config

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "data" / "checkpoints"
KINDS = {"world_model": WorldModel, "ddpm_world_model": DDPMWorldModel, "rew_end_model": RewEndModel}


def checkpoint_path(game: str, profile: str, kind: str = "world_model") -> Path:
    return CHECKPOINTS / f"{game}_{kind}_{profile}.pt"


def load_or_train(kind: str, game: str, profile: str, cfg, data: Dataset | None = None, *, updates: int = 0,
                  batch_size: int = 8, name: str | None = None):  # fmt: skip
    """The model of ``kind`` that ``make pretrain`` shipped for ``game`` and ``profile`` (``name`` overrides the file's
    kind, e.g. ``world_model_one_term``), checked against ``cfg``; without one, a model of ``cfg`` trained for
    ``updates`` quick steps on ``data`` from seed 0: enough to run a notebook, not to reproduce its result (what every
    notebook says when it happens). Prints which it is."""
    from tqdm.auto import tqdm

    path = checkpoint_path(game, profile, name or kind)
    if path.exists():
        model = KINDS[kind].load(path, game=game, config=cfg)
        print(f"loaded {path.name}: {model.num_updates:,} updates")
        return model
    torch.manual_seed(0)
    model = KINDS[kind](cfg, game=game)
    if updates and data is not None:
        length = HORIZON + 4 if kind == "rew_end_model" else model.segment_length  # DIAMOND's seq_length: H + n
        sampler = SegmentSampler(data, length, batch_size, sample_weights=None, seed=0, can_sample_beyond_end=kind == "rew_end_model")
        for _ in tqdm(range(updates), desc=f"no {path.name}: a quick {kind}"):
            model.train_step(sampler.sample().to_torch(model.device))
    print(f"no {path.name}: a {type(model).__name__} trained for {model.num_updates} quick updates stands in")
    return model


def collect_random(game: str, directory: Path, num_steps: int, seed: int, split: str = "train") -> Dataset:
    dataset = Dataset(directory)
    missing = num_steps - dataset.num_steps
    if missing > 0:
        Collector(make_env(game, split=split, seed=seed), dataset, seed=seed).collect(num_steps=missing)
    return dataset


def learning_curve(log_path: Path) -> list[list[float]]:
    """``[[update, mean loss], ...]`` from a training log, kept in the report so notebooks can plot it."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [[r["step"], round(r["loss"], 6)] for r in rows]


def world_model_scores(model, test_data: Dataset, profile: Profile) -> dict:
    """The held-out scores of a world model: 1-step predictions of frames that moved, and 15-step dreams."""
    scores = one_step_errors(model, test_data, num_samples=profile.pick(smoke=16, course=512, paper=1024))
    dreams = dream_errors(model, test_data, horizon=HORIZON, num_starts=profile.pick(smoke=4, course=256, paper=512))
    return scores | {f"{key}_{HORIZON}_steps": value for key, value in dreams.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default=COURSE_GAME)
    parser.add_argument("--profile", default="course", choices=PROFILES)
    parser.add_argument("--kind", default="world_model", choices=KINDS,
                        help="world_model (EDM, DIAMOND's), ddpm_world_model (notebook 04's baseline) or rew_end_model")
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--data-steps", type=int, default=None, help="random-policy steps to collect")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "pretrain")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--autoregressive-steps", type=int, default=None,
                        help="the EDM world model's autoregressive training terms (default: the profile's, DIAMOND's 1)")
    parser.add_argument("--evaluate", type=Path, metavar="CHECKPOINT", help="score this world model on the held-out data; train nothing")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="the models' arithmetic, as a run's --set precision=... (auto: bf16 autocast on a CPU with native bf16)")
    args = parser.parse_args(argv)
    memory.keep_freed_memory()  # freed memory stays in the process: faster steps on a CPU (diamond_lite.memory)
    game = check_game(args.game)
    profile = Profile(args.profile)
    torch.manual_seed(args.seed)
    from tqdm.auto import tqdm

    if args.evaluate and args.kind == "rew_end_model":
        parser.error("--evaluate scores world models (--kind world_model or ddpm_world_model)")
    data_steps = args.data_steps or profile.pick(smoke=500, course=30_000, paper=100_000)
    test_data = collect_random(game, args.work_dir / game / "test", max(500, data_steps // 10), seed=args.seed + 1)
    if args.evaluate:
        model = KINDS[args.kind].load(args.evaluate, game=game)
        report = {"checkpoint": str(args.evaluate), "updates": model.num_updates, **world_model_scores(model, test_data, profile)}
        print(json.dumps(report, indent=1))
        return 0
    train_data = collect_random(game, args.work_dir / game / "train", data_steps, seed=args.seed)
    print(f"data: {train_data.num_steps} train steps, {test_data.num_steps} held-out steps", flush=True)

    num_actions = make_env(game).action_space.n
    batch_size = args.batch_size or profile.pick(smoke=4, course=16, paper=32)
    if args.kind == "rew_end_model":
        model = RewEndModel(rew_end_config(profile.name, num_actions), game=game, autocast=autocast_for(args.precision))
        sampler = SegmentSampler(train_data, HORIZON + 4, batch_size, sample_weights=None, seed=args.seed, can_sample_beyond_end=True)
    else:
        cfg = world_model_config(profile.name, num_actions)
        if args.autoregressive_steps is not None:
            cfg.num_autoregressive_steps = args.autoregressive_steps
        model = KINDS[args.kind](cfg, game=game, autocast=autocast_for(args.precision))
        sampler = SegmentSampler(train_data, model.segment_length, batch_size, sample_weights=None, seed=args.seed)
    started = time.monotonic()
    deadline = started + 60 * args.minutes
    out = args.out or checkpoint_path(game, profile.name, args.kind)
    log_path = args.work_dir / game / f"{out.stem}_log.jsonl"
    recent, mean = [], float("nan")  # losses stay on the device until logged: no sync per step on a GPU
    with open(log_path, "w") as log, tqdm(desc=f"train {args.kind}", unit="step") as bar:
        while time.monotonic() < deadline and (args.max_steps is None or model.num_updates < args.max_steps):
            loss, _ = model.train_step(sampler.sample().to_torch(model.device))
            recent.append(loss)
            bar.update(1)
            if model.num_updates % 50 == 0:
                model.check_finite()
                mean, recent = torch.stack(recent).mean().item(), []
                bar.set_postfix(loss=f"{mean:.4f}")
                log.write(json.dumps({"step": model.num_updates, "loss": mean, "seconds": round(time.monotonic() - started, 1)}) + "\n")
                log.flush()

    if args.kind == "rew_end_model":
        result = evaluate(model, list(test_data), window=HORIZON)
        errors = {head: {k: v.tolist() for k, v in result[head].items()} for head in ("rew", "end")}
        errors |= {k: result[k].tolist() for k in ("confusion_rew", "confusion_end")}
    else:
        errors = world_model_scores(model, test_data, profile)
    model.check_finite()
    model.save(out, half=True)
    report = {"game": game, "profile": profile.name, "kind": args.kind, "updates": model.num_updates, "batch_size": batch_size,
              **({"num_autoregressive_steps": model.cfg.num_autoregressive_steps} if args.kind == "world_model" else {}),
              "precision": args.precision, "bf16_autocast": model.use_autocast,
              "minutes": args.minutes, "seconds": round(time.monotonic() - started), "train_steps": train_data.num_steps, "parameters": model.num_parameters(),
              "final_loss": torch.stack(recent).mean().item() if recent else mean, **errors, "machine": machine(),
              "curve": learning_curve(log_path)}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
