"""DeepLIFT (Shrikumar et al., 2017) and DeepSHAP (Lundberg & Lee, 2017) for any PyTorch model.

DeepLIFT explains ``f(x) - f(r)`` for a reference input ``r``: each input feature gets ``(x - r) * m``, where the
multipliers ``m`` are back-propagated like gradients except that every non-linear operation contributes
``Δoutput / Δinput`` (the *rescale* rule) instead of its derivative. The attributions then sum exactly to
``f(x) - f(r)``. DeepSHAP averages DeepLIFT over a background set of references, as shap's DeepExplainer does,
and approximates SHAP values with ``E[f(background)]`` as the base value.

The rules act on torch *operations*, seen through a ``TorchFunctionMode`` (:mod:`._deep_rules`), not on modules,
so the usual failures of hook-based implementations (a ReLU module used twice, ``nn.ReLU(inplace=True)``,
``F.relu``, modules built inside ``forward``, ``out += identity``) do not arise. ``params["delta"]`` reports the
summation gap: about float rounding for networks built from supported operations; anything else is named in a
warning and in ``params["unsupported"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ._adapter import Model, OutputSpace
from ._call import PreparedCall, prepare
from ._deep_rules import InputPass, ReferencePass, Tape
from ._features import image_fill, row_fill, subsample_indices
from ._inputs import check_int
from .explanation import Explanation
from .gradients import AttributedInput, check_batch_size, sequence_baseline

__all__ = ["deep_shap", "deeplift"]


@dataclass
class DeepResult:
    """What one DeepLIFT run over a set of references gives for each requested target."""

    per_channel: torch.Tensor  # (T, *input_shape): mean over references of (x - r) * multipliers
    reference_scores: torch.Tensor  # (T,): mean model output over the references
    unsupported: set[str]


def deep_attributions(
    call_: PreparedCall,
    attributed: AttributedInput,
    references: torch.Tensor,
    targets: Sequence[int],
    *,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> DeepResult:
    """DeepLIFT of ``call_.x`` against each of ``references`` ``(B, ...)``, averaged, for every target at once.

    References go through the model in batches: one recorded forward pass on the references without autograd,
    one replayed pass on copies of ``x`` with autograd, then one backward pass per target over the same graph.
    """
    adapter = call_.adapter
    x1, forward = attributed.x, attributed.forward or adapter.forward
    if isinstance(adapter.model, torch.jit.ScriptModule):
        raise TypeError(
            "deeplift and deep_shap need an eager PyTorch model: TorchScript runs its operations where torch's "
            "function overrides cannot see them; pass the module before torch.jit.script/trace"
        )
    shape = tuple(x1.shape[1:])
    accumulate = torch.promote_types(adapter.dtype, torch.float32)
    totals = torch.zeros((len(targets), *shape), device=adapter.device, dtype=accumulate)
    reference_totals = torch.zeros(len(targets), device=adapter.device, dtype=accumulate)
    unsupported: set[str] = set()
    target_index = torch.as_tensor(list(targets), device=adapter.device)

    def step(start: int, stop: int, layout: torch.memory_format) -> None:
        refs = references[start:stop].contiguous(memory_format=layout)
        reference_scores, tape = _record(forward, refs)
        leaf = x1.expand(stop - start, *shape).contiguous(memory_format=layout).requires_grad_(True)
        replay = InputPass(tape)
        with replay:
            scores = forward(leaf.clone())  # a copy: a model may change its input in place
        replay.finish()
        unsupported.update(replay.unsupported)
        if not scores.requires_grad:
            raise ValueError(
                "the model's output does not depend on its input through autograd (it detaches, converts to numpy "
                "or runs under no_grad); DeepLIFT needs a differentiable model: use lime or kernel_shap instead"
            )
        difference = leaf.detach() - refs
        for i, target in enumerate(targets):
            (multipliers,) = torch.autograd.grad(
                scores[:, target].sum(), leaf, retain_graph=i < len(targets) - 1, allow_unused=True
            )
            if multipliers is not None:
                totals[i] += (difference * multipliers).sum(dim=0)
        reference_totals.add_(reference_scores.detach()[:, target_index].sum(dim=0))

    with adapter.session(), torch.enable_grad():
        adapter.run_batched(
            references.shape[0],
            step,
            input_shape=shape,
            purpose="deeplift",
            batch_size=batch_size,
            check_cancel=check_cancel,
        )
    n = references.shape[0]
    return DeepResult(totals / n, reference_totals / n, unsupported)


def deep_explanations(
    model: Model,
    x: torch.Tensor,
    method: str,
    targets: Sequence[int] | None = None,
    *,
    output: OutputSpace = "logits",
    image: Any = None,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
    layer: str | nn.Module | None = None,
    **options: Any,
) -> list[Explanation]:
    """One ``method`` explanation (``"deeplift"`` or ``"deep_shap"``) per target, from one shared computation.

    The references' and the input's forward passes serve every target; each adds one backward pass. ``targets``
    None explains the top class. ``options`` are the method's own keywords (``baseline``; ``background``,
    ``background_size``, ``seed``).
    """
    call_ = prepare(model, x, target=None if not targets else targets[0], output=output, image=image)
    n_outputs = call_.scores.shape[1]
    for target in targets or ():
        if not (isinstance(target, int) and 0 <= target < n_outputs):
            raise ValueError(
                f"target {target!r} is not an output index: the model has outputs 0..{n_outputs - 1}"
            )
    wanted = list(targets) if targets else [call_.target]
    attributed = AttributedInput(call_, layer)  # a sequence's embeddings, else x itself
    references, params = _REFERENCES[method](attributed, **options)
    params = {**params, **attributed.params()}
    result = deep_attributions(
        call_,
        attributed,
        references,
        wanted,
        batch_size=check_batch_size(batch_size),
        check_cancel=check_cancel,
    )
    explanations = [
        _finish(replace(call_, target=t), method, result, i, params) for i, t in enumerate(wanted)
    ]
    if result.unsupported:
        worst = max(abs(e.params["delta"]) for e in explanations)
        warnings.warn(
            f"{method}: no DeepLIFT rule for {', '.join(sorted(result.unsupported))}; their gradient was used "
            f"instead, so the attributions need not sum to f(x) - f(reference): the gap is params['delta'] "
            f"(up to {worst:.3g} here)",
            stacklevel=3,
        )
    return explanations


def _record(forward: Callable[[torch.Tensor], torch.Tensor], refs: torch.Tensor) -> tuple[torch.Tensor, Tape]:
    """The reference pass: the references' scores and the tape of what their non-linear operations saw."""
    for copy in (False, True):  # by reference first; with copies if the model overwrote a recorded tensor
        tape: Tape = []
        recorder = ReferencePass(tape, copy=copy)
        with torch.no_grad(), recorder:
            scores = forward(refs)
        if not recorder.overwritten():
            break
    return scores, tape


def _finish(
    call_: PreparedCall, method: str, result: DeepResult, index: int, params: dict[str, Any]
) -> Explanation:
    """Package target ``index``'s result: channels summed for images, the completeness gap."""
    per_channel = result.per_channel[index]
    if call_.kind == "sequence":
        attributions = per_channel.sum(dim=-1)  # (T, D) embeddings: one score a token
    else:
        attributions = per_channel.sum(dim=0) if call_.kind == "image" else per_channel
    base_value = float(result.reference_scores[index])
    params = {
        **params,
        "delta": float(per_channel.sum()) - (call_.prediction - base_value),
        "unsupported": sorted(result.unsupported),
        "per_channel": per_channel.detach().to("cpu", torch.float32),
    }
    return call_.explanation(method, attributions, params, base_value=base_value)


def _baseline_reference(
    attributed: AttributedInput, baseline: Any = "zero"
) -> tuple[torch.Tensor, dict[str, Any]]:
    """DeepLIFT's single reference ``(1, ...)``: ``"zero"``, ``"blur"``, ``"mean"`` (images), a number or a tensor;
    for token ids, the embeddings of ``"zero"`` the pad id in place of every real token, or of reference ids."""
    call_ = attributed.call
    if attributed.path is not None:
        reference = sequence_baseline(attributed, None if isinstance(baseline, str) else baseline)
        return reference, {"baseline": "pad tokens" if isinstance(baseline, str) else "token ids"}
    reference = image_fill(call_.x, baseline) if call_.kind == "image" else row_fill(call_.x, baseline)
    return reference, {"baseline": baseline if isinstance(baseline, str) else type(baseline).__name__}


def _background_references(
    attributed: AttributedInput, background: torch.Tensor, background_size: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, dict[str, Any]]:
    """DeepSHAP's references: ``background`` rows (for token ids: reference ids, embedded), or a seeded random
    subset of ``background_size`` of them."""
    seed = check_int("seed", seed, 0)
    rows = attributed.background_rows(background)
    if background_size is not None:
        size = check_int("background_size", background_size, 1)
        if size < rows.shape[0]:  # the same nested subset kernel_shap and the widgets' sliders keep
            rows = rows[subsample_indices(rows.shape[0], size, seed).to(rows.device)]
    return rows, {"background_size": int(rows.shape[0]), "seed": seed}


_REFERENCES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, Any]]]] = {
    "deeplift": _baseline_reference,
    "deep_shap": _background_references,
}


def deeplift(
    model: Model,
    x: torch.Tensor,
    *,
    baseline: Any = "zero",
    target: int | None = None,
    output: OutputSpace = "logits",
    image: Any = None,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
    layer: str | nn.Module | None = None,
) -> Explanation:
    """DeepLIFT with the rescale rule: attributions that sum to ``f(x) - f(baseline)``.

    ``baseline`` is the reference input: ``"zero"`` (the mean image for normalised inputs), ``"blur"`` (a
    Gaussian blur of ``x``: removes detail, keeps colour), ``"mean"`` (each channel's mean), a number, or a tensor
    shaped like ``x``. Attributions are ``(H, W)`` for an image (channels summed; ``params["per_channel"]`` keeps
    ``(C, H, W)``), ``(F,)`` for a row; ``base_value`` is ``f(baseline)``; ``params["delta"]`` the summation gap.
    Token ids ``(T,)`` are explained at the embedding ``layer`` (default: the input embedding), ``(T,)`` per
    token; the baseline is then the pad id in place of every real token, or reference ids ``(T,)``.
    """
    (explanation,) = deep_explanations(
        model,
        x,
        "deeplift",
        None if target is None else [target],
        baseline=baseline,
        output=output,
        image=image,
        batch_size=batch_size,
        check_cancel=check_cancel,
        layer=layer,
    )
    return explanation


def deep_shap(
    model: Model,
    x: torch.Tensor,
    *,
    background: torch.Tensor,
    background_size: int | None = None,
    target: int | None = None,
    output: OutputSpace = "logits",
    seed: int = 0,
    image: Any = None,
    batch_size: int | None = None,
    check_cancel: Callable[[], None] | None = None,
    layer: str | nn.Module | None = None,
) -> Explanation:
    """DeepSHAP: DeepLIFT averaged over background references (shap's ``DeepExplainer``).

    ``background`` is ``(B, ...)`` reference inputs shaped like ``x`` (a sample of training data); with
    ``background_size`` a random subset of that many rows (drawn with ``seed``) is used. The attributions sum to
    ``f(x) - E[f(background)]`` (``base_value`` is that mean); ``params["delta"]`` is the gap. Images give ``(H, W)``
    maps (``params["per_channel"]`` keeps ``(C, H, W)``), rows ``(F,)``. Token ids ``(T,)``: ``background`` is
    reference ids ``(B, T)``, attributions are at the embedding ``layer`` (default: the input embedding), ``(T,)``.
    """
    (explanation,) = deep_explanations(
        model,
        x,
        "deep_shap",
        None if target is None else [target],
        background=background,
        background_size=background_size,
        seed=seed,
        output=output,
        image=image,
        batch_size=batch_size,
        check_cancel=check_cancel,
        layer=layer,
    )
    return explanation
