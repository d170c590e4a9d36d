"""KernelSHAP's coalition design: which complementary pairs of coalitions to evaluate, and in what order.

:func:`shapley_design` plans a stratified, nested sample of pairs ``{S, N \\ S}``; :class:`PairLayout` lays the
plan out as the flat sequence of model evaluations that the progressive engine walks through.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._progressive import FlatSequence
from ._surrogate import solve_dtype

# Above this many subsets a size's subsets are drawn by random ranks (then de-duplicated) instead of a permutation.
_PERMUTE_LIMIT = 1 << 22
# Combination counts from here on do not fit the int64 ranks: subsets are drawn directly (duplicates negligible).
_RANK_LIMIT = 1 << 62


@dataclass(eq=False)
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

    @classmethod
    def of(cls, units: torch.Tensor, strata: torch.Tensor, planned: list[int] | None = None) -> ShapleyDesign:
        """The design of ``units`` ``(P, M)`` in strata ``strata`` ``(P,)``, with each stratum's population and
        kernel weight; ``planned`` pairs per stratum (default: those in ``units``)."""
        m, device = units.shape[1], units.device
        dtype = solve_dtype(device)
        sizes = torch.arange(1, m // 2 + 1, dtype=dtype, device=device)
        population = [pairs_of_size(m, s) for s in range(1, m // 2 + 1)]
        counts = torch.bincount(strata, minlength=sizes.numel()) if planned is None else planned
        return cls(
            units=units,
            strata=strata,
            sizes=sizes,
            population=torch.tensor(population, dtype=dtype, device=device),
            n_planned=torch.as_tensor(counts, device=device).to(dtype),
            kernel=(m - 1)
            / (
                torch.tensor([math.comb(m, s) for s in range(1, m // 2 + 1)], dtype=dtype, device=device)
                * sizes
                * (m - sizes)
            ),
        )

    def complete(self, done: int) -> bool:
        """The first ``done`` pairs hold every coalition: a regression on them gives the exact Shapley values."""
        counts = torch.bincount(self.strata[:done], minlength=self.population.numel())
        return bool((counts.to(self.population.dtype) == self.population).all())

    @property
    def n_enumerated(self) -> int:
        """Strata (coalition sizes and their complements) evaluated in full."""
        return int((self.n_planned == self.population).sum())


def pairs_of_size(m: int, s: int) -> int:
    """How many complementary pairs ``{S, N \\ S}`` of ``m`` players have ``|S| = s`` (``s <= m/2``): ``C(m, s)``,
    halved for ``s = m/2``, where each pair holds two coalitions of that size."""
    return math.comb(m, s) // (2 if 2 * s == m else 1)


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
    population = [pairs_of_size(m, s) for s in sizes]
    mass = [(1.0 if 2 * s == m else 2.0) * (m - 1) / (s * (m - s)) for s in sizes]
    planned = _plan(n_coalitions // 2, population, mass)
    by_stratum = []
    for s, total, n in zip(sizes, population, planned, strict=True):
        pairs = sample_pairs(m, s, total, n, gen) if n else torch.zeros(0, m, dtype=torch.bool, device=device)
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
    return ShapleyDesign.of(
        torch.cat(units) if units else torch.zeros(0, m, dtype=torch.bool, device=device),
        torch.cat(strata) if strata else torch.zeros(0, dtype=torch.long, device=device),
        planned,
    )


# Designs already planned, by (kind, players, coalitions, seed, device), most recently used last.
_DESIGNS: OrderedDict[tuple[str, int, int, int, torch.device], ShapleyDesign] = OrderedDict()
_DESIGNS_KEPT = 32
_DESIGNS_GUARD = threading.Lock()


def remembered_design(
    kind: str,
    n_features: int,
    n_coalitions: int,
    seed: int,
    device: torch.device,
    plan: Callable[[torch.Generator], ShapleyDesign],
) -> ShapleyDesign:
    """The design ``plan`` makes from a generator seeded with ``seed`` on ``device``, planned once per ``kind``
    and arguments: a design depends on neither the model nor the input, so repeated calls and a widget
    recomputing with the same budget reuse it. Read-only. A plan that raises (a cancelled one) is not kept."""
    key = (kind, n_features, n_coalitions, seed, device)
    with _DESIGNS_GUARD:
        if key in _DESIGNS:
            _DESIGNS.move_to_end(key)
            return _DESIGNS[key]
    design = plan(torch.Generator(device=device).manual_seed(seed))
    with _DESIGNS_GUARD:
        _DESIGNS[key] = design
        while len(_DESIGNS) > _DESIGNS_KEPT:
            _DESIGNS.popitem(last=False)
    return design


def cached_shapley_design(
    n_features: int, n_coalitions: int, seed: int, device: torch.device
) -> ShapleyDesign:
    """:func:`shapley_design` seeded with ``seed``, planned once (see :func:`remembered_design`): drawing it took
    5 ms of a 190-ms KernelSHAP call on a small CNN (42 superpixels)."""
    return remembered_design(
        "stratified",
        n_features,
        n_coalitions,
        seed,
        device,
        lambda gen: shapley_design(n_features, n_coalitions, gen),
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


def sample_pairs(m: int, s: int, total: int, n: int, gen: torch.Generator) -> torch.Tensor:
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
        column = _pascal_column(m, k, str(device))
        c = torch.searchsorted(column, rest, right=True) - 1
        out[rows, c] = True
        rest = rest - column[c]
    return out


@functools.lru_cache(maxsize=256)
def _pascal_column(m: int, k: int, device: str) -> torch.Tensor:
    """``C(c, k)`` for ``c = 0 .. m-1``, capped at the rank limit: a column of Pascal's triangle, built once per
    number of players, size and device (rebuilding them took 39 000 ``math.comb`` calls per KernelSHAP call)."""
    return torch.tensor(
        [min(math.comb(c, k), _RANK_LIMIT) for c in range(m)], dtype=torch.long, device=device
    )


@dataclass(frozen=True, eq=False)
class PairLayout:
    """The flat sequence of evaluations that KernelSHAP walks through for a design's ``units`` ``(P, M)``.

    Item 0 is the empty coalition; item ``2 p + 1`` is the planned coalition ``units[p]`` and item ``2 p + 2``
    its complement, so chunks ending after whole pairs (``first=1, align=2``) can be refitted. Each item is
    evaluated once per fill row (``n_fill`` evaluations, averaged into the item's value ``v(S)``, with the fill
    rows' ``fill_weights`` when they have some).
    """

    units: torch.Tensor
    n_fill: int
    fill_weights: torch.Tensor | None = None

    @property
    def sequence(self) -> FlatSequence:
        """The items, their evaluations and where chunks may end (after the empty coalition, then whole pairs)."""
        return FlatSequence(
            1 + 2 * self.units.shape[0],
            evals_per_item=self.n_fill,
            first=1,
            align=2,
            weights=self.fill_weights,
        )

    @functools.cached_property
    def item_masks(self) -> torch.Tensor:
        """Every item's coalition ``(1 + 2 P, M)`` bool: the empty one, then each planned one and its complement.

        Built once (a 1000-coalition run over 50 superpixels holds 50 kB): working the rows of each batch out
        from ``units`` took 1.5 ms of a small CNN's KernelSHAP call."""
        empty = torch.zeros(1, self.units.shape[1], dtype=torch.bool, device=self.units.device)
        pairs = torch.stack([self.units, ~self.units], dim=1).flatten(0, 1)
        return torch.cat([empty, pairs])

    def masks(self, start: int, stop: int) -> torch.Tensor:
        """Coalitions ``(stop - start, M)`` bool of evaluations ``start..stop`` of the flat sequence."""
        if self.n_fill == 1:
            return self.item_masks[start:stop]
        return self.item_masks[torch.arange(start, stop, device=self.units.device) // self.n_fill]

    def fill_rows(self, start: int, stop: int) -> torch.Tensor | None:
        """Which fill row each evaluation ``start..stop`` takes (None with a single fill: no gather needed)."""
        if self.n_fill == 1:
            return None
        return torch.arange(start, stop, device=self.units.device) % self.n_fill

    def differences(self, values: torch.Tensor, done: int) -> torch.Tensor:
        """``v(S) - v(N \\ S)`` ``(done,)`` of the first ``done`` pairs, from the item values ``(1 + 2 P,)``."""
        return values[1 : 2 * done : 2] - values[2 : 2 * done + 1 : 2]
