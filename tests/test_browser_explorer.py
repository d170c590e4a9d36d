"""End to end on the real thing: the quick-start demo notebook (shapes CNN + Explorer) in JupyterLab.

At 1440x900, as a student's laptop shows it: the controls and all four maps fit on one screen, and screenshots in
the light and dark themes go to ``$LIVEXAI_SCREENSHOTS`` (default: a pytest tmp dir, printed). Also the source of
the README's screenshot: with ``LIVEXAI_README_SCREENSHOT=path`` the light-theme Explorer is saved there too
(``LIVEXAI_README_SCREENSHOT=demo_notebooks/img/explorer.png``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import BROWSER_TESTS, DARK_THEME, LAPTOP, canvas_pixels, notebook_in_lab, set_theme

pytestmark = BROWSER_TESTS

QUICKSTART = Path(__file__).resolve().parents[1] / "demo_notebooks" / "01_quickstart.ipynb"


@pytest.fixture(scope="module")
def explorer_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("quickstart")
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    with notebook_in_lab(root, QUICKSTART.name) as (page, errors):
        explorer = page.locator(".livexai-root[data-kind=explorer]")
        expect(explorer.locator(".livexai-panel .livexai-canvas")).to_have_count(4, timeout=120_000)
        wait_until_done(explorer)
        yield page, explorer, errors


def wait_until_done(explorer: Any) -> None:
    """Idle, and no panel still says it is computing (a click may not have reached the kernel yet)."""
    from playwright.sync_api import expect

    expect(explorer.locator(".livexai-panel-info", has_text="computing")).to_have_count(0, timeout=120_000)
    try:
        expect(explorer.locator(".livexai-status").first).to_have_text("idle", timeout=120_000)
    except AssertionError as failure:  # say what the kernel reported
        message = explorer.locator(".livexai-error").first.text_content()
        raise AssertionError(f"{failure}\nthe widget's error: {message}") from failure


def scroll_to_top(explorer: Any) -> None:
    explorer.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    explorer.page.wait_for_timeout(300)


def test_explorer_shows_four_methods_for_the_top_class_and_switches_class(explorer_page: Any) -> None:
    from playwright.sync_api import expect

    page, explorer, errors = explorer_page
    explorer.scroll_into_view_if_needed()
    predictions = explorer.locator(".livexai-pred")
    expect(predictions).to_have_count(4)  # shapes_cnn has four classes: all of them are in the top 5
    titles = explorer.locator(".livexai-panel-title").all_inner_texts()
    assert [title.split(" ")[0] for title in titles] == ["LIME", "KernelSHAP", "GradientSHAP", "Grad-CAM"]
    first_canvas = explorer.locator(".livexai-panel .livexai-canvas").first
    before = canvas_pixels(first_canvas)
    assert len(set(before)) > 10, "the LIME panel is blank"

    predictions.nth(1).click()  # explain the runner-up class instead
    page.wait_for_function(
        "([el, before]) => { const c = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;"
        " return c.some((v, i) => v !== before[i]); }",
        arg=[first_canvas.element_handle(), before],
        timeout=60_000,
    )
    predictions.nth(0).click()
    page.wait_for_timeout(1000)
    wait_until_done(explorer)
    assert not errors, errors


def test_controls_and_all_four_maps_fit_on_a_laptop_screen(explorer_page: Any, shots: Path) -> None:
    page, explorer, _ = explorer_page
    scroll_to_top(explorer)
    boxes = {"controls": explorer.locator(".livexai-side").bounding_box()}
    for i, panel in enumerate(explorer.locator(".livexai-panel").all()):
        boxes[f"panel {i}"] = panel.bounding_box()
    assert len(boxes) == 5
    for name, box in boxes.items():
        assert box is not None, name
        inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= LAPTOP["width"]
        assert inside and box["y"] + box["height"] <= LAPTOP["height"], f"{name} {box} is off screen"
    # The maps sit beside the controls, not below them.
    assert boxes["panel 0"]["x"] > boxes["controls"]["x"] + boxes["controls"]["width"]
    page.screenshot(path=str(shots / "explorer-light-page.png"))


def test_explorer_screenshots_in_light_and_dark_themes(explorer_page: Any, shots: Path) -> None:
    page, explorer, errors = explorer_page
    scroll_to_top(explorer)
    explorer.screenshot(path=str(shots / "explorer-light.png"))
    readme = os.environ.get("LIVEXAI_README_SCREENSHOT")
    if readme:
        Path(readme).parent.mkdir(parents=True, exist_ok=True)
        explorer.screenshot(path=readme)
    light_bg = explorer.evaluate("(el) => getComputedStyle(el).backgroundColor")

    set_theme(page, DARK_THEME)
    scroll_to_top(explorer)
    explorer.screenshot(path=str(shots / "explorer-dark.png"))
    page.screenshot(path=str(shots / "explorer-dark-page.png"))
    dark_bg = explorer.evaluate("(el) => getComputedStyle(el).backgroundColor")
    assert dark_bg != light_bg, "the widget ignores JupyterLab's theme"
    assert not errors, errors
