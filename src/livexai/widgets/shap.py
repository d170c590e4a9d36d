"""``ShapWidget``: KernelSHAP over superpixels, GradientSHAP or DeepSHAP over pixels, with the background size as a
control."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
import traitlets
from typing_extensions import Unpack

from .._adapter import Model, OutputSpace
from .._inputs import as_single_input
from ..explanation import Explanation
from ._base import ExplainerWidget, SanityRequest, WidgetOptions, panel
from ._params import OUTPUT, SEED, ChoiceParam, Fixed, IntParam
from ._runner import JobContext

METHODS: tuple[str, ...] = ("kernel", "gradient", "deep")
TITLES = {"kernel": "KernelSHAP", "gradient": "GradientSHAP", "deep": "DeepSHAP"}
# Samples by default: KernelSHAP coalitions (each one model evaluation per background row used) and
# GradientSHAP draws (one forward and backward pass each); switching method swaps an untouched default.
# DeepSHAP does not sample: its cost is the background size.
DEFAULT_SAMPLES = {"kernel": 1000, "gradient": 50}
# Background rows used by default (at most the set's size): every KernelSHAP coalition is evaluated once per
# row, so it keeps few; a GradientSHAP draw costs the same whatever the set's size, so it keeps more; DeepSHAP
# costs a forward and a backward pass per row.
DEFAULT_BACKGROUND_SIZE = {"kernel": 10, "gradient": 50, "deep": 16}


class ShapOptions(WidgetOptions, total=False):
    """``ShapWidget``'s keywords: its parameters and fixed settings."""

    method: str
    background_size: int
    n_samples: int
    n_segments: int
    seed: int
    output: OutputSpace


class ShapWidget(ExplainerWidget[Explanation]):
    """SHAP values of one image, live.

    ``ShapWidget(model, x, background=..., image=None, labels=None, method="kernel")``. ``background`` is a batch
    ``(B, C, H, W)`` of model-ready images that stand for "feature absent". ``method="kernel"`` explains
    superpixels with :func:`livexai.kernel_shap` (controls: ``n_segments``, ``n_samples``, ``background_size``);
    ``method="gradient"`` explains pixels with :func:`livexai.gradient_shap` (``n_samples`` draws over
    ``background_size`` background rows, the seeded subset KernelSHAP would use); ``method="deep"`` with
    :func:`livexai.deep_shap` over the same rows (exact: its note shows the summation gap). ``seed`` and
    ``output`` are fixed at creation.
    """

    FIXED: ClassVar[dict[str, Fixed]] = {"seed": SEED, "output": OUTPUT}

    kind = traitlets.Unicode("shap").tag(sync=True)
    title = traitlets.Unicode("SHAP").tag(sync=True)
    method = ChoiceParam("kernel", "method", choices=METHODS)
    n_segments = IntParam(
        50, "superpixels", low=2, high=5000, ui=(4, 200, 1), shown=lambda widget: widget.method == "kernel"
    )
    n_samples = IntParam(
        DEFAULT_SAMPLES["kernel"],
        "samples",
        low=1,
        high=100_000,
        ui=(10, 5000, 10),
        shown=lambda widget: widget.method in DEFAULT_SAMPLES,
    )
    background_size = IntParam(1, "background rows", low=1, high=lambda widget: len(widget._background))

    def __init__(
        self, model: Model, x: torch.Tensor, *, background: torch.Tensor, **options: Unpack[ShapOptions]
    ) -> None:
        self._background = _check_background(background, x)
        method = options.get("method", "kernel")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        options.setdefault("n_samples", DEFAULT_SAMPLES.get(method, DEFAULT_SAMPLES["kernel"]))
        options.setdefault("background_size", min(len(self._background), DEFAULT_BACKGROUND_SIZE[method]))
        super().__init__(model, x, **options)
        self.title = TITLES[self.method]

    def _on_param_change(self, change: dict[str, Any]) -> None:
        if change["name"] == "method" and self._ready:
            self.title = TITLES[change["new"]]
            untouched = self.n_samples == DEFAULT_SAMPLES.get(change["old"])
            if untouched and change["new"] in DEFAULT_SAMPLES:
                self.n_samples = DEFAULT_SAMPLES[change["new"]]  # the request below supersedes this one's
        super()._on_param_change(change)

    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        began = time.perf_counter()
        method = request["method"]
        compute = {"kernel": self._kernel_shap, "gradient": self._gradient_shap, "deep": self._deep_shap}[
            method
        ]
        final = compute(request, context)
        shown = [{**panel("shap", TITLES[method], final, note=_note(final)), "sanity": True}]
        self._post_final(context, final, shown, began=began, n_evals=final.n_evals)

    def _sanity_request(self, key: str | None) -> SanityRequest:
        """The check of the map as the parameters stand: same method, background rows, samples and class."""
        method = {"kernel": "kernel_shap", "gradient": "gradient_shap", "deep": "deep_shap"}[self.method]
        background = self._kept_background(self.background_size)
        kwargs: dict[str, Any] = {"background": background, "output": self._fixed["output"]}
        if self.method != "deep":
            kwargs |= {"n_samples": self.n_samples, "seed": self._fixed["seed"]}
        if self.method == "kernel":
            kwargs["n_segments"] = self.n_segments
        return SanityRequest(
            key="shap",
            title=TITLES[self.method],
            method=method,
            x=self._x,
            image=self._display,
            target=self.target,
            signed=True,
            kwargs=kwargs,
        )

    def _kernel_shap(self, request: dict[str, Any], context: JobContext) -> Explanation:
        from ..shap import iter_kernel_shap

        results = iter_kernel_shap(
            self._adapter,
            self._x,
            background=self._background,
            target=request["target"],
            n_segments=request["n_segments"],
            n_samples=request["n_samples"],
            image=self._display,
            background_size=request["background_size"],
            check_cancel=context.check_cancel,
            **self._fixed,
        )
        title = TITLES["kernel"]
        return self._follow(
            context,
            results,
            lambda result, fraction: (
                [panel("shap", title, result, status="partial", progress=fraction)],
                fraction,
            ),
        )

    def _kept_background(self, size: int) -> torch.Tensor:
        """The same rows KernelSHAP would keep for this size and seed (nested as the slider moves)."""
        from .._features import subsample_indices

        kept = subsample_indices(len(self._background), size, self._fixed["seed"])
        return self._background[kept.to(self._background.device)]

    def _deep_shap(self, request: dict[str, Any], context: JobContext) -> Explanation:
        from ..deep import deep_shap

        return deep_shap(
            self._adapter,
            self._x,
            background=self._kept_background(request["background_size"]),
            target=request["target"],
            image=self._display,
            check_cancel=context.check_cancel,
            **self._fixed,
        )

    def _gradient_shap(self, request: dict[str, Any], context: JobContext) -> Explanation:
        from ..gradients import gradient_shap

        return gradient_shap(
            self._adapter,
            self._x,
            background=self._kept_background(request["background_size"]),
            target=request["target"],
            n_samples=request["n_samples"],
            image=self._display,
            check_cancel=context.check_cancel,
            **self._fixed,
        )


def _note(explanation: Explanation) -> str:
    """Completeness check: how far the attributions' sum is from f(x) - base value.

    KernelSHAP's per-superpixel weights are what add up (its pixel map repeats each weight over a superpixel);
    GradientSHAP's and DeepSHAP's pixel attributions add up themselves.
    """
    if explanation.base_value is None:
        return ""
    values = explanation.weights if explanation.weights is not None else explanation.attributions
    gap = explanation.prediction - explanation.base_value - float(values.sum())
    return f"f(x) − E[f] = {explanation.prediction - explanation.base_value:.3g} (gap {gap:.2g})"


def _check_background(background: Any, x: torch.Tensor) -> torch.Tensor:
    """``background`` as a batch ``(B, C, H, W)`` matching ``x``'s shape, with a clear error otherwise."""
    if not isinstance(background, torch.Tensor):
        raise TypeError(
            f"background must be a tensor (B, C, H, W) of model-ready images, got {type(background).__name__}"
        )
    single, _ = as_single_input(x)
    if background.ndim == single.ndim - 1:
        background = background.unsqueeze(0)
    if background.ndim != single.ndim or tuple(background.shape[1:]) != tuple(single.shape[1:]):
        raise ValueError(
            f"background has shape {tuple(background.shape)}; expected (B, {', '.join(map(str, single.shape[1:]))}) "
            "to match x"
        )
    if background.shape[0] == 0:
        raise ValueError("background is empty; give at least one image")
    return background
