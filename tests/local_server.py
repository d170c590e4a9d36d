"""What the Jupyter and marimo test servers share: a free port on 127.0.0.1, fresh state folders, start-up
checked through a health URL, and a stop that takes the whole process group (kernels included) down."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def state_folders(state: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Fresh folders ``state/<name>`` for a server's config, home, caches and so on (created)."""
    folders = {name: state / name for name in names}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def isolated_environment(**settings: str) -> dict[str, str]:
    """This process's environment with ``settings`` on top (pointing every folder into fresh state folders, so
    nothing is read from or left in the real home)."""
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # the kernel shares 2 cores with server and browser
    env.update(settings)
    return env


class LocalServer:
    """A server process on 127.0.0.1 (``self.port``), its output in ``self.log``."""

    name = "server"

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = log

    def launch(self, command: list[str], env: dict[str, str], health: str, *, cwd: Path | None = None,
               timeout: float = 60.0) -> None:  # fmt: skip
        """Start ``command`` in its own process group and wait until ``health`` answers 200."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log.read_text()[-3000:]}")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(f"{self.url}{health}", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"{self.name} did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL to what is left of it (a kernel child)."""
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # start_new_session: the group id is the server's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=5)

    def __exit__(self, *exc: Any) -> None:
        self.stop()
