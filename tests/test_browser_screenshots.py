"""End to end: can a student read the maps? Screenshots in JupyterLab's light and dark themes, and overlay contrast.

The LimeWidget, ShapWidget (GradientSHAP) and LayerWidget (Grad-CAM) explain the shipped shapes CNN on the first
quick-start image, a maroon circle on green: the case where a red "supports" overlay drawn over the colour image
disappeared. One JupyterLab server, a 1440x900 window; screenshots go to ``$LIVEXAI_SCREENSHOTS`` (default: a
pytest tmp dir, printed) so a person can look at them. The Explorer's are taken by tests/test_browser_explorer.py.
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

IMAGES = "datasets.shapes(16, seed=1)"  # the quick-start images; the first is a maroon circle on green
SETUP = f"""
from livexai import datasets, models
from livexai.widgets import LayerWidget, LimeWidget, ShapWidget

model = models.shapes_cnn()
images, labels, masks = {IMAGES}
x = images[0]
classes = datasets.SHAPE_CLASSES
"""
CELLS = [
    SETUP,
    "lime = LimeWidget(model, x, labels=classes, n_samples=300)\nlime",
    "shap = ShapWidget(model, x, background=images[8:12], method='gradient', labels=classes)\nshap",
    "layer = LayerWidget(model, x, labels=classes)\nlayer",
    # A model nobody here wrote: Hugging Face's ConvNeXt (channels-last blocks), built from a config, passed as is.
    "import torch, transformers\n"
    "from livexai.widgets import Explorer\n"
    "torch.manual_seed(0)\n"
    "config = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=4)\n"
    "convnext = transformers.ConvNextForImageClassification(config)\n"
    "explorer = Explorer(convnext, images[:4], labels=classes, n_segments=20, n_samples=100)\nexplorer",
]
KINDS = ("lime", "shap", "layer")
SCALE = 3  # the 64x64 maps are drawn at 3x on their canvases (displayScale in js/widget.js)
# The overlay must change what the student sees on the object, not a few pixels: mean |difference| over the
# object's RGB values (of 255), and the share of the object's pixels that visibly change.
MIN_MEAN_DIFFERENCE = 25
MIN_CHANGED_SHARE = 0.5
VISIBLE_CHANGE = 15


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("screenshots-lab")
    write_notebook(root / "widgets.ipynb", CELLS)
    with notebook_in_lab(root, "widgets.ipynb") as (page, errors):
        for kind in KINDS:
            widget = page.locator(f".livexai-root[data-kind={kind}]")
            expect(widget.locator(".livexai-panel-info")).to_contain_text("computed in", timeout=120_000)
            expect(widget.locator(".livexai-status")).to_have_text("idle", timeout=120_000)
        yield {"page": page, "errors": errors}


def object_mask() -> list[list[bool]]:
    """The maroon circle's pixels (64x64), from the same generator the notebook uses."""
    from livexai import datasets

    images, _, masks = eval(IMAGES, {"datasets": datasets})
    red, green, blue = (float(images[0, c][masks[0]].mean()) for c in range(3))
    assert red > green + 0.2 and red > blue + 0.1, "the first shapes image is no longer a maroon/red object"
    return masks[0].tolist()


def object_pixels(rgba: list[int], mask: list[list[bool]]) -> list[tuple[int, int, int]]:
    """The RGB of the centre display pixel of each object pixel of a 3x canvas."""
    width = len(mask[0]) * SCALE
    pixels = []
    for y, row in enumerate(mask):
        for x, inside in enumerate(row):
            if inside:
                o = ((y * SCALE + SCALE // 2) * width + x * SCALE + SCALE // 2) * 4
                pixels.append((rgba[o], rgba[o + 1], rgba[o + 2]))
    return pixels


def test_a_red_overlay_shows_on_a_maroon_object(lab: dict[str, Any], shots: Path) -> None:
    page = lab["page"]
    lime = widget_root(page, "lime")
    lime.scroll_into_view_if_needed()
    canvas = lime.locator(".livexai-canvas")
    mask = object_mask()
    opacity = lime.locator(".livexai-opacity")
    default = opacity.input_value()
    overlay = object_pixels(canvas_pixels(canvas), mask)
    opacity.fill("0")
    plain = object_pixels(canvas_pixels(canvas), mask)  # the underlay alone (view controls redraw at once)
    opacity.fill(default)
    opacity.blur()  # no focus ring in the screenshots
    assert object_pixels(canvas_pixels(canvas), mask) == overlay

    n = len(plain)
    differences = [
        sum(abs(a - b) for a, b in zip(p, q, strict=True)) / 3 for p, q in zip(plain, overlay, strict=True)
    ]
    mean_difference = sum(differences) / n
    changed = sum(d > VISIBLE_CHANGE for d in differences) / n
    redness = [sum(r - (g + b) / 2 for r, g, b in pixels) / n for pixels in (plain, overlay)]
    lightness = [sum(sum(p) / 3 for p in pixels) / n for pixels in (plain, overlay)]
    print(f"\nobject: mean |difference| {mean_difference:.1f}, {changed:.0%} changed, redness {redness}, "
          f"lightness {lightness}")  # fmt: skip
    assert mean_difference > MIN_MEAN_DIFFERENCE
    assert changed > MIN_CHANGED_SHARE, "only a few pixels of the object changed"
    assert redness[1] - redness[0] > MIN_MEAN_DIFFERENCE, (
        "the evidence for 'circle' should show red on the circle"
    )
    assert abs(lightness[1] - lightness[0]) > VISIBLE_CHANGE


def test_screenshots_in_light_and_dark_themes(lab: dict[str, Any], shots: Path) -> None:
    page = lab["page"]
    backgrounds = {}
    for theme in ("light", DARK_THEME):
        if theme == DARK_THEME:
            set_theme(page, DARK_THEME)
        name = "dark" if theme == DARK_THEME else "light"
        for kind in KINDS:
            root = widget_root(page, kind)
            root.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
            page.wait_for_timeout(200)
            root.screenshot(path=str(shots / f"{kind}-{name}.png"))
        backgrounds[name] = widget_root(page, "lime").evaluate("(el) => getComputedStyle(el).backgroundColor")
    assert backgrounds["light"] != backgrounds["dark"], "the widgets ignore JupyterLab's theme"
    assert lab["errors"] == [], lab["errors"]


def test_the_explorer_on_a_hugging_face_convnext(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    explorer = widget_root(lab["page"], "explorer")
    expect(explorer.locator(".livexai-panel .livexai-canvas")).to_have_count(4, timeout=120_000)
    expect(explorer.locator(".livexai-status")).to_have_text("idle", timeout=120_000)
    assert explorer.locator(".livexai-error").first.text_content() == ""
    explorer.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    explorer.screenshot(path=str(shots / "explorer-convnext.png"))
    for panel in explorer.locator(".livexai-panel").all():
        pixels = canvas_pixels(panel.locator(".livexai-canvas"))
        assert len(set(zip(pixels[0::4], pixels[1::4], pixels[2::4], strict=True))) > 10, "a blank map"
    assert "zero everywhere" not in (explorer.text_content() or "")  # the default layer gives a real Grad-CAM
