"""How a layer's output is laid out over the image: told from how it changes when one corner of the input does.

Shapes alone cannot tell ``(N, C, h, w)`` from ConvNeXt's channels-last ``(N, h, w, C)`` blocks (an 8-channel
8x8 map is ``(1, 8, 8, 8)`` either way), nor a ViT's patch tokens from any other sequence. So layer discovery
runs the model twice, on the input and on a copy whose top-left quadrant is changed, and reads each output:

- unchanged: the output does not depend on the input (Swin's relative position bias): no map to draw;
- a 4-d output: the reading (channels first or last) under which the change sits in the top-left quadrant of
  the map (a channel axis read as space spreads it over a whole row or column);
- a 3-d output ``(N, T, D)``: tokens whose count, less up to two leading class/distillation tokens, is a patch
  grid with the image's aspect (``h * w`` tokens in row-major order, as ViT and Swin lay them out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

LayoutKind = Literal["channels_first", "channels_last", "tokens"]

# Leading tokens that are not patches (a class token; DeiT adds a distillation token).
_MAX_EXTRA_TOKENS = 2
# A map's aspect ratio may differ from the image's by this factor (strided convolutions round sizes).
_ASPECT_SLACK = 1.25
# Readings whose share of the change in the corner differs by less than this are told apart by shape alone.
_CLEAR_MARGIN = 0.05


@dataclass(frozen=True)
class Layout:
    """How to read a layer's output ``(N, ...)`` as maps ``(N, C, h, w)``."""

    kind: LayoutKind
    grid: tuple[int, int]  # (h, w)
    extra_tokens: int = 0  # leading tokens that are not part of the patch grid

    def to_maps(self, output: torch.Tensor) -> torch.Tensor:
        """``output`` as ``(N, C, h, w)`` maps (a view where possible)."""
        if self.kind == "channels_first":
            return output
        if self.kind == "channels_last":
            return output.permute(0, 3, 1, 2)
        patches = output[:, self.extra_tokens :]
        return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], *self.grid)


def _fits(grid: tuple[int, int], image: tuple[int, int]) -> bool:
    """Whether a ``grid`` of cells could cover an image of size ``image`` (same aspect, give or take)."""
    (h, w), (height, width) = grid, image
    if h < 1 or w < 1 or h * w < 2 or h > height or w > width:
        return False
    ratio = (h / w) / (height / width)
    return 1 / _ASPECT_SLACK <= ratio <= _ASPECT_SLACK


def _corner_share(change: torch.Tensor) -> float:
    """Share of a change map ``(h, w)`` that falls in its top-left quadrant (0 when nothing changed)."""
    h, w = change.shape
    total = float(change.sum())
    if total <= 0:
        return 0.0
    return float(change[: math.ceil(h / 2), : math.ceil(w / 2)].sum()) / total


def _spatial(change: torch.Tensor, image: tuple[int, int]) -> Layout | None:
    """The reading of a 4-d output's change ``(1, a, b, c)`` that puts the change in the corner."""
    first = (change.shape[2], change.shape[3])
    last = (change.shape[1], change.shape[2])
    candidates = []
    if _fits(first, image):
        candidates.append((_corner_share(change[0].sum(dim=0)), 1, Layout("channels_first", first)))
    if _fits(last, image):
        candidates.append((_corner_share(change[0].sum(dim=2)), 0, Layout("channels_last", last)))
    if not candidates:
        return None
    if len(candidates) == 2 and abs(candidates[0][0] - candidates[1][0]) < _CLEAR_MARGIN:
        return candidates[0][2]  # no clear locality (a deep layer sees everything): channels first, as usual
    return max(candidates, key=lambda candidate: candidate[:2])[2]


def _tokens(n_tokens: int, image: tuple[int, int]) -> Layout | None:
    """A patch grid for ``n_tokens`` tokens: the fewest leading extra tokens that leave a grid of the image's
    aspect (for a square image, a square number of patches)."""
    height, width = image
    for extra in range(_MAX_EXTRA_TOKENS + 1):
        patches = n_tokens - extra
        if patches < 2:
            return None
        h = round(math.sqrt(patches * height / width))
        for rows in (h - 1, h, h + 1):
            if rows > 0 and patches % rows == 0 and _fits((rows, patches // rows), image):
                return Layout("tokens", (rows, patches // rows), extra)
    return None


def infer_layout(
    first: torch.Tensor, second: torch.Tensor, image: tuple[int, int]
) -> tuple[Layout | None, bool]:
    """``(layout, varies)`` of a layer from its outputs on the input and on the input with a changed corner.

    ``varies`` is False when the two outputs are equal (the layer ignores the input). ``layout`` is None when
    the output cannot be read as maps over the image (vectors, other batch sizes, sequences of another length).
    """
    if first.shape != second.shape or not first.is_floating_point():
        return None, True
    change = (second.detach().float() - first.detach().float()).abs()
    varies = bool(change.any())
    if first.shape[0] != 1 or not varies:
        return None, varies
    if first.ndim == 4:
        return _spatial(change, image), varies
    if first.ndim == 3:
        return layout_from_shape(tuple(first.shape), image), varies
    return None, varies


def layout_from_shape(shape: tuple[int, ...], image: tuple[int, int]) -> Layout | None:
    """The layout of an output of ``shape`` (batch of one) when its shape alone decides it, else None.

    Tokens are read by their count alone; a 4-d output when exactly one of its two readings fits the image.
    """
    if len(shape) == 3 and shape[0] == 1 and shape[2] > 1:
        return _tokens(shape[1], image)
    if len(shape) != 4 or shape[0] != 1:
        return None
    first, last = _fits((shape[2], shape[3]), image), _fits((shape[1], shape[2]), image)
    if first and not last:
        return Layout("channels_first", (shape[2], shape[3]))
    if last and not first:
        return Layout("channels_last", (shape[1], shape[2]))
    return None
