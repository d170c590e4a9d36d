"""Distillation: a small decision tree (or sparse linear model) fitted to a network's *predictions*.

The tree is a global explanation only as far as it agrees with the network, so its ``fidelity`` is measured on
rows it was not fitted on: accuracy of the predicted class for classifiers, R² of the output for regressors. The
labels play no part in the fit; with ``y`` the tree's accuracy against them is reported too. scikit-learn does
the fitting (imported here only: ``pip install scikit-learn``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ._adapter import Model
from ._call import as_adapter
from ._inputs import check_choice, check_int
from .importance import as_table, column_names, r2

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Surrogate", "distill"]

Kind = Literal["tree", "linear"]
KINDS = ("tree", "linear")
# Share of X held out to measure fidelity when no X_test is given.
HELD_OUT = 0.25


@dataclass(eq=False)
class Surrogate:
    """A simple model fitted to imitate a network, and how well it does.

    ``estimator``: the fitted scikit-learn model; ``fidelity``: agreement with the network on held-out rows
    (accuracy of the class for classifiers, R² for regressors); ``accuracy``: against the true labels of the
    held-out rows, when given; ``task``: ``"classification"`` or ``"regression"``.
    """

    estimator: Any
    kind: str
    task: str
    fidelity: float
    feature_names: list[str]
    class_names: list[str] | None = None
    accuracy: float | None = None
    n_evals: int = 0
    elapsed_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, X: Any) -> np.ndarray:
        """The surrogate's predictions (class indices or values) for rows ``X``."""
        return self.estimator.predict(as_table(X).cpu().double().numpy())

    def rules(self) -> str:
        """The surrogate as text: one ``if ... then ...`` line per leaf of a tree, or the linear formula."""
        if self.kind == "tree":
            return "\n".join(_leaf_rules(self.estimator, self.feature_names, self._outcome))
        return _linear_formula(self.estimator, self.feature_names)

    def _outcome(self, value: np.ndarray) -> str:
        if self.task == "regression":
            return f"{float(value.ravel()[0]):.4g}"
        index = int(np.argmax(value))
        label = int(self.estimator.classes_[index])
        name = self.class_names[label] if self.class_names else f"class {label}"
        return f"{name} ({value.ravel()[index] / value.sum():.0%} of its rows)"

    def plot(self, ax: Any = None) -> Figure:
        """The tree drawn by scikit-learn (coloured by class), or the linear model's coefficients as bars."""
        import matplotlib.pyplot as plt

        if ax is None:
            size = (11, 5) if self.kind == "tree" else (6, 0.3 * len(self.feature_names) + 1)
            _, ax = plt.subplots(figsize=size)
        if self.kind == "tree":
            from sklearn.tree import plot_tree

            classes = None
            if self.task == "classification" and self.class_names:
                classes = [self.class_names[int(c)] for c in self.estimator.classes_]
            plot_tree(
                self.estimator, feature_names=self.feature_names, class_names=classes, filled=True, ax=ax
            )
        else:
            weights = _coefficients(self.estimator)
            order = np.argsort(np.abs(weights))
            ax.barh([self.feature_names[i] for i in order], weights[order])
            ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_title(f"{self.kind} surrogate · fidelity {self.fidelity:.3f}", fontsize=9)
        return ax.figure


def _leaf_rules(estimator: Any, names: list[str], outcome: Any) -> list[str]:
    """``if a <= 1 and b > 2 then <outcome>`` for every leaf, in the tree's left-to-right order."""
    tree = estimator.tree_
    lines: list[str] = []

    def walk(node: int, conditions: list[str]) -> None:
        left, right = tree.children_left[node], tree.children_right[node]
        if left == right:  # a leaf
            condition = " and ".join(conditions) or "always"
            lines.append(f"if {condition} then {outcome(tree.value[node])}")
            return
        name, threshold = names[tree.feature[node]], tree.threshold[node]
        walk(left, [*conditions, f"{name} <= {threshold:.4g}"])
        walk(right, [*conditions, f"{name} > {threshold:.4g}"])

    walk(0, [])
    return lines


def _coefficients(estimator: Any) -> np.ndarray:
    """A linear surrogate's weights on the original (unscaled) columns, first output's for classifiers."""
    scaler, linear = estimator.named_steps["scale"], estimator.named_steps["linear"]
    weights = np.atleast_2d(linear.coef_)[0]
    return weights / scaler.scale_


def _linear_formula(estimator: Any, names: list[str]) -> str:
    """``score = +1.2 × a −0.3 × b + constant``, largest weights first, zero weights left out."""
    weights = _coefficients(estimator)
    order = [i for i in np.argsort(-np.abs(weights)) if weights[i] != 0]
    kept = " ".join(f"{weights[i]:+.4g} × {names[i]}" for i in order) or "(no column kept)"
    return f"score = {kept} + constant ({len(order)} of {len(names)} columns)"


def _fit(kind: str, task: str, max_depth: int | None, max_leaf_nodes: int | None, seed: int) -> Any:
    """An unfitted scikit-learn surrogate."""
    try:
        from sklearn.linear_model import Lasso, LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
    except ImportError as error:
        raise ImportError("distill fits scikit-learn models: pip install scikit-learn") from error
    if kind == "tree":
        tree = DecisionTreeClassifier if task == "classification" else DecisionTreeRegressor
        return tree(max_depth=max_depth, max_leaf_nodes=max_leaf_nodes, random_state=seed)
    sparse = (
        LogisticRegression(l1_ratio=1.0, solver="saga", C=0.5, max_iter=5000, random_state=seed)
        if task == "classification"
        else Lasso(alpha=0.01, random_state=seed, max_iter=10_000)
    )
    return Pipeline([("scale", StandardScaler()), ("linear", sparse)])


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``n`` rows into fitting rows and :data:`HELD_OUT` held-out rows."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = n - max(1, round(n * HELD_OUT))
    return order[:cut], order[cut:]


def distill(
    model: Model,
    X: Any,
    *,
    kind: Kind = "tree",
    max_depth: int | None = 3,
    max_leaf_nodes: int | None = None,
    X_test: Any = None,
    seed: int = 0,
    y: Any = None,
    y_test: Any = None,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    target: int | None = None,
) -> Surrogate:
    """Fit a decision tree (``kind="tree"``, at most ``max_depth`` deep / ``max_leaf_nodes`` leaves) or a sparse
    linear model (``kind="linear"``, L1-penalised on standardised columns) to the model's predictions on ``X``.

    A model with several outputs is a classifier (the tree learns its top class); with one output, or with
    ``target`` picking an output, a regressor. Fidelity is measured on ``X_test`` or, without it, on a seeded
    25 % of ``X`` held out from the fit. ``y`` (and ``y_test``) are true labels, used only for ``accuracy``.
    """
    began = time.perf_counter()
    kind = check_choice("kind", kind, KINDS)
    seed = check_int("seed", seed, 0)
    if max_depth is not None:
        max_depth = check_int("max_depth", max_depth, 1)
    if max_leaf_nodes is not None:
        max_leaf_nodes = check_int("max_leaf_nodes", max_leaf_nodes, 2)
    adapter = as_adapter(model, "logits")
    evals_before = adapter.n_evals
    table = as_table(X)
    names = column_names(X, feature_names, table.shape[1])
    labels = None if y is None else np.asarray(torch.as_tensor(np.asarray(y)).cpu())
    if X_test is None:
        fit_rows, test_rows = _split(table.shape[0], seed)
        test_table, test_labels = table[test_rows], None if labels is None else labels[test_rows.numpy()]
        table, labels = table[fit_rows], None if labels is None else labels[fit_rows.numpy()]
    else:
        test_table = as_table(X_test, "X_test")
        if test_table.shape[1] != table.shape[1]:
            raise ValueError(f"X_test has {test_table.shape[1]} columns; expected {table.shape[1]} like X")
        test_labels = None if y_test is None else np.asarray(torch.as_tensor(np.asarray(y_test)).cpu())
    answers, task = _answers(adapter, table, target)
    test_answers, _ = _answers(adapter, test_table, target)
    estimator = _fit(kind, task, max_depth, max_leaf_nodes, seed)
    estimator.fit(table.double().numpy(), answers)
    predicted = estimator.predict(test_table.double().numpy())
    fidelity = (
        float((predicted == test_answers).mean())
        if task == "classification"
        else r2(torch.as_tensor(test_answers), torch.as_tensor(predicted))
    )
    accuracy = None
    if test_labels is not None and task == "classification":
        accuracy = float((predicted == test_labels).mean())
    return Surrogate(
        estimator=estimator,
        kind=kind,
        task=task,
        fidelity=fidelity,
        feature_names=names,
        class_names=None if class_names is None else [str(c) for c in class_names],
        accuracy=accuracy,
        n_evals=adapter.n_evals - evals_before,
        elapsed_s=time.perf_counter() - began,
        params={
            "max_depth": max_depth,
            "max_leaf_nodes": max_leaf_nodes,
            "seed": seed,
            "n_fit": int(table.shape[0]),
            "n_test": int(test_table.shape[0]),
        },
    )


def _answers(adapter: Any, table: torch.Tensor, target: int | None) -> tuple[np.ndarray, str]:
    """What the surrogate learns: the model's class for each row (classifier) or its output (regressor)."""
    rows = table.to(device=adapter.device, dtype=adapter.dtype)
    scores = adapter.evaluate(
        rows.shape[0], lambda start, stop: rows[start:stop], input_shape=(rows.shape[1],)
    )
    if target is not None:
        if not 0 <= target < scores.shape[1]:
            raise ValueError(
                f"target {target} is not an output index: the model has outputs 0..{scores.shape[1] - 1}"
            )
        return scores[:, target].double().cpu().numpy(), "regression"
    if scores.shape[1] == 1:
        return scores[:, 0].double().cpu().numpy(), "regression"
    return scores.argmax(dim=1).cpu().numpy(), "classification"
