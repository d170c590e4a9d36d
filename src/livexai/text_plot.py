"""Token explanations drawn as text with matplotlib: one line per explanation, each token on a coloured box.

The static twin of the TextWidget (and its PNG fallback): red boxes push toward the explained class, blue ones
against it; attention, never negative, is drawn in one colour. Each line is scaled to its own largest value, so
methods with different units (LIME weights, IG attributions, attention weights) can be compared by their shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .explanation import Explanation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_text"]

_FOR, _AGAINST, _ATTENTION = (0.84, 0.15, 0.16), (0.12, 0.47, 0.71), (0.9, 0.47, 0.0)  # as in js/widget.js
_MAX_ALPHA = 0.8
_SIGNED = (
    "lime",
    "kernel_shap",
    "integrated_gradients",
    "gradient_shap",
    "deep_shap",
    "deeplift",
    "saliency",
)
_LIGHT_TEXT = 0.45  # from this box opacity on, the token's text is white
_LINE_INCHES = 0.55  # height of one explanation's line
_NAME_INCHES = 1.6  # where the tokens start (the method's name is left of them)
_GAP_INCHES = 0.09  # between tokens
_UNDERLINE_GAP = 0.3  # below the middle of a token, as a fraction of a line's height


def plot_text(
    explanations: Explanation | Sequence[Explanation],
    tokens: Sequence[str],
    *,
    rationale: Any = None,
    titles: Sequence[str] | None = None,
    content: Any = None,
    figure: Figure | None = None,
) -> Figure:
    """Draw each explanation of one sequence as a line of coloured tokens; return the figure.

    ``tokens``: the display strings, one per position ``(T,)`` (e.g. ``vocab[i]`` per id); ``rationale``
    ``(T,)`` bool underlines the ground-truth tokens; ``content`` ``(T,)`` bool says which are text (default:
    every token whose string is not ``"<pad>"``/``"[PAD]"``); ``titles`` label the lines (default: the methods).
    ``figure``: an empty figure to draw in (default: a new pyplot figure, shown inline in a notebook); it is
    resized to fit the sentence.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import blended_transform_factory

    items = [explanations] if isinstance(explanations, Explanation) else list(explanations)
    if not items:
        raise ValueError("nothing to draw: pass at least one Explanation")
    for item in items:
        if item.attributions.ndim != 1 or item.attributions.shape[0] != len(tokens):
            raise ValueError(
                f"a {item.method} explanation has attributions of shape {tuple(item.attributions.shape)}; "
                f"expected one value per token ({len(tokens)})"
            )
    shown = _flags(content, len(tokens), default=[t not in ("<pad>", "[PAD]") for t in tokens])
    underlined = _flags(rationale, len(tokens), default=[False] * len(tokens))
    names = list(titles) if titles is not None else [item.method.replace("_", " ") for item in items]
    if figure is None:
        import matplotlib.pyplot as plt

        figure = plt.figure()
    figure.set_size_inches(_NAME_INCHES, _LINE_INCHES * len(items) + 0.2)
    canvas = figure.canvas
    renderer = (canvas if hasattr(canvas, "get_renderer") else FigureCanvasAgg(figure)).get_renderer()
    ax = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    # x in inches from the left edge, y in axes fractions: widening the figure afterwards moves nothing.
    place = blended_transform_factory(figure.dpi_scale_trans, ax.transAxes)
    right = 0.0
    for row, (item, name) in enumerate(zip(items, names, strict=True)):
        y = 1.0 - (row + 0.5) / len(items)
        ax.text(0.05, y, name, va="center", ha="left", fontsize=9, color="0.35", transform=place)
        right = max(right, _line(ax, renderer, place, y, len(items), item, tokens, shown, underlined))
    figure.set_size_inches(right + 0.1, figure.get_size_inches()[1])
    return figure


def is_signed(explanation: Explanation) -> bool:
    """Whether a sequence's values are drawn red/blue (for and against the class) rather than in one colour:
    attribution methods are, attention is not."""
    return explanation.method in _SIGNED or bool((explanation.attributions < 0).any())


def _flags(value: Any, length: int, default: list[bool]) -> torch.Tensor:
    flags = torch.as_tensor(default if value is None else value).reshape(-1).bool()
    if flags.shape[0] != length:
        raise ValueError(f"got {flags.shape[0]} flags for {length} tokens; expected one per token")
    return flags


def _line(
    ax: Any,
    renderer: Any,
    place: Any,
    y: float,
    n_rows: int,
    item: Explanation,
    tokens: Sequence[str],
    shown: torch.Tensor,
    underlined: torch.Tensor,
) -> float:
    """One explanation's tokens, left to right on boxes of their colour, each placed after the last one's
    measured width; ground-truth tokens bold and underlined. Returns where the line ends, in inches."""
    signed = is_signed(item)
    values = item.attributions.float()
    magnitude = values.abs() if signed else values.clamp_min(0)
    scale = float(magnitude[shown].max()) if bool(shown.any()) else 0.0
    dpi = ax.figure.dpi
    x = _NAME_INCHES
    for value, token, visible, truth in zip(
        values.tolist(), tokens, shown.tolist(), underlined.tolist(), strict=True
    ):
        if not visible:
            continue
        strength = min(abs(value) / scale, 1.0) if scale > 0 and (signed or value > 0) else 0.0
        colour = _ATTENTION if not signed else _FOR if value >= 0 else _AGAINST
        box = {
            "boxstyle": "round,pad=0.25",
            "facecolor": (*colour, strength * _MAX_ALPHA),
            "edgecolor": "0.8",
        }
        ink = "white" if strength * _MAX_ALPHA >= _LIGHT_TEXT else "black"
        drawn = ax.text(x, y, token, va="center", ha="left", fontsize=11, color=ink, bbox=box,
                        fontweight="bold" if truth else "normal", transform=place)  # fmt: skip
        width = drawn.get_window_extent(renderer).width / dpi
        if truth:
            underline = y - _UNDERLINE_GAP / n_rows
            ax.plot([x, x + width], [underline, underline], color="black", lw=1.2, transform=place)
        x += width + _GAP_INCHES
    return x
