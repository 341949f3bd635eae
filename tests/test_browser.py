"""Notebook 03 in a real browser: the JupyterLab that `bn-course lab` starts, headless
Chromium, run all, move a slider; no news prompt and no nbgrader instructor tools in it.

Drives Debian's `chromium` package through Playwright's Python API (never
`playwright install`). Outside CI the test skips when Chromium or Playwright is
missing; under CI=true that is a failure. The screenshot is left in
test-artifacts/ (which ignores itself in git).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import http_get_when_up

from bn_course.instructor import layout, workspace

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT = "03_scale_and_shift"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
# The test's own user setting, for a predictable page: every cell in the DOM. (No news
# setting: `bn-course lab` must keep the news prompt away by itself.)
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
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
    """`bn-course lab` on a working folder where the student solved notebook 03, on a free
    port, with a home folder of its own (to see that nothing is written there)."""
    tmp = tmp_path_factory.mktemp("browser")
    work = tmp / "work"
    (work / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(layout.find_course().source_notebook(ASSIGNMENT), work / ASSIGNMENT)
    for name, values in LAB_SETTINGS.items():
        path = tmp / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    (tmp / "home").mkdir()
    port = free_port()
    # The inline backend as a student has it, whatever MPLBACKEND the tests run with.
    env = {**os.environ, "HOME": str(tmp / "home"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
           "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    with open(tmp / "jupyterlab.log", "w+") as log:
        server = subprocess.Popen([sys.executable, "-m", "bn_course", "lab", "--no-browser",
                                   "--port", str(port), "--dir", str(work)],
                                  stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        try:
            token = wait_for_token(tmp / "jupyterlab.log", server)
            http_get_when_up(f"http://127.0.0.1:{port}/api/status?token={token}", server)
            yield Lab(f"http://127.0.0.1:{port}", token, ASSIGNMENT, tmp / "home")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@dataclass(frozen=True)
class Lab:
    base: str
    token: str
    assignment: str
    home: Path

    def url(self, path):
        return f"{self.base}/{path}?token={self.token}"

    @property
    def notebook(self):
        return self.url(f"lab/tree/{self.assignment}/{self.assignment}.ipynb")


def wait_for_token(log, server, seconds=60):
    """The token in the URL that `bn-course lab` prints."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = re.search(r"/lab\?token=(\w+)", log.read_text())
        if found:
            return found.group(1)
        assert server.poll() is None, log.read_text()
        time.sleep(0.2)
    raise TimeoutError("bn-course lab printed no URL")


def test_the_lab_hides_the_news_and_the_instructor_tools_but_keeps_validate(lab):
    page = http_get(lab.url("lab")).decode()
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">'
                                  r"(.*?)</script>", page, re.DOTALL).group(1))
    assert set(config["disabledExtensions"]) >= set(workspace.HIDDEN_LAB_PLUGINS)
    assert "@jupyter/nbgrader:validate-assignment" not in config["disabledExtensions"]
    with pytest.raises(urllib.error.HTTPError, match="404"):
        http_get(lab.url("formgrader"))  # nbgrader's instructor server extension is off
    # Nothing outside the working folder: the user's own Jupyter settings are untouched.
    assert not list(lab.home.rglob("page_config.json"))
    assert not list(lab.home.rglob("jupyter_server_config.json"))


def http_get(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_notebook_03_runs_checks_and_its_slider_redraws(lab, playwright_api):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    with playwright_api() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            run_all_cells(page, lab.notebook)
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
            # What `bn-course lab` keeps away from a student, seen in the page itself.
            assert page.get_by_text("official Jupyter news").count() == 0
            assert page.get_by_role("menuitem", name="Nbgrader", exact=True).count() == 0
            assert page.locator(".jp-Notebook-toolbar, .jp-NotebookPanel-toolbar").get_by_text(
                "Validate").count() >= 1
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
