"""Layers of a model: which ones a person can pick, what they output, and what they activate on an input.

Every look inside the model uses hooks registered for one call, inside ``try``, and removed in ``finally``, even
when the model raises (Captum's ``_forward_layer_distributed_eval`` does the same). Persistent hooks were
pytorch-grad-cam's recurring memory-leak source (its issues #88, #132, #483): nothing here outlives a call.
"""

from __future__ import annotations

import difflib
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ._adapter import ModelAdapter
from ._call import as_adapter
from ._hooks import forward_hook, pre_hook
from ._inputs import as_single_input, check_int
from ._layout import Layout, infer_layout, layout_from_shape

LayerKind = Literal["spatial", "tokens", "vector", "constant", "other"]
Reshape = Callable[[torch.Tensor], torch.Tensor]

# What layer_info found out about each layer (layout, whether it depends on the input), per input shape, so
# grad_cam and activations read a layer right without probing it again. Weak keys: a forgotten model frees it.
_probed: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[Layout | None, bool]]] = (
    weakref.WeakKeyDictionary()
)
_probed_guard = threading.Lock()

__all__ = ["Activations", "LayerInfo", "activation_grid", "activations", "layer_info", "layers"]


@dataclass(frozen=True)
class LayerInfo:
    """One named module as seen in a forward pass.

    ``shape`` is the output shape for a batch of one (``None`` when the output is not a tensor); ``kind`` is
    ``"spatial"`` for maps over the image, channels first ``(N, C, h, w)`` or last ``(N, h, w, C)``,
    ``"tokens"`` for ``(N, T, D)`` sequences (ViT, Swin), ``"vector"`` for ``(N, D)`` or ``(N, C, 1, 1)``,
    ``"constant"`` for an output that does not depend on the input (Swin's relative position bias), ``"other"``
    otherwise. ``layout`` says how to read the output as maps over the image (None: it cannot be; see
    :mod:`livexai._layout`). ``calls`` counts how often the module ran (a reused ReLU runs several times; it is
    listed once). ``passthrough`` is True for an ``nn.Identity`` or an empty ``nn.Sequential`` (a ResNet's
    shortcut) that handed back its input: its maps are those of the layer before it.
    """

    name: str
    shape: tuple[int, ...] | None
    kind: LayerKind
    calls: int = 1
    passthrough: bool = False
    layout: Layout | None = None


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
    if isinstance(layer, str) and layer:
        # The common case, a valid name: found along its path, without listing every module.
        found = _submodule_or_none(root, layer)
        if found is not None:
            return layer, found
    if isinstance(layer, nn.Module):
        known = _layer_names.get(layer)
        if known is not None and _submodule_or_none(root, known) is layer:
            return known, layer
        for name, module in root.named_modules():
            if module is layer and name:
                _layer_names[layer] = name
                return name, module
        raise ValueError(
            f"the layer {type(layer).__name__} is not a submodule of the model; pass one of its own modules "
            "or a name from livexai.layers(model)"
        )
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a name from livexai.layers(model) or an nn.Module, got {layer!r}")
    named = {name: module for name, module in root.named_modules() if name}
    if layer in named:
        return layer, named[layer]
    close = difflib.get_close_matches(layer, list(named), n=5, cutoff=0.5)
    hint = (
        f"close matches: {', '.join(map(repr, close))}" if close else f"some names: {_preview(list(named))}"
    )
    raise ValueError(f"unknown layer {layer!r}; {hint}. See livexai.layers(model) for all names.")


# The name each layer passed as a module was last found under, checked again on use (a model can be rebuilt):
# Grad-CAM on a layer given as a module would otherwise list every module of the model on every call.
_layer_names: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _submodule_or_none(root: nn.Module, name: str) -> nn.Module | None:
    try:
        return root.get_submodule(name)
    except AttributeError:
        return None


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "(none)"


@contextmanager
def capture(module: nn.Module, *, for_grad: bool = False) -> Iterator[list[torch.Tensor]]:
    """Collect ``module``'s tensor outputs, one per call, while the block runs; the hook is gone afterwards.

    With ``for_grad`` the hook keeps the module's own output and hands a clone on to the rest of the model, so an
    in-place operation downstream (``ReLU(inplace=True)``, ``out += identity``) cannot overwrite the activation
    that gradients are taken with respect to. Values downstream are unchanged.

    Only calls from the thread that opened the block are collected (:mod:`livexai._hooks`), so a widget computing
    in the background never picks up a forward pass the kernel runs at the same time.
    """
    outputs: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        outputs.append(output)
        return output.clone() if for_grad and isinstance(output, torch.Tensor) else None

    with forward_hook(module, hook):
        yield outputs


def _forward_one(adapter: ModelAdapter, x: torch.Tensor) -> None:
    """One no-grad forward pass of a prepared input in eval mode, for hooks to observe."""
    with adapter.session(), torch.inference_mode():
        adapter.forward(x)


def _is_passthrough(module: nn.Module) -> bool:
    """An ``nn.Identity`` or an empty ``nn.Sequential``: modules that hand their input straight back.

    Decided by type: an in-place ReLU also returns the very tensor it was given, but changed.
    """
    return isinstance(module, nn.Identity) or (isinstance(module, nn.Sequential) and len(module) == 0)


@dataclass(eq=False)
class _Seen:
    """What the hooks saw of one module: its first output (kept for the layout probe) and how often it ran."""

    output: Any = None
    calls: int = 0
    passthrough: bool = False
    layout: Layout | None = None
    varies: bool = True

    def info(self, name: str) -> LayerInfo:
        output = self.output
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
        kind = output_kind(output)
        if not self.varies:
            kind = "constant"
        elif kind == "spatial" and (self.layout is None or self.layout.kind == "tokens"):
            kind = "other"  # four dimensions, but not a map over the image
        return LayerInfo(name, shape, kind, self.calls, self.passthrough, self.layout)


def _run_hooked(
    adapter: ModelAdapter,
    modules: list[nn.Module],
    x: torch.Tensor,
    on_output: Callable[..., None],
    on_call: Callable[..., None] | None = None,
) -> None:
    """One forward pass of ``x`` with ``on_call(module, inputs)`` and ``on_output(module, inputs, output)``
    hooked on ``modules``, unhooked afterwards whatever happens. Only this thread's calls reach them (hooks belong
    to the module, and another thread may run the model meanwhile, see :mod:`livexai._hooks`)."""
    with ExitStack() as hooks:
        for module in modules:
            if on_call is not None:
                hooks.enter_context(pre_hook(module, on_call))
            hooks.enter_context(forward_hook(module, on_output))
        _forward_one(adapter, x)


def _changed_corner(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(1, C, H, W)`` with its top-left quadrant changed by seeded noise of the image's own scale."""
    changed = x.clone()
    height, width = x.shape[-2:]
    corner = changed[..., : math.ceil(height / 2), : math.ceil(width / 2)]
    noise = torch.randn(corner.shape, generator=torch.Generator().manual_seed(0)).to(x.device, x.dtype)
    corner += noise * (x.float().std().clamp_min(0.1)).to(x.dtype)
    return changed


def layer_info(model: object, x: torch.Tensor) -> list[LayerInfo]:
    """Every named submodule that runs on ``x``, in the order of its first call, with output shape and kind.

    ``x`` is one input, ``(C, H, W)`` or ``(F,)`` (with or without a batch dimension of one). One forward pass
    with temporary hooks on all modules; for an image, a second one on ``x`` with its top-left quadrant changed
    tells each output's layout and whether it depends on the input at all (:mod:`livexai._layout`). Modules that
    do not run are left out; a reused module is listed once.
    """
    root = module_of(model)
    adapter = as_adapter(model, "logits")
    batch = adapter.prepare(as_single_input(x)[0])
    names = {module: name for name, module in root.named_modules() if name}
    seen: dict[nn.Module, _Seen] = {}  # in the order of first calls

    def enter(module: nn.Module, _inputs: Any) -> None:
        seen.setdefault(module, _Seen())  # a module is listed where it is first called, before its children

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        entry = seen[module]
        if entry.calls == 0:
            entry.passthrough = _is_passthrough(module) and len(inputs) == 1 and output is inputs[0]
            entry.output = output.detach().clone() if isinstance(output, torch.Tensor) else output
        entry.calls += 1

    _run_hooked(adapter, list(names), batch, record, enter)
    if batch.ndim == 4:
        _probe_layouts(adapter, seen, batch)
    return [entry.info(names[module]) for module, entry in seen.items() if entry.output is not None]


def _probe_layouts(adapter: ModelAdapter, seen: dict[nn.Module, _Seen], batch: torch.Tensor) -> None:
    """Run the changed-corner pass and set each module's layout and ``varies``; remember them per module."""
    probed: set[nn.Module] = set()

    def compare(module: nn.Module, _inputs: Any, output: Any) -> None:
        entry = seen.get(module)
        if entry is None or module in probed or not isinstance(output, torch.Tensor):
            return
        probed.add(module)
        if isinstance(entry.output, torch.Tensor):
            entry.layout, entry.varies = infer_layout(entry.output, output, tuple(batch.shape[-2:]))

    _run_hooked(adapter, list(seen), _changed_corner(batch), compare)
    with _probed_guard:
        for module, entry in seen.items():
            _probed.setdefault(module, {})[tuple(batch.shape)] = (entry.layout, entry.varies)


def layout_of(model: object, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> Layout | None:
    """How ``module``'s ``output`` on images shaped like ``x`` reads as maps.

    From the shape alone when only one reading fits the image (a CNN's maps, patch tokens), so Grad-CAM stays one
    forward pass; otherwise probed once by :func:`layer_info` and remembered.
    """
    shape = tuple(x.shape) if x.ndim == 4 else (1, *x.shape)  # only its shape matters: no input checks again
    plain = layout_from_shape(tuple(output.shape), shape[-2:])
    if plain is not None:
        return plain
    with _probed_guard:
        known = _probed.get(module, {}).get(shape)
    if known is None:
        layer_info(model, x)
        with _probed_guard:
            known = _probed.get(module, {}).get(shape, (None, True))
    return known[0]


def layers(
    model: object, x: torch.Tensor | None = None, *, kinds: tuple[str, ...] = ("spatial", "tokens")
) -> list[str]:
    """The names of the layers a person can pick, in forward order.

    Without ``x``: every named submodule in registration order (no forward pass). With an example ``x``: the
    modules that run on it, in the order of their first call, whose output reads as maps over the image and is
    of one of the ``kinds``: ``"spatial"`` (channels first or last) and ``"tokens"`` (a ViT's or Swin's patch
    grid), see :func:`layer_info`. Left out: outputs that do not depend on the input, and modules that hand back
    their input unchanged (``nn.Identity`` shortcuts of a ResNet): they would repeat the layer before.
    """
    if x is None:
        return [name for name, _ in module_of(model).named_modules() if name]
    return [
        info.name
        for info in layer_info(model, x)
        if info.kind in kinds and info.layout is not None and not info.passthrough
    ]


# -- activations -------------------------------------------------------------------------------------------------
def as_maps(output: object, name: str, reshape: Reshape | None, layout: Layout | None = None) -> torch.Tensor:
    """A captured layer output as maps ``(N, C, h, w)``: through ``reshape`` if given, else read by ``layout``.

    Raises a ``ValueError`` saying what the layer gave and what to do when it is not a map over the image.
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
    if layout is not None:
        return layout.to_maps(output)
    if output.ndim == 3:
        raise ValueError(
            f"layer {name!r} outputs tokens {tuple(output.shape)} (N, T, D) that do not form a patch grid of the "
            "image; pass reshape=callable turning them into (N, D, h, w), e.g. for a class token and an h x w "
            "grid: lambda t: t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)"
        )
    raise ValueError(
        f"layer {name!r} outputs shape {tuple(output.shape)} ({output_kind(output)}), which is not a map over the "
        "image (or does not depend on it); pick a layer from livexai.layers(model, x)"
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

    Spatial and token layers give ``(C, h, w)`` maps (channels-last outputs and patch tokens are read by their
    layout, see :func:`layer_info`; an explicit ``reshape`` wins); vector layers give ``(C, 1, 1)``. ``call``
    picks the call of a module that runs several times (last by default).
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
        layout = (
            None
            if reshape is not None or not isinstance(output, torch.Tensor)
            else layout_of(adapter, module, x, output)
        )
        maps = as_maps(output, name, reshape, layout)
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
