"""End to end: the widgets in a real JupyterLab (and Notebook 7) in headless Chromium.

One JupyterLab server for the module; a notebook with a small CNN is run once and the tests act on its widgets.
Screenshots go to ``$LIVEXAI_SCREENSHOTS`` (default: pytest's tmp dir) so a person can look at them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import (
    BROWSER_TESTS,
    JupyterServer,
    canvas_pixels,
    chromium,
    move_superpixels_and_see_a_new_map,
    run_all_cells,
    widget_root,
    write_notebook,
)

pytestmark = BROWSER_TESTS

XSS_LABEL = "<img src=x onerror=alert(1)>"

SETUP = f"""
from livexai.datasets import shapes
from livexai.models import shapes_cnn
from livexai.widgets import LayerWidget, LimeWidget

model = shapes_cnn()  # the shipped demo CNN: a circle, square, triangle or cross on a noisy background
x = shapes(1, seed=3).images[0]
labels = ["circle", "square", {XSS_LABEL!r}, "cross"]
"""
CELLS = [
    SETUP,
    "lime = LimeWidget(model, x, labels=labels, n_segments=12, n_samples=150)\nlime",
    "layer = LayerWidget(model, x, labels=labels)\nlayer",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    write_notebook(root / "widgets.ipynb", CELLS)
    write_notebook(root / "smoke.ipynb", [SETUP, CELLS[1]])
    return root


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def lab(workdir: Path, browser: Any) -> Iterator[dict[str, Any]]:
    """JupyterLab with the notebook run: the page and what it reported (dialogs, page errors)."""
    from playwright.sync_api import expect

    with JupyterServer(workdir, "lab") as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: errors.append(str(error)))
        run_all_cells(page, server, "widgets.ipynb")
        for kind in ("lime", "layer"):
            expect(page.locator(f".livexai-root[data-kind={kind}] .livexai-canvas")).to_be_visible(
                timeout=90_000
            )
            expect(status(page, kind)).to_have_text("idle", timeout=60_000)
        yield {"page": page, "dialogs": dialogs, "errors": errors, "server": server}
        page.close()


def status(page: Any, kind: str) -> Any:
    return widget_root(page, kind).locator(".livexai-status")


def test_moving_the_superpixel_slider_recomputes_the_overlay(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    page = lab["page"]
    widget = widget_root(page, "lime")
    canvas = widget.locator(".livexai-canvas")
    widget.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "lab-lime-before.png"), full_page=True)
    before = canvas_pixels(canvas)
    assert len(before) == 192 * 192 * 4  # the 64x64 map drawn at 3x on the canvas itself
    move_superpixels_and_see_a_new_map(widget, canvas, status(page, "lime"), before, "40")
    expect(widget.locator(".livexai-panel-info")).to_contain_text("model evaluations")
    assert widget.locator(".livexai-info").inner_text().startswith("computed in ")
    page.screenshot(path=str(shots / "lab-lime-after.png"), full_page=True)


def test_view_controls_redraw_in_the_browser_only(lab: dict[str, Any], shots: Path) -> None:
    page = lab["page"]
    widget = widget_root(page, "lime")
    canvas = widget.locator(".livexai-canvas")
    coloured = canvas_pixels(canvas)
    default_opacity = widget.locator(".livexai-opacity").input_value()
    widget.locator(".livexai-opacity").fill("0")
    plain = canvas_pixels(canvas)  # synchronous redraw: no kernel round trip to wait for
    assert plain != coloured
    widget.locator(".livexai-opacity").fill("1")
    widget.locator(".livexai-topk").fill("1")
    widget.locator(".livexai-hide-rest").check()
    top1 = canvas_pixels(canvas)
    black = sum(1 for i in range(0, len(top1), 4) if top1[i : i + 3] == [0, 0, 0])
    assert black > len(top1) // 8, "hide-the-rest with one superpixel should blank most of the image"
    widget.locator(".livexai-sign").select_option("negative")
    widget.locator(".livexai-colormap").select_option("viridis")
    widget.locator(".livexai-boundaries").check()
    page.screenshot(path=str(shots / "lab-lime-view-controls.png"), full_page=True)
    widget.locator(".livexai-hide-rest").uncheck()
    widget.locator(".livexai-topk").fill("0")
    widget.locator(".livexai-sign").select_option("all")
    widget.locator(".livexai-opacity").fill(default_opacity)
    widget.locator(".livexai-colormap").select_option("auto")


def test_labels_are_text_never_html(lab: dict[str, Any]) -> None:
    page = lab["page"]
    labels = widget_root(page, "lime").locator(".livexai-pred-label")
    assert XSS_LABEL in labels.all_inner_texts()
    assert widget_root(page, "lime").locator(".livexai-predictions img").count() == 0
    assert lab["dialogs"] == []


def test_invalid_value_shows_a_message_then_recovers(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    page = lab["page"]
    widget = widget_root(page, "lime")
    number = widget.locator(".livexai-number-n_segments")
    kept = number.input_value()
    number.fill("100000")
    number.press("Enter")
    expect(widget.locator(".livexai-error")).to_contain_text(
        "n_segments must be between 2 and 5000, got 100000"
    )
    expect(status(page, "lime")).to_have_text("error")
    expect(number).to_have_value(kept)  # the kernel refused it and the browser shows the kept value again
    page.screenshot(path=str(shots / "lab-lime-error.png"), full_page=True)
    widget.locator(".livexai-slider-n_segments").fill("20")
    expect(status(page, "lime")).to_have_text("idle", timeout=60_000)
    expect(widget.locator(".livexai-error")).to_be_hidden()


def test_clicking_a_prediction_explains_that_class(lab: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page = lab["page"]
    widget = widget_root(page, "lime")
    second = widget.locator(".livexai-pred").nth(1)
    index = second.get_attribute("data-index")
    second.click()
    expect(second).to_have_attribute("aria-pressed", "true")
    expect(status(page, "lime")).to_have_text("idle", timeout=60_000)
    assert index is not None


def test_switching_layer_and_method_in_the_layer_widget(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    page = lab["page"]
    widget = widget_root(page, "layer")
    widget.scroll_into_view_if_needed()
    select = widget.locator(".livexai-select-layer")
    options = select.locator("option").all_inner_texts()
    assert len(options) >= 2 and "features.conv1" in options
    canvas = widget.locator(".livexai-canvas")
    before = canvas_pixels(canvas)
    select.select_option("features.conv1")
    expect(widget.locator(".livexai-panel-title")).to_contain_text("features.conv1", timeout=60_000)
    expect(status(page, "layer")).to_have_text("idle", timeout=60_000)
    assert canvas_pixels(canvas) != before
    page.screenshot(path=str(shots / "lab-layer-gradcam.png"), full_page=True)

    widget.locator(".livexai-select-method").select_option("activations")
    channels = widget.locator(".livexai-channel")
    expect(channels.first).to_be_visible(timeout=60_000)
    assert channels.count() == 8  # features.conv1 has 8 channels
    third = channels.nth(2)
    chosen = third.get_attribute("data-channel")
    third.click()
    expect(widget.locator(f'.livexai-channel[data-channel="{chosen}"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(widget.locator(".livexai-channels .livexai-section-title")).to_contain_text(f"channel {chosen}")
    page.screenshot(path=str(shots / "lab-layer-activations.png"), full_page=True)


def test_interactive_elements_suppress_jupyterlab_shortcuts(lab: dict[str, Any]) -> None:
    page = lab["page"]
    for selector in ("input", "select", "button"):
        for element in page.locator(f".livexai-root {selector}").all():
            assert element.get_attribute("data-lm-suppress-shortcuts") == "true"
    assert lab["errors"] == [], lab["errors"]


def test_smoke_in_notebook_7(workdir: Path, browser: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    with JupyterServer(workdir, "notebook") as server:
        page = browser.new_page(viewport={"width": 1300, "height": 1400})
        run_all_cells(page, server, "smoke.ipynb", app="notebook")
        widget = widget_root(page, "lime")
        expect(widget.locator(".livexai-canvas")).to_be_visible(timeout=90_000)
        expect(status(page, "lime")).to_have_text("idle", timeout=60_000)
        assert sum(canvas_pixels(widget.locator(".livexai-canvas"))) > 0
        page.screenshot(path=str(shots / "notebook7-lime.png"), full_page=True)
        page.close()
