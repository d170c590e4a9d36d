"""Grad-CAM and Grad-CAM++: where in the image a convolutional layer's evidence for a class lies.

Grad-CAM (Selvaraju et al., 2017) weights each channel of a layer's activation ``A`` ``(C, h, w)`` by the mean
gradient of the class score over the map, sums, and keeps the positive part; Grad-CAM++ (Chattopadhay et al.,
2018) weights positive gradients pixel by pixel with ``alpha = g^2 / (2 g^2 + sum(A) g^3)`` (pytorch-grad-cam's
form). The map is upsampled bilinearly (``align_corners=False``) to the input size, as Captum's
``LayerAttribution.interpolate`` does.

Gradients are taken with ``torch.autograd.grad`` with respect to the layer's activation only: the model's
parameters, their ``.grad`` and ``requires_grad`` flags are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._adapter import ModelAdapter, OutputSpace
from ._call import as_adapter, prepare
from ._hooks import forward_hook
from .explanation import Explanation
from .gradients import input_leaf
from .layers import Reshape, as_maps, capture, layers, layout_of, module_of, pick_call, resolve_layer

__all__ = ["cam_maps", "default_layer", "grad_cam", "upsample"]

# Layers that summarise space rather than describe it: too coarse to say where anything is.
_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)

_EPS = 1e-7  # keeps Grad-CAM++'s alpha finite where g = 0 (those pixels are zeroed anyway)


def cam_maps(
    activation: torch.Tensor, gradient: torch.Tensor, methods: Sequence[str] = ("grad_cam", "grad_cam++")
) -> dict[str, torch.Tensor]:
    """Low-resolution Grad-CAM and/or Grad-CAM++ maps ``(N, h, w)`` from ``A`` and ``dScore/dA`` ``(N, C, h, w)``.

    Both come from the same activation and gradient: a caller that wants both (to switch between them without
    another backward pass) asks for both; :func:`grad_cam` asks only for the one it returns. Computed in float32
    (``g**3`` underflows in half).
    """
    a, g = activation.float(), gradient.float()
    maps = {}
    if "grad_cam" in methods:
        weights = g.mean(dim=(2, 3), keepdim=True)
        maps["grad_cam"] = torch.relu((weights * a).sum(dim=1))
    if "grad_cam++" in methods:
        g2 = g * g
        alpha = g2 / (2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g + _EPS)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights_pp = (torch.relu(g) * alpha).sum(dim=(2, 3), keepdim=True)
        maps["grad_cam++"] = torch.relu((weights_pp * a).sum(dim=1))
    return maps


def upsample(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A map ``(h, w)`` or ``(N, h, w)`` resized bilinearly (``align_corners=False``) to ``size`` ``(H, W)``."""
    batch = low_res if low_res.ndim == 3 else low_res[None]
    resized = F.interpolate(batch[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return resized if low_res.ndim == 3 else resized[0]


@contextmanager
def _graph_from(module: nn.Module) -> Iterator[list[Any]]:
    """While the block runs a forward pass under ``no_grad``, ``module``'s output becomes a leaf that records
    autograd from there on (this thread's calls only); the leaves are collected, one per call.

    Grad-CAM needs gradients with respect to the layer only, so nothing before it records a graph (Captum's and
    pytorch-grad-cam's passes record the whole network). Only the first call of a module that runs several times
    becomes a leaf; the later calls' outputs are on the graph by then. The rest of the model gets copies, so an
    in-place operation downstream (``ReLU(inplace=True)``) cannot overwrite a kept output. The block's
    ``no_grad`` restores the grad mode when it ends, whatever the hook switched on.
    """
    outputs: list[Any] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            outputs.append(output)
            return None
        if not torch.is_grad_enabled():  # the first call: the graph starts here
            output = output.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
        outputs.append(output)
        return output.clone()

    with forward_hook(module, hook):
        yield outputs


class _HookedForward:
    """A forward pass that records autograd from ``module``'s output on and keeps that output, callable as
    ``prepare``'s ``compute_scores``.

    When f(x) is not cached yet, :func:`prepare` calls it and the same pass serves the target's choice and the
    gradient; when it is cached (a widget switching layers), :meth:`scores` runs the pass here.
    """

    def __init__(self, adapter: ModelAdapter, module: nn.Module) -> None:
        self.adapter, self.module = adapter, module
        self.outputs: list[Any] = []
        self.result: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # A copy (a model may change its input in place), in the layout the adapter chose for this model's
        # batches if it has: a channels-last image ran a small CNN's single forward pass 15 % faster on a CPU.
        copy = x.clone(memory_format=self.adapter.layout(tuple(x.shape[1:])))
        with self.adapter.session(), torch.no_grad(), _graph_from(self.module) as outputs:
            self.result = self.adapter.forward(copy)
        self.outputs = outputs
        return self.result

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.result if self.result is not None else self(x)


def _activation_and_gradient(
    forward: _HookedForward, x: torch.Tensor, name: str, target: int, call: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output on ``x`` and the gradient of the target score with respect to it."""
    scores = forward.scores(x)
    activation = pick_call(forward.outputs, call, name)
    if not isinstance(activation, torch.Tensor):
        raise ValueError(
            f"layer {name!r} returns {type(activation).__name__}, not a tensor; pick a layer that outputs a "
            "map (N, C, h, w), see livexai.layers(model, x)"
        )
    if not activation.requires_grad or not scores.requires_grad:
        raise ValueError(
            f"the target score does not depend on layer {name!r} through autograd (the model detaches or runs "
            "under no_grad); Grad-CAM needs a differentiable path from the layer to the output"
        )
    (gradient,) = torch.autograd.grad(scores[:, target].sum(), activation, allow_unused=True)
    if (
        gradient is None
    ):  # the layer ran but autograd never reaches it from the output: a detach, a side branch
        raise ValueError(
            f"the target score does not depend on layer {name!r} through autograd (the model detaches its output "
            "or the layer feeds a branch that does not reach the output); pick a layer on the path to the output"
        )
    return activation.detach(), gradient


def grad_cam(
    model: nn.Module | ModelAdapter,
    x: torch.Tensor,
    *,
    layer: str | nn.Module,
    target: int | None = None,
    plus_plus: bool = False,
    output: OutputSpace = "logits",
    reshape: Reshape | None = None,
    image: Any = None,
    call: int = -1,
) -> Explanation:
    """Grad-CAM (or Grad-CAM++ with ``plus_plus=True``) of ``target`` at ``layer`` for one image ``x``.

    Parameters
    ----------
    model: an ``nn.Module`` mapping ``(N, C, H, W)`` to scores ``(N, K)``, or a :class:`ModelAdapter`.
    x: the model-ready image ``(C, H, W)`` or ``(1, C, H, W)``.
    layer: a name from :func:`livexai.layers` (e.g. the last convolutional block) or the module itself.
    target: the class to explain; None explains the top class.
    output: explain ``"logits"`` (the original method) or ``"probs"``.
    reshape: for ViT-style layers that output tokens ``(N, T, D)``, a callable turning them into maps
        ``(N, D, h, w)``; applied to the activation and to its gradient alike. For a ViT with a class token and
        a 14x14 patch grid: ``lambda t: t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], 14, 14)``.
    image: the display image for overlays (see :func:`livexai.Explanation`); derived from ``x`` if None.
    call: which call of a module that runs several times per forward pass (default: the last, like Captum).

    Returns
    -------
    An :class:`Explanation` with ``attributions`` ``(H, W)`` >= 0 at the input size, method ``"grad_cam"`` or
    ``"grad_cam++"``. ``params["low_res"]`` holds the map ``(h, w)`` before upsampling (the layer's resolution).
    """
    if not isinstance(plus_plus, bool):
        raise TypeError(f"plus_plus must be True or False, got {plus_plus!r}")
    if reshape is not None and not callable(reshape):
        raise TypeError(
            f"reshape must be a callable turning tokens (N, T, D) into maps (N, D, h, w), got {reshape!r}"
        )
    adapter = as_adapter(model, output)
    name, module = resolve_layer(adapter.model, layer)
    forward = _HookedForward(adapter, module)
    with adapter.session():  # the forward pass and its backward pass under one hold of the model's lock
        call_ = prepare(
            adapter, x, target=target, output=output, image=image, expect="image", compute_scores=forward
        )
        activation, gradient = _activation_and_gradient(forward, call_.x, name, call_.target, call)
    layout = None if reshape is not None else layout_of(adapter, module, call_.x, activation)
    maps_a = as_maps(activation, name, reshape, layout)
    maps_g = reshape(gradient) if reshape is not None else as_maps(gradient, name, None, layout)
    if maps_g.shape != maps_a.shape:
        raise ValueError(
            f"reshape gave activation {tuple(maps_a.shape)} but gradient {tuple(maps_g.shape)}; it must be a pure "
            "rearrangement that treats both alike"
        )
    method = "grad_cam++" if plus_plus else "grad_cam"
    low = cam_maps(maps_a, maps_g, (method,))
    attributions = upsample(low[method], tuple(call_.x.shape[-2:]))[0]
    params = {
        "layer": name,
        "plus_plus": plus_plus,
        "layer_shape": tuple(activation.shape),
        "low_res": low[method][0].detach().to("cpu", torch.float32),
    }
    if not bool(low[method].any()):
        params["warning"] = (
            f"{'Grad-CAM++' if plus_plus else 'Grad-CAM'} at layer {name!r} is zero everywhere: the class score "
            "does not grow with any of this layer's features where they are (a ViT's classifier, for one, reads "
            "only the class token after its last attention). Try an earlier layer, such as "
            "livexai.default_layer(model, x)"
        )
    return call_.explanation(method, attributions, params)


def default_layer(
    model: nn.Module | ModelAdapter,
    x: torch.Tensor,
    *,
    target: int | None = None,
    candidates: Sequence[str] | None = None,
) -> str | None:
    """The layer Grad-CAM should explain by default: the deepest one whose map for ``target`` is not degenerate.

    Candidates are :func:`livexai.layers` ``(model, x)`` (maps over the image that depend on it) less pooling
    layers. One forward and one backward pass give every candidate's Grad-CAM at once; the deepest whose map is
    neither zero nor constant wins. That skips what the deepest layer alone would give: an all-zero map on a
    ViT's last blocks (its classifier reads only the class token) or a constant one on a 1x1 grid. None when the
    model has no candidate; the deepest candidate when every map is degenerate. ``candidates`` (names from
    :func:`livexai.layers`, when the caller has them already) saves discovering the layers again.
    """
    adapter = as_adapter(model, "logits")
    modules = dict(module_of(model).named_modules())
    found = layers(model, x) if candidates is None else candidates
    names = [name for name in found if not isinstance(modules[name], _POOLING)]
    for name, low in reversed(_every_cam(adapter, [(name, modules[name]) for name in names], x, target)):
        if float(low.max() - low.min()) > 0:
            return name
    return names[-1] if names else None


def _every_cam(
    adapter: ModelAdapter, candidates: list[tuple[str, nn.Module]], x: torch.Tensor, target: int | None
) -> list[tuple[str, torch.Tensor]]:
    """Grad-CAM maps ``(h, w)`` of ``target`` at every candidate layer, from one forward and one backward pass,
    in the order the layers' outputs were computed (a block after the layers inside it; layers the score does not
    reach through autograd are left out)."""
    if not candidates:
        return []
    call_ = prepare(adapter, x, target=target, expect="image")
    finished: list[nn.Module] = []  # in the order their outputs were computed: the deepest last
    with ExitStack() as hooks, adapter.session(), torch.enable_grad():
        captured = [hooks.enter_context(capture(module, for_grad=True)) for _, module in candidates]
        for _, module in candidates:
            hooks.enter_context(
                forward_hook(module, lambda module, _inputs, _output: finished.append(module))
            )
        scores = adapter.forward(input_leaf(call_.x))
        order = {module: position for position, module in reversed(list(enumerate(finished)))}
        reached = sorted(
            (
                (name, module, outputs[-1])
                for (name, module), outputs in zip(candidates, captured, strict=True)
                if outputs and isinstance(outputs[-1], torch.Tensor) and outputs[-1].requires_grad
            ),
            key=lambda entry: order.get(entry[1], -1),
        )
        if not reached:
            return []
        gradients = torch.autograd.grad(
            scores[:, call_.target].sum(), [activation for _, _, activation in reached], allow_unused=True
        )
    maps = []
    for (name, module, activation), gradient in zip(reached, gradients, strict=True):
        if gradient is not None:
            layout = layout_of(adapter, module, call_.x, activation)
            low = cam_maps(
                as_maps(activation.detach(), name, None, layout),
                as_maps(gradient, name, None, layout),
                ("grad_cam",),
            )
            maps.append((name, low["grad_cam"][0]))
    return maps
