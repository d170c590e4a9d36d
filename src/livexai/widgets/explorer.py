"""``Explorer``: pick an image and a class, see LIME, KernelSHAP, GradientSHAP and Grad-CAM side by side.

Four methods answer the same question in different ways; where their maps agree (high rank correlation) an
explanation is more trustworthy than any single map suggests, and where they disagree it is worth a closer look.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import traitlets
from typing_extensions import Unpack

from .._adapter import Cancelled, Model, ModelAdapter, OutputSpace
from .._features import image_segments
from .._inputs import as_single_input, display_image
from ..cam import default_layer
from ..explanation import Explanation
from ..metrics import agreement, as_mask, energy_pointing_game, pointing_game
from ._base import (
    SIGNED_METHODS,
    ExplainerWidget,
    Panel,
    Pointing,
    Prediction,
    SanityRequest,
    WidgetOptions,
    panel,
    sampling_progress,
    shrink,
    top_predictions,
)
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
_ONE_PASS = ("grad_cam", "gradient_shap")  # one model pass each (tens of ms): painted first
_SAMPLING = ("lime", "kernel_shap")  # progressive, streamed side by side after them
# The request entries each method's result depends on: a change of the others reuses its last result.
_DEPENDS_ON = {
    "grad_cam": ("selected", "target"),
    "gradient_shap": ("selected", "target"),
    "lime": ("selected", "target", "n_segments", "n_samples"),
    "kernel_shap": ("selected", "target", "n_segments", "n_samples", "background_size"),
}
# The pointing game's tolerance: Zhang et al.'s 15 pixels at 224x224, scaled to the images' size (4 at 64x64).
POINTING_TOLERANCE_AT_224 = 15
# KernelSHAP's background images by default (a slider changes it): each coalition costs one evaluation per image,
# so the old 8 made KernelSHAP 8x LIME's cost. 4 halves it and keeps more accuracy than 2 (rank correlation with
# a 10x reference on the shapes CNN: 0.83 at 8, 0.71 at 4, 0.64 at 2); see benchmarks/RESULTS.md.
DEFAULT_BACKGROUND_SIZE = 4


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
    ``n_samples`` (LIME and KernelSHAP), ``background_size`` (how many of the background images KernelSHAP
    averages over, a seeded subset nested in the size; default 4: each coalition costs one evaluation per
    image), and fixed at creation ``gradient_samples`` (GradientSHAP, over the whole background), ``seed``,
    ``output``. ``masks`` (one ``(H, W)`` bool mask of the object per image, as ``livexai.datasets.shapes``
    returns) adds a "points at the object" line under each map: the pointing game's hit or miss (within 15 pixels
    at 224x224, scaled to the images' size) and the share of the map's positive evidence on the object.

    Grad-CAM and GradientSHAP (one pass each) are painted first; LIME and KernelSHAP then stream side by side on
    the same superpixels. A method whose own parameters did not change (e.g. Grad-CAM after a superpixel move,
    LIME after a background move) keeps its last result instead of being computed again.

    :attr:`explanation` is a dict ``{method: Explanation}`` and :attr:`correlations` the Spearman rank
    correlation matrix ``(4, 4)`` between the maps (NaN where a map is constant or missing). Each map has
    deletion and insertion curves under it (``faithfulness=False`` turns them off) and a "sanity check" button
    (:meth:`sanity_check` with the method's key).
    """

    FIXED: ClassVar[dict[str, Fixed]] = {
        "seed": SEED,
        "output": OUTPUT,
        "gradient_samples": positive_int(50),
    }

    kind = traitlets.Unicode("explorer").tag(sync=True)
    title = traitlets.Unicode("Explorer").tag(sync=True)
    selected = IntParam(0, "image", low=0, high=lambda widget: len(widget._images) - 1, drawn=False)
    n_segments = IntParam(50, "superpixels", low=2, high=5000, ui=(4, 200, 1))
    n_samples = IntParam(500, "samples (LIME, KernelSHAP)", low=10, high=100_000, ui=(50, 5000, 50))
    background_size = IntParam(
        DEFAULT_BACKGROUND_SIZE,
        "KernelSHAP background images",
        low=1,
        high=lambda widget: len(widget._background),
    )
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
        masks: torch.Tensor | Sequence[Any] | None = None,
        **options: Unpack[ExplorerOptions],
    ) -> None:
        self._images = _as_batch(images)
        self._masks = None if masks is None else _check_masks(masks, self._images)
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
        self._cache: dict[str, tuple[tuple[Any, ...], Explanation]] = {}  # method -> (its key, last result)
        self._generation = 0  # raised by a direct refresh(): results of earlier generations are not reused
        self._from_parameter = False  # whether refresh() runs for a parameter change
        self._segments: tuple[tuple[int, int], torch.Tensor] | None = None  # (image, n_segments) -> labels
        options.setdefault("background_size", min(DEFAULT_BACKGROUND_SIZE, len(self._background)))
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
        self._from_parameter = True
        try:
            super()._on_param_change(change)
        finally:
            self._from_parameter = False

    def refresh(self) -> None:
        """Recompute with the current parameters. Called directly (not by a parameter change) it reuses no earlier
        result, so a model changed in place is explained afresh."""
        if not self._from_parameter:
            self._generation += 1
        super().refresh()

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
        maps = [results.get(method) for method in METHODS]
        matrix = agreement(maps, segments=segments) if segments is not None else agreement(maps, on="pixels")
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
        """Every method, each panel shown as soon as it has a picture; one failing method does not hide the
        others: its message goes in ``failures``.

        The one-pass methods (:data:`_ONE_PASS`) paint first; then LIME and KernelSHAP advance a chunk each in
        turn, so both show a first picture after one chunk, instead of KernelSHAP waiting for all of LIME. A
        method whose parameters did not change since the last job is not computed again (:data:`_DEPENDS_ON`).
        """
        run = _Run(request, self._generation, context, shown, self._show_partial)
        run.show()
        for method in _ONE_PASS:
            context.check_cancel()
            self._settle(run, method, lambda method=method: self._once(method, run))
            run.show()
        streams = self._streams(run)
        while streams:
            for method, stream in list(streams.items()):
                context.check_cancel()
                result = self._settle(run, method, stream.next, final=False)
                if result is None:  # the stream ended (or failed): its last result is final
                    del streams[method]
                    if method in run.latest and method not in run.failures:
                        self._settle(run, method, lambda method=method: run.latest[method])
                    run.show()
                    continue
                first = method not in run.latest
                run.latest[method] = result
                shown[method] = panel(
                    method, TITLES[method], result, status="partial", progress=sampling_progress(result)
                )
                run.show(urgent=first)  # a panel's first picture is never dropped by the throttle
        return run.results, run.failures

    def _settle(
        self, run: _Run, method: str, compute: Callable[[], Explanation | None], *, final: bool = True
    ) -> Explanation | None:
        """``compute()``, or None with the failure recorded in ``run.failures`` and shown in the method's panel;
        a ``final`` result is kept (also for reuse by the next job) and shown as done."""
        try:
            result = compute()
        except Cancelled:
            raise
        except Exception as error:
            logger.exception("%s failed in the Explorer", method)
            run.fail(method, describe_error(error))
            return None
        if final and result is not None:
            run.results[method] = result
            run.shown[method] = self._final_panel(method, result, run.request["selected"])
            self._cache[method] = (_cache_key(method, run.request, run.generation), result)
        return result

    def _final_panel(self, method: str, result: Explanation, index: int) -> Panel:
        """A final map's panel: with its sanity-check button and, given masks, whether it points at the object."""
        entry: Panel = {**panel(method, TITLES[method], result), "sanity": True}
        if self._masks is not None:
            entry["pointing"] = _pointing(result, self._masks[index])
        return entry

    def _sanity_request(self, key: str | None) -> SanityRequest:
        """The check of ``key``'s method (default Grad-CAM) on the selected image, with the current parameters."""
        method = key or "grad_cam"
        if method not in METHODS:
            raise ValueError(f"unknown panel {method!r}; expected one of {', '.join(METHODS)}")
        index = self.selected
        x = self._images[index]
        common = {"seed": self._fixed["seed"], "output": self._fixed["output"]}
        kwargs: dict[str, Any] = {
            "grad_cam": {"layer": self._layer, "output": self._fixed["output"]},
            "gradient_shap": {
                **common,
                "background": self._background,
                "n_samples": self._fixed["gradient_samples"],
            },
            "lime": {**common, "n_segments": self.n_segments, "n_samples": self.n_samples},
            "kernel_shap": {
                **common,
                "n_segments": self.n_segments,
                "n_samples": self.n_samples,
                "background": self._background,
                "background_size": self.background_size,
            },
        }[method]
        return SanityRequest(
            key=method,
            title=TITLES[method],
            method=method,
            x=x,
            image=display_image(self._display_sources[index], x[None]),
            target=self.target,
            signed=method in SIGNED_METHODS,
            kwargs=kwargs,
        )

    def _reuse(self, method: str, run: _Run) -> Explanation | None:
        """The last result of ``method`` if the parameters it depends on are unchanged (same seed: same result)."""
        key, result = self._cache.get(method, (None, None))
        return result if key == _cache_key(method, run.request, run.generation) else None

    def _once(self, method: str, run: _Run) -> Explanation:
        """A one-pass method's explanation (Grad-CAM, GradientSHAP), or its last one if it can be reused."""
        reused = self._reuse(method, run)
        if reused is not None:
            return reused
        common = {"output": self._fixed["output"], "target": run.request["target"], "image": self._display}
        if method == "grad_cam":
            from ..cam import grad_cam

            if self._layer is None:
                raise ValueError("the model has no spatial layer for Grad-CAM")
            return grad_cam(self._adapter, self._x, layer=self._layer, **common)
        from ..gradients import gradient_shap

        return gradient_shap(
            self._adapter,
            self._x,
            background=self._background,
            n_samples=self._fixed["gradient_samples"],
            check_cancel=run.context.check_cancel,
            seed=self._fixed["seed"],
            **common,
        )

    def _streams(self, run: _Run) -> dict[str, _Stream]:
        """LIME's and KernelSHAP's progressive runs, on the same superpixels; a result that can be reused is
        shown at once instead, and a failure to cut the superpixels fails both panels."""
        missing = [m for m in _SAMPLING if self._settle(run, m, lambda m=m: self._reuse(m, run)) is None]
        if not missing:
            return {}
        run.show()
        try:
            segments = self._superpixels(run.request)
        except Exception as error:
            logger.exception("cutting the superpixels failed in the Explorer")
            for method in missing:
                run.fail(method, describe_error(error))
            return {}
        common = {
            "segments": segments,
            "n_samples": run.request["n_samples"],
            "target": run.request["target"],
            "image": self._display,
            "seed": self._fixed["seed"],
            "output": self._fixed["output"],
            "check_cancel": run.context.check_cancel,
        }
        streams: dict[str, _Stream] = {}
        if "lime" in missing:
            from ..lime import iter_lime

            streams["lime"] = _Stream(iter_lime(self._adapter, self._x, **common), self._adapter)
        if "kernel_shap" in missing:
            from ..shap import iter_kernel_shap

            size = run.request["background_size"]
            shap = iter_kernel_shap(
                self._adapter, self._x, background=self._background, background_size=size, **common
            )
            streams["kernel_shap"] = _Stream(shap, self._adapter)
        return streams

    def _superpixels(self, request: dict[str, Any]) -> torch.Tensor:
        """The superpixels ``(H, W)`` LIME and KernelSHAP share: cut once per image and count, so a change of
        samples, class or background keeps them."""
        key = (request["selected"], request["n_segments"])
        if self._segments is None or self._segments[0] != key:
            labels, _ = image_segments(None, self._display, self._x, request["n_segments"], "slic", {})
            self._segments = (key, labels)
        return self._segments[1]

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


@dataclass(eq=False)
class _Run:
    """One job's shared state while the four methods run: the request, the panels as shown, the final results,
    the failures, the latest partial result of each streamed method, and how panels reach the widget."""

    request: dict[str, Any]
    generation: int
    context: JobContext
    shown: dict[str, Panel]
    apply: Callable[[list[Panel], float], None]
    results: dict[str, Explanation] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    latest: dict[str, Explanation] = field(default_factory=dict)

    def show(self, *, urgent: bool = True) -> None:
        """Send the panels as they stand, with the mean of their progress: ``urgent`` ones always, the others
        throttled by the runner (a newer update carries newer data anyway)."""
        snapshot = list(self.shown.values())
        fraction = sum(entry["progress"] for entry in snapshot) / len(snapshot)
        send = self.context.post if urgent else self.context.update
        send(lambda: self.apply(snapshot, fraction))

    def fail(self, method: str, message: str) -> None:
        """Record ``method``'s failure and show it in its panel."""
        self.failures[method] = message
        self.shown[method] = panel(method, TITLES[method], status="error", note=message)


@dataclass(eq=False)
class _Stream:
    """A progressive method's results, with the evaluations and time spent inside it alone: streamed side by side
    with another method, the core's own count (the adapter's evaluations and the wall time since the call began)
    would include the other's work."""

    results: Iterator[Explanation]
    adapter: ModelAdapter
    n_evals: int = 0
    elapsed_s: float = 0.0

    def next(self) -> Explanation | None:
        """The next result (None at the end), its ``n_evals`` and ``elapsed_s`` this stream's own so far."""
        evals, began = self.adapter.n_evals, time.perf_counter()
        result = next(self.results, None)
        self.n_evals += self.adapter.n_evals - evals
        self.elapsed_s += time.perf_counter() - began
        return None if result is None else replace(result, n_evals=self.n_evals, elapsed_s=self.elapsed_s)


def _cache_key(method: str, request: dict[str, Any], generation: int) -> tuple[Any, ...]:
    """The parameters ``method``'s result depends on, and the widget's refresh generation: a key to reuse it by."""
    return (generation, *(request[name] for name in _DEPENDS_ON[method]))


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
    wire = image_to_wire(shrink(image.permute(2, 0, 1)[None])[0].permute(1, 2, 0))
    assert wire is not None
    return dict(wire)


def _check_masks(masks: Any, images: torch.Tensor) -> torch.Tensor:
    """Ground-truth masks as one bool tensor ``(N, H, W)``: one per image, each the images' size, neither empty
    nor the whole image (the pointing game means nothing then); a clear error otherwise."""
    if (isinstance(masks, torch.Tensor) and masks.ndim == 3) or isinstance(masks, (list, tuple)):
        items = list(masks)
    else:
        shape = f" of shape {tuple(masks.shape)}" if isinstance(masks, torch.Tensor) else ""
        raise TypeError(
            "masks must be a tensor (N, H, W) or a list of (H, W) masks, one per image; "
            f"got {type(masks).__name__}{shape}"
        )
    if len(items) != len(images):
        raise ValueError(
            f"masks has {len(items)} masks for {len(images)} images; give one (H, W) mask per image"
        )
    shape = images.shape[-2:]
    checked = []
    for index, mask in enumerate(items):
        try:
            checked.append(as_mask(mask, shape))
        except (TypeError, ValueError) as error:
            raise type(error)(f"masks[{index}]: {error}") from error
    return torch.stack(checked).cpu()


def _pointing(result: Explanation, mask: torch.Tensor) -> Pointing:
    """Whether ``result``'s map points at the object of ``mask``, and how much of its evidence lies on it."""
    tolerance = round(POINTING_TOLERANCE_AT_224 * max(mask.shape) / 224)
    return {
        "hit": pointing_game(result, mask, tolerance=tolerance),
        "energy": round(energy_pointing_game(result, mask), 4),
        "tolerance": float(tolerance),
        "share": round(float(mask.float().mean()), 4),
    }
