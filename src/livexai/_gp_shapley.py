"""KernelSHAP as Bayesian inference: a Gaussian-process prior on the game, coalitions chosen greedily to pin the
Shapley values down, and the posterior mean (issue 20: fewer evaluations for the same accuracy).

With complementary pairs only the odd part of the game matters: ``g(u) = v(S) - v(N \\ S)`` with ``u = 2 z - 1``
in ``{-1, 1}^M``. ``g`` is a sum of odd parities ``u_T = prod_{i in T} u_i``, and the Shapley value of ``u_T``
gives ``1/|T|`` of its coefficient to each player of ``T``, so ``phi_i = sum_{T containing i} a_T / |T|``. The
prior makes the coefficients independent, ``a_T ~ N(0, s^2 c_|T|)``: main effects 1, third order ``1e-3``, fifth
``3e-5``, then ``x 0.15`` per two orders, a game that is mostly additive with interactions fading with their order
(any game is covered: with every coalition the posterior mean is the exact Shapley values). Covariances then
depend on the coalitions only through counts, so all of them come from two small tables:

- ``cov(g(u), g(u')) = s^2 sum_k c_k e_k(u * u')``, ``e_k`` the elementary symmetric polynomial: a function of the
  number ``d`` of players where ``u`` and ``u'`` differ (:attr:`OddPrior.by_distance`);
- ``cov(g(u), phi_i) = s^2 u_i sum_k (c_k / k) e_{k-1}(u without i)``: a function of the number of -1 among the
  other players (:attr:`OddPrior.phi_by_negatives`).

The design is chosen before any evaluation, one pair at a time: the candidate whose observation most reduces the
total posterior variance of the Shapley values, given the full coalition and the pairs before it (candidates:
every pair of the small sizes and 400 random pairs of each other size). Each choice is the first of the designs
for all larger budgets, so a run stopped early has the design of its own size. The scale ``s^2`` is the maximum-
likelihood one, which sets the standard errors (the mean does not depend on it).

Measured on ``benchmarks.accuracy``'s game and three others (``benchmarks/RESULTS.md``): 0.4-0.5x the error of
``shap.KernelExplainer`` at 64-256 coalitions and 0.2-0.3x at 1024, where the stratified regression gives
0.5-0.75x and 0.35-0.5x. The design costs ``O(n^2 P)`` for ``n`` pairs and ``P`` candidates (about 0.15 s at
14 features and 1000 coalitions, 0.4 s at the default 2076), so it is used up to :data:`MAX_FEATURES` features
and remembered per budget and seed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._design import ShapleyDesign, pairs_of_size, remembered_design, sample_pairs
from ._surrogate import ShapleyFit, solve_dtype

# Above this many features the greedy design's candidates (and its cost) grow too fast for a live call.
MAX_FEATURES = 16
# Random candidate pairs per coalition size (sizes with fewer pairs offer all of them).
_CANDIDATES_PER_SIZE = 400
# Prior variance of one coefficient of each odd order: 1, then third, fifth = third x FIFTH, then x DECAY per step.
_THIRD, _FIFTH, _DECAY = 1e-3, 0.03, 0.15
# The fit leaves the main effects free (a flat prior: an additive game is recovered exactly); the design, chosen
# before any value is known, stands in a prior this much wider than the third order's for them.
_DESIGN_MAIN = 1e4
# Jitter on the Gram matrix's diagonal, relative to its mean: the observations are exact, the solve must not fail.
_NUGGET = 1e-9


def signed_elementary(n: int, dtype: torch.dtype) -> torch.Tensor:
    """``E[k, q]``: the elementary symmetric polynomial ``e_k`` of ``n`` signs of which ``q`` are -1, the
    coefficient of ``t^k`` in ``(1 + t)^(n - q) (1 - t)^q``."""
    table = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for q in range(n + 1):
        for k in range(n + 1):
            table[k, q] = sum(
                math.comb(n - q, k - j) * math.comb(q, j) * (-1) ** j
                for j in range(max(0, k - n + q), min(k, q) + 1)
            )
    return table.to(dtype)


@dataclass(frozen=True, eq=False)
class OddPrior:
    """The prior of :mod:`livexai._gp_shapley` for ``m`` players, as the two covariance tables (unit scale)."""

    m: int
    by_distance: torch.Tensor  # (m + 1,): cov(g(u), g(u')) by the number of players where u and u' differ
    phi_by_negatives: torch.Tensor  # (m,): cov(g(u), phi_i) / u_i by the number of -1 among the others
    phi_variance: float  # var(phi_i)

    @classmethod
    @functools.lru_cache(maxsize=64)
    def of(cls, m: int, device: torch.device, main: float) -> OddPrior:
        """The prior with variance ``main`` on the main effects (0: the interactions alone)."""
        dtype = solve_dtype(device)
        variances = _order_variances(m, main)
        e_all, e_others = signed_elementary(m, torch.float64), signed_elementary(m - 1, torch.float64)
        by_distance = sum(c * e_all[k] for k, c in variances.items())
        phi_by_negatives = sum((c / k) * e_others[k - 1] for k, c in variances.items())
        phi_variance = sum(c * math.comb(m - 1, k - 1) / k**2 for k, c in variances.items())
        return cls(m, by_distance.to(device, dtype), phi_by_negatives.to(device, dtype), phi_variance)

    def kernel(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``cov(g(u_a), g(v_b))`` ``(A, B)`` for sign vectors ``u`` ``(A, m)`` and ``v`` ``(B, m)``."""
        differ = ((self.m - u @ v.T) / 2).round().long()
        return self.by_distance[differ]

    def phi_covariance(self, u: torch.Tensor) -> torch.Tensor:
        """``cov(g(u_a), phi_i)`` ``(A, m)``."""
        negative = (u < 0).long()
        return u * self.phi_by_negatives[negative.sum(1, keepdim=True) - negative]


def _order_variances(m: int, main: float) -> dict[int, float]:
    variances = {1: main}
    for k in range(3, m + 1, 2):
        variances[k] = _THIRD if k == 3 else variances[k - 2] * (_FIFTH if k == 5 else _DECAY)
    return variances


def greedy_design(
    m: int, n_coalitions: int, gen: torch.Generator, check_cancel: Callable[[], None] | None = None
) -> ShapleyDesign:
    """Plan ``n_coalitions`` coalitions (rounded down to pairs) of ``m`` players, chosen greedily (see the module's
    docstring), in the order chosen; strata and kernel weights as :func:`~livexai._design.shapley_design` has them."""
    device = gen.device
    prior = OddPrior.of(m, device, _DESIGN_MAIN)
    pairs = n_coalitions // 2
    candidates = _candidates(m, gen)
    if pairs >= candidates.shape[0]:
        raise ValueError(
            f"the greedy design needs fewer pairs ({pairs}) than its candidates ({candidates.shape[0]})"
        )
    u = candidates.to(prior.by_distance.dtype) * 2 - 1
    # The full coalition is observed first: cov(candidates, phi | it) and var(candidates | it).
    full = torch.ones(1, m, dtype=u.dtype, device=device)
    prior_variance = float(prior.by_distance[0])
    rows = torch.zeros(pairs + 1, u.shape[0], dtype=u.dtype, device=device)  # L^-1 K(chosen, candidates)
    rows[0] = prior.kernel(full, u)[0] / math.sqrt(prior_variance)
    covariance = prior.phi_covariance(u) - torch.outer(rows[0], prior.phi_covariance(full)[0]) / math.sqrt(
        prior_variance
    )
    variance = prior_variance - rows[0] ** 2
    floor = 1e-12 * prior_variance
    taken = torch.zeros(u.shape[0], dtype=torch.bool, device=device)
    chosen = torch.zeros(pairs, dtype=torch.long, device=device)
    for step in range(1, pairs + 1):
        if check_cancel is not None and step % _CHECK_EVERY == 0:
            check_cancel()
        gain = (covariance**2).sum(1) / variance.clamp_min(floor)
        best = int(gain.masked_fill(taken, -1.0).argmax())
        taken[best] = True
        chosen[step - 1] = best
        scale = math.sqrt(max(float(variance[best]), floor))
        rows[step] = (prior.kernel(u[best : best + 1], u)[0] - rows[:step, best] @ rows[:step]) / scale
        covariance -= torch.outer(rows[step], covariance[best] / scale)
        variance -= rows[step] ** 2
    units = candidates[chosen]
    sizes = units.sum(1)
    return ShapleyDesign.of(units, torch.minimum(sizes, m - sizes) - 1)


# Steps of the greedy choice between two cancellation checks.
_CHECK_EVERY = 16


def cached_greedy_design(
    m: int, n_coalitions: int, seed: int, device: torch.device, check_cancel: Callable[[], None] | None = None
) -> ShapleyDesign:
    """:func:`greedy_design` seeded with ``seed``, chosen once (see :func:`~livexai._design.remembered_design`).

    ``check_cancel`` is called every few steps of the choice (up to 0.5 s at 16 features): a widget whose slider
    moved on abandons it, and an abandoned design is not kept.
    """
    return remembered_design(
        "greedy", m, n_coalitions, seed, device, lambda gen: greedy_design(m, n_coalitions, gen, check_cancel)
    )


def n_candidates(m: int) -> int:
    """How many candidate pairs :func:`greedy_design` chooses from for ``m`` players."""
    return sum(min(pairs_of_size(m, s), _CANDIDATES_PER_SIZE) for s in range(1, m // 2 + 1))


def _candidates(m: int, gen: torch.Generator) -> torch.Tensor:
    """One side of every candidate pair ``(P, m)`` bool: all pairs of a size with few, else a random sample."""
    pool = []
    for s in range(1, m // 2 + 1):
        total = pairs_of_size(m, s)
        pool.append(sample_pairs(m, s, total, min(total, _CANDIDATES_PER_SIZE), gen))
    return torch.cat(pool)


def gp_shapley(units: torch.Tensor, diffs: torch.Tensor, delta: float) -> ShapleyFit:
    """Posterior mean and standard deviation of the Shapley values given ``g`` at the pairs ``units`` ``(n, m)``
    (one side each) equal to ``diffs`` ``(n,)`` and ``g(1) = delta`` (the full coalition).

    Universal kriging: the main effects ``w`` by generalised least squares with the interactions' covariance
    ``K``, the interactions' share of each Shapley value by their posterior mean given the residual. Standard
    errors add the uncertainty of ``w``, with the scale fitted to the residual; they are infinite while fewer
    pairs than features leave the main effects undetermined.
    """
    m, device = units.shape[1], units.device
    prior = OddPrior.of(m, device, 0.0)
    dtype = prior.by_distance.dtype
    u = torch.cat([torch.ones(1, m, dtype=dtype, device=device), units.to(dtype) * 2 - 1])
    d = torch.cat([torch.tensor([delta], dtype=dtype, device=device), diffs.to(dtype)])
    gram = prior.kernel(u, u)
    gram.diagonal().add_(_NUGGET * float(gram.diagonal().mean()))
    factor = torch.linalg.cholesky(gram)
    solved_u = torch.cholesky_solve(u, factor)  # K^-1 U
    solved_d = torch.cholesky_solve(d[:, None], factor)[:, 0]  # K^-1 d
    information = u.T @ solved_u  # U^T K^-1 U
    main = torch.linalg.pinv(information, hermitian=True) @ (u.T @ solved_d)
    residual = solved_d - solved_u @ main  # K^-1 (d - U w)
    cross = prior.phi_covariance(u)  # cov(interactions at u, their share of phi)
    values = main + cross.T @ residual
    values += (delta - values.sum()) / m  # efficiency to rounding (the nugget leaves ~1e-9 of it)
    if int(torch.linalg.matrix_rank(information, hermitian=True)) < m:
        return ShapleyFit(values=values, stderr=torch.full_like(values, math.inf), ridge=None)
    explained = torch.linalg.solve_triangular(factor, cross, upper=False)
    leftover = torch.eye(m, dtype=dtype, device=device) - u.T @ torch.cholesky_solve(cross, factor)
    unit_variance = (
        prior.phi_variance
        - (explained**2).sum(0)
        + (leftover * torch.linalg.solve(information, leftover)).sum(0)
    )
    scale = float((d - u @ main) @ residual) / max(d.numel() - m, 1)  # restricted maximum likelihood
    stderr = (unit_variance.clamp_min(0) * max(scale, 0.0)).sqrt()
    return ShapleyFit(values=values, stderr=stderr, ridge=None)
