"""``LayerWidget``: Grad-CAM, Grad-CAM++ or the raw activations of any layer, picked from a list.

With activations, a chosen channel is also answered the usual two ways: the image optimised to excite it
(:func:`livexai.feature_visualization`, streaming in as it improves, robust or naive) and the images among those
the widget was given that excite it most (:func:`livexai.top_activating`). That runs as its own job beside the
map's, so clicking another channel restarts only it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import torch
import traitlets
from typing_extensions import Unpack

from .._adapter import Model, ModelAdapter, OutputSpace
from .._inputs import display_image
from ..explanation import Explanation
from ..layers import Activations
from ._base import ExplainerWidget, Panel, SanityRequest, WidgetOptions, panel
from ._params import OUTPUT, ChoiceParam, Fixed, IntParam
from ._runner import JobContext, describe_error
from ._serialize import WireArray, image_to_wire, to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..featurevis import FeatureVis, TopActivations

METHODS: tuple[str, ...] = ("grad_cam", "grad_cam++", "activations")
TITLES = {"grad_cam": "Grad-CAM", "grad_cam++": "Grad-CAM++", "activations": "activations"}
# Feature visualisation recipes: Olah et al.'s robust one, and plain gradient ascent on pixels to compare.
OPTIMISATIONS: tuple[str, ...] = ("robust", "naive")
RECIPES = {
    "robust": {"transforms": "standard", "parameterization": "fourier"},
    "naive": {"transforms": None, "parameterization": "pixel"},
}
# Dataset images shown for a channel: the strongest few.
TOP_EXAMPLES = 8


class FeatureVisWire(TypedDict):
    """What a channel looks for, as drawn (``FeatureVisView`` typedef in ``js/widget.js``)."""

    status: str  # "computing", "partial", "done" or "error"
    note: str
    layer: str
    channel: int
    optimisation: str
    step: int
    steps: int
    image: WireArray | None  # (h, w, 3) uint8: the optimised image so far
    activation: float | None
    random_activation: float | None
    top: WireArray | None  # (k, h, w, 3) uint8: the dataset images that excite the channel most
    top_values: list[float]
    top_indices: list[int]


class LayerOptions(WidgetOptions, total=False):
    """``LayerWidget``'s keywords: its parameters and fixed settings."""

    layer: str
    method: str
    n_channels: int
    optimisation: str
    steps: int
    output: OutputSpace


class LayerWidget(ExplainerWidget[Explanation | Activations]):
    """Look inside one layer: where its evidence for a class lies (Grad-CAM/++), or what its channels see.

    ``LayerWidget(model, x, image=None, labels=None, layer=None, method="grad_cam")``. ``layer`` is one of
    :func:`livexai.layers` ``(model, x)`` (default: :func:`livexai.default_layer`, the deepest layer whose
    Grad-CAM is not degenerate).
    With ``method="activations"`` the ``n_channels`` strongest channels are drawn as a grid; clicking one sets
    ``channel`` and enlarges it (no recomputation), and shows what the channel looks for: an image optimised for
    ``steps`` steps with the ``optimisation`` recipe (``"robust"`` or ``"naive"``), and the ``images`` (model-ready
    ``(N, C, H, W)``, e.g. a sample of the data set) that excite it most. ``output`` (``"logits"``/``"probs"``) is
    fixed at creation.
    The Grad-CAM map's "sanity check" button (or :meth:`sanity_check`) randomises a copy of the model layer by
    layer and draws the map degrading.
    """

    FIXED: ClassVar[dict[str, Fixed]] = {"output": OUTPUT}

    kind = traitlets.Unicode("layer").tag(sync=True)
    title = traitlets.Unicode("Layer").tag(sync=True)
    layer = ChoiceParam("", "layer", choices=lambda widget: widget._layer_names)
    method = ChoiceParam("grad_cam", "method", choices=METHODS)
    n_channels = IntParam(16, "channels shown", low=1, high=1024, ui=(4, 64, 4))
    optimisation = ChoiceParam(
        "robust", "optimisation", choices=OPTIMISATIONS, shown=lambda widget: widget.method == "activations"
    )
    steps = IntParam(
        128, "steps", low=1, high=4096, ui=(16, 512, 16), shown=lambda widget: widget.method == "activations"
    )
    channel = traitlets.Int(-1).tag(sync=True)  # the enlarged channel (-1: the strongest); set by clicks
    featurevis = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)  # a FeatureVisWire

    def __init__(
        self, model: Model, x: torch.Tensor, *, images: Any = None, **options: Unpack[LayerOptions]
    ) -> None:
        from ..cam import default_layer
        from ..layers import layers

        adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        self._layer_names = tuple(layers(adapter, x))
        if not self._layer_names:
            raise ValueError(
                "the model has no layer whose output is a map over the image on this input (a convolution's "
                "(N, C, h, w), or a ViT's patch tokens); Grad-CAM and activations need one (see "
                "livexai.layer_info(model, x))"
            )
        if options.get("layer") is None:
            options["layer"] = default_layer(
                adapter, x, target=options.get("target"), candidates=self._layer_names
            )
        self._examples = _examples(images, x)
        self._featurevis_owner = object()  # the runner's key for feature visualisations
        super().__init__(adapter, x, **options)
        self.observe(self._on_channel, names=["channel"])

    @traitlets.validate("channel")
    def _validate_channel(self, proposal: dict[str, Any]) -> int:
        value = proposal["value"]
        if value < -1:
            raise traitlets.TraitError(f"channel must be -1 (the strongest) or a channel index, got {value}")
        return value

    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        began = time.perf_counter()
        method = request["method"]
        if method == "activations":
            from ..layers import activations

            result = activations(self._adapter, self._x, layer=request["layer"], top_k=request["n_channels"])
            shown = [_channels_panel(result, request["n_channels"])]
            n_evals = 1
        else:
            from ..cam import grad_cam

            result = grad_cam(
                self._adapter,
                self._x,
                layer=request["layer"],
                target=request["target"],
                plus_plus=method == "grad_cam++",
                image=self._display,
                **self._fixed,
            )
            shown = [{**panel("cam", f"{TITLES[method]} · {request['layer']}", result), "sanity": True}]
            n_evals = result.n_evals
        self._post_final(context, result, shown, began=began, n_evals=n_evals)

    def _sanity_request(self, key: str | None) -> SanityRequest:
        """The check of the Grad-CAM map as the parameters stand (same layer, class and output space)."""
        if self.method == "activations":
            raise ValueError(
                "the sanity check tests a map of the class's evidence: choose grad_cam or grad_cam++ first"
            )
        return SanityRequest(
            key="cam",
            title=f"{TITLES[self.method]} · {self.layer}",
            method=self.method,
            x=self._x,
            image=self._display,
            target=self.target,
            signed=False,
            kwargs={"layer": self.layer, "output": self._fixed["output"]},
        )

    def _finish(
        self, explanation: Explanation | Activations, panels: list[Panel], *, elapsed_ms: float, n_evals: int
    ) -> None:
        if isinstance(explanation, Activations) and self.channel >= explanation.maps.shape[0]:
            self.channel = -1  # the enlarged channel is no longer among those shown
        super()._finish(explanation, panels, elapsed_ms=elapsed_ms, n_evals=n_evals)
        self._visualise()

    # -- what a channel looks for --------------------------------------------------------------------------------
    def refresh(self) -> None:
        self._runner.cancel(self._featurevis_owner)  # a visualisation of the layer as it was: stale
        self.featurevis = None
        super().refresh()

    def _on_channel(self, change: dict[str, Any]) -> None:
        if self._ready and change["old"] != change["new"]:
            self._visualise()

    def _visualise(self) -> None:
        """Start the chosen channel's feature visualisation and dataset examples (activations only); a newer
        channel or parameter cancels it."""
        result = self.explanation
        self._runner.cancel(self._featurevis_owner)
        if self.method != "activations" or not isinstance(result, Activations):
            self.featurevis = None
            return
        channel = self.channel if self.channel >= 0 else int(result.ranking[0])
        request = {
            "layer": self.layer,
            "channel": channel,
            "optimisation": self.optimisation,
            "steps": self.steps,
        }
        self.featurevis = _featurevis_wire(request, "computing")
        self._runner.submit(
            self._featurevis_owner,
            lambda context: self._run_featurevis(request, context),
            on_error=lambda error: self._featurevis_failed(request, error),
        )

    def _run_featurevis(self, request: dict[str, Any], context: JobContext) -> None:
        """Top examples first (one pass over the images), then the optimisation, posted as it improves."""
        from ..featurevis import feature_visualization, top_activating

        top = None
        if self._examples is not None:
            top = top_activating(
                self._adapter, request["layer"], request["channel"], self._examples, k=TOP_EXAMPLES
            )
            context.check_cancel()
        shown = _featurevis_wire(request, "computing", top=top)
        context.post(lambda: setattr(self, "featurevis", shown))

        def progress(partial: FeatureVis) -> None:
            context.check_cancel()
            wire = _featurevis_wire(request, "partial", partial, top)
            context.post(lambda: setattr(self, "featurevis", wire))

        final = feature_visualization(
            self._adapter,
            request["layer"],
            request["channel"],
            steps=request["steps"],
            size=tuple(self._display.shape[:2]),
            progress=progress,
            **RECIPES[request["optimisation"]],
        )
        context.check_cancel()
        wire = _featurevis_wire(request, "done", final, top)
        context.post(lambda: setattr(self, "featurevis", wire))

    def _featurevis_failed(self, request: dict[str, Any], error: BaseException) -> None:
        """Applied on the kernel's thread: the section says why; the maps are untouched."""
        self.featurevis = {**_featurevis_wire(request, "error"), "note": describe_error(error)}

    def _job_owners(self) -> tuple[object, ...]:
        return (*super()._job_owners(), self._featurevis_owner)

    def _figure(self) -> Figure | None:
        result = self.explanation
        if not isinstance(result, Activations):
            return super()._figure()
        from matplotlib.figure import Figure

        from ..layers import activation_grid

        figure = Figure(figsize=(4.2, 4.0))
        axes = figure.add_subplot()
        axes.imshow(activation_grid(result, top_k=self.n_channels).numpy(), cmap="inferno")
        axes.set_title(
            f"activations · {result.layer} · top {min(self.n_channels, result.maps.shape[0])}", fontsize=9
        )
        axes.set_axis_off()
        return figure


def _examples(images: Any, x: torch.Tensor) -> torch.Tensor | None:
    """The images to find a channel's strongest examples in: ``(N, C, H, W)`` like ``x``, or None."""
    if images is None:
        return None
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or tuple(images.shape[1:]) != tuple(x.shape[-3:])
    ):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(
            f"images must be model-ready images (N, {', '.join(map(str, x.shape[-3:]))}) like x, got {shape}"
        )
    return images


def _display_images(images: torch.Tensor) -> torch.Tensor:
    """Model-ready images ``(k, C, H, W)`` as displayable ``(k, H, W, 3)`` in [0, 1], each scaled on its own."""
    return torch.stack([display_image(None, image[None]) for image in images]) if len(images) else images


def _featurevis_wire(
    request: dict[str, Any], status: str, result: FeatureVis | None = None, top: TopActivations | None = None
) -> FeatureVisWire:
    """The section's state: the optimised image so far (once there) and the strongest dataset examples."""
    return {
        "status": status,
        "note": "",
        "layer": request["layer"],
        "channel": request["channel"],
        "optimisation": request["optimisation"],
        "step": 0 if result is None else result.n_steps,
        "steps": request["steps"],
        "image": None if result is None else image_to_wire(result.images[0]),
        "activation": None if result is None else round(float(result.activation[0]), 4),
        "random_activation": None if result is None else round(float(result.random_activation[0]), 4),
        "top": None if top is None else image_to_wire(_display_images(top.images)),
        "top_values": [] if top is None else [round(float(v), 4) for v in top.values],
        "top_indices": [] if top is None else [int(i) for i in top.indices],
    }


def _channels_panel(result: Activations, n_channels: int) -> Panel:
    """The activation grid's data: the strongest channels ``(k, h, w)`` and their indices, as buffers."""
    chosen = result.ranking[:n_channels]
    entry = panel("channels", f"activations · {result.layer}")
    entry["channels"] = to_wire(result.maps[chosen], "float32")
    entry["channel_ids"] = to_wire(chosen, "int32")
    entry["n_evals"] = 1
    return entry
