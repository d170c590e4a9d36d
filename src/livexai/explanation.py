"""The ``Explanation``: what every method returns, and the ways to look at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(eq=False)
class Explanation:
    """One explanation of one input for one output.

    Attributes
    ----------
    method: name of the method that produced it (``"lime"``, ``"kernel_shap"``, ``"grad_cam"``, ...).
    target: the output index explained.
    attributions: CPU float32, ``(H, W)`` for images, ``(F,)`` for tabular rows.
    weights: one value per superpixel or feature (LIME, KernelSHAP), else None.
    stderr: standard error of each weight (sampling methods), else None.
    segments: ``(H, W)`` long superpixel labels ``0..K-1`` for superpixel methods, else None.
    base_value: the value the attributions start from (KernelSHAP's E[f], LIME's intercept), or None.
    prediction: the model's output for ``target`` at the input, in the output space explained.
    params: the parameters used, plus method diagnostics (e.g. ``score``, the surrogate's weighted R²).
    n_evals: model evaluations (inputs forwarded) used.
    elapsed_s: wall time of the computation.
    image: ``(H, W, 3)`` float display image in [0, 1] for overlays (images only).
    feature_names: names of tabular features, if known.
    """

    method: str
    target: int
    attributions: torch.Tensor
    prediction: float
    weights: torch.Tensor | None = None
    stderr: torch.Tensor | None = None
    segments: torch.Tensor | None = None
    base_value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    n_evals: int = 0
    elapsed_s: float = 0.0
    image: torch.Tensor | None = None
    feature_names: list[str] | None = None

    @property
    def is_image(self) -> bool:
        return self.attributions.ndim == 2

    def _feature_scores(self) -> torch.Tensor:
        """One score per feature: superpixel weights for images, attributions for rows."""
        if self.weights is not None:
            return self.weights
        if not self.is_image:
            return self.attributions
        raise ValueError(
            f"a {self.method} explanation is a pixel map with no superpixels; use .attributions, "
            "or explain with lime/kernel_shap to get per-superpixel weights"
        )

    def top_features(self, k: int = 5, positive_only: bool = True) -> torch.Tensor:
        """Indices of the ``k`` most important features (superpixels or columns), most important first.

        With ``positive_only`` only features that push the target up are ranked (by weight); otherwise features
        are ranked by absolute weight.
        """
        scores = self._feature_scores()
        if positive_only:
            order = torch.argsort(scores, descending=True, stable=True)
            order = order[scores[order] > 0]
        else:
            order = torch.argsort(scores.abs(), descending=True, stable=True)
        return order[: max(int(k), 0)]

    def mask(
        self, num_features: int = 5, positive_only: bool = True, hide_rest: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The display image and an ``(H, W)`` int mask of the top superpixels, as lime's ``get_image_and_mask``.

        The mask is 1 on superpixels that support the target and, when ``positive_only`` is False, -1 on those
        that oppose it. ``hide_rest`` blanks everything outside the mask in the returned image.
        """
        if self.segments is None or self.image is None:
            subject = (
                f"a {self.method} explanation of a tabular row"
                if self.attributions.ndim == 1
                else f"a {self.method} pixel map"
            )
            raise ValueError(
                f"{subject} has no superpixels to mask; .mask() needs an image explained by lime or kernel_shap "
                "(for rows, use .top_features())"
            )
        scores = self._feature_scores()
        chosen = self.top_features(num_features, positive_only=positive_only)
        signs = torch.zeros(scores.shape[0], dtype=torch.long)
        signs[chosen] = torch.where(scores[chosen] > 0, 1, -1)
        mask = signs[self.segments].numpy().astype(np.int64)
        image = self.image.numpy().copy()
        if hide_rest:
            image[mask == 0] = 0.0
        return image, mask

    def plot(
        self, ax: Any = None, *, alpha: float = 0.6, cmap: str | None = None, title: bool = True
    ) -> Figure:
        """Draw the explanation with matplotlib and return the figure.

        Images: the attribution map over the display image (diverging red/blue for signed maps, centred on zero;
        sequential for non-negative maps such as Grad-CAM) with superpixel borders. Rows: a bar chart of the
        features sorted by absolute attribution.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            figure, ax = plt.subplots(
                figsize=(4.2, 4) if self.is_image else (6, 0.3 * min(len(self.attributions), 20) + 1)
            )
        else:
            figure = ax.figure
        if self.is_image:
            self._plot_image(ax, alpha=alpha, cmap=cmap)
        else:
            self._plot_bars(ax)
        if title:
            ax.set_title(f"{self.method} · target {self.target} · {self.elapsed_s * 1000:.0f} ms", fontsize=9)
        return figure

    def _plot_image(self, ax: Any, *, alpha: float, cmap: str | None) -> None:
        values = self.attributions.numpy()
        signed = bool((values < 0).any())
        limit = float(np.abs(values).max()) or 1.0
        if self.image is not None:
            base = self.image.numpy()
            if self.segments is not None:
                from skimage.segmentation import find_boundaries

                base = base.copy()
                base[find_boundaries(self.segments.numpy(), mode="inner")] = (1.0, 1.0, 0.0)
            ax.imshow(base)
        image = ax.imshow(
            values,
            cmap=cmap or ("bwr" if signed else "inferno"),
            vmin=-limit if signed else 0.0,
            vmax=limit,
            alpha=alpha if self.image is not None else 1.0,
        )
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_axis_off()

    def _plot_bars(self, ax: Any) -> None:
        values = self.attributions.numpy()
        names = self.feature_names or [f"feature {i}" for i in range(len(values))]
        order = np.argsort(-np.abs(values))[:20][::-1]
        ax.barh(
            [names[i] for i in order],
            values[order],
            color=["#d62728" if v > 0 else "#1f77b4" for v in values[order]],
        )
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.tick_params(labelsize=8)
