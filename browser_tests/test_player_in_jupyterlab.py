"""The player widget in a real browser: JupyterLab served on localhost, driven by headless Chromium.

`make test-browser` runs this file (it is not part of `make test`: it needs Debian's ``chromium`` and
``chromium-driver`` packages, see README). It opens a notebook that shows ``player_widget`` on the course's
pretrained Breakout world model, runs it, clicks an action button and checks that the frame and the status line
change: the whole path browser → widget → kernel → ``Player`` → world model → image in the page.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")

PLAYER_CELL = """\
from pathlib import Path
from diamond_lite import actor_critic, atari, data, rew_end, world_model
from diamond_lite.player import Player, player_widget
from diamond_lite.pretrain import checkpoint_path

GAME, PROFILE, n = "Breakout", "course", 4
wm = world_model.WorldModel.load(checkpoint_path(GAME, PROFILE, "world_model"), game=GAME)
rem = rew_end.RewEndModel.load(checkpoint_path(GAME, PROFILE, "rew_end_model"), game=GAME)
agent = actor_critic.ActorCritic(actor_critic.actor_critic_config(PROFILE, n), game=GAME)
replay = data.Dataset(Path("replay"))
data.Collector(atari.make_env(GAME, seed=0), replay, seed=0).collect(num_steps=60, progress=False)
player = Player(wm, rem, agent, replay, GAME)
player_widget(player)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - the page or server is not there yet
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on a free localhost port, rooted in a folder holding the player notebook."""
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": PLAYER_CELL}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (tmp_path / "player.ipynb").write_text(json.dumps(notebook))
    port, token = _free_port(), "diamond-lite-browser-test"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True", "--ServerApp.ip=127.0.0.1"]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    env = dict(os.environ, DIAMOND_PROFILE="course", JUPYTER_CONFIG_DIR=str(tmp_path / ".jupyter"))
    log = open(tmp_path / "lab.log", "w")
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).status == 200, 90, "JupyterLab to start")
        yield url, token, tmp_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture()
def browser(tmp_path):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(path):
            pytest.fail(f"{path} not found: install Debian's {package} package (sudo apt-get install chromium chromium-driver), "
                        "or set CHROMIUM / CHROMEDRIVER to where they are")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_clicking_an_action_button_changes_the_frame(lab, browser):
    from selenium.webdriver.common.by import By

    url, token, folder = lab
    browser.get(f"{url}/lab/tree/player.ipynb?token={token}")
    ready = "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget; return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel);"  # fmt: skip
    _wait_for(lambda: browser.execute_script(ready), 120, "the notebook and its kernel")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    image = _wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "img.widget-image"), 180, "the player's frame in the page")
    status = browser.find_element(By.CSS_SELECTOR, ".widget-label")
    before_src, before_status = image.get_attribute("src"), status.text
    assert "t=0" in before_status, before_status
    browser.save_screenshot(str(folder / "before.png"))

    button = browser.find_element(By.XPATH, "//button[normalize-space()='RIGHT']")
    button.click()
    _wait_for(lambda: image.get_attribute("src") != before_src, 60, "the frame to change after clicking RIGHT")
    _wait_for(lambda: "t=1" in status.text, 30, "the status line to count the step")
    browser.save_screenshot(str(folder / "after.png"))
    shots = os.environ.get("DIAMOND_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for name in ("before.png", "after.png"):
            shutil.copy(folder / name, Path(shots) / f"player_{name}")
