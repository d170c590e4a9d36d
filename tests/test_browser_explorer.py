"""End to end on the real thing: the quick-start demo notebook (shapes CNN + Explorer) in JupyterLab.

Also the source of the README's screenshot: with ``LIVEXAI_README_SCREENSHOT=path`` the Explorer is saved there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import JupyterServer, canvas_pixels, chromium, chromium_available, run_all_cells

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

QUICKSTART = Path(__file__).resolve().parents[1] / "demo_notebooks" / "01_quickstart.ipynb"


@pytest.fixture(scope="module")
def explorer_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("quickstart")
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    with JupyterServer(root, "lab") as server, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        run_all_cells(page, server, QUICKSTART.name)
        explorer = page.locator(".livexai-root[data-kind=explorer]")
        expect(explorer.locator(".livexai-panel .livexai-canvas")).to_have_count(4, timeout=120_000)
        wait_until_done(explorer)
        yield page, explorer, errors
        page.close()


def wait_until_done(explorer: Any) -> None:
    """Idle, and no panel still says it is computing (a click may not have reached the kernel yet)."""
    from playwright.sync_api import expect

    expect(explorer.locator(".livexai-panel-info", has_text="computing")).to_have_count(0, timeout=120_000)
    expect(explorer.locator(".livexai-status").first).to_have_text("idle", timeout=120_000)


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
    assert not errors, errors

    target = os.environ.get("LIVEXAI_README_SCREENSHOT")
    predictions.nth(0).click()
    page.wait_for_timeout(1000)
    wait_until_done(explorer)
    folder = Path(target).parent if target else Path(os.environ.get("LIVEXAI_SCREENSHOTS", "/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    explorer.screenshot(path=target or str(folder / "explorer.png"))
