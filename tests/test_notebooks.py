"""Every demo notebook runs top to bottom on a CPU, within its time budget, and is stored without outputs."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "demo_notebooks").glob("*.ipynb"))
BUDGET_S = 60.0  # the classroom promise: each notebook runs in under a minute on a 2-core laptop CPU


def test_the_series_is_there() -> None:
    names = [path.name for path in NOTEBOOKS]
    assert names == [
        "01_quickstart.ipynb",
        "02_lime_superpixels.ipynb",
        "03_shap_background.ipynb",
        "04_layers.ipynb",
        "05_compare_and_trust.ipynb",
        "06_your_model.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_runs_top_to_bottom(path: Path, record_property: pytest.RecordProperty) -> None:
    notebook = nbformat.read(path, as_version=4)
    began = time.perf_counter()
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    elapsed = time.perf_counter() - began
    record_property("elapsed_s", round(elapsed, 1))
    print(f"{path.name}: {elapsed:.1f} s (budget {BUDGET_S:.0f} s)")
    if elapsed > BUDGET_S:  # reported, not failed: timings on a shared CI machine are noisy
        warnings.warn(f"{path.name} took {elapsed:.0f} s, over its {BUDGET_S:.0f} s budget", stacklevel=1)
