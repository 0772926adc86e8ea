"""The panel in a real JupyterLab, driven by a real browser (Chromium through Playwright).

Skipped, with the reason, where Chromium or Playwright is not installed (`pip install
labkit[browser]` and Debian's `chromium`).
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

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (labkit[browser])")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (apt install chromium)")
TOKEN = "labkit-browser-test"

PANEL_NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "panel", "metadata": {}, "outputs": [],
               "source": "from labkit.widgets import TrainerPanel\npanel = TrainerPanel(name='browser', "
                         "run_dir='runs/browser', interval_s=0.3)\npanel"}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture
def lab(tmp_path, spawn):
    yield from _lab(tmp_path, spawn, {})


@pytest.fixture
def lab_without_venv_on_path(tmp_path, spawn):
    """JupyterLab started as a service would start it: PATH without this environment's bin."""
    yield from _lab(tmp_path, spawn, {"PATH": "/usr/bin:/bin", "SHELL": "/bin/bash",
                                      "LABKIT_HOME": str(tmp_path / "labkit-home")})


def _lab(tmp_path, spawn, overrides):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "panel.ipynb").write_text(json.dumps(PANEL_NOTEBOOK))
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), **overrides}
    server = spawn.popen([sys.executable, "-m", "labkit.cli", "lab", "--notebook-dir", str(tmp_path), "--",
                          f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
                          "--ServerApp.open_browser=False", f"--IdentityProvider.token={TOKEN}"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}").close()
            break
        except OSError:
            time.sleep(0.3)
    yield url, tmp_path
    server.terminate()
    server.wait(timeout=30)


def test_start_and_sigterm_from_the_panel_in_jupyterlab(lab, tmp_path):
    url, folder = lab
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/tree/panel.ipynb?token={TOKEN}")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
        start = page.locator("button.widget-button", has_text="Start")
        for attempt in range(4):  # a click that lands before the kernel's session is connected is lost
            _dismiss_dialogs(page)  # e.g. "select a kernel" or a news prompt shown on a slow start
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.get_by_text("Run All Cells", exact=True).click()
            try:
                start.wait_for(timeout=15_000)
                break
            except playwright.TimeoutError:
                if attempt == 3:
                    raise
        plot = page.locator(".widget-image")
        start.click()
        log = folder / "runs" / "browser" / "train.log"
        _wait(lambda: log.exists() and "step 20 " in log.read_text(), 30, "the run to reach step 20")
        before = plot.get_attribute("src")
        page.locator("button.widget-button", has_text="SIGTERM").click()
        _wait(lambda: "stopped cleanly on SIGTERM" in log.read_text(), 20, "a clean stop in train.log")
        status = page.locator(".widget-html")
        _wait(lambda: "exit 0: success" in status.inner_text(), 20, "the status line to show exit 0")
        assert plot.get_attribute("src") != before, "the live plot did not change"
        shot = Path(os.environ.get("LABKIT_TEST_OUTPUT", tmp_path)) / "panel-in-jupyterlab.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        browser.close()


def test_a_terminal_in_jupyterlab_runs_labkit(lab_without_venv_on_path, tmp_path):
    url, folder = lab_without_venv_on_path
    answer = folder / "doctor.txt"
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/lab?token={TOKEN}")
        card = page.locator(".jp-LauncherCard", has_text="Terminal").first
        card.wait_for(timeout=60_000)
        _dismiss_dialogs(page)
        card.click()  # the Launcher's Terminal, as a learner opens one
        terminal = page.locator(".jp-Terminal")
        terminal.wait_for(timeout=60_000)
        for attempt in range(4):  # keys typed before the terminal's websocket is open are lost
            terminal.click()
            page.keyboard.type(f"labkit doctor > {answer} 2>&1; echo exit $? >> {answer}\n")
            try:
                _wait(lambda: answer.exists() and "exit " in answer.read_text(), 15, "labkit doctor in the terminal")
                break
            except AssertionError:
                if attempt == 3:
                    raise
        text = answer.read_text()
        assert "command not found" not in text and "cgroup" in text and text.rstrip().endswith("exit 0"), text
        shot = Path(os.environ.get("LABKIT_TEST_OUTPUT", tmp_path)) / "terminal-in-jupyterlab.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        browser.close()
    headers = {"Authorization": f"token {TOKEN}"}
    with urllib.request.urlopen(urllib.request.Request(f"{url}/api/terminals", headers=headers)) as reply:
        for term in json.loads(reply.read()):  # the terminal's bash is in its own session: end it here
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/terminals/{term['name']}", method="DELETE",
                                                          headers=headers)).close()


def test_a_scenario_played_in_a_jupyterlab_terminal(lab_without_venv_on_path, tmp_path):
    """Start port-held, type the fix a learner would, run `labkit scenario check`, see it pass."""
    import random

    from labkit.scenarios.port_held import PortHeld

    url, folder = lab_without_venv_on_path
    port = PortHeld().plan(random.Random(1))["port"]
    started, checked = folder / "started.txt", folder / "checked.txt"
    env = {**os.environ, "LABKIT_HOME": str(folder / "labkit-home")}
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/lab?token={TOKEN}")
            card = page.locator(".jp-LauncherCard", has_text="Terminal").first
            card.wait_for(timeout=60_000)
            _dismiss_dialogs(page)
            card.click()
            terminal = page.locator(".jp-Terminal")
            terminal.wait_for(timeout=60_000)
            for attempt in range(4):  # keys typed before the terminal's websocket is open are lost
                terminal.click()
                page.keyboard.type(f"labkit scenario start port-held --seed 1 > {started} 2>&1; "
                                   f"echo exit $? >> {started}\n")
                try:
                    _wait(lambda: started.exists() and "exit " in started.read_text(), 30, "the scenario to start")
                    break
                except AssertionError:
                    if attempt == 3:
                        raise
            text = started.read_text()
            assert "Goal:" in text and text.rstrip().endswith("exit 0"), text
            # the learner's fix: ask the kernel who holds the port, stop that process, then check
            page.keyboard.type(f"kill $(ss -ltnpH 'sport = :{port}' | grep -o 'pid=[0-9]*' | cut -d= -f2); "
                               f"sleep 1; labkit scenario check > {checked} 2>&1; echo exit $? >> {checked}\n")
            _wait(lambda: checked.exists() and "exit " in checked.read_text(), 60, "labkit scenario check")
            text = checked.read_text()
            assert "passed" in text and text.rstrip().endswith("exit 0"), text
            shot = Path(os.environ.get("LABKIT_TEST_OUTPUT", tmp_path)) / "scenario-in-jupyterlab.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            browser.close()
    finally:  # whatever happened in the browser, nothing of the scenario is left
        subprocess.run([sys.executable, "-m", "labkit.cli", "scenario", "reset"], env=env, capture_output=True,
                       timeout=60)
        headers = {"Authorization": f"token {TOKEN}"}
        with urllib.request.urlopen(urllib.request.Request(f"{url}/api/terminals", headers=headers)) as reply:
            for term in json.loads(reply.read()):
                urllib.request.urlopen(urllib.request.Request(f"{url}/api/terminals/{term['name']}",
                                                              method="DELETE", headers=headers)).close()
    assert not (folder / "labkit-home" / "scenario").exists()


def _dismiss_dialogs(page) -> None:
    dialogs = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    for index in range(dialogs.count()):
        dialogs.nth(index).click()


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
