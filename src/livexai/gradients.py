"""Gradient attributions: saliency (and SmoothGrad), integrated gradients, GradientSHAP (expected gradients).

All three need the gradient of one output with respect to many inputs built around ``x`` (noisy copies, points on
a path, points between ``x`` and background rows). :func:`_gradient_sum` computes that once for all of them:
inputs are built lazily in batches on the model's device, the batch size halves on out-of-memory (Captum users
hit OOM with IG and GradientShap at fixed sizes: captum#245, #1350) and is remembered, and only the weighted sum
is kept, so memory stays at one batch whatever the number of samples.

Gradients are taken with ``torch.autograd.grad`` with respect to the inputs only: the model's parameters, their
``.grad`` and ``requires_grad`` flags are never touched.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary  # tensors compare elementwise: keys go by identity

from ._adapter import Model, ModelAdapter, OutputSpace
from ._call import PreparedCall, prepare
from ._inputs import check_choice, check_float, check_int
from ._tokens import EmbeddingPath, embedding_layer
from .explanation import Explanation
from .layers import resolve_layer

__all__ = ["gradient_shap", "integrated_gradients", "saliency"]

IGMethod = Literal["gausslegendre", "riemann_trapezoid"]
IG_METHODS: tuple[str, ...] = ("gausslegendre", "riemann_trapezoid")

# Noise is drawn in fixed blocks of samples, each from its own seeded generator, so the result of a seed does not
# depend on the batch size (which adapts to memory) and no more than one batch of noise is ever held.
_NOISE_BLOCK = 8

# make_batch(start, stop) -> (inputs (stop - start, ...), factor broadcastable to them, or a number)
MakeBatch = Callable[[int, int], tuple[torch.Tensor, Any]]
# A batch of inputs (N, ...) -> scores (N, K), with autograd
Forward = Callable[[torch.Tensor], torch.Tensor]


# -- the shared engine -------------------------------------------------------------------------------------------
def _gradient_sum(
    adapter: ModelAdapter,
    n: int,
    make_batch: MakeBatch,
    target: int,
    *,
    input_shape: tuple[int, ...],
    absolute: bool = False,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
    forward: Forward | None = None,
) -> torch.Tensor:
    """``sum_i factor_i * g_i`` over ``n`` inputs, where ``g_i`` is the gradient of output ``target`` at input ``i``.

    ``make_batch(start, stop)`` returns the inputs ``(stop - start, *input_shape)`` on the model's device and
    their factors (a tensor broadcastable to the inputs, or a number). With ``absolute`` each gradient is replaced
    by its absolute value before weighting. Returns a tensor ``input_shape`` on the model's device.
    The model runs in eval mode (inputs of a batch are independent, so one backward pass of the summed scores
    gives every input's gradient). ``check_cancel`` runs between batches and may raise :class:`Cancelled`.
    ``forward`` maps a batch of inputs to scores (default: the adapter's; a sequence's embedding path).
    """
    # Summed in at least float32: thousands of half-precision gradients would lose the small ones.
    total = torch.zeros(
        input_shape, device=adapter.device, dtype=torch.promote_types(adapter.dtype, torch.float32)
    )

    def step(start: int, stop: int, layout: torch.memory_format) -> None:
        inputs, factor = make_batch(start, stop)
        total.add_(
            _weighted_gradients(
                forward or adapter.forward, inputs.contiguous(memory_format=layout), factor, target, absolute
            )
        )

    with adapter.session(), torch.enable_grad():
        adapter.run_batched(
            n,
            step,
            input_shape=input_shape,
            purpose="gradient",
            batch_size=batch_size,
            check_cancel=check_cancel,
        )
    return total


def input_leaf(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` that records autograd; the caller's tensor keeps its own flags and values.

    A copy, not a view: a model that changes its input in place must not change the caller's (or the cached)
    input, and tensors made under ``torch.inference_mode`` cannot record autograd anyway.
    """
    return x.detach().clone().requires_grad_(True)


def _weighted_gradients(
    forward: Forward, inputs: torch.Tensor, factor: torch.Tensor | float, target: int, absolute: bool
) -> torch.Tensor:
    """``sum_i factor_i * g_i`` for one batch (``|g_i|`` with ``absolute``), shape ``inputs.shape[1:]``."""
    inputs = input_leaf(inputs)
    scores = forward(inputs)
    if not scores.requires_grad:
        raise ValueError(
            "the model's output does not depend on its input through autograd (it detaches, converts to numpy or "
            "runs under no_grad); gradient methods need a differentiable model: use lime or kernel_shap instead"
        )
    (grads,) = torch.autograd.grad(scores[:, target].sum(), inputs, allow_unused=True)
    if grads is None:  # the target does not depend on the input at all
        return torch.zeros(inputs.shape[1:], device=inputs.device, dtype=inputs.dtype)
    if absolute:
        grads = grads.abs()
    return (grads * factor).sum(dim=0)


def _normal(shape: tuple[int, ...], start: int, stop: int, seed: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise for samples ``start..stop-1`` ``(stop - start, *shape)``, the same for a given seed
    whatever the batch boundaries: sample ``i`` comes from block ``i // _NOISE_BLOCK``'s own generator."""
    first, last = start // _NOISE_BLOCK, (stop - 1) // _NOISE_BLOCK
    blocks = []
    for block in range(first, last + 1):  # one draw per block of samples, not per sample
        generator = torch.Generator(device=like.device).manual_seed(_block_seed(seed, block))
        blocks.append(
            torch.randn((_NOISE_BLOCK, *shape), generator=generator, device=like.device, dtype=like.dtype)
        )
    noise = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
    offset = start - first * _NOISE_BLOCK
    return noise[offset : offset + stop - start]


def _block_seed(seed: int, block: int) -> int:
    return (seed * 1_000_003 + block * 7_919 + 12_345) % (2**63 - 1)


# E[f(background)] for GradientSHAP's base value, per model and background tensor, held weakly (an entry goes with
# either). It stays valid while neither changes: the background's version counter, and every parameter's and
# buffer's memory and version counter, are checked on each use, so an in-place edit, an optimiser step or a
# load_state_dict recomputes it. Saves one forward pass per background row on every call after the first.
_BACKGROUND_MEANS: weakref.WeakKeyDictionary[nn.Module, WeakIdKeyDictionary] = weakref.WeakKeyDictionary()
_BACKGROUND_MEANS_GUARD = threading.Lock()


def _model_state(model: nn.Module) -> tuple:
    """What changes when a model's weights do: each parameter's and buffer's memory and version counter."""
    return tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


def background_mean(adapter: ModelAdapter, background: object, rows: torch.Tensor) -> torch.Tensor:
    """Mean scores ``(K,)`` of the background ``rows`` (``background`` as the caller gave it), remembered for the
    same unchanged model and background tensor."""
    model = adapter.model
    if (
        not isinstance(model, nn.Module)
        or not isinstance(background, torch.Tensor)
        or background.is_inference()
    ):
        return _scores(adapter, rows).mean(dim=0)
    with adapter.session():
        key = (
            background._version,
            _model_state(model),
            adapter.output,
            adapter.autocast,
            adapter.device,
            rows.dtype,
        )
        with _BACKGROUND_MEANS_GUARD:
            known = _BACKGROUND_MEANS.setdefault(model, WeakIdKeyDictionary()).get(background)
        if known is not None and known[0] == key:
            return known[1]
        mean = _scores(adapter, rows).mean(dim=0)
        with _BACKGROUND_MEANS_GUARD:
            _BACKGROUND_MEANS[model][background] = (key, mean)
        return mean


def _scores(adapter: ModelAdapter, inputs: torch.Tensor) -> torch.Tensor:
    """Scores ``(B, K)`` of a batch of inputs, no gradients, batched by the adapter."""
    return adapter.evaluate(inputs.shape[0], lambda s, e: inputs[s:e], input_shape=tuple(inputs.shape[1:]))


def _finish(call_: PreparedCall, per_channel: torch.Tensor, reduce: str) -> torch.Tensor:
    """Attributions for display: ``(H, W)`` for an image (channels summed or max-reduced), ``(T,)`` for a
    sequence (summed over the embedding), ``(F,)`` for a row."""
    if call_.kind == "sequence":
        return per_channel.sum(dim=-1)
    if call_.kind != "image":
        return per_channel
    return per_channel.amax(dim=0) if reduce == "max" else per_channel.sum(dim=0)


class AttributedInput:
    """What gradients are taken with respect to: ``x`` itself, or for a sequence of token ids the output of
    its embedding ``layer`` (default: the input embedding), which the model then runs from."""

    def __init__(self, call_: PreparedCall, layer: str | nn.Module | None) -> None:
        self.call = call_
        self.path: EmbeddingPath | None = None
        if call_.kind != "sequence":
            if layer is not None:
                raise ValueError(
                    "layer= applies to token inputs (attributions at an embedding layer); for an image or row "
                    "the attributions are at the input"
                )
            self.x = call_.x
            return
        model = call_.adapter.model
        if layer is None:
            found = embedding_layer(model)
            if found is None:
                raise ValueError(
                    "the model has no embedding layer; pass layer= (the layer that embeds the ids)"
                )
            layer = found
        name, module = resolve_layer(model, layer)
        self.path = EmbeddingPath(module, name, call_.x)
        self.x = self.path.embed(call_.x)

    @property
    def forward(self) -> Forward | None:
        """The forward pass from attributed inputs (None: the adapter's own)."""
        path = self.path
        if path is None:
            return None
        adapter = self.call.adapter

        def from_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
            with path.replaced(embeddings):
                return adapter.forward(path.ids_for(embeddings.shape[0]))

        return from_embeddings

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, K)`` of attributed inputs, no gradients."""
        if self.path is None:
            return _scores(self.call.adapter, inputs)
        forward = self.forward
        assert forward is not None
        adapter = self.call.adapter
        outputs: list[torch.Tensor] = []

        def step(start: int, stop: int, _layout: torch.memory_format) -> None:
            outputs.append(forward(inputs[start:stop]))

        with adapter.session(), torch.inference_mode():
            adapter.run_batched(inputs.shape[0], step, input_shape=tuple(inputs.shape[1:]))
        return torch.cat(outputs)

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Reference token ids ``(B, T)`` (or ``(T,)``) as embeddings ``(B, T, D)``."""
        assert self.path is not None
        ids = ids.reshape(-1, ids.shape[-1]).to(self.x.device)
        if ids.shape[1] != self.x.shape[1]:
            raise ValueError(
                f"reference token ids have length {ids.shape[1]}; expected the length of x ({self.x.shape[1]})"
            )
        return self.path.embed(ids)

    def background_rows(self, background: object) -> torch.Tensor:
        """Reference inputs ``(B, ...)`` like :attr:`x`: for a sequence, reference token ids ``(B, T)`` embedded;
        else ``background`` checked by :func:`as_background`."""
        if self.path is None:
            return as_background(background, self.x)
        if not _is_ids(background):
            raise TypeError("for token inputs, background must be reference token ids (B, T)")
        return self.embed_ids(background)  # type: ignore[arg-type]

    def params(self) -> dict[str, Any]:
        return {} if self.path is None else {"layer": self.path.name}


def _is_ids(value: object) -> bool:
    return isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dtype != torch.bool


def check_batch_size(batch_size: int | None) -> int | None:
    return None if batch_size is None else check_int("batch_size", batch_size, 1)


# -- saliency and SmoothGrad -------------------------------------------------------------------------------------
def saliency(
    model: Model,
    x: torch.Tensor,
    *,
    target: int | None = None,
    smooth_samples: int = 0,
    noise: float = 0.15,
    seed: int = 0,
    output: OutputSpace = "logits",
    abs: bool = True,
    image: Any = None,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
    layer: str | nn.Module | None = None,
) -> Explanation:
    """Gradient of ``target`` with respect to the input (Simonyan et al., 2014); SmoothGrad when
    ``smooth_samples > 0`` (Smilkov et al., 2017): the gradient averaged over noisy copies of ``x``.

    ``noise`` is the noise standard deviation as a fraction of the input's range ``max(x) - min(x)``; the
    SmoothGrad paper found 10–20 % best, hence 0.15. With ``abs`` each gradient's absolute value is averaged
    (Captum's ``Saliency`` + ``NoiseTunnel``) and an image map is the max over channels, as in Simonyan et al.;
    without, signed gradients are averaged and summed over channels. Attributions are ``(H, W)`` for an image,
    ``(F,)`` for a row; ``params["per_channel"]`` keeps ``(C, H, W)``. For token ids ``(T,)`` the gradient is
    taken at the output of the embedding ``layer`` (default: the input embedding) and summed over the
    embedding dimension, ``(T,)`` (absolute values summed with ``abs``).
    """
    smooth_samples = check_int("smooth_samples", smooth_samples, 0)
    noise = check_float("noise", noise, 0.0)
    seed = check_int("seed", seed, 0)
    if not isinstance(abs, bool):
        raise TypeError(f"abs must be True or False, got {abs!r}")
    call_ = prepare(model, x, target=target, output=output, image=image)
    attributed = AttributedInput(call_, layer)
    x1 = attributed.x
    shape = tuple(x1.shape[1:])
    sigma = noise * float(x1.max() - x1.min())
    n = max(smooth_samples, 1)

    def make_batch(start: int, stop: int) -> tuple[torch.Tensor, float]:
        if smooth_samples == 0:
            return x1, 1.0
        return x1 + sigma * _normal(shape, start, stop, seed, x1), 1.0 / n

    grads = _gradient_sum(
        call_.adapter,
        n,
        make_batch,
        call_.target,
        input_shape=shape,
        absolute=abs,
        batch_size=check_batch_size(batch_size),
        check_cancel=check_cancel,
        forward=attributed.forward,
    )
    attributions = _finish(call_, grads, "max" if abs else "sum")
    if call_.tokens is not None:
        attributions = (
            attributions * call_.tokens.content
        )  # padding has a gradient but is not part of the text
    method = "smoothgrad" if smooth_samples else "saliency"
    params = {
        "smooth_samples": smooth_samples,
        "noise": noise,
        "sigma": sigma,
        "seed": seed,
        "abs": abs,
        "per_channel": grads.detach().to("cpu", torch.float32),
        **attributed.params(),
    }
    return call_.explanation(method, attributions, params)


# -- integrated gradients ----------------------------------------------------------------------------------------
def path_points(n_steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] on the straight path and their quadrature weights, both ``(n_steps,)``.

    ``"gausslegendre"`` (Captum's default) is exact for polynomials of degree ``2 n - 1`` along the path, so it
    reaches a given completeness gap with far fewer steps than the trapezoid rule.
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if n_steps < 2:
        raise ValueError("n_steps must be at least 2 for the riemann_trapezoid rule (both ends of the path)")
    weights = np.full(n_steps, 1.0 / (n_steps - 1))
    weights[[0, -1]] *= 0.5
    return np.linspace(0.0, 1.0, n_steps), weights


def _as_baseline(baseline: object, x: torch.Tensor) -> torch.Tensor:
    """``baseline`` as a batch of one shaped like ``x`` ``(1, ...)``: None is zeros, a number a constant."""
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(
            f"baseline must be None, a number or a tensor shaped like x, got {type(baseline).__name__}"
        )
    if tuple(baseline.shape) not in (tuple(x.shape), tuple(x.shape[1:])):
        raise ValueError(
            f"baseline has shape {tuple(baseline.shape)}; expected the shape of x, {tuple(x.shape[1:])} "
            f"(or {tuple(x.shape)})"
        )
    baseline = baseline.detach().to(device=x.device, dtype=x.dtype).reshape(x.shape)
    if not bool(torch.isfinite(baseline).all()):
        raise ValueError("baseline contains NaN or infinite values")
    return baseline


def integrated_gradients(
    model: Model,
    x: torch.Tensor,
    *,
    baseline: torch.Tensor | float | None = None,
    target: int | None = None,
    n_steps: int = 50,
    method: IGMethod = "gausslegendre",
    output: OutputSpace = "logits",
    image: Any = None,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
    layer: str | nn.Module | None = None,
) -> Explanation:
    """Integrated gradients (Sundararajan et al., 2017): ``(x - b) * integral of grad f(b + a (x - b)) da``.

    ``baseline`` is None (zeros), a number (a constant input) or a tensor shaped like ``x``. The integral uses
    ``n_steps`` points of the ``method`` rule. Completeness (attributions sum to ``f(x) - f(baseline)``) measures
    the quadrature error: ``params["delta"]`` is the gap. Attributions are summed over channels to ``(H, W)``
    for an image, ``(F,)`` for a row; ``params["per_channel"]`` keeps ``(C, H, W)``; ``base_value`` is
    ``f(baseline)``.

    Token ids ``(T,)``: the path runs between embeddings, at the output of the embedding ``layer`` (default:
    the input embedding), and attributions are summed over the embedding dimension, ``(T,)``. ``baseline`` is
    then None (every real token replaced by the pad id, or zero vectors when the model has no pad id),
    reference token ids ``(T,)``, or embeddings ``(T, D)``.
    """
    n_steps = check_int("n_steps", n_steps, 1)
    method = check_choice("method", method, IG_METHODS)
    call_ = prepare(model, x, target=target, output=output, image=image)
    attributed = AttributedInput(call_, layer)
    x1 = attributed.x
    base = sequence_baseline(attributed, baseline) if attributed.path else _as_baseline(baseline, x1)
    alphas, weights = path_points(n_steps, method)
    view = (-1,) + (1,) * (x1.ndim - 1)
    alphas_t = torch.as_tensor(alphas, device=x1.device, dtype=x1.dtype).view(view)
    weights_t = torch.as_tensor(weights, device=x1.device, dtype=x1.dtype).view(view)
    difference = x1 - base

    def make_batch(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return base + alphas_t[start:stop] * difference, weights_t[start:stop]

    path_integral = _gradient_sum(
        call_.adapter,
        n_steps,
        make_batch,
        call_.target,
        input_shape=tuple(x1.shape[1:]),
        batch_size=check_batch_size(batch_size),
        check_cancel=check_cancel,
        forward=attributed.forward,
    )
    per_channel = difference[0] * path_integral
    base_value = float(attributed.scores(base)[0, call_.target])
    delta = float(per_channel.sum()) - (call_.prediction - base_value)
    params = {
        "n_steps": n_steps,
        "method": method,
        "delta": delta,
        "baseline": _baseline_kind(baseline, attributed),
        "per_channel": per_channel.detach().to("cpu", torch.float32),
        **attributed.params(),
    }
    return call_.explanation(
        "integrated_gradients", _finish(call_, per_channel, "sum"), params, base_value=base_value
    )


def sequence_baseline(attributed: AttributedInput, baseline: object) -> torch.Tensor:
    """A sequence's IG baseline as embeddings ``(1, T, D)``: the pad id in place of every real token (None),
    reference token ids, or embeddings shaped like x's."""
    tokens = attributed.call.tokens
    assert tokens is not None
    if baseline is None:
        pad = tokens.call.pad_token_id
        if pad is None:
            return torch.zeros_like(attributed.x)
        return attributed.embed_ids(torch.where(tokens.content, pad, tokens.ids))
    if _is_ids(baseline):
        return attributed.embed_ids(baseline)  # type: ignore[arg-type]
    return _as_baseline(baseline, attributed.x)


def _baseline_kind(baseline: object, attributed: AttributedInput) -> str:
    if baseline is None:
        return "pad tokens" if attributed.path is not None else "zeros"
    if _is_ids(baseline) and attributed.path is not None:
        return "token ids"
    return "tensor" if isinstance(baseline, torch.Tensor) else "constant"


# -- GradientSHAP ------------------------------------------------------------------------------------------------
def as_background(background: object, x: torch.Tensor) -> torch.Tensor:
    """``background`` as ``(B, ...)`` rows shaped like ``x``'s items, on ``x``'s device and dtype."""
    if not isinstance(background, torch.Tensor):
        raise TypeError(
            f"background must be a tensor of reference inputs (B, {', '.join(map(str, x.shape[1:]))}), "
            f"got {type(background).__name__}"
        )
    item = tuple(x.shape[1:])
    if tuple(background.shape) == item:
        background = background.unsqueeze(0)
    if tuple(background.shape[1:]) != item or background.shape[0] < 1:
        raise ValueError(
            f"background has shape {tuple(background.shape)}; expected (B, {', '.join(map(str, item))}): "
            f"B >= 1 reference inputs, each shaped like x {item}"
        )
    if background.is_floating_point() and not bool(torch.isfinite(background).all()):
        raise ValueError("background contains NaN or infinite values")
    return background.detach().to(device=x.device, dtype=x.dtype)


def gradient_shap(
    model: Model,
    x: torch.Tensor,
    *,
    background: torch.Tensor,
    target: int | None = None,
    n_samples: int = 50,
    stdev: float = 0.0,
    seed: int = 0,
    output: OutputSpace = "logits",
    image: Any = None,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
    layer: str | nn.Module | None = None,
) -> Explanation:
    """GradientSHAP / expected gradients (Lundberg & Lee, 2017; Erion et al., 2021).

    Each of ``n_samples`` draws picks a random background row ``b`` and a random ``alpha ~ U(0, 1)``, adds
    Gaussian noise of standard deviation ``stdev`` (absolute, in input units, as Captum's ``stdevs``) to ``x``
    giving ``x'``, and contributes ``(x' - b) * grad f(b + alpha (x' - b))``; attributions are the average. Their
    sum estimates ``f(x) - E[f(background)]``; ``base_value`` is the mean of f over ``background`` ``(B, ...)``
    and ``params["delta"]`` the completeness gap (sampling error). Attributions are summed over channels to
    ``(H, W)`` for an image, ``(F,)`` for a row; ``params["per_channel"]`` keeps ``(C, H, W)``.

    Token ids ``(T,)``: ``background`` is reference token ids ``(B, T)``; the draws run between their
    embeddings and x's at the embedding ``layer`` (default: the input embedding), and attributions are summed
    over the embedding dimension, ``(T,)``.
    """
    n_samples = check_int("n_samples", n_samples, 1)
    stdev = check_float("stdev", stdev, 0.0)
    seed = check_int("seed", seed, 0)
    call_ = prepare(model, x, target=target, output=output, image=image)
    attributed = AttributedInput(call_, layer)
    x1 = attributed.x
    rows = attributed.background_rows(background)
    shape = tuple(x1.shape[1:])
    view = (-1,) + (1,) * len(shape)
    # Indices and alphas are tiny: drawn once on the CPU, so a seed gives the same draws on every device.
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(rows.shape[0], (n_samples,), generator=generator).to(x1.device)
    alphas = (
        torch.rand(n_samples, generator=generator, dtype=torch.float64).to(x1.device, x1.dtype).view(view)
    )

    def make_batch(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = rows[picks[start:stop]]
        inputs = x1 if stdev == 0.0 else x1 + stdev * _normal(shape, start, stop, seed, x1)
        difference = inputs - chosen
        return chosen + alphas[start:stop] * difference, difference / n_samples

    per_channel = _gradient_sum(
        call_.adapter,
        n_samples,
        make_batch,
        call_.target,
        input_shape=shape,
        batch_size=check_batch_size(batch_size),
        check_cancel=check_cancel,
        forward=attributed.forward,
    )
    if attributed.path is not None:
        mean = attributed.scores(rows).mean(dim=0)
    else:
        mean = background_mean(call_.adapter, background, rows)
    base_value = float(mean[call_.target])
    delta = float(per_channel.sum()) - (call_.prediction - base_value)
    params = {
        "n_samples": n_samples,
        "stdev": stdev,
        "seed": seed,
        "background_size": int(rows.shape[0]),
        "delta": delta,
        "per_channel": per_channel.detach().to("cpu", torch.float32),
        **attributed.params(),
    }
    return call_.explanation(
        "gradient_shap", _finish(call_, per_channel, "sum"), params, base_value=base_value
    )
