"""Freed memory stays in the process (diamond_lite.memory): a large block freed and asked for again soon costs no
fresh pages, and DIAMOND_MALLOC=default leaves glibc alone."""

import subprocess
import sys

import pytest

PROBE = """
import resource, torch
import diamond_lite.memory as m
faults = []
for _ in range(16):  # a 64 MB block (over glibc's largest mmap threshold) asked for and freed, again and again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(2**24)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del x
print(m.is_kept(), sum(faults[-4:]))
"""


def probe(env_value: str | None, setup: str = "import diamond_lite.memory\ndiamond_lite.memory.keep_freed_memory()\n") -> tuple[bool, int]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "DIAMOND_MALLOC"}
    if env_value is not None:
        env["DIAMOND_MALLOC"] = env_value
    code = setup + PROBE
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_runs_keep_freed_memory_and_importing_changes_nothing():
    assert probe(None, "import diamond_lite, diamond_lite.train, diamond_lite.pretrain\n")[0] is False  # no import side effect
    kept, faults = probe(None)
    assert kept
    # the heap settles after a few rounds (aligned blocks fragment it at first), then the freed block is reused:
    # otherwise every round maps 16,384 fresh 4 kB pages
    assert faults < 2_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_the_environment_variable_leaves_glibc_alone():
    kept, faults = probe("default")
    assert not kept
    kept_again, faults_kept = probe(None)
    assert faults > faults_kept  # glibc hands the block back and maps it afresh
