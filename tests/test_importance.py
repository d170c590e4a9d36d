"""Permutation importance: exact zeros for unused columns, agreement with scikit-learn, groups, regressors."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

import livexai
from livexai import datasets, models

matplotlib.use("Agg")


def uses_columns_0_and_3() -> nn.Module:
    """Two logits that depend on columns 0 and 3 only."""
    model = nn.Linear(6, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0], model.weight[0, 3] = 1.0, -2.0
        model.weight[1, 0], model.weight[1, 3] = -1.0, 2.0
    return model


ROWS = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))


def test_columns_the_model_ignores_score_exactly_zero_and_the_used_ones_more() -> None:
    model = uses_columns_0_and_3()
    labels = model(ROWS).argmax(dim=1).detach()
    result = livexai.permutation_importance(model, ROWS, labels, n_repeats=5)
    assert result.baseline_score == 1.0
    assert result.scoring == "accuracy"
    unused = [1, 2, 4, 5]
    assert torch.equal(result.values[:, unused], torch.zeros(5, 4))
    assert bool((result.mean[[0, 3]] > 0.1).all())
    assert result.top_features(2) == ["feature 3", "feature 0"]  # column 3 has the larger weight
    assert result.n_evals == 200 * (1 + 5 * 6)  # the data once, then every (repeat, column) copy


def test_a_one_output_regressor_is_scored_by_r2_and_groups_shuffle_together() -> None:
    model = nn.Linear(6, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 1] = 3.0
    target = model(ROWS)[:, 0].detach()
    result = livexai.permutation_importance(
        model, ROWS, target, n_repeats=3, groups={"one and two": [1, 2], "rest": [0, 3, 4, 5]}
    )
    assert result.scoring == "r2" and result.baseline_score == pytest.approx(1.0)
    assert result.feature_names == ["one and two", "rest"]
    assert float(result.mean[0]) > 1.0  # shuffling the only informative column costs more than all of R²
    assert torch.equal(result.values[:, 1], torch.zeros(3, dtype=result.values.dtype))


def test_means_agree_with_scikit_learn_within_three_standard_errors() -> None:
    sklearn_inspection = pytest.importorskip("sklearn.inspection")
    from sklearn.base import BaseEstimator, ClassifierMixin

    data, mlp = datasets.breast_cancer("test"), models.breast_cancer_mlp()

    class Wrapped(ClassifierMixin, BaseEstimator):
        def fit(self, X: np.ndarray, y: np.ndarray) -> Wrapped:
            self.classes_ = np.array([0, 1])
            return self

        def predict(self, X: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return mlp(torch.as_tensor(X, dtype=torch.float32)).argmax(dim=1).numpy()

    ours = livexai.permutation_importance(
        mlp, data.x, data.y, n_repeats=30, feature_names=list(data.feature_names)
    )
    theirs = sklearn_inspection.permutation_importance(
        Wrapped().fit(None, None),
        data.x.numpy(),
        data.y.numpy(),
        n_repeats=30,
        random_state=0,
        scoring="accuracy",
    )
    standard_error = np.sqrt((ours.std.numpy() ** 2 + theirs.importances_std**2) / 30)
    difference = np.abs(ours.mean.numpy() - theirs.importances_mean)
    assert bool((difference <= 3 * standard_error + 1e-9).all()), (difference / standard_error).max()
    assert ours.baseline_score == pytest.approx(
        float((Wrapped().fit(None, None).predict(data.x.numpy()) == data.y.numpy()).mean())
    )
    assert ours.plot() is not None


def test_wrong_inputs_are_named() -> None:
    model = uses_columns_0_and_3()
    with pytest.raises(
        ValueError, match=r"y has shape \(3,\); expected one label or target per row \(200,\)"
    ):
        livexai.permutation_importance(model, ROWS, torch.zeros(3))
    with pytest.raises(ValueError, match="unknown scoring 'f1'"):
        livexai.permutation_importance(model, ROWS, torch.zeros(200), scoring="f1")
    with pytest.raises(ValueError, match=r"column indices in 0\.\.5"):
        livexai.permutation_importance(model, ROWS, torch.zeros(200), groups=[[0, 9]])
    with pytest.raises(ValueError, match="NaN"):
        livexai.permutation_importance(model, torch.full((4, 6), float("nan")), torch.zeros(4))
