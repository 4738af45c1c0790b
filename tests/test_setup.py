"""The course's set-up: pins, profiles, committed notebooks, README and CI, JupyterLab."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

import diamond_lite
from diamond_lite.profiles import PROFILES, profile

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def environment_yml_pins():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pins = [line.split("- ", 1)[1].strip() for line in lines if re.match(r"^\s+- \S+==", line)]
    python = [line.split("python", 1)[1].strip() for line in lines if re.match(r"^\s+- python[=<>]", line)]
    return pins, python


def test_environment_yml_has_the_same_pins_as_pyproject():
    pins, python = environment_yml_pins()
    assert sorted(pins) == sorted(pyproject_pins())
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == [requires] == [">=3.11,<3.14"]


def test_every_pin_is_exact_and_torch_is_2_13_0():
    pins = pyproject_pins()
    assert all("==" in pin for pin in pins), pins
    assert "torch==2.13.0" in pins
    import torch

    assert torch.__version__.split("+")[0] == "2.13.0"


def test_profile_reads_the_environment(monkeypatch):
    monkeypatch.delenv("DIAMOND_PROFILE", raising=False)
    assert profile().name == "course"
    monkeypatch.setenv("DIAMOND_PROFILE", "smoke")
    assert diamond_lite.profile().name == "smoke"
    assert profile("paper").pick(smoke=1, course=2, paper=3) == 3
    monkeypatch.setenv("DIAMOND_PROFILE", "fast")
    with pytest.raises(ValueError) as error:
        profile()
    assert "'fast'" in str(error.value) and all(p in str(error.value) for p in PROFILES)


def test_notebooks_exist_in_order():
    names = [p.name for p in NOTEBOOKS]
    assert names and names[0].startswith("00_")
    assert names == sorted(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_carries_course_outputs(path):
    """A reader on GitHub sees a real course run: executed in the course profile, with outputs,
    under 3 MB, on the course's kernel."""
    assert path.stat().st_size < 3 * 1024 * 1024
    notebook = json.loads(path.read_text())
    assert notebook["metadata"].get("diamond_lite", {}).get("profile") == "course"
    assert notebook["metadata"]["kernelspec"]["name"] == "diamond-lite"
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "every code cell was executed"
    text = json.dumps(notebook)
    assert "profile: smoke" not in text


def test_readme_starts_with_make_lab_then_make_test_and_ci_runs_make_test():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^make \w[\w-]*", readme, flags=re.M)
    assert commands[:2] == ["make lab", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))]
    assert ci_commands and all(command in readme for command in ci_commands), "CI runs only what README shows"
    assert "make test" in ci_commands


def test_make_train_and_the_readme_default_to_the_course_run_game():
    game = diamond_lite.COURSE_RUN_GAME
    assert re.search(rf"^RUN_GAME := \$\(or \$\(GAME\),{game}\)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert f"on {game}, into runs/{game}-course" in (ROOT / "README.md").read_text()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_starts_and_serves_lab(tmp_path):
    port = free_port()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.token=", "--ServerApp.password=", "--ServerApp.port_retries=0", f"--notebook-dir={ROOT / 'notebooks'}"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        deadline, status, body = time.time() + 90, None, ""
        while time.time() < deadline and lab.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=5) as response:
                    status, body = response.status, response.read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert lab.poll() is None, lab.stderr.read().decode()[-2000:]
        assert status == 200 and "JupyterLab" in body
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
