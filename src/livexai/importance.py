"""Permutation importance (Breiman, 2001; scikit-learn's ``permutation_importance``) for torch models on tables.

A feature matters as much as the model's score drops when that column is shuffled across the rows, which breaks
its link with the target while keeping its distribution. Every (repeat, column) pair is one shuffled copy of the
data; all of them go through the model on its device in large batches, built lazily so that memory stays at one
batch however many repeats and columns there are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._adapter import Model
from ._call import as_adapter
from ._inputs import check_int

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Importance", "permutation_importance", "r2", "score_function"]

Scoring = Callable[[torch.Tensor, torch.Tensor], float]
SCORINGS = ("accuracy", "neg_log_loss", "r2", "neg_mean_squared_error")


@dataclass(eq=False)
class Importance:
    """Permutation importance of each feature (or group of features): the score drop when it is shuffled.

    ``values`` ``(n_repeats, F)``: one drop per repeat; ``mean`` and ``std`` over repeats; ``baseline_score``: the
    score on the unshuffled data; ``n_evals``: rows the model evaluated.
    """

    mean: torch.Tensor
    std: torch.Tensor
    values: torch.Tensor
    baseline_score: float
    feature_names: list[str]
    scoring: str
    n_evals: int = 0
    elapsed_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def top_features(self, k: int = 5) -> list[str]:
        """The ``k`` most important feature names, most important first."""
        order = torch.argsort(self.mean, descending=True, stable=True)[: max(int(k), 0)]
        return [self.feature_names[i] for i in order]

    def plot(self, ax: Any = None, *, k: int = 15) -> Figure:
        """Box plot of the drops of the ``k`` most important features (seed 000's picture), top at the top."""
        import matplotlib.pyplot as plt

        order = torch.argsort(self.mean, descending=True, stable=True)[:k].flip(0)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1.2))
        ax.boxplot(self.values[:, order].numpy(), **_horizontal())
        ax.set_yticks(range(1, len(order) + 1), [self.feature_names[i] for i in order])
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel(f"drop in {self.scoring} when the feature is shuffled")
        ax.tick_params(labelsize=8)
        return ax.figure


def _horizontal() -> dict[str, Any]:
    """``boxplot``'s keyword for horizontal boxes: ``orientation`` from matplotlib 3.10 on (``vert`` is deprecated)."""
    import matplotlib

    major, minor = (int(part) for part in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


# -- scores -------------------------------------------------------------------------------------------------------
def _accuracy(y: torch.Tensor, scores: torch.Tensor) -> float:
    return float((scores.argmax(dim=1) == y.long()).float().mean())


def _log_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Log-probabilities from a model's outputs: taken as they are when rows already are probabilities."""
    is_probability = bool(((scores >= 0) & (scores <= 1)).all()) and bool(
        torch.allclose(scores.sum(dim=1), torch.ones_like(scores[:, 0]), atol=1e-4)
    )
    return scores.clamp_min(1e-15).log() if is_probability else torch.log_softmax(scores, dim=1)


def _neg_log_loss(y: torch.Tensor, scores: torch.Tensor) -> float:
    return float(_log_probabilities(scores.double()).gather(1, y.long()[:, None]).mean())


def _regression_output(scores: torch.Tensor) -> torch.Tensor:
    return scores[:, 0] if scores.ndim == 2 else scores


def r2(y: torch.Tensor, scores: torch.Tensor) -> float:
    """The coefficient of determination of predictions ``scores`` (``(N,)`` or ``(N, 1)``) for targets ``y``."""
    prediction, truth = _regression_output(scores).double(), y.double()
    residual = float(((truth - prediction) ** 2).sum())
    total = float(((truth - truth.mean()) ** 2).sum())
    return 1.0 - residual / total if total > 0 else float("nan")


def _neg_mean_squared_error(y: torch.Tensor, scores: torch.Tensor) -> float:
    return -float(((_regression_output(scores).double() - y.double()) ** 2).mean())


_SCORES: dict[str, Scoring] = {
    "accuracy": _accuracy,
    "neg_log_loss": _neg_log_loss,
    "r2": r2,
    "neg_mean_squared_error": _neg_mean_squared_error,
}


def score_function(scoring: str | Scoring | None, n_outputs: int) -> tuple[str, Scoring]:
    """The scoring's name and function ``(y_true, scores) -> float`` (higher is better): ``"accuracy"`` for
    classifiers and ``"r2"`` for one-output regressors by default."""
    if scoring is None:
        scoring = "accuracy" if n_outputs > 1 else "r2"
    if callable(scoring):
        return getattr(scoring, "__name__", "score"), scoring
    if scoring not in _SCORES:
        raise ValueError(
            f"unknown scoring {scoring!r}; expected one of {', '.join(map(repr, SCORINGS))} or a callable "
            "(y_true, scores) -> float where higher is better"
        )
    return scoring, _SCORES[scoring]


# -- inputs ----------------------------------------------------------------------------------------------------------
def as_table(X: Any, name: str = "X") -> torch.Tensor:
    """``X`` as a float ``(N, F)`` tensor (from a tensor, a numpy array or a DataFrame), with a clear error."""
    values = getattr(X, "values", X) if not isinstance(X, torch.Tensor) else X
    table = torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 1:
        raise ValueError(f"{name} has shape {tuple(table.shape)}; expected a table (N, F) of at least 2 rows")
    if not table.is_floating_point():
        table = table.float()
    if not bool(torch.isfinite(table).all()):
        raise ValueError(f"{name} contains NaN or infinite values; impute them before explaining")
    return table


def column_names(X: Any, feature_names: Sequence[str] | None, n_features: int) -> list[str]:
    """Feature names: given, else a DataFrame's columns, else ``feature 0``, ``feature 1``, ..."""
    if feature_names is None and hasattr(X, "columns"):
        feature_names = [str(c) for c in X.columns]
    if feature_names is None:
        return [f"feature {i}" for i in range(n_features)]
    names = [str(n) for n in feature_names]
    if len(names) != n_features:
        raise ValueError(
            f"feature_names has {len(names)} names for {n_features} columns; give one per column"
        )
    return names


def _groups(
    groups: Sequence[Sequence[int]] | Mapping[str, Sequence[int]] | None, names: list[str]
) -> tuple[list[list[int]], list[str]]:
    """Column groups shuffled together and their names (default: every column on its own)."""
    if groups is None:
        return [[i] for i in range(len(names))], names
    items = groups.items() if isinstance(groups, Mapping) else ((None, group) for group in groups)
    columns, labels = [], []
    for label, group in items:
        indices = [int(i) for i in group]
        if not indices or any(not 0 <= i < len(names) for i in indices):
            raise ValueError(
                f"group {label or list(group)!r} must list column indices in 0..{len(names) - 1}, got {list(group)}"
            )
        columns.append(indices)
        labels.append(str(label) if label is not None else "+".join(names[i] for i in indices))
    return columns, labels


# -- the method ---------------------------------------------------------------------------------------------------
def permutation_importance(
    model: Model,
    X: Any,
    y: Any,
    *,
    n_repeats: int = 10,
    scoring: str | Scoring | None = None,
    seed: int = 0,
    feature_names: Sequence[str] | None = None,
    groups: Sequence[Sequence[int]] | Mapping[str, Sequence[int]] | None = None,
    target: int | None = None,
    batch_size: int | None = None,
) -> Importance:
    """How much the model's score drops when each column (or ``groups`` of columns) is shuffled.

    ``X`` ``(N, F)`` rows and ``y`` ``(N,)`` labels (classes) or targets (regression). ``scoring``: ``"accuracy"``
    (default with several outputs), ``"neg_log_loss"``, ``"r2"`` (default with one output),
    ``"neg_mean_squared_error"``, or a callable ``(y_true, scores) -> float``, higher being better. ``target``
    picks the output column a multi-output regressor is scored on. Each of ``n_repeats`` repeats shuffles every
    column with its own seeded permutation of the rows; every shuffled copy goes through the model in batches.
    """
    began = time.perf_counter()
    n_repeats = check_int("n_repeats", n_repeats, 1)
    seed = check_int("seed", seed, 0)
    adapter = as_adapter(model, "logits")
    if batch_size is not None:
        adapter.batch_size = check_int("batch_size", batch_size, 1)
    table = as_table(X).to(device=adapter.device, dtype=adapter.dtype)
    truth = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).to(adapter.device)
    if truth.shape != (table.shape[0],):
        raise ValueError(
            f"y has shape {tuple(truth.shape)}; expected one label or target per row ({table.shape[0]},)"
        )
    names = column_names(X, feature_names, table.shape[1])
    columns, labels = _groups(groups, names)
    evals_before = adapter.n_evals
    n_rows = table.shape[0]
    baseline = adapter.evaluate(n_rows, lambda start, stop: table[start:stop], input_shape=(table.shape[1],))
    baseline = _select_output(baseline, target)
    name, score = score_function(scoring, baseline.shape[1])
    baseline_score = score(truth, baseline)
    generator = torch.Generator().manual_seed(seed)
    orders = torch.stack(
        [torch.randperm(n_rows, generator=generator) for _ in range(n_repeats * len(columns))]
    )
    orders = orders.to(adapter.device)

    member = torch.zeros(len(columns), table.shape[1], dtype=torch.bool, device=table.device)
    for g, group in enumerate(columns):
        member[g, group] = True

    def shuffled(start: int, stop: int) -> torch.Tensor:
        """Rows ``start..stop`` of the shuffled copies, one after another (copy ``c``: repeat ``c // G``, group
        ``c % G``): the group's columns come from the row the copy's permutation sends there."""
        index = torch.arange(start, stop, device=table.device)
        copy, row = index // n_rows, index % n_rows
        return torch.where(member[copy % len(columns)], table[orders[copy, row]], table[row])

    total = n_repeats * len(columns) * n_rows
    scores = _select_output(adapter.evaluate(total, shuffled, input_shape=(table.shape[1],)), target)
    drops = torch.tensor(
        [baseline_score - score(truth, copy) for copy in scores.reshape(-1, n_rows, scores.shape[1])],
        dtype=torch.float64,
    ).reshape(n_repeats, len(columns))
    return Importance(
        mean=drops.mean(dim=0).float(),
        std=drops.std(dim=0, correction=0).float(),
        values=drops.float(),
        baseline_score=baseline_score,
        feature_names=labels,
        scoring=name,
        n_evals=adapter.n_evals - evals_before,
        elapsed_s=time.perf_counter() - began,
        params={"n_repeats": n_repeats, "seed": seed, "n_rows": n_rows},
    )


def _select_output(scores: torch.Tensor, target: int | None) -> torch.Tensor:
    """All outputs of a classifier; the ``target`` column of a multi-output regressor as ``(N, 1)``."""
    if target is None:
        return scores
    if not 0 <= target < scores.shape[1]:
        raise ValueError(
            f"target {target} is not an output index: the model has outputs 0..{scores.shape[1] - 1}"
        )
    return scores[:, target : target + 1]
