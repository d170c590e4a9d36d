"""End to end in marimo: ``mo.ui.anywidget(...)`` of the widgets, in headless Chromium.

anywidget widgets run in every host that speaks its protocol; this checks the one most unlike Jupyter. marimo runs
a notebook's cells on an asyncio loop in its kernel (a child process of ``marimo edit``, a thread of ``marimo
run``), so the runner finds that loop running when a cell or a front-end change submits a job and applies the
results there, as in ipykernel. A job submitted from a plain thread (no loop) has its results applied on the
worker thread; marimo's comm keeps the session's stream from when it was opened, so those reach the page too
(the ``run`` test checks that path). Arrays arrive as binary buffers either way: the maps are drawn from them.

Screenshots go to ``$LIVEXAI_SCREENSHOTS`` (default: pytest's tmp dir).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import (
    BROWSER_TESTS,
    canvas_pixels,
    chromium,
    move_superpixels_and_see_a_new_map,
    wait_for_change,
    widget_root,
)
from marimo_harness import MarimoServer, write_marimo_notebook

pytest.importorskip("marimo")

pytestmark = BROWSER_TESTS

IMPORTS = (
    """
    import threading

    import marimo as mo

    import livexai
    from livexai import datasets, models
    """,
    [],
    ["datasets", "livexai", "mo", "models", "threading"],
)
DATA = (
    """
    model = models.shapes_cnn()
    images, labels, masks = datasets.shapes(4)
    """,
    ["datasets", "models"],
    ["images", "labels", "masks", "model"],
)
LIME = (
    """
    lime = mo.ui.anywidget(
        livexai.LimeWidget(model, images[0], labels=datasets.SHAPE_CLASSES, n_segments=20, n_samples=200)
    )
    lime
    """,
    ["datasets", "images", "livexai", "mo", "model"],
    ["lime"],
)
EXPLORER = (
    """
    explorer = mo.ui.anywidget(livexai.Explorer(model, images, labels=datasets.SHAPE_CLASSES, n_samples=200))
    explorer
    """,
    ["datasets", "images", "livexai", "mo", "model"],
    ["explorer"],
)
# A change made from a plain thread, where no event loop runs: the new value and status "computing" are sent from
# that thread, the runner applies the results ("idle", the new map) on its worker thread.
FROM_A_THREAD = (
    """
    def _from_a_thread():
        lime.widget.wait(60)
        lime.widget.n_segments = 30

    threading.Thread(target=_from_a_thread, daemon=True).start()
    """,
    ["lime", "threading"],
    [],
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def open_page(browser: Any, server: MarimoServer) -> tuple[Any, list[str]]:
    """A page on the server's notebook that never leaves 127.0.0.1; page errors are collected."""
    page = browser.new_page(viewport={"width": 1300, "height": 1500})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(
        re.compile(r"^(?!https?://127\.0\.0\.1[:/]|data:|blob:)"), lambda route: route.abort()
    )  # offline: marimo's page asks for nothing outside today; keep it that way
    page.goto(server.url)
    return page, errors


@pytest.fixture(scope="module")
def edit(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[dict[str, Any]]:
    """``marimo edit`` of a notebook with a LimeWidget and an Explorer, both shown and done."""
    from playwright.sync_api import expect

    notebook = write_marimo_notebook(
        tmp_path_factory.mktemp("marimo") / "widgets.py", [IMPORTS, DATA, LIME, EXPLORER]
    )
    with MarimoServer(notebook, "edit") as server:
        page, errors = open_page(browser, server)
        for kind in ("lime", "explorer"):
            expect(widget_root(page, kind).locator(".livexai-canvas").first).to_be_visible(timeout=90_000)
            expect(status(page, kind)).to_have_text("idle", timeout=60_000)
        yield {"page": page, "errors": errors}
        page.close()


def status(page: Any, kind: str) -> Any:
    return widget_root(page, kind).locator(".livexai-status").first


def record_texts(locator: Any) -> None:
    """Keep every text the element shows from now on in its ``__seen`` (read back with ``seen_texts``)."""
    locator.evaluate(
        "(el) => { el.__seen = [el.textContent];"
        " new MutationObserver(() => el.__seen.push(el.textContent))"
        ".observe(el, { childList: true, characterData: true, subtree: true }); }"
    )


def seen_texts(locator: Any) -> list[str]:
    return locator.evaluate("(el) => el.__seen")


def test_lime_draws_and_recomputes_when_the_slider_moves(edit: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    page = edit["page"]
    widget = widget_root(page, "lime")
    canvas = widget.locator(".livexai-canvas")
    widget.scroll_into_view_if_needed()
    before = canvas_pixels(canvas)
    assert len(before) == 192 * 192 * 4  # the 64x64 map drawn at 3x, from the binary buffers marimo delivered
    assert len(set(before)) > 10, "the LIME map is blank"
    assert "circle" in widget.locator(".livexai-pred-label").all_inner_texts()

    move_superpixels_and_see_a_new_map(widget, canvas, status(page, "lime"), before, "40")
    expect(widget.locator(".livexai-info")).to_contain_text("model evaluations")
    assert widget.locator(".livexai-info").inner_text().startswith("computed in ")
    canvas.scroll_into_view_if_needed()  # marimo caps a cell's output height: the map is below its fold
    page.screenshot(path=str(shots / "marimo-lime.png"))
    assert edit["errors"] == [], edit["errors"]


def test_explorer_streams_partial_results_into_the_page(edit: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    page = edit["page"]
    explorer = widget_root(page, "explorer")
    explorer.scroll_into_view_if_needed()
    canvases = explorer.locator(".livexai-panel .livexai-canvas")
    expect(canvases).to_have_count(4)
    first = canvas_pixels(canvases.first)
    record_texts(status(page, "explorer"))

    explorer.locator(".livexai-slider-n_segments").fill("30")
    expect(explorer.locator(".livexai-number-n_segments")).to_have_value("30")
    wait_for_change(canvases.first, first)
    expect(explorer.locator(".livexai-panel-info", has_text="computing")).to_have_count(0, timeout=60_000)
    expect(status(page, "explorer")).to_have_text("idle", timeout=60_000)
    seen = seen_texts(status(page, "explorer"))
    partial = [text for text in seen if re.fullmatch(r"computing (\d+)%", text) and text != "computing 100%"]
    assert partial, f"no partial progress reached the page, only {seen}"
    for i in range(4):
        assert len(set(canvas_pixels(canvases.nth(i)))) > 10, f"panel {i} is blank"
    canvases.first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "marimo-explorer.png"))
    assert edit["errors"] == [], edit["errors"]


def test_marimo_run_shows_updates_made_from_a_plain_thread(
    tmp_path_factory: pytest.TempPathFactory, browser: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    notebook = write_marimo_notebook(
        tmp_path_factory.mktemp("marimo-run") / "app.py", [IMPORTS, DATA, LIME, FROM_A_THREAD]
    )
    with MarimoServer(notebook, "run") as server:
        page, errors = open_page(browser, server)
        widget = widget_root(page, "lime")
        expect(widget.locator(".livexai-canvas")).to_be_visible(timeout=90_000)
        expect(widget.locator(".livexai-number-n_segments")).to_have_value("30", timeout=60_000)
        # "computing" went out with the new value; only the worker thread's update says "idle" after it.
        expect(status(page, "lime")).to_have_text("idle", timeout=60_000)
        expect(widget.locator(".livexai-info")).to_contain_text("model evaluations")
        assert len(set(canvas_pixels(widget.locator(".livexai-canvas")))) > 10
        page.screenshot(path=str(shots / "marimo-run-lime.png"), full_page=True)
        page.close()
        assert errors == [], errors
