"""``plot_grid``: rows of inputs, columns of classes; red pixels speak for a class, blue against (seed 004's
``shap.image_plot`` picture), with one colour scale shared by every map so that they can be compared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .explanation import Explanation

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

__all__ = ["plot_grid"]

# The shared colour scale ends at this percentile of |attribution| over all maps: one extreme pixel must not
# wash out every other map (values beyond it are drawn at full colour).
SCALE_PERCENTILE = 99.5
# The greyscale input under the maps is drawn faded: its darkest pixel at this lightness (1 = white), so that its
# shapes stay visible but never compete with the map's colours.
FADED_FLOOR = 0.6
# How each output space's score is labelled under a map.
_SCORE_NAMES = {"logits": "logit", "probs": "p"}


def _rows(explanations: Any) -> list[list[Explanation]]:
    """The grid's rows from an Explanation, a ``{class: Explanation}`` dict, a list of Explanations (one row), or a
    list of dicts or lists (one row each)."""
    if isinstance(explanations, Explanation):
        return [[explanations]]
    if isinstance(explanations, Mapping):
        return [list(explanations.values())]
    if isinstance(explanations, Sequence) and explanations:
        if all(isinstance(item, Explanation) for item in explanations):
            return [list(explanations)]
        rows = [list(item.values()) if isinstance(item, Mapping) else list(item) for item in explanations]
        if all(row and all(isinstance(e, Explanation) for e in row) for row in rows):
            return rows
    raise TypeError(
        "plot_grid takes an Explanation, a {class: Explanation} dict (from explain_classes), or a list of those "
        f"(one per row); got {type(explanations).__name__}"
    )


def _class_name(index: int, classes: Any) -> str:
    if classes is None:
        return f"class {index}"
    if isinstance(classes, Mapping):
        return str(classes.get(index, index))
    return str(classes[index]) if 0 <= index < len(classes) else str(index)


def _display(image: Any) -> np.ndarray | None:
    """A display image as ``(H, W, 3)`` floats in [0, 1] from ``(H, W, 3)``, ``(C, H, W)`` or ``(H, W)``."""
    if image is None:
        return None
    array = (
        image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    )
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _fading_colours() -> Colormap:
    """Blue (against) through transparent (nothing) to red (for): near-zero pixels let the image show."""
    from matplotlib.colors import ListedColormap

    steps = np.linspace(-1.0, 1.0, 256)
    colours = np.zeros((256, 4))
    colours[:, 0] = np.where(steps > 0, 0.84, 0.12)
    colours[:, 1] = np.where(steps > 0, 0.15, 0.47)
    colours[:, 2] = np.where(steps > 0, 0.16, 0.71)
    colours[:, 3] = np.clip(np.abs(steps) * 1.25, 0.0, 1.0)
    return ListedColormap(colours)


def plot_grid(
    explanations: Any,
    *,
    images: Sequence[Any] | torch.Tensor | None = None,
    classes: Sequence[str] | Mapping[int, str] | None = None,
    cell_size: float = 1.8,
) -> Figure:
    """Rows of inputs, columns of classes: each map over its faded greyscale input, red for, blue against.

    ``explanations``: a ``{class: Explanation}`` dict (one row, from :func:`livexai.explain_classes`), a list of
    such dicts (one row each), or lists of Explanations. ``images``: one display image per row (default: each
    row's ``Explanation.image``), drawn in colour in the first column. ``classes``: class names, a list indexed by
    class or a dict, for the column titles. One symmetric colour scale serves every map, so a darker red means more
    evidence wherever it is. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    rows = _rows(explanations)
    if images is not None and len(images) != len(rows):
        raise ValueError(
            f"images has {len(images)} entries for {len(rows)} rows; give one display image per row"
        )
    if any(not e.is_image for row in rows for e in row):
        raise ValueError("plot_grid draws image explanations; for tabular rows use Explanation.plot()")
    values = np.concatenate([e.attributions.numpy().ravel() for row in rows for e in row])
    limit = float(np.percentile(np.abs(values), SCALE_PERCENTILE)) or 1.0
    n_columns = 1 + max(len(row) for row in rows)
    figure, axes = plt.subplots(
        len(rows), n_columns, figsize=(cell_size * n_columns, cell_size * len(rows) + 0.7), squeeze=False
    )
    colours, scale = _fading_colours(), Normalize(-limit, limit)
    for r, row in enumerate(rows):
        image = _display(images[r] if images is not None else row[0].image)
        if image is not None:
            axes[r, 0].imshow(image)
        axes[r, 0].set_title("input" if r == 0 else "", fontsize=9)
        top = max(e.prediction for e in row)
        for c, explanation in enumerate(row, start=1):
            ax = axes[r, c]
            if image is not None:
                faded = FADED_FLOOR + (1 - FADED_FLOOR) * image.mean(axis=-1)
                ax.imshow(faded, cmap="gray", vmin=0.0, vmax=1.0)
            ax.imshow(explanation.attributions.numpy(), cmap=colours, norm=scale)
            ax.set_title(_class_name(explanation.target, classes) if r == 0 else "", fontsize=9)
            score = _SCORE_NAMES.get(explanation.params.get("output"), "score")
            ax.set_xlabel(  # the row's best-scoring class in bold: the model's answer among these columns
                f"{score} {explanation.prediction:.3g}",
                fontsize=7,
                fontweight="bold" if explanation.prediction == top else "normal",
            )
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    bar = figure.colorbar(
        plt.cm.ScalarMappable(norm=scale, cmap=colours),
        ax=axes,
        orientation="horizontal",
        fraction=0.6 / (cell_size * len(rows) + 0.7),
        pad=0.04,
        aspect=40,
    )
    method = rows[0][0].method
    bar.set_label(f"{method}: red speaks for the class, blue against (one scale for all maps)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return figure
