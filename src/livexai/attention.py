"""Attention weights of a sequence model, per layer and head, and attention rollout (Abnar & Zuidema, 2020).

Attention says where each token looked, not why the model decided: comparing it with attributions (LIME,
integrated gradients) on the same sentence is a classic lesson. :func:`attention` runs the model once on one
sequence and captures, without changing the model:

- every ``nn.MultiheadAttention``'s weights, by asking it for them (``need_weights=True``, per head) for that
  call only (hooks registered and removed around the call);
- for a Hugging Face model, its ``attentions`` output (``output_attentions=True``); a model configured for
  ``sdpa``/flash attention, which cannot return weights, runs that one call with eager attention, and its
  configuration is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._adapter import Model
from ._call import prepare
from ._hooks import forward_hook, pre_hook
from ._inputs import check_int
from ._tokens import forward_parameters
from .explanation import Explanation

__all__ = ["Attention", "attention"]

# nn.MultiheadAttention.forward's parameters after query, key and value, in order (to read positional calls).
_MHA_OPTIONS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


@dataclass(eq=False)
class Attention:
    """Attention of one sequence.

    weights: per layer, ``(heads, T, T)`` CPU float32, row ``i`` the attention query token ``i`` paid to each
    key (rows sum to 1; padded keys get 0). layer_names: one name per layer, in forward order. token_ids:
    ``(T,)``; content: ``(T,)`` bool, False on padding. rollout: ``(T, T)`` attention rollout across all layers.
    """

    weights: list[torch.Tensor]
    layer_names: list[str]
    token_ids: torch.Tensor
    content: torch.Tensor
    rollout: torch.Tensor
    prediction: float
    target: int

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    @property
    def n_heads(self) -> int:
        return self.weights[0].shape[0]

    def matrix(self, layer: int | str = -1, head: int | None = None) -> torch.Tensor:
        """``(T, T)`` attention of ``layer`` (index or name), one ``head`` or the mean over heads (None)."""
        weights = self.weights[self._layer_index(layer)]
        if head is None:
            return weights.mean(dim=0)
        head = check_int("head", head, 0, weights.shape[0] - 1)
        return weights[head]

    def scores(
        self, layer: int | str | None = -1, head: int | None = None, query: int | None = None
    ) -> torch.Tensor:
        """Attention each token receives, ``(T,)``: from token ``query`` (None: averaged over the real tokens)
        in ``layer``/``head``, or in the rollout when ``layer`` is None. Padding receives 0."""
        matrix = self.rollout if layer is None else self.matrix(layer, head)
        if query is None:
            received = matrix[self.content].mean(dim=0)
        else:
            received = matrix[check_int("query", query, 0, matrix.shape[0] - 1)]
        return received * self.content

    def explanation(
        self, layer: int | str | None = -1, head: int | None = None, query: int | None = None
    ) -> Explanation:
        """:meth:`scores` as an :class:`Explanation` (method ``"attention"`` or ``"attention_rollout"``), to draw
        and compare with attributions of the same sequence."""
        method = "attention_rollout" if layer is None else "attention"
        params: dict[str, Any] = {"head": head, "query": query}
        if layer is not None:
            params["layer"] = self.layer_names[self._layer_index(layer)]
        return Explanation(
            method=method,
            target=self.target,
            attributions=self.scores(layer, head, query),
            prediction=self.prediction,
            params=params,
            n_evals=1,
        )

    def _layer_index(self, layer: int | str) -> int:
        if isinstance(layer, str):
            if layer not in self.layer_names:
                raise ValueError(f"unknown attention layer {layer!r}; the model's are {self.layer_names}")
            return self.layer_names.index(layer)
        layer = check_int("layer", layer, -self.n_layers, self.n_layers - 1)
        return layer % self.n_layers


def rollout(weights: Sequence[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Attention rollout ``(T, T)`` of per-layer weights ``(heads, T, T)``: heads averaged, the residual
    connection added as ``0.5 A + 0.5 I`` (rows renormalised), then the layers multiplied, first layer first."""
    result = None
    for layer in weights:
        mixed = layer.double().mean(dim=0)
        if residual:
            mixed = 0.5 * mixed + 0.5 * torch.eye(mixed.shape[0], dtype=mixed.dtype)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        result = mixed if result is None else mixed @ result
    assert result is not None
    return result.float()


def attention(
    model: Model, ids: Any, *, layer: str | nn.Module | Sequence[str] | None = None, target: int | None = None
) -> Attention:
    """Capture the attention of every attention layer of ``model`` on one sequence ``ids`` ``(T,)``.

    ``ids``: token ids (an integer tensor, or a tokenizer's mapping with ``input_ids`` and ``attention_mask``).
    ``layer``: None for every ``nn.MultiheadAttention`` (or every layer of a Hugging Face model), else a name,
    module or list of names from the model. ``target`` only labels the result (default: the top class).
    The model runs once; its modules, hooks and configuration are as before afterwards.
    """
    call = prepare(model, ids, target=target)
    if call.kind != "sequence":
        raise ValueError(
            "attention explains a sequence of token ids (T,) for a model with an embedding layer; "
            f"got x with shape {tuple(call.x.shape)}"
        )
    assert call.tokens is not None
    adapter, module = call.adapter, call.adapter.model
    with adapter.session(), torch.inference_mode():
        attentions = _multihead_layers(module, layer)
        if attentions:
            with _capture(attentions) as captured:
                adapter.call_model(call.x.clone())
            names = [name for name, _ in attentions]
            weights = [captured[name] for name in names if name in captured]
            names = [name for name in names if name in captured]
        elif _takes_output_attentions(module):
            with _eager_attention(module):
                output = adapter.call_model(call.x.clone(), output_attentions=True)
            weights, names = _hugging_face_weights(output, layer)
        else:
            weights, names = [], []
    if not weights:
        raise ValueError(
            "found no attention weights: the model has no nn.MultiheadAttention layer that ran on this input "
            "and returns no Hugging Face 'attentions'"
        )
    per_layer = [w[0].detach().to("cpu", torch.float32) for w in weights]
    return Attention(
        weights=per_layer,
        layer_names=names,
        token_ids=call.x[0].detach().cpu(),
        content=call.tokens.content.cpu(),
        rollout=rollout(per_layer),
        prediction=call.prediction,
        target=call.target,
    )


def _takes_output_attentions(model: object) -> bool:
    """Whether the model's forward accepts ``output_attentions`` (named, or through ``**kwargs`` as Hugging Face
    models of transformers 5 do)."""
    parameters = forward_parameters(model).values()
    return any(p.name == "output_attentions" or p.kind is p.VAR_KEYWORD for p in parameters)


def _multihead_layers(model: object, layer: object) -> list[tuple[str, nn.MultiheadAttention]]:
    """The model's ``nn.MultiheadAttention`` modules by name, all or the ones ``layer`` names."""
    if not isinstance(model, nn.Module):
        return []
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if layer is None or not found:
        return found
    wanted = [layer] if isinstance(layer, (str, nn.Module)) else list(layer)  # type: ignore[call-overload]
    chosen = []
    for item in wanted:
        match = [(n, m) for n, m in found if n == item or m is item]
        if not match:
            raise ValueError(
                f"{item!r} is not an attention layer of the model; its nn.MultiheadAttention layers are "
                f"{[n for n, _ in found]}"
            )
        chosen.extend(match)
    return chosen


@contextmanager
def _capture(layers: list[tuple[str, nn.MultiheadAttention]]) -> Iterator[dict[str, torch.Tensor]]:
    """Make each layer return per-head weights during the block (this thread's calls only) and collect them."""
    captured: dict[str, torch.Tensor] = {}

    def ask_for_weights(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        options = dict(zip(_MHA_OPTIONS, args[3:], strict=False))
        options.update(kwargs, need_weights=True, average_attn_weights=False)
        return args[:3], options

    def keep(name: str) -> Callable[[nn.Module, tuple, Any], None]:
        def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
            if isinstance(output, tuple) and output[1] is not None:
                captured[name] = output[1]

        return hook

    with ExitStack() as stack:
        for name, module in layers:
            stack.enter_context(pre_hook(module, ask_for_weights, with_kwargs=True))
            stack.enter_context(forward_hook(module, keep(name)))
        yield captured


@contextmanager
def _eager_attention(model: object) -> Iterator[None]:
    """Run a Hugging Face model with eager attention during the block (sdpa cannot return weights), then put
    every configuration back as it was."""
    configs = {}
    if isinstance(model, nn.Module):
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "_attn_implementation"):
                configs[id(config)] = config
    before = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = "eager"
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = before[key]


def _hugging_face_weights(output: Any, layer: object) -> tuple[list[torch.Tensor], list[str]]:
    """The ``attentions`` of a Hugging Face output, one ``(1, heads, T, T)`` per layer, and their names."""
    found = getattr(output, "attentions", None)
    if found is None and isinstance(output, dict):
        found = output.get("attentions")
    if not found:
        return [], []
    weights = list(found)
    names = [f"layer {i}" for i in range(len(weights))]
    if layer is None:
        return weights, names
    wanted = [layer] if isinstance(layer, (str, int)) else list(layer)  # type: ignore[call-overload]

    def index(item: object) -> int:
        if isinstance(item, int) and not isinstance(item, bool) and -len(names) <= item < len(names):
            return item % len(names)
        if item in names:
            return names.index(item)  # type: ignore[arg-type]
        raise ValueError(f"unknown attention layer {item!r}; this model's are {names} (or their indices)")

    picked = [index(item) for item in wanted]
    return [weights[i] for i in picked], [names[i] for i in picked]
