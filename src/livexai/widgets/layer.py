"""``LayerWidget``: Grad-CAM, Grad-CAM++ or the raw activations of any layer, picked from a list."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import traitlets
from typing_extensions import Unpack

from .._adapter import Model, ModelAdapter, OutputSpace
from ..explanation import Explanation
from ..layers import Activations
from ._base import ExplainerWidget, Panel, SanityRequest, WidgetOptions, panel
from ._params import OUTPUT, ChoiceParam, Fixed, IntParam
from ._runner import JobContext
from ._serialize import to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS: tuple[str, ...] = ("grad_cam", "grad_cam++", "activations")
TITLES = {"grad_cam": "Grad-CAM", "grad_cam++": "Grad-CAM++", "activations": "activations"}


class LayerOptions(WidgetOptions, total=False):
    """``LayerWidget``'s keywords: its parameters and fixed settings."""

    layer: str
    method: str
    n_channels: int
    output: OutputSpace


class LayerWidget(ExplainerWidget[Explanation | Activations]):
    """Look inside one layer: where its evidence for a class lies (Grad-CAM/++), or what its channels see.

    ``LayerWidget(model, x, image=None, labels=None, layer=None, method="grad_cam")``. ``layer`` is one of
    :func:`livexai.layers` ``(model, x)`` (default: :func:`livexai.default_layer`, the deepest layer whose
    Grad-CAM is not degenerate).
    With ``method="activations"`` the ``n_channels`` strongest channels are drawn as a grid; clicking one sets
    ``channel`` and enlarges it (no recomputation). ``output`` (``"logits"``/``"probs"``) is fixed at creation.
    The Grad-CAM map's "sanity check" button (or :meth:`sanity_check`) randomises a copy of the model layer by
    layer and draws the map degrading.
    """

    FIXED: ClassVar[dict[str, Fixed]] = {"output": OUTPUT}

    kind = traitlets.Unicode("layer").tag(sync=True)
    title = traitlets.Unicode("Layer").tag(sync=True)
    layer = ChoiceParam("", "layer", choices=lambda widget: widget._layer_names)
    method = ChoiceParam("grad_cam", "method", choices=METHODS)
    n_channels = IntParam(16, "channels shown", low=1, high=1024, ui=(4, 64, 4))
    channel = traitlets.Int(-1).tag(sync=True)  # the enlarged channel (-1: the strongest); set by clicks

    def __init__(self, model: Model, x: torch.Tensor, **options: Unpack[LayerOptions]) -> None:
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
        super().__init__(adapter, x, **options)

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


def _channels_panel(result: Activations, n_channels: int) -> Panel:
    """The activation grid's data: the strongest channels ``(k, h, w)`` and their indices, as buffers."""
    chosen = result.ranking[:n_channels]
    entry = panel("channels", f"activations · {result.layer}")
    entry["channels"] = to_wire(result.maps[chosen], "float32")
    entry["channel_ids"] = to_wire(chosen, "int32")
    entry["n_evals"] = 1
    return entry
