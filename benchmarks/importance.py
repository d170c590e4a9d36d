"""Permutation importance against scikit-learn's on the shipped breast-cancer MLP, in one process.

    python -m benchmarks.importance             # writes the "importance" section of RESULTS.md
    python -m benchmarks.importance --no-write

Both shuffle each of the 30 columns ``n_repeats`` times over the 114 test rows and score accuracy; scikit-learn
calls the model through an estimator wrapper once per (repeat, column) copy, livexai builds all copies lazily and
sends them through the model in large batches. The table gives the median time, the model evaluations and the
largest difference of the means in units of their combined standard error.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import livexai
from livexai import datasets, models

from ._common import (
    add_run_arguments,
    command_line,
    finish_run,
    machine_lines,
    markdown_table,
    measure,
    start_run,
)


def _sklearn_estimator(mlp: torch.nn.Module) -> object:
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Wrapped(ClassifierMixin, BaseEstimator):
        """The MLP as a scikit-learn classifier: predict is the argmax of its logits."""

        classes_ = np.array([0, 1])

        def fit(self, X: np.ndarray, y: np.ndarray) -> Wrapped:
            return self

        def predict(self, X: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return mlp(torch.as_tensor(X, dtype=torch.float32)).argmax(dim=1).numpy()

    return Wrapped()


def run(n_repeats: int) -> str:
    from sklearn.inspection import permutation_importance

    data, mlp = datasets.breast_cancer("test"), models.breast_cancer_mlp()
    estimator = _sklearn_estimator(mlp)
    ours = measure(
        lambda: livexai.permutation_importance(mlp, data.x, data.y, n_repeats=n_repeats), min_runs=3
    )
    theirs = measure(
        lambda: permutation_importance(
            estimator, data.x.numpy(), data.y.numpy(), n_repeats=n_repeats, random_state=0, scoring="accuracy"
        ),
        min_runs=3,
    )
    result, reference = ours.result, theirs.result
    error = np.sqrt((result.std.numpy() ** 2 + reference.importances_std**2) / n_repeats)
    z = float((np.abs(result.mean.numpy() - reference.importances_mean) / np.maximum(error, 1e-12)).max())
    copies = n_repeats * data.x.shape[1]
    rows = [
        [
            "livexai permutation_importance",
            f"{ours.seconds * 1000:.0f} ms",
            "1.00",
            str(result.n_evals),
            f"{z:.2f}",
        ],
        [
            "scikit-learn permutation_importance",
            f"{theirs.seconds * 1000:.0f} ms",
            f"{theirs.seconds / ours.seconds:.2f}",
            str(data.x.shape[0] * (1 + copies)),
            "–",
        ],
    ]
    header = ["implementation", "median", "vs livexai", "evals", "largest gap of means / SE"]
    return "\n".join(
        [
            "## Permutation importance: CPU",
            "",
            *machine_lines("cpu", ("scikit-learn",)),
            f"- Measured by `{command_line('importance', None)}`: breast-cancer MLP, {data.x.shape[0]} test rows, "
            f"30 columns, n_repeats={n_repeats}, accuracy. `vs livexai` = their time / ours.",
            "",
            markdown_table(header, rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.importance", description=__doc__.splitlines()[0]
    )
    add_run_arguments(parser, "fewer repeats")
    args = parser.parse_args(argv)
    start_run(args)
    began = time.perf_counter()
    text = run(3 if args.quick else 10)
    finish_run(args, text, "importance", time.perf_counter() - began)


if __name__ == "__main__":
    main()
