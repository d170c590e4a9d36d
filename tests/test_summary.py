"""shap_summary: many rows' SHAP values equal to one call per row, efficiency per row, the two pictures."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

import livexai

matplotlib.use("Agg")


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


ROWS = torch.randn(12, 6, generator=torch.Generator().manual_seed(1))
BACKGROUND = torch.randn(20, 6, generator=torch.Generator().manual_seed(2))


def test_each_row_equals_kernel_shap_on_that_row_alone_and_adds_up() -> None:
    model = small_mlp()
    summary = livexai.shap_summary(
        model, ROWS, background=BACKGROUND, n_samples=40, target=2, seed=3, progress=False
    )
    assert summary.values.shape == (12, 6) and summary.base_values.shape == (12,)
    for i in (0, 7):
        alone = livexai.kernel_shap(model, ROWS[i], background=BACKGROUND, n_samples=40, target=2, seed=3)
        torch.testing.assert_close(summary.values[i], alone.attributions)
    outputs = model(ROWS)[:, 2].detach()
    torch.testing.assert_close(summary.values.sum(dim=1) + summary.base_values, outputs, atol=1e-4, rtol=1e-4)


def test_deep_and_gradient_methods_and_a_kmeans_background() -> None:
    model = small_mlp()
    deep = livexai.shap_summary(model, ROWS, background=BACKGROUND, method="deep", target=0, progress=False)
    outputs = model(ROWS)[:, 0].detach()
    torch.testing.assert_close(deep.values.sum(dim=1) + deep.base_values, outputs, atol=1e-5, rtol=1e-5)
    summarised = livexai.shap_summary(model, ROWS, background="kmeans:4", n_samples=30, progress=False)
    assert summarised.params["background"] == "4 weighted rows"
    assert summarised.target == int(torch.bincount(model(ROWS).argmax(1), minlength=3).argmax())
    gradient = livexai.shap_summary(model, ROWS[:3], background=BACKGROUND, method="gradient", n_samples=16)
    assert gradient.values.shape == (3, 6)


def test_the_beeswarm_and_the_bar_chart_rank_features_by_mean_absolute_value() -> None:
    summary = livexai.shap_summary(small_mlp(), ROWS, background=BACKGROUND, n_samples=30, progress=False)
    bar = summary.plot("bar")
    labels = [tick.get_text() for tick in bar.axes[0].get_yticklabels()]
    ranked = [summary.feature_names[i] for i in torch.argsort(summary.importance(), descending=True)]
    assert labels[::-1] == ranked  # the most important at the top
    swarm = summary.plot("beeswarm", max_features=3)
    assert len(swarm.axes[0].collections) == 3  # one cloud of points per feature shown
    with pytest.raises(ValueError, match="kind must be one of 'beeswarm', 'bar'"):
        summary.plot("violin")


def test_bad_backgrounds_are_named() -> None:
    with pytest.raises(ValueError, match="'kmeans:k'"):
        livexai.shap_summary(small_mlp(), ROWS, background="kmeans", progress=False)
    with pytest.raises(ValueError, match="method='deep' averages"):
        livexai.shap_summary(small_mlp(), ROWS, background=livexai.kmeans(BACKGROUND, 3), method="deep")


def test_kernel_rows_share_their_batches_but_not_their_results(monkeypatch: pytest.MonkeyPatch) -> None:
    from livexai._adapter import ModelAdapter

    sizes: list[int] = []
    evaluate = ModelAdapter.evaluate

    def counted(self: ModelAdapter, n: int, *args: object, **kwargs: object) -> torch.Tensor:
        sizes.append(n)
        return evaluate(self, n, *args, **kwargs)

    monkeypatch.setattr(ModelAdapter, "evaluate", counted)
    summary = livexai.shap_summary(
        small_mlp(), ROWS, background=BACKGROUND, n_samples=40, target=0, progress=False
    )
    per_row = (1 + 40) * len(BACKGROUND)  # the empty coalition and 40 planned ones, once per background row
    assert summary.n_evals == 12 * (per_row + 1)  # + f(x) per row
    assert sizes == [12 * per_row]  # all twelve rows' coalitions in one evaluation (16 rows to a batch)
    assert len({tuple(v.tolist()) for v in summary.values}) == 12  # each row its own values
