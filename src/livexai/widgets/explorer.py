"""``Explorer``: pick an image and a class, see LIME, KernelSHAP, GradientSHAP and Grad-CAM side by side.

Four methods answer the same question in different ways; where their maps agree (high rank correlation) an
explanation is more trustworthy than any single map suggests, and where they disagree it is worth a closer look.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
import traitlets
from typing_extensions import Unpack

from .._adapter import Cancelled, Model, ModelAdapter, OutputSpace
from .._inputs import as_single_input, display_image
from ..cam import default_layer
from ..explanation import Explanation
from ._base import ExplainerWidget, Panel, Prediction, WidgetOptions, panel, top_predictions
from ._params import OUTPUT, SEED, Fixed, IntParam, positive_int
from ._runner import JobContext, describe_error
from ._serialize import WireArray, image_to_wire, to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


class ExplorerOptions(WidgetOptions, total=False):
    """``Explorer``'s keywords: its parameters and fixed settings."""

    selected: int
    n_segments: int
    n_samples: int
    gradient_samples: int
    background_size: int
    seed: int
    output: OutputSpace


class Explorer(ExplainerWidget[dict[str, Explanation]]):
    """Compare four explanation methods on a set of images.

    ``Explorer(model, images, labels=None, background=None)``: ``images`` is a batch ``(N, C, H, W)`` (or a list
    of ``(C, H, W)``) of model-ready images shown as a strip to pick from; the top-5 predictions are a bar list
    (click one to explain that class). ``background`` (default: ``images``) is what KernelSHAP and GradientSHAP
    compare against. Optional keywords: ``display_images`` (one display image per input), ``layer`` (Grad-CAM's
    layer, default the deepest spatial one), ``selected`` (the image shown first), ``n_segments``,
    ``n_samples`` (LIME and KernelSHAP), and fixed at creation ``gradient_samples`` (GradientSHAP),
    ``background_size`` (KernelSHAP's background rows, 8: each coalition costs one evaluation per row), ``seed``,
    ``output``.

    :attr:`explanation` is a dict ``{method: Explanation}`` and :attr:`correlations` the Spearman rank
    correlation matrix ``(4, 4)`` between the maps (NaN where a map is constant or missing).
    """

    FIXED: ClassVar[dict[str, Fixed]] = {
        "seed": SEED,
        "output": OUTPUT,
        "gradient_samples": positive_int(50),
        "background_size": positive_int(8),
    }

    kind = traitlets.Unicode("explorer").tag(sync=True)
    title = traitlets.Unicode("Explorer").tag(sync=True)
    selected = IntParam(0, "image", low=0, high=lambda widget: len(widget._images) - 1, drawn=False)
    n_segments = IntParam(50, "superpixels", low=2, high=5000, ui=(4, 200, 1))
    n_samples = IntParam(500, "samples (LIME, KernelSHAP)", low=10, high=100_000, ui=(50, 5000, 50))
    thumbnails = traitlets.List(traitlets.Dict()).tag(sync=True)
    correlation = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)

    def __init__(
        self,
        model: Model,
        images: torch.Tensor | Sequence[torch.Tensor],
        *,
        background: torch.Tensor | None = None,
        display_images: Sequence[Any] | None = None,
        layer: str | None = None,
        **options: Unpack[ExplorerOptions],
    ) -> None:

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
        self.correlations: torch.Tensor | None = None
        adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        selected = type(self).selected.check(self, options.get("selected", 0))
        self._layer = layer if layer is not None else default_layer(adapter, self._images[selected])
        self._shown_index = selected  # the image whose picture and predictions the browser shows
        super().__init__(adapter, self._images[selected], image=self._display_sources[selected], **options)
        self.thumbnails = [
            _thumbnail(display_image(source, image[None]))
            for source, image in zip(self._display_sources, self._images, strict=True)
        ]

    def _on_param_change(self, change: dict[str, Any]) -> None:
        if change["name"] == "selected" and self._ready and self.target is not None:
            self._ready = False  # a new image starts from its own top class: one request, below
            self.target = None
            self._ready = True
        super()._on_param_change(change)

    # -- computation -------------------------------------------------------------------------------------------
    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        index = request["selected"]
        self._load_input(self._images[index], self._display_sources[index])
        if index != self._shown_index:
            image, predictions = image_to_wire(self._display), top_predictions(self._scores, self._labels)
            context.post(lambda: self._show_input(index, image, predictions))
        shown = {
            method: panel(method, TITLES[method], status="computing", progress=0.0) for method in METHODS
        }
        began = time.perf_counter()
        results, failures = self._explain_all(request, context, shown)
        if not results:
            raise RuntimeError(
                "every method failed: " + "; ".join(f"{TITLES[m]}: {e}" for m, e in failures.items())
            )
        segments = next((results[m].segments for m in ("lime", "kernel_shap") if m in results), None)
        matrix = rank_correlations([results.get(method) for method in METHODS], segments)
        caption = (
            "Spearman rank correlation of the maps averaged over the same superpixels"
            if segments is not None
            else "Spearman rank correlation of the maps, pixel by pixel"
        )
        n_evals = sum(result.n_evals for result in results.values())
        self._post_final(context, results, list(shown.values()), began=began, n_evals=n_evals)

        def show_agreement() -> None:
            self.correlations = matrix
            self.correlation = {
                **to_wire(matrix, "float32"),
                "names": [TITLES[m] for m in METHODS],
                "caption": caption,
            }
            if failures:
                self.error = "; ".join(f"{TITLES[m]}: {message}" for m, message in failures.items())
                self.status = "error"

        context.post(show_agreement)

    def _explain_all(
        self, request: dict[str, Any], context: JobContext, shown: dict[str, Panel]
    ) -> tuple[dict[str, Explanation], dict[str, str]]:
        """Every method in :data:`_COMPUTE_ORDER`, each panel shown as it is done; one failing method does not
        hide the others: its message goes in ``failures``."""
        results: dict[str, Explanation] = {}
        failures: dict[str, str] = {}
        waiting = list(shown.values())
        context.post(lambda: self._show_partial(waiting, 0.0))
        for step, method in enumerate(_COMPUTE_ORDER):
            context.check_cancel()
            try:
                results[method] = self._explain(method, request, context, results, shown, step)
                shown[method] = panel(method, TITLES[method], results[method])
            except Cancelled:
                raise
            except Exception as error:
                logger.exception("%s failed in the Explorer", method)
                failures[method] = describe_error(error)
                shown[method] = panel(method, TITLES[method], status="error", note=failures[method])
            fraction = (step + 1) / len(_COMPUTE_ORDER)
            snapshot = list(shown.values())
            context.post(lambda snapshot=snapshot, fraction=fraction: self._show_partial(snapshot, fraction))
        return results, failures

    def _explain(
        self,
        method: str,
        request: dict[str, Any],
        context: JobContext,
        done: dict[str, Explanation],
        shown: dict[str, Panel],
        step: int,
    ) -> Explanation:
        """One method's explanation; the sampling ones stream partial maps into their panel."""
        fixed = {"seed": self._fixed["seed"], "output": self._fixed["output"]}
        common = {"target": request["target"], "image": self._display}
        if method == "grad_cam":
            from ..cam import grad_cam

            if self._layer is None:
                raise ValueError("the model has no spatial layer for Grad-CAM")
            return grad_cam(self._adapter, self._x, layer=self._layer, output=fixed["output"], **common)
        if method == "gradient_shap":
            from ..gradients import gradient_shap

            return gradient_shap(
                self._adapter,
                self._x,
                background=self._background,
                n_samples=self._fixed["gradient_samples"],
                check_cancel=context.check_cancel,
                **fixed,
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
                **fixed,
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
                background_size=min(self._fixed["background_size"], len(self._background)),
                check_cancel=context.check_cancel,
                **fixed,
                **common,
            )

        def draw(result: Explanation, fraction: float) -> tuple[list[Panel], float]:
            shown[method] = panel(method, TITLES[method], result, status="partial", progress=fraction)
            return list(shown.values()), (step + fraction) / len(_COMPUTE_ORDER)

        return self._follow(context, results, draw)

    def _show_input(self, index: int, image: WireArray | None, predictions: list[Prediction]) -> None:
        """Show image ``index`` (kernel thread); recorded here, so an update dropped by a newer request is not
        mistaken for one shown."""
        with self.hold_sync():
            self.image = image
            self.predictions = predictions
            self.correlation = None
        self._shown_index = index

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


def rank_correlations(
    explanations: Sequence[Explanation | None], segments: torch.Tensor | None = None
) -> torch.Tensor:
    """Spearman rank correlations ``(M, M)`` between the maps of ``M`` explanations of one image.

    With ``segments`` ``(H, W)`` every map is first averaged over those superpixels
    (:func:`livexai.metrics.segment_means`), so per-pixel and per-superpixel maps are compared on the same
    footing; without, pixel by pixel. A constant map scores 0 (no order); a missing explanation gives a NaN row
    and column.
    """
    from ..metrics import rank_correlation, segment_means

    maps = [
        None
        if result is None
        else result.attributions
        if segments is None
        else segment_means(result.attributions, segments)
        for result in explanations
    ]
    count = len(maps)
    matrix = torch.full((count, count), float("nan"), dtype=torch.float32)
    for i, first in enumerate(maps):
        for j in range(i, count):  # M is 4: a loop over method pairs, not over pixels
            second = maps[j]
            if first is not None and second is not None:
                matrix[i, j] = matrix[j, i] = rank_correlation(first, second)
    return matrix
