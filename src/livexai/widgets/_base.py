"""What every livexai widget shares: common traits, parameter checks, the runner hook-up, errors and PNG fallback.

A widget is a thin view over the headless core. Its parameter traits mirror a method's keyword arguments; an
observer only records a request, the shared runner (``_runner.py``) computes it off the kernel's thread, and the
result comes back as binary buffers (``_serialize.py``) that ``js/widget.js`` draws. Nothing numerical lives here.

Trait names shared with the front end are the widgets' synced traits here and ``TRAITS`` in ``js/widget.js``;
``tests/test_frontend_contract.py`` checks that the two agree.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypedDict, TypeVar

import anywidget
import torch
import traitlets
from typing_extensions import NotRequired

from .._adapter import Model, ModelAdapter
from .._call import prepare
from ._params import Control, Fixed, IntParam, params_of
from ._runner import JobContext, Runner, describe_error, shared_runner
from ._serialize import WireArray, image_to_wire, to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..explanation import Explanation

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

# What a widget's ``explanation`` holds: an Explanation, an Activations, or the Explorer's dict of them.
ResultT = TypeVar("ResultT")
# How many of the most probable classes the prediction list shows.
TOP_PREDICTIONS = 5

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


class Prediction(TypedDict):
    """One bar of the prediction list (``Prediction`` typedef in ``js/widget.js``)."""

    index: int
    label: str
    probability: float


class Panel(TypedDict):
    """One drawn map (``Panel`` typedef in ``js/widget.js``, drawn by its panels section)."""

    key: str
    title: str
    status: str  # "computing", "partial", "done" or "error"
    progress: float
    note: str
    method: str | None
    map: WireArray | None  # the attribution map (H, W), or (F,) for rows
    segments: WireArray | None  # superpixel labels (H, W), for the browser's top-k and sign filters
    weights: WireArray | None  # one weight per superpixel
    signed: bool
    elapsed_ms: float
    n_evals: int
    target: int | None
    channels: NotRequired[WireArray]  # activations only: the strongest channels (k, h, w)
    channel_ids: NotRequired[WireArray]  # and their indices (k,)


def sampling_progress(result: Explanation) -> float:
    """How far a progressive result is: ``params["n_samples_done"] / params["n_samples"]`` (the budget the method
    settled on, which KernelSHAP lowers when it can enumerate every coalition), 0 when it has no budget."""
    done, total = result.params.get("n_samples_done", 0), result.params.get("n_samples") or 0
    return min(float(done) / float(total), 1.0) if total else 0.0


def top_predictions(scores: torch.Tensor, names: Sequence[str], k: int = TOP_PREDICTIONS) -> list[Prediction]:
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
) -> Panel:
    """One drawn map for the front end: the attribution map, superpixels and weights as binary buffers."""
    entry: Panel = {
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
        warning = explanation.params.get("warning")
        if not note and warning:
            entry["note"] = str(warning)  # e.g. why a Grad-CAM map is empty and which layer to try
        elif not note and not bool(values.any()):
            entry["note"] = "the map is zero everywhere"
        if explanation.segments is not None and explanation.weights is not None:
            entry["segments"] = to_wire(explanation.segments, "int32")
            entry["weights"] = to_wire(explanation.weights, "float32")
    return entry


class WidgetOptions(TypedDict, total=False):
    """Keywords every widget takes besides its parameters (see each widget's own ``...Options``)."""

    image: Any  # a display image for the overlays; derived from ``x`` when None
    labels: Any  # class names: a list, or a dict {index: name}
    runner: Runner  # the background worker (default: the one shared by all widgets)
    target: int | None  # the class to explain (None: the top class)


class ExplainerWidget(anywidget.AnyWidget, Generic[ResultT]):
    """Base class: the traits and machinery every livexai widget shares.

    A subclass sets ``kind`` (which view the front end draws) and declares its parameters once, as
    :class:`~livexai.widgets._params.Param` traits, and the settings fixed at creation in ``FIXED``; it computes
    in :meth:`_compute`, which runs on the runner's thread and posts results with ``context.post``. Keywords
    that are neither are refused with the list of those accepted.
    """

    _esm = _static_path("widget.js")
    _css = _static_path("widget.css")

    # Settings fixed at creation (keyword -> default and check), handed to the core as they are.
    FIXED: ClassVar[dict[str, Fixed]] = {}

    kind = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("idle").tag(sync=True)  # "idle", "computing" or "error"
    error = traitlets.Unicode("").tag(sync=True)
    progress = traitlets.Float(0.0).tag(sync=True)
    elapsed_ms = traitlets.Float(0.0).tag(sync=True)
    n_evals = traitlets.Int(0).tag(sync=True)
    image = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    panels = traitlets.List(traitlets.Dict()).tag(sync=True)
    predictions = traitlets.List(traitlets.Dict()).tag(sync=True)
    controls = traitlets.List(traitlets.Dict()).tag(sync=True)
    target = IntParam(
        None, "class", low=0, high=lambda widget: widget._n_outputs - 1, allow_none=True, drawn=False
    )

    def __init__(
        self, model: Model, x: torch.Tensor, *, image: Any = None, labels: Any = None, **options: Any
    ) -> None:
        # Plain attributes first: trait validation during super().__init__ already needs them.
        self._adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        self._runner: Runner = options.pop("runner", None) or shared_runner()
        self._ready = False
        self.explanation: ResultT | None = None
        self._fixed = self._take_fixed(options)
        self._set_input(x, image, labels)
        super().__init__(
            image=image_to_wire(self._display),
            predictions=top_predictions(self._scores, self._labels),
            **options,
        )
        self.controls = self._controls()
        self.observe(self._on_param_change, names=list(self.parameter_names()))
        self._ready = True
        self.refresh()

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The parameters the front end or Python may change, ``target`` included, in declaration order."""
        return tuple(trait.name for trait in params_of(cls))

    def _take_fixed(self, options: dict[str, Any]) -> dict[str, Any]:
        """Pop and check the fixed settings from ``options``; refuse any keyword that is not a parameter."""
        fixed = {name: spec.check(name, options.pop(name, spec.default)) for name, spec in self.FIXED.items()}
        unknown = sorted(set(options) - set(self.parameter_names()))
        if unknown:
            accepted = sorted({*self.parameter_names(), *self.FIXED, "image", "labels", "runner"})
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {unknown}; expected {accepted}"
            )
        return fixed

    def _set_input(self, x: torch.Tensor, image: Any, labels: Any) -> None:
        """Validate the input once, run f(x) (cached by the adapter), keep the display image and the labels."""
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
    def _controls(self) -> list[Control]:
        return [trait.control(self) for trait in params_of(type(self)) if trait.visible(self)]

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """State from the browser: refuse invalid parameters (the trait keeps its value) and say why in ``error``."""
        accepted, refused, messages = dict(sync_data), [], []
        for name in set(sync_data) & set(self.parameter_names()):
            trait, value = self.traits()[name], sync_data[name]
            try:
                accepted[name] = value if value is None and trait.allow_none else trait.validate(self, value)
            except traitlets.TraitError as error:
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
        return {name: getattr(self, name) for name in self.parameter_names()}

    # -- computation ---------------------------------------------------------------------------------------------
    def _on_param_change(self, change: dict[str, Any]) -> None:
        if self._ready and change["old"] != change["new"]:
            self.controls = self._controls()  # a parameter may show or hide another's control
            self.refresh()

    def refresh(self) -> None:
        """Recompute with the current parameters (stale work for this widget is cancelled)."""
        request = self.parameters()
        with self.hold_sync():  # one message: no "computing 100%" flash from the last run's progress
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

    def _finish(self, explanation: ResultT, panels: list[Panel], *, elapsed_ms: float, n_evals: int) -> None:
        """Apply a final result (kernel thread)."""
        self.explanation = explanation
        with self.hold_sync():
            self.panels = list(panels)
            self.elapsed_ms = round(elapsed_ms, 1)
            self.n_evals = int(n_evals)
            self.progress = 1.0
            self.error = ""
            self.status = "idle"

    def _post_final(
        self, context: JobContext, result: ResultT, panels: list[Panel], *, began: float, n_evals: int
    ) -> None:
        """Post the final result of a job that started at ``began`` (``time.perf_counter()``)."""
        context.check_cancel()
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        context.post(lambda: self._finish(result, panels, elapsed_ms=elapsed_ms, n_evals=n_evals))

    def _show_partial(self, panels: list[Panel], fraction: float) -> None:
        """Apply a progressive result (kernel thread); the panels were serialised on the runner's thread."""
        with self.hold_sync():
            self.panels = list(panels)
            self.progress = fraction

    def _follow(
        self,
        context: JobContext,
        results: Iterator[Explanation],
        draw: Callable[[Explanation, float], tuple[list[Panel], float]],
    ) -> Explanation:
        """Stream a sampling method's partial results to the browser; return its final one.

        ``draw(result, fraction)`` turns a partial result into the panels to show and the widget's progress;
        ``fraction`` is :func:`sampling_progress`. Updates are throttled by the runner.
        """
        final = None
        for final in results:
            context.check_cancel()
            shown, progress = draw(final, sampling_progress(final))
            context.update(lambda shown=shown, progress=progress: self._show_partial(shown, progress))
        context.check_cancel()
        if final is None:
            raise RuntimeError(f"{type(self).__name__}: the method produced no result")
        return final

    def wait(self, timeout: float | None = 60.0) -> ResultT | None:
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
