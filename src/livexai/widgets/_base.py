"""What every livexai widget shares: common traits, parameter checks, the runner hook-up, errors and PNG fallback.

A widget is a thin view over the headless core. Its parameter traits mirror a method's keyword arguments; an
observer only records a request, the shared runner (``_runner.py``) computes it off the kernel's thread, and the
result comes back as binary buffers (``_serialize.py``) that ``js/widget.js`` draws. Nothing numerical lives here.

Trait names shared with the front end are listed in ``SYNCED`` below and in ``TRAITS`` in ``js/widget.js``.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anywidget
import torch
import traitlets

from .._adapter import Model, ModelAdapter
from .._call import prepare
from .._inputs import check_choice, check_float, check_int
from ._runner import JobContext, Runner, describe_error, shared_runner
from ._serialize import image_to_wire, to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..explanation import Explanation

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

# Trait names the front end reads or writes (js/widget.js, TRAITS). Subclasses add their parameters.
SYNCED = (
    "kind",
    "title",
    "status",
    "error",
    "progress",
    "elapsed_ms",
    "n_evals",
    "image",
    "panels",
    "predictions",
    "target",
    "controls",
)
STATUSES = ("idle", "computing", "error")
# Methods whose maps are signed (diverging colour map); the rest are non-negative (sequential colour map).
SIGNED_METHODS = ("lime", "kernel_shap", "gradient_shap")


def _static_path(name: str) -> Path:
    """The front-end file ``name``: ``livexai/static/`` inside a wheel, else the repository's ``js/`` (editable)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "static" / name, package.parents[1] / "js" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"livexai's front end {name!r} is missing: looked in {package / 'static'} and {package.parents[1] / 'js'}; "
        "reinstall livexai"
    )


@dataclass(frozen=True)
class Param:
    """A widget parameter: how to check a value (from Python or the browser) and how to draw its control.

    ``low``/``high`` bound what is accepted; ``ui_low``/``ui_high``/``step`` set the slider's range, which can
    be narrower (a slider spanning 2..10000 would be unusable; the Python API still accepts the full range).
    """

    name: str
    kind: Literal["int", "float", "choice"]
    label: str
    low: float | None = None
    high: float | None = None
    ui_low: float | None = None
    ui_high: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    open_low: bool = False
    ui: bool = (
        True  # False: checked like the others, but drawn by the view itself (e.g. the Explorer's strip)
    )

    def check(self, value: Any) -> Any:
        """The validated value; a ``TypeError``/``ValueError`` with a readable message otherwise."""
        if self.kind == "int":
            if isinstance(value, float) and value.is_integer():  # JSON from the browser may carry 5.0
                value = int(value)
            return check_int(
                self.name, value, int(self.low or 0), None if self.high is None else int(self.high)
            )
        if self.kind == "float":
            return check_float(self.name, value, float(self.low or 0.0), self.high, open_low=self.open_low)
        return check_choice(self.name, value, self.choices)

    def control(self) -> dict[str, Any]:
        """The control's description for the front end (``controls`` trait)."""
        spec: dict[str, Any] = {"name": self.name, "kind": self.kind, "label": self.label}
        if self.kind == "choice":
            spec["choices"] = list(self.choices)
        else:
            spec["min"] = self.ui_low if self.ui_low is not None else self.low
            spec["max"] = self.ui_high if self.ui_high is not None else self.high
            spec["step"] = self.step if self.step is not None else (1 if self.kind == "int" else 0.01)
        return spec


def label_names(labels: Any, n_outputs: int) -> list[str]:
    """Class names as strings, one per output: from a list, a dict ``{index: name}``, or indices if None."""
    if labels is None:
        return [str(i) for i in range(n_outputs)]
    if isinstance(labels, dict):
        return [str(labels.get(i, i)) for i in range(n_outputs)]
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise TypeError(
            f"labels must be a list of class names or a dict {{index: name}}, got {type(labels).__name__}"
        )
    names = [str(name) for name in labels]
    if len(names) < n_outputs:
        raise ValueError(
            f"labels has {len(names)} names but the model has {n_outputs} outputs; give one per output"
        )
    return names[:n_outputs]


def top_predictions(scores: torch.Tensor, names: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of scores ``(1, K)`` as ``{index, label, probability}`` (softmax of logits)."""
    probabilities = torch.softmax(scores[0].detach().float(), dim=0).to("cpu")
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return [
        {"index": int(i), "label": names[int(i)], "probability": float(p)}
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def panel(
    key: str,
    title: str,
    explanation: Explanation | None = None,
    *,
    status: str = "done",
    progress: float = 1.0,
    note: str = "",
) -> dict[str, Any]:
    """One drawn map for the front end: the attribution map, superpixels and weights as binary buffers.

    The keys are read by ``drawPanel`` (and ``drawChannels``) in ``js/widget.js``.
    """
    entry: dict[str, Any] = {
        "key": key,
        "title": title,
        "status": status,
        "progress": float(progress),
        "note": note,
        "method": None,
        "map": None,
        "segments": None,
        "weights": None,
        "signed": False,
        "elapsed_ms": 0.0,
        "n_evals": 0,
        "target": None,
    }
    if explanation is not None:
        values = explanation.attributions
        entry.update(
            method=explanation.method,
            map=to_wire(values, "float32"),
            signed=explanation.method in SIGNED_METHODS or bool((values < 0).any()),
            elapsed_ms=round(explanation.elapsed_s * 1000.0, 1),
            n_evals=int(explanation.n_evals),
            target=int(explanation.target),
        )
        if not note and not bool(values.any()):
            entry["note"] = "the map is zero everywhere"
        if explanation.segments is not None and explanation.weights is not None:
            entry["segments"] = to_wire(explanation.segments, "int32")
            entry["weights"] = to_wire(explanation.weights, "float32")
    return entry


class ExplainerWidget(anywidget.AnyWidget):
    """Base class: the traits and machinery every livexai widget shares.

    Subclasses set ``kind`` (which view the front end draws), declare their parameters in :meth:`_param_specs`,
    and compute in :meth:`_compute`, which runs on the runner's thread and posts results with ``context.post``.
    """

    _esm = _static_path("widget.js")
    _css = _static_path("widget.css")

    kind = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)
    error = traitlets.Unicode("").tag(sync=True)
    progress = traitlets.Float(0.0).tag(sync=True)
    elapsed_ms = traitlets.Float(0.0).tag(sync=True)
    n_evals = traitlets.Int(0).tag(sync=True)
    image = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    panels = traitlets.List(traitlets.Dict()).tag(sync=True)
    predictions = traitlets.List(traitlets.Dict()).tag(sync=True)
    target = traitlets.Int(None, allow_none=True).tag(sync=True)
    controls = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        *,
        image: Any = None,
        labels: Any = None,
        runner: Runner | None = None,
        **traits: Any,
    ) -> None:
        # Plain attributes first: trait validation during super().__init__ already needs them.
        self._adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        self._runner = runner if runner is not None else shared_runner()
        self._ready = False
        self._specs: dict[str, Param] = {}
        self.explanation: Any = None
        self._n_outputs = 0
        self._labels: list[str] = []
        self._set_input(x, image, labels)
        self._specs = {spec.name: spec for spec in self._param_specs()}
        initial = {
            "controls": [spec.control() for spec in self._specs.values() if spec.ui],
            "image": image_to_wire(self._display),
            "predictions": top_predictions(self._scores, self._labels),
            **traits,
        }
        super().__init__(**initial)
        self.observe(self._on_param_change, names=[*self._specs, "target"])
        self._ready = True
        self.refresh()

    # -- input ---------------------------------------------------------------------------------------------------
    def _set_input(self, x: torch.Tensor, image: Any, labels: Any) -> None:
        """Validate the input once, run f(x) (cached by the adapter), keep the display image and the labels."""
        with self._runner.exclusive():  # no job may run the model meanwhile
            self._load_input(x, image)
        self._n_outputs = int(self._scores.shape[1])
        self._labels = label_names(labels, self._n_outputs)

    def _load_input(self, x: torch.Tensor, image: Any) -> None:
        """Make ``x`` the explained input: its display image and scores ``(1, K)``. Runs the model once."""
        call = prepare(self._adapter, x, target=None, image=image, expect="image")
        self._x = x
        self._display = call.image
        self._scores = call.scores

    # -- parameters ----------------------------------------------------------------------------------------------
    def _param_specs(self) -> list[Param]:
        """The parameters the front end may change (besides ``target``), in display order."""
        return []

    def _check_param(self, name: str, value: Any) -> Any:
        if name == "target":
            if value is None:
                return None
            return check_int("target", value, 0, max(self._n_outputs - 1, 0))
        return self._specs[name].check(value)

    @traitlets.validate("target")
    def _validate_target(self, proposal: dict[str, Any]) -> Any:
        return self._validate_trait(proposal)

    def _validate_trait(self, proposal: dict[str, Any]) -> Any:
        """traitlets validator for parameters set from Python: a clear TraitError instead of a silent bad state."""
        name = proposal["trait"].name
        if name != "target" and name not in self._specs:
            return proposal["value"]
        try:
            return self._check_param(name, proposal["value"])
        except (TypeError, ValueError) as error:
            raise traitlets.TraitError(str(error)) from error

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """State from the browser: refuse invalid parameters (the trait keeps its value) and say why in ``error``."""
        accepted, refused, messages = dict(sync_data), [], []
        for name, value in sync_data.items():
            if name == "target" or name in self._specs:
                try:
                    accepted[name] = self._check_param(name, value)
                except (TypeError, ValueError) as error:
                    del accepted[name]
                    refused.append(name)
                    messages.append(str(error))
        if accepted:
            super().set_state(accepted)
        if refused:
            self.error = "; ".join(messages)
            if self.status != "computing":
                self.status = "error"
            self.send_state(refused)  # the browser shows the value the kernel kept

    def parameters(self) -> dict[str, Any]:
        """The current parameter values (what the next computation uses)."""
        values = {name: getattr(self, name) for name in self._specs}
        values["target"] = self.target
        return values

    # -- computation ---------------------------------------------------------------------------------------------
    def _on_param_change(self, change: dict[str, Any]) -> None:
        if self._ready and change["old"] != change["new"]:
            self.refresh()

    def refresh(self) -> None:
        """Recompute with the current parameters (stale work for this widget is cancelled)."""
        request = self.parameters()
        self.error = ""
        self.status = "computing"
        self.progress = 0.0
        self._runner.submit(self, lambda context: self._compute(request, context), on_error=self._fail)

    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        """Compute ``request`` on the runner's thread; post results with ``context.post``/``context.update``."""
        raise NotImplementedError

    def _fail(self, error: BaseException) -> None:
        """Applied on the kernel's thread when a job raised: show the message, keep the last good result."""
        self.error = describe_error(error)
        self.status = "error"
        self.progress = 0.0

    def _finish(
        self, explanation: Any, panels: list[dict[str, Any]], *, elapsed_ms: float, n_evals: int
    ) -> None:
        """Apply a final result (kernel thread)."""
        self.explanation = explanation
        with self.hold_sync():
            self.panels = panels
            self.elapsed_ms = round(elapsed_ms, 1)
            self.n_evals = int(n_evals)
            self.progress = 1.0
            self.error = ""
            self.status = "idle"

    def _show_partial(self, panels: list[dict[str, Any]], fraction: float) -> None:
        """Apply a progressive result (kernel thread); the panels were serialised on the runner's thread."""
        with self.hold_sync():
            self.panels = panels
            self.progress = fraction

    def _stream(
        self, context: JobContext, results: Iterator[Explanation]
    ) -> Iterator[tuple[Explanation, float]]:
        """Iterate a sampling method's partial results, checking for cancellation between them.

        Yields ``(result, progress)``, progress being ``params["n_samples_done"] / params["n_samples"]`` (the
        sample budget the method settled on, which KernelSHAP lowers when it can enumerate every coalition).
        """
        for result in results:
            context.check_cancel()
            done, total = result.params.get("n_samples_done", 0), result.params.get("n_samples") or 0
            yield result, (min(float(done) / float(total), 1.0) if total else 0.0)

    def wait(self, timeout: float | None = 60.0) -> Any:
        """Block until the widget is idle (for scripts and tests) and return :attr:`explanation`.

        Raises ``TimeoutError`` if the computation is still running after ``timeout`` seconds.
        """
        if not self._runner.wait(self, timeout):
            raise TimeoutError(f"{type(self).__name__} still computing after {timeout} s")
        return self.explanation

    def close(self) -> None:
        runner = getattr(self, "_runner", None)  # absent if __init__ failed before setting it
        if runner is not None:
            runner.cancel(self)
        super().close()

    # -- static fallback -----------------------------------------------------------------------------------------
    def _figure(self) -> Figure | None:
        """A matplotlib figure of the current result (no pyplot: nothing is shown as a side effect)."""
        if self.explanation is None:
            return None
        from matplotlib.figure import Figure

        figure = Figure(figsize=(4.2, 4.0))
        self.explanation.plot(ax=figure.add_subplot())
        return figure

    def _png(self) -> bytes | None:
        figure = self._figure()
        if figure is None:
            return None
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
        return buffer.getvalue()

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:
        """The live widget, plus a PNG of the current explanation for viewers without a kernel (nbconvert, GitHub)."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        try:
            png = self._png()
        except Exception:  # a static fallback must never break displaying the live widget
            logger.exception("drawing the PNG fallback failed")
            png = None
        if png is not None:
            data = {**data, "image/png": base64.b64encode(png).decode("ascii")}
        return data, metadata

    def save_png(self, path: str | Path, timeout: float | None = 60.0) -> Path:
        """Wait for the current computation, then save the explanation as a PNG at ``path``."""
        self.wait(timeout)
        png = self._png()
        if png is None:
            raise ValueError(f"nothing to save yet: {self.error or 'no explanation computed'}")
        target = Path(path)
        target.write_bytes(png)
        return target
