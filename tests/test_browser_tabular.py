"""End to end: the TabularExplorer in a real JupyterLab. Pick a row, move the background slider and see the
waterfall change, open the global tab and see importance, the beeswarm and the tree (1440x900, light and dark).

Screenshots go to ``$LIVEXAI_SCREENSHOTS`` (default: a pytest tmp dir, printed) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import BROWSER_TESTS, DARK_THEME, notebook_in_lab, set_theme, widget_root, write_notebook

pytestmark = BROWSER_TESTS

CELLS = [
    "import livexai\n"
    "from livexai import datasets, models\n"
    "data = datasets.breast_cancer('test')\n"
    "table = livexai.TabularExplorer(models.breast_cancer_mlp(), data.x[:60], y=data.y[:60],\n"
    "    feature_names=list(data.feature_names), class_names=list(data.class_names), n_samples=300)\n"
    "table",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("tabular-lab")
    write_notebook(root / "tables.ipynb", CELLS)
    with notebook_in_lab(root, "tables.ipynb") as (page, errors):
        widget = widget_root(page, "tabular")
        expect(widget.locator(".livexai-step").first).to_be_visible(timeout=120_000)
        yield {"page": page, "widget": widget, "errors": errors}


def bar_widths(widget: Any) -> list[str]:
    return widget.locator(".livexai-step").evaluate_all(
        "(bars) => bars.map((bar) => bar.getAttribute('width'))"
    )


def test_picking_a_row_and_moving_the_background_slider_redraws_the_waterfall(
    lab: dict[str, Any], shots: Path
) -> None:
    from playwright.sync_api import expect

    widget, page = lab["widget"], lab["page"]
    rows = widget.locator(".livexai-rows tr[data-row]")
    expect(rows).to_have_count(60)
    heading = widget.locator(".livexai-waterfall-heading")
    first_heading = heading.inner_text()
    rows.nth(5).click()  # row 5 in the initial (row-number) order
    expect(widget.locator(".livexai-rows tr[aria-selected=true]")).to_have_attribute("data-row", "5")
    expect(heading).not_to_have_text(first_heading, timeout=60_000)
    before = bar_widths(widget)
    slider = widget.locator(".livexai-slider-background_size")
    slider.evaluate("(el) => { el.value = '3'; el.dispatchEvent(new Event('input', { bubbles: true })); }")
    page.wait_for_function(
        "([root, before]) => JSON.stringify([...root.querySelectorAll('.livexai-step')]"
        ".map((bar) => bar.getAttribute('width'))) !== before",
        arg=[widget.element_handle(), str(before).replace("'", '"')],
        timeout=60_000,
    )
    assert "KernelSHAP" in heading.inner_text() and "→" in heading.inner_text()
    widget.locator(".livexai-rows th[data-sort=confidence]").click()  # sorting is the browser's alone
    assert widget.locator(".livexai-rows th[data-sort=confidence]").inner_text().startswith("confidence")
    widget.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    page.wait_for_timeout(200)
    widget.screenshot(path=str(shots / "tabular-row-light.png"))
    assert lab["errors"] == [], lab["errors"]


def test_the_global_tab_draws_importance_the_beeswarm_and_the_tree(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    widget, page = lab["widget"], lab["page"]
    widget.locator(".livexai-tab[data-view=global]").click()
    expect(widget.locator(".livexai-global-part")).to_have_count(3)
    expect(widget.locator(".livexai-rules li").first).to_contain_text("if ", timeout=120_000)
    expect(widget.locator(".livexai-swarm circle")).to_have_count(60 * 10, timeout=120_000)
    expect(widget.locator(".livexai-error-bar")).to_have_count(12)
    assert widget.locator(".livexai-rows").count() == 0  # the row tab's table is hidden
    widget.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    page.wait_for_timeout(200)
    widget.screenshot(path=str(shots / "tabular-global-light.png"))
    set_theme(page, DARK_THEME)
    page.wait_for_timeout(300)
    widget.screenshot(path=str(shots / "tabular-global-dark.png"))
    assert lab["errors"] == [], lab["errors"]
