"""Start a real marimo server on 127.0.0.1 for the browser tests (the marimo counterpart of jupyter_harness).

Offline and self-contained: the server gets fresh HOME, XDG config/cache/state/data and TMPDIR folders (nothing
from ~/.config/marimo, nothing left behind), a ``marimo.toml`` there that runs the notebook when it opens
(``runtime.auto_instantiate``; marimo's default is to wait for a click) and never autosaves it, no update check,
no token, no sandbox prompt. marimo ``edit`` runs the notebook's kernel in a child process, so the server is
started in a process group of its own and the whole group is stopped.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Literal

from local_server import LocalServer, isolated_environment, state_folders

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


class MarimoServer(LocalServer):
    """``marimo edit`` or ``marimo run`` of one notebook on a free port of 127.0.0.1, with no token."""

    def __init__(self, notebook: Path, mode: Literal["edit", "run"] = "edit") -> None:
        super().__init__(notebook.parent / f"marimo-{mode}.log")
        self.notebook = notebook
        self.root = notebook.parent
        self.mode = mode
        self.name = f"marimo {mode}"

    def _environment(self) -> dict[str, str]:
        names = ("home", "config", "cache", "state", "data", "tmp")
        folders = state_folders(self.root / f".marimo-{self.mode}", names)
        (folders["config"] / "marimo").mkdir(exist_ok=True)
        (folders["config"] / "marimo" / "marimo.toml").write_text(CONFIG)
        return isolated_environment(
            HOME=str(folders["home"]),
            XDG_CONFIG_HOME=str(folders["config"]),
            XDG_CACHE_HOME=str(folders["cache"]),
            XDG_STATE_HOME=str(folders["state"]),
            XDG_DATA_HOME=str(folders["data"]),
            TMPDIR=str(folders["tmp"]),
            MARIMO_SKIP_UPDATE_CHECK="1",
        )

    def start(self, timeout: float = 60.0) -> MarimoServer:
        command = [
            sys.executable, "-m", "marimo", "--yes", self.mode, str(self.notebook),
            "--headless", "--no-token", "--no-sandbox", "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        if self.mode == "edit":
            command.append("--skip-update-check")
        self.launch(command, self._environment(), "/health", cwd=self.root, timeout=timeout)
        return self

    def __enter__(self) -> MarimoServer:
        return self.start()
