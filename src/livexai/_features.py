"""Features and how to switch them off, for LIME and KernelSHAP.

A *feature* is a superpixel of an image, a column of a tabular row, or a token (or word) of a sequence. A mask
``(n, M)`` says which of the ``M`` features keep the input's value (True) and which take a *fill* value (False):
a baseline image (blurred, mean, zero, ...), a reference row/image from a background set, or for a sequence a
mask token or deletion (``_tokens.py``). Masks are sampled on the input's device with a seeded
``torch.Generator`` and expanded to inputs batch by batch inside :meth:`ModelAdapter.evaluate`, so memory stays
bounded and there is no Python loop per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._inputs import check_int
from ._tokens import TokenFeatures, token_features

if TYPE_CHECKING:
    from ._call import PreparedCall

BASELINES: tuple[str, ...] = ("blur", "mean", "zero", "segment_mean")


# ----------------------------------------------------------------------------------------------------------------
# Features


def generator(seed: object, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (an int >= 0)."""
    seed = check_int("seed", seed, 0)
    return torch.Generator(device=device).manual_seed(seed)


def check_segments(segments: Any, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """User-given superpixel labels as ``(H, W)`` long labels ``0..K-1`` on ``device`` (relabelled in order), and K.

    Any integer labels are accepted (scikit-image's start at 1, for example); they must cover the ``H x W`` input
    and hold at least 2 distinct values.
    """
    if isinstance(segments, np.ndarray):
        segments = torch.from_numpy(np.ascontiguousarray(segments))
    if not isinstance(segments, torch.Tensor):
        raise TypeError(
            f"segments must be an (H, W) tensor or array of integer labels, got {type(segments).__name__}"
        )
    if segments.ndim == 3 and segments.shape[0] == 1:
        segments = segments[0]
    if tuple(segments.shape) != (height, width):
        raise ValueError(
            f"segments has shape {tuple(segments.shape)} but the input image is {height}x{width}; "
            f"expected labels of shape ({height}, {width})"
        )
    if segments.is_floating_point() or segments.is_complex() or segments.dtype == torch.bool:
        if segments.is_floating_point() and bool((segments == segments.round()).all()):
            segments = segments.long()
        else:
            raise TypeError(f"segments must hold integer labels, got dtype {segments.dtype}")
    labels, relabelled = torch.unique(segments.to(device), return_inverse=True)
    if labels.numel() < 2:
        raise ValueError("segments has a single label; expected at least 2 superpixels to explain")
    return relabelled.long(), int(labels.numel())


def image_segments(
    segments: Any,
    picture: Any,
    x: torch.Tensor,
    n_segments: object,
    segmentation: str,
    options: dict[str, Any],
) -> tuple[torch.Tensor, int]:
    """Superpixels ``(H, W)`` on ``x``'s device and their count: ``segments`` if given, else segment ``picture``.

    ``picture`` is the user's ``(H, W, 3)`` display image, or the model-ready ``x`` itself when there is none;
    it is moved to ``x``'s device first, so torch SLIC runs where the model runs (scikit-image methods copy it
    back to the CPU themselves).
    """
    height, width = x.shape[-2:]
    if segments is not None:
        return check_segments(segments, height, width, x.device)
    n_segments = check_int("n_segments", n_segments, 2)
    if n_segments > height * width:
        raise ValueError(
            f"n_segments={n_segments} is more than the {height * width} pixels of this {height}x{width} image; "
            f"expected 2 to {height * width}"
        )
    from .segmentation import segment  # imported here: segmentation pulls in scikit-image

    if isinstance(picture, torch.Tensor):
        picture = picture.to(x.device)
    labels = segment(picture, n_segments, method=segmentation, **options)
    return check_segments(labels, height, width, x.device)


# ----------------------------------------------------------------------------------------------------------------
# Baselines and background sets


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``images`` ``(N, C, H, W)`` with standard deviation ``sigma`` pixels (edges replicated).

    Separable, with a kernel of ``2 * ceil(3 sigma) + 1`` taps, applied as two matrix products
    ``rows @ images @ cols.T`` whose banded matrices hold the taps (those falling past an edge added to the edge
    pixel). A depthwise ``conv2d`` computes the same sums but ran 7 to 50 times slower on a CPU (0.45 vs 0.06 ms
    at 64 x 64, 19 vs 0.6 ms at 224 x 224 with LIME's default sigma).
    """
    radius = max(1, math.ceil(3.0 * sigma))
    height, width = images.shape[-2:]
    rows = _blur_matrix(height, sigma, radius, images)
    cols = rows if width == height else _blur_matrix(width, sigma, radius, images)
    return rows @ images @ cols.T


def _blur_matrix(size: int, sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    """``(size, size)``: row ``i`` holds the Gaussian taps around pixel ``i``, clamped to the edge pixels."""
    offsets = torch.arange(-radius, radius + 1, device=like.device)
    kernel = torch.exp(-0.5 * (offsets.to(like.dtype) / sigma) ** 2)
    kernel = kernel / kernel.sum()
    sources = (torch.arange(size, device=like.device)[:, None] + offsets).clamp_(0, size - 1)
    matrix = torch.zeros(size, size, device=like.device, dtype=like.dtype)
    return matrix.scatter_add_(1, sources, kernel.expand(size, -1))


def image_fill(
    x: torch.Tensor, baseline: object, segments: torch.Tensor | None = None, blur_sigma: float | None = None
) -> torch.Tensor:
    """What an "off" superpixel shows, as one image ``(1, C, H, W)`` like ``x``.

    ``"blur"``: ``x`` blurred with a Gaussian of ``blur_sigma`` pixels (default ``max(H, W) / 8``, strong enough to
    remove a superpixel's content, like shap's image masker); ``"mean"``: each channel's mean; ``"zero"``: zeros
    (the mean image for normalised inputs); ``"segment_mean"``: each superpixel's own mean colour (lime's default,
    ``hide_color=None``); a number; or a tensor broadcastable to ``x``.
    """
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape).clone()
        except RuntimeError as error:
            raise ValueError(
                f"baseline tensor of shape {tuple(baseline.shape)} cannot be broadcast to the input's shape "
                f"{tuple(x.shape)}; expected e.g. (C, H, W), (C, 1, 1) or a scalar"
            ) from error
    if isinstance(baseline, (int, float, np.integer, np.floating)) and not isinstance(baseline, bool):
        if not math.isfinite(float(baseline)):
            raise ValueError(f"baseline must be a finite number, got {baseline}")
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if baseline == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(x.shape[-2:]) / 8.0
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"blur_sigma must be a positive number of pixels, got {sigma!r}")
        return gaussian_blur(x, float(sigma))
    if baseline == "segment_mean":
        if segments is None:
            raise ValueError("baseline='segment_mean' needs superpixels")
        flat = segments.reshape(-1)
        n_features = int(flat.max()) + 1
        pixels = x[0].flatten(1)  # (C, HW)
        sums = torch.zeros(pixels.shape[0], n_features, dtype=x.dtype, device=x.device).index_add_(
            1, flat, pixels
        )
        counts = torch.bincount(flat, minlength=n_features).to(x.dtype)
        return (sums / counts)[:, flat].reshape(x.shape)
    raise ValueError(
        f"unknown baseline {baseline!r}; expected one of {', '.join(map(repr, BASELINES))}, a number, "
        "or a tensor broadcastable to the input"
    )


def row_fill(x: torch.Tensor, baseline: object) -> torch.Tensor:
    """A single reference row ``(1, F)`` for tabular inputs with no background set: ``"zero"``, a number, a tensor."""
    if isinstance(baseline, torch.Tensor) or (
        isinstance(baseline, (int, float, np.integer, np.floating)) and not isinstance(baseline, bool)
    ):
        return image_fill(x, baseline)
    if baseline == "zero":
        return torch.zeros_like(x)
    raise ValueError(
        f"baseline {baseline!r} does not apply to tabular rows; pass background=(B, F) reference rows "
        "(e.g. a sample of training data), or baseline='zero', a number or an (F,) tensor"
    )


def background_rows(background: Any, x: torch.Tensor) -> torch.Tensor:
    """A tabular background set as ``(B, F)`` on ``x``'s device and dtype; one ``(F,)`` row is accepted."""
    tensor = _as_tensor("background", background)
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)
    n_features = x.shape[1]
    if tensor.ndim != 2 or tensor.shape[1] != n_features or tensor.shape[0] == 0:
        raise ValueError(
            f"background has shape {tuple(tensor.shape)}; expected reference rows (B, F) = (B, {n_features}) "
            "with the same columns as x"
        )
    return _finite("background", tensor.to(device=x.device, dtype=x.dtype))


def quartile_fill(
    background: torch.Tensor, x: torch.Tensor, n: int, generator: torch.Generator, names: list[str]
) -> tuple[torch.Tensor, list[str]]:
    """Off-values for LIME's discretised tabular features, as lime's quartile discretiser defines them.

    Each column is cut at the background's quartiles; the interpretable feature "column j is on" means "in the
    same quartile as x". An off column takes the value of a random background row from another quartile (any
    row if every row shares x's quartile). Returns the fill rows ``(n, F)`` (one per sample) and a description
    of x's quartile per column, e.g. ``"1.2 < age <= 3.4"``.
    """
    levels = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64, device=background.device)
    edges = torch.quantile(background.double(), levels, dim=0).to(background.dtype)  # (3, F)

    def quartile(rows: torch.Tensor) -> torch.Tensor:
        return (rows.unsqueeze(1) > edges.unsqueeze(0)).sum(dim=1)  # (R, F) in 0..3

    x_quartile = quartile(x)  # (1, F)
    elsewhere = quartile(background) != x_quartile  # (B, F)
    allowed = torch.where(elsewhere.any(dim=0, keepdim=True), elsewhere, torch.ones_like(elsewhere))
    picks = torch.multinomial(allowed.T.float(), n, replacement=True, generator=generator)  # (F, n)
    fill = torch.gather(background.T, 1, picks).T  # (n, F)
    bounds = edges.T.tolist()
    descriptions = []
    for name, q, (low, mid, high) in zip(names, x_quartile[0].tolist(), bounds, strict=True):
        descriptions.append(
            [
                f"{name} <= {low:.4g}",
                f"{low:.4g} < {name} <= {mid:.4g}",
                f"{mid:.4g} < {name} <= {high:.4g}",
                f"{name} > {high:.4g}",
            ][q]
        )
    return fill.contiguous(), descriptions


def background_images(background: Any, x: torch.Tensor) -> torch.Tensor:
    """An image background set as ``(B, C, H, W)`` like ``x`` on its device; one ``(C, H, W)`` image is accepted."""
    tensor = _as_tensor("background", background)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != tuple(x.shape[1:]) or tensor.shape[0] == 0:
        raise ValueError(
            f"background has shape {tuple(tensor.shape)}; expected reference images (B, C, H, W) = "
            f"(B, {', '.join(map(str, x.shape[1:]))}) like x, or one of {', '.join(map(repr, BASELINES))}"
        )
    return _finite("background", tensor.to(device=x.device, dtype=x.dtype))


def subsample_indices(n_rows: int, size: object, seed: int) -> torch.Tensor:
    """Which rows of a background set of ``n_rows`` to keep: the first ``size`` after a shuffle seeded by ``seed``.

    Nested: the rows kept for ``size=k`` are among those kept for ``k+1``, so a slider moving the size changes the
    explanation smoothly. A CPU long tensor (the shuffle does not depend on the device).
    """
    size = check_int("background_size", size, 1, n_rows)
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))[:size]


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    return value.detach()


def _finite(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers")
    return tensor


# ----------------------------------------------------------------------------------------------------------------
# Masks to inputs


class ImageMasker:
    """Masked images of one ``x`` ``(1, C, H, W)`` with superpixels ``segments`` ``(H, W)`` and reference images
    ``fill`` ``(S, C, H, W)``, built in memory ``layout`` (the one the model adapter runs them in: converting them
    afterwards cost as much as building them): ``x`` where a pixel's superpixel is on in a mask, a fill image's
    value elsewhere.

    Bit for bit ``torch.where``, but no operation broadcasts: ``fill ^ ((x ^ fill) & on)`` on the values' bits,
    with ``on`` all ones where the superpixel is on, gathered per value in memory order. Broadcasting a per-pixel
    mask over channels-last images gives inner loops of C = 3 values, which made ``torch.where`` and a bitwise
    ``and`` 3 to 10 times slower. Two neighbouring values are gathered as one integer of twice the width, from a
    per-mask table of the label pairs that occur: half the gathers. For 64 images of 3 x 64 x 64 on a CPU: 0.27
    instead of 0.6 ms, ~2 % instead of ~6 % of a small CNN's forward passes.
    """

    def __init__(
        self, x: torch.Tensor, segments: torch.Tensor, fill: torch.Tensor, layout: torch.memory_format
    ) -> None:
        self.layout = layout
        self.x = x.contiguous(memory_format=layout)
        self.fill = fill.contiguous(memory_format=layout)  # once, not per batch
        self.segments = segments
        self.integer = _SAME_WIDTH_INTEGERS.get(x.dtype)
        if self.integer is None:
            return
        self.x_bits = self._flat(self.x).view(self.integer)  # (1, C * H * W)
        self.fill_bits = self._flat(self.fill).view(self.integer)  # (S, C * H * W)
        self.difference = self.x_bits ^ self.fill_bits[:1]  # with the first fill: the same for every mask
        # Each value's superpixel, in memory order (C * H * W,).
        labels = self._flat(segments.expand_as(x))[0]
        count = int(labels.max()) + 1
        wider = _DOUBLE_WIDTH.get(self.integer) if labels.numel() % 2 == 0 else None
        if wider is None:  # one value per gather, straight from the masks
            self.gathered = self.integer
            self.table_labels = torch.arange(count, device=labels.device)[:, None]  # (K, 1)
            self.table_index = labels
        else:
            self.gathered = wider
            pairs = labels.view(-1, 2)
            codes, self.table_index = torch.unique(pairs[:, 0] * count + pairs[:, 1], return_inverse=True)
            self.table_labels = torch.stack([codes // count, codes % count], dim=1)  # (Q, 2)

    def __call__(self, masks: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(n, C, H, W)`` for masks ``(n, K)``; ``which`` ``(n,)`` picks each one's fill image (default:
        the first)."""
        if self.integer is None:
            fill = self.fill[:1] if which is None else self.fill[which]
            return torch.where(masks[:, self.segments].unsqueeze(1), self.x, fill)
        n = masks.shape[0]
        # Per mask, each occurring label pair's two values' bits side by side: one integer of twice the width.
        table = masks.to(self.integer).neg_()[:, self.table_labels].view(self.gathered).view(n, -1)
        on = torch.gather(table, 1, self.table_index.expand(n, -1)).view(self.integer)  # (n, C * H * W)
        if which is None:
            on.bitwise_and_(self.difference).bitwise_xor_(self.fill_bits[:1])
        else:
            fill_bits = self.fill_bits[which]
            on.bitwise_and_(self.x_bits ^ fill_bits).bitwise_xor_(fill_bits)
        _, c, h, w = self.x.shape
        if self.layout == torch.channels_last:
            return on.view(self.x.dtype).view(n, h, w, c).permute(0, 3, 1, 2)
        return on.view(self.x.dtype).view(n, c, h, w)

    def _flat(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` as ``(N, C * H * W)`` in this layout's memory order (a view when they are in it)."""
        if self.layout == torch.channels_last:
            images = images.permute(0, 2, 3, 1)
        return images.reshape(images.shape[0], -1)


# Integer types of each float type's width: a float's bits, selected with bitwise operations.
_SAME_WIDTH_INTEGERS = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}
# Integers twice as wide: two neighbouring values gathered as one.
_DOUBLE_WIDTH = {torch.int16: torch.int32, torch.int32: torch.int64}


def masked_rows(masks: torch.Tensor, x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Rows ``(n, F)``: ``x`` where ``masks`` ``(n, F)`` is on, ``fill`` (``(1, F)`` or ``(n, F)``) elsewhere."""
    return torch.where(masks, x, fill)


def lime_masks(n: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, M)`` bool masks, each feature on with probability 1/2, the first all on (as lime does)."""
    masks = torch.rand(n, n_features, generator=gen, device=gen.device) < 0.5
    masks[0] = True
    return masks


# ----------------------------------------------------------------------------------------------------------------
# Feature space


@dataclass(eq=False)
class FeatureSpace:
    """The features of one input and how to switch them off.

    x: the input ``(1, C, H, W)`` or ``(1, F)``; segments: ``(H, W)`` superpixel labels (images) or None;
    n_features: ``M`` (superpixels or columns); fill: ``(S, ...)`` reference inputs, one of which supplies the
    values of the features that are off (``S = 1`` for a baseline, ``S = B`` for a background set);
    fill_weights: ``(S,)`` how much each reference counts (summing to 1), or None for equal weights.
    """

    x: torch.Tensor
    segments: torch.Tensor | None
    n_features: int
    fill: torch.Tensor
    fill_weights: torch.Tensor | None = None
    tokens: TokenFeatures | None = None
    _maskers: dict[torch.memory_format, ImageMasker] = field(default_factory=dict, repr=False)

    @classmethod
    def sequence(cls, features: TokenFeatures) -> FeatureSpace:
        """The tokens (or words) of a sequence as features; one fill, the sequence with every feature removed."""
        everything_off = torch.zeros(1, features.n_features, dtype=torch.bool, device=features.x.device)
        return cls(
            x=features.x,
            segments=None,
            n_features=features.n_features,
            fill=features.inputs(everything_off),
            tokens=features,
        )

    @property
    def labels(self) -> torch.Tensor | None:
        """Which feature each pixel ``(H, W)`` or token ``(T,)`` belongs to (-1: none), for ``Explanation.segments``."""
        return self.tokens.groups if self.tokens is not None else self.segments

    @classmethod
    def columns(
        cls, x: torch.Tensor, fill: torch.Tensor, fill_weights: torch.Tensor | None = None
    ) -> FeatureSpace:
        """The columns of a tabular row ``x`` ``(1, F)`` as features, switched off to rows of ``fill`` ``(S, F)``."""
        return cls(x=x, segments=None, n_features=x.shape[1], fill=fill, fill_weights=fill_weights)

    def inputs(
        self,
        masks: torch.Tensor,
        which: torch.Tensor | None = None,
        layout: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        """Inputs ``(n, ...)`` for masks ``(n, M)``; ``which`` ``(n,)`` picks each one's fill (default: the first).

        Images come in memory ``layout``; rows ignore it.
        """
        if self.tokens is not None:
            return self.tokens.inputs(masks)
        if self.segments is None:
            return masked_rows(masks, self.x, self.fill[:1] if which is None else self.fill[which])
        masker = self._maskers.get(layout)
        if masker is None:
            masker = self._maskers[layout] = ImageMasker(self.x, self.segments, self.fill, layout)
        return masker(masks, which)

    def paint(self, values: torch.Tensor) -> torch.Tensor:
        """Per-feature values ``(M,)`` as attributions: painted on the superpixels ``(H, W)`` or the tokens
        ``(T,)``, or ``(F,)`` as is."""
        if self.tokens is not None:
            return self.tokens.paint(values)
        return values if self.segments is None else values[self.segments]


def sequence_space(
    call: PreparedCall, background: object, groups: object, removal: object, mask_token_id: object
) -> FeatureSpace:
    """The features of a sequence input: tokens or ``groups`` of them, removed by ``removal``."""
    if background is not None:
        raise ValueError(
            "background= does not apply to token inputs: removed tokens are replaced by mask_token_id "
            "(removal='replace') or deleted (removal='delete')"
        )
    assert call.tokens is not None
    return FeatureSpace.sequence(token_features(call.tokens, groups, removal, mask_token_id))


def describe(baseline: object) -> object:
    """A short, JSON-friendly record of a baseline for ``Explanation.params``."""
    if isinstance(baseline, torch.Tensor):
        return f"tensor{tuple(baseline.shape)}"
    if isinstance(baseline, (int, float, np.integer, np.floating)):
        return float(baseline)
    return baseline


def check_n_samples(n_samples: object, n_features: int) -> int:
    """``n_samples`` as an int no smaller than the number of features (fewer cannot determine the weights)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an integer, got {n_samples!r}")
    if n_samples < n_features:
        raise ValueError(
            f"n_samples={int(n_samples)} is less than the {n_features} features being explained; "
            f"expected at least {n_features} (several times more for stable weights), or fewer n_segments"
        )
    return int(n_samples)
