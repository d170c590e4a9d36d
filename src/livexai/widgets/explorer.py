"""``Explorer``: pick an image and a class, see LIME, KernelSHAP, GradientSHAP and Grad-CAM side by side.

Four methods answer the same question in different ways; where their maps agree (high rank correlation) an
explanation is more trustworthy than any single map suggests, and where they disagree it is worth a closer look.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import traitlets

from .._adapter import Cancelled, Model, ModelAdapter
from .._inputs import as_single_input, display_image
from ._base import ExplainerWidget, Param, panel, top_predictions
from ._runner import JobContext, describe_error, shared_runner
from ._serialize import image_to_wire, to_wire
from .layer import default_layer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..explanation import Explanation

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

# Display order (also the order of the correlation table); computed fastest first so the view fills in quickly.
METHODS: tuple[str, ...] = ("lime", "kernel_shap", "gradient_shap", "grad_cam")
TITLES = {
    "lime": "LIME",
    "kernel_shap": "KernelSHAP",
    "gradient_shap": "GradientSHAP",
    "grad_cam": "Grad-CAM",
}
_COMPUTE_ORDER = ("grad_cam", "gradient_shap", "lime", "kernel_shap")
THUMBNAIL_SIZE = 64  # pixels, longest side


class Explorer(ExplainerWidget):
    """Compare four explanation methods on a set of images.

    ``Explorer(model, images, labels=None, background=None)``: ``images`` is a batch ``(N, C, H, W)`` (or a list
    of ``(C, H, W)``) of model-ready images shown as a strip to pick from; the top-5 predictions are a bar list
    (click one to explain that class). ``background`` (default: ``images``) is what KernelSHAP and GradientSHAP
    compare against. Optional keywords: ``display_images`` (one display image per input), ``layer`` (Grad-CAM's
    layer, default the deepest spatial one), ``n_segments``, ``n_samples`` (LIME and KernelSHAP),
    ``gradient_samples`` (GradientSHAP), ``background_size`` (KernelSHAP's background rows, 8: each coalition
    costs one evaluation per row), ``seed``, ``output``.

    :attr:`explanation` is a dict ``{method: Explanation}`` and :attr:`correlations` the Spearman rank
    correlation matrix ``(4, 4)`` between the maps (NaN where a map is constant or missing).
    """

    kind = traitlets.Unicode("explorer").tag(sync=True)
    title = traitlets.Unicode("Explorer").tag(sync=True)
    selected = traitlets.Int(0).tag(sync=True)
    n_segments = traitlets.Int(50).tag(sync=True)
    n_samples = traitlets.Int(500).tag(sync=True)
    thumbnails = traitlets.List(traitlets.Dict()).tag(sync=True)
    correlation = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)

    def __init__(
        self,
        model: Model,
        images: torch.Tensor | Sequence[torch.Tensor],
        *,
        labels: Any = None,
        background: torch.Tensor | None = None,
        display_images: Sequence[Any] | None = None,
        layer: str | None = None,
        gradient_samples: int = 50,
        background_size: int = 8,
        seed: int = 0,
        output: str = "logits",
        **params: Any,
    ) -> None:
        from ..layers import layers

        self._images = _as_batch(images)
        self._display_sources = (
            list(display_images) if display_images is not None else [None] * len(self._images)
        )
        if len(self._display_sources) != len(self._images):
            raise ValueError(
                f"display_images has {len(self._display_sources)} images for {len(self._images)} inputs"
            )
        self._background = self._images if background is None else _as_batch(background)
        if tuple(self._background.shape[1:]) != tuple(self._images.shape[1:]):
            raise ValueError(
                f"background has shape {tuple(self._background.shape)}; expected (B, "
                f"{', '.join(map(str, self._images.shape[1:]))}) like the images"
            )
        self._gradient_samples = int(gradient_samples)
        self._background_size = int(background_size)
        self._fixed = {"seed": seed, "output": output}
        self.correlations: torch.Tensor | None = None
        runner = params.get("runner") or shared_runner()
        adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        selected = int(params.get("selected", 0))
        if not 0 <= selected < len(self._images):
            raise ValueError(f"selected must be between 0 and {len(self._images) - 1}, got {selected}")
        with runner.exclusive():
            names = layers(adapter, self._images[selected])
        self._layer = layer if layer is not None else default_layer(adapter.model, names)
        thumbnails = [
            _thumbnail(display_image(source, image[None]))
            for source, image in zip(self._display_sources, self._images, strict=True)
        ]
        self._shown_index = selected
        super().__init__(
            adapter,
            self._images[selected],
            image=self._display_sources[selected],
            labels=labels,
            thumbnails=thumbnails,
            **params,
        )

    def _param_specs(self) -> list[Param]:
        return [
            Param("selected", "int", "image", low=0, high=len(self._images) - 1, ui=False),
            Param("n_segments", "int", "superpixels", low=2, high=5000, ui_low=4, ui_high=200, step=1),
            Param(
                "n_samples",
                "int",
                "samples (LIME, KernelSHAP)",
                low=10,
                high=100_000,
                ui_low=50,
                ui_high=5000,
                step=50,
            ),
        ]

    @traitlets.validate("selected", "n_segments", "n_samples")
    def _validate_params(self, proposal: dict[str, Any]) -> Any:
        return self._validate_trait(proposal)

    def _on_param_change(self, change: dict[str, Any]) -> None:
        if change["name"] == "selected" and self._ready and self.target is not None:
            self._ready = False  # a new image starts from its own top class: one request, below
            self.target = None
            self._ready = True
        super()._on_param_change(change)

    # -- computation -------------------------------------------------------------------------------------------
    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        index = request["selected"]
        if index != self._shown_index:
            self._load_input(self._images[index], self._display_sources[index])
            self._shown_index = index
            image, predictions = image_to_wire(self._display), top_predictions(self._scores, self._labels)
            context.post(lambda: self._show_input(image, predictions))
        results: dict[str, Explanation] = {}
        failures: dict[str, str] = {}
        shown = {
            method: panel(method, TITLES[method], status="computing", progress=0.0) for method in METHODS
        }
        began = time.perf_counter()
        snapshot = list(shown.values())
        context.post(lambda snapshot=snapshot: self._show_partial(snapshot, 0.0))
        for step, method in enumerate(_COMPUTE_ORDER):
            context.check_cancel()
            try:
                results[method] = self._explain(method, request, context, results, shown, step)
                shown[method] = panel(method, TITLES[method], results[method])
            except Cancelled:
                raise
            except Exception as error:  # one failing method must not hide the other three
                logger.exception("%s failed in the Explorer", method)
                failures[method] = describe_error(error)
                shown[method] = panel(method, TITLES[method], status="error", note=failures[method])
            fraction = (step + 1) / len(_COMPUTE_ORDER)
            snapshot = list(shown.values())
            context.post(lambda snapshot=snapshot, fraction=fraction: self._show_partial(snapshot, fraction))
        context.check_cancel()
        if not results:
            raise RuntimeError(
                "every method failed: " + "; ".join(f"{TITLES[m]}: {e}" for m, e in failures.items())
            )
        matrix = rank_correlations([results.get(method) for method in METHODS])
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        n_evals = sum(result.n_evals for result in results.values())
        final = list(shown.values())

        def apply() -> None:
            self.correlations = matrix
            self.correlation = {**to_wire(matrix, "float32"), "names": [TITLES[m] for m in METHODS]}
            self._finish(dict(results), final, elapsed_ms=elapsed_ms, n_evals=n_evals)
            if failures:
                self.error = "; ".join(f"{TITLES[m]}: {message}" for m, message in failures.items())
                self.status = "error"

        context.post(apply)

    def _explain(
        self,
        method: str,
        request: dict[str, Any],
        context: JobContext,
        done: dict[str, Explanation],
        shown: dict[str, dict[str, Any]],
        step: int,
    ) -> Explanation:
        """One method's explanation; the sampling ones stream partial maps into their panel."""
        common = {"target": request["target"], "image": self._display}
        if method == "grad_cam":
            from ..cam import grad_cam

            if self._layer is None:
                raise ValueError("the model has no spatial layer for Grad-CAM")
            return grad_cam(self._adapter, self._x, layer=self._layer, output=self._fixed["output"], **common)
        if method == "gradient_shap":
            from ..gradients import gradient_shap

            return gradient_shap(
                self._adapter,
                self._x,
                background=self._background,
                n_samples=self._gradient_samples,
                check_cancel=context.check_cancel,
                **self._fixed,
                **common,
            )
        if method == "lime":
            from ..lime import iter_lime

            results = iter_lime(
                self._adapter,
                self._x,
                n_segments=request["n_segments"],
                n_samples=request["n_samples"],
                check_cancel=context.check_cancel,
                **self._fixed,
                **common,
            )
        else:
            from ..shap import iter_kernel_shap

            lime_segments = done["lime"].segments if "lime" in done else None  # the same superpixels as LIME
            results = iter_kernel_shap(
                self._adapter,
                self._x,
                background=self._background,
                n_segments=request["n_segments"],
                segments=lime_segments,
                n_samples=request["n_samples"],
                background_size=min(self._background_size, len(self._background)),
                check_cancel=context.check_cancel,
                **self._fixed,
                **common,
            )
        final = None
        for result, fraction in self._stream(context, results):
            final = result
            shown[method] = panel(method, TITLES[method], result, status="partial", progress=fraction)
            overall = (step + fraction) / len(_COMPUTE_ORDER)
            snapshot = list(shown.values())
            context.update(lambda snapshot=snapshot, overall=overall: self._show_partial(snapshot, overall))
        if final is None:
            raise RuntimeError(f"{TITLES[method]} produced no result")
        return final

    def _show_input(self, image: dict[str, Any] | None, predictions: list[dict[str, Any]]) -> None:
        with self.hold_sync():
            self.image = image
            self.predictions = predictions
            self.correlation = None

    def _figure(self) -> Figure | None:
        if not self.explanation:
            return None
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2 * len(self.explanation), 3.2))
        for position, (method, result) in enumerate(self.explanation.items()):
            axes = figure.add_subplot(1, len(self.explanation), position + 1)
            result.plot(ax=axes, title=False)
            axes.set_title(f"{TITLES[method]} · {result.elapsed_s * 1000:.0f} ms", fontsize=9)
        return figure


def _as_batch(images: Any) -> torch.Tensor:
    """Images as one batch ``(N, C, H, W)``: a 4-d tensor, or a list of ``(C, H, W)`` tensors."""
    if isinstance(images, torch.Tensor):
        batch = images if images.ndim == 4 else images.unsqueeze(0) if images.ndim == 3 else None
        if batch is None:
            raise ValueError(
                f"images has shape {tuple(images.shape)}; expected (N, C, H, W) or a list of (C, H, W)"
            )
    elif isinstance(images, (list, tuple)) and images and all(isinstance(i, torch.Tensor) for i in images):
        shapes = {tuple(as_single_input(image)[0].shape) for image in images}
        if len(shapes) != 1:
            raise ValueError(f"the images have different shapes {sorted(shapes)}; give images of one size")
        batch = torch.cat([as_single_input(image)[0] for image in images])
    else:
        raise TypeError(
            "images must be a tensor (N, C, H, W) or a non-empty list of (C, H, W) tensors, "
            f"got {type(images).__name__}"
        )
    if batch.shape[0] == 0:
        raise ValueError("images is empty; give at least one image")
    return batch


def _thumbnail(image: torch.Tensor) -> dict[str, Any]:
    """A small uint8 copy of a display image ``(H, W, 3)`` for the strip (area-averaged)."""
    height, width = image.shape[:2]
    scale = min(1.0, THUMBNAIL_SIZE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
    wire = image_to_wire(image)
    assert wire is not None
    return dict(wire)


def rank_correlations(explanations: Sequence[Explanation | None]) -> torch.Tensor:
    """Spearman rank correlations ``(M, M)`` between the maps of ``M`` explanations of one image.

    Uses :func:`livexai.metrics.rank_correlation` for each pair (0 for a constant map, whose pixels have no
    order); a missing explanation gives a NaN row and column.
    """
    from ..metrics import rank_correlation

    count = len(explanations)
    matrix = torch.full((count, count), float("nan"), dtype=torch.float32)
    for i, first in enumerate(explanations):
        for j in range(i, count):  # M is 4: a loop over method pairs, not over pixels
            second = explanations[j]
            if first is not None and second is not None:
                matrix[i, j] = matrix[j, i] = rank_correlation(first.attributions, second.attributions)
    return matrix
