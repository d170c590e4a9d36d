"""End to end: the TextWidget in a real JupyterLab. Type a sentence with "not" and see the colours change; a token
that looks like HTML is shown as text, never run (1440x900, light and dark).

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
    LIGHT_THEME,
    notebook_in_lab,
    set_theme,
    widget_root,
    write_notebook,
)

pytestmark = BROWSER_TESTS

# A word of the vocabulary that is an HTML tag with a script: a widget that drew tokens as HTML would run it.
HOSTILE = '<img src=x onerror="window.__livexai_xss = 1">'

CELLS = [
    "import torch, livexai\n"
    "from livexai import datasets, models\n"
    "vocab = list(datasets.REVIEW_VOCAB)\n"
    f"vocab[vocab.index('box')] = {HOSTILE!r}  # how the word 'box' is drawn\n"
    "model = models.reviews_transformer()\n"
    "text = livexai.TextWidget(model, datasets.encode_review('the box is good .'),\n"
    "    vocab=vocab, labels=datasets.REVIEW_CLASSES, n_samples=300)\n"
    "text",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from playwright.sync_api import expect

    root = tmp_path_factory.mktemp("text-lab")
    write_notebook(root / "text.ipynb", CELLS)
    with notebook_in_lab(root, "text.ipynb") as (page, errors):
        widget = widget_root(page, "text")
        expect(widget.locator(".livexai-tokens[data-status=done] .livexai-token").first).to_be_visible(
            timeout=120_000
        )
        yield {"page": page, "widget": widget, "errors": errors}


def token_values(widget: Any) -> dict[str, float]:
    return widget.locator(".livexai-token").evaluate_all(
        "(tokens) => Object.fromEntries(tokens.map((t) => [t.textContent, Number(t.dataset.value)]))"
    )


def type_sentence(lab: dict[str, Any], sentence: str, tokens: list[str] | None = None) -> None:
    """Type ``sentence`` and press Enter; wait until its ``tokens`` (default: its words) are drawn, explained."""
    from playwright.sync_api import expect

    widget = lab["widget"]
    box = widget.locator(".livexai-sentence")
    box.fill(sentence)
    box.press("Enter")
    expect(widget.locator(".livexai-token")).to_have_text(tokens or sentence.split(), timeout=60_000)
    expect(widget.locator(".livexai-tokens")).to_have_attribute("data-status", "done", timeout=60_000)


def test_a_token_that_looks_like_html_is_shown_as_text(lab: dict[str, Any], shots: Path) -> None:
    from playwright.sync_api import expect

    widget, page = lab["widget"], lab["page"]
    texts = widget.locator(".livexai-token").all_inner_texts()
    assert texts == ["the", HOSTILE, "is", "good", "."]
    assert widget.locator(".livexai-root img").count() == 0
    assert page.evaluate("() => window.__livexai_xss === undefined")
    type_sentence(lab, "the zebra is good .", ["the", "<unk>", "is", "good", "."])  # <unk>: text too
    widget.locator(".livexai-control-method select").select_option("attention")

    expect(widget.locator(".livexai-text-note")).to_contain_text("mean of heads", timeout=60_000)
    set_theme(page, DARK_THEME)
    page.wait_for_timeout(300)
    widget.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    widget.screenshot(path=str(shots / "text-attention-dark.png"))
    assert lab["errors"] == [], lab["errors"]


def test_typing_not_flips_the_colour_of_the_sentiment_word(lab: dict[str, Any], shots: Path) -> None:
    widget, page = lab["widget"], lab["page"]
    set_theme(page, LIGHT_THEME)
    widget.locator(".livexai-control-method select").select_option("lime")
    type_sentence(lab, "the screen is good .")
    good = token_values(widget)["good"]
    assert good > 0  # explained class: positive, and "good" pushes toward it
    type_sentence(lab, "the screen is not good .")
    values = token_values(widget)
    legend = widget.locator(".livexai-text-legend").inner_text()
    assert 'toward "negative"' in legend  # the prediction flipped, and the explained class with it
    assert values["not"] > 0 or values["good"] > 0  # the negated phrase now pushes toward "negative"
    colours = widget.locator(".livexai-token").evaluate_all(
        "(tokens) => tokens.map((t) => getComputedStyle(t).backgroundColor)"
    )
    assert len(set(colours)) > 2, colours  # a readable picture, not one flat colour
    widget.evaluate("(el) => el.scrollIntoView({ block: 'start' })")
    page.wait_for_timeout(200)
    widget.screenshot(path=str(shots / "text-not-good-light.png"))
    assert lab["errors"] == [], lab["errors"]
