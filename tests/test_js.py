"""The front end's pure functions (colour maps, overlays, top-k masks), tested by node's own test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

JS = Path(__file__).resolve().parents[1] / "js"


def test_node_tests_pass() -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed for the front-end tests (tests/run.sh installs it)"
    tests = sorted(str(path) for path in JS.glob("*.test.mjs"))
    assert tests, "no js/*.test.mjs files found"
    result = subprocess.run([node, "--test", *tests], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
