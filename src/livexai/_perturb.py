"""Perturbations for LIME and KernelSHAP: features, baselines, masks, coalition designs, chunked evaluation.

A *feature* is a superpixel of an image or a column of a tabular row. A mask ``(n, M)`` says which of the ``M``
features keep the input's value (True) and which take a *fill* value (False): a baseline image (blurred, mean,
zero, ...) or a reference row/image from a background set. Masks are sampled on the input's device with a seeded
``torch.Generator`` and expanded to inputs batch by batch inside :meth:`ModelAdapter.evaluate`, so memory stays
bounded and there is no Python loop per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._adapter import ModelAdapter
from ._inputs import check_int
from ._surrogate import solve_dtype

BASELINES: tuple[str, ...] = ("blur", "mean", "zero", "segment_mean")

# Above this many subsets a size's subsets are drawn by random ranks (then de-duplicated) instead of a permutation.
_PERMUTE_LIMIT = 1 << 22
# Combination counts from here on do not fit the int64 ranks: subsets are drawn directly (duplicates negligible).
_RANK_LIMIT = 1 << 62


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

    Separable: two depthwise ``conv2d`` passes with a kernel of ``2 * ceil(3 sigma) + 1`` taps.
    """
    radius = max(1, math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    padded = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="replicate")
    blurred = torch.nn.functional.conv2d(padded, rows, groups=channels)
    return torch.nn.functional.conv2d(blurred, cols, groups=channels)


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


def masked_images(
    masks: torch.Tensor,
    segments: torch.Tensor,
    x: torch.Tensor,
    fill: torch.Tensor,
    layout: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Images ``(n, C, H, W)``: ``x`` where the superpixel is on in ``masks`` ``(n, K)``, ``fill`` elsewhere.

    ``fill`` is ``(1, C, H, W)`` (a baseline) or ``(n, C, H, W)`` (one background image per mask). The masks are
    expanded to pixels with one gather on the ``(H, W)`` label map. The images are built directly in ``layout``
    (the one the model adapter runs them in): converting them afterwards cost as much as building them.
    """
    pixels = masks[:, segments].unsqueeze(1)  # (n, 1, H, W)
    return torch.where(pixels, x.contiguous(memory_format=layout), fill.contiguous(memory_format=layout))


def masked_rows(masks: torch.Tensor, x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Rows ``(n, F)``: ``x`` where ``masks`` ``(n, F)`` is on, ``fill`` (``(1, F)`` or ``(n, F)``) elsewhere."""
    return torch.where(masks, x, fill)


def lime_masks(n: int, n_features: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, M)`` bool masks, each feature on with probability 1/2, the first all on (as lime does)."""
    masks = torch.rand(n, n_features, generator=gen, device=gen.device) < 0.5
    masks[0] = True
    return masks


# ----------------------------------------------------------------------------------------------------------------
# Coalition design for KernelSHAP


@dataclass
class ShapleyDesign:
    """Which coalitions KernelSHAP evaluates, as complementary pairs grouped in strata by coalition size.

    Stratum ``g`` holds the pairs ``{S, N \\ S}`` with ``|S| = s_g`` or ``M - s_g`` (``s_g <= M/2``); it has
    ``population[g]`` pairs in all, of which ``n_planned[g]`` are evaluated (all of them when enumerated).

    units: ``(P, M)`` bool, one coalition of each planned pair, in evaluation order (nested: see
    :func:`shapley_design`; strata interleaved at random within each level, so any prefix is a stratified
    sample); strata: ``(P,)`` long; sizes: ``(G,)`` the size ``s_g``;
    population, n_planned: ``(G,)`` float64 (float32 on MPS); kernel: ``(G,)`` Shapley-kernel weight of one coalition of
    size ``s_g`` (up to a common factor).
    """

    units: torch.Tensor
    strata: torch.Tensor
    sizes: torch.Tensor
    population: torch.Tensor
    n_planned: torch.Tensor
    kernel: torch.Tensor

    @property
    def exact(self) -> bool:
        """Every coalition is evaluated: the regression gives the exact Shapley values."""
        return bool((self.n_planned == self.population).all())

    @property
    def n_enumerated(self) -> int:
        """Strata (coalition sizes and their complements) evaluated in full."""
        return int((self.n_planned == self.population).sum())


def shapley_design(n_features: int, n_coalitions: int, gen: torch.Generator) -> ShapleyDesign:
    """Plan ``n_coalitions`` coalitions (rounded down to pairs) of ``n_features`` players.

    Allocation as in shap's KernelExplainer: pairs go to sizes in proportion to their Shapley-kernel mass
    ``(M-1)/(s(M-s))``; from the smallest sizes up, a size (with its complement) is enumerated when its share of
    the remaining budget covers all its subsets. Unlike shap, every other size then gets a fixed number of pairs
    (largest remainders), drawn without replacement: a stratified, paired (antithetic) sample.

    The evaluation order is nested, so that a run stopped early has the design of a smaller budget rather than a
    prefix of this one: the pairs that the plan for half the budget, a quarter, ... would choose come first
    (each level in random order). A plain random order spread the small sizes, worth enumerating at any
    budget, over the whole run; stopped at an eighth, it had 40 % more error than a fixed budget of that size.
    """
    m = n_features
    device = gen.device
    sizes = list(range(1, m // 2 + 1))
    population = [math.comb(m, s) // (2 if 2 * s == m else 1) for s in sizes]
    mass = [(1.0 if 2 * s == m else 2.0) * (m - 1) / (s * (m - s)) for s in sizes]
    planned = _plan(n_coalitions // 2, population, mass)
    by_stratum = []
    for s, total, n in zip(sizes, population, planned, strict=True):
        pairs = (
            _sample_pairs(m, s, total, n, gen) if n else torch.zeros(0, m, dtype=torch.bool, device=device)
        )
        by_stratum.append(pairs[torch.randperm(n, generator=gen, device=device)])
    units, strata = [], []
    taken = [0] * len(sizes)
    for budget in _nested_budgets(sum(planned), m):
        wanted = [
            min(max(a, b), n) for a, b, n in zip(taken, _plan(budget, population, mass), planned, strict=True)
        ]
        level = [(g, taken[g], wanted[g]) for g in range(len(sizes)) if wanted[g] > taken[g]]
        if not level:
            continue
        level_units = torch.cat([by_stratum[g][a:b] for g, a, b in level])
        level_strata = torch.cat(
            [torch.full((b - a,), g, dtype=torch.long, device=device) for g, a, b in level]
        )
        order = torch.randperm(level_units.shape[0], generator=gen, device=device)
        units.append(level_units[order])
        strata.append(level_strata[order])
        taken = wanted
    dtype = solve_dtype(device)
    size_tensor = torch.tensor(sizes, dtype=dtype, device=device)
    kernel = (m - 1) / (
        torch.tensor([math.comb(m, s) for s in sizes], dtype=dtype, device=device)
        * size_tensor
        * (m - size_tensor)
    )
    return ShapleyDesign(
        units=torch.cat(units) if units else torch.zeros(0, m, dtype=torch.bool, device=device),
        strata=torch.cat(strata) if strata else torch.zeros(0, dtype=torch.long, device=device),
        sizes=size_tensor,
        population=torch.tensor(population, dtype=dtype, device=device),
        n_planned=torch.tensor(planned, dtype=dtype, device=device),
        kernel=kernel,
    )


def _plan(pairs: int, population: list[int], mass: list[float]) -> list[int]:
    """Pairs per size for a budget of ``pairs``: the smallest sizes enumerated while their share covers them,
    the rest shared in proportion to ``mass``."""
    planned = [0] * len(population)
    first = 0
    while first < len(population):
        share = pairs * mass[first] / sum(mass[first:])
        if share < population[first]:
            break
        planned[first] = population[first]
        pairs -= population[first]
        first += 1
    _allocate(planned, first, pairs, mass, population)
    return planned


def _nested_budgets(pairs: int, m: int) -> list[int]:
    """The budgets whose designs come first, smallest first: ``pairs`` halved while at least ``m`` pairs remain."""
    budgets = [pairs]
    while budgets[-1] // 2 >= max(m, 1):
        budgets.append(budgets[-1] // 2)
    return budgets[::-1]


def _allocate(planned: list[int], first: int, pairs: int, mass: list[float], population: list[int]) -> None:
    """Share ``pairs`` among strata ``first..`` in proportion to ``mass`` (largest remainders, capped)."""
    open_ = [g for g in range(first, len(planned))]
    while pairs > 0 and open_:
        total = sum(mass[g] for g in open_)
        quotas = {g: pairs * mass[g] / total for g in open_}
        counts = {g: min(int(quotas[g]), population[g] - planned[g]) for g in open_}
        spare = pairs - sum(counts.values())
        for g in sorted(open_, key=lambda g: quotas[g] - int(quotas[g]), reverse=True):
            if spare > 0 and counts[g] < population[g] - planned[g]:
                counts[g] += 1
                spare -= 1
        for g in open_:
            planned[g] += counts[g]
        pairs = spare
        open_ = [g for g in open_ if planned[g] < population[g]]


def _sample_pairs(m: int, s: int, total: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` distinct pairs ``{S, N \\ S}`` with ``|S| = s``, as the ``(n, m)`` bool mask of one side.

    For ``s = m/2`` a pair is named by its side that holds feature 0 (so pairs are not drawn twice).
    """
    device = gen.device
    middle = 2 * s == m
    players, chosen = (m - 1, s - 1) if middle else (m, s)
    if total >= _RANK_LIMIT:
        keys = torch.rand(n, players, generator=gen, device=device)
        picks = keys.argsort(dim=1)[:, :chosen]
        side = torch.zeros(n, players, dtype=torch.bool, device=device)
        side.scatter_(1, picks, True)
    else:
        side = _unrank(_distinct_ranks(total, n, gen), players, chosen)
    if middle:
        side = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=device), side], dim=1)
    return side


def _distinct_ranks(total: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` distinct integers from ``[0, total)``, uniformly at random, on the generator's device."""
    device = gen.device
    if n == total:
        return torch.arange(total, device=device)
    if total <= _PERMUTE_LIMIT and (total <= 1 << 16 or 16 * n > total):
        return torch.randperm(total, generator=gen, device=device)[:n]
    ranks = torch.zeros(0, dtype=torch.long, device=device)
    while ranks.numel() < n:
        draw = torch.randint(total, (n + n // 8 + 16,), generator=gen, device=device)
        ranks = _first_occurrences(torch.cat([ranks, draw]))
    return ranks[:n]


def _first_occurrences(values: torch.Tensor) -> torch.Tensor:
    """``values`` without repeats, in the order each first appears."""
    unique, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(values.numel(), device=values.device)
    first = torch.full((unique.numel(),), values.numel(), dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return values[first.sort().values]


def _unrank(ranks: torch.Tensor, m: int, s: int) -> torch.Tensor:
    """Subsets of size ``s`` of ``m`` players with the given ranks in the combinatorial number system: ``(n, m)``.

    Rank ``r = C(c_s, s) + ... + C(c_1, 1)`` with ``m > c_s > ... > c_1 >= 0``; each ``c_k`` is found for all ranks
    at once by a search in the column ``C(., k)`` of Pascal's triangle.
    """
    device = ranks.device
    n = ranks.numel()
    out = torch.zeros(n, m, dtype=torch.bool, device=device)
    rows = torch.arange(n, device=device)
    rest = ranks.clone()
    for k in range(s, 0, -1):
        column = torch.tensor(
            [min(math.comb(c, k), _RANK_LIMIT) for c in range(m)], dtype=torch.long, device=device
        )
        c = torch.searchsorted(column, rest, right=True) - 1
        out[rows, c] = True
        rest = rest - column[c]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Chunked evaluation


def evaluate_chunks(
    adapter: ModelAdapter,
    n_items: int,
    make_batch: Callable[[int, int], torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    chunk_size: int,
    evals_per_item: int = 1,
    first: int = 0,
    align: int = 1,
    check_cancel: Callable[[], None] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Evaluate ``n_items * evals_per_item`` inputs chunk by chunk; yield ``(item_start, item_stop, scores)``.

    ``make_batch(start, stop)`` builds inputs ``start..stop`` of the flat sequence (item ``i`` owns inputs
    ``i * evals_per_item ...``). Chunks end on item boundaries ``first + align * j`` (e.g. after whole pairs).
    A chunk holds about ``chunk_size`` items; once the adapter's batch size is seen, chunks are rounded up to whole
    batches so streaming costs no extra model calls, and while a chunk fits in one call the next one doubles.
    """
    chunk_size = check_int("chunk_size", chunk_size, 1)
    done = 0
    want = chunk_size
    while done < n_items:
        stop = _boundary(done + want, first, align, n_items)
        requested: list[int] = []
        offset = done * evals_per_item

        def build(
            start: int, end: int, offset: int = offset, requested: list[int] = requested
        ) -> torch.Tensor:
            requested.append(end - start)
            return make_batch(offset + start, offset + end)

        calls_before = adapter.n_calls
        scores = adapter.evaluate(
            (stop - done) * evals_per_item, build, input_shape=input_shape, check_cancel=check_cancel
        )
        calls = adapter.n_calls - calls_before
        if calls > 1:
            batch = max(requested)
            evals = -(-chunk_size * evals_per_item // batch) * batch
            want = max(1, -(-evals // evals_per_item))
        elif calls == 1:
            want = 2 * (stop - done)
        yield done, stop, scores
        done = stop


def _boundary(target: int, first: int, align: int, n_items: int) -> int:
    """The smallest valid chunk end ``>= target`` (``first + align * j``), capped at ``n_items``."""
    if target <= first:
        return min(first, n_items) if first > 0 else min(align, n_items)
    return min(n_items, first + -(-(target - first) // align) * align)


# ----------------------------------------------------------------------------------------------------------------
# Feature space


@dataclass
class FeatureSpace:
    """The features of one input and how to switch them off.

    x: the input ``(1, C, H, W)`` or ``(1, F)``; segments: ``(H, W)`` superpixel labels (images) or None;
    n_features: ``M`` (superpixels or columns); fill: ``(S, ...)`` reference inputs, one of which supplies the
    values of the features that are off (``S = 1`` for a baseline, ``S = B`` for a background set).
    """

    x: torch.Tensor
    segments: torch.Tensor | None
    n_features: int
    fill: torch.Tensor

    def inputs(
        self,
        masks: torch.Tensor,
        which: torch.Tensor | None = None,
        layout: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        """Inputs ``(n, ...)`` for masks ``(n, M)``; ``which`` ``(n,)`` picks each one's fill (default: the first).

        Images come in memory ``layout``; rows ignore it.
        """
        fill = self.fill[:1] if which is None else self.fill[which]
        if self.segments is None:
            return masked_rows(masks, self.x, fill)
        return masked_images(masks, self.segments, self.x, fill, layout)

    def paint(self, values: torch.Tensor) -> torch.Tensor:
        """Per-feature values ``(M,)`` as attributions: painted on the superpixels ``(H, W)``, or ``(F,)`` as is."""
        return values if self.segments is None else values[self.segments]


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
