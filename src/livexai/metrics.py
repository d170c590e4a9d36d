"""Ways to compare explanations with each other, with ground truth, and with the model itself.

With each other: :func:`rank_correlation`, :func:`segment_means`, :func:`agreement`. With ground-truth masks:
:func:`mass_inside`, :func:`pointing_game`, :func:`energy_pointing_game`. With the model (faithfulness):
:func:`deletion` and :func:`insertion` curves. The model-randomisation check is in :mod:`livexai.sanity`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ._adapter import Model, OutputSpace
from ._call import prepare
from ._inputs import check_float, check_int
from ._substrate import Substrate, check_substrate
from .explanation import Explanation

MapLike = Explanation | torch.Tensor | np.ndarray


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), as Spearman's correlation needs."""
    flat = values.flatten().double()
    order = torch.argsort(flat, stable=True)
    sorted_values = flat[order]
    positions = torch.arange(flat.numel(), dtype=torch.float64, device=flat.device)
    # Each run of equal values gets the mean position of the run.
    new_run = torch.ones_like(sorted_values, dtype=torch.bool)
    new_run[1:] = sorted_values[1:] != sorted_values[:-1]
    run_id = torch.cumsum(new_run.long(), 0) - 1
    run_sum = torch.zeros(int(run_id[-1]) + 1, dtype=torch.float64, device=flat.device).index_add_(
        0, run_id, positions
    )
    run_len = torch.bincount(run_id).double()
    ranks = torch.empty_like(flat)
    ranks[order] = (run_sum / run_len)[run_id]
    return ranks


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two attribution maps of the same shape (1: same ordering of pixels).

    Returns 0.0 when either map is constant (no ordering to compare).
    """
    if a.shape != b.shape:
        raise ValueError(
            f"maps must have the same shape to be compared, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    ra, rb = _ranks(a), _ranks(b.to(a.device))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 0.0


def segment_means(attributions: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """The mean attribution over each superpixel: ``(K,)`` for a map ``(H, W)`` and labels ``(H, W)`` in ``0..K-1``.

    Puts maps of different resolutions on the same footing: a per-pixel map (GradientSHAP, saliency) ranked
    pixel by pixel against a map that is constant on superpixels (LIME, KernelSHAP) mostly compares noise with
    ties, while both averaged over the same superpixels compare what each says about each region.
    """
    if attributions.shape != segments.shape:
        raise ValueError(
            f"attributions {tuple(attributions.shape)} and segments {tuple(segments.shape)} differ in shape"
        )
    labels = segments.reshape(-1).to(attributions.device, torch.long)
    count = int(labels.max()) + 1
    values = attributions.reshape(-1).double()
    sums = torch.zeros(count, dtype=torch.float64, device=values.device).index_add_(0, labels, values)
    sizes = torch.bincount(labels, minlength=count).clamp(min=1).double()
    return (sums / sizes).to(attributions.dtype)


def mass_inside(attributions: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of the positive attribution that falls inside ``mask`` (``(H, W)`` bool), in [0, 1].

    A map spread evenly scores the mask's share of the image; a map entirely on the object scores 1. A map with no
    positive attribution scores 0.
    """
    if attributions.shape != mask.shape:
        raise ValueError(
            f"attributions {tuple(attributions.shape)} and mask {tuple(mask.shape)} differ in shape"
        )
    positive = attributions.clamp(min=0)
    total = float(positive.sum())
    return float((positive * mask.to(positive.device, positive.dtype)).sum()) / total if total > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Maps and masks


def as_map(value: object, name: str = "explanation") -> torch.Tensor:
    """The ``(H, W)`` float map of an image :class:`Explanation`, or a map given as a tensor or array."""
    if isinstance(value, Explanation):
        if not value.is_image:
            raise ValueError(f"{name} explains a tabular row ({value.method}); expected an image explanation")
        return value.attributions
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be an Explanation or an (H, W) map tensor, got {type(value).__name__}")
    if value.ndim != 2 or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a real (H, W) map, got shape {tuple(value.shape)} and {value.dtype}"
        )
    value = value.detach().float()
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values; expected a finite map")
    return value


def as_mask(mask: object, shape: torch.Size) -> torch.Tensor:
    """A ground-truth mask as an ``(H, W)`` bool tensor like the map's, neither empty nor the whole image.

    Both extremes make pointing meaningless: an empty mask can never be hit (one widely used implementation
    counts it as a hit), and a full one always is.
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be an (H, W) bool tensor or array, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask must be boolean (or hold only 0 and 1), got values of dtype {mask.dtype}")
        mask = mask != 0
    if mask.shape != shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but the map is {tuple(shape)}; they must match")
    if not bool(mask.any()):
        raise ValueError("mask is empty: nothing to point at (an empty mask is not a hit)")
    if bool(mask.all()):
        raise ValueError(
            "mask covers the whole image: every map would hit it; expected the object's pixels only"
        )
    return mask


def _dilate(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """``mask`` grown by every pixel within Euclidean distance ``radius`` of it."""
    reach = math.floor(radius)
    if reach < 1:
        return mask
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32, device=mask.device)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()
    grown = F.conv2d(mask.float()[None, None], disk[None, None], padding=reach)
    return grown[0, 0] > 0


def pointing_game(map_or_explanation: MapLike, mask: Any, *, tolerance: float = 0) -> bool:
    """Whether the map points at the object: its maximum lies in ``mask`` or within ``tolerance`` pixels of it.

    ``mask`` is ``(H, W)`` bool, the object's pixels (neither empty nor the whole image: ValueError). Zhang et
    al.'s pointing game uses a tolerance of 15 pixels at 224x224. Where the maximum is reached by several pixels
    (a plateau, a superpixel map's top superpixel, a constant map), every one of them must lie within the
    tolerance: a map that points everywhere points nowhere.
    """
    values = as_map(map_or_explanation, "map_or_explanation")
    target = as_mask(mask, values.shape).to(values.device)
    tolerance = check_float("tolerance", tolerance, 0.0)
    peaks = values == values.max()
    return bool(_dilate(target, tolerance)[peaks].all())


def energy_pointing_game(map_or_explanation: MapLike, mask: Any) -> float:
    """Share of the map's positive mass inside ``mask`` ``(H, W)`` bool, in [0, 1] (Score-CAM's energy-based
    pointing game); 0 for a map with no positive value. The mask must be neither empty nor the whole image."""
    values = as_map(map_or_explanation, "map_or_explanation")
    return mass_inside(values, as_mask(mask, values.shape))


def agreement(
    explanations: Sequence[MapLike | None],
    *,
    on: Literal["superpixels", "pixels"] = "superpixels",
    segments: Any = None,
) -> torch.Tensor:
    """Spearman rank correlations ``(M, M)`` (CPU float32) between the maps of ``M`` explanations of one image.

    ``on="superpixels"`` (default) first averages every map over the same superpixels (:func:`segment_means`):
    ``segments`` ``(H, W)`` if given, else those of the first explanation that has some (LIME, KernelSHAP), so
    per-pixel and per-superpixel maps are compared on what each says about each region rather than on noise and
    ties. ``on="pixels"`` compares them pixel by pixel. A constant map scores 0 (no order); a None entry (a method
    that failed) gives a NaN row and column.
    """
    if on not in ("superpixels", "pixels"):
        raise ValueError(f"on must be 'superpixels' or 'pixels', got {on!r}")
    maps = [None if item is None else as_map(item, "each explanation") for item in explanations]
    if on == "superpixels":
        labels = _common_segments(explanations, segments)
        maps = [None if item is None else segment_means(item, labels) for item in maps]
    count = len(maps)
    matrix = torch.full((count, count), float("nan"), dtype=torch.float32)
    for i, first in enumerate(maps):
        for j in range(i, count):  # a handful of maps: a loop over pairs, not over pixels
            second = maps[j]
            if first is not None and second is not None:
                matrix[i, j] = matrix[j, i] = rank_correlation(first, second)
    return matrix


def _common_segments(explanations: Sequence[MapLike | None], segments: Any) -> torch.Tensor:
    """The superpixels to compare maps on: ``segments``, else the first explanation's that has some."""
    if segments is None:
        found = (e.segments for e in explanations if isinstance(e, Explanation) and e.segments is not None)
        segments = next(found, None)
    if segments is None:
        raise ValueError(
            "on='superpixels' needs superpixels: pass segments=(H, W) labels, include a lime or kernel_shap "
            "explanation, or use on='pixels'"
        )
    if isinstance(segments, np.ndarray):
        segments = torch.from_numpy(np.ascontiguousarray(segments))
    if not isinstance(segments, torch.Tensor) or segments.is_floating_point() or segments.dtype == torch.bool:
        raise TypeError(f"segments must be an (H, W) tensor of integer labels, got {segments!r:.80}")
    return torch.unique(segments, return_inverse=True)[1]


# ----------------------------------------------------------------------------------------------------------------
# Deletion and insertion curves


@dataclass(eq=False)
class Curve:
    """A deletion or insertion curve (Petsiuk et al., RISE, 2018).

    fractions: ``(n_steps + 1,)`` CPU float64 from 0 to 1, the share of pixels (or superpixels) removed
    (deletion) or revealed (insertion) at each step. scores: ``(n_steps + 1,)`` CPU float64, the target's score
    at each step, in the output space asked for. auc: area under the curve (trapezoid rule over [0, 1]); low is
    good for deletion, high for insertion. n_evals: model evaluations made; elapsed_s: wall time. kind:
    ``"deletion"`` or ``"insertion"``; target: the class scored.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: float
    n_evals: int
    elapsed_s: float
    kind: str = "deletion"
    target: int = 0


def deletion(
    model: Model,
    x: torch.Tensor,
    explanation: MapLike,
    *,
    target: int | None = None,
    n_steps: int = 50,
    substrate: object = "blur",
    output: OutputSpace = "probs",
    check_cancel: Callable[[], None] | None = None,
) -> Curve:
    """The deletion curve: the target's score as the most important pixels are removed first.

    Pixels are ordered by the map (highest first; ties in raster order), or whole superpixels by their weights
    for a superpixel explanation (one with ``segments`` and ``weights``: LIME, KernelSHAP), and replaced by the
    ``substrate`` in ``n_steps`` equal steps. A faithful map makes the score fall fast: a low ``auc``.

    Parameters
    ----------
    model: an ``nn.Module`` or callable mapping ``(N, C, H, W)`` to scores, or a :class:`ModelAdapter`.
    x: the model-ready image ``(C, H, W)`` or ``(1, C, H, W)``.
    explanation: an :class:`Explanation` of ``x``, or a map ``(H, W)``.
    target: the class to score; None: the explanation's target, else the top class.
    n_steps: steps from nothing removed to everything removed (``n_steps + 1`` points).
    substrate: what removed pixels show: ``"blur"`` (Petsiuk et al.'s choice for deletion), ``"zero"``,
        ``"mean"``, a number, a tensor broadcastable to ``x``, or ``"road"``, ROAD's noisy linear imputation
        (Rong et al., 2022), which fills removed regions by interpolation from their borders so that the curve
        does not reward the model for noticing *where* pixels were removed (several times slower on a CPU).
    output: score ``"probs"`` (default, as in the paper) or ``"logits"``.
    check_cancel: called between model batches; may raise :class:`livexai.Cancelled` (the widgets' runner).
    """
    return _curve("deletion", model, x, explanation, target, n_steps, substrate, output, check_cancel)


def insertion(
    model: Model,
    x: torch.Tensor,
    explanation: MapLike,
    *,
    target: int | None = None,
    n_steps: int = 50,
    substrate: object = "blur",
    output: OutputSpace = "probs",
    check_cancel: Callable[[], None] | None = None,
) -> Curve:
    """The insertion curve: the target's score as the most important pixels of ``x`` are revealed first, over
    the ``substrate`` (blurred image by default, as Petsiuk et al.). A faithful map makes the score rise fast: a
    high ``auc``. Arguments as for :func:`deletion`."""
    return _curve("insertion", model, x, explanation, target, n_steps, substrate, output, check_cancel)


def _curve(
    kind: str,
    model: Model,
    x: torch.Tensor,
    explanation: MapLike,
    target: int | None,
    n_steps: int,
    substrate: object,
    output: OutputSpace,
    check_cancel: Callable[[], None] | None,
) -> Curve:
    """Both curves: order the pixels, build every step's image, score them all in one batched evaluation.

    The unperturbed image (deletion's first point, insertion's last) is scored by :func:`prepare`'s f(x), and
    steps that show the same image (more steps than superpixels) are evaluated once.
    """
    started = time.perf_counter()
    n_steps = check_int("n_steps", n_steps, 1)
    check_substrate(substrate)
    if target is None and isinstance(explanation, Explanation):
        target = explanation.target
    call = prepare(model, x, target=target, output=output, expect="image")
    rank, n_units = _ranking(explanation, call.x)
    counts = [(2 * step * n_units + n_steps) // (2 * n_steps) for step in range(n_steps + 1)]
    whole = 0 if kind == "deletion" else n_units  # the count at which the image is x itself
    todo = sorted(set(counts) - {whole})
    fill = Substrate(call.x, substrate)

    def make_batch(start: int, stop: int) -> torch.Tensor:
        chosen = todo[start:stop]
        first = rank < torch.tensor(chosen, device=rank.device)[:, None, None, None]  # the top `count` units
        return fill.apply(~first if kind == "insertion" else first, chosen)

    scores = call.adapter.evaluate(
        len(todo), make_batch, input_shape=tuple(call.x.shape[1:]), check_cancel=check_cancel
    )[:, call.target]
    by_count = dict(zip(todo, scores.double().cpu().tolist(), strict=True))
    by_count[whole] = call.prediction
    fractions = torch.tensor(counts, dtype=torch.float64) / n_units
    curve = torch.tensor([by_count[count] for count in counts], dtype=torch.float64)
    return Curve(
        fractions=fractions,
        scores=curve,
        auc=float(torch.trapezoid(curve, fractions)),
        n_evals=call.adapter.n_evals - call.evals_before,
        elapsed_s=time.perf_counter() - started,
        kind=kind,
        target=call.target,
    )


def _ranking(explanation: MapLike, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Each pixel's place ``(1, 1, H, W)`` (long, on ``x``'s device) in the removal order, and the number of units.

    A unit is a pixel, or a superpixel for an explanation with ``segments`` and ``weights``: all its pixels share
    the superpixel's place. Most important (highest value) first; ties keep raster (or label) order.
    """
    height, width = x.shape[-2:]
    values = as_map(explanation)
    if values.shape != (height, width):
        raise ValueError(
            f"the explanation's map is {tuple(values.shape)} but x is {height}x{width}; expected a map of the "
            f"input's size ({height}, {width})"
        )
    if (
        isinstance(explanation, Explanation)
        and explanation.segments is not None
        and explanation.weights is not None
    ):
        weights, labels = explanation.weights.to(x.device), explanation.segments.to(x.device)
    else:
        weights, labels = values.to(x.device).flatten(), torch.arange(height * width, device=x.device)
    order = torch.argsort(weights, descending=True, stable=True)
    place = torch.empty_like(order)
    place[order] = torch.arange(order.numel(), device=x.device)
    return place[labels].reshape(1, 1, height, width), order.numel()
