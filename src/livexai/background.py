"""Background summaries: a few weighted rows that stand for a whole table (shap's ``kmeans``).

KernelSHAP evaluates every coalition once per background row, so its cost grows with the background; k-means
centres, each weighted by the share of rows in its cluster, keep the expectation ``E[f]`` close to the full
table's at a fraction of the rows, and closer than a random sample of the same size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ._inputs import check_int
from .importance import as_table

__all__ = ["WeightedRows", "kmeans"]

_MAX_ITERATIONS = 100


class WeightedRows(NamedTuple):
    """Reference rows ``(K, F)`` and their weights ``(K,)`` (summing to 1): a summarised background."""

    rows: torch.Tensor
    weights: torch.Tensor


def _plus_plus_start(table: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to its squared distance."""
    first = int(torch.randint(table.shape[0], (1,), generator=generator))
    centres = [table[first]]
    nearest = ((table - centres[0]) ** 2).sum(dim=1)
    for _ in range(1, k):
        probabilities = nearest / nearest.sum() if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        pick = int(torch.multinomial(probabilities.cpu().double(), 1, generator=generator))
        centres.append(table[pick])
        nearest = torch.minimum(nearest, ((table - table[pick]) ** 2).sum(dim=1))
    return torch.stack(centres)


def _nearest_observed(centres: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Each centre's value in each column replaced by the closest value that column takes in ``table``
    (so a 0/1 or categorical column keeps valid values, as shap's ``kmeans(round_values=True)``)."""
    columns = []
    for j in range(table.shape[1]):
        observed = table[:, j]
        columns.append(observed[(observed[None, :] - centres[:, j : j + 1]).abs().argmin(dim=1)])
    return torch.stack(columns, dim=1)


def kmeans(X: Any, k: int, *, seed: int = 0, round_values: bool = True) -> WeightedRows:
    """Summarise the rows of ``X`` ``(N, F)`` by ``k`` k-means centres weighted by their clusters' sizes.

    Seeded k-means++ and Lloyd iterations, in float64 on ``X``'s device; with ``round_values`` each centre's
    values are moved to the nearest values observed in their column. Pass the result as a KernelSHAP
    ``background`` for rows.
    """
    table = as_table(X).double()
    k = check_int("k", k, 1)
    if k > table.shape[0]:
        raise ValueError(
            f"k={k} is more than the {table.shape[0]} rows of X; expected at most one centre per row"
        )
    generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
    centres = _plus_plus_start(table, k, generator)
    assignment = torch.full((table.shape[0],), -1, dtype=torch.long, device=table.device)
    for _ in range(_MAX_ITERATIONS):
        updated = torch.cdist(table, centres).argmin(dim=1)
        if torch.equal(updated, assignment):
            break
        assignment = updated
        sizes = torch.bincount(assignment, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assignment, table)
        centres = torch.where(sizes[:, None] > 0, sums / sizes.clamp_min(1)[:, None], centres)
    sizes = torch.bincount(assignment, minlength=k).double()
    if round_values:
        centres = _nearest_observed(centres, table)
    kept = sizes > 0
    dtype = X.dtype if isinstance(X, torch.Tensor) and X.is_floating_point() else torch.float32
    return WeightedRows(centres[kept].to(dtype), (sizes[kept] / sizes.sum()).to(dtype))
