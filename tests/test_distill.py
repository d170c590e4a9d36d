"""Distillation into a tree or a sparse linear model: a rule is recovered, fidelity is held out, the model is
left alone."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from conftest import assert_unchanged, snapshot
from torch import nn

import livexai
from livexai import datasets, models

pytest.importorskip("sklearn")
matplotlib.use("Agg")


class DepthTwoRule(nn.Module):
    """Class 1 exactly when column 0 > 0.5 and column 2 <= -0.25: a depth-2 tree, written as a network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x[:, 0] > 0.5) & (x[:, 2] <= -0.25)
        logit = inside.float() * 4.0 - 2.0
        return torch.stack([-logit, logit], dim=1)


ROWS = torch.randn(2000, 5, generator=torch.Generator().manual_seed(0))


def test_a_depth_two_rule_is_recovered_at_depth_two() -> None:
    surrogate = livexai.distill(DepthTwoRule(), ROWS, max_depth=2, feature_names=list("abcde"))
    assert surrogate.task == "classification"
    assert surrogate.fidelity >= 0.99
    assert surrogate.params == {
        "max_depth": 2,
        "max_leaf_nodes": None,
        "seed": 0,
        "n_fit": 1500,
        "n_test": 500,
    }
    rules = surrogate.rules()
    assert "a > 0.5" in rules.replace("0.49", "0.5") and "c <= -0.2" in rules
    assert surrogate.n_evals == 2000  # each row once: 1500 to fit, 500 to check
    assert surrogate.plot() is not None


def test_fidelity_is_measured_on_rows_the_tree_was_not_fitted_on() -> None:
    from livexai.distill import _split

    rows = ROWS
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4))
    answers = model(rows).argmax(dim=1).numpy()
    surrogate = livexai.distill(model, rows, max_depth=3)
    fit_rows, test_rows = _split(2000, 0)
    held_out = float((surrogate.predict(rows[test_rows]) == answers[test_rows.numpy()]).mean())
    fitted = float((surrogate.predict(rows[fit_rows]) == answers[fit_rows.numpy()]).mean())
    assert surrogate.fidelity == pytest.approx(held_out) and surrogate.fidelity != pytest.approx(fitted)
    given = livexai.distill(model, rows, X_test=rows[:300], max_depth=3)
    assert given.params["n_test"] == 300 and given.params["n_fit"] == 2000


def test_the_breast_cancer_mlp_distils_with_fidelity_and_accuracy_and_stays_untouched() -> None:
    train, test = datasets.breast_cancer("train"), datasets.breast_cancer("test")
    mlp = models.breast_cancer_mlp().train()
    before = snapshot(mlp)
    surrogate = livexai.distill(
        mlp, train.x, X_test=test.x, y_test=test.y, class_names=list(train.class_names),
        feature_names=list(train.feature_names),
    )  # fmt: skip
    assert_unchanged(before, snapshot(mlp))
    assert 0.8 <= surrogate.fidelity <= 1.0 and surrogate.accuracy is not None
    assert "benign" in surrogate.rules() or "malignant" in surrogate.rules()
    linear = livexai.distill(mlp, train.x, kind="linear", feature_names=list(train.feature_names))
    assert linear.fidelity > 0.9 and linear.rules().startswith("score = ")


def test_a_regressor_is_distilled_by_r2() -> None:
    model = nn.Linear(5, 1)
    surrogate = livexai.distill(model, ROWS, kind="linear")
    assert surrogate.task == "regression" and surrogate.fidelity > 0.99
    tree = livexai.distill(model, ROWS, max_depth=4)
    assert 0.5 < tree.fidelity < 1.0


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="kind must be one of 'tree', 'linear'"):
        livexai.distill(DepthTwoRule(), ROWS, kind="forest")
    with pytest.raises(ValueError, match="X_test has 2 columns; expected 5"):
        livexai.distill(DepthTwoRule(), ROWS, X_test=torch.zeros(3, 2))
