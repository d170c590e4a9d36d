"""Model parameter randomisation: does the map depend on what the model learned? (Adebayo et al., NeurIPS 2018)

A map that stays the same when the model's weights are replaced by random ones explains the image (its edges,
its bright spots), not the model. :func:`sanity_check` re-initialises the layers of a deep copy of the model,
from the output down ("cascading") or one at a time ("independent"), recomputes the map after each step and
measures how similar it stays to the original one.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from ._adapter import ModelAdapter
from ._call import prepare
from ._features import gaussian_blur
from ._inputs import check_int
from ._methods import METHODS
from .cam import default_layer, grad_cam
from .explanation import Explanation
from .metrics import rank_correlation

# The map "changed materially" once the model was randomised when its Spearman similarity to the original map
# fell below this: Adebayo et al.'s trustworthy methods (gradients, Grad-CAM) fall to about 0-0.3 on a fully
# randomised network, while model-independent maps (edge detectors) stay near 1.
PASS_BELOW = 0.5
SIMILARITIES: tuple[str, ...] = ("spearman_abs", "spearman")
MODES: tuple[str, ...] = ("cascading", "independent")
# SSIM (Wang et al., 2004) on maps scaled to [0, 1]: an 11-tap Gaussian window of sigma 1.5 and its constants.
_SSIM_SIGMA = 1.5
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2

Method = Callable[[nn.Module, torch.Tensor, int], "Explanation | torch.Tensor"]


@dataclass(eq=False)
class SanityReport:
    """What randomising the model did to the map.

    layers: names of the layers randomised, in order (cascading: each step adds one, from the output down;
    independent: each step randomises that layer alone). similarity: per step, Spearman correlation of the map
    with the original one (of absolute values for ``"spearman_abs"``). ssim: per step, structural similarity of
    the min-max scaled maps. maps: per step, the ``(H, W)`` CPU map. original: the map of the model as it is.
    passed: whether the map changed materially once the model was randomised (see :data:`PASS_BELOW`).
    summary: one line saying so. n_layers: the layers the whole check randomises (more than ``len(layers)`` in
    the partial reports of :func:`iter_sanity_check`).
    """

    layers: list[str]
    similarity: list[float]
    ssim: list[float]
    maps: list[torch.Tensor]
    original: torch.Tensor
    passed: bool
    summary: str
    method: str = ""
    mode: str = "cascading"
    n_layers: int = 0


def sanity_check(
    model: nn.Module | ModelAdapter,
    x: torch.Tensor,
    method: str | Method,
    *,
    target: int | None = None,
    mode: Literal["cascading", "independent"] = "cascading",
    seed: int = 0,
    similarity: Literal["spearman_abs", "spearman"] = "spearman_abs",
    **method_kwargs: Any,
) -> SanityReport:
    """Model parameter randomisation test of an explanation method on one image ``x`` ``(C, H, W)``.

    ``method`` is a method name (see :func:`method_names`), called with ``method_kwargs``, or a callable
    ``(model, x, target) -> Explanation | Tensor``. The model is deep-copied once and only the copy is changed:
    every module that owns parameters is re-initialised (its own ``reset_parameters``, seeded by ``seed``),
    taken in reverse definition order, which is the output-first order of ``nn.Sequential`` and torchvision-style
    models. Every map explains the same class: ``target``, or the model's top class for ``x``. For
    ``grad_cam`` the layer defaults to :func:`livexai.default_layer` of the model as it is.

    ``passed`` is True when the map's similarity fell below :data:`PASS_BELOW`: at the last step in cascading
    mode (the whole model random), at any step in independent mode.
    """
    steps = iter_sanity_check(
        model, x, method, target=target, mode=mode, seed=seed, similarity=similarity, **method_kwargs
    )
    return deque(steps, maxlen=1)[0]  # iter_sanity_check yields at least once or raises


def iter_sanity_check(
    model: nn.Module | ModelAdapter,
    x: torch.Tensor,
    method: str | Method,
    *,
    target: int | None = None,
    mode: Literal["cascading", "independent"] = "cascading",
    seed: int = 0,
    similarity: Literal["spearman_abs", "spearman"] = "spearman_abs",
    **method_kwargs: Any,
) -> Iterator[SanityReport]:
    """:func:`sanity_check` step by step: a report after each layer randomised (the widgets draw the strip as it
    fills in, and stop between steps when cancelled); the last one is :func:`sanity_check`'s. A partial report
    covers the steps done so far (``n_layers`` says how many there will be) and its verdict is provisional."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(map(repr, MODES))}")
    if similarity not in SIMILARITIES:
        raise ValueError(
            f"unknown similarity {similarity!r}; expected one of {', '.join(map(repr, SIMILARITIES))}"
        )
    seed = check_int("seed", seed, 0)
    copied = _copy(model)
    explain, name = _method(method, copied, x, method_kwargs)
    target = prepare(copied, x, target=target, expect="image").target  # one class for every map
    original = _explain(explain, copied, x, target)
    layers = [layer for layer, module in reversed(list(copied.named_modules())) if _owns_parameters(module)]
    if not layers:
        raise ValueError(
            "the model has no parameters to randomise; expected an nn.Module with learned weights"
        )
    steps = _cascade if mode == "cascading" else _one_at_a_time
    maps: list[torch.Tensor] = []
    scores: list[float] = []
    similarities: list[float] = []
    for _ in steps(copied, layers, seed):
        maps.append(_explain(explain, copied, x, target))
        scores.append(_similarity(original, maps[-1], similarity))
        similarities.append(ssim(original, maps[-1]))
        done = layers[: len(maps)]
        passed = (scores[-1] if mode == "cascading" else min(scores)) < PASS_BELOW
        yield SanityReport(
            layers=done,
            similarity=list(scores),
            ssim=list(similarities),
            maps=list(maps),
            original=original,
            passed=passed,
            summary=_summary(name, mode, done, scores, passed, len(layers)),
            method=name,
            mode=mode,
            n_layers=len(layers),
        )


def method_names() -> tuple[str, ...]:
    """The method names :func:`sanity_check` accepts."""
    return tuple(_METHODS)


_METHODS: dict[str, Callable[..., Explanation]] = {
    "grad_cam": grad_cam,
    "grad_cam++": partial(grad_cam, plus_plus=True),
    **METHODS,
}


def _method(
    method: str | Method, model: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]
) -> tuple[Method, str]:
    """The method as a callable ``(model, x, target)``, and its name for the report."""
    if callable(method):
        if kwargs:
            raise TypeError(
                f"method_kwargs {sorted(kwargs)} are passed only to named methods; bind them in your callable"
            )
        return method, getattr(method, "__name__", type(method).__name__)
    if method not in _METHODS:
        raise ValueError(
            f"unknown method {method!r}; expected one of {', '.join(map(repr, _METHODS))} "
            "or a callable (model, x, target) -> Explanation | Tensor"
        )
    function = _METHODS[method]
    if method.startswith("grad_cam") and "layer" not in kwargs:
        kwargs = {**kwargs, "layer": default_layer(model, x)}
        if kwargs["layer"] is None:
            raise ValueError("the model has no spatial layer for Grad-CAM; pass layer=... to sanity_check")
    return lambda model_, x_, target: function(model_, x_, target=target, **kwargs), method


def _copy(model: nn.Module | ModelAdapter) -> nn.Module:
    """A deep copy of the user's module (of the module inside an adapter), which alone will be randomised."""
    module = model.model if isinstance(model, ModelAdapter) else model
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"sanity_check randomises the model's layers, so model must be a torch.nn.Module, got "
            f"{type(module).__name__}"
        )
    return copy.deepcopy(module)


def _explain(explain: Method, model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """The method's ``(H, W)`` map of ``target`` as a CPU float tensor."""
    result = explain(model, x, target)
    if isinstance(result, Explanation):
        return result.attributions
    if not isinstance(result, torch.Tensor) or result.ndim != 2:
        raise TypeError(
            f"the method returned {type(result).__name__}; expected an Explanation or an (H, W) map tensor"
        )
    return result.detach().to("cpu", torch.float32)


def _owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _randomise(model: nn.Module, name: str, seed: int) -> None:
    """Re-initialise layer ``name`` of ``model`` in place, from torch's RNG seeded here and restored after.

    ``reset_parameters`` is the layer's own initialisation (and resets batch-norm statistics); a module without
    one gets normal noise of each parameter's own standard deviation.
    """
    module = model.get_submodule(name)
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        for parameter in module.parameters(recurse=False):
            spread = float(parameter.std()) if parameter.numel() > 1 else 1.0
            parameter.normal_(0.0, spread if spread > 0 else 1.0)


def _cascade(model: nn.Module, layers: list[str], seed: int) -> Iterator[None]:
    """Randomise the layers one after another, keeping the earlier ones random; yield after each."""
    for step, name in enumerate(layers):
        _randomise(model, name, seed + step)
        yield


def _one_at_a_time(model: nn.Module, layers: list[str], seed: int) -> Iterator[None]:
    """Randomise each layer alone (the others as trained), yield, and put it back."""
    for step, name in enumerate(layers):
        module = model.get_submodule(name)
        saved = copy.deepcopy(module.state_dict())
        _randomise(model, name, seed + step)
        yield
        module.load_state_dict(saved)


def _similarity(original: torch.Tensor, other: torch.Tensor, kind: str) -> float:
    if kind == "spearman_abs":
        return rank_correlation(original.abs(), other.abs())
    return rank_correlation(original, other)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Structural similarity (Wang et al., 2004) of two ``(H, W)`` maps, each min-max scaled to [0, 1] first
    (a constant map scales to zeros); mean of the local SSIM over a Gaussian window of sigma 1.5."""
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    first, second = _unit_range(a)[None, None], _unit_range(b.to(a.device))[None, None]

    def local(values: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(values, _SSIM_SIGMA)

    mean_a, mean_b = local(first), local(second)
    var_a = local(first * first) - mean_a**2
    var_b = local(second * second) - mean_b**2
    covariance = local(first * second) - mean_a * mean_b
    numerator = (2 * mean_a * mean_b + _SSIM_C1) * (2 * covariance + _SSIM_C2)
    denominator = (mean_a**2 + mean_b**2 + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return float((numerator / denominator).mean())


def _unit_range(values: torch.Tensor) -> torch.Tensor:
    values = values.double()
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if bool(high > low) else torch.zeros_like(values)


def _summary(name: str, mode: str, layers: list[str], scores: list[float], passed: bool, total: int) -> str:
    """One line: the verdict and the numbers behind it (provisional while fewer than ``total`` layers are done)."""
    final = scores[-1] if mode == "cascading" else min(scores)
    if len(layers) < total:
        return f"{name}: {len(layers)} of {total} layers randomised so far; similarity {final:.2f}"
    where = (
        f"randomising all {len(layers)} layers from the output down"
        if mode == "cascading"
        else f"randomising layers one at a time (lowest at {layers[scores.index(final)]})"
    )
    if passed:
        return f"{name} passes: {where} took its map's similarity to {final:.2f} (< {PASS_BELOW})"
    return (
        f"{name} FAILS: {where} left its map's similarity at {final:.2f} (>= {PASS_BELOW}); the map barely "
        "depends on what the model learned, as with an edge detector: it shows the image more than the model"
    )
