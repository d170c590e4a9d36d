"""Start a real marimo server on 127.0.0.1 for the browser tests (the marimo counterpart of jupyter_harness).

Offline and self-contained: the server gets fresh HOME, XDG config/cache/state/data and TMPDIR folders (nothing
from ~/.config/marimo, nothing left behind), a ``marimo.toml`` there that runs the notebook when it opens
(``runtime.auto_instantiate``; marimo's default is to wait for a click) and never autosaves it, no update check,
no token, no sandbox prompt. marimo ``edit`` runs the notebook's kernel in a child process, so the server is
started in a process group of its own and the whole group is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

from jupyter_harness import free_port

CONFIG = """\
[runtime]
auto_instantiate = true

[save]
autosave = "off"

[completion]
copilot = false
"""


def write_marimo_notebook(path: Path, cells: list[tuple[str, list[str], list[str]]]) -> Path:
    """A marimo notebook (a .py file) of ``(code, names it uses, names it defines)`` cells."""
    parts = ["import marimo\n\napp = marimo.App()\n"]
    for code, refs, defs in cells:
        returns = f"({', '.join(sorted(defs))},)" if defs else ""
        parts.append(
            f"\n@app.cell\ndef _({', '.join(sorted(refs))}):\n"
            + textwrap.indent(textwrap.dedent(code).strip(), "    ")
            + f"\n    return {returns}\n"
        )
    parts.append('\n\nif __name__ == "__main__":\n    app.run()\n')
    path.write_text("\n".join(parts))
    return path


class MarimoServer:
    """``marimo edit`` or ``marimo run`` of one notebook on a free port of 127.0.0.1, with no token."""

    def __init__(self, notebook: Path, mode: Literal["edit", "run"] = "edit") -> None:
        self.notebook = notebook
        self.root = notebook.parent
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / f"marimo-{mode}.log"

    def _environment(self) -> dict[str, str]:
        state = self.root / f".marimo-{self.mode}"
        folders = {name: state / name for name in ("home", "config", "cache", "state", "data", "tmp")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        (folders["config"] / "marimo").mkdir(exist_ok=True)
        (folders["config"] / "marimo" / "marimo.toml").write_text(CONFIG)
        env = dict(os.environ)
        env.update(
            HOME=str(folders["home"]),
            XDG_CONFIG_HOME=str(folders["config"]),
            XDG_CACHE_HOME=str(folders["cache"]),
            XDG_STATE_HOME=str(folders["state"]),
            XDG_DATA_HOME=str(folders["data"]),
            TMPDIR=str(folders["tmp"]),
            MARIMO_SKIP_UPDATE_CHECK="1",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",  # the kernel shares 2 cores with the server and the browser
        )
        return env

    def start(self, timeout: float = 60.0) -> MarimoServer:
        command = [
            sys.executable, "-m", "marimo", "--yes", self.mode, str(self.notebook),
            "--headless", "--no-token", "--no-sandbox", "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        if self.mode == "edit":
            command.append("--skip-update-check")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the kernel child goes down with it
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"marimo {self.mode} exited early:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"marimo {self.mode} did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL to what is left of it."""
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group id is the server's pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # the kernel child, if it outlived the server
        self.process.wait(timeout=5)

    def __enter__(self) -> MarimoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
