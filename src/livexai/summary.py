"""SHAP values over many rows, and the two pictures shap's users expect of them: the beeswarm and the bar chart.

Each row is explained with the chosen method (KernelSHAP by default) against one background, for one output;
the row's SHAP values add up to its output minus the base value, so the table of values is a global picture built
from exact local ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._adapter import Model
from ._bars import progress_bar
from ._call import as_adapter
from ._inputs import check_choice, check_int
from .background import WeightedRows, kmeans
from .importance import as_table, column_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .explanation import Explanation

__all__ = ["ShapSummary", "shap_summary"]

METHODS = ("kernel", "deep", "gradient")
# Rows explained together: KernelSHAP evaluates their coalitions in shared batches (progress and cancel per batch).
ROWS_PER_BATCH = 16
KINDS = ("beeswarm", "bar")


@dataclass(eq=False)
class ShapSummary:
    """SHAP values of ``N`` rows: ``values`` ``(N, F)``, ``base_values`` ``(N,)``, the rows themselves ``data``.

    Row ``i``'s values sum to its output for ``target`` minus ``base_values[i]`` (exactly for KernelSHAP and
    DeepSHAP; up to sampling error for GradientSHAP).
    """

    values: torch.Tensor
    base_values: torch.Tensor
    data: torch.Tensor
    feature_names: list[str]
    target: int
    method: str
    n_evals: int = 0
    elapsed_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def importance(self) -> torch.Tensor:
        """Mean absolute SHAP value of each feature ``(F,)``: how much it moves predictions, either way."""
        return self.values.abs().mean(dim=0)

    def plot(self, kind: str = "beeswarm", *, ax: Any = None, max_features: int = 12) -> Figure:
        """``"beeswarm"``: every row's SHAP value per feature, coloured by the feature's value (low blue, high
        red), features by importance; ``"bar"``: the mean absolute SHAP value per feature."""
        import matplotlib.pyplot as plt

        kind = check_choice("kind", kind, KINDS)
        order = torch.argsort(self.importance(), descending=True)[:max_features].flip(0).tolist()
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.38 * len(order) + 1.4))
        names = [self.feature_names[i] for i in order]
        if kind == "bar":
            ax.barh(names, self.importance()[order].numpy(), color="#d62728")
            ax.set_xlabel(f"mean |SHAP value| (output {self.target})")
        else:
            self._beeswarm(ax, order)
            ax.set_yticks(range(len(order)), names)
        ax.tick_params(labelsize=8)
        return ax.figure

    def _beeswarm(self, ax: Any, order: list[int]) -> None:
        values, data = self.values.numpy(), self.data.numpy()
        jitter = np.random.default_rng(0)
        for position, feature in enumerate(order):
            column = data[:, feature]
            low, high = np.percentile(column, [5, 95])
            shade = np.clip((column - low) / (high - low), 0, 1) if high > low else np.full_like(column, 0.5)
            spread = _swarm_offsets(values[:, feature], jitter)
            points = ax.scatter(
                values[:, feature],
                position + spread,
                c=shade,
                cmap="coolwarm",
                vmin=0,
                vmax=1,
                s=9,
                linewidths=0,
            )
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel(f"SHAP value (impact on output {self.target})")
        bar = ax.figure.colorbar(points, ax=ax, ticks=[0, 1], pad=0.01, aspect=30)
        bar.ax.set_yticklabels(["low", "high"], fontsize=8)
        bar.set_label("feature value", fontsize=8)


def _swarm_offsets(values: np.ndarray, rng: np.random.Generator, width: float = 0.35) -> np.ndarray:
    """Vertical offsets that widen where values are dense, so a beeswarm row shows its distribution."""
    span = values.max() - values.min()
    if span == 0 or len(values) < 2:
        return rng.uniform(-width / 4, width / 4, len(values))
    bins = np.clip(((values - values.min()) / span * 50).astype(int), 0, 49)
    density = np.bincount(bins, minlength=50)[bins] / np.bincount(bins).max()
    return rng.uniform(-1, 1, len(values)) * width * density


def _background(background: Any, table: torch.Tensor, seed: int) -> torch.Tensor | WeightedRows:
    """The background: rows, a weighted summary, or ``"kmeans:k"`` (``k`` centres of the explained rows)."""
    if isinstance(background, str):
        name, _, count = background.partition(":")
        if name != "kmeans" or not count.isdigit():
            raise ValueError(
                f"background={background!r}: expected rows (B, F), livexai.kmeans(...) or 'kmeans:k'"
            )
        return kmeans(table, int(count), seed=seed)
    return background


def _default_target(adapter: Any, table: torch.Tensor) -> int:
    """Output 0 of a regressor; the class the model predicts most often over the rows for a classifier."""
    scores = adapter.evaluate(
        table.shape[0], lambda start, stop: table[start:stop], input_shape=(table.shape[1],)
    )
    return most_predicted(scores.argmax(dim=1), scores.shape[1])


def most_predicted(predicted: torch.Tensor, n_outputs: int) -> int:
    """The class predicted most often among ``predicted`` ``(N,)`` (output 0 of a one-output regressor)."""
    return 0 if n_outputs == 1 else int(torch.bincount(predicted, minlength=n_outputs).argmax())


def explain_rows(
    adapter: Any,
    table: torch.Tensor,
    method: str,
    background: Any,
    target: int,
    *,
    n_samples: int | None,
    seed: int,
    feature_names: list[str] | None = None,
    check_cancel: Callable[[], None] | None = None,
    batch_rows: int = ROWS_PER_BATCH,
) -> Iterator[list[Explanation]]:
    """Explain the rows of ``table`` with ``method``, ``batch_rows`` at a time, yielding each batch's explanations.

    KernelSHAP evaluates a batch's coalitions together (:func:`~livexai.shap.kernel_shap_rows`); DeepSHAP and
    GradientSHAP explain its rows one by one. ``check_cancel`` runs before each batch.
    """
    from .deep import deep_shap
    from .gradients import gradient_shap
    from .shap import kernel_shap_rows

    rows = background.rows if isinstance(background, WeightedRows) else background
    if method == "deep" and isinstance(background, WeightedRows):
        raise ValueError(
            "method='deep' averages over background rows equally; pass rows, not a weighted summary"
        )
    for start in range(0, table.shape[0], batch_rows):
        if check_cancel is not None:
            check_cancel()
        batch = table[start : start + batch_rows]
        if method == "kernel":
            yield kernel_shap_rows(
                adapter, batch, background=background, target=target, n_samples=n_samples, seed=seed,
                feature_names=feature_names, check_cancel=check_cancel,
            )  # fmt: skip
        elif method == "deep":
            yield [deep_shap(adapter, row, background=rows, target=target) for row in batch]
        else:
            yield [
                gradient_shap(
                    adapter, row, background=rows, target=target, n_samples=n_samples or 200, seed=seed
                )
                for row in batch
            ]


def shap_summary(
    model: Model,
    X: Any,
    *,
    background: Any,
    method: str = "kernel",
    n_samples: int | None = None,
    target: int | None = None,
    seed: int = 0,
    feature_names: Sequence[str] | None = None,
    progress: bool = True,
    check_cancel: Callable[[], None] | None = None,
) -> ShapSummary:
    """SHAP values of every row of ``X`` ``(N, F)`` for output ``target``, with ``method`` ``"kernel"``
    (KernelSHAP, ``n_samples`` coalitions per row), ``"deep"`` (DeepSHAP) or ``"gradient"`` (GradientSHAP).

    ``background``: reference rows ``(B, F)``, a weighted summary (:func:`livexai.kmeans`), or ``"kmeans:k"``
    (``k`` centres of ``X`` itself). ``target`` None: output 0 of a regressor, or the class predicted most often.
    Every row uses the same seed, so row ``i``'s values equal a call of the method on that row alone; KernelSHAP
    evaluates 16 rows' coalitions in shared batches. With ``progress`` a progress bar counts the rows (tqdm, when
    installed); ``check_cancel`` runs between batches of rows.
    """
    began = time.perf_counter()
    method = check_choice("method", method, METHODS)
    seed = check_int("seed", seed, 0)
    adapter = as_adapter(model, "logits")
    table = as_table(X).to(device=adapter.device, dtype=adapter.dtype)
    names = column_names(X, feature_names, table.shape[1])
    reference = _background(background, table, seed)
    evals_before = adapter.n_evals
    target = _default_target(adapter, table) if target is None else check_int("target", target, 0)
    values, base_values = [], []
    bar = progress_bar(table.shape[0], progress, "shap_summary", "row")
    batches = explain_rows(
        adapter, table, method, reference, target, n_samples=n_samples, seed=seed, feature_names=names,
        check_cancel=check_cancel,
    )  # fmt: skip
    for explanations in batches:
        values += [e.attributions for e in explanations]
        base_values += [e.base_value for e in explanations]
        bar.update(len(explanations))
    bar.close()
    return ShapSummary(
        values=torch.stack(values),
        base_values=torch.tensor(base_values, dtype=torch.float32),
        data=table.detach().to("cpu", torch.float32),
        feature_names=names,
        target=target,
        method=method,
        n_evals=adapter.n_evals - evals_before,
        elapsed_s=time.perf_counter() - began,
        params={"n_samples": n_samples, "seed": seed, "background": _describe(reference)},
    )


def _describe(background: Any) -> str:
    if isinstance(background, WeightedRows):
        return f"{background.rows.shape[0]} weighted rows"
    return f"{len(background)} rows"
