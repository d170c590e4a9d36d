"""Surrogate fits in torch: LIME's weighted ridge and KernelSHAP's constrained (polynomial) regression.

Both are solved in float64 on the input's device (float32 on Apple's MPS, which has no float64) from all the
samples seen so far, and both report per-feature standard errors from a *sandwich* (linearisation) variance: how
much the coefficients would move if the random masks were drawn again, treating the model's answers as fixed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

# Ridge penalties tried for KernelSHAP's third-order terms, relative to the (unit) diagonal of the weighted Gram
# matrix; the one with the smallest leave-one-out error is kept.
RIDGE_GRID: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
# Largest number of features for which KernelSHAP adds third-order terms by default (M + C(M, 3) = 576 unknowns).
MAX_INTERACTION_FEATURES = 16
_JITTER = 1e-9


def solve_dtype(device: torch.device) -> torch.dtype:
    """float64 for the small linear systems, except on MPS (no float64 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _inverse(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of a small square matrix, falling back to the pseudo-inverse when it is singular."""
    inverse, info = torch.linalg.inv_ex(matrix)
    if int(info) != 0 or not bool(torch.isfinite(inverse).all()):
        return torch.linalg.pinv(matrix, hermitian=True)
    return inverse


# ----------------------------------------------------------------------------------------------------------------
# LIME


def lime_kernel(masks: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """LIME's sample weights ``(n,)`` for masks ``(n, M)``: ``sqrt(exp(-d^2 / width^2))``.

    ``d`` is the cosine distance between a mask and the all-on mask, ``1 - sqrt(k / M)`` for ``k`` features on
    (1 for the empty mask, as scikit-learn's ``pairwise_distances`` gives).
    """
    on = masks.sum(dim=1, dtype=torch.float64 if masks.device.type != "mps" else torch.float32)
    distance = 1.0 - torch.sqrt(on / masks.shape[1])
    return torch.sqrt(torch.exp(-(distance**2) / kernel_width**2))


@dataclass
class RidgeFit:
    """A weighted ridge fit ``y ~ intercept + X @ values``: the coefficients ``values`` ``(M,)``, their standard
    errors ``(M,)``, the intercept and the weighted R² (scikit-learn's ``score`` with ``sample_weight``)."""

    values: torch.Tensor
    stderr: torch.Tensor
    intercept: float
    score: float


def weighted_ridge(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float = 1.0) -> RidgeFit:
    """Ridge regression with sample weights and an unpenalised intercept, as ``sklearn.linear_model.Ridge``.

    Minimises ``sum_i w_i (y_i - b - x_i . beta)^2 + alpha |beta|^2`` by centring on the weighted means.
    ``stderr`` is the heteroscedasticity-robust sandwich ``H^-1 V H^-1`` with ``H = X_c' W X_c + alpha I`` and
    ``V`` the (n/(n-1)-scaled) covariance of the per-sample terms ``w_i x_i r_i``.
    """
    dtype = solve_dtype(x.device)
    x, y, weights = x.to(dtype), y.to(dtype), weights.to(dtype)
    n, m = x.shape
    total = weights.sum()
    x_mean = weights @ x / total
    y_mean = weights @ y / total
    xc, yc = x - x_mean, y - y_mean
    weighted = xc * weights[:, None]
    gram = weighted.T @ xc + alpha * torch.eye(m, dtype=dtype, device=x.device)
    inverse = _inverse(gram)
    coef = inverse @ (weighted.T @ yc)
    residual = yc - xc @ coef
    total_ss = weights @ yc**2
    score = 1.0 - float(weights @ residual**2) / float(total_ss) if float(total_ss) > 0 else float("nan")
    terms = weighted * residual[:, None]
    projected = (terms - terms.mean(0)) @ inverse  # inverse is symmetric
    scale = n / (n - 1) if n > 1 else float("inf")  # one sample says nothing about the spread
    stderr = torch.sqrt(scale * (projected**2).sum(0))
    return RidgeFit(values=coef, stderr=stderr, intercept=float(y_mean - x_mean @ coef), score=score)


# ----------------------------------------------------------------------------------------------------------------
# KernelSHAP


@dataclass
class ShapleyFit:
    """Estimated Shapley values ``(M,)``, their standard errors ``(M,)``, and the ridge penalty used on the
    third-order terms (None for the plain linear regression)."""

    values: torch.Tensor
    stderr: torch.Tensor
    ridge: float | None


def _triples(m: int, device: torch.device) -> torch.Tensor:
    """All ``C(m, 3)`` triples of features, ``(C(m, 3), 3)`` long."""
    triples = list(itertools.combinations(range(m), 3))
    return torch.tensor(triples, dtype=torch.long, device=device).reshape(-1, 3)


def shapley_regression(
    units: torch.Tensor,
    diffs: torch.Tensor,
    strata: torch.Tensor,
    population: torch.Tensor,
    kernel: torch.Tensor,
    delta: float,
    *,
    interactions: bool = False,
    ridge: float | None = None,
) -> ShapleyFit:
    """Shapley values from evaluated pairs ``{S, N \\ S}`` by the Shapley-kernel regression, efficiency exact.

    Parameters
    ----------
    units: ``(n, M)`` bool, one side ``S`` of each pair; diffs: ``(n,)`` ``v(S) - v(N \\ S)``; strata: ``(n,)``
        stratum of each pair; population: ``(G,)`` pairs per stratum; kernel: ``(G,)`` Shapley-kernel weight of one
        coalition of the stratum; delta: ``v(N) - v(empty)``.
    interactions: also fit all third-order terms (``M + C(M, 3)`` unknowns) with a ridge penalty ``ridge`` on them
        (None: chosen from :data:`RIDGE_GRID` by weighted leave-one-out error).

    With pairs, KernelSHAP's least squares reduces to regressing the odd part of the game,
    ``D(S) = v(S) - v(N \\ S)``, on ``u = 2 z - 1``; the even part only fixes the intercept. The linear fit is exact
    for games with interactions of order <= 2 (Mayer & Wüthrich); adding the odd third-order parities
    ``u_i u_j u_k`` (the next terms of the odd part; each gives 1/3 of its coefficient to each of its three
    players, as in PolySHAP) makes it exact, up to the ridge shrinkage, for interactions of order <= 4; on random
    MLPs with 12-16 features it cut the error 2-3x at equal budget, and it stays consistent (with every coalition
    it returns the exact values whatever the penalty). The leave-one-out error (with each pair's weight) picks the
    penalty. Strata are weighted ``kernel * population / evaluated`` (a stratified estimate of the full
    kernel-weighted sum); efficiency ``sum(phi) = delta`` is a constraint of the solve, so it holds to rounding at
    every budget. Standard errors: stratified sandwich variance with the finite-population correction
    ``1 - n_g / N_g`` (0 for enumerated sizes, so exact results report 0).
    """
    dtype = solve_dtype(units.device)
    m = units.shape[1]
    counts = torch.bincount(strata, minlength=population.numel()).to(dtype)
    unit_kernel = kernel.to(dtype)[strata]
    omega = unit_kernel * (population.to(dtype) / counts.clamp_min(1.0))[strata]
    total = omega.sum()
    triples = _triples(m, units.device) if interactions else None
    system = _KernelSystem.build(
        _parities(units.to(dtype), triples), omega / total, diffs.to(dtype), delta, m
    )
    chosen, inverse, theta = _penalised_solve(system, triples is not None, ridge)
    # Leave-one-out residuals (HC3-style) rather than raw ones: with hundreds of third-order terms the fit
    # follows its own samples closely and raw residuals would understate the spread.
    residual = (system.diffs - system.features @ theta) / (1.0 - system.leverage(inverse)).clamp_min(1e-3)
    terms = (unit_kernel / total)[:, None] * system.features * residual[:, None]
    projected = terms @ _to_values(inverse, m, triples).T  # (n, M): each pair's influence on the values
    stderr = _stratified_stderr(projected, strata, counts, population.to(dtype))
    return ShapleyFit(values=_to_values(theta, m, triples), stderr=stderr, ridge=chosen)


def _parities(ones: torch.Tensor, triples: torch.Tensor | None) -> torch.Tensor:
    """The regressors of pairs whose sides are ``ones`` ``(n, M)`` (0/1): ``u = 2 z - 1`` and, with ``triples``,
    the third-order parities ``u_i u_j u_k`` after them."""
    signs = ones * 2.0 - 1.0
    return signs if triples is None else torch.cat([signs, signs[:, triples].prod(dim=2)], dim=1)


def _to_values(theta: torch.Tensor, m: int, triples: torch.Tensor | None) -> torch.Tensor:
    """Map coefficients ``(P, ...)`` to Shapley values ``(M, ...)``: each third-order term gives a third to each
    of its players."""
    if triples is None:
        return theta
    values = theta[:m].clone()
    share = theta[m:] / 3.0
    for column in range(3):
        values.index_add_(0, triples[:, column], share)
    return values


@dataclass(frozen=True, eq=False)
class _KernelSystem:
    """The weighted least squares of KernelSHAP's odd part: regressors ``features`` ``(n, P)`` (the first ``m``
    linear), pair weights ``omega`` ``(n,)`` summing to 1, targets ``diffs`` ``(n,)``, the efficiency total
    ``delta``, and the normal equations ``gram`` ``(P, P)``, ``moment`` ``(P,)``."""

    features: torch.Tensor
    omega: torch.Tensor
    diffs: torch.Tensor
    delta: float
    m: int
    gram: torch.Tensor
    moment: torch.Tensor

    @classmethod
    def build(
        cls, features: torch.Tensor, omega: torch.Tensor, diffs: torch.Tensor, delta: float, m: int
    ) -> _KernelSystem:
        weighted = features * omega[:, None]
        return cls(features, omega, diffs, delta, m, gram=weighted.T @ features, moment=weighted.T @ diffs)

    def solve(self, penalty: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The constrained solve ``sum(theta) = delta`` with ridge ``penalty`` on the non-linear terms (None:
        none): the inverse of the penalised Gram block ``(P, P)`` and the coefficients ``(P,)``."""
        size = self.features.shape[1]
        dtype, device = self.gram.dtype, self.gram.device
        system = torch.zeros(size + 1, size + 1, dtype=dtype, device=device)
        system[:size, :size] = self.gram
        # A tiny ridge on every coefficient keeps the system invertible while too few pairs have been evaluated to
        # determine the values (the solution then tends to the minimum-norm one); negligible otherwise.
        system[:size, :size] += _JITTER * torch.eye(size, dtype=dtype, device=device)
        if penalty is not None:
            system[self.m : size, self.m : size] += penalty * torch.eye(
                size - self.m, dtype=dtype, device=device
            )
        system[:size, size] = 1.0  # every feature is 1 at the full coalition: sum(theta) = D(N) = delta
        system[size, :size] = 1.0
        inverse = _inverse(system)
        theta = inverse[:size, :size] @ self.moment + inverse[:size, size] * self.delta
        return inverse[:size, :size], theta

    def leverage(self, inverse: torch.Tensor) -> torch.Tensor:
        """Each pair's weighted leverage ``(n,)`` in a solve with Gram inverse ``inverse``."""
        return self.omega * ((self.features @ inverse) * self.features).sum(1)

    def loo_error(self, inverse: torch.Tensor, theta: torch.Tensor) -> float:
        """Weighted leave-one-out squared error of a solve."""
        residual = self.diffs - self.features @ theta
        return float((self.omega * (residual / (1.0 - self.leverage(inverse)).clamp_min(1e-6)) ** 2).sum())


def _penalised_solve(
    system: _KernelSystem, interactions: bool, ridge: float | None
) -> tuple[float | None, torch.Tensor, torch.Tensor]:
    """The penalty used and the solve: plain without interactions; else with ``ridge``, or (None) with the
    penalty of :data:`RIDGE_GRID` of least leave-one-out error (no penalty if every error is NaN)."""
    if not interactions:
        return None, *system.solve(None)
    if ridge is not None:
        return float(ridge), *system.solve(float(ridge))
    best, chosen, solution = math.inf, None, None
    for penalty in RIDGE_GRID:
        inverse, theta = system.solve(penalty)
        loo = system.loo_error(inverse, theta)
        if loo < best:
            best, chosen, solution = loo, penalty, (inverse, theta)
    if solution is None:
        return None, *system.solve(0.0)
    return chosen, *solution


def _stratified_stderr(
    influence: torch.Tensor, strata: torch.Tensor, counts: torch.Tensor, population: torch.Tensor
) -> torch.Tensor:
    """Standard errors ``(M,)`` of a sum of per-stratum means of ``influence`` ``(n, M)`` scaled to the stratum
    populations, for samples drawn without replacement: ``sum_g N_g^2 (1 - n_g/N_g) s_g^2 / n_g``.

    Strata with fewer than 2 samples add nothing (their spread is unknown); complete ones add 0.
    """
    n_strata, m = population.numel(), influence.shape[1]
    means = torch.zeros(n_strata, m, dtype=influence.dtype, device=influence.device).index_add_(
        0, strata, influence
    )
    means = means / counts.clamp_min(1.0)[:, None]
    squares = torch.zeros_like(means).index_add_(0, strata, (influence - means[strata]) ** 2)
    scale = (
        population**2 * (1.0 - counts / population).clamp_min(0.0) / (counts * (counts - 1.0)).clamp_min(1.0)
    )
    scale = torch.where(counts >= 2, scale, torch.zeros_like(scale))
    return torch.sqrt(scale @ squares)
