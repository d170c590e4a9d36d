"""Architectures of the text demo models: ``(N, T)`` token ids -> ``(N, 2)`` logits for the synthetic reviews.

Both models ignore the pad id wherever it sits, not only at the end: explanation methods switch words off by
replacing them with the pad id mid-sentence, and a switched-off word should be as if it had never been written.
So a pad changes neither which tokens are pooled nor the positions or neighbours of the real tokens, and a row
that is all pad still gives finite logits.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..datasets import PAD_ID, REVIEW_CLASSES, REVIEW_VOCAB

__all__ = ["ReviewsLSTM", "ReviewsTransformer"]


def _compacted(h: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """``h`` ``(N, T, d)`` with each row's real tokens moved to the front in order, pads after them."""
    order = torch.argsort(is_pad.to(torch.uint8), dim=1, stable=True)
    return h.gather(1, order.unsqueeze(-1).expand_as(h))


def _masked_mean(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``h`` ``(N, T, d)`` over the positions where ``keep`` ``(N, T)``; zeros for a row with none."""
    w = keep.unsqueeze(-1).to(h.dtype)
    return (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def _masked_max(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Max of ``h`` ``(N, T, d)`` over the positions where ``keep``; zeros for a row with none."""
    masked = h.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(dim=1)
    return torch.where(keep.any(dim=1, keepdim=True), masked, torch.zeros_like(masked))


class ReviewsLSTM(nn.Module):
    """Bidirectional LSTM for :func:`livexai.datasets.reviews`: ``(N, T)`` ids -> ``(N, 2)`` logits.

    ``embedding`` -> ``lstm`` (one bidirectional layer) -> mean and max over the real tokens -> ``classifier``.
    Real tokens are packed to the front before the LSTM, so a pad mid-sentence does not reach its state.
    """

    pad_token_id = PAD_ID

    def __init__(
        self,
        vocab_size: int = len(REVIEW_VOCAB),
        dim: int = 32,
        hidden: int = 32,
        num_classes: int = len(REVIEW_CLASSES),
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=self.pad_token_id)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(4 * hidden, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_pad = ids == self.pad_token_id
        h = _compacted(self.embedding(ids), is_pad)
        lengths = (~is_pad).sum(dim=1)
        packed = nn.utils.rnn.pack_padded_sequence(
            h, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        keep = torch.arange(ids.shape[1], device=ids.device) < lengths.unsqueeze(1)
        return self.classifier(torch.cat([_masked_mean(out, keep), _masked_max(out, keep)], dim=1))


class _Block(nn.Module):
    """Pre-norm transformer block: ``norm1`` -> ``attention`` (+ residual), ``norm2`` -> ``mlp`` (+ residual).

    Written out instead of ``nn.TransformerEncoderLayer``, whose eval fast path skips
    ``nn.MultiheadAttention.forward`` and so the hooks that capture attention weights.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("fc1", nn.Linear(dim, 2 * dim)), ("act", nn.GELU()), ("fc2", nn.Linear(2 * dim, dim))]
            )
        )

    def forward(self, h: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(h)
        h = h + self.attention(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return h + self.mlp(self.norm2(h))


class ReviewsTransformer(nn.Module):
    """Small transformer encoder for :func:`livexai.datasets.reviews`: ``(N, T)`` ids -> ``(N, 2)`` logits.

    ``embedding`` + ``position`` (learned, up to ``max_length`` real tokens) -> ``blocks.0``, ``blocks.1`` (each
    with an ``attention`` :class:`~torch.nn.MultiheadAttention`) -> ``norm`` -> mean over the real tokens ->
    ``classifier``. Pads are masked as attention keys and positions count real tokens only, so a pad anywhere
    changes nothing; a row that is all pad attends to itself instead of to nothing (which would give NaN).
    """

    pad_token_id = PAD_ID

    def __init__(
        self,
        vocab_size: int = len(REVIEW_VOCAB),
        dim: int = 48,
        heads: int = 4,
        depth: int = 2,
        max_length: int = 128,
        num_classes: int = len(REVIEW_CLASSES),
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=self.pad_token_id)
        self.position = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_pad = ids == self.pad_token_id
        real = ~is_pad
        positions = (real.cumsum(dim=1) - 1).clamp(0, self.position.num_embeddings - 1)
        h = self.embedding(ids) + self.position(positions)
        key_padding_mask = is_pad & real.any(dim=1, keepdim=True)  # an all-pad row keeps every key
        for block in self.blocks:
            h = block(h, key_padding_mask)
        return self.classifier(_masked_mean(self.norm(h), real))
