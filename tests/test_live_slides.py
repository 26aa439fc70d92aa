"""Presenting live: JupyterLab on the course sources, offline, in a real browser.

A lecturer who runs code while presenting uses JupyterLab itself (``make lab-sources``) in
Presentation Mode, next to the reveal.js decks of ``make course`` (README, "presenting live").
RISE for JupyterLab is not used: jupyterlab-rise 0.43.1 (the newest) serves its slideshow as a
separate app built on JupyterLab 4.3.4's core, so under the pinned JupyterLab 4.6 the
ipywidgets manager fails to load there ("Shared module @jupyterlab/console doesn't exist in
shared scope default", jupyterlab-contrib/rise#119, open): a widget shows as its text repr
(``IntSlider(value=3)``), so 08's explorer cannot be shown; the page also logs about twenty
``RangeError``s and fetches its theme's fonts from Google.

The test serves a copy of ``notebooks/`` (JupyterLab autosaves: the sources must not get
outputs) on a free local port with a token, opens two notebooks in Debian's Chromium with every
request that is not to that server refused and recorded, turns on Presentation Mode, runs
00's environment check and all of 08, and asserts the explorer's widgets are drawn, with no
console error, traceback or refused request.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_browser import CHROMIUM, ROOT, SCREENSHOTS, Visit, _fail_with

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make test installs it)"
)

STARTUP_S = 60
RUN_S = 180  # 08 runs all its cells in about 30 s alone; a busy 2-core CI is slower


class Lab:
    """``jupyter lab`` on a throwaway copy of the notebooks, reachable only with its token."""

    def __init__(self, notebook_dir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}/"
        home = notebook_dir.parent
        env = {
            "PATH": str(Path(sys.executable).parent),
            "HOME": str(home),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
        }
        self.log = (home / "lab.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
             "--ip=127.0.0.1", f"--port={self.port}", f"--ServerApp.token={self.token}",
             f"--notebook-dir={notebook_dir}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                urllib.request.urlopen(self.url("api/status"), timeout=1).close()
                return
            except OSError as err:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"jupyter lab did not start: see {home / 'lab.log'}"
                    ) from err
                time.sleep(0.25)

    def url(self, path: str) -> str:
        return f"{self.base}{path}?token={self.token}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    notebooks = tmp_path_factory.mktemp("live") / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    server = Lab(notebooks)
    try:
        yield server
    finally:
        server.stop()


class LiveVisit(Visit):
    """One notebook opened in JupyterLab; everything but the local server is refused."""

    # JupyterLab warns once that no English language pack is installed: that is its default.
    IGNORED = (*Visit.IGNORED, "Language pack")

    def __init__(self, browser, lab: Lab, notebook: str) -> None:
        self.lab = lab
        # reset: a fresh layout with only this notebook (the server keeps the last one's tabs)
        url = lab.url(f"lab/tree/{notebook}") + "&reset"
        super().__init__(browser, url, allowed=(lab.base, *Visit.LOCAL[1:]), offline=False)
        self.page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell .cm-content", timeout=60_000)
        self.wait_for_idle_kernel(notebook)
        self.page.wait_for_selector("#jupyterlab-splash", state="detached")

    def wait_for_idle_kernel(self, notebook: str) -> None:
        """Wait until the notebook's kernel has started and is idle (the page can then run code)."""
        deadline = time.monotonic() + STARTUP_S
        states: list[str] = []
        while time.monotonic() < deadline:
            with urllib.request.urlopen(self.lab.url("api/sessions"), timeout=5) as response:
                sessions = json.load(response)
            states = [s["kernel"]["execution_state"] for s in sessions if s["path"] == notebook]
            if states == ["idle"]:
                return
            self.page.wait_for_timeout(250)  # not time.sleep: the routes must run
        raise RuntimeError(f"the kernel of {notebook} did not become idle: {states}")

    def command(self, label: str) -> None:
        """Run a JupyterLab command by its label, from the command palette (as a lecturer can)."""
        self.page.get_by_role("menuitem", name="View", exact=True).click()
        self.page.get_by_role("menuitem", name="Activate Command Palette").click()
        self.page.locator(".lm-CommandPalette-input").fill(label)
        self.page.locator(".lm-CommandPalette-item", has_text=label).first.click()

    def errors(self) -> list[str]:
        """The tracebacks shown in the notebook's outputs."""
        return self.page.eval_on_selector_all(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
            "es => es.map(e => e.textContent).filter(t => /Traceback|Error/.test(t))"
            ".map(t => `traceback: ${t.slice(0, 300)}`)",
        )


def test_a_code_cell_runs_in_presentation_mode(browser, lab: Lab) -> None:
    visit = LiveVisit(browser, lab, "00_welcome.ipynb")
    page = visit.page
    visit.command("Presentation Mode")
    page.wait_for_selector(".jp-LabShell.jp-mod-presentationMode", state="attached")
    check = page.locator(".jp-CodeCell").first
    check.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")
    check.locator(".jp-InputPrompt", has_text="[1]").wait_for(timeout=RUN_S * 1000)
    output = check.locator(".jp-OutputArea-output").inner_text()
    problems = [] if "torch" in output else [f"environment check printed {output[:200]!r}"]
    page.screenshot(path=str(SCREENSHOTS / "live-00_welcome.png"))
    problems += visit.errors()
    visit.close()
    problems += visit.problems
    _fail_with({"00_welcome": problems} if problems else {})


def test_the_explorer_widgets_are_drawn_live(browser, lab: Lab) -> None:
    visit = LiveVisit(browser, lab, "08_explorer.ipynb")
    page = visit.page
    visit.command("Run All Cells")
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
            .every(p => /\\[\\d+\\]/.test(p.textContent))""",
        timeout=RUN_S * 1000,
    )
    app = page.locator(".jp-CodeCell").last.locator(".jupyter-widgets")
    app.first.wait_for(timeout=30_000)
    problems = []
    if page.locator(".jp-CodeCell .widget-dropdown select").count() < 3:
        problems.append("the explorer's pickers are not drawn")
    app.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "live-08_explorer.png"))
    problems += visit.errors()
    visit.close()
    problems += visit.problems
    _fail_with({"08_explorer": problems} if problems else {})
