"""Notebook 03 in a real browser: JupyterLab, headless Chromium, run all, move a slider.

Drives Debian's `chromium` package through Playwright's Python API (never
`playwright install`). Outside CI the test skips when Chromium or Playwright is
missing; under CI=true that is a failure. The screenshot is left in
test-artifacts/ (which ignores itself in git).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bn_course.instructor import layout
from conftest import http_get_when_up

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT = "03_scale_and_shift"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
# JupyterLab settings for a quiet, predictable page: every cell in the DOM, no news popup.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}
# Run All stops at an error: wait until every cell ran, or one failed.
ALL_CELLS_RAN_OR_ONE_FAILED = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
    const ran = prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
    const stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
    return ran || document.querySelector(stderr) !== null;
}"""

pytestmark = pytest.mark.slow


def missing(what):
    """Skip, or fail under CI, where the browser test must run."""
    message = (f"{what}: the browser test needs it "
               f"(apt-get install -y chromium; pip install playwright)")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright Python package is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"{CHROMIUM} not found")
    return sync_playwright


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a copy of notebook 03 (solutions), a free port and a fresh token."""
    tmp = tmp_path_factory.mktemp("browser")
    work = tmp / "work"
    work.mkdir()
    shutil.copy(layout.find_course().source_notebook(ASSIGNMENT), work)
    for name, values in LAB_SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.root_dir={work}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
               f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    # The inline backend as a student has it, whatever MPLBACKEND the tests run with.
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    with open(tmp / "jupyterlab.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        try:
            http_get_when_up(f"http://127.0.0.1:{port}/api/status?token={token}", server)
            yield f"http://127.0.0.1:{port}/lab/tree/{ASSIGNMENT}.ipynb?token={token}"
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_notebook_03_runs_checks_and_its_slider_redraws(lab, playwright_api):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    with playwright_api() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            run_all_cells(page, lab)
            check = page.locator(".jp-OutputArea-output", has_text="batchnorm_forward").filter(
                has_text="\u2714")  # the self-check's pass mark
            assert check.count() >= 1, "no passing self-check for batchnorm_forward"
            assert page.locator(".jp-OutputArea-output", has_text="\u2718").count() == 0

            gamma = page.locator(".widget-slider", has_text="gamma")
            gamma.scroll_into_view_if_needed()
            figure = panel_image(gamma)
            before = figure.get_attribute("src")
            drag_handle(page, gamma.locator(".noUi-handle"), pixels=30)
            expect(gamma.locator(".widget-readout")).not_to_have_text("1.00")
            expect(figure).not_to_have_attribute("src", before, timeout=20_000)
            page.screenshot(path=str(ARTIFACTS / "browser-03-slider.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-03-failure.png"))
            raise
        finally:
            browser.close()


def run_all_cells(page, url):
    page.goto(url)
    # The kernel has started and the notebook is connected to it.
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(ALL_CELLS_RAN_OR_ONE_FAILED, timeout=60_000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, errors.first.inner_text()


def panel_image(slider):
    """The figure of the slider's panel: the image in the Output under its row of sliders."""
    panel = slider.locator("xpath=ancestor::div[contains(@class, 'widget-vbox')][1]")
    image = panel.locator(".widget-output img")
    image.wait_for(timeout=20_000)
    return image


def drag_handle(page, handle, pixels):
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels, y, steps=8)
    page.mouse.up()
