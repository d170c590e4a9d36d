"""``ShapWidget``: KernelSHAP over superpixels or GradientSHAP over pixels, with the background size as a control."""

from __future__ import annotations

import time
from typing import Any

import torch
import traitlets

from .._adapter import Model
from .._inputs import as_single_input
from ._base import ExplainerWidget, Param, panel
from ._runner import JobContext

METHODS: tuple[str, ...] = ("kernel", "gradient")
TITLES = {"kernel": "KernelSHAP", "gradient": "GradientSHAP"}
# Samples by default: KernelSHAP coalitions (each one model evaluation per background row used) and
# GradientSHAP draws (one forward and backward pass each); switching method swaps an untouched default.
DEFAULT_SAMPLES = {"kernel": 1000, "gradient": 50}
_FIXED = ("seed", "output")


class ShapWidget(ExplainerWidget):
    """SHAP values of one image, live.

    ``ShapWidget(model, x, background=..., image=None, labels=None, method="kernel")``. ``background`` is a batch
    ``(B, C, H, W)`` of model-ready images that stand for "feature absent". ``method="kernel"`` explains
    superpixels with :func:`livexai.kernel_shap` (controls: ``n_segments``, ``n_samples``, ``background_size``);
    ``method="gradient"`` explains pixels with :func:`livexai.gradient_shap` (``n_samples`` draws over
    ``background_size`` background rows, the seeded subset KernelSHAP would use). ``seed`` and ``output`` may
    be given as keywords.
    """

    kind = traitlets.Unicode("shap").tag(sync=True)
    title = traitlets.Unicode("SHAP").tag(sync=True)
    method = traitlets.Unicode("kernel").tag(sync=True)
    background_size = traitlets.Int(1).tag(sync=True)
    n_samples = traitlets.Int(DEFAULT_SAMPLES["kernel"]).tag(sync=True)
    n_segments = traitlets.Int(50).tag(sync=True)

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        *,
        background: torch.Tensor,
        image: Any = None,
        labels: Any = None,
        method: str = "kernel",
        **params: Any,
    ) -> None:
        self._fixed: dict[str, Any] = {name: params.pop(name) for name in _FIXED if name in params}
        self._background = _check_background(background, x)
        allowed = {"background_size", "n_samples", "n_segments", "target", "runner"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise TypeError(
                f"ShapWidget got unexpected parameters {unknown}; expected {sorted(allowed | set(_FIXED))}"
            )
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        params.setdefault("n_samples", DEFAULT_SAMPLES[method])
        params.setdefault("background_size", min(len(self._background), 10 if method == "kernel" else 50))
        super().__init__(model, x, image=image, labels=labels, method=method, **params)
        self.title = TITLES[self.method]
        self.controls = self._controls_for(self.method)

    def _param_specs(self) -> list[Param]:
        size = len(self._background)
        return [
            Param("method", "choice", "method", choices=METHODS),
            Param("n_segments", "int", "superpixels", low=2, high=5000, ui_low=4, ui_high=200, step=1),
            Param("n_samples", "int", "samples", low=1, high=100_000, ui_low=10, ui_high=5000, step=10),
            Param(
                "background_size", "int", "background rows", low=1, high=size, ui_low=1, ui_high=size, step=1
            ),
        ]

    def _controls_for(self, method: str) -> list[dict[str, Any]]:
        hidden = {"n_segments"} if method == "gradient" else set()
        return [spec.control() for name, spec in self._specs.items() if name not in hidden]

    @traitlets.validate("method", "n_segments", "n_samples", "background_size")
    def _validate_params(self, proposal: dict[str, Any]) -> Any:
        return self._validate_trait(proposal)

    def _on_param_change(self, change: dict[str, Any]) -> None:
        if change["name"] == "method" and self._ready:
            self.title = TITLES[change["new"]]
            self.controls = self._controls_for(change["new"])
            if self.n_samples == DEFAULT_SAMPLES[change["old"]]:
                self.n_samples = DEFAULT_SAMPLES[change["new"]]  # the request below supersedes this one's
        super()._on_param_change(change)

    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        began = time.perf_counter()
        method = request["method"]
        if method == "kernel":
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
            final = None
            for result, fraction in self._stream(context, results):
                final = result
                shown = [panel("shap", TITLES["kernel"], result, status="partial", progress=fraction)]
                context.update(lambda shown=shown, fraction=fraction: self._show_partial(shown, fraction))
            if final is None:
                raise RuntimeError("KernelSHAP produced no result")
        else:
            from .._perturb import subsample_indices
            from ..gradients import gradient_shap

            # The same rows KernelSHAP would keep for this size and seed (nested as the slider moves).
            kept = subsample_indices(
                len(self._background), request["background_size"], self._fixed.get("seed", 0)
            )
            rows = self._background[kept.to(self._background.device)]
            final = gradient_shap(
                self._adapter,
                self._x,
                background=rows,
                target=request["target"],
                n_samples=request["n_samples"],
                image=self._display,
                check_cancel=context.check_cancel,
                **self._fixed,
            )
        context.check_cancel()
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        shown = [panel("shap", TITLES[method], final, note=_note(final))]
        context.post(lambda: self._finish(final, shown, elapsed_ms=elapsed_ms, n_evals=final.n_evals))


def _note(explanation: Any) -> str:
    """Completeness check: how far the attributions' sum is from f(x) - base value.

    KernelSHAP's per-superpixel weights are what add up (its pixel map repeats each weight over a superpixel);
    GradientSHAP's pixel attributions add up themselves.
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
