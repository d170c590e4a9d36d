"""Python and the front end agree on the synced trait names.

js/widget.js lists them in ``TRAITS`` (the traits its view reads or writes) and ``PARAMETERS`` (the parameter
traits drawn as controls, whose kernel-side changes it listens to); Python declares them as synced traits (the
common ones on ``ExplainerWidget`` in ``src/livexai/widgets/_base.py``, the rest on each widget class). A name on
one side only is a control that never shows the kernel's value, or a trait the view never draws.
"""

from __future__ import annotations

import re
from pathlib import Path

import anywidget

import livexai

WIDGET_JS = Path(__file__).resolve().parents[1] / "js" / "widget.js"
WIDGETS = (
    livexai.LimeWidget,
    livexai.ShapWidget,
    livexai.LayerWidget,
    livexai.Explorer,
    livexai.TabularExplorer,
    livexai.TextWidget,
)


def js_names(constant: str) -> set[str]:
    """The quoted trait names in ``export const <constant> = Object.freeze(...)`` of js/widget.js."""
    source = WIDGET_JS.read_text(encoding="utf-8")
    match = re.search(rf"export const {constant} = Object\.freeze\(([\[{{].*?[\]}}])\);", source, re.DOTALL)
    assert match is not None, f"js/widget.js has no `export const {constant} = Object.freeze(...)`"
    body = re.sub(r"//[^\n]*", "", match.group(1))  # comments may quote other words
    return set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', body))


def python_names() -> set[str]:
    """Every synced trait of the widgets, less the private ones and those every AnyWidget has anyway."""
    inherited = set(anywidget.AnyWidget.class_traits(sync=True))
    names: set[str] = set()
    for cls in WIDGETS:
        names |= {name for name in cls.class_traits(sync=True) if not name.startswith("_")} - inherited
    return names


def test_js_trait_lists_parse() -> None:
    traits, parameters = js_names("TRAITS"), js_names("PARAMETERS")
    assert {"kind", "status", "panels", "controls"} <= traits
    assert "n_segments" in parameters
    assert not traits & parameters, f"listed in both TRAITS and PARAMETERS: {sorted(traits & parameters)}"


def test_python_and_js_trait_names_agree() -> None:
    python, js = python_names(), js_names("TRAITS") | js_names("PARAMETERS")
    missing_in_js, missing_in_python = sorted(python - js), sorted(js - python)
    assert python == js, (
        f"synced by Python but not in js/widget.js TRAITS/PARAMETERS: {missing_in_js}; "
        f"in js/widget.js but synced by no widget: {missing_in_python}"
    )


def test_message_kinds_agree() -> None:
    """The custom messages the view sends (a panel's "sanity check" button) are the kinds the kernel handles."""
    from livexai.widgets._base import SANITY_CHECK

    assert js_names("MESSAGES") == {SANITY_CHECK}
