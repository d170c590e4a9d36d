"""Weighted backgrounds for KernelSHAP on rows: k-means summaries (shap's ``kmeans``) and what weights mean."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import livexai
from livexai import datasets, models


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 2))


ROWS = torch.randn(60, 5, generator=torch.Generator().manual_seed(1))
X = torch.randn(5, generator=torch.Generator().manual_seed(2))


def test_kmeans_centres_are_weighted_by_cluster_share_and_keep_observed_values() -> None:
    summary = livexai.kmeans(ROWS, 6, seed=0)
    assert summary.rows.shape == (6, 5) and summary.weights.shape == (6,)
    assert float(summary.weights.sum()) == pytest.approx(1.0)
    for j in range(5):  # every centre value is a value its column takes somewhere
        assert bool(torch.isin(summary.rows[:, j], ROWS[:, j]).all())
    # two well-separated blobs of 30 and 10 rows come back as two centres weighted 3:1
    blobs = torch.cat([torch.zeros(30, 2), torch.full((10, 2), 5.0)])
    two = livexai.kmeans(blobs, 2, seed=0)
    assert sorted(two.weights.tolist()) == pytest.approx([0.25, 0.75])


def test_a_weighted_background_equals_the_background_with_rows_repeated_by_weight() -> None:
    model = small_mlp()
    a, b = ROWS[0], ROWS[1]
    repeated = livexai.kernel_shap(
        model, X, background=torch.stack([a, a, b]), target=1
    )  # exact: 2^5 - 2 fit
    weighted = livexai.kernel_shap(
        model, X, background=livexai.WeightedRows(torch.stack([a, b]), torch.tensor([2.0, 1.0])), target=1
    )
    torch.testing.assert_close(weighted.weights, repeated.weights, atol=1e-5, rtol=1e-5)
    assert weighted.base_value == pytest.approx(repeated.base_value, abs=1e-6)
    assert weighted.params["background"] == "weighted rows"


def test_kmeans_centres_stand_for_the_whole_table_better_than_a_random_sample_of_the_same_size() -> None:
    train, row = datasets.breast_cancer("train"), datasets.breast_cancer("test").x[3]
    mlp = models.breast_cancer_mlp()
    full = livexai.kernel_shap(mlp, row, background=train.x, n_samples=300, target=1, seed=0)
    summary_error, sample_error = 0.0, 0.0
    for seed in range(3):
        summary = livexai.kernel_shap(
            mlp, row, background=livexai.kmeans(train.x, 10, seed=seed), n_samples=300, target=1
        )
        pick = torch.randperm(len(train.x), generator=torch.Generator().manual_seed(seed))[:10]
        sample = livexai.kernel_shap(mlp, row, background=train.x[pick], n_samples=300, target=1)
        summary_error += float((summary.weights - full.weights).norm())
        sample_error += float((sample.weights - full.weights).norm())
        assert float(summary.weights.sum()) + summary.base_value == pytest.approx(
            summary.prediction, abs=1e-4
        )
    assert summary_error < 0.5 * sample_error


def test_bad_weights_and_too_many_centres_are_named() -> None:
    with pytest.raises(ValueError, match=r"pass background=livexai\.kmeans\(X, 8\)"):
        livexai.kernel_shap(small_mlp(), X, background="kmeans:8")
    with pytest.raises(ValueError, match="k=61 is more than the 60 rows"):
        livexai.kmeans(ROWS, 61)
    with pytest.raises(ValueError, match="2 non-negative numbers"):
        livexai.kernel_shap(
            small_mlp(), X, background=livexai.WeightedRows(ROWS[:2], torch.tensor([1.0, -1.0]))
        )
