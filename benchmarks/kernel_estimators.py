"""KernelSHAP estimators from the literature on the accuracy benchmark's game, at equal budget (issue 20).

    python -m benchmarks.kernel_estimators            # 4 inputs x 16 seeds, budgets 64..2048 (a few minutes)
    python -m benchmarks.kernel_estimators --quick    # 2 inputs x 2 seeds, 3 budgets
    python -m benchmarks.kernel_estimators --budgets 64 128 256 512 1024

The game is :mod:`benchmarks.accuracy`'s (a random 14-feature MLP, 5 background rows). All ``2^14`` coalition
values are tabulated once per input, so every estimator reads the same ``v(S)`` and only the choice of coalitions
and the fit differ. Each cell is an estimator's mean absolute error divided by ``shap.KernelExplainer``'s
(``l1_reg=False``) on the same inputs and seeds. The estimators:

- *livexai*: the library's design (shap's allocation of pairs to sizes, stratified without replacement) and its
  fit (constrained regression with ridge-penalised third-order terms); it reproduces ``kernel_shap`` to 1e-7.
- *Leverage SHAP* (Musco & Witter, ICLR 2025): the same pairs allotted equally to every size (leverage scores),
  each stratum weighted by kernel / inclusion probability; fitted with livexai's regression. The stratified
  fixed-count form of their Bernoulli sampling.
- *PySHAP\\** (Olsen & Jullum 2024): paired draws with replacement from the Shapley-kernel size distribution until
  the budget's distinct pairs are found, each weighted by kernel / P(drawn at least once); livexai's regression.
- *RAMC* (regression-adjusted Monte Carlo, Witter, Liu & Musco 2025) with a cubic surrogate: fitted on one half
  of the pairs, the unbiased (exact-Gram) KernelSHAP estimate of its residual taken on the other half, and the
  halves swapped. Without the split it is livexai's estimator itself: the linear coefficients of the regression
  already satisfy their normal equations, so the residual's regression estimate is zero.
- *balanced design*: livexai's fit on pairs drawn so that, within each size, every pair of features is in (or
  out of) the coalitions together about as often as over all coalitions of that size (greedy: the best of 64
  random candidates each time). With exact second moments the linear fit would be exact for odd parts up to
  third order.
- *all odd orders*: livexai's design with a Gaussian-process (kernel-ridge) fit over every odd parity
  ``u_T``: the linear terms free, order-``k`` terms with prior variance ``rho^((k-3)/2) C(M,3)/C(M,k)``, noise
  ``lam / weight``, ``(rho, lam)`` by leave-one-out error on a 3 x 3 grid; the Shapley values of the fit in
  closed form (a parity ``u_T`` gives ``1/|T|`` of its coefficient to each player in ``T``).
- *Stratified SVARM* (Kolpaczki, Bengs, Muschalik & Huellermeier, AAAI 2024): ``phi_i`` as the mean over sizes
  ``l`` of ``phi_{i,l}^+ - phi_{i,l}^-`` (the mean of ``v(S + i)``, resp. ``v(S)``, over ``S`` of size ``l``
  without ``i``); sizes 0, 1, M-1 and M evaluated in full (2M coalitions of the budget), the rest by coalitions
  drawn uniformly within a size, without replacement, each evaluation updating one stratum of every player. Sizes
  get the paper's share (about ``1/min(s, M-s)``, ``1/(M log M)`` for the middle) or, paired, shap's kernel
  allocation (each draw with its complement). No regression: Monte-Carlo means of ``v`` itself.
- *livexai, estimator="gp"*: the library's Gaussian-process estimator (:mod:`livexai._gp_shapley`): coalitions
  chosen before any is evaluated, pair by pair, to shrink the posterior variance of the Shapley values under a
  prior on the odd part ``v(S) - v(N \\ S)`` (main effects free, third order ``1e-3``, fifth ``3e-5``, then
  ``x 0.15`` per order), then universal kriging. The design depends only on ``M``, the budget and the seed (the
  library caches it); the time below includes it.

``--other-games`` checks the two library estimators on games the Gaussian-process prior was not set on, and
``--images`` on image games (the shipped shapes CNN, 14-16 superpixels, exact values by enumeration).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from livexai._gp_shapley import signed_elementary

from ._common import markdown_table
from .accuracy import N_FEATURES as M
from .accuracy import Problem, make_problem, shap_kernel

FULL = 2**M - 1
_BITS = 2 ** torch.arange(M)

# An estimator: (coalition values (2^M,) float64 of one input, budget, seed) -> Shapley values (M,) float64.
Estimator = Callable[[torch.Tensor, int, int], torch.Tensor]


def value_table(problem: Problem, i: int) -> torch.Tensor:
    """``v`` of every coalition of input ``i`` ``(2^M,)`` float64, indexed by its bit code (bit ``j`` = feature j)."""
    members = ((torch.arange(2**M)[:, None] >> torch.arange(M)) & 1).bool()
    game = problem.game(problem.inputs[i])
    return torch.cat([game(chunk) for chunk in members.split(4096)])


def _codes(units: torch.Tensor) -> torch.Tensor:
    return (units.long() * _BITS).sum(1)


def _pair_data(table: torch.Tensor, units: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``v(S) - v(N \\ S)`` of each pair ``(n,)`` and ``v(N) - v(empty)``."""
    codes = _codes(units)
    return table[codes] - table[FULL ^ codes], float(table[FULL] - table[0])


# ---------------------------------------------------------------------------------------------------------------
# Designs


def stratified_design(budget: int, seed: int, mass_power: float = 1.0, balanced: bool = False):
    """livexai's stratified pairs (not in nested order) with the size masses raised to ``mass_power`` (1: shap's
    kernel allocation; 0: equal per size, Leverage SHAP), drawn at random or ``balanced``."""
    from livexai import _design

    gen = torch.Generator().manual_seed(seed)
    sizes = list(range(1, M // 2 + 1))
    population = [math.comb(M, s) // (2 if 2 * s == M else 1) for s in sizes]
    mass = [(1.0 if 2 * s == M else 2.0) * ((M - 1) / (s * (M - s))) ** mass_power for s in sizes]
    planned = _design._plan(budget // 2, population, mass)
    units, strata = [], []
    for g, (s, total, n) in enumerate(zip(sizes, population, planned, strict=True)):
        if n == 0:
            continue
        draw = _balanced_pairs if balanced and n < total else _design.sample_pairs
        units.append(draw(M, s, total, n, gen))
        strata.append(torch.full((n,), g, dtype=torch.long))
    size = torch.tensor(sizes, dtype=torch.float64)
    kernel = (M - 1) / (
        torch.tensor([math.comb(M, s) for s in sizes], dtype=torch.float64) * size * (M - size)
    )
    return torch.cat(units), torch.cat(strata), torch.tensor(population, dtype=torch.float64), kernel


def _balanced_pairs(m: int, s: int, total: int, n: int, gen: torch.Generator, candidates: int = 64):
    """``n`` distinct pairs of size ``s``, each the candidate (of ``candidates`` random ones) that adds least to
    ``u' A u``, ``A`` the sum of ``u u'`` so far: the second moments stay close to the population's."""
    moments = torch.zeros(m, m, dtype=torch.float64)
    chosen = torch.zeros(n, m, dtype=torch.bool)
    seen: set[int] = set()
    for row in range(n):
        picks = torch.rand(candidates, m, generator=gen).argsort(1)[:, :s]
        z = torch.zeros(candidates, m, dtype=torch.bool).scatter_(1, picks, True)
        if 2 * s == m:
            z = torch.where(z[:, :1], z, ~z)  # a middle pair is named by its side with feature 0
        u = z.double() * 2 - 1
        score = ((u @ moments) * u).sum(1)
        codes = _codes(z).tolist()
        score += torch.tensor([math.inf if code in seen else 0.0 for code in codes], dtype=torch.float64)
        best = int(score.argmin())
        seen.add(codes[best])
        chosen[row] = z[best]
        moments += torch.outer(u[best], u[best])
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# Estimators


def livexai_fit(table, units, strata, population, kernel, interactions: bool = True) -> torch.Tensor:
    from livexai._surrogate import shapley_regression

    diffs, delta = _pair_data(table, units)
    return shapley_regression(
        units, diffs, strata, population, kernel, delta, interactions=interactions
    ).values


def stratified(mass_power: float = 1.0, balanced: bool = False) -> Estimator:
    def estimate(table: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
        return livexai_fit(table, *stratified_design(budget, seed, mass_power, balanced))

    return estimate


def pyshap_star(table: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
    """Olsen & Jullum's paired sampling with replacement and corrected (inclusion-probability) weights."""
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.arange(1, M, dtype=torch.float64)
    size_p = (M - 1) / (sizes * (M - sizes))
    size_p /= size_p.sum()
    combos = torch.tensor([math.comb(M, s) for s in range(M + 1)], dtype=torch.float64)
    found: dict[int, None] = {}
    draws = 0
    while len(found) < budget // 2:
        batch = 4 * (budget // 2 - len(found)) + 16
        size = torch.multinomial(size_p, batch, replacement=True, generator=gen) + 1
        keys = torch.rand(batch, M, generator=gen)
        z = keys.argsort(1).argsort(1) < size[:, None]  # a random subset of each drawn size
        for code in _codes(z).tolist():
            found.setdefault(min(code, FULL ^ code))
            draws += 1
            if len(found) == budget // 2:
                break
    codes = torch.tensor(list(found))
    units = ((codes[:, None] >> torch.arange(M)) & 1).bool()
    s = units.sum(1)
    # One draw hits a given pair through either side: 2 * P(size) / C(M, s) (the two sides have the same size mass).
    hit = 2 * size_p[s - 1] / combos[s]
    included = 1 - (1 - hit) ** draws
    weight = (M - 1) / (combos[s] * s * (M - s)) / included
    n = units.shape[0]
    return livexai_fit(table, units, torch.arange(n), torch.ones(n, dtype=torch.float64), weight)


def ramc_crossfit(table: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
    """Cubic surrogate on one half, unbiased KernelSHAP of the residual on the other, both ways, averaged."""
    from livexai._surrogate import _KernelSystem, _parities, _penalised_solve, _to_values, _triples

    units, strata, population, kernel = stratified_design(budget, seed)
    diffs, delta = _pair_data(table, units)
    triples = _triples(M, torch.device("cpu"))
    features = _parities(units.double(), triples)
    sizes = torch.arange(1, M // 2 + 1, dtype=torch.float64)
    agree = (sizes * (sizes - 1) + (M - sizes) * (M - sizes - 1)) / (M * (M - 1))  # E[u_i u_j] in a size
    mass = kernel * population
    off_diagonal = float((mass * agree).sum() / mass.sum())  # the exact Gram is (1 - c) I + c 1 1'
    halves = torch.arange(units.shape[0]) % 2
    result = torch.zeros(M, dtype=torch.float64)
    for half in (0, 1):
        fit, check = halves == half, halves != half
        weights = _stratum_weights(strata[fit], population, kernel)
        system = _KernelSystem.build(features[fit], weights / weights.sum(), diffs[fit], delta, M)
        _, _, theta = _penalised_solve(system, True, None)
        residual = diffs[check] - features[check] @ theta
        moment = (_stratum_weights(strata[check], population, kernel) / mass.sum()) @ (
            features[check, :M] * residual[:, None]
        )
        result += 0.5 * (_to_values(theta, M, triples) + (moment - moment.mean()) / (1 - off_diagonal))
    return result


def _stratum_weights(strata: torch.Tensor, population: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    counts = torch.bincount(strata, minlength=population.numel()).double().clamp_min(1.0)
    return kernel[strata] * (population / counts)[strata]


def all_odd_orders(table: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
    """Kernel-ridge (GP) fit over every odd parity, linear terms free, the full coalition fitted exactly."""
    units, strata, population, kernel = stratified_design(budget, seed)
    diffs, delta = _pair_data(table, units)
    weights = _stratum_weights(strata, population, kernel)
    weights = weights / weights.sum()
    n = units.shape[0]
    u = torch.cat([units.double() * 2 - 1, torch.ones(1, M, dtype=torch.float64)])  # + the full coalition
    d = torch.cat([diffs, torch.tensor([delta], dtype=torch.float64)])
    disagree = ((M - u @ u.T) / 2).round().long()
    negative = (u < 0).long()
    others_negative = negative.sum(1, keepdim=True) - negative
    e_all, e_others = signed_elementary(M, torch.float64), signed_elementary(M - 1, torch.float64)
    best = (math.inf, None)
    for rho in (0.0, 0.1, 0.3):
        scale = {
            k: (rho ** ((k - 3) // 2) if k > 3 else 1.0) * math.comb(M, 3) / math.comb(M, k)
            for k in range(3, M + 1, 2)
        }
        scale = {k: c for k, c in scale.items() if c > 0}
        gram = sum(c * e_all[k][disagree] for k, c in scale.items())
        # Shapley values of the random part: phi_i = sum_n alpha_n sum_k c_k / k * u_ni e_{k-1}(u_n without i)
        to_values = sum((c / k) * u * e_others[k - 1][others_negative] for k, c in scale.items()).T
        for lam in (1e-3, 0.1, 0.3):
            noise = torch.cat([lam / weights, torch.zeros(1, dtype=torch.float64)])
            covariance = gram + torch.diag(noise) + 1e-10 * float(gram.diagonal().mean()) * torch.eye(n + 1)
            factor, info = torch.linalg.cholesky_ex(covariance)
            if int(info):
                continue
            solved_u = torch.cholesky_solve(u, factor)
            solved_d = torch.cholesky_solve(d[:, None], factor)[:, 0]
            information = u.T @ solved_u
            beta = torch.linalg.solve(information, u.T @ solved_d)
            alpha = solved_d - solved_u @ beta
            projector = torch.cholesky_inverse(factor) - solved_u @ torch.linalg.solve(
                information, solved_u.T
            )
            loo = float((weights * (alpha[:n] / projector.diagonal()[:n]) ** 2).sum())
            if loo < best[0]:
                best = (loo, beta + to_values @ alpha)
    return best[1]


# ---------------------------------------------------------------------------------------------------------------
# Stratified SVARM


def _svarm_sizes(n: int, paired: bool, allocation: str) -> tuple[list[int], list[int], list[int]]:
    """Sampled sizes (2 .. M-2; paired: the smaller side 2 .. M/2), their populations and the draws of each for
    ``n`` draws (pairs when paired), in proportion to the paper's size distribution or to the Shapley kernel."""
    if allocation == "paper":
        n_log_n = M * math.log(M)
        harmonic = sum(1 / k for k in range(1, (M - 1) // 2 + 1))

        def share(s: int) -> float:
            if 2 * s == M:
                return 1 / n_log_n
            return (n_log_n - 1) / (2 * min(s, M - s) * n_log_n * (harmonic - 1))
    else:

        def share(s: int) -> float:
            return (M - 1) / (s * (M - s))

    if paired:
        sizes = list(range(2, M // 2 + 1))
        population = [math.comb(M, s) // (2 if 2 * s == M else 1) for s in sizes]
        mass = [share(s) + (share(M - s) if 2 * s != M else 0.0) for s in sizes]
    else:
        sizes = list(range(2, M - 1))
        population = [math.comb(M, s) for s in sizes]
        mass = [share(s) for s in sizes]
    from livexai import _design

    return sizes, population, _design._plan(n, population, mass)


def _svarm_values(table: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Stratified SVARM's estimate from the exact strata and the sampled coalitions ``z`` ``(n, M)`` bool."""
    y = table[_codes(z)]
    size = z.sum(1)
    inside = z.double()
    # A sample A of size s: v(A) is a draw of phi_{i,s-1}^+ for i in A and of phi_{i,s}^- for i not in A.
    plus_layer = torch.nn.functional.one_hot(size - 1, M).double()
    minus_layer = torch.nn.functional.one_hot(size.clamp(max=M - 1), M).double()
    plus_n, minus_n = inside.T @ plus_layer, (1 - inside).T @ minus_layer
    plus = ((inside * y[:, None]).T @ plus_layer) / plus_n.clamp_min(1)
    minus = (((1 - inside) * y[:, None]).T @ minus_layer) / minus_n.clamp_min(1)
    # A stratum no draw reached takes the mean of the values drawn at its size.
    counts = torch.bincount(size, minlength=M + 1).clamp_min(1)
    size_mean = torch.zeros(M + 1, dtype=torch.float64).index_add_(0, size, y) / counts
    layers = torch.arange(M)
    plus = torch.where(plus_n > 0, plus, size_mean[layers + 1][None, :])
    minus = torch.where(minus_n > 0, minus, size_mean[layers][None, :])
    single, all_but = table[_BITS], table[FULL ^ _BITS]
    plus[:, 0], minus[:, 0] = single, table[0]
    minus[:, 1] = (single.sum() - single) / (M - 1)
    plus[:, M - 1], minus[:, M - 1] = table[FULL], all_but
    plus[:, M - 2] = (all_but.sum() - all_but) / (M - 1)
    return (plus - minus).sum(1) / M


def svarm(paired: bool = False, allocation: str = "paper") -> Estimator:
    """Stratified SVARM; ``allocation`` "paper" or "kernel"; ``paired``: each draw with its complement."""
    from livexai import _design

    def estimate(table: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        left = budget - 2 * M  # sizes 1 and M-1 in full
        sizes, population, counts = _svarm_sizes(left // 2 if paired else left, paired, allocation)
        drawn = []
        for s, total, n in zip(sizes, population, counts, strict=True):
            if n == 0:
                continue
            if paired:
                side = _design.sample_pairs(M, s, total, n, gen)
                drawn += [side, ~side]
            else:
                drawn.append(_design._unrank(_design._distinct_ranks(total, n, gen), M, s))
        return _svarm_values(table, torch.cat(drawn))

    return estimate


# ---------------------------------------------------------------------------------------------------------------
# Gaussian-process prior on the odd part, greedy design


def livexai_gp(table: torch.Tensor, budget: int, seed: int) -> torch.Tensor:
    """``kernel_shap(..., estimator="gp")`` on the tabulated game: the library's greedy design and fit."""
    from livexai._gp_shapley import gp_shapley, greedy_design

    units = greedy_design(M, budget, torch.Generator().manual_seed(seed)).units
    diffs, delta = _pair_data(table, units)
    return gp_shapley(units, diffs, delta).values


ESTIMATORS: dict[str, Estimator] = {
    'livexai, estimator="regression"': stratified(1.0),
    "Leverage SHAP (equal per size)": stratified(0.0),
    "PySHAP* (paired, corrected weights)": pyshap_star,
    "RAMC, cubic surrogate, 2-fold": ramc_crossfit,
    "livexai, balanced design": stratified(1.0, balanced=True),
    "livexai, all odd orders (GP)": all_odd_orders,
    "Stratified SVARM (paper's sizes)": svarm(),
    "Stratified SVARM, paired, kernel allocation": svarm(paired=True, allocation="kernel"),
    'livexai, estimator="gp" (the default)': livexai_gp,
}


# ---------------------------------------------------------------------------------------------------------------
# The comparison


def comparison(problem: Problem, budgets: list[int], seeds: int) -> str:
    """The table: budget x estimator -> mean absolute error / shap's at that budget (same inputs and seeds)."""
    exact = problem.exact
    runs = [(i, seed) for i in range(len(problem.inputs)) for seed in range(seeds)]
    tables = [value_table(problem, i) for i in range(len(problem.inputs))]
    shap_error = {
        b: np.mean(
            [np.abs(shap_kernel(problem, i, b, seed)[0] - exact[i].numpy()).mean() for i, seed in runs]
        )
        for b in budgets
    }
    ratios: dict[str, dict[int, float]] = {}
    seconds: dict[str, float] = {}
    for name, estimator in ESTIMATORS.items():
        began = time.perf_counter()
        ratios[name] = {
            b: float(
                np.mean([float((estimator(tables[i], b, seed) - exact[i]).abs().mean()) for i, seed in runs])
            )
            / shap_error[b]
            for b in budgets
        }
        seconds[name] = (time.perf_counter() - began) / (len(runs) * len(budgets))
        print(f"  {name}: {seconds[name]:.3f} s per estimate", flush=True)
    header = ["coalitions", "shap error", *ESTIMATORS]
    rows = [
        [str(b), f"{shap_error[b]:.4f}", *[f"{ratios[name][b]:.2f}×" for name in ESTIMATORS]] for b in budgets
    ]
    timing = "; ".join(f"{name} {seconds[name] * 1e3:.0f} ms" for name in ESTIMATORS)
    return "\n".join(
        [
            markdown_table(header, rows),
            "",
            f"{len(problem.inputs)} inputs × {seeds} seeds per cell, the same for every column; fit time per "
            f"estimate (coalition values read from a table, this machine): {timing}.",
        ]
    )


class _Products(torch.nn.Module):
    """A game with strong, known interactions: a linear part, a product of two columns, one of three and a
    ReLU gate. Outputs ``(N, 2)`` like the MLPs (the benchmark explains output 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.randn(M, generator=torch.Generator().manual_seed(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (
            x @ self.linear
            + 2 * x[:, 0] * x[:, 1]
            - 1.5 * x[:, 2] * x[:, 3] * x[:, 4]
            + torch.relu(x[:, 5] + x[:, 6] - x[:, 7]) * x[:, 8]
        )
        return torch.stack([-score, score], 1)


def other_games(n_inputs: int) -> dict[str, Problem]:
    """Games the Gaussian-process prior was not set on: another seed of the MLP family, a more nonlinear MLP
    (weights x2.5) and :class:`_Products`; each with its own inputs and 5 background rows."""
    from .accuracy import TabularMLP

    steeper = TabularMLP(M, seed=3)
    with torch.no_grad():
        for layer in steeper.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.5)
    models = {
        "MLP, seed 7": TabularMLP(M, seed=7),
        "MLP, seed 3, weights x2.5": steeper,
        "products": _Products(),
    }
    games = {}
    for name, model in models.items():
        gen = torch.Generator().manual_seed(11)
        background = torch.randn(5, M, generator=gen)
        games[name] = Problem(model, background, torch.randn(n_inputs, M, generator=gen))
    return games


def generalisation(budgets: list[int], n_inputs: int, seeds: int) -> str:
    """Error / shap's error of the two library estimators on :func:`other_games`, one column pair per game."""
    pair = {'estimator="regression"': ESTIMATORS['livexai, estimator="regression"'], '"gp"': livexai_gp}
    header, columns = ["coalitions"], []
    for name, problem in other_games(n_inputs).items():
        runs = [(i, seed) for i in range(n_inputs) for seed in range(seeds)]
        tables = [value_table(problem, i) for i in range(n_inputs)]
        exact = problem.exact
        column = {label: {} for label in pair}
        for b in budgets:
            shap_error = np.mean(
                [np.abs(shap_kernel(problem, i, b, seed)[0] - exact[i].numpy()).mean() for i, seed in runs]
            )
            for label, estimator in pair.items():
                error = np.mean(
                    [float((estimator(tables[i], b, seed) - exact[i]).abs().mean()) for i, seed in runs]
                )
                column[label][b] = error / shap_error
        header += [f"{name}: {label}" for label in pair]
        columns += [column[label] for label in pair]
        print(f"  {name} done", flush=True)
    rows = [[str(b), *[f"{column[b]:.2f}×" for column in columns]] for b in budgets]
    return "\n".join(
        [
            markdown_table(header, rows),
            "",
            f"Error / shap.KernelExplainer's error on the same inputs and seeds ({n_inputs} inputs × {seeds} seeds "
            "per game).",
        ]
    )


def image_games(budgets: list[int], n_images: int, seeds: int) -> str:
    """The library's two estimators on image games: the shipped shapes CNN on ``n_images`` of its test images,
    14-16 SLIC superpixels removed by blurring or by the mean colour, exact values by evaluating every
    coalition. Each cell: the Gaussian process's mean absolute error over ``seeds`` seeds / the regression's."""
    import livexai
    from livexai import datasets, models

    model, shapes = models.shapes_cnn(), datasets.shapes(n_images, seed=3)
    header, rows = ["image, removal, superpixels", *[f"{b} coalitions" for b in budgets]], []
    for i in range(n_images):
        for removal in ("blur", "mean"):
            options = {"n_segments": 14, "background": removal}
            exact = livexai.kernel_shap(model, shapes.images[i], n_samples=2**16, **options)
            assert exact.params["exact"]

            def error(budget: int, estimator: str, options: dict = options, exact=exact, i: int = i) -> float:
                runs = [
                    livexai.kernel_shap(
                        model, shapes.images[i], n_samples=budget, seed=seed, estimator=estimator, **options
                    )
                    for seed in range(seeds)
                ]
                return float(np.mean([float((r.weights - exact.weights).abs().mean()) for r in runs]))

            ratios = [error(b, "gp") / error(b, "regression") for b in budgets]
            rows.append([f"{i}, {removal}, {exact.weights.numel()}", *[f"{r:.2f}×" for r in ratios]])
    return "\n".join(
        [
            markdown_table(header, rows),
            "",
            f'estimator="gp" error / estimator="regression" error, {seeds} seeds per cell.',
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.kernel_estimators", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="2 inputs x 2 seeds, 3 budgets")
    parser.add_argument("--budgets", type=int, nargs="+", help="coalition budgets (default 64 .. 2048)")
    parser.add_argument(
        "--other-games", action="store_true", help="the library's two estimators on three other games"
    )
    parser.add_argument("--images", action="store_true", help="the library's two estimators on image games")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budgets = [64, 256, 1024] if args.quick else [64, 128, 256, 512, 1024, 2048]
    budgets = args.budgets or budgets
    n_inputs, seeds = (2, 2) if args.quick else (4, 16)
    if args.images:
        print(image_games([64, 128, 256, 512], 2 if args.quick else 4, 2 if args.quick else 4))
        return
    if args.other_games:
        print(generalisation(budgets, 2 if args.quick else 3, 2 if args.quick else 4))
        return
    print(comparison(make_problem(n_inputs), budgets, seeds))


if __name__ == "__main__":
    main()
