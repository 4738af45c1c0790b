"""Crash points for the reliability tests: a process can be made to kill itself at a named moment.

A run survives whatever kills it only if every moment of it has been tried. ``crash_point(name)`` marks such a
moment in the code (a step of collection, an update of each model, the middle of a checkpoint or an episode
write); with the environment variable ``DIAMOND_CRASH_AT="name:n"`` the ``n``-th pass through that point sends
SIGKILL to the process itself, exactly as the out-of-memory killer or a closed laptop would. Unset (always, outside
the tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "DIAMOND_CRASH_AT"
POINTS = ("collect_step", "train_world_model", "train_rew_end_model", "train_actor_critic", "checkpoint_write", "episode_write")
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV_VAR}={spec!r}: unknown crash point {point!r}; the points are {', '.join(POINTS)}")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
