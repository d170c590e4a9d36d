"""End to end: LayerWidget's "what does this channel look for" in a real JupyterLab. Click a channel tile, see the
optimised image stream in beside the images that excite the channel most; toggle naive optimisation (1440x900).

Screenshots go to ``$LIVEXAI_SCREENSHOTS`` (default: a pytest tmp dir, printed) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import BROWSER_TESTS, notebook_in_lab, widget_root, write_notebook

pytestmark = BROWSER_TESTS

CELLS = [
    "import livexai\n"
    "from livexai import datasets, models\n"
    "data = datasets.shapes(64, seed=0)\n"
    "layer = livexai.LayerWidget(models.shapes_cnn(), data.images[0], images=data.images,\n"
    "    layer='features.conv3', method='activations', labels=datasets.SHAPE_CLASSES, steps=96)\n"
    "layer",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("featurevis-lab")
    write_notebook(root / "featurevis.ipynb", CELLS)
    with notebook_in_lab(root, "featurevis.ipynb") as (page, errors):
        widget = widget_root(page, "layer")
        expect(widget.locator(".livexai-featurevis[data-status=done]")).to_be_visible(timeout=120_000)
        yield {"page": page, "widget": widget, "errors": errors}


def optimised_pixels(widget: Any) -> str:
    return widget.locator(".livexai-featurevis-image canvas").evaluate(
        "(c) => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.join(',')"
    )


def test_clicking_a_channel_streams_in_what_it_looks_for(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    widget, page = lab["widget"], lab["page"]
    section = widget.locator(".livexai-featurevis")
    expect(section.locator(".livexai-featurevis-example")).to_have_count(8)
    first = optimised_pixels(widget)
    tile = widget.locator(".livexai-channel").nth(3)
    channel = tile.get_attribute("data-channel")
    tile.click()
    heading = section.locator(".livexai-section-title").first
    expect(heading).to_contain_text(f"channel {channel} of features.conv3", timeout=60_000)
    expect(section).to_have_attribute("data-status", "done", timeout=60_000)
    assert optimised_pixels(widget) != first
    assert "activation" in section.locator("figcaption").first.inner_text()
    widget.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    page.wait_for_timeout(200)
    widget.screenshot(path=str(shots / "featurevis-robust-light.png"))
    assert lab["errors"] == [], lab["errors"]


def test_the_naive_toggle_recomputes_with_plain_gradient_ascent(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    widget, page = lab["widget"], lab["page"]
    section = widget.locator(".livexai-featurevis")
    widget.locator(".livexai-control-optimisation select").select_option("naive")
    expect(section.locator(".livexai-section-title").first).to_contain_text(
        "naive optimisation", timeout=60_000
    )
    expect(section).to_have_attribute("data-status", "done", timeout=60_000)
    widget.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    page.wait_for_timeout(200)
    widget.screenshot(path=str(shots / "featurevis-naive-light.png"))
    assert lab["errors"] == [], lab["errors"]
