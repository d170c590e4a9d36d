"""Layers of a model: which ones a person can pick, what they output, and what they activate on an input.

Every look inside the model uses hooks registered for one call, inside ``try``, and removed in ``finally``, even
when the model raises (Captum's ``_forward_layer_distributed_eval`` does the same). Persistent hooks were
pytorch-grad-cam's recurring memory-leak source (its issues #88, #132, #483): nothing here outlives a call.
"""

from __future__ import annotations

import difflib
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ._adapter import ModelAdapter
from ._call import as_adapter
from ._inputs import as_single_input, check_int

LayerKind = Literal["spatial", "tokens", "vector", "other"]
Reshape = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["Activations", "LayerInfo", "activation_grid", "activations", "layer_info", "layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One named module as seen in a forward pass.

    ``shape`` is the output shape for a batch of one (``None`` when the output is not a tensor); ``kind`` is
    ``"spatial"`` for ``(N, C, h, w)`` maps with ``h > 1`` or ``w > 1``, ``"tokens"`` for ``(N, T, D)`` sequences
    (ViT-style; Grad-CAM needs a ``reshape``), ``"vector"`` for ``(N, D)`` or ``(N, C, 1, 1)``, ``"other"``
    otherwise. ``calls`` counts how often the module ran (a reused ReLU runs several times; it is listed once).
    ``passthrough`` is True for an ``nn.Identity`` or an empty ``nn.Sequential`` (a ResNet's shortcut) that handed
    back its input: its maps are those of the layer before it.
    """

    name: str
    shape: tuple[int, ...] | None
    kind: LayerKind
    calls: int = 1
    passthrough: bool = False


def output_kind(output: object) -> LayerKind:
    """What a module output is, for display and for checking that a method can use it."""
    if not isinstance(output, torch.Tensor):
        return "other"
    if output.ndim == 4:
        return "spatial" if output.shape[2] > 1 or output.shape[3] > 1 else "vector"
    if output.ndim == 3:
        return "tokens"
    if output.ndim == 2:
        return "vector"
    return "other"


def module_of(model: object) -> nn.Module:
    """The ``nn.Module`` behind ``model`` (a module or a :class:`ModelAdapter` wrapping one)."""
    inner = model.model if isinstance(model, ModelAdapter) else model
    if not isinstance(inner, nn.Module):
        raise TypeError(
            f"looking inside a model needs a torch.nn.Module, got {type(inner).__name__}; "
            "layer methods (Grad-CAM, activations) cannot see inside a plain function"
        )
    if isinstance(inner, torch.jit.ScriptModule):
        raise TypeError(
            "the model is a TorchScript module (torch.jit.trace or torch.jit.script): its layers run compiled "
            "code that Python hooks never see, so layer methods (Grad-CAM, activations, layers()) cannot look "
            "inside it. Pass the original nn.Module; lime, kernel_shap and the gradient methods work on either"
        )
    return inner


def resolve_layer(model: object, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` for a layer given by its name from :func:`layers` or as a submodule of ``model``.

    An unknown name raises a ``ValueError`` listing the closest names, so a typo is fixed at a glance.
    """
    root = module_of(model)
    named = {name: module for name, module in root.named_modules() if name}
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise ValueError(
            f"the layer {type(layer).__name__} is not a submodule of the model; pass one of its own modules "
            "or a name from livexai.layers(model)"
        )
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a name from livexai.layers(model) or an nn.Module, got {layer!r}")
    if layer in named:
        return layer, named[layer]
    close = difflib.get_close_matches(layer, list(named), n=5, cutoff=0.5)
    hint = (
        f"close matches: {', '.join(map(repr, close))}" if close else f"some names: {_preview(list(named))}"
    )
    raise ValueError(f"unknown layer {layer!r}; {hint}. See livexai.layers(model) for all names.")


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "(none)"


@contextmanager
def capture(module: nn.Module, *, for_grad: bool = False) -> Iterator[list[torch.Tensor]]:
    """Collect ``module``'s tensor outputs, one per call, while the block runs; the hook is gone afterwards.

    With ``for_grad`` the hook keeps the module's own output and hands a clone on to the rest of the model, so an
    in-place operation downstream (``ReLU(inplace=True)``, ``out += identity``) cannot overwrite the activation
    that gradients are taken with respect to. Values downstream are unchanged.

    Hooks belong to the module, not the thread: only calls from the thread that opened the block are collected,
    so a widget computing in the background never picks up a forward pass the kernel runs at the same time.
    """
    outputs: list[torch.Tensor] = []
    owner = threading.get_ident()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        if not isinstance(output, torch.Tensor):
            outputs.append(output)
            return None
        outputs.append(output)
        return output.clone() if for_grad else None

    handle = None
    try:
        handle = module.register_forward_hook(hook)
        yield outputs
    finally:
        if handle is not None:
            handle.remove()


def _forward_one(adapter: ModelAdapter, x: torch.Tensor) -> None:
    """One no-grad forward pass of a prepared input in eval mode, for hooks to observe."""
    with adapter.session(), torch.inference_mode():
        adapter.forward(x)


def _is_passthrough(module: nn.Module) -> bool:
    """An ``nn.Identity`` or an empty ``nn.Sequential``: modules that hand their input straight back.

    Decided by type: an in-place ReLU also returns the very tensor it was given, but changed.
    """
    return isinstance(module, nn.Identity) or (isinstance(module, nn.Sequential) and len(module) == 0)


def layer_info(model: object, x: torch.Tensor) -> list[LayerInfo]:
    """Every named submodule that runs on ``x``, in the order of its first call, with output shape and kind.

    One forward pass with temporary hooks on all modules. ``x`` is one input, ``(C, H, W)`` or ``(F,)`` (with or
    without a batch dimension of one). Modules that do not run are left out; a reused module is listed once.
    """
    root = module_of(model)
    adapter = as_adapter(model, "logits")
    batch = adapter.prepare(as_single_input(x)[0])
    order: list[nn.Module] = []
    seen: dict[nn.Module, list[Any]] = {}  # module -> [(shape, kind), number of calls, passthrough]

    def pre_hook(module: nn.Module, _inputs: Any) -> None:
        if module not in seen:
            seen[module] = [None, 0, False]
            order.append(module)

    def post_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        record = seen[module]
        if record[1] == 0:
            record[0] = tuple(output.shape) if isinstance(output, torch.Tensor) else None, output_kind(output)
            record[2] = _is_passthrough(module) and len(inputs) == 1 and output is inputs[0]
        record[1] += 1

    names = {module: name for name, module in root.named_modules() if name}
    handles = []
    try:
        for module in names:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        _forward_one(adapter, batch)
    finally:
        for handle in handles:
            handle.remove()
    infos = []
    for module in order:
        if module not in names or seen[module][0] is None:
            continue  # the root, or a module whose forward raised before returning
        (shape, kind), calls, passthrough = seen[module]
        infos.append(LayerInfo(names[module], shape, kind, calls, passthrough))
    return infos


def layers(
    model: object, x: torch.Tensor | None = None, *, kinds: tuple[str, ...] = ("spatial",)
) -> list[str]:
    """The names of the layers a person can pick, in forward order.

    Without ``x``: every named submodule in registration order (no forward pass). With an example ``x``: the
    modules that run on it, in the order of their first call, keeping only outputs of the given ``kinds``
    (default: spatial maps ``(N, C, h, w)`` with ``h > 1`` or ``w > 1``, the layers Grad-CAM can use; add
    ``"tokens"`` for ViT-style ``(N, T, D)`` outputs, see :func:`layer_info`). Modules that hand back their
    input unchanged (``nn.Identity`` shortcuts of a ResNet) are left out: they would repeat the layer before.
    """
    if x is None:
        return [name for name, _ in module_of(model).named_modules() if name]
    return [info.name for info in layer_info(model, x) if info.kind in kinds and not info.passthrough]


# -- activations -------------------------------------------------------------------------------------------------
def as_maps(output: object, name: str, reshape: Reshape | None) -> torch.Tensor:
    """A captured layer output as maps ``(N, C, h, w)``; tokens ``(N, T, D)`` go through ``reshape``.

    Raises a ``ValueError`` saying what the layer gave and what to do when it is not a spatial map.
    """
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"layer {name!r} returns {type(output).__name__}, not a tensor; pick a layer that outputs a map "
            "(N, C, h, w), see livexai.layers(model, x)"
        )
    if reshape is not None:
        maps = reshape(output)
        if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or maps.shape[0] != output.shape[0]:
            got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise ValueError(
                f"reshape turned layer {name!r}'s output {tuple(output.shape)} into {got}; expected (N, C, h, w), "
                "e.g. tokens (N, T, D) -> drop the class token, transpose and view as (N, D, h, w)"
            )
        return maps
    kind = output_kind(output)
    if kind == "spatial":
        return output
    if kind == "tokens":
        raise ValueError(
            f"layer {name!r} outputs tokens {tuple(output.shape)} (N, T, D), not a spatial map; pass "
            "reshape=callable turning them into (N, D, h, w), e.g. for a ViT with a class token and an h x w "
            "patch grid: lambda t: t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)"
        )
    raise ValueError(
        f"layer {name!r} outputs shape {tuple(output.shape)} ({kind}), which has no spatial dimensions; "
        "pick a layer with output (N, C, h, w), h or w > 1, from livexai.layers(model, x)"
    )


def pick_call(outputs: list[Any], call: int, name: str) -> Any:
    """The output of one call of a layer (``call=-1``: the last, as Captum does for a reused module)."""
    if not outputs:
        raise ValueError(f"layer {name!r} did not run on this input; pick one from livexai.layers(model, x)")
    if not -len(outputs) <= call < len(outputs):
        raise ValueError(
            f"call={call} is out of range: layer {name!r} ran {len(outputs)} time(s) on this input"
        )
    return outputs[call]


@dataclass(eq=False)
class Activations:
    """What one layer outputs on one input.

    ``maps``: ``(C, h, w)`` CPU float32 (a vector layer gives ``(C, 1, 1)``); ``ranking``: channel indices by
    mean activation, largest first; ``layer``: the layer's name; ``top_k``: how many channels to show.
    """

    maps: torch.Tensor
    ranking: torch.Tensor
    layer: str
    top_k: int = 16

    def grid(self, top_k: int | None = None, ncols: int | None = None, pad: int = 1) -> torch.Tensor:
        """The top channels laid out as one image, see :func:`activation_grid`."""
        return activation_grid(self, top_k=self.top_k if top_k is None else top_k, ncols=ncols, pad=pad)


def activations(
    model: object,
    x: torch.Tensor,
    *,
    layer: str | nn.Module,
    top_k: int = 16,
    reshape: Reshape | None = None,
    call: int = -1,
) -> Activations:
    """The channels of ``layer`` on input ``x``, ranked by mean activation (one no-grad forward pass).

    Spatial layers give ``(C, h, w)`` maps; token layers need ``reshape`` (as for :func:`livexai.grad_cam`);
    vector layers give ``(C, 1, 1)``. ``call`` picks the call of a module that runs several times (last by default).
    """
    top_k = check_int("top_k", top_k, 1)
    name, module = resolve_layer(model, layer)
    adapter = as_adapter(model, "logits")
    batch = adapter.prepare(as_single_input(x)[0])
    with capture(module) as outputs:
        _forward_one(adapter, batch)
    output = pick_call(outputs, call, name)
    if isinstance(output, torch.Tensor) and output.ndim == 2 and reshape is None:
        maps = output[:, :, None, None]
    else:
        maps = as_maps(output, name, reshape)
    maps = maps[0].detach().to("cpu", torch.float32)
    ranking = torch.argsort(maps.mean(dim=(1, 2)), descending=True, stable=True)
    return Activations(maps=maps, ranking=ranking, layer=name, top_k=top_k)


def activation_grid(
    maps: Activations | torch.Tensor,
    top_k: int = 16,
    ncols: int | None = None,
    pad: int = 1,
    pad_value: float = 0.0,
) -> torch.Tensor:
    """The ``top_k`` strongest channels as one ``(Hgrid, Wgrid)`` image, each channel min-max scaled to [0, 1].

    ``maps`` is an :class:`Activations` (its ranking is used) or a tensor ``(C, h, w)`` (ranked by mean here).
    Channels fill rows of ``ncols`` (default: a near-square grid) separated by ``pad`` pixels of ``pad_value``.
    A constant channel is drawn as zeros. The grid is on the device of ``maps`` (:func:`activations` gives CPU maps).
    """
    if isinstance(maps, Activations):
        values, ranking = maps.maps, maps.ranking
    elif isinstance(maps, torch.Tensor) and maps.ndim == 3:
        values = maps.detach().float()
        ranking = torch.argsort(values.mean(dim=(1, 2)), descending=True, stable=True)
    else:
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise TypeError(f"maps must be an Activations or a tensor (C, h, w), got {got}")
    top_k = min(check_int("top_k", top_k, 1), values.shape[0])
    ncols = math.ceil(math.sqrt(top_k)) if ncols is None else min(check_int("ncols", ncols, 1), top_k)
    pad = check_int("pad", pad, 0)
    chosen = values[ranking[:top_k]]
    low = chosen.amin(dim=(1, 2), keepdim=True)
    span = chosen.amax(dim=(1, 2), keepdim=True) - low
    scaled = torch.where(span > 0, (chosen - low) / span.clamp_min(torch.finfo(chosen.dtype).tiny), 0.0)
    nrows = math.ceil(top_k / ncols)
    h, w = scaled.shape[1:]
    grid = torch.full(
        (nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad),
        pad_value,
        dtype=scaled.dtype,
        device=scaled.device,
    )
    for index in range(top_k):  # top_k tiles (16 by default), not a per-pixel loop
        row, col = divmod(index, ncols)
        top, left = row * (h + pad), col * (w + pad)
        grid[top : top + h, left : left + w] = scaled[index]
    return grid
