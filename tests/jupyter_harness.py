"""Start a real Jupyter server on 127.0.0.1 and drive notebooks in headless Chromium (Playwright).

Offline and self-contained: fresh config/runtime/home folders per server (nothing from ~/.jupyter), Debian's
Chromium at /usr/bin/chromium (never ``playwright install``, which downloads a browser), no news or update
checks. The server flags: ``--allow-root`` (JupyterLab refuses to start as root otherwise), 127.0.0.1 on a free
port with no retries and no token, and no news feed, update check or extension manager (each would reach for
the network); a notification setting override stops the news toast that shows even then. ``theme`` starts
JupyterLab in another theme (a settings override too); :func:`set_theme` switches a running page (JupyterLab's
app is exposed in the page as ``window.jupyterapp`` for that).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import nbformat
import pytest
from local_server import LocalServer, isolated_environment, state_folders

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage"]
LIGHT_THEME = "JupyterLab Light"
DARK_THEME = "JupyterLab Dark"


def write_notebook(path: Path, cells: list[str]) -> Path:
    """A notebook of code cells, stored without outputs."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, path)
    return path


class JupyterServer(LocalServer):
    """``jupyter lab`` or ``jupyter notebook`` on a free port of 127.0.0.1, with no token, in ``root``."""

    def __init__(self, root: Path, app: Literal["lab", "notebook"] = "lab", theme: str | None = None) -> None:
        super().__init__(root / f"jupyter-{app}.log")
        self.root = root
        self.app = app
        self.theme = theme
        self.name = f"jupyter {app}"

    def _environment(self) -> dict[str, str]:
        folders = state_folders(self.root / ".state", ("config", "runtime", "ipython", "home", "tmp", "data"))
        overrides = folders["config"] / "labconfig"
        overrides.mkdir(exist_ok=True)
        settings: dict[str, Any] = {
            "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}
        }
        if self.theme is not None:
            settings["@jupyterlab/apputils-extension:themes"] = {"theme": self.theme}
        (overrides / "default_setting_overrides.json").write_text(json.dumps(settings))
        return isolated_environment(
            JUPYTER_CONFIG_DIR=str(folders["config"]),
            JUPYTER_RUNTIME_DIR=str(folders["runtime"]),
            IPYTHONDIR=str(folders["ipython"]),
            HOME=str(folders["home"]),
            TMPDIR=str(folders["tmp"]),
            JUPYTER_PLATFORM_DIRS="1",
        )

    def start(self, timeout: float = 60.0) -> JupyterServer:
        command = [
            sys.executable, "-m", "jupyter", self.app, "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
        ]  # fmt: skip
        self.launch(command, self._environment(), "/api/status", timeout=timeout)
        return self

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def wait_for_idle_kernel(self, timeout: float = 60.0) -> None:
        """Until a kernel exists and is idle (a notebook's Run All before that runs nothing)."""
        deadline = time.monotonic() + timeout
        kernels: Any = None
        while time.monotonic() < deadline:
            try:
                kernels = self.api("/api/kernels")
            except (urllib.error.URLError, ConnectionError, TimeoutError):  # a 500 while a kernel is starting
                kernels = None
            if kernels and all(kernel["execution_state"] == "idle" for kernel in kernels):
                return
            time.sleep(0.3)
        raise TimeoutError(f"no idle kernel after {timeout} s: {kernels}")

    def __enter__(self) -> JupyterServer:
        return self.start()


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


# The marks every browser test module starts with: ``pytestmark = BROWSER_TESTS``.
BROWSER_TESTS = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's sync API) that never leaves 127.0.0.1 on its own."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# What the widgets' browser tests show JupyterLab in: a common laptop screen.
LAPTOP = {"width": 1440, "height": 900}


@contextmanager
def notebook_in_lab(
    folder: Path, notebook: str, viewport: dict[str, int] = LAPTOP
) -> Iterator[tuple[Any, list[str]]]:
    """``folder/notebook`` opened in JupyterLab in headless Chromium with every cell run: the page, and the list
    that collects the page's JavaScript errors (a test asserts it stays empty)."""
    with JupyterServer(folder, "lab") as server, chromium() as browser:
        page = browser.new_page(viewport=viewport)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        run_all_cells(page, server, notebook)
        try:
            yield page, errors
        finally:
            page.close()


def run_all_cells(
    page: Any, server: JupyterServer, notebook: str, app: Literal["lab", "notebook"] = "lab"
) -> None:
    """Open ``notebook`` in JupyterLab (``/lab/tree``) or Notebook 7 (``/notebooks``) and run every cell."""
    path = f"/lab/tree/{notebook}?reset" if app == "lab" else f"/notebooks/{notebook}"
    page.goto(server.url + path)
    page.get_by_role("menuitem", name="Run", exact=True).wait_for(timeout=60_000)
    server.wait_for_idle_kernel()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def set_theme(page: Any, theme: str) -> None:
    """Switch a JupyterLab page's theme with the command Settings > Theme runs, and wait until it is applied.

    Needs the app in the page (``--LabApp.expose_app_in_browser``, which :class:`JupyterServer` passes).
    """
    page.evaluate("(theme) => window.jupyterapp.commands.execute('apputils:change-theme', { theme })", theme)
    page.wait_for_function("(name) => document.body.dataset.jpThemeName === name", arg=theme, timeout=30_000)
    page.wait_for_timeout(500)  # the theme's stylesheet settles


def canvas_pixels(locator: Any) -> list[int]:
    """The RGBA pixels of a canvas, read in the page."""
    return locator.evaluate(
        "(c) => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
    )


def widget_root(page: Any, kind: str) -> Any:
    """The livexai widget of ``kind`` (``data-kind`` on ``.livexai-root``: lime, shap, layer, explorer)."""
    return page.locator(f".livexai-root[data-kind={kind}]")


def wait_for_change(locator: Any, before: list[int], timeout: float = 30.0) -> list[int]:
    """The canvas's pixels once they differ from ``before`` (a recomputed map was drawn)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = canvas_pixels(locator)
        if now != before:
            return now
        time.sleep(0.1)
    raise AssertionError("the canvas did not change")


def move_superpixels_and_see_a_new_map(
    widget: Any, canvas: Any, status: Any, before: list[int], value: str
) -> None:
    """Set the superpixels slider to ``value`` as a person would; the kernel recomputes, the widget goes back to
    idle, and the map on ``canvas`` (``before``: its pixels until now) changes visibly, not in a few pixels."""
    from playwright.sync_api import expect

    widget.locator(".livexai-slider-n_segments").fill(value)
    expect(widget.locator(".livexai-number-n_segments")).to_have_value(value)
    wait_for_change(canvas, before)
    expect(status).to_have_text("idle", timeout=60_000)
    changed = sum(1 for a, b in zip(before, canvas_pixels(canvas), strict=True) if a != b)
    assert changed > 200, f"only {changed} channel values changed"
