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
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypedDict, TypeVar

import anywidget
import torch
import torch.nn.functional as F
import traitlets
from typing_extensions import NotRequired

from .._adapter import Cancelled, Model, ModelAdapter
from .._call import prepare
from ..explanation import Explanation
from ._params import Control, Fixed, IntParam, params_of
from ._runner import JobContext, Runner, describe_error, shared_runner
from ._serialize import WireArray, image_to_wire, to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..sanity import SanityReport

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

# What a widget's ``explanation`` holds: an Explanation, an Activations, or the Explorer's dict of them.
ResultT = TypeVar("ResultT")
# How many of the most probable classes the prediction list shows.
TOP_PREDICTIONS = 5

# Methods whose maps are signed (diverging colour map); the rest are non-negative (sequential colour map).
SIGNED_METHODS = ("lime", "kernel_shap", "gradient_shap")
# Steps of the deletion and insertion curves under each map: 21 points draw a curve 200 pixels wide smoothly, at
# 2 x 20 model evaluations a map (the core's default of 50 is for reporting, not for a live view).
CURVE_STEPS = 20
# Message kinds the front end sends (MESSAGES in js/widget.js): a panel's "sanity check" button.
SANITY_CHECK = "sanity_check"
# Randomisation steps drawn in the sanity strip at most (evenly spaced, the last always among them), besides the
# original map: a ResNet-18 has 62 layers with parameters, too many small maps to read.
SANITY_STRIP_STEPS = 10
# Longest side, in pixels, of the small maps and images sent for strips (the Explorer's, the sanity check's).
SMALL_SIZE = 64


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
    sanity: NotRequired[bool]  # whether the panel offers a "sanity check" button (LayerWidget, Explorer)
    pointing: NotRequired[Pointing]  # the Explorer with ground-truth masks: does the map point at the object?


class Pointing(TypedDict):
    """Does a map point at the object (``Pointing`` typedef in ``js/widget.js``): :func:`livexai.pointing_game`
    within ``tolerance`` pixels, :func:`livexai.energy_pointing_game`, and the object's share of the image (what
    a map spread evenly would score)."""

    hit: bool
    energy: float
    tolerance: float
    share: float


class Curves(TypedDict):
    """One map's deletion and insertion curves (``Curves`` typedef in ``js/widget.js``), in probabilities.

    ``status`` is "computing", "done" or "error" (``note`` says why); once done, ``fractions``, ``deletion`` and
    ``insertion`` are ``(CURVE_STEPS + 1,)`` float32 and the AUCs are numbers.
    """

    status: str
    note: str
    fractions: NotRequired[WireArray]
    deletion: NotRequired[WireArray]
    insertion: NotRequired[WireArray]
    deletion_auc: NotRequired[float]
    insertion_auc: NotRequired[float]


class SanityStrip(TypedDict):
    """A sanity check as drawn (the ``sanity`` trait; ``SanityStrip`` typedef in ``js/widget.js``).

    ``maps`` ``(S, h, w)`` float32: the original map, then up to :data:`SANITY_STRIP_STEPS` randomisation steps,
    shrunk to :data:`SMALL_SIZE`; ``layers`` and ``similarity`` ``(S,)`` go with them (the original's is 1);
    ``image`` ``(h, w, 3)`` uint8 is drawn under them. ``done`` of ``total`` layers are randomised; ``passed``
    is None until the check is complete.
    """

    status: str  # "computing", "done" or "error"
    key: str
    title: str
    summary: str
    passed: bool | None
    done: int
    total: int
    layers: list[str]
    similarity: WireArray | None
    maps: WireArray | None
    image: WireArray | None
    signed: bool


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
    faithfulness: bool  # draw deletion and insertion curves under each map (default True)


@dataclass(frozen=True)
class SanityRequest:
    """What a widget's sanity check explains: panel ``key``'s method (a name :func:`livexai.sanity_check` knows)
    with its keywords, on input ``x`` and display image ``image`` ``(H, W, 3)``, for class ``target``."""

    key: str
    title: str
    method: str
    x: torch.Tensor
    image: torch.Tensor
    target: int | None
    signed: bool
    kwargs: dict[str, Any] = field(default_factory=dict)


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
    curves = traitlets.Dict().tag(sync=True)  # panel key -> Curves
    sanity = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)  # a SanityStrip, or None
    target = IntParam(
        None, "class", low=0, high=lambda widget: widget._n_outputs - 1, allow_none=True, drawn=False
    )

    def __init__(
        self, model: Model, x: torch.Tensor, *, image: Any = None, labels: Any = None, **options: Any
    ) -> None:
        # Plain attributes first: trait validation during super().__init__ already needs them.
        self._adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        self._runner: Runner = options.pop("runner", None) or shared_runner()
        self._sanity_owner = object()  # the runner's key for sanity checks: queued beside the map's own job
        self._faithfulness = options.pop("faithfulness", True)
        if not isinstance(self._faithfulness, bool):
            raise TypeError(f"faithfulness must be True or False, got {self._faithfulness!r}")
        self._scored: weakref.WeakKeyDictionary[Explanation, Curves] = weakref.WeakKeyDictionary()
        self._ready = False
        self.explanation: ResultT | None = None
        self.sanity_report: SanityReport | None = None
        self._fixed = self._take_fixed(options)
        self._set_input(x, image, labels)
        super().__init__(
            image=image_to_wire(self._display),
            predictions=top_predictions(self._scores, self._labels),
            **options,
        )
        self.controls = self._controls()
        self.observe(self._on_param_change, names=list(self.parameter_names()))
        self.on_msg(self._on_message)
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
            accepted = sorted(
                {*self.parameter_names(), *self.FIXED, "image", "labels", "runner", "faithfulness"}
            )
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
        self._runner.cancel(self._sanity_owner)  # a check of the map as it was: stale
        self.sanity_report = None
        with self.hold_sync():  # one message: no "computing 100%" flash from the last run's progress
            self.error = ""
            self.status = "computing"
            self.progress = 0.0
            self.curves = {}
            self.sanity = None
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
        maps = _final_maps(result, panels)
        if self._faithfulness and maps:
            context.then(lambda: self._score(maps, context))

    # -- faithfulness curves -------------------------------------------------------------------------------------
    def _score(self, maps: dict[str, Explanation], context: JobContext) -> None:
        """Deletion and insertion curves of each final map (runner thread, after the maps are shown), each sent
        as soon as it is computed; a map kept from an earlier job keeps its curves."""
        shown: dict[str, Curves] = {key: {"status": "computing", "note": ""} for key in maps}
        context.post(lambda snapshot=dict(shown): setattr(self, "curves", snapshot))
        for key, explanation in maps.items():
            entry = self._scored.get(explanation)
            if entry is None:
                entry = self._scored[explanation] = self._curves(explanation, context)
            shown[key] = entry
            context.post(lambda snapshot=dict(shown): setattr(self, "curves", snapshot))

    def _curves(self, explanation: Explanation, context: JobContext) -> Curves:
        """:func:`livexai.deletion` and :func:`livexai.insertion` of one map with :data:`CURVE_STEPS` steps; a
        failure is the entry's note (the map itself stays shown)."""
        from ..metrics import deletion, insertion

        options: dict[str, Any] = {"n_steps": CURVE_STEPS, "check_cancel": context.check_cancel}
        try:
            down = deletion(self._adapter, self._x, explanation, **options)
            up = insertion(self._adapter, self._x, explanation, **options)
        except Cancelled:
            raise
        except Exception as error:
            logger.exception("the faithfulness curves failed")
            return {"status": "error", "note": describe_error(error)}
        return {
            "status": "done",
            "note": "",
            "fractions": to_wire(down.fractions, "float32"),
            "deletion": to_wire(down.scores, "float32"),
            "insertion": to_wire(up.scores, "float32"),
            "deletion_auc": round(down.auc, 4),
            "insertion_auc": round(up.auc, 4),
        }

    # -- sanity check --------------------------------------------------------------------------------------------
    def _sanity_request(self, key: str | None) -> SanityRequest:
        """What the sanity check of panel ``key`` (None: the widget's main map) explains; widgets that offer the
        check override this."""
        raise ValueError(f"{type(self).__name__} has no sanity check; LayerWidget and Explorer have one")

    def sanity_check(self, key: str | None = None) -> None:
        """Run the cascading model-randomisation check (:func:`livexai.sanity_check`) of panel ``key``'s method
        in the background (None: the widget's main map). The view draws the maps degrading layer by layer as
        they come; :attr:`sanity_report` holds the final :class:`~livexai.sanity.SanityReport`, and ``wait()``
        waits for it. A parameter change cancels it: the check is of the map as it was."""
        request = self._sanity_request(key)
        self.sanity_report = None
        self.sanity = _strip(request)
        self._runner.submit(
            self._sanity_owner,
            lambda context: self._run_sanity(request, context),
            on_error=lambda error: self._sanity_failed(request, error),
        )

    def _run_sanity(self, request: SanityRequest, context: JobContext) -> None:
        """The check, step by step (runner thread); the strip is updated as steps come (throttled)."""
        from ..sanity import iter_sanity_check

        steps = iter_sanity_check(
            self._adapter,
            request.x,
            request.method,
            target=request.target,
            mode="cascading",
            **request.kwargs,
        )
        report = None
        for report in steps:
            context.check_cancel()
            strip = _strip(request, report)
            context.update(lambda strip=strip: setattr(self, "sanity", strip))
        context.check_cancel()
        assert report is not None  # iter_sanity_check yields at least once or raises
        final, strip = report, _strip(request, report)
        context.post(lambda: self._show_sanity(final, strip))

    def _show_sanity(self, report: SanityReport, strip: SanityStrip) -> None:
        self.sanity_report = report
        self.sanity = strip

    def _sanity_failed(self, request: SanityRequest, error: BaseException) -> None:
        """Applied on the kernel's thread: the strip says why; the widget's maps and status are untouched."""
        self.sanity = {**_strip(request), "status": "error", "summary": describe_error(error)}

    def _on_message(self, widget: Any, content: Any, buffers: Any) -> None:
        """Messages from the front end (kernel thread): a panel's "sanity check" button."""
        if not isinstance(content, dict) or content.get("kind") != SANITY_CHECK:
            return
        try:
            self.sanity_check(content.get("key"))
        except Exception as error:  # a bad click must show a message, not vanish in the comm handler
            logger.exception("starting the sanity check failed")
            self.sanity = {
                **_strip(None),
                "status": "error",
                "summary": describe_error(error),
            }

    def _show_partial(self, panels: list[Panel], fraction: float) -> None:
        """Apply a progressive result (kernel thread); the panels were serialised on the runner's thread."""
        with self.hold_sync():
            self.panels = list(panels)
            self.progress = fraction

    def _follow(
        self,
        context: JobContext,
        results: Iterator[Explanation],
        draw: Callable[[Explanation, float], tuple[Any, float]],
        show: Callable[[Any, float], None] | None = None,
    ) -> Explanation:
        """Stream a sampling method's partial results to the browser; return its final one.

        ``draw(result, fraction)`` turns a partial result into what to show (the panels, by default) and the
        widget's progress; ``fraction`` is :func:`sampling_progress`. ``show(shown, progress)`` applies them on
        the kernel's thread (default: :meth:`_show_partial`). Updates are throttled by the runner.
        """
        apply = show or self._show_partial
        final = None
        for final in results:
            context.check_cancel()
            shown, progress = draw(final, sampling_progress(final))
            context.update(lambda shown=shown, progress=progress: apply(shown, progress))
        context.check_cancel()
        if final is None:
            raise RuntimeError(f"{type(self).__name__}: the method produced no result")
        return final

    def wait(self, timeout: float | None = 60.0) -> ResultT | None:
        """Block until the widget is idle (for scripts and tests) and return :attr:`explanation`.

        Raises ``TimeoutError`` if the computation is still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for owner in self._job_owners():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._runner.wait(owner, remaining):
                raise TimeoutError(f"{type(self).__name__} still computing after {timeout} s")
        return self.explanation

    def _job_owners(self) -> tuple[object, ...]:
        """The runner keys of this widget's jobs: its map's job (and curves), then a sanity check."""
        return (self, self._sanity_owner)

    def close(self) -> None:
        runner = getattr(self, "_runner", None)  # absent if __init__ failed before setting it
        if runner is not None:
            for owner in self._job_owners():
                runner.cancel(owner)
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


def _final_maps(result: object, panels: Sequence[Panel]) -> dict[str, Explanation]:
    """The image maps of a final result by panel key: a single map is its one panel's; a dict (the Explorer's)
    is keyed by panel already. Activations and tabular rows have no faithfulness curves."""
    if isinstance(result, Explanation):
        found = {panels[0]["key"]: result} if len(panels) == 1 else {}
    elif isinstance(result, dict):
        found = {key: value for key, value in result.items() if isinstance(value, Explanation)}
    else:
        found = {}
    return {key: value for key, value in found.items() if value.is_image}


def shrink(images: torch.Tensor, longest: int = SMALL_SIZE) -> torch.Tensor:
    """Images or maps ``(N, C, H, W)`` area-averaged so the longest side is at most ``longest`` pixels (CPU)."""
    images = images.detach().to("cpu", torch.float32)
    height, width = images.shape[-2:]
    scale = min(1.0, longest / max(height, width))
    if scale == 1.0:
        return images
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(images, size=size, mode="area")


def strip_steps(total: int, done: int, most: int = SANITY_STRIP_STEPS) -> list[int]:
    """The randomisation steps the sanity strip draws: at most ``most`` of ``0..total-1``, evenly spaced with the
    last among them, of those ``done`` so far."""
    chosen = range(total) if total <= most else {round(i * (total - 1) / (most - 1)) for i in range(most)}
    return sorted(step for step in chosen if step < done)


def _strip(request: SanityRequest | None, report: SanityReport | None = None) -> SanityStrip:
    """The sanity check as drawn: empty while it starts, else the original map and the chosen steps, small."""
    strip: SanityStrip = {
        "status": "computing",
        "key": request.key if request is not None else "",
        "title": request.title if request is not None else "",
        "summary": "",
        "passed": None,
        "done": 0,
        "total": 0,
        "layers": [],
        "similarity": None,
        "maps": None,
        "image": None,
        "signed": request.signed if request is not None else False,
    }
    if request is None or report is None:
        return strip
    complete = len(report.layers) == report.n_layers
    steps = strip_steps(report.n_layers, len(report.layers))
    maps = torch.stack([report.original, *(report.maps[i] for i in steps)]).float()
    image = shrink(request.image.permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    strip.update(
        status="done" if complete else "computing",
        summary=report.summary,
        passed=report.passed if complete else None,
        done=len(report.layers),
        total=report.n_layers,
        layers=["original", *(report.layers[i] for i in steps)],
        similarity=to_wire(torch.tensor([1.0, *(report.similarity[i] for i in steps)]), "float32"),
        maps=to_wire(shrink(maps[:, None])[:, 0], "float32"),
        image=image_to_wire(image),
    )
    return strip
