"""Packaging: the wheel carries the front end, and ``import livexai`` stays light and headless."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE_MODULES = [
    "livexai",
    "livexai.explanation",
    "livexai._adapter",
    "livexai._inputs",
    "livexai._call",
    "livexai.segmentation",
    "livexai.lime",
    "livexai.shap",
    "livexai.cam",
    "livexai.layers",
    "livexai.gradients",
    "livexai.metrics",
    "livexai.sanity",
]


def test_wheel_contains_the_front_end(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("livexai-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "livexai/static/widget.js" in names and "livexai/static/widget.css" in names
    assert not any(name.endswith(".test.mjs") for name in names)
    assert "livexai/py.typed" in names
    assert any(name.startswith("livexai/models/weights/") for name in names)


def test_import_imports_no_widget_or_browser_code() -> None:
    """The headless core stays headless (how long the import takes is measured in benchmarks/, not here)."""
    code = (
        "import sys, importlib, livexai\n"
        f"[importlib.import_module(m) for m in {CORE_MODULES!r}]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('anywidget', 'ipywidgets', 'traitlets', 'IPython', 'matplotlib') or m.startswith('livexai.widgets'))\n"
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", f"the headless core imported {result.stdout.strip()}"


def test_tab_completion_lists_the_lazily_imported_widgets() -> None:
    import livexai

    assert {"Explorer", "LimeWidget", "ShapWidget", "LayerWidget", "lime", "datasets"} <= set(dir(livexai))
