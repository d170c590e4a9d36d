"""``LimeWidget``: LIME superpixel explanations that recompute as the sliders move."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
import traitlets
from typing_extensions import Unpack

from .._adapter import Model, OutputSpace
from .._features import BASELINES
from ..explanation import Explanation
from ..segmentation import METHODS as SEGMENTATIONS
from ._base import ExplainerWidget, WidgetOptions, panel
from ._params import OUTPUT, SEED, ChoiceParam, Fixed, FloatParam, IntParam, positive_int
from ._runner import JobContext

# The choice a tensor baseline given at creation appears as (the tensor itself is kept aside).
CUSTOM_BASELINE = "custom"


class LimeOptions(WidgetOptions, total=False):
    """``LimeWidget``'s keywords: its parameters and fixed settings (see :func:`livexai.lime`)."""

    n_segments: int
    n_samples: int
    segmentation: str
    baseline: str | torch.Tensor
    kernel_width: float
    seed: int
    output: OutputSpace
    chunk_size: int


class LimeWidget(ExplainerWidget[Explanation]):
    """LIME on one image, live: superpixel count, samples, segmentation, baseline and kernel width as controls.

    ``LimeWidget(model, x, image=None, labels=None, **options)``: ``x`` is the model-ready image ``(C, H, W)``,
    ``image`` an optional display image, ``labels`` class names; the options are :func:`livexai.lime` keywords
    (``n_segments``, ``n_samples``, ``segmentation``, ``baseline``, ``kernel_width``, ``target``, and the fixed
    ``seed``, ``output``, ``chunk_size``). A tensor ``baseline`` is offered as the choice ``"custom"``. The map
    streams in as samples are evaluated; :attr:`explanation` holds the latest complete result.
    """

    FIXED: ClassVar[dict[str, Fixed]] = {"seed": SEED, "output": OUTPUT, "chunk_size": positive_int(100)}

    kind = traitlets.Unicode("lime").tag(sync=True)
    title = traitlets.Unicode("LIME").tag(sync=True)
    n_segments = IntParam(50, "superpixels", low=2, high=5000, ui=(4, 200, 1))
    n_samples = IntParam(1000, "samples", low=10, high=100_000, ui=(50, 5000, 50))
    segmentation = ChoiceParam("slic", "segmentation", choices=tuple(SEGMENTATIONS))
    baseline = ChoiceParam("blur", "baseline", choices=lambda widget: widget._baselines)
    kernel_width = FloatParam(0.25, "kernel width", low=0.0, high=100.0, open_low=True, ui=(0.05, 2.0, 0.05))

    def __init__(self, model: Model, x: torch.Tensor, **options: Unpack[LimeOptions]) -> None:
        baseline = options.get("baseline")
        self._custom_baseline = baseline if isinstance(baseline, torch.Tensor) else None
        self._baselines = BASELINES if self._custom_baseline is None else (*BASELINES, CUSTOM_BASELINE)
        if self._custom_baseline is not None:
            options["baseline"] = CUSTOM_BASELINE
        super().__init__(model, x, **options)

    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        from ..lime import iter_lime

        custom = request["baseline"] == CUSTOM_BASELINE
        began = time.perf_counter()
        results = iter_lime(
            self._adapter,
            self._x,
            target=request["target"],
            n_segments=request["n_segments"],
            n_samples=request["n_samples"],
            segmentation=request["segmentation"],
            baseline=self._custom_baseline if custom else request["baseline"],
            kernel_width=request["kernel_width"],
            image=self._display,
            check_cancel=context.check_cancel,
            **self._fixed,
        )
        final = self._follow(
            context,
            results,
            lambda result, fraction: (
                [panel("lime", "LIME", result, status="partial", progress=fraction)],
                fraction,
            ),
        )
        shown = [panel("lime", "LIME", final, note=_fit_note(final))]
        self._post_final(context, final, shown, began=began, n_evals=final.n_evals)


def _fit_note(explanation: Explanation) -> str:
    """The surrogate's fit, if the method reports one (weighted R², ``params["score"]``)."""
    score = explanation.params.get("score")
    return f"surrogate R² {float(score):.2f}" if isinstance(score, (int, float)) else ""
