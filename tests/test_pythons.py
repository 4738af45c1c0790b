"""Python 3.11 to 3.13: the project accepts each (pyproject.toml, environment.yml), and on every one of them that this
machine has, the package and its tests parse; where that interpreter also has torch and the other pins installed, the
package imports and a smoke run finishes there.

Every pin is offered for all three (checked against PyPI by `dev/check_pythons.py`; docs/performance.md, "Python
versions"). A smoke run on another interpreter needs its own torch: PyPI's Linux builds of torch 2.13.0 for 3.12 and
3.13 are CUDA builds (several GB with their libraries), which this test does not download.
"""

import glob
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ("3.11", "3.12", "3.13")


def interpreters() -> dict[str, str]:
    """The interpreters of VERSIONS this machine has that run, by version (pyenv's too, active or not)."""
    found = {"%d.%d" % sys.version_info[:2]: sys.executable}  # this one, with the project installed
    for version in VERSIONS:
        if version in found:
            continue
        candidates = [shutil.which(f"python{version}")] + sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version}.*/bin/python{version}")))
        for exe in filter(None, candidates):
            probe = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
            if probe.returncode == 0 and probe.stdout.strip() == version:
                found[version] = exe
                break
    return found


FOUND = interpreters()


def test_the_project_accepts_python_3_11_to_3_13():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.14"
    assert "  - python>=3.11,<3.14" in (ROOT / "environment.yml").read_text().splitlines()
    assert "3.11" in FOUND and sys.version_info[:2] >= (3, 11)


@pytest.mark.parametrize("version", sorted(FOUND))
def test_the_package_and_tests_parse_on_every_python_here(version):
    files = [str(p) for d in ("diamond_lite", "tests", "dev") for p in sorted((ROOT / d).rglob("*.py"))]
    code = "import ast, sys\nfor f in sys.argv[1:]:\n    ast.parse(open(f, encoding='utf-8').read(), f)\nprint(len(sys.argv) - 1)"
    proc = subprocess.run([FOUND[version], "-c", code, *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(files)


@pytest.mark.parametrize("version", sorted(FOUND))
def test_a_smoke_run_on_every_python_here_that_has_the_pins(version, tmp_path):
    exe = FOUND[version]
    if subprocess.run([exe, "-c", "import torch, gymnasium, ale_py, tqdm"], capture_output=True).returncode:
        pytest.skip(f"Python {version} here has no torch and Atari environment installed (see the module docstring)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([exe, "-m", "diamond_lite.train", "--game", "Breakout", "--profile", "smoke", "--out", str(tmp_path / "run"),
                           "--max-epochs", "1"], capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints").exists()
