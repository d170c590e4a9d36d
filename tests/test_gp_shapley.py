"""KernelSHAP's Gaussian-process estimator (estimator="gp"): exact where it must be, its design nested and made of
distinct pairs, its standard errors finite only once identified. Its accuracy against shap's and the regression's:
tests/test_kernel_shap.py."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_mlp
from test_kernel_shap import brute_force_shapley, data, tabular_game

from livexai._adapter import Cancelled
from livexai._gp_shapley import MAX_FEATURES, cached_greedy_design, gp_shapley, greedy_design
from livexai.shap import iter_kernel_shap, kernel_shap

pytestmark = pytest.mark.usefixtures("single_thread")


def _all_pairs(m: int) -> torch.Tensor:
    """One side of every pair ``{S, N \\ S}`` with ``S`` not empty: the side without the last player."""
    codes = torch.arange(1, 2 ** (m - 1))
    return ((codes[:, None] >> torch.arange(m)) & 1).bool()


def test_every_pair_gives_the_exact_shapley_values() -> None:
    m = 6
    model = make_mlp(m, seed=3)
    x, background = data(m, 4, seed=3)
    game = tabular_game(model, x, background, 0)
    expected, empty, full = brute_force_shapley(game, m)
    units = _all_pairs(m)
    diffs = game(units).double() - game(~units).double()
    fit = gp_shapley(units, diffs, full - empty)
    torch.testing.assert_close(fit.values, expected, atol=1e-7, rtol=0)


def test_an_additive_game_is_recovered_exactly_from_few_pairs() -> None:
    m = 12
    gen = torch.Generator().manual_seed(4)
    weights = torch.randn(m, generator=gen, dtype=torch.float64)

    def model(rows: torch.Tensor) -> torch.Tensor:
        score = rows.double() @ weights
        return torch.stack([score, -score], 1)

    x, background = data(m, 3, seed=4)
    result = kernel_shap(model, x, background=background, target=0, n_samples=2 * m, estimator="gp")
    expected = weights * (x - background.mean(0))
    assert result.params["estimator"] == "gp"
    torch.testing.assert_close(result.weights.double(), expected, atol=1e-6, rtol=0)


def test_efficiency_holds_and_the_model_sees_the_planned_coalitions() -> None:
    m = 9
    model = make_mlp(m, seed=5)
    x, background = data(m, 3, seed=5)
    result = kernel_shap(model, x, background=background, target=1, n_samples=100)
    assert result.params["estimator"] == "gp"  # the default for up to 16 features
    assert float(result.weights.sum()) + result.base_value == pytest.approx(result.prediction, abs=1e-6)
    assert (
        result.n_evals == 3 * (1 + 100) + 1
    )  # the empty coalition and 50 pairs per background row, and f(x)


def test_the_design_is_nested_distinct_and_seeded() -> None:
    m = 14
    small = greedy_design(m, 64, torch.Generator().manual_seed(1))
    large = greedy_design(m, 256, torch.Generator().manual_seed(1))
    assert torch.equal(large.units[:32], small.units)  # a run stopped early has the design of its budget
    units = large.units
    canonical = torch.where(
        units[:, :1] & (units.sum(1, keepdim=True) * 2 == m) | (units.sum(1) * 2 < m)[:, None], units, ~units
    )
    assert torch.unique(canonical, dim=0).shape[0] == units.shape[0], "a pair was chosen twice"
    sizes = units.sum(1)
    assert torch.equal(large.sizes[large.strata].long(), torch.minimum(sizes, m - sizes))
    assert bool(large.n_planned[0] == m)  # the single-feature pairs are all chosen: the main effects first
    other = greedy_design(m, 64, torch.Generator().manual_seed(2))
    assert not torch.equal(other.units, small.units)


def test_standard_errors_are_infinite_until_the_main_effects_are_identified() -> None:
    m = 8
    model = make_mlp(m, seed=6)
    x, background = data(m, 2, seed=6)
    expected, _, _ = brute_force_shapley(tabular_game(model, x, background, 0), m)
    steps = list(
        iter_kernel_shap(
            model, x, background=background, target=0, n_samples=120, chunk_size=8, estimator="gp"
        )
    )
    first, last = steps[0], steps[-1]
    assert first.params["n_samples_done"] < 2 * m and bool(torch.isinf(first.stderr).all())
    assert bool(torch.isfinite(last.stderr).all()) and bool((last.stderr > 0).all())
    error = (last.weights.double() - expected).abs()
    assert float(error.max()) < 4 * float(last.stderr.max())  # the same order as the true error
    final = kernel_shap(model, x, background=background, target=0, n_samples=120, estimator="gp")
    torch.testing.assert_close(last.weights, final.weights)


def test_the_choice_of_estimator() -> None:
    x, background = data(20, 2, seed=7)
    model = make_mlp(20, seed=7)
    assert (
        kernel_shap(model, x, background=background, target=0, n_samples=200).params["estimator"]
        == "regression"
    )
    with pytest.raises(ValueError, match=f"up to {MAX_FEATURES} features"):
        kernel_shap(model, x, background=background, target=0, n_samples=200, estimator="gp")
    with pytest.raises(ValueError, match="estimator must be one of"):
        kernel_shap(model, x, background=background, target=0, estimator="bayes")
    x, background = data(8, 2, seed=7)
    model = make_mlp(8, seed=7)
    explicit = kernel_shap(model, x, background=background, target=0, n_samples=60, interactions=False)
    assert explicit.params["estimator"] == "regression"  # interactions belong to the regression
    exact = kernel_shap(model, x, background=background, target=0, n_samples=254, estimator="gp")
    assert exact.params["estimator"] == "exact" and exact.params["exact"]
    assert math.isfinite(float(exact.weights.sum()))


def test_choosing_the_design_can_be_cancelled_and_an_abandoned_one_is_not_kept() -> None:
    """A widget whose slider moved on abandons the choice (up to 0.5 s at 16 features) between steps."""
    calls = []

    def cancel_on_third_check() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled

    m, budget, seed = 13, 400, 123  # a key no other test uses
    with pytest.raises(Cancelled):
        cached_greedy_design(m, budget, seed, torch.device("cpu"), cancel_on_third_check)
    assert len(calls) == 3
    design = cached_greedy_design(m, budget, seed, torch.device("cpu"), lambda: calls.append(1))
    assert len(calls) == 3 + (budget // 2) // 16  # chosen afresh, checked every 16 steps
    assert cached_greedy_design(m, budget, seed, torch.device("cpu")) is design  # then kept
    assert torch.equal(design.units, greedy_design(m, budget, torch.Generator().manual_seed(seed)).units)
