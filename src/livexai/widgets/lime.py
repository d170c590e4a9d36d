"""``LimeWidget``: LIME superpixel explanations that recompute as the sliders move."""

from __future__ import annotations

import time
from typing import Any

import torch
import traitlets

from .._adapter import Model
from .._perturb import BASELINES  # a tensor baseline is also accepted: kept aside and offered as "custom"
from ..segmentation import METHODS as SEGMENTATIONS
from ._base import ExplainerWidget, Param, panel
from ._runner import JobContext

_FIXED = ("seed", "output", "chunk_size")


class LimeWidget(ExplainerWidget):
    """LIME on one image, live: superpixel count, samples, segmentation, baseline and kernel width as controls.

    ``LimeWidget(model, x, image=None, labels=None, **params)``: ``x`` is the model-ready image ``(C, H, W)``,
    ``image`` an optional display image, ``labels`` class names; ``params`` are :func:`livexai.lime` keywords
    (``n_segments``, ``n_samples``, ``segmentation``, ``baseline``, ``kernel_width``, ``target``, ``seed``,
    ``output``, ``chunk_size``). The map streams in as samples are evaluated; :attr:`explanation` holds the
    latest complete :class:`livexai.Explanation`.
    """

    kind = traitlets.Unicode("lime").tag(sync=True)
    title = traitlets.Unicode("LIME").tag(sync=True)
    n_segments = traitlets.Int(50).tag(sync=True)
    n_samples = traitlets.Int(1000).tag(sync=True)
    segmentation = traitlets.Unicode("slic").tag(sync=True)
    baseline = traitlets.Unicode("blur").tag(sync=True)
    kernel_width = traitlets.Float(0.25).tag(sync=True)

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        *,
        image: Any = None,
        labels: Any = None,
        **params: Any,
    ) -> None:
        self._fixed: dict[str, Any] = {name: params.pop(name) for name in _FIXED if name in params}
        self._baselines = BASELINES
        baseline = params.get("baseline", "blur")
        if not isinstance(baseline, str):  # a tensor baseline: kept aside, offered as the choice "custom"
            self._custom_baseline = params.pop("baseline")
            self._baselines = (*BASELINES, "custom")
            params["baseline"] = "custom"
        allowed = {"n_segments", "n_samples", "segmentation", "baseline", "kernel_width", "target", "runner"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise TypeError(
                f"LimeWidget got unexpected parameters {unknown}; expected {sorted(allowed | set(_FIXED))}"
            )
        super().__init__(model, x, image=image, labels=labels, **params)

    def _param_specs(self) -> list[Param]:
        return [
            Param("n_segments", "int", "superpixels", low=2, high=5000, ui_low=4, ui_high=200, step=1),
            Param("n_samples", "int", "samples", low=10, high=100_000, ui_low=50, ui_high=5000, step=50),
            Param("segmentation", "choice", "segmentation", choices=tuple(SEGMENTATIONS)),
            Param("baseline", "choice", "baseline", choices=self._baselines),
            Param(
                "kernel_width",
                "float",
                "kernel width",
                low=0.0,
                high=100.0,
                open_low=True,
                ui_low=0.05,
                ui_high=2.0,
                step=0.05,
            ),
        ]

    @traitlets.validate("n_segments", "n_samples", "segmentation", "baseline", "kernel_width")
    def _validate_params(self, proposal: dict[str, Any]) -> Any:
        return self._validate_trait(proposal)

    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        from ..lime import iter_lime

        baseline = self._custom_baseline if request["baseline"] == "custom" else request["baseline"]
        began = time.perf_counter()
        results = iter_lime(
            self._adapter,
            self._x,
            target=request["target"],
            n_segments=request["n_segments"],
            n_samples=request["n_samples"],
            segmentation=request["segmentation"],
            baseline=baseline,
            kernel_width=request["kernel_width"],
            image=self._display,
            check_cancel=context.check_cancel,
            **self._fixed,
        )
        final = None
        for result, fraction in self._stream(context, results):
            final = result
            shown = [panel("lime", "LIME", result, status="partial", progress=fraction)]
            context.update(lambda shown=shown, fraction=fraction: self._show_partial(shown, fraction))
        context.check_cancel()
        if final is None:
            raise RuntimeError("LIME produced no result")
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        shown = [panel("lime", "LIME", final, note=_fit_note(final))]
        context.post(lambda: self._finish(final, shown, elapsed_ms=elapsed_ms, n_evals=final.n_evals))


def _fit_note(explanation: Any) -> str:
    """The surrogate's fit, if the method reports one (weighted R², ``params["score"]``)."""
    score = explanation.params.get("score")
    return f"surrogate R² {float(score):.2f}" if isinstance(score, (int, float)) else ""
