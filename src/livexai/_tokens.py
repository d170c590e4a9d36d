"""Token-id sequences as inputs: how a model is called on them, which tokens are features, how one is removed.

A sequence input is a 1-d integer tensor of token ids ``(T,)`` (or ``(1, T)``), or a Hugging Face tokenizer's
output (a mapping with ``input_ids`` and ``attention_mask``), explained by a model that starts with an embedding.
Ids are never cast to float. Pad tokens (the model's ``pad_token_id``, or positions the attention mask zeroes)
are not features and stay as they are.

- Sampling methods (LIME, KernelSHAP) switch a feature (a token, or a word of several sub-tokens via ``groups``)
  off by replacing its tokens with a mask id (default: the pad id) or by deleting them (the rest shift left and
  the end is padded); models that take an ``attention_mask`` get one that hides pad tokens.
- Gradient methods attribute at the input embedding (:class:`EmbeddingPath`): the embedding layer's output is
  replaced by the points of the path, and the result is summed over the embedding dimension, one score a token.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ._hooks import forward_hook

Removal = Literal["replace", "delete"]
REMOVALS: tuple[str, ...] = ("replace", "delete")

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def embedding_layer(model: object) -> nn.Module | None:
    """The model's input embedding: Hugging Face's ``get_input_embeddings()``, else its first ``nn.Embedding``."""
    if not isinstance(model, nn.Module):
        return None
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        try:
            found = getter()
        except (NotImplementedError, AttributeError):
            found = None
        if isinstance(found, nn.Module):
            return found
    return next((module for module in model.modules() if isinstance(module, nn.Embedding)), None)


def pad_token_id(model: object) -> int | None:
    """The model's pad id: its ``pad_token_id`` attribute, or its Hugging Face ``config.pad_token_id``."""
    for owner in (model, getattr(model, "config", None)):
        value = getattr(owner, "pad_token_id", None)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
    return None


@dataclass(frozen=True, eq=False)
class TokenCall:
    """How to run a model on token ids ``(N, T)``.

    ``keyword``: the model's forward names ``input_ids`` (Hugging Face), so ids go by keyword;
    ``wants_mask``: it takes an ``attention_mask``, which is then the user's mask for the explained input
    (``attention`` ``(1, T)``) and, in every row, False where the row holds the pad id.
    """

    pad_token_id: int | None
    attention: torch.Tensor | None
    keyword: bool
    wants_mask: bool

    def __call__(self, model: Any, ids: torch.Tensor, **extra: Any) -> Any:
        kwargs = dict(extra)
        if self.wants_mask:
            kwargs["attention_mask"] = self.mask_for(ids).long()
        if self.keyword:
            return model(input_ids=ids, **kwargs)
        return model(ids, **kwargs)

    def mask_for(self, ids: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` bool: which tokens of each row the model should attend to."""
        mask = (
            torch.ones_like(ids, dtype=torch.bool) if self.pad_token_id is None else ids != self.pad_token_id
        )
        if self.attention is not None and self.attention.shape[-1] == ids.shape[-1]:
            mask = mask & self.attention
        return mask


def forward_parameters(model: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of the model's forward (empty when its signature cannot be read)."""
    target = model.forward if isinstance(model, nn.Module) else model
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


@dataclass(frozen=True, eq=False)
class TokenInput:
    """A validated sequence: ``ids`` ``(1, T)`` long, the user's ``attention`` ``(1, T)`` bool (or None), which
    positions are features (``content`` ``(T,)`` bool: not padding), and how to call the model."""

    ids: torch.Tensor
    attention: torch.Tensor | None
    content: torch.Tensor
    call: TokenCall

    def on(self, ids: torch.Tensor) -> TokenInput:
        """The same sequence with ``ids`` (the model-ready copy) and everything else on their device."""
        device = ids.device
        attention = None if self.attention is None else self.attention.to(device)
        return TokenInput(
            ids=ids,
            attention=attention,
            content=self.content.to(device),
            call=replace(self.call, attention=attention),
        )


def token_input(model: object, x: object, name: str = "x") -> TokenInput | None:
    """Check a sequence input for ``model`` and say how to run the model on it (ids stay on their device); None
    when ``x`` is not one. A sequence is a tokenizer's mapping with ``input_ids``, or an integer tensor ``(T,)``
    or ``(1, T)`` given to a model with an embedding layer (other integer tensors are tabular rows)."""
    attention = None
    if isinstance(x, Mapping):
        if "input_ids" not in x:
            return None
        ids, attention = x["input_ids"], x.get("attention_mask")
    elif not (isinstance(x, torch.Tensor) and x.dtype in _INTEGER_DTYPES and x.ndim in (1, 2)):
        return None  # images and float rows are not sequences (no embedding lookup for them)
    else:
        ids = x
    embedding = embedding_layer(model)
    if embedding is None and not isinstance(x, Mapping):
        return None
    ids = _single_row(name, ids)
    if ids.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"{name}'s token ids must be integers, got {ids.dtype}")
    ids = ids.long()
    _check_vocabulary(embedding, ids, name)
    pad = pad_token_id(model)
    if attention is not None:
        attention = _single_row("attention_mask", attention).bool()
        if attention.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention.shape)}; expected one flag per token, {tuple(ids.shape)}"
            )
    content = torch.ones(ids.shape[1], dtype=torch.bool, device=ids.device)
    if pad is not None:
        content &= ids[0] != pad
    if attention is not None:
        content &= attention[0].to(ids.device)
    if not bool(content.any()):
        raise ValueError(f"{name} holds only padding (pad id {pad}); expected at least one real token")
    parameters = forward_parameters(model)
    call = TokenCall(
        pad_token_id=pad,
        attention=None if attention is None else attention.to(ids.device),
        keyword="input_ids" in parameters,
        wants_mask="attention_mask" in parameters,
    )
    return TokenInput(ids=ids, attention=call.attention, content=content, call=call)


def _single_row(name: str, value: object) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of token ids (T,) or (1, T), got {type(value).__name__}")
    if value.ndim == 1:
        value = value.unsqueeze(0)
    if value.ndim != 2 or value.shape[0] != 1 or value.shape[1] == 0:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}; expected one sequence of token ids, (T,) or (1, T) "
            f"(explain one sequence at a time: {name}[i])"
        )
    return value.detach()


def _check_vocabulary(embedding: nn.Module | None, ids: torch.Tensor, name: str) -> None:
    size = getattr(embedding, "num_embeddings", None)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (size is not None and high >= size):
        known = f"0..{size - 1}" if size is not None else "non-negative ids"
        raise ValueError(
            f"{name} holds token ids from {low} to {high}, but the model's embedding has {size} rows ({known}); "
            "was it tokenised with another vocabulary?"
        )


# ----------------------------------------------------------------------------------------------------------------
# Features: tokens or groups of tokens, switched off by replacement or deletion


def check_groups(groups: object, content: torch.Tensor) -> torch.Tensor:
    """Each token's feature ``(T,)`` long on ``content``'s device, ``-1`` for tokens that are not features.

    ``groups`` None makes every real token a feature; else one entry per token, an int (tokens with the same int
    form one feature, e.g. a word's sub-tokens: a tokenizer's ``word_ids()``) or None (special tokens, kept).
    Padding is never a feature. Features are numbered in order of first appearance.
    """
    length = content.shape[0]
    if groups is None:
        labels = torch.arange(length, device=content.device)
    else:
        if isinstance(groups, torch.Tensor):
            groups = groups.tolist()
        groups = list(groups)  # type: ignore[call-overload]
        if len(groups) != length:
            raise ValueError(f"groups has {len(groups)} entries; expected one per token ({length})")
        if any(
            g is not None and (isinstance(g, bool) or not isinstance(g, (int, np.integer))) for g in groups
        ):
            raise TypeError("groups must hold an int (the token's word or feature) or None per token")
        labels = torch.tensor([-1 if g is None or g < 0 else int(g) for g in groups], device=content.device)
    labels = torch.where(content, labels, -1).tolist()
    numbers: dict[int, int] = {}  # a feature's label -> its number, in order of first appearance
    renumbered = [-1 if label < 0 else numbers.setdefault(label, len(numbers)) for label in labels]
    if not numbers:
        raise ValueError("no token is a feature: every token is padding or marked None in groups")
    return torch.tensor(renumbered, dtype=torch.long, device=content.device)


@dataclass(frozen=True, eq=False)
class TokenFeatures:
    """The features of a sequence ``x`` ``(1, T)``: ``groups`` ``(T,)`` (feature per token, -1: always kept),
    switched off to ``fill_id`` (``removal="replace"``: a mask id) or deleted (``"delete"``: the kept tokens move
    left and the end is filled with ``fill_id``, the pad id)."""

    x: torch.Tensor
    groups: torch.Tensor
    n_features: int
    removal: Removal
    fill_id: int

    def inputs(self, masks: torch.Tensor) -> torch.Tensor:
        """Token ids ``(n, T)`` for masks ``(n, M)`` (True: the feature keeps its tokens)."""
        always = torch.ones(masks.shape[0], 1, dtype=torch.bool, device=masks.device)
        keep = torch.cat([masks, always], dim=1)[:, self.groups]  # group -1 reads the always-on column
        if self.removal == "replace":
            return torch.where(keep, self.x, self.fill_id)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept tokens first, in order
        shifted = torch.gather(self.x.expand_as(keep), 1, order)
        kept_count = keep.sum(dim=1, keepdim=True)
        positions = torch.arange(keep.shape[1], device=keep.device)
        return torch.where(positions < kept_count, shifted, self.fill_id)

    def paint(self, values: torch.Tensor) -> torch.Tensor:
        """Per-feature values ``(M,)`` as per-token attributions ``(T,)`` (0 for tokens that are not features)."""
        zero = torch.zeros(1, dtype=values.dtype, device=values.device)
        return torch.cat([values, zero])[self.groups]

    def params(self) -> dict[str, Any]:
        """What an Explanation records about the features and their removal."""
        return {
            "n_features": self.n_features,
            "removal": self.removal,
            "mask_token_id": self.fill_id if self.removal == "replace" else None,
        }


def token_features(
    tokens: TokenInput, groups: object, removal: object, mask_token_id: object
) -> TokenFeatures:
    """:class:`TokenFeatures` of a sequence, with the removal checked: deletion fills the end with the pad id
    (``mask_token_id`` when the model names none), replacement uses ``mask_token_id`` (default: the pad id)."""
    if removal not in REMOVALS:
        raise ValueError(f"removal must be 'replace' or 'delete' for token inputs, got {removal!r}")
    pad = tokens.call.pad_token_id
    if mask_token_id is None:
        if pad is None:
            raise ValueError(
                "the model has no pad_token_id, so livexai cannot tell which id removes a token: pass "
                "mask_token_id= (e.g. the tokenizer's pad or [MASK] id)"
            )
        mask_token_id = pad
    if (
        isinstance(mask_token_id, bool)
        or not isinstance(mask_token_id, (int, np.integer))
        or mask_token_id < 0
    ):
        raise TypeError(f"mask_token_id must be a non-negative int token id, got {mask_token_id!r}")
    labels = check_groups(groups, tokens.content)
    return TokenFeatures(
        x=tokens.ids,
        groups=labels,
        n_features=int(labels.max()) + 1,
        removal=removal,  # type: ignore[arg-type]
        fill_id=int(pad if removal == "delete" and pad is not None else mask_token_id),
    )


# ----------------------------------------------------------------------------------------------------------------
# Gradients at the embedding


@dataclass(frozen=True, eq=False)
class EmbeddingPath:
    """Gradient methods on a sequence: the embedding layer's output stands in for the input.

    ``embed(ids)`` runs the layer on ids; ``forward(adapter, embeddings)`` runs the model on the explained ids
    with the layer's output replaced by ``embeddings`` ``(n, T, D)`` (a hook, only for that call and thread).
    """

    layer: nn.Module
    name: str
    ids: torch.Tensor

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.layer(ids)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.shape[:2] != ids.shape:
            raise ValueError(
                f"layer {self.name!r} does not map ids (N, T) to embeddings (N, T, D); got "
                f"{type(out).__name__ if not isinstance(out, torch.Tensor) else tuple(out.shape)}"
            )
        return out.detach()

    @contextmanager
    def replaced(self, embeddings: torch.Tensor) -> Iterator[None]:
        """While the block runs, the layer returns ``embeddings`` (calls from this thread only)."""

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            return embeddings.to(output.dtype) if isinstance(output, torch.Tensor) else embeddings

        with forward_hook(self.layer, hook):
            yield

    def ids_for(self, n: int) -> torch.Tensor:
        return self.ids.expand(n, -1)
