"""``LayerWidget``: Grad-CAM, Grad-CAM++ or the raw activations of any layer, picked from a list."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import traitlets
from torch import nn

from .._adapter import Model, ModelAdapter
from ._base import ExplainerWidget, Param, panel
from ._runner import JobContext, shared_runner
from ._serialize import to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS: tuple[str, ...] = ("grad_cam", "grad_cam++", "activations")
TITLES = {"grad_cam": "Grad-CAM", "grad_cam++": "Grad-CAM++", "activations": "activations"}


_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


def default_layer(model: object, names: Sequence[str]) -> str | None:
    """The layer Grad-CAM usually explains: the deepest spatial one that is not a pooling layer.

    ``names`` come from :func:`livexai.layers` (spatial outputs, forward order). A pooling layer at the end (an
    adaptive pool to 2x2, say) is spatial but too coarse to say where anything is.
    """
    modules = dict(model.named_modules()) if isinstance(model, nn.Module) else {}
    for name in reversed(names):
        if not isinstance(modules.get(name), _POOLING):
            return name
    return names[-1] if names else None


class LayerWidget(ExplainerWidget):
    """Look inside one layer: where its evidence for a class lies (Grad-CAM/++), or what its channels see.

    ``LayerWidget(model, x, image=None, labels=None, layer=None, method="grad_cam")``. ``layer`` is one of
    :func:`livexai.layers` ``(model, x)`` (default: :func:`default_layer`, the usual Grad-CAM choice).
    With ``method="activations"`` the ``n_channels`` strongest channels are drawn as a grid; clicking one sets
    ``channel`` and enlarges it (no recomputation). ``output`` (``"logits"``/``"probs"``) is fixed at creation.
    """

    kind = traitlets.Unicode("layer").tag(sync=True)
    title = traitlets.Unicode("Layer").tag(sync=True)
    layer = traitlets.Unicode("").tag(sync=True)
    method = traitlets.Unicode("grad_cam").tag(sync=True)
    n_channels = traitlets.Int(16).tag(sync=True)
    channel = traitlets.Int(-1).tag(sync=True)  # the enlarged channel (-1: the strongest); set by clicks

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        *,
        image: Any = None,
        labels: Any = None,
        output: str = "logits",
        **params: Any,
    ) -> None:
        from ..layers import layers

        runner = params.get("runner")
        self._output = output
        adapter = model if isinstance(model, ModelAdapter) else ModelAdapter(model)
        with (runner or shared_runner()).exclusive():
            self._layer_names = tuple(layers(adapter, x))
        if not self._layer_names:
            raise ValueError(
                "the model has no layer with a spatial output (N, C, h, w) on this input; Grad-CAM and "
                "activations need a convolutional layer (see livexai.layers(model, x))"
            )
        params.setdefault("layer", default_layer(adapter.model, self._layer_names))
        super().__init__(adapter, x, image=image, labels=labels, **params)

    def _param_specs(self) -> list[Param]:
        return [
            Param("layer", "choice", "layer", choices=self._layer_names),
            Param("method", "choice", "method", choices=METHODS),
            Param("n_channels", "int", "channels shown", low=1, high=1024, ui_low=4, ui_high=64, step=4),
        ]

    @traitlets.validate("layer", "method", "n_channels")
    def _validate_params(self, proposal: dict[str, Any]) -> Any:
        return self._validate_trait(proposal)

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
            context.check_cancel()
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
                output=self._output,
                image=self._display,
            )
            context.check_cancel()
            shown = [panel("cam", f"{TITLES[method]} · {request['layer']}", result)]
            n_evals = result.n_evals
        elapsed_ms = (time.perf_counter() - began) * 1000.0

        def apply() -> None:
            if method == "activations" and self.channel >= result.maps.shape[0]:
                self.channel = -1
            self._finish(result, shown, elapsed_ms=elapsed_ms, n_evals=n_evals)

        context.post(apply)

    def _figure(self) -> Figure | None:
        result = self.explanation
        if result is None or not hasattr(result, "ranking"):
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


def _channels_panel(result: Any, n_channels: int) -> dict[str, Any]:
    """The activation grid's data: the strongest channels ``(k, h, w)`` and their indices, as buffers."""
    chosen = result.ranking[:n_channels]
    entry = panel("channels", f"activations · {result.layer}")
    entry["channels"] = to_wire(result.maps[chosen], "float32")
    entry["channel_ids"] = to_wire(chosen, "int32")
    entry["n_evals"] = 1
    return entry
