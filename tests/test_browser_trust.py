"""End to end: can a student read whether to trust a map? Faithfulness curves under the maps, "points at the
object" lines, and the sanity check's strip after a click, in a real JupyterLab (1440x900, light and dark).

Screenshots go to ``$LIVEXAI_SCREENSHOTS`` (default: a pytest tmp dir, printed) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import (
    BROWSER_TESTS,
    DARK_THEME,
    canvas_pixels,
    notebook_in_lab,
    set_theme,
    widget_root,
    write_notebook,
)

pytestmark = BROWSER_TESTS

CELLS = [
    "from livexai import datasets, models\n"
    "from livexai.widgets import Explorer, LayerWidget\n"
    "model = models.shapes_cnn()\n"
    "images, labels, masks = datasets.shapes(6, seed=1)\n"
    "classes = datasets.SHAPE_CLASSES",
    "layer = LayerWidget(model, images[0], labels=classes)\nlayer",
    "explorer = Explorer(model, images, labels=classes, masks=masks, n_segments=30, n_samples=300)\nexplorer",
]
N_LAYERS = 9  # shapes_cnn's layers with parameters: the strip shows the original map and all nine steps


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("trust-lab")
    write_notebook(root / "trust.ipynb", CELLS)
    with notebook_in_lab(root, "trust.ipynb") as (page, errors):
        for kind, panels in (("layer", 1), ("explorer", 4)):
            widget = widget_root(page, kind)
            expect(widget.locator(".livexai-curves-chart")).to_have_count(panels, timeout=120_000)
        yield {"page": page, "errors": errors}


def curve_points(chart: Any) -> list[list[tuple[float, float]]]:
    """The deletion and insertion polylines' points, in the chart's units."""
    lines = chart.locator("polyline").evaluate_all(
        "(lines) => lines.map((line) => line.getAttribute('points'))"
    )
    return [[tuple(map(float, pair.split(","))) for pair in points.split()] for points in lines]


def test_curves_under_a_grad_cam_map(lab: dict[str, Any]) -> None:
    layer = widget_root(lab["page"], "layer")
    chart = layer.locator(".livexai-curves-chart")
    deletion, insertion = curve_points(chart)
    assert len(deletion) == len(insertion) == 21  # CURVE_STEPS + 1 points
    # SVG y grows downwards: deletion starts high (the class is likely) and falls; insertion rises
    assert deletion[0][1] < deletion[-1][1] and insertion[0][1] > insertion[-1][1]
    legend = layer.locator(".livexai-curves-legend").all_inner_texts()
    assert legend[0].startswith("deletion AUC 0.") and "lower is better" in legend[0]
    assert legend[1].startswith("insertion AUC 0.") and "higher is better" in legend[1]


def test_the_sanity_button_draws_the_map_degrading(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    layer = widget_root(lab["page"], "layer")
    layer.locator(".livexai-sanity-button").click()
    strip = layer.locator(".livexai-sanity")
    expect(strip.locator(".livexai-sanity-summary")).to_contain_text("passes", timeout=60_000)
    steps = strip.locator(".livexai-sanity-step")
    expect(steps).to_have_count(N_LAYERS + 1)
    labels = strip.locator(".livexai-sanity-similarity").all_inner_texts()
    assert labels[0] == "1.00" and all(-1 <= float(text) <= 1 for text in labels[1:])
    assert strip.locator(".livexai-sanity-layer").first.inner_text() == "original"
    original, last = (canvas_pixels(steps.nth(i).locator("canvas")) for i in (0, N_LAYERS))
    assert original != last, "the fully randomised model's map looks the same as the original"
    layer.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    lab["page"].wait_for_timeout(200)
    layer.screenshot(path=str(shots / "trust-layer-sanity-light.png"))
    assert lab["errors"] == [], lab["errors"]


def test_explorer_points_at_the_object_and_scores_every_map(lab: dict[str, Any], shots: Path) -> None:
    explorer = widget_root(lab["page"], "explorer")
    lines = explorer.locator(".livexai-pointing").all_inner_texts()
    assert len(lines) == 4
    assert all(("points at the object" in line or "misses the object" in line) for line in lines), lines
    assert all("of the image" in line for line in lines)
    explorer.locator(".livexai-panel[data-key=grad_cam] .livexai-sanity-button").click()
    strip = explorer.locator(".livexai-sanity")
    from playwright.sync_api import expect

    expect(strip.locator(".livexai-sanity-summary")).to_contain_text("grad_cam", timeout=60_000)
    expect(strip.locator(".livexai-sanity-summary")).to_contain_text("passes", timeout=60_000)
    explorer.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    lab["page"].wait_for_timeout(200)
    explorer.screenshot(path=str(shots / "trust-explorer-light.png"))
    set_theme(lab["page"], DARK_THEME)
    explorer.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    lab["page"].wait_for_timeout(300)
    explorer.screenshot(path=str(shots / "trust-explorer-dark.png"))
    assert lab["errors"] == [], lab["errors"]
